//! The table's event log: what happened to which object, bounded, published to Kubernetes
//! as Events by the leader's writer.

use serde::{Deserialize, Serialize};

use super::AllocationTable;

/// How many events the table keeps (oldest dropped first).
pub const MAX_EVENTS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time_ms: u64,
    /// `Service/ns/name`, `IPAddressPool/name`, ...
    pub object: String,
    /// `Normal` or `Warning`.
    pub kind: String,
    pub reason: String,
    pub message: String,
}

impl AllocationTable {
    pub(super) fn event(
        &mut self,
        now: u64,
        object: &str,
        kind: &str,
        reason: &str,
        message: &str,
    ) {
        self.next_event_seq += 1;
        self.events.push_back(Event {
            seq: self.next_event_seq,
            time_ms: now,
            object: object.to_string(),
            kind: kind.to_string(),
            reason: reason.to_string(),
            message: match &self.actor {
                Some(user) => format!("{message} (by {user})"),
                None => message.to_string(),
            },
        });
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }
}
