//! An environment-wide error surge: most of a namespace's clients get errors from the app at
//! once (a bad deploy, an expired upstream credential, a dependency down). Brute Guessor and
//! Robot Abuser judge each client against the namespace's own error ratio, so the surge flags
//! no client; instead the collector checks each namespace's short window every tick
//! ([`check`], pure) and makes the surge one SecurityIncident of scope `Namespace`
//! ([`Surges`]): opened with a Warning Event `ErrorSurge` when the surge is reported, refreshed
//! every tick while it lasts (errors, peak share, the paths and response codes of the failing
//! clients), ended with a Normal Event `ErrorSurgeEnded`. It proposes no action: nobody is to
//! be denied for errors everyone gets.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use palisade_detection::incident::{add_point, minute_of, with_partial};
use palisade_detection::key::{ClientKey, ClientKeyKind};
use palisade_detection::stats::AttrDim;
use palisade_detection::window::{WindowView, Windows};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Fewest answered requests in the window before anything is concluded.
pub const MIN_ANSWERED: u64 = 200;
/// Fewest clients (by IP) the app answered in the window: a surge is about a population.
pub const MIN_CLIENTS: u64 = 10;
/// Share of the answered requests that were errors at which a surge is reported (percent),
/// when at least half the clients see errors on most of their requests.
pub const RAISE_PERCENT: u64 = 50;
/// Share below which a reported surge is over (percent): the gap keeps a namespace near the
/// threshold from being reported again and again.
pub const CLEAR_PERCENT: u64 = 20;

/// What the check found in a namespace's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Errors (4xx/5xx from the app) in the window.
    pub errors: u64,
    /// Requests the app answered in the window.
    pub answered: u64,
    /// Clients with errors on at least half of their answered requests.
    pub failing: u64,
    /// Clients the app answered.
    pub clients: u64,
}

impl Finding {
    /// The errors' share, in whole percent.
    pub fn percent(&self) -> u64 {
        self.errors * 100 / self.answered.max(1)
    }

    /// Whether this is a surge: the share reached [`RAISE_PERCENT`] and half the clients or
    /// more are failing.
    pub fn is_surge(&self) -> bool {
        self.percent() >= RAISE_PERCENT && self.failing * 2 >= self.clients
    }

    /// The Event note: what was seen, what it means for detection, and where to look.
    pub fn note(&self, paths: &[(String, u64)]) -> String {
        let paths: Vec<String> = paths
            .iter()
            .map(|(p, n)| format!("{p} ({n} sampled requests)"))
            .collect();
        let seen = if paths.is_empty() {
            String::new()
        } else {
            format!("; the paths requested most meanwhile: {}", paths.join(", "))
        };
        format!(
            "error surge: {}% of the last {} answers from the app were errors, and {} of {} \
             clients got errors on most of their requests. The application or something it \
             depends on is failing for everyone; Brute Guessor and Robot Abuser do not flag \
             clients for errors everyone gets{seen}",
            self.percent(),
            self.answered,
            self.failing,
            self.clients
        )
    }
}

/// The namespace's error share and how many of its clients fail, from `view` (the short
/// window); `None` with fewer than [`MIN_ANSWERED`] answers or [`MIN_CLIENTS`] clients.
pub fn check(view: &WindowView) -> Option<Finding> {
    let answered = view.totals.answered();
    if answered < MIN_ANSWERED {
        return None;
    }
    let (mut clients, mut failing) = (0u64, 0u64);
    for (key, w) in &view.clients {
        let a = w.totals.answered();
        if key.kind() != ClientKeyKind::Ip || a == 0 {
            continue;
        }
        clients += 1;
        failing += u64::from(w.totals.errors * 2 >= a);
    }
    if clients < MIN_CLIENTS {
        return None;
    }
    Some(Finding {
        errors: view.totals.errors.min(answered),
        answered,
        failing,
        clients,
    })
}

/// The most minutes kept in a surge's error series (one day, as for client incidents).
const SERIES_MINUTES: usize = 1440;
/// Top values kept per attribute.
const TOP: usize = 10;
/// Failing clients whose attributes are summed (the heaviest first).
const MAX_ATTR_CLIENTS: usize = 1000;

/// One error surge of a namespace, from the tick it was reported to the tick it ended: the
/// SecurityIncident of scope `Namespace` that stands for it. Persisted with the collector's
/// state, so a new leader goes on with the same incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Surge {
    /// The incident's name: `surge-` and a hash of the namespace and the start.
    pub id: String,
    /// When the surge was reported (the incident's first detection).
    pub started: Timestamp,
    /// The last tick that found the namespace still in the surge.
    pub last_detected: Timestamp,
    /// When it was over (the share of errors fell below [`CLEAR_PERCENT`], or the namespace
    /// went quiet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Timestamp>,
    /// The finding with the highest share of errors so far.
    pub peak: Finding,
    /// The app's errors in the short slices counted so far (from the window that showed the
    /// surge: the errors that made it).
    pub errors: u64,
    /// Errors of the current, partial slice (counted again at the next tick).
    #[serde(default)]
    pub errors_partial: u64,
    /// Slices before this are in `errors`.
    pub counted_until: Timestamp,
    /// Errors per minute, oldest first.
    #[serde(default)]
    pub series: Vec<(Timestamp, u64)>,
    /// What the failing clients sent meanwhile (sampled): paths, response codes, regions,
    /// user agents, workloads, addresses — each dimension's heaviest values.
    #[serde(default)]
    pub attributes: BTreeMap<AttrDim, Vec<(String, u64)>>,
    /// Distinct values of each dimension.
    #[serde(default)]
    pub attribute_distinct: BTreeMap<AttrDim, u64>,
}

impl Surge {
    fn open(ns: &str, finding: Finding, windows: &Windows, now: Timestamp) -> Self {
        let digest = Sha256::digest(format!("{ns}\0{}", now.as_millisecond()));
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            id: format!("surge-{hex}"),
            started: now,
            last_detected: now,
            ended: None,
            peak: finding,
            errors: 0,
            errors_partial: 0,
            counted_until: windows.short_slice_start(now - windows.short_span()),
            series: Vec::new(),
            attributes: BTreeMap::new(),
            attribute_distinct: BTreeMap::new(),
        }
    }

    /// The most requested path of the failing clients, if any was sampled.
    pub fn top_path(&self) -> Option<&str> {
        self.attributes
            .get(&AttrDim::Path)
            .and_then(|p| p.first())
            .map(|(p, _)| p.as_str())
    }

    /// The incident's display name.
    pub fn display_name(&self) -> String {
        let on = self
            .top_path()
            .map(|p| format!(" on {p}"))
            .unwrap_or_default();
        format!(
            "Error surge{on}: {}% errors, {} of {} clients failing",
            self.peak.percent(),
            self.peak.failing,
            self.peak.clients
        )
    }

    /// Errors, the partial slice included.
    pub fn requests(&self) -> u64 {
        self.errors + self.errors_partial
    }

    /// The error series with the current, partial slice added.
    pub fn series_with_partial(&self) -> Vec<(Timestamp, u64)> {
        with_partial(&self.series, self.counted_until, self.errors_partial)
    }

    /// Counts the errors of the slices closed since the last tick and re-reads what the
    /// failing clients sent since the surge started (and in the short window before it).
    fn refresh(&mut self, view: &WindowView, windows: &Windows, now: Timestamp) {
        let until = windows.short_slice_start(now);
        for (slice, totals) in windows.totals_between(self.counted_until, until) {
            let errors = totals.errors.min(totals.answered());
            self.errors += errors;
            add_point(&mut self.series, minute_of(slice), errors);
        }
        self.counted_until = self.counted_until.max(until);
        self.errors_partial = windows
            .totals_between(until, until + windows.short_span())
            .iter()
            .map(|(_, t)| t.errors.min(t.answered()))
            .sum();
        let excess = self.series.len().saturating_sub(SERIES_MINUTES);
        self.series.drain(..excess);
        let mut failing: Vec<(ClientKey, u64)> = view
            .clients
            .iter()
            .filter(|(_, w)| {
                let a = w.totals.answered();
                a > 0 && w.totals.errors * 2 >= a
            })
            .map(|(k, w)| (*k, w.totals.answered()))
            .collect();
        failing.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let failing: Vec<ClientKey> = failing
            .into_iter()
            .take(MAX_ATTR_CLIENTS)
            .map(|(k, _)| k)
            .collect();
        if failing.is_empty() {
            return;
        }
        // From the start of the short window that showed the surge: the reports that raised it
        // may sit in a long-window slice that closed just before the opening tick.
        let since = self.started - windows.short_span();
        let summary = windows.attributes_since(&failing, since, now, TOP);
        self.attributes = summary.top;
        self.attribute_distinct = summary.distinct;
    }
}

/// What a tick changed about a namespace's surge.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A surge was reported now: its incident is to be created, with an Event.
    Opened(Finding),
    /// The surge goes on (its status is refreshed).
    Ongoing,
    /// The surge is over: its last status is written, with an Event; the surge is forgotten.
    Ended(Box<Surge>),
}

/// The namespaces' ongoing surges.
#[derive(Debug, Default)]
pub struct Surges(HashMap<String, Surge>);

impl Surges {
    /// Keeps the surges of the namespaces for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|ns, _| keep(ns));
    }

    /// Records this tick's finding for `ns` (`view`: its short window). A surge is reported
    /// when none is on and [`Finding::is_surge`]; it ends when the share falls below
    /// [`CLEAR_PERCENT`] or the namespace goes quiet (no finding).
    pub fn update(
        &mut self,
        ns: &str,
        finding: Option<Finding>,
        view: &WindowView,
        windows: &Windows,
        now: Timestamp,
    ) -> Option<Change> {
        let percent = finding.as_ref().map_or(0, Finding::percent);
        if let Some(surge) = self.0.get_mut(ns) {
            surge.refresh(view, windows, now);
            if percent < CLEAR_PERCENT {
                let mut ended = self.0.remove(ns)?;
                ended.ended = Some(now);
                return Some(Change::Ended(Box::new(ended)));
            }
            surge.last_detected = now;
            if let Some(f) = finding
                && (f.percent(), f.failing) > (surge.peak.percent(), surge.peak.failing)
            {
                surge.peak = f;
            }
            return Some(Change::Ongoing);
        }
        let f = finding.filter(Finding::is_surge)?;
        let mut surge = Surge::open(ns, f.clone(), windows, now);
        surge.refresh(view, windows, now);
        self.0.insert(ns.to_owned(), surge);
        Some(Change::Opened(f))
    }

    /// The ongoing surge of `ns`.
    pub fn get(&self, ns: &str) -> Option<&Surge> {
        self.0.get(ns)
    }

    /// Restores a persisted ongoing surge.
    pub fn restore(&mut self, ns: &str, surge: Surge) {
        if surge.ended.is_none() {
            self.0.insert(ns.to_owned(), surge);
        }
    }

    /// How many namespaces are in a surge.
    pub fn ongoing(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_detection::counter::{Counter, CounterConfig};
    use palisade_detection::facts::RequestFacts;
    use palisade_detection::report::SidecarId;
    use palisade_detection::stats::ClientWindow;
    use palisade_detection::window::WindowConfig;

    /// A window of `n` clients with `each` answers, `errors` of them errors.
    fn view(n: u32, each: u64, errors: u64) -> WindowView {
        let mut v = WindowView {
            span: jiff::SignedDuration::from_secs(300),
            ..Default::default()
        };
        for i in 0..n {
            let mut w = ClientWindow::default();
            w.totals.requests = each;
            w.totals.errors = errors;
            v.totals.requests += each;
            v.totals.errors += errors;
            let ip = std::net::Ipv4Addr::from(0xc633_6400 + i);
            v.clients.insert(ClientKey::Ip(ip.into()), w);
        }
        v
    }

    fn t(s: i64) -> Timestamp {
        // A multiple of 15 minutes, so that short and long slices and minutes line up.
        Timestamp::from_second(1_800_000_000 + s).expect("ts")
    }

    /// One 30 s slice ending at `t(end)`: 40 clients with 2 requests each to `/login`, answered
    /// `status`; every request's attributes sampled.
    fn slice(counter: &mut Counter, windows: &mut Windows, end: i64, status: u16) {
        for i in 0..40u32 {
            let ip = std::net::Ipv4Addr::from(0xc633_6400 + i);
            for _ in 0..2 {
                let mut f = RequestFacts::new(ip.into(), status);
                f.attrs.path = Some("/login");
                counter.record(&f);
            }
        }
        windows.merge(&counter.take_report(t(end)), t(end));
    }

    fn tick(surges: &mut Surges, windows: &Windows, now: i64) -> Option<Change> {
        let view = windows.short(t(now));
        surges.update("shop", check(&view), &view, windows, t(now))
    }

    /// A pod's counter sampling every request's attributes from `t(start)`, empty windows, no
    /// surge.
    fn fresh(start: i64) -> (Counter, Windows, Surges) {
        let id = SidecarId {
            pod: "api-0".into(),
            workload: "api".into(),
            namespace: "shop".into(),
        };
        let cfg = CounterConfig {
            attr_sample: 1,
            ..CounterConfig::default()
        };
        let counter = Counter::new(id, &cfg, t(start));
        (
            counter,
            Windows::new(&WindowConfig::default()),
            Surges::default(),
        )
    }

    /// The reports that raise a surge can all sit in the long-window slice that closed just
    /// before the opening tick: the incident still names the paths of that window.
    #[test]
    fn a_surge_opened_just_after_a_long_slice_boundary_names_its_paths() {
        let (mut counter, mut windows, mut surges) = fresh(570);
        // Every answer 401, all merged before t(900), where a 15-minute slice ends.
        for end in (600..=870).step_by(30) {
            slice(&mut counter, &mut windows, end, 401);
        }
        let Some(Change::Opened(_)) = tick(&mut surges, &windows, 901) else {
            panic!("a surge is reported once the window is mostly errors");
        };
        let surge = surges.get("shop").expect("ongoing");
        assert_eq!(surge.top_path(), Some("/login"), "{:?}", surge.attributes);
    }

    #[test]
    fn a_bad_deploy_is_one_incident_from_the_first_tick_to_recovery() {
        let (mut counter, mut windows, mut surges) = fresh(0);
        // Healthy: no surge, nothing to write.
        for end in (30..=120).step_by(30) {
            slice(&mut counter, &mut windows, end, 200);
        }
        assert_eq!(tick(&mut surges, &windows, 121), None);
        // A bad deploy: every answer is 401.
        for end in (150..=300).step_by(30) {
            slice(&mut counter, &mut windows, end, 401);
        }
        let Some(Change::Opened(f)) = tick(&mut surges, &windows, 301) else {
            panic!("a surge is reported once the window is mostly errors");
        };
        assert_eq!((f.failing, f.clients), (40, 40));
        let first = surges.get("shop").expect("ongoing").clone();
        assert!(first.id.starts_with("surge-"), "{}", first.id);
        // The errors of the six failing slices (the healthy ones before add none).
        assert_eq!(first.requests(), 6 * 80);
        let status = super::super::incident_cr::surge_status(&first, false);
        assert_eq!(
            status.display_name.as_deref(),
            Some("Error surge on /login: 66% errors, 40 of 40 clients failing")
        );
        assert_eq!(
            status.scope,
            Some(palisade_crds::incident::IncidentScope::Namespace)
        );
        assert_eq!(status.rules_summary.as_deref(), Some("error surge"));
        assert!(status.detection_rules.is_empty() && status.proposed_action.is_none());
        assert_eq!((status.clients, status.requests), (Some(40), Some(480)));
        let attrs = status.attributes.expect("attributes");
        let codes = attrs.response_codes.expect("response codes");
        assert_eq!(codes.top[0].value, "401", "{codes:?}");
        assert_eq!(attrs.paths.expect("paths").top[0].value, "/login");
        let minutes: Vec<i64> = status.traffic.expect("series").requests;
        assert_eq!(minutes.iter().sum::<i64>(), 480, "{minutes:?}");
        // It goes on: the same incident, more errors, a higher peak.
        for end in (330..=420).step_by(30) {
            slice(&mut counter, &mut windows, end, 401);
        }
        assert_eq!(tick(&mut surges, &windows, 421), Some(Change::Ongoing));
        let on = surges.get("shop").expect("ongoing");
        assert_eq!(on.id, first.id, "one incident for the episode");
        assert_eq!(on.requests(), 10 * 80);
        assert_eq!(on.peak.percent(), 100);
        assert_eq!(on.started, first.started);
        // Fixed, but the window still holds the errors (66 %): the same episode.
        for end in (450..=510).step_by(30) {
            slice(&mut counter, &mut windows, end, 200);
        }
        assert_eq!(tick(&mut surges, &windows, 511), Some(Change::Ongoing));
        // Healthy for a whole window: over.
        for end in (540..=840).step_by(30) {
            slice(&mut counter, &mut windows, end, 200);
        }
        let Some(Change::Ended(ended)) = tick(&mut surges, &windows, 841) else {
            panic!("the surge ends once errors fall below {CLEAR_PERCENT}%");
        };
        assert_eq!(
            (ended.id.as_str(), ended.ended),
            (first.id.as_str(), Some(t(841)))
        );
        assert_eq!(
            ended.requests(),
            10 * 80,
            "no error after the deploy was fixed"
        );
        let status = super::super::incident_cr::surge_status(&ended, false);
        assert_eq!(
            status.duration.map(|d| d.as_str().to_owned()).as_deref(),
            Some("9m")
        );
        assert!(surges.get("shop").is_none() && surges.ongoing() == 0);
        assert_eq!(
            tick(&mut surges, &windows, 871),
            None,
            "nothing left to write"
        );
        // Failing again: a new episode, a new incident.
        for end in (870..=1170).step_by(30) {
            slice(&mut counter, &mut windows, end, 503);
        }
        assert!(matches!(
            tick(&mut surges, &windows, 1171),
            Some(Change::Opened(_))
        ));
        assert_ne!(surges.get("shop").expect("new").id, first.id);
    }

    #[test]
    fn a_surge_survives_the_snapshot_and_only_an_ongoing_one_is_restored() {
        let mut windows = Windows::new(&WindowConfig::default());
        let mut counter = Counter::new(
            SidecarId {
                pod: "api-0".into(),
                workload: "api".into(),
                namespace: "shop".into(),
            },
            &CounterConfig::default(),
            t(0),
        );
        for end in (30..=300).step_by(30) {
            slice(&mut counter, &mut windows, end, 500);
        }
        let mut surges = Surges::default();
        assert!(matches!(
            tick(&mut surges, &windows, 301),
            Some(Change::Opened(_))
        ));
        let on = surges.get("shop").expect("ongoing").clone();
        let json = serde_json::to_string(&on).expect("encode");
        let back: Surge = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, on);
        let mut restored = Surges::default();
        restored.restore("shop", back.clone());
        assert_eq!(tick(&mut restored, &windows, 331), Some(Change::Ongoing));
        assert_eq!(restored.get("shop").map(|s| s.id.clone()), Some(on.id));
        let mut ended = back;
        ended.ended = Some(t(400));
        let mut none = Surges::default();
        none.restore("shop", ended);
        assert_eq!(none.ongoing(), 0, "an ended surge is not restored");
    }

    #[test]
    fn a_few_failing_clients_or_a_quiet_namespace_are_no_surge() {
        // One guesser with 100 % errors among 39 healthy clients: 2.5 % of the clients.
        let mut v = view(39, 20, 0);
        let mut guesser = ClientWindow::default();
        guesser.totals.requests = 2_000;
        guesser.totals.errors = 2_000;
        v.totals.requests += 2_000;
        v.totals.errors += 2_000;
        v.clients
            .insert(ClientKey::Ip("203.0.113.9".parse().expect("ip")), guesser);
        let f = check(&v).expect("enough traffic");
        assert!(
            f.percent() >= RAISE_PERCENT,
            "most errors are the guesser's"
        );
        assert!(!f.is_surge(), "but one client is not an environment");
        assert!(check(&view(5, 100, 100)).is_none(), "five clients");
        assert!(check(&view(40, 4, 4)).is_none(), "160 answers");
    }
}
