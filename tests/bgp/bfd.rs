//! BFD against BIRD 2 (`protocol bfd`, `bfd on` on the BGP sessions), 100 ms × 3: sessions come
//! up from every node; malformed packets and packets that crossed a router (TTL below 255) are
//! discarded and counted; a node cut off silently (its frames dropped at the bridge, no FIN)
//! loses its path within the BFD detection time, long before the 9 s hold time; a remote
//! AdminDown does not take the BGP session down.
//!
//! Needs root, bird2 and nftables (installed by .ci/run).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use raftlb_chaos::lab::{Lab, VIP4};
use raftlb_chaos::routers::RouterKind;
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(30);

const CONFIG: &str = "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: fast}\n\
     spec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}\n---\n\
     apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: tor}\n\
     spec: {myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, holdTime: 9s, bfdProfile: fast}\n---\n\
     apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lab}\n\
     spec: {addresses: [10.77.0.240/32]}\n---\n\
     apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: lab}\n---\n\
     apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
     spec: {type: LoadBalancer, ports: [{port: 8080}]}\n";

/// The BFD view of `node`'s session, from `ctl get bgp`.
fn bfd_of(lab: &Lab, node: &str) -> anyhow::Result<Value> {
    let all = lab.ctl(&["get", "bgp"])?;
    Ok(all
        .as_array()
        .and_then(|a| a.iter().find(|s| s["node"] == node))
        .map(|s| s["bfd"].clone())
        .unwrap_or(Value::Null))
}

/// A valid-looking Control packet from the router (state Up, discriminators given).
fn packet(first_byte: u8, flags: u8, your: u32) -> String {
    format!("{first_byte:02x}{flags:02x}0318000000aa{your:08x}000186a0000186a000000000")
}

#[test]
fn bfd_with_bird_detects_a_silent_cut_and_ignores_what_it_must() -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    let router = lab.router_with_bfd(RouterKind::Bird, 64512, 64513, 100, 3)?;
    lab.start_cluster()?;
    lab.apply(CONFIG)?;
    let all: BTreeSet<String> = lab.nodes.iter().map(|n| n.ip.clone()).collect();
    router.wait("three paths and three BFD sessions Up", WITHIN, |r| {
        let bfd = r.bfd_sessions()?;
        let up = all
            .iter()
            .all(|a| bfd.get(a).map(String::as_str) == Some("Up"));
        Ok((up && r.next_hops(&format!("{VIP4}/32"))? == all).then_some(()))
    })?;
    for n in ["n1", "n2", "n3"] {
        let b = bfd_of(&lab, n)?;
        assert_eq!(b["state"], "Up", "{n}: {b}");
        assert_ne!(b["remoteDiscriminator"], 0, "{n}: {b}");
        assert_eq!(b["txIntervalMs"], 100, "{n}: {b}");
        assert_eq!(b["detectionTimeMs"], 300, "{n}: {b}");
    }

    // Garbage, a bad version, a zero multiplier, and a valid packet with TTL 64 (it crossed
    // a router): all discarded and counted, the session stays Up.
    let n3 = lab.nodes[2].ip.clone();
    let to = format!("{n3}:3784");
    let before = bfd_of(&lab, "n3")?;
    let your = before["localDiscriminator"].as_u64().unwrap_or(0) as u32;
    let zero_mult = packet(0x20, 0xc0, your).replacen("03", "00", 1);
    lab.send_udp(
        &to,
        255,
        &["00", "deadbeef", &packet(0x40, 0xc0, your), &zero_mult],
    )?;
    lab.send_udp(&to, 64, &[&packet(0x20, 0x00, your)])?;
    let after = lab.wait("five discards counted", WITHIN, |l| {
        let b = bfd_of(l, "n3")?;
        let d = b["packetsDiscarded"].as_u64().unwrap_or(0);
        let d0 = before["packetsDiscarded"].as_u64().unwrap_or(0);
        Ok((d >= d0 + 5).then_some(b))
    })?;
    assert_eq!(after["state"], "Up", "{after}");
    assert_eq!(after["downs"], before["downs"], "{after}");
    assert!(
        after["lastDiscard"].as_str().unwrap_or("").contains("TTL"),
        "{after}"
    );

    // n1 is cut off silently: BFD takes its path away at the router, far within the hold
    // time (9 s).
    let since = router.sessions_since()?;
    let cut = Instant::now();
    lab.cut_off("n1")?;
    let others: BTreeSet<String> = all
        .iter()
        .filter(|a| **a != lab.nodes[0].ip)
        .cloned()
        .collect();
    router.wait("n1's path gone", Duration::from_secs(9), |r| {
        Ok((r.next_hops(&format!("{VIP4}/32"))? == others).then_some(()))
    })?;
    let took = cut.elapsed();
    eprintln!(
        "silent cut of n1: path gone at BIRD after {} ms",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}: the hold timer, not BFD, ended it"
    );
    assert!(
        router
            .bfd_sessions()?
            .get(&lab.nodes[0].ip)
            .map(String::as_str)
            != Some("Up"),
        "BIRD still has n1's BFD session Up"
    );
    // The others' sessions were not touched.
    let now = router.sessions_since()?;
    for a in &others {
        assert_eq!(now.get(a), since.get(a), "{a}'s session was reset");
    }
    // n1's own side saw the failure and ended its BGP session too.
    let n1 = lab.wait("n1's BFD down on its side", WITHIN, |l| {
        let b = bfd_of(l, "n1")?;
        Ok((b["state"] != "Up" && b["downs"] == 1).then_some(b))
    })?;
    assert_eq!(n1["diag"], "control detection time expired", "{n1}");
    lab.reconnect()?;
    router.wait("n1 back", WITHIN, |r| {
        Ok((r.next_hops(&format!("{VIP4}/32"))? == all).then_some(()))
    })?;

    Ok(())
}

/// RFC 5882 §3.2: a remote AdminDown is not a path failure. BIRD carries BGP (without BFD);
/// FRR's bfdd, at the same address, runs BFD with every node. Shutting bfdd's peer down sends
/// AdminDown: raftlb's BFD session goes Down and its BGP session stays up. Then a peer that
/// stops answering (bfdd killed) is a failure: the BGP session goes down with it.
#[test]
fn frr_bfdd_admin_down_leaves_the_bgp_session_up_and_its_silence_does_not() -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    let router = lab.router(RouterKind::Bird, 64512, 64513)?;
    let bfdd = lab.frr_bfd(100, 3)?;
    lab.start_cluster()?;
    lab.apply(CONFIG)?;
    let all = lab.node_ips();
    router.wait_next_hops(&format!("{VIP4}/32"), &all, WITHIN)?;
    lab.wait("bfdd's three sessions up", WITHIN, |_| {
        let peers = bfdd.peers()?;
        Ok(all
            .iter()
            .all(|a| peers.get(a).map(String::as_str) == Some("up"))
            .then_some(()))
    })?;
    let n2 = lab.nodes[1].ip.clone();
    let since = router.settled_sessions(3, WITHIN)?;
    bfdd.shutdown(&n2, "10.77.0.100", true)?;
    let b = lab.wait(
        "n2's BFD session Down after bfdd's AdminDown",
        WITHIN,
        |l| {
            let b = bfd_of(l, "n2")?;
            Ok((b["state"] == "Down").then_some(b))
        },
    )?;
    assert_eq!(b["diag"], "neighbor signaled session down", "{b}");
    assert_eq!(b["remoteState"], "AdminDown", "{b}");
    std::thread::sleep(Duration::from_secs(2));
    let now = router.sessions_since()?;
    assert_eq!(
        now,
        since,
        "an AdminDown reset a BGP session; BIRD:\n{}\n{}",
        router.cli_text(&["show", "protocols"])?,
        router.log()
    );
    assert_eq!(router.next_hops(&format!("{VIP4}/32"))?, all);
    let sessions = lab.ctl(&["get", "bgp"])?;
    for s in sessions.as_array().into_iter().flatten() {
        assert_eq!(
            (&s["state"], &s["downs"]),
            (&Value::from("Established"), &Value::from(0)),
            "{s}"
        );
    }
    bfdd.shutdown(&n2, "10.77.0.100", false)?;
    lab.wait("n2's BFD Up again", WITHIN, |l| {
        Ok((bfd_of(l, "n2")?["state"] == "Up").then_some(()))
    })?;

    // bfdd gone without a word: every raftlb node detects it and ends its BGP session (which
    // then comes back: BIRD is still there).
    drop(bfdd);
    lab.wait("every BGP session ended by BFD", WITHIN, |l| {
        let sessions = l.ctl(&["get", "bgp"])?;
        let ended = sessions
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["downs"].as_u64() >= Some(1)
                    && s["bfd"]["state"] == "Down"
                    && s["bfd"]["diag"] == "control detection time expired"
            })
            .count();
        Ok((ended == 3).then_some(()))
    })?;
    Ok(())
}
