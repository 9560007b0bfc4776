//! Generated gRPC/protobuf code for every Edgeplane service. No other crate compiles protos.
#![forbid(unsafe_code)]

/// Coordinator peer transport (raft messages carried as bytes).
pub mod raft {
    tonic::include_proto!("edgeplane.raft.v1");
}

/// Operator admin API.
pub mod admin {
    tonic::include_proto!("edgeplane.admin.v1");
}

/// Edge agent <-> coordinator API, and the agent's own Infer API.
pub mod agent {
    tonic::include_proto!("edgeplane.agent.v1");
}

/// The subset of etcd's v3 API (KV Put/Range, Maintenance Status) that the side-by-side
/// benchmark against etcd drives; Edgeplane itself serves none of it.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
