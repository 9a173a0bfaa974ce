//! Inverted indexes over one condition kind: value → the set of actions that list it (the
//! value's *hit*), plus the set of actions that do not constrain the kind. A request matches
//! an action for a kind when the action is in the hit of the request's value or does not
//! constrain the kind; the evaluator ANDs the kinds.

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

    /// The actions that list this value (`None` when none does, or the value is absent).
    #[inline]
    pub fn hit<Q: Hash + Eq + ?Sized>(&self, value: Option<&Q>) -> Option<&ActionSet>
    where
        K: Borrow<Q>,
    {
        let &i = self.map.get(value?)?;
        self.sets.get(i as usize)
    }

    /// The actions that do not constrain this kind.
    pub fn unconstrained(&self) -> &ActionSet {
        &self.unconstrained
    }

    /// The actions this value satisfies for this kind: its hit and the unconstrained ones.
    #[cfg(test)]
    pub fn matches<Q: Hash + Eq + ?Sized>(&self, value: Option<&Q>) -> ActionSet
    where
        K: Borrow<Q>,
    {
        self.hit(value)
            .map_or(self.unconstrained, |s| s.or(&self.unconstrained))
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

/// Paths: exact values in one map, prefixes in another probed at each distinct prefix length,
/// case-insensitive conditions (few) compared one by one. Exact values and the path are compared
/// without a trailing slash.
#[derive(Clone, Debug)]
pub(crate) struct PathIndex {
    exact: HashMap<Box<str>, u32, FxBuild>,
    exact_sets: Vec<ActionSet>,
    prefix: HashMap<Box<str>, u32, FxBuild>,
    prefix_sets: Vec<ActionSet>,
    prefix_lens: Vec<usize>,
    ignore_case: Vec<(ActionId, PathMatch)>,
    unconstrained: ActionSet,
    /// Some selected action has a path condition.
    pub active: bool,
}

/// `path` without its trailing slash, unless it is `/`.
fn trim_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(head) if !head.is_empty() => head,
        _ => path,
    }
}

impl PathIndex {
    /// Builds the index from `(action, its path conditions)`.
    pub fn build(entries: impl Iterator<Item = (ActionId, Vec<PathMatch>)>) -> Self {
        let mut per_exact: HashMap<Box<str>, ActionSet> = HashMap::new();
        let mut per_prefix: HashMap<Box<str>, ActionSet> = HashMap::new();
        let mut ignore_case = Vec::new();
        let mut unconstrained = ActionSet::EMPTY;
        for (id, paths) in entries {
            if paths.is_empty() {
                unconstrained.insert(id);
            }
            for p in paths {
                let map = match &p {
                    PathMatch::Exact(_) => &mut per_exact,
                    PathMatch::Prefix(_) => &mut per_prefix,
                    PathMatch::ExactIgnoreCase(_) | PathMatch::PrefixIgnoreCase(_) => {
                        ignore_case.push((id, p));
                        continue;
                    }
                };
                let value = match p.is_prefix() {
                    true => p.value(),
                    false => trim_slash(p.value()),
                };
                map.entry(value.into()).or_default().insert(id);
            }
        }
        let mut prefix_lens: Vec<usize> = per_prefix.keys().map(|k| k.len()).collect();
        prefix_lens.sort_unstable();
        prefix_lens.dedup();
        let active = !per_exact.is_empty() || !per_prefix.is_empty() || !ignore_case.is_empty();
        let (exact, exact_sets) = intern(per_exact);
        let (prefix, prefix_sets) = intern(per_prefix);
        Self {
            exact,
            exact_sets,
            prefix,
            prefix_sets,
            prefix_lens,
            ignore_case,
            unconstrained,
            active,
        }
    }

    /// The actions that list this path (a match path: normalised, without segment
    /// parameters) by an exact value, a prefix or a case-insensitive one; `None` when none
    /// does.
    #[inline]
    pub fn hit(&self, path: &str) -> Option<ActionSet> {
        let mut set: Option<ActionSet> = None;
        let mut add = |s: &ActionSet| {
            let acc = set.get_or_insert(ActionSet::EMPTY);
            *acc = acc.or(s);
        };
        if let Some(&i) = self.exact.get(trim_slash(path)) {
            add(&self.exact_sets[i as usize]);
        }
        for &len in &self.prefix_lens {
            if len > path.len() {
                break;
            }
            if let Some(head) = path.get(..len)
                && let Some(&i) = self.prefix.get(head)
            {
                add(&self.prefix_sets[i as usize]);
            }
        }
        for (id, p) in &self.ignore_case {
            let v = p.value().as_bytes();
            let hit = match p.is_prefix() {
                true => path
                    .as_bytes()
                    .get(..v.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(v)),
                false => trim_slash(path).eq_ignore_ascii_case(trim_slash(p.value())),
            };
            if hit {
                set.get_or_insert(ActionSet::EMPTY).insert(*id);
            }
        }
        set
    }

    /// The actions without a path condition.
    pub fn unconstrained(&self) -> &ActionSet {
        &self.unconstrained
    }

    /// The actions this path satisfies: its hit and the unconstrained ones.
    #[cfg(test)]
    pub fn matches(&self, path: &str) -> ActionSet {
        self.hit(path)
            .map_or(self.unconstrained, |s| s.or(&self.unconstrained))
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

    #[test]
    fn exact_paths_ignore_a_trailing_slash_and_case_is_opt_in() {
        let idx = PathIndex::build(
            [
                (ActionId(0), vec![PathMatch::Exact("/admin".into())]),
                (ActionId(1), vec![PathMatch::Exact("/users/".into())]),
                (
                    ActionId(2),
                    vec![PathMatch::ExactIgnoreCase("/Admin".into())],
                ),
                (
                    ActionId(3),
                    vec![PathMatch::PrefixIgnoreCase("/API/".into())],
                ),
                (ActionId(4), vec![PathMatch::Exact("/".into())]),
            ]
            .into_iter(),
        );
        assert!(idx.active);
        assert_eq!(idx.matches("/admin"), set(&[0, 2]));
        assert_eq!(idx.matches("/admin/"), set(&[0, 2]));
        assert_eq!(idx.matches("/ADMIN/"), set(&[2]));
        assert_eq!(idx.matches("/admin/x"), set(&[]));
        assert_eq!(idx.matches("/users"), set(&[1]));
        assert_eq!(idx.matches("/users/"), set(&[1]));
        assert_eq!(idx.matches("/api/v1"), set(&[3]));
        assert_eq!(idx.matches("/Api/"), set(&[3]));
        assert_eq!(idx.matches("/api"), set(&[]));
        assert_eq!(idx.matches("/"), set(&[4]));
        assert_eq!(idx.matches("/adminx"), set(&[]));
    }
}
