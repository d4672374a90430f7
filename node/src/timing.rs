//! Raft and lease timing (DESIGN.md §3): the two profiles and the inequalities fencing relies
//! on, checked at start-up before any socket is bound.

/// Clock drift allowed between two nodes' monotonic clocks, and a fixed margin on top.
const DRIFT_PERCENT: u64 = 1;
const MARGIN_MS: u64 = 20;

/// Raft and lease timing, in milliseconds. Two named profiles; the inequalities of
/// DESIGN.md §3 are checked by [`Timing::check`] at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    /// E: openraft's leader lease (followers refuse votes for E after a heartbeat).
    pub election_max_ms: u64,
    /// L_lead: how long a quorum contact keeps the leader answering.
    pub leader_lease_ms: u64,
    /// L_fol: how long a grant keeps a non-leader answering.
    pub follower_lease_ms: u64,
    pub renew_every_ms: u64,
    /// D: no renewal for this long and a node is declared down.
    pub down_after_ms: u64,
}

impl Timing {
    pub fn profile(name: &str) -> Option<Timing> {
        match name {
            "default" => Some(Timing {
                heartbeat_ms: 50,
                election_min_ms: 150,
                election_max_ms: 250,
                leader_lease_ms: 250,
                follower_lease_ms: 625,
                renew_every_ms: 150,
                down_after_ms: 725,
            }),
            "fast" => Some(Timing {
                heartbeat_ms: 15,
                election_min_ms: 60,
                election_max_ms: 100,
                leader_lease_ms: 100,
                follower_lease_ms: 250,
                renew_every_ms: 60,
                down_after_ms: 300,
            }),
            _ => None,
        }
    }

    /// The inequalities fencing relies on, each with the reason it matters.
    pub fn check(&self) -> Result<(), String> {
        let t = self;
        let rules: [(bool, String); 6] = [
            (
                t.heartbeat_ms * 3 <= t.election_min_ms,
                format!(
                    "heartbeat {} ms x 3 must not exceed election_min {} ms, or followers elect while the leader is alive",
                    t.heartbeat_ms, t.election_min_ms
                ),
            ),
            (
                t.election_min_ms < t.election_max_ms,
                format!(
                    "election_min {} ms must be below election_max {} ms",
                    t.election_min_ms, t.election_max_ms
                ),
            ),
            (
                t.leader_lease_ms <= t.election_max_ms,
                format!(
                    "leader lease {} ms must not exceed election_max {} ms (openraft's vote lease), or an old leader answers after a new one is elected",
                    t.leader_lease_ms, t.election_max_ms
                ),
            ),
            (
                t.follower_lease_ms >= 2 * t.election_max_ms,
                format!(
                    "follower lease {} ms must be at least 2 x election_max {} ms, so a leader crash does not darken every VIP",
                    t.follower_lease_ms, t.election_max_ms
                ),
            ),
            (
                t.renew_every_ms * 3 <= t.follower_lease_ms,
                format!(
                    "renew_every {} ms x 3 must not exceed the follower lease {} ms",
                    t.renew_every_ms, t.follower_lease_ms
                ),
            ),
            (
                t.down_after_ms >= t.expiry_bound_ms(),
                format!(
                    "down_after {} ms must be at least the follower lease {} ms + {DRIFT_PERCENT}% drift + {MARGIN_MS} ms = {} ms, or a node's VIPs move while it may still answer",
                    t.down_after_ms,
                    t.follower_lease_ms,
                    t.expiry_bound_ms()
                ),
            ),
        ];
        match rules.into_iter().find(|(ok, _)| !ok) {
            None => Ok(()),
            Some((_, why)) => Err(why),
        }
    }

    /// A leader's lease, from a quorum round sent at t_s, has surely ended by t_s + this. A
    /// new leader waits this long after its election before it takes the previous leader's
    /// VIPs: the previous leader may have voted for it while its own lease still ran.
    pub fn leader_expiry_bound_ms(&self) -> u64 {
        self.leader_lease_ms + self.leader_lease_ms * DRIFT_PERCENT / 100 + MARGIN_MS
    }

    /// After a grant received at t (leader's clock), the node's lease has surely ended by
    /// t + this.
    pub fn expiry_bound_ms(&self) -> u64 {
        self.follower_lease_ms + self.follower_lease_ms * DRIFT_PERCENT / 100 + MARGIN_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_profiles_satisfy_the_inequalities() {
        for p in ["default", "fast"] {
            let t = Timing::profile(p).unwrap();
            assert_eq!(t.check(), Ok(()), "{p}");
        }
    }

    #[test]
    fn each_broken_inequality_is_named() {
        let base = Timing::profile("default").unwrap();
        type Breaker = fn(&mut Timing);
        let cases: [(Breaker, &str); 5] = [
            (|t| t.leader_lease_ms = 300, "leader lease 300 ms"),
            (|t| t.follower_lease_ms = 400, "follower lease 400 ms"),
            (|t| t.down_after_ms = 640, "down_after 640 ms"),
            (|t| t.renew_every_ms = 300, "renew_every 300 ms"),
            (|t| t.heartbeat_ms = 60, "heartbeat 60 ms"),
        ];
        for (break_it, want) in cases {
            let mut t = base;
            break_it(&mut t);
            let e = t.check().unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
