//! Inverted indexes over one condition kind: value → the set of actions that list it, plus the
//! set of actions that do not constrain the kind. A request's match for a kind is one hash
//! lookup OR the unconstrained set; the evaluator ANDs the kinds.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use crate::actionset::{ActionId, ActionSet};
use crate::fxhash::FxBuild;
use crate::spec::PathMatch;

/// Value → actions, for one exact-match condition kind.
#[derive(Clone, Debug)]
pub(crate) struct KindIndex<K> {
    map: HashMap<K, u32, FxBuild>,
    sets: Vec<ActionSet>,
    unconstrained: ActionSet,
    /// Some selected action constrains this kind (otherwise the kind is skipped).
    pub active: bool,
}

impl<K: Hash + Eq> KindIndex<K> {
    /// Builds the index from `(action, its values)`; an action with no values is unconstrained.
    pub fn build(entries: impl Iterator<Item = (ActionId, Vec<K>)>) -> Self {
        let mut per_value: HashMap<K, ActionSet> = HashMap::new();
        let mut unconstrained = ActionSet::EMPTY;
        for (id, values) in entries {
            if values.is_empty() {
                unconstrained.insert(id);
            }
            for v in values {
                per_value.entry(v).or_default().insert(id);
            }
        }
        let active = !per_value.is_empty();
        let (map, sets) = intern(per_value);
        Self {
            map,
            sets,
            unconstrained,
            active,
        }
    }

    /// Marks `ids` as constraining this kind even if they list no exact value (they match
    /// through patterns evaluated beside the index).
    pub fn constrain(&mut self, ids: ActionSet) {
        if !ids.is_empty() {
            self.unconstrained = self.unconstrained.and_not(&ids);
            self.active = true;
        }
    }

    /// The actions this value satisfies for this kind.
    #[inline]
    pub fn matches<Q: Hash + Eq + ?Sized>(&self, value: Option<&Q>) -> ActionSet
    where
        K: Borrow<Q>,
    {
        match value.and_then(|v| self.map.get(v)) {
            Some(&i) => self.unconstrained.or(&self.sets[i as usize]),
            None => self.unconstrained,
        }
    }
}

/// Deduplicates action sets: many values usually share one set (e.g. 100k keys of one action).
fn intern<K: Hash + Eq>(
    per_value: HashMap<K, ActionSet>,
) -> (HashMap<K, u32, FxBuild>, Vec<ActionSet>) {
    let mut ids: HashMap<ActionSet, u32> = HashMap::new();
    let mut sets = Vec::new();
    let map = per_value
        .into_iter()
        .map(|(k, set)| {
            let id = *ids.entry(set).or_insert_with(|| {
                sets.push(set);
                (sets.len() - 1) as u32
            });
            (k, id)
        })
        .collect();
    (map, sets)
}

/// Paths: exact values in one map, prefixes in another probed at each distinct prefix length.
#[derive(Clone, Debug)]
pub(crate) struct PathIndex {
    exact: HashMap<Box<str>, u32, FxBuild>,
    exact_sets: Vec<ActionSet>,
    prefix: HashMap<Box<str>, u32, FxBuild>,
    prefix_sets: Vec<ActionSet>,
    prefix_lens: Vec<usize>,
    unconstrained: ActionSet,
    /// Some selected action has a path condition.
    pub active: bool,
}

impl PathIndex {
    /// Builds the index from `(action, its path conditions)`.
    pub fn build(entries: impl Iterator<Item = (ActionId, Vec<PathMatch>)>) -> Self {
        let mut per_exact: HashMap<Box<str>, ActionSet> = HashMap::new();
        let mut per_prefix: HashMap<Box<str>, ActionSet> = HashMap::new();
        let mut unconstrained = ActionSet::EMPTY;
        for (id, paths) in entries {
            if paths.is_empty() {
                unconstrained.insert(id);
            }
            for p in paths {
                let (map, s) = match p {
                    PathMatch::Exact(s) => (&mut per_exact, s),
                    PathMatch::Prefix(s) => (&mut per_prefix, s),
                };
                map.entry(s.into_boxed_str()).or_default().insert(id);
            }
        }
        let mut prefix_lens: Vec<usize> = per_prefix.keys().map(|k| k.len()).collect();
        prefix_lens.sort_unstable();
        prefix_lens.dedup();
        let active = !per_exact.is_empty() || !per_prefix.is_empty();
        let (exact, exact_sets) = intern(per_exact);
        let (prefix, prefix_sets) = intern(per_prefix);
        Self {
            exact,
            exact_sets,
            prefix,
            prefix_sets,
            prefix_lens,
            unconstrained,
            active,
        }
    }

    /// The actions this path satisfies.
    #[inline]
    pub fn matches(&self, path: &str) -> ActionSet {
        let mut set = self.unconstrained;
        if let Some(&i) = self.exact.get(path) {
            set = set.or(&self.exact_sets[i as usize]);
        }
        for &len in &self.prefix_lens {
            if len > path.len() {
                break;
            }
            if let Some(head) = path.get(..len)
                && let Some(&i) = self.prefix.get(head)
            {
                set = set.or(&self.prefix_sets[i as usize]);
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u16]) -> ActionSet {
        ids.iter().copied().map(ActionId).collect()
    }

    #[test]
    fn kind_index_or_within_and_unconstrained() {
        let idx = KindIndex::build(
            [
                (ActionId(0), vec![1u32, 2]),
                (ActionId(1), vec![]),
                (ActionId(2), vec![2]),
            ]
            .into_iter(),
        );
        assert_eq!(idx.matches(Some(&1)), set(&[0, 1]));
        assert_eq!(idx.matches(Some(&2)), set(&[0, 1, 2]));
        assert_eq!(idx.matches(Some(&3)), set(&[1]));
        assert_eq!(idx.matches(None::<&u32>), set(&[1]));
        assert!(idx.active);
    }

    #[test]
    fn paths_exact_and_prefix() {
        let idx = PathIndex::build(
            [
                (ActionId(0), vec![PathMatch::Exact("/login".into())]),
                (ActionId(1), vec![PathMatch::Prefix("/admin/".into())]),
                (
                    ActionId(2),
                    vec![PathMatch::Prefix("/".into()), PathMatch::Exact("/x".into())],
                ),
                (ActionId(3), vec![]),
            ]
            .into_iter(),
        );
        assert_eq!(idx.matches("/login"), set(&[0, 2, 3]));
        assert_eq!(idx.matches("/login/x"), set(&[2, 3]));
        assert_eq!(idx.matches("/admin/users"), set(&[1, 2, 3]));
        assert_eq!(idx.matches("/admin"), set(&[2, 3]));
        assert_eq!(idx.matches(""), set(&[3]));
    }
}
