//! Who is calling: the identity and role a cluster certificate carries.
//!
//! Every certificate the cluster CA issues carries its identity as SAN URIs:
//! - `edgeplane://member/<id>`: a coordinator replica (peer links, `Forward`);
//! - `edgeplane://node/<name>`: an edge agent, bound to its node name;
//! - `edgeplane://user/<name>` plus `edgeplane://role/<viewer|operator|admin>`: an operator;
//! - `edgeplane://client/<name>`: an inference client (the agents' `Infer`).

use std::fmt;
use std::str::FromStr;

/// URI scheme prefix of every identity SAN.
pub const URI_PREFIX: &str = "edgeplane://";

/// Longest name accepted in an identity (node, user, client names).
pub const MAX_NAME: usize = 63;

/// Admin roles, ordered: each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: status, lists, placement.
    Viewer,
    /// Models, placement, pins, drain.
    Operator,
    /// Membership, leader transfer, snapshots, tokens, fault injection.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "role: {other:?} is not a role; use viewer, operator or admin"
            )),
        }
    }
}

/// What kind of party a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Member(u64),
    Node(String),
    User(String),
    Client(String),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Member(id) => write!(f, "member/{id}"),
            Principal::Node(n) => write!(f, "node/{n}"),
            Principal::User(n) => write!(f, "user/{n}"),
            Principal::Client(n) => write!(f, "client/{n}"),
        }
    }
}

/// The identity of an authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    /// Admin role (users only).
    pub role: Option<Role>,
}

impl Identity {
    /// Whether this identity holds at least `need`.
    pub fn has_role(&self, need: Role) -> bool {
        self.role.is_some_and(|r| r >= need)
    }

    /// The SAN URIs that encode this identity.
    pub fn to_uris(&self) -> Vec<String> {
        let mut v = vec![format!("{URI_PREFIX}{}", self.principal)];
        if let Some(r) = self.role {
            v.push(format!("{URI_PREFIX}role/{r}"));
        }
        v
    }

    /// Parse the identity from SAN URIs; exactly one principal is required.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Identity, String> {
        let mut principal = None;
        let mut role = None;
        for u in uris {
            let Some(rest) = u.strip_prefix(URI_PREFIX) else {
                continue;
            };
            let (kind, value) = rest
                .split_once('/')
                .ok_or_else(|| format!("identity URI {u:?}: expected edgeplane://KIND/VALUE"))?;
            let p = match kind {
                "member" => Principal::Member(
                    value
                        .parse()
                        .map_err(|_| format!("identity URI {u:?}: member id is not a number"))?,
                ),
                "node" => Principal::Node(valid_name("node name", value)?.to_string()),
                "user" => Principal::User(valid_name("user name", value)?.to_string()),
                "client" => Principal::Client(valid_name("client name", value)?.to_string()),
                "role" => {
                    if role.replace(value.parse::<Role>()?).is_some() {
                        return Err("identity: more than one role URI".into());
                    }
                    continue;
                }
                other => return Err(format!("identity URI {u:?}: unknown kind {other:?}")),
            };
            if principal.replace(p).is_some() {
                return Err("identity: more than one principal URI".into());
            }
        }
        let principal = principal.ok_or("identity: the certificate has no edgeplane:// URI")?;
        if role.is_some() && !matches!(principal, Principal::User(_)) {
            return Err("identity: only user certificates carry a role".into());
        }
        Ok(Identity { principal, role })
    }

    /// Parse the identity of a DER certificate (SAN URIs).
    pub fn from_der(der: &[u8]) -> Result<Identity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate: not DER X.509: {e}"))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("certificate: subjectAltName: {e}"))?
            .ok_or("certificate: no subjectAltName")?;
        let uris = san.value.general_names.iter().filter_map(|g| match g {
            x509_parser::extensions::GeneralName::URI(u) => Some(*u),
            _ => None,
        });
        Identity::from_uris(uris)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Some(r) => write!(f, "{} ({r})", self.principal),
            None => write!(f, "{}", self.principal),
        }
    }
}

/// A name used in an identity: 1..=63 of `[a-zA-Z0-9._-]`.
pub fn valid_name<'a>(field: &str, s: &'a str) -> Result<&'a str, String> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(format!("{field}: must be 1 to {MAX_NAME} characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "{field}: {s:?} may hold only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for id in [
            Identity {
                principal: Principal::Member(3),
                role: None,
            },
            Identity {
                principal: Principal::User("alice".into()),
                role: Some(Role::Operator),
            },
            Identity {
                principal: Principal::Node("edge-1".into()),
                role: None,
            },
        ] {
            let uris = id.to_uris();
            let back = Identity::from_uris(uris.iter().map(|s| s.as_str())).unwrap();
            assert_eq!(back, id);
        }
    }

    #[test]
    fn roles_are_ordered() {
        let op = Identity {
            principal: Principal::User("o".into()),
            role: Some(Role::Operator),
        };
        assert!(op.has_role(Role::Viewer));
        assert!(op.has_role(Role::Operator));
        assert!(!op.has_role(Role::Admin));
    }

    #[test]
    fn bad_identities_name_the_problem() {
        let e = Identity::from_uris(["edgeplane://member/x"]).unwrap_err();
        assert!(e.contains("member id"), "{e}");
        let e =
            Identity::from_uris(["edgeplane://member/1", "edgeplane://role/admin"]).unwrap_err();
        assert!(e.contains("only user"), "{e}");
        let e = Identity::from_uris(["edgeplane://member/1", "edgeplane://member/2"]).unwrap_err();
        assert!(e.contains("more than one principal"), "{e}");
        let e = Identity::from_uris(["https://x"]).unwrap_err();
        assert!(e.contains("no edgeplane"), "{e}");
    }
}
