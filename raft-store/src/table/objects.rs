//! The objects an operator applies: MetalLB's configuration kinds (with MetalLB's field names)
//! and the allocation-relevant part of a `v1` Service.
//!
//! These types travel inside Raft log entries (postcard), so they must never use
//! `skip_serializing_if` or untagged enums: postcard is not self-describing.
//! `deny_unknown_fields` makes the YAML parser name a misspelt field instead of ignoring it.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// The configuration kinds raftlb understands, in the order a batch applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Namespace,
    IPAddressPool,
    Community,
    BFDProfile,
    BGPPeer,
    BGPAdvertisement,
    L2Advertisement,
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice: which nodes host ready endpoints of a Service
    /// (for `externalTrafficPolicy: Local`).
    EndpointSlice,
    /// OpenELB's `network.kubesphere.io/v1alpha2` Eip: a pool and its announcement in one.
    /// Appended last: postcard encodes a variant by its position, and old logs must decode.
    Eip,
    /// OpenELB's BgpConf: the node-wide BGP settings its BgpPeers use.
    BgpConf,
    /// OpenELB's BgpPeer: read as a BGPPeer.
    BgpPeer,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Namespace,
        Kind::IPAddressPool,
        Kind::Eip,
        Kind::Community,
        Kind::BFDProfile,
        Kind::BgpConf,
        Kind::BGPPeer,
        Kind::BgpPeer,
        Kind::BGPAdvertisement,
        Kind::L2Advertisement,
        Kind::Service,
        Kind::EndpointSlice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::IPAddressPool => "IPAddressPool",
            Kind::Community => "Community",
            Kind::BFDProfile => "BFDProfile",
            Kind::BGPPeer => "BGPPeer",
            Kind::BGPAdvertisement => "BGPAdvertisement",
            Kind::L2Advertisement => "L2Advertisement",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Eip => "Eip",
            Kind::BgpConf => "BgpConf",
            Kind::BgpPeer => "BgpPeer",
        }
    }

    pub fn parse(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// Kinds that hand out addresses: MetalLB's pools and OpenELB's Eips share one name space
    /// (a Service's pool annotation names either).
    pub fn is_pool(self) -> bool {
        matches!(self, Kind::IPAddressPool | Kind::Eip)
    }

    /// Kinds whose identity includes the namespace (Kubernetes objects that are not raftlb's
    /// configuration: MetalLB's CRs all live in one namespace and refer to each other by name).
    pub fn keeps_namespace(self) -> bool {
        matches!(self, Kind::Service | Kind::EndpointSlice)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one object: kind, namespace ("" for cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The key the table files the object under: configuration kinds ignore the namespace
    /// (MetalLB's CRs all live in one namespace and refer to each other by name).
    pub fn normalized(self) -> ObjectRef {
        if self.kind.keeps_namespace() {
            self
        } else {
            ObjectRef {
                namespace: String::new(),
                ..self
            }
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() || !self.kind.keeps_namespace() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["In", "NotIn", "Exists", "DoesNotExist"])))]
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// `IPAddressPool.spec`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpAddressPoolSpec {
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub addresses: Vec<String>,
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    #[serde(default)]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAllocation {
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub namespace_selectors: Vec<LabelSelector>,
    #[serde(default)]
    pub service_selectors: Vec<LabelSelector>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferredNodeSelector {
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub weight: i32,
    pub preference: LabelSelector,
}

/// `L2Advertisement.spec`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L2AdvertisementSpec {
    #[serde(default)]
    pub ip_address_pools: Vec<String>,
    #[serde(default)]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    #[serde(default)]
    pub node_selectors: Vec<LabelSelector>,
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub service_selectors: Vec<LabelSelector>,
    #[serde(default)]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// `BGPAdvertisement.spec`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpAdvertisementSpec {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 32)))]
    pub aggregation_length: Option<u8>,
    #[serde(default, rename = "aggregationLengthV6")]
    #[cfg_attr(feature = "schema", schemars(range(max = 128)))]
    pub aggregation_length_v6: Option<u8>,
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub communities: Vec<String>,
    #[serde(default)]
    pub ip_address_pools: Vec<String>,
    #[serde(default)]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    #[serde(default)]
    pub node_selectors: Vec<LabelSelector>,
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default)]
    pub service_selectors: Vec<LabelSelector>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `BGPPeer.spec` (v1beta2, a superset of v1beta1).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    #[serde(default, rename = "peerASN")]
    pub peer_asn: Option<u32>,
    #[serde(default, rename = "dynamicASN")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["internal", "external"])))]
    pub dynamic_asn: Option<String>,
    #[serde(default, rename = "localASN")]
    pub local_asn: Option<u32>,
    #[serde(default)]
    pub peer_address: Option<String>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub source_address: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 16384)))]
    pub peer_port: Option<u32>,
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))
    )]
    pub hold_time: Option<String>,
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))
    )]
    pub keepalive_time: Option<String>,
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))
    )]
    pub connect_time: Option<String>,
    #[serde(default, rename = "routerID")]
    pub router_id: Option<String>,
    #[serde(default)]
    pub node_selectors: Vec<LabelSelector>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_secret: Option<SecretRef>,
    #[serde(default)]
    pub bfd_profile: Option<String>,
    #[serde(default)]
    pub enable_graceful_restart: bool,
    #[serde(default)]
    pub ebgp_multi_hop: bool,
    #[serde(default)]
    pub vrf: Option<String>,
    #[serde(default, rename = "disableMP")]
    pub disable_mp: bool,
    #[serde(default)]
    pub dual_stack_address_family: bool,
}

/// `BFDProfile.spec`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdProfileSpec {
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 10, max = 60000)))]
    pub receive_interval: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 10, max = 60000)))]
    pub transmit_interval: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 2, max = 255)))]
    pub detect_multiplier: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 10, max = 60000)))]
    pub echo_interval: Option<u32>,
    #[serde(default)]
    pub echo_mode: bool,
    #[serde(default)]
    pub passive_mode: bool,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 254)))]
    pub minimum_ttl: Option<u32>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunityAlias {
    pub name: String,
    pub value: String,
}

/// `Community.spec`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunitySpec {
    #[serde(default)]
    pub communities: Vec<CommunityAlias>,
}

/// OpenELB's Eip protocols: how the Eip's addresses are announced.
pub const EIP_PROTOCOLS: [&str; 3] = ["bgp", "layer2", "vip"];

/// `Eip.spec` (OpenELB, `network.kubesphere.io/v1alpha2`): a pool and its announcement.
/// raftlb reads it as an IPAddressPool plus, for `layer2` and `vip`, an L2Advertisement of that
/// pool on `interface` (or, for `bgp`, a BGPAdvertisement of it).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EipSpec {
    /// One address, a CIDR, `a-b`, or a comma-separated list of those.
    pub address: String,
    /// `bgp` (OpenELB's default), `layer2` or `vip`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["bgp", "layer2", "vip"])))]
    pub protocol: Option<String>,
    /// Where `layer2`/`vip` addresses are answered; empty: every interface the node uses.
    #[serde(default)]
    pub interface: Option<String>,
    /// No new addresses from this Eip; Services holding one keep it.
    #[serde(default)]
    pub disable: bool,
    /// Accepted for OpenELB compatibility: raftlb never probes the network before allocating.
    #[serde(default, rename = "usingKnownIPs")]
    pub using_known_ips: bool,
    /// Lower first among the Eips a namespace may use automatically (0 = unset, last).
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Labels a namespace must carry (`matchLabels`).
    #[serde(default)]
    pub namespace_selector: BTreeMap<String, String>,
}

impl EipSpec {
    pub fn protocol(&self) -> &str {
        self.protocol.as_deref().unwrap_or("bgp")
    }

    /// The addresses as an IPAddressPool lists them.
    pub fn addresses(&self) -> Vec<String> {
        self.address
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect()
    }

    /// The pool this Eip is. `disable` is not here: the table reads it from the Eip itself.
    pub fn pool_spec(&self) -> IpAddressPoolSpec {
        let restricted = !self.namespaces.is_empty() || !self.namespace_selector.is_empty();
        IpAddressPoolSpec {
            addresses: self.addresses(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: (restricted || self.priority != 0).then(|| ServiceAllocation {
                priority: self.priority,
                namespaces: self.namespaces.clone(),
                namespace_selectors: if self.namespace_selector.is_empty() {
                    Vec::new()
                } else {
                    vec![LabelSelector {
                        match_labels: self.namespace_selector.clone(),
                        match_expressions: Vec::new(),
                    }]
                },
                service_selectors: Vec::new(),
            }),
        }
    }

    /// The layer-2 advertisement of this Eip (`layer2` and `vip`), or None (`bgp`).
    pub fn l2_advertisement(&self, name: &str) -> Option<L2AdvertisementSpec> {
        matches!(self.protocol(), "layer2" | "vip").then(|| L2AdvertisementSpec {
            ip_address_pools: vec![name.to_string()],
            interfaces: self.interface.iter().cloned().collect(),
            ..Default::default()
        })
    }
}

/// A `v1` Service port, as far as allocation cares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: CompactString,
    pub protocol: CompactString,
    pub port: u16,
}

/// The allocation-relevant part of a `v1` Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub namespace: CompactString,
    pub name: CompactString,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.type`; Kubernetes' default is ClusterIP.
    pub service_type: CompactString,
    pub load_balancer_class: Option<String>,
    pub load_balancer_ip: Option<String>,
    pub ports: Vec<ServicePort>,
    /// A [`SmallMap`](super::small_map::SmallMap): one per Service, a handful of entries.
    pub selector: super::small_map::SmallMap<String, String>,
    /// `Cluster` (default) or `Local`.
    pub external_traffic_policy: CompactString,
    /// `IPv4` / `IPv6`, primary first; empty means "IPv4" as a cluster with no IPv6 would say.
    pub ip_families: Vec<CompactString>,
    /// `SingleStack` (default), `PreferDualStack` or `RequireDualStack`.
    pub ip_family_policy: CompactString,
    pub cluster_ips: Vec<String>,
}

impl ServiceSpec {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One endpoint of an EndpointSlice, as far as announcing cares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// `nodeName`; an endpoint without one is on no node.
    pub node_name: Option<String>,
    /// `conditions.ready`; Kubernetes reads an unset condition as ready.
    pub ready: bool,
}

/// The announcing-relevant part of a `discovery.k8s.io/v1` EndpointSlice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSliceSpec {
    /// The Service it belongs to: the `kubernetes.io/service-name` label.
    pub service: String,
    pub endpoints: Vec<EndpointInfo>,
}

/// A configuration object as stored in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectSpec {
    Namespace,
    IpAddressPool(IpAddressPoolSpec),
    Community(CommunitySpec),
    BfdProfile(BfdProfileSpec),
    BgpPeer(BgpPeerSpec),
    BgpAdvertisement(BgpAdvertisementSpec),
    L2Advertisement(L2AdvertisementSpec),
    Service(ServiceSpec),
    EndpointSlice(EndpointSliceSpec),
    /// Appended last, like [`Kind::Eip`].
    Eip(EipSpec),
    BgpConf(super::openelb::BgpConfSpec),
    OpenElbBgpPeer(super::openelb::BgpPeerConfSpec),
}

impl ObjectSpec {
    pub fn kind(&self) -> Kind {
        match self {
            ObjectSpec::Namespace => Kind::Namespace,
            ObjectSpec::IpAddressPool(_) => Kind::IPAddressPool,
            ObjectSpec::Community(_) => Kind::Community,
            ObjectSpec::BfdProfile(_) => Kind::BFDProfile,
            ObjectSpec::BgpPeer(_) => Kind::BGPPeer,
            ObjectSpec::BgpAdvertisement(_) => Kind::BGPAdvertisement,
            ObjectSpec::L2Advertisement(_) => Kind::L2Advertisement,
            ObjectSpec::Service(_) => Kind::Service,
            ObjectSpec::EndpointSlice(_) => Kind::EndpointSlice,
            ObjectSpec::Eip(_) => Kind::Eip,
            ObjectSpec::BgpConf(_) => Kind::BgpConf,
            ObjectSpec::OpenElbBgpPeer(_) => Kind::BgpPeer,
        }
    }

    /// The pool this object is, if it is one (an IPAddressPool, or an Eip read as one).
    pub fn pool_spec(&self) -> Option<std::borrow::Cow<'_, IpAddressPoolSpec>> {
        match self {
            ObjectSpec::IpAddressPool(p) => Some(std::borrow::Cow::Borrowed(p)),
            ObjectSpec::Eip(e) => Some(std::borrow::Cow::Owned(e.pool_spec())),
            _ => None,
        }
    }
}

/// One applied object: identity, labels and spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: ObjectSpec,
}

impl Object {
    pub fn reference(&self) -> ObjectRef {
        ObjectRef {
            kind: self.spec.kind(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}
