//! The admin server: `/metrics` (Prometheus text), `/live` (the process serves) and `/ready`
//! (the injector webhook serves a certificate: until then the API server could not call this
//! replica, so it must not be behind the webhook Service).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::context::Context;

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn spawn(ctx: Arc<Context>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(ctx.args.admin_addr).await?;
    tracing::info!(addr = %ctx.args.admin_addr, "admin server listening");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(ctx.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(ctx.shutdown.clone().cancelled_owned())
        .await?;
    Ok(())
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &ctx.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        ),
    }
}

async fn ready(State(ctx): State<Arc<Context>>) -> (StatusCode, Cow<'static, str>) {
    let unavailable = |why: Cow<'static, str>| (StatusCode::SERVICE_UNAVAILABLE, why);
    if !ctx.ready.load(Ordering::Relaxed) {
        unavailable("the webhook has no serving certificate yet".into())
    } else if ctx.signing_keys().is_none() {
        unavailable("the bundle-signing key is not loaded yet".into())
    } else if !ctx.caches.ready() {
        // Its reconciles wait for them: a bundle compiled from a store still filling would
        // miss the objects not listed yet.
        let filling = ctx.caches.filling().join(", ");
        unavailable(
            format!("the watches of {filling} have not completed their first list yet").into(),
        )
    } else {
        (StatusCode::OK, "ready".into())
    }
}
