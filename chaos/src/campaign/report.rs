//! The verdict of a campaign: `summary.json`, `summary.md` and the console lines
//! (`violations: V`, one line per invariant, and on failure the first violation with the
//! history around it and a `REPRODUCE:` line).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::check::{self, Bounds, Findings, Invariant, Sample, Violation};
use super::history::{self, Event};
use super::plan::{FaultKind, Mode, Plan, Profile};

/// The bounds each profile is held to.
pub fn bounds(profile: Profile) -> Bounds {
    match profile {
        Profile::Default => Bounds {
            failover_ms: 2000,
            dark_ms: 100,
        },
        Profile::Fast => Bounds {
            failover_ms: 700,
            dark_ms: 100,
        },
    }
}

/// Failover figures for one fault kind, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Faults that touched a watched VIP's owner, per VIP.
    pub touched: usize,
    /// Of those, how many moved the VIP to another node before the next fault.
    pub moved: usize,
    pub moved_p50: Option<u64>,
    pub moved_p99: Option<u64>,
    pub moved_max: Option<u64>,
    /// Longest dark stretch when the owner was touched.
    pub dark_touched_p50: Option<u64>,
    pub dark_touched_p99: Option<u64>,
    pub dark_touched_max: Option<u64>,
    /// Longest dark stretch when it was not.
    pub dark_untouched_p99: Option<u64>,
    pub dark_untouched_max: Option<u64>,
}

fn figures(samples: &[&Sample]) -> Figures {
    let touched: Vec<&&Sample> = samples.iter().filter(|s| s.touches_owner).collect();
    let moved: Vec<u64> = touched.iter().filter_map(|s| s.moved_ms).collect();
    let dark_t: Vec<u64> = touched.iter().map(|s| s.dark_ms).collect();
    let dark_u: Vec<u64> = samples
        .iter()
        .filter(|s| !s.touches_owner)
        .map(|s| s.dark_ms)
        .collect();
    Figures {
        touched: touched.len(),
        moved: moved.len(),
        moved_p50: check::quantile(&moved, 0.5),
        moved_p99: check::quantile(&moved, 0.99),
        moved_max: moved.iter().copied().max(),
        dark_touched_p50: check::quantile(&dark_t, 0.5),
        dark_touched_p99: check::quantile(&dark_t, 0.99),
        dark_touched_max: dark_t.iter().copied().max(),
        dark_untouched_p99: check::quantile(&dark_u, 0.99),
        dark_untouched_max: dark_u.iter().copied().max(),
    }
}

/// How long heals of one fault kind took to reach a state, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub heals: u64,
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
    /// Heals the state did not follow within the wait.
    pub missed: u64,
}

/// Per fault kind, the spread of the `(cycle, ms)` pairs; `None` is a heal the state did not
/// follow. Cycles without a fault of their own are left out.
fn spread_by_kind(
    kind_of: &BTreeMap<usize, FaultKind>,
    times: impl Iterator<Item = (usize, Option<u64>)>,
) -> BTreeMap<String, Spread> {
    let mut by_kind: BTreeMap<String, (Vec<u64>, u64)> = BTreeMap::new();
    for (cycle, ms) in times {
        let Some(kind) = kind_of.get(&cycle) else {
            continue;
        };
        let entry = by_kind.entry(kind.as_str().into()).or_default();
        match ms {
            Some(ms) => entry.0.push(ms),
            None => entry.1 += 1,
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, (v, missed))| {
            let spread = Spread {
                heals: v.len() as u64 + missed,
                p50: check::quantile(&v, 0.5),
                p99: check::quantile(&v, 0.99),
                max: v.iter().copied().max(),
                missed,
            };
            (kind, spread)
        })
        .collect()
}

/// A markdown table of per-kind [`Spread`]s under `heading` (nothing when there are none).
fn spread_table(out: &mut String, heading: &str, missed: &str, spreads: &BTreeMap<String, Spread>) {
    if spreads.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## {heading}\n| kind | heals | p50 / p99 / max | {missed} |\n|---|---|---|---|"
    );
    for (kind, f) in spreads {
        let _ = writeln!(
            out,
            "| {kind} | {} | {} / {} / {} | {} |",
            f.heals,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            f.missed
        );
    }
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub commit: String,
    pub profile: Profile,
    pub planned: usize,
    /// Faults injected, per kind and target role.
    pub faults: BTreeMap<String, BTreeMap<String, usize>>,
    pub faults_total: usize,
    /// Cycles not run as planned, with the reason.
    pub skipped: Vec<(usize, FaultKind, String)>,
    pub bounds: Bounds,
    pub violations: usize,
    /// Per invariant: the number of violations (not-checked invariants say so).
    pub verdicts: BTreeMap<String, String>,
    pub failover: BTreeMap<String, Figures>,
    /// BGP mode, per fault kind: ms from the heal until the router's routes matched the
    /// table again.
    pub bgp_converge: BTreeMap<String, Spread>,
    /// Per fault kind: ms from the heal until the cluster was whole again (every node
    /// following one leader, every renewal reaching it).
    pub recovered: BTreeMap<String, Spread>,
    /// Per fault kind: nodes whose process exited on its own after the cycle's heal and were
    /// started again (fail-stop, e.g. on a full disk).
    pub restarted: BTreeMap<String, usize>,
    /// Whether the run is a full campaign (shared/CHAOS-SECURITY.md: at least 1000 faults, 50
    /// of each kind, 10 on each targeted role, 100 failovers), and what it had.
    pub coverage: String,
    pub mode: Mode,
    pub first_violation: Option<Violation>,
    /// The first [`LISTED_VIOLATIONS`] violations, in time order.
    pub violations_listed: Vec<Violation>,
    pub wall_s: Option<u64>,
    /// A negative control: the product broken on purpose; it must be flagged.
    pub negative_control: Option<String>,
    /// Workload operations by kind and outcome (`apply ok`, `read unknown`, ...), and
    /// `read linearizable`.
    pub workload: BTreeMap<String, usize>,
}

/// What a campaign (or `check DIR`) concluded.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub summary: Summary,
    pub findings: Findings,
}

impl Outcome {
    /// No violation; for a negative control, the opposite: it was flagged.
    pub fn passed(&self) -> bool {
        match self.summary.negative_control {
            Some(_) => self.summary.violations > 0,
            None => self.summary.violations == 0,
        }
    }
}

/// The checkout's commit now.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Reads `plan.json` and `history.jsonl` in `dir`, runs the checkers, writes the summaries
/// and prints the verdict.
pub fn check_and_write(dir: &Path, wall: Option<Duration>) -> anyhow::Result<Outcome> {
    let plan: Plan = serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json"))?)?;
    let events = history::read(&dir.join("history.jsonl"))?;
    let nodes = nodes_in(&events);
    let b = bounds(plan.profile);
    let findings = check::all(&events, b, nodes);
    let summary = summarize(&plan, &events, &findings, b, wall);
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    std::fs::write(dir.join("summary.md"), markdown(&summary))?;
    std::fs::write(
        dir.join("timeline.html"),
        super::timeline::html(&plan, &events, &findings),
    )?;
    print!("{}", console(&summary, &findings, &events, &plan));
    Ok(Outcome { summary, findings })
}

/// How many nodes the history's chunks ran (the most that reported a final table).
fn nodes_in(events: &[Event]) -> usize {
    let mut per_chunk: BTreeMap<usize, usize> = BTreeMap::new();
    for e in events {
        if let Event::Final { chunk, .. } = e {
            *per_chunk.entry(*chunk).or_default() += 1;
        }
    }
    per_chunk.values().copied().max().unwrap_or(0)
}

fn summarize(
    plan: &Plan,
    events: &[Event],
    findings: &Findings,
    bounds: Bounds,
    wall: Option<Duration>,
) -> Summary {
    let mut faults: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for e in events {
        match e {
            Event::FaultStart { kind, role, .. } => {
                *faults
                    .entry(kind.as_str().into())
                    .or_default()
                    .entry(role.as_str().into())
                    .or_default() += 1;
            }
            Event::Skipped {
                cycle,
                kind,
                reason,
                ..
            } => skipped.push((*cycle, *kind, reason.clone())),
            _ => {}
        }
    }
    let faults_total = faults.values().flat_map(|m| m.values()).sum();
    let mut workload: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        if let Event::Op {
            f,
            outcome,
            linearizable,
            ..
        } = e
        {
            *workload.entry(format!("{f} {outcome}")).or_default() += 1;
            if *linearizable && f == "read" {
                *workload.entry("read linearizable".into()).or_default() += 1;
            }
        }
    }
    let mut verdicts = BTreeMap::new();
    for inv in Invariant::ALL {
        let n = findings.of(inv).count();
        let mut verdict = if n == 0 {
            "ok".to_string()
        } else {
            format!("{n} violations")
        };
        if inv == Invariant::AllocationModel {
            verdict.push_str(&format!(
                " ({} Service states in reads compared with the replay)",
                findings.model_compared
            ));
        }
        if inv == Invariant::AnswerWindows {
            verdict.push_str(&format!(
                " ({} replies audited by the nodes that sent them)",
                findings.audited_replies
            ));
        }
        verdicts.insert(inv.as_str().to_string(), verdict);
    }
    // What a mode has no part of says so, rather than passing.
    let not_applicable: &[(Invariant, &str)] = if plan.mode.bgp() {
        &[
            (
                Invariant::SingleAnswerer,
                "BGP mode: nobody answers ARP/NDP for the VIPs",
            ),
            (
                Invariant::AnswerWindows,
                "BGP mode: nobody answers ARP/NDP for the VIPs",
            ),
            (
                Invariant::Failover,
                "BGP mode: every node announces; see bgp-routes",
            ),
        ]
    } else {
        &[(Invariant::BgpRoutes, "a layer 2 campaign")]
    };
    for (inv, why) in not_applicable {
        if findings.of(*inv).count() == 0 {
            verdicts.insert(inv.as_str().to_string(), format!("not applicable ({why})"));
        }
    }
    let kind_of = check::fault_kinds(events);
    let recovered = spread_by_kind(
        &kind_of,
        events.iter().filter_map(|e| match e {
            Event::Whole {
                cycle, after_ms, ..
            } => Some((*cycle, *after_ms)),
            _ => None,
        }),
    );
    // BGP mode: heal until the router's routes matched the table again.
    let bgp_converge = spread_by_kind(
        &kind_of,
        events.iter().filter_map(|e| match e {
            Event::Routes {
                cycle,
                converged_ms,
                ..
            } => Some((*cycle, *converged_ms)),
            _ => None,
        }),
    );
    let mut restarted: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        if let Event::Restarted { cycle, .. } = e {
            if let Some(kind) = kind_of.get(cycle) {
                *restarted.entry(kind.as_str().into()).or_default() += 1;
            }
        }
    }
    let mut by_kind: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in &findings.samples {
        by_kind.entry(s.kind.as_str()).or_default().push(s);
    }
    let failover = by_kind
        .into_iter()
        .map(|(k, v)| (k.to_string(), figures(&v)))
        .collect();
    let coverage = coverage(plan.mode, &faults, &findings.samples);
    Summary {
        coverage,
        seed: plan.seed,
        commit: plan
            .commit
            .clone()
            .unwrap_or_else(|| format!("{} (at check time)", commit())),
        profile: plan.profile,
        planned: plan.cycles.len(),
        faults,
        faults_total,
        skipped,
        bounds,
        violations: findings.violations.len(),
        verdicts,
        failover,
        bgp_converge,
        recovered,
        restarted,
        mode: plan.mode,
        first_violation: findings.violations.first().cloned(),
        violations_listed: findings
            .violations
            .iter()
            .take(LISTED_VIOLATIONS)
            .cloned()
            .collect(),
        wall_s: wall.map(|w| w.as_secs()),
        negative_control: plan.negative_control.map(|c| c.as_str().to_string()),
        workload,
    }
}

/// The coverage line: what a full campaign needs, against what this one had.
fn coverage(
    mode: Mode,
    faults: &BTreeMap<String, BTreeMap<String, usize>>,
    samples: &[Sample],
) -> String {
    let total: usize = faults.values().flat_map(|m| m.values()).sum();
    let per_kind: BTreeMap<&str, usize> = faults
        .iter()
        .map(|(k, roles)| (k.as_str(), roles.values().sum()))
        .collect();
    let per_role = |role: &str| -> usize { faults.values().filter_map(|m| m.get(role)).sum() };
    let fewest = per_kind.iter().min_by_key(|(_, n)| **n);
    let roles: &[&str] = if mode.bgp() {
        &["leader", "follower"]
    } else {
        &["leader", "owner", "follower"]
    };
    // A failover: a watched VIP moved off a node a fault took out.
    let failovers = samples.iter().filter(|s| s.moved_ms.is_some()).count();
    let mut short = Vec::new();
    if total < 1000 {
        short.push(format!("{total} faults < 1000"));
    }
    let kinds = FaultKind::defaults(mode).len();
    if per_kind.len() < kinds {
        short.push(format!("{} of {kinds} kinds", per_kind.len()));
    }
    if let Some((k, n)) = fewest.filter(|(_, n)| **n < 50) {
        short.push(format!("{k} only {n} times < 50"));
    }
    for role in roles {
        let n = per_role(role);
        if n < 10 {
            short.push(format!("{role} targeted {n} times < 10"));
        }
    }
    if !mode.bgp() && failovers < 100 {
        short.push(format!("{failovers} VIP failovers < 100"));
    }
    let had = format!(
        "{total} faults, {} kinds (fewest: {}), {}{}",
        per_kind.len(),
        fewest.map_or("-".to_string(), |(k, n)| format!("{k} {n}")),
        roles
            .iter()
            .map(|r| format!("{r} {}", per_role(r)))
            .collect::<Vec<_>>()
            .join(", "),
        if mode.bgp() {
            String::new()
        } else {
            format!(", {failovers} VIP failovers")
        }
    );
    if short.is_empty() {
        format!("full ({had})")
    } else {
        format!("short of a full campaign: {} ({had})", short.join("; "))
    }
}

/// How many violations summary.json and summary.md list.
pub const LISTED_VIOLATIONS: usize = 50;

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn markdown(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# raftlb chaos campaign\n\nseed {} · commit {} · profile {} · mode {} · {} of {} planned faults injected{}\n\n\
         Three raftlb processes per chunk, each in its own network namespace, with its data \
         directory on its own tmpfs of {} MiB (so a disk can be filled; a SIGKILL keeps what \
         was written to the kernel either way).\n",
        s.seed,
        s.commit,
        s.profile.as_str(),
        s.mode.as_str(),
        s.faults_total,
        s.planned,
        s.wall_s.map_or(String::new(), |w| format!(" · wall {w} s")),
        super::DISK_MIB,
    );
    if let Some(c) = &s.negative_control {
        let _ = writeln!(
            out,
            "**Negative control `{c}`**: the product was broken on purpose; {}\n",
            if s.violations > 0 {
                "the checkers flagged it"
            } else {
                "NOT FLAGGED: the checkers missed a known bug"
            }
        );
    }
    let _ = writeln!(
        out,
        "**violations: {}** (bounds: a fault touching a VIP's owner may darken it {} ms, any other fault {} ms)\n",
        s.violations, s.bounds.failover_ms, s.bounds.dark_ms
    );
    let _ = writeln!(out, "| invariant | verdict |\n|---|---|");
    for (k, v) in &s.verdicts {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let _ = writeln!(out, "\ncoverage: {}", s.coverage);
    if !s.violations_listed.is_empty() {
        let _ = writeln!(
            out,
            "\n## Violations (the first {} of {})\n",
            s.violations_listed.len(),
            s.violations
        );
        for v in &s.violations_listed {
            let _ = writeln!(
                out,
                "- {} at {}: {}",
                v.invariant.as_str(),
                v.t.map_or("-".to_string(), |t| t.to_string()),
                v.detail
            );
        }
    }
    let _ = writeln!(
        out,
        "\n## Faults\n\n| kind | leader | owner | follower | cluster |\n|---|---|---|---|---|"
    );
    for (kind, roles) in &s.faults {
        let r = |x: &str| roles.get(x).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} | {} |",
            r("leader"),
            r("owner"),
            r("follower"),
            r("cluster")
        );
    }
    let _ = writeln!(
        out,
        "\n## Failover (ms, per watched VIP)\n\n| kind | owner touched | moved | moved p50 / p99 / max | dark when touched p50 / p99 / max | dark otherwise p99 / max |\n|---|---|---|---|---|---|"
    );
    for (kind, f) in &s.failover {
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} / {} / {} | {} / {} / {} | {} / {} |",
            f.touched,
            f.moved,
            ms(f.moved_p50),
            ms(f.moved_p99),
            ms(f.moved_max),
            ms(f.dark_touched_p50),
            ms(f.dark_touched_p99),
            ms(f.dark_touched_max),
            ms(f.dark_untouched_p99),
            ms(f.dark_untouched_max)
        );
    }
    spread_table(
        &mut out,
        "BGP: heal until the router's routes match the table (ms)\n",
        "not within the bound",
        &s.bgp_converge,
    );
    spread_table(
        &mut out,
        "Heal until the cluster is whole again (ms)\n\nEvery node following one leader, every lease renewal reaching it; the next fault waits for it.\n",
        "not within 10 s",
        &s.recovered,
    );
    if !s.restarted.is_empty() {
        let _ = writeln!(
            out,
            "\n## Nodes restarted after a heal\n\nA node whose process exited on its own (fail-stop) is started again, as a StatefulSet's kubelet would.\n\n| kind | restarts |\n|---|---|"
        );
        for (kind, n) in &s.restarted {
            let _ = writeln!(out, "| {kind} | {n} |");
        }
    }
    let _ = writeln!(out, "\n## Workload\n\n| operation | count |\n|---|---|");
    for (k, n) in &s.workload {
        let _ = writeln!(out, "| {k} | {n} |");
    }
    if !s.skipped.is_empty() {
        let _ = writeln!(out, "\n## Not run as planned\n");
        for (cycle, kind, reason) in &s.skipped {
            let _ = writeln!(out, "- cycle {cycle} ({kind}): {reason}");
        }
    }
    if let Some(v) = &s.first_violation {
        let _ = writeln!(
            out,
            "\n## First violation\n\n{}: {}",
            v.invariant.as_str(),
            v.detail
        );
    }
    out
}

/// At most this many history lines around the first violation on the console.
const HISTORY_LINES: usize = 60;

/// The console verdict; on failure the first violation, the history ±2 s around it and how
/// to run its cycle again.
fn console(s: &Summary, f: &Findings, events: &[Event], plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "faults: {} of {} planned", s.faults_total, s.planned);
    let _ = writeln!(out, "violations: {}", s.violations);
    if let Some(c) = &s.negative_control {
        let _ = writeln!(
            out,
            "negative control {c}: {}",
            if s.violations > 0 {
                "flagged"
            } else {
                "NOT FLAGGED"
            }
        );
    }
    for (k, v) in &s.verdicts {
        let _ = writeln!(out, "{k}: {v}");
    }
    let _ = writeln!(out, "coverage: {}", s.coverage);
    let Some(first) = f.violations.first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "\nfirst violation: {}: {}",
        first.invariant.as_str(),
        first.detail
    );
    if let Some(t) = first.t {
        // Faults, failed probes and announcements; answered probes and ARP replies only
        // counted (they are most of the history).
        let near: Vec<&Event> = events
            .iter()
            .filter(|e| {
                e.time()
                    .is_some_and(|x| x + 2_000_000 >= t && x <= t + 2_000_000)
            })
            .collect();
        let routine = |e: &&&Event| {
            matches!(
                e,
                Event::Probe { node: Some(_), .. }
                    | Event::Answer {
                        request: Some(_),
                        ..
                    }
                    | Event::Audit { .. }
            )
        };
        let shown: Vec<&&Event> = near.iter().filter(|e| !routine(e)).collect();
        let _ = writeln!(
            out,
            "history from 2 s before to 2 s after it ({} answered probes, ARP/NDP replies and audit lines not shown{}):",
            near.iter().filter(routine).count(),
            if shown.len() > HISTORY_LINES {
                format!(", first {HISTORY_LINES} of {} other events", shown.len())
            } else {
                String::new()
            }
        );
        for e in shown.iter().take(HISTORY_LINES) {
            let _ = writeln!(out, "  {}", serde_json::to_string(e).unwrap_or_default());
        }
    }
    let cycle = first
        .t
        .and_then(|t| {
            events.iter().rev().find_map(|e| match e {
                Event::FaultStart { t: s, cycle, .. } if *s <= t => Some(*cycle),
                _ => None,
            })
        })
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "REPRODUCE: raftlb-chaos campaign --seed {} --profile {} --from {cycle} --faults {}",
        plan.seed,
        plan.profile.as_str(),
        plan.cycles.len()
    );
    out
}
