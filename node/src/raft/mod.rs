//! The Raft side of a peer: the transport openraft calls ([`transport`]), the way a peer gets
//! work done by whoever leads ([`leader`]), and membership changes including the hand-over of
//! leadership ([`membership`]), and linearizable reads ([`read`]). The gRPC server for the
//! peer protocol is `crate::rpc`.

pub mod leader;
pub mod membership;
pub mod read;
pub mod transport;

use raftlb_raft_store::{NodeId, Raft};
use serde::{Deserialize, Serialize};

/// The leader's answer, from this peer or over the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply<T> {
    Done(T),
    /// Not (or no longer) the leader; the sender should retry with this one.
    NotLeader(Option<(NodeId, String)>),
    Failed(String),
}

/// The term this peer leads in, if it is the leader in state and in its own view of the
/// cluster.
pub fn leader_term(raft: &Raft) -> Option<u64> {
    let m = raft.metrics();
    let m = m.borrow();
    (m.state == openraft::ServerState::Leader && m.current_leader == Some(m.id))
        .then_some(m.current_term)
}

/// Who leads, as this peer's metrics know it (no round-trip through RaftCore's queue).
pub struct KnownLeader {
    pub me: NodeId,
    pub leader: Option<NodeId>,
    /// The leader's Raft address, when the membership lists it.
    pub addr: Option<String>,
}

impl KnownLeader {
    pub fn of(raft: &Raft) -> KnownLeader {
        let m = raft.metrics();
        let m = m.borrow();
        let addr = m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
        });
        KnownLeader {
            me: m.id,
            leader: m.current_leader,
            addr,
        }
    }
}
