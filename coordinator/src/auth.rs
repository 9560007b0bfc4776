//! Who may call what on a coordinator: the method → [`Need`] tables for the client port
//! (Admin, Agent) and the peer port, and the per-request checks that need the message
//! itself (raft `from` against the member certificate, an agent's node name against its
//! node certificate). The TLS handshake and the role check run in
//! [`edgeplane_tls::AuthLayer`].

use std::sync::Arc;

use edgeplane_tls::{Caller, Need, Policy, Principal, Role};

const fn read() -> Need {
    Need::Role {
        role: Role::Viewer,
        write: false,
    }
}
const fn operate() -> Need {
    Need::Role {
        role: Role::Operator,
        write: true,
    }
}
const fn admin_read() -> Need {
    Need::Role {
        role: Role::Admin,
        write: false,
    }
}
const fn administer() -> Need {
    Need::Role {
        role: Role::Admin,
        write: true,
    }
}

/// The client port (`--client-addr`): Admin, Agent and whatever extensions mount there.
/// A method not listed needs the admin role (deny by default).
pub fn client_need(path: &str) -> Need {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    match service {
        "edgeplane.admin.v1.Admin" => match method {
            "ClusterStatus" | "ListModels" | "GetModel" | "ListNodes" | "ShowPlacement"
            | "StateHash" | "PlanPlacement" => read(),
            "DeployModel" | "RemoveModel" | "SetPlacement" | "PinPlacement" | "UnpinPlacement"
            | "DrainNode" | "RemoveNode" => operate(),
            // Join tokens: listing them is an admin read (ids, restrictions, who used them).
            "ListTokens" => admin_read(),
            "CreateToken" | "RevokeToken" => administer(),
            // AddMember, RemoveMember, TransferLeader, SaveSnapshot, InjectFault and
            // anything new.
            "Forward" => Need::Member,
            _ => administer(),
        },
        // Register is also the join of a new agent (a per-node token and a CSR, no
        // certificate yet): the only call a client without a certificate may make.
        "edgeplane.agent.v1.Agent" if method == "Register" => Need::JoinOrNode,
        "edgeplane.agent.v1.Agent" => Need::Node,
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Need::Authenticated,
        _ => administer(),
    }
}

/// The peer port: members only.
pub fn peer_need(_path: &str) -> Need {
    Need::Member
}

pub fn client_policy() -> Policy {
    Arc::new(client_need)
}

pub fn peer_policy() -> Policy {
    Arc::new(peer_need)
}

/// A raft batch or snapshot claiming to come from replica `from` must come from the
/// certificate of member `from`.
pub fn check_raft_sender(caller: Option<&Caller>, from: u64) -> Result<(), tonic::Status> {
    match caller {
        Some(Caller::Insecure) => Ok(()),
        Some(Caller::Anonymous) => Err(tonic::Status::unauthenticated(
            "peer: no client certificate",
        )),
        Some(Caller::Cert(id)) if id.principal == Principal::Member(from) => Ok(()),
        Some(Caller::Cert(id)) => {
            tracing::warn!(caller = ?id.to_string(), claimed_from = from, "forged raft sender refused");
            Err(tonic::Status::permission_denied(format!(
                "from: the batch claims replica {from} but the certificate is {id}"
            )))
        }
        None => Err(tonic::Status::unauthenticated("peer: no caller identity")),
    }
}

/// An agent may only register or open a session as the node its certificate names (an
/// admin user may act for any node: tools and benchmarks).
pub fn check_node_name(caller: Option<&Caller>, name: &str) -> Result<(), tonic::Status> {
    match caller {
        Some(Caller::Insecure) => Ok(()),
        Some(Caller::Anonymous) => Err(tonic::Status::unauthenticated(format!(
            "name: registering node {name:?} without a client certificate is only possible \
             as a join (a per-node join token and a CSR); give the agent --tls-cert/--tls-key, \
             or --join-token ID.SECRET and no certificate"
        ))),
        Some(Caller::Cert(id)) => match &id.principal {
            Principal::Node(n) if n == name => Ok(()),
            _ if id.has_role(Role::Admin) => Ok(()),
            _ => Err(tonic::Status::permission_denied(format!(
                "name: node {name:?} belongs to another certificate; the caller is {id}"
            ))),
        },
        None => Err(tonic::Status::unauthenticated("agent: no caller identity")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_method() {
        assert_eq!(client_need("/edgeplane.admin.v1.Admin/ListNodes"), read());
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/DeployModel"),
            operate()
        );
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/AddMember"),
            administer()
        );
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/InjectFault"),
            administer()
        );
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/SaveSnapshot"),
            administer()
        );
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/Forward"),
            Need::Member
        );
        assert_eq!(
            client_need("/edgeplane.agent.v1.Agent/Register"),
            Need::JoinOrNode
        );
        assert_eq!(client_need("/edgeplane.agent.v1.Agent/Session"), Need::Node);
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/CreateToken"),
            administer()
        );
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/RevokeToken"),
            administer()
        );
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/ListTokens"),
            admin_read()
        );
        assert_eq!(
            client_need("/edgeplane.admin.v1.Admin/SomethingNew"),
            administer()
        );
        assert_eq!(client_need("garbage"), administer());
    }

    #[test]
    fn forged_sender_is_refused() {
        let m2 = Caller::Cert(edgeplane_tls::Identity {
            principal: Principal::Member(2),
            role: None,
        });
        assert!(check_raft_sender(Some(&m2), 2).is_ok());
        let e = check_raft_sender(Some(&m2), 3).unwrap_err();
        assert!(e.message().contains("claims replica 3"), "{}", e.message());
        assert!(check_raft_sender(None, 2).is_err());
    }
}
