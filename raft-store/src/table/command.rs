//! The log's contract: every command the table applies and its answer. Entries stay in the
//! log and in snapshots, encoded by position (postcard): variants and fields are appended to,
//! never reordered or removed.

use serde::{Deserialize, Serialize};

use super::objects::{Object, ObjectRef};
use super::ownership::{NodeFacts, OwnershipBatch};
use super::ServiceState;
use std::net::IpAddr;

/// Everything that changes the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create or update objects and delete others, atomically: either every item is applied or
    /// none is.
    Apply(ApplyBatch),
    /// Which `loadBalancerClass` this cluster serves (None: Services without a class).
    SetLoadBalancerClass { class: Option<String>, now_ms: u64 },
    /// A node announces itself (name, Raft id, labels, interfaces).
    RegisterNode { facts: NodeFacts, now_ms: u64 },
    /// The leader's liveness and ownership decisions.
    Ownership(OwnershipBatch),
    /// An operator drains a node (its VIPs move away) or undoes it.
    Drain {
        node: String,
        drain: bool,
        now_ms: u64,
    },
    /// An operator moves a VIP to a node (break-before-make).
    MoveVip {
        vip: IpAddr,
        node: String,
        now_ms: u64,
    },
    /// The Kubernetes writer has published every event up to this sequence number (a new
    /// leader's writer resumes after it).
    EventsPublished { upto: u64 },
    /// `command`, written by operator `user` (the CN of their certificate): the events it
    /// causes name them. Last, so that entries written before it existed decode unchanged.
    By { user: String, command: Box<Command> },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyBatch {
    /// (document number in the source file, object).
    pub objects: Vec<(u32, Object)>,
    /// (document number, object to delete).
    pub deletes: Vec<(u32, ObjectRef)>,
    /// Strict (an operator's `apply -f`): a Service that asks for an IP outside every pool, or a
    /// delete of an object that does not exist, rejects the batch. Not strict (a watch source
    /// that cannot refuse): such a Service is kept and stays pending with the reason.
    pub strict: bool,
    /// Proposer's wall clock, for event stamps.
    pub now_ms: u64,
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Entries that carry no command (blank, membership).
    Ok,
    Applied(ApplyOutcome),
    Rejected(ApplyError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    pub generation: u64,
    pub changes: Vec<(ObjectRef, Change)>,
    /// State of each Service the batch touched, after the batch.
    pub services: Vec<(String, ServiceState)>,
    /// The log index of the entry that applied the batch (a checker orders writes by it).
    pub log_index: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Created,
    Configured,
    Unchanged,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
            Change::Deleted => "deleted",
        }
    }
}

/// Why a batch was refused. Names the document, the object, the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("document {document} ({object}): {field}: {reason}")]
pub struct ApplyError {
    pub document: u32,
    pub object: String,
    pub field: String,
    pub reason: String,
}
