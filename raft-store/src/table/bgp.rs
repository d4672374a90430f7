//! BGP: which peers a node runs sessions with, and what it announces to each — MetalLB's
//! BGPPeer and BGPAdvertisement rules, read from the applied table.
//!
//! Unlike layer 2 there is no single owner: under `externalTrafficPolicy: Cluster` every
//! eligible node announces every selected Service address (next hop self; the router spreads
//! the traffic by ECMP); under `Local` only nodes with a ready endpoint of the Service do.
//! A node is eligible unless it is excluded or drained. Announcements follow the node's own
//! applied table, whatever its lease says (README "BGP: who announces what" says why).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::eligibility::AdReach;
use super::objects::{BfdProfileSpec, BgpAdvertisementSpec, BgpPeerSpec, Kind, ObjectSpec};
use super::{selector, AllocationTable};

/// The path attributes one advertisement asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BgpAttrs {
    pub local_pref: Option<u32>,
    /// Standard communities, `AA << 16 | NN`, sorted, no duplicates.
    pub communities: Vec<u32>,
    /// Large communities, sorted, no duplicates.
    pub large_communities: Vec<[u32; 3]>,
}

impl BgpAttrs {
    /// Two advertisements of one prefix to one peer: communities are united, the higher
    /// LOCAL_PREF wins (two different ones are refused at apply time where they overlap).
    pub fn merge(&mut self, other: &BgpAttrs) {
        self.local_pref = self.local_pref.max(other.local_pref);
        self.communities.extend(&other.communities);
        self.communities.sort_unstable();
        self.communities.dedup();
        self.large_communities.extend(&other.large_communities);
        self.large_communities.sort_unstable();
        self.large_communities.dedup();
    }

    /// The marks of a route being taken out of service (RFC 8326): the GRACEFUL_SHUTDOWN
    /// community and LOCAL_PREF 0.
    pub fn mark_graceful_shutdown(&mut self) {
        self.merge(&BgpAttrs {
            local_pref: None,
            communities: vec![GRACEFUL_SHUTDOWN],
            large_communities: Vec::new(),
        });
        self.local_pref = Some(0);
    }
}

/// One announcement: `prefix` to the BGPPeer named `peer`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BgpRoute {
    pub peer: String,
    pub prefix: IpNet,
    pub attrs: BgpAttrs,
}

/// Well-known communities by the names MetalLB and Cilium accept (RFC 1997, 7999, 8326,
/// 7611, 8642).
pub const WELL_KNOWN_COMMUNITIES: [(&str, u32); 8] = [
    ("no-export", 0xFFFF_FF01),
    ("no-advertise", 0xFFFF_FF02),
    ("no-export-subconfed", 0xFFFF_FF03),
    ("local-as", 0xFFFF_FF03),
    ("no-peer", 0xFFFF_FF04),
    ("blackhole", 0xFFFF_029A),
    ("graceful-shutdown", 0xFFFF_0000),
    ("accept-own", 0xFFFF_0001),
];

/// A community as written in a BGPAdvertisement (or a Community alias's value): `AA:NN`,
/// `large:A:B:C` or a well-known name. None: not a community.
pub fn parse_community(text: &str) -> Option<Community> {
    if let Some(large) = text.strip_prefix("large:") {
        let parts: Vec<u32> = large
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        return match parts[..] {
            [a, b, c] => Some(Community::Large([a, b, c])),
            _ => None,
        };
    }
    if let Some((_, v)) = WELL_KNOWN_COMMUNITIES.iter().find(|(n, _)| *n == text) {
        return Some(Community::Standard(*v));
    }
    let (a, b) = text.split_once(':')?;
    Some(Community::Standard(
        (u32::from(a.parse::<u16>().ok()?) << 16) | u32::from(b.parse::<u16>().ok()?),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Community {
    Standard(u32),
    Large([u32; 3]),
}

/// What BGP needs from the table for one node, gathered once (its cost is the configuration,
/// not the number of Services).
pub struct BgpView<'a> {
    table: &'a AllocationTable,
    node: &'a str,
    /// The BGPPeers (and OpenELB's BgpPeers, read as BGPPeers) whose nodeSelectors select
    /// this node.
    peers: Vec<(&'a str, Cow<'a, BgpPeerSpec>)>,
    /// OpenELB's `BgpConf.spec.listenPort`, if set.
    listen_port: Option<i32>,
    /// BGPAdvertisements (and the one each bgp Eip implies) whose nodeSelectors select this
    /// node, with their attributes resolved.
    ads: Vec<(Cow<'a, BgpAdvertisementSpec>, BgpAttrs)>,
    pool_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    /// BFDProfiles by name.
    bfd: BTreeMap<&'a str, &'a BfdProfileSpec>,
    /// Why this node announces nothing at all, if so.
    silent: Option<String>,
    /// Silent only because an operator drained it: during the graceful-shutdown window the
    /// node still announces, marked (`drain_routes`).
    drained: bool,
}

/// RFC 8326's GRACEFUL_SHUTDOWN community (65535:0).
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;

impl AllocationTable {
    /// The BGP view of node `node`.
    pub fn bgp_view<'a>(&'a self, node: &'a str) -> BgpView<'a> {
        let record = self.nodes().get(node);
        let no_labels = BTreeMap::new();
        let labels = record.map_or(&no_labels, |r| &r.facts.labels);
        let selects = |list: &[super::objects::LabelSelector]| {
            list.is_empty() || list.iter().any(|s| selector::matches(s, labels))
        };
        let conf = self.objects_of(Kind::BgpConf).find_map(|o| match &o.spec {
            ObjectSpec::BgpConf(c) if o.name == super::openelb::BGP_CONF_NAME => Some(c),
            _ => None,
        });
        let metallb = self
            .objects_of(Kind::BGPPeer)
            .filter_map(|o| match &o.spec {
                ObjectSpec::BgpPeer(p) => Some((o.name.as_str(), Cow::Borrowed(p))),
                _ => None,
            });
        let openelb = self
            .objects_of(Kind::BgpPeer)
            .filter_map(|o| match &o.spec {
                ObjectSpec::OpenElbBgpPeer(p) => {
                    Some((o.name.as_str(), Cow::Owned(p.bgp_peer(conf)?)))
                }
                _ => None,
            });
        let mut peers: Vec<(&str, Cow<BgpPeerSpec>)> = metallb
            .chain(openelb)
            .filter(|(_, p)| selects(&p.node_selectors))
            .collect();
        peers.sort_by(|a, b| a.0.cmp(b.0));
        let listen_port = conf.map(|c| c.listen_port).filter(|p| *p != 0);
        let aliases: BTreeMap<&str, &str> = self
            .objects_of(Kind::Community)
            .filter_map(|o| match &o.spec {
                ObjectSpec::Community(c) => Some(
                    c.communities
                        .iter()
                        .map(|a| (a.name.as_str(), a.value.as_str())),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        let mut ads: Vec<(Cow<'a, BgpAdvertisementSpec>, BgpAttrs)> = Vec::new();
        for o in self.objects_of(Kind::BGPAdvertisement) {
            if let ObjectSpec::BgpAdvertisement(ad) = &o.spec {
                if selects(&ad.node_selectors) {
                    let attrs = resolve(ad, &aliases);
                    ads.push((Cow::Borrowed(ad), attrs));
                }
            }
        }
        for o in self.objects_of(Kind::Eip) {
            if let ObjectSpec::Eip(eip) = &o.spec {
                if eip.protocol() == "bgp" {
                    ads.push((
                        Cow::Owned(BgpAdvertisementSpec {
                            ip_address_pools: vec![o.name.clone()],
                            ..Default::default()
                        }),
                        BgpAttrs::default(),
                    ));
                }
            }
        }
        let pool_labels = self
            .pools
            .keys()
            .filter_map(|name| Some((name.as_str(), &self.pool_object(name)?.labels)))
            .collect();
        let drained = record.is_some_and(|r| r.draining && r.facts.excluded.is_none());
        let silent = match record {
            None => Some(format!("node {node} is not registered")),
            Some(r) if r.facts.excluded.is_some() => Some(format!(
                "node {node} is excluded: {}",
                r.facts.excluded.as_deref().unwrap_or_default()
            )),
            Some(r) if r.draining => Some(format!("node {node} is drained")),
            Some(_) => None,
        };
        let bfd = self
            .objects_of(Kind::BFDProfile)
            .filter_map(|o| match &o.spec {
                ObjectSpec::BfdProfile(p) => Some((o.name.as_str(), p)),
                _ => None,
            })
            .collect();
        BgpView {
            table: self,
            node,
            peers,
            listen_port,
            ads,
            pool_labels,
            bfd,
            silent,
            drained,
        }
    }
}

fn resolve(ad: &BgpAdvertisementSpec, aliases: &BTreeMap<&str, &str>) -> BgpAttrs {
    let mut attrs = BgpAttrs {
        local_pref: ad.local_pref,
        ..BgpAttrs::default()
    };
    for c in &ad.communities {
        let text = aliases.get(c.as_str()).copied().unwrap_or(c);
        match parse_community(text) {
            Some(Community::Standard(v)) => attrs.communities.push(v),
            Some(Community::Large(v)) => attrs.large_communities.push(v),
            // Refused at apply time; an alias deleted since is skipped.
            None => {}
        }
    }
    attrs.communities.sort_unstable();
    attrs.communities.dedup();
    attrs.large_communities.sort_unstable();
    attrs.large_communities.dedup();
    attrs
}

impl<'a> BgpView<'a> {
    /// The BGPPeers this node runs sessions with, by name.
    pub fn peers(&self) -> &[(&'a str, Cow<'a, BgpPeerSpec>)] {
        &self.peers
    }

    /// Where the node accepts peers' connections, if the configuration says (OpenELB's
    /// `BgpConf.spec.listenPort`): a port, or -1 for nowhere.
    pub fn listen_port(&self) -> Option<i32> {
        self.listen_port
    }

    /// The BFDProfile named `name`, if there is one.
    pub fn bfd_profile(&self, name: &str) -> Option<&'a BfdProfileSpec> {
        self.bfd.get(name).copied()
    }

    /// Why the node announces nothing, if it does not.
    pub fn silent(&self) -> Option<&str> {
        self.silent.as_deref()
    }

    /// Whether an operator drained this node (and nothing else keeps it silent).
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// What a drained node announces while traffic moves away (RFC 8326): what it announced
    /// before, with the GRACEFUL_SHUTDOWN community and LOCAL_PREF 0. Same as [`routes`]
    /// for a node that is not drained.
    ///
    /// [`routes`]: BgpView::routes
    pub fn drain_routes(&self, ip: &IpAddr) -> Vec<BgpRoute> {
        if !self.drained {
            return self.routes(ip);
        }
        let mut out = self.routes_of(ip);
        for r in &mut out {
            r.attrs.mark_graceful_shutdown();
        }
        out
    }

    /// What this node announces for one address, to which peers. Empty: nothing (not
    /// allocated, no advertisement selects it, `Local` without a ready endpoint here, node
    /// not eligible).
    pub fn routes(&self, ip: &IpAddr) -> Vec<BgpRoute> {
        if self.silent.is_some() {
            return Vec::new();
        }
        self.routes_of(ip)
    }

    /// [`BgpView::routes`] whether or not the node is silent.
    fn routes_of(&self, ip: &IpAddr) -> Vec<BgpRoute> {
        if self.peers.is_empty() {
            return Vec::new();
        }
        let t = self.table;
        let Some(usage) = t.addresses().get(ip) else {
            return Vec::new();
        };
        let users: Vec<&super::ServiceEntry> = usage
            .users
            .keys()
            .filter_map(|k| t.services().get(k.as_str()).map(|e| &**e))
            .collect();
        // Local: every Service on the address that asks for it needs an endpoint here.
        for entry in &users {
            if entry.spec.external_traffic_policy == "Local"
                && !t.ready_nodes(&entry.spec.key()).contains(self.node)
            {
                return Vec::new();
            }
        }
        let no_labels = BTreeMap::new();
        let pool_labels = self
            .pool_labels
            .get(usage.pool.as_str())
            .copied()
            .unwrap_or(&no_labels);
        let mut out: BTreeMap<(String, IpNet), BgpAttrs> = BTreeMap::new();
        for (ad, attrs) in &self.ads {
            let reach = AdReach {
                pools: &ad.ip_address_pools,
                pool_selectors: &ad.ip_address_pool_selectors,
                service_selectors: &ad.service_selectors,
            };
            if !reach.selects(&usage.pool, pool_labels, &users) {
                continue;
            }
            let len = match ip {
                IpAddr::V4(_) => ad.aggregation_length.unwrap_or(32),
                IpAddr::V6(_) => ad.aggregation_length_v6.unwrap_or(128),
            };
            let Ok(prefix) = IpNet::new(*ip, len).map(|n| n.trunc()) else {
                continue;
            };
            for (name, _) in &self.peers {
                if !ad.peers.is_empty() && !ad.peers.iter().any(|p| p == name) {
                    continue;
                }
                out.entry((name.to_string(), prefix))
                    .and_modify(|a| a.merge(attrs))
                    .or_insert_with(|| attrs.clone());
            }
        }
        out.into_iter()
            .map(|((peer, prefix), attrs)| BgpRoute {
                peer,
                prefix,
                attrs,
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "bgp_tests.rs"]
mod tests;
