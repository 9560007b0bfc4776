//! Generated gRPC/protobuf code for every Edgeplane service. No other crate compiles protos.
#![forbid(unsafe_code)]

/// Coordinator peer transport (raft messages carried as bytes).
pub mod raft {
    tonic::include_proto!("edgeplane.raft.v1");

    impl StatusDetail {
        /// A status of `code` and `message` whose details say `outcome` (and `field`).
        pub fn status(
            code: tonic::Code,
            message: impl Into<String>,
            outcome: Outcome,
            field: &str,
        ) -> tonic::Status {
            use prost::Message as _;
            let d = StatusDetail {
                outcome: outcome as i32,
                field: field.to_string(),
            };
            tonic::Status::with_details(code, message, d.encode_to_vec().into())
        }

        /// The detail `s` carries (the default, outcome unspecified, when it has none).
        pub fn of(s: &tonic::Status) -> StatusDetail {
            use prost::Message as _;
            StatusDetail::decode(s.details()).unwrap_or_default()
        }

        /// `s` with another message, its code and details kept.
        pub fn rewrap(s: &tonic::Status, message: impl Into<String>) -> tonic::Status {
            tonic::Status::with_details(s.code(), message, s.details().to_vec().into())
        }
    }
}

/// Operator admin API.
pub mod admin {
    tonic::include_proto!("edgeplane.admin.v1");

    impl std::fmt::Debug for CreateTokenResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CreateTokenResponse")
                .field("token", &crate::redacted(&self.token))
                .field("id", &self.id)
                .field("expires_unix_ms", &self.expires_unix_ms)
                .field("index", &self.index)
                .finish()
        }
    }
}

/// Edge agent <-> coordinator API, and the agent's own Infer API.
pub mod agent {
    tonic::include_proto!("edgeplane.agent.v1");

    impl std::fmt::Debug for RegisterRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RegisterRequest")
                .field("name", &self.name)
                .field("join_token", &crate::redacted(&self.join_token))
                .field("agent_addr", &self.agent_addr)
                .field("accelerators", &self.accelerators)
                .field("assignment_epoch", &self.assignment_epoch)
                .field("csr", &(!self.csr.is_empty()))
                .field("joined_from_ip", &self.joined_from_ip)
                .finish()
        }
    }

    impl std::fmt::Debug for Hello {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Hello")
                .field("name", &self.name)
                .field("join_token", &crate::redacted(&self.join_token))
                .field("assignment_epoch", &self.assignment_epoch)
                .finish()
        }
    }
}

/// What `Debug` shows for a token field: whether it is set, never its value.
fn redacted(s: &str) -> &'static str {
    if s.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

/// The subset of etcd's v3 API (KV Put/Range, Maintenance Status) that the side-by-side
/// benchmark against etcd drives; Edgeplane itself serves none of it.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

/// The encoded `FileDescriptorSet` of every Edgeplane `.proto`, for gRPC reflection
/// (`tonic-reflection`): `grpcurl -plaintext HOST:PORT list` works against any server.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("edgeplane_descriptor");
/// The Open Inference Protocol (KServe v2 gRPC): the agent's client to inference workers,
/// served by the built-in CPU worker `edgeplane-worker`.
pub mod oip {
    tonic::include_proto!("inference");
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_output_never_shows_a_token() {
        let r = crate::agent::RegisterRequest {
            name: "n".into(),
            join_token: "abc123.s3cr3ts3cr3ts3cr".into(),
            ..Default::default()
        };
        let h = crate::agent::Hello {
            name: "n".into(),
            join_token: "abc123.s3cr3ts3cr3ts3cr".into(),
            assignment_epoch: 1,
        };
        let c = crate::admin::CreateTokenResponse {
            token: "abc123.s3cr3ts3cr3ts3cr".into(),
            id: "abc123".into(),
            ..Default::default()
        };
        let shown = format!("{r:?} {h:?} {c:?} {r:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
