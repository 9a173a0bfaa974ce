//! Reconciles one namespace: read its actions, rules, injected pods and referenced lists from
//! the operator's watches ([`crate::caches`]), compile, write the bundle, the statuses and the
//! Events; requeue at the next expiry or end of a timed pause.
//! The labels of the pods that carry the sidecar tell whether a workload-scoped action is
//! enforced anywhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use palisade_crds::keys::{PAUSED_UNTIL_ANNOTATION, is_paused};
use palisade_crds::{DetectionRule, SecurityAction, SecurityActionStatus};
use palisade_policy::{ActionStatus, Inputs, Output, Verb, compile, encode};
use serde_json::json;

use super::error::Error;
use super::pause::{self, Pause};
use super::{bundle_cm, convert, pods, status};
use crate::context::Context;
use crate::metrics::{ControllerLabels, FailureLabels};

const CONTROLLER: ControllerLabels = ControllerLabels {
    controller: "policy",
};
/// Event reason: the manifest ConfigMap in place was not signed by the operator.
pub const FOREIGN_BUNDLE: &str = "ForeignBundle";
/// Periodic resync, only a fallback: expiries requeue at their instant.
const RESYNC: Duration = Duration::from_secs(300);

/// Whether a ConfigMap is one the operator writes (its changes need no reconcile).
pub fn is_ours(cm: &ConfigMap) -> bool {
    is_ours_meta(&cm.metadata)
}

/// [`is_ours`] from the metadata alone.
pub fn is_ours_meta(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|m| m == bundle_cm::MANAGER)
}

/// Whether a change of `cm` needs its namespace reconciled: a ConfigMap of the user's (a
/// referenced list), or a manifest ConfigMap that carries the operator's label but not its
/// signature (someone else wrote it; it is replaced at once).
pub fn needs_reconcile(cm: &ConfigMap, ctx: &Context) -> bool {
    if cm.name_any() == bundle_cm::DETECTED_CM {
        // The collector's document: one it did not sign is replaced by the collector, not
        // by a policy reconcile.
        if let (true, Some(ring), Some(ns)) = (ctx.is_leader(), ctx.signing_keys(), cm.namespace())
            && let Err(e) = bundle_cm::check_detected_signature(cm, &ring)
        {
            ctx.foreign_detected(&ns, e.reason());
        }
        return false;
    }
    if !is_ours(cm) {
        return true;
    }
    if cm.name_any() != bundle_cm::MANIFEST_CM {
        return false;
    }
    let Some(ring) = ctx.signing_keys() else {
        return false;
    };
    match bundle_cm::check_signature(cm, &ring) {
        Ok(()) => false,
        Err(e) => {
            // Noted now: a reconcile already in flight may write the operator's bundle over
            // it before the one this event triggers reads it.
            if let Some(ns) = cm.namespace() {
                ctx.foreign_manifest(&ns, e.reason(), e.to_string());
            }
            true
        }
    }
}

/// Reconciles namespace `ns`.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.name_any();
    let result = reconcile_namespace(ns, ctx.clone()).await;
    if result.is_ok() {
        ctx.policy_backoff.succeeded(&name);
    }
    result
}

async fn reconcile_namespace(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let Some(ring) = ctx.signing_keys() else {
        // Every namespace is reconciled again once the key is loaded.
        tracing::debug!(namespace = %ns.name_any(), "waiting for the bundle-signing key");
        return Ok(Action::await_change());
    };
    if !ctx.caches.ready() {
        // Compiling from a store still filling would write a bundle without the objects not
        // listed yet. Every namespace is reconciled again once they are all filled.
        tracing::debug!(namespace = %ns.name_any(), filling = ?ctx.caches.filling(),
            "waiting for the watches' first lists");
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    ctx.metrics.reconciles.get_or_create(&CONTROLLER).inc();
    let name = ns.name_any();
    let client = &ctx.clients.policy;
    // Everything is read from the operator's watches: no LIST per reconcile.
    let caches = &ctx.caches;
    let actions = crate::caches::in_namespace(&caches.actions, &name);
    let rules = crate::caches::in_namespace(&caches.rules, &name);
    let pods = pods::live(crate::caches::in_namespace(&caches.injected_pods, &name));
    let watched = caches
        .manifests
        .get(&ObjectRef::new(bundle_cm::MANIFEST_CM).within(&name));
    // Injected pods need a bundle, even an empty one: a sidecar is not Ready without one.
    if actions.is_empty() && rules.is_empty() && pods.is_empty() && watched.is_none() {
        return Ok(Action::await_change());
    }
    let metas = crate::caches::in_namespace(&caches.configmaps, &name);
    let configmaps = cached_configmaps(&ctx, &name, &actions, &metas)
        .await
        .map_err(Error::kube("reading the referenced ConfigMaps", &name))?;
    let now = jiff::Timestamp::now();
    let manifest_cm = bundle_cm::manifest_cm(client, &name, watched.as_deref(), &ctx.bundles)
        .await
        .map_err(Error::kube("reading the bundle manifest", &name))?;
    let seen = ctx.take_foreign_manifest(&name);
    let current = match bundle_cm::current_manifest(manifest_cm.as_ref(), &ring) {
        bundle_cm::Current::Missing => None,
        bundle_cm::Current::Signed(m) => {
            // The watch saw a forgery that a reconcile in flight has written over already.
            if let Some((reason, detail)) = seen {
                foreign_bundle(&ctx, &ns, reason, &detail).await;
            }
            m
        }
        // Its generation is not continued from: nothing a forger wrote is trusted.
        bundle_cm::Current::Foreign(e) => {
            foreign_bundle(&ctx, &ns, e.reason(), &e.to_string()).await;
            None
        }
    };
    let old_generation = current.as_ref().map_or(0, |m| m.generation);
    let pauses: Vec<Pause> = actions.iter().map(|a| pause::resolve(a, now)).collect();
    let mut out = compile_namespace(
        &ns,
        (&actions, &pauses),
        &rules,
        (&configmaps, &pods::ready_labels(&pods)),
        &ctx,
        now,
        old_generation,
    );
    let encode_err = |source| Error::Encode {
        namespace: name.clone(),
        source,
    };
    let mut encoded = encode(&out.bundle).map_err(encode_err)?;
    if current.as_ref().map(|m| &m.bundle_hash) != Some(&encoded.manifest.bundle_hash) {
        // New content gets a higher generation: sidecars never go back to an older bundle.
        let millis = u64::try_from(now.as_millisecond()).unwrap_or(0);
        out.bundle.generation = next_generation(old_generation, millis);
        if out.bundle.generation < old_generation {
            tracing::warn!(namespace = %name, old_generation, generation = out.bundle.generation,
                "the bundle in place has a generation far ahead of this clock (not written by \
                 the operator); starting again from the clock");
        }
        encoded = encode(&out.bundle).map_err(encode_err)?;
    }
    // A forged manifest in place is overwritten, not compared with.
    let in_place = manifest_cm.as_ref().filter(|_| current.is_some());
    let written = bundle_cm::write(
        client,
        &name,
        &encoded,
        &ring,
        (in_place, &metas),
        &ctx.bundles,
    )
    .await;
    let written = written.map_err(Error::kube("writing the bundle", &name))?;
    if written > 0 {
        let size: u64 = encoded.manifest.shards.iter().map(|s| s.size).sum();
        ctx.metrics
            .bundle_bytes
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        tracing::info!(namespace = %name, actions = out.bundle.actions.len(), bytes = size,
            hash = %encoded.manifest.bundle_hash, "bundle written");
    }
    let labels = pods::labels(&pods);
    for (a, pause) in actions.iter().zip(&pauses) {
        let selector = a
            .spec
            .targets
            .as_ref()
            .and_then(|t| t.workload_selector.as_ref());
        let selects = status::selects_any(selector, labels.iter());
        write_status(&ctx, a, pause, &out, selects, now).await?;
    }
    let next_pod_check = report_pods_without_policy(&ctx, &pods, now).await;
    for r in &rules {
        write_rule_status(&ctx, r, now).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    ctx.metrics
        .reconcile_seconds
        .get_or_create(&CONTROLLER)
        .observe(elapsed);
    // The next instant the bundle changes by itself: an expiry or the end of a timed pause.
    let next_change = out
        .next_expiry
        .into_iter()
        .chain(pauses.iter().filter_map(|p| p.ends(now)))
        .min();
    Ok(requeue(next_change, next_pod_check, now))
}

/// The names of the ConfigMaps the actions' IP lists reference (label selectors resolved
/// against `shells`, ConfigMaps without their data).
fn referenced_names(
    actions: &[SecurityAction],
    shells: &[ConfigMap],
) -> std::collections::BTreeSet<String> {
    actions
        .iter()
        .flat_map(|a| convert::action(a, shells, false).conditions.ip_lists)
        .map(|r| r.config_map)
        .collect()
}

/// The ConfigMaps the actions' IP lists reference, whole, from the metadata watch `metas`
/// and the operator's cache of lists (read again only when their version changed).
async fn cached_configmaps(
    ctx: &Context,
    ns: &str,
    actions: &[SecurityAction],
    metas: &[kube::api::PartialObjectMeta<ConfigMap>],
) -> Result<Vec<ConfigMap>, kube::Error> {
    let shells: Vec<ConfigMap> = metas
        .iter()
        .map(|m| ConfigMap {
            metadata: m.metadata.clone(),
            ..ConfigMap::default()
        })
        .collect();
    let names = referenced_names(actions, &shells);
    ctx.caches
        .lists
        .get(&ctx.clients.policy, ns, &names, metas)
        .await
}

/// The ConfigMaps the actions' IP lists reference, read whole from the API server (for the
/// admission webhook, which has no reconcile's caches at hand). The namespace's ConfigMaps
/// are listed by metadata only, to resolve label selectors: most of them can be the
/// operator's own bundle shards (up to 900 KiB each), which a full LIST would carry on every
/// reconcile.
pub async fn referenced_configmaps(
    client: &kube::Client,
    ns: &str,
    actions: &[SecurityAction],
) -> Result<Vec<ConfigMap>, kube::Error> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let metas = api.list_metadata(&ListParams::default()).await?;
    let shells: Vec<ConfigMap> = metas
        .items
        .into_iter()
        .map(|m| ConfigMap {
            metadata: m.metadata,
            ..ConfigMap::default()
        })
        .collect();
    let names = referenced_names(actions, &shells);
    let mut full = Vec::with_capacity(names.len());
    for n in names {
        if let Some(cm) = api.get_opt(&n).await? {
            full.push(cm);
        }
    }
    Ok(full)
}

fn compile_namespace(
    ns: &Namespace,
    (actions, pauses): (&[SecurityAction], &[Pause]),
    rules: &[DetectionRule],
    (configmaps, ready): (&[ConfigMap], &[BTreeMap<String, String>]),
    ctx: &Context,
    now: jiff::Timestamp,
    generation: u64,
) -> Output {
    let specs: Vec<_> = actions
        .iter()
        .zip(pauses)
        .map(|(a, p)| {
            let mut spec = convert::action(a, configmaps, p.active(now));
            // A rate limit is shared by the Ready pods it applies to: each enforces its share.
            if let (Verb::RateLimit(limit), Some(r)) = (&mut spec.verb, &a.spec.rate_limit) {
                let selector = a.spec.targets.as_ref();
                let selector = selector.and_then(|t| t.workload_selector.as_ref());
                let sharing = ready
                    .iter()
                    .filter(|l| selector.is_none_or(|s| s.matches(l)));
                *limit = convert::rate_limit(r, sharing.count());
            }
            spec
        })
        .collect();
    let inputs = Inputs {
        trusted_proxies: trusted_proxies(ns),
        debug_headers: ns
            .annotations()
            .get(palisade_crds::keys::DEBUG_HEADERS_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        namespace_paused: is_paused(&ns.metadata),
        ipv6_prefix_len: ipv6_prefix_len(ns),
        generation,
        lists: convert::list_texts(&specs, configmaps),
        actions: specs,
        rules: rules.iter().map(convert::rule).collect(),
    };
    let t0 = Instant::now();
    let out = compile(&inputs, now);
    ctx.metrics
        .bundle_build_seconds
        .observe(t0.elapsed().as_secs_f64());
    out
}

/// Requeue at the next expiry or the end of a sidecar's grace, whichever comes first.
/// The namespace's `palisade.dev/trusted-proxies` annotation. One that does not parse is left
/// out (the sidecars' flag stays in force) and logged: a typo must not widen the trust.
fn trusted_proxies(ns: &Namespace) -> Option<palisade_policy::TrustedProxies> {
    use palisade_crds::keys::TRUSTED_PROXIES_ANNOTATION;
    let text = ns
        .metadata
        .annotations
        .as_ref()?
        .get(TRUSTED_PROXIES_ANNOTATION)?;
    match palisade_policy::TrustedProxies::parse(text) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(namespace = %ns.name_any(), error = %e,
                "{TRUSTED_PROXIES_ANNOTATION} ignored; sidecars keep --trusted-proxies");
            None
        }
    }
}

/// The namespace's `palisade.dev/ipv6-prefix-length` annotation. A value that is not a
/// length from 32 to 128 is left out (/64 stays) and logged.
fn ipv6_prefix_len(ns: &Namespace) -> Option<u8> {
    use palisade_crds::keys::IPV6_PREFIX_LENGTH_ANNOTATION;
    let text = ns.annotations().get(IPV6_PREFIX_LENGTH_ANNOTATION)?;
    match text.trim().trim_start_matches('/').parse::<u8>() {
        Ok(len) if (32..=128).contains(&len) => Some(len),
        _ => {
            tracing::warn!(namespace = %ns.name_any(), value = %text,
                "{IPV6_PREFIX_LENGTH_ANNOTATION} ignored: not a prefix length from 32 to 128; /64 stays");
            None
        }
    }
}

/// The generation of new bundle content: the clock in milliseconds, and above the previous
/// one; a previous generation far ahead of the clock (a forged bundle: `u64::MAX` would wrap)
/// is not continued from.
fn next_generation(old: u64, now_ms: u64) -> u64 {
    if palisade_policy::generation_from_the_future(old, now_ms) {
        return now_ms;
    }
    now_ms.max(old.saturating_add(1))
}

fn requeue(
    next_expiry: Option<jiff::Timestamp>,
    next_pod_check: Option<Duration>,
    now: jiff::Timestamp,
) -> Action {
    let expiry = next_expiry.map(|at| now.duration_until(at).unsigned_abs());
    let wait = [expiry, next_pod_check]
        .into_iter()
        .flatten()
        .fold(RESYNC, Duration::min);
    Action::requeue(wait + Duration::from_millis(1))
}

/// A `PolicyNotLoaded` Warning on each pod whose sidecar is still not Ready past its grace;
/// returns how long until the next running sidecar's grace ends.
async fn report_pods_without_policy(
    ctx: &Context,
    all: &[Pod],
    now: jiff::Timestamp,
) -> Option<Duration> {
    let grace = ctx.args.injector.sidecar_policy_grace;
    let (stuck, next) = pods::without_policy(all, grace, now);
    for pod in stuck {
        let ev = Event {
            type_: EventType::Warning,
            reason: pods::POLICY_NOT_LOADED.into(),
            note: Some(pods::note(grace)),
            action: "CheckPolicy".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &pod.object_ref(&())).await {
            tracing::warn!(pod = %pod.name_any(), error = %e, "could not publish Event");
        }
    }
    next
}

/// Counts and reports a manifest ConfigMap the operator did not sign; the reconcile then
/// replaces it with the operator's bundle.
async fn foreign_bundle(ctx: &Context, ns: &Namespace, reason: &'static str, e: &str) {
    let name = ns.name_any();
    let labels = crate::metrics::ReasonLabels { reason };
    ctx.metrics.foreign_bundles.get_or_create(&labels).inc();
    let note = format!(
        "ConfigMap {name}/{} was not written by the Palisade operator: {e}; sidecars ignore \
         it, and it is replaced with the operator's signed bundle",
        bundle_cm::MANIFEST_CM
    );
    tracing::warn!(namespace = %name, reason, "{note}");
    let ev = Event {
        type_: EventType::Warning,
        reason: FOREIGN_BUNDLE.into(),
        note: Some(note),
        action: "VerifyBundle".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &ns.object_ref(&())).await {
        tracing::warn!(namespace = %name, error = %e, "could not publish Event");
    }
}

async fn write_status(
    ctx: &Context,
    a: &SecurityAction,
    pause: &Pause,
    out: &Output,
    selects_pods: bool,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let name = a.name_any();
    let ns = a.namespace().unwrap_or_default();
    let Some(verdict) = out.statuses.get(&name) else {
        return Ok(());
    };
    let created = a
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_default();
    // The collector writes the request counts and enforcing pods under its own field
    // manager: this controller neither compares nor applies them.
    let own = a
        .status
        .as_ref()
        .map(SecurityActionStatus::without_evidence);
    let current = own.as_ref();
    let identity = &ctx.args.injector.identity;
    let unverified_claims = identity.sidecar_jwt_unverified
        && [
            &identity.sidecar_developer_claim,
            &identity.sidecar_app_claim,
            &identity.sidecar_product_claim,
        ]
        .iter()
        .any(|c| !c.is_empty());
    let mut want = status::desired(
        current,
        verdict,
        selects_pods,
        status::claims_verified(a.spec.conditions.as_ref(), unverified_claims),
        a.spec.verb(),
        a.spec.expires_at(created),
        a.metadata.generation,
        pause,
        now,
    );
    want.bundle_generation = bundle_generation(current, &want, out.bundle.generation);
    if current == Some(&want) {
        return Ok(());
    }
    let patch =
        json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityAction", "status": want});
    let api = Api::<SecurityAction>::namespaced(ctx.clients.policy.clone(), &ns);
    api.patch_status(
        &name,
        &PatchParams::apply(bundle_cm::MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube("writing SecurityAction status", &ns))?;
    let transition =
        status::transition_event(current.and_then(|s| s.state), verdict).map(|(reason, note)| {
            let note = pause_note(reason, pause, current, now).unwrap_or(note);
            let warn = matches!(verdict, ActionStatus::Invalid { .. });
            (reason, note, warn)
        });
    let invalid_pause =
        invalid_pause_event(pause, current).map(|(reason, note)| (reason, note, true));
    for (reason, note, warn) in transition.into_iter().chain(invalid_pause) {
        let ev = Event {
            type_: if warn {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &a.object_ref(&())).await {
            tracing::warn!(namespace = %ns, action = %name, error = %e, "could not publish Event");
        }
    }
    Ok(())
}

/// The generation of the first bundle that carried the action as `want` describes it: kept
/// while nothing else in the status changes, `written` (the bundle in place) otherwise.
fn bundle_generation(
    current: Option<&SecurityActionStatus>,
    want: &SecurityActionStatus,
    written: u64,
) -> Option<i64> {
    let same = |s: &SecurityActionStatus| SecurityActionStatus {
        bundle_generation: None,
        ..s.clone()
    };
    match current {
        Some(c) if c.bundle_generation.is_some() && same(c) == same(want) => c.bundle_generation,
        _ => Some(i64::try_from(written).unwrap_or(i64::MAX)),
    }
}

/// The note of a `Paused`/`Resumed` Event when `palisade.dev/paused-until` made it.
fn pause_note(
    reason: &str,
    pause: &Pause,
    current: Option<&SecurityActionStatus>,
    now: jiff::Timestamp,
) -> Option<String> {
    match reason {
        "Paused" => pause.message(now),
        "Resumed" if !pause.pinned => {
            // The recorded end of the pause that held the action, if it has passed.
            let at = current?.paused_until.as_ref()?.0;
            (at <= now).then(|| {
                format!(
                    "the pause of {PAUSED_UNTIL_ANNOTATION} ended at {at}; the action is \
                     enforced again"
                )
            })
        }
        _ => None,
    }
}

/// A Warning the first time the `palisade.dev/paused-until` value does not parse.
fn invalid_pause_event(
    pause: &Pause,
    current: Option<&SecurityActionStatus>,
) -> Option<(&'static str, String)> {
    let pause::Timed::Invalid { message } = &pause.timed else {
        return None;
    };
    let seen = current.is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == palisade_crds::conditions::PAUSED && c.reason == pause::INVALID_PAUSED_UNTIL
        })
    });
    (!seen).then(|| (pause::INVALID_PAUSED_UNTIL, message.clone()))
}

async fn write_rule_status(
    ctx: &Context,
    r: &DetectionRule,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let name = r.name_any();
    let ns = r.namespace().unwrap_or_default();
    let observe = r.spec.mode == palisade_crds::common::Mode::Observe;
    let current = r.status.as_ref();
    let list = current
        .filter(|_| r.spec.type_ == palisade_crds::rule::RuleType::TorList)
        .and_then(|s| palisade_crds::conditions::find(&s.conditions, "ListReady"));
    let (generation, conditions) = status::rule_desired(
        current,
        is_paused(&r.metadata),
        observe,
        list,
        r.metadata.generation,
        now,
    );
    let own = |s: &palisade_crds::DetectionRuleStatus| {
        s.conditions
            .iter()
            .filter(|c| c.type_ == "Ready" || c.type_ == "Paused")
            .cloned()
            .collect::<Vec<_>>()
    };
    if current.is_some_and(|s| s.observed_generation == generation && own(s) == conditions) {
        return Ok(());
    }
    let patch = json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "DetectionRule",
        "status": {"observedGeneration": generation, "conditions": conditions}});
    let api = Api::<DetectionRule>::namespaced(ctx.clients.policy.clone(), &ns);
    api.patch_status(
        &name,
        &PatchParams::apply(bundle_cm::MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube("writing DetectionRule status", &ns))?;
    Ok(())
}

/// Backs off on errors, per namespace and exponentially ([`crate::context::Backoff`]), and
/// counts them by reason.
pub fn error_policy(ns: Arc<Namespace>, err: &Error, ctx: Arc<Context>) -> Action {
    let labels = FailureLabels {
        controller: "policy",
        reason: err.reason(),
    };
    ctx.metrics.failures.get_or_create(&labels).inc();
    let wait = ctx.policy_backoff.failed(&ns.name_any());
    tracing::warn!(namespace = %ns.name_any(), reason = err.reason(), error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(annotation: Option<&str>) -> Namespace {
        let mut ns = Namespace::default();
        ns.metadata.name = Some("shop".into());
        ns.metadata.annotations = annotation.map(|v| {
            [(
                palisade_crds::keys::TRUSTED_PROXIES_ANNOTATION.to_owned(),
                v.to_owned(),
            )]
            .into()
        });
        ns
    }

    #[test]
    fn the_ipv6_prefix_length_comes_from_the_namespace_annotation() {
        let with = |v: &str| {
            let mut n = ns(None);
            n.metadata.annotations = Some(
                [(
                    palisade_crds::keys::IPV6_PREFIX_LENGTH_ANNOTATION.to_owned(),
                    v.to_owned(),
                )]
                .into(),
            );
            ipv6_prefix_len(&n)
        };
        assert_eq!(ipv6_prefix_len(&ns(None)), None);
        assert_eq!(with("56"), Some(56));
        assert_eq!(with("/48"), Some(48));
        // Out of range or not a number: ignored, /64 stays.
        for bad in ["16", "129", "sixty-four", ""] {
            assert_eq!(with(bad), None, "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_come_from_the_namespace_annotation() {
        assert_eq!(trusted_proxies(&ns(None)), None);
        let t = trusted_proxies(&ns(Some("10.0.0.0/8, 192.168.1.7"))).expect("parsed");
        assert_eq!(t.to_string(), "10.0.0.0/8,192.168.1.7/32");
        // Empty: trust no one (not the flag).
        assert_eq!(
            trusted_proxies(&ns(Some(""))),
            Some(palisade_policy::TrustedProxies::default())
        );
        // A typo never widens the trust: ignored, the flag stays in force.
        assert_eq!(trusted_proxies(&ns(Some("10.0.0.0/8,ingress"))), None);
    }
}
