//! The raftlb node: Raft network over tonic, the admin service, the peer runner, the local
//! cluster launcher (`raftlb up`) and the `raftlb ctl` client.

pub mod admin;
pub mod check;
pub mod ctl;
pub mod health;
pub mod interfaces;
pub mod kube;
pub mod lease;
pub mod manifest;
pub mod network;
pub mod peer;
pub mod render;
pub mod up;
pub mod watch;
