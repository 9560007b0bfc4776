//! The seams around the Raft loop, so that the loop, the peer transport and follower
//! forwarding do not import each other:
//! - `Inbox`: what anyone may send to the loop (`Request`s over a channel);
//! - `Outbox`: where the loop sends Raft messages (implemented by the transport);
//! - `LeaderClient`: how a follower hands a write to the leader (implemented by forwarding).

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use edgeplane_proto::raft as pb;
use imbl::{OrdMap, OrdSet};
use raft::eraftpb::{Message, Snapshot};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::state::Member;
use crate::storage::StorageError;

pub(crate) type ProposeTx = oneshot::Sender<Result<pb::ApplyResult, Error>>;

/// Everything the Raft loop is asked to do.
pub(crate) enum Request {
    Propose {
        cmd: pb::Command,
        tx: ProposeTx,
    },
    Read {
        tx: oneshot::Sender<Result<(), Error>>,
    },
    Raft(Vec<Message>),
    TransferLeader {
        to: u64,
        tx: oneshot::Sender<Result<(), Error>>,
    },
    Unreachable(u64),
    SnapshotDone {
        to: u64,
        ok: bool,
    },
    /// The snapshot builder thread finished: the file is durable and the stored log is
    /// compacted up to the (index, term) given.
    SnapshotBuilt(Result<(Snapshot, Option<(u64, u64)>), StorageError>),
    /// A peer refused our messages because this replica was removed from the cluster.
    RemovedByPeer(u64),
    Shutdown,
}

/// Sending side of the loop's channel.
#[derive(Clone)]
pub(crate) struct Inbox(std_mpsc::Sender<Request>);

impl Inbox {
    pub(crate) fn new() -> (Inbox, std_mpsc::Receiver<Request>) {
        let (tx, rx) = std_mpsc::channel();
        (Inbox(tx), rx)
    }

    /// Hand a request to the loop; fails only when the loop has stopped.
    pub(crate) fn send(&self, r: Request) -> Result<(), Error> {
        self.0.send(r).map_err(|_| Error::Shutdown)
    }
}

/// Where the Raft loop sends messages. Must never block (the loop is a hard real-time
/// thread for the cluster: a stalled send delays every heartbeat).
pub(crate) trait Outbox: Send + Sync {
    fn send(&self, msgs: Vec<Message>);
    /// The replicated member list changed: connect to new peers, refuse removed ones.
    fn set_members(&self, members: &OrdMap<u64, Member>, removed: &OrdSet<u64>);
}

/// How a follower hands a write to the leader's client address.
#[tonic::async_trait]
pub(crate) trait LeaderClient: Send + Sync {
    async fn forward(
        &self,
        addr: &str,
        cmd: &pb::Command,
        timeout: Duration,
    ) -> Result<pb::ApplyResult, Error>;
}
