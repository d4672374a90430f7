//! BGP failure benchmark in the namespace lab (root), BIRD 2 as the router with its routes in
//! the client's kernel (shared/BGP.md §4b, B2). Prints figures; asserts nothing.
//!
//! Per fault on node n1 of three, a fresh lab each run, a TCP probe every 10 ms from the client
//! through the router's ECMP route:
//! * `kill9`: SIGKILL of n1's raftlb (its kernel closes the session);
//! * `bfd`: n1 cut off silently at the bridge (no FIN), BFD 100 ms x 3;
//! * `hold9`, `hold3`: the same cut without BFD, hold time 9 s and 3 s;
//! * `drain`: `ctl drain n1` (GRACEFUL_SHUTDOWN, then withdraw after 5 s);
//! * `gr`: SIGKILL and restart of n1 with graceful restart (the path must stay).
//!
//! For each: time from the fault until n1's path is gone at BIRD and until the client's
//! kernel route no longer names n1 (both polled every 10 ms, side by side; for `drain` the
//! route changes when the marked path leaves the ECMP set, the path goes after the wait; for
//! `gr`: until BIRD's graceful restart is done), and the probes that failed.
//!
//! `raftlb-bgpfail [--runs 5] [--kinds kill9,bfd,hold9,hold3,drain,gr]`

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::{Duration, Instant};

use raftlb_chaos::lab::{Lab, VIP4};
use raftlb_chaos::routers::RouterKind;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn config(hold: u32, bfd: bool, gr: bool) -> String {
    let profile = if bfd {
        "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: fast}\n\
         spec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}\n---\n"
    } else {
        ""
    };
    format!(
        "{profile}apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: tor}}\n\
         spec: {{myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, holdTime: {hold}s{}{}}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab}}\n\
         spec: {{addresses: [{VIP4}/32]}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: lab}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
         spec: {{type: LoadBalancer, ports: [{{port: 8080}}]}}\n",
        if bfd { ", bfdProfile: fast" } else { "" },
        if gr { ", enableGracefulRestart: true" } else { "" },
    )
}

/// Polls both checks every 10 ms for up to `within`; the time each first held, from `t0`.
fn poll2(
    t0: Instant,
    within: Duration,
    mut a: impl FnMut() -> anyhow::Result<bool>,
    mut b: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<(Option<Duration>, Option<Duration>)> {
    let (mut ta, mut tb) = (None, None);
    while t0.elapsed() < within && (ta.is_none() || tb.is_none()) {
        if ta.is_none() && a()? {
            ta = Some(t0.elapsed());
        }
        if tb.is_none() && b()? {
            tb = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((ta, tb))
}

struct Sample {
    path_ms: Option<f64>,
    route_ms: Option<f64>,
    lost: usize,
}

fn one(kind: &str) -> anyhow::Result<Sample> {
    let mut lab = Lab::raftlb(3)?;
    let (hold, bfd, gr) = match kind {
        "bfd" => (9, true, false),
        "hold3" => (3, false, false),
        "gr" => (9, false, true),
        _ => (9, false, false),
    };
    let router = lab.start_router_with(RouterKind::Bird, 64512, 64513, |c| {
        c.fib = true;
        c.graceful_restart = gr;
        c.bfd = bfd.then_some((100, 100, 3));
    })?;
    lab.start_cluster()?;
    lab.apply(&config(hold, bfd, gr))?;
    let all: BTreeSet<String> = lab.nodes.iter().map(|n| n.ip.clone()).collect();
    router.wait("three paths", Duration::from_secs(30), |r| {
        Ok((r.next_hops(&format!("{VIP4}/32"))? == all).then_some(()))
    })?;
    lab.wait_client_ecmp(VIP4, Duration::from_secs(30))?;
    let n1 = lab.nodes[0].ip.clone();
    let probe_ms = if kind == "hold9" { 14_000 } else { 9_000 };
    let probe = lab.probe(VIP4, 10, probe_ms)?;
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    match kind {
        "kill9" | "gr" => lab.kill("n1"),
        "drain" => {
            lab.ctl(&["drain", "n1"])?;
        }
        _ => lab.cut_off("n1")?,
    }
    let within = Duration::from_secs(if kind == "hold9" { 12 } else { 8 });
    let (path, route) = if kind == "gr" {
        std::thread::sleep(Duration::from_secs(1));
        lab.start("n1")?;
        let (done, _) = poll2(
            t0,
            within,
            || Ok(router.log().contains("Neighbor graceful restart done")),
            || Ok(true),
        )?;
        (None, done)
    } else {
        poll2(
            t0,
            within,
            || Ok(!router.next_hops(&format!("{VIP4}/32"))?.contains(&n1)),
            || Ok(!lab.client_route(VIP4)?.contains(&n1)),
        )?
    };
    let lines = probe.finish()?;
    let lost = lines.iter().filter(|l| l.contains(" fail")).count();
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    Ok(Sample {
        path_ms: ms(path),
        route_ms: ms(route),
        lost,
    })
}

fn main() -> anyhow::Result<()> {
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(5);
    let kinds = arg("--kinds").unwrap_or_else(|| "kill9,bfd,hold9,hold3,drain,gr".into());
    println!("BGP failover: fault on one of three nodes, BIRD 2 with ECMP in the client's kernel, TCP probe every 10 ms; runs per row: {runs}");
    println!("| fault | runs | path gone at BIRD ms p50 / p95 | client route changed ms p50 / p95 | lost probes per run (max) |");
    println!("|---|---|---|---|---|");
    for kind in kinds.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let (mut path, mut route, mut lost) = (Vec::new(), Vec::new(), Vec::new());
        let mut misses = 0;
        for _ in 0..runs {
            let s = one(kind)?;
            match s.path_ms {
                Some(v) => path.push(v),
                None if kind != "gr" => misses += 1,
                None => {}
            }
            if let Some(v) = s.route_ms {
                route.push(v);
            }
            lost.push(s.lost);
        }
        let cell = |v: &mut Vec<f64>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0} / {:.0}", pct(v, 0.5), pct(v, 0.95))
            }
        };
        let label = match kind {
            "kill9" => "kill -9 of raftlb",
            "bfd" => "silent cut, BFD 100 ms x 3",
            "hold9" => "silent cut, no BFD, hold 9 s",
            "hold3" => "silent cut, no BFD, hold 3 s",
            "drain" => "ctl drain (GSHUT, withdraw after 5 s)",
            "gr" => "kill -9 + restart with graceful restart (route column: GR done)",
            other => other,
        };
        println!(
            "| {label} | {runs} | {}{} | {} | {} |",
            cell(&mut path),
            if misses > 0 {
                format!(" ({misses} not within the run)")
            } else {
                String::new()
            },
            cell(&mut route),
            lost.iter().max().copied().unwrap_or(0)
        );
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
