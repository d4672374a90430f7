//! Mutual TLS on the Raft and admin ports, with real `raftlb run` processes on loopback and
//! certificates from `raftlb_node::tls::mint`:
//!
//! * refused at the handshake (and counted by the server): plaintext on either port, a
//!   certificate from a foreign CA, an expired certificate;
//! * refused per RPC with `PermissionDenied`: node 3's certificate acting as leader 2,
//!   voting as candidate 2 or renewing node 2's lease; a viewer applying, draining or moving;
//! * rotation without restart: a node's new certificate is served on new handshakes, and a
//!   CA rotates through an old+new bundle, while writes keep committing and none is lost.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Vote;
use raftlb_chaos::cluster::{eventually, Cluster};
use raftlb_node::fence::RenewRequest;
use raftlb_node::tls::identity::Role;
use raftlb_node::tls::material::Files;
use raftlb_node::tls::mint::{Ca, Validity};
use raftlb_node::tls::net::{peer_channel, server_certificate, ClientTls};
use raftlb_node::tls::{store, Security, Tls, DEFAULT_CLUSTER};
use raftlb_proto::admin::{
    ApplyRequest, DrainRequest, EventsRequest, ListRequest, MoveVipRequest, StatusRequest,
    VipsRequest, WatchRequest,
};
use raftlb_proto::raft::raft_client::RaftClient;
use raftlb_proto::raft::{Empty, Payload};
use raftlb_raft_store::{codec, TypeConfig};
use raftlb_tests::{pool, service};

fn err(e: String) -> anyhow::Error {
    anyhow::anyhow!(e)
}

/// An operator's certificate from the cluster's CA, in its own directory.
fn operator(cluster: &Cluster, dir: &Path, name: &str, role: Role) -> anyhow::Result<ClientTls> {
    let ca = store::read_ca(&cluster.tls.as_ref().expect("mTLS").dir).map_err(err)?;
    let leaf = ca.client(name, role, Validity::days(1)).map_err(err)?;
    store::write_leaf(dir, &format!("client.{name}"), &leaf, &ca, false).map_err(err)?;
    let files = Files::client_in(dir, Some(name)).map_err(err)?;
    Ok(ClientTls::Given(
        Tls::load(files, DEFAULT_CLUSTER).map_err(err)?,
    ))
}

/// Node `id`'s own certificate, as a peer's client side uses it.
fn node_security(cluster: &Cluster, id: u64) -> anyhow::Result<Security> {
    let files = Files::node_in(&cluster.peer(id).tls_dir());
    Ok(Security::Mtls(
        Tls::load(files, DEFAULT_CLUSTER).map_err(err)?,
    ))
}

/// The Raft client `as_node`'s certificate gives, to peer `target`'s Raft port.
fn raft_client(
    cluster: &Cluster,
    security: &Security,
    target: u64,
) -> anyhow::Result<RaftClient<tonic::transport::Channel>> {
    let ch = peer_channel(security, target, &cluster.peer(target).raft_addr()).map_err(err)?;
    Ok(RaftClient::new(ch))
}

fn payload<T: serde::Serialize>(value: &T) -> tonic::Request<Payload> {
    let mut req = tonic::Request::new(Payload {
        data: codec::encode(value).expect("encodes"),
    });
    req.set_timeout(Duration::from_secs(3));
    req
}

/// Handshakes peer `id` refused so far.
async fn handshake_failures(cluster: &Cluster, id: u64) -> f64 {
    cluster
        .metric(id, "raftlb_tls_handshake_failures_total")
        .await
        .unwrap_or(0.0)
}

/// A call that must fail at the handshake: it fails, and peer `id` counts one more refusal.
async fn refused_at_handshake<F, Fut, T>(
    cluster: &Cluster,
    id: u64,
    what: &str,
    call: F,
) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let before = handshake_failures(cluster, id).await;
    assert!(call().await.is_err(), "{what}: the call went through");
    eventually(
        &format!("{what}: node {id} counts the refused handshake"),
        Duration::from_secs(10),
        || async { Ok((handshake_failures(cluster, id).await > before).then_some(())) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_right_certificates_get_in_and_each_does_only_what_it_may() -> anyhow::Result<()> {
    let mut cluster = Cluster::start_secure(3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let l2 = "apiVersion: raftlb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: sec}\nspec: {ipAddressPools: [sec]}\n".to_string();
    cluster
        .apply(
            leader,
            &raftlb_tests::documents(&[pool("sec", &["198.18.30.0/28"]), l2]),
        )
        .await?;
    let scratch = tempfile::tempdir()?;

    // Plaintext on either port.
    let admin_plain = format!("http://127.0.0.1:{}", cluster.peer(1).admin_port);
    refused_at_handshake(&cluster, 1, "plaintext on the admin port", || async {
        let ch =
            raftlb_node::tls::net::dial(&admin_plain, &ClientTls::Insecure, Duration::from_secs(2))
                .await
                .map_err(err)?;
        raftlb_proto::admin::admin_client::AdminClient::new(ch)
            .status(StatusRequest::default())
            .await?;
        Ok(())
    })
    .await?;
    refused_at_handshake(&cluster, 1, "plaintext on the Raft port", || async {
        let mut c = raft_client(&cluster, &Security::Insecure, 1)?;
        c.read_index(Empty {}).await?;
        Ok(())
    })
    .await?;

    // A client that connects and says nothing is dropped once the handshake deadline passes.
    refused_at_handshake(&cluster, 1, "a silent client", || async {
        use tokio::io::AsyncReadExt;
        let mut tcp = tokio::net::TcpStream::connect(cluster.peer(1).raft_addr()).await?;
        let mut buf = [0u8; 1];
        let started = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {
                eprintln!("a silent client was dropped after {:?}", started.elapsed());
                anyhow::bail!("dropped")
            }
            other => Ok(other.map(|r| r.map(|_| ()))),
        }
    })
    .await?;

    // A certificate from a foreign CA (the client trusts the cluster's CA too, so only the
    // server's check stands between it and the port).
    let foreign = Ca::create("foreign", Validity::days(1)).map_err(err)?;
    let intruder = foreign
        .client("mallory", Role::Admin, Validity::days(1))
        .map_err(err)?;
    let dir = scratch.path().join("foreign");
    store::write_leaf(&dir, "client.mallory", &intruder, &foreign, false).map_err(err)?;
    let cluster_ca = std::fs::read_to_string(cluster.tls.as_ref().unwrap().dir.join("ca.crt"))?;
    std::fs::write(
        dir.join("ca.crt"),
        format!("{cluster_ca}{}", foreign.cert_pem),
    )?;
    let mallory = ClientTls::Given(
        Tls::load(Files::client_in(&dir, None).map_err(err)?, DEFAULT_CLUSTER).map_err(err)?,
    );
    refused_at_handshake(&cluster, 1, "a foreign CA's certificate", || async {
        let mut c = cluster.client_as(1, &mallory).await?;
        c.status(StatusRequest::default()).await?;
        Ok(())
    })
    .await?;

    // An expired certificate, signed by the right CA.
    let ca = store::read_ca(&cluster.tls.as_ref().unwrap().dir).map_err(err)?;
    let old = ca
        .node(
            DEFAULT_CLUSTER,
            2,
            &[],
            &[],
            Validity::expired(Duration::from_secs(3600)),
        )
        .map_err(err)?;
    let dir = scratch.path().join("expired");
    store::write_leaf(&dir, "node", &old, &ca, false).map_err(err)?;
    let expired =
        Security::Mtls(Tls::load_unchecked(Files::node_in(&dir), DEFAULT_CLUSTER).map_err(err)?);
    refused_at_handshake(&cluster, 1, "an expired certificate", || async {
        let mut c = raft_client(&cluster, &expired, 1)?;
        c.read_index(Empty {}).await?;
        Ok(())
    })
    .await?;

    // Node 3's certificate speaks for node 3 only.
    let n3 = node_security(&cluster, 3)?;
    let target = cluster.others(3)[0];
    let mut c = raft_client(&cluster, &n3, target)?;
    let term = cluster.status(target).await?.term;
    let as_leader_2 = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term + 1, 2),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let denied = c.append_entries(payload(&as_leader_2)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(
        denied
            .message()
            .contains("node 3's certificate may not send AppendEntries as node 2"),
        "{denied:?}"
    );
    let as_candidate_2 = VoteRequest::new(Vote::new(term + 1, 2), None);
    let denied = c.vote(payload(&as_candidate_2)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    // Control: the same certificate asking for its own vote gets past the check (and is
    // turned down by Raft for its stale log and term).
    let own = VoteRequest::<u64>::new(Vote::new(0, 3), None);
    c.vote(payload(&own)).await?;
    let mut to_leader = raft_client(&cluster, &n3, leader)?;
    if leader != 3 {
        let renew_2 = RenewRequest {
            node: "node-2".into(),
            applied: 0,
        };
        let denied = to_leader.renew_lease(payload(&renew_2)).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("as node 2"), "{denied:?}");
        let renew_3 = RenewRequest {
            node: "node-3".into(),
            applied: 0,
        };
        to_leader.renew_lease(payload(&renew_3)).await?;
    }
    // Nothing the refused calls claimed reached Raft: the term did not move.
    assert_eq!(cluster.status(target).await?.term, term);
    assert!(
        cluster
            .metric(target, "raftlb_tls_denied_total")
            .await
            .unwrap_or(0.0)
            >= 2.0,
        "the refusals are counted"
    );

    // A viewer reads and watches, and may not write.
    let admin_id = cluster.others(leader)[0];
    let svc = cluster.apply(admin_id, &service("default", "web")).await?;
    assert!(!svc.services.is_empty());
    let viewer = operator(
        &cluster,
        &scratch.path().join("viewer"),
        "vera",
        Role::Viewer,
    )?;
    let mut v = cluster.client_as(admin_id, &viewer).await?;
    v.status(StatusRequest::default()).await?;
    let vips = v
        .list_vips(VipsRequest {
            history: true,
            linearizable: true,
        })
        .await?
        .into_inner()
        .vips;
    let vip = vips.first().expect("the Service has a VIP").clone();
    v.list_services(ListRequest { linearizable: true }).await?;
    let mut watch = v
        .watch(WatchRequest {
            resource: "vips".into(),
            min_index: 0,
        })
        .await?
        .into_inner();
    tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await??
        .expect("the watch lists the VIPs");
    let other = cluster
        .others(leader)
        .into_iter()
        .find(|id| format!("node-{id}") != vip.owner)
        .unwrap_or(leader);
    let denials = [
        v.apply(ApplyRequest {
            manifest: service("default", "sneaky"),
            delete: false,
            source: "viewer".into(),
        })
        .await
        .map(|_| ()),
        v.drain(DrainRequest {
            node: "node-1".into(),
            undo: false,
        })
        .await
        .map(|_| ()),
        v.move_vip(MoveVipRequest {
            vip: vip.ip.clone(),
            node: format!("node-{other}"),
        })
        .await
        .map(|_| ()),
    ];
    for d in denials {
        let s = d.expect_err("a viewer's write went through");
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("\"vera\" (raftlb:viewer)"), "{s:?}");
    }

    // The admin may do all of it.
    let mut a = cluster.client(admin_id).await?;
    a.drain(DrainRequest {
        node: "node-1".into(),
        undo: false,
    })
    .await?;
    a.drain(DrainRequest {
        node: "node-1".into(),
        undo: true,
    })
    .await?;
    a.move_vip(MoveVipRequest {
        vip: vip.ip.clone(),
        node: format!("node-{other}"),
    })
    .await?;
    // The event log names the operator of each write.
    let events = a
        .list_events(EventsRequest {
            linearizable: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .events;
    let drained = events
        .iter()
        .find(|e| e.reason == "NodeDrained")
        .expect("the drain's event");
    assert!(drained.message.ends_with("(by admin)"), "{drained:?}");
    Ok(())
}

/// Applies a Service every 100 ms through a fresh connection each time (so every write is a
/// new handshake) until `stop`; counts the acknowledged writes and the failures.
async fn writer(
    cluster: &Cluster,
    prefix: &str,
    stop: &AtomicBool,
    acked: &std::sync::Mutex<Vec<String>>,
    failures: &AtomicU64,
) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("{prefix}-{i}");
        let id = 1 + (i % 3);
        match cluster.apply(id, &service("rot", &name)).await {
            Ok(_) => acked.lock().unwrap().push(name),
            Err(e) => {
                eprintln!("write {name} via node {id} failed: {e:#}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replaces a certificate and key the way a Secret volume is updated: new files renamed over
/// the old ones.
fn replace(dir: &Path, name: &str, cert: &str, key: &str) -> anyhow::Result<()> {
    for (ext, text) in [("key", key), ("crt", cert)] {
        let tmp = dir.join(format!(".{name}.{ext}.new"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(format!("{name}.{ext}")))?;
    }
    Ok(())
}

/// Waits until every peer has taken up one more reload than `before`.
async fn reloaded(cluster: &Cluster, before: &[f64]) -> anyhow::Result<Vec<f64>> {
    let mut now = Vec::new();
    for (i, b) in before.iter().enumerate() {
        let id = i as u64 + 1;
        let v = eventually(
            &format!("node {id} reloads its certificates"),
            Duration::from_secs(10),
            || async move {
                let v = cluster
                    .metric(id, "raftlb_tls_reloads_total")
                    .await
                    .unwrap_or(0.0);
                Ok((v > *b).then_some(v))
            },
        )
        .await?;
        now.push(v);
    }
    Ok(now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_and_the_ca_rotate_without_a_restart_or_a_lost_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start_secure(3, &[]).await?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    cluster
        .apply(leader, &pool("rot", &["198.18.31.0/24"]))
        .await?;
    let pids: Vec<Option<u32>> = (1..=3).map(|id| cluster.peer(id).pid()).collect();
    let tls = cluster.tls.as_ref().unwrap();
    let ca_dir = tls.dir.clone();
    let ClientTls::Given(admin) = tls.admin.clone() else {
        unreachable!("the harness gives the admin's material")
    };
    let ca1 = store::read_ca(&ca_dir).map_err(err)?;
    let stop = AtomicBool::new(false);
    let acked = std::sync::Mutex::new(Vec::new());
    let failures = AtomicU64::new(0);
    let admin_addr = |id: u64| format!("127.0.0.1:{}", cluster.peer(id).admin_port);

    let rotation = async {
        let result: anyhow::Result<()> = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // 1. Node 1's certificate.
            let was = server_certificate(&admin_addr(1), &admin, "127.0.0.1")
                .await
                .map_err(err)?;
            let fresh = ca1
                .loopback_node(DEFAULT_CLUSTER, 1, Validity::days(1))
                .map_err(err)?;
            let new_serial = raftlb_node::tls::identity::facts(
                &raftlb_node::tls::material::first_cert(fresh.cert_pem.as_bytes()).map_err(err)?,
            )
            .map_err(err)?
            .serial;
            assert_ne!(was.serial, new_serial);
            let rotated_at = Instant::now();
            replace(
                &cluster.peer(1).tls_dir(),
                "node",
                &fresh.cert_pem,
                &fresh.key_pem,
            )?;
            eventually(
                "node 1 shows its new certificate on a new handshake",
                Duration::from_secs(10),
                || async {
                    let seen = server_certificate(&admin_addr(1), &admin, "127.0.0.1")
                        .await
                        .map_err(err)?;
                    Ok((seen.serial == new_serial).then_some(()))
                },
            )
            .await?;
            eprintln!(
                "node 1 served its new certificate {:?} after the files changed",
                rotated_at.elapsed()
            );

            // 2. The CA, through a bundle of the old and the new one.
            let ca2 = Ca::create("second", Validity::days(1)).map_err(err)?;
            let bundle = format!("{}{}", ca1.cert_pem, ca2.cert_pem);
            let mut reloads = vec![0.0; 3];
            for (i, r) in reloads.iter_mut().enumerate() {
                *r = cluster
                    .metric(i as u64 + 1, "raftlb_tls_reloads_total")
                    .await
                    .unwrap_or(0.0);
            }
            for id in 1..=3 {
                std::fs::write(cluster.peer(id).tls_dir().join("ca.crt"), &bundle)?;
            }
            std::fs::write(ca_dir.join("ca.crt"), &bundle)?;
            admin.reload().map_err(err)?;
            let reloads = reloaded(&cluster, &reloads).await?;
            //    Every node and the admin move to certificates of the new CA.
            for id in 1..=3 {
                let leaf = ca2
                    .loopback_node(DEFAULT_CLUSTER, id, Validity::days(1))
                    .map_err(err)?;
                replace(
                    &cluster.peer(id).tls_dir(),
                    "node",
                    &leaf.cert_pem,
                    &leaf.key_pem,
                )?;
            }
            let admin2 = ca2
                .client("admin", Role::Admin, Validity::days(1))
                .map_err(err)?;
            replace(&ca_dir, "client.admin", &admin2.cert_pem, &admin2.key_pem)?;
            admin.reload().map_err(err)?;
            let reloads = reloaded(&cluster, &reloads).await?;
            //    The old CA leaves the bundle.
            for id in 1..=3 {
                std::fs::write(cluster.peer(id).tls_dir().join("ca.crt"), &ca2.cert_pem)?;
            }
            std::fs::write(ca_dir.join("ca.crt"), &ca2.cert_pem)?;
            admin.reload().map_err(err)?;
            reloaded(&cluster, &reloads).await?;
            //    A certificate of the old CA no longer gets in.
            let stale = ca1
                .client("old", Role::Admin, Validity::days(1))
                .map_err(err)?;
            let dir = ca_dir.join("stale");
            store::write_leaf(&dir, "client.old", &stale, &ca1, false).map_err(err)?;
            std::fs::write(dir.join("ca.crt"), &bundle)?;
            let old = ClientTls::Given(
                Tls::load(Files::client_in(&dir, None).map_err(err)?, DEFAULT_CLUSTER)
                    .map_err(err)?,
            );
            let mut refused = true;
            if let Ok(mut c) = cluster.client_as(2, &old).await {
                refused = c.status(StatusRequest::default()).await.is_err();
            }
            assert!(refused, "a certificate of the retired CA still gets in");
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(())
        }
        .await;
        stop.store(true, Ordering::Relaxed);
        result
    };
    let ((), rotated) = tokio::join!(writer(&cluster, "w", &stop, &acked, &failures), rotation);
    rotated?;

    let acked = acked.into_inner().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "writes failed during the rotation"
    );
    assert!(acked.len() >= 20, "only {} writes", acked.len());
    let names: std::collections::BTreeSet<String> = cluster
        .client(1)
        .await?
        .list_services(ListRequest { linearizable: true })
        .await?
        .into_inner()
        .services
        .into_iter()
        .map(|s| s.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !names.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    for (p, pid) in cluster.peers.iter_mut().zip(&pids) {
        assert_eq!(p.pid(), *pid, "node {} was restarted", p.id);
        assert!(p.is_running(), "node {} is not running", p.id);
    }
    eprintln!(
        "{} writes acknowledged during the rotations, none failed or lost",
        acked.len()
    );
    Ok(())
}
