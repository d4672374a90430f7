//! Liveness, leases and VIP ownership on a peer (DESIGN.md §3).
//!
//! * Leader lease: the leader confirms a quorum with a heartbeat round (`get_read_log_id`)
//!   sent at t_s; its lease runs to t_s + L_lead (L_lead <= election_timeout_max, so no
//!   follower can have voted for anyone else before it ends).
//! * Node leases are pulled: every other node sends `RenewLease` to the leader every
//!   `renew_every`; on a grant its lease runs to its own send time + L_fol. The leader grants
//!   only while its own lease holds and only to a node that has applied the last change of
//!   owner; it records the receipt of every renewal.
//! * The leader's control loop declares a node with no renewal for `down_after` down and
//!   reassigns its VIPs in the same command; a new leader records itself, takes the previous
//!   leader's VIPs at once and counts every other node as renewed at its election.
//! * A leader that has not heard a quorum for 2 x election_timeout_max stops heartbeating so
//!   the others can elect a leader that can.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openraft::ServerState;
use raftlb_actors::announce::{Announcer, Sync as AnnounceSync};
use raftlb_actors::lease::{Clock, Lease, MonotonicClock};
use raftlb_proto::raft::raft_client::RaftClient;
use raftlb_proto::raft::Payload;
use raftlb_raft_store::codec;
use raftlb_raft_store::store::SharedTable;
use raftlb_raft_store::table::ownership::{self, NodeFacts, OwnershipBatch, Released};
use raftlb_raft_store::table::{AllocationTable, Command, Response, ServiceState};
use raftlb_raft_store::Raft;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::admin::now_ms;
use crate::network::{self, Forward, ForwardReply};

/// Clock drift allowed between two nodes' monotonic clocks, and a fixed margin on top.
const DRIFT_PERCENT: u64 = 1;
const MARGIN_MS: u64 = 20;

/// Raft and lease timing, in milliseconds. Two named profiles; the inequalities of
/// DESIGN.md §3 are checked by [`Timing::check`] at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    /// E: openraft's leader lease (followers refuse votes for E after a heartbeat).
    pub election_max_ms: u64,
    /// L_lead: how long a quorum contact keeps the leader answering.
    pub leader_lease_ms: u64,
    /// L_fol: how long a grant keeps a non-leader answering.
    pub follower_lease_ms: u64,
    pub renew_every_ms: u64,
    /// D: no renewal for this long and a node is declared down.
    pub down_after_ms: u64,
}

impl Timing {
    pub fn profile(name: &str) -> Option<Timing> {
        match name {
            "default" => Some(Timing {
                heartbeat_ms: 40,
                election_min_ms: 150,
                election_max_ms: 250,
                leader_lease_ms: 250,
                follower_lease_ms: 625,
                renew_every_ms: 150,
                down_after_ms: 725,
            }),
            "fast" => Some(Timing {
                heartbeat_ms: 15,
                election_min_ms: 60,
                election_max_ms: 100,
                leader_lease_ms: 100,
                follower_lease_ms: 250,
                renew_every_ms: 60,
                down_after_ms: 300,
            }),
            _ => None,
        }
    }

    /// The inequalities fencing relies on, each with the reason it matters.
    pub fn check(&self) -> Result<(), String> {
        let t = self;
        let rules: [(bool, String); 6] = [
            (
                t.heartbeat_ms * 3 <= t.election_min_ms,
                format!(
                    "heartbeat {} ms x 3 must not exceed election_min {} ms, or followers elect while the leader is alive",
                    t.heartbeat_ms, t.election_min_ms
                ),
            ),
            (
                t.election_min_ms < t.election_max_ms,
                format!(
                    "election_min {} ms must be below election_max {} ms",
                    t.election_min_ms, t.election_max_ms
                ),
            ),
            (
                t.leader_lease_ms <= t.election_max_ms,
                format!(
                    "leader lease {} ms must not exceed election_max {} ms (openraft's vote lease), or an old leader answers after a new one is elected",
                    t.leader_lease_ms, t.election_max_ms
                ),
            ),
            (
                t.follower_lease_ms >= 2 * t.election_max_ms,
                format!(
                    "follower lease {} ms must be at least 2 x election_max {} ms, so a leader crash does not darken every VIP",
                    t.follower_lease_ms, t.election_max_ms
                ),
            ),
            (
                t.renew_every_ms * 3 <= t.follower_lease_ms,
                format!(
                    "renew_every {} ms x 3 must not exceed the follower lease {} ms",
                    t.renew_every_ms, t.follower_lease_ms
                ),
            ),
            (
                t.down_after_ms >= t.expiry_bound_ms(),
                format!(
                    "down_after {} ms must be at least the follower lease {} ms + {DRIFT_PERCENT}% drift + {MARGIN_MS} ms = {} ms, or a node's VIPs move while it may still answer",
                    t.down_after_ms,
                    t.follower_lease_ms,
                    t.expiry_bound_ms()
                ),
            ),
        ];
        match rules.into_iter().find(|(ok, _)| !ok) {
            None => Ok(()),
            Some((_, why)) => Err(why),
        }
    }

    /// After a grant received at t (leader's clock), the node's lease has surely ended by
    /// t + this.
    fn expiry_bound_ms(&self) -> u64 {
        self.follower_lease_ms + self.follower_lease_ms * DRIFT_PERCENT / 100 + MARGIN_MS
    }
}

fn ms(v: u64) -> u64 {
    v * 1_000_000
}

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
struct Renewal {
    received_ns: u64,
    applied: u64,
    /// Receipt of the last renewal that was granted (or the election, for a new leader).
    granted_ns: Option<u64>,
    /// A renewal really arrived (not just counted at the election).
    renewed: bool,
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
    wake_control: Notify,
    wake_renew: Notify,
}

static KEEPER: OnceLock<Arc<LeaseKeeper>> = OnceLock::new();

/// The process's keeper (one peer per process), for the forwarded lease report.
pub fn keeper() -> Option<&'static Arc<LeaseKeeper>> {
    KEEPER.get()
}

impl LeaseKeeper {
    pub fn install(name: &str, timing: Timing) -> Arc<LeaseKeeper> {
        let k = Arc::new(LeaseKeeper {
            name: name.to_string(),
            timing,
            clock: Arc::new(MonotonicClock::new()),
            lease: Arc::new(Lease::new()),
            announced_index: AtomicU64::new(0),
            leader_lease_end_ns: AtomicU64::new(0),
            renewals: Mutex::new(BTreeMap::new()),
            wake_control: Notify::new(),
            wake_renew: Notify::new(),
        });
        let _ = KEEPER.set(k.clone());
        k
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    fn leader_lease_valid(&self, now: u64) -> bool {
        now < self.leader_lease_end_ns.load(Ordering::Acquire)
    }

    fn renewals(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Renewal>> {
        self.renewals.lock().unwrap_or_else(|p| p.into_inner())
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
        });
        r.received_ns = now;
        r.renewed = true;
        r.applied = r.applied.max(req.applied);
        let t = table.read().unwrap_or_else(|p| p.into_inner());
        let index = t.table.ownership_index;
        if !self.leader_lease_valid(now) {
            return refuse("the leader has no lease".into(), index);
        }
        let Some(node) = t.table.nodes.get(&req.node) else {
            return refuse(format!("node {} is not registered", req.node), index);
        };
        if !node.live {
            self.wake_control.notify_one();
            return refuse(format!("node {} is being marked live", req.node), index);
        }
        if req.applied < index {
            return refuse(format!("apply up to index {index} first"), index);
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
        let bound = ms(self.timing.expiry_bound_ms());
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
    fn confirmed(&self, rel: &Released, now: u64) -> bool {
        if rel.node == self.name {
            return self.announced_index.load(Ordering::Acquire) >= rel.index;
        }
        let bound = ms(self.timing.expiry_bound_ms());
        match self.renewals().get(&rel.node) {
            None => true,
            Some(r) => r.applied >= rel.index || r.granted_ns.is_none_or(|g| now > g + bound),
        }
    }
}

/// Registers `facts` unless the table already holds exactly them; retries until a leader
/// answers. A refusal (a Raft id registered under another name) is logged, not retried.
pub async fn register_facts(raft: &Raft, table: &SharedTable, facts: &NodeFacts) {
    loop {
        let already = table
            .read()
            .ok()
            .and_then(|t| t.table.nodes.get(&facts.name).map(|n| n.facts.clone()))
            .as_ref()
            == Some(facts);
        if already {
            return;
        }
        let cmd = Command::RegisterNode {
            facts: facts.clone(),
            now_ms: now_ms(),
        };
        match network::forward_to_leader(raft, Forward::Write(cmd), Duration::from_secs(5)).await {
            ForwardReply::Written(Response::Ok) => {
                info!(node = %facts.name, interfaces = ?facts.interfaces, labels = ?facts.labels, excluded = ?facts.excluded, "registered");
                return;
            }
            ForwardReply::Written(Response::Rejected(e)) => {
                warn!(error = %e, "registration refused");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Everything the lease tasks need.
#[derive(Clone)]
pub struct Tasks {
    pub raft: Raft,
    pub table: SharedTable,
    pub keeper: Arc<LeaseKeeper>,
    pub facts: NodeFacts,
    /// The interfaces this node answers on, as they change (discovery).
    pub interfaces: tokio::sync::watch::Receiver<Vec<String>>,
    pub announcer: actix::Addr<Announcer>,
    /// Register `facts` at start (false under Kubernetes: the Node watcher does it).
    pub register: bool,
}

impl Tasks {
    /// Starts every lease task; they end with the runtime.
    pub fn spawn(self) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(self.clone().register()),
            tokio::spawn(self.clone().leader_lease()),
            tokio::spawn(self.clone().control()),
            tokio::spawn(self.clone().renew_loop()),
            tokio::spawn(self.sync()),
        ]
    }

    fn is_leader(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(m.id)).then_some(m.current_term)
    }

    /// Registers this node's facts once a leader exists, and again whenever its interfaces
    /// change (under Kubernetes the Node watcher registers them instead, with the Node's
    /// labels).
    async fn register(mut self) {
        if !self.register {
            return;
        }
        loop {
            let facts = NodeFacts {
                interfaces: self.interfaces.borrow_and_update().clone(),
                ..self.facts.clone()
            };
            register_facts(&self.raft, &self.table, &facts).await;
            if self.interfaces.changed().await.is_err() {
                return;
            }
        }
    }

    /// Leader only: confirm a quorum every L_lead/4; step aside after 2E without one.
    async fn leader_lease(self) {
        let t = self.keeper.timing;
        let tick = Duration::from_millis((t.leader_lease_ms / 4).max(1));
        let k = &self.keeper;
        let mut last_quorum_send: Option<u64> = None;
        let mut making_way_since: Option<u64> = None;
        loop {
            tokio::time::sleep(tick).await;
            if self.is_leader().is_none() {
                if making_way_since.take().is_some() {
                    self.raft.runtime_config().heartbeat(true);
                }
                last_quorum_send = None;
                continue;
            }
            if network::transferring() {
                continue; // leadership is being handed over: let the lease run out
            }
            let now = k.now();
            if let Some(since) = making_way_since {
                if now < since + ms(3 * t.election_max_ms) {
                    continue;
                }
                // Nobody took over: try to lead again.
                self.raft.runtime_config().heartbeat(true);
                making_way_since = None;
                last_quorum_send = Some(now);
            }
            let sent = k.now();
            let lease = Duration::from_millis(t.leader_lease_ms);
            match tokio::time::timeout(lease, self.raft.get_read_log_id()).await {
                Ok(Ok(_)) if self.is_leader().is_some() => {
                    let end = sent + ms(t.leader_lease_ms);
                    k.leader_lease_end_ns.fetch_max(end, Ordering::AcqRel);
                    k.lease.set(k.leader_lease_end_ns.load(Ordering::Acquire));
                    last_quorum_send = Some(sent);
                }
                _ => {
                    let since = *last_quorum_send.get_or_insert(sent);
                    if k.now() > since + ms(2 * t.election_max_ms) {
                        warn!("no quorum for 2 x election timeout: stopping heartbeats so another peer can lead");
                        self.raft.runtime_config().heartbeat(false);
                        making_way_since = Some(k.now());
                    }
                }
            }
        }
    }

    /// Leader only: liveness and ownership decisions.
    async fn control(self) {
        let k = &self.keeper;
        let t = k.timing;
        let tick = Duration::from_millis(t.heartbeat_ms);
        let mut led_term: Option<u64> = None;
        let mut record_leader = false;
        // The applied index at which the planner last found nothing to do with no VIP waiting
        // for a release to be confirmed: until the table moves on, planning again is the same.
        let mut settled: Option<u64> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = k.wake_control.notified() => {}
            }
            let Some(term) = self.is_leader() else {
                led_term = None;
                continue;
            };
            let now = k.now();
            if led_term != Some(term) {
                led_term = Some(term);
                record_leader = true;
                settled = None;
                // Every node counts as renewed now; grants of the previous leader may run.
                let names: Vec<String> = self
                    .table
                    .read()
                    .map(|t| t.table.nodes.keys().cloned().collect())
                    .unwrap_or_default();
                let mut r = k.renewals();
                r.clear();
                for n in names {
                    r.insert(
                        n,
                        Renewal {
                            received_ns: now,
                            applied: 0,
                            granted_ns: Some(now),
                            renewed: false,
                        },
                    );
                }
                drop(r);
                k.lease.set(k.leader_lease_end_ns.load(Ordering::Acquire));
                info!(term, "leading: taking over liveness and ownership");
            }
            if !k.leader_lease_valid(now) {
                continue;
            }
            let batch = {
                let guard = self.table.read().unwrap_or_else(|p| p.into_inner());
                let applied = guard.last_applied.map_or(0, |l| l.index);
                self.decide(
                    &guard.table,
                    applied,
                    term,
                    record_leader,
                    now,
                    &mut settled,
                )
            };
            let Some(batch) = batch else {
                continue;
            };
            let moves = batch.assignments.len();
            match tokio::time::timeout(
                Duration::from_secs(2),
                self.raft.client_write(Command::Ownership(batch)),
            )
            .await
            {
                Ok(Ok(_)) => {
                    record_leader = false;
                    if moves > 0 {
                        info!(moves, "ownership committed");
                    }
                }
                Ok(Err(e)) => warn!(error = %e, "ownership commit failed"),
                Err(_) => warn!("ownership commit timed out"),
            }
        }
    }

    /// The batch the leader should commit now, if any. The planner runs only when its answer
    /// can differ from the last one: the table moved on, liveness changes, or a VIP waits for
    /// its releaser's confirmation (which comes with renewals and time, not with the table).
    fn decide(
        &self,
        table: &AllocationTable,
        applied: u64,
        term: u64,
        record_leader: bool,
        now: u64,
        settled: &mut Option<u64>,
    ) -> Option<OwnershipBatch> {
        let k = &self.keeper;
        let t = k.timing;
        let mut liveness: Vec<(String, bool)> = Vec::new();
        {
            let mut renewals = k.renewals();
            for (name, node) in &table.nodes {
                if *name == k.name {
                    if !node.live {
                        liveness.push((name.clone(), true));
                    }
                    continue;
                }
                let r = renewals.entry(name.clone()).or_insert(Renewal {
                    received_ns: now,
                    applied: 0,
                    granted_ns: Some(now),
                    renewed: false,
                });
                let quiet = now.saturating_sub(r.received_ns);
                let previous_leader =
                    record_leader && table.leader.as_ref().is_some_and(|(_, l)| l == name);
                if node.live && (quiet > ms(t.down_after_ms) || previous_leader) {
                    // The previous leader's lease ended before anyone could elect us.
                    liveness.push((name.clone(), false));
                } else if !node.live && r.renewed && quiet < ms(2 * t.renew_every_ms) {
                    liveness.push((name.clone(), true));
                }
            }
        }
        if liveness.is_empty() && !record_leader && *settled == Some(applied) {
            return None;
        }
        let waiting = std::cell::Cell::new(false);
        let confirmed = |_: &IpAddr, rel: &Released| {
            let yes = k.confirmed(rel, now);
            if !yes {
                waiting.set(true);
            }
            yes
        };
        let assignments = if liveness.is_empty() {
            ownership::plan(table, &confirmed)
        } else {
            let mut scratch = table.clone();
            scratch.apply(&Command::Ownership(OwnershipBatch {
                liveness: liveness.clone(),
                ..Default::default()
            }));
            ownership::plan(&scratch, &confirmed)
        };
        if liveness.is_empty() && assignments.is_empty() && !record_leader {
            // Nothing to do at this index, and nothing time can change: rest until it moves.
            *settled = (!waiting.get()).then_some(applied);
            return None;
        }
        *settled = None;
        Some(OwnershipBatch {
            leader: record_leader.then(|| (term, k.name.clone())),
            liveness,
            assignments,
            now_ms: now_ms(),
        })
    }

    /// Non-leaders: renew with the leader every `renew_every`, and at once after giving a
    /// VIP up (so the leader learns it sooner).
    async fn renew_loop(self) {
        let k = &self.keeper;
        let t = k.timing;
        let every = Duration::from_millis(t.renew_every_ms);
        let mut clients: BTreeMap<String, RaftClient<Channel>> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = k.wake_renew.notified() => {}
            }
            let (me, leader, addr) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let addr = m.current_leader.and_then(|l| {
                    m.membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone())
                });
                (m.id, m.current_leader, addr)
            };
            let (Some(leader), Some(addr)) = (leader, addr) else {
                continue;
            };
            if leader == me {
                continue;
            }
            let Ok(client) = network::cached_client(&mut clients, &addr) else {
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
            let still_follower = self.is_leader().is_none();
            if reply.granted
                && still_follower
                && k.announced_index.load(Ordering::Acquire) >= reply.ownership_index
            {
                k.lease.extend_to(sent + ms(t.follower_lease_ms));
            }
        }
    }

    /// Hands the table's view of this node to the announcer; records how far it got.
    async fn announce(&self, a: &actix::Addr<Announcer>) {
        let k = &self.keeper;
        let (sync, index) = {
            let g = self.table.read().unwrap_or_else(|p| p.into_inner());
            let services = g
                .table
                .services
                .iter()
                .filter_map(|(key, e)| match &e.state {
                    ServiceState::Allocated { ips, .. } => Some((key.clone(), ips.clone())),
                    _ => None,
                })
                .collect();
            let sync = AnnounceSync {
                owned: g.table.owned_by(&k.name),
                services,
            };
            (sync, g.last_applied.map_or(0, |l| l.index))
        };
        match a.send(sync).await {
            Ok(report) => {
                if !report.started.is_empty() {
                    info!(started = ?report.started, "answering");
                }
                k.announced_index.fetch_max(index, Ordering::AcqRel);
                if !report.withdrawn.is_empty() {
                    info!(withdrawn = ?report.withdrawn, "stopped answering");
                    // Tell the leader now, so the next owner need not wait a renewal.
                    k.wake_renew.notify_one();
                    k.wake_control.notify_one();
                }
            }
            Err(e) => warn!(error = %e, "announcer unavailable"),
        }
    }

    /// Keeps the announcer in step with the table; records how far it got.
    async fn sync(self) {
        let mut rx = self.raft.metrics();
        let mut last: Option<u64> = None;
        loop {
            let applied = rx.borrow_and_update().last_applied.map(|l| l.index);
            if applied != last {
                last = applied;
                self.announce(&self.announcer).await;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

async fn renew_rpc(
    mut client: RaftClient<Channel>,
    req: &RenewRequest,
    timeout: Duration,
) -> Result<RenewReply, String> {
    let data = codec::encode(req).map_err(|e| e.to_string())?;
    let mut r = tonic::Request::new(Payload { data });
    r.set_timeout(timeout);
    let reply = client
        .renew_lease(r)
        .await
        .map_err(|s| s.message().to_string())?;
    codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_profiles_satisfy_the_inequalities() {
        for p in ["default", "fast"] {
            let t = Timing::profile(p).unwrap();
            assert_eq!(t.check(), Ok(()), "{p}");
        }
    }

    #[test]
    fn each_broken_inequality_is_named() {
        let base = Timing::profile("default").unwrap();
        type Breaker = fn(&mut Timing);
        let cases: [(Breaker, &str); 5] = [
            (|t| t.leader_lease_ms = 300, "leader lease 300 ms"),
            (|t| t.follower_lease_ms = 400, "follower lease 400 ms"),
            (|t| t.down_after_ms = 640, "down_after 640 ms"),
            (|t| t.renew_every_ms = 300, "renew_every 300 ms"),
            (|t| t.heartbeat_ms = 60, "heartbeat 60 ms"),
        ];
        for (break_it, want) in cases {
            let mut t = base;
            break_it(&mut t);
            let e = t.check().unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
