//! BGP announce benchmark in the namespace lab (root), BIRD 2 as the judge (shared/BGP.md
//! §4b, B1). Prints figures; asserts nothing.
//!
//! For N /32s from 198.18.0.0/15, with one attribute set, the time from the start until
//! BIRD's RIB holds all N (10 ms polls of `birdc show route count`), then the time to withdraw
//! them all, for:
//! * raftlb's speaker alone (`raftlb-labd speak`: one BgpSession, no Raft), from Established;
//! * raftlb end to end: N LoadBalancer Services applied through `ctl` in batches of 1,000 to a
//!   3-peer cluster (apply, Raft, table, BGP bridge, sessions) until BIRD holds N prefixes
//!   from each of the three nodes;
//! * GoBGP 3 (Debian's gobgpd) in the same node namespace, fed by its bulk path (`gobgp mrt
//!   inject global` of a TABLE_DUMP_V2 file) and, at N <= 1,000, by a `gobgp global rib add`
//!   loop (one process and gRPC call per prefix: what scripts do).
//!
//! `raftlb-bgpbench [--sizes 1000,10000] [--runs 5] [--only speaker,e2e,gobgp]`

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use raftlb_chaos::lab::{now_us, Announcer, Lab};
use raftlb_chaos::routers::{Router, RouterKind};

const ROUTER_ASN: u32 = 64512;
const NODE_ASN: u32 = 64513;
const BASE: u32 = 0xC612_0000; // 198.18.0.0

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// (routes, networks) in BIRD's IPv4 table.
fn bird_count(router: &Router) -> anyhow::Result<(u64, u64)> {
    let text = router.cli_text(&["show", "route", "count", "table", "master4"])?;
    // "3000 of 3000 routes for 1000 networks in table master4"
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && f[1] == "of" && f[3] == "routes" {
            return Ok((f[2].parse()?, f[5].parse()?));
        }
    }
    Ok((0, 0))
}

/// Polls until BIRD holds `networks` prefixes (each with `paths` paths); the wall-clock time
/// in µs when it did.
fn until(router: &Router, networks: u64, paths: u64, within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        let (r, n) = bird_count(router)?;
        if n == networks && r == networks * paths {
            return Ok(now_us());
        }
        if Instant::now() > deadline {
            bail!("BIRD holds {r} routes for {n} networks, not {networks}x{paths}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CPU seconds (user + system) a process used so far.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Row {
    name: String,
    n: u32,
    rib_ms: Vec<f64>,
    withdraw_ms: Vec<f64>,
    note: String,
}

impl Row {
    fn print(mut self) {
        let cell = |v: &mut Vec<f64>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0} / {:.0}", pct(v, 0.5), pct(v, 0.95))
            }
        };
        let (rib, withdraw) = (cell(&mut self.rib_ms), cell(&mut self.withdraw_ms));
        println!(
            "| {} | {} | {} | {rib} | {withdraw} | {} |",
            self.name,
            self.n,
            self.rib_ms.len().max(self.withdraw_ms.len()),
            self.note
        );
    }
}

fn speaker(lab: &Lab, router: &Router, n: u32, runs: usize) -> anyhow::Result<Row> {
    let mut row = Row {
        name: "raftlb speaker".into(),
        n,
        rib_ms: vec![],
        withdraw_ms: vec![],
        note: String::new(),
    };
    for _ in 0..runs {
        let count = n.to_string();
        let mut s = lab.speaker(
            "n1",
            &[
                "--my-asn",
                &NODE_ASN.to_string(),
                "--peer-asn",
                &ROUTER_ASN.to_string(),
                "--count",
                &count,
                "--community",
                "64512:7",
            ],
        )?;
        let t1 = until(router, u64::from(n), 1, Duration::from_secs(60))?;
        let lines = s.lines();
        let t0: u64 = lines
            .iter()
            .find(|l| l.contains(" Established "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .context("no Established line")?;
        row.rib_ms.push(t1.saturating_sub(t0) as f64 / 1000.0);
        let updates = lines
            .iter()
            .rev()
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|f| f.strip_prefix("updates="))
            })
            .unwrap_or("?")
            .to_string();
        let cpu = s.pid().map_or(f64::NAN, cpu_secs);
        let w0 = now_us();
        s.command("withdraw")?;
        let w1 = until(router, 0, 1, Duration::from_secs(60))?;
        row.withdraw_ms.push((w1 - w0) as f64 / 1000.0);
        row.note = format!("{updates} UPDATEs to announce; speaker CPU {cpu:.2} s per run");
        s.command("stop benchmark done")?;
        let _ = s.wait_exit(Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(row)
}

/// A TABLE_DUMP_V2 (RFC 6396) file of `n` /32s with ORIGIN IGP, AS_PATH [asn], NEXT_HOP nh.
fn mrt(n: u32, asn: u32, nh: Ipv4Addr) -> Vec<u8> {
    let record = |subtype: u16, body: &[u8]| {
        let mut r = Vec::with_capacity(12 + body.len());
        r.extend_from_slice(&0u32.to_be_bytes());
        r.extend_from_slice(&13u16.to_be_bytes());
        r.extend_from_slice(&subtype.to_be_bytes());
        r.extend_from_slice(&(body.len() as u32).to_be_bytes());
        r.extend_from_slice(body);
        r
    };
    let mut out = Vec::new();
    // PEER_INDEX_TABLE: collector id, no view name, one peer (AS4, IPv4).
    let mut peers = Vec::new();
    peers.extend_from_slice(&nh.octets());
    peers.extend_from_slice(&0u16.to_be_bytes());
    peers.extend_from_slice(&1u16.to_be_bytes());
    peers.push(0x02);
    peers.extend_from_slice(&nh.octets());
    peers.extend_from_slice(&nh.octets());
    peers.extend_from_slice(&asn.to_be_bytes());
    out.extend(record(1, &peers));
    let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1];
    attrs.extend_from_slice(&asn.to_be_bytes());
    attrs.extend_from_slice(&[0x40, 3, 4]);
    attrs.extend_from_slice(&nh.octets());
    attrs.extend_from_slice(&[0xc0, 8, 4, 0xfc, 0, 0, 7]);
    for i in 0..n {
        let mut body = Vec::new();
        body.extend_from_slice(&i.to_be_bytes());
        body.push(32);
        body.extend_from_slice(&(BASE + i).to_be_bytes());
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        out.extend(record(2, &body));
    }
    out
}

struct Gobgp {
    ns: String,
    child: Child,
}

impl Gobgp {
    fn start(lab: &Lab, dir: &std::path::Path) -> anyhow::Result<Gobgp> {
        let node = &lab.nodes[0];
        let conf = dir.join("gobgp-speaker.toml");
        std::fs::write(
            &conf,
            format!(
                "[global.config]\n  as = {NODE_ASN}\n  router-id = \"{ip}\"\n  port = -1\n\
                 [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"10.77.0.100\"\n    peer-as = {ROUTER_ASN}\n\
                 [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n\
                 [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv4-unicast\"\n",
                ip = node.ip
            ),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns, "gobgpd", "-f"])
            .arg(&conf)
            .args([
                "-t",
                "toml",
                "-p",
                "--api-hosts=127.0.0.1:50052",
                "--pprof-disable",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Gobgp {
            ns: node.ns.clone(),
            child,
        })
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50052",
            ])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("gobgp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gobgp(
    lab: &Lab,
    router: &Router,
    n: u32,
    runs: usize,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Row>> {
    let g = Gobgp::start(lab, dir)?;
    router.wait("GoBGP's session", Duration::from_secs(30), |r| {
        Ok((!r.established()?.is_empty()).then_some(()))
    })?;
    let file = dir.join(format!("routes-{n}.mrt"));
    std::fs::write(&file, mrt(n, NODE_ASN, lab.nodes[0].ip.parse()?))?;
    let mut bulk = Row {
        name: "GoBGP mrt inject".into(),
        n,
        rib_ms: vec![],
        withdraw_ms: vec![],
        note: String::new(),
    };
    let path = file.to_string_lossy().into_owned();
    let mut got = Vec::new();
    for _ in 0..runs {
        // GoBGP 3.10's CLI ends its AddPathStream before the server has read it all: one pass
        // delivers only part of the file (and injecting the rest again loses part of that).
        // Measured: what BIRD holds once the count has not grown for a second, and when it
        // last grew.
        let t0 = now_us();
        g.cli(&["mrt", "inject", "global", &path])?;
        let (mut last, mut last_t) = (0, now_us());
        loop {
            let have = bird_count(router)?.1;
            if have != last {
                (last, last_t) = (have, now_us());
            } else if now_us() - last_t > 1_000_000 || have == u64::from(n) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        got.push(last);
        if last == u64::from(n) {
            bulk.rib_ms.push((last_t - t0) as f64 / 1000.0);
        }
        let w0 = now_us();
        g.cli(&["global", "rib", "-a", "ipv4", "del", "all"])?;
        let w1 = until(router, 0, 1, Duration::from_secs(120))?;
        bulk.withdraw_ms.push((w1 - w0) as f64 / 1000.0);
    }
    bulk.note = format!(
        "paths in BIRD after one pass: {got:?} of {n} (to-RIB time only for complete passes); withdraw: gobgp global rib -a ipv4 del all"
    );
    let mut rows = vec![bulk];
    if n <= 1000 {
        let mut naive = Row {
            name: "GoBGP rib add loop".into(),
            n,
            rib_ms: vec![],
            withdraw_ms: vec![],
            note: "one `gobgp global rib add` per prefix".into(),
        };
        let t0 = now_us();
        for i in 0..n {
            let p = format!("{}/32", Ipv4Addr::from(BASE + i));
            g.cli(&[
                "global",
                "rib",
                "-a",
                "ipv4",
                "add",
                &p,
                "origin",
                "igp",
                "community",
                "64512:7",
            ])?;
        }
        let t1 = until(router, u64::from(n), 1, Duration::from_secs(600))?;
        naive.rib_ms.push((t1 - t0) as f64 / 1000.0);
        let w0 = now_us();
        g.cli(&["global", "rib", "-a", "ipv4", "del", "all"])?;
        let w1 = until(router, 0, 1, Duration::from_secs(120))?;
        naive.withdraw_ms.push((w1 - w0) as f64 / 1000.0);
        rows.push(naive);
    }
    Ok(rows)
}

fn end_to_end(n: u32, runs: usize) -> anyhow::Result<Row> {
    let mut row = Row {
        name: "raftlb end to end (3 peers)".into(),
        n,
        rib_ms: vec![],
        withdraw_ms: vec![],
        note: "apply via ctl in batches of 1,000 -> Raft -> BGP bridge -> 3 sessions; withdraw: delete".into(),
    };
    let mut singles = Vec::new();
    // Of the time to N routes, the part until the last `ctl apply` returned.
    let mut applies = Vec::new();
    for _ in 0..runs {
        let mut lab = Lab::raftlb(3)?;
        let router = lab.router(RouterKind::Bird, ROUTER_ASN, NODE_ASN)?;
        lab.start_cluster()?;
        lab.apply(&format!(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: tor}}\n\
             spec: {{myASN: {NODE_ASN}, peerASN: {ROUTER_ASN}, peerAddress: 10.77.0.100}}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: bench}}\n\
             spec: {{addresses: [198.18.0.0/15]}}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: bench}}\n\
             spec: {{communities: [\"64512:7\"]}}\n"
        ))?;
        router.wait("three sessions", Duration::from_secs(30), |r| {
            Ok((r.established()?.len() == 3).then_some(()))
        })?;
        let batches: Vec<String> = (0..n)
            .collect::<Vec<_>>()
            .chunks(1000)
            .map(|c| {
                c.iter()
                    .map(|i| {
                        format!(
                            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bench}}\n\
                             spec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n---\n"
                        )
                    })
                    .collect()
            })
            .collect();
        let t0 = now_us();
        for b in &batches {
            lab.apply(b)?;
        }
        let applied = now_us();
        let t1 = until(&router, u64::from(n), 3, Duration::from_secs(120))?;
        row.rib_ms.push((t1 - t0) as f64 / 1000.0);
        applies.push((applied - t0) as f64 / 1000.0);
        let w0 = now_us();
        for b in &batches {
            lab.delete(b)?;
        }
        let w1 = until(&router, 0, 3, Duration::from_secs(120))?;
        row.withdraw_ms.push((w1 - w0) as f64 / 1000.0);
        // One Service at a time: apply through ctl until BIRD has its three paths.
        for i in 0..SINGLES {
            let t0 = now_us();
            lab.apply(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: one{i}, namespace: bench}}\n\
                 spec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n"
            ))?;
            let t1 = until(&router, u64::from(i) + 1, 3, Duration::from_secs(30))?;
            singles.push((t1 - t0) as f64 / 1000.0);
        }
    }
    let (s50, s95) = (pct(&mut singles, 0.5), pct(&mut singles, 0.95));
    let a50 = pct(&mut applies, 0.5);
    row.note = format!(
        "{}; of which the applies returned after p50 {a50:.0} ms; one more Service to its 3 paths in BIRD ({} samples): p50 {s50:.0} ms, p95 {s95:.0} ms",
        row.note,
        singles.len()
    );
    Ok(row)
}

/// Single Services timed per end-to-end run.
const SINGLES: u32 = 20;

fn main() -> anyhow::Result<()> {
    let sizes: Vec<u32> = arg("--sizes")
        .unwrap_or_else(|| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(5);
    let only = arg("--only").unwrap_or_else(|| "speaker,e2e,gobgp".into());
    let dir = tempfile::tempdir()?;
    println!("BGP announce: N /32s until BIRD 2.0.12 holds them all (10 ms polls), runs per cell: {runs}");
    println!("| speaker | N | runs | to RIB ms p50 / p95 | withdraw all ms p50 / p95 | notes |");
    println!("|---|---|---|---|---|---|");
    for &n in &sizes {
        if only.contains("speaker") || only.contains("gobgp") {
            let lab = Lab::build(
                1,
                Announcer::Raftlb {
                    profile: "default".into(),
                },
            )?;
            let router = lab.router(RouterKind::Bird, ROUTER_ASN, NODE_ASN)?;
            if only.contains("speaker") {
                speaker(&lab, &router, n, runs)?.print();
            }
            if only.contains("gobgp") {
                for row in gobgp(&lab, &router, n, runs, dir.path())? {
                    row.print();
                }
            }
        }
        if only.contains("e2e") {
            end_to_end(n, runs.min(3))?.print();
        }
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
