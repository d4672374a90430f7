//! The history of a campaign: JSON lines, every time on the lab's one clock
//! ([`crate::lab::now_us`], CLOCK_MONOTONIC in microseconds). The checkers read nothing else,
//! so `raftlb-chaos check DIR` can judge a recorded run again.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::plan::{FaultKind, Role};

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// A fault begins: its cycle, kind and target (`node`: None for cluster-wide faults), and
    /// who led and who owned each watched VIP just before.
    FaultStart {
        t: u64,
        cycle: usize,
        kind: FaultKind,
        role: Role,
        node: Option<String>,
        leader: Option<String>,
        owners: BTreeMap<String, String>,
        /// The cycle's strength (loss percent, squeeze kbit/s, flaps, transfers).
        #[serde(default)]
        strength: u32,
    },
    /// The fault is healed (restarted, resumed, partition removed, ...).
    FaultEnd { t: u64, cycle: usize },
    /// A cycle that could not run as planned, and why (a mechanism missing on this machine,
    /// no node in the role asked for).
    Skipped {
        t: u64,
        cycle: usize,
        kind: FaultKind,
        reason: String,
    },
    /// One TCP probe attempt to a VIP from the client: the node that answered, or None.
    Probe {
        t: u64,
        vip: String,
        node: Option<String>,
    },
    /// An ARP/NDP answer for a VIP seen at the client: to the observer's request `request`,
    /// or unsolicited (None); `node` is the lab node owning `mac`, if any.
    Answer {
        t: u64,
        vip: String,
        request: Option<u64>,
        mac: String,
        node: Option<String>,
        /// For an announcement: the newest request the observer had sent when it arrived.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_before: Option<u64>,
    },
    /// A node's own audit line ([`raftlb_actors::responder::AUDIT_FILE`]): `what` is reply,
    /// register or withdraw; a reply carries the lease deadline it was sent under.
    Audit {
        t: u64,
        node: String,
        vip: String,
        what: String,
        deadline: Option<u64>,
    },
    /// BGP mode, after a cycle's heal at `t`: how long until the router's routes for every
    /// watched VIP matched the table again (None: not within the bound; `detail` says how
    /// they differed).
    Routes {
        t: u64,
        cycle: usize,
        converged_ms: Option<u64>,
        detail: String,
    },
    /// After a cycle's heal: ms until the cluster was whole again (every node following one
    /// leader, every lease renewal reaching it; None: not within the wait). The next fault
    /// waits for it, so a failover bound is measured from a whole cluster, and what a fault
    /// leaves behind after its heal is measured here.
    Whole {
        t: u64,
        cycle: usize,
        after_ms: Option<u64>,
    },
    /// After a cycle's heal: a node whose process had exited on its own was started again
    /// (the harness plays the kubelet); `error` if it would not start.
    Restarted {
        t: u64,
        cycle: usize,
        node: String,
        error: Option<String>,
    },
    /// One change of a watched VIP's owner as the table's history has it at the chunk's end:
    /// the leader's wall-clock time of the change, put on the lab's monotonic clock.
    Move {
        t: u64,
        vip: String,
        epoch: u64,
        /// The new owner; None: released.
        to: Option<String>,
    },
    /// A node's state after a chunk's final heal: applied index and table digest (None: it
    /// did not answer). Each chunk runs its own cluster.
    Final {
        t: u64,
        chunk: usize,
        node: String,
        digest_index: Option<u64>,
        digest: Option<String>,
        leader: Option<u64>,
    },
    /// Whether the cluster was live within the bound after a chunk's final heal: one leader,
    /// every watched VIP answered by its owner.
    Liveness {
        t: u64,
        chunk: usize,
        ok: bool,
        detail: String,
    },
    /// A chunk's cluster is done with (its last fault's window ends here).
    ChunkEnd { t: u64, chunk: usize },
    /// A line from a node's log that must never appear (a panic).
    BadLog { node: String, line: String },
    /// One workload operation ([`super::workload`]): invoked at `t`, completed at `end`.
    Op {
        t: u64,
        end: u64,
        client: usize,
        /// The operation's id, `CLIENT-SEQ` (a write carries it in its manifest).
        #[serde(default)]
        id: Option<String>,
        /// apply, delete or read.
        f: String,
        /// The Service written (not for reads).
        key: Option<String>,
        /// ok, fail (it did not happen) or unknown (it may have).
        outcome: String,
        /// A write's log index.
        log_index: Option<u64>,
        /// The applied index a read answered at.
        applied_index: Option<u64>,
        linearizable: bool,
        /// A write's answer: the Service's addresses.
        ips: Vec<String>,
        /// A read's answer: every workload Service holding addresses.
        holders: Vec<super::workload::Holder>,
        error: Option<String>,
    },
}

impl Event {
    /// The time of the event, if it has one.
    pub fn time(&self) -> Option<u64> {
        match self {
            Event::FaultStart { t, .. }
            | Event::FaultEnd { t, .. }
            | Event::Skipped { t, .. }
            | Event::Probe { t, .. }
            | Event::Answer { t, .. }
            | Event::Audit { t, .. }
            | Event::Routes { t, .. }
            | Event::Whole { t, .. }
            | Event::Restarted { t, .. }
            | Event::Move { t, .. }
            | Event::Final { t, .. }
            | Event::Liveness { t, .. }
            | Event::ChunkEnd { t, .. }
            | Event::Op { t, .. } => Some(*t),
            Event::BadLog { .. } => None,
        }
    }
}

impl Event {
    /// The same event `by` µs later (a resumed campaign's history continues after the one it
    /// resumes, also across a reboot, which restarts the monotonic clock).
    pub fn shifted(mut self, by: u64) -> Event {
        match &mut self {
            Event::FaultStart { t, .. }
            | Event::FaultEnd { t, .. }
            | Event::Skipped { t, .. }
            | Event::Probe { t, .. }
            | Event::Answer { t, .. }
            | Event::Routes { t, .. }
            | Event::Whole { t, .. }
            | Event::Restarted { t, .. }
            | Event::Move { t, .. }
            | Event::Final { t, .. }
            | Event::Liveness { t, .. }
            | Event::ChunkEnd { t, .. } => *t += by,
            Event::Audit { t, deadline, .. } => {
                *t += by;
                if let Some(d) = deadline {
                    *d += by;
                }
            }
            Event::Op { t, end, .. } => {
                *t += by;
                *end += by;
            }
            Event::BadLog { .. } => {}
        }
        self
    }
}

/// Appends events to `history.jsonl`.
pub struct Writer {
    file: std::io::BufWriter<std::fs::File>,
}

impl Writer {
    pub fn append(path: &Path) -> anyhow::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Writer {
            file: std::io::BufWriter::new(file),
        })
    }

    pub fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.file, event)?;
        self.file.write_all(b"\n")?;
        Ok(())
    }

    pub fn write_all<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> anyhow::Result<()> {
        for e in events {
            self.write(e)?;
        }
        self.file.flush()?;
        Ok(())
    }
}

/// Reads a history back, sorted by time (events without a time last, in file order).
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        out.push(e);
    }
    out.sort_by_key(|e| e.time().unwrap_or(u64::MAX));
    Ok(out)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Event;

    /// A workload write as the history records it: invoked at `t`, answered 5 µs later, its
    /// log index kept only when acknowledged.
    pub fn write(
        t: u64,
        id: Option<&str>,
        f: &str,
        key: &str,
        outcome: &str,
        index: u64,
        ips: &[&str],
    ) -> Event {
        Event::Op {
            t,
            end: t + 5,
            client: 0,
            id: id.map(str::to_string),
            f: f.into(),
            key: Some(key.into()),
            outcome: outcome.into(),
            log_index: (outcome == "ok").then_some(index),
            applied_index: None,
            linearizable: false,
            ips: ips.iter().map(|i| i.to_string()).collect(),
            holders: vec![],
            error: None,
        }
    }
}
