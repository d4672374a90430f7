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

/// Crash (SIGKILL + link down) `victim`; returns (observer lines, probe hits, kill time).
fn crash_and_watch(
    lab: &mut Lab,
    vip: &str,
    victim: &str,
) -> (Vec<String>, Vec<(u64, String)>, u64) {
    let obs = lab.observe(vip, 5000).unwrap();
    let probe = lab.probe(vip, 10, 5000).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let t0 = now_us();
    lab.crash(victim).unwrap();
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
    t0: u64,
) {
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
    assert!(
        hits.iter().all(|(t, n)| *t < t0 || n != victim),
        "the probe reached the crashed node"
    );
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

/// Builds the lab and keeps it for a minute, for poking at by hand (`--ignored`).
#[test]
#[ignore]
fn zz_hold_the_lab_for_a_minute() {
    let _lab = lab();
    std::thread::sleep(Duration::from_secs(60));
}
