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
}

impl NodeBgp {
    pub fn new(flag: Option<Ipv4Addr>, listen: IpAddr, name: &str, listen_port: u16) -> NodeBgp {
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
        }
    }
}

/// The session settings a BGPPeer gives on this node.
pub fn session_peer(name: &str, spec: &BgpPeerSpec, node: &NodeBgp) -> Result<Peer, String> {
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
            graceful_restart: false,
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

/// What this node has told its sessions, kept to send only differences.
#[derive(Default)]
pub struct Bridge {
    sessions: BTreeMap<String, (Peer, Addr<BgpSession>)>,
    /// The passive side, opened with the first session; Err once binding failed (logged
    /// once, the sessions still dial).
    listener: Option<Result<Listener, ()>>,
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
        let mut contributors = self.prefixes.get(key)?.values();
        let mut merged = contributors.next()?.clone();
        for a in contributors {
            merged.merge(a);
        }
        Some(Arc::new(path_attrs(&merged)))
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
        let view = t.bgp_view(me);
        let full = match changes {
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
            } => services
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
            let routes = view.routes(&ip);
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
                let all: BTreeMap<IpNet, Arc<PathAttrs>> = self
                    .prefixes
                    .range((name.clone(), IpNet::V4(Default::default()))..)
                    .take_while(|((p, _), _)| p == name)
                    .filter_map(|(key, _)| Some((key.1, self.desired(key)?)))
                    .collect();
                addr.do_send(ReplaceRoutes(all));
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
        // Each wanted session, and whether its BGPPeer sets a TCP-MD5 password.
        let mut wanted: BTreeMap<String, (Peer, bool)> = BTreeMap::new();
        for (name, spec) in view.peers() {
            match session_peer(name, spec, node) {
                Ok(p) => {
                    let password = spec.password.is_some() || spec.password_secret.is_some();
                    wanted.insert(name.to_string(), (p, password));
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
                if let Some(Ok(l)) = &self.listener {
                    l.unregister(peer.address.ip(), &addr);
                }
                info!(peer = %name, "BGP peer no longer selects this node: ending the session");
                addr.do_send(Shutdown {
                    reason: "raftlb: BGPPeer removed or no longer selects this node".into(),
                });
            }
        }
        for (name, (peer, password)) in wanted {
            let changed = self.sessions.get(&name).is_none_or(|(p, _)| *p != peer);
            if password && changed {
                warn!(peer = %name, "BGPPeer sets a TCP-MD5 password: not applied yet, the session runs without it");
            }
            let listener = self
                .listener
                .get_or_insert_with(|| listen(node.listen_port));
            match self.sessions.get_mut(&name) {
                Some((current, addr)) => {
                    if *current != peer {
                        if let Ok(l) = listener {
                            l.unregister(current.address.ip(), addr);
                            l.register(peer.address.ip(), addr.clone());
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
                        l.register(peer.address.ip(), addr.clone());
                    }
                    self.sessions.insert(name, (peer, addr));
                }
            }
        }
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
        for (_, (_, addr)) in std::mem::take(&mut self.sessions) {
            addr.do_send(Shutdown {
                reason: reason.to_string(),
            });
        }
    }
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
        }
    }
}

/// This node's sessions, as views; with `prefixes`, each with what its peer holds from it.
pub async fn local_views(app: &App, prefixes: bool) -> Vec<BgpSessionView> {
    let bridge = app.bgp.lock().await;
    if !prefixes {
        let sessions = bridge.status().await;
        return sessions
            .iter()
            .map(|s| BgpSessionView::of(&app.fence.name, s))
            .collect();
    }
    bridge
        .status_with_sent()
        .await
        .iter()
        .map(|(s, sent)| BgpSessionView {
            prefixes: sent.iter().map(|p| p.to_string()).collect(),
            ..BgpSessionView::of(&app.fence.name, s)
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
    while applied.next().await {
        let mut b = bridge.lock().await;
        let g = app.state.read().unwrap_or_else(|p| p.into_inner());
        let index = g.last_applied.map_or(0, |l| l.index);
        let changes = g.table.changes_since(synced);
        b.sync(&g.table, &app.fence.name, &node, &changes, &arbiter);
        synced = Some(index);
    }
}
