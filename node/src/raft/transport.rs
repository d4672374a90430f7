//! Raft transport over tonic: the client side openraft calls. openraft's messages travel as
//! postcard bytes (the one codec) inside `raft.proto`'s Payload, one typed RPC each.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use raftlb_proto::raft::raft_client::RaftClient;
use raftlb_proto::raft::Payload;
use raftlb_raft_store::codec;
use raftlb_raft_store::{NodeId, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use crate::tls::net::peer_channel;
use crate::tls::Security;

/// One channel (one HTTP/2 connection) per peer, shared by everything this peer sends to
/// that peer: replication, heartbeat rounds, forwarded writes, renewals, reads. Made once per
/// (id, address); a tonic channel reconnects by itself. Without it every heartbeat round of a
/// read-index or lease check, and every forwarded write, dialled a new TCP connection. With
/// mTLS each channel checks that the peer's certificate names the id it is dialled as.
#[derive(Clone)]
pub struct Channels {
    security: Security,
    known: Arc<Mutex<BTreeMap<(NodeId, String), Channel>>>,
}

impl Channels {
    pub fn new(security: Security) -> Channels {
        Channels {
            security,
            known: Arc::default(),
        }
    }

    /// A Raft client for peer `id` at `addr`.
    pub fn client(&self, id: NodeId, addr: &str) -> Result<RaftClient<Channel>, String> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let key = (id, addr.to_string());
        if let Some(c) = known.get(&key) {
            return Ok(RaftClient::new(c.clone()));
        }
        let c = peer_channel(&self.security, id, addr)?;
        known.insert(key, c.clone());
        Ok(RaftClient::new(c))
    }
}

/// `value` as a request payload that gives up at `timeout`.
pub fn payload<T: Serialize>(
    value: &T,
    timeout: Duration,
) -> Result<tonic::Request<Payload>, String> {
    let data = codec::encode(value).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(Payload { data });
    req.set_timeout(timeout);
    Ok(req)
}

/// The value a peer's reply carries.
pub fn reply<T: DeserializeOwned>(reply: tonic::Response<Payload>) -> Result<T, String> {
    codec::decode(&reply.into_inner().data).map_err(|e| format!("undecodable reply: {e}"))
}

/// Makes one [`Network`] per target peer (openraft keeps it for the life of a replication
/// stream, and makes a short-lived one per heartbeat round), all over the peer's shared channel.
#[derive(Clone)]
pub struct NetworkFactory(pub Channels);

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            target,
            client: self.0.client(target, &node.addr),
        }
    }
}

pub struct Network {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// The three openraft RPCs.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Network {
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )))
            }
        };
        let request = payload(req, option.hard_ttl())
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let err = std::io::Error::other(format!("{rpc:?} to {}: {status}", self.target));
            match status.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
                _ => RPCError::Network(NetworkError::new(&err)),
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = self::reply(reply)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call(Rpc::Vote, &rpc, &option).await
    }

    /// After an unreachable peer, replication waits this long before it tries again.
    /// openraft's 500 ms would keep a peer that is back from a partition (or a restart)
    /// without appends for up to half a second, long enough for it to call elections that
    /// disturb the leader; one connection attempt per 100 ms to a peer that is down costs
    /// little.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}

/// See [`Network::backoff`].
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);
