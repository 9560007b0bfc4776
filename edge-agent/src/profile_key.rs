//! The identity a cached worker profile belongs to: the worker (built-in with this crate's
//! version and resolution, or the external address / command), each served model's metadata
//! as the worker describes it (name, platform, input and output names, datatypes, shapes),
//! the host's threads and its description. A cached profile whose key differs is measured
//! again (another worker, another model, another box must not reuse these numbers).

use crate::exec::oip::ModelMeta;

/// What the key is made of, as text (kept in the cached file's header, for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileKey(pub String);

impl ProfileKey {
    /// `worker`: the worker's identity; `models`: (name, metadata) in the order served.
    pub fn new(worker: &str, models: &[(String, ModelMeta)], threads: usize, host: &str) -> Self {
        let mut s = format!("worker={worker};threads={threads};host={host}");
        for (name, m) in models {
            s.push_str(&format!(
                ";model={name}[{}]:in {} {} {:?}:out {:?}",
                m.platform, m.input_name, m.datatype, m.input_shape, m.output_shape
            ));
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

    fn meta(shape: Vec<i64>) -> ModelMeta {
        ModelMeta {
            input_name: "input".into(),
            datatype: "FP32".into(),
            input_shape: shape,
            output_shape: vec![-1, 10],
            platform: "onnxruntime".into(),
        }
    }

    #[test]
    fn any_changed_part_changes_the_key() {
        let m = vec![("net".to_string(), meta(vec![-1, 3, 32, 32]))];
        let k = ProfileKey::new("connect 127.0.0.1:9000", &m, 4, "box");
        assert_eq!(k, ProfileKey::new("connect 127.0.0.1:9000", &m, 4, "box"));
        let other_shape = vec![("net".to_string(), meta(vec![-1, 3, 64, 64]))];
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
