//! The policy controller: watches SecurityActions, DetectionRules, Namespaces (pause
//! annotation), ConfigMaps (referenced IP lists) and the pods that carry the sidecar; compiles each namespace into its policy
//! bundle; writes the bundle ConfigMaps, the actions' statuses and Events. Only the leader
//! writes; a new leader reconciles every namespace.

mod bundle_cm;
pub(crate) mod convert;
mod error;
mod pause;
pub mod pods;
mod reconcile;

pub(crate) use bundle_cm::{DETECTED_CM, DETECTED_KEY};
pub(crate) use reconcile::{FOREIGN_BUNDLE, referenced_configmaps};
mod status;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, controller, watcher};
use palisade_crds::{DetectionRule, SecurityAction};

use crate::context::Context;

/// Runs the policy controller until shutdown.
pub async fn spawn(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.clients.policy.clone();
    let wc = watcher::Config::default();
    let leader_changes = futures::stream::unfold(ctx.leader.clone(), |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    });
    // A new signing key: every bundle is signed again (and the first key starts the work).
    let key_changes = futures::stream::unfold(ctx.signing.subscribe(), |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    });
    let everything = futures::stream::select(leader_changes, key_changes);
    let cm_ctx = ctx.clone();
    let selected = watcher::Config::default().labels(&ctx.args.namespace_selector);
    let injected = watcher::Config::default()
        .labels(&format!("{}=true", crate::injector::config::INJECTED_LABEL));
    Controller::new(Api::<Namespace>::all(client.clone()), selected)
        .watches(
            Api::<SecurityAction>::all(client.clone()),
            wc.clone(),
            |a| ns_of(&a),
        )
        .watches(Api::<DetectionRule>::all(client.clone()), wc.clone(), |r| {
            ns_of(&r)
        })
        .watches(Api::<ConfigMap>::all(client.clone()), wc, move |c| {
            reconcile::needs_reconcile(&c, &cm_ctx)
                .then(|| ns_of(&c))
                .flatten()
        })
        // Injected pods coming and going change whether a workload selector selects any.
        .watches(Api::<Pod>::all(client.clone()), injected, |p| ns_of(&p))
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
