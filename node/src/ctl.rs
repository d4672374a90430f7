//! `raftlb ctl`: the admin API's command-line client. Table output by default, `-o json|yaml`
//! for tools; Service listings in JSON/YAML are a kubectl-shaped `v1` List.

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::*;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::admin::now_ms;
use crate::render::{age, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Cluster status: members, roles, leader, term, log and applied indexes.
    Status,
    /// Apply a multi-document manifest (file or - for stdin), atomically.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Delete the objects a manifest names, atomically.
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// List pools, services, vips or events.
    Get {
        what: GetWhat,
        /// events: only this object, e.g. Service/default/web
        #[arg(long)]
        object: Option<String>,
        /// vips: also the recent changes of owner (time, from, to, cause).
        #[arg(long)]
        history: bool,
    },
    /// Move every VIP off a node, break-before-make (--undo lets it own VIPs again).
    Drain {
        node: String,
        #[arg(long)]
        undo: bool,
    },
    /// Move one VIP to a node, break-before-make.
    Move { vip: String, node: String },
    /// Membership changes.
    Members {
        #[command(subcommand)]
        op: MembersOp,
    },
    /// Hand Raft leadership to another voter.
    TransferLeader { id: u64 },
    /// Build a snapshot now (the log before it is purged).
    Snapshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GetWhat {
    Pools,
    Services,
    Vips,
    Events,
}

#[derive(Debug, clap::Subcommand)]
pub enum MembersOp {
    /// Add a learner: ID and its Raft address IP:PORT.
    AddLearner { id: u64, addr: String },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a member (voter or learner).
    Remove { id: u64 },
}

/// Connects to the first endpoint that answers.
pub async fn connect(endpoints: &str) -> anyhow::Result<AdminClient<Channel>> {
    let mut errors = Vec::new();
    for url in endpoints
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        let endpoint = match tonic::transport::Endpoint::from_shared(url.to_string()) {
            Ok(e) => e.connect_timeout(Duration::from_secs(2)),
            Err(e) => {
                errors.push(format!("{url}: not a URL ({e})"));
                continue;
            }
        };
        match endpoint.connect().await {
            Ok(ch) => {
                return Ok(AdminClient::new(ch)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20))
            }
            Err(e) => errors.push(format!(
                "{url}: {}",
                std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string())
            )),
        }
    }
    bail!("no admin endpoint answered: {}", errors.join("; "))
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", s.message())
}

fn print(output: Output, value: &Value, table_text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match output {
        Output::Table => println!("{}", table_text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
    }
    Ok(())
}

fn read_manifest(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("{file}: cannot read"))
    }
}

fn members_value(members: &[Member]) -> Value {
    json!(members
        .iter()
        .map(|m| json!({"id": m.id, "addr": m.addr, "voter": m.voter, "matchedIndex": m.matched_index}))
        .collect::<Vec<_>>())
}

fn members_table(members: &[Member], leader: Option<u64>) -> String {
    table(
        &["ID", "ADDRESS", "ROLE", "MATCHED"],
        &members
            .iter()
            .map(|m| {
                let role = if Some(m.id) == leader {
                    "leader"
                } else if m.voter {
                    "voter"
                } else {
                    "learner"
                };
                vec![
                    m.id.to_string(),
                    m.addr.clone(),
                    role.into(),
                    m.matched_index.map_or("-".into(), |i| i.to_string()),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

fn nodes_table(nodes: &[NodeStatus]) -> String {
    table(
        &[
            "NODE",
            "RAFT-ID",
            "LIVENESS",
            "VIPS",
            "INTERFACES",
            "LAST-RENEWAL",
            "LEASE-LEFT",
        ],
        &nodes
            .iter()
            .map(|n| {
                let liveness = match (n.live, n.draining) {
                    (false, _) => "down",
                    (true, true) => "live, drained",
                    (true, false) => "live",
                };
                vec![
                    n.name.clone(),
                    n.raft_id.to_string(),
                    liveness.into(),
                    n.vips.to_string(),
                    if n.interfaces.is_empty() {
                        "-".into()
                    } else {
                        n.interfaces.join(",")
                    },
                    n.since_renewal_ms
                        .map_or("-".into(), |m| format!("{m} ms ago")),
                    n.lease_left_ms
                        .map_or("unknown".into(), |m| format!("{m} ms")),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

pub async fn run(endpoints: &str, output: Output, command: CtlCommand) -> anyhow::Result<()> {
    let mut client = connect(endpoints).await?;
    match command {
        CtlCommand::Status => {
            let s = client
                .status(StatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let value = json!({
                "id": s.id, "role": s.role, "term": s.term, "leader": s.leader_id,
                "lastLogIndex": s.last_log_index, "appliedIndex": s.applied_index,
                "snapshotIndex": s.snapshot_index, "purgedIndex": s.purged_index,
                "configGeneration": s.config_generation, "services": s.services,
                "pendingServices": s.pending_services, "pools": s.pools,
                "millisSinceQuorumAck": s.millis_since_quorum_ack,
                "loadBalancerClass": s.load_balancer_class,
                "members": members_value(&s.members),
                "nodes": s.nodes.iter().map(|n| json!({
                    "name": n.name, "raftId": n.raft_id, "live": n.live, "draining": n.draining,
                    "interfaces": n.interfaces, "labels": n.labels, "vips": n.vips,
                    "sinceRenewalMs": n.since_renewal_ms, "leaseLeftMs": n.lease_left_ms,
                    "appliedIndex": n.applied_index,
                })).collect::<Vec<_>>(),
            });
            print(output, &value, || {
                format!(
                    "node {} is {} (term {}, leader {})\nlog {} applied {} snapshot {} purged {}\nconfig generation {}, {} pools, {} services ({} pending)\n\n{}",
                    s.id,
                    s.role,
                    s.term,
                    s.leader_id.map_or("none".into(), |l| l.to_string()),
                    s.last_log_index,
                    s.applied_index,
                    s.snapshot_index.map_or("-".into(), |i| i.to_string()),
                    s.purged_index.map_or("-".into(), |i| i.to_string()),
                    s.config_generation,
                    s.pools,
                    s.services,
                    s.pending_services,
                    members_table(&s.members, s.leader_id)
                ) + "\n\n" + &nodes_table(&s.nodes)
            })
        }
        CtlCommand::Apply { file } => apply(&mut client, output, &file, false).await,
        CtlCommand::Delete { file } => apply(&mut client, output, &file, true).await,
        CtlCommand::Get {
            what,
            object,
            history,
        } => get(&mut client, output, what, object, history).await,
        CtlCommand::Drain { .. } | CtlCommand::Move { .. } => {
            let reply = match command {
                CtlCommand::Drain { node, undo } => client.drain(DrainRequest { node, undo }).await,
                CtlCommand::Move { vip, node } => {
                    client.move_vip(MoveVipRequest { vip, node }).await
                }
                _ => unreachable!("matched above"),
            }
            .map_err(status_error)?
            .into_inner();
            print(output, &json!({"message": reply.message}), || {
                reply.message.clone()
            })
        }
        CtlCommand::Members { op } => {
            let reply = match op {
                MembersOp::AddLearner { id, addr } => {
                    client.add_learner(AddLearnerRequest { id, addr }).await
                }
                MembersOp::Promote { id } => client.promote(MemberRequest { id }).await,
                MembersOp::Remove { id } => client.remove_member(MemberRequest { id }).await,
            }
            .map_err(status_error)?
            .into_inner();
            membership_reply(output, reply)
        }
        CtlCommand::TransferLeader { id } => {
            let reply = client
                .transfer_leader(MemberRequest { id })
                .await
                .map_err(status_error)?
                .into_inner();
            membership_reply(output, reply)
        }
        CtlCommand::Snapshot => {
            let r = client
                .trigger_snapshot(SnapshotRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            print(output, &json!({"snapshotIndex": r.last_log_index}), || {
                format!("snapshot built at log index {}", r.last_log_index)
            })
        }
    }
}

fn membership_reply(output: Output, reply: MembershipReply) -> anyhow::Result<()> {
    let value = json!({"message": reply.message, "members": members_value(&reply.members)});
    print(output, &value, || {
        format!(
            "{}\n\n{}",
            reply.message,
            members_table(&reply.members, None)
        )
    })
}

async fn apply(
    client: &mut AdminClient<Channel>,
    output: Output,
    file: &str,
    delete: bool,
) -> anyhow::Result<()> {
    let manifest = read_manifest(file)?;
    let reply = client
        .apply(ApplyRequest {
            manifest,
            delete,
            source: file.to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    for line in &reply.skipped {
        eprintln!("{line}");
    }
    let value = json!({
        "generation": reply.generation,
        "skipped": reply.skipped,
        "changes": reply.changes.iter().map(|c| json!({"kind": c.kind, "namespace": c.namespace, "name": c.name, "action": c.action})).collect::<Vec<_>>(),
        "services": reply.services.iter().map(|s| json!({"namespace": s.namespace, "name": s.name, "state": s.state, "ips": s.ips, "pool": s.pool, "reason": s.reason})).collect::<Vec<_>>(),
    });
    print(output, &value, || {
        let mut lines: Vec<String> = reply
            .changes
            .iter()
            .map(|c| {
                let name = if c.kind == "Service" {
                    format!("{}/{}", c.namespace, c.name)
                } else {
                    c.name.clone()
                };
                format!("{}/{} {}", c.kind.to_lowercase(), name, c.action)
            })
            .collect();
        for s in &reply.services {
            match s.state.as_str() {
                "Allocated" => lines.push(format!(
                    "  service/{}/{}: {} (pool {})",
                    s.namespace,
                    s.name,
                    s.ips.join(","),
                    s.pool
                )),
                _ => lines.push(format!(
                    "  service/{}/{}: {} ({})",
                    s.namespace,
                    s.name,
                    s.state.to_lowercase(),
                    s.reason
                )),
            }
        }
        lines.join("\n")
    })
}

async fn get(
    client: &mut AdminClient<Channel>,
    output: Output,
    what: GetWhat,
    object: Option<String>,
    history: bool,
) -> anyhow::Result<()> {
    match what {
        GetWhat::Pools => {
            let pools = client
                .list_pools(ListRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .pools;
            let fam = |u: &Option<FamilyUsage>| {
                let u = u.clone().unwrap_or_default();
                json!({"size": u.size, "used": u.used, "free": u.free})
            };
            let value = json!(pools
                .iter()
                .map(|p| json!({
                    "name": p.name, "addresses": p.addresses, "autoAssign": p.auto_assign,
                    "avoidBuggyIPs": p.avoid_buggy_ips, "priority": p.priority,
                    "ipv4": fam(&p.ipv4), "ipv6": fam(&p.ipv6),
                }))
                .collect::<Vec<_>>());
            let cell = |u: &Option<FamilyUsage>| {
                let u = u.clone().unwrap_or_default();
                if u.size == "0" {
                    "-".to_string()
                } else {
                    format!("{}/{}/{}", u.size, u.used, u.free)
                }
            };
            print(output, &value, || {
                table(
                    &[
                        "NAME",
                        "ADDRESSES",
                        "AUTO-ASSIGN",
                        "IPV4 SIZE/USED/FREE",
                        "IPV6 SIZE/USED/FREE",
                    ],
                    &pools
                        .iter()
                        .map(|p| {
                            vec![
                                p.name.clone(),
                                p.addresses.join(","),
                                p.auto_assign.to_string(),
                                cell(&p.ipv4),
                                cell(&p.ipv6),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            })
        }
        GetWhat::Services => {
            let services = client
                .list_services(ListRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .services;
            let items: Vec<Value> = services
                .iter()
                .map(|s| serde_json::from_str(&s.kubernetes_json))
                .collect::<Result<_, _>>()?;
            let value = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
            print(output, &value, || {
                table(
                    &[
                        "NAMESPACE",
                        "NAME",
                        "TYPE",
                        "EXTERNAL-IP",
                        "POOL",
                        "STATE",
                        "REASON",
                    ],
                    &services
                        .iter()
                        .map(|s| {
                            vec![
                                s.namespace.clone(),
                                s.name.clone(),
                                s.r#type.clone(),
                                if s.ips.is_empty() {
                                    "<pending>".into()
                                } else {
                                    s.ips.join(",")
                                },
                                if s.pool.is_empty() {
                                    "-".into()
                                } else {
                                    s.pool.clone()
                                },
                                s.state.clone(),
                                s.reason.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            })
        }
        GetWhat::Vips => {
            let list = client
                .list_vips(VipsRequest { history })
                .await
                .map_err(status_error)?
                .into_inner();
            let now = now_ms();
            let value = json!({
                "vips": list.vips.iter().map(|v| json!({
                    "ip": v.ip, "pool": v.pool, "services": v.services, "sharingKey": v.sharing_key,
                    "owner": v.owner, "epoch": v.epoch, "sinceMs": v.since_ms,
                    "interfaces": v.interfaces, "lease": v.lease, "reason": v.reason,
                })).collect::<Vec<_>>(),
                "history": list.history.iter().map(|m| json!({
                    "timeMs": m.time_ms, "vip": m.vip, "epoch": m.epoch, "from": m.from,
                    "to": m.to, "cause": m.cause,
                })).collect::<Vec<_>>(),
            });
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            print(output, &value, || {
                let mut text = table(
                    &[
                        "VIP",
                        "SERVICES",
                        "OWNER",
                        "EPOCH",
                        "SINCE",
                        "INTERFACES",
                        "LEASE",
                        "REASON",
                    ],
                    &list
                        .vips
                        .iter()
                        .map(|v| {
                            vec![
                                v.ip.clone(),
                                v.services.join(","),
                                if v.owner.is_empty() {
                                    "<none>".into()
                                } else {
                                    v.owner.clone()
                                },
                                v.epoch.to_string(),
                                if v.since_ms == 0 {
                                    "-".into()
                                } else {
                                    age(now, v.since_ms)
                                },
                                dash(&v.interfaces.join(",")),
                                dash(&v.lease),
                                dash(&v.reason),
                            ]
                        })
                        .collect::<Vec<_>>(),
                );
                if history {
                    text.push_str("\n\n");
                    text.push_str(&table(
                        &["AGE", "VIP", "EPOCH", "FROM", "TO", "CAUSE"],
                        &list
                            .history
                            .iter()
                            .map(|m| {
                                vec![
                                    age(now, m.time_ms),
                                    m.vip.clone(),
                                    m.epoch.to_string(),
                                    dash(&m.from),
                                    dash(&m.to),
                                    m.cause.clone(),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    ));
                }
                text
            })
        }
        GetWhat::Events => {
            let events = client
                .list_events(EventsRequest {
                    after_seq: 0,
                    object: object.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .events;
            let value = json!(events
                .iter()
                .map(|e| json!({
                    "seq": e.seq, "timeMs": e.time_ms, "object": e.object, "type": e.r#type,
                    "reason": e.reason, "message": e.message,
                }))
                .collect::<Vec<_>>());
            let now = now_ms();
            print(output, &value, || {
                table(
                    &["SEQ", "AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"],
                    &events
                        .iter()
                        .map(|e| {
                            vec![
                                e.seq.to_string(),
                                age(now, e.time_ms),
                                e.r#type.clone(),
                                e.reason.clone(),
                                e.object.clone(),
                                e.message.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            })
        }
    }
}
