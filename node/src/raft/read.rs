//! Linearizable reads without a log entry (Raft thesis §6.4, "read index"): the leader confirms
//! with a heartbeat round that it still leads and takes its commit index; the peer that reads
//! waits until it has applied that far and answers from its own table. A follower asks the
//! leader for the index over `ReadIndex`.

use std::time::Duration;

use raftlb_proto::raft::Empty;
use raftlb_raft_store::Raft;

use super::transport::{reply, Channels};
use super::{KnownLeader, LeaderReply};

/// On the leader: its read index, once a quorum confirmed it still leads.
pub async fn leader_read_index(raft: &Raft) -> LeaderReply<u64> {
    match raft.get_read_log_id().await {
        Ok((read, _applied)) => LeaderReply::Done(read.map_or(0, |l| l.index)),
        Err(e) => {
            let hint = e
                .forward_to_leader()
                .and_then(|f| Some((f.leader_id?, f.leader_node.clone()?.addr)));
            match hint {
                Some(h) => LeaderReply::NotLeader(Some(h)),
                None => LeaderReply::Failed(e.to_string()),
            }
        }
    }
}

/// Waits until this peer's table reflects every write acknowledged before the call (the
/// leader's read index); returns the index it waited for.
pub async fn barrier(raft: &Raft, channels: &Channels, timeout: Duration) -> Result<u64, String> {
    let KnownLeader { me, leader, addr } = KnownLeader::of(raft);
    let leader = leader.ok_or("no leader: a linearizable read needs one")?;
    let answer = if leader == me {
        leader_read_index(raft).await
    } else {
        let addr = addr.ok_or("the leader's address is unknown")?;
        let mut client = channels.client(leader, &addr)?;
        let mut req = tonic::Request::new(Empty {});
        req.set_timeout(timeout);
        let r = client
            .read_index(req)
            .await
            .map_err(|s| format!("read index from the leader: {}", s.message()))?;
        reply(r)?
    };
    let index = match answer {
        LeaderReply::Done(i) => i,
        LeaderReply::NotLeader(_) => return Err("leadership is changing; retry".into()),
        LeaderReply::Failed(e) => return Err(e),
    };
    raft.wait(Some(timeout))
        .applied_index_at_least(Some(index), "linearizable read")
        .await
        .map_err(|e| format!("applying up to the read index {index}: {e}"))?;
    Ok(index)
}
