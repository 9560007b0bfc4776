//! `edgeplane tokens create|list|revoke`: per-node join tokens, the kubeadm way.
//!
//! `create` prints `ID.SECRET` once (the cluster keeps only a hash of the secret); `list`
//! shows ids, restrictions, expiry and use, never a secret; `revoke ID` stops a token from
//! joining. All three need the admin role.

use clap::Subcommand;
use edgeplane_proto::admin as api;
use serde_json::json;

use crate::conn::Conn;
use crate::exit::{self, Kind};
use crate::output::{self, print_json, write_result, Format, FormatArg};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a join token and print it (`ID.SECRET`) once: give it to one agent as
    /// `--join-token` together with `--tls-ca` and no certificate.
    ///
    /// Example: edgeplane tokens create --ttl 2h --node edge-7 --description "rack 3"
    Create {
        /// How long the token can be used: e.g. 90s, 30m, 24h, 7d (1s to 365d).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: u64,
        /// Only an agent with this node name (`--name`) may join with it.
        #[arg(long)]
        node: Option<String>,
        /// Free text shown by `tokens list` (who it is for).
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        out: FormatArg,
    },
    /// List the join tokens: id, node restriction, expiry, status (unused, used by a node,
    /// expired, revoked) and who created them. Never shows a secret.
    ///
    /// Example: edgeplane tokens list --format json
    List(super::ReadOpts),
    /// Revoke a token: it can no longer join. A node that already joined with it keeps its
    /// certificate (remove the node to take its name back).
    ///
    /// Example: edgeplane tokens revoke abc123
    Revoke {
        /// Token id (the part before the dot).
        id: String,
        #[command(flatten)]
        out: FormatArg,
    },
}

/// `90s`, `30m`, `24h`, `7d` (or plain seconds) to milliseconds, within 1s..=365d.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let bad = || format!("--ttl {s:?}: expected a duration such as 90s, 30m, 24h or 7d");
    let v: u64 = num.trim().parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = v
        .checked_mul(unit_ms)
        .filter(|ms| (1_000..=365 * 86_400_000).contains(ms))
        .ok_or_else(|| format!("--ttl {s:?}: must be between 1s and 365d"))?;
    Ok(ms)
}

/// `2026-12-01T19:30:00Z` for a Unix time in ms (UTC).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn status(t: &api::TokenInfo, now: u64) -> String {
    if t.revoked {
        "revoked".into()
    } else if !t.used_by.is_empty() {
        format!("used by {}", t.used_by)
    } else if now >= t.expires_unix_ms {
        "expired".into()
    } else {
        "unused".into()
    }
}

pub async fn tokens(g: &GlobalArgs, c: TokensCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    match c {
        TokensCommand::Create {
            ttl,
            node,
            description,
            out,
        } => {
            let node = node.unwrap_or_default();
            if !node.is_empty() {
                edgeplane_tls::identity::valid_name("--node", &node)
                    .map_err(|e| exit::fail(Kind::InvalidInput, e))?;
            }
            let r = conn
                .call("tokens create", |mut c| {
                    let req = api::CreateTokenRequest {
                        ttl_ms: ttl,
                        node: node.clone(),
                        description: description.clone(),
                    };
                    async move { c.create_token(req).await }
                })
                .await?;
            match out.format {
                Format::Json => print_json(&json!({
                    "command": "tokens create", "ok": true, "index": r.index,
                    "id": r.id, "token": r.token, "node": node,
                    "expires_unix_ms": r.expires_unix_ms, "expires": utc(r.expires_unix_ms),
                })),
                Format::Table => {
                    // The token alone on stdout (scripts: TOKEN=$(edgeplane tokens create));
                    // the rest on stderr.
                    println!("{}", r.token);
                    eprintln!(
                        "join token {} created, expires {}{}; it is shown only now. Start the \
                         agent with --join-token <token> --tls-ca ca.pem and no certificate.",
                        r.id,
                        utc(r.expires_unix_ms),
                        if node.is_empty() {
                            String::new()
                        } else {
                            format!(", only for node {node}")
                        }
                    );
                }
            }
        }
        TokensCommand::List(o) => list(&conn, o).await?,
        TokensCommand::Revoke { id, out } => {
            if !edgeplane_tls::token::valid_id(&id) {
                return Err(exit::fail(
                    Kind::InvalidInput,
                    format!(
                        "id: {id:?} is not a token id ({} characters of a-z0-9, the part before \
                         the dot)",
                        edgeplane_tls::token::ID_LEN
                    ),
                ));
            }
            let meta = conn.meta(1);
            let r = conn
                .call("tokens revoke", |mut c| {
                    let req = api::RevokeTokenRequest {
                        meta,
                        id: id.clone(),
                    };
                    async move { c.revoke_token(req).await }
                })
                .await?;
            write_result(
                out.format,
                "tokens revoke",
                r.index,
                r.epoch,
                &r.message,
                json!({"id": id}),
                &format!("revoked token {id} (index {})", r.index),
            );
        }
    }
    Ok(())
}

/// `tokens list`: every token's id, node, expiry and status (never a secret).
async fn list(conn: &Conn, o: super::ReadOpts) -> anyhow::Result<()> {
    let r = conn
        .call("tokens list", |mut c| async move {
            c.list_tokens(api::ReadRequest { stale: o.stale }).await
        })
        .await?;
    let now = r.now_unix_ms;
    if o.format == Format::Json {
        let v: Vec<_> = r
            .tokens
            .iter()
            .map(|t| {
                json!({"id": t.id, "node": t.node, "status": status(t, now),
                       "used_by": t.used_by, "used_unix_ms": t.used_unix_ms,
                       "revoked": t.revoked, "expires_unix_ms": t.expires_unix_ms,
                       "expires": utc(t.expires_unix_ms),
                       "created_unix_ms": t.created_unix_ms, "created_by": t.created_by,
                       "description": t.description})
            })
            .collect();
        print_json(&json!(v));
    } else {
        let mut t = output::table([
            "id",
            "node",
            "expires",
            "status",
            "created by",
            "description",
        ]);
        for x in &r.tokens {
            t.add_row(vec![
                x.id.clone(),
                if x.node.is_empty() {
                    "(any)".into()
                } else {
                    x.node.clone()
                },
                utc(x.expires_unix_ms),
                status(x, now),
                x.created_by.clone(),
                x.description.clone(),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units_and_bounds() {
        assert_eq!(parse_ttl("24h"), Ok(86_400_000));
        assert_eq!(parse_ttl("1s"), Ok(1_000));
        assert_eq!(parse_ttl("90"), Ok(90_000));
        assert_eq!(parse_ttl("7d"), Ok(7 * 86_400_000));
        for bad in ["0s", "366d", "1w", "x", "-1s", ""] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(e.contains("--ttl"), "{bad}: {e}");
        }
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_764_531_000_000), "2025-11-30T19:30:00Z");
    }
}
