//! The planner: which node owns each VIP (DESIGN.md §3). Pure: given the table and what the
//! leader knows about releases, it returns the assignments to commit. Sticky (an owner keeps a
//! VIP while it may), break-before-make (a live owner releases first), fewest VIPs first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::eligibility::Eligibility;
use super::index::Changes;
use super::ownership::{AssignVip, Released, VipRecord};
use super::AllocationTable;

/// Plans owners for every VIP, with the table's liveness (see [`plan_changes`]).
pub fn plan(
    table: &AllocationTable,
    confirmed: &dyn Fn(&IpAddr, &Released) -> bool,
) -> Vec<AssignVip> {
    plan_changes(table, &[], None, confirmed).assignments
}

/// What a planner pass decided, and how many VIPs it looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub assignments: Vec<AssignVip>,
    pub examined: usize,
}

/// Plans owners.
///
/// - `liveness` overrides the table's: the changes the leader commits together with the plan
///   (no copy of the table is made to apply them first).
/// - `since` is the applied index of the last plan the leader committed (or found empty). Then
///   only the VIPs whose plan can differ from that one are looked at: those the entries after
///   it touched, those whose Service is gone, those of nodes that may not own (down, drained),
///   the unowned waiting for their releaser's confirmation, and the other unowned ones only
///   if some node changed (registered, facts, liveness, drain): the last plan found no node
///   for them, and nothing that decides eligibility changed since. Every other VIP kept its
///   owner, its users and its eligibility inputs, and the planner is sticky, so it would plan
///   nothing for them. `None`, or a configuration change since, plans every VIP.
/// - `confirmed(vip, released)` says whether the node that released `vip` is known to have
///   stopped answering (it renewed having applied the release, or its last lease has run out);
///   until then the VIP stays unowned.
pub fn plan_changes(
    table: &AllocationTable,
    liveness: &[(String, bool)],
    since: Option<u64>,
    confirmed: &dyn Fn(&IpAddr, &Released) -> bool,
) -> Planned {
    let e = Eligibility::new(table);
    let live = |n: &str| {
        table.nodes.get(n).is_some_and(|r| {
            let told = liveness.iter().rev().find(|(m, _)| m == n).map(|(_, l)| *l);
            told.unwrap_or(r.live)
        })
    };
    let usable = |n: &str| live(n) && table.nodes.get(n).is_some_and(|r| !r.draining);
    let ix = &table.index.vips;
    let mut load: BTreeMap<&str, usize> = table
        .nodes
        .keys()
        .filter(|n| usable(n))
        .map(|n| (n.as_str(), ix.by_owner.get(n).map_or(0, BTreeSet::len)))
        .collect();
    let candidates: Vec<(&IpAddr, &VipRecord)> = match table.changes_since(since) {
        Changes::All => table.vips.iter().collect(),
        Changes::Some {
            mut vips, nodes, ..
        } => {
            if nodes || !liveness.is_empty() {
                vips.extend(&ix.unowned);
            } else {
                vips.extend(&ix.awaiting);
            }
            vips.extend(&ix.orphaned);
            for (n, owned) in &ix.by_owner {
                if !usable(n) {
                    vips.extend(owned);
                }
            }
            vips.iter()
                .filter_map(|ip| table.vips.get_key_value(ip))
                .collect()
        }
    };
    let examined = candidates.len();
    let mut out = Vec::new();
    for (vip, rec) in candidates {
        let next = rec.epoch + 1;
        let assign = |node: Option<&str>, cause: String| AssignVip {
            vip: *vip,
            node: node.map(str::to_string),
            epoch: next,
            cause,
        };
        let allocated = table.addresses.contains_key(vip);
        if let Some(owner) = rec.owner.as_deref() {
            let moving = rec.move_to.as_deref().filter(|t| *t != owner);
            let problem = if !allocated {
                Some("no Service holds the address any more".to_string())
            } else if !live(owner) {
                Some(format!("node {owner} is down"))
            } else if !usable(owner) {
                Some(format!("node {owner} is drained"))
            } else if let Some(t) = moving {
                Some(format!("operator moves it to {t}"))
            } else {
                e.check(vip, owner)
                    .err()
                    .map(|r| format!("node {owner} is no longer eligible: {r}"))
            };
            let Some(cause) = problem else {
                continue; // sticky
            };
            if live(owner) || !allocated {
                // Break before make: the owner stops first; someone else takes it once it
                // has confirmed.
                out.push(assign(None, cause));
                if let Some(c) = load.get_mut(owner) {
                    *c = c.saturating_sub(1);
                }
                continue;
            }
            // The owner is down: its lease ended before the leader declared it down.
            let target = pick(&e, vip, rec.move_to.as_deref(), &load, &usable);
            if let Some(t) = target {
                *load.get_mut(t).expect("usable nodes are in load") += 1;
            }
            out.push(assign(target, cause));
            continue;
        }
        if !allocated {
            continue;
        }
        if let Some(r) = &rec.released {
            if live(&r.node) && !confirmed(vip, r) {
                continue;
            }
        }
        if let Some(t) = pick(&e, vip, rec.move_to.as_deref(), &load, &usable) {
            *load.get_mut(t).expect("usable nodes are in load") += 1;
            let cause = match &rec.released {
                Some(r) => format!("taken over from {}", r.node),
                None if rec.epoch == 0 => "new VIP".to_string(),
                None => "an eligible node is available".to_string(),
            };
            out.push(assign(Some(t), cause));
        }
    }
    Planned {
        assignments: out,
        examined,
    }
}

/// The operator's target if eligible, else the eligible node with the fewest VIPs (ties by
/// name).
fn pick<'a>(
    e: &Eligibility<'a>,
    vip: &IpAddr,
    wanted: Option<&str>,
    load: &BTreeMap<&'a str, usize>,
    usable: &dyn Fn(&str) -> bool,
) -> Option<&'a str> {
    let ok = |n: &str| usable(n) && e.check(vip, n).is_ok();
    if let Some(w) = wanted.filter(|w| ok(w)) {
        return load.keys().copied().find(|n| *n == w);
    }
    load.iter()
        .filter(|(n, _)| ok(n))
        .min_by_key(|(n, c)| (**c, **n))
        .map(|(n, _)| *n)
}
