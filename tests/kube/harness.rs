//! Shared by the Kubernetes tests: a fake API server seeded like a small cluster, raftlb peers
//! pointed at it, and readers for what the controller wrote.

use std::time::Duration;

use raftlb_chaos::{eventually, Cluster};
use serde_json::{json, Value};

use crate::apiserver::{ApiServer, Key};

pub const NS: &str = "raftlb-system";

pub fn service(ns: &str, name: &str, spec: Value, annotations: Value) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"port": 80, "protocol": "TCP"}],
                 "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"},
    });
    if let (Some(base), Some(extra)) = (s["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    s
}

pub fn pool(name: &str, addresses: &[&str], extra: Value) -> Value {
    let mut spec = json!({"addresses": addresses});
    if let (Some(base), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "raftlb.io/v1alpha1", "kind": "IPAddressPool",
           "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

/// Namespaces, three Nodes, and an L2Advertisement for every pool.
pub fn seed(api: &ApiServer) {
    for ns in [NS, "default", "apps"] {
        api.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    for n in 1..=3 {
        api.put(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("node-{n}"), "labels": {"kubernetes.io/hostname": format!("node-{n}")}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.put(
        json!({"apiVersion": "raftlb.io/v1alpha1", "kind": "L2Advertisement",
        "metadata": {"name": "all", "namespace": NS}, "spec": {}}),
    );
}

pub async fn start_cluster(api: &ApiServer, peers: u64) -> anyhow::Result<Cluster> {
    start_cluster_with(api, peers, &[]).await
}

pub async fn start_cluster_with(
    api: &ApiServer,
    peers: u64,
    extra: &[&str],
) -> anyhow::Result<Cluster> {
    let url = api.url();
    let mut args = vec![
        "--kube",
        "--kube-url",
        &url,
        "--kube-namespace",
        NS,
        "--profile",
        "fast",
    ];
    args.extend_from_slice(extra);
    Cluster::start(peers, &args).await
}

pub fn svc_key(ns: &str, name: &str) -> Key {
    Key::new("v1", "services", ns, name)
}

pub fn ingress(obj: &Value) -> Vec<String> {
    obj["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the Service shows exactly `want` (empty: no ingress).
pub async fn wait_ingress(
    api: &ApiServer,
    ns: &str,
    name: &str,
    want: &[&str],
) -> anyhow::Result<()> {
    let key = svc_key(ns, name);
    eventually(
        &format!("{ns}/{name} ingress {want:?}"),
        Duration::from_secs(20),
        || {
            let got = api.get(&key).map(|o| ingress(&o)).unwrap_or_default();
            async move { Ok((got == want).then_some(())) }
        },
    )
    .await
}

/// Waits until the Service has some ingress and returns it.
pub async fn wait_any_ingress(
    api: &ApiServer,
    ns: &str,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let key = svc_key(ns, name);
    eventually(
        &format!("{ns}/{name} gets an IP"),
        Duration::from_secs(30),
        || {
            let got = api.get(&key).map(|o| ingress(&o)).unwrap_or_default();
            async move { Ok((!got.is_empty()).then_some(got)) }
        },
    )
    .await
}

/// (reason, message) of every Event about `kind/name`.
pub fn events(api: &ApiServer, kind: &str, name: &str) -> Vec<(String, String)> {
    api.list("v1", "events")
        .into_iter()
        .filter(|e| {
            e["involvedObject"]["kind"] == json!(kind) && e["involvedObject"]["name"] == json!(name)
        })
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn count_events(api: &ApiServer, kind: &str, name: &str, reason: &str) -> usize {
    events(api, kind, name)
        .iter()
        .filter(|(r, _)| r == reason)
        .count()
}

/// Successful PATCHes of a Service's status subresource, with the ingress each one wrote.
pub fn status_writes(api: &ApiServer, ns: &str, name: &str) -> Vec<Value> {
    let path = format!("/api/v1/namespaces/{ns}/services/{name}/status");
    api.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path == path && r.status == 200)
        .map(|r| r.body["status"]["loadBalancer"]["ingress"].clone())
        .collect()
}

/// A test's result, with the peers' logs printed when it failed.
pub fn with_logs(cluster: &Cluster, result: anyhow::Result<()>) -> anyhow::Result<()> {
    if result.is_err() {
        dump_logs(cluster);
    }
    result
}

/// Prints the peers' logs (the harness's only window into the processes).
pub fn dump_logs(cluster: &Cluster) {
    for p in &cluster.peers {
        eprintln!("--- node {} (last 40 lines) ---", p.id);
        eprint!("{}", raftlb_tests::last_lines(&p.log(), 40));
    }
}
