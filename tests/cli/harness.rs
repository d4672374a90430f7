//! `raftlb up` under test, shared by the cli tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftlb_chaos::raftlb_binary;

/// `raftlb up` under test. Dropping it (also when the test fails) sends SIGTERM so `up`
/// stops the peers it started; SIGKILL would orphan them. SIGKILL only if it does not stop.
pub struct Up(pub Child);

impl Up {
    /// SIGTERM, then wait up to 15 s. Returns whether it stopped by itself.
    pub fn terminate(&mut self) -> bool {
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

pub fn start_up(dir: &std::path::Path, base: u16) -> anyhow::Result<(Up, String)> {
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
        .stderr(std::fs::File::create(dir.join("up.stderr"))?)
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
    let stderr = std::fs::read_to_string(dir.join("up.stderr")).unwrap_or_default();
    // The peers' logs live in `dir`, which the test's temporary directory removes: show their
    // ends here so a failure says why a peer exited.
    let mut logs = String::new();
    for id in 1..=3 {
        let log = std::fs::read_to_string(dir.join(format!("node-{id}/raftlb.log")));
        logs.push_str(&format!("--- node-{id}/raftlb.log (last lines)\n"));
        logs.push_str(&raftlb_tests::last_lines(&log.unwrap_or_default(), 20));
    }
    anyhow::bail!("raftlb up did not come up; printed:\n{seen}\nstderr:\n{stderr}\n{logs}")
}

pub fn ctl(base: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(raftlb_binary()?)
        .args(["ctl", "--endpoint", &format!("127.0.0.1:{}", base + 1)])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

pub fn stop(mut up: Up) -> anyhow::Result<()> {
    anyhow::ensure!(up.terminate(), "raftlb up did not stop on SIGTERM");
    Ok(())
}
