//! raftlb's benchmark. Prints figures; asserts nothing about speed.
//!
//! Rows: commit latency at concurrency 1 and throughput at concurrency 16 (raftlb next to
//! etcd, both 3 members on loopback with fsync on); 10,000 Services applied in batches;
//! allocator cost per allocation by pool size and fill; restart-to-ready of a peer holding
//! 100,000 allocations; RSS of a peer holding 10,000 Services; the scale table: idle CPU, the
//! cost of one more allocation and a follower's failover while holding 1,000 / 10,000 / 100,000
//! VIPs (`RAFTLB_BENCH_SCALE` picks the sizes, `RAFTLB_BENCH_ONLY=scale` runs only that,
//! `RAFTLB_BENCH_ONLY=commit` only the etcd comparison).
//!
//! Run: `bash chaos/bench.sh` (installs etcd-server and protobuf-compiler, builds in release).
//! Without the `etcd` feature the etcd rows say so instead of printing figures.

use std::time::{Duration, Instant};

use raftlb_chaos::Cluster;
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::ApplyRequest;
use raftlb_raft_store::table::pool::{to_u128, AddressRange, Family, PoolState};
use tonic::transport::Channel;

const LATENCY_WRITES: usize = 500;
const THROUGHPUT_WRITES: usize = 4000;
const CONCURRENCY: usize = 16;

fn service_yaml(ns: &str, name: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  type: LoadBalancer\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Figures {
    p50: Duration,
    p99: Duration,
    throughput: f64,
}

async fn apply(
    client: &mut AdminClient<Channel>,
    manifest: String,
) -> anyhow::Result<raftlb_proto::admin::ApplyReply> {
    Ok(client
        .apply(ApplyRequest {
            manifest,
            delete: false,
            source: "bench".into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner())
}

async fn raftlb_commit_figures(cluster: &mut Cluster) -> anyhow::Result<Figures> {
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let endpoint = cluster.peer(leader).endpoint();
    // With mTLS, the admin's certificate; otherwise plaintext.
    let tls = cluster
        .tls
        .as_ref()
        .map_or(raftlb_node::tls::net::ClientTls::Insecure, |t| {
            t.admin.clone()
        });
    let mut client = raftlb_node::ctl::connect(&endpoint, &tls).await?;
    apply(&mut client, "apiVersion: raftlb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: bench}\nspec: {addresses: [198.18.0.0/15]}\n".into()).await?;
    let mut lat = Vec::with_capacity(LATENCY_WRITES);
    for i in 0..LATENCY_WRITES {
        let m = service_yaml("lat", &format!("s{i}"));
        let t = Instant::now();
        let r = apply(&mut client, m).await?;
        lat.push(t.elapsed());
        anyhow::ensure!(
            r.services[0].state == "Allocated",
            "not allocated: {:?}",
            r.services[0]
        );
    }
    lat.sort();
    let throughput = throughput(|w| {
        let (endpoint, tls) = (endpoint.clone(), tls.clone());
        async move {
            let mut client = raftlb_node::ctl::connect(&endpoint, &tls).await?;
            for i in (w..THROUGHPUT_WRITES).step_by(CONCURRENCY) {
                apply(&mut client, service_yaml("tput", &format!("s{i}"))).await?;
            }
            anyhow::Ok(())
        }
    })
    .await?;
    Ok(Figures::new(&lat, throughput))
}

/// Runs `writer(w)` for w in 0..CONCURRENCY at once; each writes its share of
/// THROUGHPUT_WRITES. Returns writes per second.
async fn throughput<F, Fut>(writer: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY).map(|w| tokio::spawn(writer(w))).collect();
    for t in tasks {
        t.await??;
    }
    Ok(THROUGHPUT_WRITES as f64 / start.elapsed().as_secs_f64())
}

impl Figures {
    fn new(sorted_latencies: &[Duration], throughput: f64) -> Figures {
        Figures {
            p50: percentile(sorted_latencies, 0.5),
            p99: percentile(sorted_latencies, 0.99),
            throughput,
        }
    }

    fn row(&self, system: &str) {
        println!(
            "{:<10} {:>12} {:>12} {:>12.0} op/s",
            system,
            ms(self.p50),
            ms(self.p99),
            self.throughput
        );
    }

    /// This run's figures divided by `other`'s.
    fn ratio(&self, label: &str, other: &Figures) {
        println!(
            "{:<10} {:>12.2} {:>12.2} {:>16.2}",
            label,
            self.p50.as_secs_f64() / other.p50.as_secs_f64(),
            self.p99.as_secs_f64() / other.p99.as_secs_f64(),
            self.throughput / other.throughput
        );
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use anyhow::Context;
    use std::process::{Child, Command, Stdio};

    /// The members, and their data directory (removed when this drops).
    pub struct Etcd(Vec<Child>, #[allow(dead_code)] tempfile::TempDir);

    impl Drop for Etcd {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub async fn figures() -> anyhow::Result<Figures> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| (raftlb_chaos::free_port(), raftlb_chaos::free_port()))
            .collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut children = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("e{i}.log")))?;
            children.push(
                Command::new("etcd")
                    .args(["--name", &format!("e{i}")])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("e{i}")))
                    .args([
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                    ])
                    .args([
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{client}"),
                    ])
                    .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                    .args([
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{peer}"),
                    ])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args(["--initial-cluster-state", "new"])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("starting etcd (Debian package etcd-server)")?,
            );
        }
        let _guard = Etcd(children, dir);
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect();
        let value = service_yaml("etcd", "value-of-similar-size");
        let mut client = raftlb_chaos::eventually("etcd answers", Duration::from_secs(30), || {
            let endpoints = endpoints.clone();
            async move {
                let mut c = etcd_client::Client::connect(endpoints, None).await?;
                c.put("warmup", "x", None).await?;
                Ok(Some(c))
            }
        })
        .await?;
        let mut lat = Vec::with_capacity(LATENCY_WRITES);
        for i in 0..LATENCY_WRITES {
            let t = Instant::now();
            client.put(format!("lat/{i}"), value.clone(), None).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        let throughput = throughput(|w| {
            let (endpoints, value) = (endpoints.clone(), value.clone());
            async move {
                let mut c = etcd_client::Client::connect(endpoints, None).await?;
                for i in (w..THROUGHPUT_WRITES).step_by(CONCURRENCY) {
                    c.put(format!("tput/{i}"), value.clone(), None).await?;
                }
                anyhow::Ok(())
            }
        })
        .await?;
        Ok(Figures::new(&lat, throughput))
    }
}

/// Cost of one allocation in the free-range index (lowest free address, then take it) for a
/// pool `fill` full, with 1% of the used addresses freed again at scattered places so the
/// index is fragmented the way deletions leave it.
fn allocator_cost(cidr: &str, fill: f64) -> (f64, usize) {
    let range = AddressRange::parse(cidr).expect("cidr");
    let mut pool = PoolState::new("bench", &[range], false);
    let size = range.size();
    let used = ((size as f64) * fill) as u128;
    let free = &mut pool.ranges[0].1;
    free.take_span(range.start, range.start + used - 1);
    // Scatter holes: 1% of the used part, at most 20,000, spread evenly.
    let holes = ((used / 100) as u64).clamp(1, 20_000) as u128;
    let step = (used / holes).max(1);
    for h in 0..holes {
        free.give_back(range.start + h * step);
    }
    let intervals = free.interval_count();
    let family = range.family;
    // As many allocations as there are free addresses, at most 20,000.
    let n = pool.ranges[0].1.free_count().min(20_000) as u32;
    let t = Instant::now();
    let mut taken = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let ip = pool.lowest_free(family).expect("free address");
        pool.take(&ip);
        taken.push(ip);
    }
    let per = t.elapsed().as_secs_f64() * 1e9 / f64::from(n);
    std::hint::black_box((&taken, to_u128(&taken[0]), Family::of(&taken[0])));
    (per, intervals)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

async fn batched_services(
    cluster: &mut Cluster,
    total: usize,
    batch: usize,
    ns: &str,
    offset: usize,
) -> anyhow::Result<Duration> {
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let mut client = raftlb_node::ctl::connect(
        &cluster.peer(leader).endpoint(),
        &raftlb_node::tls::net::ClientTls::Auto,
    )
    .await?;
    let start = Instant::now();
    for b in (0..total).step_by(batch) {
        let docs: Vec<String> = (b..(b + batch).min(total))
            .map(|i| service_yaml(ns, &format!("s{}", i + offset)))
            .collect();
        let r = apply(&mut client, docs.join("---\n")).await?;
        anyhow::ensure!(
            r.services.iter().all(|s| s.state == "Allocated"),
            "batch {b}: not all allocated"
        );
    }
    Ok(start.elapsed())
}

/// CPU time (user + system) a process has used so far, in seconds (`/proc/PID/stat` fields 14
/// and 15, in clock ticks).
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) may hold spaces; the fields after its ')' start at field 3.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second)
}

/// `getconf CLK_TCK` (100 on Linux unless told otherwise).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// VIPs each node owns, by Raft id, as the leader sees it.
async fn owned(cluster: &Cluster, leader: u64) -> anyhow::Result<Vec<(u64, u64, bool)>> {
    let s = cluster.status(leader).await?;
    Ok(s.nodes
        .iter()
        .map(|n| (n.raft_id, n.vips, n.live))
        .collect())
}

/// One row of the scale table: a 3-peer cluster holding `n` owned VIPs (one Service each, an
/// L2Advertisement for every pool, no interfaces): idle CPU over 10 s, the cost of one more
/// allocation commit, and the failover of a follower owning about a third of them.
async fn scale_row(n: usize, ticks: f64) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let mut client = raftlb_node::ctl::connect(
        &cluster.peer(leader).endpoint(),
        &raftlb_node::tls::net::ClientTls::Auto,
    )
    .await?;
    apply(&mut client, "apiVersion: raftlb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: big}\nspec: {addresses: [10.0.0.0/8]}\n---\napiVersion: raftlb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: all}\n".into()).await?;
    let t_apply = batched_services(&mut cluster, n, 1000, "scale", 0).await?;
    let t_owned = Instant::now();
    loop {
        let o = owned(&cluster, leader).await?;
        if o.iter().map(|(_, v, _)| *v).sum::<u64>() == n as u64 {
            break;
        }
        anyhow::ensure!(
            t_owned.elapsed() < Duration::from_secs(120),
            "{n}: not every VIP owned after 120 s: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pids: Vec<(u64, u32)> = cluster
        .peers
        .iter()
        .filter_map(|p| Some((p.id, p.pid()?)))
        .collect();
    let before: Vec<f64> = pids
        .iter()
        .map(|(_, pid)| cpu_seconds(*pid, ticks).unwrap_or(0.0))
        .collect();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let mut leader_cpu = 0.0;
    let mut follower_cpu = Vec::new();
    for ((id, pid), b) in pids.iter().zip(&before) {
        let pct = (cpu_seconds(*pid, ticks).unwrap_or(0.0) - b) / window.as_secs_f64() * 100.0;
        if *id == leader {
            leader_cpu = pct;
        } else {
            follower_cpu.push(pct);
        }
    }
    let rss_mib = pids
        .iter()
        .filter_map(|(_, pid)| rss_kib(*pid))
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    let plans_before = planner(&cluster, leader).await;
    let mut lat = Vec::new();
    for i in 0..50 {
        let t = Instant::now();
        apply(&mut client, service_yaml("scale-more", &format!("m{i}"))).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let plans_after = planner(&cluster, leader).await;
    let runs = (plans_after.0 - plans_before.0).max(1.0);
    let plan_ms = (plans_after.1 - plans_before.1) / runs * 1e3;
    let plan_vips = (plans_after.2 - plans_before.2) / runs;
    let total = (n + 50) as u64;
    let live_ids: Vec<u64> = cluster.peers.iter().map(|p| p.id).collect();
    announced(&cluster, &live_ids, total, Duration::from_secs(60)).await?;
    // Failover: kill the follower owning the most VIPs; every VIP gets a live owner again.
    let o = owned(&cluster, leader).await?;
    let (victim, victim_vips, _) = o
        .iter()
        .filter(|(id, _, _)| *id != leader)
        .max_by_key(|(_, v, _)| *v)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    cluster.kill(victim);
    let t_kill = Instant::now();
    let moved = loop {
        let o = owned(&cluster, leader).await?;
        let live: u64 = o
            .iter()
            .filter(|(id, _, _)| *id != victim)
            .map(|(_, v, _)| *v)
            .sum();
        if live == total {
            break t_kill.elapsed();
        }
        anyhow::ensure!(
            t_kill.elapsed() < Duration::from_secs(60),
            "{n}: VIPs of node {victim} not moved after 60 s: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let survivors: Vec<u64> = live_ids.into_iter().filter(|id| *id != victim).collect();
    announced(&cluster, &survivors, total, Duration::from_secs(60)).await?;
    let all_announced = t_kill.elapsed();
    println!(
        "{:>8} {:>12} {:>9.1}% {:>14} {:>8.0} MiB {:>10} {:>10} {:>9.3} ms {:>9.1} {:>8} {:>12} {:>12}",
        n,
        ms(t_apply),
        leader_cpu,
        follower_cpu
            .iter()
            .map(|c| format!("{c:.1}%"))
            .collect::<Vec<_>>()
            .join(" "),
        rss_mib,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        plan_ms,
        plan_vips,
        victim_vips,
        ms(moved),
        ms(all_announced),
    );
    Ok(())
}

/// The leader's planner counters: (runs, seconds, VIPs examined).
async fn planner(cluster: &Cluster, leader: u64) -> (f64, f64, f64) {
    let m = |name| cluster.metric(leader, name);
    (
        m("raftlb_planner_runs_total").await.unwrap_or(0.0),
        m("raftlb_planner_seconds_total").await.unwrap_or(0.0),
        m("raftlb_planner_vips_examined_total").await.unwrap_or(0.0),
    )
}

/// Waits until the announcers of `peers` hold `total` VIPs between them.
async fn announced(
    cluster: &Cluster,
    peers: &[u64],
    total: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let mut held = 0.0;
        for id in peers {
            held += cluster
                .metric(*id, "raftlb_announcer_vips")
                .await
                .unwrap_or(0.0);
        }
        if held as u64 == total {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "announcers of {peers:?} hold {held} VIPs, not {total}, after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scale table, for `RAFTLB_BENCH_SCALE` VIP counts (default 1000,10000,100000).
async fn scale_table() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("RAFTLB_BENCH_SCALE")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let ticks = clock_ticks();
    println!("## scale: 3 peers holding N owned VIPs (one Service each); idle CPU over 10 s; one more allocation; a follower owning about a third killed");
    println!(
        "{:>8} {:>12} {:>10} {:>14} {:>12} {:>10} {:>10} {:>12} {:>9} {:>8} {:>12} {:>12}",
        "VIPs",
        "apply (1k)",
        "leader",
        "followers",
        "max RSS",
        "alloc p50",
        "alloc p99",
        "plan",
        "examined",
        "victim",
        "all moved",
        "announced"
    );
    for n in sizes {
        scale_row(n, ticks).await?;
    }
    println!("(apply: N Services in batches of 1,000 through the admin API; CPU in % of one core over 10 s idle; max RSS: the largest peer after that; alloc: one Service per request at concurrency 1; plan: the leader's mean planner pass during those 50 allocations, and the VIPs it examined per pass; all moved: kill -9 of the follower until the leader's table gives every VIP a live owner; announced: until the survivors' announcers hold every VIP)");
    println!();
    Ok(())
}

/// Commit latency at concurrency 1 and throughput at concurrency 16, raftlb next to etcd, and
/// raftlb with mutual TLS on both ports next to the same run in plaintext.
async fn commit_table() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, &[]).await?;
    let ours = raftlb_commit_figures(&mut cluster).await?;
    drop(cluster);
    let mut cluster = Cluster::start_secure(3, &[]).await?;
    let secure = raftlb_commit_figures(&mut cluster).await?;
    drop(cluster);
    println!("## commit latency (one Service per request, concurrency 1, {LATENCY_WRITES} writes) and throughput (concurrency {CONCURRENCY}, {THROUGHPUT_WRITES} writes)");
    println!(
        "{:<10} {:>12} {:>12} {:>16}",
        "system", "p50", "p99", "throughput"
    );
    ours.row("raftlb");
    secure.row("raftlb+TLS");
    secure.ratio("TLS/plain", &ours);
    #[cfg(feature = "etcd")]
    {
        match etcd::figures().await {
            Ok(e) => {
                e.row("etcd 3.4");
                ours.ratio("raftlb/etcd", &e);
            }
            Err(e) => println!("etcd: not measured ({e:#})"),
        }
    }
    #[cfg(not(feature = "etcd"))]
    println!("etcd: not measured (build with --features etcd; chaos/bench.sh does)");
    println!("(raftlb's figure includes YAML parsing, validation and allocation; etcd's is a plain put of a value of the same size; raftlb+TLS: mutual TLS 1.3 on the Raft and admin ports, etcd in plaintext)");
    println!();

    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("raftlb benchmark — 3 peers on 127.0.0.1, fsync on every append (sled flush)");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    // RAFTLB_BENCH_ONLY=scale: just the scale table (the rest takes minutes and needs etcd).
    let only = std::env::var("RAFTLB_BENCH_ONLY").unwrap_or_default();
    if only == "scale" {
        return scale_table().await;
    }

    commit_table().await?;
    if only == "commit" {
        return Ok(());
    }

    // 2. 10,000 Services in batches; RSS at 10,000; then 100,000 and restart-to-ready.
    let mut cluster = Cluster::start(3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let mut client = raftlb_node::ctl::connect(
        &cluster.peer(leader).endpoint(),
        &raftlb_node::tls::net::ClientTls::Auto,
    )
    .await?;
    apply(&mut client, "apiVersion: raftlb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {name: big}\nspec: {addresses: [10.0.0.0/8]}\n".into()).await?;
    let t10k = batched_services(&mut cluster, 10_000, 500, "bulk", 0).await?;
    println!("## bulk");
    println!(
        "10,000 Services applied in 20 batches of 500: {} ({:.0} Services/s)",
        ms(t10k),
        10_000.0 / t10k.as_secs_f64()
    );
    let rss: Vec<String> = cluster
        .peers
        .iter()
        .map(|p| {
            format!(
                "node {}: {:.1} MB",
                p.id,
                p.pid().and_then(rss_kib).unwrap_or(0) as f64 / 1024.0
            )
        })
        .collect();
    println!("RSS holding 10,000 Services: {}", rss.join(", "));
    let t90k = batched_services(&mut cluster, 90_000, 1000, "bulk", 10_000).await?;
    println!("90,000 more in batches of 1,000: {}", ms(t90k));
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let follower = cluster.others(leader)[0];
    let target = cluster.status(leader).await?.applied_index;
    cluster.kill(follower);
    let t = Instant::now();
    cluster.restart(follower)?;
    let s = cluster
        .wait_applied(follower, target, Duration::from_secs(60))
        .await?;
    let ready = t.elapsed();
    println!(
        "restart-to-ready of a peer holding 100,000 allocations (SIGKILL, restart, until caught up): {} (applied {}, snapshot at {})",
        ms(ready),
        s.applied_index,
        s.snapshot_index.map_or("-".into(), |i| i.to_string())
    );
    let pid = cluster.peer(follower).pid().unwrap_or(0);
    println!(
        "RSS of that peer holding 100,000 Services: {:.1} MB",
        rss_kib(pid).unwrap_or(0) as f64 / 1024.0
    );
    drop(cluster);
    println!();

    scale_table().await?;

    // 3. Allocator cost.
    println!("## allocator: cost of one allocation (lowest free + take) in the free-range index, up to 20,000 allocations each");
    println!(
        "{:<16} {:>18} {:>18} {:>18}",
        "pool", "10% full", "50% full", "99% full"
    );
    let mut base = 0.0;
    for cidr in ["10.0.0.0/24", "10.0.0.0/16", "10.0.0.0/8", "fd00::/64"] {
        let mut cells = Vec::new();
        for fill in [0.10, 0.50, 0.99] {
            // A /24 at 99% has 2 free addresses: allocate only what exists.
            let (per, intervals) = if cidr.ends_with("/24") {
                let range = AddressRange::parse(cidr).map_err(anyhow::Error::msg)?;
                let mut pool = PoolState::new("b", &[range], false);
                let used = (256.0 * fill) as u128;
                pool.ranges[0]
                    .1
                    .take_span(range.start, range.start + used - 1);
                let n = 256 - used;
                let t = Instant::now();
                for _ in 0..n {
                    let ip = pool.lowest_free(Family::V4).expect("free");
                    pool.take(&ip);
                }
                (t.elapsed().as_secs_f64() * 1e9 / n as f64, 1)
            } else {
                allocator_cost(cidr, fill)
            };
            if cidr.ends_with("/24") && fill == 0.5 {
                base = per;
            }
            cells.push(format!("{per:>7.0} ns ({intervals} iv)"));
        }
        println!(
            "{:<16} {:>18} {:>18} {:>18}",
            cidr, cells[0], cells[1], cells[2]
        );
    }
    println!("(iv = free intervals in the index; /24 at 50% = {base:.0} ns is the reference for the 2x target)");
    Ok(())
}
