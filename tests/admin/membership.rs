//! Membership: a peer joins a running cluster with --join (learner, then voter), receives the
//! table, and is removed again. A --join URL nobody answers fails with a clear error.

use std::process::Command;
use std::time::Duration;

use raftlb_chaos::{free_port, Cluster};
use raftlb_tests::{pool, service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_joins_catches_up_and_is_removed() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    cluster
        .apply(leader, &pool("m", &["198.18.6.0/24"]))
        .await?;
    cluster
        .apply(leader, &service("default", "before-join"))
        .await?;

    let dir = tempfile::tempdir()?;
    let (raft_port, admin_port) = (free_port(), free_port());
    let mut child = Command::new(&cluster.bin)
        .args([
            "run",
            "--insecure",
            "--id",
            "4",
            "--listen",
            "127.0.0.1",
            "--interfaces",
            "none",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--raft-port",
            &raft_port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
        ])
        .args(["--join", &cluster.peer(2).endpoint()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = async {
        let voters = raftlb_chaos::eventually("node 4 is a voter", Duration::from_secs(20), || {
            let c = &cluster;
            async move {
                let s = c.status(leader).await?;
                Ok(s.members
                    .iter()
                    .any(|m| m.id == 4 && m.voter)
                    .then_some(s.members))
            }
        })
        .await?;
        assert_eq!(voters.len(), 4);
        let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{admin_port}"))?
            .connect()
            .await?;
        let mut joined = raftlb_proto::admin::admin_client::AdminClient::new(ch);
        let services = joined
            .list_services(raftlb_proto::admin::ListRequest::default())
            .await?
            .into_inner()
            .services;
        assert_eq!(services.len(), 1, "the joined peer holds the table");

        let mut client = cluster.client(1).await?;
        client
            .remove_member(raftlb_proto::admin::MemberRequest { id: 4 })
            .await?;
        let members = cluster.status(leader).await?.members;
        assert!(members.iter().all(|m| m.id != 4), "{members:?}");

        // Leadership transfer: openraft 0.9 has none built in, so raftlb's can lose a close
        // election race; an OK answer must be true, and one of three attempts must succeed.
        let target = [1u64, 2, 3]
            .into_iter()
            .find(|id| *id != leader)
            .unwrap_or(2);
        let mut moved = false;
        for _ in 0..3 {
            let reply = client
                .transfer_leader(raftlb_proto::admin::MemberRequest { id: target })
                .await;
            let now = cluster.wait_leader(Duration::from_secs(10)).await?;
            if let Ok(r) = reply {
                assert_eq!(now, target, "{}", r.into_inner().message);
                moved = true;
                break;
            }
        }
        assert!(moved, "leadership never moved to node {target}");
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[test]
fn an_unreachable_join_url_fails_clearly() -> anyhow::Result<()> {
    let bin = raftlb_chaos::raftlb_binary()?;
    let dir = tempfile::tempdir()?;
    let dead = free_port(); // nothing listens here
    let out = Command::new(bin)
        .args([
            "run",
            "--insecure",
            "--id",
            "9",
            "--listen",
            "127.0.0.1",
            "--interfaces",
            "none",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--raft-port",
            &free_port().to_string(),
            "--admin-port",
            &free_port().to_string(),
        ])
        .args(["--join", &format!("http://127.0.0.1:{dead}")])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("--join: cannot reach http://127.0.0.1:{dead}")),
        "{stderr}"
    );
    Ok(())
}
