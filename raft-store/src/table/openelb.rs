//! OpenELB's BGP objects (`network.kubesphere.io/v1alpha2` `BgpConf` and `BgpPeer`) and how
//! raftlb reads them: as BGPPeers, so they drive the same sessions as MetalLB's.
//!
//! OpenELB hands these specs to GoBGP as they are, so their fields are GoBGP's. Every field
//! is declared here so that none is dropped unseen: a field raftlb honours is mapped, one it
//! does not is refused by name with the reason (an unset or zero value is accepted).
//!
//! The mapping, field by field:
//!
//! | OpenELB | raftlb (BGPPeer) |
//! |---|---|
//! | `BgpConf.spec.as` | `myASN` |
//! | `BgpConf.spec.routerId` | `routerID` |
//! | `BgpConf.spec.listenPort` | the port the node accepts connections on (-1: none) |
//! | `BgpConf.spec.gracefulRestart.enabled` | `enableGracefulRestart` (when the peer has no `gracefulRestart`) |
//! | `conf.peerAs`, `conf.neighborAddress`, `conf.authPassword` | `peerASN`, `peerAddress`, `password` |
//! | `conf.localAs` | `localASN` (and `myASN` without a BgpConf) |
//! | `timers.config.holdTime`, `keepaliveInterval`, `connectRetry` (seconds) | `holdTime`, `keepaliveTime`, `connectTime` |
//! | `transport.remotePort` | `peerPort` |
//! | `ebgpMultihop.enabled` | `ebgpMultiHop` |
//! | `gracefulRestart.enabled` | `enableGracefulRestart` |
//! | `afiSafis` listing both IPv4 and IPv6 unicast | `dualStackAddressFamily` |
//! | `nodeSelector` | `nodeSelectors: [nodeSelector]` |
//! | `afiSafis[].addPaths` | accepted with a note ([`BgpPeerConfSpec::notes`]) |

use serde::{Deserialize, Serialize};

use super::objects::{BgpPeerSpec, LabelSelector};
use super::validate::FieldError;

/// OpenELB reads only the BgpConf of this name; so does raftlb.
pub const BGP_CONF_NAME: &str = "default";

/// `BgpConf.spec`: the node-wide BGP settings (GoBGP's `Global`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfSpec {
    #[serde(default, rename = "as")]
    pub asn: u32,
    #[serde(default)]
    pub as_per_rack: std::collections::BTreeMap<String, u32>,
    #[serde(default)]
    pub router_id: Option<String>,
    /// 0: the node's `--bgp-port`; -1: accept no connections (GoBGP's meaning).
    #[serde(default)]
    pub listen_port: i32,
    #[serde(default)]
    pub listen_addresses: Vec<String>,
    #[serde(default)]
    pub families: Vec<u32>,
    #[serde(default)]
    pub use_multiple_paths: bool,
    #[serde(default)]
    pub graceful_restart: Option<GracefulRestart>,
    #[serde(default)]
    pub policy: Option<String>,
}

/// GoBGP's graceful-restart settings, in BgpConf and in BgpPeer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GracefulRestart {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub restart_time: u32,
    #[serde(default)]
    pub helper_only: bool,
    #[serde(default)]
    pub deferral_time: u32,
    #[serde(default)]
    pub notification_enabled: bool,
    #[serde(default)]
    pub longlived_enabled: bool,
    #[serde(default)]
    pub stale_routes_time: u32,
    #[serde(default)]
    pub peer_restart_time: u32,
    #[serde(default)]
    pub peer_restarting: bool,
    #[serde(default)]
    pub local_restarting: bool,
    #[serde(default)]
    pub mode: Option<String>,
}

/// `BgpPeer.spec`: one neighbour (GoBGP's `Peer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerConfSpec {
    #[serde(default)]
    pub conf: Option<PeerConf>,
    #[serde(default)]
    pub ebgp_multihop: Option<EbgpMultihop>,
    #[serde(default)]
    pub timers: Option<Timers>,
    #[serde(default)]
    pub transport: Option<Transport>,
    #[serde(default)]
    pub graceful_restart: Option<GracefulRestart>,
    #[serde(default)]
    pub afi_safis: Vec<AfiSafi>,
    #[serde(default)]
    pub node_selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConf {
    #[serde(default)]
    pub auth_password: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub local_as: u32,
    #[serde(default)]
    pub neighbor_address: Option<String>,
    #[serde(default)]
    pub peer_as: u32,
    #[serde(default)]
    pub peer_group: Option<String>,
    #[serde(default)]
    pub peer_type: u32,
    #[serde(default)]
    pub remove_private_as: Option<String>,
    #[serde(default)]
    pub route_flap_damping: bool,
    #[serde(default)]
    pub send_community: u32,
    #[serde(default)]
    pub neighbor_interface: Option<String>,
    #[serde(default)]
    pub vrf: Option<String>,
    #[serde(default)]
    pub allow_own_as: u32,
    #[serde(default)]
    pub replace_peer_as: bool,
    #[serde(default)]
    pub admin_down: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EbgpMultihop {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub multihop_ttl: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timers {
    #[serde(default)]
    pub config: Option<TimersConfig>,
}

/// Seconds, written as strings (GoBGP's protobuf JSON for 64-bit integers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimersConfig {
    #[serde(default)]
    pub connect_retry: Option<String>,
    #[serde(default)]
    pub hold_time: Option<String>,
    #[serde(default)]
    pub keepalive_interval: Option<String>,
    #[serde(default)]
    pub minimum_advertisement_interval: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transport {
    #[serde(default)]
    pub mtu_discovery: bool,
    #[serde(default)]
    pub passive_mode: bool,
    #[serde(default)]
    pub remote_address: Option<String>,
    #[serde(default)]
    pub remote_port: u32,
    #[serde(default)]
    pub tcp_mss: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AfiSafi {
    #[serde(default)]
    pub mp_graceful_restart: Option<Enabled>,
    #[serde(default)]
    pub config: Option<AfiSafiConfig>,
    #[serde(default)]
    pub add_paths: Option<AddPaths>,
}

/// `{config: {enabled}}`, GoBGP's shape for a switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Enabled {
    #[serde(default)]
    pub config: Option<EnabledConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnabledConfig {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AfiSafiConfig {
    #[serde(default)]
    pub family: Option<Family>,
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Family {
    #[serde(default)]
    pub afi: Option<String>,
    #[serde(default)]
    pub safi: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddPaths {
    #[serde(default)]
    pub config: Option<AddPathsConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddPathsConfig {
    #[serde(default)]
    pub receive: bool,
    #[serde(default)]
    pub send_max: u32,
}

fn fail<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, FieldError> {
    Err((field.into(), reason.into()))
}

/// The graceful-restart time raftlb advertises (RFC 4724), in seconds: the BGP session's
/// `GR_RESTART_TIME`.
const RESTART_TIME: u32 = 120;

/// The GoBGP graceful-restart fields raftlb honours are `enabled` and a `restartTime` of
/// its own 120 s; the others are refused by name.
fn graceful_restart(at: &str, gr: &GracefulRestart) -> Result<(), FieldError> {
    if gr.restart_time != 0 && gr.restart_time != RESTART_TIME {
        return fail(
            format!("{at}.restartTime"),
            format!(
                "{}: not supported yet: raftlb advertises a restart time of {RESTART_TIME} s (set 0 or {RESTART_TIME})",
                gr.restart_time
            ),
        );
    }
    let unsupported = [
        ("helperOnly", gr.helper_only),
        ("deferralTime", gr.deferral_time != 0),
        ("notificationEnabled", gr.notification_enabled),
        ("longlivedEnabled", gr.longlived_enabled),
        ("staleRoutesTime", gr.stale_routes_time != 0),
        ("peerRestartTime", gr.peer_restart_time != 0),
        ("peerRestarting", gr.peer_restarting),
        ("localRestarting", gr.local_restarting),
        ("mode", gr.mode.as_deref().is_some_and(|m| !m.is_empty())),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return fail(
            format!("{at}.{field}"),
            "not supported yet: raftlb implements graceful restart as a restarting speaker (RFC 4724 with the R bit), set only enabled (and restartTime 120)",
        );
    }
    Ok(())
}

/// Checks a BgpConf on its own.
pub fn validate_conf(name: &str, spec: &BgpConfSpec) -> Result<(), FieldError> {
    if name != BGP_CONF_NAME {
        return fail(
            "metadata.name",
            format!("{name:?}: OpenELB (and raftlb) read only the BgpConf named {BGP_CONF_NAME:?}"),
        );
    }
    if spec.asn == 0 {
        return fail("spec.as", "missing: the local AS number of every BgpPeer");
    }
    if let Some(r) = spec
        .router_id
        .as_ref()
        .filter(|r| r.parse::<std::net::Ipv4Addr>().is_err())
    {
        return fail("spec.routerId", format!("{r:?} is not an IPv4 address"));
    }
    if !(-1..=65535).contains(&spec.listen_port) {
        return fail(
            "spec.listenPort",
            format!(
                "{} is not a port (1..65535; 0: the node's --bgp-port; -1: accept no connections)",
                spec.listen_port
            ),
        );
    }
    let unsupported = [
        (
            "spec.asPerRack",
            !spec.as_per_rack.is_empty(),
            "not supported yet: one AS for every node; set localAs on a BgpPeer with a nodeSelector instead",
        ),
        (
            "spec.listenAddresses",
            !spec.listen_addresses.is_empty(),
            "not supported yet: raftlb accepts connections on every address of the node",
        ),
        (
            "spec.families",
            !spec.families.is_empty(),
            "not supported: raftlb negotiates IPv4 and IPv6 unicast per BgpPeer (afiSafis)",
        ),
        (
            "spec.useMultiplePaths",
            spec.use_multiple_paths,
            "not supported: raftlb only announces; it selects and installs no received route",
        ),
        (
            "spec.policy",
            spec.policy.as_deref().is_some_and(|p| !p.is_empty()),
            "not supported: GoBGP policy files; use BGPAdvertisement communities, localPref and peers",
        ),
    ];
    if let Some((field, _, why)) = unsupported.iter().find(|(_, set, _)| *set) {
        return fail(*field, *why);
    }
    if let Some(gr) = &spec.graceful_restart {
        graceful_restart("spec.gracefulRestart", gr)?;
    }
    Ok(())
}

/// Where a BGPPeer field came from in a BgpPeer, for errors found by the BGPPeer rules.
const FIELD_NAMES: [(&str, &str); 8] = [
    ("spec.peerASN", "spec.conf.peerAs"),
    ("spec.peerAddress", "spec.conf.neighborAddress"),
    ("spec.localASN", "spec.conf.localAs"),
    ("spec.holdTime", "spec.timers.config.holdTime"),
    ("spec.keepaliveTime", "spec.timers.config.keepaliveInterval"),
    ("spec.connectTime", "spec.timers.config.connectRetry"),
    ("spec.peerPort", "spec.transport.remotePort"),
    ("spec.ebgpMultiHop", "spec.ebgpMultihop.enabled"),
];

/// OpenELB's name for a BGPPeer field.
pub fn field_name(metallb: &str) -> &str {
    FIELD_NAMES
        .iter()
        .find(|(m, _)| *m == metallb)
        .map_or(metallb, |(_, o)| o)
}

impl BgpPeerConfSpec {
    /// Checks the fields only OpenELB has; the BGPPeer rules run on [`BgpPeerConfSpec::bgp_peer`].
    pub fn validate(&self) -> Result<(), FieldError> {
        let Some(conf) = &self.conf else {
            return fail(
                "spec.conf",
                "missing: a BgpPeer needs conf.peerAs and conf.neighborAddress",
            );
        };
        if conf.peer_as == 0 {
            return fail("spec.conf.peerAs", "missing");
        }
        if conf.neighbor_address.as_deref().unwrap_or("").is_empty() {
            return fail("spec.conf.neighborAddress", "missing");
        }
        let text = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        let unsupported = [
            ("spec.conf.peerGroup", text(&conf.peer_group), "not supported: peer groups; write one BgpPeer per neighbour"),
            ("spec.conf.peerType", conf.peer_type != 0, "not supported: raftlb tells internal from external by the AS numbers"),
            ("spec.conf.removePrivateAs", text(&conf.remove_private_as), "not supported: raftlb sends an empty AS path of its own"),
            ("spec.conf.routeFlapDamping", conf.route_flap_damping, "not supported: raftlb installs no received route"),
            ("spec.conf.sendCommunity", conf.send_community != 0, "not supported: communities are set by BGPAdvertisement"),
            ("spec.conf.neighborInterface", text(&conf.neighbor_interface), "not supported yet: BGP unnumbered; set neighborAddress"),
            ("spec.conf.vrf", text(&conf.vrf), "not supported yet: raftlb's BGP sessions run in the default VRF"),
            ("spec.conf.allowOwnAs", conf.allow_own_as != 0, "not supported: raftlb installs no received route"),
            ("spec.conf.replacePeerAs", conf.replace_peer_as, "not supported: raftlb sends an empty AS path of its own"),
            ("spec.conf.adminDown", conf.admin_down, "not supported yet: delete the BgpPeer (or narrow its nodeSelector) to end its sessions"),
            ("spec.transport.passiveMode", self.transport.as_ref().is_some_and(|t| t.passive_mode), "not supported yet: raftlb both dials and accepts (a collision keeps one connection, RFC 4271 §6.8)"),
            ("spec.transport.mtuDiscovery", self.transport.as_ref().is_some_and(|t| t.mtu_discovery), "not supported: the kernel's default path MTU discovery applies"),
            ("spec.transport.tcpMss", self.transport.as_ref().is_some_and(|t| t.tcp_mss != 0), "not supported yet: the kernel chooses the MSS"),
            ("spec.timers.config.minimumAdvertisementInterval", self.timers_config().is_some_and(|t| text(&t.minimum_advertisement_interval) && t.minimum_advertisement_interval.as_deref() != Some("0")), "not supported: raftlb sends changes after 5 ms of coalescing"),
        ];
        if let Some((field, _, why)) = unsupported.iter().find(|(_, set, _)| *set) {
            return fail(*field, *why);
        }
        if let Some(remote) = self
            .transport
            .as_ref()
            .and_then(|t| t.remote_address.as_ref())
        {
            if !remote.is_empty() && Some(remote) != conf.neighbor_address.as_ref() {
                return fail(
                    "spec.transport.remoteAddress",
                    format!("{remote:?} differs from conf.neighborAddress: raftlb dials the neighbour's address"),
                );
            }
        }
        if let Some(m) = &self.ebgp_multihop {
            if m.multihop_ttl != 0 && m.multihop_ttl != 255 {
                return fail(
                    "spec.ebgpMultihop.multihopTtl",
                    format!(
                        "{}: not supported yet: a multihop session uses TTL 255 (set 0 or 255)",
                        m.multihop_ttl
                    ),
                );
            }
        }
        if let Some(t) = self.timers_config() {
            for (field, v) in [
                ("connectRetry", &t.connect_retry),
                ("holdTime", &t.hold_time),
                ("keepaliveInterval", &t.keepalive_interval),
            ] {
                if let Some(v) = v.as_ref().filter(|v| v.parse::<u16>().is_err()) {
                    return fail(
                        format!("spec.timers.config.{field}"),
                        format!("{v:?} is not a number of seconds (0..65535)"),
                    );
                }
            }
        }
        if let Some(gr) = &self.graceful_restart {
            graceful_restart("spec.gracefulRestart", gr)?;
        }
        self.families().map(|_| ())
    }

    /// Fields accepted but not acted on, one line each for the operator (`ctl apply` prints
    /// them). Only `addPaths`: OpenELB's documented BgpPeer sets `sendMax` so that one GoBGP
    /// can send the router a path per node; every raftlb node already sends its own path on
    /// its own session, so the router gets the same paths without ADD-PATH (RFC 7911).
    pub fn notes(&self) -> Vec<String> {
        self.afi_safis
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let p = a.add_paths.as_ref()?.config.as_ref()?;
                (p.receive || p.send_max != 0).then(|| {
                    format!(
                        "spec.afiSafis[{i}].addPaths: accepted, ADD-PATH is not negotiated: every raftlb node announces its own path on its own session, so the router sees one path per node without it"
                    )
                })
            })
            .collect()
    }

    fn timers_config(&self) -> Option<&TimersConfig> {
        self.timers.as_ref()?.config.as_ref()
    }

    /// Whether `afiSafis` asks for both address families (dual stack); an empty list is the
    /// neighbour's own family.
    fn families(&self) -> Result<bool, FieldError> {
        let own_v6 = self
            .conf
            .as_ref()
            .and_then(|c| c.neighbor_address.as_deref())
            .and_then(|a| a.parse::<std::net::IpAddr>().ok())
            .is_some_and(|a| a.is_ipv6());
        let gr_enabled = self.graceful_restart.as_ref().is_some_and(|g| g.enabled);
        let (mut v4, mut v6) = (false, false);
        for (i, a) in self.afi_safis.iter().enumerate() {
            let at = format!("spec.afiSafis[{i}]");
            let mp_gr = a
                .mp_graceful_restart
                .as_ref()
                .and_then(|m| m.config.as_ref())
                .is_some_and(|c| c.enabled);
            if mp_gr && !gr_enabled {
                return fail(
                    format!("{at}.mpGracefulRestart"),
                    "needs spec.gracefulRestart.enabled: raftlb restarts gracefully for every family of a session or none",
                );
            }
            let Some(config) = &a.config else { continue };
            if !config.enabled {
                continue;
            }
            let family = config.family.clone().unwrap_or_default();
            let afi = family.afi.as_deref().unwrap_or("");
            let safi = family.safi.as_deref().unwrap_or("");
            if safi != "SAFI_UNICAST" {
                return fail(
                    format!("{at}.config.family.safi"),
                    format!(
                        "{safi:?}: not supported: raftlb announces unicast routes (SAFI_UNICAST)"
                    ),
                );
            }
            match afi {
                "AFI_IP" => v4 = true,
                "AFI_IP6" => v6 = true,
                other => {
                    return fail(
                        format!("{at}.config.family.afi"),
                        format!(
                            "{other:?} is not an address family raftlb announces (AFI_IP, AFI_IP6)"
                        ),
                    )
                }
            }
        }
        if (v4 || v6) && (if own_v6 { !v6 } else { !v4 }) {
            return fail(
                "spec.afiSafis",
                format!(
                    "leaves out the neighbour's own family ({}): a session always carries its own address family",
                    if own_v6 { "AFI_IP6" } else { "AFI_IP" }
                ),
            );
        }
        Ok(v4 && v6)
    }

    /// The BGPPeer this BgpPeer reads as, with the BgpConf's settings (`conf`) if there is
    /// one. None: no local AS (no BgpConf and no `conf.localAs`).
    pub fn bgp_peer(&self, conf: Option<&BgpConfSpec>) -> Option<BgpPeerSpec> {
        let c = self.conf.clone().unwrap_or_default();
        let my_asn = conf
            .map(|g| g.asn)
            .filter(|a| *a != 0)
            .or((c.local_as != 0).then_some(c.local_as))?;
        let secs = |v: &Option<String>| {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| format!("{s}s"))
        };
        let timers = self.timers_config().cloned().unwrap_or_default();
        let graceful = match &self.graceful_restart {
            Some(g) => g.enabled,
            None => conf
                .and_then(|g| g.graceful_restart.as_ref())
                .is_some_and(|g| g.enabled),
        };
        Some(BgpPeerSpec {
            my_asn,
            peer_asn: Some(c.peer_as),
            local_asn: (c.local_as != 0 && c.local_as != my_asn).then_some(c.local_as),
            peer_address: c.neighbor_address.clone(),
            peer_port: self
                .transport
                .as_ref()
                .map(|t| t.remote_port)
                .filter(|p| *p != 0),
            hold_time: secs(&timers.hold_time),
            keepalive_time: secs(&timers.keepalive_interval),
            connect_time: secs(&timers.connect_retry),
            router_id: conf.and_then(|g| g.router_id.clone()),
            node_selectors: self.node_selector.iter().cloned().collect(),
            password: c.auth_password.clone().filter(|p| !p.is_empty()),
            enable_graceful_restart: graceful,
            ebgp_multi_hop: self.ebgp_multihop.as_ref().is_some_and(|m| m.enabled),
            dual_stack_address_family: self.families().unwrap_or(false),
            ..Default::default()
        })
    }
}

#[cfg(test)]
#[path = "openelb_tests.rs"]
mod tests;
