//! Per-node join tokens in the replicated state (`edgeplane tokens create/list/revoke`).
//!
//! A token is `ID.SECRET` ([`edgeplane_tls::token`]); the state keeps, per ID, only the
//! SHA-256 of the secret, its expiry, its node restriction and who used it. Times come from
//! the leader: it stamps `created/expires/now` into the command when it proposes
//! ([`stamp`]), so `apply` stays a pure function of the entry and every replica decides the
//! same. Secret hashes are compared in constant time. A token joins one agent once; a
//! revoked token stays listed (so a refusal can say it was revoked) until it is pruned a day
//! after its expiry.

use std::time::{SystemTime, UNIX_EPOCH};

use edgeplane_proto::raft::{self as pb, command::Kind};
use serde::{Deserialize, Serialize};

use crate::state::{hex, CommandError, State};

/// Shortest token lifetime.
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest token lifetime.
pub const MAX_TTL_MS: u64 = 365 * 86_400_000;
/// Default lifetime (`tokens create` without `--ttl`), as kubeadm's.
pub const DEFAULT_TTL_MS: u64 = 86_400_000;
/// Tokens kept at most (expired ones are pruned first).
pub const MAX_TOKENS: usize = 1_000;
/// A token is forgotten this long after it expired (used, revoked or not).
pub const PRUNE_AFTER_MS: u64 = 86_400_000;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 256;

/// One token as the replicated state keeps it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the secret, lower-case hex.
    pub secret_sha256: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    /// Node restriction ("" = any name).
    pub node: String,
    pub description: String,
    pub created_by: String,
    /// The node that joined with it ("" = unused).
    pub used_by: String,
    pub used_unix_ms: u64,
    pub revoked: bool,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("secret_sha256", &"<redacted>")
            .field("expires_unix_ms", &self.expires_unix_ms)
            .field("node", &self.node)
            .field("used_by", &self.used_by)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

impl TokenRecord {
    /// `revoked`, `used`, `expired` or `unused`, at `now`.
    pub fn status(&self, now_unix_ms: u64) -> &'static str {
        if self.revoked {
            "revoked"
        } else if !self.used_by.is_empty() {
            "used"
        } else if now_unix_ms >= self.expires_unix_ms {
            "expired"
        } else {
            "unused"
        }
    }
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The leader's part: put its clock into a token command before proposing it.
pub fn stamp(cmd: &mut pb::Command, now: u64) {
    match cmd.kind.as_mut() {
        Some(Kind::CreateToken(c)) => {
            c.created_unix_ms = now;
            c.expires_unix_ms = now.saturating_add(c.ttl_ms);
        }
        Some(Kind::RevokeToken(r)) => r.now_unix_ms = now,
        Some(Kind::JoinNode(j)) => j.now_unix_ms = now,
        _ => {}
    }
}

/// A token id: 6 of `[a-z0-9]`.
pub fn check_id(field: &str, id: &str) -> Result<(), CommandError> {
    if edgeplane_tls::token::valid_id(id) {
        Ok(())
    } else {
        Err(CommandError::invalid(
            field,
            format!(
                "{id:?} is not a token id ({} characters of a-z0-9)",
                edgeplane_tls::token::ID_LEN
            ),
        ))
    }
}

/// A SHA-256 digest (32 bytes).
pub fn check_hash(field: &str, h: &[u8]) -> Result<(), CommandError> {
    if h.len() == 32 {
        Ok(())
    } else {
        Err(CommandError::invalid(
            field,
            format!("must be a SHA-256 digest (32 bytes), got {} bytes", h.len()),
        ))
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), CommandError> {
    if s.len() > max {
        return Err(CommandError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(CommandError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Field checks of a `CreateToken` (no state, no clock).
pub fn validate_create(c: &pb::CreateToken) -> Result<(), CommandError> {
    check_id("id", &c.id)?;
    check_hash("secret_sha256", &c.secret_sha256)?;
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&c.ttl_ms) {
        return Err(CommandError::invalid(
            "ttl",
            format!("must be between 1s and 365d, got {} ms", c.ttl_ms),
        ));
    }
    if !c.node.is_empty() {
        edgeplane_tls::identity::valid_name("node", &c.node)
            .map_err(|e| CommandError::invalid("node", e))?;
    }
    check_text("description", &c.description, MAX_DESCRIPTION)?;
    check_text("created_by", &c.created_by, MAX_DESCRIPTION)
}

fn stamped(field: &str, v: u64) -> Result<u64, CommandError> {
    if v == 0 {
        Err(CommandError::invalid(
            field,
            "must be set by the leader when it proposes",
        ))
    } else {
        Ok(v)
    }
}

/// Apply a `CreateToken` (checks first, then writes).
pub fn apply_create(st: &mut State, c: &pb::CreateToken) -> Result<(), CommandError> {
    let now = stamped("created_unix_ms", c.created_unix_ms)?;
    if c.expires_unix_ms != now.saturating_add(c.ttl_ms) {
        return Err(CommandError::invalid(
            "expires_unix_ms",
            "must be created_unix_ms + ttl_ms",
        ));
    }
    if st.tokens.contains_key(&c.id) {
        return Err(CommandError::FailedPrecondition(format!(
            "id: a token {} exists already; create another",
            c.id
        )));
    }
    let prunable = |t: &TokenRecord| t.expires_unix_ms.saturating_add(PRUNE_AFTER_MS) <= now;
    let kept = st.tokens.values().filter(|t| !prunable(t)).count();
    if kept >= MAX_TOKENS {
        return Err(CommandError::FailedPrecondition(format!(
            "tokens: {kept} tokens exist (at most {MAX_TOKENS}); revoke unused ones with \
             `edgeplane tokens revoke ID`, or wait until they expire"
        )));
    }
    let pruned: Vec<String> = st
        .tokens
        .values()
        .filter(|t| prunable(t))
        .map(|t| t.id.clone())
        .collect();
    for id in pruned {
        st.tokens.remove(&id);
    }
    st.tokens.insert(
        c.id.clone(),
        TokenRecord {
            id: c.id.clone(),
            secret_sha256: hex(&c.secret_sha256),
            created_unix_ms: now,
            expires_unix_ms: c.expires_unix_ms,
            node: c.node.clone(),
            description: c.description.clone(),
            created_by: c.created_by.clone(),
            used_by: String::new(),
            used_unix_ms: 0,
            revoked: false,
        },
    );
    Ok(())
}

/// Apply a `RevokeToken` (idempotent: revoking twice is fine).
pub fn apply_revoke(st: &mut State, r: &pb::RevokeToken) -> Result<(), CommandError> {
    stamped("now_unix_ms", r.now_unix_ms)?;
    let t = st
        .tokens
        .get_mut(&r.id)
        .ok_or_else(|| CommandError::NotFound(format!("token {} not found", r.id)))?;
    t.revoked = true;
    Ok(())
}

fn describe_ago(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h", s / 3600)
    }
}

/// Whether a join may use its token, in this order: the token exists, the secret matches
/// (constant time), it is not revoked, not expired, not used, and its node restriction
/// names the joining node. Every refusal names the cause and what to do.
pub fn check_join(st: &State, j: &pb::JoinNode) -> Result<(), CommandError> {
    let now = stamped("now_unix_ms", j.now_unix_ms)?;
    let name = j.node.as_ref().map(|n| n.name.as_str()).unwrap_or_default();
    let id = &j.token_id;
    let deny = |m: String| Err(CommandError::PermissionDenied(format!("join_token: {m}")));
    let Some(t) = st.tokens.get(id) else {
        return deny(format!(
            "no token {id} (never created, or pruned a day after it expired); create one with \
             `edgeplane tokens create`"
        ));
    };
    if !edgeplane_tls::token::hashes_equal(
        t.secret_sha256.as_bytes(),
        hex(&j.secret_sha256).as_bytes(),
    ) {
        return deny(format!("wrong secret for token {id}"));
    }
    if t.revoked {
        return deny(format!(
            "token {id} was revoked; create a new one with `edgeplane tokens create`"
        ));
    }
    if now >= t.expires_unix_ms {
        return deny(format!(
            "token {id} expired {} ago (at unix ms {}); create a new one with `edgeplane tokens \
             create`",
            describe_ago(now - t.expires_unix_ms),
            t.expires_unix_ms
        ));
    }
    if !t.used_by.is_empty() {
        return deny(format!(
            "token {id} was already used (by node {}); a token joins one agent once: create a \
             new one",
            t.used_by
        ));
    }
    if !t.node.is_empty() && t.node != name {
        return deny(format!(
            "token {id} is for node {:?}, not {name:?}; start the agent with --name {} or \
             create a token for {name}",
            t.node, t.node
        ));
    }
    Ok(())
}

/// Mark the token of a checked join used by the joining node.
pub fn mark_used(st: &mut State, j: &pb::JoinNode) {
    let name = j.node.as_ref().map(|n| n.name.clone()).unwrap_or_default();
    if let Some(t) = st.tokens.get_mut(&j.token_id) {
        t.used_by = name;
        t.used_unix_ms = j.now_unix_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_tls::JoinToken;

    const T0: u64 = 1_700_000_000_000;

    fn create(t: &JoinToken, ttl_ms: u64, node: &str, now: u64) -> pb::Command {
        let mut c = pb::Command {
            client_id: 0,
            seq: 0,
            kind: Some(Kind::CreateToken(pb::CreateToken {
                id: t.id.clone(),
                secret_sha256: t.secret_hash().to_vec(),
                ttl_ms,
                node: node.into(),
                description: "test".into(),
                created_by: "user/admin (admin)".into(),
                ..Default::default()
            })),
        };
        stamp(&mut c, now);
        c
    }

    fn join(token: &JoinToken, name: &str, now: u64) -> pb::Command {
        let mut c = pb::Command {
            client_id: 0,
            seq: 0,
            kind: Some(Kind::JoinNode(pb::JoinNode {
                token_id: token.id.clone(),
                secret_sha256: token.secret_hash().to_vec(),
                now_unix_ms: 0,
                node: Some(pb::RegisterNode {
                    name: name.into(),
                    accelerators: vec![],
                    agent_addr: "127.0.0.1:1".into(),
                    ..Default::default()
                }),
            })),
        };
        stamp(&mut c, now);
        c
    }

    fn revoke(id: &str, now: u64) -> pb::Command {
        let mut c = pb::Command {
            client_id: 0,
            seq: 0,
            kind: Some(Kind::RevokeToken(pb::RevokeToken {
                id: id.into(),
                now_unix_ms: 0,
            })),
        };
        stamp(&mut c, now);
        c
    }

    /// The result code and the refusal as a caller sees it.
    fn msg(st: &mut State, c: &pb::Command, index: u64) -> (pb::ResultCode, String) {
        let r = st.apply(c, index).result;
        let text = CommandError::from_result(&r)
            .map(|e| e.to_string())
            .unwrap_or_default();
        (r.code(), text)
    }

    #[test]
    fn a_token_joins_once_and_only_its_hash_is_kept() {
        let mut st = State::default();
        let t = JoinToken::generate();
        assert_eq!(
            msg(&mut st, &create(&t, 60_000, "", T0), 1).0,
            pb::ResultCode::Ok
        );
        let rec = &st.tokens[&t.id];
        assert_eq!(
            rec.expires_unix_ms,
            T0 + 60_000,
            "expiry = leader's now + ttl"
        );
        assert_eq!(rec.status(T0), "unused");
        // Neither the state, its snapshot nor Debug hold the secret.
        let secret = t.reveal().expose().split('.').nth(1).unwrap().to_string();
        let snap = String::from_utf8(st.encode()).unwrap();
        assert!(!snap.contains(&secret));
        assert!(!format!("{st:?}").contains(&secret));
        assert!(
            !format!("{st:?}").contains(&rec.secret_sha256),
            "Debug shows the hash"
        );
        assert_eq!(
            msg(&mut st, &join(&t, "edge-1", T0 + 10), 2).0,
            pb::ResultCode::Ok
        );
        assert_eq!(st.tokens[&t.id].used_by, "edge-1");
        assert!(
            st.nodes.contains_key("edge-1"),
            "the join registers the node"
        );
        let (code, m) = msg(&mut st, &join(&t, "edge-2", T0 + 20), 3);
        assert_eq!(code, pb::ResultCode::PermissionDenied, "{m}");
        assert!(m.contains("already used") && m.contains("edge-1"), "{m}");
        assert!(!st.nodes.contains_key("edge-2"));
        // The state round-trips through a snapshot with its tokens.
        assert_eq!(State::decode(&st.encode()).unwrap().tokens, st.tokens);
    }

    #[test]
    fn every_refusal_names_its_cause_and_changes_nothing() {
        let mut st = State::default();
        let any = JoinToken::generate();
        let for_a = JoinToken::generate();
        let short = JoinToken::generate();
        let gone = JoinToken::generate();
        st.apply(&create(&any, 60_000, "", T0), 1);
        st.apply(&create(&for_a, 60_000, "node-a", T0), 2);
        st.apply(&create(&short, 1_000, "", T0), 3);
        st.apply(&create(&gone, 60_000, "", T0), 4);
        assert_eq!(
            msg(&mut st, &revoke(&gone.id, T0 + 1), 5).0,
            pb::ResultCode::Ok
        );
        let wrong = JoinToken::parse(&format!("{}.0000000000000000", any.id)).unwrap();
        let unknown = JoinToken::parse("zzzzzz.0000000000000000").unwrap();
        let before = st.clone();
        for (token, name, now, want) in [
            (&unknown, "x", T0 + 5, "no token zzzzzz"),
            (&wrong, "x", T0 + 5, "wrong secret"),
            (&gone, "x", T0 + 5, "was revoked"),
            (&short, "x", T0 + 1_000, "expired"),
            (
                &for_a,
                "node-b",
                T0 + 5,
                "is for node \"node-a\", not \"node-b\"",
            ),
        ] {
            let (code, m) = msg(&mut st, &join(token, name, now), 10);
            assert_eq!(code, pb::ResultCode::PermissionDenied, "{want}: {m}");
            assert!(m.contains("join_token") && m.contains(want), "{want}: {m}");
            // Only the (empty) session cache may differ: no token, no node changed.
            assert_eq!(st.tokens, before.tokens);
            assert_eq!(st.nodes, before.nodes);
        }
        // One millisecond before its expiry the short token still joins.
        assert_eq!(
            msg(&mut st, &join(&short, "x", T0 + 999), 11).0,
            pb::ResultCode::Ok
        );
        assert_eq!(st.tokens[&short.id].status(T0 + 999), "used");
        // The restricted token joins its own node; a taken name cannot be joined again.
        assert_eq!(
            msg(&mut st, &join(&for_a, "node-a", T0 + 5), 12).0,
            pb::ResultCode::Ok
        );
        let (code, m) = msg(&mut st, &join(&any, "node-a", T0 + 5), 13);
        assert_eq!(code, pb::ResultCode::FailedPrecondition, "{m}");
        assert!(m.contains("already registered"), "{m}");
        assert_eq!(
            st.tokens[&any.id].used_by, "",
            "a refused join leaves the token unused"
        );
        assert_eq!(st.tokens[&gone.id].status(T0), "revoked");
    }

    #[test]
    fn bad_fields_are_named_and_unstamped_commands_refused() {
        let t = JoinToken::generate();
        let mut c = create(&t, 500, "", T0);
        let e = crate::state::validate(&c).unwrap_err().to_string();
        assert!(e.contains("`ttl`"), "{e}");
        if let Some(Kind::CreateToken(x)) = c.kind.as_mut() {
            x.ttl_ms = 60_000;
            x.id = "BAD".into();
        }
        let e = crate::state::validate(&c).unwrap_err().to_string();
        assert!(e.contains("`id`"), "{e}");
        let mut c = create(&t, 60_000, "bad name", T0);
        assert!(crate::state::validate(&c)
            .unwrap_err()
            .to_string()
            .contains("`node`"));
        // A command the leader did not stamp is refused in apply.
        c = create(&t, 60_000, "", T0);
        if let Some(Kind::CreateToken(x)) = c.kind.as_mut() {
            x.created_unix_ms = 0;
        }
        let mut st = State::default();
        let (code, m) = msg(&mut st, &c, 1);
        assert_eq!(code, pb::ResultCode::InvalidArgument);
        assert!(m.contains("created_unix_ms"), "{m}");
        let (code, m) = msg(&mut st, &revoke("nosuch", T0), 2);
        assert_eq!(code, pb::ResultCode::NotFound, "{m}");
    }

    #[test]
    fn expired_tokens_are_pruned_and_the_count_is_bounded() {
        let mut st = State::default();
        let old = JoinToken::generate();
        st.apply(&create(&old, 1_000, "", T0), 1);
        let later = T0 + 1_000 + PRUNE_AFTER_MS;
        let fresh = JoinToken::generate();
        st.apply(&create(&fresh, 60_000, "", later), 2);
        assert!(
            !st.tokens.contains_key(&old.id),
            "pruned a day after expiry"
        );
        assert!(st.tokens.contains_key(&fresh.id));
        for i in 0..MAX_TOKENS {
            let t = JoinToken::parse(&format!("{:06}.0000000000000000", i)).unwrap();
            st.apply(&create(&t, 60_000, "", later), 10 + i as u64);
        }
        assert_eq!(st.tokens.len(), MAX_TOKENS);
        let (code, m) = msg(
            &mut st,
            &create(&JoinToken::generate(), 60_000, "", later),
            5000,
        );
        assert_eq!(code, pb::ResultCode::FailedPrecondition);
        assert!(m.contains("tokens revoke"), "{m}");
    }
}
