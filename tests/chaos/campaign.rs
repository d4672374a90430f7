//! The chaos harness in CI: a smoke campaign of 50 faults over every kind (default profile), with
//! the allocation workload running, must find no violation; and three negative controls must be
//! flagged (a checker that never fires proves nothing): answerers that ignore the lease, with
//! the owner partitioned away; a log store that acknowledges without flushing, with every node
//! killed at once; and one node's clock at half speed, cut off while it owns the VIPs. Then a
//! short BGP-mode campaign (with BFD) against BIRD: after every heal the router's routes
//! match the table.
//!
//! Each run's `timeline.html` is opened in headless Chromium: every lane drawn, and the
//! negative control's violation marked.
//!
//! Needs root, nftables, tc, BIRD, libfaketime and chromium (installed by .ci/run). Longer campaigns: `bash chaos/campaign.sh`.

use std::process::Command;

/// Whether `invariant`'s verdict in summary.json counts violations.
fn flagged(summary: &serde_json::Value, invariant: &str) -> bool {
    summary["verdicts"][invariant]
        .as_str()
        .is_some_and(|v| v.contains("violations"))
}

/// The count a verdict gives in brackets ("ok (N Service states ...)").
fn counted(summary: &serde_json::Value, invariant: &str) -> u64 {
    summary["verdicts"][invariant]
        .as_str()
        .and_then(|v| v.split('(').nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A run's exit code, console text, summary.json and directory.
type Run = (i32, String, serde_json::Value, tempfile::TempDir);

fn campaign(args: &[&str]) -> anyhow::Result<Run> {
    let chaos = raftlb_chaos::build_binary("raftlb-chaos", "raftlb-chaos")?;
    let dir = tempfile::tempdir()?;
    let out = Command::new(chaos)
        .arg("campaign")
        .args(args)
        .arg("--out")
        .arg(dir.path())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = std::fs::read_to_string(dir.path().join("summary.json"))
        .map_err(|e| anyhow::anyhow!("no summary.json ({e}):\n{text}"))?;
    for file in [
        "plan.json",
        "history.jsonl",
        "summary.md",
        "timeline.html",
        "chunk-0/n1.log",
    ] {
        anyhow::ensure!(dir.path().join(file).exists(), "no {file}:\n{text}");
    }
    Ok((
        out.status.code().unwrap_or(-1),
        text,
        serde_json::from_str(&summary)?,
        dir,
    ))
}

/// `timeline.html` as headless Chromium leaves its DOM once the page's script has run.
fn rendered(dir: &std::path::Path) -> anyhow::Result<String> {
    let page = dir.join("timeline.html");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every lane is drawn, with at least one span each.
fn every_lane_drawn(dom: &str) {
    let lanes = [
        "node n1",
        "node n2",
        "node n3",
        "vip 10.77.0.240",
        "vip fd00:77::f0",
        "arp 10.77.0.240",
        "arp fd00:77::f0",
    ];
    for lane in lanes {
        let at = dom
            .find(&format!("data-lane=\"{lane}\""))
            .unwrap_or_else(|| panic!("no lane {lane:?} drawn"));
        let rest = &dom[at..];
        let end = rest.find("</g>").unwrap_or(rest.len());
        assert!(
            rest[..end].contains("class=\"span\""),
            "lane {lane:?} has no span"
        );
    }
}

#[test]
fn a_smoke_campaign_finds_nothing_and_the_negative_control_is_flagged() -> anyhow::Result<()> {
    let (code, text, summary, dir) = campaign(&[
        "--seed",
        "1",
        "--faults",
        "50",
        "--profile",
        "default",
        "--chunk",
        "25",
    ])?;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("violations: 0\n"), "{text}");
    for invariant in [
        "allocation",
        "allocation-model",
        "single-answerer",
        "single-answerer-audit",
        "failover",
        "durability",
        "liveness",
        "logs",
    ] {
        assert!(text.contains(&format!("{invariant}: ok")), "{text}");
    }
    // Every cycle ran, or says why not (no node in the role asked for).
    let skipped = summary["skipped"].as_array().map_or(0, Vec::len) as u64;
    assert_eq!(
        summary["faults_total"].as_u64().unwrap_or(0) + skipped,
        50,
        "{summary}"
    );
    assert!(skipped <= 2, "{summary}");
    for (kind, roles) in summary["faults"].as_object().into_iter().flatten() {
        let n: u64 = roles
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_u64())
            .sum();
        assert!((3..=5).contains(&n), "{kind}: {summary}");
    }
    assert_eq!(summary["faults"].as_object().map_or(0, |o| o.len()), 12);
    // The model compared what the reads showed, and the nodes audited their replies.
    for invariant in ["allocation-model", "single-answerer-audit"] {
        assert!(counted(&summary, invariant) > 100, "{invariant}: {summary}");
    }
    // The workload ran: writes acknowledged, reads of both kinds.
    for op in ["apply ok", "read ok", "read linearizable"] {
        assert!(
            summary["workload"][op].as_u64().unwrap_or(0) > 10,
            "{op}: {summary}"
        );
    }
    // Every heal was followed by a whole cluster, measured, before the next fault.
    let recovered = |field: &str| -> u64 {
        summary["recovered"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v[field].as_u64())
            .sum()
    };
    assert!(recovered("heals") >= 40, "heals: {summary}");
    assert_eq!(
        recovered("missed"),
        0,
        "heals not followed by a whole cluster: {summary}"
    );
    let dom = rendered(dir.path())?;
    every_lane_drawn(&dom);
    assert!(dom.contains("No violation."), "{dom}");
    assert!(!dom.contains("id=\"violation-mark\""));

    // The same checkers on a product broken on purpose.
    let (code, text, summary, dir) = campaign(&[
        "--seed",
        "3",
        "--faults",
        "9",
        "--profile",
        "fast",
        "--kinds",
        "partition",
        "--negative-control",
        "answer-without-lease",
    ])?;
    assert_eq!(code, 0, "the negative control was not flagged:\n{text}");
    assert!(
        text.contains("negative control answer-without-lease: flagged"),
        "{text}"
    );
    // Seen by the client, and in the nodes' own audit (replies after the lease ended).
    for invariant in ["single-answerer", "single-answerer-audit"] {
        assert!(flagged(&summary, invariant), "{invariant}: {summary}");
    }
    assert!(
        text.contains("REPRODUCE: raftlb-chaos campaign --seed 3"),
        "{text}"
    );
    // The page marks it.
    let dom = rendered(dir.path())?;
    every_lane_drawn(&dom);
    assert!(dom.contains("id=\"violation-mark\""), "no violation marked");
    assert!(dom.contains("First violation at"), "{dom}");

    // A log store that acknowledges without flushing, and every node killed at once: the
    // acknowledged writes that were lost must be found.
    let (code, text, summary, _dir) = campaign(&[
        "--seed",
        "5",
        "--faults",
        "6",
        "--kinds",
        "kill-all",
        "--negative-control",
        "no-fsync",
    ])?;
    assert_eq!(code, 0, "the negative control was not flagged:\n{text}");
    assert!(
        text.contains("negative control no-fsync: flagged"),
        "{text}"
    );
    assert!(
        ["allocation", "allocation-model", "durability"]
            .into_iter()
            .any(|i| flagged(&summary, i)),
        "{summary}"
    );

    // One node's clock at half speed, owning the watched VIPs when it is cut off: it answers
    // on a lease the others have seen end.
    let (code, text, summary, _dir) = campaign(&[
        "--seed",
        "3",
        "--faults",
        "6",
        "--kinds",
        "partition",
        "--negative-control",
        "slow-clock",
    ])?;
    assert_eq!(code, 0, "the negative control was not flagged:\n{text}");
    assert!(
        text.contains("negative control slow-clock: flagged"),
        "{text}"
    );
    assert!(flagged(&summary, "single-answerer"), "{summary}");

    // BGP mode with BFD: every kind once, session cuts included; after each heal BIRD's
    // routes for both VIPs are every node again.
    let (code, text, summary, _dir) = campaign(&[
        "--seed", "4", "--faults", "13", "--chunk", "13", "--mode", "bgp-bfd",
    ])?;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("violations: 0\n"), "{text}");
    assert!(text.contains("bgp-routes: ok"), "{text}");
    assert!(
        text.contains("single-answerer: not applicable (BGP mode"),
        "{text}"
    );
    assert_eq!(summary["faults"].as_object().map_or(0, |o| o.len()), 13);
    let heals: u64 = summary["bgp_converge"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v["heals"].as_u64())
        .sum();
    assert_eq!(
        heals,
        summary["faults_total"].as_u64().unwrap_or(0),
        "{summary}"
    );
    Ok(())
}
