//! `raftlb up`: the main job. Starts N peers as child processes on 127.0.0.1, forms the
//! cluster, applies the given manifests, prints where to look, and stops its children on
//! Ctrl-C or SIGTERM. Run again with the same data dir and the same cluster comes back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use raftlb_proto::admin::{ApplyRequest, StatusRequest};

use crate::ctl;
use crate::tls::material::Files;
use crate::tls::net::{remember, ClientTls};
use crate::tls::{Tls, DEFAULT_CLUSTER};

pub struct UpConfig {
    pub nodes: u64,
    pub data_dir: PathBuf,
    pub files: Vec<(String, String)>,
    pub base_port: u16,
    pub profile: String,
    /// Plaintext peers instead of the mTLS `up` sets up by default.
    pub insecure: bool,
}

/// Raft and admin ports of peer `id` (1-based).
pub fn ports(base: u16, id: u64) -> (u16, u16) {
    let raft = base + 2 * (id as u16 - 1);
    (raft, raft + 1)
}

/// Children are killed (by PID, ours only) when this guard drops, also on error paths.
struct Children(Vec<(u64, Child)>);

impl Children {
    fn stop(&mut self) {
        for (_, child) in &self.0 {
            // SIGTERM first: a peer drains and closes its store.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (id, child) in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!("raftlb: node {id} did not stop in 5s; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CA and the operator's certificate: `DATA/tls`; node N's: `DATA/node-N/tls`.
fn node_tls_dir(data: &Path, id: u64) -> PathBuf {
    data.join(format!("node-{id}/tls"))
}

/// Makes what is missing of a CA, one certificate per node (for 127.0.0.1 and localhost)
/// and an admin client certificate, all under the data dir; a second `up` reuses them.
fn mint_certificates(cfg: &UpConfig) -> anyhow::Result<PathBuf> {
    use crate::tls::mint::Validity;
    use crate::tls::store::{mint_cluster, NodeFiles};
    let dir = cfg.data_dir.join("tls");
    let nodes: Vec<NodeFiles> = (1..=cfg.nodes)
        .map(|id| NodeFiles {
            id,
            dir: node_tls_dir(&cfg.data_dir, id),
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
        })
        .collect();
    mint_cluster(
        &dir,
        "raftlb up",
        crate::tls::DEFAULT_CLUSTER,
        (Validity::days(3650), Validity::days(365)),
        &nodes,
    )
    .map_err(|e| anyhow::anyhow!("certificates: {e}"))?;
    Ok(dir)
}

fn spawn_peer(exe: &Path, cfg: &UpConfig, id: u64, peers: &str) -> anyhow::Result<Child> {
    let dir = cfg.data_dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log_path = dir.join("raftlb.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let (raft_port, admin_port) = ports(cfg.base_port, id);
    let mut cmd = Command::new(exe);
    if cfg.insecure {
        cmd.arg("run").arg("--insecure");
    } else {
        cmd.arg("run")
            .arg("--tls-dir")
            .arg(node_tls_dir(&cfg.data_dir, id));
    }
    cmd.args(["--id", &id.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1"])
        .args(["--raft-port", &raft_port.to_string()])
        .args(["--admin-port", &admin_port.to_string()])
        .args(["--peers", peers])
        .args(["--profile", &cfg.profile])
        // A local demo on 127.0.0.1: VIPs are owned in the table, never answered on the
        // host's own network.
        .args(["--interfaces", "none"])
        // Every peer shares 127.0.0.1: a BGP listener would take the others' connections.
        .args(["--bgp-port", "0"])
        .args(["--exit-with-parent", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start node {id}"))
}

pub async fn up(cfg: UpConfig) -> anyhow::Result<()> {
    if cfg.nodes == 0 || cfg.nodes > 9 {
        bail!("--nodes: {} is outside 1..9", cfg.nodes);
    }
    let exe = std::env::current_exe().context("cannot find the raftlb binary")?;
    let peers: Vec<String> = (1..=cfg.nodes)
        .map(|id| format!("{id}@127.0.0.1:{}", ports(cfg.base_port, id).0))
        .collect();
    let peers = peers.join(",");
    let scheme = if cfg.insecure { "http" } else { "https" };
    let endpoints: Vec<String> = (1..=cfg.nodes)
        .map(|id| format!("{scheme}://127.0.0.1:{}", ports(cfg.base_port, id).1))
        .collect();
    let endpoints = endpoints.join(",");
    // `ctl` finds the admin certificate for these endpoints without flags.
    let tls = if cfg.insecure {
        ClientTls::Insecure
    } else {
        let dir = mint_certificates(&cfg)?;
        for id in 1..=cfg.nodes {
            let authority = format!("127.0.0.1:{}", ports(cfg.base_port, id).1);
            if let Err(e) = remember(&authority, &dir) {
                eprintln!("raftlb: cannot note the certificates for {authority}: {e}; give ctl --tls-dir {}", dir.display());
            }
        }
        let files = Files::client_in(&dir, Some("admin")).map_err(|e| anyhow::anyhow!(e))?;
        ClientTls::Given(Tls::load(files, DEFAULT_CLUSTER).map_err(|e| anyhow::anyhow!(e))?)
    };

    let mut children = Children(Vec::new());
    for id in 1..=cfg.nodes {
        children.0.push((id, spawn_peer(&exe, &cfg, id, &peers)?));
    }

    // Wait for a leader.
    let started = Instant::now();
    let leader = loop {
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "no leader after 30s; see the logs under {}",
                cfg.data_dir.display()
            );
        }
        for (id, child) in &mut children.0 {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "node {id} exited ({status}); see {}",
                    cfg.data_dir.join(format!("node-{id}/raftlb.log")).display()
                );
            }
        }
        if let Ok(mut client) = ctl::connect(&endpoints, &tls).await {
            if let Ok(s) = client.status(StatusRequest::default()).await {
                let s = s.into_inner();
                if let Some(l) = s.leader_id {
                    break (l, s.term);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut client = ctl::connect(&endpoints, &tls).await?;
    for (name, text) in &cfg.files {
        let reply = client
            .apply(ApplyRequest {
                manifest: text.clone(),
                delete: false,
                source: name.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        let allocated = reply
            .services
            .iter()
            .filter(|s| s.state == "Allocated")
            .count();
        println!(
            "applied {name}: {} objects, {} of {} services allocated",
            reply.changes.len(),
            allocated,
            reply.services.len()
        );
    }

    // Every peer registered (so its VIPs can be placed, and `move`/`drain` know it) before
    // the cluster is reported up.
    let registered_by = Instant::now() + Duration::from_secs(10);
    loop {
        let registered = match client.status(StatusRequest::default()).await {
            Ok(s) => s.into_inner().nodes.len() as u64,
            Err(_) => 0,
        };
        if registered >= cfg.nodes {
            break;
        }
        if Instant::now() > registered_by {
            eprintln!(
                "raftlb: {registered} of {} peers registered after 10 s; see the logs",
                cfg.nodes
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!(
        "raftlb: {} peers up on 127.0.0.1 (leader: node {}, term {}), data in {}",
        cfg.nodes,
        leader.0,
        leader.1,
        cfg.data_dir.display()
    );
    println!("admin endpoints: {endpoints}");
    println!("logs: {}/node-N/raftlb.log", cfg.data_dir.display());
    if cfg.insecure {
        println!("plaintext (--insecure): anyone who reaches these ports can change the table");
    } else {
        println!(
            "mutual TLS: CA and admin certificate in {0}/tls, each node's in {0}/node-N/tls",
            cfg.data_dir.display()
        );
    }
    println!("try:");
    let ctl = format!("{} ctl --endpoint {endpoints}", exe.display());
    for cmd in [
        "status",
        "get pools",
        "get services",
        "get vips",
        "get events",
    ] {
        println!("  {ctl} {cmd}");
    }
    println!("Ctrl-C stops the cluster; `raftlb up` with the same --data-dir brings it back.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut watch = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = watch.tick() => {
                for (id, child) in &mut children.0 {
                    if let Ok(Some(status)) = child.try_wait() {
                        eprintln!("raftlb: node {id} exited ({status})");
                    }
                }
            }
        }
    }
    println!("stopping {} peers", cfg.nodes);
    children.stop();
    Ok(())
}
