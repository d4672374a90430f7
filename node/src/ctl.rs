//! `raftlb ctl`: the admin API's command-line client. Table output by default, `-o json|yaml`
//! for tools; Service listings in JSON/YAML are a kubectl-shaped `v1` List.

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use raftlb_proto::admin::admin_client::AdminClient;
use raftlb_proto::admin::*;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::tls::net::{dial, ClientTls};

use crate::clock::wall_ms;
use crate::render::{age, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    /// The table with more columns.
    Wide,
    Json,
    Yaml,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Cluster status: members, roles, leader, term, log and applied indexes.
    Status {
        /// Answer only once this peer has applied every write acknowledged before (the
        /// leader's read index); without it the peer answers from its table at once.
        #[arg(long)]
        linearizable: bool,
        /// Also show a digest of the table (CRC-32 of its encoding) and the index it was
        /// applied up to: equal on every replica at one index.
        #[arg(long)]
        digest: bool,
    },
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
    /// List pools, services, vips or events: `get svc`, `get service web -n default`,
    /// `get pool default`, `get vip 192.0.2.1`, `get pools,svc`, `get svc/web`.
    Get {
        /// pools (pool, ipaddresspool, eip), services (service, svc), vips (vip), events (event,
        /// ev); several with commas; or TYPE/NAME.
        what: String,
        /// One item: a pool's name, a Service's name (in -n, default "default"), a VIP.
        name: Option<String>,
        /// services: only this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// pools, services, vips: keep printing changes as they are applied (Ctrl-C ends).
        #[arg(short = 'w', long)]
        watch: bool,
        /// events: only this object, e.g. Service/default/web
        #[arg(long)]
        object: Option<String>,
        /// vips: also the recent changes of owner (time, from, to, cause).
        #[arg(long)]
        history: bool,
        /// Answer only once this peer has applied every write acknowledged before (the
        /// leader's read index); without it the peer answers from its table at once.
        #[arg(long)]
        linearizable: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetWhat {
    Pools,
    Services,
    Vips,
    Events,
    Bgp,
    Routes,
}

impl GetWhat {
    /// kubectl's habit: singular, plural and short names, any case.
    fn parse(text: &str) -> anyhow::Result<GetWhat> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "pools" | "pool" | "ipaddresspools" | "ipaddresspool" | "eips" | "eip" => {
                GetWhat::Pools
            }
            "services" | "service" | "svc" => GetWhat::Services,
            "vips" | "vip" => GetWhat::Vips,
            "events" | "event" | "ev" => GetWhat::Events,
            "bgp" | "bgpsessions" | "bgpsession" | "sessions" => GetWhat::Bgp,
            "routes" | "route" | "bgproutes" => GetWhat::Routes,
            other => bail!(
                "the server doesn't have a resource type {other:?} (pools, services, vips, events, bgp, routes; short: pool, svc, vip, ev)"
            ),
        })
    }

    fn plural(self) -> &'static str {
        match self {
            GetWhat::Pools => "pools",
            GetWhat::Services => "services",
            GetWhat::Vips => "vips",
            GetWhat::Events => "events",
            GetWhat::Bgp => "bgp",
            GetWhat::Routes => "routes",
        }
    }
}

/// What `get` was asked for: each resource, and at most one name.
fn get_targets(what: &str, name: Option<String>) -> anyhow::Result<(Vec<GetWhat>, Option<String>)> {
    if let Some((kind, item)) = what.split_once('/') {
        if name.is_some() {
            bail!("there is a name in {what:?} already; give TYPE/NAME or TYPE NAME, not both");
        }
        return Ok((vec![GetWhat::parse(kind)?], Some(item.to_string())));
    }
    let mut kinds = Vec::new();
    for part in what.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let k = GetWhat::parse(part)?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    if kinds.is_empty() {
        bail!("get needs a resource type (pools, services, vips, events, bgp)");
    }
    if name.is_some() && kinds.len() > 1 {
        bail!("a name needs exactly one resource type, not {what:?}");
    }
    Ok((kinds, name))
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

/// The URLs of a comma-separated `--endpoint` list.
fn endpoint_urls(endpoints: &str) -> Vec<&str> {
    endpoints
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Connects to the first endpoint that answers.
pub async fn connect(endpoints: &str, tls: &ClientTls) -> anyhow::Result<AdminClient<Channel>> {
    connect_first(&endpoint_urls(endpoints), tls)
        .await
        .map(|(client, _)| client)
}

/// Connects to the first of `urls` that answers; returns its position too.
async fn connect_first(
    urls: &[&str],
    tls: &ClientTls,
) -> anyhow::Result<(AdminClient<Channel>, usize)> {
    let mut errors = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        match dial(url, tls, Duration::from_secs(2)).await {
            Ok(ch) => {
                let client = AdminClient::new(ch)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20);
                return Ok((client, i));
            }
            Err(e) => errors.push(format!("{url}: {e}")),
        }
    }
    bail!("no admin endpoint answered: {}", errors.join("; "))
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    if s.message() == "transport error" {
        // What a plaintext client sees from a TLS port (and the reverse).
        return anyhow!(
            "transport error: the connection broke; if the endpoint serves TLS, give it as https:// or HOST:PORT with a client certificate (--tls-dir)"
        );
    }
    anyhow!("{}", s.message())
}

fn print(output: Output, value: &Value, table_text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match output {
        Output::Table | Output::Wide => println!("{}", table_text()),
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

pub async fn run(
    endpoints: &str,
    tls: &ClientTls,
    output: Output,
    command: CtlCommand,
) -> anyhow::Result<()> {
    if let CtlCommand::Get {
        what,
        name,
        namespace,
        watch: true,
        ..
    } = &command
    {
        let (kinds, name) = get_targets(what, name.clone())?;
        let [kind] = kinds[..] else {
            bail!("--watch takes one resource type");
        };
        let filter = Filter::new(kind, name, namespace.clone());
        return watch(endpoints, tls, output, kind, &filter).await;
    }
    let mut client = connect(endpoints, tls).await?;
    match command {
        CtlCommand::Status {
            linearizable,
            digest,
        } => {
            let s = client
                .status(StatusRequest {
                    linearizable,
                    digest,
                })
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
                "digestIndex": s.digest_index,
                "digest": s.digest.map(|d| format!("{d:08x}")),
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
            name,
            namespace,
            object,
            history,
            linearizable,
            watch: _,
        } => {
            let (kinds, name) = get_targets(&what, name)?;
            for (i, kind) in kinds.iter().enumerate() {
                if i > 0 && matches!(output, Output::Table | Output::Wide) {
                    println!();
                }
                let filter = Filter::new(*kind, name.clone(), namespace.clone());
                let read = GetOptions {
                    object: object.clone(),
                    history,
                    linearizable,
                };
                get(&mut client, output, *kind, &filter, read).await?;
            }
            Ok(())
        }
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
        "generation": reply.generation, "logIndex": reply.log_index,
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

/// Which items of a listing `get` shows: all, one by name, or a namespace's Services.
#[derive(Debug, Clone)]
struct Filter {
    kind: GetWhat,
    name: Option<String>,
    namespace: Option<String>,
}

impl Filter {
    fn new(kind: GetWhat, name: Option<String>, namespace: Option<String>) -> Filter {
        // kubectl's reading: a Service named without -n is in "default".
        let namespace = match (kind, &name, namespace) {
            (GetWhat::Services, Some(_), None) => Some("default".to_string()),
            (_, _, ns) => ns,
        };
        Filter {
            kind,
            name,
            namespace,
        }
    }

    fn keeps(&self, key: &str) -> bool {
        match self.kind {
            GetWhat::Services => {
                let (ns, name) = key.split_once('/').unwrap_or(("", key));
                self.namespace.as_deref().is_none_or(|n| n == ns)
                    && self.name.as_deref().is_none_or(|n| n == name)
            }
            _ => self.name.as_deref().is_none_or(|n| n == key),
        }
    }

    /// kubectl's answer when a named item is missing.
    fn check_found(&self, found: usize) -> anyhow::Result<()> {
        match &self.name {
            Some(name) if found == 0 => bail!("{} {name:?} not found", self.kind.plural()),
            _ => Ok(()),
        }
    }
}

/// One row of a listing: its key, its JSON, and its table cells.
struct Row {
    key: String,
    json: Value,
    cells: Vec<String>,
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn family_cell(u: &Option<FamilyUsage>) -> String {
    let u = u.clone().unwrap_or_default();
    if u.size == "0" {
        "-".to_string()
    } else {
        format!("{}/{}/{}", u.size, u.used, u.free)
    }
}

fn pool_header(wide: bool) -> Vec<&'static str> {
    let mut h = vec![
        "NAME",
        "KIND",
        "ADDRESSES",
        "AUTO-ASSIGN",
        "IPV4 SIZE/USED/FREE",
        "IPV6 SIZE/USED/FREE",
    ];
    if wide {
        h.extend(["PROTOCOL", "PRIORITY", "AVOID-BUGGY-IPS", "DISABLED"]);
    }
    h
}

fn pool_row(p: &Pool, wide: bool) -> Row {
    let fam = |u: &Option<FamilyUsage>| {
        let u = u.clone().unwrap_or_default();
        json!({"size": u.size, "used": u.used, "free": u.free})
    };
    let mut cells = vec![
        p.name.clone(),
        p.kind.clone(),
        p.addresses.join(","),
        p.auto_assign.to_string(),
        family_cell(&p.ipv4),
        family_cell(&p.ipv6),
    ];
    if wide {
        cells.extend([
            dash(&p.protocol),
            p.priority.to_string(),
            p.avoid_buggy_ips.to_string(),
            p.disabled.to_string(),
        ]);
    }
    Row {
        key: p.name.clone(),
        json: json!({
            "name": p.name, "kind": p.kind, "addresses": p.addresses, "autoAssign": p.auto_assign,
            "avoidBuggyIPs": p.avoid_buggy_ips, "priority": p.priority, "protocol": p.protocol,
            "disabled": p.disabled, "ipv4": fam(&p.ipv4), "ipv6": fam(&p.ipv6),
        }),
        cells,
    }
}

fn service_header(wide: bool) -> Vec<&'static str> {
    let mut h = vec!["NAMESPACE", "NAME", "TYPE", "EXTERNAL-IP"];
    if wide {
        h.push("PORTS");
    }
    h.extend(["POOL", "STATE", "REASON"]);
    h
}

fn service_row(s: &Service, wide: bool) -> anyhow::Result<Row> {
    let json: Value = serde_json::from_str(&s.kubernetes_json)?;
    let mut cells = vec![
        s.namespace.clone(),
        s.name.clone(),
        s.r#type.clone(),
        if s.ips.is_empty() {
            "<pending>".into()
        } else {
            s.ips.join(",")
        },
    ];
    if wide {
        let ports = json["spec"]["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        cells.push(dash(
            &ports
                .iter()
                .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    cells.extend([dash(&s.pool), s.state.clone(), s.reason.clone()]);
    Ok(Row {
        key: format!("{}/{}", s.namespace, s.name),
        json,
        cells,
    })
}

fn vip_header(wide: bool) -> Vec<&'static str> {
    let mut h = vec!["VIP", "SERVICES", "OWNER", "EPOCH", "SINCE"];
    if wide {
        h.extend(["POOL", "SHARING-KEY"]);
    }
    h.extend(["INTERFACES", "LEASE", "REASON"]);
    h
}

fn vip_row(v: &Vip, wide: bool, now: u64) -> Row {
    let mut cells = vec![
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
    ];
    if wide {
        cells.extend([v.pool.clone(), dash(&v.sharing_key)]);
    }
    cells.extend([
        dash(&v.interfaces.join(",")),
        dash(&v.lease),
        dash(&v.reason),
    ]);
    Row {
        key: v.ip.clone(),
        json: json!({
            "ip": v.ip, "pool": v.pool, "services": v.services, "sharingKey": v.sharing_key,
            "owner": v.owner, "epoch": v.epoch, "sinceMs": v.since_ms,
            "interfaces": v.interfaces, "lease": v.lease, "reason": v.reason,
        }),
        cells,
    }
}

fn header_of(kind: GetWhat, wide: bool) -> Vec<&'static str> {
    match kind {
        GetWhat::Pools => pool_header(wide),
        GetWhat::Services => service_header(wide),
        GetWhat::Vips => vip_header(wide),
        GetWhat::Events => vec!["SEQ", "AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        GetWhat::Bgp => bgp_header(wide),
        GetWhat::Routes => vec!["PREFIX", "NODE", "PEER", "SERVICES"],
    }
}

fn bgp_header(wide: bool) -> Vec<&'static str> {
    let mut h = vec!["NODE", "PEER", "ADDRESS", "STATE", "UPTIME", "PREFIXES"];
    if wide {
        h.extend([
            "LOCAL",
            "CONN",
            "PEER-AS",
            "HOLD/KEEPALIVE",
            "FAMILIES",
            "UPDATES",
            "DOWNS",
            "BFD",
        ]);
    }
    h.push("LAST-ERROR");
    h
}

/// One BGP session, as it is (MetalLB FRR's BGPSessionState, with what was sent).
fn bgp_row(b: &BgpSession, wide: bool, now: u64) -> Row {
    let mut cells = vec![
        b.node.clone(),
        b.peer.clone(),
        b.address.clone(),
        b.state.clone(),
        if b.established_since_ms == 0 {
            "-".into()
        } else {
            age(now, b.established_since_ms)
        },
        if b.prefixes_pending > 0 {
            format!("{} (+{} pending)", b.prefixes_sent, b.prefixes_pending)
        } else {
            b.prefixes_sent.to_string()
        },
    ];
    if wide {
        cells.extend([
            dash(&b.local_address),
            dash(&b.connection),
            if b.peer_asn == 0 {
                "-".into()
            } else {
                b.peer_asn.to_string()
            },
            format!("{}/{}", b.hold_time, b.keepalive),
            dash(&b.families.join(",")),
            b.updates_sent.to_string(),
            b.downs.to_string(),
            b.bfd.as_ref().map_or("-".into(), |f| {
                format!(
                    "{} ({}x{} ms)",
                    f.state,
                    f.detection_time_us / f.tx_interval_us.max(1),
                    f.tx_interval_us / 1000
                )
            }),
        ]);
    }
    cells.push(dash(&b.last_error));
    Row {
        key: format!("{}/{}", b.node, b.peer),
        json: json!({
            "node": b.node, "peer": b.peer, "address": b.address, "state": b.state,
            "establishedSinceMs": b.established_since_ms, "localAddress": b.local_address,
            "connection": b.connection,
            "peerASN": b.peer_asn, "peerRouterID": b.peer_router_id,
            "holdTime": b.hold_time, "keepaliveTime": b.keepalive, "families": b.families,
            "prefixesSent": b.prefixes_sent, "prefixesPending": b.prefixes_pending,
            "updatesSent": b.updates_sent, "downs": b.downs, "lastError": b.last_error,
            "bfd": b.bfd.as_ref().map(|f| json!({
                "state": f.state, "remoteState": f.remote_state,
                "localDiscriminator": f.local_discriminator,
                "remoteDiscriminator": f.remote_discriminator, "diag": f.diag,
                "txIntervalMs": f.tx_interval_us / 1000,
                "detectionTimeMs": f.detection_time_us / 1000,
                "ups": f.ups, "downs": f.downs,
                "packetsIn": f.packets_in, "packetsOut": f.packets_out,
                "packetsDiscarded": f.packets_discarded, "lastDiscard": f.last_discard,
            })),
        }),
        cells,
    }
}

/// A listing's JSON: Services as a kubectl-shaped `v1` List, the rest as an array.
fn listing_json(kind: GetWhat, rows: &[Row]) -> Value {
    let items: Vec<Value> = rows.iter().map(|r| r.json.clone()).collect();
    match kind {
        GetWhat::Services => {
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
        }
        _ => json!(items),
    }
}

/// Every member's BGP sessions (with `prefixes`, what each peer holds from them); a member
/// that did not answer is named on stderr.
async fn every_session(
    client: &mut AdminClient<Channel>,
    prefixes: bool,
) -> anyhow::Result<Vec<BgpSession>> {
    let reply = client
        .bgp_sessions(BgpRequest { prefixes })
        .await
        .map_err(status_error)?
        .into_inner();
    for n in &reply.unreachable {
        eprintln!("warning: node {n} did not answer; its sessions and routes are not listed");
    }
    Ok(reply.sessions)
}

/// What one `get` asks for beyond the resource.
struct GetOptions {
    object: Option<String>,
    history: bool,
    linearizable: bool,
}

async fn get(
    client: &mut AdminClient<Channel>,
    output: Output,
    kind: GetWhat,
    filter: &Filter,
    read: GetOptions,
) -> anyhow::Result<()> {
    let GetOptions {
        object,
        history,
        linearizable,
    } = read;
    let wide = output == Output::Wide;
    let now = wall_ms();
    let mut moves = Vec::new();
    let rows: Vec<Row> = match kind {
        GetWhat::Pools => client
            .list_pools(ListRequest { linearizable })
            .await
            .map_err(status_error)?
            .into_inner()
            .pools
            .iter()
            .map(|p| pool_row(p, wide))
            .collect(),
        GetWhat::Services => client
            .list_services(ListRequest { linearizable })
            .await
            .map_err(status_error)?
            .into_inner()
            .services
            .iter()
            .map(|s| service_row(s, wide))
            .collect::<anyhow::Result<_>>()?,
        GetWhat::Vips => {
            let list = client
                .list_vips(VipsRequest {
                    history,
                    linearizable,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            moves = list.history;
            list.vips.iter().map(|v| vip_row(v, wide, now)).collect()
        }
        GetWhat::Bgp => every_session(client, false)
            .await?
            .iter()
            .map(|b| bgp_row(b, wide, now))
            .collect(),
        GetWhat::Routes => {
            // What each node's sessions actually sent, and the Services behind each prefix.
            let sessions = every_session(client, true).await?;
            let services = client
                .list_services(ListRequest { linearizable })
                .await
                .map_err(status_error)?
                .into_inner()
                .services;
            let mut rows = Vec::new();
            for b in &sessions {
                for prefix in &b.prefixes {
                    let net: Option<ipnet::IpNet> = prefix.parse().ok();
                    let behind: Vec<String> = services
                        .iter()
                        .filter(|s| {
                            s.ips.iter().any(|ip| {
                                ip.parse::<std::net::IpAddr>()
                                    .is_ok_and(|ip| net.is_some_and(|n| n.contains(&ip)))
                            })
                        })
                        .map(|s| format!("{}/{}", s.namespace, s.name))
                        .collect();
                    rows.push(Row {
                        key: format!("{prefix}/{}/{}", b.node, b.peer),
                        json: json!({
                            "prefix": prefix, "node": b.node, "peer": b.peer,
                            "address": b.address, "services": behind,
                        }),
                        cells: vec![
                            prefix.clone(),
                            b.node.clone(),
                            b.peer.clone(),
                            dash(&behind.join(",")),
                        ],
                    });
                }
            }
            rows
        }
        GetWhat::Events => client
            .list_events(EventsRequest {
                after_seq: 0,
                object: object.unwrap_or_default(),
                linearizable,
            })
            .await
            .map_err(status_error)?
            .into_inner()
            .events
            .iter()
            .map(|e| Row {
                key: e.seq.to_string(),
                json: json!({
                    "seq": e.seq, "timeMs": e.time_ms, "object": e.object, "type": e.r#type,
                    "reason": e.reason, "message": e.message,
                }),
                cells: vec![
                    e.seq.to_string(),
                    age(now, e.time_ms),
                    e.r#type.clone(),
                    e.reason.clone(),
                    e.object.clone(),
                    e.message.clone(),
                ],
            })
            .collect(),
    };
    let rows: Vec<Row> = rows.into_iter().filter(|r| filter.keeps(&r.key)).collect();
    filter.check_found(rows.len())?;
    let value = match &filter.name {
        // One item by name: the item itself, as kubectl prints it.
        Some(_) => rows[0].json.clone(),
        None => listing_json(kind, &rows),
    };
    // VIPs keep their documented shape, {"vips": [...], "history": [...]}, which tools read.
    let value = if kind == GetWhat::Vips && filter.name.is_none() {
        json!({
            "vips": value,
            "history": moves.iter().map(|m| json!({
                "timeMs": m.time_ms, "vip": m.vip, "epoch": m.epoch, "from": m.from,
                "to": m.to, "cause": m.cause,
            })).collect::<Vec<_>>(),
        })
    } else {
        value
    };
    print(output, &value, || {
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.cells.clone()).collect();
        let mut text = table(&header_of(kind, wide), &cells);
        if kind == GetWhat::Vips && history {
            text.push_str("\n\n");
            text.push_str(&table(
                &["AGE", "VIP", "EPOCH", "FROM", "TO", "CAUSE"],
                &moves
                    .iter()
                    .filter(|m| filter.keeps(&m.vip))
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

/// `get bgp -w`: sessions are live state, not log entries, so the listing is asked for again
/// every second and each session that changed is printed.
async fn watch_bgp(
    endpoints: &str,
    tls: &ClientTls,
    output: Output,
    filter: &Filter,
) -> anyhow::Result<()> {
    let wide = output == Output::Wide;
    let urls = endpoint_urls(endpoints);
    let mut shown: std::collections::BTreeMap<String, Row> = Default::default();
    let mut header_printed = false;
    loop {
        if let Ok((mut client, _)) = connect_first(&urls, tls).await {
            if let Ok(reply) = client.bgp_sessions(BgpRequest { prefixes: false }).await {
                let now = wall_ms();
                let rows: Vec<Row> = reply
                    .into_inner()
                    .sessions
                    .iter()
                    .map(|b| bgp_row(b, wide, now))
                    .filter(|r| filter.keeps(&r.key))
                    .collect();
                for row in rows {
                    let event = match shown.get(&row.key) {
                        Some(old) if old.json == row.json => continue,
                        Some(_) => "MODIFIED",
                        None => "ADDED",
                    };
                    match output {
                        Output::Json => println!("{}", json!({"type": event, "object": row.json})),
                        Output::Yaml => print!(
                            "---\n{}",
                            serde_yaml_ng::to_string(&json!({"type": event, "object": row.json}))?
                        ),
                        _ if !header_printed => {
                            println!(
                                "{}",
                                table(&bgp_header(wide), std::slice::from_ref(&row.cells))
                            );
                            header_printed = true;
                        }
                        _ => println!("{}", row.cells.join("   ")),
                    }
                    shown.insert(row.key.clone(), row);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `get -w`: the listing, then every change as it is applied. When the peer goes away the
/// watch resumes on another endpoint from the last applied index it saw; rows are compared
/// with what was printed, so nothing is printed twice and the state after the gap is shown.
async fn watch(
    endpoints: &str,
    tls: &ClientTls,
    output: Output,
    kind: GetWhat,
    filter: &Filter,
) -> anyhow::Result<()> {
    let resource = match kind {
        GetWhat::Events | GetWhat::Routes => bail!("--watch takes pools, services, vips or bgp"),
        GetWhat::Bgp => return watch_bgp(endpoints, tls, output, filter).await,
        other => other.plural(),
    };
    let wide = output == Output::Wide;
    let mut urls = endpoint_urls(endpoints);
    // key -> the row as printed (cells and JSON).
    let mut shown: std::collections::BTreeMap<String, Row> = Default::default();
    let mut seen_index = 0;
    let mut header_printed = false;
    let mut failures = 0;
    loop {
        let (mut client, at) = match connect_first(&urls, tls).await {
            Ok(c) => c,
            // Every endpoint refused: give up only after a while (a rolling restart).
            Err(e) if failures >= 20 => return Err(e),
            Err(_) => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let request = WatchRequest {
            resource: resource.to_string(),
            min_index: seen_index,
        };
        let mut stream = match client.watch(request).await {
            Ok(s) => s.into_inner(),
            Err(e) if e.code() == tonic::Code::InvalidArgument => bail!("{}", e.message()),
            Err(_) => {
                urls.rotate_left(at + 1);
                continue;
            }
        };
        while let Ok(Some(reply)) = stream.message().await {
            failures = 0;
            seen_index = seen_index.max(reply.applied_index);
            let now = wall_ms();
            let mut rows: Vec<Row> = Vec::new();
            rows.extend(reply.pools.iter().map(|p| pool_row(p, wide)));
            for s in &reply.services {
                rows.push(service_row(s, wide)?);
            }
            rows.extend(reply.vips.iter().map(|v| vip_row(v, wide, now)));
            let mut deleted: Vec<String> = reply.deleted.clone();
            if reply.initial {
                // A fresh listing: whatever was shown and is not in it went away meanwhile.
                let present: std::collections::BTreeSet<&str> =
                    rows.iter().map(|r| r.key.as_str()).collect();
                deleted.extend(
                    shown
                        .keys()
                        .filter(|k| !present.contains(k.as_str()))
                        .cloned(),
                );
            }
            let mut lines: Vec<(&str, Row)> = Vec::new();
            for row in rows.into_iter().filter(|r| filter.keeps(&r.key)) {
                match shown.get(&row.key) {
                    Some(old) if old.json == row.json => {}
                    Some(_) => lines.push(("MODIFIED", row)),
                    None => lines.push(("ADDED", row)),
                }
            }
            for key in deleted {
                if let Some(old) = shown.remove(&key) {
                    lines.push(("DELETED", old));
                }
            }
            if matches!(output, Output::Table | Output::Wide) && !header_printed {
                let cells: Vec<Vec<String>> = lines.iter().map(|(_, r)| r.cells.clone()).collect();
                println!("{}", table(&header_of(kind, wide), &cells));
                header_printed = true;
            } else {
                for (event, row) in &lines {
                    let change = || json!({"type": event, "appliedIndex": reply.applied_index, "object": row.json});
                    match output {
                        Output::Json => println!("{}", change()),
                        Output::Yaml => print!("---\n{}", serde_yaml_ng::to_string(&change())?),
                        _ => {
                            let mut cells = row.cells.clone();
                            if *event == "DELETED" {
                                cells.push("(deleted)".into());
                            }
                            println!("{}", cells.join("   "));
                        }
                    }
                }
            }
            for (event, row) in lines {
                if event != "DELETED" {
                    shown.insert(row.key.clone(), row);
                }
            }
            use std::io::Write;
            std::io::stdout().flush().ok();
        }
        // The stream broke: resume on the next endpoint, this one last.
        urls.rotate_left(at + 1);
        failures += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
