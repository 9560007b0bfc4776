//! Peer transport: Raft messages between replicas over gRPC (`RaftTransport.Send`), one
//! outbound task per peer with its own queue, batching, reconnect with exponential backoff,
//! and a fault-injection table (drop / delay / cut a link) that tests can drive through the
//! admin `InjectFault` RPC when the replica runs with `--enable-fault-injection`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use edgeplane_proto::raft::raft_transport_client::RaftTransportClient;
use edgeplane_proto::raft::raft_transport_server::RaftTransport;
use edgeplane_proto::raft::{Outcome, RaftAck, RaftBatch, SnapshotChunk, StatusDetail};
use imbl::{OrdMap, OrdSet};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::inbox::{Inbox, Outbox, Request};
use crate::state::Member;

/// How a replica words its answer to a peer it knows was removed (the peer reads the
/// typed detail, [`Outcome::MemberRemoved`], and exits).
const REMOVED: &str = "was removed from the cluster";

/// The answer to raft traffic from a removed member `from`.
fn removed_status(from: u64) -> tonic::Status {
    StatusDetail::status(
        tonic::Code::PermissionDenied,
        format!("replica {from} {REMOVED}"),
        Outcome::MemberRemoved,
        "",
    )
}

/// What happens to traffic on the link with one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every message to and from the peer is dropped (a cut link).
    Drop,
    /// Every batch to and from the peer is delayed.
    Delay(Duration),
    /// Only this replica's messages to the peer are dropped; the peer's still arrive
    /// (one end of a one-way partition).
    DropOutbound,
}

const QUEUE: usize = 4096;
const MAX_BATCH: usize = 512;
/// Snapshot data above this size goes out in chunks of this size over `SendSnapshot`.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Split a MsgSnapshot into stream chunks of at most `chunk` data bytes each.
pub fn snapshot_chunks(
    from: u64,
    to: u64,
    from_peer_addr: &str,
    m: &Message,
    chunk: usize,
) -> Vec<SnapshotChunk> {
    let data = m.get_snapshot().get_data();
    let mut head = m.clone();
    head.mut_snapshot().set_data(Vec::new().into());
    let mut out = vec![SnapshotChunk {
        from,
        to,
        from_peer_addr: from_peer_addr.to_string(),
        message: head.write_to_bytes().expect("encode raft message"),
        total: data.len() as u64,
        data: Vec::new(),
    }];
    for piece in data.chunks(chunk.max(1)) {
        out.push(SnapshotChunk {
            data: piece.to_vec(),
            ..Default::default()
        });
    }
    out
}

/// Reassemble a MsgSnapshot from its chunks (in order).
pub fn reassemble_snapshot(
    chunks: impl IntoIterator<Item = SnapshotChunk>,
) -> Result<(u64, u64, String, Message), String> {
    let mut it = chunks.into_iter();
    let first = it.next().ok_or("no chunk")?;
    let mut m = Message::parse_from_bytes(&first.message)
        .map_err(|e| format!("first chunk: raft message: {e}"))?;
    if m.get_msg_type() != MessageType::MsgSnapshot {
        return Err("first chunk: not a MsgSnapshot".into());
    }
    if first.total > MAX_SNAPSHOT {
        return Err(format!(
            "total: {} bytes announced, more than the limit of {MAX_SNAPSHOT}",
            first.total
        ));
    }
    // Grow with what arrives; never trust the announced size for an allocation.
    let mut data = Vec::with_capacity(first.total.min(16 << 20) as usize);
    data.extend_from_slice(&first.data);
    for c in it {
        data.extend_from_slice(&c.data);
        if data.len() as u64 > first.total {
            return Err(format!("more than the announced {} bytes", first.total));
        }
    }
    if data.len() as u64 != first.total {
        return Err(format!(
            "got {} of the announced {} bytes",
            data.len(),
            first.total
        ));
    }
    m.mut_snapshot().set_data(data.into());
    Ok((first.from, first.to, first.from_peer_addr, m))
}

struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
}

/// Outbound peers plus the shared fault table.
pub struct Transport {
    id: u64,
    self_peer_addr: String,
    rt: tokio::runtime::Handle,
    peers: Mutex<HashMap<u64, Peer>>,
    faults: RwLock<HashMap<u64, Fault>>,
    last_ok: Mutex<HashMap<u64, Instant>>,
    /// Members removed from the cluster: their messages are refused.
    removed: RwLock<HashSet<u64>>,
    raft_tx: Inbox,
    pub fault_injection_enabled: bool,
    /// How this member dials other members (peer and client ports).
    pub(crate) tls: edgeplane_tls::ClientTls,
}

/// At most this many outbound peer tasks: an unknown `from` cannot grow them unbounded.
pub const MAX_PEERS: usize = 64;

/// Largest chunked snapshot accepted (bytes).
pub const MAX_SNAPSHOT: u64 = 1 << 30;

impl Transport {
    pub(crate) fn new(
        id: u64,
        self_peer_addr: String,
        rt: tokio::runtime::Handle,
        raft_tx: Inbox,
        initial: &HashMap<u64, String>,
        fault_injection_enabled: bool,
        tls: edgeplane_tls::ClientTls,
    ) -> Arc<Self> {
        let t = Arc::new(Transport {
            id,
            self_peer_addr,
            rt,
            peers: Mutex::new(HashMap::new()),
            faults: RwLock::new(HashMap::new()),
            last_ok: Mutex::new(HashMap::new()),
            removed: RwLock::new(HashSet::new()),
            raft_tx,
            fault_injection_enabled,
            tls,
        });
        for (pid, addr) in initial {
            t.ensure_peer(*pid, addr);
        }
        t
    }

    /// Make sure an outbound task exists for `id` at `addr` (replaced if the address moved).
    pub fn ensure_peer(self: &Arc<Self>, id: u64, addr: &str) {
        if id == self.id || addr.is_empty() {
            return;
        }
        let mut peers = self.peers.lock().expect("peers lock");
        if peers.get(&id).is_some_and(|p| p.addr == addr) {
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        peers.insert(
            id,
            Peer {
                addr: addr.to_string(),
                tx,
            },
        );
        let me = self.clone();
        let addr = addr.to_string();
        self.rt
            .spawn(async move { me.peer_task(id, addr, rx).await });
    }

    /// Queue messages for their peers (called from the raft thread; never blocks).
    fn queue(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let peers = self.peers.lock().expect("peers lock");
        for m in msgs {
            let to = m.to;
            match peers.get(&to) {
                Some(p) => {
                    let is_snap = m.get_msg_type() == MessageType::MsgSnapshot;
                    if p.tx.try_send(m).is_err() {
                        let _ = self.raft_tx.send(Request::Unreachable(to));
                        if is_snap {
                            let _ = self.raft_tx.send(Request::SnapshotDone { to, ok: false });
                        }
                    }
                }
                None => {
                    tracing::debug!(to, "no address for peer; message dropped");
                    let _ = self.raft_tx.send(Request::Unreachable(to));
                }
            }
        }
    }

    /// Set or clear (None) the fault on the link with `peer`.
    pub fn set_fault(&self, peer: u64, fault: Option<Fault>) {
        let mut f = self.faults.write().expect("faults lock");
        match fault {
            Some(x) => {
                f.insert(peer, x);
            }
            None => {
                f.remove(&peer);
            }
        }
        tracing::warn!(peer, ?fault, "fault injection: link rule changed");
    }

    pub fn heal_all(&self) {
        self.faults.write().expect("faults lock").clear();
    }

    fn fault(&self, peer: u64) -> Option<Fault> {
        self.faults.read().expect("faults lock").get(&peer).copied()
    }

    /// Whether a batch to/from `peer` succeeded in the last 2 s.
    pub fn reachable(&self, peer: u64) -> bool {
        if peer == self.id {
            return true;
        }
        self.last_ok
            .lock()
            .expect("last_ok lock")
            .get(&peer)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
    }

    fn mark_ok(&self, peer: u64) {
        self.last_ok
            .lock()
            .expect("last_ok lock")
            .insert(peer, Instant::now());
    }

    /// Send one batch to peer `to`: snapshots too large for one message in chunks, the rest
    /// as one `RaftBatch`.
    async fn deliver(
        &self,
        c: &mut RaftTransportClient<Channel>,
        to: u64,
        batch: Vec<Message>,
    ) -> Result<(), tonic::Status> {
        let (big, batch): (Vec<Message>, Vec<Message>) = batch.into_iter().partition(|m| {
            m.get_msg_type() == MessageType::MsgSnapshot
                && m.get_snapshot().get_data().len() > SNAPSHOT_CHUNK
        });
        let mut result: Result<(), tonic::Status> = Ok(());
        for m in &big {
            let chunks = snapshot_chunks(self.id, to, &self.self_peer_addr, m, SNAPSHOT_CHUNK);
            tracing::info!(
                to,
                bytes = m.get_snapshot().get_data().len(),
                chunks = chunks.len(),
                "sending a snapshot in chunks"
            );
            if let Err(e) = c.send_snapshot(tokio_stream::iter(chunks)).await {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() && !batch.is_empty() {
            let req = RaftBatch {
                from: self.id,
                messages: batch
                    .iter()
                    .map(|m| m.write_to_bytes().expect("encode raft message"))
                    .collect(),
                from_peer_addr: self.self_peer_addr.clone(),
                to,
            };
            result = c.send(req).await.map(|_| ());
        }
        result
    }

    async fn peer_task(self: Arc<Self>, to: u64, addr: String, mut rx: mpsc::Receiver<Message>) {
        let mut client: Option<RaftTransportClient<Channel>> = None;
        let mut backoff = Duration::from_millis(50);
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // Stop when this task was replaced (address changed).
            if self
                .peers
                .lock()
                .expect("peers lock")
                .get(&to)
                .is_none_or(|p| p.addr != addr)
            {
                return;
            }
            let has_snap: Vec<bool> = batch
                .iter()
                .map(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .collect();
            let any_snap = has_snap.iter().any(|x| *x);
            match self.fault(to) {
                Some(Fault::Drop) | Some(Fault::DropOutbound) => {
                    if any_snap {
                        let _ = self.raft_tx.send(Request::SnapshotDone { to, ok: false });
                    }
                    continue;
                }
                Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
                None => {}
            }
            if client.is_none() {
                let ep = match self
                    .tls
                    .endpoint_to(&addr, edgeplane_tls::Expect::Member(to))
                {
                    Ok(ep) => ep
                        .connect_timeout(Duration::from_millis(500))
                        .timeout(Duration::from_secs(5))
                        .tcp_nodelay(true),
                    Err(e) => {
                        tracing::error!(to, %addr, error = %e, "bad peer address");
                        return;
                    }
                };
                match ep.connect().await {
                    Ok(ch) => {
                        client = Some(
                            RaftTransportClient::new(ch)
                                .max_decoding_message_size(256 << 20)
                                .max_encoding_message_size(256 << 20),
                        );
                        backoff = Duration::from_millis(50);
                    }
                    Err(e) => {
                        tracing::debug!(to, %addr, error = %e, "peer connect failed; backing off");
                        let _ = self.raft_tx.send(Request::Unreachable(to));
                        if any_snap {
                            let _ = self.raft_tx.send(Request::SnapshotDone { to, ok: false });
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                }
            }
            let c = client.as_mut().expect("connected");
            let result = self.deliver(c, to, batch).await;
            match result {
                Ok(_) => {
                    self.mark_ok(to);
                    if any_snap {
                        let _ = self.raft_tx.send(Request::SnapshotDone { to, ok: true });
                    }
                }
                Err(e) if StatusDetail::of(&e).outcome() == Outcome::MemberRemoved => {
                    tracing::warn!(to, reason = %e.message(), "peer refused our messages");
                    let _ = self.raft_tx.send(Request::RemovedByPeer(to));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::debug!(to, error = %e, "peer send failed; reconnecting");
                    client = None;
                    let _ = self.raft_tx.send(Request::Unreachable(to));
                    if any_snap {
                        let _ = self.raft_tx.send(Request::SnapshotDone { to, ok: false });
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

impl Outbox for Arc<Transport> {
    fn send(&self, msgs: Vec<Message>) {
        self.queue(msgs);
    }

    /// Update peers from the replicated member list.
    fn set_members(&self, members: &OrdMap<u64, Member>, removed: &OrdSet<u64>) {
        for m in members.values() {
            self.ensure_peer(m.id, &m.peer_addr);
        }
        *self.removed.write().expect("removed lock") = removed.iter().copied().collect();
    }
}

/// Server side of `RaftTransport`: decode and hand messages to the raft loop.
pub struct TransportService {
    pub(crate) transport: Arc<Transport>,
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn send(
        &self,
        request: tonic::Request<RaftBatch>,
    ) -> Result<tonic::Response<RaftAck>, tonic::Status> {
        let caller = edgeplane_tls::Caller::of(&request).cloned();
        let b = request.into_inner();
        crate::auth::check_raft_sender(caller.as_ref(), b.from)?;
        match self.transport.fault(b.from) {
            Some(Fault::Drop) => {
                return Err(tonic::Status::unavailable("link cut by fault injection"))
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::DropOutbound) | None => {}
        }
        if self
            .transport
            .removed
            .read()
            .expect("removed lock")
            .contains(&b.from)
        {
            return Err(removed_status(b.from));
        }
        if b.to != 0 && b.to != self.transport.id {
            return Err(tonic::Status::failed_precondition(format!(
                "batch for replica {} reached replica {}",
                b.to, self.transport.id
            )));
        }
        self.transport.mark_ok(b.from);
        if !b.from_peer_addr.is_empty() {
            let (known, count) = {
                let p = self.transport.peers.lock().expect("peers lock");
                (p.contains_key(&b.from), p.len())
            };
            if !known && count < MAX_PEERS {
                self.transport.ensure_peer(b.from, &b.from_peer_addr);
            }
        }
        let mut msgs = Vec::with_capacity(b.messages.len());
        for raw in &b.messages {
            let m = Message::parse_from_bytes(raw)
                .map_err(|e| tonic::Status::invalid_argument(format!("raft message: {e}")))?;
            if m.from != b.from {
                return Err(tonic::Status::permission_denied(format!(
                    "messages.from: a message from replica {} inside a batch from replica {}",
                    m.from, b.from
                )));
            }
            msgs.push(m);
        }
        self.transport
            .raft_tx
            .send(Request::Raft(msgs))
            .map_err(|_| tonic::Status::unavailable("replica shutting down"))?;
        Ok(tonic::Response::new(RaftAck {}))
    }

    async fn send_snapshot(
        &self,
        request: tonic::Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<RaftAck>, tonic::Status> {
        let caller = edgeplane_tls::Caller::of(&request).cloned();
        let mut stream = request.into_inner();
        let mut chunks = Vec::new();
        let mut bytes = 0u64;
        while let Some(c) = stream.message().await? {
            if let Some(first) = chunks.first() {
                let first: &SnapshotChunk = first;
                crate::auth::check_raft_sender(caller.as_ref(), first.from)?;
            }
            bytes += (c.data.len() + c.message.len()) as u64;
            if bytes > MAX_SNAPSHOT {
                return Err(tonic::Status::invalid_argument(format!(
                    "snapshot chunks: more than {MAX_SNAPSHOT} bytes"
                )));
            }
            chunks.push(c);
        }
        let (from, to, from_peer_addr, m) = reassemble_snapshot(chunks)
            .map_err(|e| tonic::Status::invalid_argument(format!("snapshot chunks: {e}")))?;
        crate::auth::check_raft_sender(caller.as_ref(), from)?;
        if m.from != from {
            return Err(tonic::Status::permission_denied(format!(
                "message.from: snapshot message from replica {} in chunks from replica {from}",
                m.from
            )));
        }
        match self.transport.fault(from) {
            Some(Fault::Drop) => {
                return Err(tonic::Status::unavailable("link cut by fault injection"))
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            // one-way faults cut what this replica sends, not what it receives
            Some(Fault::DropOutbound) | None => {}
        }
        if self
            .transport
            .removed
            .read()
            .expect("removed lock")
            .contains(&from)
        {
            return Err(removed_status(from));
        }
        if to != 0 && to != self.transport.id {
            return Err(tonic::Status::failed_precondition(format!(
                "snapshot for replica {to} reached replica {}",
                self.transport.id
            )));
        }
        self.transport.mark_ok(from);
        if !from_peer_addr.is_empty() {
            self.transport.ensure_peer(from, &from_peer_addr);
        }
        tracing::info!(
            from,
            bytes = m.get_snapshot().get_data().len(),
            "received a chunked snapshot"
        );
        self.transport
            .raft_tx
            .send(Request::Raft(vec![m]))
            .map_err(|_| tonic::Status::unavailable("replica shutting down"))?;
        Ok(tonic::Response::new(RaftAck {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_round_trip() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 2;
        m.from = 1;
        let data: Vec<u8> = (0..2_500_003u32).map(|i| (i % 251) as u8).collect();
        m.mut_snapshot().set_data(data.clone().into());
        m.mut_snapshot().mut_metadata().index = 42;
        let chunks = snapshot_chunks(1, 2, "127.0.0.1:1", &m, 1 << 20);
        // Hand-derived: a header plus ceil(2,500,003 / 1,048,576) = 3 data chunks, none
        // above the chunk size.
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().all(|c| c.data.len() <= 1 << 20));
        let (from, to, addr, back) = reassemble_snapshot(chunks.clone()).unwrap();
        assert_eq!((from, to, addr.as_str()), (1, 2, "127.0.0.1:1"));
        assert_eq!(back.get_snapshot().get_metadata().index, 42);
        assert_eq!(back.get_snapshot().get_data(), &data[..]);
        // A lost chunk is detected, not installed short.
        let mut lossy = chunks;
        lossy.remove(2);
        assert!(reassemble_snapshot(lossy)
            .unwrap_err()
            .contains("announced"));
    }
}
