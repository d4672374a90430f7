//! Registration: a node tells the table who it is (name, interfaces, labels) so the planner
//! may give it VIPs.

use std::time::Duration;

use raftlb_raft_store::table::ownership::NodeFacts;
use raftlb_raft_store::table::{Command, Response};
use tracing::{info, warn};

use crate::app::App;
use crate::clock::wall_ms;
use crate::raft::leader::LeaderReply;

/// Registers `facts` unless the table already holds exactly them; retries until a leader
/// answers. A refusal (a Raft id registered under another name) is logged, not retried.
pub async fn register_facts(app: &App, facts: &NodeFacts) {
    loop {
        let already = app
            .state
            .read()
            .ok()
            .and_then(|t| t.table.nodes().get(&facts.name).map(|n| n.facts.clone()))
            .as_ref()
            == Some(facts);
        if already {
            return;
        }
        let cmd = Command::RegisterNode {
            facts: facts.clone(),
            now_ms: wall_ms(),
        };
        match app.write(cmd, Duration::from_secs(5)).await {
            LeaderReply::Done(Response::Ok) => {
                info!(node = %facts.name, interfaces = ?facts.interfaces, labels = ?facts.labels, excluded = ?facts.excluded, "registered");
                return;
            }
            LeaderReply::Done(Response::Rejected(e)) => {
                warn!(error = %e, "registration refused");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Registers this node's facts once a leader exists, and again whenever its interfaces
/// change (under Kubernetes the Node watcher registers them instead, with the Node's
/// labels).
pub async fn run(
    app: App,
    base: NodeFacts,
    mut interfaces: tokio::sync::watch::Receiver<Vec<String>>,
) {
    loop {
        let facts = NodeFacts {
            interfaces: interfaces.borrow_and_update().clone(),
            ..base.clone()
        };
        register_facts(&app, &facts).await;
        if interfaces.changed().await.is_err() {
            return;
        }
    }
}
