//! Leader election with a `coordination.k8s.io/v1` Lease in the operator's namespace: every
//! replica serves the webhook and the collector; only the leader writes bundles, statuses,
//! incidents and Events.

use std::sync::Arc;

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

use crate::args::Args;
use crate::context::Context;

/// Runs the Lease manager; the returned channel says whether this replica leads.
pub async fn start_with(
    client: kube::Client,
    args: &Args,
) -> anyhow::Result<(watch::Receiver<bool>, tokio::task::JoinHandle<()>)> {
    hold(
        client,
        &args.namespace,
        &args.lease_name,
        &args.identity,
        args.lease_duration,
    )
    .await
}

/// Contends for the Lease `name` in `namespace` as `identity` and renews it while held; the
/// channel says whether this replica holds it, as [`vouch`] can tell. Aborting the returned
/// task releases the Lease (the manager sees its channel closed).
pub async fn hold(
    client: kube::Client,
    namespace: &str,
    name: &str,
    identity: &str,
    duration: u64,
) -> anyhow::Result<(watch::Receiver<bool>, tokio::task::JoinHandle<()>)> {
    let grace = (duration / 3).max(1);
    let params = LeaseParams::new(identity.to_owned(), duration, grace)
        .with_field_manager("palisade-operator-lease");
    let manager = LeaseManagerBuilder::new(client.clone(), name)
        .with_namespace(namespace)
        .with_parameters(params)
        .build()
        .await?;
    let (claimed, task) = manager.watch().await;
    let (tx, rx) = watch::channel(false);
    let deadline = Duration::from_secs(duration);
    let lease = Api::<Lease>::namespaced(client, namespace);
    let (name, identity) = (name.to_owned(), identity.to_owned());
    let handle = tokio::spawn(async move {
        tokio::select! {
            r = task => match r {
                Ok(Err(e)) => tracing::error!(error = %e, lease = %name, "lease manager stopped"),
                Err(e) => tracing::error!(error = %e, lease = %name, "lease manager stopped"),
                Ok(Ok(_)) => {}
            },
            () = vouch(lease, &name, &identity, deadline, claimed, &tx) => {}
        }
        // No Lease manager: no leadership.
        tx.send_replace(false);
    });
    Ok((rx, handle))
}

/// Leadership as this replica can vouch for it: the Lease manager says it holds the Lease
/// **and** the Lease's watch showed one of its renewals within the lease duration (the
/// renew deadline of client-go's leader election) **and** no other holder since.
///
/// The Lease manager keeps saying `true` while it cannot reach the API server: after the
/// lease duration another replica may lead, and when the API server is back this one would
/// write for a moment from caches that are out of date until its manager catches up. With
/// the deadline, a replica cut from the API server stops leading on its own. Two managers
/// starting together can also both believe they locked the Lease (the last write wins): the
/// one whose write was overwritten sees the other holder on the watch and stops at once,
/// instead of when its manager next syncs.
async fn vouch(
    lease: Api<Lease>,
    name: &str,
    identity: &str,
    deadline: Duration,
    claimed: watch::Receiver<bool>,
    tx: &watch::Sender<bool>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(lease, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    follow(events, name, identity, deadline, claimed, tx).await;
}

/// [`vouch`] on the Lease's watch events `events`.
async fn follow<S>(
    mut events: S,
    name: &str,
    identity: &str,
    deadline: Duration,
    mut claimed: watch::Receiver<bool>,
    tx: &watch::Sender<bool>,
) where
    S: futures::Stream<Item = Result<Lease, watcher::Error>> + Unpin,
{
    // When our last renewal was made (its `renewTime`, on this process's monotonic clock),
    // and that `renewTime` (a relist shows the same object again: that is not a renewal).
    let mut renewed: Option<(Option<Instant>, Option<MicroTime>)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(l)) => {
                    let spec = l.spec.unwrap_or_default();
                    if spec.holder_identity.as_deref() != Some(identity) {
                        // Held by another (or by nobody): whatever the manager says.
                        renewed = None;
                    } else if renewed.as_ref().is_none_or(|(_, t)| *t != spec.renew_time) {
                        // Dated by the `renewTime` this identity wrote, not by when the
                        // event came: after a restart under the same identity, the first
                        // event shows the last life's renewal, which may be long past.
                        let age = spec.renew_time.as_ref().map_or(deadline, |t| {
                            let age = jiff::Timestamp::now().duration_since(t.0);
                            Duration::try_from(age).unwrap_or(Duration::ZERO)
                        });
                        // (Older than this clock can tell: stale.)
                        let made = Instant::now().checked_sub(age);
                        renewed = Some((made, spec.renew_time));
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, lease = name, "lease watch"),
                None => return,
            },
            changed = claimed.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let fresh = renewed
            .as_ref()
            .and_then(|(made, _)| *made)
            .is_some_and(|made| made.elapsed() < deadline);
        let leading = *claimed.borrow() && fresh;
        tx.send_if_modified(|was| std::mem::replace(was, leading) != leading);
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    use super::*;

    fn lease(holder: &str, renewed: jiff::Timestamp) -> Result<Lease, watcher::Error> {
        Ok(Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        })
    }

    /// Waits until the vouched leadership reads `want`.
    async fn until(rx: &mut watch::Receiver<bool>, want: bool) {
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v == want))
            .await
            .unwrap_or_else(|_| panic!("leadership never became {want}"))
            .unwrap();
    }

    #[tokio::test]
    async fn another_holder_on_the_watch_ends_leadership_though_the_manager_still_claims_it() {
        let (events_tx, events_rx) = futures::channel::mpsc::unbounded();
        let (claimed_tx, claimed) = watch::channel(true);
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            follow(events_rx, "op", "me", Duration::from_secs(15), claimed, &tx).await;
        });
        let now = jiff::Timestamp::now();
        events_tx.unbounded_send(lease("me", now)).unwrap();
        until(&mut rx, true).await;
        // Another replica's write won: the manager has not noticed yet, the watch has.
        events_tx.unbounded_send(lease("other", now)).unwrap();
        until(&mut rx, false).await;
        assert!(*claimed_tx.borrow(), "the manager still claims the Lease");
        // The same renewal seen again (a relist) does not bring leadership back; a new one
        // of ours does.
        events_tx.unbounded_send(lease("me", now)).unwrap();
        events_tx
            .unbounded_send(lease(
                "me",
                now.checked_add(jiff::SignedDuration::from_secs(1)).unwrap(),
            ))
            .unwrap();
        until(&mut rx, true).await;
        // A renewal older than the deadline is not one.
        let old = now
            .checked_sub(jiff::SignedDuration::from_secs(60))
            .unwrap();
        events_tx.unbounded_send(lease("other", now)).unwrap();
        until(&mut rx, false).await;
        events_tx.unbounded_send(lease("me", old)).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!*rx.borrow(), "a stale renewal does not make a leader");
        drop(claimed_tx);
        task.await.unwrap();
    }
}
