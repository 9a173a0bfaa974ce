//! Clustering detections into incidents.
//!
//! A detection joins an *active* incident of its namespace when it is close in time
//! (within `mergeGap` of the incident's last detection) and it either concerns a client the
//! incident already holds, or comes from a rule the incident already holds and from the
//! same network (/24 for IPv4, /48 for IPv6) as one of its clients. A detection that joins
//! several incidents merges them into the oldest. Otherwise it opens a new incident.
//!
//! Identity is stable: an incident's id is a hash of its namespace and its first detection
//! (rule, client, time), and re-running [`cluster`] on the same detections updates the
//! same incidents instead of duplicating them (a client already in an incident joins it
//! again; traffic is only counted for slices not counted yet). An incident closes after
//! `quietPeriod` without detections; closed and archived incidents never absorb new
//! detections, so a client detected again later opens a new incident.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::key::ClientKey;
use crate::risk::{RiskInputs, RiskLevel, risk_score};
use crate::rule_spec::RuleType;
use crate::rules::{Detection, Detections};
use crate::stats::AttrDim;
use crate::window::Windows;

/// Clustering parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentConfig {
    /// Largest gap between an incident's last detection and a new one that joins it
    /// (default 30 min).
    pub merge_gap: SignedDuration,
    /// An incident without detections for this long closes (default 2 h).
    pub quiet_period: SignedDuration,
    /// Incidents are deleted this long after their last detection (default 14 days).
    pub retention: SignedDuration,
    /// Clients listed per incident (default 1000; more are counted, not listed).
    pub max_clients: usize,
    /// Per-minute traffic points kept (default 1440: one day).
    pub series_minutes: usize,
    /// Values kept per attribute (default 10, what a SecurityIncident shows).
    pub top_k: usize,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            merge_gap: SignedDuration::from_mins(30),
            quiet_period: SignedDuration::from_hours(2),
            retention: SignedDuration::from_hours(14 * 24),
            max_clients: 1000,
            series_minutes: 1440,
            top_k: 10,
        }
    }
}

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncidentState {
    /// Detections may still join it.
    Active,
    /// Quiet for `quietPeriod`: kept for review, never reopened.
    Closed,
    /// Archived by a person: kept, never reopened.
    Archived,
}

/// A group of detections that belong together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// Stable id (`inc-` + 16 hex digits).
    pub id: String,
    /// Namespace (environment).
    pub namespace: String,
    /// Generated summary, e.g. `Flooder from ip:203.0.113.7`.
    pub display_name: String,
    /// Life cycle state.
    pub state: IncidentState,
    /// Risk level (only rises while active).
    pub risk: RiskLevel,
    /// Risk score behind the level (see [`crate::risk`]).
    pub risk_score: u32,
    /// Names of the rules that fired.
    pub rules: BTreeSet<String>,
    /// Types of the rules that fired.
    pub rule_types: BTreeSet<RuleType>,
    /// Detected clients (at most `maxClients`).
    pub clients: BTreeSet<ClientKey>,
    /// Clients detected but not listed because of the bound.
    pub clients_unlisted: u64,
    /// Requests of the incident's clients since their detection windows began, in completed
    /// short slices (up to `countedUntil`).
    pub traffic: u64,
    /// Requests of the incident's clients in the current, partial short slice (recounted at
    /// every refresh, so a short incident does not show 0 requests).
    #[serde(default)]
    pub traffic_partial: u64,
    /// First detection.
    pub first_detected: Timestamp,
    /// Last detection.
    pub last_detected: Timestamp,
    /// Traffic is counted up to here (a short-slice boundary).
    pub counted_until: Timestamp,
    /// Requests per minute (minute start, requests), oldest first, bounded.
    pub series: Vec<(Timestamp, u64)>,
    /// Top attribute values of the incident's clients over the long window.
    pub attributes: BTreeMap<AttrDim, Vec<(String, u64)>>,
    /// Distinct values of each attribute (all of them, not only the top ones).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attribute_distinct: BTreeMap<AttrDim, u64>,
    /// When each top value of `attributes` was last seen, in the same order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attribute_last_seen: BTreeMap<AttrDim, Vec<Timestamp>>,
    /// The listed clients each rule detected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rule_clients: BTreeMap<String, BTreeSet<ClientKey>>,
    /// Requests over the long window of the clients each rule detected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rule_requests: BTreeMap<String, u64>,
    /// Highest share of the namespace's requests seen in a short window.
    pub peak_share: f64,
    /// Ids of incidents merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

impl Incident {
    /// Duration from first to last detection.
    pub fn duration(&self) -> SignedDuration {
        self.last_detected.duration_since(self.first_detected)
    }

    /// Incident traffic: completed slices plus the current partial one.
    pub fn requests(&self) -> u64 {
        self.traffic + self.traffic_partial
    }

    /// Requests per minute, the current partial slice included in its minute.
    pub fn series_with_partial(&self) -> Vec<(Timestamp, u64)> {
        with_partial(&self.series, self.counted_until, self.traffic_partial)
    }
}

/// What a clustering run changed that people act on (Events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentEvent {
    /// A new incident.
    Opened {
        /// Its id.
        id: String,
    },
    /// An incident's risk level rose.
    RiskRaised {
        /// Its id.
        id: String,
        /// Previous level.
        from: RiskLevel,
        /// New level.
        to: RiskLevel,
    },
    /// Incidents were merged into one.
    Merged {
        /// The surviving incident.
        into: String,
        /// The absorbed one.
        from: String,
    },
    /// An incident closed after its quiet period.
    Closed {
        /// Its id.
        id: String,
    },
}

/// Folds `detections` of `namespace` into `incidents` at `now` and refreshes the traffic,
/// attributes and risk of its active incidents from `windows`. Returns what changed.
pub fn cluster(
    incidents: &mut Vec<Incident>,
    namespace: &str,
    detections: &Detections,
    windows: &Windows,
    cfg: &IncidentConfig,
    now: Timestamp,
) -> Vec<IncidentEvent> {
    let mut events = Vec::new();
    for d in &detections.items {
        absorb(incidents, namespace, d, windows, cfg, &mut events);
    }
    let opened: BTreeSet<String> = events
        .iter()
        .filter_map(|e| match e {
            IncidentEvent::Opened { id } => Some(id.clone()),
            _ => None,
        })
        .collect();
    let short = windows.short(now);
    for inc in incidents.iter_mut().filter(|i| i.namespace == namespace) {
        let quiet = now.duration_since(inc.last_detected) > cfg.quiet_period;
        if inc.state == IncidentState::Active && quiet {
            inc.state = IncidentState::Closed;
            events.push(IncidentEvent::Closed { id: inc.id.clone() });
        }
        if inc.state == IncidentState::Active {
            let share = share_of(inc, &short);
            if let Some(e) = refresh(inc, windows, share, cfg, now)
                && !opened.contains(&inc.id)
            {
                events.push(e);
            }
        }
    }
    incidents.sort_by(|a, b| {
        a.first_detected
            .cmp(&b.first_detected)
            .then_with(|| a.id.cmp(&b.id))
    });
    events
}

/// Mirrors the user's archive label (`archived`: the ids of incidents that carry it): those
/// incidents become `Archived` and never absorb a detection again; an incident whose label was
/// removed becomes `Closed` — it is never reopened either, a client detected again opens a new
/// incident.
pub fn sync_archived(incidents: &mut [Incident], archived: &BTreeSet<String>) {
    for inc in incidents {
        if archived.contains(&inc.id) {
            inc.state = IncidentState::Archived;
        } else if inc.state == IncidentState::Archived {
            inc.state = IncidentState::Closed;
        }
    }
}

/// Deletes incidents whose last detection is older than the retention.
pub fn prune(incidents: &mut Vec<Incident>, cfg: &IncidentConfig, now: Timestamp) {
    incidents.retain(|i| now.duration_since(i.last_detected) <= cfg.retention);
}

fn joins(inc: &Incident, namespace: &str, d: &Detection, cfg: &IncidentConfig) -> bool {
    inc.namespace == namespace
        && inc.state == IncidentState::Active
        && d.detected_at.duration_since(inc.last_detected) <= cfg.merge_gap
        && (inc.clients.contains(&d.key)
            || (inc.rules.contains(&d.rule) && inc.clients.iter().any(|c| same_network(c, &d.key))))
}

/// Same /24 (IPv4) or /48 (IPv6); only IP keys have a network.
fn same_network(a: &ClientKey, b: &ClientKey) -> bool {
    match (a.ip(), b.ip()) {
        (Some(IpAddr::V4(a)), Some(IpAddr::V4(b))) => a.octets()[..3] == b.octets()[..3],
        (Some(IpAddr::V6(a)), Some(IpAddr::V6(b))) => a.octets()[..6] == b.octets()[..6],
        _ => false,
    }
}

fn absorb(
    incidents: &mut Vec<Incident>,
    namespace: &str,
    d: &Detection,
    windows: &Windows,
    cfg: &IncidentConfig,
    events: &mut Vec<IncidentEvent>,
) {
    let mut matching: Vec<(Timestamp, String)> = incidents
        .iter()
        .filter(|i| joins(i, namespace, d, cfg))
        .map(|i| (i.first_detected, i.id.clone()))
        .collect();
    matching.sort();
    let Some((_, keep)) = matching.first().cloned() else {
        let inc = open(namespace, d, windows);
        events.push(IncidentEvent::Opened { id: inc.id.clone() });
        incidents.push(inc);
        return;
    };
    for (_, id) in &matching[1..] {
        let pos = incidents
            .iter()
            .position(|i| &i.id == id)
            .expect("matched above");
        let other = incidents.remove(pos);
        let target = incidents
            .iter_mut()
            .find(|i| i.id == keep)
            .expect("kept above");
        merge(target, other, cfg);
        events.push(IncidentEvent::Merged {
            into: keep.clone(),
            from: id.clone(),
        });
    }
    let target = incidents
        .iter_mut()
        .find(|i| i.id == keep)
        .expect("kept above");
    add(target, d, cfg);
}

fn incident_id(namespace: &str, d: &Detection) -> String {
    let mut h = Sha256::new();
    for part in [
        namespace,
        &d.rule,
        &d.key.to_string(),
        &d.detected_at.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("inc-{}", &hex::encode(h.finalize())[..16])
}

fn open(namespace: &str, d: &Detection, windows: &Windows) -> Incident {
    Incident {
        id: incident_id(namespace, d),
        namespace: namespace.to_string(),
        display_name: String::new(),
        state: IncidentState::Active,
        risk: RiskLevel::Low,
        risk_score: 0,
        rules: BTreeSet::from([d.rule.clone()]),
        rule_types: BTreeSet::from([d.rule_type]),
        clients: BTreeSet::from([d.key]),
        clients_unlisted: 0,
        traffic: 0,
        traffic_partial: 0,
        first_detected: d.detected_at,
        last_detected: d.detected_at,
        // Count the traffic of the window that made the rule fire.
        counted_until: windows.short_slice_start(d.detected_at - windows.short_span()),
        series: Vec::new(),
        attributes: BTreeMap::new(),
        attribute_distinct: BTreeMap::new(),
        attribute_last_seen: BTreeMap::new(),
        rule_clients: BTreeMap::from([(d.rule.clone(), BTreeSet::from([d.key]))]),
        rule_requests: BTreeMap::new(),
        peak_share: 0.0,
        merged_from: Vec::new(),
    }
}

fn add(inc: &mut Incident, d: &Detection, cfg: &IncidentConfig) {
    inc.rules.insert(d.rule.clone());
    inc.rule_types.insert(d.rule_type);
    if inc.clients.len() < cfg.max_clients {
        inc.clients.insert(d.key);
    }
    if inc.clients.contains(&d.key) {
        inc.rule_clients
            .entry(d.rule.clone())
            .or_default()
            .insert(d.key);
    } else {
        // Approximate: a client beyond the bound counts again when detected again.
        inc.clients_unlisted += 1;
    }
    inc.first_detected = inc.first_detected.min(d.detected_at);
    inc.last_detected = inc.last_detected.max(d.detected_at);
}

fn merge(into: &mut Incident, other: Incident, cfg: &IncidentConfig) {
    into.rules.extend(other.rules);
    into.rule_types.extend(other.rule_types);
    for c in other.clients {
        if into.clients.len() < cfg.max_clients {
            into.clients.insert(c);
        } else if !into.clients.contains(&c) {
            into.clients_unlisted += 1;
        }
    }
    into.clients_unlisted += other.clients_unlisted;
    into.traffic += other.traffic;
    into.traffic_partial = into.traffic_partial.max(other.traffic_partial);
    into.first_detected = into.first_detected.min(other.first_detected);
    into.last_detected = into.last_detected.max(other.last_detected);
    into.counted_until = into.counted_until.max(other.counted_until);
    for (minute, n) in other.series {
        add_point(&mut into.series, minute, n);
    }
    for (rule, keys) in other.rule_clients {
        let listed = keys.into_iter().filter(|c| into.clients.contains(c));
        into.rule_clients.entry(rule).or_default().extend(listed);
    }
    into.peak_share = into.peak_share.max(other.peak_share);
    into.risk = into.risk.max(other.risk);
    into.risk_score = into.risk_score.max(other.risk_score);
    into.merged_from.push(other.id);
    into.merged_from.extend(other.merged_from);
}

fn share_of(inc: &Incident, short: &crate::window::WindowView) -> f64 {
    let mine: u64 = inc
        .clients
        .iter()
        .filter_map(|c| short.clients.get(c))
        .map(|c| c.totals.requests)
        .sum();
    if short.totals.requests == 0 {
        0.0
    } else {
        mine as f64 / short.totals.requests as f64
    }
}

/// Counts new traffic, refreshes attributes, name and risk. Returns a risk-raised event.
fn refresh(
    inc: &mut Incident,
    windows: &Windows,
    share: f64,
    cfg: &IncidentConfig,
    now: Timestamp,
) -> Option<IncidentEvent> {
    let clients: Vec<ClientKey> = inc.clients.iter().copied().collect();
    let until = windows.short_slice_start(now);
    if until > inc.counted_until {
        for (slice, n) in windows.requests_between(&clients, inc.counted_until, until) {
            inc.traffic += n;
            add_point(&mut inc.series, minute_of(slice), n);
        }
        inc.counted_until = until;
    }
    inc.traffic_partial = windows
        .requests_between(&clients, until, until + windows.short_span())
        .iter()
        .map(|(_, n)| n)
        .sum();
    let excess = inc.series.len().saturating_sub(cfg.series_minutes);
    inc.series.drain(..excess);
    let summary = windows.attributes(&clients, now, cfg.top_k);
    inc.rule_requests = inc
        .rule_clients
        .iter()
        .map(|(rule, keys)| {
            let n = keys.iter().filter_map(|c| summary.requests.get(c)).sum();
            (rule.clone(), n)
        })
        .collect();
    inc.attributes = summary.top;
    inc.attribute_distinct = summary.distinct;
    inc.attribute_last_seen = summary.last_seen;
    inc.peak_share = inc.peak_share.max(share);
    inc.display_name = display_name(inc);
    let score = risk_score(RiskInputs {
        rules: &inc.rule_types,
        peak_share: inc.peak_share,
        clients: inc.clients.len() + inc.clients_unlisted as usize,
        duration: inc.duration(),
    });
    inc.risk_score = inc.risk_score.max(score);
    let level = RiskLevel::of_score(inc.risk_score);
    let from = inc.risk;
    inc.risk = from.max(level);
    (inc.risk > from).then(|| IncidentEvent::RiskRaised {
        id: inc.id.clone(),
        from,
        to: inc.risk,
    })
}

/// `series` with `partial` (the count of the slice starting at `counted_until`, not counted
/// yet) added in its minute.
pub fn with_partial(
    series: &[(Timestamp, u64)],
    counted_until: Timestamp,
    partial: u64,
) -> Vec<(Timestamp, u64)> {
    let mut series = series.to_vec();
    if partial > 0 {
        add_point(&mut series, minute_of(counted_until), partial);
    }
    series
}

/// The start of the minute holding `t`.
pub fn minute_of(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second().div_euclid(60) * 60).unwrap_or(t)
}

/// Adds `n` to the point of `minute` in a per-minute series kept in time order.
pub fn add_point(series: &mut Vec<(Timestamp, u64)>, minute: Timestamp, n: u64) {
    match series.binary_search_by_key(&minute, |(m, _)| *m) {
        Ok(i) => series[i].1 += n,
        Err(i) => series.insert(i, (minute, n)),
    }
}

/// `Flooder + Tor from ip:203.0.113.7`, or `… from 12 clients`; hashes shortened.
fn display_name(inc: &Incident) -> String {
    let rules: Vec<&str> = inc.rules.iter().map(String::as_str).collect();
    let total = inc.clients.len() as u64 + inc.clients_unlisted;
    let who = match inc.clients.iter().next() {
        Some(key) if total == 1 => short_key(key),
        _ => format!("{total} clients"),
    };
    format!("{} from {who}", rules.join(" + "))
}

fn short_key(key: &ClientKey) -> String {
    let text = key.to_string();
    match text.find("sha256:") {
        Some(i) => format!("{}…", &text[..(i + 7 + 12).min(text.len())]),
        None => text,
    }
}

#[cfg(test)]
#[path = "incident_tests.rs"]
mod tests;
