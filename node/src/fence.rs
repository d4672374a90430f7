//! The fence (DESIGN.md §3): the leases that decide whether this node may answer for a VIP.
//!
//! * Leader lease: the leader confirms a quorum with a heartbeat round (`get_read_log_id`)
//!   sent at t_s; its lease runs to t_s + L_lead (L_lead <= election_timeout_max, so no
//!   follower can have voted for anyone else before it ends). These rounds, one every
//!   heartbeat interval, are the leader's heartbeats: openraft's own are switched off.
//! * Node leases are pulled: every other node sends `RenewLease` to the leader every
//!   `renew_every`; on a grant its lease runs to its own send time + L_fol. The leader grants
//!   only while its own lease holds and only to a node that has applied the last change of
//!   owner; it records the receipt of every renewal.
//! * A leader that has not heard a quorum for 2 x election_timeout_max stops its rounds (and
//!   with them its heartbeats) so the others can elect a leader that can.
//!
//! The leader's use of the renewals (who is down, whose release is confirmed) is
//! `crate::control`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftlb_actors::lease::{Clock, Lease, MonotonicClock};
use raftlb_proto::raft::raft_client::RaftClient;
use raftlb_proto::raft::Empty;
use raftlb_raft_store::store::SharedTable;
use raftlb_raft_store::table::ownership::Released;
use raftlb_raft_store::Raft;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tonic::transport::Channel;
use tracing::warn;

use crate::clock::ms_to_ns;
use crate::raft::leader::LeaderReply;
use crate::raft::membership::TransferGuard;
use crate::raft::transport::{payload, reply, Channels};
use crate::raft::{leader_term, KnownLeader};
use crate::timing::Timing;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    pub node: String,
    /// The index this node has applied *and acted on* (its announcer is in step).
    pub applied: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewReply {
    pub granted: bool,
    pub reason: String,
    pub ownership_index: u64,
}

/// What the leader knows of one node's renewals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Renewal {
    pub received_ns: u64,
    pub applied: u64,
    /// Receipt of the last renewal that was granted (or the election, for a new leader).
    pub granted_ns: Option<u64>,
    /// A renewal really arrived (not just counted at the election).
    pub renewed: bool,
    /// The control loop is committing this node's declaration as down: no grant until that
    /// commit returns (a grant in between would let it answer beside its VIPs' new owners;
    /// once the commit is applied here, the ownership index refuses it anyway).
    pub refused: bool,
}

/// One node's lease as the leader sees it, for `ctl status` and `get vips`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseView {
    pub node: String,
    pub since_renewal_ms: Option<u64>,
    /// Upper bound of the time its lease may still run.
    pub lease_left_ms: u64,
    pub applied: u64,
}

/// The lease state of this peer, shared by its tasks and its services.
pub struct LeaseKeeper {
    pub name: String,
    pub timing: Timing,
    pub clock: Arc<MonotonicClock>,
    /// This node's lease: what its responders check for every packet.
    pub lease: Arc<Lease>,
    /// Last index this node's announcer has acted on.
    pub announced_index: AtomicU64,
    leader_lease_end_ns: AtomicU64,
    renewals: Mutex<BTreeMap<String, Renewal>>,
    /// Wakes the leader's control loop (a node asked to be marked live, a VIP was given up).
    pub(crate) wake_control: Notify,
    /// Wakes the renewal loop (this node gave a VIP up: tell the leader now).
    pub(crate) wake_renew: Notify,
}

impl LeaseKeeper {
    pub fn new(name: &str, timing: Timing) -> Arc<LeaseKeeper> {
        Arc::new(LeaseKeeper {
            name: name.to_string(),
            timing,
            clock: Arc::new(MonotonicClock::new()),
            lease: Arc::new(Lease::new()),
            announced_index: AtomicU64::new(0),
            leader_lease_end_ns: AtomicU64::new(0),
            renewals: Mutex::new(BTreeMap::new()),
            wake_control: Notify::new(),
            wake_renew: Notify::new(),
        })
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    pub(crate) fn leader_lease_valid(&self, now: u64) -> bool {
        now < self.leader_lease_end_ns.load(Ordering::Acquire)
    }

    pub(crate) fn renewals(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Renewal>> {
        self.renewals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new term: every node counts as renewed now, so grants of the previous leader may
    /// run their course before anyone is declared down.
    pub(crate) fn take_over(&self, nodes: impl Iterator<Item = String>) {
        let now = self.now();
        let mut r = self.renewals();
        r.clear();
        for n in nodes {
            r.insert(
                n,
                Renewal {
                    received_ns: now,
                    applied: 0,
                    granted_ns: Some(now),
                    renewed: false,
                    refused: false,
                },
            );
        }
        drop(r);
        self.lease
            .set(self.leader_lease_end_ns.load(Ordering::Acquire));
    }

    /// The declarations as down are committed (or failed): renewals are judged by the table
    /// again.
    pub(crate) fn end_refusals(&self) {
        for r in self.renewals().values_mut() {
            r.refused = false;
        }
    }

    /// The leader's answer to a renewal.
    pub fn renew(&self, raft: &Raft, table: &SharedTable, req: &RenewRequest) -> RenewReply {
        let refuse = |reason: String, ownership_index: u64| RenewReply {
            granted: false,
            reason,
            ownership_index,
        };
        let (me, leader) = {
            let m = raft.metrics();
            let m = m.borrow();
            (m.id, m.current_leader)
        };
        if leader != Some(me) {
            return refuse("not the leader".into(), 0);
        }
        let now = self.now();
        let mut renewals = self.renewals();
        let r = renewals.entry(req.node.clone()).or_insert(Renewal {
            received_ns: now,
            applied: 0,
            granted_ns: None,
            renewed: true,
            refused: false,
        });
        r.received_ns = now;
        r.renewed = true;
        r.applied = r.applied.max(req.applied);
        let t = table.read().unwrap_or_else(|p| p.into_inner());
        let index = t.table.ownership_index();
        if !self.leader_lease_valid(now) {
            return refuse("the leader has no lease".into(), index);
        }
        let Some(node) = t.table.nodes().get(&req.node) else {
            return refuse(format!("node {} is not registered", req.node), index);
        };
        if !node.live {
            self.wake_control.notify_one();
            return refuse(format!("node {} is being marked live", req.node), index);
        }
        if req.applied < index {
            return refuse(format!("apply up to index {index} first"), index);
        }
        if r.refused {
            return refuse(format!("node {} is being declared down", req.node), index);
        }
        r.granted_ns = Some(now);
        RenewReply {
            granted: true,
            reason: String::new(),
            ownership_index: index,
        }
    }

    /// Every known node's lease, as this peer (the leader) sees it.
    pub fn report(&self) -> Vec<LeaseView> {
        let now = self.now();
        let bound = ms_to_ns(self.timing.expiry_bound_ms());
        let mut out: Vec<LeaseView> = self
            .renewals()
            .iter()
            .map(|(n, r)| LeaseView {
                node: n.clone(),
                since_renewal_ms: Some(now.saturating_sub(r.received_ns) / 1_000_000),
                lease_left_ms: r
                    .granted_ns
                    .map_or(0, |g| (g + bound).saturating_sub(now) / 1_000_000),
                applied: r.applied,
            })
            .collect();
        out.retain(|v| v.node != self.name);
        out.push(LeaseView {
            node: self.name.clone(),
            since_renewal_ms: None,
            lease_left_ms: self.lease.remaining(now).as_millis() as u64,
            applied: self.announced_index.load(Ordering::Acquire),
        });
        out
    }

    /// Whether the node that released a VIP has stopped answering for it.
    pub(crate) fn confirmed(&self, rel: &Released, now: u64) -> bool {
        if rel.node == self.name {
            return self.announced_index.load(Ordering::Acquire) >= rel.index;
        }
        let bound = ms_to_ns(self.timing.expiry_bound_ms());
        match self.renewals().get(&rel.node) {
            None => true,
            Some(r) => r.applied >= rel.index || r.granted_ns.is_none_or(|g| now > g + bound),
        }
    }
}

/// Leader only: a quorum round every heartbeat interval, which is both the heartbeat and the
/// lease confirmation; step aside after 2E without a quorum.
pub async fn hold_leader_lease(raft: Raft, k: Arc<LeaseKeeper>, transfer: TransferGuard) {
    let t = k.timing;
    let tick = Duration::from_millis(t.heartbeat_ms.max(1));
    let mut last_quorum_send: Option<u64> = None;
    let mut making_way_since: Option<u64> = None;
    loop {
        tokio::time::sleep(tick).await;
        if leader_term(&raft).is_none() {
            making_way_since = None;
            last_quorum_send = None;
            continue;
        }
        if transfer.active() {
            continue; // leadership is being handed over: let the lease run out
        }
        let now = k.now();
        if let Some(since) = making_way_since {
            if now < since + ms_to_ns(3 * t.election_max_ms) {
                continue;
            }
            // Nobody took over: try to lead again.
            making_way_since = None;
            last_quorum_send = Some(now);
        }
        let sent = k.now();
        let lease = Duration::from_millis(t.leader_lease_ms);
        match tokio::time::timeout(lease, raft.get_read_log_id()).await {
            Ok(Ok(_)) if leader_term(&raft).is_some() => {
                let end = sent + ms_to_ns(t.leader_lease_ms);
                k.leader_lease_end_ns.fetch_max(end, Ordering::AcqRel);
                k.lease.set(k.leader_lease_end_ns.load(Ordering::Acquire));
                last_quorum_send = Some(sent);
            }
            _ => {
                let since = *last_quorum_send.get_or_insert(sent);
                if k.now() > since + ms_to_ns(2 * t.election_max_ms) {
                    warn!("no quorum for 2 x election timeout: stopping heartbeats so another peer can lead");
                    making_way_since = Some(k.now());
                }
            }
        }
    }
}

/// Every node's lease as the leader sees it: from this peer's keeper if it leads, else asked
/// of the leader (`LeaseReport`, a read: no log entry). None if no leader answers in
/// `timeout`.
pub async fn lease_report(
    raft: &Raft,
    k: &LeaseKeeper,
    channels: &Channels,
    timeout: Duration,
) -> Option<Vec<LeaseView>> {
    let KnownLeader { me, leader, addr } = KnownLeader::of(raft);
    if leader? == me {
        return Some(k.report());
    }
    let mut client = channels.client(leader?, &addr?).ok()?;
    let mut req = tonic::Request::new(Empty {});
    req.set_timeout(timeout);
    match reply(client.lease_report(req).await.ok()?).ok()? {
        LeaderReply::Done(views) => Some(views),
        _ => None,
    }
}

/// Non-leaders: renew with the leader every `renew_every`, and at once after giving a
/// VIP up (so the leader learns it sooner).
pub async fn renew_with_leader(raft: Raft, k: Arc<LeaseKeeper>, channels: Channels) {
    let t = k.timing;
    let every = Duration::from_millis(t.renew_every_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = k.wake_renew.notified() => {}
        }
        let KnownLeader { me, leader, addr } = KnownLeader::of(&raft);
        let (Some(leader), Some(addr)) = (leader, addr) else {
            continue;
        };
        if leader == me {
            continue;
        }
        let Ok(client) = channels.client(leader, &addr) else {
            continue;
        };
        let req = RenewRequest {
            node: k.name.clone(),
            applied: k.announced_index.load(Ordering::Acquire),
        };
        let sent = k.now();
        let Ok(reply) = renew_rpc(client, &req, every).await else {
            continue;
        };
        let still_follower = leader_term(&raft).is_none();
        if reply.granted
            && still_follower
            && k.announced_index.load(Ordering::Acquire) >= reply.ownership_index
        {
            k.lease.extend_to(sent + ms_to_ns(t.follower_lease_ms));
        }
    }
}

async fn renew_rpc(
    mut client: RaftClient<Channel>,
    req: &RenewRequest,
    timeout: Duration,
) -> Result<RenewReply, String> {
    let r = client
        .renew_lease(payload(req, timeout)?)
        .await
        .map_err(|s| s.message().to_string())?;
    reply(r)
}
