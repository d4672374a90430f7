//! The README's main job: `raftlb up -f examples/cluster.yaml` forms a cluster and applies the
//! example; stopped with SIGTERM and started again on the same data dir, it comes back with the
//! same allocations.

use raftlb_chaos::free_port_block;

#[path = "harness.rs"]
mod harness;
use harness::{ctl, start_up, stop};

#[test]
fn up_applies_the_example_and_comes_back_with_its_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Six consecutive ports from a free one; collisions are unlikely on a test machine.
    let base = free_port_block(6);
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
