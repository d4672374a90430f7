//! Raft transport over tonic: the client side openraft calls. openraft's messages travel as
//! postcard bytes (the one codec) inside `raft.proto`'s Payload, one typed RPC each.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// (id, address); a tonic channel reconnects by itself when its connection closes. Without it
/// every heartbeat round of a read-index or lease check, and every forwarded write, dialled a
/// new TCP connection. With mTLS each channel checks that the peer's certificate names the id
/// it is dialled as.
///
/// A connection can also stall without closing: after a squeezed or lossy link heals, TCP's
/// retransmission timer has backed off to a second or more, and everything queued on the
/// connection waits for it (seen in the fast chaos campaign: a follower's vote requests arrived
/// 1.9 s late, the leader's appends likewise, and the cluster had no quorum for a second after
/// the link was whole). So the Raft RPCs report how they ended, and a channel whose RPCs have
/// all failed for [`STALLED_AFTER`] is replaced by a fresh connection.
#[derive(Clone)]
pub struct Channels {
    security: Security,
    known: Arc<Mutex<BTreeMap<(NodeId, String), Known>>>,
    generations: Arc<std::sync::atomic::AtomicU64>,
}

struct Known {
    channel: Channel,
    /// Which channel this is for its key: an RPC that ends on a channel already replaced
    /// must not count against its successor.
    generation: u64,
    /// Since when every RPC on this channel has failed (None: the last one succeeded).
    failing_since: Option<Instant>,
    /// Failed RPCs since the last success.
    failures: u32,
}

/// A channel whose RPCs have all failed for this long, at least [`STALLED_FAILURES`] of them,
/// is dialled afresh. Longer than a heartbeat round trip on a slow machine; far shorter than
/// the TCP retransmission backoff it works around.
pub const STALLED_AFTER: Duration = Duration::from_millis(200);
pub const STALLED_FAILURES: u32 = 3;

impl Channels {
    pub fn new(security: Security) -> Channels {
        Channels {
            security,
            known: Arc::default(),
            generations: Arc::default(),
        }
    }

    /// A Raft client for peer `id` at `addr`.
    pub fn client(&self, id: NodeId, addr: &str) -> Result<RaftClient<Channel>, String> {
        self.client_of(id, addr).map(|(client, _)| client)
    }

    /// [`Channels::client`], with the channel's generation for [`Channels::outcome`].
    fn client_of(&self, id: NodeId, addr: &str) -> Result<(RaftClient<Channel>, u64), String> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let key = (id, addr.to_string());
        if let Some(k) = known.get(&key) {
            return Ok((RaftClient::new(k.channel.clone()), k.generation));
        }
        let channel = peer_channel(&self.security, id, addr)?;
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        known.insert(
            key,
            Known {
                channel: channel.clone(),
                generation,
                failing_since: None,
                failures: 0,
            },
        );
        Ok((RaftClient::new(channel), generation))
    }

    /// Records how an RPC on channel `generation` to `id` at `addr` ended; after a stall the
    /// channel is dropped, so the next [`Channels::client`] dials a new connection.
    fn outcome(&self, id: NodeId, addr: &str, generation: u64, ok: bool) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let key = (id, addr.to_string());
        let Some(k) = known.get_mut(&key).filter(|k| k.generation == generation) else {
            return;
        };
        if ok {
            k.failing_since = None;
            k.failures = 0;
            return;
        }
        let since = *k.failing_since.get_or_insert_with(Instant::now);
        k.failures += 1;
        if k.failures >= STALLED_FAILURES && since.elapsed() >= STALLED_AFTER {
            tracing::info!(
                peer = id,
                addr,
                failures = k.failures,
                "no RPC to the peer has succeeded for {:?}: dialling a new connection",
                since.elapsed()
            );
            known.remove(&key);
        }
    }
}

/// Reports an RPC's end to [`Channels::outcome`]: a failure unless [`Outcome::succeeded`]
/// is called, so an RPC dropped at openraft's deadline counts as failed.
struct Outcome<'a> {
    channels: &'a Channels,
    id: NodeId,
    addr: &'a str,
    generation: u64,
    ok: bool,
}

impl Outcome<'_> {
    fn succeeded(mut self) {
        self.ok = true;
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        self.channels
            .outcome(self.id, self.addr, self.generation, self.ok);
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
            addr: node.addr.clone(),
            channels: self.0.clone(),
        }
    }
}

/// A target peer: its channel is looked up per RPC, so a replication stream that openraft
/// keeps for long moves to a new connection when the old one stalled.
pub struct Network {
    target: NodeId,
    addr: String,
    channels: Channels,
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
        let (mut client, generation) = self
            .channels
            .client_of(self.target, &self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        let outcome = Outcome {
            channels: &self.channels,
            id: self.target,
            addr: &self.addr,
            generation,
            ok: false,
        };
        let request = payload(req, option.hard_ttl())
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let reply = match rpc {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        // A status the peer sent back proves the connection; only the transport's own
        // failures (unreachable, timed out) count against it.
        let alive = match &reply {
            Ok(_) => true,
            Err(status) => !matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ),
        };
        if alive {
            outcome.succeeded();
        } else {
            drop(outcome);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn known(c: &Channels) -> usize {
        c.known.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_channel_is_replaced_only_after_failing_for_the_stall_time() {
        let c = Channels::new(Security::Insecure);
        let (_, first) = c.client_of(2, "127.0.0.1:9").unwrap();
        let fail = |generation| c.outcome(2, "127.0.0.1:9", generation, false);
        // Failures in quick succession (a busy peer, one lost heartbeat): kept.
        for _ in 0..5 {
            fail(first);
        }
        assert_eq!(known(&c), 1);
        // One success starts the count again.
        c.outcome(2, "127.0.0.1:9", first, true);
        fail(first);
        tokio::time::sleep(STALLED_AFTER).await;
        fail(first);
        assert_eq!(known(&c), 1, "two failures are not a stall");
        fail(first);
        assert_eq!(known(&c), 0, "three failures over the stall time are");
        // RPCs still in flight on the replaced channel do not count against the new one.
        let (_, second) = c.client_of(2, "127.0.0.1:9").unwrap();
        assert_ne!(first, second);
        fail(first);
        tokio::time::sleep(STALLED_AFTER).await;
        fail(first);
        fail(first);
        assert_eq!(
            known(&c),
            1,
            "the old channel's failures are not the new one's"
        );
        // Another address of the same peer is another channel, untouched by this one.
        let (_, other) = c.client_of(2, "127.0.0.1:10").unwrap();
        c.outcome(2, "127.0.0.1:10", other, false);
        assert_eq!(known(&c), 2);
    }

    /// A peer whose connection accepts and then carries nothing (what a connection whose
    /// retransmissions backed off looks like from above): openraft's RPCs time out, and
    /// within a few stall times the transport is on a new connection.
    #[tokio::test]
    async fn a_stalled_connection_is_dialled_afresh() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s); // never read, never answered
                let _ = accepted_tx.send(());
            }
        });
        let mut factory = NetworkFactory(Channels::new(Security::Insecure));
        let mut net = factory.new_client(2, &BasicNode::new(&addr)).await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let started = Instant::now();
        let mut connections = 0;
        while started.elapsed() < Duration::from_secs(5) && connections < 2 {
            let option = RPCOption::new(Duration::from_millis(20));
            let call = net.vote(vote.clone(), option);
            let ended = tokio::time::timeout(Duration::from_millis(20), call).await;
            assert!(!matches!(ended, Ok(Ok(_))), "nothing answers");
            while accepted.try_recv().is_ok() {
                connections += 1;
            }
        }
        server.abort();
        assert_eq!(connections, 2, "a second connection after the stall");
    }
}
