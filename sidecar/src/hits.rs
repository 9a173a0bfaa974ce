//! Per-action request counts: what each SecurityAction of the bundle in force matched, would
//! have matched in Observe mode, and decided. The request path bumps relaxed atomics indexed
//! by the action's id (no lock, no allocation, no map lookup); the counting task takes them
//! every report interval and sends them with the window summary, by action name.
//!
//! The counts belong to one bundle ([`crate::store::Loaded`]): when a new bundle replaces it,
//! requests still running on the old one keep counting there, and what the old bundle counted
//! since the last take moves to the store's retired counts when its last user lets go of it
//! (`Drop`), so a bundle swap loses no count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use palisade_detection::report::ActionCount;
use palisade_policy::{ActionId, ActionSet};

/// Counts of actions that are no longer in force, by name, waiting for the next report.
pub type Retired = Arc<Mutex<BTreeMap<String, ActionCount>>>;

/// One action's counters.
#[derive(Debug, Default)]
struct Slot {
    matched: AtomicU64,
    observed: AtomicU64,
    decided: AtomicU64,
}

/// The counters of one bundle's actions, indexed by [`ActionId`].
#[derive(Debug)]
pub struct ActionHits {
    names: Vec<String>,
    slots: Box<[Slot]>,
    retired: Retired,
}

impl ActionHits {
    /// Counters for actions `names` (in `ActionId` order); what is left at drop goes to
    /// `retired`.
    pub fn new(names: Vec<String>, retired: Retired) -> Self {
        let slots = names.iter().map(|_| Slot::default()).collect();
        Self {
            names,
            slots,
            retired,
        }
    }

    /// Each action of `set` matched the request.
    pub fn matched(&self, set: &ActionSet) {
        self.bump(set, |s| &s.matched);
    }

    /// Each action of `set` would have matched the request (Observe).
    pub fn observed(&self, set: &ActionSet) {
        self.bump(set, |s| &s.observed);
    }

    /// Each action of `set` decided the request.
    pub fn decided(&self, set: &ActionSet) {
        self.bump(set, |s| &s.decided);
    }

    /// Action `id` decided the request.
    pub fn decided_one(&self, id: ActionId) {
        if let Some(s) = self.slots.get(id.index()) {
            s.decided.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn bump(&self, set: &ActionSet, field: impl Fn(&Slot) -> &AtomicU64) {
        if set.is_empty() {
            return;
        }
        for id in set.iter() {
            if let Some(s) = self.slots.get(id.index()) {
                field(s).fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Moves the counts since the last take into `out` (adding to what is there).
    pub fn take_into(&self, out: &mut BTreeMap<String, ActionCount>) {
        for (name, s) in self.names.iter().zip(self.slots.iter()) {
            let c = ActionCount {
                name: String::new(),
                matched: s.matched.swap(0, Ordering::Relaxed),
                observed: s.observed.swap(0, Ordering::Relaxed),
                decided: s.decided.swap(0, Ordering::Relaxed),
            };
            if !c.is_empty() {
                add(out, name, &c);
            }
        }
    }
}

impl Drop for ActionHits {
    fn drop(&mut self) {
        let mut left = BTreeMap::new();
        self.take_into(&mut left);
        if left.is_empty() {
            return;
        }
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, c) in &left {
            add(&mut retired, name, c);
        }
    }
}

fn add(out: &mut BTreeMap<String, ActionCount>, name: &str, c: &ActionCount) {
    out.entry(name.to_owned())
        .or_insert_with(|| ActionCount {
            name: name.to_owned(),
            ..ActionCount::default()
        })
        .add(c);
}

/// Takes the retired counts and those of `current` (when given) since the last take, by
/// action name.
pub fn take(retired: &Retired, current: Option<&ActionHits>) -> Vec<ActionCount> {
    let mut out = BTreeMap::new();
    if let Some(h) = current {
        h.take_into(&mut out);
    }
    let old = std::mem::take(&mut *retired.lock().unwrap_or_else(PoisonError::into_inner));
    for (name, c) in &old {
        add(&mut out, name, c);
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u16]) -> ActionSet {
        ids.iter().map(|i| ActionId(*i)).collect()
    }

    #[test]
    fn counts_by_name_and_each_take_starts_from_zero() {
        let retired = Retired::default();
        let h = ActionHits::new(vec!["a".into(), "b".into()], retired.clone());
        h.matched(&set(&[0, 1]));
        h.matched(&set(&[0]));
        h.observed(&set(&[1]));
        h.decided_one(ActionId(0));
        h.decided_one(ActionId(9)); // not an action of this bundle: ignored
        let got = take(&retired, Some(&h));
        assert_eq!(
            got,
            [
                ActionCount {
                    name: "a".into(),
                    matched: 2,
                    observed: 0,
                    decided: 1
                },
                ActionCount {
                    name: "b".into(),
                    matched: 1,
                    observed: 1,
                    decided: 0
                },
            ]
        );
        assert!(take(&retired, Some(&h)).is_empty(), "taken once");
    }

    #[test]
    fn a_replaced_bundle_hands_over_what_it_counted_when_dropped() {
        let retired = Retired::default();
        let old = Arc::new(ActionHits::new(vec!["deny".into()], retired.clone()));
        let in_flight = old.clone();
        let new = ActionHits::new(vec!["deny".into(), "flag".into()], retired.clone());
        old.matched(&set(&[0]));
        drop(old);
        // A request still running on the old bundle counts there.
        in_flight.matched(&set(&[0]));
        in_flight.decided(&set(&[0]));
        drop(in_flight);
        new.matched(&set(&[0, 1]));
        let got = take(&retired, Some(&new));
        let deny = got.iter().find(|c| c.name == "deny").expect("deny");
        assert_eq!((deny.matched, deny.decided), (3, 1));
        let flag = got.iter().find(|c| c.name == "flag").expect("flag");
        assert_eq!(flag.matched, 1);
        assert!(take(&retired, None).is_empty());
    }
}
