//! The collector side: sidecar reports merged per namespace into sliding windows.
//!
//! Each namespace has two rings of time slices: a short one (default 10 × 30 s = 5 min, for
//! Flooder and Static Content Scraper) and a long one (default 96 × 15 min = 24 h, for the
//! 24-hour rules and incident attributes). A report lands in the slice that holds its
//! `start`; a slot is reused when its slice has left the ring. Per slice, clients are
//! bounded by the same Space-Saving map as the sidecar's ([`crate::topk`]); totals are exact.
//!
//! Tolerance: a duplicate report (same pod, `seq` and `start`) is ignored; a late report is
//! merged into its slice as long as that slice is still in the ring; a report whose slice
//! has left the ring is dropped as too old; a lost report only leaves its counts out (gaps
//! in `seq` are counted in [`MergeStats`]). Nothing here reads the clock: `now` is passed in.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use jiff::{SignedDuration, Timestamp};

use crate::client_id::{ClientId, KeyTable};
use crate::key::ClientKey;
use crate::report::Report;
use crate::seasonal::Seasonal;
use crate::stats::{AttrDim, ClientCounts, ClientWindow, SurgeCounts, Totals};

use crate::topk::{FastHash, Tally, TopK, table_bytes};

/// Shape and bounds of a namespace's windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// Short slice length (default 30 s).
    pub short_slice: SignedDuration,
    /// Short slices in the ring (default 10: 5 min).
    pub short_slices: usize,
    /// Long slice length (default 15 min).
    pub long_slice: SignedDuration,
    /// Long slices in the ring (default 96: 24 h).
    pub long_slices: usize,
    /// Clients tracked per slice (default 20 000).
    pub max_clients: usize,
    /// (client, attribute value) pairs tracked per long slice (default 4096).
    pub max_attrs: usize,
    /// Reports remembered per pod for duplicate detection (default 128: a duplicate is a
    /// retry of a report whose answer was lost, sent within seconds).
    pub dedupe_memory: usize,
    /// Pods remembered per namespace for duplicate and gap detection (default 10,000); a
    /// report from a new pod beyond that forgets the pod silent for longest.
    pub max_pods: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            short_slice: SignedDuration::from_secs(30),
            short_slices: 10,
            long_slice: SignedDuration::from_mins(15),
            long_slices: 96,
            max_clients: 20_000,
            max_attrs: 4096,
            dedupe_memory: 128,
            max_pods: 10_000,
        }
    }
}

/// What happened to a merged report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Counted.
    Accepted,
    /// Already counted (same pod, `seq` and `start`): ignored.
    Duplicate,
    /// Its slice has left every ring: ignored.
    TooOld,
    /// It starts more than one short slice after `now` (clock skew): ignored.
    TooNew,
}

/// Counters of merge outcomes, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Reports counted.
    pub accepted: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// Reports too old for any ring.
    pub too_old: u64,
    /// Reports from the future.
    pub too_new: u64,
    /// Reports never received (gaps in a pod's `seq`).
    pub lost: u64,
    /// Pods forgotten to make room for a new one ([`WindowConfig::max_pods`]).
    pub pods_forgotten: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct AttrTally {
    count: u64,
    overcount: u64,
}

impl Tally for AttrTally {
    fn estimate(&self) -> u64 {
        self.count + self.overcount
    }
    fn add_overcount(&mut self, n: u64) {
        self.overcount += n;
    }
}

type AttrKey = (ClientId, AttrDim, Box<str>);

#[derive(Debug, Clone)]
struct Slice {
    epoch: i64,
    totals: Totals,
    clients: TopK<ClientId, ClientCounts>,
    attrs: Option<TopK<AttrKey, AttrTally>>,
    /// Its failing share, once computed (dropped when a report changes the slice).
    failing: std::cell::Cell<Option<Failing>>,
}

impl Slice {
    fn failing(&self, keys: &KeyTable) -> Failing {
        if let Some(f) = self.failing.get() {
            return f;
        }
        let f = failing(self, keys);
        self.failing.set(Some(f));
        f
    }
}

#[derive(Debug, Clone)]
struct Ring {
    slice_secs: i64,
    slots: Vec<Option<Slice>>,
    max_clients: usize,
    max_attrs: Option<usize>,
    /// Sums of the closed slices of recent views, reused by the next view of the same
    /// length in the same slice. The 24 h view merges 96 slices of up to 20,000 clients
    /// (about 100 ms); with this, a view clones one sum and merges only the current slice.
    /// Any change to a slice a sum covers drops that sum.
    closed: RefCell<Vec<ClosedSum>>,
    /// Freeze a slice's tables once a newer slice opens ([`TopK::freeze`]: exact-size
    /// sorted arrays instead of hash tables). Off only in tests, as a reference.
    freeze: bool,
}

/// The sum of the slices `[newest - n + 1, newest - 1]` (the closed ones of a view of `n`
/// slices at epoch `newest`).
#[derive(Debug, Clone)]
struct ClosedSum {
    n: usize,
    newest: i64,
    /// The failing baseline it was summed with (see [`SURGE_MIN_ANSWERED`]).
    baseline: Option<u64>,
    sum: WindowView,
}

/// Views of different lengths kept at once (the default window, a rule's own window…).
const CLOSED_SUMS: usize = 4;

impl Ring {
    fn new(slice: SignedDuration, n: usize, max_clients: usize, max_attrs: Option<usize>) -> Self {
        Self {
            slice_secs: slice.as_secs().max(1),
            slots: vec![None; n.max(1)],
            max_clients,
            max_attrs,
            closed: RefCell::default(),
            freeze: true,
        }
    }

    /// Drops the oldest slice, keeping at least `keep` slices; returns whether one was dropped.
    fn drop_oldest(&mut self, keep: usize) -> bool {
        if self.slots.iter().flatten().count() <= keep {
            return false;
        }
        let Some(pos) = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.epoch)))
            .min_by_key(|(_, epoch)| *epoch)
            .map(|(i, _)| i)
        else {
            return false;
        };
        if let Some(s) = self.slots[pos].take() {
            self.invalidate(s.epoch);
        }
        true
    }

    /// Freezes the tables of every slice older than `epoch` (closed once a newer slice
    /// opened); a late report into one of them thaws it, and the next new slice freezes it
    /// again.
    fn freeze_before(&mut self, epoch: i64) {
        if !self.freeze {
            return;
        }
        for s in self.slots.iter_mut().flatten().filter(|s| s.epoch < epoch) {
            if !s.clients.is_frozen() {
                s.clients.freeze();
            }
            if let Some(attrs) = s.attrs.as_mut().filter(|a| !a.is_frozen()) {
                attrs.freeze();
            }
        }
    }

    /// Drops every kept sum (a cache: the next view sums the slices again); whether any was
    /// kept.
    fn clear_kept_sums(&mut self) -> bool {
        let closed = self.closed.get_mut();
        let any = !closed.is_empty();
        closed.clear();
        any
    }

    /// Drops the closed-slice sums that cover `epoch` (about to change).
    fn invalidate(&mut self, epoch: i64) {
        self.closed
            .get_mut()
            .retain(|c| epoch < c.newest - c.n as i64 + 1 || epoch >= c.newest);
    }

    fn epoch(&self, t: Timestamp) -> i64 {
        t.as_second().div_euclid(self.slice_secs)
    }

    fn span(&self) -> SignedDuration {
        SignedDuration::from_secs(self.slice_secs * self.slots.len() as i64)
    }

    /// Oldest epoch still inside the ring at `now`.
    fn oldest(&self, now: Timestamp) -> i64 {
        self.epoch(now) - self.slots.len() as i64 + 1
    }

    /// Adds `report`, whose clients and attributes have the ids `ids`.
    fn add(&mut self, report: &Report, ids: &ReportIds, now: Timestamp) -> bool {
        let epoch = self.epoch(report.start);
        if epoch < self.oldest(now) {
            return false;
        }
        let pos = epoch.rem_euclid(self.slots.len() as i64) as usize;
        let replaced = match &self.slots[pos] {
            Some(s) if s.epoch > epoch => return false,
            Some(s) => s.epoch,
            None => epoch,
        };
        self.invalidate(epoch);
        if replaced != epoch {
            self.invalidate(replaced);
        }
        if self.slots[pos].as_ref().is_none_or(|s| s.epoch < epoch) {
            self.slots[pos] = Some(Slice {
                epoch,
                totals: Totals::default(),
                clients: TopK::unallocated(self.max_clients),
                attrs: self.max_attrs.map(TopK::unallocated),
                failing: Default::default(),
            });
            self.freeze_before(epoch);
        }
        let slot = &mut self.slots[pos];
        let slice = slot.as_mut().expect("slot filled above");
        slice.failing.set(None);
        slice.totals.merge(&report.totals);
        for (e, id) in report.clients.iter().zip(&ids.clients) {
            slice.clients.entry(*id).merge(&e.counts);
        }
        if let Some(attrs) = &mut slice.attrs {
            for (a, id) in report.attributes.iter().zip(&ids.attrs) {
                attrs.entry((*id, a.dim, a.value.as_str().into())).count += a.count;
            }
        }
        true
    }

    /// Slices inside the window ending at `now` (the current, partial slice included).
    fn live(&self, now: Timestamp) -> impl Iterator<Item = &Slice> {
        self.live_last(self.slots.len(), now)
    }

    /// The last `n` slices ending at `now` (the current, partial one included).
    fn live_last(&self, n: usize, now: Timestamp) -> impl Iterator<Item = &Slice> + Clone {
        let newest = self.epoch(now);
        let oldest = newest - n.clamp(1, self.slots.len()) as i64 + 1;
        self.slots
            .iter()
            .flatten()
            .filter(move |s| s.epoch >= oldest && s.epoch <= newest)
    }

    fn view(&self, now: Timestamp, baseline: Option<f64>, keys: &KeyTable) -> WindowView {
        self.view_last(self.slots.len(), now, baseline, keys)
    }

    /// Median failing share of the closed slices in the ring at `now` (`None` without any).
    fn failing_median(&self, now: Timestamp, keys: &KeyTable) -> Option<f64> {
        let newest = self.epoch(now);
        let oldest = self.oldest(now);
        let mut shares: Vec<f64> = self
            .slots
            .iter()
            .flatten()
            .filter(|s| s.epoch < newest && s.epoch >= oldest)
            .filter_map(|s| s.failing(keys).share())
            .collect();
        crate::anomaly::median_mad(&mut shares).map(|(m, _)| m)
    }

    /// Heap bytes of the slices and of the kept sums (see [`WindowMemory`]).
    fn memory(&self) -> WindowMemory {
        let slices = self
            .slots
            .iter()
            .flatten()
            .map(|s| s.clients.heap_bytes() + s.attrs.as_ref().map_or(0, TopK::heap_bytes))
            .sum();
        let views = self
            .closed
            .borrow()
            .iter()
            .map(|c| table_bytes::<ClientKey, ClientWindow>(c.sum.clients.capacity()))
            .sum();
        WindowMemory {
            slices,
            views,
            keys: 0,
        }
    }

    /// Sums over the last `n` slices ending at `now`: the closed ones from a kept sum when
    /// there is one, plus the current slice.
    /// `baseline`: the failing share surge slices are judged against (see
    /// [`SURGE_MIN_ANSWERED`]); `None`: the median of the summed closed slices.
    fn view_last(
        &self,
        n: usize,
        now: Timestamp,
        baseline: Option<f64>,
        keys: &KeyTable,
    ) -> WindowView {
        let n = n.clamp(1, self.slots.len());
        let newest = self.epoch(now);
        let key = baseline.map(f64::to_bits);
        let mut closed = self.closed.borrow_mut();
        let pos = match closed
            .iter()
            .position(|c| c.n == n && c.newest == newest && c.baseline == key)
        {
            Some(pos) => pos,
            None => {
                if closed.len() >= CLOSED_SUMS {
                    closed.remove(0);
                }
                let slices = self.slices_between(newest - n as i64 + 1, newest - 1);
                let sum = self.sum(slices, baseline, keys);
                closed.push(ClosedSum {
                    n,
                    newest,
                    baseline: key,
                    sum,
                });
                closed.len() - 1
            }
        };
        let mut view = closed[pos].sum.clone();
        view.span = SignedDuration::from_secs(self.slice_secs * n as i64);
        for s in self.slices_between(newest, newest) {
            add_slice(&mut view, s, keys);
        }
        view
    }

    /// Sums over the last `n` slices ending at `now`, every slice merged afresh (what
    /// [`Ring::view_last`] must equal).
    #[cfg(test)]
    fn view_uncached(
        &self,
        n: usize,
        now: Timestamp,
        baseline: Option<f64>,
        keys: &KeyTable,
    ) -> WindowView {
        let n = n.clamp(1, self.slots.len());
        let newest = self.epoch(now);
        let closed = self.slices_between(newest - n as i64 + 1, newest - 1);
        let baseline = baseline.unwrap_or_else(|| self.sum(closed, None, keys).failing_baseline);
        let mut view = self.sum(self.live_last(n, now), Some(baseline), keys);
        view.span = SignedDuration::from_secs(self.slice_secs * n as i64);
        view
    }

    /// The slices whose epoch is in `[oldest, newest]`.
    fn slices_between(&self, oldest: i64, newest: i64) -> impl Iterator<Item = &Slice> + Clone {
        self.slots
            .iter()
            .flatten()
            .filter(move |s| s.epoch >= oldest && s.epoch <= newest)
    }

    /// The sum of `slices` (span left at zero), judging surge slices against `baseline`, or
    /// against the median of these slices.
    fn sum<'a>(
        &self,
        slices: impl Iterator<Item = &'a Slice> + Clone,
        baseline: Option<f64>,
        keys: &KeyTable,
    ) -> WindowView {
        let mut view = WindowView::default();
        // Sized for the largest slice up front: the 24 h sum merges ~100 slices, and
        // rehashing as it grows dominated its cost.
        let largest = slices.clone().map(|s| s.clients.len()).max().unwrap_or(0);
        view.clients.reserve(largest * 2);
        view.failing_baseline = baseline.unwrap_or_else(|| {
            let mut shares: Vec<f64> = slices
                .clone()
                .filter_map(|s| s.failing(keys).share())
                .collect();
            crate::anomaly::median_mad(&mut shares).map_or(0.0, |(m, _)| m)
        });
        if keys.is_empty() {
            for s in slices {
                add_slice(&mut view, s, keys);
            }
            return view;
        }
        // Clients of keyed kinds: summed by id, each read back through the key table once
        // at the end rather than once per slice (96 slices of the same clients would cost
        // 96 table lookups per client).
        let mut by_id: HashMap<ClientId, ClientWindow, FastHash> =
            HashMap::with_capacity_and_hasher(largest * 2, FastHash::default());
        for s in slices {
            add_slice_to(&mut view, &mut by_id, s, keys, |id| id);
        }
        view.clients.reserve(by_id.len());
        view.clients
            .extend(by_id.into_iter().map(|(id, c)| (keys.key(id), c)));
        view
    }
}

/// The failing share of a slice's IP clients: how many the app answered, and how many of
/// those got an error for most of their answers.
#[derive(Debug, Clone, Copy, Default)]
struct Failing {
    clients: u64,
    failing: u64,
    answered: u64,
}

impl Failing {
    fn share(self) -> Option<f64> {
        (self.clients > 0).then(|| self.failing as f64 / self.clients as f64)
    }
}

fn failing(s: &Slice, keys: &KeyTable) -> Failing {
    let mut f = Failing {
        answered: s.totals.answered(),
        ..Failing::default()
    };
    for (id, c) in s.clients.iter() {
        let answered = c.requests.saturating_sub(c.denied);
        if answered == 0 || !keys.is_ip(*id) {
            continue;
        }
        f.clients += 1;
        f.failing += u64::from(c.errors * 2 > answered);
    }
    f
}

/// A slice is a *surge slice* when most of the namespace failed at once: at least
/// [`SURGE_MIN_ANSWERED`] answers, [`SURGE_MIN_FAILING`] IP clients failing on most of their
/// requests, and a failing share of at least [`SURGE_MIN_SHARE`] and
/// [`SURGE_BASELINE_FACTOR`] times the median of the window's other slices. An outage and
/// the retry storm after it look like this; one client, however loud, cannot (it is one
/// failing client). Brute Guessor and Robot Abuser leave these slices' answers out.
pub const SURGE_MIN_ANSWERED: u64 = 200;
/// See [`SURGE_MIN_ANSWERED`].
pub const SURGE_MIN_FAILING: u64 = 10;
/// See [`SURGE_MIN_ANSWERED`].
pub const SURGE_MIN_SHARE: f64 = 0.1;
/// See [`SURGE_MIN_ANSWERED`].
pub const SURGE_BASELINE_FACTOR: f64 = 3.0;

fn is_surge(f: Failing, baseline: f64) -> bool {
    f.answered >= SURGE_MIN_ANSWERED
        && f.failing >= SURGE_MIN_FAILING
        && f.share()
            .is_some_and(|x| x >= SURGE_MIN_SHARE && x >= SURGE_BASELINE_FACTOR * baseline)
}

fn add_slice(view: &mut WindowView, s: &Slice, keys: &KeyTable) {
    let mut clients = std::mem::take(&mut view.clients);
    add_slice_to(view, &mut clients, s, keys, |id| keys.key(id));
    view.clients = clients;
}

/// Adds a slice's totals to `view` and its clients to `clients`, under `key_of` their id.
fn add_slice_to<K: std::hash::Hash + Eq>(
    view: &mut WindowView,
    clients: &mut HashMap<K, ClientWindow, FastHash>,
    s: &Slice,
    keys: &KeyTable,
    key_of: impl Fn(ClientId) -> K,
) {
    let surge = is_surge(s.failing(keys), view.failing_baseline);
    view.totals.merge(&s.totals);
    if surge {
        view.surge.add_totals(&s.totals);
        view.surge_slices += 1;
    }
    for (id, counts) in s.clients.iter() {
        let c = clients.entry(key_of(*id)).or_default();
        c.add(counts);
        if surge {
            c.surge.add_client(counts);
        }
    }
}

/// Heap bytes a namespace's windows hold: the client tables of their slices (and the
/// attribute tables of the long ones), the kept sums of closed slices and the table of
/// client keys. Attribute values' own heap data is not included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowMemory {
    /// The slices' tables.
    pub slices: usize,
    /// The kept sums of closed slices.
    pub views: usize,
    /// The full keys of clients other than IP addresses, once per namespace (see
    /// [`crate::client_id`]).
    pub keys: usize,
}

/// Sums over one window: the input of the rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowView {
    /// Length of the window.
    pub span: SignedDuration,
    /// Exact namespace totals.
    pub totals: Totals,
    /// Per-client sums (clients tracked in at least one slice).
    pub clients: HashMap<ClientKey, ClientWindow, FastHash>,
    /// The namespace's answers in surge slices (see [`SURGE_MIN_ANSWERED`]).
    pub surge: SurgeCounts,
    /// Surge slices in the window.
    pub surge_slices: u32,
    /// Median share of failing IP clients over the window's closed slices: what a slice is
    /// compared with to be a surge slice.
    pub failing_baseline: f64,
}

/// The ids of a report's clients and of its attributes' clients, in report order, interned
/// once for both rings.
struct ReportIds {
    clients: Vec<ClientId>,
    attrs: Vec<ClientId>,
}

impl ReportIds {
    fn intern(report: &Report, keys: &mut KeyTable) -> Self {
        Self {
            clients: report.clients.iter().map(|e| keys.intern(&e.key)).collect(),
            attrs: report
                .attributes
                .iter()
                .map(|a| keys.intern(&a.client))
                .collect(),
        }
    }
}

/// One namespace's sliding windows (see the module docs).
#[derive(Debug, Clone)]
pub struct Windows {
    short: Ring,
    long: Ring,
    /// The full keys of the clients whose id is not their address, for both rings.
    keys: KeyTable,
    seen: HashMap<String, VecDeque<(u64, Timestamp)>>,
    last_seq: HashMap<String, (u64, Timestamp)>,
    dedupe_memory: usize,
    max_pods: usize,
    stats: MergeStats,
    /// Advanced Anomaly's baseline, once a rule asked for it ([`Windows::observe_season`]).
    pub(crate) seasonal: Option<Seasonal>,
}

impl Windows {
    /// Empty windows shaped by `cfg`.
    pub fn new(cfg: &WindowConfig) -> Self {
        Self {
            short: Ring::new(cfg.short_slice, cfg.short_slices, cfg.max_clients, None),
            long: Ring::new(
                cfg.long_slice,
                cfg.long_slices,
                cfg.max_clients,
                Some(cfg.max_attrs),
            ),
            keys: KeyTable::default(),
            seen: HashMap::new(),
            last_seq: HashMap::new(),
            dedupe_memory: cfg.dedupe_memory.max(1),
            max_pods: cfg.max_pods.max(1),
            stats: MergeStats::default(),
            seasonal: None,
        }
    }

    /// Lets Advanced Anomaly's baseline learn the 5-minute period that ended last, if it
    /// has not yet (call it at every evaluation of a namespace with an anomaly rule;
    /// `learn_all` is the longest `minHistory` of those rules). Returns whether it learned.
    pub fn observe_season(&mut self, now: Timestamp, learn_all: SignedDuration) -> bool {
        let seasonal = self.seasonal.get_or_insert_with(Seasonal::default);
        let Some(end) = seasonal.due(now) else {
            return false;
        };
        let view = self.short(end - SignedDuration::from_secs(1));
        if let Some(s) = &mut self.seasonal {
            s.observe(&view, end, learn_all);
        }
        true
    }

    /// Advanced Anomaly's baseline, if one is learning.
    pub fn seasonal(&self) -> Option<&Seasonal> {
        self.seasonal.as_ref()
    }

    /// Windows that never freeze closed slices: the reference the tests compare with.
    #[cfg(test)]
    pub(crate) fn unfrozen(cfg: &WindowConfig) -> Self {
        let mut w = Self::new(cfg);
        w.short.freeze = false;
        w.long.freeze = false;
        w
    }

    /// Merges one report received at `now`.
    pub fn merge(&mut self, report: &Report, now: Timestamp) -> MergeOutcome {
        let outcome = self.merge_inner(report, now);
        match outcome {
            MergeOutcome::Accepted => self.stats.accepted += 1,
            MergeOutcome::Duplicate => self.stats.duplicates += 1,
            MergeOutcome::TooOld => self.stats.too_old += 1,
            MergeOutcome::TooNew => self.stats.too_new += 1,
        }
        outcome
    }

    fn merge_inner(&mut self, report: &Report, now: Timestamp) -> MergeOutcome {
        if report.start > now + self.short.span() / self.short.slots.len() as i32 {
            return MergeOutcome::TooNew;
        }
        let pod = &report.sidecar.pod;
        if !self.seen.contains_key(pod) && self.seen.len() >= self.max_pods {
            self.forget_silent_pod();
        }
        let seen = self.seen.entry(pod.clone()).or_default();
        if seen.contains(&(report.seq, report.start)) {
            return MergeOutcome::Duplicate;
        }
        let ids = ReportIds::intern(report, &mut self.keys);
        let in_short = self.short.add(report, &ids, now);
        let in_long = self.long.add(report, &ids, now);
        if !in_short && !in_long {
            return MergeOutcome::TooOld;
        }
        if seen.len() >= self.dedupe_memory {
            seen.pop_front();
        }
        seen.push_back((report.seq, report.start));
        self.track_gaps(report);
        if self.keys.wants_sweep(|| self.held_ids()) {
            self.sweep_keys();
        }
        MergeOutcome::Accepted
    }

    /// Client ids the slices hold (clients and attribute pairs), repeats included.
    fn held_ids(&self) -> usize {
        let slices = self.short.slots.iter().chain(&self.long.slots).flatten();
        slices
            .map(|s| s.clients.len() + s.attrs.as_ref().map_or(0, TopK::len))
            .sum()
    }

    /// Forgets the keys of clients no slice holds any more (see [`KeyTable`]).
    fn sweep_keys(&mut self) {
        let slices = || self.short.slots.iter().chain(&self.long.slots).flatten();
        let clients = slices().flat_map(|s| s.clients.iter().map(|(id, _)| *id));
        let attrs = slices().flat_map(|s| s.attrs.iter().flat_map(TopK::iter).map(|(k, _)| k.0));
        self.keys.sweep(clients.chain(attrs));
    }

    /// Forgets the pod whose last report is oldest (its duplicates and gaps are no longer
    /// told apart; its counts stay in the windows).
    fn forget_silent_pod(&mut self) {
        let oldest = self
            .seen
            .iter()
            .min_by_key(|(_, s)| s.back().map(|(_, start)| *start))
            .map(|(pod, _)| pod.clone());
        if let Some(pod) = oldest {
            self.seen.remove(&pod);
            self.last_seq.remove(&pod);
            self.stats.pods_forgotten += 1;
        }
    }

    /// Drops the sums of closed slices kept for the next views (caches: the next view sums
    /// the slices again); whether any were kept. What a memory budget takes first, before
    /// any slice.
    pub fn clear_kept_sums(&mut self) -> bool {
        let long = self.long.clear_kept_sums();
        self.short.clear_kept_sums() || long
    }

    /// Drops the oldest slice of the long ring, else the oldest short slice but the newest
    /// (the current one); returns whether one was dropped. What a memory budget takes once
    /// no kept sums are left.
    pub fn drop_oldest_slice(&mut self) -> bool {
        self.long.drop_oldest(0) || self.short.drop_oldest(1)
    }

    /// Heap bytes of the slices, views and per-pod duplicate-detection state.
    pub fn heap_bytes(&self) -> usize {
        let m = self.memory();
        let pods: usize = self
            .seen
            .iter()
            .map(|(p, s)| p.len() * 2 + 48 + s.capacity() * 24 + 80)
            .sum();
        m.slices + m.views + m.keys + pods
    }

    /// Counts reports lost between this one and the pod's previous one (same sidecar run).
    fn track_gaps(&mut self, report: &Report) {
        let pod = &report.sidecar.pod;
        match self.last_seq.get(pod) {
            Some(&(seq, start)) if report.seq > seq && report.start > start => {
                self.stats.lost += report.seq - seq - 1;
            }
            Some(&(_, start)) if report.start <= start => return,
            _ => {}
        }
        self.last_seq
            .insert(pod.clone(), (report.seq, report.start));
    }

    /// Heap bytes held by both rings.
    pub fn memory(&self) -> WindowMemory {
        let (s, l) = (self.short.memory(), self.long.memory());
        WindowMemory {
            slices: s.slices + l.slices,
            views: s.views + l.views,
            keys: self.keys.heap_bytes(),
        }
    }

    /// Merge outcome counters.
    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// The short window (default 5 min) ending at `now`.
    pub fn short(&self, now: Timestamp) -> WindowView {
        self.short.view(now, self.short_baseline(now), &self.keys)
    }

    /// What the short ring's slices are judged against for surges: the long ring's median
    /// failing share (an outage can fill the whole 5-minute window, never a day).
    fn short_baseline(&self, now: Timestamp) -> Option<f64> {
        self.long.failing_median(now, &self.keys)
    }

    /// The long window (default 24 h) ending at `now`.
    pub fn long(&self, now: Timestamp) -> WindowView {
        self.long.view(now, None, &self.keys)
    }

    /// A window of length `span` ending at `now` (a rule's `window`), in whole slices of the
    /// finest ring that holds it: the short ring's 30 s slices up to its 5 minutes, else the
    /// long ring's 15 min slices. `span` is rounded up to whole slices (the current, partial
    /// slice counts as one) and capped at the long window; the view's `span` says what was used.
    pub fn view(&self, span: SignedDuration, now: Timestamp) -> WindowView {
        let slices = |ring: &Ring| {
            let secs = span.as_secs().max(1);
            usize::try_from((secs + ring.slice_secs - 1) / ring.slice_secs).unwrap_or(usize::MAX)
        };
        if span <= self.short.span() {
            self.short.view_last(
                slices(&self.short),
                now,
                self.short_baseline(now),
                &self.keys,
            )
        } else {
            self.long
                .view_last(slices(&self.long), now, None, &self.keys)
        }
    }

    /// Requests of `clients` per short slice whose start is in `[from, to)`, as
    /// `(slice start, requests)` in time order. Used for incident traffic series.
    pub fn requests_between(
        &self,
        clients: &[ClientKey],
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<(Timestamp, u64)> {
        let ring = &self.short;
        let (lo, hi) = (ring.epoch(from), ring.epoch(to));
        let ids: Vec<ClientId> = clients.iter().map(|c| self.keys.id_of(c)).collect();
        let mut out: Vec<(Timestamp, u64)> = ring
            .slots
            .iter()
            .flatten()
            .filter(|s| s.epoch >= lo && s.epoch < hi)
            .map(|s| {
                let n = ids
                    .iter()
                    .filter_map(|c| s.clients.get(c))
                    .map(|c| u64::from(c.requests))
                    .sum();
                (
                    Timestamp::from_second(s.epoch * ring.slice_secs).unwrap_or(from),
                    n,
                )
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out
    }

    /// The namespace's totals per short slice whose start is in `[from, to)`, as
    /// `(slice start, totals)` in time order. Used for the error series of a surge.
    pub fn totals_between(&self, from: Timestamp, to: Timestamp) -> Vec<(Timestamp, Totals)> {
        let ring = &self.short;
        let (lo, hi) = (ring.epoch(from), ring.epoch(to));
        let mut out: Vec<(Timestamp, Totals)> = ring
            .slots
            .iter()
            .flatten()
            .filter(|s| s.epoch >= lo && s.epoch < hi)
            .map(|s| {
                let at = Timestamp::from_second(s.epoch * ring.slice_secs).unwrap_or(from);
                (at, s.totals)
            })
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out
    }

    /// Length of the short window (default 5 min).
    pub fn short_span(&self) -> SignedDuration {
        self.short.span()
    }

    /// Length of the long window (default 24 h).
    pub fn long_span(&self) -> SignedDuration {
        self.long.span()
    }

    /// Start of the short slice holding `t` (slice boundaries are where traffic is counted).
    pub fn short_slice_start(&self, t: Timestamp) -> Timestamp {
        Timestamp::from_second(self.short.epoch(t) * self.short.slice_secs).unwrap_or(t)
    }

    /// The share `value` takes of all sampled values of `dim` over the long window, for every
    /// client of the namespace (`None` without samples of `dim`).
    pub fn attribute_share(&self, dim: AttrDim, value: &str, now: Timestamp) -> Option<f64> {
        let (mut all, mut this) = (0u64, 0u64);
        for s in self.long.live(now) {
            for ((_, d, v), tally) in s.attrs.iter().flat_map(TopK::iter) {
                if *d == dim {
                    all += tally.count;
                    if &**v == value {
                        this += tally.count;
                    }
                }
            }
        }
        (all > 0).then(|| this as f64 / all as f64)
    }

    /// Attribute counts of `clients` over the long window, summed per (dimension, value),
    /// heaviest first, at most `k` per dimension, with the number of distinct values of
    /// each dimension (before the cut) and when each value was last seen (the end of the
    /// last slice holding it, at most `now`). Counts come from the sampled attributes,
    /// except the addresses of IP clients: their own request counts, exact (an address also
    /// seen sampled for a client of another kind shows the larger of the two). Also each
    /// client's exact requests over the long window.
    pub fn attributes(&self, clients: &[ClientKey], now: Timestamp, k: usize) -> AttrSummary {
        self.attributes_since(clients, Timestamp::MIN, now, k)
    }

    /// [`Windows::attributes`] over the long slices that end after `since` only (a slice is
    /// 15 minutes by default, so up to one slice before `since` is included).
    pub fn attributes_since(
        &self,
        clients: &[ClientKey],
        since: Timestamp,
        now: Timestamp,
        k: usize,
    ) -> AttrSummary {
        let ring = &self.long;
        let end_of = |epoch: i64| {
            Timestamp::from_second((epoch + 1) * ring.slice_secs).map_or(now, |t| t.min(now))
        };
        let wanted: HashSet<ClientId> = clients.iter().map(|c| self.keys.id_of(c)).collect();
        let mut sums: HashMap<(AttrDim, &str), (u64, i64)> = HashMap::new();
        let mut per_client: BTreeMap<ClientKey, (u64, i64)> = BTreeMap::new();
        let ends_after = |epoch: i64| {
            Timestamp::from_second((epoch + 1) * ring.slice_secs).is_ok_and(|end| end > since)
        };
        for s in ring.live(now).filter(|s| ends_after(s.epoch)) {
            for ((client, dim, value), tally) in s.attrs.iter().flat_map(TopK::iter) {
                if wanted.contains(client) {
                    let e = sums.entry((*dim, value)).or_default();
                    *e = (e.0 + tally.count, e.1.max(s.epoch));
                }
            }
            for c in clients {
                if let Some(counts) = s.clients.get(&self.keys.id_of(c)) {
                    let e = per_client.entry(*c).or_default();
                    *e = (e.0 + u64::from(counts.requests), e.1.max(s.epoch));
                }
            }
        }
        let mut all: BTreeMap<AttrDim, HashMap<String, (u64, i64)>> = BTreeMap::new();
        for (client, n) in &per_client {
            if let ClientKey::Ip(ip) = client {
                all.entry(AttrDim::Ip)
                    .or_default()
                    .insert(ip.to_string(), *n);
            }
        }
        for ((dim, value), (n, epoch)) in sums {
            let e = all
                .entry(dim)
                .or_default()
                .entry(value.to_owned())
                .or_default();
            *e = (e.0.max(n), e.1.max(epoch));
        }
        let mut summary = AttrSummary::default();
        for (dim, values) in all {
            let mut values: Vec<(String, (u64, i64))> = values.into_iter().collect();
            values.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            summary.distinct.insert(dim, values.len() as u64);
            summary
                .sampled
                .insert(dim, values.iter().map(|(_, (n, _))| n).sum());
            values.truncate(k);
            let seen = values.iter().map(|(_, (_, e))| end_of(*e)).collect();
            summary.last_seen.insert(dim, seen);
            let top = values.into_iter().map(|(v, (n, _))| (v, n)).collect();
            summary.top.insert(dim, top);
        }
        summary.requests = per_client.into_iter().map(|(c, (n, _))| (c, n)).collect();
        summary
    }

    /// Forgets duplicate-detection state of pods silent for longer than the long window.
    pub fn prune(&mut self, now: Timestamp) {
        let horizon = now - self.long.span();
        self.seen
            .retain(|_, s| s.back().is_some_and(|(_, start)| *start >= horizon));
        self.last_seq.retain(|_, (_, start)| *start >= horizon);
    }
}

/// What [`Windows::attributes`] finds about a set of clients.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttrSummary {
    /// The heaviest values of each dimension, with their requests.
    pub top: BTreeMap<AttrDim, Vec<(String, u64)>>,
    /// Distinct values of each dimension (all of them, not only the top ones).
    pub distinct: BTreeMap<AttrDim, u64>,
    /// When each top value was last seen, in the order of `top`.
    pub last_seen: BTreeMap<AttrDim, Vec<Timestamp>>,
    /// Each client's requests over the long window (clients without any are left out).
    pub requests: BTreeMap<ClientKey, u64>,
    /// The counts of all values of each dimension together (before the cut to the top).
    pub sampled: BTreeMap<AttrDim, u64>,
}

/// Windows of every namespace, keyed by namespace name.
#[derive(Debug, Clone, Default)]
pub struct WindowSet {
    cfg: WindowConfig,
    namespaces: BTreeMap<String, Windows>,
}

impl WindowSet {
    /// An empty set whose namespaces are shaped by `cfg`.
    pub fn new(cfg: WindowConfig) -> Self {
        Self {
            cfg,
            namespaces: BTreeMap::new(),
        }
    }

    /// Merges a report into its namespace's windows.
    pub fn merge(&mut self, report: &Report, now: Timestamp) -> MergeOutcome {
        let cfg = &self.cfg;
        self.namespaces
            .entry(report.sidecar.namespace.clone())
            .or_insert_with(|| Windows::new(cfg))
            .merge(report, now)
    }

    /// The windows of `namespace`, if any report arrived for it.
    pub fn get(&self, namespace: &str) -> Option<&Windows> {
        self.namespaces.get(namespace)
    }

    /// The windows of `namespace`, to change, if any report arrived for it.
    pub fn get_mut(&mut self, namespace: &str) -> Option<&mut Windows> {
        self.namespaces.get_mut(namespace)
    }

    /// Namespaces with windows, in name order.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &Windows)> {
        self.namespaces.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The shape of every namespace's windows.
    pub fn config(&self) -> &WindowConfig {
        &self.cfg
    }

    /// Drops what the windows keep until every namespace's together hold at most `budget`
    /// heap bytes: first the kept view sums (caches), biggest namespace first; then each
    /// time the oldest slice of the namespace holding the most (long slices first, then
    /// short ones, never a namespace's current slice). Returns the slices dropped.
    pub fn shrink_to(&mut self, budget: usize) -> usize {
        let mut bytes: Vec<(String, usize)> = self
            .namespaces
            .iter()
            .map(|(ns, w)| (ns.clone(), w.heap_bytes()))
            .collect();
        let mut total: usize = bytes.iter().map(|(_, b)| b).sum();
        // The kept view sums first, biggest namespace first: they are caches, while a slice
        // is history that detection cannot get back.
        let mut order: Vec<usize> = (0..bytes.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(bytes[i].1));
        for i in order {
            if total <= budget {
                break;
            }
            let (ns, b) = &mut bytes[i];
            if let Some(w) = self.namespaces.get_mut(ns.as_str())
                && w.clear_kept_sums()
            {
                let after = w.heap_bytes();
                total = total - *b + after;
                *b = after;
            }
        }
        let mut dropped = 0;
        while total > budget {
            let Some((ns, b)) = bytes
                .iter_mut()
                .filter(|(_, b)| *b > 0)
                .max_by_key(|(_, b)| *b)
            else {
                break;
            };
            let Some(w) = self.namespaces.get_mut(ns.as_str()) else {
                break;
            };
            if !w.drop_oldest_slice() {
                // Nothing left to drop here: leave this namespace out of the search.
                total -= *b;
                *b = 0;
                continue;
            }
            dropped += 1;
            let after = w.heap_bytes();
            total = total - *b + after;
            *b = after;
        }
        dropped
    }

    /// Heap bytes of every namespace's windows.
    pub fn heap_bytes(&self) -> usize {
        self.namespaces.values().map(Windows::heap_bytes).sum()
    }

    /// Replaces the windows of `namespace` (e.g. with [`Windows::restore`]d ones).
    pub fn insert(&mut self, namespace: String, windows: Windows) {
        self.namespaces.insert(namespace, windows);
    }

    /// Keeps the namespaces for which `keep` is true and drops the others' windows (a
    /// collector shard moved to another replica).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.namespaces.retain(|ns, _| keep(ns));
    }
}

#[path = "window_snapshot.rs"]
mod snapshot;
pub use snapshot::{PodSnapshot, SNAPSHOT_VERSION, SliceSnapshot, WindowsSnapshot};

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
