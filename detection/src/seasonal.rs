//! Advanced Anomaly's baseline: what each namespace's clients usually send, by hour.
//!
//! Every 5 minutes ([`PERIOD`]) the collector shows the namespace's last 5-minute window to
//! [`Seasonal::observe`], which learns:
//!
//! Clients are networks here ([`network`]): an IPv4 address, or the /64 of an IPv6 address,
//! so that a device whose privacy address changes every hour keeps its history.
//!
//! - **a profile per busy client**: the [`MAX_PROFILES`] clients that once sent at
//!   least [`PROFILE_MIN_REQUESTS`] requests in a period get their own mean and variance of
//!   requests per period for each hour of the day (UTC), and of their error ratio. A period
//!   without requests teaches a zero, so an office gateway's nights are quiet;
//! - **the cohort of everyone else**: mean and variance of `ln(1 + requests)` of the active
//!   clients without a profile, per hour of the week (and per hour of the day, used until
//!   that hour of the week has been seen [`MIN_OBSERVATIONS`] times).
//!
//! Means are exponentially weighted ([`ALPHA`]: about the last 60 observations of a cell,
//! i.e. five days of an hour of the day). While the baseline is younger than the rule's
//! `minHistory` everything is learned; afterwards a period that scores as an outlier
//! (z ≥ [`LEARN_MAX_Z`]) is not learned, so an attack does not become normal.
//!
//! [`Seasonal::score`] compares a client's requests in the current 5-minute window with its
//! own profile (`z = (x − μ) / sqrt(σ² + μ + (φμ)² + 1)`: the variance it showed, Poisson
//! noise and an overdispersion of [`PHI`], so a busy client needs a shift in proportion to
//! its volume), or, without a profile, with the cohort on the log scale. Answers of surge
//! slices (an outage, see [`crate::window`]) are left out as for the error-counting rules.
//!
//! Memory: about 400 bytes per profile (24 cells of 12 bytes, the map's node), ≤ 0.4 MB per
//! namespace, persisted with the
//! windows across failover.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv6Net};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::key::ClientKey;
use crate::window::WindowView;

/// How often the baseline learns.
pub const PERIOD: SignedDuration = SignedDuration::from_mins(5);
/// Clients with a profile of their own, per namespace.
pub const MAX_PROFILES: usize = 1024;
/// Requests in one period that earn a client its profile.
pub const PROFILE_MIN_REQUESTS: u64 = 20;
/// Smallest weight of a new observation in a cell's mean.
pub const ALPHA: f64 = 1.0 / 60.0;
/// Overdispersion of a client's count: its spread grows with its volume.
pub const PHI: f64 = 0.5;
/// Observations a cell needs before it is a baseline.
pub const MIN_OBSERVATIONS: u32 = 3;
/// Once the baseline is old enough, periods scoring at least this are not learned.
pub const LEARN_MAX_Z: f64 = 4.0;
/// Smallest spread of the cohort on the log scale.
const MIN_LOG_SD: f64 = 0.25;
/// A profile unseen this long is forgotten.
const FORGET_AFTER: SignedDuration = SignedDuration::from_hours(14 * 24);

/// An exponentially weighted mean and variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Observations.
    pub n: u32,
    /// Mean.
    pub mean: f32,
    /// Variance.
    pub var: f32,
}

impl Cell {
    fn learn(&mut self, x: f64) {
        self.n = self.n.saturating_add(1);
        let a = (1.0 / f64::from(self.n)).max(ALPHA);
        let d = x - f64::from(self.mean);
        self.mean = (f64::from(self.mean) + a * d) as f32;
        self.var = ((1.0 - a) * (f64::from(self.var) + a * d * d)) as f32;
    }

    fn ready(&self) -> bool {
        self.n >= MIN_OBSERVATIONS
    }
}

/// A busy client's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Requests per period, by hour of the day (UTC): 24 cells.
    pub hours: Vec<Cell>,
    /// Error ratio of its periods with answers.
    pub errors: Cell,
    /// End of the last period it sent requests in.
    pub last_seen: Timestamp,
}

impl Profile {
    fn new(at: Timestamp) -> Self {
        Self {
            hours: vec![Cell::default(); 24],
            errors: Cell::default(),
            last_seen: at,
        }
    }
}

/// How one client's current window compares with its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The z-score of its requests.
    pub z: f64,
    /// Its requests in the window.
    pub requests: u64,
    /// What the baseline expected.
    pub expected: f64,
    /// Whether it was judged against its own profile (else the cohort's).
    pub own: bool,
    /// Its error ratio in the window, and the usual one (its own, when it has a profile).
    pub errors: (f64, Option<f64>),
}

impl Score {
    /// What is anomalous, in words (the detection's evidence).
    pub fn explain(&self, at: Timestamp) -> String {
        let hour = hour_of_day(at);
        let mut s = if self.own {
            format!(
                "requests {:.1}x its usual {:.0} per 5 min at {hour:02}:00 UTC",
                self.requests as f64 / self.expected.max(1.0),
                self.expected
            )
        } else {
            format!(
                "a client without history sending {} requests in 5 min, where clients \
                 without history usually send {:.0} at {hour:02}:00 UTC",
                self.requests, self.expected
            )
        };
        let (now, usual) = self.errors;
        match usual {
            Some(u) if now - u >= 0.2 => {
                s += &format!("; errors {:.0} % (usual {:.0} %)", now * 100.0, u * 100.0);
            }
            _ if now >= 0.5 => s += &format!("; errors {:.0} %", now * 100.0),
            _ => {}
        }
        s
    }
}

/// One namespace's baseline (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seasonal {
    /// End of the first period learned.
    pub first: Option<Timestamp>,
    /// End of the last period learned.
    pub last: Option<Timestamp>,
    /// Profiles of busy clients, by network.
    pub profiles: BTreeMap<IpNet, Profile>,
    /// The cohort by hour of the week (Monday 00:00 UTC first): 168 cells of `ln(1 + x)`.
    pub week: Vec<Cell>,
    /// The cohort by hour of the day: 24 cells.
    pub day: Vec<Cell>,
}

/// The network a client is learned and judged by: its IPv4 address, or the /64 of its IPv6
/// address (where privacy addresses rotate).
pub fn network(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new_assert(v6, 64).trunc()),
    }
}

/// The IP clients of `view` summed by [`network`]: requests the app answered outside surge
/// slices, and errors among them.
pub fn by_network(view: &WindowView) -> HashMap<IpNet, (u64, u64)> {
    let mut nets: HashMap<IpNet, (u64, u64)> = HashMap::new();
    for (key, c) in &view.clients {
        let ClientKey::Ip(ip) = key else { continue };
        let t = c.totals.outside(&c.surge);
        let e = nets.entry(network(*ip)).or_default();
        e.0 += t.answered();
        e.1 += t.errors;
    }
    nets
}

fn hour_of_day(at: Timestamp) -> usize {
    (at.as_second().rem_euclid(86_400) / 3600) as usize
}

fn hour_of_week(at: Timestamp) -> usize {
    // 1970-01-01 was a Thursday: shift so that Monday is 0.
    ((at.as_second() + 3 * 86_400).rem_euclid(7 * 86_400) / 3600) as usize
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Seasonal {
    /// How long the baseline has been learning.
    pub fn history(&self) -> SignedDuration {
        match (self.first, self.last) {
            (Some(f), Some(l)) => l.duration_since(f) + PERIOD,
            _ => SignedDuration::ZERO,
        }
    }

    /// The end of the period to learn at `now`, if it has not been learned yet.
    pub fn due(&self, now: Timestamp) -> Option<Timestamp> {
        let p = PERIOD.as_secs();
        let end = Timestamp::from_second(now.as_second().div_euclid(p) * p).ok()?;
        (self.last.is_none_or(|l| l < end)).then_some(end)
    }

    /// Learns the period ending at `end` from `view` (the 5-minute window up to `end`).
    /// Everything is learned while the baseline is younger than `learn_all`; afterwards
    /// outliers are not.
    pub fn observe(&mut self, view: &WindowView, end: Timestamp, learn_all: SignedDuration) {
        if self.week.len() != 168 || self.day.len() != 24 {
            self.week = vec![Cell::default(); 168];
            self.day = vec![Cell::default(); 24];
        }
        let at = end - SignedDuration::from_secs(1);
        let (hod, how) = (hour_of_day(at), hour_of_week(at));
        let all = self.history() < learn_all;
        let mut seen = Vec::new();
        let mut nets: Vec<(IpNet, (u64, u64))> = by_network(view).into_iter().collect();
        nets.sort_unstable_by_key(|(n, _)| *n);
        for (net, (x, errors)) in nets {
            if x == 0 {
                continue;
            }
            let score = self.score(net, x, errors, at);
            let learn = all || score.is_none_or(|s| s.z < LEARN_MAX_Z);
            if let Some(p) = self.profiles.get_mut(&net) {
                if learn {
                    p.hours[hod].learn(x as f64);
                    p.errors.learn(ratio(errors, x));
                }
                p.last_seen = end;
                seen.push(net);
                continue;
            }
            if !learn {
                continue;
            }
            let y = (x as f64).ln_1p();
            self.week[how].learn(y);
            self.day[hod].learn(y);
            if x >= PROFILE_MIN_REQUESTS && self.make_room(end) {
                let mut p = Profile::new(end);
                p.hours[hod].learn(x as f64);
                p.errors.learn(ratio(errors, x));
                self.profiles.insert(net, p);
                seen.push(net);
            }
        }
        seen.sort_unstable();
        for (net, p) in &mut self.profiles {
            if seen.binary_search(net).is_err() {
                p.hours[hod].learn(0.0);
            }
        }
        self.profiles
            .retain(|_, p| end.duration_since(p.last_seen) < FORGET_AFTER);
        self.first.get_or_insert(end);
        self.last = Some(end);
    }

    /// Whether a new profile fits: when full, the profile seen longest ago gives way if it
    /// was not seen in the last day.
    fn make_room(&mut self, now: Timestamp) -> bool {
        if self.profiles.len() < MAX_PROFILES {
            return true;
        }
        let oldest = self
            .profiles
            .iter()
            .min_by_key(|(_, p)| p.last_seen)
            .map(|(net, p)| (*net, p.last_seen));
        match oldest {
            Some((net, seen)) if now.duration_since(seen) > SignedDuration::from_hours(24) => {
                self.profiles.remove(&net);
                true
            }
            _ => false,
        }
    }

    /// How `requests` (with `errors`) from `net` (see [`network`]) in the window ending at
    /// `at` compare with the baseline; `None` while the baseline has no ready cell for it.
    pub fn score(&self, net: IpNet, requests: u64, errors: u64, at: Timestamp) -> Option<Score> {
        let x = requests as f64;
        let err = ratio(errors, requests);
        if let Some(p) = self.profiles.get(&net) {
            let c = p.hours.get(hour_of_day(at)).filter(|c| c.ready())?;
            let (mu, var) = (f64::from(c.mean).max(0.0), f64::from(c.var).max(0.0));
            let sd = (var + mu + (PHI * mu).powi(2) + 1.0).sqrt();
            let usual = p.errors.ready().then_some(f64::from(p.errors.mean));
            return Some(Score {
                z: (x - mu) / sd,
                requests,
                expected: mu,
                own: true,
                errors: (err, usual),
            });
        }
        let c = self
            .week
            .get(hour_of_week(at))
            .filter(|c| c.ready())
            .or_else(|| self.day.get(hour_of_day(at)).filter(|c| c.ready()))?;
        let (m, var) = (f64::from(c.mean), f64::from(c.var).max(0.0));
        let sd = var.sqrt().max(MIN_LOG_SD);
        Some(Score {
            z: (x.ln_1p() - m) / sd,
            requests,
            expected: m.exp_m1(),
            own: false,
            errors: (err, None),
        })
    }
}

#[cfg(test)]
#[path = "seasonal_tests.rs"]
mod tests;
