//! Counters the loops keep for `/metrics`: what the leader's planner and this node's announcer
//! do, so that "work proportional to what changed" can be seen from outside.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Stats {
    /// Planner passes run by this peer while leading.
    pub plans: AtomicU64,
    /// Their total duration.
    pub plan_ns: AtomicU64,
    /// VIPs they looked at, summed.
    pub plan_vips: AtomicU64,
    /// VIPs this node's announcer holds (answers for while its lease holds).
    pub announcing: AtomicU64,
    /// Syncs of the announcer with the whole table, and with what the applied entries touched.
    pub syncs_full: AtomicU64,
    pub syncs_partial: AtomicU64,
}

impl Stats {
    pub fn planned(&self, took: Duration, examined: usize) {
        self.plans.fetch_add(1, Ordering::Relaxed);
        self.plan_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.plan_vips.fetch_add(examined as u64, Ordering::Relaxed);
    }
}
