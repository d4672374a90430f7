//! Layer-2 failover benchmark in the namespace lab (root). Prints figures; asserts nothing.
//!
//! * Failover: owner crash (SIGKILL + link down) to the client's first successful TCP connect
//!   to the new owner, probe every 10 ms, N trials each, for raftlb default and fast profiles
//!   and keepalived VRRPv2 `advert_int 1` and VRRPv3 `advert_int 0.1`.
//! * The partition scenario for keepalived: the master cut off from the other nodes while the
//!   client reaches it; were there two answerers?
//! * ARP reply latency of raftlb's responder vs the kernel's reply for a node address.
//!
//! `raftlb-l2bench [--trials N] [--only raftlb-default,raftlb-fast,ka-v2,ka-v3,arp]`; add
//! `raftlb-default-tls,raftlb-fast-tls` for the same with mutual TLS between the peers.

use std::time::Duration;

use anyhow::Context;
use std::sync::atomic::{AtomicBool, Ordering};

use raftlb_chaos::lab::{
    answers, dual_answers, interrupted, now_us, probe_hits, Announcer, Lab, VIP4,
};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut ms: Vec<f64>, note: &str) {
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {note} |",
        ms.len(),
        pct(&ms, 0.0),
        pct(&ms, 0.5),
        pct(&ms, 0.99),
        pct(&ms, 1.0)
    );
}

/// Which node answers TCP on the VIP now.
fn answering(lab: &Lab) -> anyhow::Result<String> {
    lab.wait(
        "a node answering on the VIP",
        Duration::from_secs(20),
        |l| l.reach(VIP4),
    )
}

/// One crash trial: returns (failover ms, the victim was the Raft leader). raftlb trials
/// alternate the owner between the leader and a follower.
fn trial(lab: &mut Lab, raftlb: bool, window_ms: u64, i: usize) -> anyhow::Result<(f64, bool)> {
    if raftlb {
        let leader = lab.leader()?.context("a leader")?;
        let want = if i.is_multiple_of(2) {
            leader.clone()
        } else {
            lab.nodes
                .iter()
                .find(|n| n.name != leader)
                .context("a follower")?
                .name
                .clone()
        };
        lab.move_vip(VIP4, &want)?;
    }
    let victim = answering(lab)?;
    let was_leader = raftlb && lab.leader()?.as_deref() == Some(victim.as_str());
    let probe = lab.probe(VIP4, 10, window_ms)?;
    std::thread::sleep(Duration::from_millis(300));
    let t0 = now_us();
    lab.crash(&victim)?;
    let hits = probe_hits(&probe.finish()?);
    let first = hits
        .iter()
        .find(|(t, n)| *t > t0 && *n != victim)
        .with_context(|| format!("no takeover from {victim} within {window_ms} ms"))?;
    let ms = (first.0 - t0) as f64 / 1000.0;
    // Bring the node back and let it settle before the next trial.
    lab.link(&victim, true)?;
    lab.start(&victim)?;
    if raftlb {
        lab.wait("every node live again", Duration::from_secs(30), |l| {
            let s = l.ctl(&["status"])?;
            let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
            let live = nodes
                .iter()
                .all(|n| n["live"] == true && n["leaseLeftMs"].as_u64().unwrap_or(0) > 0);
            Ok((nodes.len() == 3 && live).then_some(()))
        })?;
    } else {
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok((ms, was_leader))
}

fn failover(
    name: &str,
    announcer: Announcer,
    trials: usize,
    stop: &AtomicBool,
    tls: bool,
) -> anyhow::Result<()> {
    let raftlb = matches!(announcer, Announcer::Raftlb { .. });
    let window = match &announcer {
        Announcer::Keepalived { advert, .. } => (advert * 6000.0) as u64 + 1000,
        Announcer::Raftlb { .. } => 3000,
    };
    let mut lab = Lab::build(3, announcer)?;
    if tls {
        lab.secure()?;
    }
    if raftlb {
        lab.start_raftlb()?;
    } else {
        lab.start_all()?;
    }
    answering(&lab)?;
    let mut all = Vec::new();
    let (mut leader, mut follower) = (Vec::new(), Vec::new());
    for i in 0..trials {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match trial(&mut lab, raftlb, window, i) {
            Ok((ms, was_leader)) => {
                eprintln!(
                    "{name} trial {i}: {ms:.0} ms{}",
                    if was_leader { " (leader)" } else { "" }
                );
                all.push(ms);
                if was_leader {
                    leader.push(ms)
                } else {
                    follower.push(ms)
                }
            }
            Err(e) => eprintln!("{name} trial {i}: {e:#}"),
        }
    }
    summary(name, all, "all crashes");
    if raftlb {
        summary(&format!("{name}, owner was the Raft leader"), leader, "");
        summary(&format!("{name}, owner was a follower"), follower, "");
    }
    Ok(())
}

/// Keepalived's master cut off from the other nodes while the client still reaches it.
fn keepalived_partition(version: u8, advert: f64) -> anyhow::Result<()> {
    let mut lab = Lab::build(3, Announcer::Keepalived { version, advert })?;
    lab.start_all()?;
    let master = answering(&lab)?;
    let obs = lab.observe(VIP4, (advert * 8000.0) as u64 + 2000)?;
    std::thread::sleep(Duration::from_millis(500));
    lab.partition(&master, false)?;
    let lines = obs.finish()?;
    lab.heal()?;
    let a = answers(&lines);
    let dual = dual_answers(&a);
    let macs: std::collections::BTreeSet<&str> = a.iter().map(|x| x.mac.as_str()).collect();
    println!(
        "keepalived VRRPv{version} advert_int {advert}, master cut off: {} answering MACs seen, {} split-brain findings{}",
        macs.len(),
        dual.len(),
        dual.first()
            .map(|(_, d)| format!(" (first: {d})"))
            .unwrap_or_default()
    );
    Ok(())
}

fn arp_latency() -> anyhow::Result<()> {
    let mut lab = Lab::build(
        3,
        Announcer::Raftlb {
            profile: "default".into(),
        },
    )?;
    lab.start_raftlb()?;
    let owner = lab.owner(VIP4)?.context("an owner")?;
    let node_ip = lab
        .nodes
        .iter()
        .find(|n| n.name == owner)
        .context("owner node")?
        .ip
        .clone();
    println!("| rate | raftlb responder ({VIP4}) | kernel ({node_ip}, same node) |");
    println!("|---|---|---|");
    for (rate, count) in [(1_000u64, 5_000u64), (10_000, 20_000)] {
        let ours = lab.arp_latency(VIP4, rate, count)?;
        let kernel = lab.arp_latency(&node_ip, rate, count)?;
        println!("| {rate}/s | {} | {} |", ours.trim(), kernel.trim());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = args
        .iter()
        .position(|a| a == "--trials")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| {
            [
                "raftlb-default",
                "raftlb-fast",
                "ka-v2",
                "ka-v3",
                "ka-partition",
                "arp",
            ]
            .map(String::from)
            .to_vec()
        });
    let stop = interrupted();
    let want = |k: &str| only.iter().any(|o| o == k) && !stop.load(Ordering::SeqCst);
    println!(
        "## Failover: owner crash -> first TCP connect to the new owner (ms), probe every 10 ms\n"
    );
    println!("| setup | trials | min | median | p99 | max | |");
    println!("|---|---|---|---|---|---|---|");
    if want("raftlb-default") {
        failover(
            "raftlb default profile",
            Announcer::Raftlb {
                profile: "default".into(),
            },
            trials,
            &stop,
            false,
        )?;
    }
    if want("raftlb-fast") {
        failover(
            "raftlb fast profile",
            Announcer::Raftlb {
                profile: "fast".into(),
            },
            trials,
            &stop,
            false,
        )?;
    }
    for (key, profile) in [
        ("raftlb-default-tls", "default"),
        ("raftlb-fast-tls", "fast"),
    ] {
        if want(key) {
            failover(
                &format!("raftlb {profile} profile, mutual TLS"),
                Announcer::Raftlb {
                    profile: profile.into(),
                },
                trials,
                &stop,
                true,
            )?;
        }
    }
    if want("ka-v2") {
        failover(
            "keepalived VRRPv2 advert_int 1",
            Announcer::Keepalived {
                version: 2,
                advert: 1.0,
            },
            trials,
            &stop,
            false,
        )?;
    }
    if want("ka-v3") {
        failover(
            "keepalived VRRPv3 advert_int 0.1",
            Announcer::Keepalived {
                version: 3,
                advert: 0.1,
            },
            trials,
            &stop,
            false,
        )?;
    }
    if want("ka-partition") {
        println!();
        keepalived_partition(3, 0.1)?;
        keepalived_partition(2, 1.0)?;
    }
    if want("arp") {
        println!("\n## ARP reply latency from the client namespace (µs)\n");
        arp_latency()?;
    }
    Ok(())
}
