//! Follower → leader forwarding of writes over the leader's Admin API (`Forward`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use edgeplane_proto::admin::admin_client::AdminClient;
use edgeplane_proto::admin::ForwardRequest;
use edgeplane_proto::raft as pb;
use prost::Message as _;
use tonic::transport::Channel;

use crate::error::Error;
use crate::inbox::LeaderClient;

/// Caches one lazily connected channel per leader address.
#[derive(Default)]
pub struct Forwarder {
    clients: Mutex<HashMap<String, AdminClient<Channel>>>,
    tls: edgeplane_tls::ClientTls,
}

impl Forwarder {
    /// Forwarding over mutual TLS with this member's certificate (or plaintext).
    pub fn new(tls: edgeplane_tls::ClientTls) -> Forwarder {
        Forwarder {
            clients: Mutex::default(),
            tls,
        }
    }

    fn client(&self, addr: &str) -> Result<AdminClient<Channel>, Error> {
        let mut c = self.clients.lock().expect("forward lock");
        if let Some(x) = c.get(addr) {
            return Ok(x.clone());
        }
        let ep = self
            .tls
            .endpoint(addr)
            .map_err(|e| Error::Raft(format!("leader address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        let client = AdminClient::new(ep.connect_lazy());
        c.insert(addr.to_string(), client.clone());
        Ok(client)
    }
}

#[tonic::async_trait]
impl LeaderClient for Forwarder {
    /// Send `cmd` to the leader's client address and wait for its apply result. A failure
    /// is "not applied" only when the leader says so; a broken link is "outcome unknown"
    /// (the caller retries under the command's (client id, seq)).
    async fn forward(
        &self,
        addr: &str,
        cmd: &pb::Command,
        timeout: Duration,
    ) -> Result<pb::ApplyResult, Error> {
        let mut client = self.client(addr)?;
        let mut req = tonic::Request::new(ForwardRequest {
            command: cmd.encode_to_vec(),
        });
        req.set_timeout(timeout.max(Duration::from_millis(10)));
        match client.forward(req).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(pb::ApplyResult {
                    code: pb::ResultCode::Ok as i32,
                    message: r.message,
                    index: r.index,
                    epoch: r.epoch,
                    field: String::new(),
                })
            }
            Err(s) => {
                if !matches!(
                    s.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::NotFound
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::PermissionDenied
                ) {
                    // The leader moved, is down or the link broke: reconnect next time.
                    self.clients.lock().expect("forward lock").remove(addr);
                }
                Err(Error::from_forward_status(s))
            }
        }
    }
}
