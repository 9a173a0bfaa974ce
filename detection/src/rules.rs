//! The detection rules: `run_rules(&windows, &rules, now) -> Detections`, pure.
//!
//! Each rule looks at one window of one namespace ([`Windows`]) and marks the clients of
//! its key kind that cross its thresholds. Every rule has a minimum-traffic guard, honours
//! its `exclude` ranges, and sets `expiresAt = now + detectionTtl`. Counts are the
//! windows' lower bounds (see [`crate::topk`]), so sketching never invents a detection.
//!
//! Every traffic statistic is computed over the requests the app answered: the sidecar's own
//! denials count as nothing but `denied` (see [`crate::counter`]), so a client denied by an
//! action and retrying can never become guilty through its denied retries, nor escape
//! through them (its denied requests' user agents do not count either). TorList is the
//! exception by nature: it judges an address, not traffic.

use std::cell::OnceCell;
use std::collections::HashSet;
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::key::ClientKey;
use crate::rule_spec::{
    AnomalyParams, ApiScraperParams, BruteGuessorParams, FlooderParams, OAuthAbuserParams,
    RobotAbuserParams, RuleKind, RuleSpec, RuleType, ScraperParams, TorListParams,
};
use crate::seasonal::Seasonal;
use crate::stats::AttrDim;
use crate::stats::{ClientWindow, Totals};
use crate::window::{WindowView, Windows};

/// Why a rule fired: the statistic, its threshold and the window it was computed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The statistic (share, ratio, count or z-score, per rule type).
    pub value: f64,
    /// The threshold it met.
    pub threshold: f64,
    /// The client's requests in the window.
    pub requests: u64,
    /// The namespace's requests in the window.
    pub total_requests: u64,
    /// Window length.
    pub window: SignedDuration,
    /// What is anomalous, in words (Advanced Anomaly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One client marked by one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detection {
    /// The rule's name (the "bot reason").
    pub rule: String,
    /// The rule's type.
    pub rule_type: RuleType,
    /// The detected client.
    pub key: ClientKey,
    /// When the rule fired.
    pub detected_at: Timestamp,
    /// When the detection lapses unless the rule fires again (`detectedAt + detectionTtl`).
    pub expires_at: Timestamp,
    /// The numbers behind it.
    pub evidence: Evidence,
}

/// The detections of one run, sorted by rule name then client key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detections {
    /// The detections.
    pub items: Vec<Detection>,
}

impl Detections {
    /// Whether `rule` marked `key`.
    pub fn contains(&self, rule: &str, key: &ClientKey) -> bool {
        self.items.iter().any(|d| d.rule == rule && &d.key == key)
    }

    /// Number of detections.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Runs every rule over the namespace's windows at `now`.
pub fn run_rules(windows: &Windows, rules: &[RuleSpec], now: Timestamp) -> Detections {
    // Each view is built once per distinct window, and only when a rule needs it (the 24 h
    // one is the costly one).
    let (short, long) = (OnceCell::new(), OnceCell::new());
    let mut others: Vec<(SignedDuration, WindowView)> = Vec::new();
    for spec in rules {
        if let Some(span) = spec.window
            && span != windows.short_span()
            && span != windows.long_span()
            && !others.iter().any(|(s, _)| *s == span)
        {
            others.push((span, windows.view(span, now)));
        }
    }
    let view_of = |spec: &RuleSpec| -> &WindowView {
        let short_default = spec.rule.short_by_default();
        match spec.window {
            Some(s) if s == windows.short_span() => short.get_or_init(|| windows.short(now)),
            Some(s) if s == windows.long_span() => long.get_or_init(|| windows.long(now)),
            Some(s) => others
                .iter()
                .find(|(o, _)| *o == s)
                .map(|(_, v)| v)
                .expect("built above"),
            None if short_default => short.get_or_init(|| windows.short(now)),
            None => long.get_or_init(|| windows.long(now)),
        }
    };
    let mut items = Vec::new();
    for spec in rules {
        let view = view_of(spec);
        let hits = match &spec.rule {
            RuleKind::Flooder(p) => flooder(p, spec, view),
            RuleKind::StaticContentScraper(p) => scraper(p, spec, view),
            RuleKind::BruteGuessor(p) => brute(p, spec, view),
            RuleKind::RobotAbuser(p) => robot(p, spec, view),
            RuleKind::OAuthAbuser(p) => oauth(p, spec, view),
            RuleKind::TorList(p) => tor(p, spec, view),
            RuleKind::AdvancedAnomaly(p) => anomaly(p, spec, view, windows.seasonal(), now),
            RuleKind::ApiScraper(p) => api_scraper(p, spec, view),
        };
        items.extend(hits.into_iter().map(|(key, value, threshold)| Detection {
            rule: spec.name.clone(),
            rule_type: spec.rule.rule_type(),
            key,
            detected_at: now,
            expires_at: now + spec.detection_ttl,
            evidence: Evidence {
                value,
                threshold,
                requests: view.clients.get(&key).map_or(0, |c| c.totals.requests),
                total_requests: view.totals.requests,
                window: view.span,
                detail: match &spec.rule {
                    RuleKind::AdvancedAnomaly(_) => explain_anomaly(windows, view, &key, now),
                    _ => None,
                },
            },
        }));
    }
    items.sort_by(|a, b| a.rule.cmp(&b.rule).then_with(|| a.key.cmp(&b.key)));
    Detections { items }
}

/// (client, statistic, threshold) of each client a rule marks.
type Hits = Vec<(ClientKey, f64, f64)>;

/// The clients of the rule's key kind that are not excluded.
fn candidates<'v>(
    spec: &'v RuleSpec,
    view: &'v WindowView,
) -> impl Iterator<Item = (&'v ClientKey, &'v ClientWindow)> + 'v {
    view.clients
        .iter()
        .filter(move |(k, _)| k.kind() == spec.client_key && !spec.excludes(k))
}

/// Clients of the rule's key kind the app answered at least once (a client the sidecar
/// denies entirely is not an active client of the app).
fn clients_of_kind(spec: &RuleSpec, view: &WindowView) -> u64 {
    view.clients
        .iter()
        .filter(|(k, c)| k.kind() == spec.client_key && c.totals.answered() > 0)
        .count() as u64
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn flooder(p: &FlooderParams, spec: &RuleSpec, view: &WindowView) -> Hits {
    let total = view.totals.answered();
    if total < p.min_total_requests || clients_of_kind(spec, view) < p.min_clients {
        return Vec::new();
    }
    candidates(spec, view)
        .filter(|(_, c)| c.totals.answered() >= p.min_requests)
        .map(|(k, c)| (*k, ratio(c.totals.answered(), total), p.min_share))
        .filter(|(_, share, min)| share >= min)
        .collect()
}

fn scraper(p: &ScraperParams, spec: &RuleSpec, view: &WindowView) -> Hits {
    let total = view.totals.bytes;
    if clients_of_kind(spec, view) < p.min_clients {
        return Vec::new();
    }
    candidates(spec, view)
        .filter(|(_, c)| c.totals.bytes >= p.min_bytes)
        .map(|(k, c)| (*k, ratio(c.totals.bytes, total), p.min_share))
        .filter(|(_, share, min)| share >= min)
        .collect()
}

/// How far a client's error (or 403) ratio must stand above the rest of its namespace for
/// Brute Guessor and Robot Abuser: when every client gets errors (a bad deploy, an expired
/// upstream credential), a client that retries harder is not guessing.
pub const BASELINE_MARGIN: f64 = 0.3;
/// Other clients of the rule's kind the namespace needs before its error ratio is a baseline
/// (with fewer, the rules judge each client alone).
pub const BASELINE_MIN_CLIENTS: u64 = 10;

/// The share `part` takes of the requests the app answered for every client but `own`
/// (outside surge slices), when enough other clients make it a baseline; `None` otherwise.
fn baseline(view: &WindowView, others: u64, own: &Totals, part: fn(&Totals) -> u64) -> Option<f64> {
    if others < BASELINE_MIN_CLIENTS {
        return None;
    }
    let all = view.totals.outside(&view.surge);
    let answered = all.answered().saturating_sub(own.answered());
    let parts = part(&all).saturating_sub(part(own));
    Some(ratio(parts, answered))
}

/// A client's totals outside surge slices (when most of the namespace failed at once, see
/// [`crate::window::SURGE_MIN_ANSWERED`]): what the error-counting rules judge, so that an
/// outage and the retry storm after it make nobody a guesser.
fn judged(c: &ClientWindow) -> Totals {
    c.totals.outside(&c.surge)
}

/// Whether `r` stands [`BASELINE_MARGIN`] above the baseline (always, without one).
fn above_baseline(r: f64, baseline: Option<f64>) -> bool {
    baseline.is_none_or(|b| r - b >= BASELINE_MARGIN)
}

fn brute(p: &BruteGuessorParams, spec: &RuleSpec, view: &WindowView) -> Hits {
    let others = clients_of_kind(spec, view).saturating_sub(1);
    candidates(spec, view)
        .map(|(k, c)| (k, judged(c)))
        .filter(|(_, t)| t.answered() >= p.min_requests)
        .map(|(k, t)| {
            let r = ratio(t.errors, t.answered());
            (k, t, r)
        })
        .filter(|(_, t, r)| above_baseline(*r, baseline(view, others, t, |t| t.errors)))
        .map(|(k, _, r)| (*k, r, p.min_error_ratio))
        .filter(|(_, r, min)| r >= min)
        .collect()
}

fn robot(p: &RobotAbuserParams, spec: &RuleSpec, view: &WindowView) -> Hits {
    let others = clients_of_kind(spec, view).saturating_sub(1);
    candidates(spec, view)
        .map(|(k, c)| (k, judged(c)))
        .filter(|(_, t)| t.forbidden >= p.min_forbidden)
        .filter(|(_, t)| {
            let r = ratio(t.forbidden, t.answered());
            r >= p.min_forbidden_ratio
                && above_baseline(r, baseline(view, others, t, |t| t.forbidden))
        })
        .map(|(k, t)| (*k, t.forbidden as f64, p.min_forbidden as f64))
        .collect()
}

fn oauth(p: &OAuthAbuserParams, spec: &RuleSpec, view: &WindowView) -> Hits {
    candidates(spec, view)
        .filter(|(_, c)| c.sessions() >= p.min_sessions)
        .filter(|(_, c)| c.user_agents.distinct() <= p.max_user_agents)
        .map(|(k, c)| (*k, c.sessions() as f64, p.min_sessions as f64))
        .collect()
}

fn tor(p: &TorListParams, spec: &RuleSpec, view: &WindowView) -> Hits {
    let singles: HashSet<IpAddr> = p
        .exits
        .iter()
        .filter(|n| n.prefix_len() == n.max_prefix_len())
        .map(|n| n.addr())
        .collect();
    let ranges: Vec<_> = p
        .exits
        .iter()
        .filter(|n| n.prefix_len() != n.max_prefix_len())
        .collect();
    candidates(spec, view)
        .filter_map(|(k, _)| Some((k, k.ip()?)))
        .filter(|(_, ip)| singles.contains(ip) || ranges.iter().any(|n| n.contains(ip)))
        .map(|(k, _)| (*k, 1.0, 1.0))
        .collect()
}

fn api_scraper(p: &ApiScraperParams, spec: &RuleSpec, view: &WindowView) -> Hits {
    candidates(spec, view)
        .filter(|(_, c)| c.totals.answered() >= p.min_requests)
        .map(|(k, c)| {
            let share = ratio(c.sequential, c.totals.answered());
            (*k, share, p.min_sequential_share)
        })
        .filter(|(_, share, min)| share >= min)
        .collect()
}

/// How many times what the baseline expected a client must send, besides the z-score.
pub const ANOMALY_MIN_RATIO: f64 = 2.0;

fn anomaly(
    p: &AnomalyParams,
    spec: &RuleSpec,
    view: &WindowView,
    seasonal: Option<&Seasonal>,
    now: Timestamp,
) -> Hits {
    let Some(s) = seasonal.filter(|s| s.history() >= p.min_history) else {
        return Vec::new();
    };
    if clients_of_kind(spec, view) < p.min_clients {
        return Vec::new();
    }
    // Judged by network: an IPv6 device's rotating addresses add up to its /64.
    let nets = crate::seasonal::by_network(view);
    candidates(spec, view)
        .filter_map(|(k, c)| {
            if judged(c).answered() < p.min_requests {
                return None;
            }
            let net = crate::seasonal::network(k.ip()?);
            let (x, errors) = nets.get(&net).copied()?;
            let score = s.score(net, x, errors, now)?;
            let ratio = x as f64 / score.expected.max(1.0);
            (score.z >= p.min_z && ratio >= ANOMALY_MIN_RATIO).then_some((*k, score.z, p.min_z))
        })
        .collect()
}

fn explain_anomaly(
    windows: &Windows,
    view: &WindowView,
    key: &ClientKey,
    now: Timestamp,
) -> Option<String> {
    let net = crate::seasonal::network(key.ip()?);
    let (x, errors) = crate::seasonal::by_network(view).get(&net).copied()?;
    let score = windows.seasonal()?.score(net, x, errors, now)?;
    let mut detail = score.explain(now);
    // What else sets it apart: a path or a region taking most of its sampled requests and
    // little of the namespace's.
    let summary = windows.attributes(std::slice::from_ref(key), now, 1);
    for (dim, what) in [(AttrDim::Path, "to"), (AttrDim::Region, "from")] {
        let Some((value, n)) = summary.top.get(&dim).and_then(|t| t.first()) else {
            continue;
        };
        let all = summary.sampled.get(&dim).copied().unwrap_or(0);
        let mine = *n as f64 / all.max(1) as f64;
        let theirs = windows.attribute_share(dim, value, now).unwrap_or(0.0);
        if mine >= ATTRIBUTION_MIN_SHARE && theirs <= mine / 2.0 {
            detail += &format!(
                "; {:.0} % of its sampled requests {what} {value} ({:.0} % of the namespace's)",
                mine * 100.0,
                theirs * 100.0
            );
        }
    }
    Some(detail)
}

/// Share of a client's sampled requests a path or region must take to be named in an
/// anomaly's evidence (when it takes at most half that share of the namespace's).
pub const ATTRIBUTION_MIN_SHARE: f64 = 0.5;

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
