//! `BgpSession`: the actor of one (node, peer) session. It owns the FSM, the Adj-RIB-Out, the
//! timers and the TCP connection; everything protocol-shaped is decided by the pure modules
//! (`fsm` decides what to do, `rib` and `codec` what to send) and this actor only carries it
//! out.
//!
//! ```text
//!   Routes / Reconfigure / Shutdown ──▶ BgpSession ──actions──▶ io::dial, write queue, timers
//!   listen::Listener ──Inbound────────▶  ▲     │
//!            io::read_loop (frames) ─────┘     └─▶ AdjRibOut ─▶ codec (packed UPDATEs)
//! ```
//!
//! A session both dials its peer and takes the connections the peer opens (RFC 4271 §8.2.1).
//! While it has no connection of its own it adopts an inbound one; while its own connection
//! waits for the OPEN exchange to finish, an inbound one is a collision (§6.8): both get an
//! OPEN, and when the peer's OPEN arrives on the inbound one, the connection opened by the
//! side with the higher BGP identifier survives and the other ends with a Cease (subcode 7,
//! Connection Collision Resolution). An Established session refuses new connections the same
//! way.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use bytes::Bytes;
use ipnet::IpNet;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::codec::{self, Encoding, Message, OpenMessage, PathAttrs, MAX_MESSAGE_LEN};
use super::fsm::{self, Action, Event, SessionConfig, SessionState, TimerType};
use super::io;
use super::rib::AdjRibOut;

/// How long changes are gathered before they go out: enough to pack a burst into few
/// UPDATEs, far below anything a person notices.
pub const COALESCE: Duration = Duration::from_millis(5);
/// Upper bound of the wait between attempts (the FSM's own cap is 300 s).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One BGP neighbour as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The BGPPeer's name.
    pub name: String,
    pub address: SocketAddr,
    /// `sourceAddress`: the local address to dial from; None lets the kernel choose.
    pub source: Option<IpAddr>,
    /// IP TTL of the session's packets: 1 for a directly connected eBGP peer, 255 with
    /// `ebgpMultiHop` or for iBGP.
    pub ttl: u32,
    /// TCP-MD5 key (RFC 2385), on the dialling socket and on the listener for this peer.
    pub password: Option<String>,
    pub config: SessionConfig,
    /// Next hop for the family the session's own address is not (dual-stack sessions).
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
}

/// What a session is doing, from what was actually negotiated and sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStatus {
    pub peer: String,
    pub address: String,
    pub state: &'static str,
    pub established_since: Option<SystemTime>,
    pub local_address: Option<SocketAddr>,
    /// Who opened the connection in use: "outbound" (this node) or "inbound" (the peer).
    pub connection: &'static str,
    pub peer_asn: Option<u32>,
    pub peer_router_id: Option<Ipv4Addr>,
    pub hold_time: u16,
    pub keepalive: u16,
    pub families: Vec<&'static str>,
    /// Prefixes the peer holds from this session.
    pub prefixes_sent: usize,
    /// Prefixes waiting to be sent (session down, family not negotiated, no next hop).
    pub prefixes_pending: usize,
    pub updates_sent: u64,
    /// Times the session left Established.
    pub downs: u64,
    pub last_error: Option<String>,
    /// The BFD session's state when the BGPPeer names a BFDProfile.
    pub bfd: Option<&'static str>,
}

/// One prefix set (Some) or withdrawn (None).
pub type RouteChange = (IpNet, Option<Arc<PathAttrs>>);

/// Sets or withdraws prefixes for this peer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Routes(pub Vec<RouteChange>);

/// Replaces everything this peer should have.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplaceRoutes(pub BTreeMap<IpNet, Arc<PathAttrs>>);

/// New settings for the same peer. Only a change of what the OPEN carries resets the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Peer);

/// Ends the session with a Cease carrying `reason` (RFC 9003) and stops the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: String,
}

#[derive(Message)]
#[rtype(result = "SessionStatus")]
pub struct GetStatus;

/// The prefixes the peer holds from this session (the Adj-RIB-Out as sent).
#[derive(Message)]
#[rtype(result = "Vec<IpNet>")]
pub struct GetSent;

/// A connection the peer opened to this node's listener.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound(pub tokio::net::TcpStream);

/// Something the connection's tasks saw; `conn` tells stale connections apart.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) enum Io {
    Connected(u64, tokio::net::TcpStream),
    DialFailed(u64, String),
    Received(u64, Result<Message, codec::DecodeError>),
    Closed(u64, String),
}

struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Bytes>,
    local: SocketAddr,
    inbound: bool,
    reader: tokio::task::JoinHandle<()>,
}

impl Conn {
    fn start(
        stream: tokio::net::TcpStream,
        id: u64,
        inbound: bool,
        session: Addr<BgpSession>,
    ) -> Result<Conn, String> {
        let local = stream.local_addr().map_err(|e| e.to_string())?;
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6; the next hop must be
        // the plain IPv4 address.
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let (tx, reader) = io::start(stream, id, session);
        Ok(Conn {
            id,
            tx,
            local,
            inbound,
            reader,
        })
    }

    fn send(&self, message: &Message) {
        if let Ok(bytes) = codec::encode(message) {
            let _ = self.tx.send(bytes);
        }
    }
}

/// Dropping a connection ends it after what is queued (a closing NOTIFICATION) is written:
/// the writer drains its queue, then shuts the socket down.
impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How long an inbound connection in collision may take to send its OPEN (RFC 4271's
/// suggested initial hold time is 4 minutes; a live peer answers in milliseconds).
const COLLISION_OPEN_WAIT: Duration = Duration::from_secs(30);

pub struct BgpSession {
    peer: Peer,
    fsm: fsm::Session,
    rib: AdjRibOut,
    /// Id of the newest dial or connection; events of older ones are ignored.
    conn_id: u64,
    conn: Option<Conn>,
    /// An inbound connection that collided with `conn`, until the peer's OPEN on it decides
    /// which one stays.
    candidate: Option<Conn>,
    /// The OPEN this session sends, for a colliding connection.
    last_open: Option<OpenMessage>,
    /// Reached Established at least once (the R bit is only for the first OPEN).
    ever_established: bool,
    /// Set while the FSM is walked into OpenSent on a connection that already exists and
    /// already carried our OPEN.
    adopting: bool,
    timers: HashMap<TimerType, SpawnHandle>,
    flush: Option<SpawnHandle>,
    restart: Option<SpawnHandle>,
    encoding: Option<Encoding>,
    /// End-of-RIB goes out after the first flush of each Established period.
    eor_sent: bool,
    /// Consecutive falls back to Idle without reaching Established (restart backoff).
    failures: u32,
    stopping: bool,
    status: SessionStatus,
}

/// When this process created its first session: the restart a GR-capable router saw.
fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

impl BgpSession {
    pub fn new(peer: Peer) -> BgpSession {
        process_start();
        let status = SessionStatus {
            peer: peer.name.clone(),
            address: peer.address.to_string(),
            state: "Idle",
            ..SessionStatus::default()
        };
        BgpSession {
            fsm: fsm::Session::new(peer.config.peer_config()),
            peer,
            rib: AdjRibOut::default(),
            conn_id: 0,
            conn: None,
            candidate: None,
            last_open: None,
            adopting: false,
            ever_established: false,
            timers: HashMap::new(),
            flush: None,
            restart: None,
            encoding: None,
            eor_sent: false,
            failures: 0,
            stopping: false,
            status,
        }
    }

    fn event(&mut self, event: Event, ctx: &mut Context<Self>) {
        let actions = self.fsm.handle_event(event);
        for action in actions {
            self.act(action, ctx);
        }
    }

    fn send(&mut self, message: &Message) {
        match codec::encode(message) {
            Ok(bytes) => self.write(bytes),
            Err(e) => warn!(peer = %self.peer.name, error = %e, "cannot encode"),
        }
    }

    fn write(&mut self, bytes: Bytes) {
        if let Some(c) = &self.conn {
            // A closed queue means the writer has seen the socket fail; its Closed event
            // follows.
            let _ = c.tx.send(bytes);
        }
    }

    fn act(&mut self, action: Action, ctx: &mut Context<Self>) {
        match action {
            Action::SendOpen(mut open) => {
                self.mark_restart(&mut open);
                if !self.adopting {
                    self.send(&Message::Open(open.clone()));
                }
                self.last_open = Some(open);
            }
            Action::SendKeepalive => self.send(&Message::Keepalive),
            Action::SendNotification(n) => {
                self.status.last_error = Some(format!(
                    "sent NOTIFICATION {} subcode {}",
                    n.code, n.subcode
                ));
                self.send(&Message::Notification(n));
            }
            Action::StartTimer(timer, secs) => {
                let secs = match timer {
                    TimerType::Keepalive => {
                        let hold = self.fsm.negotiated().map_or(0, |n| n.hold_time);
                        u32::from(self.peer.config.keepalive_for(hold)).max(1)
                    }
                    TimerType::ConnectRetry => secs.min(MAX_BACKOFF.as_secs() as u32),
                    _ => secs,
                };
                self.start_timer(timer, Duration::from_secs(u64::from(secs)), ctx);
            }
            Action::StopTimer(timer) => {
                if let Some(h) = self.timers.remove(&timer) {
                    ctx.cancel_future(h);
                }
            }
            Action::InitiateTcpConnection if !self.adopting => self.dial(ctx),
            Action::CloseTcpConnection => self.close(),
            Action::StateChanged { old, new } => {
                info!(peer = %self.peer.name, from = fsm::state_name(old), to = fsm::state_name(new), "BGP session");
                self.status.state = fsm::state_name(new);
                if new == SessionState::Idle {
                    self.went_idle(ctx);
                }
            }
            Action::SessionEstablished(neg) => self.established(&neg, ctx),
            Action::SessionDown => {
                self.rib.reset();
                self.encoding = None;
                self.status.established_since = None;
                self.status.downs += 1;
                self.refresh_counts();
            }
            _ => {}
        }
    }

    /// Graceful restart (RFC 4724 §3): the node's forwarding (kube-proxy, the announced
    /// addresses) survives a restart of raftlb, so every family says its forwarding state
    /// is preserved; the first OPEN of a process that started less than the restart time ago
    /// says it restarted (R bit), so the router keeps the stale routes until End-of-RIB.
    fn mark_restart(&mut self, open: &mut OpenMessage) {
        let restarted = !self.ever_established
            && process_start().elapsed() < Duration::from_secs(u64::from(fsm::GR_RESTART_TIME));
        for cap in &mut open.capabilities {
            if let rustbgpd_wire::Capability::GracefulRestart {
                restart_state,
                families,
                ..
            } = cap
            {
                *restart_state = restarted;
                for f in families.iter_mut() {
                    f.forwarding_preserved = true;
                }
            }
        }
    }

    fn start_timer(&mut self, timer: TimerType, after: Duration, ctx: &mut Context<Self>) {
        if let Some(h) = self.timers.remove(&timer) {
            ctx.cancel_future(h);
        }
        let handle = ctx.run_later(after, move |act, ctx| {
            act.timers.remove(&timer);
            let event = match timer {
                TimerType::ConnectRetry => Event::ConnectRetryTimerExpires,
                TimerType::Hold => Event::HoldTimerExpires,
                TimerType::Keepalive => Event::KeepaliveTimerExpires,
                _ => return,
            };
            act.event(event, ctx);
        });
        self.timers.insert(timer, handle);
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        self.close();
        self.conn_id += 1;
        let id = self.conn_id;
        let addr = ctx.address();
        let (target, source, ttl) = (self.peer.address, self.peer.source, self.peer.ttl);
        let password = self.peer.password.clone();
        let timeout = Duration::from_secs(u64::from(self.peer.config.connect_retry.max(1)))
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        actix::spawn(async move {
            let io = match io::dial(target, source, ttl, password.as_deref(), timeout).await {
                Ok(stream) => Io::Connected(id, stream),
                Err(e) => Io::DialFailed(id, e),
            };
            addr.do_send(io);
        });
    }

    fn close(&mut self) {
        self.conn = None;
    }

    fn went_idle(&mut self, ctx: &mut Context<Self>) {
        self.close();
        for (_, h) in self.timers.drain() {
            ctx.cancel_future(h);
        }
        if self.stopping {
            ctx.stop();
            return;
        }
        // The FSM leaves Idle only on a start; an automatic restart after a backoff, as
        // RFC 4271 §8.1.1's automatic start with damping does.
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_secs(u64::from(self.peer.config.connect_retry.max(1)));
        let wait = (base * 2u32.saturating_pow(self.failures.min(8) - 1)).min(MAX_BACKOFF);
        if let Some(h) = self.restart.take() {
            ctx.cancel_future(h);
        }
        self.restart = Some(ctx.run_later(wait, |act, ctx| {
            act.restart = None;
            act.event(Event::ManualStart, ctx);
        }));
    }

    fn established(&mut self, neg: &fsm::NegotiatedSession, ctx: &mut Context<Self>) {
        self.failures = 0;
        self.ever_established = true;
        let local = self.conn.as_ref().map(|c| c.local);
        let has = |afi| {
            neg.negotiated_families
                .contains(&(afi, rustbgpd_wire::Safi::Unicast))
        };
        let ipv4 = has(rustbgpd_wire::Afi::Ipv4);
        let ipv6 = has(rustbgpd_wire::Afi::Ipv6);
        // The next hop is the session's own address for its family (MetalLB's rule), the
        // configured one for the other.
        let (mut nh4, mut nh6) = (self.peer.next_hop_v4, self.peer.next_hop_v6);
        match local.map(|l| l.ip()) {
            Some(IpAddr::V4(a)) => nh4 = Some(a),
            Some(IpAddr::V6(a)) => nh6 = Some(a),
            None => {}
        }
        self.encoding = Some(Encoding {
            local_asn: self.peer.config.local_asn,
            ibgp: self.peer.config.ibgp(neg.peer_asn),
            four_octet_as: neg.four_octet_as,
            next_hop_v4: nh4,
            next_hop_v6: nh6,
            ipv4,
            ipv6,
            max_len: MAX_MESSAGE_LEN,
        });
        self.eor_sent = false;
        self.status.established_since = Some(SystemTime::now());
        self.status.local_address = local;
        self.status.connection = match &self.conn {
            Some(c) if c.inbound => "inbound",
            Some(_) => "outbound",
            None => "",
        };
        self.status.peer_asn = Some(neg.peer_asn);
        self.status.peer_router_id = Some(neg.peer_router_id);
        self.status.hold_time = neg.hold_time;
        self.status.keepalive = self.peer.config.keepalive_for(neg.hold_time);
        self.status.families = [(ipv4, "ipv4-unicast"), (ipv6, "ipv6-unicast")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        self.status.last_error = None;
        self.rib.reset();
        self.flush_now(ctx);
    }

    fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush.is_some() || self.encoding.is_none() {
            return;
        }
        self.flush = Some(ctx.run_later(COALESCE, |act, ctx| {
            act.flush = None;
            act.flush_now(ctx);
        }));
    }

    fn flush_now(&mut self, _: &mut Context<Self>) {
        let Some(enc) = self.encoding.clone() else {
            return;
        };
        match self.rib.flush(&enc) {
            Ok(out) => {
                self.status.updates_sent += out.messages.len() as u64;
                for m in out.messages {
                    self.write(m);
                }
            }
            Err(e) => {
                warn!(peer = %self.peer.name, error = %e, "cannot build UPDATEs");
                self.status.last_error = Some(e.to_string());
            }
        }
        if !self.eor_sent {
            self.eor_sent = true;
            for (on, v6) in [(enc.ipv4, false), (enc.ipv6, true)] {
                if on {
                    if let Ok(eor) = enc.end_of_rib(v6) {
                        self.write(eor);
                    }
                }
            }
        }
        self.refresh_counts();
    }

    fn refresh_counts(&mut self) {
        self.status.prefixes_sent = self.rib.sent().len();
        self.status.prefixes_pending = self.rib.pending();
    }

    fn received(&mut self, message: Message, ctx: &mut Context<Self>) {
        let event = match message {
            Message::Open(open) => Event::OpenReceived(open),
            Message::Keepalive => Event::KeepaliveReceived,
            Message::Notification(n) => {
                self.status.last_error = Some(format!(
                    "peer sent NOTIFICATION {} subcode {}{}",
                    n.code,
                    n.subcode,
                    shutdown_text(&n.data)
                        .map(|t| format!(": {t}"))
                        .unwrap_or_default()
                ));
                Event::NotificationReceived(n)
            }
            // Routes from the peer are not used (a load balancer announces, it does not
            // route); the UPDATE still counts as a sign of life.
            Message::Update(_) => Event::UpdateReceived,
            Message::RouteRefresh(rr) => {
                // The peer asks for everything again.
                if self.encoding.is_some() {
                    self.rib.reset();
                    self.schedule_flush(ctx);
                }
                match (rr.afi(), rr.safi()) {
                    (Some(afi), Some(safi)) => Event::RouteRefreshReceived { afi, safi },
                    // A family nobody knows: nothing to refresh, and no reason to end the
                    // session.
                    _ => return,
                }
            }
            _ => return,
        };
        self.event(event, ctx);
    }
}

/// The RFC 9003 text in a Cease's data, if there is one.
fn shutdown_text(data: &[u8]) -> Option<String> {
    let (&len, rest) = data.split_first()?;
    let text = rest.get(..usize::from(len))?;
    std::str::from_utf8(text).ok().map(str::to_string)
}

impl Actor for BgpSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.event(Event::ManualStart, ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.close();
    }
}

impl Handler<Io> for BgpSession {
    type Result = ();

    fn handle(&mut self, io: Io, ctx: &mut Context<Self>) {
        match io {
            Io::Connected(id, stream) if id == self.conn_id => {
                match Conn::start(stream, id, false, ctx.address()) {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.event(Event::TcpConnectionConfirmed, ctx);
                    }
                    Err(e) => self.event_failed(e, ctx),
                }
            }
            Io::Received(id, message) if self.candidate.as_ref().is_some_and(|c| c.id == id) => {
                match message {
                    Ok(Message::Open(open)) => self.resolve_collision(open, ctx),
                    // Anything else before its OPEN, or garbage: the colliding connection is
                    // broken, the session's own one carries on.
                    _ => {
                        self.candidate = None;
                    }
                }
            }
            Io::Closed(id, _) if self.candidate.as_ref().is_some_and(|c| c.id == id) => {
                self.candidate = None;
            }
            Io::DialFailed(id, e) if id == self.conn_id => self.event_failed(e, ctx),
            Io::Received(id, message) if self.conn.as_ref().is_some_and(|c| c.id == id) => {
                match message {
                    Ok(m) => self.received(m, ctx),
                    Err(e) => {
                        self.status.last_error = Some(format!("malformed message from peer: {e}"));
                        self.event(Event::DecodeError(e), ctx);
                    }
                }
            }
            Io::Closed(id, e) if self.conn.as_ref().is_some_and(|c| c.id == id) => {
                self.conn = None;
                self.event_failed(e, ctx);
            }
            _ => {}
        }
    }
}

impl Handler<Inbound> for BgpSession {
    type Result = ();

    fn handle(&mut self, Inbound(stream): Inbound, ctx: &mut Context<Self>) {
        self.conn_id += 1;
        let id = self.conn_id;
        let conn = match Conn::start(stream, id, true, ctx.address()) {
            Ok(c) => c,
            Err(e) => {
                warn!(peer = %self.peer.name, error = %e, "inbound BGP connection unusable");
                return;
            }
        };
        match self.fsm.state() {
            _ if self.stopping => {
                conn.send(&codec::cease(
                    codec::cease_subcode::ADMINISTRATIVE_SHUTDOWN,
                    Bytes::new(),
                ));
            }
            // No connection of its own yet: the peer's will do.
            SessionState::Idle | SessionState::Connect | SessionState::Active => {
                self.adopt(conn, None, ctx)
            }
            SessionState::OpenSent | SessionState::OpenConfirm => {
                info!(peer = %self.peer.name, "BGP connection collision: waiting for the peer's OPEN on the inbound connection");
                if let Some(open) = &self.last_open {
                    conn.send(&Message::Open(open.clone()));
                }
                self.candidate = Some(conn);
                ctx.run_later(COLLISION_OPEN_WAIT, move |act, _| {
                    if act.candidate.as_ref().is_some_and(|c| c.id == id) {
                        act.candidate = None;
                    }
                });
            }
            SessionState::Established => {
                info!(peer = %self.peer.name, "BGP connection from the peer while Established: refused (collision)");
                conn.send(&codec::collision_cease());
            }
        }
    }
}

impl BgpSession {
    /// Makes `conn`, opened by the peer, the session's connection. With `open`, the peer's
    /// OPEN already arrived on it and ours was already sent.
    fn adopt(&mut self, conn: Conn, open: Option<OpenMessage>, ctx: &mut Context<Self>) {
        if let Some(h) = self.restart.take() {
            ctx.cancel_future(h);
        }
        self.conn = None;
        let sent_open = open.is_some();
        self.adopting = true;
        if self.fsm.state() == SessionState::Idle {
            self.event(Event::ManualStart, ctx);
        }
        self.conn = Some(conn);
        self.adopting = sent_open;
        self.event(Event::TcpConnectionAcknowledged, ctx);
        self.adopting = false;
        if let Some(open) = open {
            self.event(Event::OpenReceived(open), ctx);
        }
    }

    /// RFC 4271 §6.8: the peer's OPEN arrived on the colliding inbound connection. The
    /// connection opened by the speaker with the higher BGP identifier stays.
    fn resolve_collision(&mut self, open: OpenMessage, ctx: &mut Context<Self>) {
        let Some(candidate) = self.candidate.take() else {
            return;
        };
        let ours = u32::from(self.peer.config.router_id);
        let theirs = u32::from(open.bgp_identifier);
        let state = self.fsm.state();
        let undecided = matches!(state, SessionState::OpenSent | SessionState::OpenConfirm);
        // Two connections both opened by the peer: it gave up the older one.
        let current_inbound = self.conn.as_ref().is_none_or(|c| c.inbound);
        if !undecided && state != SessionState::Established {
            // The session's own connection failed meanwhile: take the peer's.
            self.fresh_fsm(ctx);
            self.adopt(candidate, Some(open), ctx);
        } else if undecided && (current_inbound || ours < theirs) {
            info!(peer = %self.peer.name, ours = %self.peer.config.router_id, theirs = %open.bgp_identifier,
                "BGP connection collision: keeping the peer's connection");
            if let Some(old) = self.conn.take() {
                old.send(&codec::collision_cease());
            }
            self.fresh_fsm(ctx);
            self.adopt(candidate, Some(open), ctx);
        } else {
            info!(peer = %self.peer.name, ours = %self.peer.config.router_id, theirs = %open.bgp_identifier,
                "BGP connection collision: keeping this node's connection");
            candidate.send(&codec::collision_cease());
        }
    }

    /// A new FSM in Idle, its timers gone: for walking it again on another connection.
    fn fresh_fsm(&mut self, ctx: &mut Context<Self>) {
        for (_, h) in self.timers.drain() {
            ctx.cancel_future(h);
        }
        self.fsm = fsm::Session::new(self.peer.config.peer_config());
    }

    fn event_failed(&mut self, error: String, ctx: &mut Context<Self>) {
        if self.status.state == "Established" || self.status.last_error.is_none() {
            self.status.last_error = Some(error);
        }
        self.event(Event::TcpConnectionFails, ctx);
    }
}

/// BFD decides for the session (RFC 5882 §4.3): a path that failed takes it down at once, with
/// a Cease (subcode 10, BFD Down, RFC 9384), instead of after the hold time.
impl Handler<crate::bfd::BfdChanged> for BgpSession {
    type Result = ();

    fn handle(&mut self, change: crate::bfd::BfdChanged, ctx: &mut Context<Self>) {
        self.status.bfd = Some(change.state.name());
        if change.failure && change.state != crate::bfd::State::Up {
            warn!(peer = %self.peer.name, "BFD says the path to the peer failed: ending the BGP session");
            self.status.last_error = Some("BFD: the path to the peer failed".into());
            self.event(Event::BfdDown, ctx);
        }
    }
}

impl Handler<Routes> for BgpSession {
    type Result = ();

    fn handle(&mut self, Routes(changes): Routes, ctx: &mut Context<Self>) {
        for (prefix, attrs) in changes {
            self.rib.set(prefix, attrs);
        }
        self.refresh_counts();
        self.schedule_flush(ctx);
    }
}

impl Handler<ReplaceRoutes> for BgpSession {
    type Result = ();

    fn handle(&mut self, ReplaceRoutes(all): ReplaceRoutes, ctx: &mut Context<Self>) {
        self.rib.replace(all);
        self.refresh_counts();
        self.schedule_flush(ctx);
    }
}

impl Handler<Reconfigure> for BgpSession {
    type Result = ();

    fn handle(&mut self, Reconfigure(peer): Reconfigure, ctx: &mut Context<Self>) {
        if peer == self.peer {
            return;
        }
        let reset = self.peer.config.resets_session(&peer.config)
            || peer.address != self.peer.address
            || peer.source != self.peer.source
            || peer.ttl != self.peer.ttl
            || peer.password != self.peer.password;
        let next_hops =
            (peer.next_hop_v4, peer.next_hop_v6) != (self.peer.next_hop_v4, self.peer.next_hop_v6);
        self.peer = peer;
        if reset {
            info!(peer = %self.peer.name, "BGP session settings changed: resetting the session");
            let reason = codec::cease_text("raftlb: session settings changed");
            self.event(
                Event::AdministrativeReset {
                    reason: Some(reason),
                },
                ctx,
            );
            self.fsm = fsm::Session::new(self.peer.config.peer_config());
            self.failures = 0;
            if let Some(h) = self.restart.take() {
                ctx.cancel_future(h);
            }
            self.event(Event::ManualStart, ctx);
        } else if next_hops && self.encoding.is_some() {
            // Re-announce everything with the new next hops.
            let conn = self.fsm.negotiated_shared();
            if let Some(neg) = conn {
                self.established(&neg, ctx);
            }
        }
    }
}

impl Handler<Shutdown> for BgpSession {
    type Result = ();

    fn handle(&mut self, Shutdown { reason }: Shutdown, ctx: &mut Context<Self>) {
        self.stopping = true;
        if self.fsm.state() == SessionState::Idle {
            ctx.stop();
            return;
        }
        self.event(
            Event::ManualStop {
                reason: Some(codec::cease_text(&reason)),
            },
            ctx,
        );
        if self.fsm.state() == SessionState::Idle {
            ctx.stop();
        }
    }
}

impl Handler<GetSent> for BgpSession {
    type Result = MessageResult<GetSent>;

    fn handle(&mut self, _: GetSent, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.rib.sent().keys().copied().collect())
    }
}

impl Handler<GetStatus> for BgpSession {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        self.refresh_counts();
        MessageResult(self.status.clone())
    }
}
