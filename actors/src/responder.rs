//! Per interface: the answerer on the receive path, and the `ArpResponder` / `NdpResponder`
//! actors that register VIPs with it and send announcements.
//!
//! The receive path does not go through a mailbox: a plain thread reads the AF_PACKET socket
//! (pnet's receive blocks) and asks the [`Answerer`], which checks the VIP is registered and
//! the lease is valid *now*, for every packet, before it builds a reply.

use std::collections::BTreeSet;
use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use actix::prelude::*;
use pnet_datalink::{Channel, MacAddr};
use tracing::{debug, warn};

use crate::lease::{Clock, Lease};
use crate::wire;

/// Where frames go out. The real one is a pnet datalink sender; tests record.
pub trait FrameSink: Send + 'static {
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
}

pub type SharedSink = Arc<Mutex<Box<dyn FrameSink>>>;

fn send(sink: &SharedSink, frame: &[u8]) {
    let result = match sink.lock() {
        Ok(mut s) => s.send(frame),
        Err(poisoned) => poisoned.into_inner().send(frame),
    };
    if let Err(e) = result {
        warn!(error = %e, "sending a frame failed");
    }
}

/// Set in the environment (any value), the answerers answer without checking the lease: a
/// deliberately broken build for the chaos harness's negative control, which must see two
/// answerers. Never set it anywhere else; it is logged at start.
pub const UNSAFE_ANSWER_WITHOUT_LEASE: &str = "RAFTLB_UNSAFE_ANSWER_WITHOUT_LEASE";

/// Set in the environment to a file path, every answerer appends an audit line to it for
/// each reply it sends and each VIP it registers or withdraws, timed on `CLOCK_MONOTONIC` in
/// microseconds (the chaos harness's clock):
///
/// * `reply T VIP DEADLINE`: a reply sent at T, under a lease valid until DEADLINE;
/// * `register T VIP` and `withdraw T VIP`: the answerer starts or stops answering for VIP.
///
/// From these the harness derives each node's answering windows per VIP and checks that no
/// two overlap.
pub const AUDIT_FILE: &str = "RAFTLB_AUDIT_FILE";

/// `CLOCK_MONOTONIC` now, in microseconds: the audit's clock, and the chaos lab's.
pub fn monotonic_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// The audit file ([`AUDIT_FILE`]), shared by every answerer of the process.
struct Audit {
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Audit {
    fn from_env() -> Option<Arc<Audit>> {
        static AUDIT: std::sync::OnceLock<Option<Arc<Audit>>> = std::sync::OnceLock::new();
        AUDIT
            .get_or_init(|| {
                let path = std::env::var_os(AUDIT_FILE)?;
                match std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                {
                    Ok(f) => Some(Arc::new(Audit {
                        file: Mutex::new(std::io::BufWriter::new(f)),
                    })),
                    Err(e) => {
                        warn!(error = %e, path = ?path, "{AUDIT_FILE}: cannot open; no audit");
                        None
                    }
                }
            })
            .clone()
    }

    fn line(&self, text: std::fmt::Arguments) {
        use std::io::Write;
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_fmt(text);
        let _ = f.write_all(b"\n");
        let _ = f.flush();
    }
}

/// Counters an operator can read.
#[derive(Debug, Default)]
pub struct AnswerStats {
    pub answered: AtomicU64,
    /// Questions for a registered VIP that were not answered because the lease had run out.
    pub refused_no_lease: AtomicU64,
}

/// The receive-path state of one interface: its MAC, the VIPs registered on it, the lease.
pub struct Answerer {
    pub interface: String,
    pub mac: MacAddr,
    v4: RwLock<BTreeSet<Ipv4Addr>>,
    v6: RwLock<BTreeSet<Ipv6Addr>>,
    lease: Arc<Lease>,
    clock: Arc<dyn Clock>,
    pub stats: AnswerStats,
    /// [`UNSAFE_ANSWER_WITHOUT_LEASE`].
    unsafe_no_lease: bool,
    /// [`AUDIT_FILE`].
    audit: Option<Arc<Audit>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Answerer {
    pub fn new(interface: &str, mac: MacAddr, lease: Arc<Lease>, clock: Arc<dyn Clock>) -> Self {
        let unsafe_no_lease = std::env::var_os(UNSAFE_ANSWER_WITHOUT_LEASE).is_some();
        if unsafe_no_lease {
            warn!(
                interface,
                "{UNSAFE_ANSWER_WITHOUT_LEASE} is set: answering WITHOUT checking the lease (a negative control; never in production)"
            );
        }
        Answerer {
            unsafe_no_lease,
            audit: Audit::from_env(),
            interface: interface.to_string(),
            mac,
            v4: RwLock::default(),
            v6: RwLock::default(),
            lease,
            clock,
            stats: AnswerStats::default(),
        }
    }

    /// The reply to `frame`, if it asks for a VIP registered here and the lease holds now.
    pub fn answer(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let mut out = None;
        self.answer_with(frame, |reply| out = Some(reply.to_vec()));
        out
    }

    /// Hands the reply to `frame` to `send` (see [`Answerer::answer`]), still holding the
    /// VIP's registration: [`Answerer::withdraw`] waits for it, so once a withdrawal returns
    /// no reply decided while the VIP was registered is left to go out. The node reports a
    /// withdrawal to the leader, which may hand the VIP to another node at once; a reply
    /// sent after that (its thread descheduled between the check and the send) would be a
    /// second answerer. The chaos harness caught exactly that under load.
    pub fn answer_with(&self, frame: &[u8], send: impl FnOnce(&[u8])) -> bool {
        if let Some(q) = wire::arp_question(frame) {
            let registered = read(&self.v4);
            let decided = self.decide();
            if !registered.contains(&q.target) || !self.lease_ok(decided) {
                return false;
            }
            send(&wire::arp_reply(self.mac, q.target, &q));
            self.audit_reply(IpAddr::V4(q.target), decided);
        } else if let Some(q) = wire::ndp_question(frame) {
            let registered = read(&self.v6);
            let decided = self.decide();
            if !registered.contains(&q.target) || !self.lease_ok(decided) {
                return false;
            }
            send(&wire::ndp_reply(self.mac, q.target, &q));
            self.audit_reply(IpAddr::V6(q.target), decided);
        } else {
            return false;
        }
        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The audit line of a reply just sent: when it was decided and the lease deadline it was
    /// decided under ([`Answerer::decide`], on the answerer's clock), both put on
    /// `CLOCK_MONOTONIC`.
    fn audit_reply(&self, vip: IpAddr, (decided_ns, deadline_ns): (u64, u64)) {
        let Some(audit) = &self.audit else {
            return;
        };
        let since_us = self.clock.now_ns().saturating_sub(decided_ns) / 1_000;
        let t = monotonic_us().saturating_sub(since_us);
        let deadline = if deadline_ns >= decided_ns {
            t + (deadline_ns - decided_ns) / 1_000
        } else {
            t.saturating_sub((decided_ns - deadline_ns) / 1_000)
        };
        audit.line(format_args!("reply {t} {vip} {deadline}"));
    }

    fn audit(&self, what: &str, vip: &IpAddr) {
        if let Some(audit) = &self.audit {
            audit.line(format_args!("{what} {} {vip}", monotonic_us()));
        }
    }

    /// The time and the lease deadline a reply is decided at, read once: the audit line
    /// records the deadline the decision saw, not one revoked or extended since.
    fn decide(&self) -> (u64, u64) {
        (self.clock.now_ns(), self.lease.deadline_ns())
    }

    /// Whether the lease held when `(now_ns, deadline_ns)` was read (counted when not).
    fn lease_ok(&self, (now_ns, deadline_ns): (u64, u64)) -> bool {
        if self.unsafe_no_lease || now_ns < deadline_ns {
            return true;
        }
        self.stats.refused_no_lease.fetch_add(1, Ordering::Relaxed);
        false
    }

    pub fn is_registered(&self, vip: &IpAddr) -> bool {
        match vip {
            IpAddr::V4(a) => read(&self.v4).contains(a),
            IpAddr::V6(a) => read(&self.v6).contains(a),
        }
    }

    /// Stops answering for `vip` at once (the caller may then confirm it to the leader): when
    /// it returns, every reply for `vip` is sent or will never be.
    pub fn withdraw(&self, vip: &IpAddr) {
        let was = match vip {
            IpAddr::V4(a) => write(&self.v4).remove(a),
            IpAddr::V6(a) => write(&self.v6).remove(a),
        };
        if was {
            self.audit("withdraw", vip);
        }
    }

    pub(crate) fn register(&self, vip: &IpAddr) {
        let new = match vip {
            IpAddr::V4(a) => write(&self.v4).insert(*a),
            IpAddr::V6(a) => write(&self.v6).insert(*a),
        };
        if new {
            self.audit("register", vip);
        }
    }

    fn lease_valid(&self) -> bool {
        self.lease.valid_at(self.clock.now_ns())
    }
}

/// What differs between ARP and NDP for a responder: the address family and the announcement.
pub trait Family: Unpin + 'static {
    const NAME: &'static str;
    fn accepts(vip: &IpAddr) -> bool;
    fn announcement(mac: MacAddr, vip: &IpAddr) -> Option<Vec<u8>>;
}

pub struct Arp;
pub struct Ndp;

impl Family for Arp {
    const NAME: &'static str = "arp";
    fn accepts(vip: &IpAddr) -> bool {
        vip.is_ipv4()
    }
    fn announcement(mac: MacAddr, vip: &IpAddr) -> Option<Vec<u8>> {
        match vip {
            IpAddr::V4(a) => Some(wire::gratuitous_arp(mac, *a)),
            IpAddr::V6(_) => None,
        }
    }
}

impl Family for Ndp {
    const NAME: &'static str = "ndp";
    fn accepts(vip: &IpAddr) -> bool {
        vip.is_ipv6()
    }
    fn announcement(mac: MacAddr, vip: &IpAddr) -> Option<Vec<u8>> {
        match vip {
            IpAddr::V6(a) => Some(wire::unsolicited_advert(mac, *a)),
            IpAddr::V4(_) => None,
        }
    }
}

/// How often a responder looks whether the lease is back for announcements it held back.
pub const HELD_BACK_CHECK: Duration = Duration::from_millis(20);

/// Registers VIPs of one family on one interface and sends their announcements.
pub struct Responder<F: Family> {
    answerer: Arc<Answerer>,
    sink: SharedSink,
    /// Announcements held back for want of a lease, sent as soon as it is back: a new owner
    /// whose lease was not valid at the takeover (it had just been cut off) must still tell
    /// the clients, or those that cached the previous owner's MAC keep sending there (their
    /// own traffic keeps the entry confirmed).
    held_back: BTreeSet<IpAddr>,
    family: PhantomData<F>,
}

pub type ArpResponder = Responder<Arp>;
pub type NdpResponder = Responder<Ndp>;

impl<F: Family> Responder<F> {
    pub fn new(answerer: Arc<Answerer>, sink: SharedSink) -> Self {
        Responder {
            answerer,
            sink,
            held_back: BTreeSet::new(),
            family: PhantomData,
        }
    }
}

impl<F: Family> Actor for Responder<F> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HELD_BACK_CHECK, |act, _| {
            if act.held_back.is_empty() || !act.answerer.lease_valid() {
                return;
            }
            for vip in std::mem::take(&mut act.held_back) {
                if act.answerer.is_registered(&vip) {
                    debug!(%vip, family = F::NAME, "lease back: held-back announcement sent");
                    act.announce(&vip);
                }
            }
        });
    }
}

/// Start answering for a VIP and announce it (gratuitous ARP / unsolicited NA).
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Announce(pub IpAddr);

/// Announce again (the repeats after a takeover); nothing if no longer registered.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Reannounce(pub IpAddr);

/// Stop answering for a VIP.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Withdraw(pub IpAddr);

impl<F: Family> Responder<F> {
    fn announce(&mut self, vip: &IpAddr) {
        if !self.answerer.lease_valid() {
            debug!(%vip, family = F::NAME, "no lease: announcement held back");
            self.held_back.insert(*vip);
            return;
        }
        if let Some(frame) = F::announcement(self.answerer.mac, vip) {
            send(&self.sink, &frame);
        }
    }
}

impl<F: Family> Handler<Announce> for Responder<F> {
    type Result = ();
    fn handle(&mut self, Announce(vip): Announce, _: &mut Context<Self>) {
        if F::accepts(&vip) {
            self.answerer.register(&vip);
            self.announce(&vip);
        }
    }
}

impl<F: Family> Handler<Reannounce> for Responder<F> {
    type Result = ();
    fn handle(&mut self, Reannounce(vip): Reannounce, _: &mut Context<Self>) {
        if F::accepts(&vip) && self.answerer.is_registered(&vip) {
            self.announce(&vip);
        }
    }
}

impl<F: Family> Handler<Withdraw> for Responder<F> {
    type Result = ();
    fn handle(&mut self, Withdraw(vip): Withdraw, _: &mut Context<Self>) {
        self.held_back.remove(&vip);
        self.answerer.withdraw(&vip);
    }
}

/// A real interface: its AF_PACKET socket (pnet), the answerer and the receive thread.
pub struct Interface {
    pub answerer: Arc<Answerer>,
    pub sink: SharedSink,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct PnetSink(Box<dyn pnet_datalink::DataLinkSender>);

impl FrameSink for PnetSink {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self.0.send_to(frame, None) {
            Some(r) => r,
            None => Err(io::Error::other("the datalink sender refused the frame")),
        }
    }
}

/// Opens `name` with an AF_PACKET socket (needs CAP_NET_RAW) and starts answering on it.
pub fn open_interface(
    name: &str,
    lease: Arc<Lease>,
    clock: Arc<dyn Clock>,
) -> io::Result<Interface> {
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))?;
    let mac = iface
        .mac
        .ok_or_else(|| io::Error::other(format!("interface {name} has no MAC address")))?;
    let config = pnet_datalink::Config {
        read_timeout: Some(Duration::from_millis(100)),
        // Solicited-node multicast for a VIP is not a group the kernel joined.
        promiscuous: true,
        ..Default::default()
    };
    let (tx, mut rx) = match pnet_datalink::channel(&iface, config)? {
        Channel::Ethernet(tx, rx) => (tx, rx),
        _ => return Err(io::Error::other("not an Ethernet channel")),
    };
    let answerer = Arc::new(Answerer::new(name, mac, lease, clock));
    let sink: SharedSink = Arc::new(Mutex::new(Box::new(PnetSink(tx))));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (answerer, sink, stop) = (answerer.clone(), sink.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("rx-{name}"))
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match rx.next() {
                        Ok(frame) => {
                            answerer.answer_with(frame, |reply| send(&sink, reply));
                        }
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
                        Err(e) => {
                            warn!(interface = %answerer.interface, error = %e, "receive failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?
    };
    Ok(Interface {
        answerer,
        sink,
        stop,
        thread: Some(thread),
    })
}

impl Drop for Interface {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
