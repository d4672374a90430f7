//! The leader's writes to the API server: what the table decided, where the cluster can see it.
//!
//! Each round compares the table with the objects the watchers last saw and writes only the
//! differences: Service `status.loadBalancer.ingress` and the
//! `raftlb.io/ip-allocated-from-pool` annotation, CRD status (validity; pool usage and holders),
//! ServiceL2Status objects, and the table's events as Kubernetes Events. A Service is read
//! fresh before it is patched, so a write the watch has not delivered yet is not repeated.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use raftlb_raft_store::table::intent::ANN_ALLOCATED_FROM;
use raftlb_raft_store::table::objects::{Kind, ObjectRef};
use raftlb_raft_store::table::pool::{from_u128, FamilyUsage};
use raftlb_raft_store::table::{AllocationTable, Command, ServiceState};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::crd::*;
use super::source::Source;
use super::Stores;
use crate::app::App;
use crate::raft::leader::LeaderReply;

/// Events published per round at most (the rest follow in the next rounds).
const EVENTS_PER_ROUND: usize = 256;

/// Label on ServiceL2Status objects naming their Service.
pub const LABEL_SERVICE_NAME: &str = "raftlb.io/service-name";
pub const LABEL_SERVICE_NAMESPACE: &str = "raftlb.io/service-namespace";

pub struct Writer {
    client: Client,
    namespace: String,
    /// Key -> (what we wrote, the resourceVersion we saw when we wrote it): until the watch
    /// shows something newer, the same write is not sent again.
    written: HashMap<String, (String, Option<String>)>,
    /// Events up to here are published (at least as far as the table's cursor).
    events_cursor: u64,
}

/// What one Service should show.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceView {
    ips: Vec<String>,
    pool: Option<String>,
}

fn observed_view(svc: &Service) -> ServiceView {
    let ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    let pool = svc.annotations().get(ANN_ALLOCATED_FROM).cloned();
    ServiceView { ips, pool }
}

/// The view the table wants for `svc`, or None if raftlb has nothing to say about it.
fn desired_view(table: &AllocationTable, svc: &Service) -> Option<ServiceView> {
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
    let cleared = ServiceView {
        ips: vec![],
        pool: None,
    };
    match table.services().get(&key).map(|e| &e.state) {
        Some(ServiceState::Allocated { pool, ips }) => Some(ServiceView {
            ips: ips.iter().map(|i| i.to_string()).collect(),
            pool: Some(pool.to_string()),
        }),
        Some(ServiceState::Pending { .. }) => Some(cleared),
        // Another class: clear only what we wrote.
        Some(ServiceState::Ignored { .. }) => svc
            .annotations()
            .contains_key(ANN_ALLOCATED_FROM)
            .then_some(cleared),
        // No longer a LoadBalancer: clear our annotation, or an address from one of our pools
        // (a user's re-apply may have dropped the annotation).
        None => {
            let seen = observed_view(svc);
            let ours = seen.pool.is_some()
                || seen.ips.iter().any(|ip| {
                    ip.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| table.pools().values().any(|p| p.position(&ip).is_some()))
                });
            ours.then_some(cleared)
        }
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The `Valid` condition, keeping the observed transition time when the status is unchanged.
fn valid_condition(
    invalid: Option<&super::source::Invalid>,
    in_table: bool,
    generation: Option<i64>,
    observed: &[Condition],
) -> Option<Condition> {
    let (status, reason, message) = match invalid {
        Some(i) => (
            "False",
            "InvalidConfiguration",
            format!("{}: {}", i.field, i.reason),
        ),
        None if in_table => (
            "True",
            "Applied",
            "part of the configuration in force".to_string(),
        ),
        None => return None,
    };
    let since = observed
        .iter()
        .find(|c| c.type_ == "Valid" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now_rfc3339);
    Some(Condition {
        type_: "Valid".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    })
}

fn saturating(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Every allocated address, grouped by pool (one pass over the addresses for all pools).
fn allocations_by_pool(table: &AllocationTable) -> BTreeMap<&str, Vec<PoolAllocation>> {
    let mut out: BTreeMap<&str, Vec<PoolAllocation>> = BTreeMap::new();
    for (ip, u) in table.addresses() {
        out.entry(u.pool.as_str())
            .or_default()
            .push(PoolAllocation {
                ip: ip.to_string(),
                services: u.users.keys().map(|k| k.to_string()).collect(),
            });
    }
    out
}

fn pool_status(
    table: &AllocationTable,
    name: &str,
    allocations: Vec<PoolAllocation>,
    conditions: Vec<Condition>,
) -> IPAddressPoolStatus {
    let (v4, v6) = match table.pool_usage(name) {
        Some((_, v4, v6)) => (v4, v6),
        None => (FamilyUsage::default(), FamilyUsage::default()),
    };
    IPAddressPoolStatus {
        assigned_ipv4: saturating(v4.used),
        assigned_ipv6: saturating(v6.used),
        available_ipv4: saturating(v4.free),
        available_ipv6: saturating(v6.free),
        total_ipv4: saturating(v4.size),
        total_ipv6: saturating(v6.size),
        usage: format!("{}/{}", v4.used + v6.used, v4.size.saturating_add(v6.size)),
        allocations,
        conditions,
    }
}

/// Events about OpenELB's cluster-scoped objects go here, as kubectl shows them for
/// cluster-scoped objects.
const OPENELB_EVENT_NAMESPACE: &str = "default";

/// OpenELB's kinds raftlb reads (all cluster-scoped, all in one group).
const OPENELB_KINDS: [&str; 3] = ["Eip", "BgpConf", "BgpPeer"];

fn openelb_reference(kind: &str, name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some(Eip::api_version(&()).into_owned()),
        kind: Some(kind.into()),
        name: Some(name.into()),
        uid,
        ..Default::default()
    }
}

/// What an Eip's status says, OpenELB's way, from the table: nothing but `ready: false` until
/// the Eip is in force.
fn eip_status(
    table: &AllocationTable,
    name: &str,
    in_force: bool,
    held: &[PoolAllocation],
) -> EipStatus {
    let (true, Some(pool), Some((_, v4, v6))) =
        (in_force, table.pools().get(name), table.pool_usage(name))
    else {
        return EipStatus::default();
    };
    let first = pool
        .ranges
        .first()
        .map(|(r, _)| from_u128(r.family, r.start));
    let last = pool.ranges.last().map(|(r, _)| from_u128(r.family, r.end));
    let used: BTreeMap<String, String> = held
        .iter()
        .map(|a| (a.ip.clone(), a.services.join(";")))
        .collect();
    let pool_size = saturating(v4.size.saturating_add(v6.size));
    let usage = used.len() as i64;
    EipStatus {
        occupied: pool_size > 0 && usage >= pool_size,
        usage,
        pool_size,
        used,
        first_ip: first.map(|ip| ip.to_string()).unwrap_or_default(),
        last_ip: last.map(|ip| ip.to_string()).unwrap_or_default(),
        ready: true,
        v4: first.is_some_and(|ip| ip.is_ipv4()),
    }
}

/// The merge patch that turns `observed` into `desired`: addresses no longer used are removed
/// from `used` explicitly (a merge patch keeps map keys it does not mention).
fn eip_status_patch(observed: &EipStatus, desired: &EipStatus) -> Value {
    let mut status = json!(desired);
    for ip in observed.used.keys() {
        if !desired.used.contains_key(ip) {
            status["used"][ip] = Value::Null;
        }
    }
    status
}

/// Every Eip whose status differs from what the table says, and every refused one.
fn eip_writes(
    items: Vec<std::sync::Arc<Eip>>,
    table: &AllocationTable,
    source: &Source,
    allocations: &BTreeMap<&str, Vec<PoolAllocation>>,
    out: &mut Vec<StatusWrite>,
    refused: &mut Vec<RefusedOpenElb>,
) {
    for eip in items {
        let name = eip.name_any();
        let current = refusal(&*eip, Kind::Eip, table, source, refused);
        let held = allocations
            .get(name.as_str())
            .map_or(&[][..], Vec::as_slice);
        let desired = eip_status(table, &name, current.is_some(), held);
        let observed = eip.status.clone().unwrap_or_default();
        if desired != observed {
            out.push(StatusWrite {
                kind: "Eip".into(),
                name,
                resource_version: eip.resource_version(),
                status: eip_status_patch(&observed, &desired),
                invalid_event: None,
                uid: eip.uid(),
            });
        }
    }
}

/// Looks `object` of `kind` up in the table and notes its refusal if the table refused it;
/// returns the table's copy.
fn refusal<'t, K: Resource>(
    object: &K,
    kind: Kind,
    table: &'t AllocationTable,
    source: &Source,
    refused: &mut Vec<RefusedOpenElb>,
) -> Option<&'t raftlb_raft_store::table::objects::Object> {
    let r = ObjectRef {
        kind,
        namespace: String::new(),
        name: object.name_any(),
    };
    let current = table.objects().get(&r);
    if let Some(why) = source.invalid(&r, current) {
        refused.push(RefusedOpenElb {
            kind,
            name: r.name.clone(),
            uid: object.uid(),
            generation: object.meta().generation.unwrap_or(0),
            message: format!("{}: {}", why.field, why.reason),
        });
    }
    current
}

/// An OpenELB object the table refused: OpenELB's statuses have no conditions, so an Event
/// says why.
struct RefusedOpenElb {
    kind: Kind,
    name: String,
    uid: Option<String>,
    generation: i64,
    message: String,
}

/// One status write to a CR, prepared under the table lock and sent after it.
struct StatusWrite {
    kind: String,
    name: String,
    resource_version: Option<String>,
    status: Value,
    /// An Event to publish with it: (reason, message, generation) when it turns invalid.
    invalid_event: Option<(String, i64)>,
    uid: Option<String>,
}

fn config_writes<K>(
    items: Vec<std::sync::Arc<K>>,
    table: &AllocationTable,
    source: &Source,
    out: &mut Vec<StatusWrite>,
    status_of: impl Fn(&K) -> (Vec<Condition>, Value),
    build: impl Fn(&str, Vec<Condition>) -> Value,
) where
    K: Resource<DynamicType = ()>,
{
    for cr in items {
        let kind = Kind::parse(&K::kind(&())).expect("config CRDs are table kinds");
        let r = ObjectRef {
            kind,
            namespace: String::new(),
            name: cr.name_any(),
        };
        let current = table.objects().get(&r);
        let invalid = source.invalid(&r, current);
        let (observed_conditions, observed) = status_of(&cr);
        let Some(cond) = valid_condition(
            invalid.as_ref(),
            current.is_some(),
            cr.meta().generation,
            &observed_conditions,
        ) else {
            continue;
        };
        let turned_invalid = cond.status == "False"
            && !observed_conditions
                .iter()
                .any(|c| c.type_ == "Valid" && c.status == "False" && c.message == cond.message);
        let invalid_event =
            turned_invalid.then(|| (cond.message.clone(), cr.meta().generation.unwrap_or(0)));
        let desired = build(&cr.name_any(), vec![cond]);
        if desired != observed {
            out.push(StatusWrite {
                kind: K::kind(&()).into_owned(),
                name: cr.name_any(),
                resource_version: cr.resource_version(),
                status: desired,
                invalid_event,
                uid: cr.uid(),
            });
        }
    }
}

fn status_value<S: Serialize>(s: &Option<S>) -> Value {
    s.as_ref().map_or(Value::Null, |s| json!(s))
}

/// What the table says each announced Service's ServiceL2Status holds, by object name.
fn l2_statuses(table: &AllocationTable) -> BTreeMap<String, ServiceL2StatusStatus> {
    let owners = table.owners();
    let mut out = BTreeMap::new();
    for (key, entry) in table.services() {
        let ServiceState::Allocated { ips, .. } = &entry.state else {
            continue;
        };
        let announcements: Vec<Announcement> = ips
            .iter()
            .filter_map(|ip| {
                let (node, interfaces) = owners.get(ip)?;
                Some(Announcement {
                    ip: ip.to_string(),
                    node: node.to_string(),
                    protocol: "layer2".into(),
                    interfaces: interfaces.clone(),
                    epoch: table.vips().get(ip).map_or(0, |v| v.epoch as i64),
                })
            })
            .collect();
        let Some(first) = announcements.first() else {
            continue;
        };
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        out.insert(
            l2_status_name(ns, name),
            ServiceL2StatusStatus {
                node: first.node.clone(),
                service_name: name.into(),
                service_namespace: ns.into(),
                interfaces: first
                    .interfaces
                    .iter()
                    .map(|i| InterfaceName { name: i.clone() })
                    .collect(),
                announcements,
            },
        );
    }
    out
}

/// `l2-NAMESPACE.NAME`: namespace and Service names are DNS labels (no dots), so this is unique.
pub fn l2_status_name(namespace: &str, name: &str) -> String {
    format!("l2-{namespace}.{name}")
}

/// The Kubernetes object an event of the table is about: (event namespace, reference).
fn involved(
    object: &str,
    own_namespace: &str,
    stores: &Stores,
) -> Option<(String, ObjectReference)> {
    let (kind, rest) = object.split_once('/')?;
    match kind {
        "Service" => {
            let (ns, name) = rest.split_once('/')?;
            let uid = stores
                .services
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
                .and_then(|s| s.uid());
            Some((
                ns.to_string(),
                ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Service".into()),
                    namespace: Some(ns.into()),
                    name: Some(name.into()),
                    uid,
                    ..Default::default()
                },
            ))
        }
        "Node" => Some((
            "default".into(),
            ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(rest.into()),
                ..Default::default()
            },
        )),
        k if OPENELB_KINDS.contains(&k) => Some((
            OPENELB_EVENT_NAMESPACE.into(),
            openelb_reference(k, rest, None),
        )),
        k if Kind::parse(k).is_some_and(|k| !k.keeps_namespace() && k != Kind::Namespace) => {
            Some((
                own_namespace.to_string(),
                ObjectReference {
                    api_version: Some(format!("{GROUP}/{VERSION}")),
                    kind: Some(k.into()),
                    namespace: Some(own_namespace.into()),
                    name: Some(rest.into()),
                    ..Default::default()
                },
            ))
        }
        _ => None,
    }
}

/// A Kubernetes Event. Its name is derived from the table's event, so every leader that
/// publishes it publishes the same object.
pub(super) fn event(
    namespace: &str,
    name: String,
    about: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    time_ms: u64,
) -> Event {
    let at = k8s_openapi::jiff::Timestamp::from_millisecond(time_ms as i64)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        involved_object: about,
        type_: Some(type_.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        count: Some(1),
        first_timestamp: Some(Time(at)),
        last_timestamp: Some(Time(at)),
        event_time: Some(MicroTime(at)),
        source: Some(EventSource {
            component: Some("raftlb".into()),
            host: None,
        }),
        reporting_component: Some("raftlb.io/controller".into()),
        reporting_instance: Some("raftlb".into()),
        action: Some(reason.into()),
        ..Default::default()
    }
}

/// Created, or already there (the same name was published before): both count as published.
pub(super) async fn create_event(api: &Api<Event>, ev: &Event) -> Result<(), kube::Error> {
    match api.create(&PostParams::default(), ev).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

impl Writer {
    pub fn new(client: Client, namespace: String) -> Writer {
        Writer {
            client,
            namespace,
            written: HashMap::new(),
            events_cursor: 0,
        }
    }

    /// Leadership lost: the next time we lead, look at everything afresh.
    pub fn forget(&mut self) {
        self.written.clear();
        self.events_cursor = 0;
    }

    /// True if this exact write was already sent and the watch has shown nothing newer.
    fn in_flight(&self, key: &str, desired: &str, rv: &Option<String>) -> bool {
        matches!(self.written.get(key), Some((d, at)) if d == desired && at == rv)
    }

    fn sent(&mut self, key: String, desired: String, rv: Option<String>) {
        self.written.insert(key, (desired, rv));
    }

    pub(super) async fn write(&mut self, app: &App, stores: &Stores, source: &Source) {
        let table = &app.state;
        // Everything is decided under the lock and sent after it.
        let (services, crs, refused_openelb, l2, events, published) = {
            let t = table.read().unwrap_or_else(|p| p.into_inner());
            let t = &t.table;
            let mut services = Vec::new();
            for svc in stores.services.state() {
                if let Some(want) = desired_view(t, &svc) {
                    if observed_view(&svc) != want {
                        services.push((svc.clone(), want));
                    } else {
                        self.written.remove(&format!(
                            "Service/{}/{}",
                            svc.namespace().unwrap_or_default(),
                            svc.name_any()
                        ));
                    }
                }
            }
            let mut crs = Vec::new();
            let allocations = allocations_by_pool(t);
            config_writes(
                stores.pools.state(),
                t,
                source,
                &mut crs,
                |c: &IPAddressPool| {
                    (
                        c.status
                            .as_ref()
                            .map(|s| s.conditions.clone())
                            .unwrap_or_default(),
                        status_value(&c.status),
                    )
                },
                |name, conds| {
                    let held = allocations.get(name).cloned().unwrap_or_default();
                    json!(pool_status(t, name, held, conds))
                },
            );
            macro_rules! plain {
                ($store:expr, $ty:ty) => {
                    config_writes(
                        $store.state(),
                        t,
                        source,
                        &mut crs,
                        |c: &$ty| {
                            (
                                c.status
                                    .as_ref()
                                    .map(|s| s.conditions.clone())
                                    .unwrap_or_default(),
                                status_value(&c.status),
                            )
                        },
                        |_, conditions| json!(ConfigStatus { conditions }),
                    )
                };
            }
            plain!(stores.l2, L2Advertisement);
            plain!(stores.bgp_ads, BGPAdvertisement);
            plain!(stores.bgp_peers, BGPPeer);
            plain!(stores.communities, Community);
            plain!(stores.bfd, BFDProfile);
            let mut refused_openelb = Vec::new();
            if let Some(openelb) = &stores.openelb {
                if let Some(eips) = &openelb.eips {
                    eip_writes(
                        eips.state(),
                        t,
                        source,
                        &allocations,
                        &mut crs,
                        &mut refused_openelb,
                    );
                }
                for c in openelb.bgp_confs.iter().flat_map(|s| s.state()) {
                    refusal(&*c, Kind::BgpConf, t, source, &mut refused_openelb);
                }
                for p in openelb.bgp_peers.iter().flat_map(|s| s.state()) {
                    refusal(&*p, Kind::BgpPeer, t, source, &mut refused_openelb);
                }
            }
            let l2 = l2_statuses(t);
            self.events_cursor = self.events_cursor.max(t.events_published());
            let events: Vec<_> = t
                .events()
                .iter()
                .filter(|e| e.seq > self.events_cursor)
                .take(EVENTS_PER_ROUND)
                .cloned()
                .collect();
            (
                services,
                crs,
                refused_openelb,
                l2,
                events,
                t.events_published(),
            )
        };

        for (svc, want) in services {
            self.write_service(&svc, &want).await;
        }
        for w in crs {
            self.write_cr_status(w).await;
        }
        for r in refused_openelb {
            self.publish_openelb_refusal(r).await;
        }
        self.write_l2_statuses(stores, l2).await;

        let mut upto = self.events_cursor;
        for e in &events {
            let Some((ns, about)) = involved(&e.object, &self.namespace, stores) else {
                upto = e.seq;
                continue;
            };
            let base = about.name.clone().unwrap_or_default();
            let name = format!("{base}.{:x}.{:x}", e.time_ms, e.seq);
            let ev = event(&ns, name, about, &e.kind, &e.reason, &e.message, e.time_ms);
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            match create_event(&api, &ev).await {
                Ok(()) => upto = e.seq,
                Err(err) => {
                    warn!(error = %err, reason = e.reason, object = e.object, "cannot publish an event; retrying later");
                    break;
                }
            }
        }
        if upto > published {
            let cmd = Command::EventsPublished { upto };
            if let LeaderReply::Done(_) = app.write_here(cmd).await {
                self.events_cursor = upto;
            }
        }
    }

    async fn write_service(&mut self, svc: &Service, want: &ServiceView) {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let key = format!("Service/{ns}/{name}");
        let desired = format!("{want:?}");
        if self.in_flight(&key, &desired, &svc.resource_version()) {
            return;
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        // Read fresh: the watch may not have delivered a write made just before (ours, or a
        // previous leader's).
        let fresh = match api.get_opt(&name).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                warn!(service = key, error = %e, "cannot read the Service");
                return;
            }
        };
        let seen = observed_view(&fresh);
        if seen != *want {
            let pp = PatchParams::default();
            if seen.ips != want.ips {
                let ingress: Value = if want.ips.is_empty() {
                    Value::Null
                } else {
                    json!(want
                        .ips
                        .iter()
                        .map(|ip| json!({"ip": ip}))
                        .collect::<Vec<_>>())
                };
                let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
                if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&patch)).await {
                    warn!(service = key, error = %e, "cannot write the Service status");
                    return;
                }
            }
            if seen.pool != want.pool {
                let patch = json!({"metadata": {"annotations": {ANN_ALLOCATED_FROM: want.pool}}});
                if let Err(e) = api.patch(&name, &pp, &Patch::Merge(&patch)).await {
                    warn!(service = key, error = %e, "cannot write the pool annotation");
                    return;
                }
            }
            info!(service = key, ips = ?want.ips, pool = ?want.pool, "Service status written");
        }
        self.sent(key, desired, svc.resource_version());
    }

    async fn write_cr_status(&mut self, w: StatusWrite) {
        let key = format!("{}/{}", w.kind, w.name);
        let desired = w.status.to_string();
        if self.in_flight(&key, &desired, &w.resource_version) {
            return;
        }
        let patch = json!({ "status": w.status });
        let pp = PatchParams::default();
        let ns = self.namespace.clone();
        let c = self.client.clone();
        let result = match w.kind.as_str() {
            "IPAddressPool" => patch_status::<IPAddressPool>(c, &ns, &w.name, &pp, &patch).await,
            "L2Advertisement" => {
                patch_status::<L2Advertisement>(c, &ns, &w.name, &pp, &patch).await
            }
            "BGPAdvertisement" => {
                patch_status::<BGPAdvertisement>(c, &ns, &w.name, &pp, &patch).await
            }
            "BGPPeer" => patch_status::<BGPPeer>(c, &ns, &w.name, &pp, &patch).await,
            "Community" => patch_status::<Community>(c, &ns, &w.name, &pp, &patch).await,
            "BFDProfile" => patch_status::<BFDProfile>(c, &ns, &w.name, &pp, &patch).await,
            "Eip" => Api::<Eip>::all(c)
                .patch_status(&w.name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            _ => return,
        };
        if let Err(e) = result {
            warn!(object = key, error = %e, "cannot write the status");
            return;
        }
        if let Some((message, generation)) = &w.invalid_event {
            let about = ObjectReference {
                api_version: Some(format!("{GROUP}/{VERSION}")),
                kind: Some(w.kind.clone()),
                namespace: Some(ns.clone()),
                name: Some(w.name.clone()),
                uid: w.uid.clone(),
                ..Default::default()
            };
            if let Err(e) = self.publish_invalid(&ns, about, *generation, message).await {
                warn!(object = key, error = %e, "cannot publish the event");
            }
        }
        self.sent(key, desired, w.resource_version);
    }

    /// One Warning Event per refused generation of an Eip (its name carries the generation, so
    /// a new leader posting it again is answered 409).
    async fn publish_openelb_refusal(&mut self, r: RefusedOpenElb) {
        let key = format!("Event/{}.invalid.{}", r.name, r.generation);
        if self.in_flight(&key, &r.message, &None) {
            return;
        }
        let about = openelb_reference(r.kind.as_str(), &r.name, r.uid);
        match self
            .publish_invalid(OPENELB_EVENT_NAMESPACE, about, r.generation, &r.message)
            .await
        {
            Ok(()) => self.sent(key, r.message, None),
            Err(e) => warn!(kind = %r.kind, name = r.name, error = %e, "cannot publish the event"),
        }
    }

    /// The Warning `InvalidConfiguration` Event of one generation of a configuration object,
    /// named `NAME.invalid.GENERATION`: posted again (a new leader), it is refused as a duplicate.
    async fn publish_invalid(
        &self,
        namespace: &str,
        about: ObjectReference,
        generation: i64,
        message: &str,
    ) -> Result<(), kube::Error> {
        let name = format!(
            "{}.invalid.{generation}",
            about.name.as_deref().unwrap_or_default()
        );
        let ev = event(
            namespace,
            name,
            about,
            "Warning",
            "InvalidConfiguration",
            message,
            crate::clock::wall_ms(),
        );
        create_event(&Api::namespaced(self.client.clone(), namespace), &ev).await
    }

    async fn write_l2_statuses(
        &mut self,
        stores: &Stores,
        want: BTreeMap<String, ServiceL2StatusStatus>,
    ) {
        let api: Api<ServiceL2Status> = Api::namespaced(self.client.clone(), &self.namespace);
        let observed: BTreeMap<String, std::sync::Arc<ServiceL2Status>> = stores
            .l2_status
            .state()
            .into_iter()
            .map(|o| (o.name_any(), o))
            .collect();
        for (name, status) in &want {
            let current = observed.get(name);
            if current.and_then(|o| o.status.as_ref()) == Some(status) {
                self.written.remove(&format!("ServiceL2Status/{name}"));
                continue;
            }
            let key = format!("ServiceL2Status/{name}");
            let desired = format!("{status:?}");
            let rv = current.and_then(|o| o.resource_version());
            if self.in_flight(&key, &desired, &rv) {
                continue;
            }
            if current.is_none() {
                let mut obj = ServiceL2Status::new(name, ServiceL2StatusSpec {});
                obj.metadata.labels = Some(
                    [
                        (LABEL_SERVICE_NAME.to_string(), status.service_name.clone()),
                        (
                            LABEL_SERVICE_NAMESPACE.to_string(),
                            status.service_namespace.clone(),
                        ),
                    ]
                    .into(),
                );
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        warn!(object = key, error = %e, "cannot create");
                        continue;
                    }
                }
            }
            let patch = json!({ "status": status });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => self.sent(key, desired, rv),
                Err(e) => warn!(object = key, error = %e, "cannot write the status"),
            }
        }
        for name in observed.keys().filter(|n| !want.contains_key(*n)) {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => warn!(object = name, error = %e, "cannot delete"),
            }
        }
    }
}

async fn patch_status<K>(
    client: Client,
    ns: &str,
    name: &str,
    pp: &PatchParams,
    patch: &Value,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client, ns);
    api.patch_status(name, pp, &Patch::Merge(patch))
        .await
        .map(|_| ())
}
