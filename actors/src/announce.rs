//! The actors above the responders: the `Announcer` (one per node) reconciles what the table
//! says this node owns into one `VipActor` per owned VIP and one `ServiceActor` per Service it
//! announces.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use crate::responder::{Announce, Answerer, ArpResponder, NdpResponder, Reannounce, Withdraw};

/// When announcements go out after a takeover: at once, then again.
pub const DEFAULT_REPEATS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// One interface as the announcer sees it.
#[derive(Clone)]
pub struct InterfaceHandle {
    pub answerer: Arc<Answerer>,
    pub arp: Addr<ArpResponder>,
    /// None: no NDP here (MetalLB answers NDP only where the interface has an IPv6
    /// link-local address).
    pub ndp: Option<Addr<NdpResponder>>,
}

impl InterfaceHandle {
    fn tell<M>(&self, vip: IpAddr, make: fn(IpAddr) -> M)
    where
        M: Message<Result = ()> + Send + 'static,
        ArpResponder: Handler<M>,
        NdpResponder: Handler<M>,
    {
        if vip.is_ipv4() {
            self.arp.do_send(make(vip));
        } else {
            if let Some(ndp) = &self.ndp {
                ndp.do_send(make(vip));
            }
        }
    }
}

/// Announces one VIP on its interfaces for as long as it lives.
pub struct VipActor {
    vip: IpAddr,
    interfaces: Vec<InterfaceHandle>,
    /// Shared by every VipActor of the node (there is one per owned VIP).
    repeats: Arc<[Duration]>,
}

impl Actor for VipActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for i in &self.interfaces {
            i.tell(self.vip, Announce);
        }
        for &d in self.repeats.clone().iter() {
            ctx.run_later(d, |act, _| {
                for i in &act.interfaces {
                    i.tell(act.vip, Reannounce);
                }
            });
        }
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        for i in &self.interfaces {
            i.answerer.withdraw(&self.vip);
            i.tell(self.vip, Withdraw);
        }
        Running::Stop
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

impl Handler<Stop> for VipActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Stop> for ServiceActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Where one Service is announced from this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStatus {
    pub ips: Vec<IpAddr>,
    /// The Service's IPs this node announces, with the interfaces.
    pub announced: Vec<(IpAddr, Vec<String>)>,
}

/// Tracks one Service: its IPs and which of them this node announces; logs each change once.
pub struct ServiceActor {
    key: String,
    /// The same allocation as the announcer's record of what it last sent.
    status: Arc<ServiceStatus>,
}

impl Actor for ServiceActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Update(Arc<ServiceStatus>);

impl Handler<Update> for ServiceActor {
    type Result = ();
    fn handle(&mut self, Update(status): Update, _: &mut Context<Self>) {
        if status != self.status {
            if status.announced != self.status.announced {
                info!(service = %self.key, announced = ?status.announced, "announcing");
            }
            self.status = status;
        }
    }
}

/// Reads one Service's status.
#[derive(Message)]
#[rtype(result = "ServiceStatus")]
pub struct GetStatus;

impl Handler<GetStatus> for ServiceActor {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult((*self.status).clone())
    }
}

/// What the table says, for this node.
#[derive(Message, Debug, Clone, Default)]
#[rtype(result = "SyncReport")]
pub struct Sync {
    /// VIPs this node owns -> the interfaces to announce each on.
    pub owned: BTreeMap<IpAddr, Vec<String>>,
    /// Service key -> its IPs, for the Services with an IP this node owns.
    pub services: BTreeMap<String, Vec<IpAddr>>,
    /// What the two maps cover.
    pub scope: Scope,
}

/// What a [`Sync`] covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Everything: afterwards the announcer holds exactly what the maps list.
    #[default]
    All,
    /// Only these VIPs and Services (what the applied entries touched): one listed and absent
    /// from the maps is no longer this node's; one not listed is left as it is.
    Only {
        vips: BTreeSet<IpAddr>,
        services: BTreeSet<String>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub started: Vec<IpAddr>,
    /// Withdrawn before this reply: no answerer of this node answers for them any more.
    pub withdrawn: Vec<IpAddr>,
    /// VIPs held after this sync.
    pub holding: usize,
}

pub struct Announcer {
    interfaces: BTreeMap<String, InterfaceHandle>,
    vips: BTreeMap<IpAddr, (Vec<String>, Addr<VipActor>)>,
    /// Each Service's actor and the status it was last sent: only a change is sent again.
    services: BTreeMap<String, (Addr<ServiceActor>, Arc<ServiceStatus>)>,
    repeats: Arc<[Duration]>,
}

impl Announcer {
    pub fn new(interfaces: BTreeMap<String, InterfaceHandle>, repeats: Vec<Duration>) -> Self {
        Announcer {
            interfaces,
            vips: BTreeMap::new(),
            services: BTreeMap::new(),
            repeats: repeats.into(),
        }
    }
}

impl Actor for Announcer {
    type Context = Context<Self>;
}

impl Handler<Sync> for Announcer {
    type Result = MessageResult<Sync>;

    fn handle(&mut self, sync: Sync, _: &mut Context<Self>) -> Self::Result {
        let mut report = SyncReport::default();
        let (vips, services): (BTreeSet<IpAddr>, BTreeSet<String>) = match &sync.scope {
            Scope::All => (
                self.vips.keys().chain(sync.owned.keys()).copied().collect(),
                self.services
                    .keys()
                    .chain(sync.services.keys())
                    .cloned()
                    .collect(),
            ),
            Scope::Only { vips, services } => (vips.clone(), services.clone()),
        };
        // Withdraw first, synchronously, so the reply can be taken as "stopped".
        for ip in &vips {
            let wanted = sync.owned.get(ip);
            if self.vips.get(ip).is_none_or(|(ifs, _)| Some(ifs) == wanted) {
                continue;
            }
            let (ifs, actor) = self.vips.remove(ip).expect("checked above");
            for name in &ifs {
                if let Some(i) = self.interfaces.get(name) {
                    i.answerer.withdraw(ip);
                }
            }
            actor.do_send(Stop);
            report.withdrawn.push(*ip);
        }
        for ip in &vips {
            let Some(ifs) = sync.owned.get(ip) else {
                continue;
            };
            if self.vips.contains_key(ip) {
                continue;
            }
            let handles: Vec<InterfaceHandle> = ifs
                .iter()
                .filter_map(|n| {
                    let h = self.interfaces.get(n).cloned();
                    if h.is_none() {
                        warn!(vip = %ip, interface = %n, "owned VIP on an interface this node does not announce on");
                    }
                    h
                })
                .collect();
            let actor = VipActor {
                vip: *ip,
                interfaces: handles,
                repeats: self.repeats.clone(),
            }
            .start();
            self.vips.insert(*ip, (ifs.clone(), actor));
            report.started.push(*ip);
        }
        // Services: a message only to those whose status changed.
        for key in services {
            let Some(ips) = sync.services.get(&key) else {
                if let Some((a, _)) = self.services.remove(&key) {
                    a.do_send(Stop);
                }
                continue;
            };
            let status = ServiceStatus {
                ips: ips.clone(),
                announced: ips
                    .iter()
                    .filter_map(|ip| self.vips.get(ip).map(|(ifs, _)| (*ip, ifs.clone())))
                    .collect(),
            };
            let (actor, sent) = self.services.entry(key.clone()).or_insert_with(|| {
                let status = Arc::new(ServiceStatus::default());
                let actor = ServiceActor {
                    key,
                    status: status.clone(),
                }
                .start();
                (actor, status)
            });
            if **sent != status {
                let status = Arc::new(status);
                actor.do_send(Update(status.clone()));
                *sent = status;
            }
        }
        report.holding = self.vips.len();
        MessageResult(report)
    }
}

/// A new interface to announce on (discovered after start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddInterface(pub String, pub InterfaceHandle);

/// An interface that is gone or no longer suitable: nothing is announced on it any more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveInterface(pub String);

impl Handler<AddInterface> for Announcer {
    type Result = ();
    fn handle(&mut self, AddInterface(name, handle): AddInterface, _: &mut Context<Self>) {
        info!(interface = %name, "answering ARP/NDP on a new interface");
        // VIPs the table already lists on it (owned before it could be opened) start now.
        for (ip, (ifs, _)) in &self.vips {
            if ifs.contains(&name) {
                handle.tell(*ip, Announce);
            }
        }
        self.interfaces.insert(name, handle);
    }
}

impl Handler<RemoveInterface> for Announcer {
    type Result = ();
    fn handle(&mut self, RemoveInterface(name): RemoveInterface, _: &mut Context<Self>) {
        let Some(handle) = self.interfaces.remove(&name) else {
            return;
        };
        info!(interface = %name, "no longer answering on this interface");
        // Withdrawn now, not when the table's next Sync restarts the VIPs on it.
        for (ip, (ifs, _)) in &self.vips {
            if ifs.contains(&name) {
                handle.answerer.withdraw(ip);
            }
        }
    }
}

/// The Service actor of `key`, to ask it for its status.
#[derive(Message)]
#[rtype(result = "Option<Addr<ServiceActor>>")]
pub struct ServiceAddr(pub String);

impl Handler<ServiceAddr> for Announcer {
    type Result = Option<Addr<ServiceActor>>;
    fn handle(&mut self, ServiceAddr(key): ServiceAddr, _: &mut Context<Self>) -> Self::Result {
        self.services.get(&key).map(|(a, _)| a.clone())
    }
}

#[cfg(test)]
#[path = "announce_tests.rs"]
mod tests;
