//! The peer protocol's server (`raft.proto`): one handler per RPC. openraft's three go to the
//! local Raft; the leader's jobs run here when this peer leads and are refused with a hint
//! when it does not (the sender follows it).
//!
//! With mTLS only peers reach this port, and each RPC is held to the Raft id the caller's
//! certificate names (`node-ID.CLUSTER.raftlb`): appends and snapshots only from the leader
//! they claim, a vote request only from its candidate, a lease renewal only for the caller's
//! own node, everything else only from a member. A refusal is `PermissionDenied` with the
//! reason, logged and counted (`raftlb_tls_denied_total`).

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use raftlb_proto::raft::raft_server::Raft as RaftGrpc;
use raftlb_proto::raft::{Empty, Payload};
use raftlb_raft_store::codec;
use raftlb_raft_store::{Command, NodeId, TypeConfig};
use serde::Serialize;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::app::App;
use crate::fence::RenewRequest;
use crate::raft::leader::{LeaderReply, MembershipChange};
use crate::tls::identity::{self, Principal};

pub struct RaftService {
    pub app: App,
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    codec::encode(value)
        .map(|data| Response::new(Payload { data }))
        .map_err(|e| Status::internal(e.to_string()))
}

fn request<T: serde::de::DeserializeOwned>(req: Request<Payload>) -> Result<T, Status> {
    codec::decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

impl RaftService {
    fn deny(&self, rpc: &str, why: String) -> Status {
        self.app.security.denied();
        warn!(rpc, reason = %why, "Raft RPC refused");
        Status::permission_denied(why)
    }

    /// The peer the caller's certificate names (None without mTLS); anyone else is refused.
    fn caller<T>(&self, rpc: &str, req: &Request<T>) -> Result<Option<NodeId>, Status> {
        match identity::caller(req, self.app.security.naming()) {
            Ok(Principal::Anonymous) => Ok(None),
            Ok(Principal::Node(id)) => Ok(Some(id)),
            Ok(other) => Err(self.deny(rpc, format!("{other} is not a raftlb peer"))),
            Err(s) => Err(self.deny(rpc, s.message().to_string())),
        }
    }

    /// The caller must be the node the request speaks for.
    fn must_be(&self, rpc: &str, caller: Option<NodeId>, claimed: NodeId) -> Result<(), Status> {
        match caller {
            Some(id) if id != claimed => Err(self.deny(
                rpc,
                format!("node {id}'s certificate may not send {rpc} as node {claimed}"),
            )),
            _ => Ok(()),
        }
    }

    /// The caller must be a member (voter or learner) of the membership this peer knows.
    fn member<T>(&self, rpc: &str, req: &Request<T>) -> Result<(), Status> {
        let Some(id) = self.caller(rpc, req)? else {
            return Ok(());
        };
        let known = self
            .app
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        if known {
            Ok(())
        } else {
            Err(self.deny(rpc, format!("node {id} is not a member")))
        }
    }
}

#[tonic::async_trait]
impl RaftGrpc for RaftService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let caller = self.caller("AppendEntries", &req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = request(req)?;
        self.must_be("AppendEntries", caller, rpc.vote.leader_id.node_id)?;
        reply(&self.app.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let caller = self.caller("Vote", &req)?;
        let rpc: VoteRequest<NodeId> = request(req)?;
        self.must_be("Vote", caller, rpc.vote.leader_id.node_id)?;
        reply(&self.app.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let caller = self.caller("InstallSnapshot", &req)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = request(req)?;
        self.must_be("InstallSnapshot", caller, rpc.vote.leader_id.node_id)?;
        reply(&self.app.raft.install_snapshot(rpc).await)
    }

    async fn write(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.member("Write", &req)?;
        let cmd: Command = request(req)?;
        reply(&self.app.write_here(cmd).await)
    }

    async fn change_membership(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.member("ChangeMembership", &req)?;
        let change: MembershipChange = request(req)?;
        reply(&self.app.change_here(change).await)
    }

    async fn timeout_now(&self, req: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.member("TimeoutNow", &req)?;
        self.app
            .raft
            .trigger()
            .elect()
            .await
            .map(|()| Response::new(Empty {}))
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    async fn renew_lease(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let caller = self.caller("RenewLease", &req)?;
        let r: RenewRequest = request(req)?;
        if let Some(id) = caller {
            // A node renews under its registered name; the table knows which Raft id that is.
            let registered = {
                let t = self.app.state.read().unwrap_or_else(|p| p.into_inner());
                t.table.nodes().get(&r.node).map(|n| n.facts.raft_id)
            };
            match registered {
                Some(owner) => self.must_be("RenewLease", caller, owner)?,
                None => {
                    return Err(self.deny(
                        "RenewLease",
                        format!("node {id} renews for {:?}, which is not registered", r.node),
                    ))
                }
            }
        }
        reply(&self.app.fence.renew(&self.app.raft, &self.app.state, &r))
    }

    async fn read_index(&self, req: Request<Empty>) -> Result<Response<Payload>, Status> {
        self.member("ReadIndex", &req)?;
        reply(&crate::raft::read::leader_read_index(&self.app.raft).await)
    }

    async fn bgp_sessions(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.member("BgpSessions", &req)?;
        let prefixes: bool = request(req)?;
        reply(&crate::bgp::local_views(&self.app, prefixes).await)
    }

    async fn lease_report(&self, req: Request<Empty>) -> Result<Response<Payload>, Status> {
        self.member("LeaseReport", &req)?;
        let views = if self.app.leads() {
            LeaderReply::Done(self.app.fence.report())
        } else {
            LeaderReply::NotLeader(None)
        };
        reply(&views)
    }
}
