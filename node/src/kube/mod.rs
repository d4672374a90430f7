//! `raftlb run --kube`: Kubernetes as the source of desired state, and the place the results
//! are written back to.
//!
//! ```text
//!  kube::run (every peer)
//!   ├─ reflector(Service)            ┐
//!   ├─ reflector(EndpointSlice)      │ list + watch (resourceVersion, bookmarks; a 410 Gone
//!   ├─ reflector(Namespace)          │ makes the watcher relist and the store is replaced),
//!   ├─ reflector(6 config CRDs)      │ each wakes the controller loop
//!   ├─ reflector(ServiceL2Status)    │
//!   ├─ reflector(OpenELB Eip,        ┘ only while the cluster serves them (asked every
//!   │   BgpConf, BgpPeer)               10 s)
//!   ├─ node_facts: own Node (labels, NetworkUnavailable, exclude label) → RegisterNode
//!   ├─ sessions: this node's BGP sessions → its BGPSessionState objects, up/down Events
//!   └─ controller loop, acting only while this peer leads with a quorum:
//!        source::sync    desired objects (stores) − table → Apply/Delete commands
//!        status::write   table − observed objects → Service status + annotation, CRD status,
//!                        ServiceL2Status, Events (deterministic names: published once)
//! ```
//!
//! Every peer keeps its stores warm, so a new leader takes over without a relist. Only the
//! leader writes, and it writes only differences between the table and what the API shows: a
//! resync, a relist or a new leader finds nothing to write. Events carry the table's sequence
//! number in their name, so one published twice (a leader died between posting it and
//! recording the cursor) is refused by the API server as a duplicate.

pub mod crd;
pub mod sessions;
mod source;
mod status;

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::raft::leader::MembershipChange;
use anyhow::Context;
use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use raftlb_raft_store::table::ownership::NodeFacts;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crd::*;

/// Label that keeps a node from announcing (Kubernetes' own, honoured by MetalLB too).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// How to reach the API server and where raftlb's objects live.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// API server URL (tests, `kubectl proxy`); None: in-cluster config or KUBECONFIG.
    pub url: Option<String>,
    /// Namespace of raftlb's configuration CRs, ServiceL2Status objects and their Events.
    pub namespace: String,
    /// The StatefulSet the peers belong to (Raft id = ordinal + 1): when its replica count
    /// drops, the leader removes the members beyond it.
    pub statefulset: Option<String>,
}

/// Every store the controller reads.
#[derive(Clone)]
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
    pools: Store<IPAddressPool>,
    l2: Store<L2Advertisement>,
    bgp_ads: Store<BGPAdvertisement>,
    bgp_peers: Store<BGPPeer>,
    communities: Store<Community>,
    bfd: Store<BFDProfile>,
    l2_status: Store<ServiceL2Status>,
    /// OpenELB's kinds, once the cluster serves them.
    openelb: Option<OpenElbStores>,
}

/// OpenELB's kinds raftlb reads, each while the cluster serves it (OpenELB's CRDs installed;
/// raftlb never installs them).
#[derive(Clone)]
struct OpenElbStores {
    eips: Option<Store<Eip>>,
    bgp_confs: Option<Store<BgpConf>>,
    bgp_peers: Option<Store<OpenElbBgpPeer>>,
}

impl OpenElbStores {
    async fn wait_until_ready(&self) {
        async fn ready<K>(s: &Option<Store<K>>)
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + Hash + Clone,
        {
            if let Some(s) = s {
                let _ = s.wait_until_ready().await;
            }
        }
        tokio::join!(
            ready(&self.eips),
            ready(&self.bgp_confs),
            ready(&self.bgp_peers)
        );
    }
}

impl Stores {
    async fn wait_until_ready(&self) {
        // Deleting what a store has not listed yet would wipe the table: wait for all.
        let _ = tokio::join!(
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.pools.wait_until_ready(),
            self.l2.wait_until_ready(),
            self.bgp_ads.wait_until_ready(),
            self.bgp_peers.wait_until_ready(),
            self.communities.wait_until_ready(),
            self.bfd.wait_until_ready(),
            self.l2_status.wait_until_ready(),
            async {
                if let Some(openelb) = &self.openelb {
                    openelb.wait_until_ready().await;
                }
            },
        );
    }
}

/// A reflector for `api` and the future that runs it; every event wakes `wake`.
fn reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    wake: Arc<Notify>,
) -> (
    Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    let run = async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => warn!(kind, error = %e, "watch failed; retrying"),
            }
        }
    };
    (reader, run)
}

/// Starts a reflector for `api`; every event wakes `wake`.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    wake: Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, run) = reflector(api, config, wake);
    (reader, tokio::spawn(run))
}

/// Which of OpenELB's resources (plural names) the API server serves; empty: none. Asked
/// until the server answers: deciding "not served" on a transient error would delete every
/// Eip from the table.
async fn openelb_served(client: &Client) -> Vec<String> {
    let mut delay = Duration::from_millis(200);
    loop {
        match client
            .list_api_group_resources(&Eip::api_version(&()))
            .await
        {
            Ok(list) => {
                let ours = [
                    Eip::plural(&()),
                    BgpConf::plural(&()),
                    OpenElbBgpPeer::plural(&()),
                ];
                return list
                    .resources
                    .into_iter()
                    .map(|r| r.name)
                    .filter(|n| ours.iter().any(|o| o == n))
                    .collect();
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Vec::new(),
            Err(e) => {
                warn!(error = %e, "cannot ask whether OpenELB's resources are served; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How often a cluster without OpenELB's resources is asked again.
const OPENELB_DISCOVERY_EVERY: Duration = Duration::from_secs(10);

/// A reflector per served OpenELB kind, and the futures that run them.
fn openelb_reflectors(
    client: &Client,
    served: &[String],
    wake: &Arc<Notify>,
) -> (OpenElbStores, Vec<BoxFuture<'static, ()>>) {
    let mut runs: Vec<BoxFuture<'static, ()>> = Vec::new();
    macro_rules! store {
        ($ty:ty) => {
            served.iter().any(|p| *p == <$ty>::plural(&())).then(|| {
                let (s, run) = reflector(
                    Api::<$ty>::all(client.clone()),
                    watcher::Config::default(),
                    wake.clone(),
                );
                runs.push(Box::pin(run));
                s
            })
        };
    }
    let stores = OpenElbStores {
        eips: store!(Eip),
        bgp_confs: store!(BgpConf),
        bgp_peers: store!(OpenElbBgpPeer),
    };
    (stores, runs)
}

/// Waits until the cluster serves OpenELB's resources (its CRDs installed after raftlb
/// started), hands the listed stores to the controller, then runs their watches.
async fn openelb_once_served(
    client: Client,
    wake: Arc<Notify>,
    found: mpsc::Sender<OpenElbStores>,
) {
    let served = loop {
        tokio::time::sleep(OPENELB_DISCOVERY_EVERY).await;
        let served = openelb_served(&client).await;
        if !served.is_empty() {
            break served;
        }
    };
    info!(?served, "OpenELB's resources are now served: watching them");
    let (stores, runs) = openelb_reflectors(&client, &served, &wake);
    // Driven here, not spawned, so aborting this task ends the watches too.
    let mut run = futures::future::join_all(runs);
    tokio::select! {
        _ = &mut run => return,
        _ = stores.wait_until_ready() => {}
    }
    if found.send(stores).await.is_ok() {
        wake.notify_one();
        run.await;
    }
}

pub async fn client(opts: &KubeOptions) -> anyhow::Result<Client> {
    let config = match &opts.url {
        Some(url) => kube::Config::new(
            url.parse()
                .with_context(|| format!("--kube-url {url:?} is not a URL"))?,
        ),
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?,
    };
    Client::try_from(config).context("cannot build the Kubernetes client")
}

/// Runs the watchers, the Node facts task and the controller loop until the runtime stops.
pub async fn run(
    app: App,
    opts: KubeOptions,
    facts: NodeFacts,
    interfaces: tokio::sync::watch::Receiver<Vec<String>>,
) -> anyhow::Result<()> {
    let client = client(&opts).await?;
    let wake = Arc::new(Notify::new());
    let ns = opts.namespace.as_str();
    let cfg = watcher::Config::default;
    let mut tasks = Vec::new();
    macro_rules! store {
        ($api:expr) => {{
            let (s, t) = reflect($api, cfg(), wake.clone());
            tasks.push(t);
            s
        }};
    }
    let mut stores = Stores {
        services: store!(Api::<Service>::all(client.clone())),
        slices: store!(Api::<EndpointSlice>::all(client.clone())),
        namespaces: store!(Api::<Namespace>::all(client.clone())),
        pools: store!(Api::<IPAddressPool>::namespaced(client.clone(), ns)),
        l2: store!(Api::<L2Advertisement>::namespaced(client.clone(), ns)),
        bgp_ads: store!(Api::<BGPAdvertisement>::namespaced(client.clone(), ns)),
        bgp_peers: store!(Api::<BGPPeer>::namespaced(client.clone(), ns)),
        communities: store!(Api::<Community>::namespaced(client.clone(), ns)),
        bfd: store!(Api::<BFDProfile>::namespaced(client.clone(), ns)),
        l2_status: store!(Api::<ServiceL2Status>::namespaced(client.clone(), ns)),
        openelb: None,
    };
    let (openelb_found, openelb_later) = mpsc::channel(1);
    let served = openelb_served(&client).await;
    if served.is_empty() {
        info!("the cluster does not serve OpenELB's resources (network.kubesphere.io/v1alpha2); asking again every 10 s");
        tasks.push(tokio::spawn(openelb_once_served(
            client.clone(),
            wake.clone(),
            openelb_found,
        )));
    } else {
        info!(?served, "watching OpenELB's resources");
        let (openelb, runs) = openelb_reflectors(&client, &served, &wake);
        tasks.extend(runs.into_iter().map(tokio::spawn));
        stores.openelb = Some(openelb);
    }
    let node_wake = Arc::new(Notify::new());
    let (node, node_task) = reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={}", facts.name)),
        node_wake.clone(),
    );
    tasks.push(node_task);
    tasks.push(tokio::spawn(node_facts(
        app.clone(),
        node,
        node_wake,
        facts,
        interfaces,
    )));
    let statefulset = opts.statefulset.as_ref().map(|name| {
        let (s, t) = reflect(
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            wake.clone(),
        );
        tasks.push(t);
        s
    });
    // Secrets that BGPPeers name in passwordSecret: read by every node for its own
    // sessions, never written to the table or the logs.
    let secrets_wake = Arc::new(Notify::new());
    let (secrets, secrets_task) = reflect(
        Api::<Secret>::namespaced(client.clone(), ns),
        watcher::Config::default(),
        secrets_wake.clone(),
    );
    tasks.push(secrets_task);
    tasks.push(tokio::spawn(bgp_secrets(
        app.clone(),
        secrets,
        secrets_wake,
    )));
    tasks.push(tokio::spawn(sessions::run(
        app.clone(),
        client.clone(),
        opts.namespace.clone(),
    )));
    info!(namespace = ns, "watching Kubernetes");

    let mut controller = Controller {
        app,
        stores,
        source: source::Source::default(),
        status: status::Writer::new(client, opts.namespace.clone()),
        statefulset,
    };
    controller.stores.wait_until_ready().await;
    info!("Kubernetes stores listed");
    controller.run(wake, openelb_later).await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Hands the `password` of every Secret in raftlb's namespace to the BGP bridge whenever the
/// Secrets change.
async fn bgp_secrets(app: App, store: Store<Secret>, wake: Arc<Notify>) {
    let _ = store.wait_until_ready().await;
    loop {
        let passwords: std::collections::BTreeMap<String, String> = store
            .state()
            .iter()
            .filter_map(|s| {
                let bytes = s.data.as_ref()?.get("password")?;
                Some((
                    s.metadata.name.clone()?,
                    String::from_utf8(bytes.0.clone()).ok()?,
                ))
            })
            .collect();
        {
            let mut bridge = app.bgp.lock().await;
            let g = app.state.read().unwrap_or_else(|p| p.into_inner());
            bridge.set_secrets(passwords, &g.table, &app.fence.name);
        }
        wake.notified().await;
    }
}

/// The facts this node registers, from its Node object: labels, and whether it must not
/// announce (`NetworkUnavailable=True`, or the exclude label).
pub fn node_facts_from(base: &NodeFacts, node: &Node) -> NodeFacts {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let network_unavailable = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
        });
    let excluded = if labels.contains_key(EXCLUDE_LABEL) {
        Some(format!("label {EXCLUDE_LABEL}"))
    } else if network_unavailable {
        Some("condition NetworkUnavailable=True".to_string())
    } else {
        None
    };
    NodeFacts {
        labels: labels.into_iter().collect(),
        excluded,
        ..base.clone()
    }
}

/// Keeps this node's registration equal to what its Node object and its interfaces say.
async fn node_facts(
    app: App,
    node: Store<Node>,
    wake: Arc<Notify>,
    base: NodeFacts,
    mut interfaces: tokio::sync::watch::Receiver<Vec<String>>,
) {
    let _ = node.wait_until_ready().await;
    loop {
        let base = NodeFacts {
            interfaces: interfaces.borrow_and_update().clone(),
            ..base.clone()
        };
        let facts = match node.state().first() {
            Some(n) => node_facts_from(&base, n),
            None => base,
        };
        crate::register::register_facts(&app, &facts).await;
        // The table may also change under us (a restart registering flags): look again soon.
        tokio::select! {
            _ = wake.notified() => {}
            _ = interfaces.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct Controller {
    app: App,
    stores: Stores,
    source: source::Source,
    status: status::Writer,
    statefulset: Option<Store<StatefulSet>>,
}

/// Members beyond a StatefulSet of `replicas` pods (ids are ordinals + 1), highest first.
pub fn beyond_replicas(members: impl Iterator<Item = u64>, replicas: i32) -> Vec<u64> {
    let keep = u64::try_from(replicas.max(1)).unwrap_or(1);
    let mut out: Vec<u64> = members.filter(|id| *id > keep).collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}

impl Controller {
    /// Scaling down: remove the members whose pods the StatefulSet no longer wants, one per
    /// round, highest id first. A leader that is one of them hands leadership over first.
    async fn follow_scale_down(&self) {
        let Some(store) = &self.statefulset else {
            return;
        };
        let Some(replicas) = store
            .state()
            .first()
            .and_then(|s| s.spec.as_ref())
            .map(|s| s.replicas.unwrap_or(1))
        else {
            return;
        };
        let m = self.app.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let Some(&id) = beyond_replicas(membership.nodes().map(|(id, _)| *id), replicas).first()
        else {
            return;
        };
        let reply = if id == m.id {
            let Some(to) = membership.voter_ids().filter(|v| *v != m.id).min() else {
                return;
            };
            info!(
                replicas,
                to, "this peer is beyond the StatefulSet's replicas: handing leadership over"
            );
            self.app
                .change_here(MembershipChange::TransferLeader { to })
                .await
        } else {
            info!(replicas, id, "StatefulSet scaled down: removing member");
            self.app.change_here(MembershipChange::Remove { id }).await
        };
        info!(?reply, "membership");
    }

    /// `openelb_later` brings OpenELB's stores if the cluster starts serving them after
    /// startup.
    async fn run(&mut self, wake: Arc<Notify>, mut openelb_later: mpsc::Receiver<OpenElbStores>) {
        let mut metrics = self.app.raft.metrics();
        let mut applied = None;
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                Some(stores) = openelb_later.recv(), if self.stores.openelb.is_none() => {
                    self.stores.openelb = Some(stores);
                }
                _ = metrics.changed() => {
                    let now = metrics.borrow().last_applied;
                    if now == applied {
                        continue;
                    }
                    applied = now;
                }
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            // Let a burst of watch events land before looking.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !self.app.leads() {
                self.status.forget();
                continue;
            }
            // Fence: act only while a quorum still follows us, on a table that is up to date.
            if self.app.raft.ensure_linearizable().await.is_err() {
                continue;
            }
            self.follow_scale_down().await;
            self.source.sync(&self.app, &self.stores).await;
            self.status
                .write(&self.app, &self.stores, &self.source)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(labels: &[(&str, &str)], network_unavailable: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: network_unavailable.map(|s| {
                    vec![NodeCondition {
                        type_: "NetworkUnavailable".into(),
                        status: s.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn base() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            raft_id: 1,
            interfaces: vec!["eth0".into()],
            ..Default::default()
        }
    }

    #[test]
    fn members_beyond_the_replica_count_go_highest_first() {
        assert_eq!(beyond_replicas([1, 2, 3, 4, 5].into_iter(), 3), [5, 4]);
        assert_eq!(beyond_replicas([1, 2, 3].into_iter(), 3), Vec::<u64>::new());
        // Zero replicas would remove everyone: keep the first.
        assert_eq!(beyond_replicas([1, 2].into_iter(), 0), [2]);
    }

    #[test]
    fn node_labels_become_facts_and_the_flag_and_label_exclude() {
        let f = node_facts_from(&base(), &node(&[("zone", "a")], Some("False")));
        assert_eq!(f.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(f.excluded, None);
        assert_eq!(f.interfaces, ["eth0"], "what the flags said is kept");

        let f = node_facts_from(&base(), &node(&[], Some("True")));
        assert_eq!(
            f.excluded.as_deref(),
            Some("condition NetworkUnavailable=True")
        );
        let f = node_facts_from(&base(), &node(&[(EXCLUDE_LABEL, "")], None));
        assert!(f.excluded.is_some_and(|e| e.contains(EXCLUDE_LABEL)));
    }
}
