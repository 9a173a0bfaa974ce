//! Every tick (leader only): run each namespace's DetectionRules over its merged windows,
//! publish the detected-client set when it changed, and write SecurityIncidents (created,
//! then status) and their Events.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use palisade_crds::keys::is_paused;
use palisade_crds::rule::RuleType;
use palisade_crds::{DetectionRule, SecurityIncident};
use palisade_detection::incident::{IncidentConfig, IncidentEvent, cluster, sync_archived};
use palisade_detection::rule_spec::{RuleKind, RuleSpec};
use palisade_detection::rules::{Detections, run_rules};
use palisade_policy::{DetectedClient, DetectedClients, encode_detected};
use serde_json::json;

use super::{Collector, incident_cr};

const MANAGER: &str = palisade_policy::transport::OPERATOR_MANAGER;
use crate::policy::{DETECTED_CM, DETECTED_KEY, pods};

/// Expiries pushed out by a rule firing again are republished at most this often; a change
/// of who is detected is published at once.
const REFRESH: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// What was last published for a namespace.
#[derive(Debug, Default)]
pub struct Published {
    members: std::collections::BTreeSet<(String, String)>,
    at: Option<jiff::Timestamp>,
}

impl Published {
    /// Whether `doc` deserves a ConfigMap write now (and remembers it if so): its members
    /// differ from the last published ones, or the last write is older than [`REFRESH`].
    pub fn should_publish(&mut self, doc: &DetectedClients, now: jiff::Timestamp) -> bool {
        let members = doc
            .rules
            .iter()
            .flat_map(|(rule, clients)| {
                clients
                    .iter()
                    .map(move |c| (rule.clone(), c.key.to_string()))
            })
            .collect();
        let stale = self.at.is_none_or(|at| now.duration_since(at) >= REFRESH);
        if members == self.members && !stale {
            return false;
        }
        self.members = members;
        self.at = Some(now);
        true
    }
}

/// Runs the evaluation loop until shutdown.
pub async fn run(c: Arc<Collector>) -> anyhow::Result<()> {
    // (On the operator's readiness, not the store's: see `Caches::mark_filled`.)
    tokio::select! {
        () = c.ctx.caches.wait_until_ready() => {},
        () = c.ctx.shutdown.cancelled() => return Ok(()),
    }
    let mut tick = tokio::time::interval(c.ctx.args.detection_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            () = c.ctx.shutdown.cancelled() => return Ok(()),
        }
        let mut injected: std::collections::HashMap<String, usize> = Default::default();
        // Pods whose sidecar runs (the label alone anyone can set): each adds to its
        // namespace's report budget.
        for p in c.ctx.caches.injected_pods.state() {
            if let Some(ns) = p
                .metadata
                .namespace
                .as_ref()
                .filter(|_| pods::runs_sidecar(&p))
            {
                *injected.entry(ns.clone()).or_default() += 1;
            }
        }
        {
            let mut quotas = c.quotas.lock().unwrap_or_else(PoisonError::into_inner);
            quotas.set_injected(injected);
            quotas.prune(std::time::Instant::now());
        }
        if !c.owns_any() {
            c.ctx.metrics.collector_window_bytes.set(0);
            continue;
        }
        let started = std::time::Instant::now();
        let namespaces: Vec<String> = {
            let state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .windows
                .namespaces()
                .filter(|(ns, _)| c.owns(ns))
                .map(|(ns, _)| ns.to_owned())
                .collect()
        };
        let mut rules = rules_by_namespace(&c.rules.state());
        for ns in namespaces {
            let rules = rules.remove(&ns).unwrap_or_default();
            if let Err(e) = evaluate(&c, &ns, &rules).await {
                tracing::warn!(namespace = %ns, error = %e, "detection evaluation failed");
            }
        }
        let m = &c.ctx.metrics;
        m.collector_evaluation_seconds
            .observe(started.elapsed().as_secs_f64());
        let budget = c
            .ctx
            .args
            .collector_window_budget_mib
            .saturating_mul(1 << 20);
        let (bytes, dropped) = {
            let mut state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
            let dropped = state.windows.shrink_to(budget);
            (state.windows.heap_bytes(), dropped)
        };
        if dropped > 0 {
            c.count_quota("WindowMemory", dropped as u64);
            tracing::warn!(
                dropped,
                budget_mib = c.ctx.args.collector_window_budget_mib,
                "detection windows over their memory budget: oldest slices of the biggest \
                 namespaces dropped (raise --collector-window-budget-mib and the memory limit)"
            );
        }
        m.collector_window_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// The watched rules grouped by namespace, each group in name order (as a List returns
/// them), so that evaluation does not depend on the order of watch events.
fn rules_by_namespace(all: &[Arc<DetectionRule>]) -> BTreeMap<String, Vec<Arc<DetectionRule>>> {
    let mut by_ns: BTreeMap<String, Vec<Arc<DetectionRule>>> = BTreeMap::new();
    for r in all {
        if let Some(ns) = &r.metadata.namespace {
            by_ns.entry(ns.clone()).or_default().push(r.clone());
        }
    }
    for rules in by_ns.values_mut() {
        rules.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }
    by_ns
}

async fn evaluate(
    c: &Collector,
    ns: &str,
    rules: &[Arc<DetectionRule>],
) -> Result<(), kube::Error> {
    let client = &c.ctx.clients.collector;
    let mut specs = Vec::new();
    for r in rules.iter().filter(|r| !is_paused(&r.metadata)) {
        let exits = if r.spec.type_ == RuleType::TorList {
            super::torlist::exits(c, ns, r).await
        } else {
            vec![]
        };
        specs.push(super::convert::rule(r, exits));
    }
    let now = jiff::Timestamp::now();
    // Sidecars apply only documents the operator signed; the key is loaded at start.
    let ring = c.ctx.signing_keys();
    // A document someone else wrote in place of ours is replaced now, not at the next change.
    let foreign = c.ctx.take_foreign_detected(ns);
    let (detected_doc, writes, events, proxy, surge) = {
        let mut guard = c.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        // Advanced Anomaly's baseline learns each 5-minute period once.
        let learn_all = specs
            .iter()
            .filter_map(|s| match &s.rule {
                RuleKind::AdvancedAnomaly(p) => Some(p.min_history),
                _ => None,
            })
            .max();
        if let (Some(history), Some(w)) = (learn_all, state.windows.get_mut(ns)) {
            w.observe_season(now, history);
        }
        let Some(windows) = state.windows.get(ns) else {
            return Ok(());
        };
        let detections = run_rules(windows, &specs, now);
        let short = windows.short(now);
        let proxy = state.ingress.update(ns, super::ingress::check(&short));
        let surge = state
            .surges
            .update(ns, super::surge::check(&short), &short, windows, now);
        let surge_write = match &surge {
            Some(super::surge::Change::Ended(ended)) => Some(ended.as_ref()),
            Some(_) => state.surges.get(ns),
            None => None,
        }
        .map(|s| (s.clone(), incident_cr::surge_status(s, false)));
        c.ctx
            .metrics
            .client_ip_proxy_namespaces
            .set(i64::try_from(state.ingress.len()).unwrap_or(i64::MAX));
        let set = state.detected.entry(ns.to_owned()).or_default();
        let changed = set.update(&detections) | set.expire(now) | foreign.is_some();
        let last = state.published.entry(ns.to_owned()).or_default();
        if foreign.is_some() {
            *last = Published::default();
        }
        // A replica that just gained the namespace's shard publishes once even without a
        // change: the document names it as the owner, to which sidecars then report.
        let first = last.at.is_none();
        let doc =
            (changed || first).then(|| detected_document(set, &specs, c.advertise.clone(), now));
        let doc = doc.filter(|d| ring.is_some() && last.should_publish(d, now));
        let incidents = state.incidents.entry(ns.to_owned()).or_default();
        sync_archived(incidents, &super::lifecycle::archived(&c.incidents, ns));
        let events = cluster(
            incidents,
            ns,
            &detections,
            windows,
            &IncidentConfig::default(),
            now,
        );
        count_detections(c, &detections);
        let mut writes = Vec::new();
        let statuses = incidents
            .iter()
            .map(|i| (i.id.clone(), incident_cr::status(i, false)));
        let surge_status = surge_write
            .as_ref()
            .map(|(s, st)| (s.id.clone(), st.clone()));
        for (id, status) in statuses.chain(surge_status) {
            let status = serde_json::to_value(status).unwrap_or_default();
            if state.written.get(&id) != Some(&status) {
                state.written.insert(id.clone(), status.clone());
                writes.push((id, status));
            }
        }
        if let Some((s, _)) = surge_write.as_ref().filter(|(s, _)| s.ended.is_some()) {
            state.written.remove(&s.id);
        }
        let surge = surge.zip(surge_write.map(|(s, _)| s));
        (doc, writes, events, proxy, surge)
    };
    if let Some(finding) = proxy {
        warn_proxy(c, ns, &finding).await;
    }
    c.ctx
        .metrics
        .error_surge_namespaces
        .set(i64::try_from(surges_on(c)).unwrap_or(i64::MAX));
    if let (Some(doc), Some(ring)) = (detected_doc, ring) {
        write_detected(client, ns, &doc, &ring, foreign.is_some()).await?;
        write_rule_counts(client, ns, &doc, now).await?;
        if let Some(reason) = foreign {
            foreign_detected(c, ns, reason).await;
        }
    }
    for (id, status) in writes {
        write_incident(c, ns, &id, status).await?;
    }
    if let Some((change, surge)) = surge {
        surge_event(c, ns, &change, &surge).await;
    }
    for ev in events {
        publish(c, ns, &ev).await;
    }
    Ok(())
}

fn count_detections(c: &Collector, d: &Detections) {
    c.ctx.metrics.detections.inc_by(d.items.len() as u64);
}

/// The policy crate's detected-client document from the collector's set.
fn detected_document(
    set: &palisade_detection::detected::DetectedSet,
    specs: &[RuleSpec],
    collector: Option<String>,
    now: jiff::Timestamp,
) -> DetectedClients {
    let mut rules: BTreeMap<String, Vec<DetectedClient>> = BTreeMap::new();
    for spec in specs {
        rules.entry(spec.name.clone()).or_default();
    }
    // One client key type for the collector and the sidecars: no conversion.
    for (key, marks) in set.iter() {
        for (rule, expires) in marks {
            rules.entry(rule.clone()).or_default().push(DetectedClient {
                key: *key,
                expires: *expires,
            });
        }
    }
    DetectedClients {
        generation: u64::try_from(now.as_millisecond()).unwrap_or(0),
        rules,
        collector,
    }
}

/// Writes the signed document; `replace`: every key the operator does not write goes too (a
/// forger's `data` key named like the document would make the apply invalid).
async fn write_detected(
    client: &kube::Client,
    ns: &str,
    doc: &DetectedClients,
    ring: &palisade_policy::sign::KeyRing,
    replace: bool,
) -> Result<(), kube::Error> {
    use base64::Engine as _;
    use palisade_policy::sign::{self, Domain};
    let bytes = encode_detected(doc).unwrap_or_default();
    let signature = ring.sign(Domain::Detected, &bytes).to_json();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": DETECTED_CM, "labels": {
            "app.kubernetes.io/managed-by": MANAGER, "app.kubernetes.io/part-of": "palisade",
            "palisade.dev/bundle": "detected"}},
        "data": {sign::DETECTED_SIG_KEY: signature,
                 sign::KEYS_KEY: sign::chain_to_json(&ring.chain())},
        "binaryData": {DETECTED_KEY: base64::engine::general_purpose::STANDARD.encode(bytes)}});
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut replaced = false;
    if replace && let Some(old) = api.get_opt(DETECTED_CM).await? {
        // A merge patch that also removes every key the operator does not write.
        let mut patch = cm.clone();
        let theirs = [
            ("data", old.data.map(|d| d.into_keys().collect::<Vec<_>>())),
            (
                "binaryData",
                old.binary_data.map(|d| d.into_keys().collect()),
            ),
        ];
        for (field, keys) in theirs {
            for key in keys.unwrap_or_default() {
                if patch[field].get(&key).is_none() {
                    patch[field][key] = serde_json::Value::Null;
                }
            }
        }
        let pp = PatchParams::default();
        api.patch(DETECTED_CM, &pp, &Patch::Merge(&patch)).await?;
        replaced = true;
    }
    if !replaced {
        let pp = PatchParams::apply(MANAGER).force();
        api.patch(DETECTED_CM, &pp, &Patch::Apply(&cm)).await?;
    }
    let clients: usize = doc.rules.values().map(Vec::len).sum();
    tracing::info!(namespace = %ns, clients, "detected-client set published");
    Ok(())
}

/// `status.detectedClients` and `lastEvaluationTime` of each rule, written with the
/// collector's own field manager (the policy controller owns the conditions).
async fn write_rule_counts(
    client: &kube::Client,
    ns: &str,
    doc: &DetectedClients,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<DetectionRule> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams::apply(palisade_policy::transport::COLLECTOR_MANAGER).force();
    for (rule, clients) in &doc.rules {
        let patch = json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "DetectionRule",
            "status": {"detectedClients": clients.len(), "lastEvaluationTime": now}});
        match api.patch_status(rule, &pp, &Patch::Apply(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes an incident's status (creating the object first when the incident watch does not
/// show it): one request per changed status, no read.
async fn write_incident(
    c: &Collector,
    ns: &str,
    id: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<SecurityIncident> = Api::namespaced(c.ctx.clients.collector.clone(), ns);
    let pp = PatchParams::apply(MANAGER).force();
    let current = c.incidents.get(&ObjectRef::new(id).within(ns));
    if current.is_none() {
        // New, or the watch has not caught up: applying the empty spec again changes nothing.
        let obj = json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityIncident",
            "metadata": {"name": id, "labels": {"app.kubernetes.io/managed-by": MANAGER}},
            "spec": {}});
        api.patch(id, &pp, &Patch::Apply(&obj)).await?;
    }
    let archived = current
        .as_ref()
        .is_some_and(|i| palisade_crds::keys::is_archived(&i.metadata));
    let mut status = status;
    if archived {
        status["state"] = json!("Archived");
    }
    let patch = json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityIncident", "status": status});
    api.patch_status(id, &pp, &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Namespaces in an error surge.
fn surges_on(c: &Collector) -> usize {
    c.state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .surges
        .ongoing()
}

/// The Events of an error surge's incident: `ErrorSurge` (Warning) when it opens, naming
/// the share, the clients and the paths the failing clients requested most;
/// `ErrorSurgeEnded` (Normal) when it is over.
async fn surge_event(
    c: &Collector,
    ns: &str,
    change: &super::surge::Change,
    surge: &super::surge::Surge,
) {
    use super::surge::Change;
    let (reason, note, type_) = match change {
        Change::Opened(finding) => {
            c.ctx.metrics.error_surges.inc();
            let paths: Vec<(String, u64)> = surge
                .attributes
                .get(&palisade_detection::stats::AttrDim::Path)
                .map(|p| p.iter().take(3).cloned().collect())
                .unwrap_or_default();
            let note = finding.note(&paths);
            tracing::warn!(namespace = %ns, incident = %surge.id, percent = finding.percent(), "{note}");
            ("ErrorSurge", note, EventType::Warning)
        }
        Change::Ended(_) => {
            let lasted = surge
                .ended
                .unwrap_or(surge.last_detected)
                .duration_since(surge.started);
            let note = format!(
                "error surge over: errors fell below {}% of the app's answers (or the namespace                  went quiet) after {}; {} errors in all, at most {}% of the answers",
                super::surge::CLEAR_PERCENT,
                palisade_crds::duration::Duration::from(lasted.unsigned_abs()).as_str(),
                surge.requests(),
                surge.peak.percent()
            );
            tracing::info!(namespace = %ns, incident = %surge.id, "{note}");
            ("ErrorSurgeEnded", note, EventType::Normal)
        }
        Change::Ongoing => return,
    };
    incident_event(c, ns, &surge.id, reason, note, type_).await;
}

/// The Warning Event on the Namespace when its client IPs are a proxy's.
async fn warn_proxy(c: &Collector, ns: &str, finding: &super::ingress::Finding) {
    c.ctx.metrics.client_ip_proxy_warnings.inc();
    let note = finding.note();
    tracing::warn!(namespace = %ns, percent = finding.percent(), "{note}");
    namespace_event(c, ns, "ClientIpIsProxy", note).await;
}

/// Counts and reports a detected-client document someone else wrote (now replaced).
async fn foreign_detected(c: &Collector, ns: &str, reason: &'static str) {
    let labels = crate::metrics::ReasonLabels { reason };
    c.ctx.metrics.foreign_bundles.get_or_create(&labels).inc();
    let note = format!(
        "ConfigMap {ns}/{DETECTED_CM} was not written by the Palisade operator ({reason}); \
         sidecars ignore it, and it was replaced with the operator's signed detected-client \
         document"
    );
    tracing::warn!(namespace = %ns, reason, "{note}");
    namespace_event(c, ns, crate::policy::FOREIGN_BUNDLE, note).await;
}

/// A Warning Event on the Namespace `ns` (with its uid, so `kubectl describe namespace`
/// lists it).
async fn namespace_event(c: &Collector, ns: &str, reason: &str, note: String) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Detect".into(),
        secondary: None,
    };
    // The Namespace itself (with its uid, so `kubectl describe namespace` lists the Event).
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.ctx.clients.collector.clone());
    let Ok(Some(obj)) = api.get_opt(ns).await else {
        return;
    };
    if let Err(e) = c.ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(namespace = %ns, error = %e, "could not publish Event");
    }
}

async fn publish(c: &Collector, ns: &str, ev: &IncidentEvent) {
    let (id, reason, note, type_) = match ev {
        IncidentEvent::Opened { id } => (
            id,
            "IncidentOpened",
            "abuse detected; see the incident's status".to_owned(),
            EventType::Warning,
        ),
        IncidentEvent::RiskRaised { id, from, to } => (
            id,
            "RiskRaised",
            format!("risk raised from {from:?} to {to:?}"),
            EventType::Warning,
        ),
        IncidentEvent::Merged { into, from } => (
            into,
            "IncidentsMerged",
            format!("incident {from} merged into this one"),
            EventType::Normal,
        ),
        IncidentEvent::Closed { id } => (
            id,
            "IncidentClosed",
            "no new detections during the quiet period".to_owned(),
            EventType::Normal,
        ),
    };
    if matches!(ev, IncidentEvent::Opened { .. }) {
        c.ctx.metrics.incidents_opened.inc();
    }
    incident_event(c, ns, id, reason, note, type_).await;
}

/// An Event on the SecurityIncident `id` of `ns` (in the namespace: whoever reads its
/// incidents reads it).
async fn incident_event(
    c: &Collector,
    ns: &str,
    id: &str,
    reason: &str,
    note: String,
    type_: EventType,
) {
    // From the incident watch; read only when the watch has not seen a new incident yet.
    let obj = match c.incidents.get(&ObjectRef::new(id).within(ns)) {
        Some(obj) => (*obj).clone(),
        None => {
            let api: Api<SecurityIncident> = Api::namespaced(c.ctx.clients.collector.clone(), ns);
            let Ok(Some(obj)) = api.get_opt(id).await else {
                return;
            };
            obj
        }
    };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Detect".into(),
        secondary: None,
    };
    if let Err(e) = c.ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(namespace = %ns, incident = %obj.name_any(), error = %e, "could not publish Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(keys: &[&str]) -> DetectedClients {
        let expires = jiff::Timestamp::from_second(10_000).expect("ts");
        let clients = keys
            .iter()
            .map(|k| DetectedClient {
                key: k.parse().expect("key"),
                expires,
            })
            .collect();
        DetectedClients {
            generation: 1,
            rules: BTreeMap::from([("flooder".to_owned(), clients)]),
            collector: None,
        }
    }

    #[test]
    fn membership_changes_publish_at_once_expiry_refreshes_only_every_30s() {
        let t = |s| jiff::Timestamp::from_second(s).expect("ts");
        let mut p = Published::default();
        assert!(
            p.should_publish(&doc(&["ip:192.0.2.1"]), t(100)),
            "first publication"
        );
        assert!(
            !p.should_publish(&doc(&["ip:192.0.2.1"]), t(101)),
            "same members, fresh"
        );
        assert!(
            p.should_publish(&doc(&["ip:192.0.2.1", "ip:192.0.2.2"]), t(102)),
            "a new client"
        );
        assert!(
            !p.should_publish(&doc(&["ip:192.0.2.1", "ip:192.0.2.2"]), t(131)),
            "29 s later"
        );
        assert!(
            p.should_publish(&doc(&["ip:192.0.2.1", "ip:192.0.2.2"]), t(132)),
            "refresh after 30 s"
        );
        assert!(p.should_publish(&doc(&[]), t(133)), "everyone lifted");
    }
}
