//! Wall-clock time, for what is stamped into commands and shown to people. Leases never use it:
//! they run on the monotonic clock (`raftlb_actors::lease::MonotonicClock`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds as nanoseconds, the unit of the monotonic clock.
pub fn ms_to_ns(v: u64) -> u64 {
    v * 1_000_000
}
