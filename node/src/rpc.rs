//! The peer protocol's server (`raft.proto`): one handler per RPC. openraft's three go to the
//! local Raft; the leader's jobs run here when this peer leads and are refused with a hint
//! when it does not (the sender follows it).

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use raftlb_proto::raft::raft_server::Raft as RaftGrpc;
use raftlb_proto::raft::{Empty, Payload};
use raftlb_raft_store::codec;
use raftlb_raft_store::{Command, NodeId, TypeConfig};
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::fence::RenewRequest;
use crate::raft::leader::{LeaderReply, MembershipChange};

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

#[tonic::async_trait]
impl RaftGrpc for RaftService {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = request(req)?;
        reply(&self.app.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<NodeId> = request(req)?;
        reply(&self.app.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = request(req)?;
        reply(&self.app.raft.install_snapshot(rpc).await)
    }

    async fn write(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let cmd: Command = request(req)?;
        reply(&self.app.write_here(cmd).await)
    }

    async fn change_membership(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let change: MembershipChange = request(req)?;
        reply(&self.app.change_here(change).await)
    }

    async fn timeout_now(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.app
            .raft
            .trigger()
            .elect()
            .await
            .map(|()| Response::new(Empty {}))
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    async fn renew_lease(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let r: RenewRequest = request(req)?;
        reply(&self.app.fence.renew(&self.app.raft, &self.app.state, &r))
    }

    async fn read_index(&self, _: Request<Empty>) -> Result<Response<Payload>, Status> {
        reply(&crate::raft::read::leader_read_index(&self.app.raft).await)
    }

    async fn bgp_sessions(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let prefixes: bool = request(req)?;
        reply(&crate::bgp::local_views(&self.app, prefixes).await)
    }

    async fn lease_report(&self, _: Request<Empty>) -> Result<Response<Payload>, Status> {
        let views = if self.app.leads() {
            LeaderReply::Done(self.app.fence.report())
        } else {
            LeaderReply::NotLeader(None)
        };
        reply(&views)
    }
}
