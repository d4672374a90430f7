//! The admin API's watch: one listing (pools, Services or VIPs) streamed as the log is applied.
//!
//! The first reply is the whole listing at an applied index no older than the client's
//! `min_index` (so a client that resumes on another peer never sees the past again); each later
//! reply carries the items that differ from what this stream sent before, and the keys that
//! went away. Items are rendered exactly as the list RPCs render them.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::Stream;
use raftlb_proto::admin::{Pool, Service, Vip, WatchReply};
use raftlb_raft_store::store::SharedTable;
use raftlb_raft_store::table::AllocationTable;
use raftlb_raft_store::Raft;
use tonic::Status;

use crate::render::{pool_messages, service_message, vip_messages};

/// Bursts of applied entries within this window go out as one reply.
const COALESCE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Pools,
    Services,
    Vips,
}

impl Resource {
    pub fn parse(text: &str) -> Option<Resource> {
        match text {
            "pools" => Some(Resource::Pools),
            "services" => Some(Resource::Services),
            "vips" => Some(Resource::Vips),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Pool(Pool),
    Service(Service),
    Vip(Vip),
}

fn listing(resource: Resource, table: &AllocationTable) -> BTreeMap<String, Item> {
    match resource {
        Resource::Pools => pool_messages(table)
            .into_iter()
            .map(|p| (p.name.clone(), Item::Pool(p)))
            .collect(),
        Resource::Services => table
            .services()
            .iter()
            .map(|(key, entry)| (key.clone(), Item::Service(service_message(entry))))
            .collect(),
        // No lease column: it changes with time, not with the log.
        Resource::Vips => vip_messages(table, &|_| String::new())
            .into_iter()
            .map(|v| (v.ip.clone(), Item::Vip(v)))
            .collect(),
    }
}

/// The reply that takes a client from `before` to `after`.
fn diff(
    before: &BTreeMap<String, Item>,
    after: &BTreeMap<String, Item>,
    applied_index: u64,
) -> WatchReply {
    let mut reply = WatchReply {
        applied_index,
        ..Default::default()
    };
    for (key, item) in after {
        if before.get(key) != Some(item) {
            match item.clone() {
                Item::Pool(p) => reply.pools.push(p),
                Item::Service(s) => reply.services.push(s),
                Item::Vip(v) => reply.vips.push(v),
            }
        }
    }
    reply.deleted = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    reply
}

fn is_empty(r: &WatchReply) -> bool {
    r.pools.is_empty() && r.services.is_empty() && r.vips.is_empty() && r.deleted.is_empty()
}

struct State {
    raft: Raft,
    table: SharedTable,
    resource: Resource,
    min_index: u64,
    /// What this stream has sent so far; None before the first reply.
    sent: Option<BTreeMap<String, Item>>,
    sent_index: u64,
}

impl State {
    fn read(&self) -> (u64, BTreeMap<String, Item>) {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        let index = t.last_applied.map_or(0, |l| l.index);
        (index, listing(self.resource, &t.table))
    }

    fn applied(&self) -> u64 {
        let t = self.table.read().unwrap_or_else(|p| p.into_inner());
        t.last_applied.map_or(0, |l| l.index)
    }

    /// The next reply, or None when the peer shuts down.
    async fn next(&mut self) -> Option<WatchReply> {
        let mut metrics = self.raft.metrics();
        loop {
            let applied = self.applied();
            let due = match self.sent {
                None => applied >= self.min_index,
                Some(_) => applied > self.sent_index,
            };
            if due {
                tokio::time::sleep(COALESCE).await;
                let (index, now) = self.read();
                let reply = match &self.sent {
                    None => WatchReply {
                        initial: true,
                        ..diff(&BTreeMap::new(), &now, index)
                    },
                    Some(before) => diff(before, &now, index),
                };
                self.sent = Some(now);
                self.sent_index = index;
                if reply.initial || !is_empty(&reply) {
                    return Some(reply);
                }
                continue;
            }
            // Applied entries change the Raft metrics; so do other things, hence the loop.
            metrics.changed().await.ok()?;
        }
    }
}

pub fn stream(
    raft: Raft,
    table: SharedTable,
    resource: Resource,
    min_index: u64,
) -> impl Stream<Item = Result<WatchReply, Status>> + Send + 'static {
    let state = State {
        raft,
        table,
        resource,
        min_index,
        sent: None,
        sent_index: 0,
    };
    futures::stream::unfold(state, |mut state| async move {
        let reply = state.next().await?;
        Some((Ok(reply), state))
    })
}
