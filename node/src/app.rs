//! The context of one running peer, built once at start-up and handed to every server and
//! loop: the Raft handle, the applied state, the fence and the leader hand-over guard. There
//! are no process globals; a test may run several peers in one process.

use std::sync::Arc;
use std::time::Duration;

use raftlb_raft_store::store::SharedTable;
use raftlb_raft_store::{Command, Raft, Response};

use crate::fence::LeaseKeeper;
use crate::raft::leader::{to_leader, LeaderReply, Leading, MembershipChange};
use crate::raft::membership::TransferGuard;
use crate::raft::transport::Channels;
use crate::stats::Stats;
use crate::tls::Security;

#[derive(Clone)]
pub struct App {
    pub raft: Raft,
    /// The applied table, membership and last applied index.
    pub state: SharedTable,
    pub fence: Arc<LeaseKeeper>,
    pub transfer: TransferGuard,
    pub stats: Arc<Stats>,
    /// One connection per peer, shared by every job that talks to it.
    pub channels: Channels,
    /// This node's BGP sessions and what it told them.
    pub bgp: Arc<tokio::sync::Mutex<crate::bgp::Bridge>>,
    /// mTLS (whose certificates, which cluster) or `--insecure`.
    pub security: Security,
}

/// Wakes its holder each time the applied index moves (the first call returns at once).
pub struct AppliedChanges {
    rx: tokio::sync::watch::Receiver<
        openraft::RaftMetrics<raftlb_raft_store::NodeId, openraft::BasicNode>,
    >,
    last: Option<Option<u64>>,
}

impl AppliedChanges {
    /// Waits until the applied index differs from the one last returned; false once Raft
    /// has shut down.
    pub async fn next(&mut self) -> bool {
        loop {
            let applied = self.rx.borrow_and_update().last_applied.map(|l| l.index);
            if self.last != Some(applied) {
                self.last = Some(applied);
                return true;
            }
            if self.rx.changed().await.is_err() {
                return false;
            }
        }
    }
}

impl App {
    /// A waiter on the applied index, for the loops that follow the table.
    pub fn applied_changes(&self) -> AppliedChanges {
        AppliedChanges {
            rx: self.raft.metrics(),
            last: None,
        }
    }

    /// The term this peer leads in, if it leads.
    pub fn leader_term(&self) -> Option<u64> {
        crate::raft::leader_term(&self.raft)
    }

    /// Whether this peer's metrics name it the leader.
    pub fn leads(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(m.id)
    }

    fn leading(&self) -> Leading {
        Leading {
            raft: self.raft.clone(),
            transfer: self.transfer.clone(),
            channels: self.channels.clone(),
        }
    }

    /// Commits `cmd` through whoever leads, waiting up to `deadline` for one.
    pub async fn write(&self, cmd: Command, deadline: Duration) -> LeaderReply<Response> {
        to_leader(&self.leading(), cmd, deadline).await
    }

    /// Changes the membership through whoever leads.
    pub async fn change(
        &self,
        change: MembershipChange,
        deadline: Duration,
    ) -> LeaderReply<String> {
        to_leader(&self.leading(), change, deadline).await
    }

    /// Runs leader work here, which must be the leader (the kube controller, which acts only
    /// while it leads): no forwarding.
    pub async fn write_here(&self, cmd: Command) -> LeaderReply<Response> {
        use crate::raft::leader::LeaderJob;
        cmd.here(&self.leading()).await
    }

    pub async fn change_here(&self, change: MembershipChange) -> LeaderReply<String> {
        use crate::raft::leader::LeaderJob;
        change.here(&self.leading()).await
    }
}
