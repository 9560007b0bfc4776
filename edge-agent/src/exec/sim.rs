//! The simulated executor: waits each block's modelled latency on the accelerator's own OS
//! thread and accounts the modelled energy.

use super::{Block, Completion, ExecOutput, Executor};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Waits the modelled latency and accounts the modelled energy.
///
/// The wait is a `std::thread::sleep` on the accelerator's own thread, not a tokio timer: tokio's timer
/// wheel has 1 ms resolution and rounds up, which on 3 ms XRBench layers blocks made every
/// job ~30 % slower than modelled and cost the real-time run >10 deadline-met points against
/// the same core in virtual time. `nanosleep` is accurate to tens of µs; at most one thread
/// per accelerator is used.
///
/// Back-to-back blocks are timed on one timeline: when a block is dispatched less than
/// [`CONTIGUOUS`] after the previous one was due to finish, it starts at that due time, not
/// at "now". A real accelerator's queue runs layers back to back while the host decides; the
/// runtime's wake-up and decision latency (tens of µs per block) would otherwise add up over
/// a 40-layer model run one layer block at a time.
pub struct SimExecutor {
    due: Mutex<Option<Instant>>,
    /// The accelerator's own OS thread: waits out each block with `nanosleep`.
    tx: std::sync::mpsc::Sender<(Instant, f64, Completion)>,
}

impl Default for SimExecutor {
    fn default() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, f64, Completion)>();
        // The thread ends when the executor (its sender) is dropped.
        std::thread::spawn(move || {
            while let Ok((until, energy_mj, done)) = rx.recv() {
                sleep_until_precise(until);
                done(Ok(ExecOutput {
                    energy_mj,
                    worker: None,
                }));
            }
        });
        SimExecutor {
            due: Mutex::new(None),
            tx,
        }
    }
}

/// Gap under which a block continues the previous block's timeline (see [`SimExecutor`]).
pub const CONTIGUOUS: Duration = Duration::from_micros(500);

impl Executor for SimExecutor {
    fn run(&self, block: Block, done: Completion) {
        let now = Instant::now();
        let mut due = self.due.lock().expect("executor lock");
        let start = match *due {
            Some(prev) if prev <= now && now - prev < CONTIGUOUS => prev,
            _ => now,
        };
        let until = start + Duration::from_secs_f64(block.latency_ms.max(0.0) / 1000.0);
        *due = Some(until);
        drop(due);
        if until <= now {
            // Catching up on the timeline: the block would already have finished back to
            // back behind the previous one. Complete it here, without the round trip through
            // the accelerator's thread: two thread wake-ups per block (tens of µs on a busy
            // 2-core box) were more than many XRBench layers take, and over HT's 224
            // one-layer blocks they added ~5 ms per frame.
            done(Ok(ExecOutput {
                energy_mj: block.energy_mj,
                worker: None,
            }));
            return;
        }
        if let Err(std::sync::mpsc::SendError((_, e, done))) =
            self.tx.send((until, block.energy_mj, done))
        {
            done(Ok(ExecOutput {
                energy_mj: e,
                worker: None,
            })); // executor thread gone: finish at once rather than hang the job
        }
    }
}

/// Sleep the calling (non-async) thread until `until`, to within tens of µs.
pub fn sleep_until_precise(until: Instant) {
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep(until - now);
    }
}
