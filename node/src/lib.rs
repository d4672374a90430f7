//! The raftlb node: Raft network over tonic, the admin service, the peer runner, the local
//! cluster launcher (`raftlb up`) and the `raftlb ctl` client.

pub mod admin;
pub mod announce;
pub mod app;
pub mod bgp;
pub mod check;
pub mod clock;
pub mod control;
pub mod ctl;
pub mod fence;
pub mod fuzz;
pub mod health;
pub mod interfaces;
pub mod kube;
pub mod manifest;
pub mod peer;
pub mod raft;
pub mod register;
pub mod render;
pub mod rpc;
pub mod stats;
pub mod timing;
pub mod tls;
pub mod up;
pub mod watch;
