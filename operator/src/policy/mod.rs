//! The policy controller: watches SecurityActions, DetectionRules, Namespaces (pause
//! annotation), ConfigMaps (referenced IP lists, by metadata; the bundle manifests whole) and
//! the pods that carry the sidecar, into the operator's shared caches; compiles each
//! namespace from those caches into its policy bundle; writes the bundle ConfigMaps, the
//! actions' statuses and Events. Only the leader writes; a new leader reconciles every
//! namespace.

mod bundle_cm;
pub(crate) mod convert;
mod error;
mod pause;
pub mod pods;
mod reconcile;

pub use bundle_cm::Ledger;
pub(crate) use bundle_cm::{DETECTED_CM, DETECTED_KEY};
pub(crate) use reconcile::{FOREIGN_BUNDLE, referenced_configmaps};
mod status;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt as _, controller, watcher};
use palisade_crds::{DetectionRule, SecurityAction};

use crate::context::Context;

/// Runs the policy controller until shutdown. Its watches fill the shared
/// [`crate::caches::Caches`] (`writers`) and are its triggers: each kind is watched once for
/// the whole operator.
pub async fn spawn(ctx: Arc<Context>, writers: crate::caches::Writers) -> anyhow::Result<()> {
    let client = ctx.clients.policy.clone();
    let wc = watcher::Config::default();
    let leader_changes = futures::stream::unfold(ctx.leader.clone(), |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    });
    // A new signing key: every bundle is signed again (and the first key starts the work).
    let key_changes = futures::stream::unfold(ctx.signing.subscribe(), |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    });
    // Every store filled (its first list complete): reconciles before that wait for it.
    let filled = {
        let caches = ctx.caches.clone();
        futures::stream::once(async move { caches.wait_until_ready().await })
    };
    let everything =
        futures::stream::select(futures::stream::select(leader_changes, key_changes), filled);
    let selected = watcher::Config::default().labels(&ctx.args.namespace_selector);
    let injected = watcher::Config::default()
        .labels(&format!("{}=true", crate::injector::config::INJECTED_LABEL));
    let namespaces = watcher(Api::<Namespace>::all(client.clone()), selected)
        .default_backoff()
        .reflect(writers.namespaces)
        .inspect_ok(ctx.caches.mark_filled("Namespace"))
        .applied_objects();
    let actions = watcher(Api::<SecurityAction>::all(client.clone()), wc.clone())
        .default_backoff()
        .reflect(writers.actions)
        .inspect_ok(ctx.caches.mark_filled("SecurityAction"))
        .touched_objects();
    let rules = watcher(Api::<DetectionRule>::all(client.clone()), wc.clone())
        .default_backoff()
        .reflect(writers.rules)
        .inspect_ok(ctx.caches.mark_filled("DetectionRule"))
        .touched_objects();
    // Every ConfigMap by metadata (a user's list changed), and the manifests whole (one
    // someone else signed is replaced at once).
    let configmaps = watcher(
        Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()),
        wc.clone(),
    )
    .default_backoff()
    .reflect(writers.configmaps)
    .inspect_ok(ctx.caches.mark_filled("ConfigMap"))
    .touched_objects();
    let by_name = |name: &str| wc.clone().fields(&format!("metadata.name={name}"));
    let manifests = watcher(
        Api::<ConfigMap>::all(client.clone()),
        by_name(bundle_cm::MANIFEST_CM),
    )
    .default_backoff()
    .reflect(writers.manifests)
    .inspect_ok(ctx.caches.mark_filled("bundle manifest"))
    .touched_objects();
    let detected = watcher(Api::<ConfigMap>::all(client.clone()), by_name(DETECTED_CM))
        .default_backoff()
        .touched_objects();
    // Injected pods coming and going change whether a workload selector selects any.
    let pods = watcher(Api::<Pod>::all(client.clone()), injected)
        .default_backoff()
        .reflect(writers.injected_pods)
        .inspect_ok(ctx.caches.mark_filled("Pod"))
        .touched_objects();
    let (cm_ctx, detected_ctx) = (ctx.clone(), ctx.clone());
    Controller::for_stream(namespaces, ctx.caches.namespaces.clone())
        .watches_stream(actions, |a| ns_of(&a))
        .watches_stream(rules, |r| ns_of(&r))
        .watches_stream(configmaps, |c| {
            (!reconcile::is_ours_meta(&c.metadata))
                .then(|| ns_of(&c))
                .flatten()
        })
        .watches_stream(manifests, move |c| {
            reconcile::needs_reconcile(&c, &cm_ctx)
                .then(|| ns_of(&c))
                .flatten()
        })
        .watches_stream(detected, move |c| {
            reconcile::needs_reconcile(&c, &detected_ctx)
                .then(|| ns_of(&c))
                .flatten()
        })
        .watches_stream(pods, |p| ns_of(&p))
        .reconcile_all_on(everything)
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|res| {
            match res {
                Ok((ns, _)) => tracing::debug!(namespace = %ns.name, "reconciled"),
                // A change in a namespace the selector leaves out (or one just deleted): the
                // namespace is not in the store, so there is nothing to compile.
                Err(controller::Error::ObjectNotFound(ns)) => {
                    tracing::debug!(namespace = %ns.name, "not a selected namespace; skipped");
                }
                Err(e) => tracing::warn!(error = %e, "policy controller"),
            }
            futures::future::ready(())
        })
        .await;
    Ok(())
}

fn ns_of<K: kube::Resource>(o: &K) -> Option<ObjectRef<Namespace>> {
    o.meta().namespace.as_deref().map(ObjectRef::new)
}
