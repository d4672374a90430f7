//! The Raft side of a peer: the transport openraft calls ([`transport`]), the way a peer gets
//! work done by whoever leads ([`leader`]), and membership changes including the hand-over of
//! leadership ([`membership`]). The gRPC server for the peer protocol is `crate::rpc`.

pub mod leader;
pub mod membership;
pub mod transport;

use raftlb_raft_store::NodeId;
use serde::{Deserialize, Serialize};

/// The leader's answer, from this peer or over the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply<T> {
    Done(T),
    /// Not (or no longer) the leader; the sender should retry with this one.
    NotLeader(Option<(NodeId, String)>),
    Failed(String),
}
