//! The sidecar's Prometheus metrics. Labels are bounded: verdict, reason, source — never IPs,
//! keys, paths or any other request input.
//!
//! The request path takes no lock: the series it touches are resolved once at start-up (a
//! `Family::get_or_create` takes a read lock and hashes the label set), and the latency
//! histogram is [`AtomicHistogram`] (prometheus-client's `Histogram` locks a mutex per
//! observation).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Request verdicts (label `verdict` of `requests` and `request_duration_seconds`);
/// `abandoned`: the client left before the answer.
pub const VERDICTS: [&str; 8] = [
    "allow",
    "deny",
    "flag",
    "ratelimit",
    "none",
    "observed",
    "error",
    "abandoned",
];
/// Would-be decisions of observe mode (label `verdict` of `observed`).
pub const OBSERVED: [&str; 3] = ["allow", "deny", "forward"];
/// Where a client IP came from (label `source` of `client_ip_resolutions`).
pub const SOURCES: [&str; 4] = ["socket", "xff_untrusted_peer", "xff", "xff_invalid"];

/// A Prometheus histogram whose buckets are atomics: an observation is a bucket search and
/// two relaxed atomic adds, without a lock. The sum is kept in nanoseconds.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds in seconds, ascending; a last `+Inf` bucket follows them in `counts`.
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with these finite upper bounds (seconds, ascending) and `+Inf`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.into_iter().filter(|b| b.is_finite()).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(HistogramInner {
                bounds,
                counts,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let i = &self.inner;
        let secs = d.as_secs_f64();
        let bucket = i.bounds.partition_point(|b| *b < secs);
        i.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        i.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let i = &self.inner;
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = i
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&i.counts)
            .map(|(bound, c)| {
                let c = c.load(Ordering::Relaxed);
                count += c;
                (bound, c)
            })
            .collect();
        // Nanoseconds to seconds; f64 is exact up to 2^53 ns (104 days of summed latency).
        #[allow(clippy::cast_precision_loss)]
        let sum = i.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The series of a family for each known label value, resolved once.
#[derive(Debug)]
pub struct Resolved<M> {
    by_value: Vec<(&'static str, M)>,
}

impl<M> Resolved<M> {
    /// The series of `value`, if it is one of the known values.
    pub fn get(&self, value: &str) -> Option<&M> {
        self.by_value
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, m)| m)
    }
}

fn resolve<L, M, C>(
    family: &Family<L, M, C>,
    values: &[&'static str],
    label: fn(&'static str) -> L,
) -> Resolved<M>
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    Resolved {
        by_value: values
            .iter()
            .map(|v| (*v, family.get_or_create(&label(v)).clone()))
            .collect(),
    }
}

/// Label of a request outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    /// allow, deny, flag, none (no action matched), observed (--observe), error; for
    /// `observed`: allow, deny, forward.
    pub verdict: &'static str,
}

/// Label with a fixed reason name (error variant names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// PascalCase reason from the error enums.
    pub reason: &'static str,
}

/// Label with the source of a value (client IP: socket or xff).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// Where the value came from.
    pub source: &'static str,
}

/// Label of a direction of tunnelled bytes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `to_app` or `to_client`.
    pub direction: &'static str,
}

/// Label naming an identity header kind (developer, app, product).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeaderLabel {
    /// The kind of identity header.
    pub header: &'static str,
}

/// Label naming how JWT claims are read (off, verified, unverified).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// The mode.
    pub mode: &'static str,
}

/// Label naming what became of a token's claims (verified, unverified, or a reject reason).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: &'static str,
}

/// Label carrying the enforced bundle version (one series at a time).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BundleLabel {
    /// Version string of the bundle in force.
    pub version: String,
}

/// All metric handles, shared by reference.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<VerdictLabel, Counter>,
    pub observed: Family<VerdictLabel, Counter>,
    pub latency: Family<VerdictLabel, AtomicHistogram, fn() -> AtomicHistogram>,
    pub upstream_errors: Family<ReasonLabel, Counter>,
    pub client_ip: Family<SourceLabel, Counter>,
    /// Identity headers ignored because the peer is not a trusted proxy, by kind.
    pub ignored_headers: Family<HeaderLabel, Counter>,
    /// 1 for the JWT mode in force, 0 for the others.
    pub jwt_mode: Family<ModeLabel, Gauge>,
    /// Bearer tokens whose claims were read or refused, by outcome.
    pub jwt_claims: Family<OutcomeLabel, Counter>,
    /// Keys of the JWKS in force.
    pub jwks_keys: Gauge,
    /// JWKS files not loaded, by reason.
    pub jwks_errors: Family<ReasonLabel, Counter>,
    pub bundle_info: Family<BundleLabel, Gauge>,
    pub bundle_loaded: Gauge,
    /// 1 while the start-up grace has passed without a bundle (the pod runs without policy).
    pub policy_missing: Gauge,
    pub bundle_swaps: Counter,
    pub bundle_errors: Family<ReasonLabel, Counter>,
    /// 1 when bundles must carry the operator's signature (`--bundle-keys`), else 0.
    pub bundle_signatures_checked: Gauge,
    /// Requests answered 400 because their path was refused, by `PathError` reason.
    pub rejected_paths: Family<ReasonLabel, Counter>,
    pub connections: Gauge,
    /// Admin connections refused, by reason (Full, PeerFull).
    pub admin_refused: Family<ReasonLabel, Counter>,
    /// Upgraded (WebSocket) connections: open, bytes each way, how they ended.
    pub tunnels: crate::tunnel::TunnelMetrics,
    pub tunnel_bytes: Family<DirectionLabel, Counter>,
    pub tunnels_closed: Family<ReasonLabel, Counter>,
    /// Window summaries delivered, dropped, and held for a later try.
    pub reports: crate::report::ReportMetrics,
    /// Requests not counted for detection because the counter was behind.
    pub count_dropped: Counter,
    /// Clients of a rate-limit table whose cell another client took (see `crate::limit`).
    pub rate_limit_evictions: Counter,
    /// Bytes of the rate-limit tables of the bundle in force.
    pub rate_limit_bytes: Gauge,
    /// Rate-limited requests answered at once because too many were already held (tarpit).
    pub tarpit_skipped: Counter,
    /// `requests` and `latency` of each verdict in [`VERDICTS`].
    requests_by: Resolved<(Counter, AtomicHistogram)>,
    /// `observed` of each value in [`OBSERVED`].
    observed_by: Resolved<Counter>,
    /// `client_ip` of each value in [`SOURCES`].
    client_ip_by: Resolved<Counter>,
    /// `ignored_headers` of each kind.
    ignored_by: Resolved<Counter>,
    /// `jwt_claims` of each outcome.
    jwt_claims_by: Resolved<Counter>,
}

fn latency_histogram() -> AtomicHistogram {
    // 50 µs … ~6.5 s, factor 2.
    AtomicHistogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 18,
    ))
}

impl Metrics {
    /// Creates the handles and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let requests = Family::default();
        let latency = Family::new_with_constructor(latency_histogram as fn() -> AtomicHistogram);
        let observed = Family::default();
        let client_ip = Family::default();
        let verdict = |verdict| VerdictLabel { verdict };
        let counters = resolve(&requests, &VERDICTS, verdict);
        let histograms = resolve(&latency, &VERDICTS, verdict);
        let requests_by = Resolved {
            by_value: counters
                .by_value
                .into_iter()
                .zip(histograms.by_value)
                .map(|((v, c), (_, h))| (v, (c, h)))
                .collect(),
        };
        let observed_by = resolve(&observed, &OBSERVED, verdict);
        let client_ip_by = resolve(&client_ip, &SOURCES, |source| SourceLabel { source });
        let tunnel_bytes = Family::<DirectionLabel, Counter>::default();
        let tunnels_closed = Family::<ReasonLabel, Counter>::default();
        let bytes = |direction| {
            tunnel_bytes
                .get_or_create(&DirectionLabel { direction })
                .clone()
        };
        let closed = |reason| {
            tunnels_closed
                .get_or_create(&ReasonLabel { reason })
                .clone()
        };
        let tunnels = crate::tunnel::TunnelMetrics {
            open: Gauge::default(),
            to_app: bytes("to_app"),
            to_client: bytes("to_client"),
            ended: closed("Ended"),
            idle: closed("IdleTimeout"),
            failed: closed("Failed"),
        };
        let ignored_headers = Family::default();
        let ignored_by = resolve(
            &ignored_headers,
            &crate::identify::IgnoredHeaders::KINDS,
            |header| HeaderLabel { header },
        );
        let jwt_claims = Family::default();
        let outcomes: Vec<&'static str> = ["verified", "unverified"]
            .into_iter()
            .chain(crate::jwt::Reject::ALL.map(crate::jwt::Reject::as_str))
            .collect();
        let jwt_claims_by = resolve(&jwt_claims, &outcomes, |outcome| OutcomeLabel { outcome });
        let jwt_mode: Family<ModeLabel, Gauge> = Family::default();
        for mode in crate::jwt::Mode::ALL {
            let _ = jwt_mode.get_or_create(&ModeLabel {
                mode: mode.as_str(),
            });
        }
        let m = Self {
            requests,
            observed,
            latency,
            upstream_errors: Family::default(),
            client_ip,
            ignored_headers,
            jwt_mode,
            jwt_claims,
            jwks_keys: Gauge::default(),
            jwks_errors: Family::default(),
            bundle_info: Family::default(),
            bundle_loaded: Gauge::default(),
            policy_missing: Gauge::default(),
            bundle_swaps: Counter::default(),
            bundle_errors: Family::default(),
            bundle_signatures_checked: Gauge::default(),
            rejected_paths: Family::default(),
            connections: Gauge::default(),
            admin_refused: Family::default(),
            tunnels,
            tunnel_bytes,
            tunnels_closed,
            reports: crate::report::ReportMetrics::default(),
            count_dropped: Counter::default(),
            rate_limit_evictions: Counter::default(),
            rate_limit_bytes: Gauge::default(),
            tarpit_skipped: Counter::default(),
            requests_by,
            observed_by,
            client_ip_by,
            ignored_by,
            jwt_claims_by,
        };
        let r = registry.sub_registry_with_prefix("palisade_sidecar");
        r.register("requests", "Requests by verdict", m.requests.clone());
        r.register(
            "observed",
            "Requests matched by observe-mode actions (or in --observe), by would-be decision",
            m.observed.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to response head, by verdict",
            m.latency.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed exchanges with the app",
            m.upstream_errors.clone(),
        );
        r.register(
            "client_ip_resolutions",
            "Where the client IP came from: socket, xff_untrusted_peer (X-Forwarded-For from a peer outside the trusted proxies, ignored), xff, xff_invalid (an entry that is not an address stopped the walk)",
            m.client_ip.clone(),
        );
        r.register(
            "identity_headers_ignored",
            "Identity headers (developer, app, product) sent by a peer outside the trusted proxies, ignored",
            m.ignored_headers.clone(),
        );
        r.register(
            "jwt_mode",
            "How JWT claims are read: 1 for the mode in force (off, verified, unverified)",
            m.jwt_mode.clone(),
        );
        r.register(
            "jwt_claims",
            "Bearer tokens whose claims were wanted, by outcome: verified, unverified (--jwt-unverified), or why they were refused",
            m.jwt_claims.clone(),
        );
        r.register(
            "jwks_keys",
            "Keys of the JWKS in force",
            m.jwks_keys.clone(),
        );
        r.register(
            "jwks_load_errors",
            "JWKS files not loaded (the last good keys stay), by reason",
            m.jwks_errors.clone(),
        );
        r.register(
            "bundle_info",
            "Version of the enforced bundle (value 1)",
            m.bundle_info.clone(),
        );
        r.register(
            "bundle_loaded",
            "1 once a bundle is in force",
            m.bundle_loaded.clone(),
        );
        r.register(
            "policy_missing",
            "1 while the start-up grace (--policy-grace) has passed without a policy bundle",
            m.policy_missing.clone(),
        );
        r.register("bundle_swaps", "Bundles applied", m.bundle_swaps.clone());
        r.register(
            "reports_sent",
            "Window summaries delivered to the collector",
            m.reports.sent.clone(),
        );
        r.register(
            "reports_direct",
            "Window summaries delivered straight to the operator replica owning the namespace's collector shard (a subset of reports_sent)",
            m.reports.direct.clone(),
        );
        r.register(
            "reports_failed",
            "Window summaries dropped: refused by the collector, pushed out of a full backlog, or left at exit",
            m.reports.failed.clone(),
        );
        r.register(
            "reports_pending",
            "Window summaries held for a later try while the collector is unreachable",
            m.reports.pending.clone(),
        );
        r.register(
            "count_dropped",
            "Requests not counted because the counter was behind",
            m.count_dropped.clone(),
        );
        r.register(
            "bundle_load_errors",
            "Bundles rejected, by reason",
            m.bundle_errors.clone(),
        );
        r.register(
            "bundle_signatures_checked",
            "1 when bundles are applied only if the operator signed them (--bundle-keys), else 0",
            m.bundle_signatures_checked.clone(),
        );
        r.register(
            "rate_limit_evictions",
            "Clients whose rate-limit state was taken by another client (the table was full of live clients; raise --rate-limit-clients)",
            m.rate_limit_evictions.clone(),
        );
        r.register(
            "rate_limit_table_bytes",
            "Bytes of the rate-limit tables of the bundle in force",
            m.rate_limit_bytes.clone(),
        );
        r.register(
            "tarpit_skipped",
            "Rate-limited requests answered at once because the most held requests (tarpit) were already held",
            m.tarpit_skipped.clone(),
        );
        r.register(
            "rejected_paths",
            "Requests answered 400 because their path was refused (InvalidPercentEncoding, EscapedSlash, Backslash)",
            m.rejected_paths.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open",
            m.connections.clone(),
        );
        r.register(
            "admin_refused",
            "Admin port connections refused at the limit, by reason (Full, PeerFull)",
            m.admin_refused.clone(),
        );
        r.register(
            "tunnels_open",
            "Upgraded (WebSocket) connections open",
            m.tunnels.open.clone(),
        );
        r.register(
            "tunnel_bytes",
            "Bytes through upgraded connections, by direction",
            m.tunnel_bytes.clone(),
        );
        r.register(
            "tunnels_closed",
            "Upgraded connections ended, by reason (Ended, IdleTimeout, Failed)",
            m.tunnels_closed.clone(),
        );
        m
    }

    /// Counts one answered request and its duration, by verdict (lock-free for the
    /// [`VERDICTS`]).
    pub fn request(&self, verdict: &'static str, took: Duration) {
        match self.requests_by.get(verdict) {
            Some((count, latency)) => {
                count.inc();
                latency.observe(took);
            }
            None => {
                let label = VerdictLabel { verdict };
                self.requests.get_or_create(&label).inc();
                self.latency.get_or_create(&label).observe(took);
            }
        }
    }

    /// Counts a request matched by an observe-mode action, by would-be decision.
    pub fn observed(&self, verdict: &'static str) {
        match self.observed_by.get(verdict) {
            Some(c) => c.inc(),
            None => self.observed.get_or_create(&VerdictLabel { verdict }).inc(),
        };
    }

    /// Counts where a client IP came from.
    pub fn client_ip(&self, source: &'static str) {
        match self.client_ip_by.get(source) {
            Some(c) => c.inc(),
            None => self.client_ip.get_or_create(&SourceLabel { source }).inc(),
        };
    }

    /// Counts identity headers ignored from an untrusted peer.
    pub fn ignored_headers(&self, ignored: crate::identify::IgnoredHeaders) {
        for kind in ignored.kinds() {
            if let Some(c) = self.ignored_by.get(kind) {
                c.inc();
            }
        }
    }

    /// Counts a request whose path was refused (`reason`: a `PathError` reason; rare, so the
    /// family's lock is acceptable here).
    pub fn rejected_path(&self, reason: &'static str) {
        self.rejected_paths
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts what became of a token's claims.
    pub fn jwt_claims(&self, outcome: crate::jwt::ClaimsOutcome) {
        if let Some(c) = outcome.label().and_then(|l| self.jwt_claims_by.get(l)) {
            c.inc();
        }
    }

    /// Records the JWT mode in force and the keys loaded at start.
    pub fn set_jwt_mode(&self, mode: &'static str, keys: usize) {
        for m in crate::jwt::Mode::ALL {
            let v = i64::from(m.as_str() == mode);
            self.jwt_mode
                .get_or_create(&ModeLabel { mode: m.as_str() })
                .set(v);
        }
        self.jwks_keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// Counts a JWKS that was not loaded.
    pub fn jwks_error(&self, reason: &'static str) {
        self.jwks_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Records the bundle now in force.
    pub fn set_bundle(&self, version: &str) {
        self.bundle_info.clear();
        self.bundle_info
            .get_or_create(&BundleLabel {
                version: version.to_owned(),
            })
            .set(1);
        self.bundle_loaded.set(1);
        self.policy_missing.set(0);
        self.bundle_swaps.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

    fn text(register: impl FnOnce(&mut Registry)) -> String {
        let mut r = Registry::default();
        register(&mut r);
        let mut out = String::new();
        encode(&mut out, &r).expect("encode");
        out
    }

    #[test]
    fn the_atomic_histogram_encodes_like_prometheus_clients_histogram() {
        let bounds = || exponential_buckets(0.00005, 2.0, 18);
        let ours = AtomicHistogram::new(bounds());
        let theirs = Histogram::new(bounds());
        // Below the first bound, on a bound, between bounds, past the last one.
        for micros in [10, 50, 51, 99, 100, 3_000, 250_000, 20_000_000] {
            ours.observe(Duration::from_micros(micros));
            #[allow(clippy::cast_precision_loss)]
            theirs.observe(micros as f64 / 1e6);
        }
        let a = text(|r| r.register("lat", "latency", ours));
        let b = text(|r| r.register("lat", "latency", theirs));
        assert_eq!(a, b);
        assert!(a.contains("lat_count 8"), "{a}");
        assert!(a.contains("lat_bucket{le=\"+Inf\"} 8"), "{a}");
    }

    #[test]
    fn every_known_series_exists_from_the_start_and_counts_without_the_family() {
        let mut r = Registry::default();
        let m = Metrics::new(&mut r);
        m.request("deny", Duration::from_micros(80));
        m.request("deny", Duration::from_micros(80));
        m.request("unheard-of", Duration::from_micros(80));
        m.client_ip("xff");
        m.observed("forward");
        let mut out = String::new();
        encode(&mut out, &r).expect("encode");
        for want in [
            "palisade_sidecar_requests_total{verdict=\"deny\"} 2",
            "palisade_sidecar_requests_total{verdict=\"allow\"} 0",
            "palisade_sidecar_requests_total{verdict=\"unheard-of\"} 1",
            "palisade_sidecar_request_duration_seconds_count{verdict=\"deny\"} 2",
            "palisade_sidecar_client_ip_resolutions_total{source=\"xff\"} 1",
            "palisade_sidecar_client_ip_resolutions_total{source=\"socket\"} 0",
            "palisade_sidecar_observed_total{verdict=\"forward\"} 1",
        ] {
            assert!(out.contains(want), "no `{want}` in\n{out}");
        }
    }
}
