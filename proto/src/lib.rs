//! raftlb's gRPC contracts: `admin.proto` (the cluster admin API that `raftlb ctl` speaks) and
//! `raft.proto` (the transport between peers). Generated at build time by protox + tonic.

#![allow(clippy::all)]

pub mod admin {
    tonic::include_proto!("raftlb.admin.v1");
}

pub mod raft {
    tonic::include_proto!("raftlb.raft.v1");
}
