//! Layer 2 in the namespace lab (needs root): a client namespace's kernel resolves the VIPs,
//! an observer there asks "who has VIP" every 10 ms and records every answer; any request
//! answered by two MACs, or answers going X -> Y -> X, fails the test.

use std::sync::Mutex;
use std::time::Duration;

use raftlb_chaos::lab::{answers, dual_answers, now_us, probe_hits, Announcer, Lab, VIP4, VIP6};

/// One lab at a time: they share the machine's two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn lab() -> Lab {
    let mut lab = Lab::build(
        3,
        Announcer::Raftlb {
            profile: "default".into(),
        },
    )
    .expect("the lab topology");
    lab.start_raftlb()
        .expect("a raftlb cluster owning both VIPs");
    lab
}

fn owner(lab: &Lab, vip: &str) -> String {
    lab.owner(vip).unwrap().expect("an owner")
}

fn mac_of(lab: &Lab, node: &str) -> String {
    lab.nodes
        .iter()
        .find(|n| n.name == node)
        .unwrap()
        .mac
        .to_lowercase()
}

/// Waits until the table (as the nodes other than `old` see it) names an owner other than
/// `old`; returns it.
fn new_owner(lab: &Lab, vip: &str, old: &str) -> String {
    lab.wait("a new owner", Duration::from_secs(20), |l| {
        Ok(l.owner_seen_by_others(vip, Some(old))?.filter(|o| o != old))
    })
    .unwrap()
}

fn assert_single_answerer(lines: &[String]) -> Vec<raftlb_chaos::lab::Answer> {
    let a = answers(lines);
    assert!(!a.is_empty(), "the observer saw no answer at all");
    let dual = dual_answers(&a);
    assert!(dual.is_empty(), "two answerers: {dual:?}");
    a
}

#[test]
fn a_arping_sees_exactly_the_owners_mac() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = lab();
    let o = owner(&lab, VIP4);
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "arping",
            "-c",
            "3",
            "-w",
            "5",
            "-I",
            "eth0",
            VIP4,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let macs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        macs.len() >= 3,
        "arping saw {} replies:\n{text}",
        macs.len()
    );
    assert!(
        macs.iter().all(|m| *m == mac_of(&lab, &o)),
        "{macs:?} vs owner {o}"
    );
    // The client's kernel resolves the VIP and TCP reaches the owner, for both families.
    assert_eq!(lab.reach(VIP4).unwrap().as_deref(), Some(o.as_str()));
    let o6 = owner(&lab, VIP6);
    assert_eq!(lab.reach(VIP6).unwrap().as_deref(), Some(o6.as_str()));
}

/// When a crash began and when it had taken effect (link down, process killed).
#[derive(Clone, Copy)]
struct Crash {
    start: u64,
    done: u64,
}

/// Crash (SIGKILL + link down) `victim`; returns (observer lines, probe hits, crash times).
fn crash_and_watch(
    lab: &mut Lab,
    vip: &str,
    victim: &str,
) -> (Vec<String>, Vec<(u64, String)>, Crash) {
    let obs = lab.observe(vip, 5000).unwrap();
    let probe = lab.probe(vip, 10, 5000).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let start = now_us();
    lab.crash(victim).unwrap();
    let t0 = Crash {
        start,
        done: now_us(),
    };
    let lines = obs.finish().unwrap();
    let hits = probe_hits(&probe.finish().unwrap());
    (lines, hits, t0)
}

fn check_takeover(
    lab: &Lab,
    vip: &str,
    victim: &str,
    lines: &[String],
    hits: &[(u64, String)],
    crash: Crash,
) {
    let t0 = crash.start;
    let next = new_owner(lab, vip, victim);
    assert_ne!(next, victim);
    let a = assert_single_answerer(lines);
    let victim_mac = mac_of(lab, victim);
    assert!(
        a.iter()
            .all(|x| x.mac != victim_mac || x.time_us < t0 + 50_000),
        "the crashed node answered after its crash"
    );
    let first = hits
        .iter()
        .find(|(t, n)| *t > t0 && *n == next)
        .unwrap_or_else(|| panic!("the probe never reached {next}: {hits:?}"));
    println!(
        "{vip}: {victim} crashed, {next} reached after {} ms",
        (first.0 - t0) / 1000
    );
    // A connection started while the crash was still being carried out (the link goes down
    // first, by a command that takes a few ms) may still reach the victim; none after.
    assert!(
        hits.iter().all(|(t, n)| *t < crash.done || n != victim),
        "the probe reached the crashed node"
    );
}

/// With mutual TLS between the peers and on the admin port (certificates minted as `raftlb up`
/// mints them), failover still follows a crash with one answerer, and a machine without a
/// certificate is refused where the admin with one gets in.
#[test]
fn h_with_mutual_tls_an_owner_crash_moves_the_vip_and_plaintext_is_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::build(
        3,
        Announcer::Raftlb {
            profile: "default".into(),
        },
    )
    .expect("the lab topology");
    lab.secure().expect("the lab's certificates");
    lab.start_raftlb()
        .expect("a raftlb cluster over mutual TLS owning both VIPs");
    // From the client namespace, a machine that is not a peer: the admin's certificate gets
    // in, plaintext to the same port does not.
    let ip = lab.nodes[0].ip.clone();
    let tls_dir = lab.admin_tls_dir().unwrap().display().to_string();
    let https = format!("https://{ip}:7471");
    let admin = lab
        .raftlb_from_client(&["ctl", "--endpoint", &https, "--tls-dir", &tls_dir, "status"])
        .unwrap();
    assert!(
        admin.status.success(),
        "the admin over TLS: {}",
        String::from_utf8_lossy(&admin.stderr)
    );
    let plaintext = lab
        .raftlb_from_client(&["ctl", "--endpoint", &format!("http://{ip}:7471"), "status"])
        .unwrap();
    assert!(
        !plaintext.status.success(),
        "plaintext was let in: {}",
        String::from_utf8_lossy(&plaintext.stdout)
    );
    println!(
        "plaintext refused: {}",
        String::from_utf8_lossy(&plaintext.stderr).trim()
    );
    let victim = owner(&lab, VIP4);
    let (lines, hits, t0) = crash_and_watch(&mut lab, VIP4, &victim);
    check_takeover(&lab, VIP4, &victim, &lines, &hits, t0);
}

#[test]
fn b_owner_crash_moves_the_vip() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = lab();
    let victim = owner(&lab, VIP4);
    let (lines, hits, t0) = crash_and_watch(&mut lab, VIP4, &victim);
    check_takeover(&lab, VIP4, &victim, &lines, &hits, t0);
}

#[test]
fn c_leader_owning_the_vip_is_killed() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = lab();
    let leader = lab.leader().unwrap().expect("a leader");
    lab.move_vip(VIP4, &leader).unwrap();
    let (lines, hits, t0) = crash_and_watch(&mut lab, VIP4, &leader);
    check_takeover(&lab, VIP4, &leader, &lines, &hits, t0);
    let new_leader = lab.leader().unwrap().expect("a new leader");
    assert_ne!(new_leader, leader);
}

/// Cuts the owner of VIP4 off from the other nodes while the client still reaches it.
fn partition_case(one_way: bool, owner_is_leader: bool) {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = lab();
    let victim = if owner_is_leader {
        let l = lab.leader().unwrap().expect("a leader");
        lab.move_vip(VIP4, &l).unwrap();
        l
    } else {
        let l = lab.leader().unwrap().expect("a leader");
        let f = lab.nodes.iter().find(|n| n.name != l).unwrap().name.clone();
        lab.move_vip(VIP4, &f).unwrap();
        f
    };
    let mut lab = lab;
    let obs = lab.observe(VIP4, 6000).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let t0 = now_us();
    lab.partition(&victim, one_way).unwrap();
    let next = new_owner(&lab, VIP4, &victim);
    let lines = obs.finish().unwrap();
    lab.heal().unwrap();
    let a = assert_single_answerer(&lines);
    let (vm, nm) = (mac_of(&lab, &victim), mac_of(&lab, &next));
    let last_old = a.iter().filter(|x| x.mac == vm).map(|x| x.time_us).max();
    let first_new = a.iter().filter(|x| x.mac == nm).map(|x| x.time_us).min();
    let (Some(last_old), Some(first_new)) = (last_old, first_new) else {
        panic!("expected answers from both {victim} and {next}: {a:?}");
    };
    assert!(
        last_old < first_new,
        "the cut-off owner answered after the new owner started"
    );
    println!(
        "cut {} ({}): last answer from {victim} {} ms after the cut, first from {next} {} ms after",
        if one_way { "one way" } else { "both ways" },
        if owner_is_leader {
            "leader"
        } else {
            "follower"
        },
        (last_old.saturating_sub(t0)) / 1000,
        (first_new - t0) / 1000
    );
}

#[test]
fn d_cut_off_owner_stops_before_the_new_one_starts() {
    partition_case(false, false);
}

#[test]
fn d_cut_off_leader_owner_stops_before_the_new_one_starts() {
    partition_case(false, true);
}

#[test]
fn e2_one_way_cut_keeps_one_answerer() {
    partition_case(true, true);
}

#[test]
fn e2_one_way_cut_of_a_follower_keeps_one_answerer() {
    partition_case(true, false);
}

#[test]
fn e_paused_owner_does_not_answer_on_a_stale_lease() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = lab();
    let victim = owner(&lab, VIP4);
    let obs = lab.observe(VIP4, 6000).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.pause(&victim).unwrap();
    let next = new_owner(&lab, VIP4, &victim);
    std::thread::sleep(Duration::from_millis(1500));
    let t_cont = now_us();
    lab.resume(&victim).unwrap();
    let lines = obs.finish().unwrap();
    let a = assert_single_answerer(&lines);
    let vm = mac_of(&lab, &victim);
    assert!(
        a.iter().all(|x| x.mac != vm || x.time_us < t_cont),
        "{victim} answered after SIGCONT on its stale lease"
    );
    assert!(a.iter().any(|x| x.mac == mac_of(&lab, &next)));
}

#[test]
fn f_drain_and_move_are_break_before_make() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = lab();
    let first = owner(&lab, VIP4);
    let target = lab
        .nodes
        .iter()
        .find(|n| n.name != first)
        .unwrap()
        .name
        .clone();
    let obs = lab.observe(VIP4, 8000).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.move_vip(VIP4, &target).unwrap();
    lab.ctl(&["drain", &target]).unwrap();
    let after = new_owner(&lab, VIP4, &target);
    assert_ne!(after, target);
    let lines = obs.finish().unwrap();
    let a = assert_single_answerer(&lines);
    // Gaps between answers of different MACs: bounded, never overlapping.
    let mut gaps = Vec::new();
    for w in a.windows(2) {
        if w[0].mac != w[1].mac {
            gaps.push((w[1].time_us - w[0].time_us) / 1000);
        }
    }
    assert_eq!(gaps.len(), 2, "two handovers expected: {a:?}");
    println!("move then drain: answer gaps {gaps:?} ms (observer asks every 10 ms)");
    assert!(
        gaps.iter().all(|g| *g < 5000),
        "a handover left the VIP dark for {gaps:?} ms"
    );
    let hist = lab.ctl(&["get", "vips", "--history"]).unwrap();
    let causes: Vec<String> = hist["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["vip"] == VIP4)
        .map(|m| m["cause"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        causes.iter().any(|c| c.contains("operator moves it")),
        "{causes:?}"
    );
    assert!(causes.iter().any(|c| c.contains("drained")), "{causes:?}");
}

#[test]
fn g_ipv6_owner_crash_moves_the_vip_over_ndp() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = lab();
    let victim = owner(&lab, VIP6);
    let (lines, hits, t0) = crash_and_watch(&mut lab, VIP6, &victim);
    check_takeover(&lab, VIP6, &victim, &lines, &hits, t0);
}

/// Interfaces each node registered, from `ctl status`.
fn registered(lab: &Lab) -> Vec<(String, Vec<String>)> {
    let s = lab.ctl(&["status"]).unwrap();
    s["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let names = n["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect();
            (n["name"].as_str().unwrap_or("").to_string(), names)
        })
        .collect()
}

/// The peers run without `--interfaces`: discovery finds eth0 in every node and never lo or the
/// NOARP device holding the VIPs; a link added later is used within a rescan, and dropped
/// when it goes.
#[test]
fn h_discovery_uses_eth0_never_the_noarp_device_and_follows_new_links() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = lab();
    let eth0 = vec!["eth0".to_string()];
    let nodes = registered(&lab);
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(nodes.iter().all(|(_, i)| *i == eth0), "{nodes:?}");
    let vips = lab.ctl(&["get", "vips"]).unwrap();
    for v in vips["vips"].as_array().into_iter().flatten() {
        assert_eq!(v["interfaces"], serde_json::json!(["eth0"]), "{v}");
    }

    // A veth pair appears in n1: both ends qualify (up, broadcast, ARP, not enslaved).
    let ns = lab.nodes[0].ns.clone();
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["-n", &ns])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&[
        "link", "add", "lan1", "type", "veth", "peer", "name", "lan2",
    ]);
    ip(&["link", "set", "lan1", "up"]);
    ip(&["link", "set", "lan2", "up"]);
    let n1_has = |want: Vec<String>| {
        move |l: &Lab| {
            Ok(registered(l)
                .into_iter()
                .any(|(n, i)| n == "n1" && i == want)
                .then_some(()))
        }
    };
    let t0 = std::time::Instant::now();
    let want = ["eth0", "lan1", "lan2"].map(String::from).to_vec();
    lab.wait(
        "n1 registers the new links",
        Duration::from_secs(25),
        n1_has(want),
    )
    .unwrap();
    println!("new links registered after {} ms", t0.elapsed().as_millis());
    // Enslaved to a bridge (left down, so the bridge does not qualify either): out.
    ip(&["link", "add", "br9", "type", "bridge"]);
    ip(&["link", "set", "lan2", "master", "br9"]);
    let without_lan2 = ["eth0", "lan1"].map(String::from).to_vec();
    lab.wait(
        "n1 drops the bridge port",
        Duration::from_secs(25),
        n1_has(without_lan2),
    )
    .unwrap();
    // Deleting the pair takes the last one.
    ip(&["link", "delete", "lan1"]);
    ip(&["link", "delete", "br9"]);
    lab.wait(
        "n1 back to eth0 only",
        Duration::from_secs(25),
        n1_has(eth0.clone()),
    )
    .unwrap();
    assert!(registered(&lab).iter().all(|(_, i)| *i == eth0));
}

/// Builds the lab and keeps it for a minute, for poking at by hand (`--ignored`).
#[test]
#[ignore]
fn zz_hold_the_lab_for_a_minute() {
    let _lab = lab();
    std::thread::sleep(Duration::from_secs(60));
}
