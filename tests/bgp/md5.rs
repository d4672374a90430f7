//! TCP-MD5 (RFC 2385) with BIRD 2 and FRR 8 as the router: sessions whose BGPPeer has the
//! router's password come up, a wrong password never does (the kernel drops its segments),
//! and correcting it brings the session up.
//!
//! Needs root, bird2 and frr (installed by .ci/run).

use std::collections::BTreeSet;
use std::time::Duration;

use raftlb_chaos::lab::{Lab, VIP4};
use raftlb_chaos::routers::RouterKind;

const WITHIN: Duration = Duration::from_secs(30);

/// `good` (n1, n2) with the router's password, `n3` with `n3_password`.
fn config(n3_password: &str) -> String {
    let peer = |name: &str, nodes: &str, password: &str| {
        format!(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: {name}}}\n\
             spec: {{myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, password: {password}, \
             nodeSelectors: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{nodes}]}}]}}]}}\n---\n"
        )
    };
    format!(
        "{}{}apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab}}\n\
         spec: {{addresses: [{VIP4}/32]}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: lab}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
         spec: {{type: LoadBalancer, ports: [{{port: 8080}}]}}\n",
        peer("good", "n1, n2", "s3cret-Pa55"),
        peer("n3", "n3", n3_password),
    )
}

fn md5_against(kind: RouterKind) -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    let router = lab.router_with_password(kind, 64512, 64513, "s3cret-Pa55")?;
    lab.start_cluster()?;
    lab.apply(&config("wrong-one"))?;
    let good: BTreeSet<String> = lab.nodes[..2].iter().map(|n| n.ip.clone()).collect();
    router.wait("n1 and n2 with the right password", WITHIN, |r| {
        Ok((r.next_hops(&format!("{VIP4}/32"))? == good).then_some(()))
    })?;
    // n3 keeps trying (connect retry 2 s, backoff) and never gets through.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        router.next_hops(&format!("{VIP4}/32"))?,
        good,
        "{}",
        kind.name()
    );
    assert!(
        !router.established()?.contains(&lab.nodes[2].ip),
        "{}: n3 came up with a wrong password",
        kind.name()
    );
    let sessions = lab.ctl(&["get", "bgp"])?;
    let n3 = sessions
        .as_array()
        .and_then(|a| a.iter().find(|s| s["node"] == "n3").cloned())
        .unwrap_or_default();
    assert_ne!(n3["state"], "Established", "{n3}");
    // The right password: n3 comes up.
    lab.apply(&config("s3cret-Pa55"))?;
    let all: BTreeSet<String> = lab.nodes.iter().map(|n| n.ip.clone()).collect();
    router.wait("n3 with the corrected password", WITHIN, |r| {
        Ok((r.next_hops(&format!("{VIP4}/32"))? == all).then_some(()))
    })?;
    Ok(())
}

#[test]
fn bird_takes_the_right_password_only() -> anyhow::Result<()> {
    md5_against(RouterKind::Bird)
}

#[test]
fn frr_takes_the_right_password_only() -> anyhow::Result<()> {
    md5_against(RouterKind::Frr)
}
