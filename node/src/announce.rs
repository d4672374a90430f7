//! The announcer bridge: keeps this node's announcer (layer 2 today, BGP next to it) in step
//! with the applied table, and records how far it got — the index its lease renewals report.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use raftlb_actors::announce::{Announcer, Scope, Sync as AnnounceSync};
use raftlb_raft_store::table::index::Changes;
use raftlb_raft_store::table::ServiceState;
use tracing::{info, warn};

use crate::app::App;

/// Keeps the announcer in step with the table, for as long as the process runs. After a first
/// full sync it sends only what the applied entries touched (the table's journal); a journal
/// that does not reach back far enough, or a failed send, means a full sync again.
pub async fn run(app: App, announcer: actix::Addr<Announcer>) {
    let mut applied = app.applied_changes();
    // The applied index the announcer was last brought up to.
    let mut synced: Option<u64> = None;
    while applied.next().await {
        synced = announce(&app, &announcer, synced).await;
    }
}

/// What the table says for this node, about what changed after `since`, and the applied index
/// it reflects.
fn sync_since(app: &App, since: Option<u64>) -> (AnnounceSync, u64) {
    let me = &app.fence.name;
    let g = app.state.read().unwrap_or_else(|p| p.into_inner());
    let t = &g.table;
    let index = g.last_applied.map_or(0, |l| l.index);
    let (owned, scope) = match t.changes_since(since) {
        Changes::All => (t.owned_by(me), Scope::All),
        Changes::Some { vips, services, .. } => {
            // The Services on a touched VIP are looked at again too (their announced set
            // changed with it).
            let services: BTreeSet<String> = vips
                .iter()
                .filter_map(|ip| t.addresses().get(ip))
                .flat_map(|usage| usage.users.keys().map(|k| k.to_string()))
                .chain(services)
                .collect();
            (t.owned_among(me, &vips), Scope::Only { vips, services })
        }
    };
    // The Services this node announces: those with an address it owns (not every Service,
    // which would cost every node O(Services) per applied entry).
    let keys: Vec<&str> = match &scope {
        Scope::All => owned
            .keys()
            .filter_map(|ip| t.addresses().get(ip))
            .flat_map(|usage| usage.users.keys().map(|k| k.as_str()))
            .collect(),
        Scope::Only { services, .. } => services.iter().map(String::as_str).collect(),
    };
    let services = keys
        .into_iter()
        .filter_map(|key| match &t.services().get(key)?.state {
            ServiceState::Allocated { ips, .. } if ips.iter().any(|ip| t.owns(me, ip)) => {
                Some((key.to_string(), ips.clone()))
            }
            _ => None,
        })
        .collect();
    let sync = AnnounceSync {
        owned,
        services,
        scope,
    };
    (sync, index)
}

/// Hands the table's view of this node to the announcer; records how far it got. Returns the
/// index the announcer is now in step with.
async fn announce(app: &App, a: &actix::Addr<Announcer>, since: Option<u64>) -> Option<u64> {
    let k = &app.fence;
    let (sync, index) = sync_since(app, since);
    let full = sync.scope == Scope::All;
    match a.send(sync).await {
        Ok(report) => {
            let s = &app.stats;
            let syncs = if full {
                &s.syncs_full
            } else {
                &s.syncs_partial
            };
            syncs.fetch_add(1, Ordering::Relaxed);
            s.announcing.store(report.holding as u64, Ordering::Relaxed);
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
            Some(index)
        }
        Err(e) => {
            warn!(error = %e, "announcer unavailable");
            None
        }
    }
}
