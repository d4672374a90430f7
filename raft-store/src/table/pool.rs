//! Address pools as the allocator sees them: the ranges of an IPAddressPool and an index of the
//! addresses still free in each range.
//!
//! The index is a set of disjoint free intervals per range, so finding the lowest free address,
//! taking one and giving one back cost O(log k) for k intervals, whatever the pool's size:
//! a /8 IPv4 pool or a /64 IPv6 pool costs the same as a /24.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// IP family of an address or range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// An address as a number, with its family kept beside it.
pub fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

pub fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        // Callers only pass numbers that came from an IPv4 range, so this never truncates.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// MetalLB's avoidBuggyIPs rule: IPv4 addresses ending in .0 or .255, wherever they fall.
pub fn is_buggy(family: Family, n: u128) -> bool {
    family == Family::V4 && matches!(n & 0xff, 0 | 0xff)
}

/// How many addresses in `[start, end]` end in .0 or .255 (IPv4 only).
fn buggy_count(family: Family, start: u128, end: u128) -> u128 {
    if family == Family::V6 {
        return 0;
    }
    // Count n in [0, x] with n % 256 == r, then difference.
    let upto = |x: u128, r: u128| if x < r { 0 } else { (x - r) / 256 + 1 };
    let count = |x: u128| upto(x, 0) + upto(x, 255);
    count(end) - if start == 0 { 0 } else { count(start - 1) }
}

/// One contiguous block of addresses from `spec.addresses`: a CIDR or an `a-b` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRange {
    pub family: Family,
    pub start: u128,
    pub end: u128,
}

impl AddressRange {
    /// Parses `10.0.0.0/24`, `10.0.0.5-10.0.0.9`, `fc00::/64` or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Result<AddressRange, String> {
        let text = text.trim();
        if let Some((a, b)) = text.split_once('-') {
            let a: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| format!("{a:?} is not an IP address (range start)"))?;
            let b: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| format!("{b:?} is not an IP address (range end)"))?;
            if Family::of(&a) != Family::of(&b) {
                return Err(format!("range {text:?} mixes IPv4 and IPv6"));
            }
            let (start, end) = (to_u128(&a), to_u128(&b));
            if start > end {
                return Err(format!("range {text:?} ends before it starts"));
            }
            return Ok(AddressRange {
                family: Family::of(&a),
                start,
                end,
            });
        }
        let net: IpNet = if text.contains('/') {
            text.parse().map_err(|_| {
                format!("{text:?} is not a valid CIDR (want e.g. 192.168.10.0/24 or fc00::/64)")
            })?
        } else {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| format!("{text:?} is neither a CIDR, an a-b range nor an address"))?;
            IpNet::from(ip)
        };
        let family = Family::of(&net.addr());
        let start = to_u128(&net.network());
        let end = to_u128(&net.broadcast());
        if net.addr() != net.network() {
            return Err(format!(
                "{text:?} has host bits set (the network is {}/{})",
                net.network(),
                net.prefix_len()
            ));
        }
        Ok(AddressRange { family, start, end })
    }

    pub fn size(&self) -> u128 {
        // A full /0 IPv6 range would overflow; saturate, it is "infinite" for any purpose.
        (self.end - self.start).saturating_add(1)
    }

    pub fn contains(&self, family: Family, n: u128) -> bool {
        self.family == family && self.start <= n && n <= self.end
    }

    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }

    pub fn display(&self) -> String {
        format!(
            "{}-{}",
            from_u128(self.family, self.start),
            from_u128(self.family, self.end)
        )
    }
}

/// Disjoint inclusive intervals `start -> end` of free addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeIntervals {
    intervals: BTreeMap<u128, u128>,
    free: u128,
}

impl FreeIntervals {
    pub fn full(start: u128, end: u128) -> FreeIntervals {
        let mut intervals = BTreeMap::new();
        intervals.insert(start, end);
        FreeIntervals {
            intervals,
            free: (end - start).saturating_add(1),
        }
    }

    pub fn free_count(&self) -> u128 {
        self.free
    }

    pub fn interval_count(&self) -> usize {
        self.intervals.len()
    }

    pub fn contains(&self, n: u128) -> bool {
        matches!(self.intervals.range(..=n).next_back(), Some((_, &e)) if n <= e)
    }

    /// The lowest free address that `accept` allows. `accept` may only refuse a few addresses
    /// per interval (avoidBuggyIPs refuses at most two in a row), so this stays O(log k).
    pub fn lowest(&self, accept: impl Fn(u128) -> bool) -> Option<u128> {
        for (&s, &e) in &self.intervals {
            let mut n = s;
            loop {
                if accept(n) {
                    return Some(n);
                }
                if n == e {
                    break;
                }
                n += 1;
                if n - s > 2 {
                    // More than two refusals in a row never happens for avoidBuggyIPs; keep the
                    // promise of a bounded walk anyway.
                    break;
                }
            }
        }
        None
    }

    /// Marks `n` used. Returns false if it was not free.
    pub fn take(&mut self, n: u128) -> bool {
        let Some((&s, &e)) = self.intervals.range(..=n).next_back() else {
            return false;
        };
        if n > e {
            return false;
        }
        self.intervals.remove(&s);
        if s < n {
            self.intervals.insert(s, n - 1);
        }
        if n < e {
            self.intervals.insert(n + 1, e);
        }
        self.free -= 1;
        true
    }

    /// Marks the whole span `[start, end]` used, if it lies inside one free interval.
    /// Used to build large, partly full pools quickly (benchmarks, tests).
    pub fn take_span(&mut self, start: u128, end: u128) -> bool {
        let Some((&s, &e)) = self.intervals.range(..=start).next_back() else {
            return false;
        };
        if end > e || start > end {
            return false;
        }
        self.intervals.remove(&s);
        if s < start {
            self.intervals.insert(s, start - 1);
        }
        if end < e {
            self.intervals.insert(end + 1, e);
        }
        self.free -= end - start + 1;
        true
    }

    /// Marks `n` free again, merging with its neighbours. Returns false if it was already free.
    pub fn give_back(&mut self, n: u128) -> bool {
        if self.contains(n) {
            return false;
        }
        let mut start = n;
        let mut end = n;
        if n > 0 {
            if let Some((&s, &e)) = self.intervals.range(..n).next_back() {
                if e == n - 1 {
                    self.intervals.remove(&s);
                    start = s;
                }
            }
        }
        if let Some(next) = n.checked_add(1) {
            if let Some(e) = self.intervals.remove(&next) {
                end = e;
            }
        }
        self.intervals.insert(start, end);
        self.free += 1;
        true
    }

    /// Free addresses that avoidBuggyIPs would never hand out.
    pub fn buggy_free(&self, family: Family) -> u128 {
        self.intervals
            .iter()
            .map(|(&s, &e)| buggy_count(family, s, e))
            .sum()
    }
}

/// A pool's ranges, each with its free index, in the order of `spec.addresses`
/// (MetalLB walks them in that order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    pub name: String,
    pub avoid_buggy_ips: bool,
    pub ranges: Vec<(AddressRange, FreeIntervals)>,
}

/// Size, used and free of one family of a pool, for `get pools` and pool status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyUsage {
    pub size: u128,
    pub used: u128,
    pub free: u128,
}

impl PoolState {
    pub fn new(name: &str, ranges: &[AddressRange], avoid_buggy_ips: bool) -> PoolState {
        PoolState {
            name: name.to_string(),
            avoid_buggy_ips,
            ranges: ranges
                .iter()
                .map(|r| (*r, FreeIntervals::full(r.start, r.end)))
                .collect(),
        }
    }

    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|(r, _)| r.family == family)
    }

    /// Whether the pool may hand out this address at all (in a range, and not refused by
    /// avoidBuggyIPs).
    pub fn admits(&self, ip: &IpAddr) -> bool {
        let (family, n) = (Family::of(ip), to_u128(ip));
        !(self.avoid_buggy_ips && is_buggy(family, n))
            && self.ranges.iter().any(|(r, _)| r.contains(family, n))
    }

    /// Position of an address in the pool's walk order: (range index, address).
    pub fn position(&self, ip: &IpAddr) -> Option<(usize, u128)> {
        let (family, n) = (Family::of(ip), to_u128(ip));
        self.ranges
            .iter()
            .position(|(r, _)| r.contains(family, n))
            .map(|i| (i, n))
    }

    fn range_of_mut(&mut self, ip: &IpAddr) -> Option<&mut FreeIntervals> {
        let (family, n) = (Family::of(ip), to_u128(ip));
        self.ranges
            .iter_mut()
            .find(|(r, _)| r.contains(family, n))
            .map(|(_, f)| f)
    }

    /// The lowest free address of `family` in walk order.
    pub fn lowest_free(&self, family: Family) -> Option<IpAddr> {
        let avoid = self.avoid_buggy_ips;
        self.ranges
            .iter()
            .filter(|(r, _)| r.family == family)
            .find_map(|(_, free)| free.lowest(|n| !(avoid && is_buggy(family, n))))
            .map(|n| from_u128(family, n))
    }

    pub fn is_free(&self, ip: &IpAddr) -> bool {
        let (family, n) = (Family::of(ip), to_u128(ip));
        self.ranges
            .iter()
            .any(|(r, f)| r.contains(family, n) && f.contains(n))
    }

    pub fn take(&mut self, ip: &IpAddr) -> bool {
        let n = to_u128(ip);
        self.range_of_mut(ip).is_some_and(|f| f.take(n))
    }

    pub fn give_back(&mut self, ip: &IpAddr) -> bool {
        let n = to_u128(ip);
        self.range_of_mut(ip).is_some_and(|f| f.give_back(n))
    }

    pub fn usage(&self, family: Family) -> FamilyUsage {
        let mut u = FamilyUsage::default();
        for (r, free) in self.ranges.iter().filter(|(r, _)| r.family == family) {
            let (mut size, mut left) = (r.size(), free.free_count());
            if self.avoid_buggy_ips {
                size -= buggy_count(family, r.start, r.end);
                left -= free.buggy_free(family);
            }
            u.size = u.size.saturating_add(size);
            u.free = u.free.saturating_add(left);
        }
        u.used = u.size - u.free;
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cidrs_ranges_and_addresses() {
        let r = AddressRange::parse("192.168.10.0/24").unwrap();
        assert_eq!(
            (r.size(), r.display()),
            (256, "192.168.10.0-192.168.10.255".into())
        );
        let r = AddressRange::parse("10.0.0.5 - 10.0.0.9").unwrap();
        assert_eq!(r.size(), 5);
        let r = AddressRange::parse("fc00::/64").unwrap();
        assert_eq!(r.size(), 1u128 << 64);
        assert_eq!(AddressRange::parse("10.1.1.1").unwrap().size(), 1);
    }

    #[test]
    fn rejects_bad_ranges_with_reasons() {
        for (text, want) in [
            ("10.0.0.0/33", "not a valid CIDR"),
            ("10.0.0.1/24", "host bits set"),
            ("10.0.0.9-10.0.0.5", "ends before it starts"),
            ("10.0.0.1-fc00::1", "mixes IPv4 and IPv6"),
            ("banana", "neither a CIDR"),
            ("10.0.0.x-10.0.0.3", "not an IP address"),
        ] {
            let err = AddressRange::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn lowest_free_take_and_give_back_merge() {
        let mut f = FreeIntervals::full(10, 20);
        assert_eq!(f.lowest(|_| true), Some(10));
        assert!(f.take(10) && f.take(12) && !f.take(12));
        assert_eq!(f.lowest(|_| true), Some(11));
        assert_eq!(f.interval_count(), 2);
        assert!(f.give_back(10) && !f.give_back(10));
        assert!(f.give_back(12));
        assert_eq!((f.interval_count(), f.free_count()), (1, 11));
        assert!(!f.take(21));
        assert!(f.take_span(12, 15) && !f.take_span(14, 16));
        assert_eq!((f.lowest(|_| true), f.free_count()), (Some(10), 7));
    }

    #[test]
    fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
        let r = AddressRange::parse("10.0.0.255-10.0.1.1").unwrap();
        let mut p = PoolState::new("p", &[r], true);
        assert_eq!(p.lowest_free(Family::V4), Some(ip("10.0.1.1")));
        assert!(!p.admits(&ip("10.0.1.0")));
        let u = p.usage(Family::V4);
        assert_eq!((u.size, u.used, u.free), (1, 0, 1));
        assert!(p.take(&ip("10.0.1.1")));
        assert_eq!(p.lowest_free(Family::V4), None);
        assert_eq!(buggy_count(Family::V4, 0, 255), 2);
        assert_eq!(buggy_count(Family::V4, 1, 254), 0);
        assert_eq!(buggy_count(Family::V4, 0, (1 << 24) - 1), 2 * 65536);
    }

    #[test]
    fn walks_ranges_in_spec_order() {
        let a = AddressRange::parse("10.0.2.0/30").unwrap();
        let b = AddressRange::parse("10.0.1.0/30").unwrap();
        let p = PoolState::new("p", &[a, b], false);
        assert_eq!(p.lowest_free(Family::V4), Some(ip("10.0.2.0")));
        assert_eq!(
            p.position(&ip("10.0.1.1")),
            Some((1, to_u128(&ip("10.0.1.1"))))
        );
    }
}
