//! Wires the operator's components: one spawn each, one `select!`.

use std::sync::Arc;

use crate::context::Context;
use crate::{admin, caches, collector, injector, kube_requests, leader, policy, signing};

/// Runs until SIGTERM/SIGINT or until a component fails.
pub async fn run(args: crate::args::Args) -> anyhow::Result<()> {
    let kube_requests = kube_requests::KubeRequests::default();
    let clients = kube_requests::Clients::infer(&kube_requests).await?;
    let (leading, _lease_task) = leader::start_with(clients.leader.clone(), &args).await?;
    let (caches, writers) = caches::new();
    let ctx = Arc::new(Context::new(clients, kube_requests, args, leading, caches));
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    let mut collector = tokio::spawn(collector::spawn(ctx.clone()));
    let r = tokio::select! {
        r = admin::spawn(ctx.clone()) => r,
        r = leader::spawn(ctx.clone()) => r,
        r = injector::spawn(ctx.clone()) => r,
        r = policy::spawn(ctx.clone(), writers) => r,
        r = signing::run(ctx.clone()) => r,
        r = &mut collector => return r?,
    };
    if ctx.shutdown.is_cancelled() {
        // The collector persists its state before it returns; give it a bounded grace.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), collector).await;
    }
    r
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
}
