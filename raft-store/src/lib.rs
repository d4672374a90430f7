//! raftlb's replicated state: the allocation table (pure, deterministic) and the openraft
//! storage that keeps it on sled.
//!
//! This crate knows nothing of the network: it implements `RaftLogStorage` and
//! `RaftStateMachine` and the table they carry, nothing else.

pub mod codec;
pub mod store;
pub mod table;

pub use table::{AllocationTable, Command, Response};

openraft::declare_raft_types!(
    /// raftlb's openraft type configuration, declared once.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
