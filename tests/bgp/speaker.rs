//! raftlb's BGP session (the `BgpSession` actor run by `raftlb-labd speak`, no Raft) against
//! BIRD 2, FRR 8 and GoBGP 3 in the namespace lab. The routers' RIBs are the judge: prefixes,
//! next hops (IPv6 over MP-BGP on an IPv4 session), communities, large communities,
//! LOCAL_PREF on iBGP, packing, withdrawal, and a Cease that ends the session cleanly.
//!
//! Needs root and bird2, frr and gobgpd (installed by .ci/run).

use std::time::Duration;

use raftlb_chaos::lab::{Announcer, Lab};
use raftlb_chaos::routers::{Router, RouterKind};

const ROUTER_ASN: u32 = 64512;
const N: usize = 1000;

fn count(router: &Router, ipv6: bool) -> anyhow::Result<usize> {
    Ok(router.paths(ipv6)?.len())
}

fn speaker_against(kind: RouterKind, node_asn: u32) -> anyhow::Result<()> {
    let lab = Lab::build(
        1,
        Announcer::Raftlb {
            profile: "default".into(),
        },
    )?;
    let router = lab.router(kind, ROUTER_ASN, node_asn)?;
    let node = lab.nodes[0].clone();
    let (my_asn, peer_asn) = (node_asn.to_string(), ROUTER_ASN.to_string());
    let mut speaker = lab.speaker(
        "n1",
        &[
            "--my-asn",
            &my_asn,
            "--peer-asn",
            &peer_asn,
            "--count",
            &N.to_string(),
            "--count6",
            "2",
            "--next-hop-v6",
            &node.ip6,
            "--community",
            "64512:7",
            "--large",
            "64512:1:2",
            "--local-pref",
            "250",
        ],
    )?;
    let within = Duration::from_secs(20);
    router.wait("all IPv4 prefixes", within, |r| {
        Ok((count(r, false)? == N).then_some(()))
    })?;
    router.wait("both IPv6 prefixes", within, |r| {
        Ok((count(r, true)? == 2).then_some(()))
    })?;
    let v4 = router.paths(false)?;
    assert!(
        v4.iter().all(|p| p.next_hop == node.ip),
        "{}: next hops {:?}",
        kind.name(),
        v4.iter()
            .map(|p| &p.next_hop)
            .collect::<std::collections::BTreeSet<_>>()
    );
    let one = router.detail("198.18.0.5/32")?;
    assert_eq!(one.len(), 1, "{}: {one:?}", kind.name());
    assert_eq!(
        one[0].communities,
        vec!["64512:7".to_string()],
        "{}",
        kind.name()
    );
    assert_eq!(
        one[0].large_communities,
        vec!["64512:1:2".to_string()],
        "{}",
        kind.name()
    );
    if node_asn == ROUTER_ASN {
        assert_eq!(
            one[0].local_pref,
            Some(250),
            "{}: iBGP LOCAL_PREF",
            kind.name()
        );
    }
    let v6 = router.detail("2001:db8::1/128")?;
    assert_eq!(v6.len(), 1, "{}: {v6:?}", kind.name());
    assert_eq!(v6[0].next_hop, node.ip6, "{}", kind.name());
    // Packed: 1,000 /32s and 2 /128s with one attribute set in at most ⌈1000/800⌉+1 IPv4
    // UPDATEs plus one IPv6 UPDATE.
    let updates: u64 = speaker
        .lines()
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("updates="))
        })
        .filter_map(|v| v.parse().ok())
        .max()
        .unwrap_or(0);
    assert!(
        (1..=4).contains(&updates),
        "{}: {updates} UPDATEs",
        kind.name()
    );

    speaker.command("withdraw")?;
    router.wait("every prefix withdrawn", within, |r| {
        Ok((count(r, false)? == 0 && count(r, true)? == 0).then_some(()))
    })?;
    speaker.command("announce")?;
    router.wait("the prefixes again", within, |r| {
        Ok((count(r, false)? == N).then_some(()))
    })?;
    assert_eq!(
        router.established()?,
        vec![node.ip.clone()],
        "{}",
        kind.name()
    );

    speaker.command("stop maintenance window")?;
    speaker.wait_exit(Duration::from_secs(5))?;
    router.wait("the session closed and its routes gone", within, |r| {
        Ok((r.established()?.is_empty() && count(r, false)? == 0).then_some(()))
    })?;
    Ok(())
}

#[test]
fn bird_learns_prefixes_next_hops_and_communities_over_ebgp() -> anyhow::Result<()> {
    speaker_against(RouterKind::Bird, 64513)
}

#[test]
fn frr_learns_them_over_ibgp_with_local_pref() -> anyhow::Result<()> {
    speaker_against(RouterKind::Frr, ROUTER_ASN)
}

#[test]
fn gobgp_learns_them_over_ebgp() -> anyhow::Result<()> {
    speaker_against(RouterKind::Gobgp, 64513)
}

#[test]
fn bird_learns_ipv6_prefixes_over_an_ipv6_session() -> anyhow::Result<()> {
    let lab = Lab::build(
        1,
        Announcer::Raftlb {
            profile: "default".into(),
        },
    )?;
    let router = lab.router(RouterKind::Bird, ROUTER_ASN, 64513)?;
    let node = lab.nodes[0].clone();
    let _speaker = lab.speaker(
        "n1",
        &[
            "--peer",
            "fd00:77::64",
            "--my-asn",
            "64513",
            "--peer-asn",
            &ROUTER_ASN.to_string(),
            "--count6",
            "5",
            "--community",
            "64512:7",
        ],
    )?;
    router.wait("five IPv6 prefixes", Duration::from_secs(20), |r| {
        Ok((count(r, true)? == 5).then_some(()))
    })?;
    let paths = router.detail("2001:db8::4/128")?;
    assert_eq!(paths.len(), 1, "{paths:?}");
    // The next hop is the session's own IPv6 address.
    assert_eq!(paths[0].next_hop, node.ip6);
    assert_eq!(paths[0].communities, vec!["64512:7".to_string()]);
    assert_eq!(router.established()?, vec![node.ip6.clone()]);
    Ok(())
}
