//! Kubernetes: the CRDs and the controller that turns cluster state into Raft commands.

pub mod crd;
