//! The allocation table: the replicated state machine's data.
//!
//! `apply()` is deterministic: no clock, no randomness, no I/O, only ordered maps. A time it
//! needs (event stamps) travels inside the command, stamped by the proposer. Every replica that
//! applies the same log holds the same table, byte for byte.
//!
//! Allocation follows MetalLB's observable rules (shared/METALLB.md §2–§3) with two deliberate
//! differences: where MetalLB's order is random (equal priorities, map order), raftlb orders by
//! priority then pool name; and the lowest free address is found through a free-range index
//! ([`pool::FreeIntervals`]), not a scan.
//!
//! One noun per module: [`command`] (the log's contract), [`config`] (checks before a batch is
//! applied), [`allocation`] (Services to addresses), [`ownership`] (nodes and who owns each
//! VIP), [`eligibility`] (who may announce a VIP), [`bgp`] (what a node announces over BGP), [`openelb`] (OpenELB's BGP objects read as BGPPeers), [`planner`] (the leader's choice of owners),
//! [`events`], [`index`] (what is derived, for work proportional to what changed) and
//! [`queries`] (the read API; fields are private).

mod allocation;
pub mod bgp;
pub mod command;
mod config;
mod eligibility;
pub mod events;
pub mod index;
pub mod intent;
pub mod objects;
pub mod openelb;
pub mod ownership;
pub mod planner;
pub mod pool;
mod queries;
pub mod selector;
pub mod small_map;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

pub use command::*;
pub use events::{Event, MAX_EVENTS};
use objects::*;
use ownership::{NodeRecord, VipMove, VipRecord};
use pool::PoolState;

/// Where a Service stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    Allocated {
        pool: CompactString,
        ips: Vec<IpAddr>,
    },
    Pending {
        reason: String,
    },
    /// Not for raftlb: not a LoadBalancer, or another loadBalancerClass.
    Ignored {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub spec: ServiceSpec,
    pub state: ServiceState,
}

/// Who uses one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressUse {
    pub pool: CompactString,
    pub sharing_key: CompactString,
    pub backend_key: CompactString,
    /// Service key -> (protocol, port) pairs it takes on this address.
    pub users: small_map::SmallMap<CompactString, Vec<(CompactString, u16)>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationTable {
    /// Bumped by every batch that changes configuration.
    generation: u64,
    load_balancer_class: Option<String>,
    /// Configuration objects and Namespaces (Services live in `services`).
    objects: BTreeMap<ObjectRef, Object>,
    pools: BTreeMap<String, PoolState>,
    services: BTreeMap<String, Box<ServiceEntry>>,
    addresses: BTreeMap<IpAddr, Box<AddressUse>>,
    /// Sharing key -> addresses that carry it, so packing onto a shared IP is not a scan.
    shared: BTreeMap<String, BTreeSet<IpAddr>>,
    pending: BTreeSet<String>,
    events: VecDeque<Event>,
    next_event_seq: u64,
    /// Events up to this sequence number are published as Kubernetes Events.
    events_published: u64,
    /// Nodes that may announce, by name.
    nodes: BTreeMap<String, NodeRecord>,
    /// Owner of every address that was ever allocated.
    vips: BTreeMap<IpAddr, VipRecord>,
    /// The last [`ownership::MAX_HISTORY`] changes of owner.
    history: VecDeque<VipMove>,
    /// Changes of owner ever applied, and those away from an owner that was down (failovers):
    /// counters for metrics, which the bounded history cannot give.
    moves_total: u64,
    failovers_total: u64,
    /// (term, node) of the leader that committed the last ownership batch with its name.
    leader: Option<(u64, String)>,
    /// Log index of the last change of owner: a node's lease is only granted once it has
    /// applied this far.
    ownership_index: u64,
    /// Index of the log entry being applied (set by the state machine before each apply).
    log_index: u64,
    /// Derived from the above and the entries applied; not in snapshots (see [`index`]).
    #[serde(skip)]
    index: index::Indexes,
    /// The operator whose command is being applied ([`Command::By`]); its events name them.
    #[serde(skip)]
    actor: Option<String>,
}

/// Config keys ignore the namespace: MetalLB's CRs all live in one namespace and refer to each
/// other by name.
pub(crate) fn config_ref(kind: Kind, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: String::new(),
        name: name.to_string(),
    }
}

fn does_not_exist(kind: Kind, name: &str) -> String {
    format!("{kind} {name:?} does not exist")
}

fn service_key(r: &ObjectRef) -> String {
    format!("{}/{}", r.namespace, r.name)
}

impl AllocationTable {
    pub fn new() -> AllocationTable {
        AllocationTable::default()
    }

    /// Applies the command of log entry `index`. Deterministic.
    pub fn apply(&mut self, index: u64, command: &Command) -> Response {
        self.log_index = index;
        match command {
            Command::By { user, command } => {
                let outer = self.actor.replace(user.clone());
                let response = self.apply(index, command);
                self.actor = outer;
                response
            }
            Command::RegisterNode { facts, now_ms } => self.register_node(facts, *now_ms),
            Command::Ownership(batch) => self.apply_ownership(batch),
            Command::Drain {
                node,
                drain,
                now_ms,
            } => self.drain(node, *drain, *now_ms),
            Command::MoveVip { vip, node, now_ms } => self.move_vip(vip, node, *now_ms),
            Command::EventsPublished { upto } => {
                // Never backwards: a slow writer's late report must not republish.
                self.events_published = self.events_published.max(*upto);
                Response::Ok
            }
            Command::Apply(batch) => match self.validate_batch(batch) {
                Err(e) => Response::Rejected(e),
                Ok(()) => Response::Applied(self.apply_batch(batch)),
            },
            Command::SetLoadBalancerClass { class, now_ms } => {
                if self.load_balancer_class != *class {
                    self.load_balancer_class = class.clone();
                    self.touch_all();
                    // Holders first: what they give up is free for the others.
                    let mut keys: Vec<String> = self.services.keys().cloned().collect();
                    keys.sort_by_key(|k| !self.holds_addresses(k));
                    for key in keys {
                        self.reconcile(&key, *now_ms);
                    }
                    self.retry_pending(*now_ms);
                }
                Response::Ok
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod eip_tests;
