//! Who opens the connection: BIRD 2 dials every node itself (configured neighbours, not
//! passive) while raftlb's sessions dial BIRD. raftlb accepts the router's connections on
//! port 179 and resolves collisions (RFC 4271 §6.8); BIRD's view of its neighbours and
//! `ctl get bgp` are the judge.
//!
//! Needs root and bird2 (installed by .ci/run).

use std::collections::BTreeSet;
use std::time::Duration;

use raftlb_chaos::lab::{Lab, VIP4};
use raftlb_chaos::routers::RouterKind;
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(30);

fn config(peer_port: u16) -> String {
    format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: tor}}\n\
         spec: {{myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, peerPort: {peer_port}}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab}}\n\
         spec: {{addresses: [{VIP4}/32]}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: lab}}\n\
         spec: {{ipAddressPools: [lab]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
         spec: {{type: LoadBalancer, ports: [{{port: 8080}}]}}\n"
    )
}

/// (event type, state, downs) of each line `ctl get bgp -w -o json` printed for `node`.
fn watched(node: &str, seen: &[Value]) -> Vec<(String, String, u64)> {
    seen.iter()
        .filter(|e| e["object"]["node"] == node)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["object"]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["object"]["downs"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn the_routers_connections_are_accepted_and_collisions_leave_one_session_per_node(
) -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    let router = lab.router_dialling(RouterKind::Bird, 64512, 64513)?;
    let all: BTreeSet<String> = lab.nodes.iter().map(|n| n.ip.clone()).collect();
    lab.start_cluster()?;
    let mut watch = lab.ctl_watch(&["get", "bgp", "-w"])?;

    // raftlb dials a port where BIRD does not listen: every session that comes up is one
    // BIRD opened to the node's listener.
    lab.apply(&config(1179))?;
    router.wait(
        "a path from every node over BIRD's own connections",
        WITHIN,
        |r| Ok((r.next_hops(&format!("{VIP4}/32"))? == all).then_some(())),
    )?;
    for s in lab.bgp_sessions()? {
        assert_eq!(
            (s["state"].as_str(), s["connection"].as_str()),
            (Some("Established"), Some("inbound")),
            "{s}"
        );
    }

    watch.until(
        "every session Established before the edit",
        WITHIN,
        |seen| {
            ["n1", "n2", "n3"].iter().all(|n| {
                watched(n, seen)
                    .iter()
                    .any(|c| c.1 == "Established" && c.2 == 0)
            })
        },
    )?;

    // Both sides dial: each pair of connections collapses to one session per node, which
    // then stays up.
    lab.apply(&config(179))?;
    let settled = router.wait("one established session per node", WITHIN, |r| {
        let est = r.established()?;
        let views = lab.bgp_sessions()?;
        let up = views
            .iter()
            .filter(|s| s["state"] == "Established" && s["downs"] == 1)
            .count();
        Ok(
            (est.len() == 3 && up == 3 && r.next_hops(&format!("{VIP4}/32"))? == all)
                .then_some(views),
        )
    })?;
    let directions: Vec<(String, String)> = settled
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap_or_default().to_string(),
                s["connection"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    eprintln!("connections after the port edit: {directions:?}");
    // `ctl get bgp -w` printed each session when it appeared, then its changes: up before
    // the edit, up again after it.
    let seen = watch.until("every session up again after the edit", WITHIN, |seen| {
        ["n1", "n2", "n3"].iter().all(|n| {
            watched(n, seen)
                .iter()
                .any(|c| c.1 == "Established" && c.2 == 1)
        })
    })?;
    for n in ["n1", "n2", "n3"] {
        let c = watched(n, seen);
        assert_eq!(c.first().map(|c| c.0.as_str()), Some("ADDED"), "{n}: {c:?}");
        assert!(c[1..].iter().all(|c| c.0 == "MODIFIED"), "{n}: {c:?}");
        let up_before = c.iter().position(|c| c.1 == "Established" && c.2 == 0);
        let up_after = c.iter().position(|c| c.1 == "Established" && c.2 == 1);
        assert!(up_before < up_after, "{n}: {c:?}");
    }
    drop(watch);
    let since = router.sessions_since()?;
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        router.sessions_since()?,
        since,
        "a session flapped after the collision"
    );
    assert_eq!(router.established()?.len(), 3);
    for s in lab.bgp_sessions()? {
        assert_eq!(
            (s["state"].as_str(), s["downs"].as_u64()),
            (Some("Established"), Some(1)),
            "{s}"
        );
    }
    Ok(())
}
