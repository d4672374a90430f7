//! OpenELB's Eip read as a pool: OpenELB's walk-through, its annotations, `disable`, and the
//! rules Eips share with IPAddressPools.

use std::collections::BTreeMap;

use super::tests::{batch, pool, svc_with};
use super::*;

fn eip(name: &str, address: &str, f: impl FnOnce(&mut EipSpec)) -> Object {
    let mut spec = EipSpec {
        address: address.into(),
        ..Default::default()
    };
    f(&mut spec);
    Object {
        namespace: String::new(),
        name: name.into(),
        labels: BTreeMap::new(),
        spec: ObjectSpec::Eip(spec),
    }
}

fn layer2(s: &mut EipSpec) {
    s.protocol = Some("layer2".into());
    s.interface = Some("eth0".into());
}

fn openelb_svc(name: &str, annotations: &[(&str, &str)]) -> Object {
    svc_with("default", name, |s| {
        s.annotations
            .insert(intent::OPENELB_OWNER.to_string(), "openelb".to_string());
        for (k, v) in annotations {
            s.annotations.insert(k.to_string(), v.to_string());
        }
    })
}

fn state(t: &AllocationTable, key: &str) -> ServiceState {
    t.services[key].state.clone()
}

fn allocated(ip: &str, pool: &str) -> ServiceState {
    ServiceState::Allocated {
        pool: pool.into(),
        ips: vec![ip.parse().unwrap()],
    }
}

fn rejected(t: &mut AllocationTable, objects: Vec<Object>) -> ApplyError {
    match t.apply(t.log_index + 1, &batch(objects, true)) {
        Response::Rejected(e) => e,
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn openelb_layer2_walkthrough_gets_the_first_address() {
    let mut t = AllocationTable::new();
    let r = t.apply(
        t.log_index + 1,
        &batch(
            vec![
                eip("eip-sample-pool", "196.168.220.10-196.168.220.30", layer2),
                openelb_svc(
                    "nginx",
                    &[
                        (intent::OPENELB_PROTOCOL, "layer2"),
                        (intent::OPENELB_EIP, "eip-sample-pool"),
                    ],
                ),
            ],
            true,
        ),
    );
    assert!(matches!(r, Response::Applied(_)), "{r:?}");
    assert_eq!(
        state(&t, "default/nginx"),
        allocated("196.168.220.10", "eip-sample-pool")
    );
    let (object, v4, _) = t.pool_usage("eip-sample-pool").unwrap();
    assert_eq!(object.unwrap().spec.kind(), Kind::Eip);
    assert_eq!((v4.size, v4.used), (21, 1));
}

#[test]
fn protocol_annotation_picks_the_first_enabled_eip_of_that_protocol() {
    let mut t = AllocationTable::new();
    let objects = vec![
        eip("a-bgp", "10.1.0.0/30", |_| {}),
        eip("b-off", "10.2.0.0/30", |s| {
            layer2(s);
            s.disable = true;
        }),
        eip("c-l2", "10.3.0.0/30", layer2),
        eip("d-vip", "10.4.0.0/30", |s| s.protocol = Some("vip".into())),
        openelb_svc("l2", &[(intent::OPENELB_PROTOCOL, "layer2")]),
        openelb_svc("bgp", &[(intent::OPENELB_PROTOCOL, "bgp")]),
        openelb_svc("vip", &[(intent::OPENELB_PROTOCOL, "vip")]),
        openelb_svc("ip", &[(intent::OPENELB_IP, "10.3.0.2")]),
    ];
    assert!(matches!(
        t.apply(t.log_index + 1, &batch(objects, true)),
        Response::Applied(_)
    ));
    assert_eq!(state(&t, "default/l2"), allocated("10.3.0.0", "c-l2"));
    assert_eq!(state(&t, "default/bgp"), allocated("10.1.0.0", "a-bgp"));
    assert_eq!(state(&t, "default/vip"), allocated("10.4.0.0", "d-vip"));
    assert_eq!(state(&t, "default/ip"), allocated("10.3.0.2", "c-l2"));

    // A MetalLB pool is not an Eip of any protocol.
    let objects = vec![
        pool("metallb", &["10.9.0.0/30"]),
        openelb_svc(
            "wrong",
            &[
                (intent::OPENELB_PROTOCOL, "layer2"),
                ("metallb.io/address-pool", "metallb"),
            ],
        ),
    ];
    let r = t.apply(t.log_index + 1, &batch(objects, false));
    assert!(matches!(r, Response::Applied(_)), "{r:?}");
    let ServiceState::Pending { reason } = state(&t, "default/wrong") else {
        panic!("{:?}", state(&t, "default/wrong"))
    };
    assert!(
        reason.contains("IPAddressPool metallb is not an Eip of protocol layer2"),
        "{reason}"
    );

    // A protocol raftlb does not know is refused, naming the annotation.
    let e = rejected(
        &mut t,
        vec![openelb_svc("bad", &[(intent::OPENELB_PROTOCOL, "l2")])],
    );
    assert_eq!(
        (e.object.as_str(), e.field.as_str(), e.reason.as_str()),
        (
            "Service/default/bad",
            "metadata.annotations[protocol.openelb.kubesphere.io/v1alpha1]",
            "\"l2\" is not an Eip protocol (bgp, layer2, vip)"
        )
    );
}

#[test]
fn a_disabled_eip_keeps_its_addresses_and_gives_no_new_ones() {
    let mut t = AllocationTable::new();
    t.apply(
        t.log_index + 1,
        &batch(
            vec![
                eip("e", "10.0.0.0/30", layer2),
                openelb_svc("old", &[(intent::OPENELB_EIP, "e")]),
            ],
            true,
        ),
    );
    assert_eq!(state(&t, "default/old"), allocated("10.0.0.0", "e"));
    t.apply(
        t.log_index + 1,
        &batch(
            vec![eip("e", "10.0.0.0/30", |s| {
                layer2(s);
                s.disable = true;
            })],
            true,
        ),
    );
    assert_eq!(state(&t, "default/old"), allocated("10.0.0.0", "e"), "kept");
    t.apply(
        t.log_index + 1,
        &batch(
            vec![
                openelb_svc("named", &[(intent::OPENELB_EIP, "e")]),
                openelb_svc("by-ip", &[(intent::OPENELB_IP, "10.0.0.3")]),
                openelb_svc("auto", &[]),
            ],
            false,
        ),
    );
    for (key, want) in [
        ("default/named", "Eip e is disabled"),
        ("default/by-ip", "requested IP 10.0.0.3: Eip e is disabled"),
        ("default/auto", "no IPAddressPool serves this Service"),
    ] {
        let ServiceState::Pending { reason } = state(&t, key) else {
            panic!("{key}: {:?}", state(&t, key))
        };
        assert!(reason.contains(want), "{key}: {reason}");
    }
    // Enabled again: the waiting Services get addresses (retried in key order).
    t.apply(
        t.log_index + 1,
        &batch(vec![eip("e", "10.0.0.0/30", layer2)], true),
    );
    assert_eq!(state(&t, "default/auto"), allocated("10.0.0.1", "e"));
    assert_eq!(state(&t, "default/by-ip"), allocated("10.0.0.3", "e"));
    assert_eq!(state(&t, "default/named"), allocated("10.0.0.2", "e"));
}

#[test]
fn namespaces_and_priority_order_eips_like_service_allocation() {
    let mut t = AllocationTable::new();
    let ns = Object {
        namespace: String::new(),
        name: "team-b".into(),
        labels: [("team".to_string(), "b".to_string())].into(),
        spec: ObjectSpec::Namespace,
    };
    let objects = vec![
        ns,
        eip("shared", "10.0.0.0/30", layer2),
        eip("team-a", "10.1.0.0/30", |s| {
            layer2(s);
            s.namespaces = vec!["team-a".into()];
            s.priority = 2;
        }),
        eip("team-a-first", "10.2.0.0/30", |s| {
            layer2(s);
            s.namespaces = vec!["team-a".into()];
            s.priority = 1;
        }),
        eip("team-b", "10.3.0.0/30", |s| {
            layer2(s);
            s.namespace_selector = [("team".to_string(), "b".to_string())].into();
        }),
        svc_with("team-a", "web", |_| {}),
        svc_with("team-b", "web", |_| {}),
        svc_with("other", "web", |_| {}),
    ];
    assert!(matches!(
        t.apply(t.log_index + 1, &batch(objects, true)),
        Response::Applied(_)
    ));
    assert_eq!(
        state(&t, "team-a/web"),
        allocated("10.2.0.0", "team-a-first")
    );
    assert_eq!(state(&t, "team-b/web"), allocated("10.3.0.0", "team-b"));
    assert_eq!(state(&t, "other/web"), allocated("10.0.0.0", "shared"));
}

#[test]
fn eips_and_pools_share_names_and_may_not_overlap() {
    let mut t = AllocationTable::new();
    t.apply(
        t.log_index + 1,
        &batch(vec![pool("p", &["10.0.0.0/24"])], true),
    );
    let e = rejected(&mut t, vec![eip("e", "10.0.0.128-10.0.0.130", layer2)]);
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("Eip/e", "spec.address")
    );
    assert_eq!(
        e.reason,
        "10.0.0.128-10.0.0.130 overlaps 10.0.0.0/24 of IPAddressPool p"
    );
    let e = rejected(&mut t, vec![eip("p", "10.1.0.0/24", layer2)]);
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("Eip/p", "metadata.name")
    );
    assert!(e.reason.contains("IPAddressPool p exists"), "{}", e.reason);
    // The other way round, and an advertisement may name an Eip as its pool.
    t.apply(
        t.log_index + 1,
        &batch(vec![eip("e", "10.1.0.0/24", layer2)], true),
    );
    let e = rejected(&mut t, vec![pool("e", &["10.2.0.0/24"])]);
    assert_eq!(e.object, "IPAddressPool/e");
    let adv = Object {
        namespace: String::new(),
        name: "adv".into(),
        labels: BTreeMap::new(),
        spec: ObjectSpec::L2Advertisement(L2AdvertisementSpec {
            ip_address_pools: vec!["e".into()],
            ..Default::default()
        }),
    };
    assert!(matches!(
        t.apply(t.log_index + 1, &batch(vec![adv], true)),
        Response::Applied(_)
    ));
}

#[test]
fn eip_fields_are_checked_with_their_names() {
    type Edit = fn(&mut EipSpec);
    let cases: [(&str, Edit, &str, &str); 8] = [
        (
            "10.0.0.0/33",
            |_: &mut EipSpec| {},
            "spec.address",
            "not a valid CIDR",
        ),
        (
            "10.0.0.5-10.0.0.1",
            |_: &mut EipSpec| {},
            "spec.address",
            "ends before it starts",
        ),
        (
            "10.0.0.0/30,10.0.0.2",
            |_: &mut EipSpec| {},
            "spec.address",
            "overlaps 10.0.0.0/30",
        ),
        ("", |_: &mut EipSpec| {}, "spec.address", "missing"),
        (
            "10.0.0.1",
            |s: &mut EipSpec| s.protocol = Some("l2".into()),
            "spec.protocol",
            "\"l2\" is not valid (bgp, layer2, vip)",
        ),
        (
            "10.0.0.1",
            |s: &mut EipSpec| s.interface = Some("can_reach:10.0.0.9".into()),
            "spec.interface",
            "can_reach is not supported yet",
        ),
        (
            "10.0.0.1",
            |s: &mut EipSpec| s.priority = -1,
            "spec.priority",
            "positive",
        ),
        (
            "10.0.0.1",
            |s: &mut EipSpec| s.namespaces = vec!["Bad_NS".into()],
            "spec.namespaces[0]",
            "not a valid name",
        ),
    ];
    for (address, f, field, reason) in cases {
        let obj = eip("e", address, f);
        let (got_field, got_reason) = validate::object(&obj).unwrap_err();
        assert_eq!(got_field, field, "{address}: {got_reason}");
        assert!(got_reason.contains(reason), "{address}: {got_reason}");
    }
    // One address, a CIDR, a range and a comma list are all accepted.
    for address in [
        "10.0.0.1",
        "10.0.0.0/30",
        "10.0.0.1-10.0.0.9",
        "10.0.0.0/30, fc00::/126",
    ] {
        assert_eq!(
            validate::object(&eip("e", address, layer2)),
            Ok(()),
            "{address}"
        );
    }
}
