//! Cross-node make-before-break: what a node keeps running while its models move.
//!
//! The planner's target says where every model should run; a node's *effective* assignment
//! (what its agent runs now) may differ while a model moves: the old partition stays until
//! every new home of the model reports it ready, then the next round retires it. A node that
//! is not ready (lost, draining) keeps nothing. This is the one place the coordinator
//! decides it; [`crate::diff`] only describes the steps of a re-plan.
//!
//! Pure: the caller passes who reports what ready.

use std::collections::{BTreeMap, BTreeSet};

/// One partition of a node: a share of an accelerator and the models it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub accelerator_id: String,
    pub share_pct: u32,
    pub models: Vec<String>,
}

/// A node as the reconciler sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub name: &'a str,
    /// Ready nodes keep old partitions while their models move; others keep nothing.
    pub ready: bool,
    /// What the node's agent runs now (its effective assignment).
    pub current: &'a [Slice],
}

/// An old partition kept because some of its models have a new home that is not ready yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The partition as it runs now.
    pub slice: Slice,
    /// Its models that wait for a new home to report ready.
    pub waiting: Vec<String>,
}

/// The node's effective assignment: the target plus the old partitions kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// `target`, then each kept partition (less its models no longer deployed).
    pub effective: Vec<Slice>,
    pub kept: Vec<Kept>,
}

/// Where each model will live: model → nodes whose target (or pins) serve it.
pub type Homes = BTreeMap<String, BTreeSet<String>>;

/// The effective assignment of `node` given its `target`. An old partition (one of
/// `node.current` not in the target) is kept while one of its models is deployed, leaves
/// this node, and has a new home other than this node that does not report it ready
/// (`ready(home)` is the set of models the home serves on a ready partition).
pub fn reconcile(
    node: NodeView<'_>,
    target: &[Slice],
    deployed: &BTreeSet<String>,
    homes: &Homes,
    ready: &dyn Fn(&str) -> BTreeSet<String>,
) -> Reconciled {
    let in_target: BTreeSet<&String> = target.iter().flat_map(|p| &p.models).collect();
    let mut effective = target.to_vec();
    let mut kept = Vec::new();
    if !node.ready {
        return Reconciled { effective, kept };
    }
    for p in node.current {
        if effective.contains(p) {
            continue;
        }
        let waiting: Vec<String> = p
            .models
            .iter()
            .filter(|m| !in_target.contains(m) && deployed.contains(*m))
            .filter(|m| {
                homes.get(*m).is_some_and(|hs| {
                    hs.iter()
                        .filter(|h| h.as_str() != node.name)
                        .any(|h| !ready(h).contains(*m))
                })
            })
            .cloned()
            .collect();
        if waiting.is_empty() {
            continue;
        }
        let mut keep = p.clone();
        keep.models.retain(|m| deployed.contains(m));
        if !keep.models.is_empty() {
            effective.push(keep);
        }
        kept.push(Kept {
            slice: p.clone(),
            waiting,
        });
    }
    Reconciled { effective, kept }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(acc: &str, pct: u32, models: &[&str]) -> Slice {
        Slice {
            accelerator_id: acc.into(),
            share_pct: pct,
            models: models.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|x| x.to_string()).collect()
    }

    fn homes(xs: &[(&str, &[&str])]) -> Homes {
        xs.iter().map(|(m, ns)| (m.to_string(), set(ns))).collect()
    }

    /// `a` ran m on gpu0 at 50 %; the new plan moves m to `b` and gives `a` n instead.
    fn moving(ready_on_b: &[&str], node_ready: bool) -> Reconciled {
        let current = [slice("gpu0", 50, &["m"])];
        let target = [slice("gpu0", 30, &["n"])];
        let b_ready = set(ready_on_b);
        reconcile(
            NodeView {
                name: "a",
                ready: node_ready,
                current: &current,
            },
            &target,
            &set(&["m", "n"]),
            &homes(&[("m", &["b"]), ("n", &["a"])]),
            &|h| if h == "b" { b_ready.clone() } else { set(&[]) },
        )
    }

    #[test]
    fn a_moving_model_keeps_its_old_partition_until_the_new_home_is_ready() {
        let r = moving(&[], true);
        // target first, then the old partition whole
        assert_eq!(
            r.effective,
            vec![slice("gpu0", 30, &["n"]), slice("gpu0", 50, &["m"])]
        );
        assert_eq!(
            r.kept,
            vec![Kept {
                slice: slice("gpu0", 50, &["m"]),
                waiting: vec!["m".into()],
            }]
        );
    }

    #[test]
    fn once_the_new_home_reports_ready_the_old_partition_is_retired() {
        let r = moving(&["m"], true);
        assert_eq!(r.effective, vec![slice("gpu0", 30, &["n"])]);
        assert!(r.kept.is_empty());
    }

    #[test]
    fn a_node_that_is_not_ready_keeps_nothing() {
        let r = moving(&[], false);
        assert_eq!(r.effective, vec![slice("gpu0", 30, &["n"])]);
        assert!(r.kept.is_empty());
    }

    #[test]
    fn a_kept_partition_loses_models_no_longer_deployed_and_unchanged_ones_appear_once() {
        // a runs [m, gone] on gpu0 and [n] on gpu1; the target keeps gpu1 as it is and
        // moves m to b (not ready); `gone` was removed from the cluster.
        let current = [
            slice("gpu0", 40, &["gone", "m"]),
            slice("gpu1", 100, &["n"]),
        ];
        let target = [slice("gpu1", 100, &["n"])];
        let r = reconcile(
            NodeView {
                name: "a",
                ready: true,
                current: &current,
            },
            &target,
            &set(&["m", "n"]),
            &homes(&[("m", &["b"]), ("n", &["a"])]),
            &|_| set(&[]),
        );
        assert_eq!(
            r.effective,
            vec![slice("gpu1", 100, &["n"]), slice("gpu0", 40, &["m"])]
        );
        assert_eq!(r.kept[0].waiting, vec!["m".to_string()]);
        assert_eq!(r.kept[0].slice, slice("gpu0", 40, &["gone", "m"]));
    }

    #[test]
    fn a_partition_whose_models_only_leave_for_nowhere_or_for_itself_is_not_kept() {
        // m is served nowhere in the new plan (shed); k stays on a itself on another
        // partition: neither waits for a new home.
        let current = [slice("gpu0", 50, &["m"]), slice("gpu1", 50, &["k"])];
        let target = [slice("gpu1", 60, &["k"])];
        let r = reconcile(
            NodeView {
                name: "a",
                ready: true,
                current: &current,
            },
            &target,
            &set(&["m", "k"]),
            &homes(&[("k", &["a"])]),
            &|_| set(&[]),
        );
        assert_eq!(r.effective, vec![slice("gpu1", 60, &["k"])]);
        assert!(r.kept.is_empty());
    }
}
