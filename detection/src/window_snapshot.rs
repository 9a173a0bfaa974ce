//! A compact, serialisable copy of one namespace's windows, so window state survives an
//! operator restart or a leader change (the operator stores it, e.g. in a ConfigMap it owns;
//! compress it first, JSON of counters compresses well).
//!
//! The snapshot holds every live slice of both rings and the duplicate-detection memory, so
//! a report merged before the restart and re-sent after it is still recognised. A snapshot
//! taken with other slice lengths than the current configuration is ignored (the windows
//! restart empty) rather than misread.

use std::collections::{HashMap, VecDeque};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{AttrTally, Ring, Slice, WindowConfig, Windows};
use crate::client_id::KeyTable;
use crate::report::{AttrEntry, ClientEntry};
use crate::stats::Totals;
use crate::topk::TopK;

/// The snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 1;

/// One slice of a ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceSnapshot {
    /// Slice number (start time / slice length).
    pub epoch: i64,
    /// Exact totals.
    pub totals: Totals,
    /// Tracked clients.
    pub clients: Vec<ClientEntry>,
    /// Sampled attributes (long ring only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttrEntry>,
}

/// One pod's recently merged reports (`seq`, `start`), for duplicate detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSnapshot {
    /// Pod name.
    pub pod: String,
    /// Recently merged reports, oldest first.
    pub seen: Vec<(u64, Timestamp)>,
}

/// A serialisable copy of a namespace's [`Windows`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowsSnapshot {
    /// Format version ([`SNAPSHOT_VERSION`]).
    pub version: u32,
    /// Short slice length.
    pub short_slice: SignedDuration,
    /// Long slice length.
    pub long_slice: SignedDuration,
    /// Short ring slices.
    pub short: Vec<SliceSnapshot>,
    /// Long ring slices.
    pub long: Vec<SliceSnapshot>,
    /// Duplicate-detection memory.
    pub pods: Vec<PodSnapshot>,
    /// Advanced Anomaly's baseline (absent in snapshots of older operators, and when left
    /// out to fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seasonal: Option<crate::seasonal::Seasonal>,
}

impl WindowsSnapshot {
    /// Puts each slice's clients (by key) and attributes (by client, dimension, value) in
    /// order, as [`Windows::snapshot`] returns them.
    pub fn sort(&mut self) {
        for s in self.short.iter_mut().chain(self.long.iter_mut()) {
            s.clients.sort_unstable_by_key(|e| e.key);
            s.attributes.sort_unstable_by(|a, b| {
                (a.client, a.dim, &a.value).cmp(&(b.client, b.dim, &b.value))
            });
        }
    }
}

impl Windows {
    /// A snapshot of the slices still live at `now` and of the duplicate memory, in order
    /// (see [`WindowsSnapshot::sort`]).
    pub fn snapshot(&self, now: Timestamp) -> WindowsSnapshot {
        let mut snap = self.snapshot_unsorted(now);
        snap.sort();
        snap
    }

    /// Like [`Self::snapshot`], with each slice's clients and attributes in table order: a
    /// plain copy, for a caller that holds a lock now and sorts later (at the bound of 106
    /// slices of 20,000 clients, sorting is most of the cost).
    pub fn snapshot_unsorted(&self, now: Timestamp) -> WindowsSnapshot {
        let mut pods: Vec<PodSnapshot> = self
            .seen
            .iter()
            .map(|(pod, seen)| PodSnapshot {
                pod: pod.clone(),
                seen: seen.iter().copied().collect(),
            })
            .collect();
        pods.sort_by(|a, b| a.pod.cmp(&b.pod));
        WindowsSnapshot {
            version: SNAPSHOT_VERSION,
            short_slice: SignedDuration::from_secs(self.short.slice_secs),
            long_slice: SignedDuration::from_secs(self.long.slice_secs),
            short: ring_snapshot(&self.short, now, &self.keys),
            long: ring_snapshot(&self.long, now, &self.keys),
            pods,
            seasonal: self.seasonal.clone(),
        }
    }

    /// Windows shaped by `cfg`, filled from `snap` when its version and slice lengths match.
    pub fn restore(cfg: &WindowConfig, snap: &WindowsSnapshot) -> Windows {
        let mut w = Windows::new(cfg);
        let same_shape = snap.version == SNAPSHOT_VERSION
            && snap.short_slice.as_secs() == w.short.slice_secs
            && snap.long_slice.as_secs() == w.long.slice_secs;
        if !same_shape {
            return w;
        }
        restore_ring(&mut w.short, &snap.short, &mut w.keys);
        restore_ring(&mut w.long, &snap.long, &mut w.keys);
        w.sweep_keys();
        w.seasonal = snap.seasonal.clone();
        w.seen = snap
            .pods
            .iter()
            .map(|p| {
                (
                    p.pod.clone(),
                    p.seen.iter().copied().collect::<VecDeque<_>>(),
                )
            })
            .collect::<HashMap<_, _>>();
        w
    }
}

fn ring_snapshot(ring: &Ring, now: Timestamp, keys: &KeyTable) -> Vec<SliceSnapshot> {
    let mut out: Vec<SliceSnapshot> = ring
        .live(now)
        .map(|s| {
            let clients: Vec<ClientEntry> = s
                .clients
                .iter()
                .map(|(id, c)| ClientEntry {
                    key: keys.key(*id),
                    counts: *c,
                })
                .collect();
            let attributes: Vec<AttrEntry> = s
                .attrs
                .iter()
                .flat_map(TopK::iter)
                .map(|((client, dim, value), t)| AttrEntry {
                    client: keys.key(*client),
                    dim: *dim,
                    value: value.to_string(),
                    count: t.count,
                })
                .collect();
            SliceSnapshot {
                epoch: s.epoch,
                totals: s.totals,
                clients,
                attributes,
            }
        })
        .collect();
    out.sort_by_key(|s| s.epoch);
    out
}

fn restore_ring(ring: &mut Ring, slices: &[SliceSnapshot], keys: &mut KeyTable) {
    let n = ring.slots.len() as i64;
    ring.closed.get_mut().clear();
    for snap in slices {
        let mut slice = Slice {
            epoch: snap.epoch,
            totals: snap.totals,
            clients: TopK::unallocated(ring.max_clients),
            attrs: ring.max_attrs.map(TopK::unallocated),
            failing: Default::default(),
        };
        for e in &snap.clients {
            slice.clients.entry(keys.intern(&e.key)).merge(&e.counts);
        }
        if let Some(attrs) = &mut slice.attrs {
            for a in &snap.attributes {
                let id = keys.intern(&a.client);
                let tally: &mut AttrTally = attrs.entry((id, a.dim, a.value.as_str().into()));
                tally.count += a.count;
            }
        }
        let pos = snap.epoch.rem_euclid(n) as usize;
        if ring.slots[pos]
            .as_ref()
            .is_none_or(|s| s.epoch < snap.epoch)
        {
            ring.slots[pos] = Some(slice);
        }
    }
    if let Some(newest) = ring.slots.iter().flatten().map(|s| s.epoch).max() {
        ring.freeze_before(newest);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stats::AttrDim;
    use crate::testutil::{ipk, report, reqs, t};
    use crate::window::MergeOutcome;

    #[test]
    fn restored_windows_equal_the_original_and_remember_duplicates() {
        let cfg = WindowConfig::default();
        let mut w = Windows::new(&cfg);
        let mut r = report("a", 1, 0, &[(ipk(1), reqs(10)), (ipk(2), reqs(3))]);
        r.attributes.push(AttrEntry {
            client: ipk(1),
            dim: AttrDim::Path,
            value: "/x".into(),
            count: 8,
        });
        w.merge(&r, t(1));
        w.merge(&report("a", 2, 1_000, &[(ipk(1), reqs(5))]), t(1_001));
        let snap = w.snapshot(t(1_001));
        let json = serde_json::to_string(&snap).unwrap();
        let back: WindowsSnapshot = serde_json::from_str(&json).unwrap();
        let mut restored = Windows::restore(&cfg, &back);
        assert_eq!(restored.short(t(1_001)), w.short(t(1_001)));
        assert_eq!(restored.long(t(1_001)), w.long(t(1_001)));
        assert_eq!(
            restored.attributes(&[ipk(1)], t(1_001), 5),
            w.attributes(&[ipk(1)], t(1_001), 5)
        );
        assert_eq!(restored.merge(&r, t(1_002)), MergeOutcome::Duplicate);
        assert_eq!(
            restored.snapshot(t(1_001)),
            snap,
            "snapshots are deterministic"
        );
    }

    /// The copy taken under the collector's lock, sorted later, is the snapshot.
    #[test]
    fn an_unsorted_snapshot_sorted_later_is_the_snapshot() {
        let cfg = WindowConfig::default();
        let mut w = Windows::new(&cfg);
        let clients: Vec<_> = (0..200).rev().map(|i| (ipk(i), reqs(i + 1))).collect();
        let mut r = report("a", 1, 0, &clients);
        for (i, value) in ["/b", "/a", "/c"].into_iter().enumerate() {
            r.attributes.push(AttrEntry {
                client: ipk(7 - i as u32),
                dim: AttrDim::Path,
                value: value.into(),
                count: 1,
            });
        }
        w.merge(&r, t(1));
        let mut unsorted = w.snapshot_unsorted(t(2));
        let sorted = w.snapshot(t(2));
        let keys =
            |s: &WindowsSnapshot| s.short[0].clients.iter().map(|c| c.key).collect::<Vec<_>>();
        assert!(keys(&sorted).is_sorted());
        unsorted.sort();
        assert_eq!(unsorted, sorted);
    }

    #[test]
    fn a_snapshot_written_before_sequential_counts_still_restores() {
        let cfg = WindowConfig::default();
        let mut w = Windows::new(&cfg);
        w.merge(&report("a", 1, 0, &[(ipk(1), reqs(10))]), t(1));
        let json = serde_json::to_string(&w.snapshot(t(1))).unwrap();
        assert!(!json.contains("sequential"), "{json}");
        let old: WindowsSnapshot = serde_json::from_str(&json).unwrap();
        let restored = Windows::restore(&cfg, &old);
        let view = restored.long(t(1));
        assert_eq!(view.clients[&ipk(1)].totals.requests, 10);
        assert_eq!(view.clients[&ipk(1)].sequential, 0);
        // And the new field survives a snapshot.
        let mut counts = reqs(10);
        counts.sequential = 7;
        let mut w = Windows::new(&cfg);
        w.merge(&report("a", 1, 0, &[(ipk(1), counts)]), t(1));
        let back: WindowsSnapshot =
            serde_json::from_str(&serde_json::to_string(&w.snapshot(t(1))).unwrap()).unwrap();
        let restored = Windows::restore(&cfg, &back);
        assert_eq!(restored.long(t(1)).clients[&ipk(1)].sequential, 7);
    }

    #[test]
    fn a_snapshot_of_another_shape_is_ignored() {
        let mut w = Windows::new(&WindowConfig::default());
        w.merge(&report("a", 1, 0, &[(ipk(1), reqs(10))]), t(1));
        let snap = w.snapshot(t(1));
        let other = WindowConfig {
            short_slice: SignedDuration::from_secs(10),
            ..Default::default()
        };
        let restored = Windows::restore(&other, &snap);
        assert_eq!(restored.long(t(1)).totals.requests, 0);
    }
}
