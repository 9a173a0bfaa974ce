//! The detection collector: receives the sidecars' window summaries (authenticated with
//! their projected service-account tokens), merges them per namespace, runs the namespace's
//! DetectionRules, publishes the detected-client set (ConfigMap `palisade-detected`) so that
//! `detectedBy` conditions take effect in every sidecar, and clusters detections into
//! SecurityIncidents with Events. Every replica accepts connections; the namespaces are divided
//! into shards, each merged and evaluated by the one replica that owns it ([`shards`]; with one
//! shard, the leader): another replica forwards a report to the owner ([`forward`]), and the
//! owner persists the shard's state so a restart, failover or hand-over keeps the windows and
//! incidents ([`persist`]).

mod auth;
mod convert;
mod episode;
mod evaluate;
pub mod evidence;
mod forward;
mod incident_cr;
mod ingress;
mod lifecycle;
mod persist;
pub mod posture;
mod proposed;
mod quota;
pub mod replay;
mod server;
mod shards;
mod snapshot;
mod surge;
mod torlist;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt as _, watcher};
use palisade_crds::DetectionRule;
use palisade_detection::detected::DetectedSet;
use palisade_detection::incident::Incident;
use palisade_detection::report::Report;
use palisade_detection::window::{MergeOutcome, WindowConfig, WindowSet};

use crate::context::Context;
use crate::metrics::{FailureLabels, OutcomeLabels, StateLabels};

/// What the collector keeps between ticks (in memory; a new leader restores the persisted
/// copy, see [`persist`]).
#[derive(Debug)]
pub struct State {
    windows: WindowSet,
    detected: HashMap<String, DetectedSet>,
    incidents: HashMap<String, Vec<Incident>>,
    written: HashMap<String, serde_json::Value>,
    published: HashMap<String, evaluate::Published>,
    /// Namespaces warned about their client IPs being a proxy's (not persisted: a new
    /// leader warns once more).
    ingress: ingress::Flagged,
    /// Each namespace's ongoing error surge (persisted with the state: a new leader goes on
    /// with the same incident).
    surges: surge::Surges,
    /// Per-action counts and the generation each pod enforces ([`evidence`]).
    evidence: evidence::Evidence,
    /// The last hour's request samples ([`replay`]).
    replay: replay::Replay,
}

impl State {
    fn new() -> Self {
        Self {
            windows: WindowSet::new(WindowConfig::default()),
            detected: HashMap::new(),
            incidents: HashMap::new(),
            written: HashMap::new(),
            published: HashMap::new(),
            ingress: ingress::Flagged::default(),
            surges: surge::Surges::default(),
            evidence: evidence::Evidence::default(),
            replay: replay::Replay::default(),
        }
    }

    /// Forgets everything about the namespaces for which `keep` is false (their shard moved
    /// to another replica, which restores it from the shard's saved state).
    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.windows.retain(&keep);
        self.detected.retain(|ns, _| keep(ns));
        self.incidents.retain(|ns, _| keep(ns));
        let ids: std::collections::HashSet<&str> = self
            .incidents
            .values()
            .flatten()
            .map(|i| i.id.as_str())
            .collect();
        self.written.retain(|id, _| ids.contains(id.as_str()));
        self.published.retain(|ns, _| keep(ns));
        self.surges.retain(&keep);
        self.evidence.keep_namespaces(&keep);
        self.replay.retain(&keep);
    }
}

/// The collector shared by the server and the evaluator.
#[derive(Debug)]
pub struct Collector {
    ctx: Arc<Context>,
    auth: auth::Authenticator,
    state: Mutex<State>,
    /// The shards whose Lease this replica holds and whose state it restored: it merges
    /// their namespaces' reports and evaluates them ([`shards`]).
    shards: shards::Ownership,
    forward: forward::Forwarder,
    /// The endpoint advertised on the Lease while leading.
    advertise: Option<String>,
    /// Every SecurityIncident, watched (archive labels, retention).
    incidents: Store<palisade_crds::SecurityIncident>,
    /// Every DetectionRule, watched: the rules evaluated each tick and the TorList feeds
    /// (reading them from a watch costs the API server nothing per tick).
    rules: Store<DetectionRule>,
    /// The exit lists of TorList rules (downloaded or read from their ConfigMaps).
    tor: torlist::Feeds,
    /// The namespaces `--namespace-selector` selects, watched.
    namespaces: Store<Namespace>,
    /// Reports per pod and pods per namespace ([`quota`]).
    quotas: Mutex<quota::Quotas>,
}

impl Collector {
    /// Merges a report of a namespace this replica owns; `None` when it no longer does
    /// (checked under the state's lock: a shard handed over is disowned before its state is
    /// saved, so a report is either in the saved state or refused, never merged after).
    fn merge(&self, report: &Report) -> Option<MergeOutcome> {
        let now = jiff::Timestamp::now();
        let (outcome, kept) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !self.owns(&report.sidecar.namespace) {
                return None;
            }
            let outcome = state.windows.merge(report, now);
            // A duplicate (already merged) report is not counted twice.
            let kept = match outcome {
                MergeOutcome::Duplicate => Vec::new(),
                _ => {
                    state.replay.record(report, now);
                    state.evidence.record(report, now)
                }
            };
            (outcome, kept)
        };
        evidence::count_metrics(self, &report.sidecar.namespace, &kept);
        Some(outcome)
    }

    /// Counts a quota that bit.
    fn count_quota(&self, reason: &'static str, n: u64) {
        let labels = crate::metrics::ReasonLabels { reason };
        self.ctx
            .metrics
            .collector_quota
            .get_or_create(&labels)
            .inc_by(n);
    }

    fn count(&self, outcome: &'static str) {
        let labels = FailureLabels {
            controller: "collector",
            reason: outcome,
        };
        self.ctx.metrics.reports.get_or_create(&labels).inc();
    }

    fn count_forward(&self, outcome: &'static str) {
        let labels = OutcomeLabels { outcome };
        self.ctx
            .metrics
            .reports_forwarded
            .get_or_create(&labels)
            .inc();
    }

    fn count_state(&self, op: &'static str, outcome: &'static str) {
        let labels = StateLabels { op, outcome };
        self.ctx
            .metrics
            .collector_state
            .get_or_create(&labels)
            .inc();
    }

    /// Whether this replica merges and evaluates `namespace` now.
    fn owns(&self, namespace: &str) -> bool {
        self.shards.owns(namespace)
    }

    /// Whether this replica merges and evaluates any shard now.
    fn owns_any(&self) -> bool {
        self.shards.owned() != 0
    }
}

/// Serves `/v1/reports` on `--collector-listen` (HTTPS with the operator's managed
/// certificate, unless `--collector-plain-http`) and evaluates the rules every
/// `--detection-interval`, until shutdown.
pub async fn spawn(ctx: Arc<Context>) -> anyhow::Result<()> {
    let addr = ctx.args.collector_listen;
    let pod_ip = std::env::var("POD_IP").ok();
    let advertise = forward::advertise_addr(
        ctx.args.collector_advertise_addr.as_deref(),
        pod_ip.as_deref(),
        addr,
    );
    let (incidents, writer) = reflector::store();
    // The rules and the selected namespaces come from the operator's shared watches (the
    // policy controller drives them).
    let rules = ctx.caches.rules.clone();
    let namespaces = ctx.caches.namespaces.clone();
    let c = Arc::new(Collector {
        ctx: ctx.clone(),
        auth: auth::Authenticator::default(),
        state: Mutex::new(State::new()),
        shards: shards::Ownership::new(ctx.args.collector_shards),
        forward: forward::Forwarder::default(),
        advertise,
        incidents,
        rules,
        tor: torlist::Feeds::default(),
        namespaces,
        quotas: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("collector on {addr}: {e}; check --collector-listen"))?;
    let https = !ctx.args.collector_plain_http;
    tracing::info!(%addr, https, advertise = ?c.advertise, "collector listening");
    let app = server::router(c.clone());
    let serve = async {
        if https {
            let store = ctx.certs.clone();
            crate::injector::server::serve_on(listener, store, app, ctx.shutdown.clone()).await
        } else {
            crate::injector::server::serve_with(listener, None, app, ctx.shutdown.clone()).await
        }
    };
    let persist = tokio::spawn(shards::run(c.clone()));
    let r = tokio::select! {
        r = serve => r.map_err(Into::into),
        r = evaluate::run(c.clone()) => r,
        r = Box::pin(lifecycle::run(c.clone(), writer)) => r,
        r = Box::pin(torlist::run(c.clone())) => r,
        r = Box::pin(evidence::run(c.clone())) => r,
        r = Box::pin(replay::run(c)) => r,
    };
    if ctx.shutdown.is_cancelled() {
        // The leader saves its state once more before this returns.
        persist.await??;
    } else {
        persist.abort();
    }
    r
}

/// Keeps `writer`'s store in step with the objects of the watch `events` until it ends
/// (never, in practice: watch errors are logged and retried with backoff).
async fn reflect<K, S>(writer: Writer<K>, events: S, what: &'static str)
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
    S: futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
{
    use futures::StreamExt as _;
    reflector::reflector(writer, events)
        .default_backoff()
        .for_each(|event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, what, "watch failed; retrying");
            }
            futures::future::ready(())
        })
        .await;
}
