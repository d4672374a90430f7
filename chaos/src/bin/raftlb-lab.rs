//! `raftlb-lab`: the layer-2 demo for a newcomer (root). Builds the namespace lab (a bridge,
//! 3 nodes with the VIPs on a NOARP device, 1 client), starts a raftlb cluster, shows the
//! client reaching the VIP's owner over TCP, kills the owner, shows the takeover, and tears
//! everything down, also on Ctrl-C or SIGTERM (the current step finishes first).
//!
//! `raftlb-lab [--profile default|fast]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use raftlb_chaos::lab::{interrupted, now_us, probe_hits, Announcer, Lab, VIP4, VIP6};

fn show_vips(lab: &Lab) -> anyhow::Result<()> {
    let v = lab.ctl(&["get", "vips"])?;
    for vip in v["vips"].as_array().into_iter().flatten() {
        println!(
            "    {:<14} owner {:<3} epoch {:<2} lease {}",
            vip["ip"].as_str().unwrap_or(""),
            vip["owner"].as_str().unwrap_or("-"),
            vip["epoch"],
            vip["lease"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

fn demo(lab: &mut Lab, stop: &AtomicBool) -> anyhow::Result<()> {
    let step = |s: &str| {
        if stop.load(Ordering::SeqCst) {
            anyhow::bail!("interrupted");
        }
        println!("\n== {s}");
        Ok(())
    };
    step("starting 3 raftlb peers, one per node namespace, answering ARP/NDP on eth0")?;
    lab.start_raftlb()?;
    println!("    leader: {}", lab.leader()?.unwrap_or_default());
    show_vips(lab)?;

    step("the client's kernel resolves the VIPs and connects over TCP")?;
    for vip in [VIP4, VIP6] {
        let who = lab
            .reach(vip)?
            .context("the client could not reach the VIP")?;
        println!("    client -> {vip}:8080 answered by {who}");
    }

    let owner = lab.owner(VIP4)?.context("an owner")?;
    step(&format!(
        "killing the owner of {VIP4} ({owner}): SIGKILL and its link down"
    ))?;
    let probe = lab.probe(VIP4, 10, 3000)?;
    std::thread::sleep(Duration::from_millis(300));
    let t0 = now_us();
    lab.crash(&owner)?;
    let hits = probe_hits(&probe.finish()?);
    match hits.iter().find(|(t, n)| *t > t0 && *n != owner) {
        Some((t, n)) => println!(
            "    client reached {n} {} ms after the crash (TCP probe every 10 ms)",
            (t - t0) / 1000
        ),
        None => println!("    no takeover within 3 s"),
    }
    step("the table after the takeover")?;
    show_vips(lab)?;
    let hist = lab.ctl(&["get", "vips", "--history"])?;
    for m in hist["history"].as_array().into_iter().flatten() {
        println!(
            "    {} epoch {}: {} -> {} ({})",
            m["vip"].as_str().unwrap_or(""),
            m["epoch"],
            m["from"].as_str().filter(|s| !s.is_empty()).unwrap_or("-"),
            m["to"].as_str().filter(|s| !s.is_empty()).unwrap_or("-"),
            m["cause"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let profile = args
        .iter()
        .position(|a| a == "--profile")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "default".into());
    let stop = interrupted();
    let code = match Lab::build(3, Announcer::Raftlb { profile }) {
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
        Ok(mut lab) => {
            println!(
                "lab {}: bridge, nodes n1..n3 (10.77.0.11-13, VIPs on lbvip0), client 10.77.0.100",
                lab.prefix
            );
            let r = demo(&mut lab, &stop);
            println!("\n== tearing down: processes by PID, then the namespaces");
            drop(lab);
            match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
