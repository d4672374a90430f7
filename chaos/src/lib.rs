//! raftlb-chaos: runs real raftlb clusters (real processes, real sled files) on loopback,
//! injects faults (SIGKILL, restart) and checks invariants. Used by the integration tests and
//! the benchmark.
//!
//! It only ever starts processes it owns and signals them by their PID; every process is
//! killed when the [`Cluster`] is dropped, also when a test fails.

pub mod campaign;
pub mod cluster;
pub mod lab;
pub mod routers;

pub use cluster::{
    build_binary, eventually, free_port, free_port_block, labd_binary, raftlb_binary, Cluster,
};
