//! Handing leadership over. openraft 0.9 has no leader transfer, so raftlb does it in three
//! steps: the leader stops heartbeating, waits until no follower can still be bound by its
//! lease (election_timeout_max), and asks the target (`TimeoutNow`) to start an election at
//! once, so the target is first to ask for votes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raftlb_proto::raft::Empty;
use raftlb_raft_store::{NodeId, Raft};

use super::transport::Channels;
use super::LeaderReply;

/// Set while this peer hands its leadership over: its lease task must not send the heartbeats
/// that would keep followers from electing the target.
#[derive(Clone, Default)]
pub struct TransferGuard(Arc<AtomicBool>);

impl TransferGuard {
    pub fn active(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release)
    }
}

/// Hands leadership to `to`. Another follower may still win a close race; the reply says who
/// leads afterwards.
pub async fn transfer_leader(
    raft: &Raft,
    guard: &TransferGuard,
    channels: &Channels,
    to: NodeId,
) -> LeaderReply<String> {
    let metrics = raft.metrics().borrow().clone();
    if metrics.current_leader != Some(metrics.id) {
        return LeaderReply::NotLeader(None);
    }
    if to == metrics.id {
        return LeaderReply::Done(format!("node {to} already leads"));
    }
    let membership = metrics.membership_config.membership().clone();
    if !membership.voter_ids().any(|v| v == to) {
        return LeaderReply::Failed(format!("node {to} is not a voter"));
    }
    let Some(addr) = membership.get_node(&to).map(|n| n.addr.clone()) else {
        return LeaderReply::Failed(format!("node {to} has no address"));
    };
    let lease = Duration::from_millis(raft.config().election_timeout_max + 20);
    // The guard stops the leader lease loop's rounds, which are the heartbeats.
    guard.set(true);
    tokio::time::sleep(lease).await;
    let asked = match channels.client(to, &addr) {
        Ok(mut client) => {
            let mut req = tonic::Request::new(Empty {});
            req.set_timeout(Duration::from_secs(1));
            client
                .timeout_now(req)
                .await
                .map_err(|s| s.message().to_string())
        }
        Err(e) => Err(e),
    };
    let mut rx = raft.metrics();
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        rx.wait_for(|m| m.current_leader.is_some_and(|l| l != m.id)),
    )
    .await;
    guard.set(false);
    let leader = raft.metrics().borrow().current_leader;
    match (leader, asked) {
        (Some(l), _) if l == to => LeaderReply::Done(format!("node {to} now leads")),
        (_, Err(e)) => LeaderReply::Failed(format!("could not reach node {to}: {e}")),
        (l, _) => LeaderReply::Failed(format!(
            "node {to} did not win the election; leader is now {}",
            l.map_or("unknown".to_string(), |l| l.to_string())
        )),
    }
}
