//! One benchmark client: the same calls against either system. A write stores a unique value
//! under the client's own key; a read is a linearizable read of one key.

use edgeplane_proto::admin::{
    admin_client::AdminClient, DeployModelRequest, GetModelRequest, WriteMeta,
};
use edgeplane_proto::etcd::{kv_client::KvClient, PutRequest, RangeRequest};
use tonic::transport::Channel;

use crate::cluster::System;

pub enum Client {
    Etcd(KvClient<Channel>),
    Edgeplane {
        admin: AdminClient<Channel>,
        client_id: u64,
        seq: u64,
    },
}

impl Client {
    pub fn new(system: System, ch: Channel) -> Self {
        match system {
            System::Etcd => Client::Etcd(KvClient::new(ch)),
            System::Edgeplane => Client::Edgeplane {
                admin: AdminClient::new(ch),
                client_id: rand::random::<u64>() | 1,
                seq: 0,
            },
        }
    }

    pub async fn write(&mut self, key: &str, value: u64) -> Result<(), tonic::Status> {
        match self {
            Client::Etcd(kv) => {
                kv.put(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.to_le_bytes().to_vec(),
                    ..Default::default()
                })
                .await?;
            }
            Client::Edgeplane {
                admin,
                client_id,
                seq,
            } => {
                *seq += 1;
                admin
                    .deploy_model(DeployModelRequest {
                        meta: Some(WriteMeta {
                            client_id: *client_id,
                            seq: *seq,
                        }),
                        name: key.to_string(),
                        slo_ms: 50.0,
                        rate: value as f64,
                        memory_mb: 1,
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// A linearizable read of one key: etcd's default Range (not `serializable`), Edgeplane's
    /// `GetModel` (ReadIndex).
    pub async fn read(&mut self, key: &str) -> Result<bool, tonic::Status> {
        match self {
            Client::Etcd(kv) => {
                let r = kv
                    .range(RangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(!r.kvs.is_empty())
            }
            Client::Edgeplane { admin, .. } => {
                let r = admin
                    .get_model(GetModelRequest {
                        name: key.to_string(),
                        stale: false,
                    })
                    .await?
                    .into_inner();
                Ok(r.model.is_some())
            }
        }
    }
}
