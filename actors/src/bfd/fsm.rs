//! The BFD session state machine (RFC 5880 §6.2, §6.8; RFC 5882 §3.2), asynchronous mode, no
//! I/O and no clock: events in, actions out, timers as microsecond durations the caller arms.
//!
//! ```text
//!   Received(packet) / TxTimer / DetectTimer / AdminDown / AdminUp / Reconfigure
//!        │
//!        ▼
//!   Session ──▶ Send(packet), ArmTx(µs), ArmDetect(µs), StopDetect, StateChanged{..}
//! ```
//!
//! While not Up the session transmits no faster than once a second (§6.8.3). Reaching Up, it
//! announces its configured intervals with a Poll Sequence; a peer's Poll is answered with a
//! Final at once. A remote AdminDown takes the session Down with diagnostic 3 but is not a
//! failure of the path (RFC 5882 §3.2): [`Action::StateChanged::failure`] tells the two apart.

use super::packet::{Diag, Packet, State};

/// §6.8.3: the transmit interval while the session is not Up.
pub const SLOW_TX_US: u32 = 1_000_000;

/// What a BFDProfile asks of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub detect_mult: u8,
    /// Send nothing until the peer has sent something (RFC 5880 §6.1 passive role).
    pub passive: bool,
}

impl Default for Config {
    /// MetalLB's BFDProfile defaults: 300 ms both ways, multiplier 3.
    fn default() -> Config {
        Config {
            desired_min_tx_us: 300_000,
            required_min_rx_us: 300_000,
            detect_mult: 3,
            passive: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Received(Packet),
    TxTimer,
    DetectTimer,
    /// The operator takes the session down (AdminDown is sent to the peer).
    AdminDown,
    AdminUp,
    Reconfigure(Config),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Packet),
    /// (Re)arm the transmit timer.
    ArmTx(u32),
    /// (Re)arm the detection timer.
    ArmDetect(u32),
    StopDetect,
    StateChanged {
        from: State,
        to: State,
        diag: Diag,
        /// The path failed (detection time expired, or the peer went Down on its own); false
        /// for the peer's AdminDown or our own.
        failure: bool,
    },
}

/// Negotiated figures, for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub tx_interval_us: u32,
    pub detection_time_us: u32,
    pub remote_min_rx_us: u32,
    pub remote_desired_tx_us: u32,
    pub remote_detect_mult: u8,
}

#[derive(Debug, Clone)]
pub struct Session {
    cfg: Config,
    state: State,
    remote_state: State,
    local_discr: u32,
    remote_discr: u32,
    diag: Diag,
    remote_min_rx_us: u32,
    remote_desired_tx_us: u32,
    remote_mult: u8,
    /// A Poll Sequence is in progress: packets carry P until a Final arrives.
    polling: bool,
    /// The required min RX that detection uses: the old value until the Poll for a smaller
    /// one completes (§6.8.3).
    rx_in_effect_us: u32,
    /// xorshift state for the transmit jitter (§6.8.7), seeded from the discriminator so a
    /// session is deterministic under test.
    rng: u32,
}

impl Session {
    /// A session in Down with a nonzero local discriminator; the actions start it.
    pub fn new(local_discr: u32, cfg: Config) -> (Session, Vec<Action>) {
        let mut s = Session {
            cfg,
            state: State::Down,
            remote_state: State::Down,
            local_discr: local_discr.max(1),
            remote_discr: 0,
            diag: Diag::None,
            remote_min_rx_us: 1,
            remote_desired_tx_us: 0,
            remote_mult: 0,
            polling: false,
            rx_in_effect_us: SLOW_TX_US.max(cfg.required_min_rx_us),
            rng: local_discr.max(1),
        };
        let mut out = Vec::new();
        if !cfg.passive {
            out.push(Action::ArmTx(s.next_tx()));
        }
        (s, out)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    pub fn diag(&self) -> Diag {
        self.diag
    }

    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }

    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    pub fn negotiated(&self) -> Negotiated {
        Negotiated {
            tx_interval_us: self.tx_interval(),
            detection_time_us: self.detection_time(),
            remote_min_rx_us: self.remote_min_rx_us,
            remote_desired_tx_us: self.remote_desired_tx_us,
            remote_detect_mult: self.remote_mult,
        }
    }

    /// bfd.DesiredMinTxInterval as sent: at least a second while not Up.
    fn desired_tx(&self) -> u32 {
        if self.state == State::Up {
            self.cfg.desired_min_tx_us
        } else {
            self.cfg.desired_min_tx_us.max(SLOW_TX_US)
        }
    }

    /// The interval between our packets: the slower of what we want and what the peer can
    /// take (§6.8.7).
    fn tx_interval(&self) -> u32 {
        self.desired_tx().max(self.remote_min_rx_us)
    }

    /// Asynchronous mode detection time (§6.8.4): the peer's multiplier times the slower of
    /// our required RX and its desired TX.
    fn detection_time(&self) -> u32 {
        u32::from(self.remote_mult.max(1))
            .saturating_mul(self.rx_in_effect_us.max(self.remote_desired_tx_us))
    }

    /// The next transmit interval, jittered to 75–100 % (75–90 % with multiplier 1).
    fn next_tx(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let span = if self.cfg.detect_mult == 1 { 15 } else { 25 };
        let cut = self.rng % (span + 1);
        let base = u64::from(self.tx_interval());
        (base * u64::from(100 - cut) / 100) as u32
    }

    fn packet(&self, final_: bool) -> Packet {
        Packet {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx_us: self.desired_tx(),
            required_min_rx_us: if self.state == State::AdminDown {
                0
            } else {
                self.cfg.required_min_rx_us
            },
            required_min_echo_rx_us: 0,
        }
    }

    /// Whether we may transmit periodically (§6.8.7): not in the passive role before the peer
    /// spoke, and never to a peer that asked for no packets (RemoteMinRxInterval 0).
    fn may_send(&self) -> bool {
        !(self.cfg.passive && self.remote_discr == 0) && self.remote_min_rx_us != 0
    }

    fn set_state(&mut self, to: State, diag: Diag, failure: bool, out: &mut Vec<Action>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.diag = diag;
        if to == State::Up {
            // Announce the configured (fast) intervals with a Poll; detection keeps the slow
            // RX until the Final.
            self.polling = true;
        } else {
            self.polling = false;
            self.rx_in_effect_us = SLOW_TX_US.max(self.cfg.required_min_rx_us);
        }
        if to == State::Down || to == State::AdminDown {
            out.push(Action::StopDetect);
        }
        out.push(Action::StateChanged {
            from,
            to,
            diag,
            failure,
        });
        // Tell the peer at once rather than at the next tick.
        if self.may_send() {
            out.push(Action::Send(self.packet(false)));
            out.push(Action::ArmTx(self.next_tx()));
        }
    }

    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::TxTimer => {
                if self.may_send() {
                    out.push(Action::Send(self.packet(false)));
                }
                out.push(Action::ArmTx(self.next_tx()));
            }
            Event::DetectTimer => {
                if matches!(self.state, State::Init | State::Up) {
                    self.set_state(
                        State::Down,
                        Diag::ControlDetectionTimeExpired,
                        true,
                        &mut out,
                    );
                }
                // §6.8.1: the peer is gone; it must be learnt again.
                self.remote_discr = 0;
                self.remote_state = State::Down;
                self.remote_min_rx_us = 1;
            }
            Event::AdminDown => {
                self.set_state(
                    State::AdminDown,
                    Diag::AdministrativelyDown,
                    false,
                    &mut out,
                );
            }
            Event::AdminUp => {
                if self.state == State::AdminDown {
                    self.set_state(State::Down, Diag::None, false, &mut out);
                }
            }
            Event::Reconfigure(cfg) => {
                let old = self.cfg;
                self.cfg = cfg;
                if self.state == State::Up
                    && (old.desired_min_tx_us != cfg.desired_min_tx_us
                        || old.required_min_rx_us != cfg.required_min_rx_us)
                {
                    self.polling = true;
                    out.push(Action::Send(self.packet(false)));
                }
                if old.passive && !cfg.passive {
                    out.push(Action::ArmTx(self.next_tx()));
                }
            }
            Event::Received(p) => self.received(p, &mut out),
        }
        out
    }

    fn received(&mut self, p: Packet, out: &mut Vec<Action>) {
        // §6.8.6, the session's own checks.
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            return;
        }
        if p.your_discriminator == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return;
        }
        let first = self.remote_discr == 0;
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_min_rx_us = p.required_min_rx_us;
        self.remote_desired_tx_us = p.desired_min_tx_us;
        self.remote_mult = p.detect_mult;
        if p.final_ && self.polling {
            self.polling = false;
            self.rx_in_effect_us = self.cfg.required_min_rx_us;
        }
        if self.state == State::AdminDown {
            return;
        }
        if p.state == State::AdminDown {
            if self.state != State::Down {
                // RFC 5882 §3.2: the peer was taken down on purpose; not a path failure.
                self.set_state(State::Down, Diag::NeighborSignaledSessionDown, false, out);
            }
        } else {
            match (self.state, p.state) {
                (State::Down, State::Down) => self.set_state(State::Init, Diag::None, false, out),
                (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                    self.set_state(State::Up, Diag::None, false, out)
                }
                (State::Up, State::Down) => {
                    self.set_state(State::Down, Diag::NeighborSignaledSessionDown, true, out)
                }
                _ => {}
            }
        }
        if p.poll {
            // Answer a Poll with a Final at once (§6.8.6), outside the periodic schedule.
            out.push(Action::Send(self.packet(true)));
        }
        if matches!(self.state, State::Init | State::Up) {
            out.push(Action::ArmDetect(self.detection_time()));
        }
        if first && self.cfg.passive {
            // The passive role ends with the peer's first packet.
            out.push(Action::ArmTx(self.next_tx()));
        }
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
