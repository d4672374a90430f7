//! Work only the leader can do — a write, a membership change — asked of whichever peer leads.
//! On the leader it runs at once; anywhere else it goes to the leader over that job's own RPC
//! (`Write`, `ChangeMembership`), following redirects. The leader never forwards again, so a
//! request cannot loop.

use std::future::Future;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use raftlb_proto::raft::raft_client::RaftClient;
use raftlb_proto::raft::Payload;
use raftlb_raft_store::{Command, NodeId, Raft, Response, TypeConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::membership::{transfer_leader, TransferGuard};
use super::transport::{payload, reply, Channels};
use super::KnownLeader;
pub use super::LeaderReply;

/// A change of the cluster's members, or of who leads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
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
    /// Hand leadership to `to` (see [`transfer_leader`]).
    TransferLeader {
        to: NodeId,
    },
}

/// What running leader work needs on the leader.
#[derive(Clone)]
pub struct Leading {
    pub raft: Raft,
    pub transfer: TransferGuard,
    pub channels: Channels,
}

/// One kind of leader work: how it runs on the leader, and its RPC from anywhere else.
pub trait LeaderJob: Serialize + Clone + Send + Sync {
    type Output: Serialize + DeserializeOwned + Send;
    fn here(self, at: &Leading) -> impl Future<Output = LeaderReply<Self::Output>> + Send;
    fn send(
        client: RaftClient<Channel>,
        req: tonic::Request<Payload>,
    ) -> impl Future<Output = Result<tonic::Response<Payload>, tonic::Status>> + Send;
}

impl LeaderJob for Command {
    type Output = Response;

    async fn here(self, at: &Leading) -> LeaderReply<Response> {
        match at.raft.client_write(self).await {
            Ok(r) => LeaderReply::Done(r.data),
            Err(e) => refused(e),
        }
    }

    async fn send(
        mut client: RaftClient<Channel>,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        client.write(req).await
    }
}

impl LeaderJob for MembershipChange {
    type Output = String;

    async fn here(self, at: &Leading) -> LeaderReply<String> {
        let raft = &at.raft;
        match self {
            MembershipChange::AddLearner { id, addr } => {
                let node = BasicNode { addr: addr.clone() };
                // Blocking: returns once the learner has caught up with the log.
                changed(
                    raft.add_learner(id, node, true).await,
                    format!("node {id} ({addr}) added as a learner and caught up"),
                )
            }
            MembershipChange::Promote { id } => {
                let ids = [id].into_iter().collect();
                changed(
                    change_when_free(raft, ChangeMembers::AddVoterIds(ids)).await,
                    format!("node {id} promoted to voter"),
                )
            }
            MembershipChange::Remove { id } => {
                let membership = raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .clone();
                if !membership.nodes().any(|(n, _)| *n == id) {
                    return LeaderReply::Failed(format!("node {id} is not a member"));
                }
                let ids: std::collections::BTreeSet<NodeId> = [id].into_iter().collect();
                let change = if membership.voter_ids().any(|v| v == id) {
                    ChangeMembers::RemoveVoters(ids)
                } else {
                    ChangeMembers::RemoveNodes(ids)
                };
                changed(
                    change_when_free(raft, change).await,
                    format!("node {id} removed"),
                )
            }
            MembershipChange::TransferLeader { to } => {
                transfer_leader(raft, &at.transfer, &at.channels, to).await
            }
        }
    }

    async fn send(
        mut client: RaftClient<Channel>,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        client.change_membership(req).await
    }
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
>;

/// A membership change, waiting (up to 5 s) for one still in flight to finish first: a promote
/// returns once its joint configuration commits, while the final configuration may still be
/// on its way, and an operator's next change should not fail on that.
async fn change_when_free(raft: &Raft, change: ChangeMembers<NodeId, BasicNode>) -> WriteResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = raft.change_membership(change.clone(), false).await;
        let busy = matches!(
            &r,
            Err(RaftError::APIError(
                ClientWriteError::ChangeMembershipError(
                    openraft::error::ChangeMembershipError::InProgress(_)
                )
            ))
        );
        if !busy || tokio::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn changed(r: WriteResult, done: String) -> LeaderReply<String> {
    match r {
        Ok(_) => LeaderReply::Done(done),
        Err(e) => refused(e),
    }
}

fn refused<T>(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> LeaderReply<T> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => LeaderReply::NotLeader(
            f.leader_id
                .zip(f.leader_node.as_ref().map(|n| n.addr.clone())),
        ),
        e => LeaderReply::Failed(e.to_string()),
    }
}

/// Runs `job` on whoever leads, following redirects, until `deadline`.
pub async fn to_leader<J: LeaderJob>(
    at: &Leading,
    job: J,
    deadline: Duration,
) -> LeaderReply<J::Output> {
    let until = tokio::time::Instant::now() + deadline;
    let mut last = LeaderReply::NotLeader(None);
    while tokio::time::Instant::now() < until {
        // The metrics channel already knows the leader; asking RaftCore would cost a
        // round-trip through its queue on every write.
        let known = KnownLeader::of(&at.raft);
        match known.leader {
            Some(l) if l == known.me => last = job.clone().here(at).await,
            Some(leader) => {
                if let Some(addr) = known.addr {
                    let client = match at.channels.client(leader, &addr) {
                        Ok(c) => c,
                        Err(e) => return LeaderReply::Failed(e),
                    };
                    last = send::<J>(client, &job, until).await;
                }
            }
            None => {}
        }
        match &last {
            LeaderReply::NotLeader(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => return last,
        }
    }
    match last {
        LeaderReply::NotLeader(_) => {
            LeaderReply::Failed("no leader answered in time (is a quorum of peers up?)".into())
        }
        other => other,
    }
}

async fn send<J: LeaderJob>(
    client: RaftClient<Channel>,
    job: &J,
    until: tokio::time::Instant,
) -> LeaderReply<J::Output> {
    let req = match payload(
        job,
        until.saturating_duration_since(tokio::time::Instant::now()),
    ) {
        Ok(r) => r,
        Err(e) => return LeaderReply::Failed(e),
    };
    match J::send(client, req).await {
        Ok(r) => reply(r).unwrap_or_else(LeaderReply::Failed),
        // The leader may have just died; look for the next one.
        Err(_) => LeaderReply::NotLeader(None),
    }
}
