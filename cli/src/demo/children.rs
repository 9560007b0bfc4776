//! The demo's child processes (`edgeplane internal coordinator|agent ...`, this binary
//! re-executed), each dying with the demo (`PR_SET_PDEATHSIG`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

struct Proc {
    name: String,
    child: Child,
}

/// Every process the demo started. Dropping it stops them all: SIGTERM, a grace period, then
/// SIGKILL, and waits for each (no zombie, no orphan).
#[derive(Default)]
pub(super) struct Children {
    procs: Vec<Proc>,
}

impl Children {
    /// Start `edgeplane internal <args>` with stderr to `log` and stdout to `out` (or null).
    /// Must be called from the thread that lives as long as the demo (the main thread):
    /// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends.
    pub(super) fn spawn(
        &mut self,
        name: &str,
        args: &[String],
        log: &Path,
        out: Option<&Path>,
    ) -> anyhow::Result<u32> {
        let exe = std::env::current_exe().context("locating the edgeplane binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("internal")
            .args(args)
            .stdin(Stdio::null())
            .env(
                "EDGEPLANE_LOG",
                "info,raft=warn,h2=warn,tower=warn,sled=warn",
            )
            .stderr(
                std::fs::File::create(log)
                    .with_context(|| format!("creating {}", log.display()))?,
            );
        match out {
            Some(p) => cmd.stdout(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            None => cmd.stdout(Stdio::null()),
        };
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo died between fork and prctl: the signal will never come.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.procs.push(Proc {
            name: name.into(),
            child,
        });
        Ok(pid)
    }

    /// SIGKILL one process now and reap it.
    pub(super) fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| anyhow!("no process {name}"))?;
        let mut p = self.procs.remove(i);
        p.child.kill().with_context(|| format!("killing {name}"))?;
        let _ = p.child.wait();
        Ok(())
    }

    /// Wait for a process to exit by itself for up to `limit`; true if it did.
    pub(super) fn wait_exit(&mut self, name: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let Some(i) = self.procs.iter().position(|p| p.name == name) else {
                return true;
            };
            if let Ok(Some(_)) = self.procs[i].child.try_wait() {
                self.procs.remove(i);
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM everything, give it `grace`, SIGKILL what is left, reap all.
    pub(super) fn stop_all(&mut self, grace: Duration) {
        for p in &self.procs {
            // SAFETY: plain kill(2) on a child we have not reaped (its pid is still ours).
            unsafe {
                libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && self
                .procs
                .iter_mut()
                .any(|p| matches!(p.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for mut p in self.procs.drain(..) {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(2));
    }
}
