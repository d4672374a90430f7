//! What a newcomer types: every `ctl` line of README's tour runs as written against
//! `raftlb up`; `ctl get svc -w` resumes on another peer without repeating or losing a change;
//! a `raftlb up` killed with SIGKILL leaves no peer behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raftlb_chaos::{free_port_block, raftlb_binary};

#[path = "harness.rs"]
mod harness;
use harness::{ctl, start_up, stop};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The `ctl` lines of README's tour block, comments stripped.
fn tour_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README.md");
    let tour = readme
        .split("## A tour of `raftlb ctl`")
        .nth(1)
        .expect("README has a tour section");
    let block = tour
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the tour has a sh block");
    block
        .lines()
        .filter(|l| l.starts_with("ctl "))
        .map(|l| l.split(" #").next().unwrap_or(l).trim().to_string())
        .collect()
}

fn endpoints(base: u16) -> String {
    (0..3)
        .map(|i| format!("127.0.0.1:{}", base + 1 + 2 * i))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn every_ctl_line_of_the_readme_tour_runs_as_written() -> anyhow::Result<()> {
    let lines = tour_lines();
    assert!(lines.len() >= 10, "the tour lost its lines: {lines:?}");
    let dir = tempfile::tempdir()?;
    let base = free_port_block(6);
    let (up, _) = start_up(dir.path(), base)?;
    let bin = raftlb_binary()?;
    for line in &lines {
        // `ctl` as README's alias defines it, pointed at this cluster the way README says.
        let script = format!("ctl() {{ '{}' ctl \"$@\"; }}\n{line}", bin.display());
        let out = Command::new("bash")
            .args(["-c", &script])
            .current_dir(ROOT)
            .env("RAFTLB_ENDPOINT", endpoints(base))
            .output()?;
        assert!(
            out.status.success(),
            "`{line}` exited {:?}:\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("ok: {line}");
    }
    stop(up)
}

/// Pids of the peers `raftlb up` started for `data_dir` (our own children, found by their
/// command line).
fn peer_pids(data_dir: &Path) -> Vec<u32> {
    let needle = data_dir.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(" run ") && cmd.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

fn service(name: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n")
}

#[test]
fn watch_resumes_on_another_peer_without_repeating_or_losing_a_change() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_port_block(6);
    let (up, _) = start_up(dir.path(), base)?;
    let mut watch = Command::new(raftlb_binary()?)
        .args(["ctl", "get", "svc", "-w", "-o", "json", "--endpoint"])
        .arg(endpoints(base))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = watch.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut events: Vec<serde_json::Value> = Vec::new();
    let collect = |events: &mut Vec<serde_json::Value>,
                   want: &dyn Fn(&[serde_json::Value]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !want(events) && Instant::now() < deadline {
            if let Ok(v) = rx.recv_timeout(Duration::from_millis(100)) {
                events.push(v);
            }
        }
        want(events)
    };
    let has = |name: &'static str, kind: &'static str| {
        move |ev: &[serde_json::Value]| {
            ev.iter()
                .any(|e| e["type"] == kind && e["object"]["metadata"]["name"] == name)
        }
    };
    let result = (|| -> anyhow::Result<()> {
        anyhow::ensure!(
            collect(&mut events, &has("web", "ADDED")),
            "initial listing: {events:?}"
        );
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, service("before-kill"))?;
        ctl(base, &["apply", "-f", file.to_str().unwrap_or_default()])?;
        anyhow::ensure!(
            collect(&mut events, &has("before-kill", "ADDED")),
            "{events:?}"
        );
        // The watch's peer (the first endpoint) dies.
        let victim = peer_pids(dir.path())
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains("node-1"))
                    .unwrap_or(false)
            })
            .ok_or_else(|| anyhow::anyhow!("peer 1 not found"))?;
        Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()?;
        std::fs::write(&file, service("after-kill"))?;
        let second = format!("127.0.0.1:{}", base + 3);
        let out = Command::new(raftlb_binary()?)
            .args(["ctl", "--endpoint", &second, "apply", "-f"])
            .arg(&file)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::ensure!(
            collect(&mut events, &has("after-kill", "ADDED")),
            "{events:?}"
        );
        // Let any repeat arrive, then count.
        std::thread::sleep(Duration::from_secs(2));
        while let Ok(v) = rx.try_recv() {
            events.push(v);
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for e in &events {
            let key = format!(
                "{} {} {}",
                e["type"], e["object"]["metadata"]["name"], e["object"]["status"]
            );
            *seen.entry(key).or_default() += 1;
        }
        let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        anyhow::ensure!(repeated.is_empty(), "printed twice: {repeated:?}");
        let added: Vec<String> = events
            .iter()
            .filter(|e| e["type"] == "ADDED")
            .map(|e| {
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        anyhow::ensure!(
            added.len() == 7,
            "5 from the example and 2 applied, once each: {added:?}"
        );
        let ip = |name: &str| {
            events
                .iter()
                .rev()
                .find(|e| e["object"]["metadata"]["name"] == name)
                .map(|e| e["object"]["status"]["loadBalancer"]["ingress"][0]["ip"].clone())
        };
        anyhow::ensure!(
            ip("after-kill").is_some_and(|v| v.is_string()),
            "{events:?}"
        );
        println!("watch events: {}", events.len());
        Ok(())
    })();
    let _ = watch.kill();
    let _ = watch.wait();
    drop(up);
    result
}

#[test]
fn up_killed_with_sigkill_leaves_no_peer_running() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_port_block(6);
    let (mut up, _) = start_up(dir.path(), base)?;
    let peers = peer_pids(dir.path());
    assert_eq!(peers.len(), 3, "{peers:?}");
    up.0.kill()?;
    up.0.wait()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = peers.clone();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left.retain(|pid| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid));
    }
    // Never leave them behind, even when the assertion fails.
    for pid in &left {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "peers still running after up was killed: {left:?}"
    );
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Every example under examples/ (MetalLB's and OpenELB's published shapes, Deployments in the
/// same file included) passes `raftlb check`, alone and all together.
#[test]
fn every_example_passes_raftlb_check() -> anyhow::Result<()> {
    let bin = raftlb_binary()?;
    let mut files = Vec::new();
    for dir in ["examples", "examples/metallb", "examples/openelb"] {
        for entry in std::fs::read_dir(format!("{ROOT}/{dir}"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let check = |files: &[std::path::PathBuf]| -> anyhow::Result<String> {
        let mut cmd = Command::new(&bin);
        cmd.arg("check");
        for f in files {
            cmd.arg("-f").arg(f);
        }
        let out = cmd.output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        anyhow::ensure!(
            out.status.success(),
            "raftlb check {files:?}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    };
    for f in &files {
        let out = check(std::slice::from_ref(f))?;
        assert!(out.contains("objects OK"), "{out}");
    }
    // Together: no two examples claim the same addresses or names differently.
    check(&files)?;
    Ok(())
}
