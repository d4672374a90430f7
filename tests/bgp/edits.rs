//! Configuration edits against live sessions, BIRD 2 as the judge: MetalLB's own BGP examples
//! apply unchanged (addresses adapted to the lab), a hundred advertisement edits reset no
//! session, and an edit of what the OPEN carries resets exactly the sessions it concerns.
//!
//! Needs root and bird2 (installed by .ci/run).

use std::time::Duration;

use raftlb_chaos::lab::{Lab, VIP4};
use raftlb_chaos::routers::{Router, RouterKind};

const WITHIN: Duration = Duration::from_secs(30);

/// MetalLB's documentation (configuration/_advanced_bgp_configuration.md and
/// configuration/_index.md): the `sample` peer, the `first-pool` pool, the spec-less
/// advertisement and the `vpn-only` community alias, with the lab's addresses.
fn metallb_examples() -> String {
    format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: sample\n  namespace: metallb-system\n\
         spec:\n  myASN: 64500\n  peerASN: 64501\n  peerAddress: 10.77.0.100\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: first-pool\n  namespace: metallb-system\n\
         spec:\n  addresses:\n  - {VIP4}-{VIP4}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: example\n  namespace: metallb-system\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata:\n  name: communities\n  namespace: metallb-system\n\
         spec:\n  communities:\n  - name: vpn-only\n    value: 1234:1\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: local\n  namespace: metallb-system\n\
         spec:\n  ipAddressPools:\n  - first-pool\n  communities:\n  - vpn-only\n"
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
     spec: {type: LoadBalancer, ports: [{port: 8080}]}\n";

fn paths_with(router: &Router, community: &str) -> anyhow::Result<usize> {
    Ok(router
        .detail(&format!("{VIP4}/32"))?
        .iter()
        .filter(|p| p.communities.iter().any(|c| c == community))
        .count())
}

#[test]
fn metallb_examples_apply_and_edits_reset_only_what_the_open_carries() -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    let router = lab.router(RouterKind::Bird, 64501, 64500)?;
    lab.start_cluster()?;
    lab.apply(&metallb_examples())?;
    lab.apply(SERVICE)?;
    router.wait("the VIP from all three nodes with vpn-only", WITHIN, |r| {
        Ok((paths_with(r, "1234:1")? == 3).then_some(()))
    })?;

    // A hundred advertisement edits: UPDATEs only.
    let before = router.sessions_since()?;
    assert_eq!(before.len(), 3, "{before:?}");
    for i in 0..100 {
        lab.apply(&format!(
            "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: local}}\n\
             spec: {{ipAddressPools: [first-pool], communities: [vpn-only, \"64500:{i}\"]}}\n"
        ))?;
    }
    router.wait("the last edit's community", WITHIN, |r| {
        Ok((paths_with(r, "64500:99")? == 3).then_some(()))
    })?;
    assert_eq!(
        router.sessions_since()?,
        before,
        "an advertisement edit reset a session"
    );

    // Two peers for the same router, one per group of nodes: n1's session moves to the new
    // peer, n2's and n3's stay as they are.
    let peers = |hold_n1: &str, asn_n1: u32| {
        format!(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: sample}}\n\
             spec: {{myASN: 64500, peerASN: 64501, peerAddress: 10.77.0.100, nodeSelectors: \
             [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [n2, n3]}}]}}]}}\n---\n\
             apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: sample-n1}}\n\
             spec: {{myASN: {asn_n1}, peerASN: 64501, peerAddress: 10.77.0.100, holdTime: {hold_n1}, \
             nodeSelectors: [{{matchLabels: {{kubernetes.io/hostname: n1}}}}]}}\n"
        )
    };
    lab.apply(&peers("9s", 64500))?;
    let split = router.wait("n1 on its own peer, n2 and n3 untouched", WITHIN, |r| {
        let now = r.sessions_since()?;
        Ok((now.len() == 3
            && now.get("10.77.0.11") != before.get("10.77.0.11")
            && now.get("10.77.0.12") == before.get("10.77.0.12")
            && now.get("10.77.0.13") == before.get("10.77.0.13"))
        .then_some(now))
    })?;
    // An edit of what the OPEN carries (hold time) resets exactly that session, once.
    lab.apply(&peers("6s", 64500))?;
    router.wait("n1's session reset, the others not", WITHIN, |r| {
        let now = r.sessions_since()?;
        Ok((now.len() == 3
            && now.get("10.77.0.11") != split.get("10.77.0.11")
            && now.get("10.77.0.12") == split.get("10.77.0.12")
            && now.get("10.77.0.13") == split.get("10.77.0.13"))
        .then_some(()))
    })?;
    let sessions = lab.ctl(&["get", "bgp"])?;
    let sessions = sessions.as_array().cloned().unwrap_or_default();
    let downs = |node: &str, peer: &str| {
        sessions
            .iter()
            .find(|s| s["node"] == node && s["peer"] == peer)
            .map(|s| (s["downs"].as_u64(), s["holdTime"].as_u64()))
    };
    assert_eq!(
        downs("n1", "sample-n1"),
        Some((Some(1), Some(6))),
        "{sessions:?}"
    );
    assert_eq!(
        downs("n2", "sample"),
        Some((Some(0), Some(9))),
        "{sessions:?}"
    );
    assert_eq!(
        downs("n3", "sample"),
        Some((Some(0), Some(9))),
        "{sessions:?}"
    );
    router.wait("three paths after the reset", WITHIN, |r| {
        Ok((paths_with(r, "64500:99")? == 3).then_some(()))
    })?;

    // An ASN edit: n1 now says AS 64510, which the router does not expect. n1's session is
    // reset (and BIRD refuses the new OPEN); n2's and n3's are not. Back to 64500, n1 returns.
    let before = router.sessions_since()?;
    let others_untouched = |now: &std::collections::BTreeMap<String, String>| {
        now.get("10.77.0.12") == before.get("10.77.0.12")
            && now.get("10.77.0.13") == before.get("10.77.0.13")
    };
    lab.apply(&peers("6s", 64510))?;
    router.wait("n1's session gone, the others untouched", WITHIN, |r| {
        let now = r.sessions_since()?;
        Ok((!now.contains_key("10.77.0.11") && others_untouched(&now)).then_some(()))
    })?;
    lab.apply(&peers("6s", 64500))?;
    router.wait("n1 back, the others still untouched", WITHIN, |r| {
        let now = r.sessions_since()?;
        Ok((now.contains_key("10.77.0.11") && others_untouched(&now)).then_some(()))
    })?;
    router.wait("three paths again", WITHIN, |r| {
        Ok((paths_with(r, "64500:99")? == 3).then_some(()))
    })?;
    Ok(())
}
