//! What the table keeps beside its data so that the work after a command is proportional to
//! what the command changed: where each VIP stands (owned by whom, unowned, orphaned), the
//! EndpointSlices of each Service, and a journal of what each log entry touched.
//!
//! All of it is derived from the replicated data and the entries applied: it is not part of a
//! snapshot (`#[serde(skip)]`) and is rebuilt when a table is restored from one
//! ([`AllocationTable::restored`]). A journal that does not reach back far enough answers
//! [`Changes::All`], so a reader that fell behind starts over from the whole table.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use super::objects::{Kind, ObjectRef, ObjectSpec};
use super::AllocationTable;

/// How many VIPs and Service keys the journal holds before it forgets its oldest entries.
pub const JOURNAL_ITEMS: usize = 65_536;
/// How many log entries the journal holds at most.
pub const JOURNAL_ENTRIES: usize = 4_096;

/// What changed after some log index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Anything may have changed (configuration, a restore, or a journal that forgot).
    All,
    /// Only these VIPs (owner, users, eligibility inputs) and these Services (state), and
    /// whether some node was registered or changed its facts, liveness or drain (which may
    /// give a VIP nobody could own a home).
    Some {
        vips: BTreeSet<IpAddr>,
        services: BTreeSet<String>,
        nodes: bool,
    },
}

impl Changes {
    fn none() -> Changes {
        Changes::Some {
            vips: BTreeSet::new(),
            services: BTreeSet::new(),
            nodes: false,
        }
    }

    fn len(&self) -> usize {
        match self {
            Changes::All => 1,
            Changes::Some {
                vips,
                services,
                nodes,
            } => vips.len() + services.len() + usize::from(*nodes),
        }
    }

    fn merge(&mut self, other: &Changes) {
        match (&mut *self, other) {
            (Changes::All, _) => {}
            (_, Changes::All) => *self = Changes::All,
            (
                Changes::Some {
                    vips,
                    services,
                    nodes,
                },
                Changes::Some {
                    vips: v,
                    services: s,
                    nodes: n,
                },
            ) => {
                vips.extend(v);
                services.extend(s.iter().cloned());
                *nodes |= n;
            }
        }
    }
}

/// What each recent log entry touched, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Journal {
    entries: VecDeque<(u64, Changes)>,
    /// Entries up to this index are forgotten (dropped, or before a restore).
    forgotten_through: u64,
    items: usize,
}

impl Journal {
    fn current(&mut self, index: u64) -> &mut Changes {
        if self.entries.back().is_none_or(|(i, _)| *i != index) {
            self.entries.push_back((index, Changes::none()));
        }
        &mut self.entries.back_mut().expect("pushed above").1
    }

    fn touch(&mut self, index: u64, f: impl FnOnce(&mut Changes) -> bool) {
        if f(self.current(index)) {
            self.items += 1;
            self.trim();
        } else if self
            .entries
            .back()
            .is_some_and(|(_, c)| *c == Changes::none())
        {
            // Nothing new: leave no empty entry behind.
            self.entries.pop_back();
        }
    }

    pub(super) fn touch_vip(&mut self, index: u64, ip: IpAddr) {
        self.touch(index, |c| match c {
            Changes::All => false,
            Changes::Some { vips, .. } => vips.insert(ip),
        });
    }

    pub(super) fn touch_service(&mut self, index: u64, key: &str) {
        self.touch(index, |c| match c {
            Changes::All => false,
            Changes::Some { services, .. } => {
                !services.contains(key) && services.insert(key.to_string())
            }
        });
    }

    pub(super) fn touch_nodes(&mut self, index: u64) {
        self.touch(index, |c| match c {
            Changes::All => false,
            Changes::Some { nodes, .. } => !std::mem::replace(nodes, true),
        });
    }

    pub(super) fn touch_all(&mut self, index: u64) {
        let items = self.items;
        let c = self.current(index);
        let dropped = c.len().min(items);
        *c = Changes::All;
        self.items = items - dropped + 1;
    }

    /// Forgets the oldest entries while the journal holds too much. An entry that alone holds
    /// too much becomes [`Changes::All`].
    fn trim(&mut self) {
        while self.items > JOURNAL_ITEMS || self.entries.len() > JOURNAL_ENTRIES {
            if self.entries.len() == 1 {
                let index = self.entries[0].0;
                self.touch_all(index);
                return;
            }
            let (index, c) = self.entries.pop_front().expect("more than one entry");
            self.items -= c.len().min(self.items);
            self.forgotten_through = index;
        }
    }

    /// What entries after `since` touched.
    pub(super) fn since(&self, since: u64) -> Changes {
        if since < self.forgotten_through {
            return Changes::All;
        }
        let mut out = Changes::none();
        for (_, c) in self.entries.iter().rev().take_while(|(i, _)| *i > since) {
            out.merge(c);
            if out == Changes::All {
                break;
            }
        }
        out
    }

    fn forget_through(&mut self, index: u64) {
        *self = Journal {
            forgotten_through: index,
            ..Journal::default()
        };
    }
}

/// Where a VIP stands, for the planner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct VipIndex {
    /// Allocated VIPs by owner.
    pub(super) by_owner: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Allocated VIPs nobody owns.
    pub(super) unowned: BTreeSet<IpAddr>,
    /// The unowned VIPs whose last owner released them and may not have stopped yet: they
    /// wait for a confirmation that comes with renewals and time, not with log entries.
    pub(super) awaiting: BTreeSet<IpAddr>,
    /// VIPs with an owner and no Service any more.
    pub(super) orphaned: BTreeSet<IpAddr>,
}

impl VipIndex {
    fn set(&mut self, ip: IpAddr, slot: &VipSlot, present: bool) {
        let (owner, allocated, released) = (slot.0.as_deref(), slot.1, slot.2);
        if owner.is_none() && allocated && released {
            set_membership(&mut self.awaiting, ip, present);
        }
        let changed = match (owner, allocated) {
            (Some(o), true) => {
                let set = self.by_owner.entry(o.to_string()).or_default();
                let changed = if present {
                    set.insert(ip)
                } else {
                    set.remove(&ip)
                };
                if set.is_empty() {
                    self.by_owner.remove(o);
                }
                changed
            }
            (None, true) => set_membership(&mut self.unowned, ip, present),
            (Some(_), false) => set_membership(&mut self.orphaned, ip, present),
            (None, false) => true,
        };
        debug_assert!(changed, "VIP index out of step at {ip}");
    }
}

fn set_membership(set: &mut BTreeSet<IpAddr>, ip: IpAddr, present: bool) -> bool {
    if present {
        set.insert(ip)
    } else {
        set.remove(&ip)
    }
}

/// Everything derived: see the module header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Indexes {
    pub(super) vips: VipIndex,
    /// Service key -> its EndpointSlices.
    pub(super) slices: BTreeMap<String, BTreeSet<ObjectRef>>,
    pub(super) journal: Journal,
}

/// (owner, allocated, released by a node) of a VIP, captured before a change so that
/// [`AllocationTable::refile`] can move it in the index.
pub(super) type VipSlot = (Option<String>, bool, bool);

impl AllocationTable {
    /// Rebuilds what is derived after the table was decoded from a snapshot covering the log up
    /// to `index`. Readers of the journal from before `index` start over.
    pub fn restored(&mut self, index: u64) {
        let mut ix = Indexes::default();
        for ip in self.vips.keys() {
            ix.vips.set(*ip, &self.slot(ip), true);
        }
        for (r, obj) in &self.objects {
            if let ObjectSpec::EndpointSlice(s) = &obj.spec {
                ix.slices
                    .entry(format!("{}/{}", r.namespace, s.service))
                    .or_default()
                    .insert(r.clone());
            }
        }
        ix.journal.forget_through(index);
        self.index = ix;
    }

    /// What changed after log index `since` (None: a reader that has seen nothing).
    pub fn changes_since(&self, since: Option<u64>) -> Changes {
        match since {
            None => Changes::All,
            Some(s) => self.index.journal.since(s),
        }
    }

    pub(super) fn slot(&self, ip: &IpAddr) -> VipSlot {
        let rec = self.vips.get(ip);
        (
            rec.and_then(|r| r.owner.clone()),
            self.addresses.contains_key(ip),
            rec.is_some_and(|r| r.released.is_some()),
        )
    }

    /// Moves `ip` in the index from where it stood (`before`) to where it stands now, and
    /// records it as touched by the entry being applied.
    pub(super) fn refile(&mut self, ip: IpAddr, before: VipSlot) {
        let now = self.slot(&ip);
        if now != before {
            let ix = &mut self.index.vips;
            ix.set(ip, &before, false);
            ix.set(ip, &now, true);
        }
        self.touch_vip(ip);
    }

    pub(super) fn touch_vip(&mut self, ip: IpAddr) {
        self.index.journal.touch_vip(self.log_index, ip);
    }

    pub(super) fn touch_service(&mut self, key: &str) {
        self.index.journal.touch_service(self.log_index, key);
    }

    pub(super) fn touch_all(&mut self) {
        self.index.journal.touch_all(self.log_index);
    }

    /// A node was registered or changed its facts, liveness or drain.
    pub(super) fn touch_nodes(&mut self) {
        self.index.journal.touch_nodes(self.log_index);
    }

    /// Touches every VIP `node` owns (its facts changed).
    pub(super) fn touch_owned_by(&mut self, node: &str) {
        let owned: Vec<IpAddr> = self
            .index
            .vips
            .by_owner
            .get(node)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for ip in owned {
            self.touch_vip(ip);
        }
    }

    /// Files an EndpointSlice under its Service (or takes it out), and touches the Service's
    /// addresses: who may announce them changed.
    pub(super) fn file_slice(&mut self, r: &ObjectRef, service: &str, present: bool) {
        let key = format!("{}/{}", r.namespace, service);
        let set = self.index.slices.entry(key.clone()).or_default();
        if present {
            set.insert(r.clone());
        } else {
            set.remove(r);
        }
        if set.is_empty() {
            self.index.slices.remove(&key);
        }
        let ips = match self.services.get(&key).map(|e| &e.state) {
            Some(super::ServiceState::Allocated { ips, .. }) => ips.clone(),
            _ => Vec::new(),
        };
        for ip in ips {
            self.touch_vip(ip);
        }
    }

    /// Nodes with a ready endpoint of the Service `key`.
    pub(super) fn ready_nodes(&self, key: &str) -> BTreeSet<&str> {
        let mut nodes = BTreeSet::new();
        for r in self.index.slices.get(key).into_iter().flatten() {
            if let Some(ObjectSpec::EndpointSlice(s)) = self.objects.get(r).map(|o| &o.spec) {
                for ep in s.endpoints.iter().filter(|e| e.ready) {
                    nodes.extend(ep.node_name.as_deref());
                }
            }
        }
        nodes
    }

    /// Configuration objects of one kind, in name order.
    pub(super) fn objects_of(
        &self,
        kind: Kind,
    ) -> impl Iterator<Item = &super::objects::Object> + '_ {
        let from = ObjectRef {
            kind,
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(from..)
            .take_while(move |(r, _)| r.kind == kind)
            .map(|(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(i))
    }

    #[test]
    fn journal_answers_what_entries_after_an_index_touched() {
        let mut j = Journal::default();
        j.touch_vip(1, ip(1));
        j.touch_vip(2, ip(2));
        j.touch_service(2, "ns/a");
        j.touch_vip(3, ip(3));
        let Changes::Some { vips, services, .. } = j.since(1) else {
            panic!("expected a list");
        };
        assert_eq!(vips, [ip(2), ip(3)].into());
        assert_eq!(services, ["ns/a".to_string()].into());
        assert_eq!(j.since(3), Changes::none());
        j.touch_all(4);
        assert_eq!(j.since(3), Changes::All);
        assert_eq!(j.since(4), Changes::none());
    }

    #[test]
    fn journal_that_forgot_answers_all() {
        let mut j = Journal::default();
        for i in 0..(JOURNAL_ENTRIES as u64 + 10) {
            j.touch_vip(i + 1, ip(i as u32));
        }
        assert_eq!(j.since(5), Changes::All, "entry 6 was forgotten");
        assert!(matches!(
            j.since(JOURNAL_ENTRIES as u64),
            Changes::Some { .. }
        ));
        j.forget_through(100_000);
        assert_eq!(j.since(99_999), Changes::All);
        assert_eq!(j.since(100_000), Changes::none());
    }

    #[test]
    fn one_entry_touching_too_much_becomes_all() {
        let mut j = Journal::default();
        for i in 0..(JOURNAL_ITEMS as u32 + 1) {
            j.touch_vip(7, ip(i));
        }
        assert_eq!(j.since(6), Changes::All);
        assert_eq!(j.items, 1);
    }
}
