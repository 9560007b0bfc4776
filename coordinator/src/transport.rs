//! Peer transport: Raft messages between replicas over gRPC (`RaftTransport.Send`), one
//! outbound task per peer with its own queue, batching, reconnect with exponential backoff,
//! and a fault-injection table (drop / delay / cut a link) that tests can drive through the
//! admin `InjectFault` RPC when the replica runs with `--enable-fault-injection`.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use edgeplane_proto::raft::raft_transport_client::RaftTransportClient;
use edgeplane_proto::raft::raft_transport_server::RaftTransport;
use edgeplane_proto::raft::{RaftAck, RaftBatch};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::node::Request;
use crate::state::State;

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
    raft_tx: std_mpsc::Sender<Request>,
    pub fault_injection_enabled: bool,
}

impl Transport {
    pub(crate) fn new(
        id: u64,
        self_peer_addr: String,
        rt: tokio::runtime::Handle,
        raft_tx: std_mpsc::Sender<Request>,
        initial: &HashMap<u64, String>,
        fault_injection_enabled: bool,
    ) -> Arc<Self> {
        let t = Arc::new(Transport {
            id,
            self_peer_addr,
            rt,
            peers: Mutex::new(HashMap::new()),
            faults: RwLock::new(HashMap::new()),
            last_ok: Mutex::new(HashMap::new()),
            raft_tx,
            fault_injection_enabled,
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

    /// Update peers from the replicated member list.
    pub(crate) fn set_members(self: &Arc<Self>, state: &State) {
        for m in state.members.values() {
            self.ensure_peer(m.id, &m.peer_addr);
        }
    }

    /// Queue messages for their peers (called from the raft thread; never blocks).
    pub(crate) fn send(&self, msgs: Vec<Message>) {
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
                let ep = match Endpoint::from_shared(format!("http://{addr}")) {
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
            let req = RaftBatch {
                from: self.id,
                messages: batch
                    .iter()
                    .map(|m| m.write_to_bytes().expect("encode raft message"))
                    .collect(),
                from_peer_addr: self.self_peer_addr.clone(),
                to,
            };
            let c = client.as_mut().expect("connected");
            match c.send(req).await {
                Ok(_) => {
                    self.mark_ok(to);
                    if any_snap {
                        let _ = self.raft_tx.send(Request::SnapshotDone { to, ok: true });
                    }
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
        let b = request.into_inner();
        match self.transport.fault(b.from) {
            Some(Fault::Drop) => {
                return Err(tonic::Status::unavailable("link cut by fault injection"))
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::DropOutbound) | None => {}
        }
        if b.to != 0 && b.to != self.transport.id {
            return Err(tonic::Status::failed_precondition(format!(
                "batch for replica {} reached replica {}",
                b.to, self.transport.id
            )));
        }
        self.transport.mark_ok(b.from);
        if !b.from_peer_addr.is_empty() {
            let known = self
                .transport
                .peers
                .lock()
                .expect("peers lock")
                .contains_key(&b.from);
            if !known {
                self.transport.ensure_peer(b.from, &b.from_peer_addr);
            }
        }
        let mut msgs = Vec::with_capacity(b.messages.len());
        for raw in &b.messages {
            let m = Message::parse_from_bytes(raw)
                .map_err(|e| tonic::Status::invalid_argument(format!("raft message: {e}")))?;
            msgs.push(m);
        }
        self.transport
            .raft_tx
            .send(Request::Raft(msgs))
            .map_err(|_| tonic::Status::unavailable("replica shutting down"))?;
        Ok(tonic::Response::new(RaftAck {}))
    }
}
