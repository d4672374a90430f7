//! The plan of a campaign: every fault cycle, generated up front from the seed, so a run can
//! be repeated (`--seed S`) and resumed from a cycle (`--from K`). The seed reproduces the
//! schedule, not the interleavings: real processes on a real kernel are not deterministic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What one cycle does to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL, restarted after the hold.
    Kill,
    /// SIGKILL and the link down (a machine gone), restarted with the link up after the hold.
    Crash,
    /// SIGSTOP, SIGCONT after the hold (spanning the lease and the down timeout).
    Pause,
    /// The target cut off from the other peers both ways (the client still reaches it).
    Partition,
    /// Only what the target sends to the other peers is dropped.
    PartitionOneWay,
    /// The target's link down and up several times.
    LinkFlap,
    /// A share of the frames on the target's port dropped at random.
    Loss,
    /// The target's port squeezed to a trickle (tc tbf).
    Squeeze,
    /// Leadership transferred around the cluster several times in a row.
    TransferStorm,
    /// Every node restarted in turn with SIGTERM.
    RollingRestart,
    /// Every node SIGKILLed at once (a power cut), all restarted after the hold: what was
    /// acknowledged must have been on disk.
    KillAll,
    /// The target's data directory filled to the last byte; freed after the hold, and the
    /// node restarted if it stopped.
    DiskFull,
    /// BGP mode: the target's BGP (and BFD) traffic with the router dropped silently, both
    /// ways, for the hold.
    SessionCut,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::Kill,
        FaultKind::Crash,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::PartitionOneWay,
        FaultKind::LinkFlap,
        FaultKind::Loss,
        FaultKind::Squeeze,
        FaultKind::TransferStorm,
        FaultKind::RollingRestart,
        FaultKind::KillAll,
        FaultKind::DiskFull,
        FaultKind::SessionCut,
    ];

    /// The kinds a campaign in `mode` runs unless told otherwise.
    pub fn defaults(mode: Mode) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|k| mode != Mode::L2 || *k != FaultKind::SessionCut)
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Crash => "crash",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::LinkFlap => "link-flap",
            FaultKind::Loss => "loss",
            FaultKind::Squeeze => "squeeze",
            FaultKind::TransferStorm => "transfer-storm",
            FaultKind::RollingRestart => "rolling-restart",
            FaultKind::KillAll => "kill-all",
            FaultKind::DiskFull => "disk-full",
            FaultKind::SessionCut => "session-cut",
        }
    }

    /// Whether the fault takes its target out of service, so a VIP it owns must move.
    pub fn removes_target(self) -> bool {
        matches!(
            self,
            FaultKind::Kill
                | FaultKind::Crash
                | FaultKind::Pause
                | FaultKind::Partition
                | FaultKind::PartitionOneWay
                | FaultKind::DiskFull
        )
    }

    /// Whether the fault has a single target node (the others act on the whole cluster).
    pub fn targeted(self) -> bool {
        !matches!(
            self,
            FaultKind::TransferStorm | FaultKind::RollingRestart | FaultKind::KillAll
        )
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the campaign's cluster announces its VIPs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// ARP/NDP from each VIP's owner.
    #[default]
    L2,
    /// BGP from every node to a BIRD router in the client namespace (ECMP), without BFD.
    Bgp,
    /// The same with BFD (100 ms x 3) on every session.
    BgpBfd,
}

impl Mode {
    pub fn parse(text: &str) -> anyhow::Result<Mode> {
        match text {
            "l2" => Ok(Mode::L2),
            "bgp" => Ok(Mode::Bgp),
            "bgp-bfd" => Ok(Mode::BgpBfd),
            other => anyhow::bail!("--mode {other:?}: want l2, bgp or bgp-bfd"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::L2 => "l2",
            Mode::Bgp => "bgp",
            Mode::BgpBfd => "bgp-bfd",
        }
    }

    pub fn bgp(self) -> bool {
        self != Mode::L2
    }

    /// The roles targeted faults take turns at: in BGP mode every node announces, so no
    /// node is a VIP's owner.
    fn roles(self) -> &'static [Role] {
        match self {
            Mode::L2 => &[Role::Leader, Role::Owner, Role::Follower],
            Mode::Bgp | Mode::BgpBfd => &[Role::Leader, Role::Follower],
        }
    }
}

/// Which node a fault hits, by role at the moment it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The Raft leader.
    Leader,
    /// The owner of the first watched VIP.
    Owner,
    /// A node that is neither the leader nor that owner (the leader if there is none).
    Follower,
    /// The whole cluster (faults without one target).
    Cluster,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Owner => "owner",
            Role::Follower => "follower",
            Role::Cluster => "cluster",
        }
    }
}

/// The timings of a profile, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Quiet time before each fault: (min, max).
    pub quiet: (u64, u64),
    /// How long a fault is held: (min, max).
    pub hold: (u64, u64),
}

/// `default` or `fast`: the raftlb timing profile the nodes run and the campaign's pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    Default,
    Fast,
}

impl Profile {
    pub fn parse(text: &str) -> anyhow::Result<Profile> {
        match text {
            "default" => Ok(Profile::Default),
            "fast" => Ok(Profile::Fast),
            other => anyhow::bail!("--profile {other:?}: want default or fast"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Fast => "fast",
        }
    }

    pub fn timings(self) -> Timings {
        match self {
            // Holds span the default profile's lease (≈ 0.7 s) and down timeout.
            Profile::Default => Timings {
                quiet: (300, 1500),
                hold: (300, 3000),
            },
            Profile::Fast => Timings {
                quiet: (200, 800),
                hold: (150, 1200),
            },
        }
    }
}

/// One fault cycle: quiet, inject, hold, heal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    /// Position in the plan, from 0 (`--from K` starts here).
    pub index: usize,
    pub quiet_ms: u64,
    pub kind: FaultKind,
    pub role: Role,
    pub hold_ms: u64,
    /// Kind-specific strength: loss percent, squeeze kbit/s, flaps or transfers.
    pub strength: u32,
}

/// A switch that breaks the product on purpose, so a campaign must find violations: a
/// checker that never fires proves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeControl {
    /// The answerers ignore the lease (`RAFTLB_UNSAFE_ANSWER_WITHOUT_LEASE`): a node cut off
    /// from the others keeps answering after its VIPs moved.
    AnswerWithoutLease,
    /// The log store acknowledges without flushing (`RAFTLB_UNSAFE_NO_FSYNC`): killing every
    /// node at once loses acknowledged writes.
    NoFsync,
    /// One node's clocks run at half speed (libfaketime), far outside the 1 % drift the
    /// leases allow, and the watched VIPs are moved onto it before each fault: cut off, it
    /// keeps answering on a lease the others have long seen end.
    SlowClock,
}

/// The node [`NegativeControl::SlowClock`] slows.
pub const SLOW_NODE: &str = "n1";

/// libfaketime, preloaded into the slowed node.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

impl NegativeControl {
    pub fn parse(text: &str) -> anyhow::Result<NegativeControl> {
        match text {
            "answer-without-lease" => Ok(NegativeControl::AnswerWithoutLease),
            "no-fsync" => Ok(NegativeControl::NoFsync),
            "slow-clock" => Ok(NegativeControl::SlowClock),
            other => anyhow::bail!(
                "--negative-control {other:?}: want answer-without-lease, no-fsync or slow-clock"
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NegativeControl::AnswerWithoutLease => "answer-without-lease",
            NegativeControl::NoFsync => "no-fsync",
            NegativeControl::SlowClock => "slow-clock",
        }
    }

    /// The node it breaks alone, with the environment that does it (the others run as
    /// they are).
    pub fn one_node_env(self) -> Option<(&'static str, Vec<(String, String)>)> {
        match self {
            NegativeControl::SlowClock => Some((
                SLOW_NODE,
                vec![
                    ("LD_PRELOAD".into(), LIBFAKETIME.into()),
                    // An offset of zero, and the clock at half speed (monotonic included).
                    ("FAKETIME".into(), "+0 x0.5".into()),
                ],
            )),
            _ => None,
        }
    }

    /// The environment that switches it on in every node.
    pub fn node_env(self) -> Vec<(String, String)> {
        match self {
            NegativeControl::AnswerWithoutLease => vec![(
                raftlb_actors::responder::UNSAFE_ANSWER_WITHOUT_LEASE.into(),
                "1".into(),
            )],
            NegativeControl::NoFsync => {
                vec![(raftlb_raft_store::store::UNSAFE_NO_FSYNC.into(), "1".into())]
            }
            NegativeControl::SlowClock => Vec::new(),
        }
    }
}

/// The whole schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub seed: u64,
    pub profile: Profile,
    #[serde(default)]
    pub mode: Mode,
    pub cycles: Vec<Cycle>,
    /// Set when the run is a negative control: then violations are the expected outcome.
    #[serde(default)]
    pub negative_control: Option<NegativeControl>,
    /// The commit the campaign's binaries were built from, recorded when it started.
    #[serde(default)]
    pub commit: Option<String>,
}

impl Plan {
    /// The plan of `faults` cycles for `seed`: the same seed gives the same plan. Kinds are
    /// dealt round-robin in a shuffled order per round, so every kind gets its share; targeted
    /// faults alternate roles the same way.
    pub fn generate(
        seed: u64,
        faults: usize,
        profile: Profile,
        mode: Mode,
        kinds: &[FaultKind],
    ) -> Plan {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = profile.timings();
        let roles = mode.roles();
        let mut deck: Vec<FaultKind> = Vec::new();
        let mut role_deck: Vec<Role> = Vec::new();
        let mut cycles = Vec::with_capacity(faults);
        for index in 0..faults {
            if deck.is_empty() {
                deck = kinds.to_vec();
                shuffle(&mut deck, &mut rng);
            }
            let kind = deck.pop().expect("refilled above");
            let role = if kind.targeted() {
                if role_deck.is_empty() {
                    role_deck = roles.to_vec();
                    shuffle(&mut role_deck, &mut rng);
                }
                role_deck.pop().expect("refilled above")
            } else {
                Role::Cluster
            };
            let strength = match kind {
                FaultKind::Loss => rng.random_range(5..=50),
                FaultKind::Squeeze => rng.random_range(64..=512),
                FaultKind::LinkFlap => rng.random_range(3..=8),
                FaultKind::TransferStorm => rng.random_range(2..=5),
                _ => 0,
            };
            cycles.push(Cycle {
                index,
                quiet_ms: rng.random_range(t.quiet.0..=t.quiet.1),
                kind,
                role,
                hold_ms: rng.random_range(t.hold.0..=t.hold.1),
                strength,
            });
        }
        Plan {
            seed,
            profile,
            mode,
            cycles,
            negative_control: None,
            commit: None,
        }
    }
}

/// Fisher–Yates with the plan's generator.
fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_plan_and_every_kind_its_share() {
        let kinds = FaultKind::defaults(Mode::L2);
        assert_eq!(kinds.len(), 12);
        let a = Plan::generate(7, 120, Profile::Default, Mode::L2, &kinds);
        let b = Plan::generate(7, 120, Profile::Default, Mode::L2, &kinds);
        assert_eq!(a, b);
        assert_ne!(
            a,
            Plan::generate(8, 120, Profile::Default, Mode::L2, &kinds)
        );
        for kind in kinds {
            let n = a.cycles.iter().filter(|c| c.kind == kind).count();
            assert_eq!(n, 10, "{kind}");
        }
        let targeted: Vec<&Cycle> = a.cycles.iter().filter(|c| c.kind.targeted()).collect();
        for role in [Role::Leader, Role::Owner, Role::Follower] {
            let n = targeted.iter().filter(|c| c.role == role).count();
            assert_eq!(n, 30, "{role:?}");
        }
        let t = Profile::Default.timings();
        for c in &a.cycles {
            assert!((t.quiet.0..=t.quiet.1).contains(&c.quiet_ms));
            assert!((t.hold.0..=t.hold.1).contains(&c.hold_ms));
            assert_eq!(c.kind.targeted(), c.role != Role::Cluster);
        }
        // The plan survives its JSON file.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), a);
    }

    #[test]
    fn a_bgp_plan_cuts_sessions_and_never_targets_an_owner() {
        let kinds = FaultKind::defaults(Mode::Bgp);
        assert!(kinds.contains(&FaultKind::SessionCut));
        let p = Plan::generate(7, 130, Profile::Default, Mode::Bgp, &kinds);
        assert_eq!(p.mode, Mode::Bgp);
        assert_eq!(
            p.cycles
                .iter()
                .filter(|c| c.kind == FaultKind::SessionCut)
                .count(),
            10
        );
        assert!(p.cycles.iter().all(|c| c.role != Role::Owner));
    }
}
