//! BGP announcement rules, one per test, against the pure table.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::super::tests::{batch, object, pool, pool_with, svc, svc_with};
use super::*;
use crate::table::objects::*;
use crate::table::ownership::NodeFacts;
use crate::table::{Command, Response};

fn peer(name: &str, f: impl FnOnce(&mut BgpPeerSpec)) -> Object {
    let mut spec = BgpPeerSpec {
        my_asn: 64513,
        peer_asn: Some(64512),
        peer_address: Some("10.77.0.100".into()),
        ..Default::default()
    };
    f(&mut spec);
    object(name, ObjectSpec::BgpPeer(spec))
}

fn ad(name: &str, f: impl FnOnce(&mut BgpAdvertisementSpec)) -> Object {
    let mut spec = BgpAdvertisementSpec::default();
    f(&mut spec);
    object(name, ObjectSpec::BgpAdvertisement(spec))
}

fn node(t: &mut AllocationTable, name: &str, labels: &[(&str, &str)]) {
    let facts = NodeFacts {
        name: name.into(),
        raft_id: t.nodes().len() as u64 + 1,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        interfaces: vec![],
        excluded: None,
    };
    let r = t.apply(t.log_index + 1, &Command::RegisterNode { facts, now_ms: 1 });
    assert_eq!(r, Response::Ok);
}

fn apply(t: &mut AllocationTable, objects: Vec<Object>) -> Response {
    t.apply(t.log_index + 1, &batch(objects, true))
}

fn applied(t: &mut AllocationTable, objects: Vec<Object>) {
    let r = apply(t, objects);
    assert!(matches!(r, Response::Applied { .. }), "{r:?}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// (peer, prefix) pairs node `n` announces for `addr`.
fn announced(t: &AllocationTable, n: &str, addr: &str) -> Vec<(String, String)> {
    t.bgp_view(n)
        .routes(&ip(addr))
        .into_iter()
        .map(|r| (r.peer, r.prefix.to_string()))
        .collect()
}

fn cluster() -> AllocationTable {
    let mut t = AllocationTable::default();
    for (n, rack) in [("a", "r1"), ("b", "r1"), ("c", "r2")] {
        node(&mut t, n, &[("rack", rack)]);
    }
    applied(
        &mut t,
        vec![
            pool("p", &["10.0.0.0/29"]),
            peer("tor", |_| {}),
            ad("all", |_| {}),
            svc("ns", "web"),
        ],
    );
    t
}

#[test]
fn under_cluster_policy_every_node_announces_a_host_route() {
    let t = cluster();
    for n in ["a", "b", "c"] {
        assert_eq!(
            announced(&t, n, "10.0.0.0"),
            vec![("tor".to_string(), "10.0.0.0/32".to_string())],
            "node {n}"
        );
    }
    assert!(announced(&t, "a", "10.0.0.1").is_empty(), "not allocated");
    assert!(announced(&t, "zz", "10.0.0.0").is_empty(), "not registered");
    assert_eq!(t.bgp_view("zz").silent(), Some("node zz is not registered"));
}

#[test]
fn local_policy_announces_only_where_an_endpoint_is_ready() {
    let mut t = cluster();
    let slice = Object {
        namespace: "ns".into(),
        name: "local-abc".into(),
        labels: BTreeMap::new(),
        spec: ObjectSpec::EndpointSlice(EndpointSliceSpec {
            service: "local".into(),
            endpoints: vec![
                EndpointInfo {
                    node_name: Some("b".into()),
                    ready: true,
                },
                EndpointInfo {
                    node_name: Some("c".into()),
                    ready: false,
                },
            ],
        }),
    };
    applied(
        &mut t,
        vec![
            svc_with("ns", "local", |s| {
                s.external_traffic_policy = "Local".into()
            }),
            slice,
        ],
    );
    let addr = "10.0.0.1";
    assert!(announced(&t, "a", addr).is_empty());
    assert_eq!(announced(&t, "b", addr).len(), 1);
    assert!(announced(&t, "c", addr).is_empty(), "endpoint not ready");
}

#[test]
fn selectors_peers_and_aggregation_restrict_and_shape_the_routes() {
    let mut t = AllocationTable::default();
    for (n, rack) in [("a", "r1"), ("c", "r2")] {
        node(&mut t, n, &[("rack", rack)]);
    }
    let rack = |r: &str| LabelSelector {
        match_labels: [("rack".to_string(), r.to_string())].into(),
        match_expressions: vec![],
    };
    applied(
        &mut t,
        vec![
            pool_with("p", &["10.0.0.0/29"], |_| {}),
            pool("q", &["10.0.1.0/29", "fd00::/125"]),
            peer("tor-r1", |p| p.node_selectors = vec![rack("r1")]),
            peer("tor-r2", |p| {
                p.node_selectors = vec![rack("r2")];
                p.peer_address = Some("10.77.0.101".into());
            }),
            peer("spine", |p| p.peer_address = Some("10.77.0.102".into())),
            // Pool p: host routes to the spine only.
            ad("p-spine", |a| {
                a.ip_address_pools = vec!["p".into()];
                a.peers = vec!["spine".into()];
            }),
            // Pool q: aggregated, from rack r2 nodes only, to every peer they have.
            ad("q-agg", |a| {
                a.ip_address_pools = vec!["q".into()];
                a.aggregation_length = Some(24);
                a.aggregation_length_v6 = Some(64);
                a.node_selectors = vec![rack("r2")];
            }),
            svc_with("ns", "in-p", |s| {
                s.annotations
                    .insert("metallb.io/address-pool".into(), "p".into());
            }),
            svc_with("ns", "in-q", |s| {
                s.annotations
                    .insert("metallb.io/address-pool".into(), "q".into());
                s.ip_family_policy = "PreferDualStack".into();
            }),
        ],
    );
    let pair = |p: &str, n: &str| (p.to_string(), n.to_string());
    assert_eq!(
        announced(&t, "a", "10.0.0.0"),
        vec![pair("spine", "10.0.0.0/32")]
    );
    assert_eq!(
        announced(&t, "c", "10.0.0.0"),
        vec![pair("spine", "10.0.0.0/32")]
    );
    assert!(
        announced(&t, "a", "10.0.1.0").is_empty(),
        "q-agg selects rack r2"
    );
    assert_eq!(
        announced(&t, "c", "10.0.1.0"),
        vec![pair("spine", "10.0.1.0/24"), pair("tor-r2", "10.0.1.0/24")]
    );
    assert_eq!(
        announced(&t, "c", "fd00::"),
        vec![pair("spine", "fd00::/64"), pair("tor-r2", "fd00::/64")]
    );
    let view = t.bgp_view("a");
    let peers: Vec<&str> = view.peers().iter().map(|(n, _)| *n).collect();
    assert_eq!(peers, vec!["spine", "tor-r1"]);
}

#[test]
fn communities_from_values_aliases_and_well_known_names_are_united() {
    let mut t = cluster();
    applied(
        &mut t,
        vec![
            object(
                "names",
                ObjectSpec::Community(CommunitySpec {
                    communities: vec![CommunityAlias {
                        name: "vpn-only".into(),
                        value: "1234:1".into(),
                    }],
                }),
            ),
            ad("all", |a| {
                a.communities = vec!["vpn-only".into(), "no-export".into()];
                a.local_pref = Some(50);
            }),
            ad("more", |a| {
                a.communities = vec!["64512:7".into(), "large:64512:1:2".into()];
                a.local_pref = Some(50);
            }),
        ],
    );
    let routes = t.bgp_view("a").routes(&ip("10.0.0.0"));
    assert_eq!(routes.len(), 1, "{routes:?}");
    let attrs = &routes[0].attrs;
    assert_eq!(
        attrs.communities,
        vec![(1234 << 16) | 1, (64512 << 16) | 7, 0xFFFF_FF01]
    );
    assert_eq!(attrs.large_communities, vec![[64512, 1, 2]]);
    assert_eq!(attrs.local_pref, Some(50));
}

#[test]
fn drained_and_excluded_nodes_announce_nothing() {
    let mut t = cluster();
    let r = t.apply(
        t.log_index + 1,
        &Command::Drain {
            node: "a".into(),
            drain: true,
            now_ms: 3,
        },
    );
    assert!(!matches!(r, Response::Rejected(_)), "{r:?}");
    assert!(announced(&t, "a", "10.0.0.0").is_empty());
    assert_eq!(t.bgp_view("a").silent(), Some("node a is drained"));
    assert_eq!(announced(&t, "b", "10.0.0.0").len(), 1);
    // While traffic moves away, the drained node announces the same prefixes marked with
    // GRACEFUL_SHUTDOWN and LOCAL_PREF 0 (RFC 8326); the others are unchanged.
    let view = t.bgp_view("a");
    assert!(view.drained());
    let marked = view.drain_routes(&ip("10.0.0.0"));
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0].attrs.communities, vec![GRACEFUL_SHUTDOWN]);
    assert_eq!(marked[0].attrs.local_pref, Some(0));
    let b = t.bgp_view("b");
    assert!(!b.drained());
    assert_eq!(b.drain_routes(&ip("10.0.0.0")), b.routes(&ip("10.0.0.0")));
}

#[test]
fn parse_community_takes_metallb_forms_and_refuses_the_rest() {
    assert_eq!(
        parse_community("64512:7"),
        Some(Community::Standard((64512 << 16) | 7))
    );
    assert_eq!(
        parse_community("large:4200000000:1:2"),
        Some(Community::Large([4_200_000_000, 1, 2]))
    );
    assert_eq!(
        parse_community("graceful-shutdown"),
        Some(Community::Standard(0xFFFF_0000))
    );
    for bad in ["70000:1", "1:2:3", "large:1:2", "nope", ""] {
        assert_eq!(parse_community(bad), None, "{bad}");
    }
}

#[test]
fn overlapping_advertisements_with_two_local_prefs_are_refused_by_name() {
    let mut t = cluster();
    let before = t.clone();
    let r = apply(
        &mut t,
        vec![
            ad("high", |a| a.local_pref = Some(200)),
            ad("low", |a| {
                a.local_pref = Some(100);
                a.ip_address_pools = vec!["p".into()];
            }),
        ],
    );
    let Response::Rejected(e) = r else {
        panic!("accepted: {r:?}");
    };
    assert_eq!(e.field, "spec.localPref");
    assert!(e.object.starts_with("BGPAdvertisement/"), "{e:?}");
    assert!(
        e.reason.contains("conflicts with localPref") && e.reason.contains("pool p"),
        "{e:?}"
    );
    // Nothing half-applied.
    assert_eq!(t.objects, before.objects);
    // To different peers they do not meet.
    applied(
        &mut t,
        vec![
            peer("other", |p| p.peer_address = Some("10.77.0.101".into())),
            ad("high", |a| {
                a.local_pref = Some(200);
                a.peers = vec!["tor".into()];
            }),
            ad("low", |a| {
                a.local_pref = Some(100);
                a.peers = vec!["other".into()];
            }),
        ],
    );
}

#[test]
fn unsupported_peer_fields_are_refused_not_ignored() {
    let mut t = cluster();
    let r = apply(&mut t, vec![peer("vrf", |p| p.vrf = Some("red".into()))]);
    let Response::Rejected(e) = r else {
        panic!("accepted: {r:?}");
    };
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("BGPPeer/vrf", "spec.vrf")
    );
    assert!(e.reason.contains("not supported yet"), "{e:?}");
}

#[test]
fn bfd_profiles_are_found_by_name_and_echo_mode_is_refused() {
    let mut t = cluster();
    let profile = |name: &str, f: fn(&mut BfdProfileSpec)| {
        let mut spec = BfdProfileSpec {
            receive_interval: Some(100),
            transmit_interval: Some(100),
            detect_multiplier: Some(3),
            ..Default::default()
        };
        f(&mut spec);
        object(name, ObjectSpec::BfdProfile(spec))
    };
    applied(&mut t, vec![profile("fast", |_| {})]);
    let view = t.bgp_view("a");
    assert_eq!(
        view.bfd_profile("fast").and_then(|p| p.receive_interval),
        Some(100)
    );
    assert!(view.bfd_profile("slow").is_none());
    let r = apply(&mut t, vec![profile("echo", |p| p.echo_mode = true)]);
    let Response::Rejected(e) = r else {
        panic!("accepted: {r:?}");
    };
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("BFDProfile/echo", "spec.echoMode")
    );
    assert!(e.reason.contains("not supported yet"), "{e:?}");
}
