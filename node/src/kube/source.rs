//! Desired state from the Kubernetes stores, and the commands that bring the table to it.
//!
//! Every object goes through the same parser as `raftlb ctl apply -f` (manifest.rs), so a
//! Service or a CR means the same thing in both modes. Configuration objects are applied one
//! per batch: an invalid one is refused alone (and reported on its status) while the last valid
//! configuration stays in force. Services, EndpointSlices and Namespaces go in bulk, not
//! strict: the cluster cannot refuse them, so a bad request leaves the Service pending.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use raftlb_raft_store::table::objects::{Kind, Object, ObjectRef, ObjectSpec};
use raftlb_raft_store::table::{ApplyBatch, Command, Response};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::Stores;
use crate::app::App;
use crate::clock::wall_ms;
use crate::manifest;
use crate::raft::leader::LeaderReply;

/// Objects per bulk batch (one Raft entry each).
const BULK: usize = 200;

/// Why a configuration object is not in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

/// A configuration object the table refused: not retried until it or the configuration changes.
#[derive(Debug, Clone)]
struct Refused {
    object: Object,
    generation: u64,
    why: Invalid,
}

#[derive(Default)]
pub struct Source {
    refused: BTreeMap<ObjectRef, Refused>,
    /// Objects the parser rejected, by (kind, name): reported, never submitted.
    unparsable: BTreeMap<ObjectRef, Invalid>,
    cache: ParseCache,
}

fn metadata(meta: &ObjectMeta, annotations: bool) -> Value {
    let mut m = json!({ "name": meta.name.clone().unwrap_or_default() });
    if let Some(ns) = &meta.namespace {
        m["namespace"] = json!(ns);
    }
    if let Some(l) = &meta.labels {
        m["labels"] = json!(l);
    }
    if annotations {
        if let Some(a) = &meta.annotations {
            m["annotations"] = json!(a);
        }
    }
    m
}

fn parse(doc: Value, source: &str) -> Result<Object, Invalid> {
    match manifest::parse_json(&doc, source) {
        Ok(mut objs) if objs.len() == 1 => Ok(objs.remove(0).1),
        Ok(objs) => Err(Invalid {
            field: "(document)".into(),
            reason: format!("parsed into {} objects", objs.len()),
        }),
        Err(e) => Err(Invalid {
            field: e.field,
            reason: e.reason,
        }),
    }
}

fn config<K: kube::Resource<DynamicType = ()> + Serialize>(
    items: Vec<std::sync::Arc<K>>,
    spec: impl Fn(&K) -> Value,
    cache: &mut ParseCache,
    out: &mut Desired,
) {
    for cr in items {
        let kind = K::kind(&()).to_string();
        let r = ObjectRef {
            kind: Kind::parse(&kind).expect("every config CRD is a table kind"),
            namespace: String::new(),
            name: cr.name_any(),
        };
        let parsed = cache.parse(&kind, cr.meta(), || {
            json!({
                "apiVersion": K::api_version(&()),
                "kind": kind,
                "metadata": metadata(cr.meta(), false),
                "spec": spec(&cr),
            })
        });
        match parsed {
            Ok(o) => {
                out.objects.insert(o.reference().normalized(), o);
            }
            Err(e) => {
                out.invalid.insert(r, e);
            }
        }
    }
}

/// Parsed objects by kind and uid, reused while their resourceVersion is unchanged: a round
/// parses only what changed since the last one.
#[derive(Default)]
pub struct ParseCache {
    last: HashMap<String, (String, Result<Object, Invalid>)>,
    this: HashMap<String, (String, Result<Object, Invalid>)>,
}

impl ParseCache {
    fn parse(
        &mut self,
        kind: &str,
        meta: &ObjectMeta,
        doc: impl FnOnce() -> Value,
    ) -> Result<Object, Invalid> {
        let id = meta.uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or(""),
                meta.name.as_deref().unwrap_or("")
            )
        });
        let key = format!("{kind}/{id}");
        let rv = meta.resource_version.clone().unwrap_or_default();
        let result = match self.last.remove(&key) {
            Some((seen, result)) if seen == rv && !rv.is_empty() => result,
            _ => parse(
                doc(),
                &format!("{kind}/{}", meta.name.as_deref().unwrap_or("")),
            ),
        };
        self.this.insert(key, (rv, result.clone()));
        result
    }

    /// Ends a round: what was not seen in it is forgotten.
    fn finish(&mut self) {
        self.last = std::mem::take(&mut self.this);
    }
}

/// What the cluster wants the table to hold.
#[derive(Default)]
pub struct Desired {
    pub objects: BTreeMap<ObjectRef, Object>,
    pub invalid: BTreeMap<ObjectRef, Invalid>,
}

pub(super) fn desired(stores: &Stores, cache: &mut ParseCache) -> Desired {
    let mut out = Desired::default();
    config(
        stores.pools.state(),
        |c| json!(c.spec.spec),
        cache,
        &mut out,
    );
    config(stores.l2.state(), |c| json!(c.spec.spec), cache, &mut out);
    config(
        stores.bgp_ads.state(),
        |c| json!(c.spec.spec),
        cache,
        &mut out,
    );
    config(
        stores.bgp_peers.state(),
        |c| json!(c.spec.spec),
        cache,
        &mut out,
    );
    config(
        stores.communities.state(),
        |c| json!(c.spec.spec),
        cache,
        &mut out,
    );
    config(stores.bfd.state(), |c| json!(c.spec.spec), cache, &mut out);
    if let Some(openelb) = &stores.openelb {
        if let Some(eips) = &openelb.eips {
            config(eips.state(), |c| json!(c.spec.fields), cache, &mut out);
        }
        if let Some(confs) = &openelb.bgp_confs {
            config(confs.state(), |c| json!(c.spec.fields), cache, &mut out);
        }
        if let Some(peers) = &openelb.bgp_peers {
            config(peers.state(), |c| json!(c.spec.fields), cache, &mut out);
        }
    }

    for ns in stores.namespaces.state() {
        let doc = || json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(&ns.metadata, false)});
        if let Ok(o) = cache.parse("Namespace", &ns.metadata, doc) {
            out.objects.insert(o.reference().normalized(), o);
        }
    }
    let mut lb_services = std::collections::BTreeSet::new();
    for svc in stores.services.state() {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            continue;
        }
        let doc = || {
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata(&svc.metadata, true),
                "spec": spec,
            })
        };
        let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
        match cache.parse("Service", &svc.metadata, doc) {
            Ok(o) => {
                lb_services.insert(key);
                out.objects.insert(o.reference().normalized(), o);
            }
            Err(e) => warn!(
                service = key,
                field = e.field,
                reason = e.reason,
                "Service not understood"
            ),
        }
    }
    for slice in stores.slices.state() {
        let service = slice
            .labels()
            .get("kubernetes.io/service-name")
            .cloned()
            .unwrap_or_default();
        let key = format!("{}/{service}", slice.namespace().unwrap_or_default());
        // Only LoadBalancer Services' endpoints matter; the rest would only fill the log.
        if !lb_services.contains(&key) {
            continue;
        }
        let doc = || {
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": metadata(&slice.metadata, false),
                "endpoints": slice.endpoints,
            })
        };
        if let Ok(o) = cache.parse("EndpointSlice", &slice.metadata, doc) {
            out.objects.insert(o.reference().normalized(), o);
        }
    }
    cache.finish();
    out
}

impl Source {
    /// Why a configuration object is not in force, if it is not.
    pub fn invalid(&self, r: &ObjectRef, current: Option<&Object>) -> Option<Invalid> {
        if let Some(i) = self.unparsable.get(r) {
            return Some(i.clone());
        }
        let refused = self.refused.get(r)?;
        // Only while the refused version is still the one in the cluster.
        (current.is_none_or(|c| c != &refused.object)).then(|| refused.why.clone())
    }

    /// Submits the differences between the stores and the table. Leader only.
    pub(super) async fn sync(&mut self, app: &App, stores: &Stores) {
        let table = &app.state;
        let desired = desired(stores, &mut self.cache);
        self.unparsable = desired.invalid.clone();
        // Compared under the lock, so only what differs is cloned.
        let (mut configs, bulk, mut deletes, generation) = {
            let t = table.read().unwrap_or_else(|p| p.into_inner());
            let t = &t.table;
            let in_table = |r: &ObjectRef, o: &Object| match &o.spec {
                ObjectSpec::Service(spec) => t
                    .services()
                    .get(&spec.key())
                    .is_some_and(|e| e.spec == *spec),
                _ => t.objects().get(r) == Some(o),
            };
            let mut configs: Vec<Object> = Vec::new();
            let mut bulk: Vec<Object> = Vec::new();
            for (r, o) in &desired.objects {
                if in_table(r, o) {
                    self.refused.remove(r);
                    continue;
                }
                match r.kind {
                    Kind::Service | Kind::EndpointSlice | Kind::Namespace => bulk.push(o.clone()),
                    _ => {
                        let retry = self
                            .refused
                            .get(r)
                            .is_none_or(|f| f.object != *o || f.generation != t.generation());
                        if retry {
                            configs.push(o.clone());
                        }
                    }
                }
            }
            let wanted =
                |r: &ObjectRef| desired.objects.contains_key(r) || desired.invalid.contains_key(r);
            let services = t.services().values().map(|e| ObjectRef {
                kind: Kind::Service,
                namespace: e.spec.namespace.to_string(),
                name: e.spec.name.to_string(),
            });
            let deletes: Vec<ObjectRef> = t
                .objects()
                .keys()
                .cloned()
                .chain(services)
                .filter(|r| !wanted(r))
                .collect();
            (configs, bulk, deletes, t.generation())
        };
        // Kind order: pools before the advertisements that name them.
        configs.sort_by_key(|o| o.spec.kind());
        // Advertisements before the pools they name.
        deletes.sort_by_key(|r| std::cmp::Reverse(r.kind));

        for o in configs {
            let r = o.reference().normalized();
            match write(app, batch(vec![o.clone()], vec![])).await {
                Some(Response::Rejected(e)) => {
                    info!(object = %r, field = e.field, reason = e.reason, "configuration refused; the last valid one stays in force");
                    let why = Invalid {
                        field: e.field,
                        reason: e.reason,
                    };
                    self.refused.insert(
                        r,
                        Refused {
                            object: o,
                            generation,
                            why,
                        },
                    );
                }
                Some(_) => {
                    self.refused.remove(&r);
                }
                None => return,
            }
        }
        let (bulk_deletes, config_deletes): (Vec<ObjectRef>, Vec<ObjectRef>) =
            deletes.into_iter().partition(|r| {
                matches!(
                    r.kind,
                    Kind::Service | Kind::EndpointSlice | Kind::Namespace
                )
            });
        // Upserts in bulk, then deletes: configuration one by one, the rest in bulk.
        let batches = bulk
            .chunks(BULK)
            .map(|c| batch(c.to_vec(), vec![]))
            .chain(config_deletes.into_iter().map(|r| batch(vec![], vec![r])))
            .chain(bulk_deletes.chunks(BULK).map(|c| batch(vec![], c.to_vec())));
        for b in batches {
            match write(app, b).await {
                Some(Response::Rejected(e)) => {
                    warn!(
                        object = e.object,
                        field = e.field,
                        reason = e.reason,
                        "refused"
                    )
                }
                Some(_) => {}
                None => return,
            }
        }
    }
}

fn batch(objects: Vec<Object>, deletes: Vec<ObjectRef>) -> ApplyBatch {
    ApplyBatch {
        objects: objects.into_iter().map(|o| (1, o)).collect(),
        deletes: deletes.into_iter().map(|r| (1, r)).collect(),
        strict: false,
        now_ms: wall_ms(),
    }
}

/// Commits one batch; None when leadership was lost (the next leader takes over).
async fn write(app: &App, batch: ApplyBatch) -> Option<Response> {
    match app.write_here(Command::Apply(batch)).await {
        LeaderReply::Done(r) => Some(r),
        other => {
            warn!(?other, "write to the table failed");
            None
        }
    }
}
