//! The announcer bridge: keeps this node's announcer (layer 2 today, BGP next to it) in step
//! with the applied table, and records how far it got — the index its lease renewals report.

use std::sync::atomic::Ordering;

use raftlb_actors::announce::{Announcer, Sync as AnnounceSync};
use raftlb_raft_store::table::ServiceState;
use tracing::{info, warn};

use crate::app::App;

/// Keeps the announcer in step with the table, for as long as the process runs.
pub async fn run(app: App, announcer: actix::Addr<Announcer>) {
    let mut rx = app.raft.metrics();
    let mut last: Option<u64> = None;
    loop {
        let applied = rx.borrow_and_update().last_applied.map(|l| l.index);
        if applied != last {
            last = applied;
            announce(&app, &announcer).await;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Hands the table's view of this node to the announcer; records how far it got.
async fn announce(app: &App, a: &actix::Addr<Announcer>) {
    let k = &app.fence;
    let (sync, index) = {
        let g = app.state.read().unwrap_or_else(|p| p.into_inner());
        let t = &g.table;
        let owned = t.owned_by(&k.name);
        // The Services this node announces: the users of its VIPs (not every Service, which
        // would cost every node O(Services) per applied entry).
        let services = owned
            .keys()
            .filter_map(|ip| t.addresses.get(ip))
            .flat_map(|usage| usage.users.keys())
            .filter_map(|key| match &t.services.get(key)?.state {
                ServiceState::Allocated { ips, .. } => Some((key.clone(), ips.clone())),
                _ => None,
            })
            .collect();
        let sync = AnnounceSync { owned, services };
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
