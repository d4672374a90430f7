//! BGPSessionState in `--kube` mode: a real GoBGP 3 on loopback is the peer. The node writes
//! one object per session with what was negotiated, an Event when the session comes up and
//! one when it goes down, and deletes the object when its BGPPeer goes.
//!
//! Needs gobgpd (installed by .ci/run). Traffic stays on 127.0.0.0/8.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use raftlb_chaos::cluster::free_port;
use raftlb_chaos::eventually;
use serde_json::{json, Value};

use crate::apiserver::{ApiServer, Key};
use crate::harness::*;

const GROUP: &str = "raftlb.io/v1alpha1";
/// GoBGP's address: another loopback address than the node's 127.0.0.1.
const ROUTER: &str = "127.0.0.2";

/// gobgpd listening on `ROUTER:port`, passive, for the node at 127.0.0.1; killed on drop.
struct GoBgp(Child);

impl GoBgp {
    fn start(dir: &Path, port: u16) -> anyhow::Result<GoBgp> {
        GoBgp::start_with(dir, port, None)
    }

    /// With `password`, the neighbour requires TCP-MD5 with it.
    fn start_with(dir: &Path, port: u16, password: Option<&str>) -> anyhow::Result<GoBgp> {
        let auth = password.map_or(String::new(), |p| format!("    auth-password = \"{p}\"\n"));
        let config = dir.join("gobgpd.toml");
        std::fs::write(
            &config,
            format!(
                "[global.config]\n  as = 64512\n  router-id = \"{ROUTER}\"\n  port = {port}\n  \
                 local-address-list = [\"{ROUTER}\"]\n\
                 [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"127.0.0.1\"\n    peer-as = 64513\n{auth}  \
                 [neighbors.transport.config]\n    passive-mode = true\n    local-address = \"{ROUTER}\"\n  \
                 [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n"
            ),
        )?;
        let api = format!("--api-hosts=127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("gobgpd.log"))?;
        let child = Command::new("gobgpd")
            .arg("-f")
            .arg(&config)
            .args(["-t", "toml", "-p", &api, "--pprof-disable"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(GoBgp(child))
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for GoBgp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port on `ROUTER` that MetalLB's `peerPort` accepts (1..16384).
fn peer_port() -> anyhow::Result<u16> {
    // Tests of one binary run in parallel: each call starts 100 ports further.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = 10_000 + ((std::process::id() as u16 % 60) * 100 + call * 100) % 6_000;
    (start..16_384)
        .chain(10_000..start)
        .find(|p| std::net::TcpListener::bind((ROUTER, *p)).is_ok())
        .ok_or_else(|| anyhow::anyhow!("no free port below 16384 on {ROUTER}"))
}

fn session_states(api: &ApiServer) -> Vec<Value> {
    api.list(GROUP, "bgpsessionstates")
}

async fn wait_state(api: &ApiServer, name: &str, want: &str) -> anyhow::Result<Value> {
    eventually(
        &format!("BGPSessionState {name} {want}"),
        Duration::from_secs(30),
        || {
            let found = session_states(api)
                .into_iter()
                .find(|o| o["metadata"]["name"] == json!(name))
                .filter(|o| o["status"]["bgpStatus"] == json!(want));
            async move { Ok(found) }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_objects_and_events_follow_the_session() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = peer_port()?;
    let mut router = GoBgp::start(dir.path(), port)?;
    let api = ApiServer::start().await;
    seed(&api);
    api.put(json!({"apiVersion": GROUP, "kind": "BGPPeer",
        "metadata": {"name": "tor", "namespace": NS},
        "spec": {"myASN": 64513, "peerASN": 64512, "peerAddress": ROUTER, "peerPort": port,
                 "holdTime": "9s"}}));
    let cluster = start_cluster(&api, 1).await?;
    let name = "node-1-tor";
    let result = async {
        let up = wait_state(&api, name, "Established").await?;
        let s = &up["status"];
        assert_eq!(
            up["metadata"]["labels"]["raftlb.io/node"],
            json!("node-1"),
            "{up}"
        );
        assert_eq!(
            up["metadata"]["labels"]["raftlb.io/peer"],
            json!("tor"),
            "{up}"
        );
        assert_eq!(
            (
                &s["node"],
                &s["peer"],
                &s["peerASN"],
                &s["holdTime"],
                &s["connection"]
            ),
            (
                &json!("node-1"),
                &json!("tor"),
                &json!(64512),
                &json!(9),
                &json!("outbound")
            ),
            "{up}"
        );
        assert_eq!(s["families"], json!(["ipv4-unicast"]), "{up}");
        assert_eq!(s["bfdStatus"], json!("N/A"), "{up}");
        assert!(
            !s["establishedSince"].as_str().unwrap_or("").is_empty(),
            "{up}"
        );
        eventually("a BGPSessionUp event", Duration::from_secs(10), || {
            let n = count_events(&api, "BGPSessionState", name, "BGPSessionUp");
            async move { Ok((n == 1).then_some(())) }
        })
        .await?;

        // The router goes away: the object says so, with the reason, and a Warning is posted.
        router.kill();
        let down = eventually(
            "the session to leave Established",
            Duration::from_secs(30),
            || {
                let found = session_states(&api)
                    .into_iter()
                    .find(|o| o["metadata"]["name"] == json!(name))
                    .filter(|o| o["status"]["bgpStatus"] != json!("Established"));
                async move { Ok(found) }
            },
        )
        .await?;
        assert!(
            !down["status"]["lastError"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{down}"
        );
        assert_eq!(down["status"]["downs"], json!(1), "{down}");
        eventually("a BGPSessionDown event", Duration::from_secs(10), || {
            let n = count_events(&api, "BGPSessionState", name, "BGPSessionDown");
            async move { Ok((n == 1).then_some(())) }
        })
        .await?;

        // The BGPPeer goes: so does the object.
        api.delete(&Key::new(GROUP, "bgppeers", NS, "tor"));
        eventually("the object deleted", Duration::from_secs(30), || {
            let n = session_states(&api).len();
            async move { Ok((n == 0).then_some(())) }
        })
        .await?;
        assert_eq!(
            count_events(&api, "BGPSessionState", name, "BGPSessionUp"),
            1
        );
        Ok(())
    }
    .await;
    with_logs(&cluster, result)
}

/// `passwordSecret`: the node reads the Secret (never the table) and signs its session with
/// it; GoBGP requires TCP-MD5 with that password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_secret_signs_the_session() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = peer_port()?;
    let _router = GoBgp::start_with(dir.path(), port, Some("from-a-Secret"))?;
    let api = ApiServer::start().await;
    seed(&api);
    api.put(json!({"apiVersion": GROUP, "kind": "BGPPeer",
        "metadata": {"name": "tor", "namespace": NS},
        "spec": {"myASN": 64513, "peerASN": 64512, "peerAddress": ROUTER, "peerPort": port,
                 "holdTime": "9s", "passwordSecret": {"name": "tor-auth"}}}));
    let cluster = start_cluster(&api, 1).await?;
    let result = async {
        // No Secret yet: the session waits instead of running unsigned.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            session_states(&api).is_empty(),
            "{:?}",
            session_states(&api)
        );
        api.put(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": "tor-auth", "namespace": NS},
            "data": {"password": "ZnJvbS1hLVNlY3JldA=="}}),
        );
        wait_state(&api, "node-1-tor", "Established").await?;
        // The password is in no log line.
        for p in &cluster.peers {
            assert!(
                !p.log().contains("from-a-Secret"),
                "the password was logged"
            );
        }
        Ok(())
    }
    .await;
    with_logs(&cluster, result)
}

/// OpenELB's BgpConf and BgpPeer, served once OpenELB's CRDs are installed: the BgpPeer drives
/// the same session (its BGPSessionState names it), and one raftlb refuses gets an Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openelb_bgp_objects_drive_a_session() -> anyhow::Result<()> {
    use crate::apiserver::OPENELB;
    let dir = tempfile::tempdir()?;
    let port = peer_port()?;
    let _router = GoBgp::start(dir.path(), port)?;
    let api = ApiServer::start().await;
    seed(&api);
    let cluster = start_cluster(&api, 1).await?;
    let result = async {
        api.install_openelb();
        // OpenELB's sample BgpConf (its listenPort too) and BgpPeer, on this lab's addresses.
        api.put(json!({"apiVersion": OPENELB, "kind": "BgpConf",
            "metadata": {"name": "default"},
            "spec": {"as": 64513, "listenPort": 17900, "routerId": "172.22.0.10"}}));
        api.put(json!({"apiVersion": OPENELB, "kind": "BgpPeer",
            "metadata": {"name": "bgppeer-sample"},
            "spec": {"conf": {"peerAs": 64512, "neighborAddress": ROUTER},
                     "transport": {"remotePort": port},
                     "timers": {"config": {"holdTime": "9", "keepaliveInterval": "3"}},
                     "afiSafis": [{"config": {"family": {"afi": "AFI_IP", "safi": "SAFI_UNICAST"},
                                              "enabled": true},
                                   "addPaths": {"config": {"sendMax": 10}}}]}}));
        api.put(json!({"apiVersion": OPENELB, "kind": "BgpPeer",
            "metadata": {"name": "in-a-vrf"},
            "spec": {"conf": {"peerAs": 64512, "neighborAddress": "127.0.0.3", "vrf": "red"}}}));
        let up = wait_state(&api, "node-1-bgppeer-sample", "Established").await?;
        let s = &up["status"];
        assert_eq!(
            (&s["peer"], &s["peerASN"], &s["holdTime"]),
            (&json!("bgppeer-sample"), &json!(64512), &json!(9)),
            "{up}"
        );
        eventually(
            "the refused BgpPeer's event",
            Duration::from_secs(30),
            || {
                let n = count_events(&api, "BgpPeer", "in-a-vrf", "InvalidConfiguration");
                async move { Ok((n == 1).then_some(())) }
            },
        )
        .await?;
        let (_, message) = events(&api, "BgpPeer", "in-a-vrf")
            .into_iter()
            .find(|(reason, _)| reason == "InvalidConfiguration")
            .unwrap();
        assert!(message.contains("spec.conf.vrf"), "{message}");
        assert_eq!(
            session_states(&api).len(),
            1,
            "no session for the refused peer"
        );
        // The BgpPeer goes: so does its session's object.
        api.delete(&Key::new(OPENELB, "bgppeers", "", "bgppeer-sample"));
        eventually("the object deleted", Duration::from_secs(30), || {
            let n = session_states(&api).len();
            async move { Ok((n == 0).then_some(())) }
        })
        .await?;
        Ok(())
    }
    .await;
    with_logs(&cluster, result)
}
