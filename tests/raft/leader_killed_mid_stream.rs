//! 1,000 Services streamed into a 3-peer cluster of real processes; the leader is SIGKILLed in
//! the middle. Every acknowledged allocation must survive, no address may appear twice, and
//! the killed peer must catch up from sled on restart — and, once the log it missed has been
//! purged, from a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use raftlb_chaos::Cluster;
use raftlb_tests::{pool, service};

const SERVICES: usize = 1000;

/// Applies service `i` through any running peer, retrying while a new leader is elected.
/// Returns the acknowledged IP.
async fn apply_service(cluster: &Cluster, up: &[u64], i: usize) -> anyhow::Result<String> {
    let manifest = service("stream", &format!("svc-{i:04}"));
    let mut last = None;
    for attempt in 0..100 {
        let id = up[(i + attempt) % up.len()];
        match cluster.apply(id, &manifest).await {
            Ok(reply) => {
                let s = &reply.services[0];
                anyhow::ensure!(
                    s.state == "Allocated",
                    "svc-{i:04}: {} {}",
                    s.state,
                    s.reason
                );
                return Ok(s.ips[0].clone());
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

fn table_of(services: &[raftlb_proto::admin::Service]) -> BTreeMap<String, Vec<String>> {
    services
        .iter()
        .map(|s| (format!("{}/{}", s.namespace, s.name), s.ips.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_allocations_survive_leader_kill_and_restart() -> anyhow::Result<()> {
    let mut cluster =
        Cluster::start(3, &["--keep-logs", "50", "--snapshot-every", "100000"]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    cluster
        .apply(leader, &pool("stream", &["198.18.0.0/20"]))
        .await?;

    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut up: Vec<u64> = vec![1, 2, 3];
    let mut killed = None;
    for i in 0..SERVICES {
        if i == SERVICES / 3 {
            let l = cluster.wait_leader(Duration::from_secs(10)).await?;
            cluster.kill(l);
            up.retain(|id| *id != l);
            killed = Some(l);
        }
        let ip = apply_service(&cluster, &up, i).await?;
        acked.insert(format!("stream/svc-{i:04}"), ip);
    }
    let killed = killed.expect("a leader was killed");
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    assert_ne!(new_leader, killed, "a new leader took over");

    // Every acknowledged allocation is present, with the acknowledged IP, on every survivor.
    for id in &up {
        let table = table_of(&cluster.services(*id).await?);
        for (key, ip) in &acked {
            assert_eq!(table.get(key), Some(&vec![ip.clone()]), "node {id}: {key}");
        }
    }
    let distinct: BTreeSet<&String> = acked.values().collect();
    assert_eq!(distinct.len(), SERVICES, "no address appears twice");

    // The killed peer restarts and catches up from its sled files plus the log.
    cluster.restart(killed)?;
    let target = cluster.status(new_leader).await?.applied_index;
    cluster
        .wait_applied(killed, target, Duration::from_secs(30))
        .await?;
    let leader_table = table_of(&cluster.services(new_leader).await?);
    assert_eq!(table_of(&cluster.services(killed).await?), leader_table);

    // Now a follower misses more than the leader keeps after a snapshot: it must install one.
    let follower = up
        .iter()
        .copied()
        .find(|id| *id != new_leader)
        .expect("a follower");
    cluster.kill(follower);
    up.retain(|id| *id != follower);
    up.push(killed);
    for i in SERVICES..SERVICES + 200 {
        let ip = apply_service(&cluster, &up, i).await?;
        acked.insert(format!("stream/svc-{i:04}"), ip);
    }
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let mut client = cluster.client(leader).await?;
    let snap = client
        .trigger_snapshot(raftlb_proto::admin::SnapshotRequest {})
        .await?
        .into_inner();
    let purged = raftlb_chaos::eventually("leader purged its log", Duration::from_secs(10), || {
        let cluster = &cluster;
        async move {
            let s = cluster.status(leader).await?;
            Ok(s.purged_index.filter(|p| *p > 0))
        }
    })
    .await?;
    cluster.restart(follower)?;
    let target = cluster.status(leader).await?.applied_index;
    let s = cluster
        .wait_applied(follower, target, Duration::from_secs(30))
        .await?;
    let installed = s.snapshot_index.unwrap_or(0);
    assert!(
        installed >= purged,
        "follower installed a snapshot covering the purged log (snapshot {installed}, purged {purged}, leader snapshot {})",
        snap.last_log_index
    );
    let table = table_of(&cluster.services(follower).await?);
    assert_eq!(table.len(), SERVICES + 200);
    for (key, ip) in &acked {
        assert_eq!(
            table.get(key),
            Some(&vec![ip.clone()]),
            "follower after snapshot: {key}"
        );
    }
    Ok(())
}
