//! The detection collector: receives the sidecars' window summaries (authenticated with
//! their projected service-account tokens), merges them per namespace, runs the namespace's
//! DetectionRules, publishes the detected-client set (ConfigMap `palisade-detected`) so that
//! `detectedBy` conditions take effect in every sidecar, and clusters detections into
//! SecurityIncidents with Events. Every replica accepts connections; only the leader merges
//! and writes.

mod auth;
mod convert;
mod evaluate;
mod incident_cr;
mod proposed;
mod server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use palisade_detection::detected::DetectedSet;
use palisade_detection::incident::Incident;
use palisade_detection::report::Report;
use palisade_detection::window::{MergeOutcome, WindowConfig, WindowSet};

use crate::context::Context;
use crate::metrics::FailureLabels;

/// What the collector keeps between ticks (in memory; a new leader starts empty windows).
#[derive(Debug)]
pub struct State {
    windows: WindowSet,
    detected: HashMap<String, DetectedSet>,
    incidents: HashMap<String, Vec<Incident>>,
    written: HashMap<String, serde_json::Value>,
    published: HashMap<String, evaluate::Published>,
}

/// The collector shared by the server and the evaluator.
#[derive(Debug)]
pub struct Collector {
    ctx: Arc<Context>,
    auth: auth::Authenticator,
    state: Mutex<State>,
}

impl Collector {
    fn merge(&self, report: &Report) -> MergeOutcome {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.windows.merge(report, jiff::Timestamp::now())
    }

    fn count(&self, outcome: &'static str) {
        let labels = FailureLabels {
            controller: "collector",
            reason: outcome,
        };
        self.ctx.metrics.reports.get_or_create(&labels).inc();
    }
}

/// Serves `/v1/reports` on `--collector-listen` and evaluates the rules every
/// `--detection-interval`, until shutdown.
pub async fn spawn(ctx: Arc<Context>) -> anyhow::Result<()> {
    let state = State {
        windows: WindowSet::new(WindowConfig::default()),
        detected: HashMap::new(),
        incidents: HashMap::new(),
        written: HashMap::new(),
        published: HashMap::new(),
    };
    let c = Arc::new(Collector {
        ctx: ctx.clone(),
        auth: auth::Authenticator::default(),
        state: Mutex::new(state),
    });
    let addr = ctx.args.collector_listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("collector on {addr}: {e}; check --collector-listen"))?;
    tracing::info!(%addr, "collector listening");
    let serve = axum::serve(listener, server::router(c.clone()))
        .with_graceful_shutdown(ctx.shutdown.clone().cancelled_owned());
    tokio::select! {
        r = serve => r.map_err(Into::into),
        r = evaluate::run(c) => r,
    }
}
