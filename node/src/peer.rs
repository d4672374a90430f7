//! `raftlb run`: one Raft peer with its Raft and admin gRPC servers.
//!
//! Order of start-up: everything that can be wrong with the configuration (flags, manifests)
//! is checked before any socket is bound; then the store is opened, both listeners are bound
//! and logged, the cluster is formed or joined, and given manifests are applied once a leader
//! exists. SIGTERM or Ctrl-C stops the servers and Raft.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::{BasicNode, SnapshotPolicy};
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::admin_server::AdminServer;
use raftlb_proto::admin::{AddLearnerRequest, MemberRequest};
use raftlb_proto::raft::raft_server::RaftServer;
use raftlb_raft_store::table::{Command, Response};
use raftlb_raft_store::{store, NodeId, Raft};
use tonic::transport::Server;
use tracing::{error, info, warn};

use raftlb_raft_store::table::ownership::NodeFacts;

use crate::admin::{operator_batch, AdminService};
use crate::app::App;
use crate::clock::wall_ms;
use crate::fence::{self, LeaseKeeper};
use crate::raft::leader::LeaderReply;
use crate::raft::membership::TransferGuard;
use crate::raft::transport::{Channels, NetworkFactory};
use crate::rpc::RaftService;
use crate::tls::net::{dial, serve, ClientTls};
use crate::tls::Security;

/// Default ports: Raft transport and admin API.
pub const DEFAULT_RAFT_PORT: u16 = 7470;
pub const DEFAULT_ADMIN_PORT: u16 = 7471;
/// On SIGTERM, how long BGP routes stay up marked GRACEFUL_SHUTDOWN before the sessions end.
const SHUTDOWN_MARK: Duration = Duration::from_millis(500);

pub use crate::timing::Timing;

/// Everything `run` needs, already checked.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub raft_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The initial voters (id -> Raft address), including this peer; empty with `--join`.
    pub peers: BTreeMap<NodeId, String>,
    pub join: Option<String>,
    /// Parsed manifests to apply once a leader exists: (source name, objects).
    pub manifests: Vec<crate::manifest::Manifest>,
    pub timing: Timing,
    pub lb_class: Option<String>,
    pub snapshot_every: u64,
    pub keep_logs: u64,
    /// What this node registers: name and labels (the interfaces come from `interfaces`).
    pub facts: NodeFacts,
    /// Where this node answers ARP/NDP: a list, nowhere, or discovered.
    pub interfaces: crate::interfaces::Choice,
    /// `--kube`: Kubernetes is the source of desired state and the place results are written.
    pub kube: Option<crate::kube::KubeOptions>,
    /// `/healthz`, `/readyz` and `/metrics` (None: not served).
    pub metrics_addr: Option<SocketAddr>,
    /// What this node brings to its BGP sessions (router ID).
    pub bgp: crate::bgp::NodeBgp,
    /// mTLS on the Raft and admin ports, or `--insecure`.
    pub security: Security,
}

/// Why a peer stopped: the process exit code tells them apart.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Startup(anyhow::Error),
    #[error("--join: {0}")]
    Join(String),
    #[error("{0}")]
    Runtime(anyhow::Error),
}

impl PeerError {
    pub fn exit_code(&self) -> i32 {
        match self {
            PeerError::Startup(_) => 3,
            PeerError::Join(_) => 4,
            PeerError::Runtime(_) => 1,
        }
    }
}

/// How many streams a peer may reset before the Raft port accepts them (see `run`).
const RAFT_MAX_PENDING_RESETS: usize = 4096;

pub async fn run(cfg: PeerConfig) -> Result<(), PeerError> {
    let raft_config = openraft::Config {
        cluster_name: "raftlb".into(),
        heartbeat_interval: cfg.timing.heartbeat_ms,
        // The leader lease loop (`fence::hold_leader_lease`) sends the heartbeats: its quorum
        // round every heartbeat interval refreshes the followers' election timers and confirms
        // the lease in one. openraft's own heartbeats on top doubled the idle traffic.
        enable_heartbeat: false,
        election_timeout_min: cfg.timing.election_min_ms,
        election_timeout_max: cfg.timing.election_max_ms,
        install_snapshot_timeout: 2000,
        // One entry may carry a batch of 1,000 Services (~100 kB encoded, several times that
        // decoded): a follower catching up holds a whole payload at once.
        max_payload_entries: 64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
        max_in_snapshot_log_to_keep: cfg.keep_logs,
        ..Default::default()
    }
    .validate()
    .map_err(|e| PeerError::Startup(anyhow::anyhow!("raft timing: {e}")))?;

    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create", cfg.data_dir.display()))
        .map_err(PeerError::Startup)?;
    let (log, sm) = store::open(&cfg.data_dir.join("sled"))
        .with_context(|| {
            format!(
                "--data-dir {}: cannot open the store",
                cfg.data_dir.display()
            )
        })
        .map_err(PeerError::Startup)?;
    let table = sm.shared();
    let keeper = LeaseKeeper::new(&cfg.facts.name, cfg.timing);
    let interfaces = crate::interfaces::start(
        cfg.interfaces.clone(),
        keeper.lease.clone(),
        keeper.clock.clone(),
    )
    .await
    .map_err(PeerError::Startup)?;

    let raft_listener = tokio::net::TcpListener::bind(cfg.raft_addr)
        .await
        .with_context(|| format!("cannot listen on {} (Raft)", cfg.raft_addr))
        .map_err(PeerError::Startup)?;
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", cfg.admin_addr))
        .map_err(PeerError::Startup)?;
    let metrics_listener = match cfg.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics)"))
                .map_err(PeerError::Startup)?,
        ),
        None => None,
    };
    info!(raft = %cfg.raft_addr, admin = %cfg.admin_addr, metrics = ?cfg.metrics_addr, data_dir = %cfg.data_dir.display(), "listening");
    match cfg.security.tls() {
        Some(tls) => {
            let f = tls.facts();
            info!(naming = ?tls.naming, serial = %f.serial, names = ?f.sans, not_after = f.not_after, "mutual TLS on the Raft and admin ports");
        }
        None => warn!(
            "--insecure: the Raft and admin ports speak plaintext and authenticate nobody; anyone who reaches them can change the table"
        ),
    }

    let channels = Channels::new(cfg.security.clone());
    let raft = Raft::new(
        cfg.id,
        Arc::new(raft_config),
        NetworkFactory(channels.clone()),
        log,
        sm,
    )
    .await
    .map_err(|e| PeerError::Startup(anyhow::anyhow!("raft: {e}")))?;
    let app = App {
        raft: raft.clone(),
        state: table.clone(),
        fence: keeper.clone(),
        transfer: TransferGuard::default(),
        stats: Arc::default(),
        channels: channels.clone(),
        bgp: Arc::default(),
        security: cfg.security.clone(),
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // A partition that heals delivers every RPC the peers gave up on during it at once,
    // each followed by its RST_STREAM. h2's guard against rapid resets (20 pending-accept
    // resets, then GOAWAY) would then drop the peers' connections just as they come back,
    // and lease renewals would wait for a reconnect (the chaos campaign saw a new owner's
    // lease return 1.4 s after the heal). Peers are known members, so the guard is wide here;
    // the admin port keeps h2's default.
    let raft_router = Server::builder()
        .http2_max_pending_accept_reset_streams(Some(RAFT_MAX_PENDING_RESETS))
        .add_service(
            RaftServer::new(RaftService { app: app.clone() }).max_decoding_message_size(64 << 20),
        );
    let admin_router = Server::builder().add_service(
        AdminServer::new(AdminService { app: app.clone() }).max_decoding_message_size(64 << 20),
    );
    let servers = {
        let (security, stop) = (cfg.security.clone(), stop_rx.clone());
        tokio::spawn(async move {
            tokio::try_join!(
                serve(raft_router, raft_listener, &security, stopped(stop.clone())),
                serve(admin_router, admin_listener, &security, stopped(stop)),
            )
        })
    };
    let tls_watch = cfg
        .security
        .tls()
        .cloned()
        .map(|t| tokio::spawn(crate::tls::watch(t)));
    if let Some(listener) = metrics_listener {
        let stop = stopped(stop_rx.clone());
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::health::serve(listener, app, stop).await {
                warn!(error = %e, "metrics server stopped");
            }
        });
    }

    let result = async {
        if !cfg.peers.is_empty() {
            initialize(&raft, &cfg).await?;
        }
        if let Some(url) = &cfg.join {
            join(&raft, &cfg, url).await?;
        }
        let background = tokio::spawn(apply_startup_state(app.clone(), cfg.clone()));
        let kube_task = cfg.kube.clone().map(|opts| {
            let (app, facts) = (app.clone(), cfg.facts.clone());
            let names = interfaces.names.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::kube::run(app, opts, facts, names).await {
                    warn!(error = format!("{e:#}"), "Kubernetes controller stopped");
                }
            })
        });
        let mut tasks = vec![
            tokio::spawn(fence::hold_leader_lease(
                raft.clone(),
                keeper.clone(),
                app.transfer.clone(),
            )),
            tokio::spawn(fence::renew_with_leader(
                raft.clone(),
                keeper.clone(),
                channels.clone(),
            )),
            tokio::spawn(crate::control::run(app.clone())),
            tokio::spawn(crate::announce::run(
                app.clone(),
                interfaces.announcer.clone(),
            )),
            tokio::spawn(crate::bgp::run(
                app.clone(),
                interfaces.arbiter.clone(),
                cfg.bgp.clone(),
                app.bgp.clone(),
            )),
        ];
        // Under Kubernetes the Node watcher registers this node, with the Node's labels.
        if cfg.kube.is_none() {
            tasks.push(tokio::spawn(crate::register::run(
                app.clone(),
                cfg.facts.clone(),
                interfaces.names.clone(),
            )));
        }
        // Fail-stop: a Raft core that stopped on a fatal error (a disk that is full or
        // failing) never comes back in this process, so the process ends and its supervisor
        // restarts it, rather than staying up as a member that cannot vote or append.
        let fatal = tokio::select! {
            _ = wait_for_signal() => None,
            e = raft_stopped(&raft) => Some(e),
        };
        match &fatal {
            None => info!("stopping"),
            Some(e) => error!(
                error = %e,
                "the Raft core stopped; exiting so that this peer restarts (fail-stop)"
            ),
        }
        background.abort();
        if let Some(t) = &tls_watch {
            t.abort();
        }
        if let Some(t) = kube_task {
            t.abort();
        }
        for t in tasks {
            t.abort();
        }
        // Stop answering before the process goes: the lease ends now.
        keeper.lease.set(0);
        // Routers first move traffic away (GRACEFUL_SHUTDOWN, RFC 8326), then the sessions
        // end with a Cease that says why, rather than letting routers wait out their hold
        // timers. A peer that failed does not linger over the first step.
        if fatal.is_none() && app.bgp.lock().await.mark_graceful_shutdown() {
            tokio::time::sleep(SHUTDOWN_MARK).await;
        }
        app.bgp.lock().await.shutdown(match fatal {
            None => "raftlb: node shutting down",
            Some(_) => "raftlb: node failed (storage)",
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        match fatal {
            None => Ok(()),
            Some(e) => Err(PeerError::Runtime(anyhow::anyhow!(
                "the Raft core stopped: {e}"
            ))),
        }
    }
    .await;

    let _ = stop_tx.send(true);
    let _ = raft.shutdown().await;
    match tokio::time::timeout(Duration::from_secs(5), servers).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "server stopped with an error"),
        Err(_) => warn!("servers did not stop within 5s"),
        _ => {}
    }
    result
}

/// Forms the cluster from `--peers`, once, from the lowest id. A restart finds the store
/// initialized and does nothing.
async fn initialize(raft: &Raft, cfg: &PeerConfig) -> Result<(), PeerError> {
    let lowest = cfg.peers.keys().next().copied();
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| PeerError::Runtime(e.into()))?;
    if initialized || lowest != Some(cfg.id) {
        return Ok(());
    }
    let members: BTreeMap<NodeId, BasicNode> = cfg
        .peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => info!(members = ?cfg.peers, "cluster initialized"),
        // Another start already did it: fine.
        Err(e) => warn!(error = %e, "initialize"),
    }
    Ok(())
}

/// Asks a running cluster to add this peer as a learner (it returns once we caught up), then
/// to promote it to voter.
async fn join(raft: &Raft, cfg: &PeerConfig, url: &str) -> Result<(), PeerError> {
    if raft.is_initialized().await.unwrap_or(false)
        && raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == cfg.id)
    {
        info!("already a voter; not joining again");
        return Ok(());
    }
    // With mTLS the joining peer shows its node certificate, which may add and promote
    // only its own node.
    let tls = match cfg.security.tls() {
        Some(t) => ClientTls::Given(t.clone()),
        None => ClientTls::Insecure,
    };
    let mut client = None;
    let mut last_error = String::new();
    for _ in 0..10 {
        match dial(url, &tls, Duration::from_secs(2)).await {
            Ok(ch) => {
                client = Some(AdminClient::new(ch));
                break;
            }
            Err(e) => {
                last_error = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let mut client = client.ok_or_else(|| {
        PeerError::Join(format!(
            "cannot reach {url} after 10 attempts ({last_error})"
        ))
    })?;
    let addr = cfg.raft_addr.to_string();
    client
        .add_learner(AddLearnerRequest { id: cfg.id, addr })
        .await
        .map_err(|s| {
            PeerError::Join(format!(
                "{url} refused to add node {} as a learner: {}",
                cfg.id,
                s.message()
            ))
        })?;
    info!(url, "joined as a learner");
    client
        .promote(MemberRequest { id: cfg.id })
        .await
        .map_err(|s| {
            PeerError::Join(format!(
                "{url} refused to promote node {}: {}",
                cfg.id,
                s.message()
            ))
        })?;
    info!("promoted to voter");
    Ok(())
}

/// Applies `--lb-class` and `-f` manifests once a leader exists. Idempotent, so every
/// restart may do it again.
async fn apply_startup_state(app: App, cfg: PeerConfig) {
    let mut rx = app.raft.metrics();
    if rx.wait_for(|m| m.current_leader.is_some()).await.is_err() {
        return;
    }
    if let Some(class) = &cfg.lb_class {
        let cmd = Command::SetLoadBalancerClass {
            class: Some(class.clone()).filter(|c| !c.is_empty()),
            now_ms: wall_ms(),
        };
        let reply = app.write(cmd, Duration::from_secs(30)).await;
        if !matches!(reply, LeaderReply::Done(_)) {
            warn!(?reply, "could not set the loadBalancerClass");
        }
    }
    for (source, objects) in &cfg.manifests {
        let batch = operator_batch(objects.clone());
        let reply = app
            .write(Command::Apply(batch), Duration::from_secs(30))
            .await;
        match reply {
            LeaderReply::Done(Response::Applied(o)) => {
                info!(
                    source,
                    generation = o.generation,
                    objects = o.changes.len(),
                    "manifest applied"
                )
            }
            LeaderReply::Done(Response::Rejected(e)) => {
                warn!(source, error = %e, "manifest rejected")
            }
            other => warn!(source, ?other, "manifest not applied"),
        }
    }
}

/// Resolves with the error once the Raft core has stopped for good.
async fn raft_stopped(raft: &Raft) -> String {
    let mut rx = raft.metrics();
    loop {
        if let Err(e) = &rx.borrow_and_update().running_state {
            return e.to_string();
        }
        if rx.changed().await.is_err() {
            return "the Raft core ended".into();
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
