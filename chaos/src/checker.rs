//! Linearizability checker for per-key registers: the Wing-Gong search with Lowe's
//! memoisation (a cache of (linearized set, register value) pairs already explored).
//!
//! Why per key: a register per key is a *local* property (Herlihy & Wing), so a history is
//! linearizable iff each key's sub-history is; checking keys apart keeps the search small.
//!
//! Outcomes: an acknowledged (Ok) operation must take effect between its invoke and its
//! complete; a failed one never took effect and is ignored (reading its value is a
//! violation); an Unknown write may take effect at any time after its invoke, or never, so
//! its completion bound is infinite and the search may leave it out. An Unknown write whose
//! value nobody read is dropped up front: since values are unique, leaving it out is always
//! at least as good as placing it. Unknown/failed reads say nothing and are dropped.

use std::collections::{HashMap, HashSet};

use crate::history::{History, Op, OpKind, Outcome, Value};

/// Limits of the search.
#[derive(Debug, Clone, Copy)]
pub struct CheckConfig {
    /// Search nodes explored per key before the key is reported as undecided (never as
    /// linearizable).
    pub max_states: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            max_states: 5_000_000,
        }
    }
}

/// Why a key's history is not linearizable, with the smallest window that shows it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    pub message: String,
    /// The last operations of the longest linearization the search found (context).
    pub linearized_tail: Vec<Op>,
    /// The register value after that prefix (`None`: absent).
    pub state: Option<Value>,
    /// The operations that could come next (all concurrent with each other), none of which
    /// is possible: the window where the history breaks.
    pub window: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "key {:?}: {}", self.key, self.message)?;
        if !self.linearized_tail.is_empty() {
            writeln!(
                f,
                "  linearized so far (last {}):",
                self.linearized_tail.len()
            )?;
            for o in &self.linearized_tail {
                writeln!(f, "    {o}")?;
            }
        }
        match self.state {
            Some(v) => writeln!(f, "  register holds {v}")?,
            None => writeln!(f, "  register is absent")?,
        }
        writeln!(f, "  window (none of these can come next):")?;
        for o in &self.window {
            writeln!(f, "    {o}")?;
        }
        Ok(())
    }
}

/// Result for one key.
#[derive(Debug, Clone)]
pub enum KeyResult {
    Linearizable {
        states: usize,
    },
    Violation(Box<Violation>),
    /// The search budget ran out: neither proven nor refuted.
    Undecided {
        states: usize,
    },
}

/// Result for a whole history.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub keys_checked: usize,
    pub states_explored: usize,
    pub violations: Vec<Violation>,
    pub undecided: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }
}

/// Check every key of `h`.
pub fn check_history(h: &History, cfg: CheckConfig) -> CheckReport {
    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for o in &h.ops {
        by_key.entry(o.key.as_str()).or_default().push(o);
    }
    let mut keys: Vec<&str> = by_key.keys().copied().collect();
    keys.sort();
    let mut r = CheckReport::default();
    for k in keys {
        r.keys_checked += 1;
        match check_key(k, &by_key[k], cfg) {
            KeyResult::Linearizable { states } => r.states_explored += states,
            KeyResult::Undecided { states } => {
                r.states_explored += states;
                r.undecided.push(k.to_string());
            }
            KeyResult::Violation(v) => r.violations.push(*v),
        }
    }
    r
}

#[derive(Debug, Clone, Copy)]
enum EKind {
    Write(u64),
    Read(u64),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    invoke: u64,
    /// `u64::MAX` for unknown writes.
    complete: u64,
    /// Must be linearized (Ok outcome); unknown writes are optional.
    required: bool,
    kind: EKind,
    op: usize,
}

/// `0` encodes "absent" (values are never 0).
fn enc(v: Option<Value>) -> u64 {
    v.unwrap_or(0)
}
fn dec(v: u64) -> Option<Value> {
    (v != 0).then_some(v)
}

struct Bits(Vec<u64>);
impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn first_clear(&self, n: usize) -> usize {
        for (w, word) in self.0.iter().enumerate() {
            if *word != u64::MAX {
                return (w * 64 + word.trailing_ones() as usize).min(n);
            }
        }
        n
    }
}

/// Check one key's operations (any order; other keys' operations must not be included).
pub fn check_key(key: &str, ops: &[&Op], cfg: CheckConfig) -> KeyResult {
    // Values some acknowledged read returned.
    let read_values: HashSet<Value> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| match o.kind {
            OpKind::Read(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
    let mut written: HashMap<Value, usize> = HashMap::new();
    let mut entries = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        match (o.kind, o.outcome) {
            (OpKind::Write(v), Outcome::Ok) => {
                written.insert(v, i);
                entries.push(Entry {
                    invoke: o.invoke,
                    complete: o.complete,
                    required: true,
                    kind: EKind::Write(v),
                    op: i,
                });
            }
            (OpKind::Write(v), Outcome::Unknown) => {
                written.insert(v, i);
                if read_values.contains(&v) {
                    entries.push(Entry {
                        invoke: o.invoke,
                        complete: u64::MAX,
                        required: false,
                        kind: EKind::Write(v),
                        op: i,
                    });
                }
            }
            (OpKind::Read(v), Outcome::Ok) => entries.push(Entry {
                invoke: o.invoke,
                complete: o.complete,
                required: true,
                kind: EKind::Read(enc(v)),
                op: i,
            }),
            _ => {}
        }
    }
    // A value no (possibly) applied write produced: name the culprit directly.
    for o in ops {
        if let (OpKind::Read(Some(v)), Outcome::Ok) = (o.kind, o.outcome) {
            if !written.contains_key(&v) {
                let failed: Vec<Op> = ops
                    .iter()
                    .filter(|w| w.kind == OpKind::Write(v))
                    .map(|w| (*w).clone())
                    .collect();
                let mut window = failed;
                window.push((*o).clone());
                return KeyResult::Violation(Box::new(Violation {
                    key: key.to_string(),
                    message: format!(
                        "a read returned {v}, which no acknowledged or in-doubt write wrote{}",
                        if window.len() > 1 {
                            " (its write failed: certainly not applied)"
                        } else {
                            ""
                        }
                    ),
                    linearized_tail: vec![],
                    state: None,
                    window,
                }));
            }
        }
    }
    entries.sort_by_key(|e| (e.invoke, e.complete));
    search(key, ops, &entries, cfg)
}

fn search(key: &str, ops: &[&Op], e: &[Entry], cfg: CheckConfig) -> KeyResult {
    let n = e.len();
    let required_total = e.iter().filter(|x| x.required).count();
    let mut lin = Bits::new(n);
    let mut state: u64 = 0;
    let mut lin_required = 0usize;
    let mut path: Vec<usize> = Vec::new();
    let mut memo: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut explored = 0usize;
    // Deepest point reached, for the report.
    let mut best: (usize, Vec<usize>, u64, Vec<usize>) = (0, vec![], 0, vec![]);

    struct Frame {
        cands: Vec<usize>,
        next: usize,
        via: Option<usize>,
        state_before: u64,
    }

    // Candidates: unlinearized entries invoked no later than the earliest completion of any
    // unlinearized required entry. A read legal now is taken alone (linearizing a read as
    // early as possible never hurts: it does not change the register).
    let candidates = |lin: &Bits, state: u64| -> (Vec<usize>, Vec<usize>) {
        let start = lin.first_clear(n);
        let mut m = u64::MAX;
        for (j, x) in e.iter().enumerate().skip(start) {
            if x.invoke > m {
                break;
            }
            if !lin.get(j) && x.required {
                m = m.min(x.complete);
            }
        }
        let mut c = Vec::new();
        let mut window = Vec::new();
        for (j, x) in e.iter().enumerate().skip(start) {
            if x.invoke > m {
                break;
            }
            if lin.get(j) {
                continue;
            }
            window.push(j);
            match x.kind {
                EKind::Read(v) if v == state => return (vec![j], window),
                EKind::Read(_) => {}
                EKind::Write(_) => c.push(j),
            }
        }
        (c, window)
    };

    let (c0, w0) = candidates(&lin, state);
    best.3 = w0;
    let mut stack = vec![Frame {
        cands: c0,
        next: 0,
        via: None,
        state_before: 0,
    }];
    loop {
        if lin_required == required_total {
            return KeyResult::Linearizable { states: explored };
        }
        if explored >= cfg.max_states {
            return KeyResult::Undecided { states: explored };
        }
        let Some(top) = stack.last_mut() else {
            break;
        };
        if top.next >= top.cands.len() {
            let f = stack.pop().expect("non-empty");
            if let Some(i) = f.via {
                lin.clear(i);
                state = f.state_before;
                if e[i].required {
                    lin_required -= 1;
                }
                path.pop();
            }
            continue;
        }
        let i = top.cands[top.next];
        top.next += 1;
        let new_state = match e[i].kind {
            EKind::Write(v) => v,
            EKind::Read(v) => {
                if v != state {
                    continue;
                }
                state
            }
        };
        lin.set(i);
        explored += 1;
        if !memo.insert((lin.0.clone(), new_state)) {
            lin.clear(i);
            continue;
        }
        if e[i].required {
            lin_required += 1;
        }
        path.push(i);
        let (cands, window) = candidates(&lin, new_state);
        if lin_required > best.0 || best.1.is_empty() && !path.is_empty() {
            best = (lin_required, path.clone(), new_state, window);
        }
        stack.push(Frame {
            cands,
            next: 0,
            via: Some(i),
            state_before: state,
        });
        state = new_state;
    }

    let (done, bpath, bstate, bwindow) = best;
    let tail_from = bpath.len().saturating_sub(4);
    KeyResult::Violation(Box::new(Violation {
        key: key.to_string(),
        message: format!(
            "not linearizable: after {done} of {required_total} acknowledged operations no \
             order fits ({explored} search states explored)"
        ),
        linearized_tail: bpath[tail_from..]
            .iter()
            .map(|&i| ops[e[i].op].clone())
            .collect(),
        state: dec(bstate),
        window: bwindow.iter().map(|&i| ops[e[i].op].clone()).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn op(kind: OpKind, invoke: u64, complete: u64, outcome: Outcome) -> Op {
        Op {
            client: invoke,
            key: "k".into(),
            kind,
            invoke,
            complete,
            outcome,
            revision: None,
            member: 1,
        }
    }
    fn w(v: Value, i: u64, c: u64) -> Op {
        op(OpKind::Write(v), i, c, Outcome::Ok)
    }
    fn w_unknown(v: Value, i: u64, gave_up: u64) -> Op {
        op(OpKind::Write(v), i, gave_up, Outcome::Unknown)
    }
    fn r(v: Option<Value>, i: u64, c: u64) -> Op {
        op(OpKind::Read(v), i, c, Outcome::Ok)
    }
    fn hist(ops: Vec<Op>) -> History {
        History { ops }
    }
    fn check(ops: Vec<Op>) -> CheckReport {
        check_history(&hist(ops), CheckConfig::default())
    }

    #[test]
    fn finds_a_stale_read() {
        // w1 then w2 both acknowledged, then a read (after both) returns 1.
        let rep = check(vec![w(1, 0, 10), w(2, 20, 30), r(Some(1), 40, 50)]);
        assert_eq!(rep.violations.len(), 1, "{rep:?}");
        let v = &rep.violations[0];
        assert_eq!(v.key, "k");
        // The window names the stale read; the register held 2 at that point.
        assert!(
            v.window.iter().any(|o| o.kind == OpKind::Read(Some(1))),
            "{v}"
        );
        assert_eq!(v.state, Some(2), "{v}");
        let text = v.to_string();
        assert!(
            text.contains("read -> 1") && text.contains("key \"k\""),
            "{text}"
        );
    }

    #[test]
    fn finds_a_lost_acknowledged_write() {
        // Write 2 acknowledged; every later read (the final reads) still says 1.
        let rep = check(vec![
            w(1, 0, 10),
            w(2, 20, 30),
            r(Some(2), 31, 35),
            r(Some(1), 100, 110),
            r(Some(1), 100, 111),
        ]);
        assert_eq!(rep.violations.len(), 1, "{rep:?}");
        // And the absent variant: the write vanished completely.
        let rep = check(vec![w(1, 0, 10), r(None, 20, 30)]);
        assert_eq!(rep.violations.len(), 1, "{rep:?}");
    }

    #[test]
    fn finds_a_value_read_before_its_write_began() {
        let rep = check(vec![r(Some(5), 0, 10), w(5, 20, 30)]);
        assert_eq!(rep.violations.len(), 1, "{rep:?}");
        // Same with an unknown-outcome write: it may apply late, never early.
        let rep = check(vec![r(Some(5), 0, 10), w_unknown(5, 20, 30)]);
        assert_eq!(rep.violations.len(), 1, "{rep:?}");
    }

    #[test]
    fn finds_a_read_of_a_failed_write() {
        let rep = check(vec![
            op(OpKind::Write(7), 0, 10, Outcome::Fail),
            r(Some(7), 20, 30),
        ]);
        assert_eq!(rep.violations.len(), 1, "{rep:?}");
        assert!(rep.violations[0].message.contains("failed"), "{rep:?}");
    }

    #[test]
    fn passes_concurrent_histories_that_need_backtracking() {
        // w1, w2 overlap everything; reads 2 then 1 fit the order w2, r, w1, r.
        let rep = check(vec![
            w(1, 0, 100),
            w(2, 0, 100),
            r(Some(2), 10, 20),
            r(Some(1), 30, 40),
            r(None, 0, 5),
        ]);
        assert!(rep.ok(), "{rep:?}");
        // ...but 2, 1, 2 does not: 2 cannot come back once 1 overwrote it.
        let rep = check(vec![
            w(1, 0, 100),
            w(2, 0, 100),
            r(Some(2), 10, 20),
            r(Some(1), 30, 40),
            r(Some(2), 50, 60),
        ]);
        assert_eq!(rep.violations.len(), 1, "{rep:?}");
        // Reads concurrent with a write may see either side.
        let rep = check(vec![
            w(1, 0, 10),
            w(2, 20, 60),
            r(Some(1), 25, 30),
            r(Some(2), 35, 40),
            r(Some(2), 45, 50),
        ]);
        assert!(rep.ok(), "{rep:?}");
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never() {
        // Did not take effect: later reads keep seeing 1.
        let rep = check(vec![
            w(1, 0, 10),
            w_unknown(2, 20, 25),
            r(Some(1), 30, 40),
            r(Some(1), 50, 60),
        ]);
        assert!(rep.ok(), "{rep:?}");
        // Took effect long after the client gave up (between 40 and 60).
        let rep = check(vec![
            w(1, 0, 10),
            w_unknown(2, 20, 25),
            r(Some(1), 30, 40),
            r(Some(2), 50, 60),
        ]);
        assert!(rep.ok(), "{rep:?}");
        // But only once: 1 after 2 means write 1 came back.
        let rep = check(vec![
            w(1, 0, 10),
            w_unknown(2, 20, 25),
            r(Some(1), 30, 40),
            r(Some(2), 50, 60),
            r(Some(1), 70, 80),
        ]);
        assert_eq!(rep.violations.len(), 1, "{rep:?}");
        // Failed reads say nothing.
        let rep = check(vec![
            w(1, 0, 10),
            op(OpKind::Read(Some(99)), 20, 30, Outcome::Unknown),
        ]);
        assert!(rep.ok(), "{rep:?}");
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut a = w(1, 0, 10);
        a.key = "a".into();
        let mut b = r(Some(1), 20, 30);
        b.key = "b".into();
        let rep = check(vec![a, b]);
        assert_eq!(rep.keys_checked, 2);
        assert_eq!(rep.violations.len(), 1);
        assert_eq!(rep.violations[0].key, "b");
    }

    /// A linearizable history by construction: run a register sequentially, give each op a
    /// linearization point, then widen every op into a random interval around its point.
    /// Some writes get an unknown outcome (applied), some unknown or failed writes are
    /// never applied.
    fn generated(seed: u64, n: usize, spread: u64) -> Vec<Op> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut ops = Vec::new();
        let mut reg: Option<Value> = None;
        let mut next = 1;
        for i in 0..n {
            let t = 1_000 + i as u64 * 10;
            let invoke = t - rng.gen_range(0..spread);
            let complete = t + rng.gen_range(0..spread);
            match rng.gen_range(0..10) {
                0..=3 => {
                    reg = Some(next);
                    let outcome = if rng.gen_bool(0.15) {
                        Outcome::Unknown
                    } else {
                        Outcome::Ok
                    };
                    // An unknown outcome's client may give up before the write applies.
                    let complete = if outcome == Outcome::Unknown {
                        invoke + rng.gen_range(0..spread)
                    } else {
                        complete
                    };
                    ops.push(op(OpKind::Write(next), invoke, complete, outcome));
                    next += 1;
                }
                4 => {
                    // Never applied.
                    let outcome = if rng.gen_bool(0.5) {
                        Outcome::Unknown
                    } else {
                        Outcome::Fail
                    };
                    ops.push(op(OpKind::Write(next), invoke, complete, outcome));
                    next += 1;
                }
                _ => ops.push(op(OpKind::Read(reg), invoke, complete, Outcome::Ok)),
            }
        }
        ops
    }

    #[test]
    fn property_generated_linearizable_histories_pass() {
        for seed in 0..300 {
            let spread = [5, 30, 80][seed as usize % 3];
            let ops = generated(seed, 60, spread);
            let rep = check(ops.clone());
            assert!(
                rep.ok(),
                "seed {seed}: a linearizable history was rejected: {:?}\n{}",
                rep.violations.first().map(|v| v.to_string()),
                ops.iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }

    #[test]
    fn property_a_read_moved_after_a_later_acknowledged_write_fails() {
        // Mutation: take a read, move it to start after the *next* acknowledged write to
        // a different value completed -> must be rejected (the value was overwritten).
        let mut found = 0;
        for seed in 0..200 {
            let mut ops = generated(seed, 60, 5);
            let Some(ri) = ops
                .iter()
                .position(|o| matches!(o.kind, OpKind::Read(Some(_))) && o.invoke > 1_100)
            else {
                continue;
            };
            let OpKind::Read(Some(v)) = ops[ri].kind else {
                unreachable!()
            };
            // An acknowledged write of another value invoked after the write of v completed.
            let wv = ops.iter().find(|o| o.kind == OpKind::Write(v)).cloned();
            let Some(wv) = wv.filter(|x| x.outcome == Outcome::Ok) else {
                continue;
            };
            let Some(later) = ops
                .iter()
                .filter(|o| {
                    matches!(o.kind, OpKind::Write(_))
                        && o.outcome == Outcome::Ok
                        && o.invoke > wv.complete
                })
                .map(|o| o.complete)
                .min()
            else {
                continue;
            };
            ops[ri].invoke = later + 1;
            ops[ri].complete = later + 2;
            let rep = check(ops);
            assert_eq!(rep.violations.len(), 1, "seed {seed}: stale read not found");
            found += 1;
        }
        assert!(found > 50, "too few mutated histories ({found})");
    }

    #[test]
    fn a_long_concurrent_history_is_decided_quickly() {
        // 3,000 operations, each overlapping ~16 others: the memoised search stays small.
        let ops = generated(7, 3_000, 80);
        let rep = check(ops);
        assert!(
            rep.ok(),
            "{:?}",
            rep.violations.first().map(|v| v.to_string())
        );
        assert!(
            rep.states_explored < 200_000,
            "explored {} states",
            rep.states_explored
        );
    }
}
