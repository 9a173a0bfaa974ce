//! Evidence for every SecurityAction: what it matched, observed and decided over the last
//! 5 minutes, hour and day, and how many of the pods it selects enforce its current version.
//!
//! Sidecars send per-action counts and the bundle generation they enforce with their window
//! summaries ([`Report::actions`], [`Report::generation`]; an idle sidecar sends an empty
//! summary as a heartbeat). The leader files the counts into per-action [`Series`] (minute
//! buckets for the last hour, hour buckets for the day) and remembers each pod's generation.
//! Every `--evidence-interval` it writes `status.matchedRequests`, `observedRequests`,
//! `decidedRequests` and `enforcingPods` of the actions whose values changed, under its own
//! field manager (the policy controller owns the rest of the status), and exports the counts
//! as `palisade_action_requests_total`.
//!
//! Bounds: names are those of the reports' namespace (the token's), at most
//! [`MAX_ACTIONS_PER_NAMESPACE`] per namespace, and those of deleted actions are dropped at
//! the next write; at most [`MAX_PODS_PER_NAMESPACE`] pods per namespace, each forgotten
//! [`POD_STALE`] after its last report.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, PoisonError};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use palisade_crds::SecurityAction;
use palisade_crds::action::RequestCounts;
use palisade_detection::report::{ActionCount, Report};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Collector;
use crate::metrics::ActionLabels;

/// The field manager of the fields written here.
pub const MANAGER: &str = palisade_policy::transport::COLLECTOR_MANAGER;
/// Most actions whose counts are kept per namespace (a bundle holds at most 1024).
pub const MAX_ACTIONS_PER_NAMESPACE: usize = palisade_policy::MAX_ACTIONS;
/// Most pods whose generation is remembered per namespace.
pub const MAX_PODS_PER_NAMESPACE: usize = 10_000;
/// A pod that has not reported for this long no longer counts as enforcing anything (three
/// sidecar heartbeats).
pub const POD_STALE: jiff::SignedDuration = jiff::SignedDuration::from_secs(180);
/// Most status writes per update; further actions take their turn at the next update.
pub const MAX_WRITES_PER_UPDATE: usize = 100;

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;

/// The three counts of one bucket: matched, observed, decided.
type Triple = [u64; 3];

fn triple(c: &ActionCount) -> Triple {
    [c.matched, c.observed, c.decided]
}

fn add(a: &mut Triple, b: &Triple) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

/// One action's counts over the last day: a bucket per minute for the last hour, a bucket
/// per hour before that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Series {
    /// `(unix minute, counts)`, oldest first, the last 60 minutes.
    minutes: VecDeque<(i64, Triple)>,
    /// `(unix hour, counts)`, oldest first, the 24 hours before the minutes.
    hours: VecDeque<(i64, Triple)>,
}

impl Series {
    /// Adds `c` at Unix second `at` (no later than `now`), then drops what is older than a
    /// day.
    pub fn add(&mut self, at: i64, c: &Triple, now: i64) {
        let at = at.min(now);
        let minute = at.div_euclid(MINUTE);
        let now_minute = now.div_euclid(MINUTE);
        if minute > now_minute - 60 {
            bucket(&mut self.minutes, minute, c);
        } else {
            bucket(&mut self.hours, at.div_euclid(HOUR), c);
        }
        self.roll(now);
    }

    /// Moves minute buckets older than an hour into hour buckets, drops hours older than a
    /// day.
    pub fn roll(&mut self, now: i64) {
        let now_minute = now.div_euclid(MINUTE);
        while let Some(&(m, c)) = self.minutes.front() {
            if m > now_minute - 60 {
                break;
            }
            self.minutes.pop_front();
            bucket(&mut self.hours, (m * MINUTE).div_euclid(HOUR), &c);
        }
        let now_hour = now.div_euclid(HOUR);
        while self.hours.front().is_some_and(|(h, _)| *h <= now_hour - 24) {
            self.hours.pop_front();
        }
    }

    /// Counts over the last 5 minutes, hour and day (as of `now`), for matched, observed and
    /// decided.
    pub fn windows(&self, now: i64) -> [RequestCounts; 3] {
        let now_minute = now.div_euclid(MINUTE);
        let sum = |since_minute: i64| {
            let mut t = Triple::default();
            for (m, c) in &self.minutes {
                if *m > since_minute {
                    add(&mut t, c);
                }
            }
            t
        };
        let (m5, h1) = (sum(now_minute - 5), sum(now_minute - 60));
        let mut d1 = h1;
        let now_hour = now.div_euclid(HOUR);
        for (h, c) in &self.hours {
            if *h > now_hour - 24 {
                add(&mut d1, c);
            }
        }
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        [0, 1, 2].map(|i| RequestCounts {
            last_5m: as_i64(m5[i]),
            last_1h: as_i64(h1[i]),
            last_24h: as_i64(d1[i]),
        })
    }

    /// Whether it holds no count.
    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty() && self.hours.is_empty()
    }
}

/// Adds `c` to the bucket `key` of `q` (sorted by key), creating it in place.
fn bucket(q: &mut VecDeque<(i64, Triple)>, key: i64, c: &Triple) {
    match q.iter().rposition(|(k, _)| *k <= key) {
        Some(i) if q[i].0 == key => add(&mut q[i].1, c),
        Some(i) => q.insert(i + 1, (key, *c)),
        None => q.push_front((key, *c)),
    }
}

/// What a pod last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    generation: Option<u64>,
    /// When the collector received it.
    at: jiff::Timestamp,
    /// The end of the reported slice (orders the reports of one pod).
    end: jiff::Timestamp,
}

/// One namespace's evidence.
#[derive(Debug, Default)]
pub struct NamespaceEvidence {
    actions: HashMap<String, Series>,
    pods: HashMap<String, Seen>,
}

/// Every namespace's evidence, on the leader.
#[derive(Debug, Default)]
pub struct Evidence(HashMap<String, NamespaceEvidence>);

impl Evidence {
    /// Keeps what was recorded for the namespaces for which `keep` is true.
    pub fn keep_namespaces(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|ns, _| keep(ns));
    }

    /// Files the per-action counts and the generation of one accepted report; returns the
    /// counts it kept (for the metrics).
    pub fn record(&mut self, r: &Report, now: jiff::Timestamp) -> Vec<ActionCount> {
        let ns = self.0.entry(r.sidecar.namespace.clone()).or_default();
        let seen = Seen {
            generation: r.generation,
            at: now,
            end: r.end,
        };
        let known = ns.pods.contains_key(&r.sidecar.pod);
        if known || ns.pods.len() < MAX_PODS_PER_NAMESPACE {
            // A late report (from the backlog) does not roll a pod's generation back.
            let entry = ns.pods.entry(r.sidecar.pod.clone()).or_insert(seen);
            if r.end >= entry.end {
                *entry = seen;
            }
        }
        let (at, now_s) = (r.end.as_second(), now.as_second());
        let mut kept = Vec::new();
        for c in &r.actions {
            let room = ns.actions.len() < MAX_ACTIONS_PER_NAMESPACE;
            let series = match ns.actions.get_mut(&c.name) {
                Some(s) => s,
                None if room => ns.actions.entry(c.name.clone()).or_default(),
                None => continue,
            };
            series.add(at, &triple(c), now_s);
            kept.push(c.clone());
        }
        kept
    }

    /// What each pod of `ns` last reported: when the collector received it, and the bundle
    /// generation its sidecar enforced.
    pub fn reported(&self, ns: &str) -> HashMap<String, (jiff::Timestamp, Option<u64>)> {
        self.0.get(ns).map_or_else(HashMap::new, |e| {
            e.pods
                .iter()
                .map(|(pod, s)| (pod.clone(), (s.at, s.generation)))
                .collect()
        })
    }

    /// The status fields of action `name` of `ns`: its counts, and `N/M` of the selected
    /// pods (`selected`, by name) that reported `generation` or later within [`POD_STALE`].
    pub fn status(
        &self,
        ns: &str,
        name: &str,
        selected: &[&str],
        generation: Option<u64>,
        now: jiff::Timestamp,
    ) -> Fields {
        let e = self.0.get(ns);
        let [matched, observed, decided] = e
            .and_then(|e| e.actions.get(name))
            .map_or_else(Default::default, |s| s.windows(now.as_second()));
        let enforcing = generation.map_or(0, |g| {
            selected
                .iter()
                .filter_map(|p| e?.pods.get(*p))
                .filter(|s| now.duration_since(s.at) < POD_STALE)
                .filter(|s| s.generation.is_some_and(|have| have >= g))
                .count()
        });
        Fields {
            enforcing_pods: format!("{enforcing}/{}", selected.len()),
            matched,
            observed,
            decided,
        }
    }

    /// Drops the series of actions not in `actions` (by namespace) or without a count in the
    /// last day, stale pods, and namespaces without actions or pods; rolls the series forward
    /// to `now`. A namespace that still has actions is kept when its last pod goes stale, so
    /// its actions go on being written (`0/M`). Returns the actions dropped, by namespace.
    pub fn retain(
        &mut self,
        actions: &HashMap<&str, HashSet<&str>>,
        now: jiff::Timestamp,
    ) -> BTreeMap<String, Vec<String>> {
        let mut gone: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (ns, e) in &mut self.0 {
            let names = actions.get(ns.as_str());
            e.actions.retain(|name, s| {
                s.roll(now.as_second());
                let keep = !s.is_empty() && names.is_some_and(|n| n.contains(name.as_str()));
                if !keep {
                    gone.entry(ns.clone()).or_default().push(name.clone());
                }
                keep
            });
            e.pods.retain(|_, s| now.duration_since(s.at) < POD_STALE);
        }
        self.0
            .retain(|ns, e| actions.contains_key(ns.as_str()) || !e.pods.is_empty());
        gone
    }

    /// The action counts of `ns`, by action name (for the persisted state).
    pub fn series_of(&self, ns: &str) -> BTreeMap<String, Series> {
        self.0.get(ns).map_or_else(BTreeMap::new, |e| {
            e.actions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Restores the action counts of `ns` from the persisted state (a new leader); at most
    /// [`MAX_ACTIONS_PER_NAMESPACE`] of them.
    pub fn restore(&mut self, ns: &str, actions: &BTreeMap<String, Series>) {
        if actions.is_empty() {
            return;
        }
        let e = self.0.entry(ns.to_owned()).or_default();
        for (name, s) in actions.iter().take(MAX_ACTIONS_PER_NAMESPACE) {
            e.actions.insert(name.clone(), s.clone());
        }
    }

    /// The namespaces with anything recorded.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// The fields the collector writes into a SecurityAction's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// `N/M`.
    pub enforcing_pods: String,
    /// Matched counts.
    pub matched: RequestCounts,
    /// Observed counts.
    pub observed: RequestCounts,
    /// Decided counts.
    pub decided: RequestCounts,
}

impl Fields {
    /// Whether `status` already shows these values.
    fn shown_in(&self, status: Option<&palisade_crds::SecurityActionStatus>) -> bool {
        status.is_some_and(|s| {
            s.enforcing_pods.as_deref() == Some(self.enforcing_pods.as_str())
                && s.matched_requests == Some(self.matched)
                && s.observed_requests == Some(self.observed)
                && s.decided_requests == Some(self.decided)
        })
    }

    fn patch(&self) -> serde_json::Value {
        json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityAction", "status": {
            "enforcingPods": self.enforcing_pods,
            "matchedRequests": self.matched,
            "observedRequests": self.observed,
            "decidedRequests": self.decided,
        }})
    }
}

/// Counts one report's kept action counts in `palisade_action_requests_total`.
pub fn count_metrics(c: &Collector, ns: &str, kept: &[ActionCount]) {
    let m = &c.ctx.metrics.action_requests;
    for a in kept {
        for (result, n) in [
            ("matched", a.matched),
            ("observed", a.observed),
            ("decided", a.decided),
        ] {
            if n > 0 {
                let labels = ActionLabels {
                    namespace: ns.to_owned(),
                    action: a.name.clone(),
                    result,
                };
                m.get_or_create(&labels).inc_by(n);
            }
        }
    }
}

/// On the leader, writes the evidence every `--evidence-interval` (and runs the posture
/// checks), from the operator's shared watches of the selected namespaces, every
/// SecurityAction and the pods that carry the sidecar.
pub async fn run(c: Arc<Collector>) -> anyhow::Result<()> {
    let actions = c.ctx.caches.actions.clone();
    let pods = c.ctx.caches.injected_pods.clone();
    tokio::select! {
        r = write_loop(&c, &actions, &pods) => r,
        r = posture_loop(&c, &actions, &pods) => r,
    }
}

/// Waits until the watches have listed everything; `false` when the operator shuts down
/// first.
async fn watches_ready(c: &Collector) -> bool {
    // (On the operator's readiness, not the stores': see `Caches::mark_filled`.)
    tokio::select! {
        () = c.ctx.caches.wait_until_ready() => true,
        () = c.ctx.shutdown.cancelled() => false,
    }
}

/// The posture checks ([`super::posture`]), once the watches have listed everything.
async fn posture_loop(
    c: &Collector,
    actions: &Store<SecurityAction>,
    pods: &Store<Pod>,
) -> anyhow::Result<()> {
    if !watches_ready(c).await {
        return Ok(());
    }
    super::posture::run(c, actions, pods).await
}

async fn write_loop(
    c: &Collector,
    actions: &Store<SecurityAction>,
    pods: &Store<Pod>,
) -> anyhow::Result<()> {
    if !watches_ready(c).await {
        return Ok(());
    }
    let mut tick = tokio::time::interval(c.ctx.args.evidence_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            () = c.ctx.shutdown.cancelled() => return Ok(()),
        }
        if !c.owns_any() {
            continue;
        }
        let all = actions.state();
        let due = due_writes(c, &all, &pods.state(), &c.namespaces.state());
        for i in this_round(due.len(), turn) {
            let (a, fields) = &due[i];
            write(c, a, fields).await;
        }
        turn = turn.wrapping_add(MAX_WRITES_PER_UPDATE);
    }
}

/// Which of `n` due writes update number `turn` makes: all of them, or when more are due than
/// one update writes, [`MAX_WRITES_PER_UPDATE`] of them starting where the last round stopped.
fn this_round(n: usize, turn: usize) -> impl Iterator<Item = usize> {
    let start = if n > MAX_WRITES_PER_UPDATE {
        turn % n
    } else {
        0
    };
    (0..n.min(MAX_WRITES_PER_UPDATE)).map(move |k| (start + k) % n)
}

/// The actions of the selected namespaces whose status does not show their evidence yet,
/// with the fields to write; forgets the evidence of deleted actions.
fn due_writes(
    c: &Collector,
    all: &[Arc<SecurityAction>],
    pods: &[Arc<Pod>],
    namespaces: &[Arc<Namespace>],
) -> Vec<(Arc<SecurityAction>, Fields)> {
    let now = jiff::Timestamp::now();
    let selected: HashSet<String> = namespaces.iter().map(|n| n.name_any()).collect();
    let mut by_ns: HashMap<&str, HashSet<&str>> = HashMap::new();
    for a in all {
        if let Some(ns) = a.metadata.namespace.as_deref() {
            by_ns
                .entry(ns)
                .or_default()
                .insert(a.metadata.name.as_deref().unwrap_or(""));
        }
    }
    let mut pods_by_ns: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in pods {
        if p.metadata.deletion_timestamp.is_none()
            && let Some(ns) = p.metadata.namespace.as_deref()
        {
            pods_by_ns.entry(ns).or_default().push(p);
        }
    }
    let mut state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
    let evidence = &mut state.evidence;
    forget_metrics(c, &evidence.retain(&by_ns, now));
    let reported: HashSet<&str> = evidence.namespaces().collect();
    let mut due = Vec::new();
    for a in all {
        let Some(ns) = a.metadata.namespace.as_deref() else {
            continue;
        };
        // Only where this operator works, and once a sidecar there has reported: the
        // operator of another namespace selector (or none yet) does not overwrite it.
        if !selected.contains(ns) || !reported.contains(ns) || !c.owns(ns) {
            continue;
        }
        let selector = a
            .spec
            .targets
            .as_ref()
            .and_then(|t| t.workload_selector.as_ref());
        let chosen: Vec<&str> = pods_by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .filter(|p| selector.is_none_or(|s| s.matches(p.labels())))
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let status = a.status.as_ref();
        let generation = status
            .and_then(|s| s.bundle_generation)
            .and_then(|g| u64::try_from(g).ok());
        let fields = evidence.status(ns, &a.name_any(), &chosen, generation, now);
        if !fields.shown_in(status) {
            due.push((a.clone(), fields));
        }
    }
    due
}

async fn write(c: &Collector, a: &SecurityAction, fields: &Fields) {
    let (ns, name) = (a.namespace().unwrap_or_default(), a.name_any());
    let api = Api::<SecurityAction>::namespaced(c.ctx.clients.collector.clone(), &ns);
    let pp = PatchParams::apply(MANAGER).force();
    if let Err(e) = api
        .patch_status(&name, &pp, &Patch::Apply(&fields.patch()))
        .await
    {
        tracing::warn!(namespace = %ns, action = %name, error = %e,
            "could not write the action's request counts");
    }
}

/// Removes the metric series of actions that no longer have evidence.
pub fn forget_metrics(c: &Collector, gone: &BTreeMap<String, Vec<String>>) {
    for (ns, names) in gone {
        for action in names {
            for result in ["matched", "observed", "decided"] {
                c.ctx.metrics.action_requests.remove(&ActionLabels {
                    namespace: ns.clone(),
                    action: action.clone(),
                    result,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(name: &str, matched: u64, observed: u64, decided: u64) -> ActionCount {
        ActionCount {
            name: name.into(),
            matched,
            observed,
            decided,
        }
    }

    fn counts(m5: i64, h1: i64, d1: i64) -> RequestCounts {
        RequestCounts {
            last_5m: m5,
            last_1h: h1,
            last_24h: d1,
        }
    }

    #[test]
    fn windows_sum_the_minutes_and_hours_they_cover() {
        let now = 1_000_000 * 60; // a minute boundary
        let mut s = Series::default();
        s.add(now - 30, &[1, 0, 1], now); // this minute
        s.add(now - 4 * 60, &[2, 0, 0], now); // 4 minutes ago: in the 5-minute window
        s.add(now - 6 * 60, &[4, 0, 0], now); // 6 minutes ago: not
        s.add(now - 2 * HOUR, &[8, 0, 0], now); // two hours ago: in the day only
        s.add(now - 25 * HOUR, &[16, 0, 0], now); // more than a day: dropped
        s.add(now + 600, &[32, 0, 0], now); // from the future: counted now
        let [matched, observed, decided] = s.windows(now);
        assert_eq!(matched, counts(35, 39, 47));
        assert_eq!(observed, counts(0, 0, 0));
        assert_eq!(decided, counts(1, 1, 1));
        // An hour later the minutes have moved into their hours; nothing is lost in the day.
        s.roll(now + HOUR);
        let [matched, ..] = s.windows(now + HOUR);
        assert_eq!(matched, counts(0, 0, 47));
        assert!(s.minutes.is_empty() && s.hours.len() <= 25);
        s.roll(now + 26 * HOUR);
        assert!(s.is_empty(), "{s:?}");
    }

    #[test]
    fn late_reports_land_in_their_own_bucket() {
        let now = 1_000_000 * 60;
        let mut s = Series::default();
        s.add(now, &[1, 0, 0], now);
        s.add(now - 120, &[1, 0, 0], now); // late
        s.add(now - 60, &[1, 0, 0], now); // later still, between the two
        let keys: Vec<i64> = s.minutes.iter().map(|(m, _)| *m).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(s.windows(now)[0], counts(3, 3, 3));
    }

    fn report(ns: &str, pod: &str, generation: Option<u64>, actions: Vec<ActionCount>) -> Report {
        let end = jiff::Timestamp::now();
        Report {
            version: palisade_detection::report::REPORT_VERSION,
            sidecar: palisade_detection::report::SidecarId {
                pod: pod.into(),
                workload: "api".into(),
                namespace: ns.into(),
            },
            seq: 1,
            start: end - jiff::SignedDuration::from_secs(1),
            end,
            totals: palisade_detection::stats::Totals::default(),
            clients: vec![],
            attributes: vec![],
            evicted: 0,
            actions,
            generation,
            samples: vec![],
        }
    }

    #[test]
    fn enforcing_pods_counts_the_selected_pods_at_the_generation_or_later() {
        let now = jiff::Timestamp::now();
        let mut e = Evidence::default();
        e.record(&report("shop", "api-0", Some(7), vec![]), now);
        e.record(&report("shop", "api-1", Some(6), vec![]), now);
        e.record(&report("shop", "api-2", None, vec![]), now);
        e.record(&report("other", "api-3", Some(9), vec![]), now);
        let selected = ["api-0", "api-1", "api-2", "api-3"];
        let f = e.status("shop", "deny", &selected, Some(7), now);
        assert_eq!(f.enforcing_pods, "1/4");
        assert_eq!(
            e.status("shop", "deny", &selected, Some(6), now)
                .enforcing_pods,
            "2/4"
        );
        assert_eq!(
            e.status("shop", "deny", &[], Some(6), now).enforcing_pods,
            "0/0"
        );
        // A late report of an older generation does not roll the pod back.
        let mut late = report("shop", "api-0", Some(5), vec![]);
        late.end -= jiff::SignedDuration::from_secs(30);
        e.record(&late, now);
        assert_eq!(
            e.status("shop", "deny", &selected, Some(7), now)
                .enforcing_pods,
            "1/4"
        );
        // A pod silent for three heartbeats no longer counts.
        let later = now + POD_STALE;
        assert_eq!(
            e.status("shop", "deny", &selected, Some(6), later)
                .enforcing_pods,
            "0/4"
        );
        // The namespace stays known while it has actions, so `0/4` gets written.
        let mut actions: HashMap<&str, HashSet<&str>> = HashMap::new();
        actions.insert("shop", HashSet::from(["deny"]));
        e.retain(&actions, later);
        assert_eq!(e.namespaces().collect::<Vec<_>>(), ["shop"]);
        e.retain(&HashMap::new(), later);
        assert_eq!(e.namespaces().count(), 0, "no action, no pod: forgotten");
    }

    #[test]
    fn counts_add_up_per_action_and_deleted_actions_are_forgotten() {
        let now = jiff::Timestamp::now();
        let mut e = Evidence::default();
        let kept = e.record(
            &report(
                "shop",
                "api-0",
                Some(1),
                vec![count("deny", 3, 0, 2), count("obs", 0, 5, 0)],
            ),
            now,
        );
        assert_eq!(kept.len(), 2);
        e.record(
            &report("shop", "api-1", Some(1), vec![count("deny", 1, 0, 1)]),
            now,
        );
        let f = e.status("shop", "deny", &[], Some(1), now);
        assert_eq!(f.matched, counts(4, 4, 4));
        assert_eq!(f.decided, counts(3, 3, 3));
        assert_eq!(
            e.status("shop", "obs", &[], None, now).observed,
            counts(5, 5, 5)
        );
        let mut actions: HashMap<&str, HashSet<&str>> = HashMap::new();
        actions.insert("shop", HashSet::from(["deny"]));
        let gone = e.retain(&actions, now);
        assert_eq!(gone["shop"], ["obs"]);
        assert_eq!(
            e.status("shop", "obs", &[], None, now).observed,
            counts(0, 0, 0)
        );
        assert_eq!(
            e.status("shop", "deny", &[], None, now).matched,
            counts(4, 4, 4)
        );
    }

    #[test]
    fn when_more_are_due_than_one_update_writes_they_take_turns() {
        assert_eq!(this_round(3, 700).collect::<Vec<_>>(), [0, 1, 2]);
        let n = 250;
        let mut seen = HashSet::new();
        for round in 0..3 {
            let writes: Vec<usize> = this_round(n, round * MAX_WRITES_PER_UPDATE).collect();
            assert_eq!(writes.len(), MAX_WRITES_PER_UPDATE);
            seen.extend(writes);
        }
        assert_eq!(
            seen.len(),
            n,
            "every due action written within three updates"
        );
    }

    #[test]
    fn a_hostile_pod_cannot_grow_the_names_without_bound() {
        let now = jiff::Timestamp::now();
        let mut e = Evidence::default();
        for batch in 0..3 {
            let names = (0..MAX_ACTIONS_PER_NAMESPACE)
                .map(|i| count(&format!("a-{batch}-{i}"), 1, 0, 0))
                .collect();
            e.record(&report("shop", "evil", Some(1), names), now);
        }
        assert_eq!(e.0["shop"].actions.len(), MAX_ACTIONS_PER_NAMESPACE);
        for i in 0..MAX_PODS_PER_NAMESPACE + 10 {
            e.record(&report("shop", &format!("pod-{i}"), Some(1), vec![]), now);
        }
        assert_eq!(e.0["shop"].pods.len(), MAX_PODS_PER_NAMESPACE);
    }
}
