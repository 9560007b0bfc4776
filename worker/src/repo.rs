//! A model repository in Triton's layout:
//!
//! ```text
//! <repo>/<model>/config.pbtxt          name, max_batch_size, input [...], output [...]
//! <repo>/<model>/<version>/model.onnx  the highest numeric version is served
//! ```
//!
//! `config.pbtxt` is read in the subset a CNN needs (Triton's text format):
//!
//! ```text
//! max_batch_size: 8
//! input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
//! output [ { name: "output" data_type: TYPE_FP32 dims: [ 1000 ] } ]
//! ```
//!
//! The worker rescans the repository while it runs (Triton's `--model-control-mode=poll`): a
//! new model directory or version is loaded, a removed one unloaded.

use std::path::{Path, PathBuf};

/// Why a repository entry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{path}: {why}")]
    Io { path: String, why: String },
    #[error("{path}: {field}: {why}")]
    Config {
        path: String,
        field: String,
        why: String,
    },
}

/// One input or output of a model's config (dims without the batch dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: String,
    pub dims: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub max_batch: usize,
    pub input: TensorSpec,
    pub output: TensorSpec,
}

/// A model found in the repository.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub config: ModelConfig,
}

fn io(p: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Io {
        path: p.display().to_string(),
        why: e.to_string(),
    }
}

/// Every model of `dir`: `Ok` entries, and the errors of directories that are not usable.
pub fn scan(dir: &Path) -> Result<Vec<Result<Entry, RepoError>>, RepoError> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        out.push(entry(&d));
    }
    Ok(out)
}

fn entry(d: &Path) -> Result<Entry, RepoError> {
    let name = d
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cfg_path = d.join("config.pbtxt");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| io(&cfg_path, e))?;
    let config = parse_config(&text).map_err(|(field, why)| RepoError::Config {
        path: cfg_path.display().to_string(),
        field,
        why,
    })?;
    let version = std::fs::read_dir(d)
        .map_err(|e| io(d, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|v| d.join(v.to_string()).join("model.onnx").is_file())
        .max()
        .ok_or_else(|| io(d, "no <version>/model.onnx (e.g. 1/model.onnx)"))?;
    Ok(Entry {
        path: d.join(version.to_string()).join("model.onnx"),
        version: version.to_string(),
        name,
        config,
    })
}

/// Tokens of Triton's text format: words, quoted strings and `{ } [ ] : ,`.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        if c == '#' {
            while it.next().is_some_and(|c| c != '\n') {}
        } else if c.is_whitespace() || c == ',' {
            it.next();
        } else if "{}[]:".contains(c) {
            out.push(c.to_string());
            it.next();
        } else if c == '"' {
            it.next();
            let w: String = it.by_ref().take_while(|&c| c != '"').collect();
            out.push(format!("\"{w}"));
        } else {
            let mut w = String::new();
            while let Some(&c) = it.peek() {
                if c.is_whitespace() || "{}[]:,#\"".contains(c) {
                    break;
                }
                w.push(c);
                it.next();
            }
            out.push(w);
        }
    }
    out
}

type Field = (String, String);

fn field(f: &str, why: impl Into<String>) -> Field {
    (f.to_string(), why.into())
}

/// `{ name: "x" data_type: TYPE_FP32 dims: [ .. ] }` starting at `t[*i]` (a `{`).
fn tensor(t: &[String], i: &mut usize, what: &str) -> Result<TensorSpec, Field> {
    let mut spec = TensorSpec {
        name: String::new(),
        datatype: String::new(),
        dims: Vec::new(),
    };
    *i += 1;
    while *i < t.len() && t[*i] != "}" {
        let key = t[*i].clone();
        *i += 2; // key ':'
        match key.as_str() {
            "name" => {
                spec.name = t
                    .get(*i)
                    .map(|s| s.trim_start_matches('"').to_string())
                    .unwrap_or_default()
            }
            "data_type" => {
                let d = t.get(*i).cloned().unwrap_or_default();
                spec.datatype = match d.as_str() {
                    "TYPE_FP32" => "FP32".into(),
                    _ => {
                        return Err(field(
                            &format!("{what}.data_type"),
                            format!("{d:?}: only TYPE_FP32 is supported"),
                        ))
                    }
                }
            }
            "dims" => {
                *i += 1; // '['
                while *i < t.len() && t[*i] != "]" {
                    let v = t[*i].parse().map_err(|_| {
                        field(
                            &format!("{what}.dims"),
                            format!("{:?} is not an integer", t[*i]),
                        )
                    })?;
                    spec.dims.push(v);
                    *i += 1;
                }
            }
            _ => {}
        }
        *i += 1;
    }
    *i += 1;
    if spec.name.is_empty() {
        return Err(field(&format!("{what}.name"), "missing"));
    }
    Ok(spec)
}

/// Parse the supported subset of a Triton `config.pbtxt`; the error names the field.
pub fn parse_config(s: &str) -> Result<ModelConfig, Field> {
    let t = tokens(s);
    let (mut max_batch, mut input, mut output) = (None, None, None);
    let mut i = 0;
    while i < t.len() {
        match t[i].as_str() {
            "max_batch_size" => {
                let v = t.get(i + 2).cloned().unwrap_or_default();
                max_batch = Some(
                    v.parse::<usize>()
                        .map_err(|_| field("max_batch_size", format!("{v:?} is not a count")))?,
                );
                i += 3;
            }
            k @ ("input" | "output") => {
                let k = k.to_string();
                i += 1;
                if t.get(i).map(String::as_str) == Some(":") {
                    i += 1;
                }
                let list = t.get(i).map(String::as_str) == Some("[");
                if list {
                    i += 1;
                }
                let spec = tensor(&t, &mut i, &k)?;
                while list && i < t.len() && t[i] != "]" {
                    i += 1; // further tensors: only the first is served
                }
                i += usize::from(list);
                if k == "input" {
                    input = Some(spec)
                } else {
                    output = Some(spec)
                }
            }
            _ => i += 1,
        }
    }
    let max_batch =
        max_batch.ok_or_else(|| field("max_batch_size", "missing (e.g. max_batch_size: 8)"))?;
    if max_batch == 0 {
        return Err(field(
            "max_batch_size",
            "0 (no batching) is not supported; use at least 1",
        ));
    }
    let input = input.ok_or_else(|| field("input", "missing"))?;
    if input.dims.len() != 3 {
        return Err(field(
            "input.dims",
            format!("{:?}: expected [C, H, W]", input.dims),
        ));
    }
    let output = output.ok_or_else(|| field("output", "missing"))?;
    Ok(ModelConfig {
        max_batch,
        input,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tritons_config_text_is_read() {
        let c = parse_config(
            "name: \"resnet18\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 8\n\
             input [ { name: \"input\" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]\n\
             output [\n  {\n    name: \"output\"\n    data_type: TYPE_FP32\n    dims: [ 1000 ]\n  }\n]\n",
        )
        .unwrap();
        assert_eq!(c.max_batch, 8);
        assert_eq!(c.input.name, "input");
        assert_eq!(c.input.dims, vec![3, 224, 224]);
        assert_eq!(c.output.dims, vec![1000]);
        let e = parse_config("input [ { name: \"x\" data_type: TYPE_FP16 dims: [3,8,8] } ]")
            .unwrap_err();
        assert_eq!(e.0, "input.data_type");
        let e = parse_config("input [ { name: \"x\" data_type: TYPE_FP32 dims: [3,8,8] } ] output [ { name: \"y\" data_type: TYPE_FP32 dims: [10] } ]").unwrap_err();
        assert_eq!(e.0, "max_batch_size");
    }
}
