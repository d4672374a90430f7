//! The clock and the lease every answer is checked against.
//!
//! A lease is one atomic deadline on a monotonic clock. The Raft side moves it (a grant from
//! the leader, or the leader's own quorum contact); the responders read it for every packet,
//! so a process that was paused or cut off and wakes up late finds the deadline passed and
//! stays silent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Monotonic nanoseconds. Injected so tests can drive time.
pub trait Clock: Send + Sync + 'static {
    fn now_ns(&self) -> u64;
}

/// `CLOCK_MONOTONIC` through `Instant`, counted from the clock's creation.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    epoch: Instant,
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            epoch: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// A deadline; valid strictly before it.
#[derive(Debug, Default)]
pub struct Lease {
    deadline_ns: AtomicU64,
}

impl Lease {
    pub fn new() -> Lease {
        Lease::default()
    }

    pub fn valid_at(&self, now_ns: u64) -> bool {
        now_ns < self.deadline_ns.load(Ordering::Acquire)
    }

    pub fn deadline_ns(&self) -> u64 {
        self.deadline_ns.load(Ordering::Acquire)
    }

    /// Moves the deadline later, never earlier.
    pub fn extend_to(&self, deadline_ns: u64) {
        self.deadline_ns.fetch_max(deadline_ns, Ordering::AcqRel);
    }

    /// Sets the deadline, earlier or later (a leader's lease replaces a follower grant).
    pub fn set(&self, deadline_ns: u64) {
        self.deadline_ns.store(deadline_ns, Ordering::Release);
    }

    /// Time left at `now_ns`, zero once expired.
    pub fn remaining(&self, now_ns: u64) -> Duration {
        Duration::from_nanos(self.deadline_ns().saturating_sub(now_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_valid_strictly_before_its_deadline_and_only_extends() {
        let l = Lease::new();
        assert!(!l.valid_at(0), "a new lease is expired");
        l.extend_to(100);
        assert!(l.valid_at(99));
        assert!(!l.valid_at(100));
        l.extend_to(50);
        assert_eq!(l.deadline_ns(), 100, "extend never shortens");
        l.set(10);
        assert!(!l.valid_at(10));
        assert_eq!(l.remaining(4), Duration::from_nanos(6));
    }
}
