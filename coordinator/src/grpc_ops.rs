//! Standard gRPC operations services on the client port: `grpc.health.v1.Health` and
//! `grpc.reflection.v1.ServerReflection` (so `grpcurl -plaintext HOST:PORT list` and any
//! gRPC health probe work without the `.proto` files).
//!
//! Health follows leadership: the overall status (service `""`) and the Admin and Agent
//! services are SERVING while this replica knows a leader (it can serve linearizable reads
//! and forward writes), NOT_SERVING otherwise, like etcd's `/health`.

use tokio::sync::broadcast;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;

use crate::node::Handle;

/// Services whose health follows leadership.
pub const HEALTH_SERVICES: [&str; 3] = ["", "edgeplane.admin.v1.Admin", "edgeplane.agent.v1.Agent"];

/// Add Health and Reflection to `routes`; returns the task that keeps health in step
/// with leadership (ends on `shutdown`).
pub fn install(
    handle: &Handle,
    routes: &mut RoutesBuilder,
    mut shutdown: broadcast::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    routes.add_service(health);
    match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(edgeplane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(r) => {
            routes.add_service(r);
        }
        // The descriptor set is built into the binary; failing here is a build defect,
        // and the replica still serves everything else.
        Err(e) => tracing::error!(error = %e, "gRPC reflection unavailable"),
    }
    let mut leadership = handle.leadership();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let has_leader = leadership.borrow_and_update().leader_id != 0;
            if last != Some(has_leader) {
                let st = if has_leader {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for s in HEALTH_SERVICES {
                    reporter.set_service_status(s, st).await;
                }
                last = Some(has_leader);
            }
            tokio::select! {
                _ = shutdown.recv() => return,
                r = leadership.changed() => if r.is_err() { return },
            }
        }
    })
}
