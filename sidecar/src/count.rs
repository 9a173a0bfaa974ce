//! Counting for detection, off the request path: each finished request becomes a small
//! [`Fact`] pushed into a bounded channel (`try_send`: no lock, no wait; when the counter
//! falls behind, facts are dropped and counted, never queued without bound). One task owns
//! the detection crate's `Counter`, and every report interval hands the window summary to
//! the reporter, with the per-action counts of the policy store ([`crate::hits`]) and the
//! bundle generation in force.
//!
//! A slice with no request and no action count is not sent, except when the generation in
//! force changed since the last report, or as a heartbeat every [`HEARTBEAT`]: the collector
//! learns which generation an idle pod enforces (`status.enforcingPods`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_detection::counter::{Counter, CounterConfig};
use palisade_detection::facts::{Attributes, RequestFacts, Responder};
use palisade_detection::key::{ClientKeyKind, KeyHash};
use palisade_detection::report::{MAX_REPORT_SAMPLES, Report, RequestSample, SidecarId};
use palisade_detection::sequence::PathShape;
use prometheus_client::metrics::counter::Counter as PromCounter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Facts buffered between the request path and the counting task.
const QUEUE: usize = 65_536;
/// One request in this many carries its attributes (product, app, path, …) to the counter.
const ATTR_SAMPLE: u32 = 64;
/// An idle sidecar still reports this often (an empty slice naming its generation).
pub const HEARTBEAT: Duration = Duration::from_secs(60);

/// What one finished request contributes to detection.
#[derive(Debug, Clone)]
pub struct Fact {
    /// Client address (as resolved by identify).
    pub ip: IpAddr,
    /// sha256 of the API key, if any.
    pub api_key: Option<[u8; 32]>,
    /// sha256 of the bearer token, if any.
    pub token: Option<[u8; 32]>,
    /// sha256 of the user agent, if any.
    pub user_agent: Option<[u8; 32]>,
    /// Response status (499 when the client left before the answer).
    pub status: u16,
    /// Response body bytes (Content-Length, or counted as the body streamed).
    pub bytes: u64,
    /// The request hit the OAuth token endpoint.
    pub token_endpoint: bool,
    /// Who answered: the app, the sidecar itself (a deny: never counted as the app's error),
    /// or nobody (the client left first).
    pub responder: Responder,
    /// Shape and number of the request path (API Scraper); the counter compares it with
    /// the client's previous one.
    pub shape: Option<PathShape>,
    /// Sampled attributes.
    pub attrs: Option<Box<OwnedAttrs>>,
}

/// Attributes of a sampled request.
#[derive(Debug, Clone, Default)]
pub struct OwnedAttrs {
    /// API product.
    pub product: Option<String>,
    /// Developer app.
    pub app: Option<String>,
    /// Developer.
    pub developer: Option<String>,
    /// Region code.
    pub region: Option<String>,
    /// Request path.
    pub path: Option<String>,
    /// Method (upper case).
    pub method: String,
    /// `User-Agent` (bounded).
    pub user_agent: Option<String>,
    /// Autonomous system number.
    pub asn: Option<u32>,
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct CountHandle {
    tx: mpsc::Sender<Fact>,
    dropped: PromCounter,
    tick: Arc<AtomicU32>,
}

impl CountHandle {
    /// Whether this request should carry attributes (1 in [`ATTR_SAMPLE`]).
    pub fn sample_attributes(&self) -> bool {
        self.tick
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(ATTR_SAMPLE)
    }

    /// Queues a fact; drops it (and counts the drop) if the counter is behind.
    pub fn record(&self, fact: Fact) {
        if self.tx.try_send(fact).is_err() {
            self.dropped.inc();
        }
    }
}

/// Starts the counting task; every `interval` it sends a report to `reports`. When `finish`
/// is cancelled (the sidecar has drained) it counts the facts still queued, sends the last
/// partial slice and ends, which closes `reports`.
pub fn spawn(
    id: SidecarId,
    interval: Duration,
    dropped: PromCounter,
    reports: mpsc::Sender<Report>,
    finish: CancellationToken,
    store: Arc<Store>,
) -> CountHandle {
    let (tx, mut rx) = mpsc::channel::<Fact>(QUEUE);
    tokio::spawn(async move {
        let cfg = CounterConfig::default();
        let mut counter = Counter::new(id, &cfg, jiff::Timestamp::now());
        follow_bundle(&mut counter, &store);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last = Sent::default();
        let mut samples = Reservoir::new();
        loop {
            tokio::select! {
                fact = rx.recv() => match fact {
                    Some(f) => {
                        record(&mut counter, &f);
                        samples.offer(&f);
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let mut report = take(&mut counter, &store);
                    report.samples = samples.take();
                    if last.wants(&report) {
                        last = Sent::now(&report);
                        if reports.try_send(report).is_err() {
                            tracing::warn!("reporter is behind; a window summary was dropped");
                        }
                    }
                }
                () = finish.cancelled() => break,
            }
        }
        while let Ok(f) = rx.try_recv() {
            record(&mut counter, &f);
            samples.offer(&f);
        }
        let mut report = take(&mut counter, &store);
        report.samples = samples.take();
        if report.totals.requests > 0 || !report.actions.is_empty() {
            // The reporter is draining its queue; waiting for room here loses nothing.
            let _ = reports.send(report).await;
        }
    });
    CountHandle {
        tx,
        dropped,
        tick: Arc::new(AtomicU32::new(0)),
    }
}

/// Counts a fact, and its attributes when the request path sampled it (1 in
/// [`ATTR_SAMPLE`], so each stands for that many requests).
fn record(counter: &mut Counter, f: &Fact) {
    let facts = facts(f);
    counter.record_counts(&facts);
    if f.attrs.is_some() {
        counter.record_sampled(&facts, ATTR_SAMPLE);
    }
}

/// The slice's summary with the action counts and the generation in force. The next slice
/// counts the client key kinds the bundle in force asks for.
fn take(counter: &mut Counter, store: &Store) -> Report {
    let mut report = counter.take_report(jiff::Timestamp::now());
    (report.actions, report.generation) = store.take_action_counts();
    follow_bundle(counter, store);
    report
}

/// Counts the client key kinds the namespace's rules judge by (the bundle's `countKeys`;
/// IP only without a bundle or in one of an older operator).
fn follow_bundle(counter: &mut Counter, store: &Store) {
    let loaded = store.load();
    let wanted = loaded
        .as_deref()
        .map_or(&[ClientKeyKind::Ip][..], |l| &l.policy.bundle().count_keys);
    let before = counter.key_kinds();
    counter.set_key_kinds(wanted);
    if counter.key_kinds() != before {
        tracing::info!(kinds = ?counter.key_kinds(), "counting clients by these key kinds");
    }
    let len = loaded
        .as_deref()
        .map_or(palisade_policy::key::DEFAULT_IPV6_PREFIX_LEN, |l| {
            l.policy.bundle().ipv6_prefix_len
        });
    counter.set_ipv6_prefix_len(len);
}

/// What the last report sent said, and when.
#[derive(Debug, Default)]
struct Sent {
    at: Option<tokio::time::Instant>,
    generation: Option<u64>,
}

impl Sent {
    fn now(r: &Report) -> Self {
        Self {
            at: Some(tokio::time::Instant::now()),
            generation: r.generation,
        }
    }

    /// Whether `r` is worth sending: it counts something, names a generation the collector
    /// has not heard of from this pod, or the heartbeat is due.
    fn wants(&self, r: &Report) -> bool {
        r.totals.requests > 0
            || !r.actions.is_empty()
            || (r.generation.is_some() && r.generation != self.generation)
            || self.at.is_none_or(|at| at.elapsed() >= HEARTBEAT)
    }
}

/// A uniform sample (reservoir) of one slice's sampled requests, at most
/// [`MAX_REPORT_SAMPLES`]: the collector's replay sample.
#[derive(Debug)]
struct Reservoir {
    samples: Vec<RequestSample>,
    seen: u64,
    rng: u64,
}

impl Reservoir {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        Self {
            samples: Vec::new(),
            seen: 0,
            rng: seed | 1,
        }
    }

    /// Offers a request; only those carrying attributes (one in [`ATTR_SAMPLE`]) are sampled.
    fn offer(&mut self, f: &Fact) {
        let Some(a) = f.attrs.as_deref() else { return };
        self.seen += 1;
        if self.samples.len() < MAX_REPORT_SAMPLES {
            self.samples.push(sample(f, a));
            return;
        }
        // xorshift64: uniform enough to pick which sample a newcomer replaces.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let j = self.rng % self.seen;
        if let Some(slot) = usize::try_from(j)
            .ok()
            .and_then(|j| self.samples.get_mut(j))
        {
            *slot = sample(f, a);
        }
    }

    fn take(&mut self) -> Vec<RequestSample> {
        self.seen = 0;
        std::mem::take(&mut self.samples)
    }
}

fn sample(f: &Fact, a: &OwnedAttrs) -> RequestSample {
    RequestSample {
        ip: f.ip,
        method: a.method.clone(),
        path: a.path.clone().unwrap_or_default(),
        status: f.status,
        user_agent: a.user_agent.clone(),
        region: a.region.clone(),
        asn: a.asn,
        api_key: f.api_key.map(hex::encode),
        token: f.token.map(hex::encode),
        developer: a.developer.clone(),
        app: a.app.clone(),
        product: a.product.clone(),
    }
}

fn facts(f: &Fact) -> RequestFacts<'_> {
    let attrs = f
        .attrs
        .as_deref()
        .map_or_else(Attributes::default, |a| Attributes {
            product: a.product.as_deref(),
            app: a.app.as_deref(),
            developer: a.developer.as_deref(),
            region: a.region.as_deref(),
            path: a.path.as_deref(),
            user_agent: a.user_agent.as_deref(),
        });
    RequestFacts {
        ip: f.ip,
        api_key: f.api_key.map(KeyHash),
        access_token: f.token.map(KeyHash),
        user_agent: f.user_agent.map(KeyHash),
        status: f.status,
        bytes: f.bytes,
        token_endpoint: f.token_endpoint,
        responder: f.responder,
        shape: f.shape,
        attrs,
    }
}

#[cfg(test)]
mod tests {
    use palisade_detection::report::SidecarId;

    use super::*;

    fn report(requests: u64, generation: Option<u64>) -> Report {
        let id = SidecarId {
            pod: "api-0".into(),
            workload: "api".into(),
            namespace: "shop".into(),
        };
        let mut counter = Counter::new(id, &CounterConfig::default(), jiff::Timestamp::now());
        for _ in 0..requests {
            counter.record(&RequestFacts::new(
                "192.0.2.1".parse().expect("an address"),
                200,
            ));
        }
        let mut r = counter.take_report(jiff::Timestamp::now());
        r.generation = generation;
        r
    }

    #[test]
    fn an_idle_sidecar_reports_on_a_new_generation_and_as_a_heartbeat_only() {
        let first = Sent::default();
        assert!(
            first.wants(&report(0, None)),
            "the first slice says the pod is up"
        );
        let last = Sent::now(&report(0, Some(7)));
        assert!(
            !last.wants(&report(0, Some(7))),
            "idle, same generation: nothing"
        );
        assert!(last.wants(&report(1, Some(7))), "traffic");
        assert!(last.wants(&report(0, Some(8))), "a new generation at once");
        let due = Sent {
            at: tokio::time::Instant::now().checked_sub(HEARTBEAT),
            generation: Some(7),
        };
        assert!(due.wants(&report(0, Some(7))), "the heartbeat");
    }
}
