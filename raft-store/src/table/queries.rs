//! The table's read API: what the admin API, `/metrics`, the kube status writer and the
//! control loops may see. Fields are private; every change goes through `apply`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use super::objects::{Object, ObjectRef};
use super::ownership::{NodeRecord, VipMove, VipRecord};
use super::pool::PoolState;
use super::{AddressUse, AllocationTable, Event, ServiceEntry};

impl AllocationTable {
    /// Bumped by every batch that changes configuration.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The `loadBalancerClass` this cluster serves (None: Services without a class).
    pub fn load_balancer_class(&self) -> Option<&str> {
        self.load_balancer_class.as_deref()
    }

    /// Configuration objects, Namespaces and EndpointSlices (Services are in `services`).
    pub fn objects(&self) -> &BTreeMap<ObjectRef, Object> {
        &self.objects
    }

    /// Pools by name, with their free-address index.
    pub fn pools(&self) -> &BTreeMap<String, PoolState> {
        &self.pools
    }

    /// Services by `namespace/name`.
    pub fn services(&self) -> &BTreeMap<String, Box<ServiceEntry>> {
        &self.services
    }

    /// Every allocated address and who uses it.
    pub fn addresses(&self) -> &BTreeMap<IpAddr, Box<AddressUse>> {
        &self.addresses
    }

    /// Services waiting for an address.
    pub fn pending(&self) -> &BTreeSet<String> {
        &self.pending
    }

    /// The last [`super::MAX_EVENTS`] events, oldest first.
    pub fn events(&self) -> &VecDeque<Event> {
        &self.events
    }

    /// Events up to this sequence number are published as Kubernetes Events.
    pub fn events_published(&self) -> u64 {
        self.events_published
    }

    /// Nodes that may announce, by name.
    pub fn nodes(&self) -> &BTreeMap<String, NodeRecord> {
        &self.nodes
    }

    /// The ownership record of every address ever allocated.
    pub fn vips(&self) -> &BTreeMap<IpAddr, VipRecord> {
        &self.vips
    }

    /// The last changes of owner, oldest first.
    pub fn history(&self) -> &VecDeque<VipMove> {
        &self.history
    }

    /// Changes of owner ever applied.
    pub fn moves_total(&self) -> u64 {
        self.moves_total
    }

    /// Changes of owner away from a node that was down.
    pub fn failovers_total(&self) -> u64 {
        self.failovers_total
    }

    /// (term, node) of the leader that committed the last ownership batch with its name.
    pub fn leader(&self) -> Option<&(u64, String)> {
        self.leader.as_ref()
    }

    /// Log index of the last change of owner: a node's lease is only granted once it has
    /// applied this far.
    pub fn ownership_index(&self) -> u64 {
        self.ownership_index
    }
}
