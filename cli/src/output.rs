//! One output convention for every command: `--format table` (the default, for people:
//! comfy-table tables and one-line confirmations) or `--format json` (for scripts: exactly
//! one JSON document on stdout).
//!
//! Shapes under `--format json`:
//! - a read prints its object or list (`models list` → `[{...}]`, `cluster status` →
//!   `{...}`);
//! - a write prints `{"command": "models deploy", "ok": true, "index": N, "epoch": N,
//!   "message": "..."}` plus fields naming what it changed;
//! - a failure prints `{"error": {"kind": "not_found", "code": 4, "message": "..."}}` on
//!   stderr and exits with that code (see [`crate::exit`]).

use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::{json, Value};

/// Output format of a command.
#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Human-readable tables (`text` is accepted too).
    #[default]
    #[value(alias = "text")]
    Table,
    /// One JSON document on stdout.
    Json,
}

/// `--format`, for commands that have no other options to share it with.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct FormatArg {
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A table with the project's look and the given header.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    t
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// Print the outcome of a write: `human` as a line, or the JSON write shape with `extra`
/// merged in.
pub fn write_result(
    format: Format,
    command: &str,
    index: u64,
    epoch: u64,
    message: &str,
    extra: Value,
    human: &str,
) {
    match format {
        Format::Table => println!("{human}"),
        Format::Json => {
            let mut v = json!({"command": command, "ok": true, "index": index, "epoch": epoch,
                               "message": message});
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            print_json(&v);
        }
    }
}

/// Whether the command line asked for JSON (used to shape errors before, or without, a
/// parsed command).
pub fn json_requested(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--format" && w[1] == "json")
        || args.iter().any(|a| a == "--format=json")
}

/// Report a failure on stderr in the requested format.
pub fn print_error(json: bool, e: &anyhow::Error) {
    let kind = crate::exit::kind_of(e);
    if json {
        eprintln!(
            "{}",
            json!({"error": {"kind": kind.as_str(), "code": kind.code(), "message": format!("{e:#}")}})
        );
    } else {
        eprintln!("error: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_detected_in_both_spellings() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(json_requested(&v(&[
            "edgeplane",
            "models",
            "list",
            "--format",
            "json"
        ])));
        assert!(json_requested(&v(&["edgeplane", "--format=json"])));
        assert!(!json_requested(&v(&["edgeplane", "models", "list"])));
    }

    #[test]
    fn tables_render_header_and_rows() {
        let mut t = table(["name", "slo_ms"]);
        t.add_row(vec!["ES_RITNet".to_string(), "16.0".to_string()]);
        let s = t.to_string();
        assert!(
            s.contains("name") && s.contains("ES_RITNet") && s.contains("16.0"),
            "{s}"
        );
    }
}
