//! The allocation workload: clients that churn Services against a small pool over the admin
//! API while faults are injected, and read back half of the time linearizably. Each operation
//! becomes one history line ([`Event::Op`]) with its invocation and completion times, its
//! outcome (ok, fail, unknown: a timeout or a lost peer, the write may or may not be in), the
//! log index a write was applied at and the applied index a read answered at.
//!
//! It runs inside the lab's client namespace (`raftlb-labd workload`), so it reaches the nodes
//! only over the lab's bridge.

use std::io::Write;
use std::time::Duration;

use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::{ApplyRequest, ListRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::history::Event;
use crate::lab::now_us;

/// The namespace and pool the workload's Services live in.
pub const NAMESPACE: &str = "wl";
pub const POOL: &str = "wl";
/// The pool: 16 addresses for 20 Services, so it runs out and addresses are reused.
pub const POOL_CIDR: &str = "10.77.1.0/28";
pub const SERVICES: usize = 20;
const SHARING_KEYS: [&str; 2] = ["key-a", "key-b"];
const PORTS: [u16; 3] = [80, 443, 8080];

/// The pool the workload needs, as a manifest (applied with the campaign's configuration).
pub fn pool_manifest() -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {POOL}}}\n\
         spec: {{addresses: [{POOL_CIDR}], autoAssign: false}}\n"
    )
}

/// The annotation each write carries: the id of the operation that wrote the Service, so a
/// read shows which write its state came from.
pub const OP_ANNOTATION: &str = "chaos.raftlb.io/op";

/// One Service as a read returned it (with addresses, or pending without): what the
/// allocation checkers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub key: String,
    pub ips: Vec<String>,
    /// `metallb.io/allow-shared-ip`, if set.
    pub share: Option<String>,
    /// `PROTOCOL/PORT` of each port.
    pub ports: Vec<String>,
    /// The id of the operation whose write this state is ([`OP_ANNOTATION`]).
    #[serde(default)]
    pub op: Option<String>,
    /// `metallb.io/loadBalancerIPs`, if set.
    #[serde(default)]
    pub requested: Option<String>,
}

fn service_manifest(name: &str, op: &str, rng: &mut ChaCha8Rng) -> String {
    let mut ports: Vec<u16> = PORTS
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    if ports.is_empty() {
        ports.push(PORTS[rng.random_range(0..PORTS.len())]);
    }
    let mut annotations = format!("metallb.io/address-pool: {POOL}, {OP_ANNOTATION}: \"{op}\"");
    if rng.random_bool(0.5) {
        let key = SHARING_KEYS[rng.random_range(0..SHARING_KEYS.len())];
        annotations.push_str(&format!(", metallb.io/allow-shared-ip: {key}"));
    }
    if rng.random_bool(0.1) {
        annotations.push_str(&format!(
            ", metallb.io/loadBalancerIPs: 10.77.1.{}",
            rng.random_range(0..16)
        ));
    }
    let ports: Vec<String> = ports
        .iter()
        .map(|p| format!("{{port: {p}, protocol: TCP}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NAMESPACE}, annotations: {{{annotations}}}}}\n\
         spec: {{type: LoadBalancer, ports: [{}]}}\n",
        ports.join(", ")
    )
}

/// The workload's Services in a listing (its namespace), with their addresses if they have
/// any.
fn holders(services: &[raftlb_proto::admin::Service]) -> Vec<Holder> {
    services
        .iter()
        .filter(|s| s.namespace == NAMESPACE)
        .map(|s| {
            let obj: serde_json::Value =
                serde_json::from_str(&s.kubernetes_json).unwrap_or_default();
            let annotation = |name: &str| {
                obj["metadata"]["annotations"][name]
                    .as_str()
                    .map(str::to_string)
            };
            let ports = obj["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p["protocol"].as_str().unwrap_or("TCP"),
                        p["port"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            Holder {
                key: format!("{}/{}", s.namespace, s.name),
                ips: s.ips.clone(),
                share: annotation("metallb.io/allow-shared-ip"),
                ports,
                op: annotation(OP_ANNOTATION),
                requested: annotation("metallb.io/loadBalancerIPs"),
            }
        })
        .collect()
}

/// The `f` of the read that ends a chunk ([`final_read`]).
pub const FINAL_READ: &str = "final-read";

/// How long one operation may take before its outcome is unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// A client: its endpoints (its own first), a connection, and its generator.
struct Client {
    id: usize,
    endpoints: Vec<String>,
    next: usize,
    conn: Option<AdminClient<Channel>>,
    rng: ChaCha8Rng,
    /// Operations issued so far (the next one's id is `CLIENT-SEQ`).
    seq: u64,
}

impl Client {
    async fn connect(&mut self) -> Option<AdminClient<Channel>> {
        if self.conn.is_none() {
            let url = self.endpoints[self.next % self.endpoints.len()].clone();
            self.next += 1;
            let endpoint = tonic::transport::Endpoint::from_shared(url)
                .ok()?
                .connect_timeout(Duration::from_millis(500));
            self.conn = tokio::time::timeout(OP_TIMEOUT, endpoint.connect())
                .await
                .ok()?
                .ok()
                .map(AdminClient::new);
        }
        self.conn.clone()
    }

    /// One operation, as a history line.
    async fn op(&mut self) -> Event {
        let roll: f64 = self.rng.random();
        let name = format!("svc-{}", self.rng.random_range(0..SERVICES));
        let key = format!("{NAMESPACE}/{name}");
        self.seq += 1;
        let id = format!("{}-{}", self.id, self.seq);
        let (f, manifest, delete) = if roll < 0.5 {
            ("apply", service_manifest(&name, &id, &mut self.rng), false)
        } else if roll < 0.7 {
            ("delete", service_manifest(&name, &id, &mut self.rng), true)
        } else {
            ("read", String::new(), false)
        };
        let linearizable = f == "read" && self.rng.random_bool(0.5);
        let t = now_us();
        let mut outcome = "unknown";
        let (mut log_index, mut applied_index, mut error) = (None, None, None);
        let (mut ips, mut held) = (Vec::new(), Vec::new());
        match self.connect().await {
            None => {
                outcome = "fail";
                error = Some("no connection".to_string());
            }
            Some(mut conn) if f == "read" => {
                let r = tokio::time::timeout(
                    OP_TIMEOUT,
                    conn.list_services(ListRequest { linearizable }),
                )
                .await;
                // A read changes nothing: one that did not answer simply failed.
                outcome = "fail";
                match r {
                    Ok(Ok(list)) => {
                        let list = list.into_inner();
                        outcome = "ok";
                        applied_index = Some(list.applied_index);
                        held = holders(&list.services);
                    }
                    Ok(Err(e)) => error = Some(e.message().to_string()),
                    Err(_) => error = Some("timeout".to_string()),
                }
            }
            Some(mut conn) => {
                let r = tokio::time::timeout(
                    OP_TIMEOUT,
                    conn.apply(ApplyRequest {
                        manifest,
                        delete,
                        source: format!("client-{}", self.id),
                    }),
                )
                .await;
                match r {
                    Ok(Ok(reply)) => {
                        let reply = reply.into_inner();
                        outcome = "ok";
                        log_index = Some(reply.log_index);
                        if let Some(s) = reply
                            .services
                            .iter()
                            .find(|s| format!("{}/{}", s.namespace, s.name) == key)
                        {
                            ips = s.ips.clone();
                        }
                    }
                    // Refused by validation (a definite no) or lost on the way (unknown).
                    Ok(Err(e)) => {
                        if matches!(
                            e.code(),
                            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                        ) {
                            outcome = "fail";
                        }
                        error = Some(e.message().to_string());
                    }
                    Err(_) => error = Some("timeout".to_string()),
                }
            }
        }
        // A lost or slow peer: the next operation connects again, to the next endpoint.
        if outcome != "ok" && error.as_deref() != Some("no connection") {
            let definite_refusal = f != "read" && outcome == "fail";
            if !definite_refusal {
                self.conn = None;
            }
        }
        Event::Op {
            t,
            end: now_us(),
            client: self.id,
            id: Some(id),
            f: f.into(),
            key: (f != "read").then_some(key),
            outcome: outcome.into(),
            log_index,
            applied_index,
            linearizable,
            ips,
            holders: held,
            error,
        }
    }
}

/// Runs `clients` clients against `endpoints` for `for_ms`, one operation every `every_ms`
/// each, writing one history line per operation to `out`. On SIGTERM each client finishes
/// the operation it has in flight (at most [`OP_TIMEOUT`]) and writes its line, so no write
/// the cluster may have taken goes unrecorded.
pub async fn run(
    endpoints: Vec<String>,
    clients: usize,
    seed: u64,
    every_ms: u64,
    for_ms: u64,
    out: impl Write + Send + 'static,
) {
    let out = std::sync::Arc::new(std::sync::Mutex::new(out));
    let deadline = tokio::time::Instant::now() + Duration::from_millis(for_ms);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::spawn(async move {
            term.recv().await;
            let _ = stop_tx.send(true);
        });
    }
    let mut tasks = Vec::new();
    for id in 0..clients {
        let mut order = endpoints.clone();
        order.rotate_left(id % endpoints.len().max(1));
        let mut client = Client {
            id,
            endpoints: order,
            next: 0,
            conn: None,
            rng: ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(id as u64)),
            seq: 0,
        };
        let out = out.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline && !*stop.borrow() {
                let event = client.op().await;
                if let Ok(line) = serde_json::to_string(&event) {
                    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(every_ms)) => {}
                    _ = stop.changed() => {}
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The read a chunk ends with, once the workload has stopped and the cluster is healed: the
/// workload's Services as a linearizable read gives them, asked of each endpoint in turn for
/// up to `within`. One history line, `f` = `final-read`, whose holders the durability checker
/// holds every acknowledged write against.
pub async fn final_read(endpoints: Vec<String>, within: Duration) -> Event {
    let t = now_us();
    let deadline = tokio::time::Instant::now() + within;
    let mut answer = Err(String::from("no endpoint"));
    for url in endpoints.iter().cycle() {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.clone()) else {
            continue;
        };
        let read = async {
            let mut conn = AdminClient::new(endpoint.connect().await?);
            let list = conn
                .list_services(ListRequest { linearizable: true })
                .await?
                .into_inner();
            anyhow::Ok(list)
        };
        answer = match tokio::time::timeout(OP_TIMEOUT, read).await {
            Ok(Ok(list)) => Ok(list),
            Ok(Err(e)) => Err(format!("{url}: {e:#}")),
            Err(_) => Err(format!("{url}: timeout")),
        };
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Event::Op {
        t,
        end: now_us(),
        client: 0,
        id: None,
        f: FINAL_READ.into(),
        key: None,
        outcome: if answer.is_ok() { "ok" } else { "fail" }.into(),
        log_index: None,
        applied_index: answer.as_ref().ok().map(|l| l.applied_index),
        linearizable: true,
        ips: Vec::new(),
        holders: answer.as_ref().map_or(Vec::new(), |l| holders(&l.services)),
        error: answer.err(),
    }
}
