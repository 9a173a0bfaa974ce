//! The replay sample: a bounded, uniform sample of each namespace's requests over the last
//! hour, so that a candidate SecurityAction can be evaluated against real recent traffic
//! before it is applied ("this action would have matched ~1,240 requests from 37 clients,
//! 2.1 % of the traffic").
//!
//! Sidecars sample one request in 64 and send at most 256 of them per report, each with what
//! a condition can look at: address, method, normalised path, status, user agent, region,
//! ASN, developer, app, product, and API key and token as SHA-256 hashes (never in clear).
//! The leader keeps, per namespace and minute, a uniform reservoir of at most
//! [`PER_MINUTE`] samples and how many requests and samples the minute had; every minute it
//! writes the last hour into the namespace's ConfigMap [`REPLAY_CM`] (gzip JSON, at most
//! [`MAX_DOC_BYTES`], thinned when larger). Who can read ConfigMaps in the namespace can read
//! the sample: the same people who can read the application's own logs.
//!
//! [`estimate`] evaluates an action against a sample with the sidecar's own evaluator
//! (`palisade_policy`); `palisade-operator replay` runs it from a terminal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use palisade_detection::report::{Report, RequestSample};
use palisade_policy::{ActionId, ActionSpec, CompiledPolicy, Inputs, Mode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Collector;

/// The ConfigMap holding a namespace's replay sample.
pub const REPLAY_CM: &str = "palisade-replay";
/// Its key (gzip-compressed JSON, [`ReplayDoc`]).
pub const REPLAY_KEY: &str = "replay.json.gz";
/// Version of [`ReplayDoc`].
pub const REPLAY_VERSION: u32 = 1;
/// Samples kept per namespace and minute.
pub const PER_MINUTE: usize = 128;
/// Minutes kept.
pub const MINUTES: usize = 60;
/// Largest compressed document written.
pub const MAX_DOC_BYTES: usize = 768 * 1024;
/// Largest decompressed document read.
const MAX_INFLATED: u64 = 32 * 1024 * 1024;

/// One sampled request and how many requests of its report it stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weighted {
    /// Requests of its report per sample of its report.
    pub weight: f64,
    /// The request.
    #[serde(flatten)]
    pub sample: RequestSample,
}

/// One minute of a namespace's sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Minute {
    /// Its start.
    pub start: jiff::Timestamp,
    /// Requests the sidecars reported in it.
    pub requests: u64,
    /// Samples offered to its reservoir (`samples` is a uniform subset of them).
    pub seen: u64,
    /// At most [`PER_MINUTE`] samples.
    pub samples: Vec<Weighted>,
}

/// A namespace's replay sample, as written into [`REPLAY_CM`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayDoc {
    /// [`REPLAY_VERSION`].
    pub version: u32,
    /// When it was written.
    pub taken_at: jiff::Timestamp,
    /// The minutes of the last hour with traffic, oldest first.
    pub minutes: Vec<Minute>,
}

/// Why a replay sample cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No sample yet.
    #[error(
        "no replay sample in namespace {0}: ConfigMap {REPLAY_CM} appears once its sidecars have \
         reported traffic to the collector (written every minute)"
    )]
    Missing(String),
    /// The document does not decode.
    #[error("ConfigMap {REPLAY_CM} does not hold a version-{REPLAY_VERSION} sample: {0}")]
    Corrupt(String),
}

/// Every namespace's sample, on the leader.
#[derive(Debug, Default)]
pub struct Replay {
    namespaces: HashMap<String, VecDeque<Minute>>,
    rng: u64,
    /// Namespaces with samples not yet written.
    dirty: HashSet<String>,
    /// When each namespace's sample was last handed out for writing.
    written: HashMap<String, jiff::Timestamp>,
}

impl Replay {
    /// Keeps the samples of the namespaces for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.namespaces.retain(|ns, _| keep(ns));
        self.dirty.retain(|ns| keep(ns));
        self.written.retain(|ns, _| keep(ns));
    }

    /// Files the samples and request count of one accepted report.
    pub fn record(&mut self, r: &Report, now: jiff::Timestamp) {
        if r.totals.requests == 0 {
            return;
        }
        let at = r.end.min(now).as_second();
        let start = jiff::Timestamp::from_second(at - at.rem_euclid(60)).unwrap_or(now);
        let horizon = now - jiff::SignedDuration::from_secs(60 * MINUTES as i64);
        if start < horizon {
            return;
        }
        let minutes = self
            .namespaces
            .entry(r.sidecar.namespace.clone())
            .or_default();
        match minutes.iter().rposition(|m| m.start <= start) {
            Some(i) if minutes[i].start == start => {}
            found => minutes.insert(
                found.map_or(0, |i| i + 1),
                Minute {
                    start,
                    requests: 0,
                    seen: 0,
                    samples: Vec::new(),
                },
            ),
        }
        while minutes.front().is_some_and(|m| m.start < horizon) {
            minutes.pop_front();
        }
        let Some(m) = minutes.iter_mut().find(|m| m.start == start) else {
            return;
        };
        m.requests = m.requests.saturating_add(r.totals.requests);
        let weight = r.totals.requests as f64 / r.samples.len().max(1) as f64;
        for s in &r.samples {
            m.seen += 1;
            let w = Weighted {
                weight,
                sample: s.clone(),
            };
            if m.samples.len() < PER_MINUTE {
                m.samples.push(w);
            } else {
                let j = next(&mut self.rng) % m.seen;
                if let Some(slot) = usize::try_from(j).ok().and_then(|j| m.samples.get_mut(j)) {
                    *slot = w;
                }
            }
        }
        self.dirty.insert(r.sidecar.namespace.clone());
    }

    /// The documents of the namespaces that changed and were not written in the last
    /// `every` (the first at once), for the last hour as of `now`.
    pub fn take_changed(
        &mut self,
        now: jiff::Timestamp,
        every: jiff::SignedDuration,
    ) -> Vec<(String, ReplayDoc)> {
        let horizon = now - jiff::SignedDuration::from_secs(60 * MINUTES as i64);
        let mut out = Vec::new();
        let due: Vec<String> = self
            .dirty
            .iter()
            .filter(|ns| {
                self.written
                    .get(*ns)
                    .is_none_or(|at| now.duration_since(*at) >= every)
            })
            .cloned()
            .collect();
        for ns in due {
            self.dirty.remove(&ns);
            self.written.insert(ns.clone(), now);
            let Some(minutes) = self.namespaces.get_mut(&ns) else {
                continue;
            };
            minutes.retain(|m| m.start >= horizon);
            out.push((
                ns,
                ReplayDoc {
                    version: REPLAY_VERSION,
                    taken_at: now,
                    minutes: minutes.iter().cloned().collect(),
                },
            ));
        }
        self.namespaces.retain(|_, m| !m.is_empty());
        let namespaces = &self.namespaces;
        self.written.retain(|ns, _| namespaces.contains_key(ns));
        out
    }
}

fn next(rng: &mut u64) -> u64 {
    if *rng == 0 {
        *rng = 0x9e37_79b9_7f4a_7c15;
    }
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// `doc` as gzip JSON of at most `limit` bytes: each minute's samples are thinned (every
/// other one kept, `seen` unchanged, so estimates stay unbiased) until it fits.
pub fn encode(mut doc: ReplayDoc, limit: usize) -> Vec<u8> {
    loop {
        let json = serde_json::to_vec(&doc).expect("a replay sample always serialises");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&json).expect("writing to memory");
        let bytes = gz.finish().expect("writing to memory");
        if bytes.len() <= limit || doc.minutes.iter().all(|m| m.samples.len() <= 1) {
            return bytes;
        }
        for m in &mut doc.minutes {
            let mut i = 0;
            m.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
    }
}

/// Reads a document written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<ReplayDoc, ReplayError> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_INFLATED)
        .read_to_end(&mut json)
        .map_err(|e| ReplayError::Corrupt(e.to_string()))?;
    let doc: ReplayDoc =
        serde_json::from_slice(&json).map_err(|e| ReplayError::Corrupt(e.to_string()))?;
    if doc.version != REPLAY_VERSION {
        return Err(ReplayError::Corrupt(format!("version {}", doc.version)));
    }
    Ok(doc)
}

/// Reads namespace `ns`'s sample from its ConfigMap.
pub async fn read(client: &kube::Client, ns: &str) -> Result<ReplayDoc, anyhow::Error> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(REPLAY_CM)
        .await?
        .ok_or_else(|| ReplayError::Missing(ns.to_owned()))?;
    let bytes = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(REPLAY_KEY))
        .ok_or_else(|| ReplayError::Corrupt(format!("no key {REPLAY_KEY}")))?;
    Ok(decode(&bytes.0)?)
}

/// What an action would have done to the sampled traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// Estimated requests it would have matched.
    pub matched_requests: u64,
    /// Distinct client addresses among the matching samples (a lower bound of the clients).
    pub clients: usize,
    /// Requests the sample covers.
    pub total_requests: u64,
    /// `matched_requests / total_requests`, in percent.
    pub percent: f64,
    /// Samples that matched, and samples evaluated.
    pub samples_matched: usize,
    /// Samples evaluated.
    pub samples: usize,
    /// Oldest minute covered.
    pub from: Option<jiff::Timestamp>,
    /// Conditions the sample cannot evaluate (`detectedBy`, the workload selector), ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<&'static str>,
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "would have matched ~{} of {} requests ({:.1} %) from at least {} clients \
             ({} of {} sampled requests",
            self.matched_requests,
            self.total_requests,
            self.percent,
            self.clients,
            self.samples_matched,
            self.samples
        )?;
        if let Some(from) = self.from {
            write!(f, " since {from}")?;
        }
        write!(f, ")")?;
        if !self.ignored.is_empty() {
            write!(f, "; not replayed: {}", self.ignored.join(", "))?;
        }
        Ok(())
    }
}

/// Evaluates `spec` (compiled alone, enforced, for every workload) against `doc`.
/// `lists` are the texts of the IP lists it references (see `policy::convert::list_texts`).
/// An action that does not compile is an error with the compiler's reason and message.
pub fn estimate(
    doc: &ReplayDoc,
    mut spec: ActionSpec,
    lists: std::collections::BTreeMap<palisade_policy::ListRef, String>,
    now: jiff::Timestamp,
) -> Result<Estimate, String> {
    let mut ignored = Vec::new();
    if spec.workload_selector.take().is_some() {
        ignored.push("targets.workloadSelector");
    }
    if spec.conditions.detected_by.take().is_some() {
        ignored.push("detectedBy");
    }
    spec.mode = Mode::Enforce;
    spec.paused = false;
    spec.expire_time = None;
    // An action left with no condition would be refused by the API server; the sample does
    // not pretend it matches everything.
    let inputs = Inputs {
        actions: vec![spec],
        lists,
        ..Inputs::default()
    };
    let out = palisade_policy::compile(&inputs, now);
    if let Some(palisade_policy::ActionStatus::Invalid { reason, message }) =
        out.statuses.values().next()
    {
        return Err(format!("the action does not compile ({reason}): {message}"));
    }
    let policy = CompiledPolicy::new(out.bundle, &Default::default());
    let (mut matched, mut total_w, mut n, mut hit) = (0.0, 0.0, 0usize, 0usize);
    let mut clients: HashSet<IpAddr> = HashSet::new();
    let mut total_requests = 0u64;
    for m in &doc.minutes {
        total_requests = total_requests.saturating_add(m.requests);
        // Each kept sample stands for `seen / kept` offered samples of its minute.
        let scale = m.seen as f64 / m.samples.len().max(1) as f64;
        for w in &m.samples {
            n += 1;
            total_w += w.weight * scale;
            if matches(&policy, &w.sample, now) {
                hit += 1;
                matched += w.weight * scale;
                clients.insert(w.sample.ip);
            }
        }
    }
    // The sample's own total may differ from the reported one by sampling noise: scale to
    // the reported total.
    let matched_requests = if total_w > 0.0 {
        (matched / total_w * total_requests as f64).round() as u64
    } else {
        0
    };
    Ok(Estimate {
        matched_requests,
        clients: clients.len(),
        total_requests,
        percent: if total_requests == 0 {
            0.0
        } else {
            matched_requests as f64 * 100.0 / total_requests as f64
        },
        samples_matched: hit,
        samples: n,
        from: doc.minutes.first().map(|m| m.start),
        ignored,
    })
}

fn matches(policy: &CompiledPolicy, s: &RequestSample, now: jiff::Timestamp) -> bool {
    let hash = |h: &Option<String>| -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(h.as_deref()?, &mut out).ok()?;
        Some(out)
    };
    let (key, token) = (hash(&s.api_key), hash(&s.token));
    let region = s.region.as_deref().and_then(|r| {
        let b = r.as_bytes();
        (b.len() == 2).then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
    });
    let req = palisade_policy::Request {
        ip: s.ip,
        region,
        asn: s.asn,
        api_key_hash: key.as_ref(),
        token_hash: token.as_ref(),
        developer: s.developer.as_deref(),
        app: s.app.as_deref(),
        product: s.product.as_deref(),
        user_agent: s.user_agent.as_deref(),
        method: &s.method,
        path: &s.path,
        detected: None,
        now_unix_s: now.as_second(),
    };
    palisade_policy::evaluate(policy, &req)
        .matched
        .contains(ActionId(0))
}

/// On the leader: writes each changed namespace's sample into its [`REPLAY_CM`], the first
/// within seconds of its first traffic, then at most every `--replay-interval`.
pub async fn run(c: Arc<Collector>) -> anyhow::Result<()> {
    let every = c.ctx.args.replay_interval;
    let mut tick = tokio::time::interval(every.min(std::time::Duration::from_secs(5)));
    let every = jiff::SignedDuration::try_from(every).unwrap_or(jiff::SignedDuration::MAX);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            () = c.ctx.shutdown.cancelled() => return Ok(()),
        }
        if !c.owns_any() {
            continue;
        }
        let now = jiff::Timestamp::now();
        let docs = {
            let mut state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.replay.take_changed(now, every)
        };
        for (ns, doc) in docs {
            let bytes = tokio::task::spawn_blocking(move || encode(doc, MAX_DOC_BYTES)).await?;
            if let Err(e) = write(&c, &ns, &bytes).await {
                tracing::warn!(namespace = %ns, error = %e, "could not write the replay sample");
            }
        }
    }
}

async fn write(c: &Collector, ns: &str, bytes: &[u8]) -> Result<(), kube::Error> {
    use base64::Engine as _;
    let api = Api::<ConfigMap>::namespaced(c.ctx.clients.collector.clone(), ns);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": REPLAY_CM, "labels": {
            "app.kubernetes.io/managed-by": "palisade-operator",
            "app.kubernetes.io/part-of": "palisade"}},
        "binaryData": {REPLAY_KEY: base64::engine::general_purpose::STANDARD.encode(bytes)}});
    api.patch(
        REPLAY_CM,
        &PatchParams::apply("palisade-operator").force(),
        &Patch::Apply(&cm),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use palisade_detection::report::{REPORT_VERSION, SidecarId};
    use palisade_policy::{Conditions, PathMatch, Verb};

    use super::*;

    fn sample(ip: &str, path: &str) -> RequestSample {
        RequestSample {
            ip: ip.parse().unwrap(),
            method: "GET".into(),
            path: path.into(),
            status: 200,
            user_agent: Some("curl/8".into()),
            region: Some("NL".into()),
            asn: Some(64500),
            api_key: Some(hex::encode([7u8; 32])),
            token: None,
            developer: None,
            app: None,
            product: None,
        }
    }

    fn report(
        ns: &str,
        requests: u64,
        samples: Vec<RequestSample>,
        end: jiff::Timestamp,
    ) -> Report {
        Report {
            version: REPORT_VERSION,
            sidecar: SidecarId {
                pod: "api-0".into(),
                workload: "api".into(),
                namespace: ns.into(),
            },
            seq: 1,
            start: end - jiff::SignedDuration::from_secs(1),
            end,
            totals: palisade_detection::stats::Totals {
                requests,
                ..Default::default()
            },
            clients: vec![],
            attributes: vec![],
            evicted: 0,
            actions: vec![],
            generation: None,
            samples,
        }
    }

    fn deny(conditions: Conditions) -> ActionSpec {
        ActionSpec {
            name: "candidate".into(),
            verb: Verb::Deny {
                status: 403,
                body: String::new(),
                content_type: "text/plain".into(),
            },
            mode: Mode::Observe,
            conditions,
            match_all: false,
            workload_selector: None,
            paused: true,
            expire_time: None,
        }
    }

    fn doc_of(reports: &[Report], now: jiff::Timestamp) -> ReplayDoc {
        let mut r = Replay::default();
        for rep in reports {
            r.record(rep, now);
        }
        let mut docs = r.take_changed(now, jiff::SignedDuration::from_secs(60));
        assert_eq!(docs.len(), 1);
        docs.pop().unwrap().1
    }

    #[test]
    fn an_estimate_scales_the_matching_samples_to_the_reported_traffic() {
        let now = jiff::Timestamp::now();
        // 1,000 requests, sampled as 4 from 192.0.2.1 and 6 from 198.51.100.7.
        let samples: Vec<_> = (0..10)
            .map(|i| {
                let ip = if i < 4 { "192.0.2.1" } else { "198.51.100.7" };
                sample(ip, if i % 2 == 0 { "/login" } else { "/api" })
            })
            .collect();
        let doc = doc_of(&[report("shop", 1000, samples, now)], now);
        let by_ip = deny(Conditions {
            ip_ranges: vec!["192.0.2.0/24".into()],
            ..Conditions::default()
        });
        let e = estimate(&doc, by_ip, Default::default(), now).unwrap();
        assert_eq!(
            (e.matched_requests, e.total_requests, e.clients),
            (400, 1000, 1)
        );
        assert_eq!((e.samples_matched, e.samples), (4, 10));
        assert!((e.percent - 40.0).abs() < 1e-9, "{e:?}");
        assert!(
            e.to_string().contains("~400 of 1000 requests (40.0 %)"),
            "{e}"
        );
        // Paths, regions, ASNs and hashed API keys are evaluated as the sidecar does.
        let login = deny(Conditions {
            paths: vec![PathMatch::Exact("/login".into())],
            ..Conditions::default()
        });
        assert_eq!(
            estimate(&doc, login, Default::default(), now)
                .unwrap()
                .samples_matched,
            5
        );
        let key = deny(Conditions {
            api_keys: vec![format!("sha256:{}", hex::encode([7u8; 32]))],
            region_codes: vec!["NL".into()],
            asns: vec![64500],
            ..Conditions::default()
        });
        assert_eq!(
            estimate(&doc, key, Default::default(), now)
                .unwrap()
                .matched_requests,
            1000
        );
        let nobody = deny(Conditions {
            ip_ranges: vec!["203.0.113.0/24".into()],
            ..Conditions::default()
        });
        let e = estimate(&doc, nobody, Default::default(), now).unwrap();
        assert_eq!((e.matched_requests, e.clients), (0, 0));
        // A condition the compiler refuses is an error, not "matches nothing".
        let bad = deny(Conditions {
            api_keys: vec!["a-key-in-clear".into()],
            ..Conditions::default()
        });
        let err = estimate(&doc, bad, Default::default(), now).unwrap_err();
        assert!(err.contains("does not compile"), "{err}");
    }

    #[test]
    fn a_busy_minute_keeps_a_bounded_uniform_reservoir_and_old_minutes_go() {
        let now = jiff::Timestamp::now();
        let mut r = Replay::default();
        for i in 0..40 {
            let samples = (0..64)
                .map(|j| {
                    sample(
                        if (i + j) % 2 == 0 {
                            "192.0.2.1"
                        } else {
                            "192.0.2.2"
                        },
                        "/",
                    )
                })
                .collect();
            r.record(&report("shop", 640, samples, now), now);
        }
        // Two hours old: outside the hour.
        r.record(
            &report(
                "shop",
                5,
                vec![sample("192.0.2.9", "/")],
                now - jiff::SignedDuration::from_secs(7200),
            ),
            now,
        );
        let docs = r.take_changed(now, jiff::SignedDuration::from_secs(60));
        let doc = &docs[0].1;
        assert_eq!(doc.minutes.len(), 1);
        let m = &doc.minutes[0];
        assert_eq!(
            (m.requests, m.seen, m.samples.len()),
            (25_600, 2560, PER_MINUTE)
        );
        let one = deny(Conditions {
            ip_ranges: vec!["192.0.2.1/32".into()],
            ..Conditions::default()
        });
        let e = estimate(doc, one, Default::default(), now).unwrap();
        assert!((35.0..65.0).contains(&e.percent), "about half: {e:?}");
        // Not written again before the interval, unless it changed and the interval passed.
        assert!(
            r.take_changed(now, jiff::SignedDuration::from_secs(60))
                .is_empty()
        );
    }

    #[test]
    fn a_document_too_large_is_thinned_and_reads_back() {
        let now = jiff::Timestamp::now();
        let samples: Vec<_> = (0..200u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i * 7919).to_string();
                sample(&ip, &format!("/items/{}", i * 104_729))
            })
            .collect();
        let doc = doc_of(&[report("shop", 5000, samples, now)], now);
        let full = encode(doc.clone(), usize::MAX);
        let small = encode(doc.clone(), full.len() / 2);
        assert!(
            small.len() <= full.len() / 2,
            "{} > {}",
            small.len(),
            full.len() / 2
        );
        let back = decode(&small).unwrap();
        assert!(back.minutes[0].samples.len() < doc.minutes[0].samples.len());
        assert_eq!(back.minutes[0].seen, doc.minutes[0].seen);
        assert_eq!(decode(&full).unwrap(), doc);
        assert!(matches!(decode(b"not gzip"), Err(ReplayError::Corrupt(_))));
    }

    #[test]
    fn conditions_the_sample_cannot_see_are_named_not_guessed() {
        let now = jiff::Timestamp::now();
        let doc = doc_of(
            &[report("shop", 10, vec![sample("192.0.2.1", "/")], now)],
            now,
        );
        let mut a = deny(Conditions {
            ip_ranges: vec!["192.0.2.0/24".into()],
            detected_by: Some(palisade_policy::DetectedBy::Any),
            ..Conditions::default()
        });
        a.workload_selector = Some(Default::default());
        let e = estimate(&doc, a, Default::default(), now).unwrap();
        assert_eq!(e.ignored, ["targets.workloadSelector", "detectedBy"]);
        assert!(
            e.to_string()
                .contains("not replayed: targets.workloadSelector, detectedBy")
        );
    }
}
