//! The sidecar's Prometheus metrics. Labels are bounded: verdict, reason, source — never IPs,
//! keys, paths or any other request input.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    pub latency: Family<VerdictLabel, Histogram, fn() -> Histogram>,
    pub upstream_errors: Family<ReasonLabel, Counter>,
    pub client_ip: Family<SourceLabel, Counter>,
    pub bundle_info: Family<BundleLabel, Gauge>,
    pub bundle_loaded: Gauge,
    pub bundle_swaps: Counter,
    pub bundle_errors: Family<ReasonLabel, Counter>,
    pub connections: Gauge,
    /// Window summaries delivered to the collector.
    pub reports_sent: Counter,
    /// Window summaries dropped after a failed delivery (the collector tolerates the gap).
    pub reports_failed: Counter,
    /// Requests not counted for detection because the counter was behind.
    pub count_dropped: Counter,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~6.5 s, factor 2.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 18,
    ))
}

impl Metrics {
    /// Creates the handles and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            observed: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_errors: Family::default(),
            client_ip: Family::default(),
            bundle_info: Family::default(),
            bundle_loaded: Gauge::default(),
            bundle_swaps: Counter::default(),
            bundle_errors: Family::default(),
            connections: Gauge::default(),
            reports_sent: Counter::default(),
            reports_failed: Counter::default(),
            count_dropped: Counter::default(),
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
            "Client IP taken from socket or xff",
            m.client_ip.clone(),
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
        r.register("bundle_swaps", "Bundles applied", m.bundle_swaps.clone());
        r.register(
            "reports_sent",
            "Window summaries delivered to the collector",
            m.reports_sent.clone(),
        );
        r.register(
            "reports_failed",
            "Window summaries that could not be delivered",
            m.reports_failed.clone(),
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
            "open_connections",
            "Client connections open",
            m.connections.clone(),
        );
        m
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
        self.bundle_swaps.inc();
    }
}
