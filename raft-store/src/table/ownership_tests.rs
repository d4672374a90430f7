//! The planner and the ownership records, one rule per test, against the pure table.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::super::tests::{batch, pool, svc, svc_with};
use super::*;
use crate::table::index::Changes;
use crate::table::objects::*;
use crate::table::planner::{plan, plan_changes};
use crate::table::{Command, Response};

fn l2(name: &str, f: impl FnOnce(&mut L2AdvertisementSpec)) -> Object {
    let mut spec = L2AdvertisementSpec::default();
    f(&mut spec);
    Object {
        namespace: String::new(),
        name: name.into(),
        labels: BTreeMap::new(),
        spec: ObjectSpec::L2Advertisement(spec),
    }
}

fn node(t: &mut AllocationTable, name: &str, id: u64, labels: &[(&str, &str)], ifs: &[&str]) {
    let facts = NodeFacts {
        name: name.into(),
        raft_id: id,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        interfaces: ifs.iter().map(|s| s.to_string()).collect(),
        excluded: None,
    };
    assert_eq!(
        t.apply(t.log_index + 1, &Command::RegisterNode { facts, now_ms: 1 }),
        Response::Ok
    );
}

/// A Service in namespace `ns` with one annotation.
fn annotated(name: &str, key: &str, value: &str) -> Object {
    svc_with("ns", name, |s| {
        s.annotations.insert(key.into(), value.into());
    })
}

fn ok(t: &mut AllocationTable, c: Command) {
    let r = t.apply(t.log_index + 1, &c);
    assert!(
        !matches!(r, Response::Rejected(_)),
        "{c:?} was rejected: {r:?}"
    );
}

fn commit(t: &mut AllocationTable, liveness: Vec<(&str, bool)>, assignments: Vec<AssignVip>) {
    let b = OwnershipBatch {
        leader: None,
        liveness: liveness
            .into_iter()
            .map(|(n, l)| (n.to_string(), l))
            .collect(),
        assignments,
        now_ms: 2,
    };
    ok(t, Command::Ownership(b));
}

/// Plans and commits until the plan is empty; returns every assignment made.
fn settle(t: &mut AllocationTable, confirmed: bool) -> Vec<AssignVip> {
    let mut all = Vec::new();
    for _ in 0..10 {
        let p = plan(t, &|_, _| confirmed);
        if p.is_empty() {
            return all;
        }
        all.extend(p.clone());
        commit(t, vec![], p);
    }
    panic!("the plan did not settle: {all:?}");
}

fn owner(t: &AllocationTable, ip: &str) -> Option<String> {
    t.vips[&ip.parse::<IpAddr>().unwrap()].owner.clone()
}

fn owners(t: &AllocationTable) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in t.vips.values() {
        if let Some(o) = &r.owner {
            *m.entry(o.clone()).or_insert(0) += 1;
        }
    }
    m
}

/// A pool of 8, one L2Advertisement for everything, nodes a b c, `n` Services.
fn cluster(n: usize) -> AllocationTable {
    let mut t = AllocationTable::new();
    ok(
        &mut t,
        batch(vec![pool("p", &["10.0.0.0/29"]), l2("all", |_| {})], true),
    );
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        node(&mut t, name, i as u64 + 1, &[], &["eth0"]);
    }
    let services = (0..n).map(|i| svc("ns", &format!("s{i}"))).collect();
    ok(&mut t, batch(services, true));
    t
}

#[test]
fn spreads_fewest_first_ties_by_name() {
    let mut t = cluster(4);
    settle(&mut t, true);
    assert_eq!(owner(&t, "10.0.0.0").as_deref(), Some("a"));
    assert_eq!(owner(&t, "10.0.0.1").as_deref(), Some("b"));
    assert_eq!(owner(&t, "10.0.0.2").as_deref(), Some("c"));
    assert_eq!(owner(&t, "10.0.0.3").as_deref(), Some("a"));
    assert_eq!(t.owned_by("a").len(), 2);
    assert_eq!(t.owned_by("a")[&"10.0.0.0".parse().unwrap()], vec!["eth0"]);
}

#[test]
fn down_owner_loses_its_vips_in_one_batch_and_gets_none_back() {
    let mut t = cluster(6);
    settle(&mut t, true);
    let before = t.history.len();
    commit(&mut t, vec![("a", false)], vec![]);
    let p = plan(&t, &|_, _| false);
    // Straight to new owners: a's lease ran out before it was declared down.
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|a| a.node.is_some()));
    commit(&mut t, vec![], p);
    assert_eq!(
        owners(&t),
        BTreeMap::from([("b".into(), 3), ("c".into(), 3)])
    );
    assert!(settle(&mut t, true).is_empty());
    // a comes back: sticky, no failback.
    commit(&mut t, vec![("a", true)], vec![]);
    assert!(settle(&mut t, true).is_empty());
    assert!(t.owned_by("a").is_empty());
    assert_eq!(t.history.len(), before + 2);
    assert!(t.history.iter().any(|m| m.cause == "node a is down"));
}

#[test]
fn new_node_takes_new_vips_but_moves_nothing() {
    let mut t = cluster(2);
    settle(&mut t, true);
    node(&mut t, "d", 4, &[], &["eth0"]);
    assert!(settle(&mut t, true).is_empty());
    ok(&mut t, batch(vec![svc("ns", "late")], true));
    let made = settle(&mut t, true);
    assert_eq!(made.len(), 1);
    // c and d hold nothing; c sorts first.
    assert_eq!(made[0].node.as_deref(), Some("c"));
}

#[test]
fn drain_releases_first_and_waits_for_confirmation() {
    let mut t = cluster(3);
    settle(&mut t, true);
    ok(
        &mut t,
        Command::Drain {
            node: "b".into(),
            drain: true,
            now_ms: 3,
        },
    );
    let p = plan(&t, &|_, _| false);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].node, None, "break before make");
    commit(&mut t, vec![], p);
    let vip: IpAddr = "10.0.0.1".parse().unwrap();
    let rel = t.vips[&vip].released.clone().expect("b must confirm");
    assert_eq!(rel.node, "b");
    assert_eq!(rel.index, t.log_index);
    // Not confirmed: nobody takes it.
    assert!(plan(&t, &|_, _| false).is_empty());
    assert!(t.unowned_reason(&vip).contains("waiting for b"));
    // Confirmed: it goes to the least loaded usable node.
    let p = plan(&t, &|_, _| true);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].node.as_deref(), Some("a"));
    commit(&mut t, vec![], p);
    assert!(t.owned_by("b").is_empty());
}

#[test]
fn move_goes_where_the_operator_says_after_the_old_owner_stops() {
    let mut t = cluster(2);
    settle(&mut t, true);
    let vip: IpAddr = "10.0.0.0".parse().unwrap();
    ok(
        &mut t,
        Command::MoveVip {
            vip,
            node: "c".into(),
            now_ms: 3,
        },
    );
    let made = settle(&mut t, true);
    let steps: Vec<Option<&str>> = made.iter().map(|a| a.node.as_deref()).collect();
    assert_eq!(steps, vec![None, Some("c")]);
    assert_eq!(owner(&t, "10.0.0.0").as_deref(), Some("c"));
    assert_eq!(t.vips[&vip].move_to, None);
    // Moving to an unknown node or an unallocated address is refused, naming the field.
    let r = t.apply(
        t.log_index + 1,
        &Command::MoveVip {
            vip,
            node: "zz".into(),
            now_ms: 4,
        },
    );
    let Response::Rejected(e) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.field, "node");
    let r = t.apply(
        t.log_index + 1,
        &Command::MoveVip {
            vip: "10.0.0.7".parse().unwrap(),
            node: "a".into(),
            now_ms: 4,
        },
    );
    assert!(matches!(r, Response::Rejected(e) if e.field == "vip"));
}

#[test]
fn node_selectors_and_interfaces_restrict_owners() {
    let mut t = AllocationTable::new();
    let adv = l2("racks", |s| {
        s.node_selectors = vec![LabelSelector {
            match_labels: [("rack".to_string(), "r1".to_string())].into(),
            ..Default::default()
        }];
        s.interfaces = vec!["eth1".into()];
    });
    ok(&mut t, batch(vec![pool("p", &["10.0.0.0/29"]), adv], true));
    node(&mut t, "a", 1, &[("rack", "r1")], &["eth0"]);
    node(&mut t, "b", 2, &[("rack", "r2")], &["eth1"]);
    node(&mut t, "c", 3, &[("rack", "r1")], &["eth0", "eth1"]);
    ok(&mut t, batch(vec![svc("ns", "s0"), svc("ns", "s1")], true));
    settle(&mut t, true);
    assert_eq!(owners(&t), BTreeMap::from([("c".into(), 2)]));
    let vip: IpAddr = "10.0.0.0".parse().unwrap();
    assert_eq!(t.owned_by("c")[&vip], vec!["eth1"]);
    let why = t.eligible(&vip, "a").unwrap_err();
    assert!(why.contains("interfaces [eth1]"), "{why}");
    let why = t.eligible(&vip, "b").unwrap_err();
    assert!(why.contains("nodeSelectors"), "{why}");
    // c goes down: nobody else qualifies, the VIP is unowned and says why.
    commit(&mut t, vec![("c", false)], vec![]);
    settle(&mut t, true);
    assert_eq!(owner(&t, "10.0.0.0"), None);
    let why = t.unowned_reason(&vip);
    assert!(
        why.contains("c: down") && why.contains("a: L2Advertisement racks"),
        "{why}"
    );
}

#[test]
fn a_layer2_eip_is_its_own_advertisement_on_its_interface() {
    let mut t = AllocationTable::new();
    let eip = |name: &str, address: &str, protocol: &str| Object {
        namespace: String::new(),
        name: name.into(),
        labels: BTreeMap::new(),
        spec: ObjectSpec::Eip(EipSpec {
            address: address.into(),
            protocol: Some(protocol.into()),
            interface: Some("eth1".into()).filter(|_| protocol == "layer2"),
            ..Default::default()
        }),
    };
    let pinned = |name: &str, eip: &str| annotated(name, "eip.openelb.kubesphere.io/v1alpha2", eip);
    ok(
        &mut t,
        batch(
            vec![
                eip("l2", "10.0.0.0/30", "layer2"),
                eip("vip", "10.1.0.0/30", "vip"),
                eip("bgp", "10.2.0.0/30", "bgp"),
                pinned("a", "l2"),
                pinned("b", "vip"),
                pinned("c", "bgp"),
            ],
            true,
        ),
    );
    node(&mut t, "n1", 1, &[], &["eth0"]);
    node(&mut t, "n2", 2, &[], &["eth0", "eth1"]);
    settle(&mut t, true);
    assert_eq!(
        owner(&t, "10.0.0.0").as_deref(),
        Some("n2"),
        "only n2 has eth1"
    );
    assert_eq!(
        t.owned_by("n2")[&"10.0.0.0".parse::<IpAddr>().unwrap()],
        vec!["eth1"]
    );
    assert!(
        owner(&t, "10.1.0.0").is_some(),
        "vip is announced like layer2"
    );
    assert_eq!(
        owner(&t, "10.2.0.0"),
        None,
        "a bgp Eip has no layer-2 announcement"
    );
}

#[test]
fn no_advertisement_no_owner() {
    let mut t = AllocationTable::new();
    ok(&mut t, batch(vec![pool("p", &["10.0.0.0/29"])], true));
    node(&mut t, "a", 1, &[], &["eth0"]);
    ok(&mut t, batch(vec![svc("ns", "s0")], true));
    assert!(settle(&mut t, true).is_empty());
    let vip: IpAddr = "10.0.0.0".parse().unwrap();
    assert!(t
        .unowned_reason(&vip)
        .contains("no L2Advertisement selects pool p"));
}

#[test]
fn an_advertisement_selects_pools_by_their_labels() {
    let mut t = AllocationTable::new();
    let mut labelled = pool("gold", &["10.0.0.0/30"]);
    labelled.labels.insert("tier".into(), "gold".into());
    let adv = l2("gold-only", |s| {
        s.ip_address_pool_selectors = vec![selector_on("tier", "gold")]
    });
    let plain = pool("plain", &["10.0.1.0/30"]);
    ok(&mut t, batch(vec![labelled, plain, adv], true));
    node(&mut t, "a", 1, &[], &["eth0"]);
    let in_pool = |name: &str, pool: &str| annotated(name, "metallb.io/address-pool", pool);
    ok(
        &mut t,
        batch(vec![in_pool("g", "gold"), in_pool("p", "plain")], true),
    );
    settle(&mut t, true);
    assert_eq!(owner(&t, "10.0.0.0"), Some("a".into()));
    assert_eq!(owner(&t, "10.0.1.0"), None);
    let vip: IpAddr = "10.0.1.0".parse().unwrap();
    let why = t.unowned_reason(&vip);
    assert!(
        why.contains("no L2Advertisement selects pool plain"),
        "{why}"
    );
}

#[test]
fn vips_nobody_may_own_are_looked_at_again_only_when_a_node_changes() {
    // An advertisement for rack r1 only, and no node there: every VIP is allocated and
    // unowned, and planning after more Services looks at the new ones, not at all of them.
    let mut t = AllocationTable::new();
    let adv = l2("r1", |s| s.node_selectors = vec![selector_on("rack", "r1")]);
    ok(&mut t, batch(vec![pool("p", &["10.0.0.0/27"]), adv], true));
    node(&mut t, "a", 1, &[("rack", "r2")], &["eth0"]);
    let services = (0..20).map(|i| svc("ns", &format!("s{i}"))).collect();
    ok(&mut t, batch(services, true));
    let first = plan_changes(&t, &[], None, &|_, _| true);
    assert!(first.assignments.is_empty());
    assert_eq!(first.examined, 20);
    let since = t.log_index;
    ok(&mut t, batch(vec![svc("ns", "late")], true));
    let next = plan_changes(&t, &[], Some(since), &|_, _| true);
    assert!(next.assignments.is_empty());
    assert_eq!(next.examined, 1, "only the new Service's VIP");
    // A node in rack r1 registers: every VIP finds a home, as a plan from scratch says.
    let since = t.log_index;
    node(&mut t, "b", 2, &[("rack", "r1")], &["eth0"]);
    let changed = plan_changes(&t, &[], Some(since), &|_, _| true);
    let every = plan_changes(&t, &[], None, &|_, _| true);
    assert_eq!(changed.assignments, every.assignments);
    assert_eq!(changed.assignments.len(), 21);
}

fn slice(ns: &str, service: &str, nodes: &[(&str, bool)]) -> Object {
    Object {
        namespace: ns.into(),
        name: format!("{service}-abc"),
        labels: BTreeMap::new(),
        spec: ObjectSpec::EndpointSlice(EndpointSliceSpec {
            service: service.into(),
            endpoints: nodes
                .iter()
                .map(|(n, ready)| EndpointInfo {
                    node_name: Some(n.to_string()),
                    ready: *ready,
                })
                .collect(),
        }),
    }
}

#[test]
fn local_policy_follows_ready_endpoints() {
    let mut t = cluster(0);
    let local = svc_with("ns", "web", |s| s.external_traffic_policy = "Local".into());
    let gen = t.generation;
    ok(
        &mut t,
        batch(
            vec![local, slice("ns", "web", &[("a", false), ("b", true)])],
            true,
        ),
    );
    assert_eq!(t.generation, gen, "endpoints are not configuration");
    settle(&mut t, true);
    assert_eq!(owner(&t, "10.0.0.0").as_deref(), Some("b"));
    // The endpoint moves to c: b is live, so it releases first, then c takes over.
    ok(
        &mut t,
        batch(vec![slice("ns", "web", &[("b", false), ("c", true)])], true),
    );
    let made = settle(&mut t, true);
    let steps: Vec<Option<&str>> = made.iter().map(|a| a.node.as_deref()).collect();
    assert_eq!(steps, vec![None, Some("c")]);
    assert!(
        made[0].cause.contains("no ready endpoint of ns/web"),
        "{made:?}"
    );
}

#[test]
fn services_sharing_an_ip_share_its_owner() {
    let mut t = cluster(0);
    let share = |name: &str, port: u16| {
        svc_with("ns", name, |s| {
            s.annotations
                .insert("metallb.io/allow-shared-ip".into(), "k".into());
            s.ports[0].port = port;
        })
    };
    ok(
        &mut t,
        batch(vec![share("dns-tcp", 53), share("dns-udp", 54)], true),
    );
    assert_eq!(t.addresses.len(), 1);
    let made = settle(&mut t, true);
    assert_eq!(made.len(), 1, "one VIP, one owner: {made:?}");
    assert_eq!(t.vips.len(), 1);
}

#[test]
fn released_addresses_are_given_up_and_stale_plans_are_skipped() {
    let mut t = cluster(1);
    settle(&mut t, true);
    let vip: IpAddr = "10.0.0.0".parse().unwrap();
    let stale = plan(&t, &|_, _| true);
    assert!(stale.is_empty());
    let epoch = t.vips[&vip].epoch;
    // An assignment planned at an old epoch changes nothing.
    commit(
        &mut t,
        vec![],
        vec![AssignVip {
            vip,
            node: Some("c".into()),
            epoch,
            cause: "stale".into(),
        }],
    );
    assert_eq!(owner(&t, "10.0.0.0").as_deref(), Some("a"));
    // The Service goes away: its owner gives the address up.
    let del = Command::Apply(crate::table::ApplyBatch {
        deletes: vec![(
            1,
            ObjectRef {
                kind: Kind::Service,
                namespace: "ns".into(),
                name: "s0".into(),
            },
        )],
        strict: true,
        now_ms: 5,
        ..Default::default()
    });
    ok(&mut t, del);
    let made = settle(&mut t, true);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].node, None);
    assert_eq!(owner(&t, "10.0.0.0"), None);
    assert!(t.owned_by("a").is_empty());
}

#[test]
fn excluded_node_owns_nothing_and_moves_are_counted_and_reported() {
    let mut t = cluster(3);
    let facts = NodeFacts {
        name: "a".into(),
        raft_id: 1,
        interfaces: vec!["eth0".into()],
        excluded: Some("label node.kubernetes.io/exclude-from-external-load-balancers".into()),
        ..Default::default()
    };
    ok(&mut t, Command::RegisterNode { facts, now_ms: 1 });
    settle(&mut t, true);
    assert_eq!(
        owners(&t).get("a"),
        None,
        "an excluded node is never chosen"
    );
    let ip: IpAddr = "10.0.0.0".parse().unwrap();
    assert!(t.eligible(&ip, "a").unwrap_err().contains("excluded"));
    assert_eq!(t.moves_total, 3);
    assert_eq!(t.failovers_total, 0);
    // Each assignment is reported on the Services of the VIP, once.
    let assigned: Vec<_> = t
        .events
        .iter()
        .filter(|e| e.reason == "NodeAssigned")
        .map(|e| e.object.clone())
        .collect();
    assert_eq!(
        assigned,
        ["Service/ns/s0", "Service/ns/s1", "Service/ns/s2"]
    );

    // b goes down: its VIPs move, and those are failovers.
    let b_owned = owners(&t)["b"] as u64;
    assert!(b_owned > 0);
    commit(&mut t, vec![("b", false)], vec![]);
    settle(&mut t, true);
    assert_eq!(t.failovers_total, b_owned, "one failover per VIP b owned");
    assert_eq!(t.moves_total, 3 + b_owned);
    assert_eq!(owners(&t).get("b"), None);
}

// ---- incremental planning equals planning every VIP ----

/// splitmix64, as in the table's randomized runs.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// The index the table keeps equals the one rebuilt from its data.
fn assert_index_in_step(t: &AllocationTable, context: &str) {
    let mut rebuilt = t.clone();
    rebuilt.restored(t.log_index);
    assert_eq!(t.index.vips, rebuilt.index.vips, "VIP index: {context}");
    assert_eq!(
        t.index.slices, rebuilt.index.slices,
        "slice index: {context}"
    );
}

/// One command of a stream that exercises everything the planner reads: Services coming and
/// going (some Local, some sharing), endpoints moving, node facts changing, drains, moves and
/// advertisement edits.
fn random_ownership_command(rng: &mut Rng, t: &AllocationTable) -> Command {
    let names = ["a", "b", "c", "d"];
    let node_name = names[rng.below(4) as usize];
    let service = format!("s{}", rng.below(12));
    match rng.below(20) {
        0..=6 => {
            let local = rng.below(3) == 0;
            let shared = rng.below(3) == 0;
            let team = ["x", "y"][rng.below(2) as usize];
            let port = 80 + rng.below(2) as u16;
            batch(
                vec![svc_with("ns", &service, |s| {
                    if local {
                        s.external_traffic_policy = "Local".into();
                    }
                    if shared {
                        s.annotations
                            .insert("metallb.io/allow-shared-ip".into(), "k".into());
                        s.selector = [("app".to_string(), "shared".to_string())].into();
                    }
                    s.ports[0].port = port;
                    s.labels.insert("team".into(), team.into());
                })],
                false,
            )
        }
        7..=8 => Command::Apply(crate::table::ApplyBatch {
            deletes: vec![(
                1,
                ObjectRef {
                    kind: Kind::Service,
                    namespace: "ns".into(),
                    name: service,
                },
            )],
            ..Default::default()
        }),
        9..=10 => {
            let ready: Vec<(&str, bool)> = names.iter().map(|n| (*n, rng.below(2) == 0)).collect();
            batch(vec![slice("ns", &service, &ready)], false)
        }
        11 => {
            let ifs = [vec!["eth0"], vec!["eth1"], vec!["eth0", "eth1"]][rng.below(3) as usize]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let excluded = (rng.below(5) == 0).then(|| "test".to_string());
            let zone = ["1", "2"][rng.below(2) as usize];
            let facts = NodeFacts {
                name: node_name.into(),
                raft_id: names.iter().position(|n| *n == node_name).unwrap() as u64 + 1,
                labels: [("zone".to_string(), zone.to_string())].into(),
                interfaces: ifs,
                excluded,
            };
            Command::RegisterNode { facts, now_ms: 1 }
        }
        12..=13 => Command::Drain {
            node: node_name.into(),
            drain: rng.below(2) == 0,
            now_ms: 1,
        },
        14..=15 => match t.addresses.keys().nth(rng.below(8) as usize) {
            Some(vip) => Command::MoveVip {
                vip: *vip,
                node: node_name.into(),
                now_ms: 1,
            },
            None => Command::EventsPublished { upto: 0 },
        },
        16 => {
            let zone = ["1", "2"][rng.below(2) as usize];
            let team = ["x", "y"][rng.below(2) as usize];
            let restrict = rng.below(2) == 0;
            batch(
                vec![l2("all", |s| {
                    if restrict {
                        s.node_selectors = vec![selector_on("zone", zone)];
                        s.service_selectors = vec![selector_on("team", team)];
                        s.interfaces = vec!["eth0".into()];
                    }
                })],
                false,
            )
        }
        _ => Command::EventsPublished { upto: 0 },
    }
}

fn selector_on(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: [(key.to_string(), value.to_string())].into(),
        ..Default::default()
    }
}

#[test]
fn planning_what_changed_equals_planning_every_vip() {
    let seed = std::env::var("RAFTLB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(11, |d| d.as_nanos() as u64)
        });
    eprintln!("planning_what_changed: RAFTLB_SEED={seed}");
    let mut rng = Rng(seed);
    let mut plans = 0;
    let mut assignments = 0;
    let (mut examined, mut total) = (0, 0);
    for run in 0..40 {
        let mut t = cluster(0);
        node(&mut t, "d", 4, &[("zone", "2")], &["eth1"]);
        // The applied index of the last plan committed (or found empty).
        let mut since: Option<u64> = None;
        for step in 0..120 {
            let cmd = random_ownership_command(&mut rng, &t);
            t.apply(t.log_index + 1, &cmd);
            let context = format!("seed {seed} run {run} step {step} after {cmd:?}");
            assert_index_in_step(&t, &context);
            if rng.below(3) != 0 {
                continue;
            }
            // The leader plans, with liveness changes it is about to commit.
            let mut liveness: Vec<(String, bool)> = Vec::new();
            for n in ["a", "b", "c", "d"] {
                if rng.below(6) == 0 {
                    liveness.push((n.to_string(), rng.below(2) == 0));
                }
            }
            let confirm = rng.below(2) == 0;
            let confirmed = |_: &IpAddr, _: &Released| confirm;
            let every = plan_changes(&t, &liveness, None, &confirmed);
            let changed = plan_changes(&t, &liveness, since, &confirmed);
            assert_eq!(changed.assignments, every.assignments, "{context}");
            assert!(changed.examined <= every.examined);
            examined += changed.examined;
            total += every.examined;
            let every = every.assignments;
            plans += 1;
            assignments += every.len();
            let applied = t.log_index;
            t.apply(
                t.log_index + 1,
                &Command::Ownership(OwnershipBatch {
                    leader: None,
                    liveness,
                    assignments: every,
                    now_ms: 3,
                }),
            );
            since = Some(applied);
        }
    }
    eprintln!("planning_what_changed: {plans} plans, {assignments} assignments compared; {examined} VIPs examined of {total}");
    assert!(assignments > 100, "the streams must move VIPs around");
}

#[test]
fn a_restored_table_answers_all_to_readers_from_before() {
    let mut t = cluster(3);
    settle(&mut t, true);
    let at = t.log_index;
    assert!(matches!(t.changes_since(Some(at)), Changes::Some { .. }));
    let mut restored = t.clone();
    restored.restored(at);
    assert_eq!(restored.changes_since(Some(at - 1)), Changes::All);
    assert_eq!(restored.changes_since(Some(at)), t.changes_since(Some(at)));
    assert_eq!(restored.owned_by("a"), t.owned_by("a"));
}

#[test]
fn a_vip_record_with_boxed_rare_fields_encodes_as_before() {
    // The shape logs and snapshots were written with.
    #[derive(serde::Serialize)]
    struct Before {
        owner: Option<String>,
        epoch: u64,
        since_ms: u64,
        released: Option<Released>,
        move_to: Option<String>,
    }
    let before = Before {
        owner: None,
        epoch: 7,
        since_ms: 9,
        released: Some(Released {
            node: "a".into(),
            index: 41,
        }),
        move_to: Some("b".into()),
    };
    let now = VipRecord {
        owner: None,
        epoch: 7,
        since_ms: 9,
        released: Some(Box::new(Released {
            node: "a".into(),
            index: 41,
        })),
        move_to: Some("b".into()),
    };
    let bytes = crate::codec::encode(&before).unwrap();
    assert_eq!(crate::codec::encode(&now).unwrap(), bytes);
    assert_eq!(crate::codec::decode::<VipRecord>(&bytes).unwrap(), now);
}

#[test]
fn an_operators_command_names_them_in_its_events_and_acts_as_itself() {
    let drain = Command::Drain {
        node: "b".into(),
        drain: true,
        now_ms: 5,
    };
    let mut plain = cluster(3);
    let mut signed = cluster(3);
    let a = plain.apply(90, &drain);
    let b = signed.apply(
        90,
        &Command::By {
            user: "alice".into(),
            command: Box::new(drain.clone()),
        },
    );
    assert_eq!(a, b);
    assert_eq!(a, Response::Ok);
    let messages = |t: &AllocationTable| -> Vec<String> {
        t.events().iter().map(|e| e.message.clone()).collect()
    };
    let (p, s) = (messages(&plain), messages(&signed));
    assert_eq!(p.len(), s.len());
    // The events before the command are alike; each the drain caused names alice.
    let named = p
        .iter()
        .zip(&s)
        .filter(|(p, s)| {
            if p != s {
                assert_eq!(**s, format!("{p} (by alice)"));
            }
            p != s
        })
        .count();
    assert!(named >= 1, "the drain caused no event");
    let drained = signed
        .events()
        .iter()
        .rev()
        .find(|e| e.reason == "NodeDrained")
        .expect("the node's event");
    assert!(drained.message.ends_with(" (by alice)"), "{drained:?}");
    // Later commands that are not the operator's carry no name.
    let n = signed.events().len();
    ok(&mut signed, drain_undo());
    assert!(signed.events().len() > n);
    assert!(signed
        .events()
        .iter()
        .skip(n)
        .all(|e| !e.message.contains("(by ")));
}

fn drain_undo() -> Command {
    Command::Drain {
        node: "b".into(),
        drain: false,
        now_ms: 6,
    }
}
