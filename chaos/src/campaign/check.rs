//! The checkers: pure functions of a history, each tested on hand-made histories below.
//!
//! * single answerer: no ARP/NDP request answered by two MACs, and no answer from one MAC
//!   right after another announced the VIP ([`crate::lab::dual_answers`]);
//! * failover: per fault and watched VIP, the time until the first probe reaches another
//!   node and the longest time the VIP was dark; a fault that takes the VIP's owner out may
//!   darken it up to the failover bound, any fault that does not touch it up to the darkness
//!   bound (loss or a squeeze on the owner's own link are measured only);
//! * durability: after the final heal every node reports the same applied index and table
//!   digest;
//! * liveness: the cluster was live within the bound after the final heal;
//! * logs: no node panicked;
//! * allocation: in every read of the workload, an address is held only by Services that may
//!   share it (one sharing key, no port in common); acknowledged writes are in the log in
//!   real-time order; a linearizable read answers at an index that includes every write
//!   acknowledged before it began;
//! * allocation model: every read replayed against the writes in log order
//!   ([`super::model`]);
//! * BGP routes: after every heal the router's next hops for each watched VIP are every
//!   node again, within the bound;
//! * answer windows: from the nodes' own audit lines, no two nodes' answering windows for a
//!   VIP overlap ([`super::audit`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::Event;
use super::plan::FaultKind;
use crate::lab::{dual_answers, Answer};

/// The invariants, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    Allocation,
    AllocationModel,
    SingleAnswerer,
    AnswerWindows,
    BgpRoutes,
    Failover,
    Durability,
    Liveness,
    Logs,
}

impl Invariant {
    pub const ALL: [Invariant; 9] = [
        Invariant::Allocation,
        Invariant::AllocationModel,
        Invariant::SingleAnswerer,
        Invariant::AnswerWindows,
        Invariant::BgpRoutes,
        Invariant::Failover,
        Invariant::Durability,
        Invariant::Liveness,
        Invariant::Logs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Invariant::Allocation => "allocation",
            Invariant::AllocationModel => "allocation-model",
            Invariant::SingleAnswerer => "single-answerer",
            Invariant::AnswerWindows => "single-answerer-audit",
            Invariant::BgpRoutes => "bgp-routes",
            Invariant::Failover => "failover",
            Invariant::Durability => "durability",
            Invariant::Liveness => "liveness",
            Invariant::Logs => "logs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub invariant: Invariant,
    /// When it happened, if it has a time.
    pub t: Option<u64>,
    pub detail: String,
}

/// The bounds failover is held to, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// How long a fault that touches a VIP's owner may darken it.
    pub failover_ms: u64,
    /// How long any other fault may darken it.
    pub dark_ms: u64,
}

/// One fault as seen from one watched VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub cycle: usize,
    pub kind: FaultKind,
    pub vip: String,
    /// The VIP's owner when the fault started.
    pub owner: String,
    /// Whether the fault touched that owner (its target, or every node).
    pub touches_owner: bool,
    /// Fault start until the first probe answered by another node, if one was.
    pub moved_ms: Option<u64>,
    /// The longest stretch without a successful probe, from the fault's start until the next
    /// fault (or the end of the history).
    pub dark_ms: u64,
}

/// What the checkers found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    pub violations: Vec<Violation>,
    pub samples: Vec<Sample>,
    /// Service states in reads that the allocation model compared.
    #[serde(default)]
    pub model_compared: usize,
    /// Replies the nodes' audit lines record.
    #[serde(default)]
    pub audited_replies: usize,
}

impl Findings {
    pub fn of(&self, invariant: Invariant) -> impl Iterator<Item = &Violation> {
        self.violations
            .iter()
            .filter(move |v| v.invariant == invariant)
    }
}

/// Runs every checker.
pub fn all(events: &[Event], bounds: Bounds, nodes: usize) -> Findings {
    let mut violations = single_answerer(events);
    let (samples, late) = failover(events, bounds);
    violations.extend(late);
    violations.extend(durability(events, nodes));
    violations.extend(acknowledged_writes_kept(events));
    violations.extend(liveness(events));
    violations.extend(exits(events));
    violations.extend(logs(events));
    violations.extend(allocation(events));
    violations.extend(bgp_routes(events));
    let model = super::model::replay(events);
    violations.extend(model.violations);
    let audit = super::audit::windows(events);
    violations.extend(audit.violations);
    violations.sort_by_key(|v| v.t.unwrap_or(u64::MAX));
    Findings {
        violations,
        samples,
        model_compared: model.compared,
        audited_replies: audit.replies,
    }
}

/// The chunk an event at `t` belongs to: chunks follow each other in time, each ended by a
/// `ChunkEnd` (each has its own cluster, MACs and observer request numbers).
pub(super) fn chunk_at(t: u64, ends: &[u64]) -> usize {
    ends.partition_point(|end| *end < t)
}

pub(super) fn chunk_ends(events: &[Event]) -> Vec<u64> {
    let mut ends: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::ChunkEnd { t, .. } => Some(*t),
            _ => None,
        })
        .collect();
    ends.sort_unstable();
    ends
}

pub fn single_answerer(events: &[Event]) -> Vec<Violation> {
    let ends = chunk_ends(events);
    let mut by_vip: BTreeMap<(usize, &str), Vec<Answer>> = BTreeMap::new();
    for e in events {
        if let Event::Answer {
            t,
            vip,
            request,
            mac,
            sent_before,
            ..
        } = e
        {
            by_vip
                .entry((chunk_at(*t, &ends), vip))
                .or_default()
                .push(Answer {
                    time_us: *t,
                    request: *request,
                    mac: mac.clone(),
                    sent_before: *sent_before,
                });
        }
    }
    let mut out = Vec::new();
    for ((_, vip), answers) in by_vip {
        for (t, detail) in dual_answers(&answers) {
            out.push(Violation {
                invariant: Invariant::SingleAnswerer,
                t: Some(t),
                detail: format!("{vip}: {detail}"),
            });
        }
    }
    out
}

/// Loss on a node other than the owner up to this percentage must not darken a VIP beyond
/// the darkness bound (shared/CHAOS-SECURITY.md: "no spurious failover at P <= 20 %").
pub const HEAVY_LOSS_PERCENT: u32 = 20;

pub fn failover(events: &[Event], bounds: Bounds) -> (Vec<Sample>, Vec<Violation>) {
    // A fault's window ends at the next fault or at the end of its chunk.
    let mut boundaries: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::FaultStart { t, .. } | Event::ChunkEnd { t, .. } => Some(*t),
            _ => None,
        })
        .collect();
    boundaries.sort_unstable();
    let end_of_history = events.iter().filter_map(Event::time).max().unwrap_or(0);
    let mut samples = Vec::new();
    let mut violations = Vec::new();
    for e in events
        .iter()
        .filter(|e| matches!(e, Event::FaultStart { .. }))
    {
        let Event::FaultStart {
            t: t0,
            cycle,
            kind,
            node,
            owners,
            strength,
            ..
        } = e
        else {
            continue;
        };
        let until = boundaries
            .iter()
            .copied()
            .find(|b| b > t0)
            .unwrap_or(end_of_history);
        for (vip, owner) in owners {
            let hits: Vec<(u64, &str)> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Probe {
                        t,
                        vip: v,
                        node: Some(answered),
                    } if v == vip && *t >= *t0 && *t <= until => Some((*t, answered.as_str())),
                    _ => None,
                })
                .collect();
            let touches_owner = node.as_deref() == Some(owner.as_str())
                || matches!(kind, FaultKind::RollingRestart | FaultKind::KillAll);
            let moved_ms = hits
                .iter()
                .find(|(_, n)| *n != owner)
                .map(|(t, _)| (t - t0) / 1000);
            let mut dark_us = 0;
            let mut last = *t0;
            for (t, _) in &hits {
                dark_us = dark_us.max(t - last);
                last = *t;
            }
            dark_us = dark_us.max(until.saturating_sub(last));
            let dark_ms = dark_us / 1000;
            // Loss and a squeeze on the owner degrade the path itself, and with every node
            // killed there is nobody to fail over to: measured, not bounded. Heavy loss on
            // another node (above HEAVY_LOSS_PERCENT) stalls the lease renewals that cross
            // its port (TCP retransmits back off past the lease): measured too; lighter loss
            // must cause no spurious failover.
            let heavy_loss = *kind == FaultKind::Loss && *strength > HEAVY_LOSS_PERCENT;
            let bound = if !touches_owner && heavy_loss {
                None
            } else if !touches_owner {
                Some(bounds.dark_ms)
            } else if matches!(
                kind,
                FaultKind::Loss | FaultKind::Squeeze | FaultKind::KillAll
            ) {
                None
            } else {
                Some(bounds.failover_ms)
            };
            if let Some(bound) = bound.filter(|b| dark_ms > *b) {
                violations.push(Violation {
                    invariant: Invariant::Failover,
                    t: Some(*t0),
                    detail: format!(
                        "cycle {cycle} ({kind}{}): {vip} dark for {dark_ms} ms (bound {bound} ms, owner {owner}{})",
                        node.as_deref().map_or(String::new(), |n| format!(" on {n}")),
                        if touches_owner { ", touched" } else { ", not touched" }
                    ),
                });
            }
            samples.push(Sample {
                cycle: *cycle,
                kind: *kind,
                vip: vip.clone(),
                owner: owner.clone(),
                touches_owner,
                moved_ms,
                dark_ms,
            });
        }
    }
    (samples, violations)
}

/// Per chunk (each runs its own cluster): every node reported, all at one index with one
/// table digest.
pub fn durability(events: &[Event], nodes: usize) -> Vec<Violation> {
    /// (node, applied index, digest, time) of one node's final table.
    type Reported<'a> = (&'a str, Option<u64>, Option<&'a str>, u64);
    let mut by_chunk: BTreeMap<usize, Vec<Reported>> = BTreeMap::new();
    for e in events {
        if let Event::Final {
            t,
            chunk,
            node,
            digest_index,
            digest,
            ..
        } = e
        {
            by_chunk.entry(*chunk).or_default().push((
                node.as_str(),
                *digest_index,
                digest.as_deref(),
                *t,
            ));
        }
    }
    let fail = |t: Option<u64>, detail: String| Violation {
        invariant: Invariant::Durability,
        t,
        detail,
    };
    let chunks_ended = events
        .iter()
        .filter(|e| matches!(e, Event::ChunkEnd { .. }))
        .count();
    let mut out = Vec::new();
    if by_chunk.len() < chunks_ended.max(1) {
        out.push(fail(
            None,
            format!(
                "{} of {} chunks have their nodes' final tables recorded",
                by_chunk.len(),
                chunks_ended.max(1)
            ),
        ));
    }
    for (chunk, finals) in by_chunk {
        if finals.len() < nodes {
            out.push(fail(
                None,
                format!(
                    "chunk {chunk}: {} of {nodes} nodes reported their table after the final heal",
                    finals.len()
                ),
            ));
        }
        for f in finals.iter().filter(|f| f.1.is_none() || f.2.is_none()) {
            out.push(fail(
                Some(f.3),
                format!("chunk {chunk}: {} did not report its table", f.0),
            ));
        }
        let reported: Vec<_> = finals
            .iter()
            .filter(|f| f.1.is_some() && f.2.is_some())
            .collect();
        if let Some(first) = reported.first() {
            for f in &reported[1..] {
                if (f.1, f.2) != (first.1, first.2) {
                    out.push(fail(
                        Some(f.3),
                        format!(
                            "chunk {chunk}: {} has table {} at index {}, {} has {} at index {}",
                            f.0,
                            f.2.unwrap_or("-"),
                            f.1.unwrap_or(0),
                            first.0,
                            first.2.unwrap_or("-"),
                            first.1.unwrap_or(0)
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// Per chunk, against the read it ends with (`final-read`, linearizable, after the final
/// heal): for each Service, the acknowledged write with the highest log index is what the
/// table says. A delete leaves no addresses; an apply that was given addresses still holds
/// exactly those. Services with a write of unknown outcome are left out (it may have landed
/// after), and so are applies answered without an address (a freed one may reach them later).
pub fn acknowledged_writes_kept(events: &[Event]) -> Vec<Violation> {
    let ends = chunk_ends(events);
    let fail = |t: Option<u64>, detail: String| Violation {
        invariant: Invariant::Durability,
        t,
        detail,
    };
    // chunk -> Service -> (log index, invoked, apply?, addresses) of its last acknowledged
    // write; and the Services with a write of unknown outcome.
    type Last<'a> = (u64, u64, bool, &'a [String]);
    let mut last: BTreeMap<usize, BTreeMap<&str, Last>> = BTreeMap::new();
    let mut unknown: BTreeMap<usize, std::collections::BTreeSet<&str>> = BTreeMap::new();
    let mut finals: BTreeMap<usize, (u64, &[super::workload::Holder])> = BTreeMap::new();
    for e in events {
        let Event::Op {
            t,
            f,
            key,
            outcome,
            log_index,
            ips,
            holders,
            ..
        } = e
        else {
            continue;
        };
        let chunk = chunk_at(*t, &ends);
        match (f.as_str(), outcome.as_str(), key, log_index) {
            (super::workload::FINAL_READ, "ok", _, _) => {
                finals.insert(chunk, (*t, holders));
            }
            ("apply" | "delete", "unknown", Some(key), _) => {
                unknown.entry(chunk).or_default().insert(key);
            }
            ("apply" | "delete", "ok", Some(key), Some(i)) => {
                let entry =
                    last.entry(chunk)
                        .or_default()
                        .entry(key)
                        .or_insert((0, *t, false, &[]));
                if *i >= entry.0 {
                    *entry = (*i, *t, f == "apply", ips);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for chunk in 0..ends.len().max(1) {
        let Some((read_at, holders)) = finals.get(&chunk) else {
            if last.contains_key(&chunk) {
                out.push(fail(
                    None,
                    format!("chunk {chunk}: no final read to hold the acknowledged writes against"),
                ));
            }
            continue;
        };
        for (key, (index, t, apply, ips)) in last.get(&chunk).into_iter().flatten() {
            if unknown.get(&chunk).is_some_and(|u| u.contains(key)) || (*apply && ips.is_empty()) {
                continue;
            }
            let held: Option<&[String]> = holders
                .iter()
                .find(|h| h.key == *key)
                .map(|h| h.ips.as_slice());
            let lost = if *apply {
                held != Some(ips)
            } else {
                held.is_some()
            };
            if lost {
                out.push(fail(
                    Some(*t),
                    format!(
                        "chunk {chunk}: {key}'s last acknowledged write ({} at log index {index}{}) is not in the final read at {}: it holds {}",
                        if *apply { "apply" } else { "delete" },
                        if *apply { format!(", given {}", ips.join(" ")) } else { String::new() },
                        read_at,
                        held.map_or("no address".to_string(), |h| h.join(" ")),
                    ),
                ));
            }
        }
    }
    out
}

/// BGP mode: after every heal the router's routes matched the table again within the bound.
pub fn bgp_routes(events: &[Event]) -> Vec<Violation> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Routes {
                t,
                cycle,
                converged_ms: None,
                detail,
            } => Some(Violation {
                invariant: Invariant::BgpRoutes,
                t: Some(*t),
                detail: format!(
                    "cycle {cycle}: the router's routes did not match the table within {:?} of the heal: {detail}",
                    super::BGP_CONVERGE_WITHIN
                ),
            }),
            _ => None,
        })
        .collect()
}

pub fn liveness(events: &[Event]) -> Vec<Violation> {
    let verdicts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Liveness { t, ok, detail, .. } => Some((*t, *ok, detail)),
            _ => None,
        })
        .collect();
    if verdicts.is_empty() {
        return vec![Violation {
            invariant: Invariant::Liveness,
            t: None,
            detail: "no liveness check after the final heal was recorded".into(),
        }];
    }
    verdicts
        .into_iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(t, _, detail)| Violation {
            invariant: Invariant::Liveness,
            t: Some(t),
            detail: detail.clone(),
        })
        .collect()
}

/// Each cycle's fault kind.
pub(super) fn fault_kinds(events: &[Event]) -> BTreeMap<usize, FaultKind> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FaultStart { cycle, kind, .. } => Some((*cycle, *kind)),
            _ => None,
        })
        .collect()
}

/// A node may stop itself only on a full disk (fail-stop on a storage error, restarted as a
/// kubelet would); exiting after any other fault, or not starting again, is a violation.
pub fn exits(events: &[Event]) -> Vec<Violation> {
    let kind_of = fault_kinds(events);
    events
        .iter()
        .filter_map(|e| {
            let Event::Restarted {
                t,
                cycle,
                node,
                error,
            } = e
            else {
                return None;
            };
            let kind = kind_of.get(cycle);
            let detail = match (kind, error) {
                (_, Some(error)) => format!(
                    "cycle {cycle}: {node} exited on its own and did not start again: {error}"
                ),
                (Some(FaultKind::DiskFull), None) => return None,
                (kind, None) => format!(
                    "cycle {cycle} ({}): {node} exited on its own (only a full disk may stop a node)",
                    kind.map_or("no fault", |k| k.as_str())
                ),
            };
            Some(Violation {
                invariant: Invariant::Liveness,
                t: Some(*t),
                detail,
            })
        })
        .collect()
}

pub fn logs(events: &[Event]) -> Vec<Violation> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::BadLog { node, line } => Some(Violation {
                invariant: Invariant::Logs,
                t: None,
                detail: format!("{node}: {line}"),
            }),
            _ => None,
        })
        .collect()
}

/// Events with a completion time and an index: the highest index among those completed
/// before a given time.
struct DoneBefore {
    /// Completion times, sorted.
    done: Vec<u64>,
    /// The highest index among the first k.
    maxes: Vec<u64>,
}

impl DoneBefore {
    fn new(items: impl IntoIterator<Item = (u64, u64)>) -> DoneBefore {
        let mut items: Vec<(u64, u64)> = items.into_iter().collect();
        items.sort_unstable();
        let mut max = 0;
        let (done, maxes) = items
            .into_iter()
            .map(|(end, i)| {
                max = max.max(i);
                (end, max)
            })
            .unzip();
        DoneBefore { done, maxes }
    }

    fn max_before(&self, at: u64) -> Option<u64> {
        let n = self.done.partition_point(|e| *e < at);
        (n > 0).then(|| self.maxes[n - 1])
    }
}

/// One acknowledged write of the workload: (invoked, completed, log index).
type Write = (u64, u64, u64);

pub fn allocation(events: &[Event]) -> Vec<Violation> {
    let ends = chunk_ends(events);
    let mut writes: BTreeMap<usize, Vec<Write>> = BTreeMap::new();
    let mut out = Vec::new();
    let fail = |t: u64, detail: String| Violation {
        invariant: Invariant::Allocation,
        t: Some(t),
        detail,
    };
    for e in events {
        if let Event::Op {
            t,
            end,
            f,
            outcome,
            log_index: Some(i),
            ..
        } = e
        {
            if outcome == "ok" && (f == "apply" || f == "delete") && *i > 0 {
                writes
                    .entry(chunk_at(*t, &ends))
                    .or_default()
                    .push((*t, *end, *i));
            }
        }
    }
    // Per chunk, the highest log index of a write acknowledged before a time; and the highest
    // index a linearizable read answered at before a time.
    let acked: BTreeMap<usize, DoneBefore> = writes
        .iter()
        .map(|(c, w)| (*c, DoneBefore::new(w.iter().map(|(_, end, i)| (*end, *i)))))
        .collect();
    let mut lin_reads: BTreeMap<usize, Vec<(u64, u64)>> = BTreeMap::new();
    for e in events {
        if let Event::Op {
            t,
            end,
            f,
            outcome,
            applied_index: Some(a),
            linearizable: true,
            ..
        } = e
        {
            if outcome == "ok" && f == "read" {
                lin_reads
                    .entry(chunk_at(*t, &ends))
                    .or_default()
                    .push((*end, *a));
            }
        }
    }
    let lin_reads: BTreeMap<usize, DoneBefore> = lin_reads
        .into_iter()
        .map(|(c, r)| (c, DoneBefore::new(r)))
        .collect();
    let before = |chunk: usize, at: u64| acked.get(&chunk)?.max_before(at);
    for (chunk, w) in &writes {
        for (t, _, i) in w {
            if let Some(m) = before(*chunk, *t).filter(|m| m >= i) {
                out.push(fail(
                    *t,
                    format!("a write acknowledged at log index {m} completed before one invoked later was applied at index {i}"),
                ));
            }
        }
    }
    for e in events {
        let Event::Op {
            t,
            f,
            outcome,
            applied_index: Some(a),
            linearizable,
            holders,
            client,
            ..
        } = e
        else {
            continue;
        };
        if !(f == "read" || f == super::workload::FINAL_READ) || outcome != "ok" {
            continue;
        }
        let chunk = chunk_at(*t, &ends);
        if *linearizable {
            if let Some(m) = before(chunk, *t).filter(|m| m > a) {
                out.push(fail(
                    *t,
                    format!("client {client}: a linearizable read answered at index {a}, but a write acknowledged before it began was applied at index {m}"),
                ));
            }
            // Reads never go back in time (etcd #14370, "revision decreasing").
            if let Some(m) = lin_reads
                .get(&chunk)
                .and_then(|r| r.max_before(*t))
                .filter(|m| m > a)
            {
                out.push(fail(
                    *t,
                    format!("client {client}: a linearizable read answered at index {a}, but one that completed before it began answered at index {m}"),
                ));
            }
        }
        let mut by_ip: BTreeMap<&str, Vec<&super::workload::Holder>> = BTreeMap::new();
        for h in holders {
            for ip in &h.ips {
                by_ip.entry(ip).or_default().push(h);
            }
        }
        for (ip, hs) in by_ip {
            for (i, h1) in hs.iter().enumerate() {
                for h2 in &hs[i + 1..] {
                    let same_key = h1.share.is_some() && h1.share == h2.share;
                    let clash = h1.ports.iter().find(|p| h2.ports.contains(p));
                    if !same_key || clash.is_some() {
                        out.push(fail(
                            *t,
                            format!(
                                "{ip} held by {} and {}, which may not share it ({}) in a read at index {a}",
                                h1.key,
                                h2.key,
                                if same_key {
                                    format!("both use {}", clash.map_or("", |p| p.as_str()))
                                } else {
                                    format!("sharing keys {:?} and {:?}", h1.share, h2.share)
                                },
                            ),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The value at quantile `q` (0..=1) of `values` (nearest rank), None if empty.
pub fn quantile(values: &[u64], q: f64) -> Option<u64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::plan::Role;
    use crate::campaign::workload::Holder;

    const MS: u64 = 1000;
    const BOUNDS: Bounds = Bounds {
        failover_ms: 2000,
        dark_ms: 100,
    };

    fn start(t: u64, cycle: usize, kind: FaultKind, node: &str, owner: &str) -> Event {
        Event::FaultStart {
            t,
            cycle,
            kind,
            role: Role::Owner,
            node: Some(node.into()),
            leader: Some("n1".into()),
            owners: [("vip".to_string(), owner.to_string())].into(),
            strength: 20,
        }
    }

    fn probe(t: u64, node: Option<&str>) -> Event {
        Event::Probe {
            t,
            vip: "vip".into(),
            node: node.map(str::to_string),
        }
    }

    /// Probes every 10 ms from `from` to `to` (exclusive), answered by `node`.
    fn probes(from: u64, to: u64, node: Option<&str>) -> Vec<Event> {
        (from..to)
            .step_by(10 * MS as usize)
            .map(|t| probe(t, node))
            .collect()
    }

    fn answer(t: u64, request: Option<u64>, mac: &str) -> Event {
        Event::Answer {
            t,
            vip: "vip".into(),
            request,
            mac: mac.into(),
            node: None,
            sent_before: None,
        }
    }

    #[test]
    fn a_failover_within_the_bound_is_measured_and_passes() {
        let mut h = vec![start(1000 * MS, 0, FaultKind::Crash, "n2", "n2")];
        h.extend(probes(990 * MS, 1000 * MS, Some("n2")));
        h.extend(probes(1000 * MS, 1800 * MS, None));
        h.extend(probes(1800 * MS, 3000 * MS, Some("n3")));
        h.sort_by_key(|e| e.time());
        let (samples, violations) = failover(&h, BOUNDS);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(samples.len(), 1);
        let s = &samples[0];
        assert!(s.touches_owner);
        assert_eq!(s.moved_ms, Some(800));
        assert_eq!(s.dark_ms, 800);
    }

    #[test]
    fn a_failover_over_the_bound_and_a_darkened_bystander_are_violations() {
        // The owner crashes and nobody answers for 2.5 s.
        let mut h = vec![start(0, 0, FaultKind::Crash, "n2", "n2")];
        h.extend(probes(0, 2500 * MS, None));
        h.extend(probes(2500 * MS, 3000 * MS, Some("n3")));
        let (_, violations) = failover(&h, BOUNDS);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].detail.contains("dark for 2500 ms"),
            "{violations:?}"
        );

        // A follower (not the owner) is paused: the VIP may not go dark for 150 ms.
        let mut h = vec![start(0, 3, FaultKind::Pause, "n1", "n2")];
        h.extend(probes(0, 500 * MS, Some("n2")));
        h.retain(|e| !matches!(e, Event::Probe { t, .. } if (200 * MS..350 * MS).contains(t)));
        let (samples, violations) = failover(&h, BOUNDS);
        assert!(!samples[0].touches_owner);
        assert_eq!(samples[0].moved_ms, None);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].detail.contains("not touched"),
            "{violations:?}"
        );
        // Loss on the owner's own link: measured, not bounded.
        let mut h = vec![start(0, 4, FaultKind::Loss, "n2", "n2")];
        h.extend(probes(0, 1000 * MS, None));
        h.extend(probes(1000 * MS, 3000 * MS, Some("n2")));
        let (samples, violations) = failover(&h, BOUNDS);
        assert_eq!(samples[0].dark_ms, 1000);
        assert!(violations.is_empty(), "{violations:?}");
        // Loss on another node: up to 20 % it must not darken the VIP; above, it is measured.
        let lossy = |strength: u32| {
            let mut h = vec![start(0, 5, FaultKind::Loss, "n1", "n2")];
            if let Event::FaultStart { strength: s, .. } = &mut h[0] {
                *s = strength;
            }
            h.extend(probes(0, 400 * MS, Some("n2")));
            h.extend(probes(1400 * MS, 2000 * MS, Some("n3")));
            failover(&h, BOUNDS).1
        };
        assert_eq!(lossy(20).len(), 1);
        assert!(lossy(21).is_empty());
        // The same gap of 90 ms is within the bound.
        let mut h = vec![start(0, 3, FaultKind::Pause, "n1", "n2")];
        h.extend(probes(0, 500 * MS, Some("n2")));
        h.retain(|e| !matches!(e, Event::Probe { t, .. } if (200 * MS..290 * MS).contains(t)));
        assert!(failover(&h, BOUNDS).1.is_empty());
    }

    #[test]
    fn the_dark_window_ends_at_the_next_fault() {
        let mut h = vec![start(0, 0, FaultKind::Kill, "n2", "n2")];
        h.extend(probes(0, 100 * MS, Some("n2")));
        h.push(start(1000 * MS, 1, FaultKind::Kill, "n3", "n2"));
        h.extend(probes(1000 * MS, 1100 * MS, Some("n2")));
        h.push(Event::ChunkEnd {
            t: 1100 * MS,
            chunk: 0,
        });
        // The next chunk's probes are outside the window.
        h.extend(probes(9000 * MS, 9100 * MS, Some("n1")));
        let (samples, _) = failover(&h, BOUNDS);
        // Dark from the last probe (90 ms) to the next fault (1000 ms).
        assert_eq!(samples[0].dark_ms, 910);
        // Probes every 10 ms up to the chunk's end.
        assert_eq!(samples[1].dark_ms, 10);
    }

    #[test]
    fn two_answerers_are_found_with_their_time() {
        let h = vec![
            answer(0, Some(1), "aa"),
            answer(10 * MS, Some(2), "aa"),
            answer(11 * MS, Some(2), "bb"),
        ];
        let v = single_answerer(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].t, Some(10 * MS));
        assert!(
            v[0].detail.contains("request 2 answered by aa and bb"),
            "{v:?}"
        );
        // A handover (the new owner's announcement, then only its answers) is not.
        let h = vec![
            answer(0, Some(1), "aa"),
            answer(5 * MS, None, "bb"),
            answer(10 * MS, Some(2), "bb"),
        ];
        assert!(single_answerer(&h).is_empty());
        // Each chunk's observer numbers its requests from 1 again, on another cluster.
        let h = vec![
            answer(0, Some(1), "aa"),
            Event::ChunkEnd { t: MS, chunk: 0 },
            answer(2 * MS, Some(1), "cc"),
        ];
        assert!(single_answerer(&h).is_empty());
    }

    fn fin(node: &str, index: Option<u64>, digest: Option<&str>) -> Event {
        Event::Final {
            t: 1,
            chunk: 0,
            node: node.into(),
            digest_index: index,
            digest: digest.map(str::to_string),
            leader: Some(1),
        }
    }

    #[test]
    fn every_node_must_end_with_the_same_table() {
        let same = [
            fin("n1", Some(9), Some("ab")),
            fin("n2", Some(9), Some("ab")),
        ];
        assert!(durability(&same, 2).is_empty());
        let differ = [
            fin("n1", Some(9), Some("ab")),
            fin("n2", Some(9), Some("cd")),
        ];
        assert_eq!(durability(&differ, 2).len(), 1);
        let behind = [
            fin("n1", Some(9), Some("ab")),
            fin("n2", Some(8), Some("ab")),
        ];
        assert_eq!(durability(&behind, 2).len(), 1);
        let silent = [fin("n1", Some(9), Some("ab")), fin("n2", None, None)];
        assert_eq!(durability(&silent, 2).len(), 1);
        assert_eq!(durability(&same, 3).len(), 1, "a node missing");
    }

    #[test]
    fn routes_that_did_not_match_after_a_heal_are_violations() {
        let routes = |converged_ms| Event::Routes {
            t: 5,
            cycle: 2,
            converged_ms,
            detail: "10.77.0.240: the router has next hops {}".into(),
        };
        assert!(bgp_routes(&[routes(Some(3_000))]).is_empty());
        let v = bgp_routes(&[routes(Some(3_000)), routes(None)]);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.contains("cycle 2") && v[0].detail.contains("next hops"));
    }

    #[test]
    fn liveness_and_logs() {
        assert_eq!(liveness(&[]).len(), 1, "no verdict is a violation");
        let ok = Event::Liveness {
            t: 1,
            chunk: 0,
            ok: true,
            detail: String::new(),
        };
        assert!(liveness(&[ok]).is_empty());
        let bad = Event::BadLog {
            node: "n1".into(),
            line: "thread 'x' panicked at".into(),
        };
        assert_eq!(logs(&[bad]).len(), 1);
    }

    #[test]
    fn only_a_full_disk_may_stop_a_node() {
        let restarted = |cycle, error: Option<&str>| Event::Restarted {
            t: 5 * MS,
            cycle,
            node: "n2".into(),
            error: error.map(str::to_string),
        };
        let faults = [
            start(MS, 1, FaultKind::DiskFull, "n2", "n1"),
            start(2 * MS, 2, FaultKind::Partition, "n2", "n1"),
        ];
        let with = |e: Event| {
            let mut h = faults.to_vec();
            h.push(e);
            exits(&h)
        };
        assert!(with(restarted(1, None)).is_empty());
        let v = with(restarted(2, None));
        assert_eq!(v.len(), 1);
        assert!(
            v[0].detail.contains("cycle 2 (partition): n2 exited"),
            "{v:?}"
        );
        let v = with(restarted(1, Some("no such file")));
        assert!(
            v[0].detail.contains("did not start again: no such file"),
            "{v:?}"
        );
    }

    fn write(t: u64, end: u64, index: u64) -> Event {
        Event::Op {
            t,
            end,
            client: 0,
            id: None,
            f: "apply".into(),
            key: Some("wl/svc-1".into()),
            outcome: "ok".into(),
            log_index: Some(index),
            applied_index: None,
            linearizable: false,
            ips: vec![],
            holders: vec![],
            error: None,
        }
    }

    fn read(t: u64, index: u64, linearizable: bool, holders: Vec<Holder>) -> Event {
        Event::Op {
            t,
            end: t + 1,
            client: 1,
            id: None,
            f: "read".into(),
            key: None,
            outcome: "ok".into(),
            log_index: None,
            applied_index: Some(index),
            linearizable,
            ips: vec![],
            holders,
            error: None,
        }
    }

    fn holder(key: &str, ip: &str, share: Option<&str>, ports: &[&str]) -> Holder {
        Holder {
            key: key.into(),
            ips: vec![ip.into()],
            share: share.map(str::to_string),
            ports: ports.iter().map(|p| p.to_string()).collect(),
            op: None,
            requested: None,
        }
    }

    fn op(t: u64, f: &str, key: &str, outcome: &str, index: u64, ips: &[&str]) -> Event {
        crate::campaign::history::testing::write(t, None, f, key, outcome, index, ips)
    }

    fn final_read(t: u64, holders: Vec<Holder>) -> Event {
        let mut e = read(t, 100, true, holders);
        if let Event::Op { f, .. } = &mut e {
            *f = crate::campaign::workload::FINAL_READ.into();
        }
        e
    }

    #[test]
    fn the_last_acknowledged_write_of_each_service_is_in_the_final_read() {
        let a = "10.77.1.1";
        let history = vec![
            op(0, "apply", "wl/a", "ok", 3, &[a]),
            op(10, "apply", "wl/b", "ok", 4, &["10.77.1.2"]),
            op(20, "delete", "wl/b", "ok", 6, &[]),
            // A later invocation at a lower index does not count as the last.
            op(30, "apply", "wl/c", "ok", 9, &["10.77.1.3"]),
            op(40, "delete", "wl/c", "ok", 8, &[]),
            // Unknown outcomes and applies without an address are left out.
            op(50, "apply", "wl/d", "ok", 10, &["10.77.1.4"]),
            op(60, "delete", "wl/d", "unknown", 0, &[]),
            op(70, "apply", "wl/e", "ok", 11, &[]),
        ];
        let mut kept = history.clone();
        kept.push(final_read(
            100,
            vec![
                holder("wl/a", a, None, &["TCP/80"]),
                holder("wl/c", "10.77.1.3", None, &["TCP/80"]),
                holder("wl/e", "10.77.1.5", None, &["TCP/80"]),
            ],
        ));
        assert!(
            acknowledged_writes_kept(&kept).is_empty(),
            "{:?}",
            acknowledged_writes_kept(&kept)
        );

        // What a power cut without fsync does: the delete of b and the apply of a are gone.
        let mut lost = history.clone();
        lost.push(final_read(
            100,
            vec![
                holder("wl/b", "10.77.1.2", None, &["TCP/80"]),
                holder("wl/c", "10.77.1.3", None, &["TCP/80"]),
            ],
        ));
        let v = acknowledged_writes_kept(&lost);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].detail.contains("wl/a") && v[0].detail.contains("no address"),
            "{v:?}"
        );
        assert!(v[1].detail.contains("wl/b") && v[1].detail.contains("delete at log index 6"));

        // No final read: said, not passed.
        let v = acknowledged_writes_kept(&history);
        assert!(v[0].detail.contains("no final read"), "{v:?}");
    }

    #[test]
    fn writes_follow_real_time_and_linearizable_reads_see_them() {
        let ok = [write(0, 10, 5), write(20, 30, 7), read(40, 7, true, vec![])];
        assert!(allocation(&ok).is_empty());
        // Overlapping writes may be in either order.
        let overlap = [write(0, 30, 9), write(10, 40, 8)];
        assert!(allocation(&overlap).is_empty());
        // A write invoked after another completed, at a lower index.
        let reordered = [write(0, 10, 9), write(20, 30, 8)];
        assert_eq!(allocation(&reordered).len(), 1);
        // A linearizable read that misses a write acknowledged before it; a stale plain read
        // is allowed.
        let stale = [write(0, 10, 9), read(20, 8, true, vec![])];
        assert_eq!(allocation(&stale).len(), 1);
        let plain = [write(0, 10, 9), read(20, 8, false, vec![])];
        assert!(allocation(&plain).is_empty());
        // Log indexes start again in the next chunk's cluster.
        let chunks = [
            write(0, 10, 9),
            Event::ChunkEnd { t: 15, chunk: 0 },
            write(20, 30, 3),
            read(40, 3, true, vec![]),
        ];
        assert!(allocation(&chunks).is_empty());
    }

    #[test]
    fn linearizable_reads_never_go_back() {
        // Overlapping reads may answer in either order; a read begun after another ended may not
        // answer at a lower index. Plain reads may (a lagging follower).
        let ok = [
            read(0, 9, true, vec![]),
            read(0, 8, true, vec![]),
            read(5, 7, false, vec![]),
        ];
        assert!(allocation(&ok).is_empty());
        let back = [read(0, 9, true, vec![]), read(5, 8, true, vec![])];
        let v = allocation(&back);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("answered at index 9"), "{v:?}");
    }

    #[test]
    fn an_address_is_shared_only_by_one_key_without_a_common_port() {
        let shared = vec![
            holder("wl/a", "10.77.1.1", Some("key-a"), &["TCP/80"]),
            holder("wl/b", "10.77.1.1", Some("key-a"), &["TCP/443"]),
            holder("wl/c", "10.77.1.2", None, &["TCP/80"]),
        ];
        assert!(allocation(&[read(0, 1, false, shared)]).is_empty());
        for (b, why) in [
            (
                holder("wl/b", "10.77.1.1", Some("key-b"), &["TCP/443"]),
                "sharing keys",
            ),
            (
                holder("wl/b", "10.77.1.1", None, &["TCP/443"]),
                "sharing keys",
            ),
            (
                holder("wl/b", "10.77.1.1", Some("key-a"), &["TCP/80"]),
                "both use TCP/80",
            ),
        ] {
            let a = holder("wl/a", "10.77.1.1", Some("key-a"), &["TCP/80"]);
            let v = allocation(&[read(0, 1, false, vec![a, b])]);
            assert_eq!(v.len(), 1, "{why}");
            assert!(v[0].detail.contains(why), "{v:?}");
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
