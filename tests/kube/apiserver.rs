//! A fake Kubernetes API server over HTTP, faithful where raftlb's controller depends on it:
//! real resource paths (core, named groups, namespaced and cluster-scoped), list with a
//! collection resourceVersion, watch from a resourceVersion with replay of what happened since,
//! BOOKMARK events, `410 Gone` (an ERROR event with code 410) for a resourceVersion older than
//! the compacted history, the status subresource (a main-resource write cannot change status,
//! a status write changes only status; `generation` counts spec changes), JSON merge patch,
//! 409 AlreadyExists and 404 NotFound as `Status` objects, and a request log for assertions.
//!
//! Tests change objects in-process ([`ApiServer::put`], [`ApiServer::delete`]) as a user's
//! kubectl would, and can force what a real cluster does now and then: drop every watch, or
//! compact the history so the next watch gets 410 and the client must relist.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Every resource the server knows: (group/version, plural, kind, namespaced, has status).
const RESOURCES: &[(&str, &str, &str, bool, bool)] = &[
    ("v1", "services", "Service", true, true),
    ("v1", "namespaces", "Namespace", false, false),
    ("v1", "nodes", "Node", false, true),
    ("v1", "events", "Event", true, false),
    ("v1", "secrets", "Secret", true, false),
    (
        "discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    ("apps/v1", "statefulsets", "StatefulSet", true, true),
    (
        "raftlb.io/v1alpha1",
        "ipaddresspools",
        "IPAddressPool",
        true,
        true,
    ),
    (
        "raftlb.io/v1alpha1",
        "l2advertisements",
        "L2Advertisement",
        true,
        true,
    ),
    (
        "raftlb.io/v1alpha1",
        "bgpadvertisements",
        "BGPAdvertisement",
        true,
        true,
    ),
    ("raftlb.io/v1alpha1", "bgppeers", "BGPPeer", true, true),
    ("raftlb.io/v1alpha1", "communities", "Community", true, true),
    (
        "raftlb.io/v1alpha1",
        "bfdprofiles",
        "BFDProfile",
        true,
        true,
    ),
    (
        "raftlb.io/v1alpha1",
        "servicel2statuses",
        "ServiceL2Status",
        true,
        true,
    ),
    (
        "raftlb.io/v1alpha1",
        "bgpsessionstates",
        "BGPSessionState",
        true,
        true,
    ),
    // Served only once a test installs OpenELB's CRD (`ApiServer::install_openelb`).
    (OPENELB, "eips", "Eip", false, true),
    (OPENELB, "bgpconfs", "BgpConf", false, true),
    (OPENELB, "bgppeers", "BgpPeer", false, true),
];

/// OpenELB's group/version.
pub const OPENELB: &str = "network.kubesphere.io/v1alpha2";

/// (group/version, plural) -> (kind, namespaced, has status subresource).
fn resource(gv: &str, plural: &str) -> Option<(&'static str, bool, bool)> {
    RESOURCES
        .iter()
        .find(|r| r.0 == gv && r.1 == plural)
        .map(|r| (r.2, r.3, r.4))
}

/// `GET /apis/GROUP/VERSION` (or `/api/v1`): the APIResourceList discovery reads.
fn discovery(gv: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.0 == gv)
        .flat_map(|r| {
            let main = json!({"name": r.1, "singularName": r.2.to_lowercase(), "namespaced": r.3,
                "kind": r.2, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]});
            let status = json!({"name": format!("{}/status", r.1), "singularName": "", "namespaced": r.3,
                "kind": r.2, "verbs": ["get", "patch", "update"]});
            std::iter::once(main).chain(r.4.then_some(status))
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// Identity of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub gv: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(gv: &str, plural: &str, namespace: &str, name: &str) -> Key {
        Key {
            gv: gv.into(),
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Value,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub body: Value,
    /// When the server answered.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    requests: Vec<Request>,
    /// Whether OpenELB's CRD is installed (its resources served).
    openelb: bool,
}

#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch.
    cut: Arc<tokio::sync::watch::Sender<u64>>,
    pub addr: SocketAddr,
    bookmark_every: Duration,
}

fn status_error(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(v: &Value, code: StatusCode) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// What a request path names.
#[derive(Debug)]
struct Target {
    gv: String,
    plural: String,
    kind: &'static str,
    namespaced: bool,
    has_status: bool,
    /// None: every namespace (or cluster-scoped).
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (gv, rest) = match seg.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some(ns.to_string()), more),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [p] => (*p, None, false),
        [p, n] => (*p, Some(n.to_string()), false),
        [p, n, "status"] => (*p, Some(n.to_string()), true),
        _ => return None,
    };
    let (kind, namespaced, has_status) = resource(&gv, plural)?;
    if namespaced != namespace.is_some() && name.is_some() {
        return None;
    }
    Some(Target {
        gv,
        plural: plural.into(),
        kind,
        namespaced,
        has_status,
        namespace,
        name,
        status,
    })
}

impl ApiServer {
    /// Starts the server on an ephemeral loopback port.
    pub async fn start() -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (changes, _) = broadcast::channel(65536);
        let server = ApiServer {
            inner: Arc::new(Mutex::new(Inner {
                rv: 1000,
                ..Default::default()
            })),
            changes,
            cut: Arc::new(tokio::sync::watch::channel(0).0),
            addr,
            bookmark_every: Duration::from_millis(500),
        };
        let app = Router::new().fallback(handle).with_state(server.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change under the lock and tells the watchers.
    fn commit(
        &self,
        inner: &mut Inner,
        key: Key,
        kind: &'static str,
        mut object: Value,
        deleted: bool,
    ) -> Value {
        inner.rv += 1;
        object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        if deleted {
            inner.objects.remove(&key);
        } else {
            inner.objects.insert(key.clone(), object.clone());
        }
        let change = Change {
            rv: inner.rv,
            key,
            kind: if deleted {
                "DELETED"
            } else if kind == "ADDED" {
                "ADDED"
            } else {
                "MODIFIED"
            },
            object: object.clone(),
        };
        inner.history.push(change.clone());
        let _ = self.changes.send(change);
        object
    }

    /// Creates or replaces an object as a user would (`kubectl apply`): the status of an existing
    /// object is kept, `generation` counts spec changes. `object` names its apiVersion and kind.
    pub fn put(&self, mut object: Value) -> Value {
        let gv = object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_string();
        let kind = object["kind"].as_str().expect("kind").to_string();
        let plural = plural_of(&gv, &kind);
        let (_, namespaced, has_status) = resource(&gv, &plural)
            .filter(|_| self.serves(&gv))
            .expect("a served resource");
        let ns = if namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        if namespaced {
            object["metadata"]["namespace"] = json!(ns);
        }
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        let key = Key::new(&gv, &plural, &ns, &name);
        let mut inner = self.lock();
        let old = inner.objects.get(&key).cloned();
        let event = match &old {
            Some(old) => {
                for f in ["uid", "creationTimestamp"] {
                    object["metadata"][f] = old["metadata"][f].clone();
                }
                let gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let spec_changed = old.get("spec") != object.get("spec");
                object["metadata"]["generation"] = json!(if spec_changed { gen + 1 } else { gen });
                if has_status {
                    match old.get("status") {
                        Some(s) => object["status"] = s.clone(),
                        None => {
                            if let Some(o) = object.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
                "MODIFIED"
            }
            None => {
                inner.uid += 1;
                object["metadata"]["uid"] =
                    json!(format!("00000000-0000-0000-0000-{:012}", inner.uid));
                object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                object["metadata"]["generation"] = json!(1);
                "ADDED"
            }
        };
        self.commit(&mut inner, key, event, object, false)
    }

    pub fn delete(&self, key: &Key) -> bool {
        let mut inner = self.lock();
        let Some(old) = inner.objects.get(key).cloned() else {
            return false;
        };
        let kind = resource(&key.gv, &key.plural).map_or("", |r| r.0);
        self.commit(&mut inner, key.clone(), kind, old, true);
        true
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Every stored object of one resource.
    pub fn list(&self, gv: &str, plural: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.gv == gv && k.plural == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Ends every open watch (clients reconnect from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Forgets the history and ends every watch: the clients' next watch gets 410 Gone and they
    /// must relist.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.compacted = inner.rv + 1;
        inner.history.clear();
        // Under the lock: a watch either read the old history and is cut, or reads the new
        // state and gets 410 (see `watch`).
        self.drop_watches();
    }

    /// Installs OpenELB's CRDs (Eip, BgpConf, BgpPeer): from now on `network.kubesphere.io/v1alpha2` is served.
    pub fn install_openelb(&self) {
        self.lock().openelb = true;
    }

    fn serves(&self, gv: &str) -> bool {
        gv != OPENELB || self.lock().openelb
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    fn log(&self, method: &Method, uri: &Uri, status: u16, body: Value) {
        self.lock().requests.push(Request {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            status,
            body,
            at: std::time::Instant::now(),
        });
    }
}

pub fn plural_of(gv: &str, kind: &str) -> String {
    let lower = kind.to_lowercase();
    let plural = match lower.as_str() {
        "community" => "communities".to_string(),
        "servicel2status" => "servicel2statuses".to_string(),
        _ => format!("{lower}s"),
    };
    assert!(resource(gv, &plural).is_some(), "{gv} {kind} is not served");
    plural
}

fn matches_selector(obj: &Value, field_selector: Option<&String>) -> bool {
    let Some(sel) = field_selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| match term.split_once('=') {
        Some(("metadata.name", v)) => obj["metadata"]["name"] == json!(v),
        Some(("metadata.namespace", v)) => obj["metadata"]["namespace"] == json!(v),
        _ => true,
    })
}

/// A list's `labelSelector`, equality terms only (`k=v`, `k==v`, `k!=v`), as raftlb sends
/// them.
fn matches_labels(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = &obj["metadata"]["labels"];
    sel.split(',').all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k] != json!(v)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k] == json!(v)
        } else {
            labels.get(term).is_some()
        }
    })
}

fn in_scope(key: &Key, t: &Target) -> bool {
    key.gv == t.gv
        && key.plural == t.plural
        && t.namespace.as_ref().is_none_or(|ns| &key.namespace == ns)
}

async fn handle(
    State(server): State<ApiServer>,
    method: Method,
    uri: Uri,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let gv = match uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()[..]
    {
        ["api", v] => Some(v.to_string()),
        ["apis", g, v] => Some(format!("{g}/{v}")),
        _ => None,
    };
    if let Some(gv) = gv.filter(|gv| method == Method::GET && server.serves(gv)) {
        let list = discovery(&gv);
        if list["resources"].as_array().is_some_and(|r| !r.is_empty()) {
            server.log(&method, &uri, 200, body);
            return json_response(&list, StatusCode::OK);
        }
    }
    let Some(t) = parse_path(uri.path()).filter(|t| server.serves(&t.gv)) else {
        server.log(&method, &uri, 404, body);
        return status_error(
            404,
            "NotFound",
            format!("the server could not find {}", uri.path()),
        );
    };
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if method == Method::GET && t.name.is_none() && watching {
        server.log(&method, &uri, 200, Value::Null);
        return watch(server, t, q).await;
    }
    let response = match (&method, &t.name) {
        (&Method::GET, None) => list(&server, &t, &q),
        (&Method::GET, Some(name)) => {
            let key = Key::new(&t.gv, &t.plural, t.namespace.as_deref().unwrap_or(""), name);
            match server.get(&key) {
                Some(o) => json_response(&o, StatusCode::OK),
                None => status_error(404, "NotFound", format!("{} {name:?} not found", t.plural)),
            }
        }
        (&Method::POST, None) => create(&server, &t, body.clone()),
        (&Method::PATCH, Some(name)) => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct.starts_with("application/merge-patch+json")
                || ct.starts_with("application/strategic-merge-patch+json")
            {
                patch(&server, &t, name, &body)
            } else {
                status_error(415, "UnsupportedMediaType", format!("content type {ct:?}"))
            }
        }
        (&Method::DELETE, Some(name)) => {
            let key = Key::new(&t.gv, &t.plural, t.namespace.as_deref().unwrap_or(""), name);
            match server.get(&key) {
                Some(o) => {
                    server.delete(&key);
                    json_response(&o, StatusCode::OK)
                }
                None => status_error(404, "NotFound", format!("{} {name:?} not found", t.plural)),
            }
        }
        _ => status_error(405, "MethodNotAllowed", format!("{method} {}", uri.path())),
    };
    server.log(&method, &uri, response.status().as_u16(), body);
    response
}

fn list(server: &ApiServer, t: &Target, q: &BTreeMap<String, String>) -> Response {
    let inner = server.lock();
    let items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|(k, v)| {
            in_scope(k, t)
                && matches_selector(v, q.get("fieldSelector"))
                && matches_labels(v, q.get("labelSelector"))
        })
        .map(|(_, v)| v.clone())
        .collect();
    let body = json!({
        "kind": format!("{}List", t.kind),
        "apiVersion": t.gv,
        "metadata": {"resourceVersion": inner.rv.to_string()},
        "items": items,
    });
    json_response(&body, StatusCode::OK)
}

fn create(server: &ApiServer, t: &Target, mut obj: Value) -> Response {
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
        return status_error(422, "Invalid", "metadata.name: Required value".into());
    };
    let ns = t.namespace.clone().unwrap_or_default();
    if t.namespaced {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let key = Key::new(&t.gv, &t.plural, &ns, &name);
    let mut inner = server.lock();
    if inner.objects.contains_key(&key) {
        return status_error(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", t.plural),
        );
    }
    if t.has_status {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    obj["apiVersion"] = json!(t.gv);
    obj["kind"] = json!(t.kind);
    inner.uid += 1;
    obj["metadata"]["uid"] = json!(format!("00000000-0000-0000-0001-{:012}", inner.uid));
    obj["metadata"]["generation"] = json!(1);
    obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let stored = server.commit(&mut inner, key, "ADDED", obj, false);
    json_response(&stored, StatusCode::CREATED)
}

fn patch(server: &ApiServer, t: &Target, name: &str, p: &Value) -> Response {
    let key = Key::new(&t.gv, &t.plural, t.namespace.as_deref().unwrap_or(""), name);
    let mut inner = server.lock();
    let Some(old) = inner.objects.get(&key).cloned() else {
        return status_error(404, "NotFound", format!("{} {name:?} not found", t.plural));
    };
    let mut new = old.clone();
    merge_patch(&mut new, p);
    if t.status {
        // The status subresource: only status changes.
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    } else if t.has_status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    // Identity is not the client's to change.
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
    ] {
        new["metadata"][f] = old["metadata"][f].clone();
    }
    if old.get("spec") != new.get("spec") {
        let gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(gen + 1);
    }
    if new == old {
        // A no-op write does not bump the resourceVersion, as with the real server.
        return json_response(&old, StatusCode::OK);
    }
    let stored = server.commit(&mut inner, key, t.kind, new, false);
    json_response(&stored, StatusCode::OK)
}

async fn watch(server: ApiServer, t: Target, q: BTreeMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs);
    let field_selector = q.get("fieldSelector").cloned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(1024);
    // Subscribe before reading the history, so nothing falls between the two.
    let mut live = server.changes.subscribe();
    let mut cut = server.cut.subscribe();
    let (replay, expired, mut last) = {
        let inner = server.lock();
        let expired = from != 0 && from < inner.compacted;
        let replay: Vec<Change> = if from == 0 {
            // "Any": the current state as ADDED events.
            inner
                .objects
                .iter()
                .filter(|(k, _)| in_scope(k, &t))
                .map(|(k, v)| Change {
                    rv: inner.rv,
                    key: k.clone(),
                    kind: "ADDED",
                    object: v.clone(),
                })
                .collect()
        } else {
            inner
                .history
                .iter()
                .filter(|c| c.rv > from && in_scope(&c.key, &t))
                .cloned()
                .collect()
        };
        // Everything up to the current resourceVersion is in `replay` (or out of scope).
        (replay, expired, inner.rv)
    };
    let line = |v: Value| Ok(Bytes::from(format!("{v}\n")));
    tokio::spawn(async move {
        if expired {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410});
            let _ = tx
                .send(line(json!({"type": "ERROR", "object": status})))
                .await;
            return;
        }
        for c in replay {
            if matches_selector(&c.object, field_selector.as_ref()) {
                let _ = tx
                    .send(line(json!({"type": c.kind, "object": c.object})))
                    .await;
            }
            last = last.max(c.rv);
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(server.bookmark_every);
        loop {
            // Biased, cut first: once cut, a watch delivers nothing more (a change made after
            // a compaction must not reach a watch that should have ended with it).
            tokio::select! {
                biased;
                _ = cut.changed() => return,
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    // Only what this watch has passed: a change still queued for it must not
                    // be skipped by a client resuming from the bookmark.
                    let bm = json!({"type": "BOOKMARK", "object": {
                        "kind": t.kind, "apiVersion": t.gv,
                        "metadata": {"resourceVersion": last.to_string()}}});
                    if tx.send(line(bm)).await.is_err() { return; }
                }
                c = live.recv() => match c {
                    Ok(c) => {
                        if c.rv <= last {
                            continue;
                        }
                        last = c.rv;
                        if !in_scope(&c.key, &t) {
                            continue;
                        }
                        if matches_selector(&c.object, field_selector.as_ref()) {
                            let ev = json!({"type": c.kind, "object": c.object});
                            if tx.send(line(ev)).await.is_err() { return; }
                        }
                    }
                    // Too slow to keep up: end the watch, as the real server would.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}
