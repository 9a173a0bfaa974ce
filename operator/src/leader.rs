//! Leader election with a `coordination.k8s.io/v1` Lease in the operator's namespace: every
//! replica serves the webhook and the collector; only the leader writes bundles, statuses,
//! incidents and Events.

use std::sync::Arc;

use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

use crate::args::Args;
use crate::context::Context;

/// Runs the Lease manager; the returned channel says whether this replica leads.
pub async fn start_with(
    client: kube::Client,
    args: &Args,
) -> anyhow::Result<(watch::Receiver<bool>, tokio::task::JoinHandle<()>)> {
    let duration = args.lease_duration;
    let grace = (duration / 3).max(1);
    let params = LeaseParams::new(args.identity.clone(), duration, grace)
        .with_field_manager("palisade-operator-lease");
    let manager = LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&args.namespace)
        .with_parameters(params)
        .build()
        .await?;
    let (rx, task) = manager.watch().await;
    let handle = tokio::spawn(async move {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "lease manager stopped");
        }
    });
    Ok((rx, handle))
}

/// Mirrors leadership into the `leader` metric and the log.
pub async fn spawn(ctx: Arc<Context>) -> anyhow::Result<()> {
    let mut rx = ctx.leader.clone();
    loop {
        let leading = *rx.borrow_and_update();
        ctx.metrics.leader.set(i64::from(leading));
        tracing::info!(identity = %ctx.args.identity, leading, "leadership");
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            () = ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}
