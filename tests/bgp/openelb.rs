//! OpenELB's BGP objects in the lab: `examples/openelb/bgp.yaml` (OpenELB's BgpConf and
//! BgpPeer samples, a bgp Eip and two Services) applied with its addresses moved onto the lab,
//! BIRD 2 as the router and the judge. The BgpConf's `listenPort: 17900` is where the nodes
//! accept BIRD's own connections.
//!
//! Needs root and bird2 (installed by .ci/run).

use std::collections::BTreeSet;
use std::time::Duration;

use raftlb_chaos::lab::{Lab, VIP4};
use raftlb_chaos::routers::RouterKind;

const WITHIN: Duration = Duration::from_secs(30);

/// The example with its addresses on the lab: the router at 10.77.0.100, the Eip's three
/// addresses from the lab's VIP; `extra` goes into the BgpPeer's spec.
fn example(extra: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/openelb/bgp.yaml"
    ))?;
    let (a, b, c, d) = {
        let o: Vec<u8> = VIP4.split('.').map(|p| p.parse().unwrap()).collect();
        (o[0], o[1], o[2], o[3])
    };
    let moved = text
        .replace(
            "neighborAddress: 172.22.0.2",
            "neighborAddress: 10.77.0.100",
        )
        .replace(
            "address: 139.198.121.228-139.198.121.230",
            &format!("address: {VIP4}-{a}.{b}.{c}.{}", d + 2),
        )
        .replace("  afiSafis:\n", &format!("{extra}  afiSafis:\n"));
    anyhow::ensure!(moved != text, "the example changed shape");
    Ok(moved)
}

#[test]
fn openelbs_bgpconf_and_bgppeer_samples_apply_and_peer() -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    // BIRD is OpenELB's sample router (AS 50000, the nodes AS 50001) and dials every node on
    // the BgpConf's listenPort.
    let nodes: Vec<String> = lab.nodes.iter().map(|n| n.ip.clone()).collect();
    let router = lab.start_router_with(RouterKind::Bird, 50000, 50001, |c| {
        c.active = nodes.clone();
        c.active_port = Some(17900);
    })?;
    let all: BTreeSet<String> = nodes.iter().cloned().collect();
    lab.start_cluster()?;

    lab.apply(&example("")?)?;
    let second = {
        let o: Vec<u8> = VIP4.split('.').map(|p| p.parse().unwrap()).collect();
        format!("{}.{}.{}.{}/32", o[0], o[1], o[2], o[3] + 1)
    };
    for prefix in [format!("{VIP4}/32"), second] {
        router.wait(&format!("{prefix} from every node"), WITHIN, |r| {
            Ok((r.next_hops(&prefix)? == all).then_some(()))
        })?;
    }
    for s in lab.bgp_sessions()? {
        assert_eq!(
            (
                s["peer"].as_str(),
                s["state"].as_str(),
                s["peerASN"].as_u64()
            ),
            (Some("bgppeer-sample"), Some("Established"), Some(50000)),
            "{s}"
        );
    }

    // raftlb now dials a port where BIRD does not listen: the sessions that come back are the
    // ones BIRD opened to port 17900, so the nodes listen where the BgpConf says.
    lab.apply(&example("  transport: {remotePort: 1179}\n")?)?;
    router.wait(
        "every node back over BIRD's connections to port 17900",
        WITHIN,
        |r| {
            let inbound = lab
                .bgp_sessions()?
                .iter()
                .filter(|s| s["state"] == "Established" && s["connection"] == "inbound")
                .count();
            Ok((inbound == 3 && r.next_hops(&format!("{VIP4}/32"))? == all).then_some(()))
        },
    )?;

    // A field raftlb does not support is refused by name, and nothing changes.
    let err = lab
        .apply(&example("  transport: {passiveMode: true}\n")?)
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.transport.passiveMode"), "{err}");
    assert_eq!(router.next_hops(&format!("{VIP4}/32"))?, all);
    Ok(())
}
