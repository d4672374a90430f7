//! BGP mode end to end: three raftlb peers in the namespace lab, BIRD 2 as the router in the
//! client namespace. MetalLB's objects go in through `raftlb ctl apply`; BIRD's RIB and the
//! client kernel's routes are the judge.
//!
//! Needs root and bird2 (installed by .ci/run).

use std::collections::BTreeSet;
use std::time::Duration;

use raftlb_chaos::lab::{Lab, VIP4, VIP6};
use raftlb_chaos::routers::RouterKind;

const WITHIN: Duration = Duration::from_secs(30);

fn config(community: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: tor}}\n\
         spec: {{myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, holdTime: 9s, \
         dualStackAddressFamily: true}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab}}\n\
         spec: {{addresses: [{VIP4}/32, {VIP6}/128]}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: lab}}\n\
         spec: {{ipAddressPools: [lab], communities: [\"{community}\"]}}\n"
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
     spec: {type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], \
     ports: [{port: 8080}]}\n";

fn hops(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The scenario, with `kind` as the router. BIRD also installs the routes in the client's
/// kernel (ECMP), so TCP is checked with it.
fn cluster_against(kind: RouterKind) -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    let fib = kind == RouterKind::Bird;
    let router = if fib {
        lab.router_with_fib(kind, 64512, 64513)?
    } else {
        lab.router(kind, 64512, 64513)?
    };
    lab.start_cluster()?;
    lab.apply(&config("64512:100"))?;
    lab.apply(SERVICE)?;
    let all = hops(&["10.77.0.11", "10.77.0.12", "10.77.0.13"]);
    let v4 = format!("{VIP4}/32");
    let v6 = format!("{VIP6}/128");
    router.wait("three paths for the IPv4 VIP", WITHIN, |r| {
        Ok((r.next_hops(&v4)? == all).then_some(()))
    })?;
    let all6 = hops(&["fd00:77::11", "fd00:77::12", "fd00:77::13"]);
    router.wait("three paths for the IPv6 VIP over MP-BGP", WITHIN, |r| {
        Ok((r.next_hops(&v6)? == all6).then_some(()))
    })?;
    assert!(router
        .detail(&v4)?
        .iter()
        .all(|p| p.communities == vec!["64512:100".to_string()]));
    // `ctl get bgp` shows every node's session as it is: Established, both VIPs sent.
    let sessions = lab.ctl(&["get", "bgp"])?;
    let sessions = sessions.as_array().cloned().unwrap_or_default();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    for s in &sessions {
        assert_eq!(s["state"], "Established", "{s}");
        assert_eq!(s["prefixesSent"], 2, "{s}");
        assert_eq!(s["peerASN"], 64512, "{s}");
        assert_eq!(s["holdTime"], 9, "{s}");
    }
    // `ctl get routes`: per prefix, the nodes that sent it, to which peer, for which Service.
    let routes = lab.ctl(&["get", "routes"])?;
    let routes = routes.as_array().cloned().unwrap_or_default();
    let seen: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| {
            assert_eq!(r["peer"], "tor", "{r}");
            assert_eq!(r["services"], serde_json::json!(["default/web"]), "{r}");
            (
                r["prefix"].as_str().unwrap_or_default().to_string(),
                r["node"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [&v4, &v6]
        .into_iter()
        .flat_map(|p| ["n1", "n2", "n3"].map(|n| (p.clone(), n.to_string())))
        .collect();
    assert_eq!(seen, want, "{routes:?}");

    if fib {
        // The client's kernel got one ECMP route, and connections land on all three nodes.
        let route = lab.client_route(VIP4)?;
        for n in &lab.nodes {
            assert!(
                route.contains(&n.ip),
                "client route {route:?} lacks {}",
                n.ip
            );
        }
        let mut reached = BTreeSet::new();
        for _ in 0..60 {
            if let Some(name) = lab.reach(VIP4)? {
                reached.insert(name);
            }
        }
        assert_eq!(reached.len(), 3, "TCP reached only {reached:?}");
    }

    // An advertisement edit changes the routes, never the sessions.
    let since = router.sessions_since()?;
    assert_eq!(since.len(), 3, "{since:?}");
    assert!(
        since.values().all(|v| !v.is_empty() && v != "null"),
        "{since:?}"
    );
    lab.apply(&config("64512:200"))?;
    router.wait("the new community", WITHIN, |r| {
        let paths = r.detail(&v4)?;
        Ok((paths.len() == 3
            && paths
                .iter()
                .all(|p| p.communities == vec!["64512:200".to_string()]))
        .then_some(()))
    })?;
    assert_eq!(
        router.sessions_since()?,
        since,
        "an advertisement edit reset a session"
    );

    // A node cut off from the other peers (not from the router) loses its lease and is
    // declared down by the leader, and keeps announcing what its table says: unlike layer 2,
    // a second announcer is ECMP, not split brain, and withdrawing would drop the traffic it
    // still serves (README "BGP: who announces what").
    lab.partition("n1", false)?;
    lab.wait("the majority to declare n1 down", WITHIN, |l| {
        let status = l.ctl_except(Some("n1"), &["status"])?;
        let n1 = status["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == "n1").cloned());
        Ok(n1.filter(|n| n["live"] == false).map(|_| ()))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        router.next_hops(&v4)?,
        all,
        "the cut-off node's path went away"
    );
    assert_eq!(
        router.sessions_since()?,
        since,
        "a partition reset a BGP session"
    );
    lab.heal()?;

    // Deleting the Service withdraws it everywhere.
    lab.delete(SERVICE)?;
    router.wait("the VIP withdrawn", WITHIN, |r| {
        Ok((r.detail(&v4)?.is_empty() && r.detail(&v6)?.is_empty()).then_some(()))
    })?;

    // A node killed with SIGKILL loses its path (its kernel closes the session); the others
    // keep theirs.
    lab.apply(SERVICE)?;
    router.wait("three paths again", WITHIN, |r| {
        Ok((r.next_hops(&v4)? == all).then_some(()))
    })?;
    lab.kill("n1");
    router.wait("n1's path gone, the others kept", WITHIN, |r| {
        Ok((r.next_hops(&v4)? == hops(&["10.77.0.12", "10.77.0.13"])).then_some(()))
    })?;
    Ok(())
}

#[test]
fn bird_gets_ecmp_paths_from_every_node_and_they_follow_the_table() -> anyhow::Result<()> {
    cluster_against(RouterKind::Bird)
}

#[test]
fn frr_gets_ecmp_paths_from_every_node_and_they_follow_the_table() -> anyhow::Result<()> {
    cluster_against(RouterKind::Frr)
}

#[test]
fn gobgp_gets_paths_from_every_node_and_they_follow_the_table() -> anyhow::Result<()> {
    cluster_against(RouterKind::Gobgp)
}
