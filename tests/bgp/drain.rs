//! Moving traffic off a node without losing it, BIRD 2 as the router (it installs ECMP routes
//! in the client's kernel, and applies RFC 8326 on import: GRACEFUL_SHUTDOWN means
//! LOCAL_PREF 0, so a marked path leaves the ECMP set). A TCP probe every 10 ms from the
//! client is the judge of lost traffic.
//!
//! * `ctl drain n1`: n1's path is marked 65535:0 at once, traffic leaves it, and after the
//!   drain wait (5 s) the path is withdrawn; no probe fails.
//! * SIGTERM: the routes are marked, then the session ends with a Cease carrying the reason
//!   (BIRD logs it) and the path goes.
//!
//! Needs root, bird2 and nftables (installed by .ci/run).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use raftlb_chaos::lab::{probe_hits, Lab, VIP4};
use raftlb_chaos::routers::{Router, RouterKind};

const WITHIN: Duration = Duration::from_secs(30);

const CONFIG: &str = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: tor}\n\
     spec: {myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, holdTime: 9s}\n---\n\
     apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lab}\n\
     spec: {addresses: [10.77.0.240/32]}\n---\n\
     apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: lab}\n---\n\
     apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
     spec: {type: LoadBalancer, ports: [{port: 8080}]}\n";

fn paths(router: &Router) -> anyhow::Result<Vec<(String, bool)>> {
    Ok(router
        .detail(&format!("{VIP4}/32"))?
        .into_iter()
        .map(|p| {
            let gshut = p.communities.iter().any(|c| c == "65535:0");
            (p.next_hop, gshut)
        })
        .collect())
}

fn lab_with_paths() -> anyhow::Result<(Lab, Router, BTreeSet<String>)> {
    let mut lab = Lab::raftlb(3)?;
    let router = lab.router_with_fib(RouterKind::Bird, 64512, 64513)?;
    lab.start_cluster()?;
    lab.apply(CONFIG)?;
    let all = lab.node_ips();
    router.wait_next_hops(&format!("{VIP4}/32"), &all, WITHIN)?;
    lab.wait_client_ecmp(VIP4, WITHIN)?;
    Ok((lab, router, all))
}

#[test]
fn drain_marks_then_withdraws_and_loses_no_probe() -> anyhow::Result<()> {
    let (mut lab, router, all) = lab_with_paths()?;
    let probe = lab.probe(VIP4, 10, 9_000)?;
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    lab.ctl(&["drain", "n1"])?;
    let n1 = lab.nodes[0].ip.clone();
    router.wait("n1's path marked GRACEFUL_SHUTDOWN", WITHIN, |r| {
        Ok(paths(r)?.contains(&(n1.clone(), true)).then_some(()))
    })?;
    let marked = start.elapsed();
    lab.wait("the client's route without n1", WITHIN, |l| {
        let route = l.client_route(VIP4)?;
        Ok((!route.contains(&n1)).then_some(()))
    })?;
    let others: BTreeSet<String> = all.iter().filter(|a| **a != n1).cloned().collect();
    router.wait("n1's path withdrawn after the wait", WITHIN, |r| {
        Ok((r.next_hops(&format!("{VIP4}/32"))? == others).then_some(()))
    })?;
    let withdrawn = start.elapsed();
    let lines = probe.finish()?;
    let ok = probe_hits(&lines).len();
    let failed = lines.iter().filter(|l| l.contains(" fail")).count();
    eprintln!(
        "drain: marked after {} ms, withdrawn after {} ms; probes ok {ok}, failed {failed}",
        marked.as_millis(),
        withdrawn.as_millis()
    );
    assert!(ok > 300, "only {ok} probes answered");
    assert_eq!(failed, 0, "probes lost during the drain");
    assert!(
        withdrawn >= Duration::from_secs(4),
        "withdrawn after {withdrawn:?}, before the 5 s drain wait"
    );
    // Undrain: n1 announces again, unmarked.
    lab.ctl(&["drain", "n1", "--undo"])?;
    router.wait("n1 back unmarked", WITHIN, |r| {
        let p = paths(r)?;
        Ok((p.len() == 3 && p.iter().all(|(_, g)| !g)).then_some(()))
    })?;
    Ok(())
}

#[test]
fn sigterm_ends_the_session_with_a_cease_and_the_path_goes() -> anyhow::Result<()> {
    let (mut lab, router, all) = lab_with_paths()?;
    let probe = lab.probe(VIP4, 10, 4_000)?;
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    lab.terminate("n1")?;
    let n1 = lab.nodes[0].ip.clone();
    let others: BTreeSet<String> = all.iter().filter(|a| **a != n1).cloned().collect();
    router.wait("n1's path gone", WITHIN, |r| {
        Ok((r.next_hops(&format!("{VIP4}/32"))? == others).then_some(()))
    })?;
    let gone = start.elapsed();
    let lines = probe.finish()?;
    let failed = lines.iter().filter(|l| l.contains(" fail")).count();
    eprintln!(
        "SIGTERM: path gone at BIRD after {} ms; probes failed {failed}",
        gone.as_millis()
    );
    assert!(gone < Duration::from_secs(3), "took {gone:?}: not a Cease");
    let log = router.log();
    assert!(
        log.contains("raftlb: node shutting down"),
        "BIRD did not log the Cease's reason:\n{log}"
    );
    Ok(())
}
