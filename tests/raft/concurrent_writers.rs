//! Writers on every peer at once, competing for a pool too small for all of them: the state
//! machine decides, so no address is ever handed out twice and the overflow is pending.

use std::collections::BTreeSet;
use std::time::Duration;

use raftlb_chaos::Cluster;
use raftlb_tests::{documents, pool, service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_different_peers_never_double_allocate() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, &[]).await?;
    let leader = raftlb_chaos::eventually("leader", Duration::from_secs(10), || {
        let c = &cluster;
        async move { Ok(c.status(1).await?.leader_id) }
    })
    .await?;
    // 64 addresses for 3 x 40 Services.
    cluster
        .apply(leader, &pool("small", &["198.18.1.0/26"]))
        .await?;

    let mut tasks = Vec::new();
    for writer in 1..=3u64 {
        let endpoint = cluster.peer(writer).endpoint();
        tasks.push(tokio::spawn(async move {
            let ch = tonic::transport::Endpoint::from_shared(endpoint)?
                .connect()
                .await?;
            let mut client = raftlb_proto::admin::admin_client::AdminClient::new(ch);
            // Batches of 4 Services per request, 10 requests per writer.
            for batch in 0..10 {
                let docs: Vec<String> = (0..4)
                    .map(|i| service(&format!("w{writer}"), &format!("s{}", batch * 4 + i)))
                    .collect();
                client
                    .apply(raftlb_proto::admin::ApplyRequest {
                        manifest: documents(&docs),
                        delete: false,
                        source: format!("writer-{writer}"),
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }

    // Peer 2 reads its own table: let it apply what the leader committed first (a follower
    // may be an entry or two behind when the last write is acknowledged).
    let committed = cluster.status(leader).await?.applied_index;
    cluster
        .wait_applied(2, committed, Duration::from_secs(10))
        .await?;
    let services = cluster.services(2).await?;
    assert_eq!(services.len(), 120);
    let allocated: Vec<&String> = services.iter().flat_map(|s| s.ips.iter()).collect();
    let distinct: BTreeSet<&&String> = allocated.iter().collect();
    assert_eq!(
        allocated.len(),
        distinct.len(),
        "an address was handed out twice"
    );
    assert_eq!(allocated.len(), 64, "every address of the pool is used");
    let pending: Vec<_> = services.iter().filter(|s| s.state == "Pending").collect();
    assert_eq!(pending.len(), 56);
    assert!(pending
        .iter()
        .all(|s| s.reason == "no available IPs in pool small"));
    // Every replica holds the same table.
    let key =
        |s: &raftlb_proto::admin::Service| (s.namespace.clone(), s.name.clone(), s.ips.clone());
    let a: Vec<_> = services.iter().map(key).collect();
    for id in [1, 3] {
        let s = cluster.status(2).await?;
        cluster
            .wait_applied(id, s.applied_index, Duration::from_secs(10))
            .await?;
        let b: Vec<_> = cluster.services(id).await?.iter().map(key).collect();
        assert_eq!(a, b, "replica {id} differs");
    }
    Ok(())
}
