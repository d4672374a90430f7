//! Nodes and VIPs: the nodes that may announce, the owner of every allocated address, and how
//! the leader's decisions change them (DESIGN.md §3).
//!
//! The leader commits the [`super::planner`]'s assignments as one [`OwnershipBatch`]; every
//! replica applies the same batch, so every node sees the same owner at the same log index. An
//! assignment carries the VIP's next epoch, so a plan made on a stale view is skipped rather
//! than applied twice.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::eligibility::Eligibility;
use super::{AllocationTable, ApplyError, Response};

/// How many moves the table remembers (oldest dropped first).
pub const MAX_HISTORY: usize = 1024;

/// What a node tells the cluster about itself when it starts (standalone: from `raftlb run`'s
/// flags; under Kubernetes: from its Node object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub name: String,
    pub raft_id: u64,
    pub labels: BTreeMap<String, String>,
    /// Interfaces it can announce on. Empty: it can own VIPs but announces nowhere.
    pub interfaces: Vec<String>,
    /// Why the node must not announce, if it must not (under Kubernetes: the Node has
    /// `NetworkUnavailable=True` or the `node.kubernetes.io/exclude-from-external-load-balancers`
    /// label).
    pub excluded: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub facts: NodeFacts,
    /// Renewing its lease with the leader (false once the leader declared it down).
    pub live: bool,
    /// Drained by an operator: owns nothing until undrained.
    pub draining: bool,
    /// When `live` last changed.
    pub since_ms: u64,
}

/// A node that gave a VIP up and must confirm it has stopped answering before anyone else may
/// take the VIP (break-before-make).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub node: String,
    /// Log index of the release: the node has stopped once it has applied this index.
    pub index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRecord {
    pub owner: Option<String>,
    /// Bumped by every change of owner (a release included).
    pub epoch: u64,
    /// When the owner last changed.
    pub since_ms: u64,
    /// Boxed, as `move_to`: both are rare, and a record is kept for every address ever
    /// allocated (same encoding as the unboxed value).
    pub released: Option<Box<Released>>,
    /// An operator's `move VIP NODE` not yet carried out.
    pub move_to: Option<Box<str>>,
}

/// One change of owner, kept in the table's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipMove {
    pub time_ms: u64,
    pub vip: IpAddr,
    pub epoch: u64,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cause: String,
}

/// `AssignVip { vip, node, epoch }` of DESIGN.md §3; `node: None` releases the VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignVip {
    pub vip: IpAddr,
    pub node: Option<String>,
    /// The VIP's epoch after this change: its current epoch + 1, else the assignment is stale
    /// and skipped.
    pub epoch: u64,
    pub cause: String,
}

/// The leader's decisions, applied in this order: who leads, who is live, who owns what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipBatch {
    /// (term, node name): a new leader records itself with its first batch.
    pub leader: Option<(u64, String)>,
    pub liveness: Vec<(String, bool)>,
    pub assignments: Vec<AssignVip>,
    pub now_ms: u64,
}

impl AllocationTable {
    pub(super) fn register_node(&mut self, facts: &NodeFacts, now_ms: u64) -> Response {
        if facts.name.is_empty() {
            return refuse("Node/", "name", "a node needs a name");
        }
        if let Some(other) = self
            .nodes
            .values()
            .find(|n| n.facts.raft_id == facts.raft_id && n.facts.name != facts.name)
        {
            return refuse(
                &format!("Node/{}", facts.name),
                "raftId",
                &format!(
                    "Raft id {} is already registered as node {}",
                    facts.raft_id, other.facts.name
                ),
            );
        }
        match self.nodes.get_mut(&facts.name) {
            Some(n) if n.facts == *facts => {}
            Some(n) => {
                n.facts = facts.clone();
                // Where it may announce changed: its VIPs are planned and announced again, and
                // a VIP nobody could own may fit here now.
                self.touch_owned_by(&facts.name);
                self.touch_nodes();
            }
            None => {
                self.nodes.insert(
                    facts.name.clone(),
                    NodeRecord {
                        facts: facts.clone(),
                        live: true,
                        draining: false,
                        since_ms: now_ms,
                    },
                );
                self.touch_nodes();
                let msg = format!("node {} registered (Raft id {})", facts.name, facts.raft_id);
                self.event(
                    now_ms,
                    &format!("Node/{}", facts.name),
                    "Normal",
                    "NodeRegistered",
                    &msg,
                );
            }
        }
        Response::Ok
    }

    pub(super) fn drain(&mut self, node: &str, drain: bool, now_ms: u64) -> Response {
        let Some(n) = self.nodes.get_mut(node) else {
            return refuse(&format!("Node/{node}"), "name", "no such node");
        };
        if n.draining != drain {
            n.draining = drain;
            self.touch_nodes();
            let (reason, msg) = if drain {
                (
                    "NodeDrained",
                    format!("node {node} drained: its VIPs move away"),
                )
            } else {
                ("NodeUndrained", format!("node {node} may own VIPs again"))
            };
            self.event(now_ms, &format!("Node/{node}"), "Normal", reason, &msg);
        }
        Response::Ok
    }

    pub(super) fn move_vip(&mut self, vip: &IpAddr, node: &str, now_ms: u64) -> Response {
        let object = format!("VIP/{vip}");
        if !self.addresses.contains_key(vip) {
            return refuse(&object, "vip", "no Service holds this address");
        }
        if let Err(reason) = self.eligible(vip, node) {
            return refuse(
                &object,
                "node",
                &format!("node {node} cannot own it: {reason}"),
            );
        }
        let rec = self.vips.entry(*vip).or_default();
        if rec.owner.as_deref() != Some(node) {
            rec.move_to = Some(node.into());
            self.touch_vip(*vip);
            let msg = format!("operator asked to move {vip} to node {node}");
            self.event(now_ms, &object, "Normal", "MoveRequested", &msg);
        }
        Response::Ok
    }

    pub(super) fn apply_ownership(&mut self, batch: &OwnershipBatch) -> Response {
        let now = batch.now_ms;
        if let Some(leader) = &batch.leader {
            self.leader = Some(leader.clone());
        }
        for (node, live) in &batch.liveness {
            let Some(n) = self.nodes.get_mut(node) else {
                continue;
            };
            if n.live != *live {
                n.live = *live;
                n.since_ms = now;
                self.touch_nodes();
                let (kind, reason, msg) = if *live {
                    (
                        "Normal",
                        "NodeLive",
                        format!("node {node} renews its lease again"),
                    )
                } else {
                    (
                        "Warning",
                        "NodeDown",
                        format!("node {node} stopped renewing its lease"),
                    )
                };
                self.event(now, &format!("Node/{node}"), kind, reason, &msg);
            }
        }
        for a in &batch.assignments {
            let index = self.log_index;
            let before = self.slot(&a.vip);
            let live = |n: &str| self.nodes.get(n).is_some_and(|r| r.live);
            let rec = self.vips.entry(a.vip).or_default();
            if a.epoch != rec.epoch + 1 {
                // Planned on a stale view: the next plan looks at it again.
                self.touch_vip(a.vip);
                continue;
            }
            let from = std::mem::replace(&mut rec.owner, a.node.clone());
            let failover = from.as_deref().is_some_and(|f| !live(f));
            rec.epoch = a.epoch;
            rec.since_ms = now;
            rec.released = match (&from, &a.node) {
                (Some(old), None) if live(old) => Some(Box::new(Released {
                    node: old.clone(),
                    index,
                })),
                _ => None,
            };
            if a.node.is_some() && rec.move_to.as_deref() == a.node.as_deref() {
                rec.move_to = None;
            }
            let assigned = a
                .node
                .as_ref()
                .map(|n| format!("announcing {} from node {n} with protocol layer2", a.vip));
            self.ownership_index = index;
            self.moves_total += 1;
            if failover {
                self.failovers_total += 1;
            }
            self.history.push_back(VipMove {
                time_ms: now,
                vip: a.vip,
                epoch: a.epoch,
                from,
                to: a.node.clone(),
                cause: a.cause.clone(),
            });
            while self.history.len() > MAX_HISTORY {
                self.history.pop_front();
            }
            self.refile(a.vip, before);
            if let Some(msg) = assigned {
                let users: Vec<String> = self
                    .addresses
                    .get(&a.vip)
                    .map(|u| u.users.keys().map(|k| k.to_string()).collect())
                    .unwrap_or_default();
                for key in users {
                    self.event(
                        now,
                        &format!("Service/{key}"),
                        "Normal",
                        "NodeAssigned",
                        &msg,
                    );
                }
            }
        }
        Response::Ok
    }

    /// The interfaces `node` would announce `vip` on, or why it may not own it. Ignores
    /// liveness and draining (the planner checks those).
    pub fn eligible(&self, vip: &IpAddr, node: &str) -> Result<Vec<String>, String> {
        Eligibility::new(self).check(vip, node)
    }

    /// Every owned, allocated VIP: its owner and the interfaces to announce it on (one pass,
    /// one eligibility index).
    pub fn owners(&self) -> BTreeMap<IpAddr, (&str, Vec<String>)> {
        let e = Eligibility::new(self);
        self.vips
            .iter()
            .filter(|(ip, _)| self.addresses.contains_key(ip))
            .filter_map(|(ip, r)| {
                let owner = r.owner.as_deref()?;
                Some((*ip, (owner, e.check(ip, owner).unwrap_or_default())))
            })
            .collect()
    }

    /// VIPs owned by `node`, with the interfaces to announce each on (eligibility is worked
    /// out for this node's VIPs only).
    pub fn owned_by(&self, node: &str) -> BTreeMap<IpAddr, Vec<String>> {
        self.owned_among(
            node,
            self.index.vips.by_owner.get(node).into_iter().flatten(),
        )
    }

    /// Whether `node` owns the allocated address `vip`.
    pub fn owns(&self, node: &str, vip: &IpAddr) -> bool {
        self.index
            .vips
            .by_owner
            .get(node)
            .is_some_and(|s| s.contains(vip))
    }

    /// This node's view of some VIPs: for each of `vips` it owns, the interfaces to announce it
    /// on.
    pub fn owned_among<'a>(
        &self,
        node: &str,
        vips: impl IntoIterator<Item = &'a IpAddr>,
    ) -> BTreeMap<IpAddr, Vec<String>> {
        let e = Eligibility::new(self);
        vips.into_iter()
            .filter(|ip| self.owns(node, ip))
            .map(|ip| (*ip, e.check(ip, node).unwrap_or_default()))
            .collect()
    }

    /// Why nobody owns `vip`, when nobody does.
    pub fn unowned_reason(&self, vip: &IpAddr) -> String {
        let e = Eligibility::new(self);
        let mut reasons = Vec::new();
        for (name, n) in &self.nodes {
            let why = match e.check(vip, name) {
                _ if !n.live => "down".to_string(),
                _ if n.draining => "drained".to_string(),
                Ok(_) => continue,
                Err(r) => r,
            };
            reasons.push(format!("{name}: {why}"));
        }
        match self.vips.get(vip).and_then(|r| r.released.as_ref()) {
            Some(r) => format!("waiting for {} to stop answering", r.node),
            None if self.nodes.is_empty() => "no node has registered".into(),
            None if reasons.is_empty() => "not yet assigned".into(),
            None => reasons.join("; "),
        }
    }
}

fn refuse(object: &str, field: &str, reason: &str) -> Response {
    Response::Rejected(ApplyError {
        document: 0,
        object: object.to_string(),
        field: field.to_string(),
        reason: reason.to_string(),
    })
}

#[cfg(test)]
#[path = "ownership_tests.rs"]
mod tests;
