//! The compiled IP prefix set shared by every action of a bundle.
//!
//! All sources (each action's inline prefixes, each referenced list *once*, however many
//! actions use it) are swept into sorted, disjoint `[start, end]` ranges per family. Each range
//! carries a small *class* id; a class is the set of actions whose IP condition covers the
//! range. A list shared by ten actions is stored once, with one class.
//!
//! Lookup is a DIR-n index over the top `n` bits (2^n + 1 `u32` offsets) that narrows the
//! search to one bucket: a few cache misses. `n` grows with the set, from 16 to 20 bits, so a
//! bucket holds about four ranges or fewer on average (one or two cache lines to scan). The
//! index skips the leading bits all ranges share (IPv6 lists live in 2000::/3), so its buckets
//! stay small. Memory is 8 bytes per IPv4 range (start, end) plus 2 for a class when the set
//! holds several classes and no one class covers seven ranges in eight (otherwise one bit
//! per range and 8 bytes for each range of another class), plus the index: 256 KiB up to
//! 262,144 ranges, then about one byte per range (4 bytes per bucket of four), at most 4 MiB;
//! IPv6 ranges take 32 (+2) bytes.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::IpAddr;

use crate::actionset::ActionId;
use crate::lists::PrefixList;

/// An address family's integer (`u32` for IPv4, `u128` for IPv6).
pub trait Addr: Copy + Ord + Debug + Default + Send + Sync + 'static {
    /// Width in bits.
    const BITS: u32;
    /// The bucket of a DIR-`bits` index: the `bits` bits after the first `skip` bits
    /// (`skip <= BITS - bits`).
    fn bucket(self, skip: u32, bits: u32) -> usize;
    /// The first `skip` bits, as a number (0 when `skip` is 0).
    fn head(self, skip: u32) -> Self;
    /// How many leading bits `self` and `other` share.
    fn common_bits(self, other: Self) -> u32;
    /// `self + 1`, or `None` at the top of the space.
    fn succ(self) -> Option<Self>;
    /// `self - 1`, or `None` at zero.
    fn pred(self) -> Option<Self>;
    /// Widens to `u128` (for the wire encoding).
    fn to_u128(self) -> u128;
    /// Narrows from `u128`; `None` if out of range.
    fn from_u128(v: u128) -> Option<Self>;
}

impl Addr for u32 {
    const BITS: u32 = 32;
    fn bucket(self, skip: u32, bits: u32) -> usize {
        ((self << skip) >> (32 - bits)) as usize
    }
    fn head(self, skip: u32) -> Self {
        self.checked_shr(32 - skip).unwrap_or(0)
    }
    fn common_bits(self, other: Self) -> u32 {
        (self ^ other).leading_zeros()
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<Self> {
        self.checked_sub(1)
    }
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    fn from_u128(v: u128) -> Option<Self> {
        u32::try_from(v).ok()
    }
}

impl Addr for u128 {
    const BITS: u32 = 128;
    fn bucket(self, skip: u32, bits: u32) -> usize {
        ((self << skip) >> (128 - bits)) as usize
    }
    fn head(self, skip: u32) -> Self {
        self.checked_shr(128 - skip).unwrap_or(0)
    }
    fn common_bits(self, other: Self) -> u32 {
        (self ^ other).leading_zeros()
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Option<Self> {
        self.checked_sub(1)
    }
    fn to_u128(self) -> u128 {
        self
    }
    fn from_u128(v: u128) -> Option<Self> {
        Some(v)
    }
}

/// Buckets up to this many ranges are scanned rather than binary-searched.
const SCAN_MAX: usize = 32;

/// Below this many ranges the index is not built (a plain binary search is as fast).
const INDEX_MIN_RANGES: usize = 256;
/// A set keeps one class and a list of exceptions instead of a class per range when at most
/// one range in this many has another class.
const EXCEPTIONS_PER_RANGE: usize = 8;

/// The most common of `classes` (the smallest of equals), `None` when there is none.
fn dominant(classes: &[u16]) -> Option<u16> {
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for &c in classes {
        *counts.entry(c).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(c, n)| (n, std::cmp::Reverse(c)))
        .map(|(c, _)| c)
}

/// Index bits: at least 16 (256 KiB), at most 20 (4 MiB).
const INDEX_BITS: std::ops::RangeInclusive<u32> = 16..=20;

/// Ranges per bucket the index is sized for, on average.
const RANGES_PER_BUCKET: usize = 4;

/// The index bits for `n` ranges: the fewest that give [`RANGES_PER_BUCKET`] ranges or fewer
/// per bucket, within [`INDEX_BITS`].
fn index_bits(n: usize) -> u32 {
    let buckets = n.div_ceil(RANGES_PER_BUCKET).max(1);
    let bits = usize::BITS - (buckets - 1).leading_zeros();
    bits.clamp(*INDEX_BITS.start(), *INDEX_BITS.end())
}

/// Sorted disjoint ranges of one family, each with a class id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet<A: Addr> {
    /// `(start, end)` inclusive, sorted, disjoint. Interleaved so that the scan of a bucket
    /// also loads the end it checks.
    bounds: Vec<(A, A)>,
    /// Per-range classes; empty when every range has the class `uniform` (the common case of
    /// one list), which saves 2 bytes and a cache miss per lookup, or when nearly every range
    /// has it (a big list and a few actions' own ranges): then `exceptions` holds the others.
    classes: Vec<u16>,
    uniform: u16,
    /// `(range index, class)` of the ranges whose class is not `uniform`, by index; only when
    /// `classes` is empty.
    exceptions: Vec<(u32, u16)>,
    /// One bit per range, set for the ranges in `exceptions`: a match on the dominant class
    /// (nearly all of them) costs one bit, not a search of the exceptions.
    exception_bits: Vec<u64>,
    /// `index[b]` = number of ranges whose start lies below bucket `b`; 2^`bits` + 1
    /// entries.
    index: Vec<u32>,
    /// Bits the index resolves (see [`index_bits`]).
    bits: u32,
    /// Leading bits shared by every start, skipped by the index (e.g. 3 for IPv6 in 2000::/3).
    skip: u32,
    /// Those shared bits.
    head: A,
}

/// Why a sequence of ranges cannot form a [`RangeSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// A range ends before it starts.
    Inverted,
    /// A range starts at or before the end of the previous one.
    Unsorted,
}

impl<A: Addr> RangeSet<A> {
    /// Builds a set from ranges sorted by start and disjoint; checks both.
    pub fn from_sorted(ranges: impl IntoIterator<Item = (A, A, u16)>) -> Result<Self, RangeError> {
        let iter = ranges.into_iter();
        let mut set = Self::with_capacity(iter.size_hint().0);
        for (s, e, c) in iter {
            set.push(s, e, c)?;
        }
        Ok(set.finish())
    }

    fn with_capacity(n: usize) -> Self {
        Self {
            bounds: Vec::with_capacity(n),
            classes: Vec::with_capacity(n),
            uniform: 0,
            exceptions: Vec::new(),
            exception_bits: Vec::new(),
            index: Vec::new(),
            bits: 0,
            skip: 0,
            head: A::default(),
        }
    }

    fn push(&mut self, start: A, end: A, class: u16) -> Result<(), RangeError> {
        if end < start {
            return Err(RangeError::Inverted);
        }
        if self.bounds.last().is_some_and(|&(_, prev)| start <= prev) {
            return Err(RangeError::Unsorted);
        }
        self.bounds.push((start, end));
        self.classes.push(class);
        Ok(())
    }

    fn finish(mut self) -> Self {
        self.bounds.shrink_to_fit();
        if let Some(c) = dominant(&self.classes) {
            let others = self.classes.iter().filter(|&&x| x != c).count();
            // An exception takes 8 bytes where a per-range class takes 2 for every range.
            if others.saturating_mul(EXCEPTIONS_PER_RANGE) <= self.classes.len() {
                self.uniform = c;
                self.exceptions = self
                    .classes
                    .iter()
                    .enumerate()
                    .filter(|&(_, &x)| x != c)
                    // The number of ranges fits u32: more would not fit a bundle.
                    .map(|(i, &x)| (i as u32, x))
                    .collect();
                self.exceptions.shrink_to_fit();
                if !self.exceptions.is_empty() {
                    self.exception_bits = vec![0; self.classes.len().div_ceil(64)];
                    for &(i, _) in &self.exceptions {
                        self.exception_bits[i as usize / 64] |= 1 << (i % 64);
                    }
                }
                self.classes = Vec::new();
            }
        }
        self.classes.shrink_to_fit();
        if self.bounds.len() >= INDEX_MIN_RANGES {
            let (first, last) = (self.bounds[0].0, self.bounds[self.bounds.len() - 1].0);
            self.bits = index_bits(self.bounds.len());
            self.skip = first.common_bits(last).min(A::BITS - self.bits);
            self.head = first.head(self.skip);
            let buckets = 1usize << self.bits;
            let mut index = Vec::with_capacity(buckets + 1);
            let mut i = 0usize;
            for b in 0..=buckets {
                while i < self.bounds.len() && self.bounds[i].0.bucket(self.skip, self.bits) < b {
                    i += 1;
                }
                // The number of ranges fits u32: more would not fit a bundle.
                index.push(i as u32);
            }
            self.index = index;
        }
        self
    }

    /// The class of the range containing `addr`, if any.
    #[inline]
    pub fn lookup(&self, addr: A) -> Option<u16> {
        let n = self.bounds.len();
        let (lo, hi) = if self.index.is_empty() {
            (0, n)
        } else {
            let head = addr.head(self.skip);
            if head < self.head {
                return None;
            } else if head > self.head {
                (n - 1, n)
            } else {
                let b = addr.bucket(self.skip, self.bits);
                (self.index[b] as usize, self.index[b + 1] as usize)
            }
        };
        let bucket = &self.bounds[lo..hi];
        // Small buckets: a branch-free count over adjacent cache lines, whose loads overlap;
        // large ones (clustered lists): binary search.
        let k = lo
            + if bucket.len() <= SCAN_MAX {
                bucket.iter().filter(|&&(s, _)| s <= addr).count()
            } else {
                bucket.partition_point(|&(s, _)| s <= addr)
            };
        let i = k.checked_sub(1)?;
        (self.bounds[i].1 >= addr).then(|| self.class(i))
    }

    #[inline]
    fn class(&self, i: usize) -> u16 {
        if !self.classes.is_empty() {
            self.classes[i]
        } else if self.exception_bits.is_empty()
            || self.exception_bits[i / 64] & (1 << (i % 64)) == 0
        {
            self.uniform
        } else {
            // Only an exception gets here.
            match self
                .exceptions
                .binary_search_by_key(&i, |&(j, _)| j as usize)
            {
                Ok(k) => self.exceptions[k].1,
                Err(_) => self.uniform,
            }
        }
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Whether the set holds no range.
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// The ranges `(start, end, class)` in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (A, A, u16)> + '_ {
        self.bounds
            .iter()
            .enumerate()
            .map(|(i, &(s, e))| (s, e, self.class(i)))
    }

    /// How the classes are kept: `Some((class, exceptions))` when the set keeps the class
    /// that (nearly) every range has once, with `exceptions` ranges of other classes listed
    /// apart; `None` when each range keeps its own class (or the set is empty).
    pub fn shared_class(&self) -> Option<(u16, usize)> {
        (!self.bounds.is_empty() && self.classes.is_empty())
            .then_some((self.uniform, self.exceptions.len()))
    }

    /// Heap bytes used, index included.
    pub fn heap_bytes(&self) -> usize {
        self.bounds.capacity() * size_of::<(A, A)>()
            + self.classes.capacity() * 2
            + self.exceptions.capacity() * size_of::<(u32, u16)>()
            + self.exception_bits.capacity() * 8
            + self.index.capacity() * 4
    }
}

/// Both families plus the class table: the IP conditions of every action of a bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    /// IPv4 ranges.
    pub v4: RangeSet<u32>,
    /// IPv6 ranges.
    pub v6: RangeSet<u128>,
    /// Class id → the sorted ids of the actions whose IP condition covers the range.
    pub classes: Vec<Vec<ActionId>>,
}

impl IpSet {
    /// The class of the range containing `ip`.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<u16> {
        match ip {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.lookup(u32::from(v4)),
                None => self.v6.lookup(u128::from(a)),
            },
        }
    }

    /// The actions whose IP condition covers `ip`.
    pub fn actions_for(&self, ip: IpAddr) -> &[ActionId] {
        self.lookup(ip)
            .and_then(|c| self.classes.get(usize::from(c)))
            .map_or(&[], Vec::as_slice)
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes()
            + self.v6.heap_bytes()
            + self
                .classes
                .iter()
                .map(|c| c.capacity() * 2 + 24)
                .sum::<usize>()
    }
}

/// Too many distinct combinations of actions share ranges (more than 65,535).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyClasses;

/// Collects sources (a prefix list and the actions that use it) and sweeps them into an
/// [`IpSet`].
#[derive(Debug, Default)]
pub struct IpSetBuilder<'a> {
    sources: Vec<(&'a PrefixList, Vec<ActionId>)>,
}

impl<'a> IpSetBuilder<'a> {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source used by `owners`. Add each shared list once, with all its owners.
    pub fn add(&mut self, list: &'a PrefixList, owners: Vec<ActionId>) {
        if !list.is_empty() && !owners.is_empty() {
            self.sources.push((list, owners));
        }
    }

    /// Sweeps the sources into disjoint ranges with classes.
    pub fn build(self) -> Result<IpSet, TooManyClasses> {
        let mut classes = Classes::new(&self.sources);
        let v4 = sweep(&self.sources, |l| &l.v4, &mut classes)?;
        let v6 = sweep(&self.sources, |l| &l.v6, &mut classes)?;
        Ok(IpSet {
            v4,
            v6,
            classes: classes.actions,
        })
    }
}

/// Interns source sets, then action sets, into class ids.
struct Classes<'s, 'a> {
    sources: &'s [(&'a PrefixList, Vec<ActionId>)],
    by_sources: HashMap<Vec<u32>, u16>,
    by_actions: HashMap<Vec<ActionId>, u16>,
    actions: Vec<Vec<ActionId>>,
}

impl<'s, 'a> Classes<'s, 'a> {
    fn new(sources: &'s [(&'a PrefixList, Vec<ActionId>)]) -> Self {
        Self {
            sources,
            by_sources: HashMap::new(),
            by_actions: HashMap::new(),
            actions: vec![],
        }
    }

    fn class_of(&mut self, active: &[u32]) -> Result<u16, TooManyClasses> {
        if let Some(&c) = self.by_sources.get(active) {
            return Ok(c);
        }
        let mut owners: Vec<ActionId> = active
            .iter()
            .flat_map(|&s| self.sources[s as usize].1.iter().copied())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        let class = match self.by_actions.get(&owners) {
            Some(&c) => c,
            None => {
                let c = u16::try_from(self.actions.len()).map_err(|_| TooManyClasses)?;
                self.by_actions.insert(owners.clone(), c);
                self.actions.push(owners);
                c
            }
        };
        self.by_sources.insert(active.to_vec(), class);
        Ok(class)
    }
}

fn sweep<A: Addr>(
    sources: &[(&PrefixList, Vec<ActionId>)],
    ranges_of: impl Fn(&PrefixList) -> &Vec<(A, A)>,
    classes: &mut Classes<'_, '_>,
) -> Result<RangeSet<A>, TooManyClasses> {
    let mut out = Emitter::<A>::default();
    let used: Vec<u32> = (0..sources.len() as u32)
        .filter(|&s| !ranges_of(sources[s as usize].0).is_empty())
        .collect();
    if let [only] = used[..] {
        // One source: its ranges are already disjoint; no sweep needed.
        let class = classes.class_of(&[only])?;
        for &(s, e) in ranges_of(sources[only as usize].0) {
            out.emit(s, e, class);
        }
        return Ok(out.set.finish());
    }
    // Events: (position, 0 = start | 1 = end (inclusive), source).
    let mut events: Vec<(A, u8, u32)> = Vec::new();
    for &s in &used {
        for &(a, b) in ranges_of(sources[s as usize].0) {
            events.push((a, 0, s));
            events.push((b, 1, s));
        }
    }
    events.sort_unstable();
    let mut active: Vec<u32> = Vec::new();
    let mut seg_start: Option<A> = None;
    for (pos, kind, src) in events {
        if kind == 0 {
            if let (Some(ss), false) = (seg_start, active.is_empty())
                && ss < pos
                && let Some(end) = pos.pred()
            {
                out.emit(ss, end, classes.class_of(&active)?);
            }
            if let Err(i) = active.binary_search(&src) {
                active.insert(i, src);
            }
            seg_start = Some(pos);
        } else {
            if let Some(ss) = seg_start
                && ss <= pos
            {
                out.emit(ss, pos, classes.class_of(&active)?);
            }
            if let Ok(i) = active.binary_search(&src) {
                active.remove(i);
            }
            seg_start = pos.succ();
        }
    }
    Ok(out.set.finish())
}

/// Appends ranges, merging a range into the previous one when they touch and share a class.
#[derive(Default)]
struct Emitter<A: Addr> {
    set: RangeSet<A>,
}

impl<A: Addr> Emitter<A> {
    fn emit(&mut self, start: A, end: A, class: u16) {
        let set = &mut self.set;
        if let (Some((_, last_end)), Some(&last_class)) =
            (set.bounds.last_mut(), set.classes.last())
            && last_class == class
            && last_end.succ() == Some(start)
        {
            *last_end = end;
            return;
        }
        set.bounds.push((start, end));
        set.classes.push(class);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::lists::PrefixList;

    fn list(text: &str) -> PrefixList {
        PrefixList::parse(text).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ids(v: &[u16]) -> Vec<ActionId> {
        v.iter().copied().map(ActionId).collect()
    }

    /// A big list with a few other actions' ranges among its own keeps one class and the
    /// few others as exceptions (2 bytes a range saved), and answers every class as before;
    /// a set with no dominant class keeps a class per range.
    #[test]
    fn a_dominant_class_is_kept_once_and_the_others_as_exceptions() {
        let ranges = |n: u32, class: &dyn Fn(u32) -> u16| -> Vec<(u32, u32, u16)> {
            (0..n).map(|i| (i * 10, i * 10 + 4, class(i))).collect()
        };
        // Exceptions at the first and the last range and every 100th between.
        let rare = |i: u32| {
            if i.is_multiple_of(100) || i == 999 {
                2 + (i % 7) as u16
            } else {
                1
            }
        };
        let input = ranges(1000, &rare);
        let set = RangeSet::from_sorted(input.clone()).unwrap();
        assert_eq!(set.shared_class(), Some((1, 11)));
        assert_eq!(
            set.heap_bytes(),
            1000 * 8 + 11 * 8 + 16 * 8 + set.index.capacity() * 4
        );
        for &(s, e, c) in &input {
            assert_eq!(set.lookup(s), Some(c), "{s}");
            assert_eq!(set.lookup(e), Some(c), "{e}");
            assert_eq!(set.lookup(e + 1), None, "{}", e + 1);
        }
        assert!(set.iter().eq(input.iter().copied()));
        // One range in four of another class: a class per range.
        let input = ranges(1000, &|i| if i % 4 == 0 { 2 } else { 1 });
        let set = RangeSet::from_sorted(input.clone()).unwrap();
        assert_eq!((set.classes.len(), set.exceptions.len()), (1000, 0));
        assert_eq!(set.shared_class(), None);
        for &(s, _, c) in &input {
            assert_eq!(set.lookup(s), Some(c));
        }
        // Exactly one range in eight of another class: still exceptions; one more: per range.
        let input = ranges(800, &|i| if i % 8 == 7 { 2 } else { 1 });
        let set = RangeSet::from_sorted(input.clone()).unwrap();
        assert_eq!((set.classes.len(), set.exceptions.len()), (0, 100));
        for &(s, _, c) in &input {
            assert_eq!(set.lookup(s), Some(c));
        }
        let input = ranges(800, &|i| if i % 8 == 7 || i == 0 { 2 } else { 1 });
        let set = RangeSet::from_sorted(input).unwrap();
        assert_eq!((set.classes.len(), set.exceptions.len()), (800, 0));
        assert_eq!(RangeSet::<u32>::default().shared_class(), None);
        let one = RangeSet::from_sorted([(1u32, 2, 5), (4, 4, 5)]).unwrap();
        assert_eq!(one.shared_class(), Some((5, 0)));
        assert_eq!(dominant(&[3, 2, 3, 2]), Some(2));
        assert_eq!(dominant(&[]), None);
    }

    #[test]
    fn single_source_membership() {
        let l = list("10.0.0.0/8\n192.168.0.1\n2001:db8::/32\n");
        let mut b = IpSetBuilder::new();
        b.add(&l, ids(&[3]));
        let set = b.build().unwrap();
        assert_eq!(set.actions_for(ip("10.200.1.1")), ids(&[3]).as_slice());
        assert_eq!(set.actions_for(ip("192.168.0.1")), ids(&[3]).as_slice());
        assert!(set.actions_for(ip("192.168.0.2")).is_empty());
        assert!(set.actions_for(ip("11.0.0.0")).is_empty());
        assert_eq!(set.actions_for(ip("2001:db8::42")), ids(&[3]).as_slice());
        assert_eq!(set.actions_for(ip("::ffff:10.1.1.1")), ids(&[3]).as_slice());
        assert!(set.actions_for(ip("2001:db9::")).is_empty());
    }

    #[test]
    fn overlapping_sources_get_combined_classes() {
        let a = list("10.0.0.0/8\n");
        let b = list("10.1.0.0/16\n10.1.0.0/16\n0.0.0.0/32\n");
        let c = list("255.255.255.255\n10.0.0.0/8\n");
        let mut builder = IpSetBuilder::new();
        builder.add(&a, ids(&[0]));
        builder.add(&b, ids(&[1, 2]));
        builder.add(&c, ids(&[0]));
        let set = builder.build().unwrap();
        assert_eq!(set.actions_for(ip("10.0.255.255")), ids(&[0]).as_slice());
        assert_eq!(set.actions_for(ip("10.1.0.0")), ids(&[0, 1, 2]).as_slice());
        assert_eq!(
            set.actions_for(ip("10.1.255.255")),
            ids(&[0, 1, 2]).as_slice()
        );
        assert_eq!(set.actions_for(ip("10.2.0.0")), ids(&[0]).as_slice());
        assert_eq!(set.actions_for(ip("0.0.0.0")), ids(&[1, 2]).as_slice());
        assert_eq!(set.actions_for(ip("255.255.255.255")), ids(&[0]).as_slice());
        assert!(set.actions_for(ip("11.0.0.0")).is_empty());
        // a and c share class {0}: 10/8 is split only where b's class differs.
        assert_eq!(set.v4.len(), 5);
        assert_eq!(set.classes.len(), 3);
    }

    #[test]
    fn shared_list_is_stored_once() {
        let big = list("10.0.0.0/24\n10.0.2.0/24\n10.0.4.0/24\n");
        let mut b = IpSetBuilder::new();
        b.add(&big, ids(&[0, 1, 2, 3, 4]));
        let set = b.build().unwrap();
        assert_eq!(set.v4.len(), 3);
        assert_eq!(set.classes, vec![ids(&[0, 1, 2, 3, 4])]);
    }

    #[test]
    fn range_set_rejects_unsorted_and_inverted() {
        assert_eq!(
            RangeSet::<u32>::from_sorted([(5, 4, 0)]),
            Err(RangeError::Inverted)
        );
        assert_eq!(
            RangeSet::<u32>::from_sorted([(1, 5, 0), (5, 6, 0)]),
            Err(RangeError::Unsorted)
        );
    }

    #[test]
    fn indexed_lookup_matches_brute_force() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ranges: Vec<(u32, u32)> = (0..5000)
            .map(|_| {
                let s = next() as u32;
                (s, s.saturating_add((next() % 70_000) as u32))
            })
            .collect();
        let l = PrefixList {
            v4: crate::lists::merge(ranges),
            v6: vec![],
            prefixes: 5000,
        };
        let mut b = IpSetBuilder::new();
        b.add(&l, ids(&[0]));
        let set = b.build().unwrap();
        assert!(!set.v4.index.is_empty());
        for _ in 0..20_000 {
            let a = next() as u32;
            let brute = l.v4.iter().any(|&(s, e)| s <= a && a <= e);
            assert_eq!(set.v4.lookup(a).is_some(), brute, "{a:#x}");
        }
        for &(s, e) in &l.v4 {
            assert!(set.v4.lookup(s).is_some() && set.v4.lookup(e).is_some());
        }
    }

    #[test]
    fn sweep_matches_brute_force_over_many_overlapping_sources() {
        let mut rng = crate::testutil::Rng(0xfeed);
        for round in 0..20 {
            let lists: Vec<PrefixList> = (0..6)
                .map(|_| {
                    let n = 1 + rng.next() % 40;
                    let v4 = (0..n)
                        .map(|_| {
                            let s = (rng.next() % 4000) as u32;
                            (s, s + (rng.next() % 300) as u32)
                        })
                        .collect();
                    let top = u128::MAX - (rng.next() % 500) as u128;
                    let v6 = vec![(top, top + (u128::MAX - top).min((rng.next() % 3) as u128))];
                    PrefixList {
                        v4: crate::lists::merge(v4),
                        v6,
                        prefixes: 0,
                    }
                })
                .collect();
            let owners: Vec<Vec<ActionId>> = (0..lists.len())
                .map(|i| ids(&[i as u16 % 4, 4 + (rng.next() % 3) as u16]))
                .collect();
            let mut b = IpSetBuilder::new();
            for (l, o) in lists.iter().zip(&owners) {
                b.add(l, o.clone());
            }
            let set = b.build().unwrap();
            for a in 0..4400u32 {
                let mut want: Vec<ActionId> = lists
                    .iter()
                    .zip(&owners)
                    .filter(|(l, _)| l.v4.iter().any(|&(s, e)| s <= a && a <= e))
                    .flat_map(|(_, o)| o.iter().copied())
                    .collect();
                want.sort_unstable();
                want.dedup();
                let got = set.actions_for(IpAddr::V4(a.into()));
                assert_eq!(got, want.as_slice(), "round {round} address {a}");
            }
            for a in (u128::MAX - 600)..=u128::MAX {
                let hit = lists
                    .iter()
                    .any(|l| l.v6.iter().any(|&(s, e)| s <= a && a <= e));
                assert_eq!(set.v6.lookup(a).is_some(), hit, "round {round} v6 {a:#x}");
            }
            // Neighbouring ranges of the same class are merged.
            let v: Vec<_> = set.v4.iter().collect();
            for w in v.windows(2) {
                assert!(
                    !(w[0].1 + 1 == w[1].0 && w[0].2 == w[1].2),
                    "unmerged {w:?}"
                );
            }
        }
    }

    #[test]
    fn the_index_grows_with_the_set_to_about_four_ranges_a_bucket() {
        assert_eq!(index_bits(256), 16);
        assert_eq!(index_bits(4 << 16), 16);
        assert_eq!(index_bits((4 << 16) + 1), 17);
        assert_eq!(index_bits(1_000_000), 18);
        assert_eq!(index_bits(4 << 20), 20);
        assert_eq!(index_bits(usize::MAX), 20, "at most 4 MiB");
    }

    /// A set big enough for a wider index (and one whose ranges share leading bits, so the
    /// index skips them too) answers every start, end and gap as a plain search does.
    #[test]
    fn a_wide_index_answers_as_a_plain_search() {
        fn check<A: Addr>(ranges: &[(A, A, u16)]) {
            let set = RangeSet::from_sorted(ranges.iter().copied()).unwrap();
            assert!(
                set.bits > 16,
                "{} bits for {} ranges",
                set.bits,
                ranges.len()
            );
            let plain = |a: A| {
                let k = ranges.partition_point(|&(s, _, _)| s <= a);
                k.checked_sub(1)
                    .and_then(|i| (ranges[i].1 >= a).then_some(ranges[i].2))
            };
            for &(s, e, c) in ranges.iter().step_by(7) {
                assert_eq!(set.lookup(s), Some(c));
                assert_eq!(set.lookup(e), Some(c));
                if let Some(after) = e.succ() {
                    assert_eq!(set.lookup(after), plain(after));
                }
                if let Some(before) = s.pred() {
                    assert_eq!(set.lookup(before), plain(before));
                }
            }
        }
        // 300,000 IPv4 ranges of 4 addresses, 8 apart, across the space.
        let v4: Vec<(u32, u32, u16)> = (0..300_000u32)
            .map(|i| (i * 14_000, i * 14_000 + 3, (i % 5) as u16))
            .collect();
        check(&v4);
        // 300,000 IPv6 /64s inside 2001:db8::/32.
        let base: u128 = 0x2001_0db8 << 96;
        let v6: Vec<(u128, u128, u16)> = (0..300_000u128)
            .map(|i| {
                let s = base + ((i * 13) << 64);
                (s, s + u128::from(u64::MAX), (i % 3) as u16)
            })
            .collect();
        check(&v6);
        let set = RangeSet::from_sorted(v6.iter().copied()).unwrap();
        assert!(set.skip >= 32, "the shared /32 is skipped: {}", set.skip);
    }

    #[test]
    fn index_skips_shared_leading_bits() {
        let base: u128 = 0x2001_0db8 << 96;
        let ranges: Vec<(u128, u128, u16)> = (0..2000u128)
            .map(|i| (base + (i << 70), base + (i << 70) + 255, (i % 3) as u16))
            .collect();
        let set = RangeSet::from_sorted(ranges.clone()).unwrap();
        assert!(set.skip >= 32, "skip {}", set.skip);
        for &(s, e, c) in &ranges {
            assert_eq!(set.lookup(s), Some(c));
            assert_eq!(set.lookup(e), Some(c));
            assert_eq!(set.lookup(e + 1), None);
        }
        assert_eq!(set.lookup(base - 1), None, "below the shared prefix");
        assert_eq!(set.lookup(0), None);
        assert_eq!(set.lookup(u128::MAX), None, "above the shared prefix");
        let last = ranges[ranges.len() - 1];
        let wide = RangeSet::from_sorted(ranges.iter().copied().take(ranges.len() - 1).chain([(
            last.0,
            u128::MAX,
            9,
        )]))
        .unwrap();
        assert_eq!(
            wide.lookup(u128::MAX),
            Some(9),
            "last range reaches past the prefix"
        );
        assert_eq!(wide.iter().len(), ranges.len());
    }
}
