//! The injector: a mutating admission webhook that adds the Palisade sidecar to pods that
//! opt in (`palisade.dev/inject: enabled` on the pod or its namespace), and refuses pods that
//! would run without it in namespaces that require it (`palisade.dev/inject: required`).
//!
//! Watches: nothing but its own certificate Secret. Writes: that Secret and the `caBundle`
//! of its MutatingWebhookConfiguration (leader only), Events `Injected` /
//! `InjectionSkipped` / `InjectionRequired` (every replica, about the admissions it answered).
//! Serves `/mutate` and `/mutate-required` over HTTPS on every replica.

pub mod admit;
pub mod cabundle;
pub mod certs;
pub mod config;
pub mod error;
pub mod patch;
pub mod rotate;
pub mod server;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use kube::runtime::events::{Event, EventType};

use crate::context::Context;
use crate::metrics::AdmissionLabels;
use admit::Outcome;
use config::InjectConfig;
use error::InjectorError;

/// Serves the webhook and keeps its certificate current, until shutdown.
pub async fn spawn(ctx: Arc<Context>) -> anyhow::Result<()> {
    let store = ctx.certs.clone();
    let cfg = Arc::new(ctx.args.injector.inject_config());
    let app = router(ctx.clone(), cfg);
    let addr = ctx.args.injector.webhook_addr;
    let serve = server::serve(addr, store.clone(), app, ctx.shutdown.clone());
    tokio::select! {
        r = serve => r.map_err(|source| InjectorError::Serve { addr, source })?,
        r = rotate::run(ctx.clone(), store) => r?,
    }
    Ok(())
}

fn router(ctx: Arc<Context>, cfg: Arc<InjectConfig>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/mutate-required", post(mutate_required))
        .route("/validate-securityaction", post(crate::blast::validate))
        // The API server sends at most 3 MiB; nothing larger is read.
        .layer(axum::extract::DefaultBodyLimit::max(3 << 20))
        .with_state((ctx, cfg))
}

/// Pods of namespaces that opted in (`palisade.dev/inject: enabled`) or that opt in themselves.
async fn mutate(
    State((ctx, cfg)): State<(Arc<Context>, Arc<InjectConfig>)>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    answer(&ctx, &cfg, &body, admit::Mode::OptIn)
}

/// Pods of namespaces that require the sidecar (`palisade.dev/inject: required`).
async fn mutate_required(
    State((ctx, cfg)): State<(Arc<Context>, Arc<InjectConfig>)>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    answer(&ctx, &cfg, &body, admit::Mode::Required)
}

fn answer(
    ctx: &Arc<Context>,
    cfg: &Arc<InjectConfig>,
    body: &[u8],
    mode: admit::Mode,
) -> axum::Json<serde_json::Value> {
    let Some(keys) = ctx.signing_keys() else {
        // Without the keys an injected sidecar could not tell the operator's bundles from
        // anyone's: refuse until they are loaded (seconds after the first start).
        let msg = format!(
            "palisade: the operator has not loaded its bundle-signing key yet (Secret {}/{}); \
             retry in a few seconds",
            ctx.args.namespace, ctx.args.bundle_signing_secret
        );
        let (review, outcome) = admit::unavailable(body, &msg);
        record(ctx, outcome);
        return axum::Json(serde_json::to_value(review).unwrap_or_default());
    };
    // Sidecars verify the collector's HTTPS with the CA bundle current at pod creation, and
    // bundles with the signing keys current then (and those the keys endorse later).
    let collector_ca = if ctx.args.collector_plain_http {
        None
    } else {
        ctx.ca_bundle.load_full().map(|ca| ca.to_string())
    };
    let cfg = InjectConfig {
        collector_ca,
        bundle_keys: Some(keys.trust_list()),
        ..(**cfg).clone()
    };
    let (review, outcome) = admit::review(body, &cfg, &ctx.args.namespace, mode);
    record(ctx, outcome);
    axum::Json(serde_json::to_value(review).unwrap_or_default())
}

/// Counts the admission and publishes its Event in the background (the API server is
/// waiting for the response; an Event must never delay it).
fn record(ctx: &Arc<Context>, outcome: Outcome) {
    let labels = AdmissionLabels {
        result: outcome.result,
        reason: outcome.reason,
    };
    ctx.metrics.admissions.get_or_create(&labels).inc();
    tracing::debug!(
        result = outcome.result,
        reason = outcome.reason,
        "admission"
    );
    let Some(note) = outcome.event else { return };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let ev = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.to_owned(),
            note: Some(note.note),
            action: "Inject".to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &note.regarding).await {
            tracing::warn!(error = %e, reason = note.reason, "publishing the admission Event");
        }
    });
}
