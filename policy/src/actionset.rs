//! A fixed-size set of action ids: the unit the evaluator ANDs and ORs per request.
//!
//! A namespace holds at most [`MAX_ACTIONS`] enabled actions (the commercial product this
//! follows allows 1000 per environment), so a set is 16 machine words, lives on the stack and
//! copies without allocating.

use std::fmt;

/// The most actions one bundle can hold. Further actions are reported `Invalid` by `compile`.
pub const MAX_ACTIONS: usize = 1024;

const WORDS: usize = MAX_ACTIONS / 64;

/// The index of an action in its bundle (`Bundle::actions`), which is sorted by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionId(pub u16);

impl ActionId {
    /// The index into `Bundle::actions`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of [`ActionId`]s, as a bitset of [`MAX_ACTIONS`] bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet([u64; WORDS]);

impl ActionSet {
    /// The empty set.
    pub const EMPTY: Self = Self([0; WORDS]);

    /// The set `{0, 1, …, n-1}` (`n` is capped at [`MAX_ACTIONS`]).
    pub fn first_n(n: usize) -> Self {
        let mut set = Self::EMPTY;
        for i in 0..n.min(MAX_ACTIONS) {
            set.0[i / 64] |= 1 << (i % 64);
        }
        set
    }

    /// Adds `id` (ids at or above [`MAX_ACTIONS`] are ignored).
    pub fn insert(&mut self, id: ActionId) {
        let i = id.index();
        if i < MAX_ACTIONS {
            self.0[i / 64] |= 1 << (i % 64);
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: ActionId) -> bool {
        let i = id.index();
        i < MAX_ACTIONS && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// How many ids the set holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The intersection of two sets.
    #[must_use]
    pub fn and(mut self, other: &Self) -> Self {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a &= b;
        }
        self
    }

    /// The union of two sets.
    #[must_use]
    pub fn or(mut self, other: &Self) -> Self {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
        self
    }

    /// The ids of `self` that are not in `other`.
    #[must_use]
    pub fn and_not(mut self, other: &Self) -> Self {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a &= !b;
        }
        self
    }

    /// Whether the two sets share an id.
    pub fn intersects(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }

    /// The lowest id in the set (the first action by name).
    pub fn first(&self) -> Option<ActionId> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| {
                // At most 1023: fits u16.
                ActionId((i * 64 + w.trailing_zeros() as usize) as u16)
            })
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ActionId> + use<> {
        let words = self.0;
        (0..WORDS).flat_map(move |i| {
            let word = words[i];
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(ActionId((i * 64 + bit) as u16))
            })
        })
    }
}

impl FromIterator<ActionId> for ActionSet {
    fn from_iter<T: IntoIterator<Item = ActionId>>(iter: T) -> Self {
        let mut set = Self::EMPTY;
        for id in iter {
            set.insert(id);
        }
        set
    }
}

impl fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|a| a.0)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a: ActionSet = [1, 64, 1023].into_iter().map(ActionId).collect();
        let b: ActionSet = [64, 5].into_iter().map(ActionId).collect();
        assert_eq!(a.len(), 3);
        assert!(a.contains(ActionId(1023)) && !a.contains(ActionId(2)));
        assert_eq!(a.and(&b).iter().collect::<Vec<_>>(), vec![ActionId(64)]);
        assert_eq!(a.or(&b).len(), 4);
        assert_eq!(
            a.and_not(&b).iter().collect::<Vec<_>>(),
            vec![ActionId(1), ActionId(1023)]
        );
        assert!(a.intersects(&b));
        assert_eq!(a.first(), Some(ActionId(1)));
        assert_eq!(ActionSet::EMPTY.first(), None);
        assert!(ActionSet::EMPTY.is_empty());
        assert_eq!(ActionSet::first_n(70).len(), 70);
        assert_eq!(ActionSet::first_n(5000).len(), MAX_ACTIONS);
        let mut c = ActionSet::EMPTY;
        c.insert(ActionId(4000));
        assert!(c.is_empty(), "out-of-range ids are ignored");
        assert_eq!(format!("{a:?}"), "{1, 64, 1023}");
    }
}
