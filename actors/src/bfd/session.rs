//! `BfdSession`: the actor of one BFD session (node, peer address). It owns the state machine
//! (`fsm`), the sending socket and the two timers; the node's `BfdListener` hands it the
//! packets addressed to it. Every change of state goes to its subscribers (the BGP sessions
//! with that peer), which tear their session down when the path failed.

use std::net::IpAddr;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::UdpSocket;
use tracing::{info, warn};

use super::fsm::{self, Action, Config, Event};
use super::io;
use super::packet::{Diag, Packet, State};

/// A packet for this session, from the listener.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rx(pub Packet);

/// A datagram from this session's peer that was discarded, and why.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Discarded(pub String);

/// What a subscriber hears: the session's new state, and whether leaving Up was a failure of
/// the path (detection time, or the peer going Down on its own) rather than an AdminDown.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct BfdChanged {
    pub peer: IpAddr,
    pub state: State,
    pub failure: bool,
}

/// Who hears about changes from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Vec<Recipient<BfdChanged>>);

#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Config);

/// Sends AdminDown (so the peer does not count it as a failure) and stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

#[derive(Message)]
#[rtype(result = "BfdStatus")]
pub struct GetStatus;

/// One BFD session as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BfdStatus {
    pub peer: String,
    pub state: &'static str,
    pub remote_state: &'static str,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    pub diag: &'static str,
    pub tx_interval_us: u32,
    pub detection_time_us: u32,
    pub remote_min_rx_us: u32,
    pub remote_detect_mult: u8,
    pub ups: u64,
    pub downs: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    /// Datagrams from the peer's address that were discarded (malformed, wrong TTL).
    pub packets_discarded: u64,
    pub last_discard: Option<String>,
    pub last_error: Option<String>,
}

pub struct BfdSession {
    peer: IpAddr,
    source: Option<IpAddr>,
    fsm: fsm::Session,
    socket: Option<UdpSocket>,
    tx: Option<SpawnHandle>,
    detect: Option<SpawnHandle>,
    subscribers: Vec<Recipient<BfdChanged>>,
    stopping: bool,
    status: BfdStatus,
    pending: Vec<Action>,
}

impl BfdSession {
    /// A session with `peer`, its local discriminator `discriminator` (nonzero, unique on the
    /// node: the listener finds the session by it).
    pub fn new(
        peer: IpAddr,
        source: Option<IpAddr>,
        discriminator: u32,
        cfg: Config,
    ) -> BfdSession {
        let (fsm, pending) = fsm::Session::new(discriminator, cfg);
        BfdSession {
            peer,
            source,
            status: BfdStatus {
                peer: peer.to_string(),
                local_discriminator: fsm.local_discriminator(),
                ..BfdStatus::default()
            },
            fsm,
            socket: None,
            tx: None,
            detect: None,
            subscribers: Vec::new(),
            stopping: false,
            pending,
        }
    }

    fn event(&mut self, event: Event, ctx: &mut Context<Self>) {
        let actions = self.fsm.handle(event);
        self.act(actions, ctx);
    }

    fn act(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        for a in actions {
            match a {
                Action::Send(p) => self.send(&p),
                Action::ArmTx(us) => {
                    if let Some(h) = self.tx.take() {
                        ctx.cancel_future(h);
                    }
                    self.tx = Some(ctx.run_later(
                        Duration::from_micros(u64::from(us)),
                        |act, ctx| {
                            act.tx = None;
                            act.event(Event::TxTimer, ctx);
                        },
                    ));
                }
                Action::ArmDetect(us) => {
                    if let Some(h) = self.detect.take() {
                        ctx.cancel_future(h);
                    }
                    self.detect = Some(ctx.run_later(
                        Duration::from_micros(u64::from(us)),
                        |act, ctx| {
                            act.detect = None;
                            act.event(Event::DetectTimer, ctx);
                        },
                    ));
                }
                Action::StopDetect => {
                    if let Some(h) = self.detect.take() {
                        ctx.cancel_future(h);
                    }
                }
                Action::StateChanged {
                    from,
                    to,
                    diag,
                    failure,
                } => self.changed(from, to, diag, failure),
            }
        }
        self.refresh();
    }

    fn send(&mut self, p: &Packet) {
        let Some(s) = &self.socket else {
            return;
        };
        // A full socket buffer drops the packet, as a lossy link would; the next tick resends.
        if s.try_send(&p.encode()).is_ok() {
            self.status.packets_out += 1;
        }
    }

    fn changed(&mut self, from: State, to: State, diag: Diag, failure: bool) {
        info!(peer = %self.peer, %from, %to, diag = diag.text(), "BFD session");
        if to == State::Up {
            self.status.ups += 1;
        }
        if from == State::Up {
            self.status.downs += 1;
            self.status.last_error = Some(diag.text().to_string());
        }
        for s in &self.subscribers {
            s.do_send(BfdChanged {
                peer: self.peer,
                state: to,
                failure: failure && from == State::Up,
            });
        }
    }

    fn refresh(&mut self) {
        let n = self.fsm.negotiated();
        self.status.state = self.fsm.state().name();
        self.status.remote_state = self.fsm.remote_state().name();
        self.status.remote_discriminator = self.fsm.remote_discriminator();
        self.status.diag = self.fsm.diag().text();
        self.status.tx_interval_us = n.tx_interval_us;
        self.status.detection_time_us = n.detection_time_us;
        self.status.remote_min_rx_us = n.remote_min_rx_us;
        self.status.remote_detect_mult = n.remote_detect_mult;
    }
}

impl Actor for BfdSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match io::bind_tx(self.peer, self.source, self.fsm.local_discriminator()) {
            Ok(s) => self.socket = Some(s),
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "BFD: cannot open the sending socket");
                self.status.last_error = Some(e);
            }
        }
        let first = std::mem::take(&mut self.pending);
        self.act(first, ctx);
    }
}

impl Handler<Rx> for BfdSession {
    type Result = ();

    fn handle(&mut self, Rx(p): Rx, ctx: &mut Context<Self>) {
        self.status.packets_in += 1;
        self.event(Event::Received(p), ctx);
    }
}

impl Handler<Discarded> for BfdSession {
    type Result = ();

    fn handle(&mut self, Discarded(reason): Discarded, _: &mut Context<Self>) {
        self.status.packets_discarded += 1;
        self.status.last_discard = Some(reason);
    }
}

impl Handler<Subscribe> for BfdSession {
    type Result = ();

    fn handle(&mut self, Subscribe(list): Subscribe, _: &mut Context<Self>) {
        // A new subscriber learns the current state at once.
        for s in &list {
            s.do_send(BfdChanged {
                peer: self.peer,
                state: self.fsm.state(),
                failure: false,
            });
        }
        self.subscribers = list;
    }
}

impl Handler<Reconfigure> for BfdSession {
    type Result = ();

    fn handle(&mut self, Reconfigure(cfg): Reconfigure, ctx: &mut Context<Self>) {
        self.event(Event::Reconfigure(cfg), ctx);
    }
}

impl Handler<Shutdown> for BfdSession {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.subscribers.clear();
        self.event(Event::AdminDown, ctx);
        ctx.stop();
    }
}

impl Handler<GetStatus> for BfdSession {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        self.refresh();
        MessageResult(self.status.clone())
    }
}
