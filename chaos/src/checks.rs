//! The checks besides linearizability, each independent of the search so a failure names
//! its own cause: revisions never go backwards, no acknowledged write is lost, at most one
//! leader per term, replicas converge to identical state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::{History, Op, OpKind, Outcome, Value};

/// Revisions in real-time order: an operation invoked after another completed must see a
/// revision at least as large. Covers "a client's revision never goes backwards" (a client's
/// operations are sequential) and the same across clients. Returns (earlier, later) pairs.
pub fn revision_regressions(h: &History) -> Vec<(Op, Op)> {
    let mut done: Vec<&Op> = h
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && o.revision.is_some())
        .collect();
    let mut by_invoke = done.clone();
    done.sort_by_key(|o| o.complete);
    by_invoke.sort_by_key(|o| o.invoke);
    let mut out = Vec::new();
    let mut j = 0;
    let mut max: Option<&Op> = None;
    for b in by_invoke {
        while j < done.len() && done[j].complete < b.invoke {
            if max.is_none_or(|m| done[j].revision > m.revision) {
                max = Some(done[j]);
            }
            j += 1;
        }
        if let Some(a) = max {
            if b.revision < a.revision {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// Acknowledged writes certainly lost: given each key's final value (read from the cluster
/// after the run), any acknowledged write invoked after the final value's write had
/// completed must have been ordered after it, so the final value cannot be the older one.
/// `finals`: key -> final value (None: absent).
pub fn lost_writes(h: &History, finals: &BTreeMap<String, Option<Value>>) -> Vec<Op> {
    let mut write_of: HashMap<(&str, Value), &Op> = HashMap::new();
    for o in &h.ops {
        if let OpKind::Write(v) = o.kind {
            write_of.insert((o.key.as_str(), v), o);
        }
    }
    let mut out = Vec::new();
    for (key, fin) in finals {
        // The completion bound of the write that produced the final value (absent: the
        // register was never written, so every acknowledged write is lost).
        let bound = match fin {
            None => Some(0),
            Some(v) => write_of.get(&(key.as_str(), *v)).map(|w| {
                if w.outcome == Outcome::Ok {
                    w.complete
                } else {
                    u64::MAX
                }
            }),
        };
        let Some(bound) = bound else { continue };
        for o in h.for_key(key) {
            if matches!(o.kind, OpKind::Write(_))
                && o.outcome == Outcome::Ok
                && (fin.is_none() || o.invoke > bound)
                && Some(o.kind) != fin.map(OpKind::Write)
            {
                out.push(o.clone());
            }
        }
    }
    out
}

/// One observation of a member's view: (term, leader it names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaderSeen {
    pub term: u64,
    pub leader: u64,
    pub reported_by: u64,
}

/// Terms in which members named different leaders.
pub fn split_brain(seen: &[LeaderSeen]) -> Vec<(u64, BTreeSet<u64>)> {
    let mut by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.leader != 0) {
        by_term.entry(s.term).or_default().insert(s.leader);
    }
    by_term.into_iter().filter(|(_, l)| l.len() > 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, kind: OpKind, invoke: u64, complete: u64, rev: Option<u64>) -> Op {
        Op {
            client: 1,
            key: key.into(),
            kind,
            invoke,
            complete,
            outcome: Outcome::Ok,
            revision: rev,
            member: 1,
        }
    }

    #[test]
    fn revision_going_backwards_is_found_and_concurrent_ones_are_not() {
        let mut h = History::default();
        h.ops.push(op("k", OpKind::Write(1), 0, 10, Some(5)));
        // Concurrent with the write: may see an older revision.
        h.ops.push(op("k", OpKind::Read(None), 5, 20, Some(3)));
        assert!(revision_regressions(&h).is_empty());
        // Invoked after the write completed, revision 4 < 5.
        h.ops.push(op("k", OpKind::Read(Some(1)), 30, 40, Some(4)));
        let r = revision_regressions(&h);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0.revision, Some(5));
        assert_eq!(r[0].1.revision, Some(4));
    }

    #[test]
    fn lost_write_is_the_acknowledged_one_after_the_final_value() {
        let mut h = History::default();
        h.ops.push(op("k", OpKind::Write(1), 0, 10, None));
        h.ops.push(op("k", OpKind::Write(2), 20, 30, None));
        // Concurrent with write 2: either may be last, nothing lost.
        h.ops.push(op("k", OpKind::Write(3), 25, 35, None));
        let finals = |v| BTreeMap::from([("k".to_string(), Some(v))]);
        assert!(lost_writes(&h, &finals(2)).is_empty());
        assert!(lost_writes(&h, &finals(3)).is_empty());
        let lost = lost_writes(&h, &finals(1));
        assert_eq!(
            lost.iter().map(|o| o.kind).collect::<Vec<_>>(),
            vec![OpKind::Write(2), OpKind::Write(3)]
        );
        let none = BTreeMap::from([("k".to_string(), None)]);
        assert_eq!(lost_writes(&h, &none).len(), 3);
    }

    #[test]
    fn two_leaders_in_one_term_is_split_brain() {
        let s = |term, leader, reported_by| LeaderSeen {
            term,
            leader,
            reported_by,
        };
        let ok = [s(1, 1, 1), s(1, 1, 2), s(2, 0, 3), s(2, 3, 3), s(3, 2, 1)];
        assert!(split_brain(&ok).is_empty());
        let bad = [s(1, 1, 1), s(1, 2, 2)];
        assert_eq!(split_brain(&bad), vec![(1, BTreeSet::from([1, 2]))]);
    }
}

/// An acknowledged `placement set` and the node epoch it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinAck {
    pub node: String,
    pub model: String,
    pub invoke: u64,
    pub complete: u64,
    pub epoch: u64,
}

/// Placement epochs must strictly increase: every acknowledged pin changes the node's
/// assignment, so a pin invoked after another on the same node was acknowledged must answer
/// a larger epoch (an agent ignores assignments whose epoch is not above the one it holds).
/// Returns (earlier, later) pairs that break it.
pub fn epoch_regressions(pins: &[PinAck]) -> Vec<(PinAck, PinAck)> {
    let mut out = Vec::new();
    let mut by_node: BTreeMap<&str, Vec<&PinAck>> = BTreeMap::new();
    for p in pins {
        by_node.entry(p.node.as_str()).or_default().push(p);
    }
    for ps in by_node.values() {
        let mut done = ps.clone();
        done.sort_by_key(|p| p.complete);
        let mut by_invoke = ps.clone();
        by_invoke.sort_by_key(|p| p.invoke);
        let mut j = 0;
        let mut max: Option<&PinAck> = None;
        for b in by_invoke {
            while j < done.len() && done[j].complete < b.invoke {
                if max.is_none_or(|m| done[j].epoch > m.epoch) {
                    max = Some(done[j]);
                }
                j += 1;
            }
            if let Some(a) = max {
                if b.epoch <= a.epoch {
                    out.push((a.clone(), b.clone()));
                }
            }
        }
    }
    out
}

/// Linearizable placement reads, one after another (each invoked after the previous one
/// completed, through any member): a node's epoch must never go down between them.
/// `seen`: (member, node, epoch) in that order. Returns (member, node, earlier, later).
pub fn observed_epoch_regressions(seen: &[(u64, String, u64)]) -> Vec<(u64, String, u64, u64)> {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for (m, n, e) in seen {
        if let Some(prev) = last.get(n.as_str()).copied() {
            if *e < prev {
                out.push((*m, n.clone(), prev, *e));
                continue;
            }
        }
        last.insert(n.as_str(), *e);
    }
    out
}

#[cfg(test)]
mod epoch_tests {
    use super::*;

    fn pin(node: &str, invoke: u64, complete: u64, epoch: u64) -> PinAck {
        PinAck {
            node: node.into(),
            model: "m".into(),
            invoke,
            complete,
            epoch,
        }
    }

    #[test]
    fn epochs_must_strictly_increase_per_node_in_real_time() {
        // Sequential 1, 2, 3 and a concurrent pair (4 and 5 overlap: any order).
        let ok = [
            pin("a", 0, 10, 1),
            pin("a", 20, 30, 2),
            pin("a", 40, 50, 3),
            pin("a", 60, 90, 5),
            pin("a", 70, 80, 4),
            // Another node counts on its own.
            pin("b", 35, 45, 1),
        ];
        assert!(epoch_regressions(&ok).is_empty());
        // An epoch repeated after the earlier pin was acknowledged (restart at 0 -> 1).
        let bad = [pin("a", 0, 10, 7), pin("a", 20, 30, 1)];
        let r = epoch_regressions(&bad);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0.epoch, r[0].1.epoch), (7, 1));
        let same = [pin("a", 0, 10, 3), pin("a", 20, 30, 3)];
        assert_eq!(epoch_regressions(&same).len(), 1);
    }

    #[test]
    fn sequential_linearizable_reads_never_see_an_epoch_go_down() {
        let s = |m, n: &str, e| (m, n.to_string(), e);
        let ok = [s(1, "a", 1), s(2, "a", 3), s(3, "a", 3), s(1, "b", 1)];
        assert!(observed_epoch_regressions(&ok).is_empty());
        // Through member 2 the epoch went from 5 to 1, then member 1 showed 0.
        let bad = [s(1, "a", 5), s(2, "a", 1), s(1, "a", 0), s(3, "a", 6)];
        assert_eq!(
            observed_epoch_regressions(&bad),
            vec![(2, "a".to_string(), 5, 1), (1, "a".to_string(), 5, 0)]
        );
    }
}
