//! Scores the rules on the model's traffic, on a virtual clock, through the operator's own
//! path: per-pod [`Counter`]s → JSON [`Report`]s every virtual second → the collector's
//! [`WindowSet`] → [`run_rules`]. Pure: the caller adds the date and the machine.
//!
//! Per rule (by name: a type judging by another client key is another rule):
//! **recall** = attackers of the rule's own scenarios that the rule detected (by the key the
//! scenario is caught by, [`Scenario::client_key`]); **precision** = detected clients that
//! belong to an attack of *any* scenario (a robot that also crosses Brute Guessor's error
//! ratio is a correct detection, listed in the cross table); **time to detect** = first
//! detection − attack start, per attacker; **false positives** = benign clients the rule
//! detected (addresses, /64s and keys of every population, see [`Population`]), per 10 000
//! benign clients that sent traffic, per simulated day; **collateral per population** = the
//! same, per population.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};

use super::{GroundTruth, Population, Scenario, SimConfig, Traffic, Who, api_key_hash};
use crate::counter::{Counter, CounterConfig};
use crate::facts::{Attributes, RequestFacts};
use crate::key::{ClientKey, ClientKeyKind};
use crate::report::{Report, SidecarId};
use crate::rule_spec::{
    AnomalyParams, ApiScraperParams, BruteGuessorParams, FlooderParams, OAuthAbuserParams,
    RobotAbuserParams, RuleKind, RuleSpec, ScraperParams, TorListParams,
};
use crate::rules::run_rules;
use crate::window::{WindowConfig, WindowSet};

/// The namespace of the simulated sidecars.
pub const NAMESPACE: &str = "sim";

/// How the evaluation runs.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The model (its `scenarios` and `seed` are set per run; default
    /// [`SimConfig::populated`]).
    pub sim: SimConfig,
    /// Simulated days per scenario (each with its own seed).
    pub days: u32,
    /// Sidecar pods the traffic is spread over (default 2).
    pub pods: u32,
    /// How often the 5-minute rules (Flooder, Static Content Scraper, Advanced Anomaly) run
    /// (default 5 s).
    pub short_every: SignedDuration,
    /// How often the 24-hour rules, API Scraper and TorList run (default 300 s: building the 24 h view
    /// merges up to 96 slices and dominates the cost of a simulated day).
    pub long_every: SignedDuration,
    /// Advanced Anomaly's `minHistory` (default 24 h); [`evaluate`] runs this much benign
    /// traffic before each scored day (the model has no weekly season: a day is what the
    /// baseline needs to know every hour).
    pub anomaly_history: SignedDuration,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            sim: SimConfig::populated(),
            days: 2,
            pods: 2,
            short_every: SignedDuration::from_secs(5),
            long_every: SignedDuration::from_secs(300),
            anomaly_history: SignedDuration::from_hours(24),
        }
    }
}

/// The rules with their defaults (the same a `DetectionRule` gets from the API server, held
/// equal by the operator's tests), named after their type; TorList with `exits`; Advanced
/// Anomaly with `anomaly_history` as its `minHistory`; plus Flooder by IP prefix and Brute
/// Guessor by API key (the rules that catch the hiding attacks).
pub fn default_rules(exits: &[IpAddr], anomaly_history: SignedDuration) -> Vec<RuleSpec> {
    let keyed = |name: &str, rule, key| RuleSpec {
        client_key: key,
        ..RuleSpec::new(name, rule)
    };
    vec![
        RuleSpec::new("Flooder", RuleKind::Flooder(FlooderParams::default())),
        keyed(
            "FlooderByPrefix",
            RuleKind::Flooder(FlooderParams::default()),
            ClientKeyKind::IpPrefix,
        ),
        RuleSpec::new(
            "StaticContentScraper",
            RuleKind::StaticContentScraper(ScraperParams::default()),
        ),
        RuleSpec::new(
            "BruteGuessor",
            RuleKind::BruteGuessor(BruteGuessorParams::default()),
        ),
        keyed(
            "BruteGuessorByKey",
            RuleKind::BruteGuessor(BruteGuessorParams::default()),
            ClientKeyKind::ApiKey,
        ),
        RuleSpec::new(
            "RobotAbuser",
            RuleKind::RobotAbuser(RobotAbuserParams::default()),
        ),
        RuleSpec::new(
            "OAuthAbuser",
            RuleKind::OAuthAbuser(OAuthAbuserParams::default()),
        ),
        RuleSpec::new(
            "TorList",
            RuleKind::TorList(TorListParams {
                exits: exits.iter().map(|ip| IpNet::from(*ip)).collect(),
            }),
        ),
        RuleSpec::new(
            "ApiScraper",
            RuleKind::ApiScraper(ApiScraperParams::default()),
        ),
        RuleSpec::new(
            "AdvancedAnomaly",
            RuleKind::AdvancedAnomaly(AnomalyParams {
                min_history: anomaly_history,
                ..AnomalyParams::default()
            }),
        ),
    ]
}

/// The rules (of [`default_rules`]) meant to catch `scenario`'s attackers.
pub fn own_rules(scenario: Scenario) -> &'static [&'static str] {
    match scenario {
        Scenario::Flooder => &["Flooder", "AdvancedAnomaly"],
        Scenario::StaticContentScraper => &["StaticContentScraper"],
        Scenario::BruteGuessor | Scenario::LowAndSlow => &["BruteGuessor"],
        Scenario::RobotAbuser => &["RobotAbuser"],
        Scenario::OAuthAbuser => &["OAuthAbuser"],
        Scenario::TorList => &["TorList"],
        Scenario::ApiScraper => &["ApiScraper"],
        Scenario::RotatingFlooder => &["FlooderByPrefix"],
        Scenario::KeyGuessor => &["BruteGuessorByKey"],
    }
}

/// The window `spec` looks at (its own, else its type's).
pub fn window_of(spec: &RuleSpec) -> SignedDuration {
    spec.window.unwrap_or(if spec.rule.short_by_default() {
        SignedDuration::from_mins(5)
    } else {
        SignedDuration::from_hours(24)
    })
}

/// A token's digest in the model: its client and session number spread over the digest
/// (the counter reads the first bytes; no need for SHA-256 here).
fn token_hash((client, session): (u32, u32)) -> crate::key::KeyHash {
    let mut x = (u64::from(client) << 32 | u64::from(session)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut h = [0u8; 32];
    for chunk in h.chunks_mut(8) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    crate::key::KeyHash(h)
}

/// Retries after which an aggressive retrier counts as one in the collateral table.
pub const RETRIER_MIN_RETRIES: u32 = 30;

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The run's ground truth.
    pub truth: GroundTruth,
    /// First detection per (rule name, client).
    pub first: BTreeMap<(String, ClientKey), Timestamp>,
    /// Requests generated (retries included).
    pub requests: u64,
    /// Retries sent during outages.
    pub retries: u64,
    /// Benign clients that sent at least one request, per population (addresses, /64s and
    /// keys; see [`GroundTruth::who`]).
    pub active: BTreeMap<Population, u64>,
    /// Identities (address or /64) of the clients that retried every second, at least
    /// [`RETRIER_MIN_RETRIES`] times.
    pub retriers: HashSet<IpNet>,
    /// Simulated seconds.
    pub seconds: i64,
    /// Requests and token-endpoint calls of each NAT gateway (in `truth.nat` order).
    pub nat_traffic: Vec<(u64, u64)>,
}

impl RunResult {
    /// The benign clients of all populations that sent traffic (retriers are counted in
    /// their own population only).
    pub fn benign_active(&self) -> u64 {
        self.active
            .iter()
            .filter(|(p, _)| **p != Population::AggressiveRetrier)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Runs one configuration through the pipeline (see the module docs).
pub fn run(sim: SimConfig, opts: &EvalConfig) -> RunResult {
    let mut traffic = Traffic::new(sim);
    let truth = traffic.truth().clone();
    let rules = default_rules(&truth.tor_exits, opts.anomaly_history);
    let short_window = |r: &RuleSpec| window_of(r) <= SignedDuration::from_mins(5);
    let (short_rules, long_rules): (Vec<_>, Vec<_>) = rules.into_iter().partition(short_window);
    let start = traffic.now();
    let counter = CounterConfig {
        key_kinds: vec![
            ClientKeyKind::Ip,
            ClientKeyKind::IpPrefix,
            ClientKeyKind::ApiKey,
        ],
        ..CounterConfig::default()
    };
    let mut pods: Vec<Counter> = (0..opts.pods.max(1))
        .map(|i| {
            let id = SidecarId {
                pod: format!("api-{i}"),
                workload: "api".into(),
                namespace: NAMESPACE.into(),
            };
            Counter::new(id, &counter, start)
        })
        .collect();
    let mut windows = WindowSet::new(WindowConfig::default());
    let mut sent = vec![(0u64, 0u64); traffic.client_count()];
    let mut keys_used = BTreeSet::new();
    let mut first = BTreeMap::new();
    let (mut requests, mut retries) = (0u64, 0u64);
    let mut pick = 0usize;
    let short_every = opts.short_every.as_secs().max(1);
    let long_every = opts.long_every.as_secs().max(1);
    let mut second = 0i64;
    while let Some(batch) = traffic.next_second() {
        second += 1;
        for r in &batch {
            requests += 1;
            retries += u64::from(r.retry);
            let c = &mut sent[r.client as usize];
            c.0 += 1;
            c.1 += u64::from(r.token_endpoint);
            if let Some(k) = r.api_key {
                keys_used.insert(k);
            }
            // Spread like a Service: each request to the next pod, skewed by the client.
            pick = pick.wrapping_add(1 + r.client as usize);
            let facts = RequestFacts {
                ip: r.ip,
                api_key: r.api_key.map(api_key_hash),
                access_token: r.token.map(token_hash),
                user_agent: Some(traffic.user_agent_hash(r.ua)),
                status: r.status,
                bytes: r.bytes,
                token_endpoint: r.token_endpoint,
                responder: Default::default(),
                shape: traffic.shape(r.path),
                attrs: Attributes {
                    path: Some(traffic.path(r.path)),
                    ..Default::default()
                },
            };
            let n = pods.len();
            pods[pick % n].record(&facts);
        }
        let now = traffic.now();
        for pod in &mut pods {
            let report = pod.take_report(now);
            if report.totals.requests == 0 {
                continue; // a sidecar sends nothing for an idle interval
            }
            let report = Report::from_json(&report.to_json()).expect("own report decodes");
            windows.merge(&report, now);
        }
        let Some(w) = windows.get_mut(NAMESPACE) else {
            continue;
        };
        w.observe_season(now, opts.anomaly_history);
        let w = &*w;
        let mut found = Vec::new();
        if second % short_every == 0 {
            found.extend(run_rules(w, &short_rules, now).items);
        }
        if second % long_every == 0 {
            found.extend(run_rules(w, &long_rules, now).items);
        }
        for d in found {
            first.entry((d.rule, d.key)).or_insert(d.detected_at);
        }
    }
    // Benign identities that sent traffic, per population.
    let mut active: BTreeMap<Population, BTreeSet<IpNet>> = BTreeMap::new();
    let mut retriers = HashSet::new();
    for (i, (n, _)) in sent.iter().enumerate() {
        let id = traffic.identity(i as u32);
        let Some(pop) = truth.populations.get(&id) else {
            continue;
        };
        if *n > 0 {
            active.entry(*pop).or_default().insert(id);
        }
        if traffic.is_aggressive(i as u32) && traffic.retries_of(i as u32) >= RETRIER_MIN_RETRIES {
            retriers.insert(id);
        }
    }
    let mut active: BTreeMap<Population, u64> = active
        .into_iter()
        .map(|(p, s)| (p, s.len() as u64))
        .collect();
    let partner_keys = keys_used
        .iter()
        .filter(|k| (super::PARTNER_KEY..super::ATTACK_KEY).contains(*k))
        .count() as u64;
    *active.entry(Population::Partner).or_default() += partner_keys;
    let shared = keys_used.len() as u64 - partner_keys;
    let shared = shared
        - keys_used
            .iter()
            .filter(|k| **k >= super::ATTACK_KEY)
            .count() as u64;
    if shared > 0 {
        active.insert(Population::SharedAppKey, shared);
    }
    if !retriers.is_empty() {
        active.insert(Population::AggressiveRetrier, retriers.len() as u64);
    }
    let nat_range = truth.benign.len()..truth.benign.len() + truth.nat.len();
    RunResult {
        nat_traffic: sent[nat_range].to_vec(),
        truth,
        first,
        requests,
        retries,
        active,
        retriers,
        seconds: second,
    }
}

/// The score of one rule over every run.
#[derive(Debug, Clone, Default)]
pub struct RuleScore {
    /// The rule's window (for the time-to-detect goal).
    pub window: SignedDuration,
    /// Attackers of the rule's own scenarios.
    pub attackers: u64,
    /// Of those, detected by the rule.
    pub detected: u64,
    /// Time to detect of each detected attacker (from its attack's start).
    pub ttd: Vec<SignedDuration>,
    /// Clients the rule detected.
    pub detections: u64,
    /// Of those, attackers of any scenario.
    pub on_attackers: u64,
    /// Of those, benign clients (every population).
    pub on_benign: u64,
}

impl RuleScore {
    /// Detected attackers of any scenario / detected clients (`None` without detections).
    pub fn precision(&self) -> Option<f64> {
        (self.detections > 0).then(|| self.on_attackers as f64 / self.detections as f64)
    }

    /// Detected attackers of the rule's scenarios / their attackers.
    pub fn recall(&self) -> Option<f64> {
        (self.attackers > 0).then(|| self.detected as f64 / self.attackers as f64)
    }

    /// Nearest-rank percentile `p` (0–1) of the time to detect.
    pub fn ttd_percentile(&self, p: f64) -> Option<SignedDuration> {
        let mut v = self.ttd.clone();
        v.sort();
        let i = ((v.len() as f64 * p).ceil() as usize).max(1) - 1;
        v.get(i).copied()
    }
}

/// What the rules did to one benign population over every run.
#[derive(Debug, Clone, Default)]
pub struct PopulationScore {
    /// Its clients that sent traffic, summed over runs.
    pub clients: u64,
    /// Its clients detected, per rule.
    pub flagged: BTreeMap<String, u64>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    /// Per rule name, in [`default_rules`] order.
    pub rules: Vec<(String, RuleScore)>,
    /// (scenario, rule name) → its attackers' clients the rule detected.
    pub cross: BTreeMap<(Scenario, String), u64>,
    /// Attackers per scenario.
    pub attackers: BTreeMap<Scenario, u64>,
    /// Per benign population.
    pub populations: BTreeMap<Population, PopulationScore>,
    /// Runs (simulated days).
    pub runs: u64,
    /// Simulated seconds over all runs.
    pub seconds: i64,
    /// Requests over all runs.
    pub requests: u64,
    /// Retries over all runs.
    pub retries: u64,
    /// Benign client-runs (active benign clients summed over runs).
    pub benign_clients: u64,
    /// Wall-clock time the evaluation took (set by [`evaluate`]).
    pub elapsed: std::time::Duration,
}

impl EvalReport {
    /// Simulated days per run.
    fn days_per_run(&self) -> f64 {
        self.seconds as f64 / 86_400.0 / self.runs.max(1) as f64
    }

    /// False positives per 10 000 benign clients per simulated day for `score`.
    pub fn fp_per_10k_day(&self, score: &RuleScore) -> f64 {
        per_10k_day(score.on_benign, self.benign_clients, self.days_per_run())
    }

    /// The score of rule `name`.
    pub fn rule(&self, name: &str) -> Option<&RuleScore> {
        self.rules.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    fn rule_mut(&mut self, name: &str) -> &mut RuleScore {
        let i = match self.rules.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.rules.push((name.to_owned(), RuleScore::default()));
                self.rules.len() - 1
            }
        };
        &mut self.rules[i].1
    }

    /// Adds one run.
    pub fn add(&mut self, run: &RunResult) {
        self.runs += 1;
        self.seconds += run.seconds;
        self.requests += run.requests;
        self.retries += run.retries;
        self.benign_clients += run.benign_active();
        for spec in default_rules(&[], SignedDuration::ZERO) {
            self.rule_mut(&spec.name).window = window_of(&spec);
        }
        for (pop, n) in &run.active {
            self.populations.entry(*pop).or_default().clients += n;
        }
        for ((rule, key), _) in run.first.iter() {
            let s = self.rule_mut(rule);
            s.detections += 1;
            match run.truth.who(key) {
                Who::Attacker(a) => {
                    s.on_attackers += 1;
                    let scenario = run.truth.attacks[a as usize].scenario;
                    *self.cross.entry((scenario, rule.clone())).or_default() += 1;
                }
                Who::Benign(pop) => {
                    s.on_benign += 1;
                    let p = self.populations.entry(pop).or_default();
                    *p.flagged.entry(rule.clone()).or_default() += 1;
                    let net = match key {
                        ClientKey::Ip(ip) => Some(super::identity_net(*ip)),
                        ClientKey::IpPrefix(net) => Some(super::identity_net(net.network())),
                        _ => None,
                    };
                    if net.is_some_and(|n| run.retriers.contains(&n)) {
                        let p = self
                            .populations
                            .entry(Population::AggressiveRetrier)
                            .or_default();
                        *p.flagged.entry(rule.clone()).or_default() += 1;
                    }
                }
                Who::Unknown => {}
            }
        }
        for a in &run.truth.attacks {
            for id in a.identities() {
                *self.attackers.entry(a.scenario).or_default() += 1;
                for own in own_rules(a.scenario) {
                    let s = self.rule_mut(own);
                    s.attackers += 1;
                    if let Some(at) = run.first.get(&((*own).to_owned(), id)) {
                        s.detected += 1;
                        s.ttd.push(at.duration_since(a.start));
                    }
                }
            }
        }
    }
}

fn per_10k_day(flagged: u64, clients: u64, days: f64) -> f64 {
    let client_days = clients as f64 * days;
    if client_days == 0.0 {
        0.0
    } else {
        flagged as f64 / client_days * 10_000.0
    }
}

/// Runs every scenario of [`Scenario::ALL`] for `opts.days` simulated days each (seeds
/// derived from `opts.sim.seed`), calling `progress` after each run.
pub fn evaluate(
    opts: &EvalConfig,
    mut progress: impl FnMut(Scenario, u32, &RunResult),
) -> EvalReport {
    let began = Instant::now();
    let mut report = EvalReport::default();
    for (k, scenario) in Scenario::ALL.into_iter().enumerate() {
        for day in 0..opts.days {
            let mut sim = opts.sim.clone();
            sim.seed = opts
                .sim
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add((k as u64) << 16 | u64::from(day));
            sim.scenarios = vec![scenario];
            // The baseline learns first; attacks come after.
            sim.warmup = opts.anomaly_history;
            sim.duration = opts.anomaly_history + sim.duration;
            let run = run(sim, opts);
            report.add(&run);
            progress(scenario, day, &run);
        }
    }
    report.elapsed = began.elapsed();
    report
}

/// Goals of issue 8.
pub const GOAL_PRECISION: f64 = 0.95;
/// Goals of issue 8.
pub const GOAL_RECALL: f64 = 0.95;
/// Goals of issue 8: false positives per 10 000 benign clients per day.
pub const GOAL_FP: f64 = 1.0;
/// Goal of issue 19: time to detect p95 at most the rule's window plus this.
pub const GOAL_TTD_SLACK: SignedDuration = SignedDuration::from_secs(2);

fn secs(d: Option<SignedDuration>) -> String {
    d.map_or("–".into(), |d| format!("{:.0} s", d.as_secs_f64()))
}

fn frac(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{x:.3}"))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

/// Whether `s` meets every goal (its time to detect within its window + 2 s).
pub fn meets_goals(r: &EvalReport, s: &RuleScore) -> bool {
    s.precision().is_none_or(|p| p >= GOAL_PRECISION)
        && s.recall().unwrap_or(0.0) >= GOAL_RECALL
        && r.fp_per_10k_day(s) <= GOAL_FP
        && s.ttd_percentile(0.95)
            .is_none_or(|t| t <= s.window + GOAL_TTD_SLACK)
}

/// The evaluation as Markdown (the body of `bench/results/detection.md`, after the
/// caller's header lines).
pub fn markdown(r: &EvalReport, opts: &EvalConfig) -> String {
    let mut o = String::new();
    let days = r.seconds as f64 / 86_400.0;
    let m = &opts.sim;
    let _ = writeln!(
        o,
        "- Model: `palisade_detection::sim` (seed {seed}), {runs} runs of {per:.0} h of virtual time \
         ({days:.0} simulated days, {req} requests of which {retries} retries); per run {clients} \
         single-user IPs, {nat} office NAT gateways ({lo}–{hi} users each), {carriers} mobile \
         carriers ({addrs} CGNAT addresses and {musers} app users each), {checkers} health checkers \
         (every {hc} s), {v6} IPv6 households (1–4 devices with privacy addresses), {partners} \
         integration partners ({prate} req/s each, day and night), {outages} outage(s) of 5–15 min \
         a day with retries ({aggr:.0} % of clients retry every second); {rate} benign req/s on \
         average with a diurnal shape; {per_kind} attacks of one scenario.\n\
         - Pipeline: {pods} sidecar counters (counting clients by IP, IP prefix and API key) → \
         JSON report every virtual second → the collector's windows (default: 5 min of 30 s \
         slices, 24 h of 15 min slices) → `run_rules`; 5-minute rules every {se} s, the others \
         (24 h, API Scraper's 1 h, TorList) every {le} s of virtual time (so time to detect is \
         rounded up to that step).\n\
         - Rules: the `DetectionRule` defaults (Flooder 5 % / 300 requests / 20 clients / 1000 \
         namespace requests, by IP and by IP prefix; Static Content Scraper 10 % / 50 MiB; Brute \
         Guessor 50 % / 100, by IP and by API key; Robot Abuser 100 / 20 %; OAuth Abuser 50 \
         sessions / ≤ 2 user agents; TorList with the run's exit list; API Scraper 80 % \
         sequential / 500 requests in 1 h; Advanced Anomaly `Medium` with `minHistory` {hist} h: \
         each run starts with that much benign traffic, attacks come after).\n\
         - Wall-clock time of the evaluation: {el:.1} s.\n",
        seed = m.seed,
        runs = r.runs,
        per = r.seconds as f64 / 3600.0 / r.runs.max(1) as f64,
        req = r.requests,
        retries = r.retries,
        clients = m.clients,
        nat = m.nat_clients,
        lo = m.nat_users.0,
        hi = m.nat_users.1,
        carriers = m.cgnat_carriers,
        addrs = m.cgnat_addresses,
        musers = m.cgnat_users,
        checkers = m.health_checkers,
        hc = m.health_every.as_secs(),
        v6 = m.ipv6_households,
        partners = m.partners,
        prate = m.partner_rate,
        outages = m.outages_per_day,
        aggr = m.aggressive_retriers * 100.0,
        rate = m.base_rate,
        per_kind = m.attacks_per_kind,
        pods = opts.pods,
        se = opts.short_every.as_secs(),
        le = opts.long_every.as_secs(),
        el = r.elapsed.as_secs_f64(),
        hist = opts.anomaly_history.as_secs() / 3600,
    );
    let _ = writeln!(
        o,
        "| rule | attackers | detected | recall | detections | on attackers | on benign | precision | TTD p50 | TTD p95 | FP / 10k clients / day |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (rule, s) in &r.rules {
        let _ = writeln!(
            o,
            "| {rule} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} |",
            s.attackers,
            s.detected,
            frac(s.recall()),
            s.detections,
            s.on_attackers,
            s.on_benign,
            frac(s.precision()),
            secs(s.ttd_percentile(0.5)),
            secs(s.ttd_percentile(0.95)),
            r.fp_per_10k_day(s),
        );
    }
    let _ = writeln!(
        o,
        "\n## Goals\n\nPrecision ≥ {GOAL_PRECISION}, recall ≥ {GOAL_RECALL}, false positives ≤ {GOAL_FP} \
         per 10 000 benign clients per simulated day ({days:.0} days × ~{per_run} benign clients), \
         time to detect p95 ≤ the rule's window + {slack} s.\n\n\
         | rule | precision | recall | false positives | TTD p95 ≤ window + {slack} s |\n|---|---|---|---|---|",
        per_run = r.benign_clients / r.runs.max(1),
        slack = GOAL_TTD_SLACK.as_secs(),
    );
    for (rule, s) in &r.rules {
        let p = s.precision();
        let ttd = s.ttd_percentile(0.95);
        let _ = writeln!(
            o,
            "| {rule} | {} | {} | {} | {} |",
            p.map_or("no detections", |p| met(p >= GOAL_PRECISION)),
            met(s.recall().unwrap_or(0.0) >= GOAL_RECALL),
            met(r.fp_per_10k_day(s) <= GOAL_FP),
            ttd.map_or("–", |t| met(t <= s.window + GOAL_TTD_SLACK)),
        );
    }
    let _ = writeln!(
        o,
        "\n## Collateral per benign population\n\nClients of each population that sent traffic \
         (summed over runs; a household counts once by its /64, a partner by each server and its \
         key), and those any rule detected, per 10 000 of them per simulated day. Aggressive \
         retriers are also counted in their own population.\n\n\
         | population | clients | detected | per 10k / day | by rule |\n|---|---|---|---|---|"
    );
    for (pop, p) in &r.populations {
        let flagged: u64 = p.flagged.values().sum();
        let by: Vec<String> = p.flagged.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            o,
            "| {} | {} | {flagged} | {:.3} | {} |",
            pop.label(),
            p.clients,
            per_10k_day(flagged, p.clients, r.days_per_run()),
            if by.is_empty() {
                "–".to_owned()
            } else {
                by.join(", ")
            },
        );
    }
    let _ = writeln!(
        o,
        "\nReading it: zero false positives means no benign client of the model crossed a \
         rule's definition, not that none of yours will. The model keeps every benign client \
         under 5 % of the requests and gives no benign client a day of failures or of token \
         refreshes from one user agent; such clients *are* Flooders, Brute Guessors or OAuth \
         Abusers by the rules' definitions (see docs/detection.md, \"Evaluating the rules\" \
         and \"False-positive traps\")."
    );
    let _ = writeln!(
        o,
        "\n## Which rules caught which scenario\n\nClients of each scenario's attacks detected by \
         each rule (a robot whose 403s make up most of its answers is also a Brute Guessor by \
         definition; the key guessor's addresses count one by one).\n"
    );
    let _ = write!(o, "| scenario | attackers |");
    for (rule, _) in &r.rules {
        let _ = write!(o, " {rule} |");
    }
    let _ = write!(o, "\n|---|---|");
    for _ in &r.rules {
        let _ = write!(o, "---|");
    }
    let _ = writeln!(o);
    for (scenario, n) in &r.attackers {
        let _ = write!(o, "| {} | {n} |", scenario.name());
        for (rule, _) in &r.rules {
            let _ = write!(
                o,
                " {} |",
                r.cross.get(&(*scenario, rule.clone())).unwrap_or(&0)
            );
        }
        let _ = writeln!(o);
    }
    o
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = RuleScore {
            ttd: (1..=20).rev().map(SignedDuration::from_secs).collect(),
            ..Default::default()
        };
        assert_eq!(s.ttd_percentile(0.5), Some(SignedDuration::from_secs(10)));
        assert_eq!(s.ttd_percentile(0.95), Some(SignedDuration::from_secs(19)));
        assert_eq!(RuleScore::default().ttd_percentile(0.5), None);
    }
}
