//! Join tokens the kubeadm way: `ID.SECRET`, ID 6 and SECRET 16 characters of `[a-z0-9]`.
//! The ID is public (it names the token in `tokens list` and in errors); only the SHA-256 of
//! the secret is ever stored or replicated, and hashes are compared in constant time.
//! A token is held in a [`Secret`], whose `Debug` and `Display` never show it.

use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Characters of a token ID.
pub const ID_LEN: usize = 6;
/// Characters of a token secret.
pub const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A secret string (a join token): shown as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself: only to send it or to hash it, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// A per-node join token split into its public ID and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    secret: Secret,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

fn random_chars(n: usize) -> String {
    // rand's thread RNG is a CSPRNG (ChaCha, seeded from the OS).
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether `s` is a token ID (6 of `[a-z0-9]`).
pub fn valid_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl JoinToken {
    /// A new random token.
    pub fn generate() -> JoinToken {
        JoinToken {
            id: random_chars(ID_LEN),
            secret: Secret(random_chars(SECRET_LEN)),
        }
    }

    /// Parse `ID.SECRET`; the error names the field and the expected form (never echoes
    /// the input, which may be a mistyped secret).
    pub fn parse(s: &str) -> Result<JoinToken, String> {
        let bad = || {
            format!(
                "join_token: not a per-node token; expected ID.SECRET ({ID_LEN} and {SECRET_LEN} \
                 characters of a-z0-9) as printed by `edgeplane tokens create`"
            )
        };
        let (id, secret) = s.split_once('.').ok_or_else(bad)?;
        if !valid_id(id)
            || secret.len() != SECRET_LEN
            || !secret.bytes().all(|b| ALPHABET.contains(&b))
        {
            return Err(bad());
        }
        Ok(JoinToken {
            id: id.to_string(),
            secret: Secret(secret.to_string()),
        })
    }

    /// `ID.SECRET`, to print once at creation.
    pub fn reveal(&self) -> Secret {
        Secret(format!("{}.{}", self.id, self.secret.0))
    }

    /// SHA-256 of the secret: what the replicated state stores.
    pub fn secret_hash(&self) -> [u8; 32] {
        hash_secret(self.secret.expose())
    }
}

/// SHA-256 of a token secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time equality of two secret hashes (false when the lengths differ).
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Constant-time equality of two secrets (the shared bootstrap token).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    // Hash first: equal-length digests, so not even the length leaks through timing.
    hashes_equal(&hash_secret(a), &hash_secret(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_and_hash_to_what_is_stored() {
        let t = JoinToken::generate();
        assert!(valid_id(&t.id));
        let printed = t.reveal();
        let back = JoinToken::parse(printed.expose()).unwrap();
        assert_eq!(back, t);
        assert!(hashes_equal(&back.secret_hash(), &t.secret_hash()));
        assert_ne!(
            JoinToken::generate().secret_hash(),
            t.secret_hash(),
            "two tokens share a secret"
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        for bad in [
            "",
            "abc",
            "abcdef",
            "abcdef.",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdeF",
            "abc-ef.0123456789abcdef",
            "abcdef.0123456789abcdef.x",
        ] {
            let e = JoinToken::parse(bad).unwrap_err();
            assert!(e.contains("join_token") && e.contains("ID.SECRET"), "{e}");
            if !bad.is_empty() {
                assert!(!e.contains(bad), "the error echoes the input: {e}");
            }
        }
        assert!(JoinToken::parse("abc123.0123456789abcdef").is_ok());
    }

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let t = JoinToken::parse("abc123.s3cr3ts3cr3ts3cr").unwrap();
        let shown = format!("{t:?} {} {:?}", t.reveal(), t.reveal());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("abc123"), "the public id may show: {shown}");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    #[test]
    fn comparison_is_by_value() {
        assert!(secrets_equal("tok", "tok"));
        assert!(!secrets_equal("tok", "tok2"));
        assert!(!hashes_equal(&[1, 2], &[1, 2, 3]));
        assert!(hashes_equal(&hash_secret("x"), &hash_secret("x")));
    }
}
