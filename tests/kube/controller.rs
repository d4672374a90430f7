//! `raftlb run --kube` against a fake API server over HTTP, with the real kube client inside
//! real raftlb processes: Services get their IPs in status with one event per change, the
//! configuration CRDs are reported valid or invalid on their status, watches that drop or
//! expire (410 Gone) are relisted without losing or repeating work, and a leader killed in the
//! middle of a stream of Services changes no IP and writes no status twice.

mod apiserver;
mod bgp_sessions;
mod harness;
mod openelb;

use std::collections::BTreeSet;
use std::time::Duration;

use apiserver::{ApiServer, Key};
use harness::*;
use raftlb_chaos::eventually;
use serde_json::{json, Value};

fn pool_key(name: &str) -> Key {
    Key::new("raftlb.io/v1alpha1", "ipaddresspools", NS, name)
}

fn valid_condition(obj: &Value) -> Option<(String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find_map(|c| {
            (c["type"] == json!("Valid")).then(|| {
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["message"].as_str().unwrap_or("").to_string(),
                )
            })
        })
}

async fn wait_condition(api: &ApiServer, key: &Key, status: &str) -> anyhow::Result<String> {
    eventually(
        &format!("{} {} Valid={status}", key.plural, key.name),
        Duration::from_secs(20),
        || {
            let got = api.get(key).and_then(|o| valid_condition(&o));
            async move { Ok(got.filter(|(s, _)| s == status).map(|(_, m)| m)) }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lifecycle_status_and_events() -> anyhow::Result<()> {
    let api = ApiServer::start().await;
    seed(&api);
    api.put(pool("main", &["10.99.0.10-10.99.0.12"], json!({})));
    api.put(pool(
        "reserved",
        &["10.98.0.0/30"],
        json!({"autoAssign": false}),
    ));
    let cluster = start_cluster(&api, 1).await?;
    let result = async {
        // A Service gets the lowest address, the pool annotation and one IPAllocated event.
        api.put(service("apps", "a", json!({}), json!({})));
        wait_ingress(&api, "apps", "a", &["10.99.0.10"]).await?;
        let a = api.get(&svc_key("apps", "a")).expect("exists");
        assert_eq!(
            a["metadata"]["annotations"]["raftlb.io/ip-allocated-from-pool"],
            json!("main")
        );
        // Requested IP.
        api.put(service(
            "apps",
            "b",
            json!({"loadBalancerIP": "10.99.0.12"}),
            json!({}),
        ));
        wait_ingress(&api, "apps", "b", &["10.99.0.12"]).await?;
        // Pool annotation, raftlb's and MetalLB's spelling; autoAssign false pool.
        api.put(service(
            "apps",
            "c",
            json!({}),
            json!({"raftlb.io/address-pool": "reserved"}),
        ));
        api.put(service(
            "apps",
            "c2",
            json!({}),
            json!({"metallb.io/address-pool": "reserved"}),
        ));
        wait_ingress(&api, "apps", "c", &["10.98.0.0"]).await?;
        wait_ingress(&api, "apps", "c2", &["10.98.0.1"]).await?;
        // Sharing: same key, different ports, one address.
        let shared = json!({"metallb.io/allow-shared-ip": "web"});
        api.put(service(
            "apps",
            "d",
            json!({"loadBalancerIP": "10.99.0.11"}),
            shared.clone(),
        ));
        api.put(service(
            "apps",
            "e",
            json!({"loadBalancerIP": "10.99.0.11", "ports": [{"port": 443, "protocol": "TCP"}]}),
            shared,
        ));
        wait_ingress(&api, "apps", "d", &["10.99.0.11"]).await?;
        wait_ingress(&api, "apps", "e", &["10.99.0.11"]).await?;
        // Exhausted: pending, with one AllocationFailed event.
        api.put(service("apps", "f", json!({}), json!({})));
        eventually("f AllocationFailed", Duration::from_secs(20), || {
            let n = count_events(&api, "Service", "f", "AllocationFailed");
            async move { Ok((n > 0).then_some(())) }
        })
        .await?;
        // Another class: never touched.
        api.put(service(
            "apps",
            "g",
            json!({"loadBalancerClass": "example.com/other"}),
            json!({}),
        ));
        // A ClusterIP Service: never touched.
        api.put(service(
            "apps",
            "h",
            json!({"type": "ClusterIP"}),
            json!({}),
        ));

        // Delete a: f gets its address.
        api.delete(&svc_key("apps", "a"));
        wait_ingress(&api, "apps", "f", &["10.99.0.10"]).await?;
        // b turns ClusterIP: its status and annotation are cleared, its address freed.
        api.put(service(
            "apps",
            "b",
            json!({"type": "ClusterIP"}),
            json!({}),
        ));
        wait_ingress(&api, "apps", "b", &[]).await?;
        eventually(
            "b's pool annotation removed",
            Duration::from_secs(10),
            || {
                let ann = api
                    .get(&svc_key("apps", "b"))
                    .map(|o| o["metadata"]["annotations"].clone());
                async move {
                    Ok(ann
                        .filter(|a| a.get("raftlb.io/ip-allocated-from-pool").is_none())
                        .map(|_| ()))
                }
            },
        )
        .await?;

        // Pool status: usage and holders, read from the table.
        let pool = eventually("pool status shows f", Duration::from_secs(10), || {
            let p = api.get(&pool_key("main"));
            async move {
                Ok(p.filter(|p| {
                    p["status"]["allocations"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x["services"] == json!(["apps/f"])))
                        && p["status"]["assignedIPv4"] == json!(2)
                }))
            }
        })
        .await?;
        assert_eq!(pool["status"]["totalIPv4"], json!(3));
        assert_eq!(pool["status"]["availableIPv4"], json!(1));
        assert_eq!(pool["status"]["usage"], json!("2/3"));
        assert_eq!(valid_condition(&pool).map(|c| c.0), Some("True".into()));

        // Announcement status: one ServiceL2Status per announced Service, naming the owner.
        let l2 = eventually("ServiceL2Status for f", Duration::from_secs(20), || {
            let o = api.get(&Key::new(
                "raftlb.io/v1alpha1",
                "servicel2statuses",
                NS,
                "l2-apps.f",
            ));
            async move { Ok(o.filter(|o| o["status"]["node"] == json!("node-1"))) }
        })
        .await?;
        assert_eq!(l2["status"]["serviceName"], json!("f"));
        assert_eq!(l2["status"]["announcements"][0]["ip"], json!("10.99.0.10"));
        eventually(
            "a's ServiceL2Status deleted",
            Duration::from_secs(10),
            || {
                let o = api.get(&Key::new(
                    "raftlb.io/v1alpha1",
                    "servicel2statuses",
                    NS,
                    "l2-apps.a",
                ));
                async move { Ok(o.is_none().then_some(())) }
            },
        )
        .await?;

        // Let a few resyncs pass, then count: one status write per change, one event each.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(status_writes(&api, "apps", "a").len(), 1, "a: one write");
        assert_eq!(
            status_writes(&api, "apps", "b").len(),
            2,
            "b: set, then cleared"
        );
        assert_eq!(status_writes(&api, "apps", "f").len(), 1, "f: one write");
        assert_eq!(
            status_writes(&api, "apps", "g").len(),
            0,
            "another class: untouched"
        );
        assert_eq!(
            status_writes(&api, "apps", "h").len(),
            0,
            "ClusterIP: untouched"
        );
        assert_eq!(count_events(&api, "Service", "a", "IPAllocated"), 1);
        assert_eq!(count_events(&api, "Service", "f", "AllocationFailed"), 1);
        assert_eq!(count_events(&api, "Service", "f", "IPAllocated"), 1);
        assert_eq!(count_events(&api, "Service", "g", "IPAllocated"), 0);
        let f_events = events(&api, "Service", "f");
        assert!(
            f_events
                .iter()
                .any(|(r, m)| r == "AllocationFailed" && m.contains("main")),
            "the failure names the pool: {f_events:?}"
        );
        anyhow::Ok(())
    }
    .await;
    with_logs(&cluster, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_crds_get_a_condition_and_the_last_valid_config_stays() -> anyhow::Result<()> {
    let api = ApiServer::start().await;
    seed(&api);
    api.put(pool("main", &["10.99.0.0/29"], json!({})));
    let cluster = start_cluster(&api, 1).await?;
    let result = async {
        api.put(service("apps", "a", json!({}), json!({})));
        wait_ingress(&api, "apps", "a", &["10.99.0.0"]).await?;
        wait_condition(&api, &pool_key("main"), "True").await?;

        // Overlapping pool: refused, with a condition and a Warning event naming the field.
        api.put(pool("overlap", &["10.99.0.4/30"], json!({})));
        let msg = wait_condition(&api, &pool_key("overlap"), "False").await?;
        assert!(msg.contains("spec.addresses[0]") && msg.contains("overlaps"), "{msg}");
        // Bad CIDR: refused by the parser, same report.
        api.put(pool("garbage", &["10.99.1.0/33"], json!({})));
        let msg = wait_condition(&api, &pool_key("garbage"), "False").await?;
        assert!(msg.contains("spec.addresses[0]"), "{msg}");
        // An advertisement naming a pool that does not exist.
        let adv = Key::new("raftlb.io/v1alpha1", "l2advertisements", NS, "dangling");
        api.put(json!({"apiVersion": "raftlb.io/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": "dangling", "namespace": NS}, "spec": {"ipAddressPools": ["nope"]}}));
        let msg = wait_condition(&api, &adv, "False").await?;
        assert!(msg.contains("ipAddressPools[0]") && msg.contains("nope"), "{msg}");

        // The valid pool turned invalid: refused, and the last valid version stays in force.
        api.put(pool("main", &["10.99.0.0/29", "not-an-ip"], json!({})));
        let msg = wait_condition(&api, &pool_key("main"), "False").await?;
        assert!(msg.contains("spec.addresses[1]"), "{msg}");
        api.put(service("apps", "b", json!({}), json!({})));
        wait_ingress(&api, "apps", "b", &["10.99.0.1"]).await?;
        assert_eq!(ingress(&api.get(&svc_key("apps", "a")).expect("a")), ["10.99.0.0"]);

        // Fixed: valid again (the new version is applied).
        api.put(pool("main", &["10.99.0.0/28"], json!({})));
        wait_condition(&api, &pool_key("main"), "True").await?;
        eventually("pool total 16", Duration::from_secs(10), || {
            let p = api.get(&pool_key("main"));
            async move { Ok(p.filter(|p| p["status"]["totalIPv4"] == json!(16)).map(|_| ())) }
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for name in ["overlap", "garbage", "main"] {
            assert_eq!(
                count_events(&api, "IPAddressPool", name, "InvalidConfiguration"),
                1,
                "{name}: one event per invalid version"
            );
        }
        assert_eq!(count_events(&api, "L2Advertisement", "dangling", "InvalidConfiguration"), 1);
        anyhow::Ok(())
    }
    .await;
    with_logs(&cluster, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_expired_watches_relist_without_losing_or_repeating_work() -> anyhow::Result<()>
{
    let api = ApiServer::start().await;
    seed(&api);
    api.put(pool("main", &["10.99.0.0/24"], json!({})));
    let mut cluster = start_cluster(&api, 1).await?;
    let result = async {
        for i in 0..5 {
            api.put(service("apps", &format!("s{i}"), json!({}), json!({})));
        }
        for i in 0..5 {
            wait_any_ingress(&api, "apps", &format!("s{i}")).await?;
        }
        // Every watch drops; changes made while they are down are replayed on reconnect.
        api.drop_watches();
        api.put(service("apps", "s5", json!({}), json!({})));
        api.delete(&svc_key("apps", "s0"));
        wait_any_ingress(&api, "apps", "s5").await?;

        // The history is compacted: reconnecting watches get 410 Gone and must relist. Changes
        // made meanwhile (a delete and a create) are found by the relist.
        let watches_before = api.requests().len();
        api.compact();
        api.delete(&svc_key("apps", "s1"));
        api.put(service("apps", "s6", json!({}), json!({})));
        wait_any_ingress(&api, "apps", "s6").await?;
        // s1's address was released: a new Service may get it (lowest free first).
        let s1_ip = "10.99.0.1";
        api.put(service("apps", "s7", json!({}), json!({})));
        let s7 = wait_any_ingress(&api, "apps", "s7").await?;
        let s0_or_s1 = ["10.99.0.0", s1_ip];
        assert!(s0_or_s1.contains(&s7[0].as_str()), "s7 got a released address: {s7:?}");
        let relisted = eventually("the Service watcher relists after 410", Duration::from_secs(30), || {
            let n = api.requests()[watches_before..]
                .iter()
                .filter(|r| {
                    r.method == "GET" && r.path == "/api/v1/services" && !r.query.contains("watch=true")
                })
                .count();
            async move { Ok((n > 0).then_some(())) }
        })
        .await;
        if relisted.is_err() {
            let seen: Vec<String> = api
                .requests()
                .iter()
                .enumerate()
                .filter(|(_, r)| r.path == "/api/v1/services" || r.method != "GET")
                .map(|(i, r)| format!("{i}: {} {}?{} -> {}", r.method, r.path, r.query, r.status))
                .collect();
            anyhow::bail!("no relist after 410; Service requests: {seen:#?} (compacted after request {watches_before})");
        }

        tokio::time::sleep(Duration::from_secs(3)).await;
        for i in 2..8 {
            let name = format!("s{i}");
            assert_eq!(status_writes(&api, "apps", &name).len(), 1, "{name}: written once");
            assert_eq!(count_events(&api, "Service", &name, "IPAllocated"), 1, "{name}: one event");
        }
        let mut ips = BTreeSet::new();
        for i in 2..8 {
            let got = ingress(&api.get(&svc_key("apps", &format!("s{i}"))).expect("exists"));
            assert!(ips.insert(got[0].clone()), "duplicate {got:?}");
        }

        // A restart (SIGKILL, then the same data directory) resyncs and changes nothing.
        let requests_before = api.requests().len();
        cluster.restart(1)?;
        cluster.wait_leader(Duration::from_secs(20)).await?;
        eventually("the restarted peer lists again", Duration::from_secs(20), || {
            let n = api.requests()[requests_before..]
                .iter()
                .filter(|r| r.method == "GET" && r.path == "/api/v1/services" && !r.query.contains("watch=true"))
                .count();
            async move { Ok((n > 0).then_some(())) }
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let writes: Vec<String> = api.requests()[requests_before..]
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(writes.is_empty(), "a restart wrote: {writes:#?}");
        for i in 2..8 {
            let got = ingress(&api.get(&svc_key("apps", &format!("s{i}"))).expect("exists"));
            assert!(ips.contains(&got[0]), "s{i} changed to {got:?}");
        }
        anyhow::Ok(())
    }
    .await;
    with_logs(&cluster, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_a_stream_of_services() -> anyhow::Result<()> {
    const N: usize = 40;
    let api = ApiServer::start().await;
    seed(&api);
    api.put(pool("main", &["10.99.0.0/24"], json!({})));
    let mut cluster = start_cluster(&api, 3).await?;
    let result = async {
        let mut killed = None;
        let mut created = Vec::new();
        for i in 0..N {
            created.push(std::time::Instant::now());
            api.put(service("stream", &format!("s{i:02}"), json!({}), json!({})));
            if i == N / 2 {
                // Kill the leader once it is writing.
                wait_any_ingress(&api, "stream", "s00").await?;
                let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
                cluster.kill(leader);
                killed = Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let mut ips = BTreeSet::new();
        for i in 0..N {
            let got = wait_any_ingress(&api, "stream", &format!("s{i:02}")).await?;
            assert!(ips.insert(got[0].clone()), "duplicate address {got:?}");
        }
        let new_leader = cluster.wait_leader(Duration::from_secs(10)).await?;
        assert_ne!(Some(new_leader), killed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        for i in 0..N {
            let name = format!("s{i:02}");
            let writes = status_writes(&api, "stream", &name);
            assert_eq!(writes.len(), 1, "{name}: status written once, got {writes:?}");
            assert_eq!(count_events(&api, "Service", &name, "IPAllocated"), 1, "{name}: one event");
            let now = ingress(&api.get(&svc_key("stream", &name)).expect("exists"));
            assert_eq!(writes[0], json!([{"ip": now[0]}]), "{name}: IP never changed");
        }
        // Created -> status written, as the API server saw it (informational: the figure is
        // printed, not asserted).
        let requests = api.requests();
        let mut latency: Vec<(usize, u128)> = (0..N)
            .filter_map(|i| {
                let path = format!("/api/v1/namespaces/stream/services/s{i:02}/status");
                let r = requests.iter().find(|r| r.method == "PATCH" && r.path == path)?;
                Some((i, r.at.duration_since(created[i]).as_millis()))
            })
            .collect();
        latency.sort_by_key(|(_, ms)| *ms);
        let pick = |q: f64| latency[((latency.len() - 1) as f64 * q) as usize].1;
        eprintln!(
            "leader {killed:?} killed after Service {}; {N} Services, {} distinct IPs, new leader {new_leader}; \
             created -> status written: median {} ms, p90 {} ms, max {} ms (Service s{:02})",
            N / 2,
            ips.len(),
            pick(0.5),
            pick(0.9),
            latency.last().map_or(0, |l| l.1),
            latency.last().map_or(0, |l| l.0),
        );
        anyhow::Ok(())
    }
    .await;
    with_logs(&cluster, result)
}

/// The fake server itself: a dropped watch ends the HTTP stream, a compacted history answers
/// the next watch with a 410 ERROR event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_api_server_ends_and_expires_watches() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = ApiServer::start().await;
    seed(&api);
    let watch = |rv: u64| {
        let addr = api.addr;
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let req = format!(
                "GET /api/v1/services?watch=true&allowWatchBookmarks=true&resourceVersion={rv} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await?;
            anyhow::Ok(s)
        }
    };
    let mut s = watch(1001).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.put(service("apps", "w", json!({}), json!({})));
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.drop_watches();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await??;
    assert!(text.contains("\"ADDED\""), "{text}");
    api.compact();
    let mut s = watch(1001).await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await??;
    assert!(text.contains("\"ERROR\"") && text.contains("410"), "{text}");
    Ok(())
}

/// Scaling the StatefulSet down: the leader removes the members beyond the new replica count,
/// highest id first (handing leadership over first if it is one of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_scale_down_removes_members() -> anyhow::Result<()> {
    let api = ApiServer::start().await;
    seed(&api);
    let statefulset = |replicas: i32| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "raftlb", "namespace": NS},
               "spec": {"replicas": replicas, "serviceName": "raftlb",
                        "selector": {"matchLabels": {"app": "raftlb"}},
                        "template": {"metadata": {"labels": {"app": "raftlb"}}, "spec": {"containers": []}}}})
    };
    api.put(statefulset(3));
    let cluster = start_cluster_with(&api, 3, &["--statefulset", "raftlb"]).await?;
    let result = async {
        let members = |s: &raftlb_proto::admin::StatusReply| -> Vec<u64> {
            s.members.iter().map(|m| m.id).collect()
        };
        let s = cluster.status(1).await?;
        assert_eq!(members(&s), [1, 2, 3]);
        api.put(statefulset(2));
        eventually("member 3 removed", Duration::from_secs(30), || async {
            let s = cluster.status(1).await?;
            Ok((members(&s) == [1, 2] && s.leader_id.is_some()).then_some(()))
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    with_logs(&cluster, result)
}
