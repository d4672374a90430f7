//! Adj-RIB-Out of one session: what the peer should have (`desired`), what it was sent
//! (`sent`), and the prefixes where the two differ. A flush turns the difference into packed
//! UPDATEs; a session that goes down forgets `sent`, so everything is sent again when it comes
//! back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use ipnet::IpNet;

use super::codec::{EncodeError, Encoding, PathAttrs};

#[derive(Debug, Default)]
pub struct AdjRibOut {
    desired: BTreeMap<IpNet, Arc<PathAttrs>>,
    sent: BTreeMap<IpNet, Arc<PathAttrs>>,
    dirty: BTreeSet<IpNet>,
}

/// What one flush put on the wire.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub messages: Vec<Bytes>,
    pub announced: usize,
    pub withdrawn: usize,
}

impl AdjRibOut {
    /// Sets (Some) or removes (None) one prefix of the desired set.
    pub fn set(&mut self, prefix: IpNet, attrs: Option<Arc<PathAttrs>>) {
        let changed = match &attrs {
            Some(a) => self.desired.insert(prefix, a.clone()).as_deref() != Some(a),
            None => self.desired.remove(&prefix).is_some(),
        };
        if changed {
            self.dirty.insert(prefix);
        }
    }

    /// Replaces the whole desired set.
    pub fn replace(&mut self, desired: BTreeMap<IpNet, Arc<PathAttrs>>) {
        for prefix in self.desired.keys().chain(desired.keys()) {
            if self.desired.get(prefix) != desired.get(prefix) {
                self.dirty.insert(*prefix);
            }
        }
        self.desired = desired;
    }

    pub fn desired(&self) -> &BTreeMap<IpNet, Arc<PathAttrs>> {
        &self.desired
    }

    pub fn sent(&self) -> &BTreeMap<IpNet, Arc<PathAttrs>> {
        &self.sent
    }

    /// Prefixes whose desired state has not reached the peer yet.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// The session went down: the peer drops what it learnt from us, so everything desired is
    /// pending again.
    pub fn reset(&mut self) {
        self.sent.clear();
        self.dirty = self.desired.keys().copied().collect();
    }

    /// Sends what differs, as few UPDATEs as the attribute sets allow: withdrawals first (per
    /// family), then announcements grouped by attributes. Prefixes this session cannot carry
    /// (family not negotiated, no next hop) stay pending.
    pub fn flush(&mut self, enc: &Encoding) -> Result<Flushed, EncodeError> {
        let mut withdraw: [Vec<IpNet>; 2] = Default::default();
        let mut announce: BTreeMap<(bool, Arc<PathAttrs>), Vec<IpNet>> = BTreeMap::new();
        let mut done = Vec::new();
        for prefix in &self.dirty {
            if !enc.carries(prefix) {
                continue;
            }
            let v6 = matches!(prefix, IpNet::V6(_));
            match self.desired.get(prefix) {
                Some(attrs) => {
                    if self.sent.get(prefix) != Some(attrs) {
                        announce
                            .entry((v6, attrs.clone()))
                            .or_default()
                            .push(*prefix);
                    }
                }
                None => {
                    if self.sent.contains_key(prefix) {
                        withdraw[usize::from(v6)].push(*prefix);
                    }
                }
            }
            done.push(*prefix);
        }
        let mut out = Flushed::default();
        for list in &withdraw {
            out.messages.extend(enc.withdraw(list)?);
            out.withdrawn += list.len();
        }
        for ((_, attrs), list) in &announce {
            out.messages.extend(enc.announce(attrs, list)?);
            out.announced += list.len();
        }
        for prefix in done {
            self.dirty.remove(&prefix);
            match self.desired.get(&prefix) {
                Some(a) => {
                    self.sent.insert(prefix, a.clone());
                }
                None => {
                    self.sent.remove(&prefix);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::MAX_MESSAGE_LEN;

    fn enc() -> Encoding {
        Encoding {
            local_asn: 64513,
            ibgp: false,
            four_octet_as: true,
            next_hop_v4: Some("10.77.0.11".parse().unwrap()),
            next_hop_v6: None,
            ipv4: true,
            ipv6: true,
            max_len: MAX_MESSAGE_LEN,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_change_is_sent_once_and_a_session_reset_sends_it_again() {
        let mut rib = AdjRibOut::default();
        let a = Arc::new(PathAttrs::default());
        rib.set(net("198.51.100.10/32"), Some(a.clone()));
        rib.set(net("198.51.100.11/32"), Some(a.clone()));
        let first = rib.flush(&enc()).unwrap();
        assert_eq!((first.announced, first.messages.len()), (2, 1));
        // Setting the same attributes again is no change.
        rib.set(net("198.51.100.10/32"), Some(a.clone()));
        assert_eq!(rib.pending(), 0);
        assert!(rib.flush(&enc()).unwrap().messages.is_empty());
        rib.set(net("198.51.100.10/32"), None);
        let second = rib.flush(&enc()).unwrap();
        assert_eq!((second.withdrawn, second.announced), (1, 0));
        rib.reset();
        assert_eq!(rib.pending(), 1);
        assert_eq!(rib.flush(&enc()).unwrap().announced, 1);
    }

    #[test]
    fn prefixes_the_session_cannot_carry_stay_pending() {
        let mut rib = AdjRibOut::default();
        rib.set(
            net("2001:db8::10/128"),
            Some(Arc::new(PathAttrs::default())),
        );
        rib.set(
            net("198.51.100.10/32"),
            Some(Arc::new(PathAttrs::default())),
        );
        let out = rib.flush(&enc()).unwrap();
        assert_eq!(out.announced, 1);
        assert_eq!(rib.pending(), 1);
        // An announce-then-withdraw before any flush sends nothing.
        let mut rib = AdjRibOut::default();
        rib.set(
            net("198.51.100.12/32"),
            Some(Arc::new(PathAttrs::default())),
        );
        rib.set(net("198.51.100.12/32"), None);
        assert!(rib.flush(&enc()).unwrap().messages.is_empty());
    }

    #[test]
    fn replace_marks_only_what_differs() {
        let mut rib = AdjRibOut::default();
        let a = Arc::new(PathAttrs::default());
        let b = Arc::new(PathAttrs {
            communities: vec![(64512 << 16) | 1],
            ..PathAttrs::default()
        });
        rib.set(net("198.51.100.1/32"), Some(a.clone()));
        rib.set(net("198.51.100.2/32"), Some(a.clone()));
        rib.flush(&enc()).unwrap();
        let next: BTreeMap<_, _> = [
            (net("198.51.100.1/32"), a.clone()),
            (net("198.51.100.2/32"), b.clone()),
            (net("198.51.100.3/32"), a.clone()),
        ]
        .into();
        rib.replace(next);
        assert_eq!(rib.pending(), 2);
        let out = rib.flush(&enc()).unwrap();
        // Two attribute sets: two UPDATEs.
        assert_eq!((out.announced, out.messages.len()), (2, 2));
        assert_eq!(rib.sent().len(), 3);
    }
}
