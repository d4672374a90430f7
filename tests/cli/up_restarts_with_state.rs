//! The README's main job: `raftlb up -f examples/cluster.yaml` forms a cluster and applies the
//! example; stopped with SIGTERM and started again on the same data dir, it comes back with the
//! same allocations.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftlb_chaos::{free_port, raftlb_binary};

/// `raftlb up` under test. Dropping it (also when the test fails) sends SIGTERM so `up`
/// stops the peers it started; SIGKILL would orphan them. SIGKILL only if it does not stop.
struct Up(Child);

impl Up {
    /// SIGTERM, then wait up to 15 s. Returns whether it stopped by itself.
    fn terminate(&mut self) -> bool {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if !self.terminate() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start_up(dir: &std::path::Path, base: u16) -> anyhow::Result<(Up, String)> {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/cluster.yaml");
    let mut child = Command::new(raftlb_binary()?)
        .args([
            "up",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
            "-f",
            example,
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let up = Up(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        let line = line?;
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("Ctrl-C stops the cluster") {
            return Ok((up, seen));
        }
    }
    anyhow::bail!("raftlb up did not come up; printed:\n{seen}")
}

fn ctl(base: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(raftlb_binary()?)
        .args([
            "ctl",
            "--endpoint",
            &format!("http://127.0.0.1:{}", base + 1),
        ])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn stop(mut up: Up) -> anyhow::Result<()> {
    anyhow::ensure!(up.terminate(), "raftlb up did not stop on SIGTERM");
    Ok(())
}

#[test]
fn up_applies_the_example_and_comes_back_with_its_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Six consecutive ports from a free one; collisions are unlikely on a test machine.
    let base = free_port().saturating_sub(10).max(20000);
    let (up, printed) = start_up(dir.path(), base)?;
    assert!(printed.contains("5 of 5 services allocated"), "{printed}");
    let first = ctl(base, &["-o", "json", "get", "services"])?;
    let list: serde_json::Value = serde_json::from_str(&first)?;
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    for item in items {
        assert!(
            item["status"]["loadBalancer"]["ingress"][0]["ip"].is_string(),
            "{item}"
        );
        assert!(item["metadata"]["annotations"]["raftlb.io/ip-allocated-from-pool"].is_string());
    }
    stop(up)?;

    let (up, _) = start_up(dir.path(), base)?;
    let second = ctl(base, &["-o", "json", "get", "services"])?;
    assert_eq!(
        first, second,
        "the cluster came back with the same allocations"
    );
    stop(up)?;
    Ok(())
}
