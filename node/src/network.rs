//! Raft transport over tonic: the client side openraft calls ([`Network`]) and the gRPC service
//! peers answer ([`RaftService`]). openraft's messages travel as postcard bytes (the one codec)
//! inside `raft.proto`'s Payload.
//!
//! The same service carries [`Forward`]: writes and membership changes a follower received and
//! hands to the leader. The leader never forwards again, so a request cannot loop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, ChangeMembers};
use raftlb_proto::raft::raft_client::RaftClient;
use raftlb_proto::raft::raft_server::Raft as RaftGrpc;
use raftlb_proto::raft::Payload;
use raftlb_raft_store::codec;
use raftlb_raft_store::{Command, NodeId, Raft, Response, TypeConfig};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

/// Work a follower hands to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forward {
    Write(Command),
    AddLearner {
        id: NodeId,
        addr: String,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
    /// Leader only: hand leadership to `to` (see [`transfer_leader`]).
    TransferLeader {
        to: NodeId,
    },
    /// To the transfer target: start an election now.
    Elect,
    /// Leader only: every node's lease as the leader sees it.
    Leases,
}

/// The leader's answer to a [`Forward`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardReply {
    Written(Response),
    Membership(String),
    /// Not (or no longer) the leader; the sender should retry with this one.
    NotLeader(Option<(NodeId, String)>),
    Failed(String),
    Leases(Vec<crate::lease::LeaseView>),
}

/// Set while this peer hands its leadership over: its lease task must not send the heartbeats
/// that would keep followers from electing the target.
static TRANSFERRING: AtomicBool = AtomicBool::new(false);

pub fn transferring() -> bool {
    TRANSFERRING.load(Ordering::Acquire)
}

pub fn channel(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad peer address {addr:?}: {e}"))
        .map(|e| {
            e.connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .connect_lazy()
        })
}

/// Makes one [`Network`] per target peer; openraft keeps it for the life of a replication
/// stream.
#[derive(Clone, Default)]
pub struct NetworkFactory;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            target,
            client: channel(&node.addr).map(RaftClient::new),
        }
    }
}

pub struct Network {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl Network {
    async fn call<Req, Resp, E>(
        &mut self,
        method: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )))
            }
        };
        let data = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(Payload { data });
        request.set_timeout(option.hard_ttl());
        let mut client = client;
        let reply = match method {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let err = std::io::Error::other(format!("{method} to {}: {status}", self.target));
            match status.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
                _ => RPCError::Network(NetworkError::new(&err)),
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = codec::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call("vote", &rpc, &option).await
    }
}

/// The gRPC side: hands incoming RPCs to the local Raft.
pub struct RaftService {
    pub raft: Raft,
    pub table: raftlb_raft_store::store::SharedTable,
    pub keeper: std::sync::Arc<crate::lease::LeaseKeeper>,
}

fn reply<T: Serialize>(value: &T) -> Result<tonic::Response<Payload>, tonic::Status> {
    codec::encode(value)
        .map(|data| tonic::Response::new(Payload { data }))
        .map_err(|e| tonic::Status::internal(e.to_string()))
}

fn request<T: serde::de::DeserializeOwned>(
    req: tonic::Request<Payload>,
) -> Result<T, tonic::Status> {
    codec::decode(&req.into_inner().data)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable payload: {e}")))
}

#[tonic::async_trait]
impl RaftGrpc for RaftService {
    async fn append_entries(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = request(req)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let rpc: VoteRequest<NodeId> = request(req)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = request(req)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn client_write(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let fwd: Forward = request(req)?;
        reply(&execute_locally(&self.raft, fwd).await)
    }

    async fn renew_lease(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let r: crate::lease::RenewRequest = request(req)?;
        reply(&self.keeper.renew(&self.raft, &self.table, &r))
    }
}

fn not_leader(e: &ClientWriteError<NodeId, BasicNode>) -> Option<ForwardReply> {
    match e {
        ClientWriteError::ForwardToLeader(f) => Some(ForwardReply::NotLeader(
            f.leader_id
                .zip(f.leader_node.as_ref().map(|n| n.addr.clone())),
        )),
        _ => None,
    }
}

fn membership_result(
    r: Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    >,
    done: String,
) -> ForwardReply {
    match r {
        Ok(_) => ForwardReply::Membership(done),
        Err(RaftError::APIError(e)) => {
            not_leader(&e).unwrap_or(ForwardReply::Failed(e.to_string()))
        }
        Err(e) => ForwardReply::Failed(e.to_string()),
    }
}

/// Runs a forwarded request against the local Raft, which must be the leader.
pub async fn execute_locally(raft: &Raft, fwd: Forward) -> ForwardReply {
    match fwd {
        Forward::Write(cmd) => match raft.client_write(cmd).await {
            Ok(r) => ForwardReply::Written(r.data),
            Err(RaftError::APIError(e)) => {
                not_leader(&e).unwrap_or(ForwardReply::Failed(e.to_string()))
            }
            Err(e) => ForwardReply::Failed(e.to_string()),
        },
        Forward::AddLearner { id, addr } => {
            let node = BasicNode { addr: addr.clone() };
            // Blocking: returns once the learner has caught up with the log.
            membership_result(
                raft.add_learner(id, node, true).await,
                format!("node {id} ({addr}) added as a learner and caught up"),
            )
        }
        Forward::Promote { id } => {
            let ids = [id].into_iter().collect();
            membership_result(
                raft.change_membership(ChangeMembers::AddVoterIds(ids), false)
                    .await,
                format!("node {id} promoted to voter"),
            )
        }
        Forward::Remove { id } => {
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership().clone();
            let is_voter = membership.voter_ids().any(|v| v == id);
            let known = membership.nodes().any(|(n, _)| *n == id);
            if !known {
                return ForwardReply::Failed(format!("node {id} is not a member"));
            }
            let ids: std::collections::BTreeSet<NodeId> = [id].into_iter().collect();
            let change = if is_voter {
                ChangeMembers::RemoveVoters(ids)
            } else {
                ChangeMembers::RemoveNodes(ids)
            };
            membership_result(
                raft.change_membership(change, false).await,
                format!("node {id} removed"),
            )
        }
        Forward::TransferLeader { to } => transfer_leader(raft, to).await,
        Forward::Leases => match crate::lease::keeper() {
            Some(k)
                if raft.metrics().borrow().current_leader == Some(raft.metrics().borrow().id) =>
            {
                ForwardReply::Leases(k.report())
            }
            Some(_) => ForwardReply::NotLeader(None),
            None => ForwardReply::Failed("leases are not running on this peer".into()),
        },
        Forward::Elect => match raft.trigger().elect().await {
            Ok(()) => ForwardReply::Membership("election started".into()),
            Err(e) => ForwardReply::Failed(e.to_string()),
        },
    }
}

/// openraft 0.9 has no leader transfer, so: the leader stops heartbeating, waits until no
/// follower can still be bound by its lease (election_timeout_max), and asks the target to
/// start an election at once, so the target is first to ask for votes. Another follower may
/// still win a close race; the reply says who leads afterwards.
pub async fn transfer_leader(raft: &Raft, to: NodeId) -> ForwardReply {
    let metrics = raft.metrics().borrow().clone();
    if metrics.current_leader != Some(metrics.id) {
        return ForwardReply::NotLeader(None);
    }
    if to == metrics.id {
        return ForwardReply::Membership(format!("node {to} already leads"));
    }
    let membership = metrics.membership_config.membership().clone();
    if !membership.voter_ids().any(|v| v == to) {
        return ForwardReply::Failed(format!("node {to} is not a voter"));
    }
    let Some(addr) = membership.get_node(&to).map(|n| n.addr.clone()) else {
        return ForwardReply::Failed(format!("node {to} has no address"));
    };
    let lease = Duration::from_millis(raft.config().election_timeout_max + 20);
    TRANSFERRING.store(true, Ordering::Release);
    raft.runtime_config().heartbeat(false);
    tokio::time::sleep(lease).await;
    let asked = match channel(&addr) {
        Ok(ch) => {
            send_forward(
                RaftClient::new(ch),
                &Forward::Elect,
                tokio::time::Instant::now() + Duration::from_secs(1),
            )
            .await
        }
        Err(e) => ForwardReply::Failed(e),
    };
    let mut rx = raft.metrics();
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        rx.wait_for(|m| m.current_leader.is_some_and(|l| l != m.id)),
    )
    .await;
    raft.runtime_config().heartbeat(true);
    TRANSFERRING.store(false, Ordering::Release);
    let leader = raft.metrics().borrow().current_leader;
    match (leader, asked) {
        (Some(l), _) if l == to => ForwardReply::Membership(format!("node {to} now leads")),
        (_, ForwardReply::Failed(e)) => {
            ForwardReply::Failed(format!("could not reach node {to}: {e}"))
        }
        (l, _) => ForwardReply::Failed(format!(
            "node {to} did not win the election; leader is now {}",
            l.map_or("unknown".to_string(), |l| l.to_string())
        )),
    }
}

/// A Raft client for `addr`, made once and kept in `clients` (a tonic channel reconnects by
/// itself).
pub fn cached_client(
    clients: &mut BTreeMap<String, RaftClient<Channel>>,
    addr: &str,
) -> Result<RaftClient<Channel>, String> {
    if let Some(c) = clients.get(addr) {
        return Ok(c.clone());
    }
    let c = RaftClient::new(channel(addr)?);
    clients.insert(addr.to_string(), c.clone());
    Ok(c)
}

/// Sends `fwd` to whoever leads, following redirects, until `deadline`.
pub async fn forward_to_leader(raft: &Raft, fwd: Forward, deadline: Duration) -> ForwardReply {
    let until = tokio::time::Instant::now() + deadline;
    let mut clients: BTreeMap<String, RaftClient<Channel>> = BTreeMap::new();
    let mut last = ForwardReply::NotLeader(None);
    while tokio::time::Instant::now() < until {
        // The metrics channel already knows the leader; asking RaftCore would cost a
        // round-trip through its queue on every write.
        let metrics = raft.metrics().borrow().clone();
        let (me, leader) = (metrics.id, metrics.current_leader);
        match leader {
            Some(l) if l == me => {
                last = execute_locally(raft, fwd.clone()).await;
            }
            Some(l) => {
                let addr = metrics
                    .membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone());
                if let Some(addr) = addr {
                    let client = match cached_client(&mut clients, &addr) {
                        Ok(c) => c,
                        Err(e) => return ForwardReply::Failed(e),
                    };
                    last = send_forward(client, &fwd, until).await;
                }
            }
            None => {}
        }
        match &last {
            ForwardReply::NotLeader(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => return last,
        }
    }
    match last {
        ForwardReply::NotLeader(_) => {
            ForwardReply::Failed("no leader answered in time (is a quorum of peers up?)".into())
        }
        other => other,
    }
}

async fn send_forward(
    mut client: RaftClient<Channel>,
    fwd: &Forward,
    until: tokio::time::Instant,
) -> ForwardReply {
    let data = match codec::encode(fwd) {
        Ok(d) => d,
        Err(e) => return ForwardReply::Failed(e.to_string()),
    };
    let mut req = tonic::Request::new(Payload { data });
    req.set_timeout(until.saturating_duration_since(tokio::time::Instant::now()));
    match client.client_write(req).await {
        Ok(r) => codec::decode(&r.into_inner().data)
            .unwrap_or_else(|e| ForwardReply::Failed(format!("undecodable reply: {e}"))),
        // The leader may have just died; look for the next one.
        Err(_) => ForwardReply::NotLeader(None),
    }
}
