//! Who answers for each VIP: the nodes that may announce, the owner of every allocated address,
//! and the planner that picks owners (DESIGN.md §3).
//!
//! The planner is pure: given the table and what the leader knows about releases, it returns
//! the assignments to commit. The leader commits them as one [`OwnershipBatch`]; every replica
//! applies the same batch, so every node sees the same owner at the same log index. An
//! assignment carries the VIP's next epoch, so a plan made on a stale view is skipped rather
//! than applied twice.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::index::Changes;
use super::objects::{Kind, L2AdvertisementSpec, ObjectSpec};
use super::{selector, AllocationTable, ApplyError, Response};

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
    pub released: Option<Released>,
    /// An operator's `move VIP NODE` not yet carried out.
    pub move_to: Option<String>,
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
                // Where it may announce changed: its VIPs are planned and announced again.
                self.touch_owned_by(&facts.name);
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
            rec.move_to = Some(node.to_string());
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
                continue; // planned on a stale view
            }
            let from = std::mem::replace(&mut rec.owner, a.node.clone());
            let failover = from.as_deref().is_some_and(|f| !live(f));
            rec.epoch = a.epoch;
            rec.since_ms = now;
            rec.released = match (&from, &a.node) {
                (Some(old), None) if live(old) => Some(Released {
                    node: old.clone(),
                    index,
                }),
                _ => None,
            };
            if a.node.is_some() && rec.move_to == a.node {
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
                    .map(|u| u.users.keys().cloned().collect())
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
        let e = Eligibility::new(self);
        self.index
            .vips
            .by_owner
            .get(node)
            .into_iter()
            .flatten()
            .map(|ip| (*ip, e.check(ip, node).unwrap_or_default()))
            .collect()
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

/// What eligibility needs from the table, gathered once per plan (the advertisements only:
/// its cost does not grow with the number of Services).
struct Eligibility<'a> {
    table: &'a AllocationTable,
    /// L2Advertisements, and the one each layer2/vip Eip implies.
    advertisements: Vec<(&'a str, Cow<'a, L2AdvertisementSpec>)>,
}

impl<'a> Eligibility<'a> {
    fn new(table: &'a AllocationTable) -> Eligibility<'a> {
        let mut advertisements = Vec::new();
        for obj in table.objects_of(Kind::L2Advertisement) {
            if let ObjectSpec::L2Advertisement(spec) = &obj.spec {
                advertisements.push((obj.name.as_str(), Cow::Borrowed(spec)));
            }
        }
        for obj in table.objects_of(Kind::Eip) {
            if let ObjectSpec::Eip(eip) = &obj.spec {
                advertisements.extend(
                    eip.l2_advertisement(&obj.name)
                        .map(|a| (obj.name.as_str(), Cow::Owned(a))),
                );
            }
        }
        Eligibility {
            table,
            advertisements,
        }
    }

    fn check(&self, vip: &IpAddr, node: &str) -> Result<Vec<String>, String> {
        let t = self.table;
        let usage = t
            .addresses
            .get(vip)
            .ok_or_else(|| "no Service holds this address".to_string())?;
        let record = t
            .nodes
            .get(node)
            .ok_or_else(|| format!("node {node} is not registered"))?;
        if let Some(why) = &record.facts.excluded {
            return Err(format!("node {node} is excluded: {why}"));
        }
        let no_labels = BTreeMap::new();
        let pool_labels = t.pool_object(&usage.pool).map_or(&no_labels, |o| &o.labels);
        let users: Vec<&super::ServiceEntry> = usage
            .users
            .keys()
            .filter_map(|k| t.services.get(k))
            .collect();
        for entry in &users {
            if entry.spec.external_traffic_policy == "Local" {
                let key = entry.spec.key();
                if !t.ready_nodes(&key).contains(node) {
                    return Err(format!(
                        "externalTrafficPolicy Local and no ready endpoint of {key} here"
                    ));
                }
            }
        }
        let mut selecting = 0;
        let mut accepted = false;
        let mut interfaces: BTreeSet<String> = BTreeSet::new();
        let mut why = String::new();
        for (name, adv) in &self.advertisements {
            let selects_pool = (adv.ip_address_pools.is_empty()
                && adv.ip_address_pool_selectors.is_empty())
                || adv.ip_address_pools.contains(&usage.pool)
                || adv
                    .ip_address_pool_selectors
                    .iter()
                    .any(|s| selector::matches(s, pool_labels));
            let selects_service = adv.service_selectors.is_empty()
                || users.iter().any(|e| {
                    adv.service_selectors
                        .iter()
                        .any(|s| selector::matches(s, &e.spec.labels))
                });
            if !selects_pool || !selects_service {
                continue;
            }
            selecting += 1;
            let labels = &record.facts.labels;
            if !adv.node_selectors.is_empty()
                && !adv
                    .node_selectors
                    .iter()
                    .any(|s| selector::matches(s, labels))
            {
                why = format!("L2Advertisement {name}: nodeSelectors do not match");
                continue;
            }
            // No interfaces listed: every interface of the node.
            let here: Vec<&String> = record
                .facts
                .interfaces
                .iter()
                .filter(|i| adv.interfaces.is_empty() || adv.interfaces.contains(i))
                .collect();
            if here.is_empty() && !adv.interfaces.is_empty() {
                why = format!(
                    "L2Advertisement {name}: none of interfaces [{}] is here",
                    adv.interfaces.join(", ")
                );
                continue;
            }
            accepted = true;
            interfaces.extend(here.into_iter().cloned());
        }
        match (accepted, selecting) {
            (true, _) => Ok(interfaces.into_iter().collect()),
            (false, 0) => Err(format!("no L2Advertisement selects pool {}", usage.pool)),
            (false, _) => Err(why),
        }
    }
}

/// Plans owners for every VIP, with the table's liveness (see [`plan_changes`]).
pub fn plan(
    table: &AllocationTable,
    confirmed: &dyn Fn(&IpAddr, &Released) -> bool,
) -> Vec<AssignVip> {
    plan_changes(table, &[], None, confirmed).assignments
}

/// What a planner pass decided, and how many VIPs it looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub assignments: Vec<AssignVip>,
    pub examined: usize,
}

/// Plans owners.
///
/// - `liveness` overrides the table's: the changes the leader commits together with the plan
///   (no copy of the table is made to apply them first).
/// - `since` is the applied index of the last plan the leader committed (or found empty). Then
///   only the VIPs whose plan can differ from that one are looked at: those the entries after
///   it touched, the unowned, those whose Service is gone, and those of nodes that may not own
///   (down, drained). Every other VIP kept its owner, its users and its eligibility inputs, and
///   the planner is sticky, so it would plan nothing for them. `None`, or a configuration
///   change since, plans every VIP.
/// - `confirmed(vip, released)` says whether the node that released `vip` is known to have
///   stopped answering (it renewed having applied the release, or its last lease has run out);
///   until then the VIP stays unowned.
pub fn plan_changes(
    table: &AllocationTable,
    liveness: &[(String, bool)],
    since: Option<u64>,
    confirmed: &dyn Fn(&IpAddr, &Released) -> bool,
) -> Planned {
    let e = Eligibility::new(table);
    let live = |n: &str| {
        table.nodes.get(n).is_some_and(|r| {
            let told = liveness.iter().rev().find(|(m, _)| m == n).map(|(_, l)| *l);
            told.unwrap_or(r.live)
        })
    };
    let usable = |n: &str| live(n) && table.nodes.get(n).is_some_and(|r| !r.draining);
    let ix = &table.index.vips;
    let mut load: BTreeMap<&str, usize> = table
        .nodes
        .keys()
        .filter(|n| usable(n))
        .map(|n| (n.as_str(), ix.by_owner.get(n).map_or(0, BTreeSet::len)))
        .collect();
    let candidates: Vec<(&IpAddr, &VipRecord)> = match table.changes_since(since) {
        Changes::All => table.vips.iter().collect(),
        Changes::Some { mut vips, .. } => {
            vips.extend(&ix.unowned);
            vips.extend(&ix.orphaned);
            for (n, owned) in &ix.by_owner {
                if !usable(n) {
                    vips.extend(owned);
                }
            }
            vips.iter()
                .filter_map(|ip| table.vips.get_key_value(ip))
                .collect()
        }
    };
    let examined = candidates.len();
    let mut out = Vec::new();
    for (vip, rec) in candidates {
        let next = rec.epoch + 1;
        let assign = |node: Option<&str>, cause: String| AssignVip {
            vip: *vip,
            node: node.map(str::to_string),
            epoch: next,
            cause,
        };
        let allocated = table.addresses.contains_key(vip);
        if let Some(owner) = rec.owner.as_deref() {
            let moving = rec.move_to.as_deref().filter(|t| *t != owner);
            let problem = if !allocated {
                Some("no Service holds the address any more".to_string())
            } else if !live(owner) {
                Some(format!("node {owner} is down"))
            } else if !usable(owner) {
                Some(format!("node {owner} is drained"))
            } else if let Some(t) = moving {
                Some(format!("operator moves it to {t}"))
            } else {
                e.check(vip, owner)
                    .err()
                    .map(|r| format!("node {owner} is no longer eligible: {r}"))
            };
            let Some(cause) = problem else {
                continue; // sticky
            };
            if live(owner) || !allocated {
                // Break before make: the owner stops first; someone else takes it once it
                // has confirmed.
                out.push(assign(None, cause));
                if let Some(c) = load.get_mut(owner) {
                    *c = c.saturating_sub(1);
                }
                continue;
            }
            // The owner is down: its lease ended before the leader declared it down.
            let target = pick(&e, vip, rec.move_to.as_deref(), &load, &usable);
            if let Some(t) = target {
                *load.get_mut(t).expect("usable nodes are in load") += 1;
            }
            out.push(assign(target, cause));
            continue;
        }
        if !allocated {
            continue;
        }
        if let Some(r) = &rec.released {
            if live(&r.node) && !confirmed(vip, r) {
                continue;
            }
        }
        if let Some(t) = pick(&e, vip, rec.move_to.as_deref(), &load, &usable) {
            *load.get_mut(t).expect("usable nodes are in load") += 1;
            let cause = match &rec.released {
                Some(r) => format!("taken over from {}", r.node),
                None if rec.epoch == 0 => "new VIP".to_string(),
                None => "an eligible node is available".to_string(),
            };
            out.push(assign(Some(t), cause));
        }
    }
    Planned {
        assignments: out,
        examined,
    }
}

/// The operator's target if eligible, else the eligible node with the fewest VIPs (ties by
/// name).
fn pick<'a>(
    e: &Eligibility<'a>,
    vip: &IpAddr,
    wanted: Option<&str>,
    load: &BTreeMap<&'a str, usize>,
    usable: &dyn Fn(&str) -> bool,
) -> Option<&'a str> {
    let ok = |n: &str| usable(n) && e.check(vip, n).is_ok();
    if let Some(w) = wanted.filter(|w| ok(w)) {
        return load.keys().copied().find(|n| *n == w);
    }
    load.iter()
        .filter(|(n, _)| ok(n))
        .min_by_key(|(n, c)| (**c, **n))
        .map(|(n, _)| *n)
}

#[cfg(test)]
#[path = "ownership_tests.rs"]
mod tests;
