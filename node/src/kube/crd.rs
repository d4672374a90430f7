//! raftlb's CustomResourceDefinitions (group `raftlb.io`, version `v1alpha1`), generated from
//! Rust types: the six configuration kinds with MetalLB's field names (their specs are the
//! table's own types, so the CRD schema and the state machine can never disagree), and
//! ServiceL2Status, the per-Service announcement status read from the replicated table.
//!
//! `raftlb crds` prints [`crds_yaml`]; the copy under `deploy/statefulset/` is checked against
//! it by a test.

// clippy reads the repeated `type_ = ...` inside kube's `printcolumn(...)` lists as duplicated
// attributes; they are separate columns.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, CustomResourceExt};
use raftlb_raft_store::table::objects;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The group every raftlb kind lives in.
pub const GROUP: &str = "raftlb.io";
pub const VERSION: &str = "v1alpha1";

/// `metav1.Condition`, as raftlb writes it on every configuration object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Valid`: the object is part of the configuration in force.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// RFC 3339.
    #[serde(default)]
    pub last_transition_time: String,
}

/// Status of the configuration kinds that carry nothing but their validity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Who holds one address of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolAllocation {
    pub ip: String,
    /// `namespace/name` of every Service on this address (more than one when shared).
    pub services: Vec<String>,
}

/// `IPAddressPool.status`: MetalLB's counters (saturating at 2^63-1, so an IPv6 /64 pool shows
/// the maximum), the totals, and which Service holds which address (like OpenELB's Eip status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    #[serde(default, rename = "assignedIPv4")]
    pub assigned_ipv4: i64,
    #[serde(default, rename = "assignedIPv6")]
    pub assigned_ipv6: i64,
    #[serde(default, rename = "availableIPv4")]
    pub available_ipv4: i64,
    #[serde(default, rename = "availableIPv6")]
    pub available_ipv6: i64,
    #[serde(default, rename = "totalIPv4")]
    pub total_ipv4: i64,
    #[serde(default, rename = "totalIPv6")]
    pub total_ipv6: i64,
    /// `used/total` over both families, for `kubectl get`.
    #[serde(default)]
    pub usage: String,
    #[serde(default)]
    pub allocations: Vec<PoolAllocation>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftlb.io",
    version = "v1alpha1",
    kind = "IPAddressPool",
    namespaced,
    status = "IPAddressPoolStatus",
    shortname = "ipp",
    category = "raftlb",
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(name = "AutoAssign", type_ = "boolean", json_path = ".spec.autoAssign"),
    printcolumn(
        name = "AvoidBuggyIPs",
        type_ = "boolean",
        json_path = ".spec.avoidBuggyIPs"
    ),
    printcolumn(name = "Used/Total", type_ = "string", json_path = ".status.usage"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    )
)]
pub struct IPAddressPoolSpec {
    #[serde(flatten)]
    pub spec: objects::IpAddressPoolSpec,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftlb.io",
    version = "v1alpha1",
    kind = "L2Advertisement",
    namespaced,
    status = "ConfigStatus",
    category = "raftlb",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools"
    ),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    )
)]
pub struct L2AdvertisementSpec {
    #[serde(flatten)]
    pub spec: objects::L2AdvertisementSpec,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftlb.io",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    namespaced,
    status = "ConfigStatus",
    category = "raftlb",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools"
    ),
    printcolumn(name = "Peers", type_ = "string", json_path = ".spec.peers"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    )
)]
pub struct BGPAdvertisementSpec {
    #[serde(flatten)]
    pub spec: objects::BgpAdvertisementSpec,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftlb.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    namespaced,
    status = "ConfigStatus",
    category = "raftlb",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "ASN", type_ = "integer", json_path = ".spec.peerASN"),
    printcolumn(name = "MyASN", type_ = "integer", json_path = ".spec.myASN"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    )
)]
pub struct BGPPeerSpec {
    #[serde(flatten)]
    pub spec: objects::BgpPeerSpec,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftlb.io",
    version = "v1alpha1",
    kind = "Community",
    namespaced,
    status = "ConfigStatus",
    category = "raftlb",
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    )
)]
pub struct CommunitySpec {
    #[serde(flatten)]
    pub spec: objects::CommunitySpec,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftlb.io",
    version = "v1alpha1",
    kind = "BFDProfile",
    namespaced,
    status = "ConfigStatus",
    category = "raftlb",
    printcolumn(
        name = "Receive",
        type_ = "integer",
        json_path = ".spec.receiveInterval"
    ),
    printcolumn(
        name = "Transmit",
        type_ = "integer",
        json_path = ".spec.transmitInterval"
    ),
    printcolumn(
        name = "Multiplier",
        type_ = "integer",
        json_path = ".spec.detectMultiplier"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    )
)]
pub struct BFDProfileSpec {
    #[serde(flatten)]
    pub spec: objects::BfdProfileSpec,
}

/// One announced address of a Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    pub ip: String,
    pub node: String,
    /// `layer2`.
    pub protocol: String,
    pub interfaces: Vec<String>,
    /// The VIP's ownership epoch in the table (bumped by every change of owner).
    pub epoch: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct InterfaceName {
    pub name: String,
}

/// `ServiceL2Status.status`: MetalLB's fields (node, serviceName, serviceNamespace, interfaces)
/// for the first address, and every address with its owner.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusStatus {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub service_namespace: String,
    #[serde(default)]
    pub interfaces: Vec<InterfaceName>,
    #[serde(default)]
    pub announcements: Vec<Announcement>,
}

/// Status-only: where a Service is announced, written by the Raft leader from the table.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "raftlb.io",
    version = "v1alpha1",
    kind = "ServiceL2Status",
    namespaced,
    status = "ServiceL2StatusStatus",
    category = "raftlb",
    printcolumn(name = "Service", type_ = "string", json_path = ".status.serviceName"),
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".status.serviceNamespace"
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Interfaces",
        type_ = "string",
        json_path = ".status.interfaces[*].name"
    )
)]
pub struct ServiceL2StatusSpec {}

/// `BGPSessionState.status`: one BGP session of one node as it is (frr-k8s' BGPSessionState
/// fields `node`, `peer`, `bgpStatus`, `bfdStatus`, and what raftlb's session negotiated and
/// sent). Written by the node that runs the session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStateStatus {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub peer: String,
    #[serde(default)]
    pub peer_address: String,
    /// Idle, Connect, Active, OpenSent, OpenConfirm or Established.
    #[serde(default)]
    pub bgp_status: String,
    /// The BFD session's state (Up, Down, Init, AdminDown), `N/A` without a bfdProfile.
    #[serde(default)]
    pub bfd_status: String,
    /// RFC 3339; empty when not Established.
    #[serde(default)]
    pub established_since: String,
    #[serde(default)]
    pub local_address: String,
    /// `outbound` (the node opened the connection) or `inbound` (the peer did).
    #[serde(default)]
    pub connection: String,
    #[serde(default, rename = "peerASN")]
    pub peer_asn: u32,
    #[serde(default, rename = "peerRouterID")]
    pub peer_router_id: String,
    #[serde(default)]
    pub hold_time: u32,
    #[serde(default)]
    pub keepalive_time: u32,
    #[serde(default)]
    pub families: Vec<String>,
    #[serde(default)]
    pub prefixes_sent: u64,
    #[serde(default)]
    pub prefixes_pending: u64,
    #[serde(default)]
    pub updates_sent: u64,
    /// Times the session left Established since the node started.
    #[serde(default)]
    pub downs: u64,
    #[serde(default)]
    pub last_error: String,
}

/// Status-only: one (node, BGPPeer) session, written by that node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "raftlb.io",
    version = "v1alpha1",
    kind = "BGPSessionState",
    namespaced,
    status = "BGPSessionStateStatus",
    category = "raftlb",
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Peer", type_ = "string", json_path = ".status.peer"),
    printcolumn(name = "BGP", type_ = "string", json_path = ".status.bgpStatus"),
    printcolumn(name = "BFD", type_ = "string", json_path = ".status.bfdStatus"),
    printcolumn(name = "Sent", type_ = "integer", json_path = ".status.prefixesSent"),
    printcolumn(
        name = "Since",
        type_ = "string",
        json_path = ".status.establishedSince"
    )
)]
pub struct BGPSessionStateSpec {}

/// OpenELB's `Eip` (`network.kubesphere.io/v1alpha2`, cluster-scoped), read when the cluster
/// serves it; raftlb never installs its CRD. The spec is kept as the API server sent it and
/// goes through the same parser as `raftlb ctl apply -f`, so a malformed Eip is refused alone
/// with the field and reason instead of breaking the watch.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "network.kubesphere.io",
    version = "v1alpha2",
    kind = "Eip",
    status = "EipStatus"
)]
pub struct OpenElbEipSpec {
    #[serde(flatten)]
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
}

/// OpenELB's `BgpConf` (cluster-scoped; raftlb reads the one named `default`), kept as sent
/// and parsed like a file, as for [`Eip`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "network.kubesphere.io",
    version = "v1alpha2",
    kind = "BgpConf"
)]
pub struct OpenElbBgpConfSpec {
    #[serde(flatten)]
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
}

/// OpenELB's `BgpPeer` (cluster-scoped), read as a BGPPeer; kept as sent, as for [`Eip`].
/// Its Rust name keeps it apart from MetalLB's [`BGPPeer`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "network.kubesphere.io",
    version = "v1alpha2",
    kind = "BgpPeer",
    root = "OpenElbBgpPeer"
)]
pub struct OpenElbBgpPeerSpec {
    #[serde(flatten)]
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `Eip.status` with OpenELB's field names and meanings: the first and last address, the
/// size, how many addresses are held and by whom (`IP -> namespace/name`, `;`-joined when
/// shared), whether the pool is full, its family, and `ready` (in force in raftlb's table).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EipStatus {
    #[serde(default)]
    pub occupied: bool,
    #[serde(default)]
    pub usage: i64,
    #[serde(default)]
    pub pool_size: i64,
    #[serde(default)]
    pub used: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "firstIP")]
    pub first_ip: String,
    #[serde(default, rename = "lastIP")]
    pub last_ip: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub v4: bool,
}

/// Every CRD raftlb serves, in a stable order.
pub fn all(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        BGPAdvertisement::crd(),
        BGPPeer::crd(),
        Community::crd(),
        BFDProfile::crd(),
        ServiceL2Status::crd(),
        BGPSessionState::crd(),
    ]
}

/// The CRDs as one multi-document YAML file (what `raftlb crds` prints).
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::from("# Generated by `raftlb crds`; do not edit.\n");
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
