//! A headless Chromium driven over the DevTools protocol on `--remote-debugging-pipe` (fd 3
//! carries commands in, fd 4 answers and events out, each message JSON ended by a NUL): no
//! WebSocket client needed. One page, `Runtime.evaluate` to read the DOM, and
//! `Page.captureScreenshot`; exceptions and `console.error` calls are collected.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

pub struct Browser {
    child: Child,
    to: File,
    from: Receiver<Value>,
    next_id: u64,
    session: String,
    errors: Vec<String>,
    log: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    /// Start Chromium (profile in `dir`) and open `url` in a 1400x1500 page.
    pub fn launch(dir: &Path, url: &str) -> Browser {
        let (cmd_r, cmd_w) = pipe();
        let (out_r, out_w) = pipe();
        let mut c = Command::new("chromium");
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            "--window-size=1400,1500",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("chromium.log")).expect("log"));
        let log = dir.join("chromium.log");
        // SAFETY: fcntl and dup2 are async-signal-safe. The pipe ends are first copied above
        // fd 10: one of them may already be fd 3 or 4 (dup2 onto itself would keep its
        // close-on-exec flag, and the first dup2 could overwrite the second source).
        unsafe {
            c.pre_exec(move || {
                let r = libc::fcntl(cmd_r, libc::F_DUPFD, 10);
                let w = libc::fcntl(out_w, libc::F_DUPFD, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        // SAFETY: the descriptors come from pipe2 above and are owned here from now on.
        let (to, from_file) = unsafe {
            libc::close(cmd_r);
            libc::close(out_w);
            (File::from_raw_fd(cmd_w), File::from_raw_fd(out_r))
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                buf.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            log,
        };
        let t = b.call("Target.createTarget", json!({"url": url}));
        let target = t["targetId"].as_str().expect("targetId").to_string();
        let s = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = s["sessionId"].as_str().expect("sessionId").to_string();
        b.call("Runtime.enable", json!({}));
        b.call("Page.enable", json!({}));
        b
    }

    /// Send one command (to the page once attached) and wait for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        if let Err(e) = self.to.write_all(&bytes) {
            panic!(
                "{method}: chromium is gone ({e}); its log:\n{}",
                self.log_tail()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match self.from.recv_timeout(left) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => panic!("chromium: no answer to {method}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "chromium exited during {method}; its log:\n{}",
                        self.log_tail()
                    )
                }
            };
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.note_event(&v);
        }
    }

    fn note_event(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &v["params"]["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or("?");
                self.errors.push(text.to_string())
            }
            Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                self.errors.push(v["params"]["args"].to_string())
            }
            _ => {}
        }
    }

    /// The value of a JavaScript expression in the page.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Poll `cond` every 100 ms until it holds; panics after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&mut Self) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            // A JavaScript error fails at once, with the first one.
            assert!(
                self.errors.is_empty(),
                "while waiting for {what}: the page threw {} JavaScript error(s), the first: {}",
                self.errors.len(),
                self.errors[0]
            );
            assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// JavaScript exceptions and console errors seen so far.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}
