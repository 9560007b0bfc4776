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
use comfy_table::{
    presets::{NOTHING, UTF8_FULL_CONDENSED},
    ContentArrangement, Table,
};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

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
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `--no-headers` (a global flag, set once by `main` before any command runs).
static NO_HEADERS: AtomicBool = AtomicBool::new(false);

/// Leave the header row out of every table (`--no-headers`, for `awk`/`cut`).
pub fn set_no_headers(on: bool) {
    NO_HEADERS.store(on, Ordering::Relaxed);
}

/// How a table is drawn: boxes for a person at a terminal, plain space-separated columns
/// when stdout is a pipe or a file (what `grep`, `awk` and `cut` expect, as kubectl does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStyle {
    Boxed,
    Plain,
}

impl TableStyle {
    /// Boxed on a terminal, plain otherwise.
    pub fn for_stdout() -> TableStyle {
        if std::io::stdout().is_terminal() {
            TableStyle::Boxed
        } else {
            TableStyle::Plain
        }
    }
}

/// A table with the project's look and the given header (see [`TableStyle`] and
/// `--no-headers`).
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    styled_table(
        header,
        TableStyle::for_stdout(),
        NO_HEADERS.load(Ordering::Relaxed),
    )
}

/// [`table`] with the style and header choice given explicitly.
pub fn styled_table<I, S>(header: I, style: TableStyle, no_headers: bool) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    match style {
        TableStyle::Boxed => {
            t.load_preset(UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic);
        }
        TableStyle::Plain => {
            // No borders, no wrapping: one line per row, columns padded with spaces.
            t.load_preset(NOTHING)
                .set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    if !no_headers {
        t.set_header(header);
    }
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
        .any(|w| FORMAT_FLAGS.contains(&w[0].as_str()) && w[1] == "json")
        || args.iter().any(|a| {
            FORMAT_FLAGS
                .iter()
                .any(|f| a.strip_prefix(f).is_some_and(|v| v == "=json"))
                || a == "-ojson"
        })
}

/// The spellings of the output-format flag.
pub const FORMAT_FLAGS: [&str; 3] = ["--format", "--output", "-o"];

/// Format flags written before the command (`edgeplane -o json models list`) are moved to the
/// end of the command line, where every command that has `--format` defines it (before a
/// `--`, if there is one). On a command without one, clap then refuses them.
pub fn hoist_format_flags(argv: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut hoisted = Vec::new();
    let mut it = argv.into_iter();
    out.extend(it.next());
    while let Some(a) = it.next() {
        if FORMAT_FLAGS.contains(&a.as_str()) {
            hoisted.push(a);
            hoisted.extend(it.next());
        } else if FORMAT_FLAGS.iter().any(|f| a.starts_with(&format!("{f}=")))
            || (a.starts_with("-o") && a.len() > 2 && !a.starts_with("--"))
        {
            hoisted.push(a);
        } else if a.starts_with('-') {
            out.push(a);
        } else {
            out.push(a);
            out.extend(it.by_ref());
            break;
        }
    }
    match out.iter().position(|a| a == "--") {
        Some(i) => {
            out.splice(i..i, hoisted);
        }
        None => out.extend(hoisted),
    }
    out
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
    fn json_is_detected_in_every_spelling_of_the_flag() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for argv in [
            v(&["edgeplane", "nodes", "list", "-o", "json"]),
            v(&["edgeplane", "nodes", "list", "--output", "json"]),
            v(&["edgeplane", "nodes", "list", "--output=json"]),
            v(&["edgeplane", "nodes", "list", "-ojson"]),
        ] {
            assert!(json_requested(&argv), "{argv:?}");
        }
        assert!(!json_requested(&v(&[
            "edgeplane",
            "nodes",
            "list",
            "-o",
            "table"
        ])));
    }

    #[test]
    fn format_flags_before_the_command_move_to_its_end() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            hoist_format_flags(v(&["edgeplane", "-o", "json", "models", "list"])),
            v(&["edgeplane", "models", "list", "-o", "json"])
        );
        assert_eq!(
            hoist_format_flags(v(&["edgeplane", "--format=json", "load", "--", "x"])),
            v(&["edgeplane", "load", "--format=json", "--", "x"])
        );
        // After the command nothing moves.
        let after = v(&["edgeplane", "models", "list", "-o", "json"]);
        assert_eq!(hoist_format_flags(after.clone()), after);
    }

    #[test]
    fn plain_tables_have_no_box_drawing_and_headers_can_be_left_out() {
        let mut t = styled_table(["name", "slo_ms"], TableStyle::Plain, false);
        t.add_row(vec!["ES_RITNet".to_string(), "16.0".to_string()]);
        let s = t.to_string();
        assert!(s.is_ascii(), "plain output is ASCII: {s}");
        let lines: Vec<Vec<&str>> = s.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines,
            vec![vec!["name", "slo_ms"], vec!["ES_RITNet", "16.0"]]
        );
        let mut t = styled_table(["name", "slo_ms"], TableStyle::Plain, true);
        t.add_row(vec!["ES_RITNet".to_string(), "16.0".to_string()]);
        let lines: Vec<String> = t
            .to_string()
            .lines()
            .map(|l| l.trim().to_string())
            .collect();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("ES_RITNet"));
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
