//! The identity a cached worker profile belongs to: the worker (built-in with this crate's
//! version and resolution, or the external address / command), each served model's metadata
//! as the worker describes it (name, platform, input and output names, datatypes, shapes),
//! the host's threads and its description. A cached profile whose key differs is measured
//! again (another worker, another model, another box must not reuse these numbers).

/// What the key is made of, as text (kept in the cached file's header, for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileKey(pub String);

impl ProfileKey {
    /// `worker`: the worker's identity; `models`: each served model as the worker describes
    /// it ([`describe_model`]), in the order served.
    pub fn new(worker: &str, models: &[String], threads: usize, host: &str) -> Self {
        let mut s = format!("worker={worker};threads={threads};host={host}");
        for m in models {
            s.push_str(";model=");
            s.push_str(m);
        }
        ProfileKey(s)
    }

    /// A stable 64-bit FNV-1a digest of the key, in hex (the cache file's `# key:` line).
    pub fn digest(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.0.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// The header line a cached profile carries.
    pub fn line(&self) -> String {
        format!("# key: {}", self.digest())
    }

    /// Whether `cached` (a profile file's text) was measured under this key.
    pub fn matches(&self, cached: &str) -> bool {
        cached.lines().any(|l| l.trim() == self.line())
    }
}

/// One model's part of the key: its name and what `ModelMetadata` says (platform, input name,
/// datatype and shape, output shape).
pub fn describe_model(
    name: &str,
    platform: &str,
    input: (&str, &str, &[i64]),
    output_shape: &[i64],
) -> String {
    format!(
        "{name}[{platform}]:in {} {} {:?}:out {:?}",
        input.0, input.1, input.2, output_shape
    )
}

/// The built-in worker's identity: this crate's version and the input resolution.
pub fn builtin_identity(resolution: u32) -> String {
    format!(
        "builtin edgeplane-worker {} at {resolution}x{resolution}",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(shape: &[i64]) -> String {
        describe_model("net", "onnxruntime", ("input", "FP32", shape), &[-1, 10])
    }

    #[test]
    fn any_changed_part_changes_the_key() {
        let m = vec![meta(&[-1, 3, 32, 32])];
        let k = ProfileKey::new("connect 127.0.0.1:9000", &m, 4, "box");
        assert_eq!(k, ProfileKey::new("connect 127.0.0.1:9000", &m, 4, "box"));
        let other_shape = vec![meta(&[-1, 3, 64, 64])];
        for other in [
            ProfileKey::new("connect 127.0.0.1:9001", &m, 4, "box"),
            ProfileKey::new("connect 127.0.0.1:9000", &m, 2, "box"),
            ProfileKey::new("connect 127.0.0.1:9000", &m, 4, "other box"),
            ProfileKey::new("connect 127.0.0.1:9000", &other_shape, 4, "box"),
        ] {
            assert_ne!(k.digest(), other.digest(), "{other:?}");
        }
        let cached = format!("# Measured ...\n{}\n[[row]]\n", k.line());
        assert!(k.matches(&cached));
        assert!(!ProfileKey::new("x", &m, 4, "box").matches(&cached));
        // FNV-1a of the empty key is the offset basis (hand value)
        assert_eq!(ProfileKey(String::new()).digest(), "cbf29ce484222325");
    }
}
