//! Reads without a log entry: a linearizable read on a follower sees every write acknowledged
//! before it (the follower waits for the leader's read index), while a plain read answers from
//! the follower's table at once and may lag. Neither kind of read appends to the log.

use std::time::Duration;

use raftlb_chaos::Cluster;
use raftlb_proto::admin::{ListRequest, StatusRequest, VipsRequest};
use raftlb_tests::{pool, service};

const WRITES: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_every_acknowledged_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    let follower = cluster.others(leader)[0];
    cluster
        .apply(leader, &pool("lin", &["198.18.9.0/24"]))
        .await?;
    let mut reader = cluster.client(follower).await?;
    let pid = cluster.peer(follower).pid().expect("running").to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    let (mut stale, mut fresh) = (0, 0);
    for i in 0..WRITES {
        let name = format!("w{i}");
        // The follower is paused while the write commits (the leader and the other follower
        // make the quorum), then the reads reach it together with the entries it missed.
        signal("-STOP");
        let written = cluster.apply(leader, &service("default", &name)).await;
        let linearizable = {
            let mut c = reader.clone();
            tokio::spawn(async move { c.list_services(ListRequest { linearizable: true }).await })
        };
        let plain = {
            let mut c = reader.clone();
            tokio::spawn(async move { c.list_services(ListRequest::default()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        signal("-CONT");
        written?;
        let lin = linearizable.await??.into_inner();
        assert!(
            lin.services.iter().any(|s| s.name == name),
            "write {i} acknowledged but missing from a linearizable read at index {}",
            lin.applied_index
        );
        let plain = plain.await??.into_inner();
        if plain.services.iter().any(|s| s.name == name) {
            fresh += 1;
        } else {
            stale += 1;
        }
    }
    println!(
        "plain follower reads after a pause: {stale} of {WRITES} missed the write just acknowledged, {fresh} saw it; linearizable reads: all {WRITES} saw it"
    );
    assert!(
        stale > 0,
        "the pause must make plain reads stale, or this test proves nothing"
    );

    // Reads append nothing: the leader's last log index does not move over a burst of them.
    let before = cluster.status(leader).await?.last_log_index;
    for _ in 0..20 {
        reader
            .status(StatusRequest {
                linearizable: true,
                digest: false,
            })
            .await?;
        reader
            .list_vips(VipsRequest {
                history: false,
                linearizable: true,
            })
            .await?;
    }
    let after = cluster.status(leader).await?.last_log_index;
    // The leader's control loop may commit an ownership batch meanwhile (new VIPs): allow those,
    // but 40 reads through the log would add at least 40 entries.
    assert!(
        after - before < 10,
        "reads appended to the log: {before} -> {after}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_without_a_quorum_fails_clearly() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    for id in cluster.others(leader) {
        cluster.kill(id);
    }
    let mut client = cluster.client(leader).await?;
    // A plain read still answers from the table.
    client.list_services(ListRequest::default()).await?;
    let err = client
        .list_services(ListRequest { linearizable: true })
        .await
        .expect_err("no quorum: the leader cannot confirm it leads");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    println!("linearizable read without a quorum: {}", err.message());
    Ok(())
}

/// Every peer SIGKILLed right after a write was acknowledged, then all restarted: the first
/// linearizable read must include that write. (The committed index is not flushed with each
/// commit, so a leader that came back still leading its old term would take a read index
/// from before the write; the chaos campaign's kill-all fault found exactly that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_after_every_peer_was_killed_sees_the_last_acknowledged_write(
) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, &[]).await?;
    let mut leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    cluster
        .apply(leader, &pool("power", &["198.18.10.0/24"]))
        .await?;
    for round in 0..5 {
        let name = format!("cut{round}");
        cluster.apply(leader, &service("default", &name)).await?;
        for id in 1..=3 {
            cluster.kill(id);
        }
        for id in 1..=3 {
            cluster.restart(id)?;
        }
        // Asked of every peer in turn until one answers (elections after the restart).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let read = 'read: loop {
            for id in 1..=3 {
                let Ok(mut c) = cluster.client(id).await else {
                    continue;
                };
                if let Ok(r) = c.list_services(ListRequest { linearizable: true }).await {
                    break 'read r.into_inner();
                }
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "round {round}: no linearizable read answered within 20 s of the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            read.services.iter().any(|s| s.name == name),
            "round {round}: {name} was acknowledged before every peer was killed, yet a linearizable read after the restart at index {} misses it",
            read.applied_index
        );
        leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    }
    Ok(())
}
