//! The admin gRPC service every peer serves. Reads never write to the log: by default they
//! answer from the local replica's applied state (possibly stale by the replication lag); with
//! `linearizable` set, the peer first waits until it has applied the leader's read index
//! ([`crate::raft::read`]), so the answer reflects every write acknowledged before the request.
//! Lease columns come from the leader's `LeaseReport` (a read too). Writes go to the Raft
//! leader ([`App::write`]).

use std::time::Duration;

use raftlb_proto::admin::admin_server::Admin;
use raftlb_proto::admin::*;
use raftlb_raft_store::table::objects::Object;
use raftlb_raft_store::table::{ApplyBatch, Command, Response as TableResponse};
use raftlb_raft_store::NodeId;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::app::App;
use crate::clock::wall_ms;
use crate::fence::{lease_report, LeaseView};
use crate::manifest;
use crate::raft::leader::{LeaderReply, MembershipChange};
use crate::render::{pool_messages, service_message, service_outcome, vip_messages};
use crate::tls::identity::{self, Need, Principal};
use crate::watch;

/// How long a write may wait for a leader.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// How long a linearizable read may wait for the read index and for this peer to apply it.
const READ_DEADLINE: Duration = Duration::from_secs(5);

pub struct AdminService {
    pub app: App,
}

fn applied_index(t: &raftlb_raft_store::store::Applied) -> u64 {
    t.last_applied.map_or(0, |l| l.index)
}

fn leader_error<T>(reply: LeaderReply<T>) -> Status {
    match reply {
        LeaderReply::Failed(e) => Status::unavailable(e),
        LeaderReply::NotLeader(_) => Status::unavailable("no leader"),
        LeaderReply::Done(_) => Status::internal("unexpected reply"),
    }
}

/// A batch as an operator applies it (`ctl apply`, `run -f`): strict, stamped now.
pub fn operator_batch(objects: Vec<(u32, Object)>) -> ApplyBatch {
    ApplyBatch {
        objects,
        deletes: Vec::new(),
        strict: true,
        now_ms: wall_ms(),
    }
}

/// `cmd` as written by `caller`: with mTLS the events it causes name the operator.
fn by(caller: &Principal, cmd: Command) -> Command {
    match caller {
        Principal::Anonymous => cmd,
        who => Command::By {
            user: who.user(),
            command: Box::new(cmd),
        },
    }
}

impl AdminService {
    /// The caller, if it may do what `need` names; else `PermissionDenied`, logged and counted.
    fn allow<T>(&self, req: &Request<T>, need: Need, rpc: &str) -> Result<Principal, Status> {
        let refuse = |why: String| {
            self.app.security.denied();
            warn!(rpc, reason = %why, "admin RPC refused");
            Status::permission_denied(why)
        };
        let caller = identity::caller(req, self.app.security.naming())
            .map_err(|s| refuse(s.message().to_string()))?;
        if caller.may(need) {
            if need != Need::Read {
                info!(rpc, caller = %caller, "admin write");
            }
            return Ok(caller);
        }
        Err(refuse(match need {
            Need::Join(id) => format!(
                "{caller} may not {rpc} node {id}: a node certificate adds or promotes only its own node, anything else needs {}",
                identity::ADMIN_GROUP
            ),
            _ => format!("{caller} may not {rpc}: it needs {}", identity::ADMIN_GROUP),
        }))
    }

    /// For a linearizable read: waits until this peer has applied the leader's read index.
    async fn read_barrier(&self, linearizable: bool) -> Result<(), Status> {
        if linearizable {
            crate::raft::read::barrier(&self.app.raft, &self.app.channels, READ_DEADLINE)
                .await
                .map_err(Status::unavailable)?;
        }
        Ok(())
    }

    /// The applied state; a poisoned lock still holds a consistent table (apply never panics
    /// half-way through a write), so read it anyway.
    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, raftlb_raft_store::store::Applied> {
        self.app.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn members(&self) -> Vec<Member> {
        let metrics = self.app.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let matched = |id: NodeId| {
            metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index)
        };
        membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: matched(*id),
            })
            .collect()
    }

    /// Every node's lease from the leader, if one answers quickly.
    async fn leases(&self) -> Option<Vec<LeaseView>> {
        lease_report(
            &self.app.raft,
            &self.app.fence,
            &self.app.channels,
            Duration::from_millis(500),
        )
        .await
    }

    async fn operator_write(
        &self,
        cmd: Command,
        done: String,
    ) -> Result<Response<MembershipReply>, Status> {
        match self.app.write(cmd, WRITE_DEADLINE).await {
            LeaderReply::Done(TableResponse::Rejected(e)) => Err(Status::invalid_argument(
                format!("{}: {}: {}", e.object, e.field, e.reason),
            )),
            LeaderReply::Done(_) => Ok(Response::new(MembershipReply {
                message: done,
                members: self.members(),
            })),
            other => Err(leader_error(other)),
        }
    }

    async fn membership(
        &self,
        change: MembershipChange,
    ) -> Result<Response<MembershipReply>, Status> {
        match self.app.change(change, WRITE_DEADLINE).await {
            LeaderReply::Done(message) => Ok(Response::new(MembershipReply {
                message,
                members: self.members(),
            })),
            other => Err(leader_error(other)),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        self.allow(&req, Need::Read, "status")?;
        let req = req.into_inner();
        self.read_barrier(req.linearizable).await?;
        let leases = self.leases().await;
        let m = self.app.raft.metrics().borrow().clone();
        let t = self.read_table();
        let digest = req.digest.then(|| t.digest());
        let mut vips_of: std::collections::BTreeMap<&str, u64> = Default::default();
        for (owner, _) in t.table.owners().values() {
            *vips_of.entry(owner).or_default() += 1;
        }
        let nodes = t
            .table
            .nodes()
            .iter()
            .map(|(name, n)| {
                let lease = leases
                    .as_ref()
                    .and_then(|l| l.iter().find(|v| v.node == *name));
                NodeStatus {
                    name: name.clone(),
                    raft_id: n.facts.raft_id,
                    live: n.live,
                    draining: n.draining,
                    interfaces: n.facts.interfaces.clone(),
                    labels: n.facts.labels.clone().into_iter().collect(),
                    vips: vips_of.get(name.as_str()).copied().unwrap_or(0),
                    since_renewal_ms: lease.and_then(|v| v.since_renewal_ms),
                    lease_left_ms: lease.map(|v| v.lease_left_ms),
                    applied_index: lease.map_or(0, |v| v.applied),
                }
            })
            .collect();
        let role = match m.state {
            openraft::ServerState::Leader => "Leader",
            openraft::ServerState::Follower => "Follower",
            openraft::ServerState::Candidate => "Candidate",
            openraft::ServerState::Learner => "Learner",
            openraft::ServerState::Shutdown => "Shutdown",
        };
        Ok(Response::new(StatusReply {
            id: m.id,
            role: role.into(),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members: self.members(),
            config_generation: t.table.generation(),
            services: t.table.services().len() as u64,
            pending_services: t.table.pending().len() as u64,
            pools: t.table.pools().len() as u64,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            load_balancer_class: t
                .table
                .load_balancer_class()
                .unwrap_or_default()
                .to_string(),
            nodes,
            digest_index: digest.map(|d| d.0),
            digest: digest.map(|d| d.1),
        }))
    }

    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyReply>, Status> {
        let caller = self.allow(&req, Need::Write, "apply")?;
        let req = req.into_inner();
        let source = if req.source.is_empty() {
            "-".to_string()
        } else {
            req.source
        };
        let manifest::Parsed { objects, skipped } = manifest::parse_file(&req.manifest, &source)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if objects.is_empty() {
            if !skipped.is_empty() {
                // Nothing for raftlb in it: say what was skipped and write nothing.
                return Ok(Response::new(ApplyReply {
                    skipped,
                    generation: self.read_table().table.generation(),
                    ..Default::default()
                }));
            }
            return Err(Status::invalid_argument(format!(
                "{source}: no objects in the manifest"
            )));
        }
        let batch = if req.delete {
            ApplyBatch {
                deletes: objects.iter().map(|(d, o)| (*d, o.reference())).collect(),
                ..operator_batch(Vec::new())
            }
        } else {
            operator_batch(objects)
        };
        match self
            .app
            .write(by(&caller, Command::Apply(batch)), WRITE_DEADLINE)
            .await
        {
            LeaderReply::Done(TableResponse::Applied(outcome)) => {
                // The committed answer per Service, not a newer state read afterwards.
                let services = outcome
                    .services
                    .iter()
                    .map(|(key, state)| {
                        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
                        service_outcome(namespace, name, state)
                    })
                    .collect();
                Ok(Response::new(ApplyReply {
                    changes: outcome
                        .changes
                        .iter()
                        .map(|(r, c)| ObjectChange {
                            kind: r.kind.to_string(),
                            namespace: r.namespace.clone(),
                            name: r.name.clone(),
                            action: c.as_str().into(),
                        })
                        .collect(),
                    generation: outcome.generation,
                    log_index: outcome.log_index,
                    services,
                    skipped,
                }))
            }
            LeaderReply::Done(TableResponse::Rejected(e)) => {
                Err(Status::invalid_argument(format!("{source}: {e}")))
            }
            other => Err(leader_error(other)),
        }
    }

    async fn list_pools(&self, req: Request<ListRequest>) -> Result<Response<PoolList>, Status> {
        self.allow(&req, Need::Read, "list-pools")?;
        self.read_barrier(req.into_inner().linearizable).await?;
        let t = self.read_table();
        Ok(Response::new(PoolList {
            pools: pool_messages(&t.table),
            applied_index: applied_index(&t),
        }))
    }

    async fn list_services(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<ServiceList>, Status> {
        self.allow(&req, Need::Read, "list-services")?;
        self.read_barrier(req.into_inner().linearizable).await?;
        let t = self.read_table();
        let services = t
            .table
            .services()
            .values()
            .map(|e| service_message(e))
            .collect();
        Ok(Response::new(ServiceList {
            services,
            applied_index: applied_index(&t),
        }))
    }

    async fn list_vips(&self, req: Request<VipsRequest>) -> Result<Response<VipList>, Status> {
        self.allow(&req, Need::Read, "list-vips")?;
        let req = req.into_inner();
        self.read_barrier(req.linearizable).await?;
        let leases = self.leases().await;
        let t = self.read_table();
        // The owner's lease as the leader sees it.
        let lease_of = |owner: &str| match &leases {
            None => "unknown".to_string(),
            Some(l) => match l.iter().find(|v| v.node == owner) {
                Some(v) if v.lease_left_ms > 0 => format!("held ({} ms left)", v.lease_left_ms),
                Some(_) => "expired".to_string(),
                None => "unknown".to_string(),
            },
        };
        let vips = vip_messages(&t.table, &lease_of);
        let history = if req.history {
            t.table
                .history()
                .iter()
                .map(|m| VipMove {
                    time_ms: m.time_ms,
                    vip: m.vip.to_string(),
                    epoch: m.epoch,
                    from: m.from.clone().unwrap_or_default(),
                    to: m.to.clone().unwrap_or_default(),
                    cause: m.cause.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(VipList {
            vips,
            history,
            applied_index: applied_index(&t),
        }))
    }

    type WatchStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<WatchReply, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.allow(&req, Need::Read, "watch")?;
        let req = req.into_inner();
        let resource = watch::Resource::parse(&req.resource).ok_or_else(|| {
            Status::invalid_argument(format!(
                "resource {:?}: watch takes pools, services or vips",
                req.resource
            ))
        })?;
        let stream = watch::stream(
            self.app.raft.clone(),
            self.app.state.clone(),
            resource,
            req.min_index,
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn bgp_sessions(&self, req: Request<BgpRequest>) -> Result<Response<BgpReply>, Status> {
        self.allow(&req, Need::Read, "bgp-sessions")?;
        use crate::bgp::BgpSessionView;
        let prefixes = req.into_inner().prefixes;
        let mut views = crate::bgp::local_views(&self.app, prefixes).await;
        let me = self.app.raft.metrics().borrow().id;
        let members: Vec<(NodeId, String)> = {
            let m = self.app.raft.metrics().borrow().clone();
            m.membership_config
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        let name_of = |id: NodeId| {
            let t = self.read_table();
            t.table
                .nodes()
                .values()
                .find(|n| n.facts.raft_id == id)
                .map_or(format!("id {id}"), |n| n.facts.name.clone())
        };
        // Each member answers for its own sessions, all at once.
        let asks = members.into_iter().map(|(id, addr)| {
            let channels = self.app.channels.clone();
            async move {
                let ask = async {
                    let mut client = channels.client(id, &addr).ok()?;
                    let req =
                        crate::raft::transport::payload(&prefixes, Duration::from_secs(1)).ok()?;
                    let reply = client.bgp_sessions(req).await.ok()?;
                    crate::raft::transport::reply::<Vec<BgpSessionView>>(reply).ok()
                };
                (id, ask.await)
            }
        });
        let mut unreachable = Vec::new();
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Some(v) => views.extend(v),
                None => unreachable.push(name_of(id)),
            }
        }
        views.sort_by(|a, b| (&a.node, &a.peer).cmp(&(&b.node, &b.peer)));
        let sessions = views
            .into_iter()
            .map(|v| BgpSession {
                node: v.node,
                peer: v.peer,
                address: v.address,
                state: v.state,
                established_since_ms: v.established_since_ms,
                local_address: v.local_address,
                connection: v.connection,
                bfd: v.bfd.map(|b| raftlb_proto::admin::BfdSession {
                    state: b.state,
                    remote_state: b.remote_state,
                    local_discriminator: b.local_discriminator,
                    remote_discriminator: b.remote_discriminator,
                    diag: b.diag,
                    tx_interval_us: b.tx_interval_us,
                    detection_time_us: b.detection_time_us,
                    ups: b.ups,
                    downs: b.downs,
                    packets_in: b.packets_in,
                    packets_out: b.packets_out,
                    packets_discarded: b.packets_discarded,
                    last_discard: b.last_discard,
                }),
                peer_asn: v.peer_asn,
                peer_router_id: v.peer_router_id,
                hold_time: u32::from(v.hold_time),
                keepalive: u32::from(v.keepalive),
                families: v.families,
                prefixes_sent: v.prefixes_sent,
                prefixes_pending: v.prefixes_pending,
                updates_sent: v.updates_sent,
                downs: v.downs,
                last_error: v.last_error,
                prefixes: v.prefixes,
            })
            .collect();
        Ok(Response::new(BgpReply {
            sessions,
            unreachable,
        }))
    }

    async fn drain(&self, req: Request<DrainRequest>) -> Result<Response<MembershipReply>, Status> {
        let caller = self.allow(&req, Need::Write, "drain")?;
        let req = req.into_inner();
        let cmd = Command::Drain {
            node: req.node.clone(),
            drain: !req.undo,
            now_ms: wall_ms(),
        };
        let done = if req.undo {
            format!("node {} may own VIPs again", req.node)
        } else {
            format!(
                "node {} drained: its VIPs move away (break-before-make)",
                req.node
            )
        };
        self.operator_write(by(&caller, cmd), done).await
    }

    async fn move_vip(
        &self,
        req: Request<MoveVipRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        let caller = self.allow(&req, Need::Write, "move-vip")?;
        let req = req.into_inner();
        let vip: std::net::IpAddr = req.vip.parse().map_err(|_| {
            Status::invalid_argument(format!("vip: {:?} is not an IP address", req.vip))
        })?;
        let done = format!("{vip} moves to node {} (break-before-make)", req.node);
        let cmd = Command::MoveVip {
            vip,
            node: req.node,
            now_ms: wall_ms(),
        };
        self.operator_write(by(&caller, cmd), done).await
    }

    async fn list_events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<EventList>, Status> {
        self.allow(&req, Need::Read, "list-events")?;
        let req = req.into_inner();
        self.read_barrier(req.linearizable).await?;
        let t = self.read_table();
        let events = t
            .table
            .events()
            .iter()
            .filter(|e| e.seq > req.after_seq && (req.object.is_empty() || e.object == req.object))
            .map(|e| Event {
                seq: e.seq,
                time_ms: e.time_ms,
                object: e.object.clone(),
                r#type: e.kind.clone(),
                reason: e.reason.clone(),
                message: e.message.clone(),
            })
            .collect();
        Ok(Response::new(EventList {
            events,
            applied_index: applied_index(&t),
        }))
    }

    async fn add_learner(
        &self,
        req: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        self.allow(&req, Need::Join(req.get_ref().id), "add-learner")?;
        let req = req.into_inner();
        if req.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "addr: {:?} is not IP:PORT",
                req.addr
            )));
        }
        self.membership(MembershipChange::AddLearner {
            id: req.id,
            addr: req.addr,
        })
        .await
    }

    async fn promote(
        &self,
        req: Request<MemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        self.allow(&req, Need::Join(req.get_ref().id), "promote")?;
        self.membership(MembershipChange::Promote {
            id: req.into_inner().id,
        })
        .await
    }

    async fn remove_member(
        &self,
        req: Request<MemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        self.allow(&req, Need::Write, "remove-member")?;
        self.membership(MembershipChange::Remove {
            id: req.into_inner().id,
        })
        .await
    }

    async fn transfer_leader(
        &self,
        req: Request<MemberRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        self.allow(&req, Need::Write, "transfer-leader")?;
        self.membership(MembershipChange::TransferLeader {
            to: req.into_inner().id,
        })
        .await
    }

    async fn trigger_snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotReply>, Status> {
        self.allow(&req, Need::Write, "trigger-snapshot")?;
        let applied = self
            .app
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        self.app
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut rx = self.app.raft.metrics();
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= applied)),
        )
        .await;
        let index = match waited {
            Ok(Ok(m)) => m.snapshot.map_or(0, |s| s.index),
            _ => {
                return Err(Status::deadline_exceeded(
                    "snapshot not finished within 30s",
                ))
            }
        };
        Ok(Response::new(SnapshotReply {
            last_log_index: index,
        }))
    }
}
