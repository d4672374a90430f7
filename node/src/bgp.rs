//! The BGP bridge: one `BgpSession` actor per BGPPeer that selects this node, each given the
//! routes the applied table says this node announces to it (`table::bgp`). After a first full
//! pass it looks only at the VIPs the applied entries touched (the table's journal); a
//! configuration or node change means a full pass again.
//!
//! Edits that the OPEN does not carry (advertisements, communities, localPref, aggregation,
//! pools, peers and node selectors, keepalive and connect timers) only change what is sent;
//! the session stays up. Edits of what the OPEN carries (ASNs, router ID, hold time, families,
//! address, port, source, TTL) reset that one session, once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use actix::{Actor, Addr, ArbiterHandle};
use ipnet::IpNet;
use raftlb_actors::bfd::{self, BfdListener, BfdSession, BfdStatus};
use raftlb_actors::bgp::{
    BgpSession, GetSent, GetStatus, Listener, PathAttrs, Peer, PeerAsn, ReplaceRoutes, RouteChange,
    Routes, SessionConfig, SessionStatus, Shutdown,
};
use raftlb_raft_store::table::bgp::{BgpAttrs, BgpRoute};
use raftlb_raft_store::table::index::Changes;
use raftlb_raft_store::table::objects::BgpPeerSpec;
use raftlb_raft_store::table::validate::go_duration_ms;
use raftlb_raft_store::table::{AllocationTable, ServiceState};
use tracing::{info, warn};

use crate::app::App;

/// What the node itself brings to its sessions.
#[derive(Debug, Clone)]
pub struct NodeBgp {
    /// `--router-id`, else the IPv4 address the node listens on, else one derived from the
    /// node's name (MetalLB's fallback).
    pub router_id: Ipv4Addr,
    /// `--bgp-port`: where peers' connections are accepted (RFC 4271's 179); 0 listens
    /// nowhere and only dials.
    pub listen_port: u16,
    /// `--bgp-drain-wait-ms`: how long a drained node announces with GRACEFUL_SHUTDOWN
    /// before it withdraws.
    pub drain_wait: std::time::Duration,
}

impl NodeBgp {
    pub fn new(
        flag: Option<Ipv4Addr>,
        listen: IpAddr,
        name: &str,
        listen_port: u16,
        drain_wait: std::time::Duration,
    ) -> NodeBgp {
        let router_id = flag.unwrap_or_else(|| match listen {
            IpAddr::V4(a) if !a.is_unspecified() && !a.is_loopback() => a,
            _ => {
                // FNV-1a of the name, never 0.0.0.0.
                let h = name.bytes().fold(0x811c_9dc5u32, |h, b| {
                    (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
                });
                Ipv4Addr::from(h.max(1))
            }
        });
        NodeBgp {
            router_id,
            listen_port,
            drain_wait,
        }
    }
}

/// The session settings a BGPPeer gives on this node; `secrets` holds the passwords of the
/// Secrets this node can read (`--kube`), by name.
pub fn session_peer(
    name: &str,
    spec: &BgpPeerSpec,
    node: &NodeBgp,
    secrets: &BTreeMap<String, String>,
) -> Result<Peer, String> {
    let password = match (&spec.password, &spec.password_secret) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(r)) => Some(secrets.get(&r.name).cloned().ok_or_else(|| {
            format!(
                "BGPPeer {name}: spec.passwordSecret: Secret {:?} with a `password` key not found \
                 (Secrets are read in --kube mode, from raftlb's namespace); the session waits for it",
                r.name
            )
        })?),
        (None, None) => None,
    };
    let address: IpAddr = spec
        .peer_address
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|_| format!("BGPPeer {name}: spec.peerAddress is not an IP address"))?;
    let port = spec.peer_port.unwrap_or(179) as u16;
    let local_asn = spec.local_asn.unwrap_or(spec.my_asn);
    let peer_asn = match (spec.peer_asn, spec.dynamic_asn.as_deref()) {
        (Some(asn), _) => PeerAsn::Fixed(asn),
        (None, Some("internal")) => PeerAsn::Internal,
        _ => PeerAsn::External,
    };
    let ibgp = match peer_asn {
        PeerAsn::Fixed(asn) => asn == local_asn,
        PeerAsn::Internal => true,
        PeerAsn::External => false,
    };
    let secs = |v: &Option<String>| {
        v.as_deref()
            .and_then(go_duration_ms)
            .map(|ms| u16::try_from(ms / 1000).unwrap_or(u16::MAX))
    };
    let keepalive = secs(&spec.keepalive_time);
    // MetalLB: if only one timer is set, the other follows (×3 or ÷3).
    let hold_time = secs(&spec.hold_time)
        .or(keepalive.map(|k| k.saturating_mul(3)))
        .unwrap_or(raftlb_actors::bgp::fsm::DEFAULT_HOLD_TIME);
    let router_id = match spec.router_id.as_deref() {
        Some(r) => r
            .parse()
            .map_err(|_| format!("BGPPeer {name}: spec.routerID is not an IPv4 address"))?,
        None => node.router_id,
    };
    let dual = spec.dual_stack_address_family;
    let (next_hop_v4, next_hop_v6) = if dual {
        other_family_next_hops(address)
    } else {
        (None, None)
    };
    Ok(Peer {
        name: name.to_string(),
        address: SocketAddr::new(address, port),
        source: spec.source_address.as_deref().and_then(|s| s.parse().ok()),
        ttl: if ibgp || spec.ebgp_multi_hop { 255 } else { 1 },
        password,
        config: SessionConfig {
            local_asn,
            peer_asn,
            router_id,
            hold_time,
            keepalive,
            connect_retry: secs(&spec.connect_time)
                .unwrap_or(raftlb_actors::bgp::fsm::DEFAULT_CONNECT_RETRY),
            ipv4: address.is_ipv4() || dual,
            ipv6: address.is_ipv6() || dual,
            graceful_restart: spec.enable_graceful_restart,
        },
        next_hop_v4,
        next_hop_v6,
    })
}

/// For a dual-stack session: this node's addresses of both families on the interface that
/// reaches `peer` (the session's own family is replaced by the socket's local address later).
fn other_family_next_hops(peer: IpAddr) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    for i in pnet_datalink::interfaces() {
        if !i.ips.iter().any(|n| n.contains(peer)) {
            continue;
        }
        let v4 = i.ips.iter().find_map(|n| match n.ip() {
            IpAddr::V4(a) => Some(a),
            _ => None,
        });
        let v6 = i.ips.iter().find_map(|n| match n.ip() {
            IpAddr::V6(a) if (a.segments()[0] & 0xffc0) != 0xfe80 => Some(a),
            _ => None,
        });
        return (v4, v6);
    }
    (None, None)
}

fn path_attrs(a: &BgpAttrs) -> PathAttrs {
    PathAttrs {
        local_pref: a.local_pref,
        communities: a.communities.clone(),
        large_communities: a.large_communities.clone(),
    }
}

/// A drained node first marks its routes (RFC 8326 GRACEFUL_SHUTDOWN, LOCAL_PREF 0) so that
/// routers move traffic to the other nodes, then withdraws them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Drain {
    #[default]
    No,
    Marking {
        until: std::time::Instant,
    },
    Withdrawn,
}

/// What this node has told its sessions, kept to send only differences.
#[derive(Default)]
pub struct Bridge {
    sessions: BTreeMap<String, (Peer, Addr<BgpSession>)>,
    /// The passive side and its port, opened with the first session; Err once binding
    /// failed (logged once, the sessions still dial). Reopened when the port changes.
    listener: Option<(u16, Result<Listener, ()>)>,
    /// One BFD session per peer address whose BGPPeer names a BFDProfile: its settings, its
    /// local discriminator and the actor.
    bfd: BTreeMap<IpAddr, (bfd::Config, u32, Addr<BfdSession>)>,
    /// UDP 3784, opened with the first BFD session.
    bfd_listener: Option<Result<BfdListener, ()>>,
    /// The last local discriminator handed out.
    discriminator: u32,
    /// Where a drain of this node stands.
    drain: Drain,
    /// Passwords of the Secrets BGPPeers may name, by Secret name (`--kube`).
    secrets: BTreeMap<String, String>,
    /// What the last sync was given, for a resync when the Secrets change.
    last: Option<(NodeBgp, ArbiterHandle)>,
    /// The routes each VIP gave, as last computed.
    by_vip: BTreeMap<IpAddr, Vec<BgpRoute>>,
    /// Per (peer, prefix): the VIPs behind it and the attributes each asks for (an aggregate
    /// stands for several VIPs).
    prefixes: BTreeMap<(String, IpNet), BTreeMap<IpAddr, BgpAttrs>>,
}

impl Bridge {
    /// The merged attributes of one (peer, prefix), None once nothing is behind it: the
    /// table's own rule for overlapping advertisements (`BgpAttrs::merge`).
    fn desired(&self, key: &(String, IpNet)) -> Option<Arc<PathAttrs>> {
        self.merged(key).map(|m| Arc::new(path_attrs(&m)))
    }

    fn merged(&self, key: &(String, IpNet)) -> Option<BgpAttrs> {
        let mut contributors = self.prefixes.get(key)?.values();
        let mut merged = contributors.next()?.clone();
        for a in contributors {
            merged.merge(a);
        }
        Some(merged)
    }

    /// Everything session `peer` should hold, optionally marked for graceful shutdown.
    fn whole_table(&self, peer: &str, graceful_shutdown: bool) -> BTreeMap<IpNet, Arc<PathAttrs>> {
        self.prefixes
            .range((peer.to_string(), IpNet::V4(Default::default()))..)
            .take_while(|((p, _), _)| p == peer)
            .filter_map(|(key, _)| {
                let mut attrs = self.merged(key)?;
                if graceful_shutdown {
                    attrs.mark_graceful_shutdown();
                }
                Some((key.1, Arc::new(path_attrs(&attrs))))
            })
            .collect()
    }

    /// Brings the sessions in step with the table for node `me`.
    pub fn sync(
        &mut self,
        t: &AllocationTable,
        me: &str,
        node: &NodeBgp,
        changes: &Changes,
        arbiter: &ArbiterHandle,
    ) {
        self.last = Some((node.clone(), arbiter.clone()));
        let view = t.bgp_view(me);
        let now = std::time::Instant::now();
        let drain = match (view.drained(), self.drain) {
            (true, Drain::No) => {
                info!(wait = ?node.drain_wait, "drained: announcing with GRACEFUL_SHUTDOWN, then withdrawing");
                Drain::Marking {
                    until: now + node.drain_wait,
                }
            }
            (true, Drain::Marking { until }) if now >= until => {
                info!("drained: withdrawing");
                Drain::Withdrawn
            }
            (true, d) => d,
            (false, _) => Drain::No,
        };
        let phase_changed = drain != self.drain;
        self.drain = drain;
        let marking = matches!(drain, Drain::Marking { .. });
        let full = phase_changed
            || match changes {
                Changes::All => true,
                Changes::Some { nodes, .. } => *nodes,
            };
        if full {
            self.sync_peers(&view, node, arbiter);
        }
        let vips: BTreeSet<IpAddr> = match changes {
            Changes::Some {
                vips,
                services,
                nodes: false,
            } if !full => services
                .iter()
                .filter_map(|k| match &t.services().get(k.as_str())?.state {
                    ServiceState::Allocated { ips, .. } => Some(ips.clone()),
                    _ => None,
                })
                .flatten()
                .chain(vips.iter().copied())
                .collect(),
            _ => t
                .addresses()
                .keys()
                .chain(self.by_vip.keys())
                .copied()
                .collect(),
        };
        let mut dirty: BTreeSet<(String, IpNet)> = BTreeSet::new();
        for ip in vips {
            let routes = if marking {
                view.drain_routes(&ip)
            } else {
                view.routes(&ip)
            };
            let old = self.by_vip.get(&ip).cloned().unwrap_or_default();
            if routes == old {
                continue;
            }
            for r in &old {
                let key = (r.peer.clone(), r.prefix);
                if let Some(c) = self.prefixes.get_mut(&key) {
                    c.remove(&ip);
                    if c.is_empty() {
                        self.prefixes.remove(&key);
                    }
                }
                dirty.insert(key);
            }
            for r in &routes {
                let key = (r.peer.clone(), r.prefix);
                self.prefixes
                    .entry(key.clone())
                    .or_default()
                    .insert(ip, r.attrs.clone());
                dirty.insert(key);
            }
            if routes.is_empty() {
                self.by_vip.remove(&ip);
            } else {
                self.by_vip.insert(ip, routes);
            }
        }
        if full {
            // Every session gets its whole table (a new session starts empty).
            for (name, (_, addr)) in &self.sessions {
                addr.do_send(ReplaceRoutes(self.whole_table(name, false)));
            }
            return;
        }
        let mut per_peer: BTreeMap<&str, Vec<RouteChange>> = BTreeMap::new();
        for key in &dirty {
            per_peer
                .entry(key.0.as_str())
                .or_default()
                .push((key.1, self.desired(key)));
        }
        for (peer, changes) in per_peer {
            if let Some((_, addr)) = self.sessions.get(peer) {
                addr.do_send(Routes(changes));
            }
        }
    }

    /// Starts, reconfigures and stops sessions to match the BGPPeers selecting this node.
    fn sync_peers(
        &mut self,
        view: &raftlb_raft_store::table::bgp::BgpView<'_>,
        node: &NodeBgp,
        arbiter: &ArbiterHandle,
    ) {
        let mut wanted: BTreeMap<String, Peer> = BTreeMap::new();
        // BFD per peer address: the profile of the first BGPPeer (by name) that names one.
        let mut wanted_bfd: BTreeMap<IpAddr, (bfd::Config, Option<IpAddr>)> = BTreeMap::new();
        for (name, spec) in view.peers() {
            match session_peer(name, spec, node, &self.secrets) {
                Ok(p) => {
                    if let Some(profile) = spec
                        .bfd_profile
                        .as_deref()
                        .and_then(|n| view.bfd_profile(n))
                    {
                        wanted_bfd
                            .entry(p.address.ip())
                            .or_insert((bfd_config(profile), p.source));
                    }
                    wanted.insert(name.to_string(), p);
                }
                Err(e) => warn!(error = %e, "BGP peer skipped"),
            }
        }
        let gone: Vec<String> = self
            .sessions
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some((peer, addr)) = self.sessions.remove(&name) {
                if let Some((_, Ok(l))) = &self.listener {
                    l.unregister(peer.address.ip(), &addr, peer.password.is_some());
                }
                info!(peer = %name, "BGP peer no longer selects this node: ending the session");
                addr.do_send(Shutdown {
                    reason: "raftlb: BGPPeer removed or no longer selects this node".into(),
                });
            }
        }
        // OpenELB's BgpConf may name the port (-1: none); else the node's --bgp-port.
        let port = view
            .listen_port()
            .map_or(node.listen_port, |p| u16::try_from(p).unwrap_or(0));
        if let Some((old, _)) = self.listener.as_ref().filter(|(p, _)| *p != port) {
            info!(
                from = old,
                to = port,
                "BGP: the listen port changed; reopening"
            );
            self.listener = None; // closes the old socket first
            let (_, listener) = self.listener.insert((port, listen(port)));
            if let Ok(l) = listener {
                for (name, (peer, addr)) in &self.sessions {
                    accept_from(l, name, peer, addr);
                }
            }
        }
        for (name, peer) in wanted {
            let (_, listener) = self.listener.get_or_insert_with(|| (port, listen(port)));
            match self.sessions.get_mut(&name) {
                Some((current, addr)) => {
                    if *current != peer {
                        if let Ok(l) = listener {
                            l.unregister(current.address.ip(), addr, current.password.is_some());
                            accept_from(l, &name, &peer, addr);
                        }
                        addr.do_send(raftlb_actors::bgp::session::Reconfigure(peer.clone()));
                        *current = peer;
                    }
                }
                None => {
                    info!(peer = %name, address = %peer.address, "starting BGP session");
                    let p = peer.clone();
                    let addr = BgpSession::start_in_arbiter(arbiter, move |_| BgpSession::new(p));
                    if let Ok(l) = listener {
                        accept_from(l, &name, &peer, &addr);
                    }
                    self.sessions.insert(name, (peer, addr));
                }
            }
        }
        self.sync_bfd(wanted_bfd, arbiter);
    }

    /// Starts, reconfigures and stops BFD sessions to match `wanted`, and tells each BGP
    /// session which BFD session speaks for its peer.
    fn sync_bfd(
        &mut self,
        wanted: BTreeMap<IpAddr, (bfd::Config, Option<IpAddr>)>,
        arbiter: &ArbiterHandle,
    ) {
        let gone: Vec<IpAddr> = self
            .bfd
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some((_, discr, session)) = self.bfd.remove(&addr) {
                if let Some(Ok(l)) = &self.bfd_listener {
                    l.unregister(addr, discr);
                }
                session.do_send(bfd::session::Shutdown);
            }
        }
        if !wanted.is_empty() && self.bfd_listener.is_none() {
            self.bfd_listener = Some(match BfdListener::bind(bfd::CONTROL_PORT) {
                Ok(l) => {
                    info!(port = bfd::CONTROL_PORT, "BFD: receiving control packets");
                    Ok(l)
                }
                Err(e) => {
                    warn!(error = %e, "BFD: cannot receive control packets; BFD sessions stay down");
                    Err(())
                }
            });
        }
        for (addr, (cfg, source)) in wanted {
            match self.bfd.get_mut(&addr) {
                Some((current, _, session)) => {
                    if *current != cfg {
                        session.do_send(bfd::session::Reconfigure(cfg));
                        *current = cfg;
                    }
                }
                None => {
                    self.discriminator = next_discriminator(self.discriminator);
                    let discr = self.discriminator;
                    info!(peer = %addr, discriminator = discr, "starting BFD session");
                    let session = BfdSession::start_in_arbiter(arbiter, move |_| {
                        BfdSession::new(addr, source, discr, cfg)
                    });
                    if let Some(Ok(l)) = &self.bfd_listener {
                        l.register(addr, discr, session.clone());
                    }
                    self.bfd.insert(addr, (cfg, discr, session));
                }
            }
        }
        // Every BGP session of an address with BFD hears from its BFD session.
        for (addr, (_, _, session)) in &self.bfd {
            let subscribers = self
                .sessions
                .values()
                .filter(|(p, _)| p.address.ip() == *addr)
                .map(|(_, a)| a.clone().recipient())
                .collect();
            session.do_send(bfd::session::Subscribe(subscribers));
        }
    }

    /// New Secret passwords (never logged); the sessions are brought in step with them.
    pub fn set_secrets(
        &mut self,
        secrets: BTreeMap<String, String>,
        t: &AllocationTable,
        me: &str,
    ) {
        if secrets == self.secrets {
            return;
        }
        self.secrets = secrets;
        if let Some((node, arbiter)) = self.last.clone() {
            self.sync(t, me, &node, &Changes::All, &arbiter);
        }
    }

    /// When the graceful-shutdown window of a drain ends (the bridge must look again then).
    pub fn drain_deadline(&self) -> Option<std::time::Instant> {
        match self.drain {
            Drain::Marking { until } => Some(until),
            _ => None,
        }
    }

    /// Marks everything every session announces with GRACEFUL_SHUTDOWN and LOCAL_PREF 0
    /// (RFC 8326), so routers move traffic away before the sessions end (SIGTERM). Returns
    /// whether there was any session to tell.
    pub fn mark_graceful_shutdown(&self) -> bool {
        for (name, (_, addr)) in &self.sessions {
            addr.do_send(ReplaceRoutes(self.whole_table(name, true)));
        }
        !self.sessions.is_empty()
    }

    /// Every BFD session's status, by peer address.
    pub async fn bfd_status(&self) -> BTreeMap<IpAddr, BfdStatus> {
        let mut out = BTreeMap::new();
        for (addr, (_, _, session)) in &self.bfd {
            if let Ok(s) = session.send(bfd::session::GetStatus).await {
                out.insert(*addr, s);
            }
        }
        out
    }

    /// The status of every session (`ctl get bgp`, metrics).
    pub async fn status(&self) -> Vec<SessionStatus> {
        let mut out = Vec::new();
        for (_, addr) in self.sessions.values() {
            if let Ok(s) = addr.send(GetStatus).await {
                out.push(s);
            }
        }
        out
    }

    /// Each session's status with the prefixes its peer holds from it.
    pub async fn status_with_sent(&self) -> Vec<(SessionStatus, Vec<IpNet>)> {
        let mut out = Vec::new();
        for (_, addr) in self.sessions.values() {
            if let (Ok(s), Ok(sent)) = (addr.send(GetStatus).await, addr.send(GetSent).await) {
                out.push((s, sent));
            }
        }
        out
    }

    /// Ends every session with a Cease carrying `reason` (shutdown).
    pub fn shutdown(&mut self, reason: &str) {
        // AdminDown first: the peer's BFD must not read the end of the process as a failure.
        for (_, (_, _, session)) in std::mem::take(&mut self.bfd) {
            session.do_send(bfd::session::Shutdown);
        }
        for (_, (_, addr)) in std::mem::take(&mut self.sessions) {
            addr.do_send(Shutdown {
                reason: reason.to_string(),
            });
        }
    }
}

/// Hands `peer`'s inbound connections to `session`, with its TCP-MD5 key.
fn accept_from(listener: &Listener, name: &str, peer: &Peer, session: &Addr<BgpSession>) {
    if let Err(e) = listener.register(peer.address.ip(), session.clone(), peer.password.as_deref())
    {
        warn!(peer = %name, error = %e, "BGP: inbound connections from this peer are refused");
    }
}

/// A BFDProfile's settings, with MetalLB's defaults (300 ms, 300 ms, 3).
fn bfd_config(p: &raftlb_raft_store::table::objects::BfdProfileSpec) -> bfd::Config {
    let us = |ms: Option<u32>| ms.unwrap_or(300).saturating_mul(1000);
    bfd::Config {
        desired_min_tx_us: us(p.transmit_interval),
        required_min_rx_us: us(p.receive_interval),
        detect_mult: p.detect_multiplier.unwrap_or(3).clamp(1, 255) as u8,
        passive: p.passive_mode,
    }
}

/// The next local discriminator: nonzero, and different after a restart (a peer still
/// holding the old session must not take the new one for it), so it starts from the clock.
fn next_discriminator(last: u32) -> u32 {
    let next = if last == 0 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| {
                d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)
            })
    } else {
        last.wrapping_add(1)
    };
    next.max(1)
}

/// Opens the passive side on `port`, or says why not (port 0: on purpose).
fn listen(port: u16) -> Result<Listener, ()> {
    if port == 0 {
        return Err(());
    }
    match Listener::bind(port) {
        Ok(l) => {
            info!(address = %l.local_addr(), "BGP: accepting connections from peers");
            Ok(l)
        }
        Err(e) => {
            warn!(error = %e, "BGP: not accepting connections from peers (sessions still dial)");
            Err(())
        }
    }
}

/// One session as the peer protocol and the admin API carry it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BgpSessionView {
    pub node: String,
    pub peer: String,
    pub address: String,
    pub state: String,
    pub established_since_ms: u64,
    pub local_address: String,
    /// "outbound" or "inbound": who opened the connection in use.
    pub connection: String,
    pub peer_asn: u32,
    pub peer_router_id: String,
    pub hold_time: u16,
    pub keepalive: u16,
    pub families: Vec<String>,
    pub prefixes_sent: u64,
    pub prefixes_pending: u64,
    pub updates_sent: u64,
    pub downs: u64,
    pub last_error: String,
    /// The prefixes the peer holds from this session, when asked for.
    pub prefixes: Vec<String>,
    /// The BFD session with the same peer, when the BGPPeer names a BFDProfile.
    pub bfd: Option<BfdView>,
}

/// One BFD session as the peer protocol and the admin API carry it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BfdView {
    pub state: String,
    pub remote_state: String,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    pub diag: String,
    pub tx_interval_us: u32,
    pub detection_time_us: u32,
    pub ups: u64,
    pub downs: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub packets_discarded: u64,
    pub last_discard: String,
}

impl BfdView {
    fn of(b: &BfdStatus) -> Option<BfdView> {
        Some(BfdView {
            state: b.state.to_string(),
            remote_state: b.remote_state.to_string(),
            local_discriminator: b.local_discriminator,
            remote_discriminator: b.remote_discriminator,
            diag: b.diag.to_string(),
            tx_interval_us: b.tx_interval_us,
            detection_time_us: b.detection_time_us,
            ups: b.ups,
            downs: b.downs,
            packets_in: b.packets_in,
            packets_out: b.packets_out,
            packets_discarded: b.packets_discarded,
            last_discard: b.last_discard.clone().unwrap_or_default(),
        })
    }
}

impl BgpSessionView {
    pub fn of(node: &str, s: &SessionStatus) -> BgpSessionView {
        BgpSessionView {
            node: node.to_string(),
            peer: s.peer.clone(),
            address: s.address.clone(),
            state: s.state.to_string(),
            established_since_ms: s
                .established_since
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64),
            local_address: s.local_address.map(|a| a.to_string()).unwrap_or_default(),
            connection: s.connection.to_string(),
            peer_asn: s.peer_asn.unwrap_or(0),
            peer_router_id: s.peer_router_id.map(|a| a.to_string()).unwrap_or_default(),
            hold_time: s.hold_time,
            keepalive: s.keepalive,
            families: s.families.iter().map(|f| f.to_string()).collect(),
            prefixes_sent: s.prefixes_sent as u64,
            prefixes_pending: s.prefixes_pending as u64,
            updates_sent: s.updates_sent,
            downs: s.downs,
            last_error: s.last_error.clone().unwrap_or_default(),
            prefixes: Vec::new(),
            bfd: None,
        }
    }
}

/// This node's sessions, as views; with `prefixes`, each with what its peer holds from it.
pub async fn local_views(app: &App, prefixes: bool) -> Vec<BgpSessionView> {
    let bridge = app.bgp.lock().await;
    let bfd = bridge.bfd_status().await;
    let view = |s: &SessionStatus| {
        let mut v = BgpSessionView::of(&app.fence.name, s);
        let peer = s.address.parse::<SocketAddr>().ok().map(|a| a.ip());
        if let Some(b) = peer.and_then(|ip| bfd.get(&ip)) {
            v.bfd = BfdView::of(b);
        }
        v
    };
    if !prefixes {
        return bridge.status().await.iter().map(view).collect();
    }
    bridge
        .status_with_sent()
        .await
        .iter()
        .map(|(s, sent)| BgpSessionView {
            prefixes: sent.iter().map(|p| p.to_string()).collect(),
            ..view(s)
        })
        .collect()
}

/// Keeps the sessions in step with the table for as long as the process runs.
pub async fn run(
    app: App,
    arbiter: ArbiterHandle,
    node: NodeBgp,
    bridge: Arc<tokio::sync::Mutex<Bridge>>,
) {
    let mut applied = app.applied_changes();
    let mut synced: Option<u64> = None;
    loop {
        // Wake for the next applied entry, or when a drain's marking window ends.
        let deadline = bridge.lock().await.drain_deadline();
        let more = match deadline {
            Some(at) => tokio::select! {
                more = applied.next() => more,
                _ = tokio::time::sleep_until(at.into()) => true,
            },
            None => applied.next().await,
        };
        if !more {
            break;
        }
        let mut b = bridge.lock().await;
        let g = app.state.read().unwrap_or_else(|p| p.into_inner());
        let index = g.last_applied.map_or(0, |l| l.index);
        let changes = g.table.changes_since(synced);
        b.sync(&g.table, &app.fence.name, &node, &changes, &arbiter);
        synced = Some(index);
    }
}

#[cfg(test)]
#[path = "bgp_tests.rs"]
mod tests;
