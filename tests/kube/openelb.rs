//! OpenELB's Eips in `--kube` mode: watched only when the API server serves
//! `network.kubesphere.io/v1alpha2` (also when OpenELB's CRD is installed after raftlb started),
//! OpenELB's layer-2 walk-through gives its documented address, the Eip's status says what
//! OpenELB's would and is written only when it changes, and a refused Eip gets one Warning.

use std::time::Duration;

use raftlb_chaos::eventually;
use serde_json::{json, Value};

use crate::apiserver::{ApiServer, Key, OPENELB};
use crate::harness::*;

fn eip(name: &str, spec: Value) -> Value {
    json!({"apiVersion": OPENELB, "kind": "Eip", "metadata": {"name": name}, "spec": spec})
}

fn eip_key(name: &str) -> Key {
    Key::new(OPENELB, "eips", "", name)
}

/// The walk-through's Service: OpenELB's three annotations.
fn nginx(name: &str) -> Value {
    service(
        "default",
        name,
        json!({}),
        json!({
            "lb.kubesphere.io/v1alpha1": "openelb",
            "protocol.openelb.kubesphere.io/v1alpha1": "layer2",
            "eip.openelb.kubesphere.io/v1alpha2": "eip-sample-pool",
        }),
    )
}

async fn wait_eip_status(api: &ApiServer, name: &str, want: &Value) -> anyhow::Result<()> {
    let key = eip_key(name);
    eventually(
        &format!("Eip {name} status {want}"),
        Duration::from_secs(20),
        || {
            let got = api.get(&key).map(|o| o["status"].clone());
            async move { Ok((got.as_ref() == Some(want)).then_some(())) }
        },
    )
    .await
}

fn eip_status_writes(api: &ApiServer, name: &str) -> usize {
    let path = format!("/apis/{OPENELB}/eips/{name}/status");
    api.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == path && r.status == 200)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openelb_walkthrough_in_kube_mode_with_eip_status() -> anyhow::Result<()> {
    let api = ApiServer::start().await;
    api.install_openelb();
    seed(&api);
    api.put(eip(
        "eip-sample-pool",
        json!({"address": "196.168.220.10-196.168.220.30", "protocol": "layer2", "interface": "eth0"}),
    ));
    let cluster = start_cluster(&api, 1).await?;
    let result = async {
        api.put(nginx("nginx"));
        wait_ingress(&api, "default", "nginx", &["196.168.220.10"]).await?;
        let status = |used: Value, usage: i64| {
            json!({"firstIP": "196.168.220.10", "lastIP": "196.168.220.30", "poolSize": 21,
                   "usage": usage, "used": used, "occupied": false, "ready": true, "v4": true})
        };
        wait_eip_status(
            &api,
            "eip-sample-pool",
            &status(json!({"196.168.220.10": "default/nginx"}), 1),
        )
        .await?;
        api.put(nginx("nginx-2"));
        wait_ingress(&api, "default", "nginx-2", &["196.168.220.11"]).await?;
        wait_eip_status(
            &api,
            "eip-sample-pool",
            &status(
                json!({"196.168.220.10": "default/nginx", "196.168.220.11": "default/nginx-2"}),
                2,
            ),
        )
        .await?;

        // A released address leaves `used` (a merge patch must null the key explicitly).
        api.delete(&svc_key("default", "nginx"));
        wait_eip_status(
            &api,
            "eip-sample-pool",
            &status(json!({"196.168.220.11": "default/nginx-2"}), 1),
        )
        .await?;

        // Written only when it changes: nothing more while nothing happens.
        let writes = eip_status_writes(&api, "eip-sample-pool");
        // In force (empty), nginx, nginx-2, nginx gone: at most one write per change.
        assert!(writes <= 4, "{writes} status writes for 4 changes");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(eip_status_writes(&api, "eip-sample-pool"), writes);

        // An Eip overlapping another is refused alone: one Warning naming the field, no status.
        api.put(eip(
            "overlap",
            json!({"address": "196.168.220.20/30", "protocol": "layer2"}),
        ));
        let message = eventually("a Warning on Eip overlap", Duration::from_secs(20), || {
            let evs = events(&api, "Eip", "overlap");
            async move {
                Ok(evs
                    .into_iter()
                    .find(|(r, _)| r == "InvalidConfiguration")
                    .map(|(_, m)| m))
            }
        })
        .await?;
        assert!(
            message.contains("spec.address") && message.contains("overlaps"),
            "{message}"
        );
        // Meanwhile allocation goes on from the valid Eip.
        api.put(nginx("nginx-3"));
        wait_ingress(&api, "default", "nginx-3", &["196.168.220.10"]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            count_events(&api, "Eip", "overlap", "InvalidConfiguration"),
            1
        );
        assert_eq!(eip_status_writes(&api, "overlap"), 0);
        anyhow::Ok(())
    }
    .await;
    with_logs(&cluster, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eips_are_watched_only_once_the_cluster_serves_them() -> anyhow::Result<()> {
    let api = ApiServer::start().await;
    seed(&api);
    api.put(pool("main", &["10.99.0.10-10.99.0.12"], json!({})));
    let cluster = start_cluster(&api, 1).await?;
    let result = async {
        api.put(service("apps", "a", json!({}), json!({})));
        wait_ingress(&api, "apps", "a", &["10.99.0.10"]).await?;
        let asked = |api: &ApiServer| -> (usize, usize) {
            let requests = api.requests();
            let discovery = requests
                .iter()
                .filter(|r| r.path == format!("/apis/{OPENELB}") && r.status == 404)
                .count();
            let eips = requests
                .iter()
                .filter(|r| r.path.starts_with(&format!("/apis/{OPENELB}/")))
                .count();
            (discovery, eips)
        };
        let (discovery, eips) = asked(&api);
        assert!(discovery >= 1, "raftlb asks whether Eips are served");
        assert_eq!(eips, 0, "and does not watch what is not served");

        // OpenELB's CRD installed later: the next discovery finds it and the Eip is used.
        api.install_openelb();
        api.put(eip(
            "eip-sample-pool",
            json!({"address": "196.168.220.10-196.168.220.30", "protocol": "layer2"}),
        ));
        api.put(nginx("nginx"));
        let got = wait_any_ingress(&api, "default", "nginx").await?;
        assert_eq!(got, ["196.168.220.10"]);
        assert!(asked(&api).1 > 0, "Eips are listed and watched now");
        anyhow::Ok(())
    }
    .await;
    with_logs(&cluster, result)
}
