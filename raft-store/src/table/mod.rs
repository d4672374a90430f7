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

pub mod index;
pub mod intent;
pub mod objects;
pub mod ownership;
pub mod pool;
mod queries;
pub mod selector;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use intent::{Intent, IntentError};
use objects::*;
use ownership::{NodeFacts, NodeRecord, OwnershipBatch, VipMove, VipRecord};
use pool::{AddressRange, Family, PoolState};

/// How many events the table keeps (oldest dropped first).
pub const MAX_EVENTS: usize = 4096;

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

/// Where a Service stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    Allocated {
        pool: String,
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
    pub pool: String,
    pub sharing_key: String,
    pub backend_key: String,
    /// Service key -> (protocol, port) pairs it takes on this address.
    pub users: BTreeMap<String, Vec<(String, u16)>>,
}

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationTable {
    /// Bumped by every batch that changes configuration.
    generation: u64,
    load_balancer_class: Option<String>,
    /// Configuration objects and Namespaces (Services live in `services`).
    objects: BTreeMap<ObjectRef, Object>,
    pools: BTreeMap<String, PoolState>,
    services: BTreeMap<String, ServiceEntry>,
    addresses: BTreeMap<IpAddr, AddressUse>,
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

    // ---- validation: reads only ----

    fn validate_batch(&self, batch: &ApplyBatch) -> Result<(), ApplyError> {
        let error = |doc: u32, r: &ObjectRef, (field, reason): (String, String)| ApplyError {
            document: doc,
            object: r.to_string(),
            field,
            reason,
        };
        let mut seen = BTreeSet::new();
        for (doc, obj) in &batch.objects {
            let r = obj.reference().normalized();
            validate::object(obj).map_err(|e| error(*doc, &r, e))?;
            if !seen.insert(r.clone()) {
                return Err(error(
                    *doc,
                    &r,
                    (
                        "metadata.name".into(),
                        "the same object appears twice in this batch".into(),
                    ),
                ));
            }
        }
        for (doc, r) in &batch.deletes {
            let r = r.clone().normalized();
            let exists = if r.kind == Kind::Service {
                self.services.contains_key(&service_key(&r))
            } else {
                self.objects.contains_key(&r)
            };
            if batch.strict && !exists {
                return Err(error(
                    *doc,
                    &r,
                    ("metadata.name".into(), "not found".into()),
                ));
            }
        }

        // The configuration as it would be after this batch.
        let mut config: BTreeMap<ObjectRef, (u32, &Object)> = self
            .objects
            .iter()
            .map(|(r, o)| (r.clone(), (0, o)))
            .collect();
        for (_, r) in &batch.deletes {
            config.remove(&r.clone().normalized());
        }
        for (doc, obj) in &batch.objects {
            if obj.spec.kind() != Kind::Service {
                config.insert(obj.reference().normalized(), (*doc, obj));
            }
        }
        // Pools (IPAddressPools and Eips): one name space, and no address in two pools.
        let mut ranges: Vec<(AddressRange, &ObjectRef, String)> = Vec::new();
        // The resulting pools, kept for the requested-IP check below.
        let mut resulting_pools: Vec<PoolState> = Vec::new();
        let mut pool_names: BTreeMap<&str, &ObjectRef> = BTreeMap::new();
        for (r, (doc, obj)) in &config {
            let Some(spec) = obj.spec.pool_spec() else {
                continue;
            };
            if let Some(other) = pool_names.insert(&r.name, r) {
                // Report it on the object this batch brings (document 0 is the stored one).
                let (doc, r, other) = if *doc == 0 {
                    (config[other].0, other, r)
                } else {
                    (*doc, r, other)
                };
                return Err(error(
                    doc,
                    r,
                    (
                        "metadata.name".into(),
                        format!(
                            "{} {} exists: IPAddressPools and Eips are both pools and share one name space",
                            other.kind, other.name
                        ),
                    ),
                ));
            }
            let parsed = validate::pool_ranges(&spec).map_err(|e| error(*doc, r, e))?;
            resulting_pools.push(PoolState::new(&r.name, &parsed, spec.avoid_buggy_ips));
            for (i, range) in parsed.into_iter().enumerate() {
                if let Some((_, other, other_text)) =
                    ranges.iter().find(|(o, _, _)| o.overlaps(&range))
                {
                    return Err(error(
                        *doc,
                        r,
                        (
                            validate::address_field(r.kind, i),
                            format!(
                                "{} overlaps {other_text} of {} {}",
                                spec.addresses[i], other.kind, other.name
                            ),
                        ),
                    ));
                }
                ranges.push((range, r, spec.addresses[i].clone()));
            }
        }
        // A pool named by an advertisement may be either kind of pool.
        let exists = |kind: Kind, name: &str| {
            if kind.is_pool() {
                pool_names.contains_key(name)
            } else {
                config.contains_key(&config_ref(kind, name))
            }
        };
        let aliases: BTreeSet<&str> = config
            .values()
            .filter_map(|(_, o)| match &o.spec {
                ObjectSpec::Community(c) => Some(c.communities.iter().map(|a| a.name.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        for (r, (doc, obj)) in &config {
            // Every name in `names` must be an object of `kind` in the resulting config.
            let all_exist = |field: &str, kind: Kind, names: &[String]| -> Result<(), ApplyError> {
                match names.iter().position(|n| !exists(kind, n)) {
                    None => Ok(()),
                    Some(i) => Err(error(
                        *doc,
                        r,
                        (format!("{field}[{i}]"), does_not_exist(kind, &names[i])),
                    )),
                }
            };
            match &obj.spec {
                ObjectSpec::L2Advertisement(s) => {
                    all_exist(
                        "spec.ipAddressPools",
                        Kind::IPAddressPool,
                        &s.ip_address_pools,
                    )?;
                }
                ObjectSpec::BgpAdvertisement(s) => {
                    all_exist(
                        "spec.ipAddressPools",
                        Kind::IPAddressPool,
                        &s.ip_address_pools,
                    )?;
                    all_exist("spec.peers", Kind::BGPPeer, &s.peers)?;
                    for (i, c) in s.communities.iter().enumerate() {
                        if !validate::is_community_value(c) && !aliases.contains(c.as_str()) {
                            return Err(error(
                                *doc,
                                r,
                                (
                                    format!("spec.communities[{i}]"),
                                    format!("{c:?} is neither a community value (a:b, large:a:b:c) nor an alias defined by a Community"),
                                ),
                            ));
                        }
                    }
                }
                ObjectSpec::BgpPeer(s) => {
                    if let Some(p) = s
                        .bfd_profile
                        .as_ref()
                        .filter(|p| !exists(Kind::BFDProfile, p))
                    {
                        let reason = does_not_exist(Kind::BFDProfile, p);
                        return Err(error(*doc, r, ("spec.bfdProfile".into(), reason)));
                    }
                }
                _ => {}
            }
        }
        if batch.strict {
            // A requested IP must lie in some pool of the resulting configuration.
            for (doc, obj) in &batch.objects {
                let ObjectSpec::Service(spec) = &obj.spec else {
                    continue;
                };
                if spec.service_type != "LoadBalancer" || !self.class_matches(spec) {
                    continue;
                }
                let Ok(intent) = Intent::of(spec) else {
                    continue; // already reported by validate::object
                };
                for ip in &intent.requested {
                    if !resulting_pools.iter().any(|p| p.admits(ip)) {
                        return Err(error(
                            *doc,
                            &obj.reference(),
                            (
                                "spec.loadBalancerIP".into(),
                                format!("requested IP {ip} is not in any IPAddressPool"),
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn class_matches(&self, spec: &ServiceSpec) -> bool {
        spec.load_balancer_class == self.load_balancer_class
    }

    // ---- mutation: cannot fail ----

    fn apply_batch(&mut self, batch: &ApplyBatch) -> ApplyOutcome {
        let now = batch.now_ms;
        let mut outcome = ApplyOutcome::default();
        let mut config_changed = false;
        let mut touched: Vec<String> = Vec::new();

        for (_, r) in &batch.deletes {
            let r = r.clone().normalized();
            if r.kind == Kind::Service {
                let key = service_key(&r);
                if self.services.contains_key(&key) {
                    self.release(&key);
                    self.services.remove(&key);
                    self.pending.remove(&key);
                    outcome.changes.push((r, Change::Deleted));
                }
            } else if let Some(old) = self.objects.remove(&r) {
                if let ObjectSpec::EndpointSlice(s) = &old.spec {
                    self.file_slice(&r, &s.service, false);
                }
                config_changed |= r.kind != Kind::EndpointSlice;
                outcome.changes.push((r, Change::Deleted));
            }
        }
        for (_, obj) in &batch.objects {
            let r = obj.reference().normalized();
            match &obj.spec {
                ObjectSpec::Service(spec) => {
                    let key = spec.key();
                    let change = match self.services.get_mut(&key) {
                        Some(entry) if entry.spec == *spec => Change::Unchanged,
                        Some(entry) => {
                            entry.spec = spec.clone();
                            Change::Configured
                        }
                        None => {
                            self.services.insert(
                                key.clone(),
                                ServiceEntry {
                                    spec: spec.clone(),
                                    state: ServiceState::Pending {
                                        reason: "not yet evaluated".into(),
                                    },
                                },
                            );
                            Change::Created
                        }
                    };
                    if change != Change::Unchanged {
                        touched.push(key.clone());
                    }
                    outcome.changes.push((r, change));
                }
                _ => {
                    let change = match self.objects.get(&r) {
                        Some(old) if old == obj => Change::Unchanged,
                        Some(_) => Change::Configured,
                        None => Change::Created,
                    };
                    if change != Change::Unchanged {
                        let old = self.objects.insert(r.clone(), obj.clone());
                        for (spec, present) in [
                            (old.as_ref().map(|o| &o.spec), false),
                            (Some(&obj.spec), true),
                        ] {
                            if let Some(ObjectSpec::EndpointSlice(s)) = spec {
                                self.file_slice(&r, &s.service, present);
                            }
                        }
                        // Endpoints change who may announce, not what is allocated.
                        config_changed |= r.kind != Kind::EndpointSlice;
                    }
                    outcome.changes.push((r, change));
                }
            }
        }

        if config_changed {
            self.generation += 1;
            self.touch_all();
            self.rebuild_pools();
            // Services holding addresses first (they keep them if still valid), as MetalLB's
            // reprocess-all does, so a pending Service can never take an address in use.
            let allocated: Vec<String> = self
                .services
                .keys()
                .filter(|k| self.holds_addresses(k))
                .cloned()
                .collect();
            for key in allocated {
                self.reconcile(&key, now);
            }
        }
        // Touched services that already hold an address go first, for the same reason.
        touched.sort_by_key(|k| !self.holds_addresses(k));
        for key in &touched {
            self.reconcile(key, now);
        }
        self.retry_pending(now);

        outcome.generation = self.generation;
        for (_, obj) in &batch.objects {
            if let ObjectSpec::Service(spec) = &obj.spec {
                let key = spec.key();
                if let Some(e) = self.services.get(&key) {
                    outcome.services.push((key, e.state.clone()));
                }
            }
        }
        outcome
    }

    /// Re-derives every pool's free index from the configuration and the addresses in use.
    /// Addresses that left every pool stay recorded until their Service is reconciled.
    fn rebuild_pools(&mut self) {
        let mut pools: BTreeMap<String, PoolState> = BTreeMap::new();
        for obj in self.objects.values() {
            if let Some(spec) = obj.spec.pool_spec() {
                // Validated before it was stored.
                let ranges = validate::pool_ranges(&spec).unwrap_or_default();
                pools.insert(
                    obj.name.clone(),
                    PoolState::new(&obj.name, &ranges, spec.avoid_buggy_ips),
                );
            }
        }
        for (ip, usage) in self.addresses.iter_mut() {
            if let Some(pool) = pools.values_mut().find(|p| p.admits(ip)) {
                pool.take(ip);
                usage.pool = pool.name.clone();
            }
        }
        self.pools = pools;
    }

    /// The object a pool name stands for: an IPAddressPool or an Eip (they share names).
    pub fn pool_object(&self, name: &str) -> Option<&Object> {
        self.objects
            .get(&config_ref(Kind::IPAddressPool, name))
            .or_else(|| self.objects.get(&config_ref(Kind::Eip, name)))
    }

    fn eip(&self, pool: &str) -> Option<&EipSpec> {
        match self.pool_object(pool).map(|o| &o.spec) {
            Some(ObjectSpec::Eip(e)) => Some(e),
            _ => None,
        }
    }

    /// Why a pool gives no new address to this Service: a disabled Eip, or a pool that is not an
    /// Eip of the protocol the Service's OpenELB annotation asks for.
    fn refuses(&self, pool: &str, intent: &Intent) -> Option<String> {
        if self.eip(pool).is_some_and(|e| e.disable) {
            return Some(format!("Eip {pool} is disabled"));
        }
        self.wrong_protocol(pool, intent)
    }

    fn wrong_protocol(&self, pool: &str, intent: &Intent) -> Option<String> {
        let want = intent.eip_protocol.as_deref()?;
        match self.eip(pool) {
            Some(e) if e.protocol() == want => None,
            Some(e) => Some(format!(
                "Eip {pool} is protocol {}, the Service asks for {want}",
                e.protocol()
            )),
            None => Some(format!(
                "IPAddressPool {pool} is not an Eip of protocol {want} (annotation {})",
                intent::OPENELB_PROTOCOL
            )),
        }
    }

    fn pool_of(&self, ip: &IpAddr) -> Option<&PoolState> {
        self.pools.values().find(|p| p.admits(ip))
    }

    fn retry_pending(&mut self, now: u64) {
        let pending: Vec<String> = self.pending.iter().cloned().collect();
        for key in pending {
            self.reconcile(&key, now);
        }
    }

    /// Brings one Service to the state its spec and the configuration call for.
    fn reconcile(&mut self, key: &str, now: u64) {
        let Some(entry) = self.services.get(key) else {
            return;
        };
        let spec = entry.spec.clone();
        let object = format!("Service/{key}");
        if spec.service_type != "LoadBalancer" || !self.class_matches(&spec) {
            let reason = if spec.service_type != "LoadBalancer" {
                format!("type is {}, not LoadBalancer", spec.service_type)
            } else {
                format!(
                    "loadBalancerClass {:?} is not served here (this cluster serves {:?})",
                    spec.load_balancer_class.as_deref().unwrap_or(""),
                    self.load_balancer_class.as_deref().unwrap_or("")
                )
            };
            if self.release(key) {
                self.event(now, &object, "Normal", "ClearAssignment", &reason);
            }
            self.pending.remove(key);
            self.set_state(key, ServiceState::Ignored { reason });
            return;
        }
        let intent = match Intent::of(&spec) {
            Ok(i) => i,
            Err(IntentError { field, reason }) => {
                self.release(key);
                self.set_pending(key, now, &format!("{field}: {reason}"));
                return;
            }
        };
        if let ServiceState::Allocated { pool, ips } = entry.state.clone() {
            match self.still_valid(key, &intent, &pool, &ips) {
                Ok(pool) => {
                    // Refresh the address records: the Service may have changed its ports, or
                    // (as the sole user) its sharing key.
                    for ip in &ips {
                        self.assign(key, &intent, &pool, ip);
                    }
                    let ips = self.add_second_family(key, &intent, &pool, ips, now);
                    self.set_state(key, ServiceState::Allocated { pool, ips });
                    return;
                }
                Err(reason) => {
                    self.release(key);
                    let msg = format!("current IP not allowed any more ({reason}); reallocating");
                    self.event(now, &object, "Normal", "ClearAssignment", &msg);
                }
            }
        }
        match self.allocate(key, &intent) {
            Ok((pool, ips)) => {
                for ip in &ips {
                    self.assign(key, &intent, &pool, ip);
                }
                let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                let msg = format!("Assigned IP [{}] from pool {pool}", list.join(", "));
                self.event(now, &object, "Normal", "IPAllocated", &msg);
                self.pending.remove(key);
                self.set_state(key, ServiceState::Allocated { pool, ips });
            }
            Err(reason) => self.set_pending(key, now, &reason),
        }
    }

    fn holds_addresses(&self, key: &str) -> bool {
        matches!(
            self.services.get(key).map(|e| &e.state),
            Some(ServiceState::Allocated { .. })
        )
    }

    fn set_state(&mut self, key: &str, state: ServiceState) {
        if let Some(e) = self.services.get_mut(key) {
            if e.state != state {
                e.state = state;
                self.touch_service(key);
            }
        }
    }

    /// Pending with a reason; the event is emitted once per distinct reason, not per retry.
    fn set_pending(&mut self, key: &str, now: u64, reason: &str) {
        let same = matches!(
            self.services.get(key).map(|e| &e.state),
            Some(ServiceState::Pending { reason: r }) if r == reason
        );
        if !same {
            let object = format!("Service/{key}");
            self.event(now, &object, "Warning", "AllocationFailed", reason);
        }
        self.pending.insert(key.to_string());
        self.set_state(
            key,
            ServiceState::Pending {
                reason: reason.to_string(),
            },
        );
    }

    /// Whether a Service may keep what it holds. Returns the pool name (it may have been
    /// relabelled when the address moved to another pool).
    fn still_valid(
        &self,
        key: &str,
        intent: &Intent,
        pool: &str,
        ips: &[IpAddr],
    ) -> Result<String, String> {
        let mut current_pool = pool.to_string();
        for ip in ips {
            let Some(p) = self.pool_of(ip) else {
                return Err(format!("{ip} is in no IPAddressPool"));
            };
            current_pool = p.name.clone();
        }
        if let Some(want) = &intent.pool {
            if *want != current_pool {
                return Err(format!("pool {want} requested, IP is from {current_pool}"));
            }
        }
        // A disabled Eip keeps what it gave (OpenELB's rule); a protocol mismatch does not.
        if let Some(why) = self.wrong_protocol(&current_pool, intent) {
            return Err(why);
        }
        if !intent.requested.is_empty() {
            let want: BTreeSet<_> = intent.requested.iter().collect();
            let have: BTreeSet<_> = ips.iter().collect();
            if want != have {
                return Err("requested IPs changed".into());
            }
        }
        let families: Vec<Family> = ips.iter().map(Family::of).collect();
        let fits = intent.family_choices().iter().any(|choice| {
            choice.iter().all(|f| families.contains(f))
                && families.iter().all(|f| choice.contains(f))
        }) || (intent.policy == intent::FamilyPolicy::PreferDualStack
            && families.len() == 1
            && intent.families.contains(&families[0]));
        if !fits {
            return Err("IP families no longer match the Service".into());
        }
        for ip in ips {
            self.check_sharing(key, intent, ip)?;
        }
        Ok(current_pool)
    }

    /// PreferDualStack with one IP gains the other family once its pool has one.
    fn add_second_family(
        &mut self,
        key: &str,
        intent: &Intent,
        pool: &str,
        mut ips: Vec<IpAddr>,
        now: u64,
    ) -> Vec<IpAddr> {
        if intent.policy != intent::FamilyPolicy::PreferDualStack
            || ips.len() != 1
            || !intent.requested.is_empty()
        {
            return ips;
        }
        let have = Family::of(&ips[0]);
        let Some(&missing) = intent.families.iter().find(|f| **f != have) else {
            return ips;
        };
        if let Some(ip) = self.pick(key, intent, pool, missing) {
            self.assign(key, intent, pool, &ip);
            ips.push(ip);
            let msg = format!("Assigned additional IP {ip} from pool {pool}");
            self.event(
                now,
                &format!("Service/{key}"),
                "Normal",
                "IPAllocated",
                &msg,
            );
        }
        ips
    }

    /// Whether `key` may use `ip` beside its current users.
    fn check_sharing(&self, key: &str, intent: &Intent, ip: &IpAddr) -> Result<(), String> {
        let Some(usage) = self.addresses.get(ip) else {
            return Ok(());
        };
        let others: Vec<(&String, &Vec<(String, u16)>)> = usage
            .users
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let names = || {
            others
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if intent.sharing_key.is_empty() || intent.sharing_key != usage.sharing_key {
            return Err(format!(
                "{ip} is in use by {} and the allow-shared-ip keys differ",
                names()
            ));
        }
        if intent.backend_key != usage.backend_key {
            return Err(format!(
                "{ip} is shared by {} with a different externalTrafficPolicy/selector",
                names()
            ));
        }
        for (other, ports) in &others {
            if let Some((proto, port)) = intent.ports.iter().find(|p| ports.contains(p)) {
                return Err(format!(
                    "{ip}: port {port}/{proto} is already taken by {other}"
                ));
            }
        }
        Ok(())
    }

    /// Pools a Service may take from automatically, in order: matching pinned pools by
    /// priority (0 = unset last) then name, then pools without serviceAllocation by name.
    fn candidate_pools(&self, spec: &ServiceSpec, intent: &Intent) -> Vec<String> {
        let ns_labels = self
            .objects
            .get(&config_ref(Kind::Namespace, &spec.namespace))
            .map(|o| o.labels.clone())
            .unwrap_or_default();
        let mut pinned: Vec<(i64, String)> = Vec::new();
        let mut fallback: Vec<String> = Vec::new();
        for obj in self.objects.values() {
            let Some(p) = obj.spec.pool_spec() else {
                continue;
            };
            if !p.auto_assign || self.refuses(&obj.name, intent).is_some() {
                continue;
            }
            match &p.service_allocation {
                None => fallback.push(obj.name.clone()),
                Some(sa) => {
                    let ns_ok = (sa.namespaces.is_empty() && sa.namespace_selectors.is_empty())
                        || sa.namespaces.contains(&spec.namespace)
                        || sa
                            .namespace_selectors
                            .iter()
                            .any(|s| selector::matches(s, &ns_labels));
                    let svc_ok = sa.service_selectors.is_empty()
                        || sa
                            .service_selectors
                            .iter()
                            .any(|s| selector::matches(s, &spec.labels));
                    if ns_ok && svc_ok {
                        let prio = if sa.priority == 0 {
                            i64::MAX
                        } else {
                            i64::from(sa.priority)
                        };
                        pinned.push((prio, obj.name.clone()));
                    }
                }
            }
        }
        pinned.sort();
        if pinned.is_empty() {
            fallback
        } else {
            // Only if no pinned pool can serve does MetalLB fall back; the caller tries them in
            // order, so append the fallback after the pinned pools.
            pinned.into_iter().map(|(_, n)| n).chain(fallback).collect()
        }
    }

    /// Chooses addresses for a Service. Reads only.
    fn allocate(&self, key: &str, intent: &Intent) -> Result<(String, Vec<IpAddr>), String> {
        let spec = &self.services[key].spec;
        if !intent.requested.is_empty() {
            let mut pool_name: Option<String> = None;
            for ip in &intent.requested {
                let Some(pool) = self.pool_of(ip) else {
                    return Err(format!(
                        "requested IP {ip} is not allowed: it is in no IPAddressPool"
                    ));
                };
                if let Some(want) = &intent.pool {
                    if *want != pool.name {
                        return Err(format!(
                            "requested IP {ip} is in pool {}, not in the requested pool {want}",
                            pool.name
                        ));
                    }
                }
                match &pool_name {
                    Some(p) if *p != pool.name => {
                        return Err("requested IPs must come from one pool".into())
                    }
                    _ => pool_name = Some(pool.name.clone()),
                }
                if let Some(why) = self.refuses(&pool.name, intent) {
                    return Err(format!("requested IP {ip}: {why}"));
                }
                self.check_sharing(key, intent, ip)?;
            }
            return Ok((pool_name.unwrap_or_default(), intent.requested.clone()));
        }
        let candidates = match &intent.pool {
            Some(p) if !self.pools.contains_key(p) => {
                return Err(format!("IPAddressPool {p} does not exist"))
            }
            Some(p) => match self.refuses(p, intent) {
                Some(why) => return Err(why),
                None => vec![p.clone()],
            },
            None => self.candidate_pools(spec, intent),
        };
        if candidates.is_empty() {
            return Err("no IPAddressPool serves this Service".into());
        }
        let mut full: Vec<&str> = Vec::new();
        for choice in intent.family_choices() {
            for name in &candidates {
                let pool = &self.pools[name];
                if !choice.iter().all(|f| pool.has_family(*f)) {
                    continue;
                }
                let picked: Vec<IpAddr> = choice
                    .iter()
                    .filter_map(|f| self.pick(key, intent, name, *f))
                    .collect();
                if picked.len() == choice.len() {
                    return Ok((name.clone(), picked));
                }
                if !full.contains(&name.as_str()) {
                    full.push(name);
                }
            }
        }
        if full.is_empty() {
            let fams: Vec<&str> = intent.families.iter().map(|f| f.as_str()).collect();
            return Err(format!(
                "no IPAddressPool among [{}] has {}",
                candidates.join(", "),
                fams.join(" and ")
            ));
        }
        Err(format!("no available IPs in pool {}", full.join(", ")))
    }

    /// The first usable address of `family` in pool walk order: the lowest free one, or for a
    /// Service with a sharing key, a lower compatible shared one.
    fn pick(&self, key: &str, intent: &Intent, pool: &str, family: Family) -> Option<IpAddr> {
        let state = self.pools.get(pool)?;
        let free = state.lowest_free(family);
        let mut best = free.and_then(|ip| state.position(&ip).map(|pos| (pos, ip)));
        if !intent.sharing_key.is_empty() {
            for ip in self.shared.get(&intent.sharing_key).into_iter().flatten() {
                if Family::of(ip) != family || !state.admits(ip) {
                    continue;
                }
                if self.check_sharing(key, intent, ip).is_err() {
                    continue;
                }
                let pos = state.position(ip)?;
                if best.is_none_or(|(b, _)| pos < b) {
                    best = Some((pos, *ip));
                }
            }
        }
        best.map(|(_, ip)| ip)
    }

    fn assign(&mut self, key: &str, intent: &Intent, pool: &str, ip: &IpAddr) {
        let before = self.slot(ip);
        if !self.addresses.contains_key(ip) {
            if let Some(p) = self.pools.get_mut(pool) {
                p.take(ip);
            }
            // Every allocated address has an ownership record (kept after release, so its
            // epoch keeps counting if the address comes back).
            self.vips.entry(*ip).or_default();
        }
        let usage = self.addresses.entry(*ip).or_insert_with(|| AddressUse {
            pool: pool.to_string(),
            sharing_key: intent.sharing_key.clone(),
            backend_key: intent.backend_key.clone(),
            users: BTreeMap::new(),
        });
        usage.users.insert(key.to_string(), intent.ports.clone());
        if usage.users.len() == 1 {
            // The sole user may change its key in place.
            let old = std::mem::replace(&mut usage.sharing_key, intent.sharing_key.clone());
            usage.backend_key = intent.backend_key.clone();
            if let Some(set) = self.shared.get_mut(&old) {
                set.remove(ip);
                if set.is_empty() {
                    self.shared.remove(&old);
                }
            }
        }
        if !intent.sharing_key.is_empty() {
            self.shared
                .entry(intent.sharing_key.clone())
                .or_default()
                .insert(*ip);
        }
        self.refile(*ip, before);
    }

    /// Gives back whatever the Service holds. Returns whether it held anything.
    fn release(&mut self, key: &str) -> bool {
        let Some(ServiceState::Allocated { ips, .. }) =
            self.services.get(key).map(|e| e.state.clone())
        else {
            return false;
        };
        for ip in &ips {
            let before = self.slot(ip);
            let Some(usage) = self.addresses.get_mut(ip) else {
                continue;
            };
            usage.users.remove(key);
            if usage.users.is_empty() {
                let usage = self.addresses.remove(ip).expect("present above");
                if let Some(p) = self.pools.get_mut(&usage.pool) {
                    p.give_back(ip);
                }
                if let Some(set) = self.shared.get_mut(&usage.sharing_key) {
                    set.remove(ip);
                    if set.is_empty() {
                        self.shared.remove(&usage.sharing_key);
                    }
                }
            }
            self.refile(*ip, before);
        }
        self.set_state(
            key,
            ServiceState::Pending {
                reason: "released".into(),
            },
        );
        true
    }

    fn event(&mut self, now: u64, object: &str, kind: &str, reason: &str, message: &str) {
        self.next_event_seq += 1;
        self.events.push_back(Event {
            seq: self.next_event_seq,
            time_ms: now,
            object: object.to_string(),
            kind: kind.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
        });
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    // ---- reads for the admin API ----

    /// Pool names with their spec and usage per family.
    pub fn pool_usage(
        &self,
        name: &str,
    ) -> Option<(Option<&Object>, pool::FamilyUsage, pool::FamilyUsage)> {
        let p = self.pools.get(name)?;
        Some((
            self.pool_object(name),
            p.usage(Family::V4),
            p.usage(Family::V6),
        ))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod eip_tests;
