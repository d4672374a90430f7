//! The allocation model: the workload's writes replayed per Service in log order, and every
//! read (linearizable or not: each answers from one applied index) held against that replay at
//! its index. It knows only the workload's own rules, not the production table:
//!
//! * a read at index `a` shows, for each Service, the state of its last acknowledged write at
//!   an index up to `a`, or of a write whose outcome the client never learnt (it may have
//!   landed anywhere): never an older write, a refused one, one at a higher index, or one
//!   not yet invoked when the read ended. Each write carries its operation id in the
//!   manifest, so the read says which write its state came from;
//! * a Service whose last acknowledged write up to `a` was an apply is in the read, unless a
//!   delete of unknown outcome may have removed it;
//! * an address, once given, stays with the Service until a write changes it: the read shows
//!   the addresses the write's reply gave;
//! * every address is in the workload's pool, and a Service that requested one
//!   (`metallb.io/loadBalancerIPs`) got that one or none.
//!
//! Which Services may share an address is checked over the same reads by
//! [`super::check::allocation`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::check::{chunk_at, chunk_ends, Invariant, Violation};
use super::history::Event;
use super::workload::{Holder, FINAL_READ, POOL_CIDR};

/// One write of the workload as the history has it.
struct Write<'a> {
    f: &'a str,
    key: &'a str,
    outcome: &'a str,
    index: Option<u64>,
    t: u64,
    ips: &'a [String],
}

/// Something per Service key.
type PerService<'a, T> = BTreeMap<&'a str, T>;

/// One read: (invoked, completed, applied index, Services).
type Read<'a> = (u64, u64, u64, &'a [Holder]);

/// What the replay compared: Service states in reads, and the violations found.
#[derive(Debug, Default)]
pub struct Replay {
    pub compared: usize,
    pub violations: Vec<Violation>,
}

fn in_pool(ip: &str) -> bool {
    let Some((base, len)) = POOL_CIDR.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(len), Ok(ip)) = (
        base.parse::<Ipv4Addr>(),
        len.parse::<u32>(),
        ip.parse::<Ipv4Addr>(),
    ) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}

pub fn replay(events: &[Event]) -> Replay {
    let ends = chunk_ends(events);
    // Per chunk: writes by id, acknowledged writes per Service by index, and the times
    // deletes of unknown outcome were invoked, per Service.
    let mut writes: BTreeMap<usize, BTreeMap<&str, Write>> = BTreeMap::new();
    let mut acked: BTreeMap<usize, PerService<Vec<(u64, &str)>>> = BTreeMap::new();
    let mut unknown_deletes: BTreeMap<usize, PerService<Vec<u64>>> = BTreeMap::new();
    let mut reads: BTreeMap<usize, Vec<Read>> = BTreeMap::new();
    for e in events {
        let Event::Op {
            t,
            end,
            id,
            f,
            key,
            outcome,
            log_index,
            applied_index,
            ips,
            holders,
            ..
        } = e
        else {
            continue;
        };
        let chunk = chunk_at(*t, &ends);
        match (f.as_str(), key, id) {
            ("read" | FINAL_READ, _, _) => {
                if let (Some(a), "ok") = (applied_index, outcome.as_str()) {
                    reads
                        .entry(chunk)
                        .or_default()
                        .push((*t, *end, *a, holders));
                }
            }
            ("apply" | "delete", Some(key), Some(id)) => {
                let w = Write {
                    f,
                    key,
                    outcome,
                    index: log_index.filter(|_| outcome == "ok"),
                    t: *t,
                    ips,
                };
                if let Some(i) = w.index {
                    acked
                        .entry(chunk)
                        .or_default()
                        .entry(key)
                        .or_default()
                        .push((i, id));
                }
                if f == "delete" && outcome == "unknown" {
                    unknown_deletes
                        .entry(chunk)
                        .or_default()
                        .entry(key)
                        .or_default()
                        .push(*t);
                }
                writes.entry(chunk).or_default().insert(id, w);
            }
            _ => {}
        }
    }
    for list in acked.values_mut().flat_map(|m| m.values_mut()) {
        list.sort_unstable();
    }
    let mut out = Replay::default();
    let none = BTreeMap::new();
    for (chunk, reads) in &reads {
        let writes = writes.get(chunk).unwrap_or(&none);
        let acked = acked.get(chunk);
        let keys: BTreeSet<&str> = writes.values().map(|w| w.key).collect();

        for (t, end, a, holders) in reads {
            let mut fail = |detail: String| {
                out.violations.push(Violation {
                    invariant: Invariant::AllocationModel,
                    t: Some(*t),
                    detail: format!("read at index {a}: {detail}"),
                })
            };
            let shown: BTreeMap<&str, &Holder> =
                holders.iter().map(|h| (h.key.as_str(), h)).collect();
            for key in keys
                .iter()
                .chain(shown.keys().filter(|k| !keys.contains(*k)))
            {
                out.compared += 1;
                // The last acknowledged write of this Service up to the read's index.
                let last = acked
                    .and_then(|m| m.get(key))
                    .and_then(|l| l.iter().rev().find(|(i, _)| i <= a))
                    .and_then(|(i, id)| Some((*i, writes.get(id)?)));
                let Some(h) = shown.get(key) else {
                    if let Some((i, w)) = last.filter(|(_, w)| w.f == "apply") {
                        let maybe_deleted = unknown_deletes
                            .get(chunk)
                            .and_then(|m| m.get(key))
                            .is_some_and(|ts| ts.iter().any(|d| d < end));
                        if !maybe_deleted {
                            fail(format!(
                                "{key} is missing, yet its apply {} was acknowledged at index {i}",
                                w.ips.join(" ")
                            ));
                        }
                    }
                    continue;
                };
                for ip in h.ips.iter().filter(|ip| !in_pool(ip)) {
                    fail(format!("{key} holds {ip}, outside the pool {POOL_CIDR}"));
                }
                if let Some(want) = h.requested.as_deref().filter(|_| !h.ips.is_empty()) {
                    if h.ips.iter().any(|ip| ip != want) {
                        fail(format!(
                            "{key} requested {want} and holds {}",
                            h.ips.join(" ")
                        ));
                    }
                }
                let Some(w) = h.op.as_deref().and_then(|op| writes.get(op)) else {
                    fail(format!(
                        "{key} shows write {:?}, which no client of this chunk made",
                        h.op
                    ));
                    continue;
                };
                let op = h.op.as_deref().unwrap_or_default();
                if w.f != "apply" || w.key != *key {
                    fail(format!(
                        "{key} shows operation {op}, a {} of {}",
                        w.f, w.key
                    ));
                } else if w.t > *end {
                    fail(format!(
                        "{key} shows write {op}, invoked after the read ended"
                    ));
                } else if w.outcome == "fail" {
                    fail(format!("{key} shows write {op}, which was refused"));
                }
                if let Some(i) = w.index {
                    if i > *a {
                        fail(format!(
                            "{key} shows write {op}, applied later at index {i}"
                        ));
                    }
                    if !w.ips.is_empty() && h.ips != w.ips {
                        fail(format!(
                            "{key} holds {} but write {op} was given {} and nothing wrote it since",
                            h.ips.join(" "),
                            w.ips.join(" ")
                        ));
                    }
                }
                if let Some((i, newer)) = last.filter(|(i, _)| Some(*i) > w.index) {
                    // Acknowledged at a higher index than what the read shows; a write of
                    // unknown outcome may still have landed after it.
                    if w.index.is_some() {
                        fail(format!(
                            "{key} shows write {op} at index {}, but its {} at index {i} was acknowledged (stale)",
                            w.index.unwrap_or(0),
                            newer.f
                        ));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(t: u64, id: &str, f: &str, key: &str, outcome: &str, i: u64, ips: &[&str]) -> Event {
        crate::campaign::history::testing::write(t, Some(id), f, key, outcome, i, ips)
    }

    fn held(key: &str, op: &str, ips: &[&str]) -> Holder {
        Holder {
            key: key.into(),
            ips: ips.iter().map(|i| i.to_string()).collect(),
            share: None,
            ports: vec!["TCP/80".into()],
            op: Some(op.into()),
            requested: None,
        }
    }

    fn read(t: u64, index: u64, holders: Vec<Holder>) -> Event {
        Event::Op {
            t,
            end: t + 5,
            client: 1,
            id: Some(format!("1-{t}")),
            f: "read".into(),
            key: None,
            outcome: "ok".into(),
            log_index: None,
            applied_index: Some(index),
            linearizable: false,
            ips: vec![],
            holders,
            error: None,
        }
    }

    fn details(events: &[Event]) -> Vec<String> {
        replay(events)
            .violations
            .into_iter()
            .map(|v| v.detail)
            .collect()
    }

    #[test]
    fn reads_that_follow_the_log_pass() {
        let a = "wl/a";
        let ok = vec![
            write(0, "0-1", "apply", a, "ok", 5, &["10.77.1.1"]),
            read(10, 4, vec![]),
            read(20, 5, vec![held(a, "0-1", &["10.77.1.1"])]),
            // An apply of unknown outcome may show up, at any index.
            write(30, "0-2", "apply", a, "unknown", 0, &[]),
            read(40, 6, vec![held(a, "0-2", &["10.77.1.1"])]),
            write(50, "0-3", "delete", a, "ok", 8, &[]),
            read(60, 8, vec![]),
            // A pending apply may get an address later.
            write(70, "0-4", "apply", a, "ok", 9, &[]),
            read(80, 9, vec![held(a, "0-4", &[])]),
            read(90, 10, vec![held(a, "0-4", &["10.77.1.2"])]),
        ];
        let r = replay(&ok);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.compared, 6);
    }

    #[test]
    fn stale_lost_future_refused_and_moved_states_are_found() {
        let a = "wl/a";
        let base = vec![
            write(0, "0-1", "apply", a, "ok", 5, &["10.77.1.1"]),
            write(10, "0-2", "apply", a, "ok", 7, &["10.77.1.1"]),
            write(20, "0-3", "apply", a, "fail", 0, &[]),
        ];
        let with = |r: Event| {
            let mut h = base.clone();
            h.push(r);
            details(&h)
        };
        let v = with(read(100, 7, vec![held(a, "0-1", &["10.77.1.1"])]));
        assert!(v.iter().any(|d| d.contains("(stale)")), "{v:?}");
        let v = with(read(100, 6, vec![]));
        assert!(v.iter().any(|d| d.contains("is missing")), "{v:?}");
        let v = with(read(100, 6, vec![held(a, "0-2", &["10.77.1.1"])]));
        assert!(
            v.iter().any(|d| d.contains("applied later at index 7")),
            "{v:?}"
        );
        let v = with(read(100, 7, vec![held(a, "0-3", &["10.77.1.1"])]));
        assert!(v.iter().any(|d| d.contains("was refused")), "{v:?}");
        let v = with(read(100, 7, vec![held(a, "0-2", &["10.77.1.9"])]));
        assert!(
            v.iter().any(|d| d.contains("nothing wrote it since")),
            "{v:?}"
        );
        let v = with(read(100, 7, vec![held(a, "9-9", &["10.77.1.1"])]));
        assert!(v.iter().any(|d| d.contains("no client")), "{v:?}");

        let v = with(read(4, 7, vec![held(a, "0-2", &["10.77.1.1"])]));
        assert!(
            v.iter().any(|d| d.contains("invoked after the read ended")),
            "{v:?}"
        );
        let v = with(read(100, 7, vec![held(a, "0-2", &["10.77.2.1"])]));
        assert!(v.iter().any(|d| d.contains("outside the pool")), "{v:?}");
        let mut requested = held(a, "0-2", &["10.77.1.1"]);
        requested.requested = Some("10.77.1.4".into());
        let v = with(read(100, 7, vec![requested]));
        assert!(v.iter().any(|d| d.contains("requested 10.77.1.4")), "{v:?}");
    }
}
