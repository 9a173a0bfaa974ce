//! A bounded map of the heaviest keys: Space-Saving with batched eviction.
//!
//! Holds at most `capacity` keys. When a new key arrives and the map is full, the lighter
//! half of the entries (by estimated weight) is evicted at once, and the threshold weight
//! becomes the *floor*: every key inserted later starts with `overcount = floor`, an upper
//! bound on what it may have had while untracked (the Space-Saving invariant:
//! `seen ≤ true ≤ seen + overcount`). Evicting half at a time costs O(capacity) once per
//! capacity/2 inserts, so an update is amortised O(1) with no sorted structure to maintain.
//! Rules read `seen` counts (lower bounds), so sketching can only hide a client, never
//! invent one.

use std::collections::HashMap;
use std::hash::Hash;

/// Keys a new [`TopK`] has room for before it first grows.
pub const INITIAL_KEYS: usize = 1024;

/// A seeded, fast hasher for client maps (keys are attacker-chosen, so it is seeded).
pub type FastHash = foldhash::fast::RandomState;

/// What a [`TopK`] value must provide: a weight to rank by and room for the overcount.
pub trait Tally: Default {
    /// Estimated weight (seen + overcount), used to pick what to evict.
    fn estimate(&self) -> u64;
    /// Adds `n` to the value's overcount bound (a key inserted after evictions).
    fn add_overcount(&mut self, n: u64);
}

/// A bounded key → tally map keeping the heaviest keys (see the module docs).
#[derive(Debug, Clone)]
pub struct TopK<K, V> {
    map: HashMap<K, V, FastHash>,
    capacity: usize,
    floor: u64,
    evicted: u64,
    /// Reused buffer for the weights at eviction time.
    scratch: Vec<u64>,
    /// The entries of a frozen map (see [`TopK::freeze`]), sorted by key; `map` is then
    /// empty and unallocated. Empty otherwise.
    frozen: Box<[(K, V)]>,
    /// Finds a key in `frozen` (a binary search, set by `freeze`, which knows `K: Ord`).
    find: Finder<K, V>,
}

/// Finds a key's index in a frozen map's sorted entries.
type Finder<K, V> = fn(&[(K, V)], &K) -> Option<usize>;

fn not_found<K, V>(_: &[(K, V)], _: &K) -> Option<usize> {
    None
}

impl<K: Ord, V> TopK<K, V> {
    /// Stores the entries in a key-sorted array of exactly their size instead of the hash
    /// table (which holds at most 7/8 of a power of two of buckets: 1.1 to 2.3 times the
    /// room): for a map that will mostly be read from now on, like a closed window slice.
    /// Reads work on the array; the next [`TopK::entry`] or [`TopK::drain`] thaws it back.
    pub fn freeze(&mut self) {
        if self.map.is_empty() {
            return;
        }
        let mut entries: Vec<(K, V)> = self.map.drain().collect();
        entries.extend(std::mem::take(&mut self.frozen));
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.frozen = entries.into_boxed_slice();
        self.map = HashMap::with_hasher(FastHash::default());
        self.scratch = Vec::new();
        self.find = |entries, key| entries.binary_search_by(|(k, _)| k.cmp(key)).ok();
    }
}

impl<K: Hash + Eq, V: Tally> TopK<K, V> {
    /// An empty map holding at most `capacity` keys (at least 2). Memory grows with the keys
    /// actually held, from room for [`INITIAL_KEYS`] (a sidecar's map keeps its size across
    /// slices, draining keeps the allocation, so only its first slice grows). The
    /// collector's window slices use [`Self::unallocated`] instead: it keeps ~100 slices per
    /// namespace, and even [`INITIAL_KEYS`] of room in each cost ~30 MB per namespace
    /// whatever its traffic.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Self {
            map: HashMap::with_capacity_and_hasher(capacity.min(INITIAL_KEYS), FastHash::default()),
            capacity,
            floor: 0,
            evicted: 0,
            scratch: Vec::new(),
            frozen: Box::default(),
            find: not_found::<K, V>,
        }
    }

    /// Like [`Self::new`], without reserving room: for a map that may stay empty or small.
    pub fn unallocated(capacity: usize) -> Self {
        Self {
            map: HashMap::with_hasher(FastHash::default()),
            capacity: capacity.max(2),
            floor: 0,
            evicted: 0,
            scratch: Vec::new(),
            frozen: Box::default(),
            find: not_found::<K, V>,
        }
    }

    /// Whether the entries are frozen (see [`TopK::freeze`]).
    pub fn is_frozen(&self) -> bool {
        !self.frozen.is_empty()
    }

    /// Moves frozen entries back into the hash table.
    #[cold]
    fn thaw(&mut self) {
        let entries = std::mem::take(&mut self.frozen);
        self.map.reserve(entries.len());
        self.map.extend(entries);
        self.find = not_found::<K, V>;
    }

    /// The tally of `key`, inserting it (evicting the lighter half if full) when absent.
    #[inline]
    pub fn entry(&mut self, key: K) -> &mut V {
        if !self.frozen.is_empty() {
            self.thaw();
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.evict_lighter_half();
        }
        let floor = self.floor;
        self.map.entry(key).or_insert_with(|| {
            let mut v = V::default();
            if floor > 0 {
                v.add_overcount(floor);
            }
            v
        })
    }

    /// The tally of `key`, if tracked.
    pub fn get(&self, key: &K) -> Option<&V> {
        match (self.find)(&self.frozen, key) {
            Some(i) => Some(&self.frozen[i].1),
            None => self.map.get(key),
        }
    }

    /// Tracked keys and tallies, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map
            .iter()
            .chain(self.frozen.iter().map(|(k, v)| (k, v)))
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.map.len() + self.frozen.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.frozen.is_empty()
    }

    /// The maximum number of tracked keys.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Heap bytes held: the map's table (std's `HashMap` is hashbrown: a power-of-two number
    /// of buckets, each an entry and a control byte, plus one group of control bytes; it
    /// holds at most 7/8 of its buckets) and the eviction buffer. Keys' and values' own heap
    /// data is not included.
    pub fn heap_bytes(&self) -> usize {
        table_bytes::<K, V>(self.map.capacity())
            + self.scratch.capacity() * size_of::<u64>()
            + self.frozen.len() * size_of::<(K, V)>()
    }

    /// The current floor: an upper bound on the weight of any untracked key.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// How many keys were evicted since creation.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Removes every entry, keeping the allocation; resets floor and eviction count.
    pub fn clear(&mut self) {
        self.map.clear();
        self.frozen = Box::default();
        self.find = not_found::<K, V>;
        self.floor = 0;
        self.evicted = 0;
    }

    /// Moves all entries out, leaving the map empty (floor and eviction count reset).
    pub fn drain(&mut self) -> impl Iterator<Item = (K, V)> + '_ {
        if !self.frozen.is_empty() {
            self.thaw();
        }
        self.floor = 0;
        self.evicted = 0;
        self.map.drain()
    }

    #[cold]
    fn evict_lighter_half(&mut self) {
        let weights = &mut self.scratch;
        weights.clear();
        weights.extend(self.map.values().map(Tally::estimate));
        let mid = weights.len() / 2;
        let (_, threshold, _) = weights.select_nth_unstable(mid);
        let threshold = *threshold;
        let before = self.map.len();
        // Drained and refilled rather than `retain`ed: removing in place leaves tombstones
        // that use up the table's room, and the next inserts would then double it (8192
        // buckets for a 3584-key bound) although it never holds more than its bound. Draining
        // keeps the allocation and leaves every bucket empty; the kept half waits in a
        // buffer freed right after (evictions are rare: one per half-bound of new keys).
        let kept: Vec<(K, V)> = self
            .map
            .drain()
            .filter(|(_, v)| v.estimate() > threshold)
            .collect();
        self.map.extend(kept);
        self.evicted += (before - self.map.len()) as u64;
        self.floor = self.floor.max(threshold);
    }
}

/// Heap bytes of a hashbrown table (std `HashMap`) of `(K, V)` with room for `capacity`
/// entries: a power of two of buckets, each an entry and a control byte, plus one group of
/// control bytes; it holds at most 7/8 of its buckets.
pub(crate) fn table_bytes<K, V>(capacity: usize) -> usize {
    let buckets = match capacity {
        0 => return 0,
        1..=3 => 4,
        4..=7 => 8,
        _ => (capacity / 7 * 8).next_power_of_two(),
    };
    buckets * (size_of::<(K, V)>() + 1) + 16
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone)]
    struct Count {
        seen: u64,
        over: u64,
    }

    impl Tally for Count {
        fn estimate(&self) -> u64 {
            self.seen + self.over
        }
        fn add_overcount(&mut self, n: u64) {
            self.over += n;
        }
    }

    #[test]
    fn heap_bytes_follow_the_tables_buckets() {
        let entry = size_of::<(u32, Count)>() + 1;
        let mut top: TopK<u32, Count> = TopK::new(1 << 20);
        // Room for INITIAL_KEYS (1024) keys: 2048 buckets.
        assert_eq!(top.heap_bytes(), 2048 * entry + 16);
        for i in 0..1792u32 {
            top.entry(i).seen += 1;
        }
        assert_eq!(
            top.heap_bytes(),
            2048 * entry + 16,
            "7/8 of 2048 buckets still fit"
        );
        top.entry(1792).seen += 1;
        assert_eq!(
            top.heap_bytes(),
            4096 * entry + 16,
            "one more key doubles the table"
        );
        assert_eq!(TopK::<u32, Count>::new(2).heap_bytes(), 4 * entry + 16);
    }

    #[test]
    fn an_unallocated_map_reserves_nothing_until_used() {
        let mut top: TopK<u32, Count> = TopK::unallocated(3584);
        assert_eq!((top.heap_bytes(), top.capacity()), (0, 3584));
        top.entry(7).seen += 1;
        assert_eq!(top.get(&7).map(|c| c.seen), Some(1));
        assert!(top.heap_bytes() > 0);
    }

    #[test]
    fn evictions_never_grow_the_table_beyond_its_bound() {
        // A bound of 7/8 of 4096 fits 4096 buckets; churn through many more keys.
        let mut top: TopK<u32, Count> = TopK::new(3584);
        for i in 0..200_000u32 {
            top.entry(i).seen += u64::from(i % 7);
        }
        let entry = size_of::<(u32, Count)>() + 1;
        assert!(
            top.heap_bytes() <= 4096 * entry + 16 + 3584 * 8,
            "{} bytes",
            top.heap_bytes()
        );
    }

    #[test]
    fn never_exceeds_capacity_and_keeps_heavy_hitters() {
        let mut top: TopK<u32, Count> = TopK::new(64);
        // Three heavy hitters among 100k one-off keys.
        for i in 0..100_000u32 {
            top.entry(i + 1000).seen += 1;
            if i % 10 == 0 {
                for heavy in 0..3 {
                    top.entry(heavy).seen += 1;
                }
            }
            assert!(top.len() <= 64);
        }
        for heavy in 0..3 {
            let c = top.get(&heavy).expect("heavy hitter kept");
            // Space-Saving bound: seen ≤ true ≤ seen + overcount.
            assert!(c.seen <= 10_000 && 10_000 <= c.seen + c.over, "{c:?}");
        }
        assert!(top.evicted() > 0);
    }

    #[test]
    fn exact_below_capacity() {
        let mut top: TopK<u32, Count> = TopK::new(8);
        for i in 0..8u32 {
            top.entry(i).seen += u64::from(i);
        }
        assert_eq!(top.floor(), 0);
        assert_eq!(top.get(&7).unwrap().seen, 7);
        assert_eq!(top.get(&7).unwrap().over, 0);
    }

    #[test]
    fn a_frozen_map_reads_the_same_and_thaws_on_write() {
        let mut top: TopK<u32, Count> = TopK::new(8);
        for k in 0..20u32 {
            top.entry(k % 12).seen += u64::from(k);
        }
        let (floor, evicted) = (top.floor(), top.evicted());
        let mut before: Vec<(u32, u64, u64)> =
            top.iter().map(|(k, v)| (*k, v.seen, v.over)).collect();
        before.sort_unstable();
        let table = top.heap_bytes();
        top.freeze();
        assert!(top.is_frozen());
        assert!(
            top.heap_bytes() < table,
            "an exact-size array is smaller than the table"
        );
        let mut frozen: Vec<(u32, u64, u64)> =
            top.iter().map(|(k, v)| (*k, v.seen, v.over)).collect();
        frozen.sort_unstable();
        assert_eq!(frozen, before);
        assert_eq!(top.len(), before.len());
        for (k, seen, _) in &before {
            assert_eq!(top.get(k).map(|v| v.seen), Some(*seen));
        }
        assert!(top.get(&99).is_none());
        // A write thaws it, with the same floor and eviction count.
        top.entry(99).seen += 1;
        assert!(!top.is_frozen());
        assert_eq!((top.floor(), top.evicted()), (floor, evicted));
        assert_eq!(
            top.get(&99).unwrap().over,
            floor,
            "a new key still gets the floor"
        );
        assert_eq!(top.len(), before.len() + 1);
    }
}
