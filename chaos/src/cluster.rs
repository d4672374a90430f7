//! A cluster of `raftlb run` processes on 127.0.0.1 in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use raftlb_node::tls::material::Files;
use raftlb_node::tls::net::{dial_with, ClientTls};
use raftlb_node::tls::Tls;
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::{ApplyRequest, ListRequest, Service, StatusReply, StatusRequest};
use tonic::transport::Channel;

/// A free TCP port on 127.0.0.1, below the ephemeral range: a port the kernel handed out for
/// port 0 can be taken again by any outgoing connection before the process meant to listen on
/// it binds it (seen in CI: a peer failed to bind its Raft port and the cluster never formed).
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// The first of `count` consecutive loopback ports that are free now, below the ephemeral range
/// (32768 and up on Linux), so no client connection takes one of them in the meantime. The
/// search starts at a place derived from the process id so parallel test binaries spread out,
/// and each call in a process starts past the blocks handed out before it: tests of one binary
/// run in parallel threads, and two of them probing the same block before either binds it
/// would both get it.
pub fn free_port_block(count: u16) -> u16 {
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_000;
    static HANDED_OUT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let slots = (HIGH - LOW) / u32::from(count.max(1));
    let start =
        std::process::id() % slots + HANDED_OUT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (0..slots)
        .map(|i| (LOW + ((start + i) % slots) * u32::from(count)) as u16)
        .find(|&base| {
            (base..base + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
        .expect("a block of free loopback ports")
}

/// The `raftlb` binary: `$RAFTLB_BIN`, else the one beside the running test in target/,
/// brought up to date with `cargo build` once per process (`cargo test` builds only the
/// binaries of the package under test, so without this a stale binary could be tested).
pub fn raftlb_binary() -> anyhow::Result<PathBuf> {
    static BINARY: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    if let Ok(p) = std::env::var("RAFTLB_BIN") {
        return Ok(PathBuf::from(p));
    }
    BINARY
        .get_or_init(|| build_binary("raftlb-node", "raftlb").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The lab helper (`raftlb-labd`), built the same way.
pub fn labd_binary() -> anyhow::Result<PathBuf> {
    static BINARY: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| build_binary("raftlb-chaos", "raftlb-labd").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Builds binary `name` of `package` in the calling binary's profile (cargo is quick when it
/// is up to date) and returns its path.
pub fn build_binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin> -> target/<profile>/<name>
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| anyhow!("unexpected binary location {}", exe.display()))?;
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    let bin = profile_dir.join(name);
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
    // A test runs with the variables cargo sets for it (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...).
    // Build scripts that watch them (ring's does) would see a change and rebuild, here and
    // again in the next `cargo test`: a minute and a half per test binary.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let ours = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*key,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            );
        if ours {
            cmd.env_remove(&*key);
        }
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo build for {name}"))?;
    if !status.success() || !bin.exists() {
        bail!("could not build {}", bin.display());
    }
    Ok(bin)
}

/// Polls `check` until it returns `Ok(Some(v))` or `timeout` passes (then the last error).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::from("condition not met");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("{what}: not true after {timeout:?} ({last})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Peer {
    pub id: u64,
    pub raft_port: u16,
    pub admin_port: u16,
    /// `/metrics`, unless the cluster's flags name a port of their own.
    pub metrics_port: u16,
    pub dir: PathBuf,
    /// mTLS (`--tls-dir DIR/tls`) instead of `--insecure`.
    pub secure: bool,
    child: Option<Child>,
}

impl Peer {
    pub fn endpoint(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.admin_port)
    }

    /// Where its certificate files are, with mTLS.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    pub fn raft_addr(&self) -> String {
        format!("127.0.0.1:{}", self.raft_port)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("raftlb.log")).unwrap_or_default()
    }
}

pub struct Cluster {
    pub bin: PathBuf,
    pub peers: Vec<Peer>,
    /// Extra flags for every `raftlb run`.
    pub args: Vec<String>,
    peers_flag: String,
    /// With mTLS: the CA (`ca.crt`, `ca.key`) and the admin's certificate the test's clients
    /// show.
    pub tls: Option<ClusterTls>,
    _dir: tempfile::TempDir,
}

pub struct ClusterTls {
    /// `ca.crt`, `ca.key`, `client.admin.crt`/`.key`.
    pub dir: PathBuf,
    pub admin: ClientTls,
}

impl ClusterTls {
    /// Makes a CA, a certificate per peer (in each peer's `tls/`) and an admin's.
    fn mint(dir: &Path, peers: &[Peer]) -> anyhow::Result<ClusterTls> {
        use raftlb_node::tls::mint::Validity;
        use raftlb_node::tls::store::{mint_cluster, NodeFiles};
        use raftlb_node::tls::DEFAULT_CLUSTER;
        let e = |e: String| anyhow!(e);
        let ca_dir = dir.join("tls");
        let nodes: Vec<NodeFiles> = peers
            .iter()
            .map(|p| NodeFiles {
                id: p.id,
                dir: p.tls_dir(),
                ip: std::net::IpAddr::from([127, 0, 0, 1]),
            })
            .collect();
        let day = Validity::days(1);
        mint_cluster(&ca_dir, "test", DEFAULT_CLUSTER, (day, day), &nodes).map_err(e)?;
        let files = Files::client_in(&ca_dir, Some("admin")).map_err(e)?;
        Ok(ClusterTls {
            admin: ClientTls::Given(Tls::load(files, DEFAULT_CLUSTER).map_err(e)?),
            dir: ca_dir,
        })
    }
}

impl Cluster {
    /// Starts `n` voters with `--insecure` and waits for a leader.
    pub async fn start(n: u64, args: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_with(n, args, false).await
    }

    /// Starts `n` voters with mTLS (certificates from a fresh CA) and waits for a leader.
    pub async fn start_secure(n: u64, args: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_with(n, args, true).await
    }

    async fn start_with(n: u64, args: &[&str], secure: bool) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("raftlb-cluster-")
            .tempdir()?;
        let peers: Vec<Peer> = (1..=n)
            .map(|id| Peer {
                id,
                raft_port: free_port(),
                admin_port: free_port(),
                metrics_port: free_port(),
                dir: dir.path().join(format!("node-{id}")),
                secure,
                child: None,
            })
            .collect();
        let tls = if secure {
            Some(ClusterTls::mint(dir.path(), &peers)?)
        } else {
            None
        };
        let peers_flag = peers
            .iter()
            .map(|p| format!("{}@{}", p.id, p.raft_addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            bin: raftlb_binary()?,
            peers,
            args: args.iter().map(|s| s.to_string()).collect(),
            peers_flag,
            tls,
            _dir: dir,
        };
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        if let Err(e) = cluster.wait_leader(Duration::from_secs(20)).await {
            return Err(e.context(cluster.exited_logs()));
        }
        Ok(cluster)
    }

    /// The log tail of every peer that has exited, for an error that says why.
    fn exited_logs(&mut self) -> String {
        let mut out = String::from("peers that exited:");
        for p in self.peers.iter_mut() {
            if p.is_running() {
                continue;
            }
            let log = p.log();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            out += &format!("\n  node {}:", p.id);
            for line in tail.into_iter().rev() {
                out += &format!("\n    {line}");
            }
        }
        out
    }

    fn peer_mut(&mut self, id: u64) -> &mut Peer {
        self.peers
            .iter_mut()
            .find(|p| p.id == id)
            .expect("known peer")
    }

    pub fn peer(&self, id: u64) -> &Peer {
        self.peers.iter().find(|p| p.id == id).expect("known peer")
    }

    /// The ids of every peer but `id` (the followers, given the leader).
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.peers
            .iter()
            .map(|p| p.id)
            .filter(|p| *p != id)
            .collect()
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let args = self.args.clone();
        let peers_flag = self.peers_flag.clone();
        let peer = self.peer_mut(id);
        std::fs::create_dir_all(&peer.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(peer.dir.join("raftlb.log"))?;
        // Peers on loopback answer on no interface of the host unless a test says where.
        let announce = args
            .iter()
            .any(|a| a == "--interfaces" || a == "--exclude-interfaces");
        let nowhere: &[&str] = if announce {
            &[]
        } else {
            &["--interfaces", "none"]
        };
        let metrics_port = peer.metrics_port.to_string();
        let metrics: &[&str] = if args.iter().any(|a| a == "--metrics-port") {
            &[]
        } else {
            &["--metrics-port", &metrics_port]
        };
        // Every peer shares 127.0.0.1: a BGP listener would take the others' connections.
        let bgp: &[&str] = if args.iter().any(|a| a == "--bgp-port") {
            &[]
        } else {
            &["--bgp-port", "0"]
        };
        let security = if peer.secure {
            vec!["--tls-dir".into(), peer.tls_dir().display().to_string()]
        } else {
            vec!["--insecure".to_string()]
        };
        let child = Command::new(bin)
            .arg("run")
            .args(&security)
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&peer.dir)
            .args(["--listen", "127.0.0.1"])
            .args(["--raft-port", &peer.raft_port.to_string()])
            .args(["--admin-port", &peer.admin_port.to_string()])
            .args(["--peers", &peers_flag])
            .args(&args)
            .args(nowhere)
            .args(metrics)
            .args(bgp)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        peer.child = Some(child);
        Ok(())
    }

    /// The samples of one metric family on a peer's `/metrics`, summed (None: not served or
    /// not found).
    pub async fn metric(&self, id: u64, name: &str) -> Option<f64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = self.peer(id).metrics_port;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        let values: Vec<f64> = body
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.peer_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill(id);
        self.spawn(id)
    }

    /// Admin endpoints of the running peers, comma-separated.
    pub fn endpoints(&mut self) -> String {
        let mut urls = Vec::new();
        for p in &mut self.peers {
            if p.is_running() {
                urls.push(p.endpoint());
            }
        }
        urls.join(",")
    }

    /// An admin client of peer `id` (with mTLS, as the admin).
    pub async fn client(&self, id: u64) -> anyhow::Result<AdminClient<Channel>> {
        let tls = self
            .tls
            .as_ref()
            .map_or(ClientTls::Insecure, |t| t.admin.clone());
        self.client_as(id, &tls).await
    }

    /// An admin client of peer `id` that shows `tls`'s certificate.
    pub async fn client_as(
        &self,
        id: u64,
        tls: &ClientTls,
    ) -> anyhow::Result<AdminClient<Channel>> {
        let ch = dial_with(
            &self.peer(id).endpoint(),
            tls,
            Duration::from_secs(1),
            Some(Duration::from_secs(30)),
        )
        .await
        .map_err(|e| anyhow!(e))?;
        Ok(AdminClient::new(ch).max_decoding_message_size(256 << 20))
    }

    pub async fn status(&self, id: u64) -> anyhow::Result<StatusReply> {
        Ok(self
            .client(id)
            .await?
            .status(StatusRequest::default())
            .await?
            .into_inner())
    }

    pub async fn services(&self, id: u64) -> anyhow::Result<Vec<Service>> {
        Ok(self
            .client(id)
            .await?
            .list_services(ListRequest::default())
            .await?
            .into_inner()
            .services)
    }

    pub async fn apply(
        &self,
        id: u64,
        manifest: &str,
    ) -> anyhow::Result<raftlb_proto::admin::ApplyReply> {
        let reply = self
            .client(id)
            .await?
            .apply(ApplyRequest {
                manifest: manifest.to_string(),
                delete: false,
                source: "test".into(),
            })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?;
        Ok(reply.into_inner())
    }

    /// The leader as seen by a running peer, once all running peers agree.
    pub async fn wait_leader(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let running: Vec<u64> = self
            .peers
            .iter_mut()
            .filter_map(|p| p.is_running().then_some(p.id))
            .collect();
        let this = &*self;
        eventually("a leader all running peers agree on", timeout, || {
            let running = running.clone();
            async move {
                let mut leader = None;
                for id in running {
                    let s = this.status(id).await?;
                    match (leader, s.leader_id) {
                        (_, None) => return Ok(None),
                        (None, Some(l)) => leader = Some(l),
                        (Some(a), Some(b)) if a != b => return Ok(None),
                        _ => {}
                    }
                }
                // The leader must be one of the running peers.
                Ok(leader.filter(|l| this.peers.iter().any(|p| p.id == *l)))
            }
        })
        .await
    }

    /// Waits until peer `id` has applied at least `index`.
    pub async fn wait_applied(
        &self,
        id: u64,
        index: u64,
        timeout: Duration,
    ) -> anyhow::Result<StatusReply> {
        eventually(
            &format!("node {id} applied {index}"),
            timeout,
            || async move {
                let s = self.status(id).await?;
                Ok((s.applied_index >= index).then_some(s))
            },
        )
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.peers {
            if let Some(mut child) = p.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
