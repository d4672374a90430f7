//! One answerer per VIP, as the nodes themselves recorded it: every node writes an audit line
//! for each reply it sends (with the lease deadline it sent it under) and each time it
//! registers or withdraws a VIP ([`raftlb_actors::responder::AUDIT_FILE`]), on the lab's one
//! clock. A reply at `t` under a lease until `d` shows the node may answer the VIP from `t`
//! until `d`, or until it withdraws the VIP if that comes first: its answering window. No two
//! nodes' windows for one VIP may overlap, and no reply may go out after its own lease ended.
//! Unlike the client's view ([`super::check::single_answerer`]), this sees replies that were
//! lost on the way and windows in which nobody happened to ask.
//!
//! The table view: every audited reply by a node falls where the table's ownership history
//! (`get vips --history`) names that node the VIP's owner, give or take [`TABLE_SLACK_US`]
//! (the history's times are the leader's wall clock in milliseconds, put on the monotonic
//! clock). A release in between does not end it: the owner answers until it has applied the
//! release, and nobody else may be named before it confirmed.

use std::collections::BTreeMap;

use super::check::{chunk_at, chunk_ends, Invariant, Violation};
use super::history::Event;

/// What the audit found, and how many replies it covered.
#[derive(Debug, Default)]
pub struct Audited {
    pub replies: usize,
    pub violations: Vec<Violation>,
}

/// One node's answering window for a VIP: [start, end] in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: u64,
    end: u64,
}

/// How far a reply may fall from the table's time of an ownership change.
pub const TABLE_SLACK_US: u64 = 5_000;

pub fn windows(events: &[Event]) -> Audited {
    let ends = chunk_ends(events);
    // (chunk, VIP) -> node -> its audit lines in time order: (t, reply deadline or None for
    // a withdrawal; registrations only open what replies show).
    type Lines<'a> = BTreeMap<&'a str, Vec<(u64, Option<u64>)>>;
    let mut by_vip: BTreeMap<(usize, &str), Lines> = BTreeMap::new();
    let mut out = Audited::default();
    for e in events {
        let Event::Audit {
            t,
            node,
            vip,
            what,
            deadline,
        } = e
        else {
            continue;
        };
        let line = match (what.as_str(), deadline) {
            ("reply", Some(d)) => (*t, Some(*d)),
            ("withdraw", _) => (*t, None),
            _ => continue,
        };
        by_vip
            .entry((chunk_at(*t, &ends), vip))
            .or_default()
            .entry(node)
            .or_default()
            .push(line);
    }
    // (chunk, VIP) -> the table's assignments in time order: (time, owner).
    let mut assigned: BTreeMap<(usize, &str), Vec<(u64, &str)>> = BTreeMap::new();
    for e in events {
        if let Event::Move {
            t,
            vip,
            to: Some(to),
            ..
        } = e
        {
            assigned
                .entry((chunk_at(*t, &ends), vip))
                .or_default()
                .push((*t, to));
        }
    }
    for list in assigned.values_mut() {
        list.sort_unstable();
    }
    for ((chunk, vip), nodes) in &by_vip {
        let Some(owners) = assigned.get(&(*chunk, *vip)) else {
            continue;
        };
        // The node the table last named before `t`.
        let owner_at = |t: u64| {
            let n = owners.partition_point(|(at, _)| *at <= t);
            (n > 0).then(|| owners[n - 1].1)
        };
        for (node, lines) in nodes {
            for (t, _) in lines.iter().filter(|(_, d)| d.is_some()) {
                // Before the first change the history kept: nothing to hold it against.
                if *t < owners[0].0 {
                    continue;
                }
                let (early, late) = (
                    owner_at(t.saturating_sub(TABLE_SLACK_US)),
                    owner_at(t + TABLE_SLACK_US),
                );
                if early != Some(*node) && late != Some(*node) {
                    out.violations.push(Violation {
                        invariant: Invariant::AnswerWindows,
                        t: Some(*t),
                        detail: format!(
                            "chunk {chunk}: {node} replied for {vip} at {t}, where the table names {} the owner",
                            early.unwrap_or("nobody")
                        ),
                    });
                }
            }
        }
    }
    for ((chunk, vip), nodes) in by_vip {
        // Each node's windows, merged where they touch.
        let mut all: Vec<(Window, &str)> = Vec::new();
        for (node, mut lines) in nodes {
            lines.sort_unstable();
            // The first withdrawal at or after each line.
            let mut next_withdrawal = vec![None; lines.len()];
            let mut next = None;
            for (i, (t, deadline)) in lines.iter().enumerate().rev() {
                if deadline.is_none() {
                    next = Some(*t);
                }
                next_withdrawal[i] = next;
            }
            let mut merged: Vec<Window> = Vec::new();
            for (i, (t, deadline)) in lines.iter().enumerate() {
                let Some(d) = deadline else {
                    continue;
                };
                out.replies += 1;
                if d < t {
                    out.violations.push(Violation {
                        invariant: Invariant::AnswerWindows,
                        t: Some(*t),
                        detail: format!(
                            "chunk {chunk}: {node} replied for {vip} {} ms after its lease ended",
                            (t - d) / 1000
                        ),
                    });
                }
                let end = next_withdrawal[i].map_or(*d, |w| w.min(*d)).max(*t);
                match merged.last_mut() {
                    Some(last) if *t <= last.end => last.end = last.end.max(end),
                    _ => merged.push(Window { start: *t, end }),
                }
            }
            all.extend(merged.into_iter().map(|w| (w, node)));
        }
        all.sort_by_key(|(w, _)| w.start);
        // The furthest window end of each node seen so far, in start order.
        let mut reach: BTreeMap<&str, Window> = BTreeMap::new();
        for (w, node) in all {
            for (other, seen) in &reach {
                if *other != node && seen.end >= w.start {
                    out.violations.push(Violation {
                        invariant: Invariant::AnswerWindows,
                        t: Some(w.start),
                        detail: format!(
                            "chunk {chunk}: {vip}: {node} replied at {} while {other} could still answer until {} ({} ms of overlap)",
                            w.start,
                            seen.end,
                            (seen.end.min(w.end) - w.start) / 1000
                        ),
                    });
                }
            }
            let r = reach.entry(node).or_insert(w);
            r.end = r.end.max(w.end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    fn reply(t: u64, node: &str, deadline: u64) -> Event {
        Event::Audit {
            t: t * MS,
            node: node.into(),
            vip: "10.77.0.240".into(),
            what: "reply".into(),
            deadline: Some(deadline * MS),
        }
    }

    fn withdraw(t: u64, node: &str) -> Event {
        Event::Audit {
            t: t * MS,
            node: node.into(),
            vip: "10.77.0.240".into(),
            what: "withdraw".into(),
            deadline: None,
        }
    }

    #[test]
    fn a_handover_after_the_lease_or_a_withdrawal_passes() {
        // n1 answers under a lease to 700 ms and is cut off; n2 starts at 760 ms. Then n2
        // withdraws at 1000 ms (a move) and n3 starts right after.
        let h = vec![
            reply(100, "n1", 600),
            reply(200, "n1", 700),
            reply(760, "n2", 1400),
            reply(900, "n2", 1500),
            withdraw(1000, "n2"),
            reply(1001, "n3", 1600),
        ];
        let a = windows(&h);
        assert!(a.violations.is_empty(), "{:?}", a.violations);
        assert_eq!(a.replies, 5);
    }

    fn assigned(t: u64, node: &str) -> Event {
        Event::Move {
            t: t * MS,
            vip: "10.77.0.240".into(),
            epoch: t,
            to: Some(node.into()),
        }
    }

    #[test]
    fn replies_follow_the_tables_ownership_history() {
        let ok = vec![
            assigned(50, "n1"),
            reply(100, "n1", 600),
            // Released at 650 (n1 may answer until it applied it), n2 named at 760.
            Event::Move {
                t: 650 * MS,
                vip: "10.77.0.240".into(),
                epoch: 2,
                to: None,
            },
            reply(700, "n1", 900),
            withdraw(702, "n1"),
            assigned(760, "n2"),
            reply(762, "n2", 1400),
        ];
        let a = windows(&ok);
        assert!(a.violations.is_empty(), "{:?}", a.violations);
        // n1 still answering 20 ms after the table named n2.
        let mut late = ok.clone();
        late.push(reply(780, "n1", 900));
        let v = windows(&late).violations;
        assert!(
            v.iter()
                .any(|v| v.detail.contains("where the table names n2 the owner")),
            "{v:?}"
        );
    }

    #[test]
    fn overlapping_windows_and_a_reply_past_the_lease_are_found() {
        // n2 starts while n1's lease (to 700 ms) still runs.
        let h = vec![reply(200, "n1", 700), reply(650, "n2", 1300)];
        let a = windows(&h);
        assert_eq!(a.violations.len(), 1, "{:?}", a.violations);
        assert!(a.violations[0].detail.contains(
            "n2 replied at 650000 while n1 could still answer until 700000 (50 ms of overlap)"
        ));
        // A reply sent 30 ms after the lease ended (the negative control's kind).
        let a = windows(&[reply(730, "n1", 700)]);
        assert!(a.violations[0]
            .detail
            .contains("30 ms after its lease ended"));
        // The same VIP on two nodes in different chunks (two clusters) is no overlap.
        let h = vec![
            reply(200, "n1", 700),
            Event::ChunkEnd {
                t: 300 * MS,
                chunk: 0,
            },
            reply(400, "n2", 1000),
        ];
        assert!(windows(&h).violations.is_empty());
    }
}
