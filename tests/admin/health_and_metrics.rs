//! `/healthz`, `/readyz` and `/metrics` on a real peer: ready once it leads a cluster, and the
//! metrics an operator coming from MetalLB looks for reflect the table.

use std::time::Duration;

use raftlb_chaos::{eventually, free_port, Cluster};
use raftlb_tests::{documents, pool, service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.0 GET on loopback: (status code, body).
async fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_when_leading_and_metrics_follow_the_table() -> anyhow::Result<()> {
    let port = free_port();
    let cluster = Cluster::start(1, &["--metrics-port", &port.to_string()]).await?;
    let (code, body) = get(port, "/healthz").await?;
    assert_eq!((code, body.trim()), (200, "ok"));
    eventually("ready", Duration::from_secs(10), || async {
        Ok((get(port, "/readyz").await?.0 == 200).then_some(()))
    })
    .await?;

    cluster
        .apply(
            1,
            &documents(&[
                pool("main", &["10.99.0.0/30"]),
                service("apps", "a"),
                service("apps", "b"),
            ]),
        )
        .await?;
    let (_, m) = get(port, "/metrics").await?;
    for line in [
        "raftlb_allocator_addresses_total{pool=\"main\"} 4",
        "raftlb_allocator_ipv4_addresses_in_use_total{pool=\"main\"} 2",
        "raftlb_allocator_services_allocated_total{pool=\"main\"} 2",
        "raftlb_services_pending 0",
        "raftlb_raft_is_leader{peer=\"1\"} 1",
        "raftlb_ready 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in:\n{m}");
    }
    assert!(m.contains("# TYPE raftlb_raft_term gauge"));
    assert!(m.contains("raftlb_lease_valid{node=\"node-1\"}"));
    drop(cluster);
    Ok(())
}
