//! README's "From nothing to a secured cluster", run as written: every shell block marked
//! `<!-- walkthrough -->` is taken from README.md and run step by step in one bash, in a
//! scratch directory, with the debug binaries first on `PATH` (so `edgeplane`,
//! `edgeplane-coordinator` and `edgeplane-agent` are this build's). A walkthrough that stops
//! working fails here, so README cannot go stale.
//!
//! - A step is one logical line (`\` continuations joined). Each runs in the same shell, so
//!   `export`s and background jobs (`... &`) carry over, as in a reader's terminal.
//! - A step must exit 0. A step ending in `# wait for: A, B` is run again (every 100 ms, up to
//!   a deadline) until its output holds each of A and B: that is how the reader is told to wait,
//!   and the only waiting here (no sleeps).
//! - The only change to the text: each `127.0.0.1:PORT` is mapped to a free port below the
//!   ephemeral range (the same port everywhere it appears), so the test runs beside other
//!   tests and other clusters.
//! - The shell runs in its own process group; the group is killed at the end, on failure too.

use crate::support::bin;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long one step (or one `wait for` step, all its retries) may take.
const STEP_LIMIT: Duration = Duration::from_secs(30);

fn readme() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("README.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The contents of every fenced block preceded by `<!-- walkthrough -->`, in order.
fn walkthrough_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = md.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "<!-- walkthrough -->" {
            continue;
        }
        let fence = lines
            .next()
            .unwrap_or_else(|| panic!("README: `<!-- walkthrough -->` at the end of the file"));
        assert!(
            fence.starts_with("```"),
            "README: `<!-- walkthrough -->` must be followed by a fenced block, got {fence:?}"
        );
        let mut block = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            block.push_str(l);
            block.push('\n');
        }
        out.push(block);
    }
    out
}

/// Logical lines: continuations joined, blank lines and whole-line comments left out.
fn steps(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in block.lines() {
        if let Some(head) = l.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(l);
        let s = cur.trim().to_string();
        cur.clear();
        if !s.is_empty() && !s.starts_with('#') {
            out.push(s);
        }
    }
    assert!(cur.trim().is_empty(), "a block ends in a `\\` continuation");
    out
}

/// The texts a `# wait for: A, B` comment asks for.
fn wait_for(step: &str) -> Vec<String> {
    step.split_once("# wait for:")
        .map(|(_, w)| {
            w.split(", ")
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn remap_ports(text: &str) -> String {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut out = String::new();
    let mut rest = text;
    const HOST: &str = "127.0.0.1:";
    while let Some(i) = rest.find(HOST) {
        out.push_str(&rest[..i + HOST.len()]);
        rest = &rest[i + HOST.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !digits.is_empty() {
            if !map.contains_key(&digits) {
                // Below the ephemeral range and never handed out twice: no outgoing connection
                // can take it between now and the step that listens on it, seconds later.
                map.insert(digits.clone(), crate::support::free_port().to_string());
            }
            out.push_str(&map[&digits]);
            rest = &rest[digits.len()..];
        }
    }
    out.push_str(rest);
    out
}

/// One bash, its own process group, fed steps on stdin.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    dir: PathBuf,
    n: usize,
}

impl Shell {
    fn start(dir: &Path, path: &str) -> Shell {
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(dir)
            .env("PATH", path)
            .env_remove("EDGEPLANE_ENDPOINTS")
            .env_remove("EDGEPLANE_TLS_CA")
            .env_remove("EDGEPLANE_TLS_CERT")
            .env_remove("EDGEPLANE_TLS_KEY")
            .env_remove("EDGEPLANE_INSECURE")
            .env("EDGEPLANE_LOG", "info")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bash");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Shell {
            child,
            stdin,
            lines,
            dir: dir.to_path_buf(),
            n: 0,
        }
    }

    /// Run one step; (exit status, its stdout and stderr). Panics past `limit`.
    fn run(&mut self, step: &str, limit: Duration) -> (i32, String) {
        self.n += 1;
        let out = self.dir.join(format!(".step-{}.out", self.n));
        let marker = format!("__walkthrough_step_{}_done__", self.n);
        // The step's own output goes to a file (background jobs in it redirect theirs in the
        // README); only the marker with the exit status comes through the pipe.
        writeln!(
            self.stdin,
            "{{\n{step}\n}} > {} 2>&1 < /dev/null; echo \"{marker} $?\"",
            out.display()
        )
        .expect("write a step to bash");
        self.stdin.flush().expect("flush");
        let deadline = Instant::now() + limit;
        let code = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(c) = l.strip_prefix(&format!("{marker} ")) {
                        break c.trim().parse().unwrap_or(-1);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "step did not finish within {limit:?}: {step}\n{}",
                        self.logs()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("bash exited during: {step}\n{}", self.logs())
                }
            }
        };
        (code, std::fs::read_to_string(&out).unwrap_or_default())
    }

    /// The tail of every `*.log` the walkthrough wrote (for failure messages).
    fn logs(&self) -> String {
        let mut s = String::new();
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            s.push_str(&format!("--- {} (last lines)\n", f.display()));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // the shell and every background job it started (same process group)
        let pgid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && group_alive(pgid) {
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.child.wait();
    }
}

/// Whether any process of group `pgid` is still running (not a zombie).
fn group_alive(pgid: i32) -> bool {
    let Ok(d) = std::fs::read_dir("/proc") else {
        return false;
    };
    d.filter_map(Result::ok).any(|e| {
        std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                // pid (comm) state ppid pgrp ...
                let rest = &s[s.rfind(')')? + 2..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.first()? != &"Z" && f.get(2)?.parse::<i32>().ok()? == pgid)
            })
            .unwrap_or(false)
    })
}

#[test]
fn readme_walkthrough_parsing() {
    let b = walkthrough_blocks(
        "x\n<!-- walkthrough -->\n```sh\na \\\n  b\n# c\n\nd  # wait for: x y, z\n```\n",
    );
    assert_eq!(b.len(), 1);
    let s = steps(&b[0]);
    assert_eq!(
        s,
        vec!["a    b".to_string(), "d  # wait for: x y, z".to_string()]
    );
    assert_eq!(wait_for(&s[1]), vec!["x y".to_string(), "z".to_string()]);
    let r = remap_ports("127.0.0.1:7101,127.0.0.1:7102 --x 127.0.0.1:7101");
    let ports: Vec<&str> = r.split([',', ' ']).collect();
    assert_eq!(ports[0], ports[3], "{r}");
    assert_ne!(ports[0], ports[1], "{r}");
    assert!(!r.contains("7101"), "{r}");
}

#[test]
fn readme_walkthrough_runs_as_written() {
    let md = readme();
    let blocks = walkthrough_blocks(&md);
    let all = blocks.join("");
    // What the walkthrough must cover (issue 13): a CA and certificates, three replicas, the
    // cluster's status, two agents, a model deployed and placed, requests sent.
    for (what, n) in [
        ("edgeplane certs init", 1),
        ("edgeplane certs issue", 1),
        ("edgeplane-coordinator ", 3),
        ("edgeplane cluster status", 1),
        ("edgeplane-agent ", 2),
        ("edgeplane models deploy", 1),
        ("edgeplane placement show", 1),
        ("edgeplane load", 1),
        ("--tls-cert", 4),
        ("edgeplane tokens create", 2),
        ("--tls-ca-key", 3),
    ] {
        assert!(
            all.matches(what).count() >= n,
            "README's walkthrough blocks (`<!-- walkthrough -->`) must contain `{what}` at least {n} time(s):\n{all}"
        );
    }
    assert!(
        !all.contains("--insecure"),
        "the walkthrough runs a secured cluster: no --insecure:\n{all}"
    );
    let text = remap_ports(&all);

    // the build's binaries first on PATH (built once per test process)
    let bindir = bin("edgeplane")
        .parent()
        .expect("target/debug")
        .to_path_buf();
    for b in ["edgeplane-coordinator", "edgeplane-agent"] {
        assert!(bin(b).exists());
    }
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut sh = Shell::start(dir.path(), &path);
    for step in steps(&text) {
        eprintln!("[{:5.1} s] {step}", started.elapsed().as_secs_f64());
        let want = wait_for(&step);
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (code, out) = sh.run(&step, left.max(Duration::from_secs(1)));
            let missing: Vec<&String> = want.iter().filter(|w| !out.contains(w.as_str())).collect();
            if code == 0 && missing.is_empty() {
                if step.starts_with("edgeplane load") {
                    // requests were served: `met N` with N > 0
                    let met: u64 = out
                        .split("met ")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    assert!(met > 0, "no request met its deadline: {step}\n{out}");
                }
                break;
            }
            if want.is_empty() || Instant::now() > deadline {
                panic!(
                    "README walkthrough step failed (exit {code}{}):\n  {step}\noutput:\n{out}\n{}",
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(", output lacks {missing:?}")
                    },
                    sh.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Secured: a plaintext client gets no answer from the walkthrough's cluster.
    let endpoints = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("export EDGEPLANE_ENDPOINTS="))
        .expect("the walkthrough exports EDGEPLANE_ENDPOINTS")
        .to_string();
    let o = Command::new(bin("edgeplane"))
        .args(["cluster", "status", "--insecure", "--timeout-s", "2"])
        .args(["--endpoints", &endpoints])
        .env_remove("EDGEPLANE_TLS_CA")
        .env_remove("EDGEPLANE_TLS_CERT")
        .env_remove("EDGEPLANE_TLS_KEY")
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "a plaintext client was answered by the walkthrough's cluster:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "the walkthrough took {took:?} (well under a minute expected)"
    );
    drop(sh);
}
