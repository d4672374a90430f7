//! Two sessions back to back on a simulated link with a virtual clock: the whole protocol
//! without sockets or time.

use std::collections::BTreeMap;

use super::*;
use crate::bfd::packet::{Diag, Packet, State};

const LATENCY_US: u64 = 100;

#[derive(Debug, Clone)]
enum Due {
    Deliver(usize, Packet),
    Tx(usize, u64),
    Detect(usize, u64),
}

struct Link {
    sides: [Session; 2],
    now: u64,
    queue: BTreeMap<(u64, u64), Due>,
    seq: u64,
    /// Current generation of each side's timers: an older one is a cancelled timer.
    tx_gen: [u64; 2],
    detect_gen: [u64; 2],
    /// Frames from side i are lost while cut[i].
    cut: [bool; 2],
    changes: Vec<(u64, usize, State, State, Diag, bool)>,
    sent: [Vec<Packet>; 2],
}

impl Link {
    fn new(a: Config, b: Config) -> Link {
        let (sa, aa) = Session::new(0x1111, a);
        let (sb, ab) = Session::new(0x2222, b);
        let mut l = Link {
            sides: [sa, sb],
            now: 0,
            queue: BTreeMap::new(),
            seq: 0,
            tx_gen: [0; 2],
            detect_gen: [0; 2],
            cut: [false; 2],
            changes: Vec::new(),
            sent: [Vec::new(), Vec::new()],
        };
        l.apply(0, aa);
        l.apply(1, ab);
        l
    }

    fn at(&mut self, t: u64, due: Due) {
        self.seq += 1;
        self.queue.insert((t, self.seq), due);
    }

    fn apply(&mut self, side: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(p) => {
                    self.sent[side].push(p);
                    if !self.cut[side] {
                        self.at(self.now + LATENCY_US, Due::Deliver(1 - side, p));
                    }
                }
                Action::ArmTx(us) => {
                    self.tx_gen[side] += 1;
                    let g = self.tx_gen[side];
                    self.at(self.now + u64::from(us), Due::Tx(side, g));
                }
                Action::ArmDetect(us) => {
                    self.detect_gen[side] += 1;
                    let g = self.detect_gen[side];
                    self.at(self.now + u64::from(us), Due::Detect(side, g));
                }
                Action::StopDetect => self.detect_gen[side] += 1,
                Action::StateChanged {
                    from,
                    to,
                    diag,
                    failure,
                } => self.changes.push((self.now, side, from, to, diag, failure)),
            }
        }
    }

    fn event(&mut self, side: usize, e: Event) {
        let actions = self.sides[side].handle(e);
        self.apply(side, actions);
    }

    /// Runs the simulation until `until` µs.
    fn run(&mut self, until: u64) {
        while let Some((&(t, seq), _)) = self.queue.iter().next() {
            if t > until {
                break;
            }
            let due = self.queue.remove(&(t, seq)).expect("present");
            self.now = t;
            match due {
                Due::Deliver(side, p) => self.event(side, Event::Received(p)),
                Due::Tx(side, g) if g == self.tx_gen[side] => self.event(side, Event::TxTimer),
                Due::Detect(side, g) if g == self.detect_gen[side] => {
                    self.event(side, Event::DetectTimer)
                }
                _ => {}
            }
        }
        self.now = until;
    }

    fn states(&self) -> (State, State) {
        (self.sides[0].state(), self.sides[1].state())
    }
}

fn fast() -> Config {
    Config {
        desired_min_tx_us: 100_000,
        required_min_rx_us: 100_000,
        detect_mult: 3,
        passive: false,
    }
}

#[test]
fn two_sessions_come_up_then_run_at_the_negotiated_rate() {
    let mut l = Link::new(fast(), fast());
    l.run(3_000_000);
    assert_eq!(l.states(), (State::Up, State::Up));
    // Down -> Init -> Up on one side, Down -> Up on the other, nothing else.
    assert!(l.changes.len() <= 4, "{:?}", l.changes);
    let n = l.sides[0].negotiated();
    assert_eq!(n.tx_interval_us, 100_000);
    assert_eq!(
        n.detection_time_us, 300_000,
        "3 x max(100 ms, 100 ms) after the Poll"
    );
    assert_eq!(n.remote_detect_mult, 3);
    // While not Up nothing went faster than once a second; once Up, 100 ms less jitter.
    let before_up: Vec<&Packet> = l.sent[0].iter().filter(|p| p.state != State::Up).collect();
    assert!(before_up.iter().all(|p| p.desired_min_tx_us == 1_000_000));
    let sent_before = l.sent[0].len();
    l.run(4_000_000);
    let per_second = l.sent[0].len() - sent_before;
    assert!(
        (10..=14).contains(&per_second),
        "{per_second} packets in a second at 100 ms"
    );
    // The Poll that announced the fast rate was answered with a Final.
    assert!(l.sent[0].iter().any(|p| p.poll) && l.sent[1].iter().any(|p| p.final_));
}

#[test]
fn silence_for_the_detection_time_takes_the_session_down_as_a_failure() {
    let mut l = Link::new(fast(), fast());
    l.run(3_000_000);
    assert_eq!(l.states(), (State::Up, State::Up));
    l.cut = [false, true];
    let cut_at = l.now;
    l.run(cut_at + 1_000_000);
    let down = l
        .changes
        .iter()
        .find(|c| c.1 == 0 && c.3 == State::Down)
        .cloned()
        .expect("side 0 went down");
    assert_eq!((down.4, down.5), (Diag::ControlDetectionTimeExpired, true));
    let took = down.0 - cut_at;
    assert!(
        (200_000..=300_000 + LATENCY_US).contains(&took),
        "detected after {took} us (detection time 300 ms)"
    );
    // Side 1 hears side 0 say Down: it goes Down too, diagnostic 3, a failure.
    let other = l
        .changes
        .iter()
        .find(|c| c.1 == 1 && c.3 == State::Down)
        .cloned();
    assert_eq!(
        other.map(|c| (c.4, c.5)),
        Some((Diag::NeighborSignaledSessionDown, true))
    );
    // The link heals: both come back.
    l.cut = [false, false];
    l.run(l.now + 5_000_000);
    assert_eq!(l.states(), (State::Up, State::Up));
}

#[test]
fn a_remote_admin_down_is_not_a_failure_and_the_session_returns() {
    let mut l = Link::new(fast(), fast());
    l.run(3_000_000);
    l.event(1, Event::AdminDown);
    l.run(l.now + 1_000_000);
    let down = l
        .changes
        .iter()
        .find(|c| c.1 == 0 && c.3 == State::Down)
        .cloned()
        .expect("side 0 went down");
    assert_eq!((down.4, down.5), (Diag::NeighborSignaledSessionDown, false));
    assert_eq!(l.sides[1].state(), State::AdminDown);
    // While AdminDown the session asks for no packets (RequiredMinRx 0).
    assert!(l.sent[1].last().is_some_and(|p| p.required_min_rx_us == 0));
    l.event(1, Event::AdminUp);
    l.run(l.now + 5_000_000);
    assert_eq!(l.states(), (State::Up, State::Up));
}

#[test]
fn a_passive_session_waits_for_the_peer() {
    let passive = Config {
        passive: true,
        ..fast()
    };
    let mut l = Link::new(passive, passive);
    l.run(5_000_000);
    assert!(l.sent[0].is_empty() && l.sent[1].is_empty());
    assert_eq!(l.states(), (State::Down, State::Down));
    let mut l = Link::new(passive, fast());
    l.run(5_000_000);
    assert_eq!(l.states(), (State::Up, State::Up));
}

#[test]
fn a_new_rate_is_announced_with_a_poll_and_both_follow() {
    let mut l = Link::new(fast(), fast());
    l.run(3_000_000);
    let slow = Config {
        desired_min_tx_us: 500_000,
        required_min_rx_us: 500_000,
        ..fast()
    };
    let polls_before = l.sent[0].iter().filter(|p| p.poll).count();
    l.event(0, Event::Reconfigure(slow));
    l.run(l.now + 3_000_000);
    assert!(l.sent[0].iter().filter(|p| p.poll).count() > polls_before);
    assert_eq!(
        l.sides[1].negotiated().tx_interval_us,
        500_000,
        "side 1 honours the new RX"
    );
    assert_eq!(l.sides[0].negotiated().detection_time_us, 1_500_000);
    assert_eq!(l.states(), (State::Up, State::Up));
}

#[test]
fn packets_for_someone_else_or_out_of_turn_change_nothing() {
    let (mut s, _) = Session::new(7, fast());
    let stray = Packet {
        diag: Diag::None,
        state: State::Up,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 9,
        your_discriminator: 8,
        desired_min_tx_us: 1,
        required_min_rx_us: 1,
        required_min_echo_rx_us: 0,
    };
    assert!(
        s.handle(Event::Received(stray)).is_empty(),
        "not our discriminator"
    );
    let unaddressed_up = Packet {
        your_discriminator: 0,
        ..stray
    };
    assert!(
        s.handle(Event::Received(unaddressed_up)).is_empty(),
        "Up without your discriminator"
    );
    assert_eq!(s.state(), State::Down);
    assert_eq!(s.remote_discriminator(), 0);
}
