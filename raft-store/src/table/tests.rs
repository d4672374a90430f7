//! Allocation rules, one test each, against the pure table; then seeded randomized runs that
//! check the invariants after every command.

use std::collections::BTreeMap;

use super::intent::Intent;
use super::pool::Family;
use super::*;

/// A configuration object (no namespace, no labels).
pub(super) fn object(name: &str, spec: ObjectSpec) -> Object {
    Object {
        namespace: String::new(),
        name: name.into(),
        labels: BTreeMap::new(),
        spec,
    }
}

pub(super) fn pool(name: &str, addrs: &[&str]) -> Object {
    pool_with(name, addrs, |_| {})
}

pub(super) fn pool_with(
    name: &str,
    addrs: &[&str],
    f: impl FnOnce(&mut IpAddressPoolSpec),
) -> Object {
    let mut spec = IpAddressPoolSpec {
        addresses: addrs.iter().map(|s| s.to_string()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        service_allocation: None,
    };
    f(&mut spec);
    object(name, ObjectSpec::IpAddressPool(spec))
}

pub(super) fn svc(ns: &str, name: &str) -> Object {
    svc_with(ns, name, |_| {})
}

pub(super) fn svc_with(ns: &str, name: &str, f: impl FnOnce(&mut ServiceSpec)) -> Object {
    let mut spec = ServiceSpec {
        namespace: ns.into(),
        name: name.into(),
        service_type: "LoadBalancer".into(),
        ports: vec![ServicePort {
            name: Default::default(),
            protocol: "TCP".into(),
            port: 80,
        }],
        selector: [("app".to_string(), name.to_string())].into(),
        ..Default::default()
    };
    f(&mut spec);
    Object {
        namespace: ns.into(),
        name: name.into(),
        labels: spec.labels.clone(),
        spec: ObjectSpec::Service(spec),
    }
}

fn annotate(s: &mut ServiceSpec, k: &str, v: &str) {
    s.annotations.insert(k.into(), v.into());
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Object {
    Object {
        namespace: String::new(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        spec: ObjectSpec::Namespace,
    }
}

pub(super) fn batch(objects: Vec<Object>, strict: bool) -> Command {
    Command::Apply(ApplyBatch {
        objects: objects
            .into_iter()
            .enumerate()
            .map(|(i, o)| (i as u32 + 1, o))
            .collect(),
        deletes: vec![],
        strict,
        now_ms: 1,
    })
}

fn apply(t: &mut AllocationTable, objects: Vec<Object>) -> Response {
    let r = t.apply(t.log_index + 1, &batch(objects, false));
    check_invariants(t);
    r
}

fn delete(t: &mut AllocationTable, refs: Vec<ObjectRef>) -> Response {
    let r = t.apply(
        t.log_index + 1,
        &Command::Apply(ApplyBatch {
            objects: vec![],
            deletes: refs.into_iter().map(|r| (1, r)).collect(),
            strict: false,
            now_ms: 2,
        }),
    );
    check_invariants(t);
    r
}

fn svc_ref(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind: Kind::Service,
        namespace: ns.into(),
        name: name.into(),
    }
}

fn ips(t: &AllocationTable, key: &str) -> Vec<String> {
    match &t.services[key].state {
        ServiceState::Allocated { ips, .. } => ips.iter().map(|i| i.to_string()).collect(),
        _ => vec![],
    }
}

fn pool_of(t: &AllocationTable, key: &str) -> String {
    match &t.services[key].state {
        ServiceState::Allocated { pool, .. } => pool.to_string(),
        other => panic!("{key} not allocated: {other:?}"),
    }
}

fn pending_reason(t: &AllocationTable, key: &str) -> String {
    match &t.services[key].state {
        ServiceState::Pending { reason } => reason.clone(),
        other => panic!("{key} not pending: {other:?}"),
    }
}

fn events_of(t: &AllocationTable, object: &str, reason: &str) -> usize {
    t.events
        .iter()
        .filter(|e| e.object == object && e.reason == reason)
        .count()
}

/// The table's internal consistency: address users match service states, pools' free index
/// agrees with the addresses in use, sharing is only between compatible services.
fn check_invariants(t: &AllocationTable) {
    for (key, entry) in &t.services {
        if let ServiceState::Allocated { ips, pool } = &entry.state {
            for ip in ips {
                let usage = t
                    .addresses
                    .get(ip)
                    .unwrap_or_else(|| panic!("{key}: {ip} not recorded"));
                assert!(
                    usage.users.contains_key(key.as_str()),
                    "{key} not a user of {ip}"
                );
                let p = &t.pools[pool.as_str()];
                assert!(p.admits(ip), "{key}: {ip} outside pool {pool}");
                assert!(!p.is_free(ip), "{ip} in use but free in the index");
            }
            assert!(!t.pending.contains(key));
        }
    }
    for (ip, usage) in &t.addresses {
        assert!(!usage.users.is_empty(), "{ip} recorded without users");
        for user in usage.users.keys() {
            match &t.services.get(user.as_str()).map(|e| &e.state) {
                Some(ServiceState::Allocated { ips, .. }) => assert!(ips.contains(ip)),
                other => panic!("{ip} lists {user} which is {other:?}"),
            }
        }
        if usage.users.len() > 1 {
            assert!(!usage.sharing_key.is_empty(), "{ip} shared without a key");
            let mut taken = std::collections::BTreeSet::new();
            for (user, ports) in usage.users.iter() {
                let intent = Intent::of(&t.services[user.as_str()].spec).unwrap();
                assert_eq!(intent.sharing_key, usage.sharing_key, "{ip}: {user} key");
                assert_eq!(
                    intent.backend_key, usage.backend_key,
                    "{ip}: {user} backend key"
                );
                for p in ports {
                    assert!(taken.insert(p.clone()), "{ip}: port {p:?} taken twice");
                }
            }
        }
    }
    for p in t.pools.values() {
        let used_here = t.addresses.keys().filter(|ip| p.admits(ip)).count() as u128;
        let used = p.usage(Family::V4).used + p.usage(Family::V6).used;
        assert_eq!(used, used_here, "pool {} counts", p.name);
    }
}

#[test]
fn lowest_free_first_and_a_freed_address_is_reused() {
    let mut t = AllocationTable::new();
    apply(
        &mut t,
        vec![
            pool("p", &["10.0.0.0/30"]),
            svc("a", "s1"),
            svc("a", "s2"),
            svc("a", "s3"),
        ],
    );
    assert_eq!(ips(&t, "a/s1"), ["10.0.0.0"]);
    assert_eq!(ips(&t, "a/s2"), ["10.0.0.1"]);
    assert_eq!(ips(&t, "a/s3"), ["10.0.0.2"]);
    delete(&mut t, vec![svc_ref("a", "s2")]);
    apply(&mut t, vec![svc("a", "s4")]);
    assert_eq!(ips(&t, "a/s4"), ["10.0.0.1"]);
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255_and_refuses_them_on_request() {
    let mut t = AllocationTable::new();
    let p = pool_with("p", &["10.0.0.254-10.0.1.1"], |s| s.avoid_buggy_ips = true);
    apply(&mut t, vec![p, svc("a", "s1"), svc("a", "s2")]);
    assert_eq!(ips(&t, "a/s1"), ["10.0.0.254"]);
    assert_eq!(ips(&t, "a/s2"), ["10.0.1.1"]);
    let r = t.apply(
        t.log_index + 1,
        &batch(
            vec![svc_with("a", "s3", |s| {
                s.load_balancer_ip = Some("10.0.1.0".into())
            })],
            true,
        ),
    );
    assert!(
        matches!(r, Response::Rejected(ref e) if e.reason.contains("not in any IPAddressPool")),
        "{r:?}"
    );
}

#[test]
fn auto_assign_false_pools_give_addresses_only_on_request() {
    let mut t = AllocationTable::new();
    let manual = pool_with("manual", &["10.1.0.0/30"], |s| s.auto_assign = false);
    apply(&mut t, vec![manual, svc("a", "auto")]);
    assert_eq!(
        pending_reason(&t, "a/auto"),
        "no IPAddressPool serves this Service"
    );
    apply(
        &mut t,
        vec![
            svc_with("a", "by-pool", |s| {
                annotate(s, "raftlb.io/address-pool", "manual")
            }),
            svc_with("a", "by-ip", |s| {
                s.load_balancer_ip = Some("10.1.0.3".into())
            }),
        ],
    );
    assert_eq!(ips(&t, "a/by-pool"), ["10.1.0.0"]);
    assert_eq!(ips(&t, "a/by-ip"), ["10.1.0.3"]);
}

#[test]
fn service_allocation_orders_by_priority_then_name_and_falls_back() {
    let mut t = AllocationTable::new();
    let sa = |prio: i32| {
        move |s: &mut IpAddressPoolSpec| {
            s.service_allocation = Some(ServiceAllocation {
                priority: prio,
                namespaces: vec!["team".into()],
                ..Default::default()
            })
        }
    };
    apply(
        &mut t,
        vec![
            pool_with("z-prio-1", &["10.2.1.0/31"], sa(1)),
            pool_with("a-prio-1", &["10.2.2.0/31"], sa(1)),
            pool_with("unset", &["10.2.3.0/31"], sa(0)),
            pool_with("prio-5", &["10.2.4.0/31"], sa(5)),
            pool("general", &["10.2.9.0/31"]),
        ],
    );
    let order: Vec<String> = (0..9)
        .map(|i| {
            let name = format!("s{i}");
            apply(&mut t, vec![svc("team", &name)]);
            match &t.services[&format!("team/{name}")].state {
                ServiceState::Allocated { pool, .. } => pool.to_string(),
                _ => "pending".into(),
            }
        })
        .collect();
    assert_eq!(
        order,
        [
            "a-prio-1", "a-prio-1", "z-prio-1", "z-prio-1", "prio-5", "prio-5", "unset", "unset",
            "general"
        ]
    );
    // Another namespace never uses the pinned pools.
    apply(&mut t, vec![svc("other", "x")]);
    assert_eq!(pool_of(&t, "other/x"), "general");
}

#[test]
fn service_allocation_namespace_selectors_and_service_selectors() {
    let mut t = AllocationTable::new();
    let by_ns_label = pool_with("ns-label", &["10.3.1.0/30"], |s| {
        s.service_allocation = Some(ServiceAllocation {
            namespace_selectors: vec![LabelSelector {
                match_labels: [("tier".to_string(), "gold".to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        })
    });
    let by_svc_label = pool_with("svc-label", &["10.3.2.0/30"], |s| {
        s.service_allocation = Some(ServiceAllocation {
            service_selectors: vec![LabelSelector {
                match_labels: [("exposure".to_string(), "public".to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        })
    });
    apply(
        &mut t,
        vec![
            namespace("gold-ns", &[("tier", "gold")]),
            by_ns_label,
            by_svc_label,
            pool("rest", &["10.3.9.0/30"]),
            svc("gold-ns", "a"),
            svc_with("plain", "b", |s| {
                s.labels.insert("exposure".into(), "public".into());
            }),
            svc("plain", "c"),
        ],
    );
    assert_eq!(pool_of(&t, "gold-ns/a"), "ns-label");
    assert_eq!(pool_of(&t, "plain/b"), "svc-label");
    assert_eq!(pool_of(&t, "plain/c"), "rest");
}

#[test]
fn requested_ips_through_spec_and_annotations() {
    let mut t = AllocationTable::new();
    apply(
        &mut t,
        vec![pool("p", &["10.4.0.0/29"]), pool("q", &["10.4.1.0/29"])],
    );
    apply(
        &mut t,
        vec![
            svc_with("a", "spec", |s| {
                s.load_balancer_ip = Some("10.4.0.5".into())
            }),
            svc_with("a", "ann", |s| {
                annotate(s, "metallb.universe.tf/loadBalancerIPs", "10.4.1.3")
            }),
            svc_with("a", "outside", |s| {
                s.load_balancer_ip = Some("192.0.2.1".into())
            }),
            svc_with("a", "taken", |s| {
                s.load_balancer_ip = Some("10.4.0.5".into())
            }),
            svc_with("a", "wrong-pool", |s| {
                s.load_balancer_ip = Some("10.4.0.6".into());
                annotate(s, "raftlb.io/address-pool", "q");
            }),
        ],
    );
    assert_eq!(ips(&t, "a/spec"), ["10.4.0.5"]);
    assert_eq!(ips(&t, "a/ann"), ["10.4.1.3"]);
    assert!(pending_reason(&t, "a/outside").contains("in no IPAddressPool"));
    assert!(pending_reason(&t, "a/taken").contains("in use by a/spec"));
    assert!(pending_reason(&t, "a/wrong-pool").contains("not in the requested pool q"));
    // The holder goes away: the waiting request gets its address.
    delete(&mut t, vec![svc_ref("a", "spec")]);
    assert_eq!(ips(&t, "a/taken"), ["10.4.0.5"]);
}

#[test]
fn address_pool_annotation_and_a_missing_pool() {
    let mut t = AllocationTable::new();
    apply(
        &mut t,
        vec![pool("p", &["10.5.0.0/30"]), pool("q", &["10.5.1.0/30"])],
    );
    apply(
        &mut t,
        vec![
            svc_with("a", "q", |s| annotate(s, "metallb.io/address-pool", "q")),
            svc_with("a", "nope", |s| {
                annotate(s, "raftlb.io/address-pool", "nope")
            }),
        ],
    );
    assert_eq!(pool_of(&t, "a/q"), "q");
    assert_eq!(
        pending_reason(&t, "a/nope"),
        "IPAddressPool nope does not exist"
    );
    // Changing the annotation moves the Service.
    apply(
        &mut t,
        vec![svc_with("a", "q", |s| {
            annotate(s, "metallb.io/address-pool", "p")
        })],
    );
    assert_eq!(pool_of(&t, "a/q"), "p");
    assert_eq!(events_of(&t, "Service/a/q", "ClearAssignment"), 1);
}

#[test]
fn sharing_needs_equal_keys_equal_backends_and_free_ports() {
    let mut t = AllocationTable::new();
    let shared = |name: &str, key: &str, proto: &str, port: u16| {
        let (key, proto) = (key.to_string(), proto.to_string());
        svc_with("a", name, move |s| {
            annotate(s, "metallb.io/allow-shared-ip", &key);
            s.ports[0].protocol = proto.into();
            s.ports[0].port = port;
            s.selector = [("app".to_string(), "dns".to_string())].into();
        })
    };
    apply(&mut t, vec![pool("p", &["10.6.0.0/29"])]);
    apply(
        &mut t,
        vec![
            shared("tcp", "dns", "TCP", 53),
            shared("udp", "dns", "UDP", 53),
        ],
    );
    assert_eq!(ips(&t, "a/tcp"), ips(&t, "a/udp"), "packed onto one IP");
    apply(&mut t, vec![shared("clash", "dns", "TCP", 53)]);
    assert_ne!(ips(&t, "a/clash"), ips(&t, "a/tcp"), "port clash");
    apply(&mut t, vec![shared("other-key", "web", "TCP", 8080)]);
    assert_ne!(ips(&t, "a/other-key"), ips(&t, "a/tcp"), "different key");
    // Local traffic policy with another selector is another backend.
    let mut local = shared("local", "dns", "TCP", 5353);
    if let ObjectSpec::Service(s) = &mut local.spec {
        s.external_traffic_policy = "Local".into();
    }
    apply(&mut t, vec![local]);
    assert_ne!(
        ips(&t, "a/local"),
        ips(&t, "a/tcp"),
        "different backend key"
    );
    // A requested shared IP with a clash stays pending with the reason.
    let mut req = shared("req", "dns", "UDP", 53);
    if let ObjectSpec::Service(s) = &mut req.spec {
        s.load_balancer_ip = Some(ips(&t, "a/tcp")[0].clone());
    }
    apply(&mut t, vec![req]);
    assert!(pending_reason(&t, "a/req").contains("port 53/UDP is already taken by a/udp"));
    // Without a key, never shared.
    apply(
        &mut t,
        vec![svc_with("a", "plain", |s| {
            s.load_balancer_ip = Some("10.6.0.0".into())
        })],
    );
    assert!(pending_reason(&t, "a/plain").contains("allow-shared-ip keys differ"));
}

#[test]
fn dual_stack_policies() {
    let mut t = AllocationTable::new();
    apply(
        &mut t,
        vec![
            pool("dual", &["10.7.0.0/30", "fd00:7::/126"]),
            pool_with("v4only", &["10.7.1.0/30"], |s| s.auto_assign = false),
        ],
    );
    let dual = |name: &str, policy: &str, pool: Option<&str>| {
        let (policy, pool) = (policy.to_string(), pool.map(str::to_string));
        svc_with("a", name, move |s| {
            s.ip_family_policy = policy.into();
            s.ip_families = vec!["IPv4".into(), "IPv6".into()];
            if let Some(p) = pool {
                annotate(s, "raftlb.io/address-pool", &p);
            }
        })
    };
    apply(
        &mut t,
        vec![
            dual("req", "RequireDualStack", None),
            dual("req-v4only", "RequireDualStack", Some("v4only")),
            dual("pref-v4only", "PreferDualStack", Some("v4only")),
        ],
    );
    assert_eq!(ips(&t, "a/req"), ["10.7.0.0", "fd00:7::"]);
    assert!(pending_reason(&t, "a/req-v4only").contains("has IPv4 and IPv6"));
    assert_eq!(ips(&t, "a/pref-v4only"), ["10.7.1.0"]);
    // The pool gains IPv6: the PreferDualStack Service gains its second family from it.
    apply(
        &mut t,
        vec![pool_with(
            "v4only",
            &["10.7.1.0/30", "fd00:71::/126"],
            |s| s.auto_assign = false,
        )],
    );
    assert_eq!(ips(&t, "a/pref-v4only"), ["10.7.1.0", "fd00:71::"]);
    assert_eq!(ips(&t, "a/req-v4only"), ["10.7.1.1", "fd00:71::1"]);
}

#[test]
fn load_balancer_class_filters_services() {
    let mut t = AllocationTable::new();
    apply(
        &mut t,
        vec![
            pool("p", &["10.8.0.0/30"]),
            svc("a", "plain"),
            svc_with("a", "classed", |s| {
                s.load_balancer_class = Some("example.com/lb".into())
            }),
        ],
    );
    assert_eq!(ips(&t, "a/plain"), ["10.8.0.0"]);
    assert!(matches!(
        t.services["a/classed"].state,
        ServiceState::Ignored { .. }
    ));
    t.apply(
        t.log_index + 1,
        &Command::SetLoadBalancerClass {
            class: Some("example.com/lb".into()),
            now_ms: 3,
        },
    );
    check_invariants(&t);
    assert!(matches!(
        t.services["a/plain"].state,
        ServiceState::Ignored { .. }
    ));
    assert_eq!(ips(&t, "a/classed"), ["10.8.0.0"]);
}

#[test]
fn release_on_delete_and_type_change_and_retry_of_an_exhausted_pool() {
    let mut t = AllocationTable::new();
    apply(
        &mut t,
        vec![
            pool("tiny", &["10.9.0.0/31"]),
            svc("a", "s1"),
            svc("a", "s2"),
            svc("a", "s3"),
        ],
    );
    assert_eq!(pending_reason(&t, "a/s3"), "no available IPs in pool tiny");
    assert_eq!(events_of(&t, "Service/a/s3", "AllocationFailed"), 1);
    // Retries on unrelated changes do not repeat the event.
    apply(&mut t, vec![svc("b", "unrelated")]);
    assert_eq!(events_of(&t, "Service/a/s3", "AllocationFailed"), 1);
    // Turning s1 into a ClusterIP Service frees its address for s3.
    apply(
        &mut t,
        vec![svc_with("a", "s1", |s| s.service_type = "ClusterIP".into())],
    );
    assert!(matches!(
        t.services["a/s1"].state,
        ServiceState::Ignored { .. }
    ));
    assert!(!ips(&t, "a/s3").is_empty() || !ips(&t, "b/unrelated").is_empty());
    let holders: Vec<_> = ["a/s2", "a/s3", "b/unrelated"]
        .iter()
        .filter(|k| !ips(&t, k).is_empty())
        .collect();
    assert_eq!(holders.len(), 2);
    assert_eq!(
        events_of(&t, "Service/a/s3", "IPAllocated"),
        1,
        "pending a/s3 (first in order) got the freed IP"
    );
}

#[test]
fn pool_shrink_reallocates_or_pends_with_an_event_each() {
    let mut t = AllocationTable::new();
    apply(
        &mut t,
        vec![
            pool("p", &["10.10.0.0/29"]),
            svc("a", "s0"),
            svc("a", "s1"),
            svc("a", "s2"),
            svc("a", "s3"),
        ],
    );
    assert_eq!(ips(&t, "a/s3"), ["10.10.0.3"]);
    // Shrink to .0-.2: s3's address left the pool; nothing else is free.
    apply(&mut t, vec![pool("p", &["10.10.0.0-10.10.0.2"])]);
    assert_eq!(
        ips(&t, "a/s0"),
        ["10.10.0.0"],
        "addresses still in the pool stay"
    );
    assert_eq!(pending_reason(&t, "a/s3"), "no available IPs in pool p");
    assert_eq!(events_of(&t, "Service/a/s3", "ClearAssignment"), 1);
    // Grow elsewhere: s3 is retried and allocated.
    apply(
        &mut t,
        vec![pool("p", &["10.10.0.0-10.10.0.2", "10.10.5.0/32"])],
    );
    assert_eq!(ips(&t, "a/s3"), ["10.10.5.0"]);
    // Delete the pool: everyone pends with a ClearAssignment.
    let r = delete(
        &mut t,
        vec![ObjectRef {
            kind: Kind::IPAddressPool,
            namespace: String::new(),
            name: "p".into(),
        }],
    );
    assert!(matches!(r, Response::Applied(_)));
    for s in ["s0", "s1", "s2", "s3"] {
        assert_eq!(
            pending_reason(&t, &format!("a/{s}")),
            "no IPAddressPool serves this Service"
        );
    }
    assert!(t.addresses.is_empty());
}

#[test]
fn addresses_moving_between_pools_are_relabelled_not_renumbered() {
    let mut t = AllocationTable::new();
    apply(&mut t, vec![pool("old", &["10.11.0.0/30"]), svc("a", "s")]);
    let r = t.apply(
        t.log_index + 1,
        &Command::Apply(ApplyBatch {
            objects: vec![(1, pool("new", &["10.11.0.0/30"]))],
            deletes: vec![(
                2,
                ObjectRef {
                    kind: Kind::IPAddressPool,
                    namespace: String::new(),
                    name: "old".into(),
                },
            )],
            strict: true,
            now_ms: 5,
        }),
    );
    assert!(matches!(r, Response::Applied(_)), "{r:?}");
    check_invariants(&t);
    assert_eq!(
        (ips(&t, "a/s"), pool_of(&t, "a/s")),
        (vec!["10.11.0.0".to_string()], "new".to_string())
    );
}

#[test]
fn a_rejected_batch_changes_nothing() {
    let mut t = AllocationTable::new();
    apply(&mut t, vec![pool("a", &["10.12.0.0/24"]), svc("x", "s")]);
    let before = t.clone();
    let r = t.apply(
        t.log_index + 1,
        &batch(vec![svc("x", "t"), pool("b", &["10.12.0.128/25"])], true),
    );
    match r {
        Response::Rejected(e) => {
            assert_eq!(
                (e.document, e.object.as_str(), e.field.as_str()),
                (2, "IPAddressPool/b", "spec.addresses[0]")
            );
            assert!(e
                .reason
                .contains("overlaps 10.12.0.0/24 of IPAddressPool a"));
        }
        other => panic!("{other:?}"),
    }
    assert_unchanged(&t, &before);
    // Deleting what does not exist is refused in strict mode.
    let r = t.apply(
        t.log_index + 1,
        &Command::Apply(ApplyBatch {
            deletes: vec![(1, svc_ref("x", "ghost"))],
            strict: true,
            ..Default::default()
        }),
    );
    assert!(matches!(r, Response::Rejected(ref e) if e.reason == "not found"));
    assert_unchanged(&t, &before);
}

/// Nothing changed but the index of the entry last applied (indexes and journal included).
fn assert_unchanged(t: &AllocationTable, before: &AllocationTable) {
    let mut same = before.clone();
    same.log_index = t.log_index;
    assert_eq!(*t, same);
}

#[test]
fn reapplying_is_idempotent() {
    let mut t = AllocationTable::new();
    let objs = vec![pool("p", &["10.13.0.0/30"]), svc("a", "s")];
    apply(&mut t, objs.clone());
    let before = t.clone();
    match apply(&mut t, objs) {
        Response::Applied(o) => assert!(o.changes.iter().all(|(_, c)| *c == Change::Unchanged)),
        other => panic!("{other:?}"),
    }
    assert_unchanged(&t, &before); // no events, no generation bump
}

#[test]
fn huge_pools_allocate_through_the_index() {
    let mut t = AllocationTable::new();
    apply(
        &mut t,
        vec![pool("v4", &["10.0.0.0/8"]), pool("v6", &["fd00:1::/64"])],
    );
    let mut objs = Vec::new();
    for i in 0..2000 {
        objs.push(svc("a", &format!("s{i}")));
        objs.push(svc_with("b", &format!("s{i}"), |s| {
            s.ip_families = vec!["IPv6".into()];
            annotate(s, "raftlb.io/address-pool", "v6");
        }));
    }
    apply(&mut t, objs);
    assert_eq!(ips(&t, "a/s1999"), ["10.0.7.207"]);
    assert_eq!(ips(&t, "b/s1999"), ["fd00:1::7cf"]);
    let (_, v4, _) = t.pool_usage("v4").unwrap();
    assert_eq!((v4.size, v4.used), (1 << 24, 2000));
    let (_, _, v6) = t.pool_usage("v6").unwrap();
    assert_eq!((v6.size, v6.used), (1 << 64, 2000));
    // The index stays one interval per pool however many addresses are taken in order.
    assert_eq!(t.pools["v4"].ranges[0].1.interval_count(), 1);
}

#[test]
fn events_are_bounded() {
    let mut t = AllocationTable::new();
    apply(&mut t, vec![pool("p", &["10.14.0.0/16"])]);
    for i in 0..(MAX_EVENTS + 10) {
        apply(&mut t, vec![svc("a", &format!("s{i}"))]);
    }
    assert_eq!(t.events.len(), MAX_EVENTS);
    assert_eq!(t.events.back().unwrap().seq, (MAX_EVENTS + 10) as u64);
}

// ---- seeded randomized runs ----

/// splitmix64: small, fast, and the seed is all it takes to replay a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("RAFTLB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

fn random_command(rng: &mut Rng, step: u64) -> Command {
    let n = rng.below(100);
    let name = format!("s{}", rng.below(40));
    let ns = ["a", "b"][rng.below(2) as usize];
    let obj = if n < 8 {
        // Reshape a pool: grow, shrink, move, or toggle avoidBuggyIPs.
        let pools = [
            vec!["10.20.0.0/29"],
            vec!["10.20.0.0-10.20.0.3"],
            vec!["10.20.0.0/28", "fd00:20::/125"],
            vec!["10.20.0.252-10.20.1.3"],
        ];
        let i = rng.below(pools.len() as u64) as usize;
        let buggy = rng.below(2) == 0;
        pool_with("p", &pools[i], |s| s.avoid_buggy_ips = buggy)
    } else if n < 12 {
        pool_with("q", &["10.21.0.0/30"], |s| {
            s.auto_assign = rng.below(2) == 0
        })
    } else if n < 30 {
        return Command::Apply(ApplyBatch {
            deletes: vec![(1, svc_ref(ns, &name))],
            strict: false,
            now_ms: step,
            ..Default::default()
        });
    } else {
        let key = ["", "k1", "k2"][rng.below(3) as usize].to_string();
        let port = [53u16, 80, 443][rng.below(3) as usize];
        let proto = ["TCP", "UDP"][rng.below(2) as usize].to_string();
        let lb_ip = match rng.below(10) {
            0 => Some(format!("10.20.0.{}", rng.below(5))),
            1 => Some("10.21.0.1".to_string()),
            _ => None,
        };
        let policy = ["", "PreferDualStack", "RequireDualStack"][rng.below(3) as usize].to_string();
        let local = rng.below(4) == 0;
        let lb_type = if rng.below(10) == 0 {
            "ClusterIP"
        } else {
            "LoadBalancer"
        };
        svc_with(ns, &name, |s| {
            if !key.is_empty() {
                annotate(s, "metallb.io/allow-shared-ip", &key);
            }
            s.ports[0].port = port;
            s.ports[0].protocol = proto.into();
            s.load_balancer_ip = lb_ip;
            s.ip_family_policy = policy.into();
            s.service_type = lb_type.into();
            s.selector = [("app".to_string(), "shared".to_string())].into();
            if local {
                s.external_traffic_policy = "Local".into();
            }
        })
    };
    Command::Apply(ApplyBatch {
        objects: vec![(1, obj)],
        deletes: vec![],
        strict: false,
        now_ms: step,
    })
}

#[test]
fn random_command_streams_keep_the_invariants_and_replicas_agree() {
    let seed = seed();
    eprintln!("random_command_streams: RAFTLB_SEED={seed}");
    let mut rng = Rng(seed);
    for run in 0..60 {
        let mut replica_a = AllocationTable::new();
        let mut replica_b = AllocationTable::new();
        for step in 0..150 {
            let cmd = random_command(&mut rng, step);
            let ra = replica_a.apply(replica_a.log_index + 1, &cmd);
            let rb = replica_b.apply(replica_b.log_index + 1, &cmd);
            assert_eq!(ra, rb, "seed {seed} run {run} step {step}");
            let result = std::panic::catch_unwind(|| check_invariants(&replica_a));
            assert!(
                result.is_ok(),
                "invariant broken: seed {seed} run {run} step {step} after {cmd:?}"
            );
        }
        // Same log, same table, byte for byte.
        assert_eq!(
            crate::codec::encode(&replica_a).unwrap(),
            crate::codec::encode(&replica_b).unwrap(),
            "seed {seed} run {run}"
        );
        // Release then reallocate: delete everything, re-add one Service, it gets an address
        // when any auto-assign pool exists.
        let keys: Vec<String> = replica_a.services.keys().cloned().collect();
        for k in keys {
            let (ns, name) = k.split_once('/').unwrap();
            delete(&mut replica_a, vec![svc_ref(ns, name)]);
        }
        assert!(replica_a.addresses.is_empty(), "seed {seed}: all released");
        apply(
            &mut replica_a,
            vec![pool("fresh", &["10.30.0.0/30"]), svc("z", "again")],
        );
        assert!(
            !ips(&replica_a, "z/again").is_empty(),
            "seed {seed}: reallocated"
        );
    }
}
