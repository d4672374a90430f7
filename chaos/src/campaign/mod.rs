//! Seeded fault campaigns over real raftlb processes in the namespace lab.
//!
//! ```text
//!  plan      seed -> every cycle (quiet, fault kind, target role, hold) -> plan.json
//!  nemesis   one cycle: inject, hold, heal, in a lab cluster
//!  history   JSON lines on the lab's monotonic clock: faults, probes, ARP/NDP answers,
//!            each chunk's final tables and liveness, bad log lines
//!  check     pure checkers over a history -> violations and failover samples
//!  report    summary.md, summary.json, the console verdict and REPRODUCE line
//!  timeline  timeline.html: lanes per node and VIP, fault bands, the first violation
//! ```
//!
//! A campaign runs its plan in chunks, each on a fresh lab cluster (so a long campaign does
//! not carry one cluster's state through a thousand faults, and `--from K` starts anywhere).

pub mod audit;
pub mod check;
pub mod history;
pub mod model;
pub mod nemesis;
pub mod plan;
pub mod report;
pub mod timeline;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::lab::{answers, now_us, probes, Announcer, Lab, VIP4, VIP6};
use crate::routers::{Router, RouterKind};
use history::Event;
use nemesis::WATCHED;
use plan::{FaultKind, Mode, NegativeControl, Plan, Profile};

/// What `raftlb-chaos campaign` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub seed: u64,
    pub faults: usize,
    pub profile: Profile,
    /// The first cycle to run (the ones before are in the plan but not run).
    pub from: usize,
    pub out: PathBuf,
    pub nodes: usize,
    /// Cycles per lab cluster.
    pub chunk: usize,
    pub kinds: Vec<FaultKind>,
    pub negative_control: Option<NegativeControl>,
}

/// How long after the final heal the cluster must be live again.
pub const LIVENESS_WITHIN: Duration = Duration::from_secs(5);

/// BGP mode: how soon after a heal every router's routes must match the table again. Without
/// BFD a restarted node's new session waits out the old one's hold time (9 s) and BIRD's
/// error wait (up to 5 s).
pub const BGP_CONVERGE_WITHIN: Duration = Duration::from_secs(20);

/// The size of each node's data file system (tmpfs), in MiB: far more than a chunk writes,
/// small enough to fill at once.
pub const DISK_MIB: u64 = 64;

/// Runs the campaign, writing `plan.json` and `history.jsonl` into `out`, then checks and
/// reports. `stop` ends it early (after the current cycle), still checked and reported; the
/// same command with `--from` at the next cycle not run resumes it.
pub fn run(opts: &Options, stop: &AtomicBool) -> anyhow::Result<report::Outcome> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let mut plan = Plan::generate(opts.seed, opts.faults, opts.profile, opts.mode, &opts.kinds);
    plan.negative_control = opts.negative_control;
    plan.commit = Some(report::commit());
    let history_path = opts.out.join("history.jsonl");
    // `--from K` into the directory of the same plan resumes it: the history goes on, its
    // chunks numbered after the ones there, its times after theirs.
    let (first_chunk, shift) = match resumable(opts, &plan, &history_path)? {
        Some((earlier, earlier_commit)) => {
            // The report names every commit that ran part of it.
            if let (Some(old), Some(now)) = (earlier_commit, plan.commit.as_mut()) {
                if old != *now {
                    *now = format!("{old}, resumed at {now}");
                }
            }
            let last_t = earlier.iter().filter_map(Event::time).max().unwrap_or(0);
            let next_chunk = earlier
                .iter()
                .filter_map(|e| match e {
                    Event::ChunkEnd { chunk, .. } => Some(chunk + 1),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            let shift = (last_t + 60_000_000).saturating_sub(now_us());
            println!(
                "resuming: {} events there, {next_chunk} chunks; this run's times +{} s",
                earlier.len(),
                shift / 1_000_000
            );
            (next_chunk, shift)
        }
        None => {
            let _ = std::fs::remove_file(&history_path);
            (0, 0)
        }
    };
    std::fs::write(
        opts.out.join("plan.json"),
        serde_json::to_string_pretty(&plan)?,
    )?;
    let mut history = history::Writer::append(&history_path)?;
    let started = Instant::now();
    let todo = &plan.cycles[opts.from.min(plan.cycles.len())..];
    for (i, cycles) in todo.chunks(opts.chunk.max(1)).enumerate() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let chunk = first_chunk + i;
        println!(
            "chunk {chunk}: cycles {}..{} on a fresh {}-node cluster",
            cycles[0].index,
            cycles[cycles.len() - 1].index,
            opts.nodes
        );
        let events = run_chunk(opts, chunk, cycles, stop)?;
        let events: Vec<Event> = events.into_iter().map(|e| e.shifted(shift)).collect();
        history.write_all(&events)?;
    }
    drop(history);
    let wall = started.elapsed();
    report::check_and_write(&opts.out, Some(wall))
}

/// The history already in `out`, when this run resumes it: `--from` past 0 into a directory
/// holding the same plan. Another plan there, or cycles from `--from` on already run, is an
/// error rather than a history thrown away.
fn resumable(
    opts: &Options,
    plan: &Plan,
    history_path: &std::path::Path,
) -> anyhow::Result<Option<(Vec<Event>, Option<String>)>> {
    let plan_path = opts.out.join("plan.json");
    if opts.from == 0 || !plan_path.exists() || !history_path.exists() {
        return Ok(None);
    }
    let mut there: Plan = serde_json::from_str(&std::fs::read_to_string(&plan_path)?)?;
    // The same plan, whatever commit ran it.
    let earlier_commit = std::mem::replace(&mut there.commit, plan.commit.clone());
    if there != *plan {
        anyhow::bail!(
            "{} holds another plan's history: give another --out to start afresh",
            opts.out.display()
        );
    }
    let earlier = history::read(history_path)?;
    let ran = earlier
        .iter()
        .filter_map(|e| match e {
            Event::FaultStart { cycle, .. } | Event::Skipped { cycle, .. } => Some(*cycle),
            _ => None,
        })
        .max();
    if let Some(c) = ran.filter(|c| *c >= opts.from) {
        anyhow::bail!(
            "{}: cycle {c} has run already; resume with --from {}",
            opts.out.display(),
            c + 1
        );
    }
    Ok(Some((earlier, earlier_commit)))
}

/// One lab cluster through `cycles`, then healed and judged for liveness and agreement.
fn run_chunk(
    opts: &Options,
    chunk: usize,
    cycles: &[plan::Cycle],
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Event>> {
    let mut lab = Lab::build(
        opts.nodes,
        Announcer::Raftlb {
            profile: opts.profile.as_str().into(),
        },
    )?;
    if let Some(control) = opts.negative_control {
        lab.node_env = control.node_env();
        if let Some((node, env)) = control.one_node_env() {
            if env
                .iter()
                .any(|(k, v)| k == "LD_PRELOAD" && !std::path::Path::new(v).exists())
            {
                anyhow::bail!(
                    "--negative-control {}: {} is missing (apt install libfaketime)",
                    control.as_str(),
                    plan::LIBFAKETIME
                );
            }
            lab.node_env_of.insert(node.to_string(), env);
        }
    }
    // Each node's data on its own small file system, so a disk can be filled. Without
    // (no tmpfs mounts here), disk-full cycles are reported as not run, and why.
    if let Err(e) = lab.small_disks(DISK_MIB) {
        println!("  no small disks for the nodes ({e:#}): disk-full cycles will not run");
    }
    // Each node's audit lines, and later its log, kept beside the history.
    let chunk_dir = opts.out.join(format!("chunk-{chunk}"));
    std::fs::create_dir_all(&chunk_dir)?;
    let chunk_dir = chunk_dir.canonicalize()?;
    let audit_file = |node: &str| chunk_dir.join(format!("{node}.audit"));
    for n in &lab.nodes {
        let path = audit_file(&n.name);
        let _ = std::fs::remove_file(&path);
        lab.node_env_of.entry(n.name.clone()).or_default().push((
            raftlb_actors::responder::AUDIT_FILE.into(),
            path.display().to_string(),
        ));
    }
    // BGP mode: BIRD in the client namespace, installing what it learns (ECMP) in the
    // client's kernel, so the probes follow the routes.
    let bfd = opts.mode == Mode::BgpBfd;
    let router = if opts.mode.bgp() {
        Some(lab.start_router_with(RouterKind::Bird, 64512, 64513, |c| {
            c.fib = true;
            if bfd {
                c.bfd = Some((100, 100, 3));
            }
        })?)
    } else {
        None
    };
    if router.is_some() {
        lab.start_cluster()?;
        lab.wait("the configuration applied", Duration::from_secs(20), |l| {
            l.apply_standard_bgp(bfd).map(Some)
        })?;
    } else {
        lab.start_raftlb()?;
    }
    let router = router.as_ref();
    lab.apply(&workload::pool_manifest())?;
    // Probes and observers run until the chunk ends (stopped below, well before this).
    let budget: u64 = cycles.iter().map(|c| c.quiet_ms + c.hold_ms + 30_000).sum();
    let mut watchers = Vec::new();
    for vip in WATCHED {
        watchers.push((vip, "probe", lab.probe(vip, 10, budget)?));
        if router.is_none() {
            watchers.push((vip, "observe", lab.observe(vip, budget)?));
        }
    }
    // The first fault finds every watched VIP answered by its owner, or routed to every
    // node (IPv6 takes a moment: duplicate address detection on the client).
    lab.wait(
        "every watched VIP answered by its owner or routed to every node",
        Duration::from_secs(30),
        |l| Ok(live_now(l, router).ok()),
    )?;
    // Four clients, one operation every 100 ms each: about 40 a second in all.
    let churn = lab.workload(4, opts.seed.wrapping_add(chunk as u64), 100, budget)?;
    let mut events = Vec::new();
    for cycle in cycles {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if opts.negative_control == Some(NegativeControl::SlowClock) {
            nemesis::move_watched_to(&lab, plan::SLOW_NODE);
        }
        let got = nemesis::run_cycle(&mut lab, cycle, opts.mode);
        print_cycle(cycle, &got);
        let healed = got.iter().find_map(|e| match e {
            Event::FaultEnd { t, .. } => Some(*t),
            _ => None,
        });
        events.extend(got);
        // The next quiet time starts from a whole cluster: a fault that lands while the last
        // one's aftermath still splits it (a connection still backed off, a peer still
        // campaigning) is two faults at once, and no failover bound holds for that. How long
        // the aftermath lasts is measured instead (bounded: a cluster that does not recover is
        // the final liveness check's business).
        if let Some(healed) = healed {
            let whole = whole_after_heal(&mut lab, cycle.index, &mut events);
            events.push(Event::Whole {
                t: healed,
                cycle: cycle.index,
                after_ms: whole.then(|| now_us().saturating_sub(healed) / 1000),
            });
        }
        // BGP: the router's routes match the table again, within the bound.
        if let (Some(router), Some(healed)) = (router, healed) {
            events.push(routes_after_heal(&lab, router, cycle.index, healed));
        }
    }
    // The workload stops before the final checks: the tables can only agree once writes stop.
    // Stopped gracefully: the operations in flight finish (or time out) and are recorded.
    let ops = churn.stop_within(Duration::from_secs(8))?;
    nemesis::heal_all(&mut lab);
    events.extend(final_checks(&mut lab, router, chunk));
    // The table's history of the watched VIPs' owners, for the audit's table view.
    events.extend(ownership_history(&lab));
    // The table's Services as a linearizable read gives them: every acknowledged write is
    // held against it.
    match lab.final_read() {
        Ok(line) => events.extend(serde_json::from_str::<Event>(line.trim()).ok()),
        Err(e) => println!("  the final read did not run: {e:#}"),
    }
    let end = now_us();
    events.push(Event::ChunkEnd { t: end, chunk });
    for line in ops {
        if let Ok(op) = serde_json::from_str::<Event>(&line) {
            if op.time().is_some_and(|t| t <= end) {
                events.push(op);
            }
        }
    }
    for (vip, what, bg) in watchers {
        // What the watchers saw after the chunk's end is not judged (the next chunk's
        // history starts on another cluster).
        let lines: Vec<String> = bg
            .stop()?
            .into_iter()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|t| t <= end)
            })
            .collect();
        match what {
            "probe" => events.extend(probes(&lines).into_iter().map(|(t, node)| Event::Probe {
                t,
                vip: vip.to_string(),
                node,
            })),
            _ => events.extend(answers(&lines).into_iter().map(|a| Event::Answer {
                t: a.time_us,
                vip: vip.to_string(),
                request: a.request,
                node: lab.node_of_mac(&a.mac).map(str::to_string),
                mac: a.mac,
                sent_before: a.sent_before,
            })),
        }
    }
    // Every node's audit lines, up to the chunk's end.
    for n in &lab.nodes {
        let text = std::fs::read_to_string(audit_file(&n.name)).unwrap_or_default();
        events.extend(
            audit_lines(&text, &n.name)
                .into_iter()
                .filter(|e| e.time().is_some_and(|t| t <= end)),
        );
    }
    // Every node's log is kept beside the history, one directory per chunk.
    for n in &lab.nodes {
        let log = lab.log(&n.name);
        std::fs::write(chunk_dir.join(format!("{}.log", n.name)), &log)?;
        for line in log.lines() {
            if line.contains("panicked at") {
                events.push(Event::BadLog {
                    node: n.name.clone(),
                    line: line.to_string(),
                });
            }
        }
    }
    events.sort_by_key(|e| e.time().unwrap_or(u64::MAX));
    Ok(events)
}

/// The table's record of who owned each watched VIP from when (`get vips --history`), its
/// wall-clock times put on the monotonic clock (both read from this host's clocks at once).
fn ownership_history(lab: &Lab) -> Vec<Event> {
    let Ok(listing) = lab.ctl(&["get", "vips", "--history", "--linearizable"]) else {
        println!("  the ownership history could not be read");
        return Vec::new();
    };
    let realtime_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let offset = realtime_us.saturating_sub(now_us());
    listing["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["vip"].as_str().is_some_and(|v| WATCHED.contains(&v)))
        .filter_map(|m| {
            Some(Event::Move {
                t: (m["timeMs"].as_u64()? * 1000).checked_sub(offset)?,
                vip: m["vip"].as_str()?.to_string(),
                epoch: m["epoch"].as_u64()?,
                to: m["to"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            })
        })
        .collect()
}

/// A node's audit file ([`raftlb_actors::responder::AUDIT_FILE`]) as history events.
fn audit_lines(text: &str, node: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Event::Audit {
                what: f.first()?.to_string(),
                t: f.get(1)?.parse().ok()?,
                node: node.to_string(),
                vip: f.get(2)?.to_string(),
                deadline: f.get(3).and_then(|d| d.parse().ok()),
            })
        })
        .collect()
}

fn print_cycle(cycle: &plan::Cycle, events: &[Event]) {
    let what = events
        .iter()
        .find_map(|e| match e {
            Event::FaultStart { node, .. } => {
                Some(format!("on {}", node.as_deref().unwrap_or("the cluster")))
            }
            _ => None,
        })
        .unwrap_or_default();
    let skipped = events.iter().find_map(|e| match e {
        Event::Skipped { reason, .. } => Some(format!(" (skipped: {reason})")),
        _ => None,
    });
    println!(
        "  cycle {:>4}: {:<17} {:<8} {what} held {} ms{}",
        cycle.index,
        cycle.kind.as_str(),
        cycle.role.as_str(),
        cycle.hold_ms,
        skipped.unwrap_or_default()
    );
}

/// How long a heal may take to leave a whole cluster before the next fault goes ahead anyway.
const WHOLE_WITHIN: Duration = Duration::from_secs(10);

/// Waits up to [`WHOLE_WITHIN`] for the cluster to be whole after a heal; whether it was.
/// Meanwhile the harness plays the StatefulSet's kubelet: a node whose process exited on its
/// own (fail-stop on a storage error, which may come a moment after the heal) is started
/// again, and the restart is recorded.
fn whole_after_heal(lab: &mut Lab, cycle: usize, events: &mut Vec<Event>) -> bool {
    let end = Instant::now() + WHOLE_WITHIN;
    while Instant::now() < end {
        let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
        for node in names {
            if !lab.running(&node) {
                let started = lab.start(&node);
                events.push(Event::Restarted {
                    t: now_us(),
                    cycle,
                    node,
                    error: started.err().map(|e| format!("{e:#}")),
                });
            }
        }
        if matches!(lab.whole(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// After the chunk's final heal: within [`LIVENESS_WITHIN`], one leader and every watched VIP
/// answered by its owner; then every node's applied index and table digest once they agree
/// (or what they were when the bound ran out).
fn final_checks(lab: &mut Lab, router: Option<&Router>, chunk: usize) -> Vec<Event> {
    let healed = Instant::now();
    let within = if router.is_some() {
        BGP_CONVERGE_WITHIN
    } else {
        LIVENESS_WITHIN
    };
    let mut last = String::new();
    let live = loop {
        match live_now(lab, router) {
            Ok(()) => break true,
            Err(e) => last = format!("{e:#}"),
        }
        if healed.elapsed() > within {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut events = vec![Event::Liveness {
        t: now_us(),
        chunk,
        ok: live,
        detail: if live {
            format!(
                "live {} ms after the final heal",
                healed.elapsed().as_millis()
            )
        } else {
            format!("not live {within:?} after the final heal: {last}")
        },
    }];
    // Agreement: asked until every node shows one index and digest, for up to 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let finals: Vec<Event> = lab
            .nodes
            .iter()
            .map(|n| {
                let s = lab.ctl_at(&n.name, &["status", "--digest"]).ok();
                Event::Final {
                    t: now_us(),
                    chunk,
                    node: n.name.clone(),
                    digest_index: s.as_ref().and_then(|s| s["digestIndex"].as_u64()),
                    digest: s
                        .as_ref()
                        .and_then(|s| s["digest"].as_str().map(str::to_string)),
                    leader: s.as_ref().and_then(|s| s["leader"].as_u64()),
                }
            })
            .collect();
        let agreed = check::durability(&finals, lab.nodes.len()).is_empty();
        if agreed || Instant::now() > deadline {
            events.extend(finals);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    events
}

/// The router's next hops for each watched VIP, against every node (each announces it).
fn routes_match(lab: &Lab, router: &Router) -> anyhow::Result<()> {
    for (vip, prefix, want) in [
        (VIP4, format!("{VIP4}/32"), lab.node_ips()),
        (
            VIP6,
            format!("{VIP6}/128"),
            lab.nodes.iter().map(|n| n.ip6.clone()).collect(),
        ),
    ] {
        let seen = router.next_hops(&prefix)?;
        anyhow::ensure!(
            seen == want,
            "{vip}: the router has next hops {seen:?}, the table has every node announce it: {want:?}"
        );
    }
    Ok(())
}

/// After a BGP-mode cycle's heal at `healed`: how long until the router's routes matched
/// again (asked every 100 ms up to [`BGP_CONVERGE_WITHIN`]).
fn routes_after_heal(lab: &Lab, router: &Router, cycle: usize, healed: u64) -> Event {
    let deadline = Instant::now() + BGP_CONVERGE_WITHIN;
    loop {
        let last = match routes_match(lab, router) {
            Ok(()) => {
                return Event::Routes {
                    t: healed,
                    cycle,
                    converged_ms: Some(now_us().saturating_sub(healed) / 1000),
                    detail: String::new(),
                }
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            return Event::Routes {
                t: healed,
                cycle,
                converged_ms: None,
                detail: last,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One leader, and each watched VIP's owner answers the client (layer 2) or the router
/// routes it to every node (BGP).
fn live_now(lab: &Lab, router: Option<&Router>) -> anyhow::Result<()> {
    lab.leader()?.context("no leader")?;
    if let Some(router) = router {
        routes_match(lab, router)?;
        for vip in WATCHED {
            lab.reach(vip)?
                .with_context(|| format!("{vip}: routed, but nothing answered"))?;
        }
        return Ok(());
    }
    for vip in WATCHED {
        let owner = lab
            .owner(vip)?
            .with_context(|| format!("{vip} has no owner"))?;
        let answered = lab.reach(vip)?;
        anyhow::ensure!(
            answered.as_deref() == Some(owner.as_str()),
            "{vip}: owner {owner}, answered by {answered:?}"
        );
    }
    Ok(())
}
