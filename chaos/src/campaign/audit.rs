//! One answerer per VIP, as the nodes themselves recorded it: every node writes an audit line
//! for each reply it sends (with the lease deadline it sent it under) and each time it
//! registers or withdraws a VIP ([`raftlb_actors::responder::AUDIT_FILE`]), on the lab's one
//! clock. A reply at `t` under a lease until `d` shows the node may answer the VIP from `t`
//! until `d`, or until it withdraws the VIP if that comes first: its answering window. No two
//! nodes' windows for one VIP may overlap, and no reply may go out after its own lease ended.
//! Unlike the client's view ([`super::check::single_answerer`]), this sees replies that were
//! lost on the way and windows in which nobody happened to ask.

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
