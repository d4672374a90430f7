//! Checks an object before anything is applied. Every error names the field and what would be
//! valid; the table turns it into an [`ApplyError`](super::ApplyError) that also names the
//! document and the object.

use std::net::{IpAddr, Ipv4Addr};

use super::intent::Intent;
use super::objects::*;
use super::pool::AddressRange;
use super::selector;

/// A field-level problem: (field path, reason).
pub type FieldError = (String, String);

fn fail<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, FieldError> {
    Err((field.into(), reason.into()))
}

/// Kubernetes object names: DNS-1123 subdomain.
pub fn name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        fail(
            "metadata.name",
            format!("{name:?} is not a valid name (lower-case letters, digits, '-' and '.', starting and ending alphanumeric)"),
        )
    }
}

fn selectors(field: &str, list: &[LabelSelector]) -> Result<(), FieldError> {
    for (i, s) in list.iter().enumerate() {
        selector::validate(s).map_err(|(f, r)| (format!("{field}[{i}].{f}"), r))?;
    }
    Ok(())
}

/// The three selector lists L2 and BGP advertisements share.
fn advertisement_selectors(
    pools: &[LabelSelector],
    nodes: &[LabelSelector],
    services: &[LabelSelector],
) -> Result<(), FieldError> {
    selectors("spec.ipAddressPoolSelectors", pools)?;
    selectors("spec.nodeSelectors", nodes)?;
    selectors("spec.serviceSelectors", services)
}

/// Parses the pool's ranges; overlaps inside one pool are errors too.
pub fn pool_ranges(spec: &IpAddressPoolSpec) -> Result<Vec<AddressRange>, FieldError> {
    if spec.addresses.is_empty() {
        return fail("spec.addresses", "must list at least one CIDR or a-b range");
    }
    ranges_of(Kind::IPAddressPool, &spec.addresses)
}

/// Where a pool kind keeps its `i`th address: MetalLB's list, or OpenELB's one string.
pub fn address_field(kind: Kind, i: usize) -> String {
    match kind {
        Kind::Eip => "spec.address".to_string(),
        _ => format!("spec.addresses[{i}]"),
    }
}

fn ranges_of(kind: Kind, addresses: &[String]) -> Result<Vec<AddressRange>, FieldError> {
    let mut ranges: Vec<AddressRange> = Vec::new();
    for (i, text) in addresses.iter().enumerate() {
        let r = AddressRange::parse(text).map_err(|e| (address_field(kind, i), e))?;
        if let Some(j) = ranges.iter().position(|o| o.overlaps(&r)) {
            let other = match kind {
                Kind::Eip => format!("{} in the same list", addresses[j]),
                _ => format!("spec.addresses[{j}] ({})", addresses[j]),
            };
            return fail(address_field(kind, i), format!("{text} overlaps {other}"));
        }
        ranges.push(r);
    }
    Ok(ranges)
}

/// OpenELB's Eip, with OpenELB's rules where raftlb can honour them.
fn eip(spec: &EipSpec) -> Result<(), FieldError> {
    let addresses = spec.addresses();
    if addresses.is_empty() {
        return fail(
            "spec.address",
            "missing: one address, a CIDR or a-b (OpenELB also takes a comma list)",
        );
    }
    ranges_of(Kind::Eip, &addresses)?;
    if !EIP_PROTOCOLS.contains(&spec.protocol()) {
        return fail(
            "spec.protocol",
            format!(
                "{:?} is not valid ({})",
                spec.protocol(),
                EIP_PROTOCOLS.join(", ")
            ),
        );
    }
    if let Some(iface) = &spec.interface {
        if iface.starts_with("can_reach:") {
            return fail(
                "spec.interface",
                format!("{iface:?}: can_reach is not supported yet; name the interface (e.g. eth0), or leave it out to answer on every interface"),
            );
        }
        if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
            return fail(
                "spec.interface",
                format!("{iface:?} is not an interface name"),
            );
        }
    }
    if spec.priority < 0 {
        return fail("spec.priority", "must be 0 (unset) or positive");
    }
    for (i, ns) in spec.namespaces.iter().enumerate() {
        name(ns).map_err(|(_, r)| (format!("spec.namespaces[{i}]"), r))?;
    }
    Ok(())
}

/// A Go duration such as `90s`, `1m30s` or `500ms`, in milliseconds.
pub fn go_duration_ms(text: &str) -> Option<u64> {
    let mut total: f64 = 0.0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * factor;
    }
    Some(total.round() as u64)
}

/// `a:b` with 16-bit parts, `large:a:b:c` with 32-bit parts, or a well-known name
/// (`no-export`, `graceful-shutdown`, ...).
pub fn is_community_value(text: &str) -> bool {
    super::bgp::parse_community(text).is_some()
}

/// Checks one object on its own (cross-object rules live in the table).
pub fn object(obj: &Object) -> Result<(), FieldError> {
    name(&obj.name)?;
    match &obj.spec {
        ObjectSpec::Namespace => Ok(()),
        ObjectSpec::IpAddressPool(spec) => {
            pool_ranges(spec)?;
            if let Some(sa) = &spec.service_allocation {
                if sa.priority < 0 {
                    return fail(
                        "spec.serviceAllocation.priority",
                        "must be 0 (unset) or positive",
                    );
                }
                selectors(
                    "spec.serviceAllocation.namespaceSelectors",
                    &sa.namespace_selectors,
                )?;
                selectors(
                    "spec.serviceAllocation.serviceSelectors",
                    &sa.service_selectors,
                )?;
            }
            Ok(())
        }
        ObjectSpec::L2Advertisement(spec) => {
            advertisement_selectors(
                &spec.ip_address_pool_selectors,
                &spec.node_selectors,
                &spec.service_selectors,
            )?;
            for (i, p) in spec.preferred_node_selectors.iter().enumerate() {
                if !(1..=100).contains(&p.weight) {
                    return fail(
                        format!("spec.preferredNodeSelectors[{i}].weight"),
                        format!("{} is outside 1..100", p.weight),
                    );
                }
            }
            Ok(())
        }
        ObjectSpec::BgpAdvertisement(spec) => {
            if let Some(len) = spec.aggregation_length.filter(|l| *l > 32) {
                return fail("spec.aggregationLength", format!("{len} is more than 32"));
            }
            if let Some(len) = spec.aggregation_length_v6.filter(|l| *l > 128) {
                return fail(
                    "spec.aggregationLengthV6",
                    format!("{len} is more than 128"),
                );
            }
            advertisement_selectors(
                &spec.ip_address_pool_selectors,
                &spec.node_selectors,
                &spec.service_selectors,
            )
        }
        ObjectSpec::BgpPeer(spec) => bgp_peer(spec),
        ObjectSpec::BfdProfile(spec) => {
            let ranged = [
                ("spec.receiveInterval", spec.receive_interval, 10, 60000),
                ("spec.transmitInterval", spec.transmit_interval, 10, 60000),
                ("spec.detectMultiplier", spec.detect_multiplier, 2, 255),
                ("spec.echoInterval", spec.echo_interval, 10, 60000),
                ("spec.minimumTtl", spec.minimum_ttl, 1, 254),
            ];
            for (field, value, lo, hi) in ranged {
                if let Some(v) = value.filter(|v| !(lo..=hi).contains(v)) {
                    return fail(field, format!("{v} is outside {lo}..{hi}"));
                }
            }
            if spec.echo_mode {
                return fail(
                    "spec.echoMode",
                    "echo mode is not supported yet: raftlb runs BFD in asynchronous mode",
                );
            }
            Ok(())
        }
        ObjectSpec::Community(spec) => {
            for (i, alias) in spec.communities.iter().enumerate() {
                if spec.communities[..i].iter().any(|a| a.name == alias.name) {
                    return fail(
                        format!("spec.communities[{i}].name"),
                        format!("alias {:?} is defined twice", alias.name),
                    );
                }
                if !is_community_value(&alias.value) {
                    return fail(
                        format!("spec.communities[{i}].value"),
                        format!(
                            "{:?} is not a community (want a:b with 16-bit parts, large:a:b:c, or a well-known name such as no-export)",
                            alias.value
                        ),
                    );
                }
            }
            Ok(())
        }
        ObjectSpec::Service(spec) => service(spec),
        ObjectSpec::Eip(spec) => eip(spec),
        ObjectSpec::BgpConf(spec) => super::openelb::validate_conf(&obj.name, spec),
        ObjectSpec::OpenElbBgpPeer(spec) => {
            spec.validate()?;
            // The BGPPeer rules, as far as they can run without the BgpConf (the table runs
            // them again with it): a reserved AS (RFC 7300) stands in for its `as`.
            let unknown = super::openelb::BgpConfSpec {
                asn: u32::MAX,
                ..Default::default()
            };
            match spec.bgp_peer(Some(&unknown)) {
                Some(mapped) => openelb_bgp_peer(&mapped),
                None => Ok(()),
            }
        }
        ObjectSpec::EndpointSlice(spec) => {
            if spec.service.is_empty() {
                return fail(
                    "metadata.labels[kubernetes.io/service-name]",
                    "missing: an EndpointSlice names its Service with this label",
                );
            }
            Ok(())
        }
    }
}

/// The BGPPeer rules on what an OpenELB BgpPeer reads as, errors naming OpenELB's fields.
pub fn openelb_bgp_peer(mapped: &BgpPeerSpec) -> Result<(), FieldError> {
    bgp_peer(mapped).map_err(|(f, r)| (super::openelb::field_name(&f).to_string(), r))
}

fn bgp_peer(spec: &BgpPeerSpec) -> Result<(), FieldError> {
    match (spec.peer_asn, &spec.dynamic_asn) {
        (Some(_), Some(_)) | (None, None) => {
            return fail(
                "spec.peerASN",
                "exactly one of peerASN and dynamicASN must be set",
            )
        }
        (None, Some(d)) if d != "internal" && d != "external" => {
            return fail(
                "spec.dynamicASN",
                format!("{d:?} is not valid (internal, external)"),
            )
        }
        _ => {}
    }
    match (&spec.peer_address, &spec.interface) {
        (Some(_), Some(_)) | (None, None) => {
            return fail(
                "spec.peerAddress",
                "exactly one of peerAddress and interface must be set",
            )
        }
        (Some(a), None) if a.parse::<IpAddr>().is_err() => {
            return fail("spec.peerAddress", format!("{a:?} is not an IP address"))
        }
        _ => {}
    }
    if let Some(a) = spec
        .source_address
        .as_ref()
        .filter(|a| a.parse::<IpAddr>().is_err())
    {
        return fail("spec.sourceAddress", format!("{a:?} is not an IP address"));
    }
    if let Some(p) = spec.peer_port.filter(|p| !(1..=16384).contains(p)) {
        return fail("spec.peerPort", format!("{p} is outside 1..16384"));
    }
    let duration = |field: &str, v: &Option<String>| -> Result<Option<u64>, FieldError> {
        match v {
            None => Ok(None),
            Some(t) => go_duration_ms(t).map(Some).ok_or_else(|| {
                (
                    field.to_string(),
                    format!("{t:?} is not a duration (e.g. 90s, 1m30s)"),
                )
            }),
        }
    };
    let hold = duration("spec.holdTime", &spec.hold_time)?;
    let keepalive = duration("spec.keepaliveTime", &spec.keepalive_time)?;
    let connect = duration("spec.connectTime", &spec.connect_time)?;
    if let Some(h) = hold.filter(|h| *h != 0 && *h < 3000) {
        return fail("spec.holdTime", format!("{h} ms: must be 0 or at least 3s"));
    }
    if let (Some(h), Some(k)) = (hold, keepalive) {
        if k > h {
            return fail("spec.keepaliveTime", "must not exceed holdTime");
        }
    }
    if let Some(c) = connect.filter(|c| *c < 1000 || *c > 65_535_000 || c % 1000 != 0) {
        return fail(
            "spec.connectTime",
            format!("{c} ms: must be whole seconds in 1..65535"),
        );
    }
    if let Some(r) = spec
        .router_id
        .as_ref()
        .filter(|r| r.parse::<Ipv4Addr>().is_err())
    {
        return fail("spec.routerID", format!("{r:?} is not an IPv4 address"));
    }
    if spec.password.is_some() && spec.password_secret.is_some() {
        return fail(
            "spec.passwordSecret",
            "cannot be combined with spec.password",
        );
    }
    if spec.vrf.as_deref().is_some_and(|v| !v.is_empty()) {
        return fail(
            "spec.vrf",
            "not supported yet: raftlb's BGP sessions run in the default VRF",
        );
    }
    if spec.interface.is_some() {
        return fail(
            "spec.interface",
            "not supported yet: BGP unnumbered; set peerAddress",
        );
    }
    if spec.ebgp_multi_hop && spec.peer_asn == Some(spec.my_asn) {
        return fail("spec.ebgpMultiHop", "is not allowed for an iBGP peer");
    }
    Ok(())
}

fn service(spec: &ServiceSpec) -> Result<(), FieldError> {
    if !matches!(
        spec.service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return fail(
            "spec.type",
            format!(
                "{:?} is not valid (ClusterIP, NodePort, LoadBalancer, ExternalName)",
                spec.service_type
            ),
        );
    }
    if !matches!(
        spec.external_traffic_policy.as_str(),
        "" | "Cluster" | "Local"
    ) {
        return fail(
            "spec.externalTrafficPolicy",
            format!(
                "{:?} is not valid (Cluster, Local)",
                spec.external_traffic_policy
            ),
        );
    }
    if spec.service_type == "LoadBalancer" && spec.ports.is_empty() {
        return fail(
            "spec.ports",
            "a LoadBalancer Service needs at least one port",
        );
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if !matches!(p.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            return fail(
                format!("spec.ports[{i}].protocol"),
                format!("{:?} is not valid (TCP, UDP, SCTP)", p.protocol),
            );
        }
        if p.port == 0 {
            return fail(format!("spec.ports[{i}].port"), "must be in 1..65535");
        }
        if spec.ports[..i]
            .iter()
            .any(|o| o.port == p.port && o.protocol == p.protocol)
        {
            return fail(
                format!("spec.ports[{i}]"),
                format!("{}/{} is listed twice", p.port, p.protocol),
            );
        }
    }
    if spec.service_type == "LoadBalancer" {
        Intent::of(spec).map_err(|e| (e.field, e.reason))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_ms("90s"), Some(90_000));
        assert_eq!(go_duration_ms("1m30s"), Some(90_000));
        assert_eq!(go_duration_ms("500ms"), Some(500));
        assert_eq!(go_duration_ms("0"), Some(0));
        assert_eq!(go_duration_ms("10 parsecs"), None);
        assert_eq!(go_duration_ms(""), None);
    }

    #[test]
    fn communities() {
        assert!(is_community_value("65535:100"));
        assert!(is_community_value("large:4200000000:1:2"));
        assert!(!is_community_value("65536:1"));
        assert!(!is_community_value("large:1:2"));
    }

    #[test]
    fn names() {
        assert!(name("pool-a.b").is_ok());
        assert!(name("Pool").is_err());
        assert!(name("").is_err());
        assert!(name("-a").is_err());
    }

    #[test]
    fn bgp_peer_rules() {
        let ok = BgpPeerSpec {
            my_asn: 64500,
            peer_asn: Some(64501),
            peer_address: Some("10.0.0.1".into()),
            hold_time: Some("90s".into()),
            ..Default::default()
        };
        assert!(bgp_peer(&ok).is_ok());
        let cases: Vec<(BgpPeerSpec, &str)> = vec![
            (
                BgpPeerSpec {
                    peer_asn: None,
                    ..ok.clone()
                },
                "spec.peerASN",
            ),
            (
                BgpPeerSpec {
                    interface: Some("eth0".into()),
                    ..ok.clone()
                },
                "spec.peerAddress",
            ),
            (
                BgpPeerSpec {
                    hold_time: Some("2s".into()),
                    ..ok.clone()
                },
                "spec.holdTime",
            ),
            (
                BgpPeerSpec {
                    peer_port: Some(20000),
                    ..ok.clone()
                },
                "spec.peerPort",
            ),
            (
                BgpPeerSpec {
                    router_id: Some("fc00::1".into()),
                    ..ok.clone()
                },
                "spec.routerID",
            ),
            (
                BgpPeerSpec {
                    peer_asn: Some(64500),
                    ebgp_multi_hop: true,
                    ..ok.clone()
                },
                "spec.ebgpMultiHop",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(bgp_peer(&spec).unwrap_err().0, field);
        }
    }
}
