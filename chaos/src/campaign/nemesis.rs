//! Injects one cycle's fault into the lab and heals it, recording both ends in the history.

use std::time::Duration;

use super::history::Event;
use super::plan::{Cycle, FaultKind, Mode, Role};
use crate::lab::{now_us, owner_in, Lab, VIP4, VIP6};

/// The VIPs every campaign watches (the standard configuration's dual-stack Service).
pub const WATCHED: [&str; 2] = [VIP4, VIP6];

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Who leads and who owns each watched VIP, as the cluster says now: linearizable reads, so
/// a node that just restarted and has not caught up cannot answer with a stale table.
fn roles(lab: &Lab) -> (Option<String>, std::collections::BTreeMap<String, String>) {
    let leader = lab
        .ctl(&["status", "--linearizable"])
        .ok()
        .and_then(|s| lab.leader_in(&s));
    let vips = lab
        .ctl(&["get", "vips", "--linearizable"])
        .unwrap_or_default();
    let owners = WATCHED
        .iter()
        .filter_map(|vip| Some((vip.to_string(), owner_in(&vips, vip)?)))
        .collect();
    (leader, owners)
}

/// The node `role` names now: the leader, the first VIP's owner, or a node that is neither.
fn target(
    lab: &Lab,
    role: Role,
    leader: &Option<String>,
    owner: Option<&String>,
) -> Option<String> {
    match role {
        Role::Leader => leader.clone(),
        Role::Owner => owner.cloned(),
        Role::Follower => lab
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .find(|n| Some(n) != leader.as_ref() && Some(n) != owner),
        Role::Cluster => None,
    }
}

/// Runs one cycle: quiet, then the fault, held, then healed. Returns its events; a fault
/// that cannot run is one `Skipped` event saying why. In BGP mode every node announces:
/// no VIP has an owner.
pub fn run_cycle(lab: &mut Lab, cycle: &Cycle, mode: Mode) -> Vec<Event> {
    sleep_ms(cycle.quiet_ms);
    // Roles can be in flux right after a heal (an election): asked again for up to 3 s.
    let asked = std::time::Instant::now();
    let (leader, owners, node) = loop {
        let (leader, mut owners) = roles(lab);
        if mode.bgp() {
            owners.clear();
        }
        let node = target(lab, cycle.role, &leader, owners.get(VIP4));
        let resolved = leader.is_some()
            && (mode.bgp() || owners.len() == WATCHED.len())
            && (node.is_some() || !cycle.kind.targeted());
        if resolved || asked.elapsed() > Duration::from_secs(3) {
            break (leader, owners, node);
        }
        sleep_ms(100);
    };
    let skipped = |reason: String| {
        vec![Event::Skipped {
            t: now_us(),
            cycle: cycle.index,
            kind: cycle.kind,
            reason,
        }]
    };
    if cycle.kind.targeted() && node.is_none() {
        return skipped(format!("no node is the {} now", cycle.role.as_str()));
    }
    let mut events = vec![Event::FaultStart {
        t: now_us(),
        cycle: cycle.index,
        kind: cycle.kind,
        role: cycle.role,
        node: node.clone(),
        leader: leader.clone(),
        owners,
        strength: cycle.strength,
    }];
    let result = inject_hold_heal(lab, cycle, node.as_deref().unwrap_or_default(), &leader);
    events.push(Event::FaultEnd {
        t: now_us(),
        cycle: cycle.index,
    });
    if let Err(e) = result {
        events.push(Event::Skipped {
            t: now_us(),
            cycle: cycle.index,
            kind: cycle.kind,
            reason: format!("the fault did not run as planned: {e:#}"),
        });
    }
    events
}

fn inject_hold_heal(
    lab: &mut Lab,
    cycle: &Cycle,
    node: &str,
    leader: &Option<String>,
) -> anyhow::Result<()> {
    let hold = cycle.hold_ms;
    match cycle.kind {
        FaultKind::Kill => {
            lab.kill(node);
            sleep_ms(hold);
            lab.start(node)?;
        }
        FaultKind::Crash => {
            lab.crash(node)?;
            sleep_ms(hold);
            lab.link(node, true)?;
            lab.start(node)?;
        }
        FaultKind::Pause => {
            lab.pause(node)?;
            sleep_ms(hold);
            lab.resume(node)?;
        }
        FaultKind::Partition | FaultKind::PartitionOneWay => {
            lab.partition(node, cycle.kind == FaultKind::PartitionOneWay)?;
            sleep_ms(hold);
            lab.heal()?;
        }
        FaultKind::LinkFlap => {
            let flaps = u64::from(cycle.strength.max(1));
            let each = (hold / flaps / 2).max(20);
            for _ in 0..flaps {
                lab.link(node, false)?;
                sleep_ms(each);
                lab.link(node, true)?;
                sleep_ms(each);
            }
        }
        FaultKind::Loss => {
            lab.loss(node, cycle.strength)?;
            sleep_ms(hold);
            lab.clear_loss()?;
        }
        FaultKind::Squeeze => {
            lab.squeeze(node, cycle.strength)?;
            sleep_ms(hold);
            lab.unsqueeze(node)?;
        }
        FaultKind::TransferStorm => {
            let transfers = u64::from(cycle.strength.max(1));
            let n = lab.nodes.len();
            let mut current = leader
                .as_ref()
                .and_then(|l| lab.nodes.iter().position(|x| &x.name == l))
                .unwrap_or(0);
            for _ in 0..transfers {
                current = (current + 1) % n;
                let id = (current + 1).to_string();
                // A transfer refused mid-election is part of the storm, not a harness error.
                let _ = lab.ctl(&["transfer-leader", &id]);
                sleep_ms(hold / transfers);
            }
        }
        FaultKind::SessionCut => {
            lab.cut_bgp(node)?;
            sleep_ms(hold);
            lab.uncut_bgp()?;
        }
        FaultKind::DiskFull => {
            lab.fill_disk(node)?;
            sleep_ms(hold);
            // A node that stopped itself on the full disk is restarted by the supervisor
            // (`whole_after_heal`), as a kubelet would, and the restart recorded.
            lab.free_disk(node)?;
        }
        FaultKind::KillAll => {
            let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
            for name in &names {
                lab.kill(name);
            }
            sleep_ms(hold);
            for name in &names {
                lab.start(name)?;
            }
        }
        FaultKind::RollingRestart => {
            let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
            let each = hold / names.len() as u64;
            for name in names {
                lab.stop(&name, Duration::from_secs(10))?;
                lab.start(&name)?;
                // The next one only once this one is back in the cluster.
                lab.wait(&format!("{name} back"), Duration::from_secs(20), |l| {
                    let s = l.ctl_at(&name, &["status"])?;
                    Ok(s["leader"].as_u64().map(|_| ()))
                })?;
                sleep_ms(each);
            }
        }
    }
    Ok(())
}

/// Moves every watched VIP to `node` and waits (up to 5 s) until the table says so: a
/// negative control's set-up, so the faults on the owner hit the node it broke.
pub fn move_watched_to(lab: &Lab, node: &str) {
    for vip in WATCHED {
        let _ = lab.ctl(&["move", vip, node]);
    }
    let _ = lab.wait(
        &format!("the watched VIPs on {node}"),
        Duration::from_secs(5),
        |l| {
            let (_, owners) = roles(l);
            Ok(owners.values().all(|o| o == node).then_some(()))
        },
    );
}

/// Undoes whatever a failed cycle may have left behind, and restarts stopped nodes.
pub fn heal_all(lab: &mut Lab) {
    let _ = lab.heal();
    let _ = lab.clear_loss();
    let _ = lab.uncut_bgp();
    let names: Vec<String> = lab.nodes.iter().map(|n| n.name.clone()).collect();
    for name in names {
        let _ = lab.free_disk(&name);
        let _ = lab.unsqueeze(&name);
        let _ = lab.link(&name, true);
        let _ = lab.resume(&name);
        if !lab.running(&name) {
            let _ = lab.start(&name);
        }
    }
}
