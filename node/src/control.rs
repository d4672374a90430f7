//! The leader's control loop (DESIGN.md §3): it declares a node with no renewal for
//! `down_after` down and reassigns its VIPs in the same command; a new leader records itself,
//! counts every node as renewed at its election, and takes the previous leader's VIPs once
//! that leader's lease has surely ended (`leader_expiry_bound_ms` after the election) if it
//! has not renewed by then. Not at once: the previous leader may have voted for the new one
//! itself with its lease still running, and would answer beside the new owner (the chaos
//! harness found this under leader transfers and packet loss). Planning itself is the table's
//! pure `planner::plan_changes`; this loop decides when to run it and commits what it returns.

use std::net::IpAddr;
use std::time::Duration;

use raftlb_raft_store::table::ownership::{OwnershipBatch, Released};
use raftlb_raft_store::table::planner;
use raftlb_raft_store::table::{AllocationTable, Command};
use tracing::{info, warn};

use crate::app::App;
use crate::clock::{ms_to_ns, wall_ms};
use crate::fence::Renewal;

/// Leader only: liveness and ownership decisions, for as long as the process runs.
pub async fn run(app: App) {
    let k = &app.fence;
    let t = k.timing;
    let tick = Duration::from_millis(t.heartbeat_ms);
    let mut led_term: Option<u64> = None;
    let mut record_leader = false;
    let mut plans = Plans::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = k.wake_control.notified() => {}
        }
        let Some(term) = app.leader_term() else {
            led_term = None;
            continue;
        };
        let now = k.now();
        if led_term != Some(term) {
            led_term = Some(term);
            record_leader = true;
            plans = Plans::default();
            let (names, before): (Vec<String>, Option<String>) = app
                .state
                .read()
                .map(|t| {
                    (
                        t.table.nodes().keys().cloned().collect(),
                        t.table.leader().map(|(_, l)| l.clone()),
                    )
                })
                .unwrap_or_default();
            plans.previous = before.filter(|l| *l != k.name).map(|l| (l, now));
            k.take_over(names.into_iter());
            info!(term, "leading: taking over liveness and ownership");
        }
        if !k.leader_lease_valid(now) {
            continue;
        }
        let (batch, applied) = {
            let guard = app.state.read().unwrap_or_else(|p| p.into_inner());
            let applied = guard.last_applied.map_or(0, |l| l.index);
            let batch = decide(
                &app,
                &guard.table,
                applied,
                term,
                record_leader,
                now,
                &mut plans,
            );
            (batch, applied)
        };
        let Some(batch) = batch else {
            continue;
        };
        let moves = batch.assignments.len();
        let result = tokio::time::timeout(
            Duration::from_secs(2),
            app.raft.client_write(Command::Ownership(batch)),
        )
        .await;
        k.end_refusals();
        match result {
            Ok(Ok(_)) => {
                record_leader = false;
                plans.committed = Some(applied);
                if moves > 0 {
                    info!(moves, "ownership committed");
                }
            }
            Ok(Err(e)) => warn!(error = %e, "ownership commit failed"),
            Err(_) => warn!("ownership commit timed out"),
        }
    }
}

/// What the leader remembers of its own plans (this term).
#[derive(Default)]
struct Plans {
    /// The applied index at which the planner last found nothing to do with no VIP waiting
    /// for a release to be confirmed: until the table moves on, planning again is the same.
    settled: Option<u64>,
    /// The applied index of the last plan committed (or found empty): the next plan looks
    /// only at what changed after it.
    committed: Option<u64>,
    /// The leader before us and when we took over, until it is found alive or down.
    previous: Option<(String, u64)>,
}

/// The batch the leader should commit now, if any. The planner runs only when its answer
/// can differ from the last one: the table moved on, liveness changes, or a VIP waits for
/// its releaser's confirmation (which comes with renewals and time, not with the table).
fn decide(
    app: &App,
    table: &AllocationTable,
    applied: u64,
    term: u64,
    record_leader: bool,
    now: u64,
    plans: &mut Plans,
) -> Option<OwnershipBatch> {
    let k = &app.fence;
    let t = k.timing;
    let mut liveness: Vec<(String, bool)> = Vec::new();
    {
        let mut renewals = k.renewals();
        for (name, node) in table.nodes() {
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
                refused: false,
            });
            let quiet = now.saturating_sub(r.received_ns);
            // The previous leader may still answer on its leader lease after our election:
            // it may have voted for us itself (openraft's leader grants a vote whatever its
            // lease). Once that lease has surely ended, a previous leader that has not
            // renewed with us is down; one that has is alive and keeps its VIPs.
            let mut previous_down = false;
            if let Some((p, since)) = plans.previous.as_ref().filter(|(p, _)| p == name) {
                if r.renewed {
                    plans.previous = None;
                } else if now.saturating_sub(*since) > ms_to_ns(t.leader_expiry_bound_ms()) {
                    previous_down = true;
                    tracing::info!(node = %p, "the previous leader's lease has ended and it has not renewed: down");
                    plans.previous = None;
                }
            }
            if node.live && (quiet > ms_to_ns(t.down_after_ms) || previous_down) {
                // Decided under the renewals lock: a renewal either came before (and this
                // node is not down) or is refused until the commit returns.
                r.refused = true;
                liveness.push((name.clone(), false));
            } else if !node.live && r.renewed && quiet < ms_to_ns(2 * t.renew_every_ms) {
                liveness.push((name.clone(), true));
            }
        }
    }
    if liveness.is_empty()
        && !record_leader
        && plans.previous.is_none()
        && plans.settled == Some(applied)
    {
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
    let started = std::time::Instant::now();
    let planned = planner::plan_changes(table, &liveness, plans.committed, &confirmed);
    app.stats.planned(started.elapsed(), planned.examined);
    let assignments = planned.assignments;
    if liveness.is_empty() && assignments.is_empty() && !record_leader {
        // Nothing to do at this index, and nothing time can change: rest until it moves.
        plans.settled = (!waiting.get()).then_some(applied);
        plans.committed = Some(applied);
        return None;
    }
    plans.settled = None;
    Some(OwnershipBatch {
        leader: record_leader.then(|| (term, k.name.clone())),
        liveness,
        assignments,
        now_ms: wall_ms(),
    })
}
