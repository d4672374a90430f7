//! Graceful restart (RFC 4724) with BIRD 2 as the router (`graceful restart on`, ECMP routes
//! installed in the client's kernel): a raftlb node killed with SIGKILL and started again
//! keeps its path at the router as stale meanwhile (forwarding preserved: the node still
//! serves), comes back with the restart bit and sends End-of-RIB; a TCP probe every 10 ms
//! through the router loses nothing.
//!
//! Needs root and bird2 (installed by .ci/run).

use std::time::{Duration, Instant};

use raftlb_chaos::lab::{probe_hits, Lab, VIP4};
use raftlb_chaos::routers::RouterKind;

const WITHIN: Duration = Duration::from_secs(30);

const CONFIG: &str = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: tor}\n\
     spec: {myASN: 64513, peerASN: 64512, peerAddress: 10.77.0.100, holdTime: 9s, \
     enableGracefulRestart: true}\n---\n\
     apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lab}\n\
     spec: {addresses: [10.77.0.240/32]}\n---\n\
     apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: lab}\n---\n\
     apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
     spec: {type: LoadBalancer, ports: [{port: 8080}]}\n";

#[test]
fn a_node_restarted_with_graceful_restart_loses_no_probe() -> anyhow::Result<()> {
    let mut lab = Lab::raftlb(3)?;
    let router = lab.router_with_graceful_restart(RouterKind::Bird, 64512, 64513)?;
    lab.start_cluster()?;
    lab.apply(CONFIG)?;
    let all = lab.node_ips();
    router.wait_next_hops(&format!("{VIP4}/32"), &all, WITHIN)?;
    lab.wait_client_ecmp(VIP4, WITHIN)?;
    let n1 = lab.nodes[0].ip.clone();
    let since = router.sessions_since()?;
    let probe = lab.probe(VIP4, 10, 8_000)?;
    std::thread::sleep(Duration::from_millis(500));
    lab.kill("n1");
    std::thread::sleep(Duration::from_secs(2));
    // Down at BIRD, yet its path is kept (stale) and still in the client's route.
    assert!(
        !router.established()?.contains(&n1),
        "n1's session is still up"
    );
    assert_eq!(
        router.next_hops(&format!("{VIP4}/32"))?,
        all,
        "n1's path was not kept through the restart"
    );
    assert!(lab.client_route(VIP4)?.contains(&n1));
    let restart = Instant::now();
    lab.start("n1")?;
    router.wait("n1 established again", WITHIN, |r| {
        let now = r.sessions_since()?;
        Ok((now.contains_key(&n1) && now.get(&n1) != since.get(&n1)).then_some(()))
    })?;
    router.wait("BIRD's graceful restart over", WITHIN, |r| {
        let log = r.log();
        Ok(log.contains("Neighbor graceful restart done").then_some(()))
    })?;
    eprintln!(
        "restart: n1 back and its graceful restart done {} ms after the start",
        restart.elapsed().as_millis()
    );
    assert_eq!(router.next_hops(&format!("{VIP4}/32"))?, all);
    let lines = probe.finish()?;
    let ok = probe_hits(&lines).len();
    let failed = lines.iter().filter(|l| l.contains(" fail")).count();
    eprintln!("restart: probes ok {ok}, failed {failed}");
    assert!(ok > 300, "only {ok} probes answered");
    assert_eq!(failed, 0, "probes lost during the restart");
    let log = router.log();
    assert!(
        log.contains("End-of-RIB") || log.contains("END-OF-RIB"),
        "BIRD logged no End-of-RIB from n1:\n{log}"
    );
    Ok(())
}
