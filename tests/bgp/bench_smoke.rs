//! The BGP benchmarks' smoke runs: each at a small size, once per cell, must print a row for
//! every case (figures are not judged here; `bash chaos/bgpbench.sh` and
//! `bash chaos/bgpfailbench.sh` give them).
//!
//! Needs root, bird2, gobgpd and nftables (installed by .ci/run).

use std::process::Command;

/// Runs benchmark binary `name` with `args` and checks that it printed each of `rows`.
fn runs_and_prints(name: &str, args: &[&str], rows: &[&str]) -> anyhow::Result<()> {
    let bench = raftlb_chaos::build_binary("raftlb-chaos", name)?;
    let out = Command::new(bench).args(args).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in rows {
        assert!(text.contains(row), "no row {row:?} in:\n{text}");
    }
    Ok(())
}

#[test]
fn the_bgp_benchmark_runs_and_prints_every_row() -> anyhow::Result<()> {
    runs_and_prints(
        "raftlb-bgpbench",
        &["--sizes", "200", "--runs", "1"],
        &[
            "| raftlb speaker | 200 |",
            "| GoBGP mrt inject | 200 |",
            "| GoBGP rib add loop | 200 |",
            "| raftlb end to end (3 peers) | 200 |",
        ],
    )
}

/// The failure benchmark: one run of two faults.
#[test]
fn the_bgp_failure_benchmark_runs_and_prints_every_row() -> anyhow::Result<()> {
    runs_and_prints(
        "raftlb-bgpfail",
        &["--runs", "1", "--kinds", "kill9,bfd"],
        &[
            "| kill -9 of raftlb | 1 |",
            "| silent cut, BFD 100 ms x 3 | 1 |",
        ],
    )
}
