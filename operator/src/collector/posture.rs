//! Posture: what in a namespace is not protected, and why.
//!
//! Every `--posture-interval` the leader checks each namespace that uses Palisade (selected
//! by `--namespace-selector` and holding a SecurityAction, a DetectionRule, an injected pod, a
//! reporting sidecar or the `palisade.dev/inject` label) and writes what it found to the namespace's
//! `SecurityPosture` named `palisade` (status only), with a Warning Event per new finding and
//! the `palisade_operator_posture_*` gauges. Each Service with a selector and live pods is
//! checked for
//!
//! - pods it sends traffic to that run without the sidecar ([`FindingKind::PodsWithoutSidecar`]),
//! - a `targetPort` that names the app's port instead of the sidecar's
//!   ([`FindingKind::ServiceBypassesSidecar`]),
//! - an app port that no NetworkPolicy closes ([`FindingKind::AppPortReachable`]; the finding
//!   carries a NetworkPolicy to apply),
//! - sidecars that hold no policy past their grace ([`FindingKind::SidecarWithoutPolicy`]) or
//!   report an older bundle generation than the namespace's ([`FindingKind::StalePolicy`]);
//!
//! and a namespace with actions is checked for detection rules
//! ([`FindingKind::NoDetectionRules`]), and for client IPs that are a proxy's
//! ([`FindingKind::ClientIpIsProxy`], the collector's `ClientIpIsProxy` warning). Services annotated `palisade.dev/posture: ignore`
//! (a database, a non-HTTP port) are not checked. What NetworkPolicies declare is checked,
//! not what the network does: only a network plugin that enforces NetworkPolicy closes a port.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::PoisonError;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Resource as _, ResourceExt as _};
use palisade_crds::SecurityAction;
use palisade_crds::posture::{
    Finding, FindingKind, MAX_FINDING_PODS, MAX_FINDINGS, MAX_SIDECARS, POSTURE_NAME,
    SecurityPosture, SecurityPostureStatus, Severity, SidecarReport,
};
use serde_json::json;

use super::Collector;
use crate::injector::config::{INJECT_LABEL, SIDECAR_NAME};
use crate::metrics::{NamespaceLabels, PostureLabels};
use palisade_policy::transport::UPSTREAM_PORT_ENV;

/// The field manager of the posture objects.
pub const MANAGER: &str = "palisade-posture";
/// Service annotation that leaves a Service out of the checks.
pub const IGNORE_ANNOTATION: &str = "palisade.dev/posture";
/// A posture whose findings did not change is written again after this long (its check time).
const REWRITE_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_secs(300);

/// What one namespace's check reads.
#[derive(Debug)]
pub struct Input<'a> {
    /// The namespace.
    pub namespace: &'a Namespace,
    /// Its Services.
    pub services: &'a [Service],
    /// Its pods.
    pub pods: &'a [Pod],
    /// Its NetworkPolicies.
    pub policies: &'a [NetworkPolicy],
    /// How many SecurityActions it has.
    pub actions: usize,
    /// How many DetectionRules it has.
    pub rules: usize,
    /// The bundle generation its actions were last compiled into, and since when the check
    /// knows it (sidecars that reported before then + `stale_after` are not stale yet).
    pub generation: Option<(u64, jiff::Timestamp)>,
    /// How long sidecars have to apply a new bundle (`--posture-stale-after`).
    pub stale_after: Duration,
    /// What each pod's sidecar last reported: when, and the generation it enforced.
    pub reported: &'a HashMap<String, (jiff::Timestamp, Option<u64>)>,
    /// The collector's warning that the namespace's client IPs are a proxy's, while it lasts.
    pub client_ip_proxy: Option<&'a str>,
    /// The sidecars' start-up grace without a policy.
    pub grace: Duration,
    /// The time of the check.
    pub now: jiff::Timestamp,
}

/// The outcome of one namespace's check.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Every finding, most severe first.
    pub findings: Vec<Finding>,
    /// Services checked.
    pub services: usize,
    /// Services checked without a finding.
    pub protected: usize,
    /// 0–100.
    pub score: i32,
    /// The namespace's bundle generation.
    pub generation: Option<u64>,
    /// Every live pod with the sidecar, by name: what it last reported (generation, when).
    pub sidecars: Vec<(String, Option<u64>, Option<jiff::Timestamp>)>,
}

impl Assessment {
    /// The status to write, at `now`.
    pub fn status(&self, now: jiff::Timestamp) -> SecurityPostureStatus {
        SecurityPostureStatus {
            score: Some(self.score),
            finding_count: Some(i32::try_from(self.findings.len()).unwrap_or(i32::MAX)),
            protected_services: Some(format!("{}/{}", self.protected, self.services)),
            summary: Some(self.summary()),
            check_time: Some(Time(now)),
            findings: self.findings.iter().take(MAX_FINDINGS).cloned().collect(),
            bundle_generation: self.generation.and_then(|g| i64::try_from(g).ok()),
            sidecar_count: Some(i32::try_from(self.sidecars.len()).unwrap_or(i32::MAX)),
            sidecars: self
                .sidecars
                .iter()
                .take(MAX_SIDECARS)
                .map(|(pod, generation, at)| SidecarReport {
                    pod: pod.clone(),
                    generation: generation.and_then(|g| i64::try_from(g).ok()),
                    last_report_time: at.map(Time),
                })
                .collect(),
        }
    }

    /// `1 High, 2 Medium: PodsWithoutSidecar, AppPortReachable`, or `no findings`.
    pub fn summary(&self) -> String {
        if self.findings.is_empty() {
            return "no findings".to_owned();
        }
        let mut by_severity: BTreeMap<std::cmp::Reverse<Severity>, usize> = BTreeMap::new();
        let mut kinds: BTreeSet<FindingKind> = BTreeSet::new();
        for f in &self.findings {
            *by_severity
                .entry(std::cmp::Reverse(f.severity))
                .or_default() += 1;
            kinds.insert(f.kind);
        }
        let counts: Vec<String> = by_severity
            .iter()
            .map(|(s, n)| format!("{n} {:?}", s.0))
            .collect();
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        format!("{}: {}", counts.join(", "), kinds.join(", "))
    }

    /// How many findings of `kind` there are.
    pub fn count(&self, kind: FindingKind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }
}

/// Checks one namespace (see the module documentation). The score: each Service checked
/// counts 1 without a finding, ½ with Medium findings only, 0 with a High one; the score is
/// their share of the Services, in percent (100 without Services), less 10 for each namespace
/// finding (actions without detection rules, client IPs that are a proxy's).
pub fn assess(input: &Input<'_>) -> Assessment {
    let ns = input.namespace.name_any();
    let mut findings = Vec::new();
    let mut services = 0usize;
    let mut credit = 0u32; // in halves
    let mut protected = 0usize;
    for svc in input.services {
        let Some(selector) = selector_of(svc) else {
            continue;
        };
        let pods: Vec<&Pod> = input
            .pods
            .iter()
            .filter(|p| live(p) && selects(selector, p))
            .collect();
        if pods.is_empty() {
            continue;
        }
        services += 1;
        let before = findings.len();
        check_service(input, &ns, svc, &pods, &mut findings);
        let worst = findings[before..].iter().map(|f| f.severity).max();
        credit += match worst {
            None => 2,
            Some(Severity::Low | Severity::Medium) => 1,
            Some(Severity::High) => 0,
        };
        protected += usize::from(worst.is_none());
    }
    let no_rules = input.actions > 0 && input.rules == 0;
    if let Some(note) = input.client_ip_proxy {
        findings.push(finding(
            FindingKind::ClientIpIsProxy,
            format!("Namespace/{ns}"),
            note.to_owned(),
            "give the sidecars the proxy's addresses (the namespace annotation \
             palisade.dev/trusted-proxies, and --sidecar-trusted-hops for a chain) so they take \
             the client from X-Forwarded-For; see docs/sidecar.md"
                .to_owned(),
            &[],
        ));
    }
    if no_rules {
        findings.push(finding(
            FindingKind::NoDetectionRules,
            format!("Namespace/{ns}"),
            format!(
                "{} SecurityAction(s) and no DetectionRule: the actions act on clients already \
                 known, and nothing detects new abusers",
                input.actions
            ),
            "apply a DetectionRule, such as examples/rule-flooder.yaml, to the namespace"
                .to_owned(),
            &[],
        ));
    }
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.kind.cmp(&b.kind)));
    let base = if services == 0 {
        100
    } else {
        i32::try_from(u64::from(credit) * 50 / services as u64).unwrap_or(100)
    };
    let namespace_findings = i32::from(no_rules) + i32::from(input.client_ip_proxy.is_some());
    let score = (base - 10 * namespace_findings).clamp(0, 100);
    let mut sidecars: Vec<(String, Option<u64>, Option<jiff::Timestamp>)> = input
        .pods
        .iter()
        .filter(|p| live(p) && sidecar(p).is_some())
        .map(|p| {
            let name = p.name_any();
            let seen = input.reported.get(&name);
            (name, seen.and_then(|(_, g)| *g), seen.map(|(at, _)| *at))
        })
        .collect();
    sidecars.sort();
    Assessment {
        findings,
        services,
        protected,
        score,
        generation: input.generation.map(|(g, _)| g),
        sidecars,
    }
}

fn check_service(
    input: &Input<'_>,
    ns: &str,
    svc: &Service,
    pods: &[&Pod],
    out: &mut Vec<Finding>,
) {
    let object = format!("Service/{}", svc.name_any());
    let (with, without): (Vec<&Pod>, Vec<&Pod>) =
        pods.iter().copied().partition(|p| sidecar(p).is_some());
    if !without.is_empty() {
        let reasons: BTreeSet<&str> = without
            .iter()
            .map(|p| why_without(input.namespace, p))
            .collect();
        out.push(finding(
            FindingKind::PodsWithoutSidecar,
            object.clone(),
            format!(
                "{} of {} pods this Service sends traffic to run without the Palisade sidecar \
                 ({}): their requests meet no SecurityAction",
                without.len(),
                pods.len(),
                reasons.into_iter().collect::<Vec<_>>().join("; ")
            ),
            format!(
                "label the namespace {INJECT_LABEL}=enabled (or =required, which also refuses \
                 pods without the sidecar), remove {INJECT_LABEL}=disabled from the pods that \
                 should be protected, and restart the workload (kubectl rollout restart)"
            ),
            &without,
        ));
    }
    if with.is_empty() {
        return;
    }
    let bypass: Vec<&Pod> = with
        .iter()
        .copied()
        .filter(|p| targets_app_port(svc, p))
        .collect();
    if !bypass.is_empty() {
        let ports: Vec<String> = svc
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| match &p.target_port {
                Some(IntOrString::String(s)) => s.clone(),
                Some(IntOrString::Int(n)) => n.to_string(),
                None => p.port.to_string(),
            })
            .collect();
        out.push(finding(
            FindingKind::ServiceBypassesSidecar,
            object.clone(),
            format!(
                "the Service's targetPort ({}) is the app's own port on {} pod(s) with the \
                 sidecar: its traffic goes around the sidecar",
                ports.join(", "),
                bypass.len()
            ),
            "set the Service's targetPort to the name of the port the sidecar took over (by \
             default http), not the app's port number or its renamed port"
                .to_owned(),
            &bypass,
        ));
    }
    let mut open: Vec<&Pod> = Vec::new();
    let mut admitting: BTreeSet<String> = BTreeSet::new();
    for p in &with {
        match app_port_admitted(input.policies, p) {
            Reach::Closed => {}
            Reach::NoPolicy => open.push(p),
            Reach::AdmittedBy(names) => {
                open.push(p);
                admitting.extend(names);
            }
        }
    }
    if !open.is_empty() {
        let why = if admitting.is_empty() {
            "no NetworkPolicy selects them for ingress".to_owned()
        } else {
            format!(
                "NetworkPolicy {} admits it",
                admitting.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        let port = open
            .first()
            .and_then(|p| sidecar(p))
            .and_then(|s| s.app_port)
            .map_or_else(|| "the app's port".to_owned(), |n| format!("port {n}"));
        let mut f = finding(
            FindingKind::AppPortReachable,
            object.clone(),
            format!(
                "{} pod(s) answer on the app's {port} to anything that reaches the pod IP, \
                 around the sidecar: {why}",
                open.len()
            ),
            "apply the NetworkPolicy in networkPolicy (it admits the pods' other ports and the \
             sidecar's), or change the NetworkPolicy that admits the app's port; it takes \
             effect only with a network plugin that enforces NetworkPolicy"
                .to_owned(),
            &open,
        );
        f.network_policy = suggested_policy(ns, svc, &open);
        out.push(f);
    }
    let stuck: Vec<&Pod> = {
        let owned: Vec<Pod> = with.iter().map(|p| (*p).clone()).collect();
        let (stuck, _) = crate::policy::pods::without_policy(&owned, input.grace, input.now);
        let names: HashSet<String> = stuck.iter().map(|p| p.name_any()).collect();
        with.iter()
            .copied()
            .filter(|p| names.contains(&p.name_any()))
            .collect()
    };
    if !stuck.is_empty() {
        out.push(finding(
            FindingKind::SidecarWithoutPolicy,
            object.clone(),
            format!(
                "{} sidecar(s) have run for over {}s without a policy bundle: such a pod is \
                 not Ready and takes no Service traffic (with --sidecar-ready-without-policy it \
                 does, unchecked)",
                stuck.len(),
                input.grace.as_secs()
            ),
            "see the pods' PolicyNotLoaded Events and the sidecar's log (palisade_sidecar_\
             bundle_load_errors_total): usually the pod cannot read its bundle ConfigMap or the \
             API server"
                .to_owned(),
            &stuck,
        ));
    }
    if let Some((generation, since)) = input.generation {
        let stale: Vec<(&Pod, u64)> = with
            .iter()
            .filter_map(|p| {
                let (at, have) = input.reported.get(&p.name_any())?;
                let have = (*have)?;
                let due = jiff::SignedDuration::try_from(input.stale_after).unwrap_or_default();
                (have < generation && *at >= since + due).then_some((*p, have))
            })
            .collect();
        if !stale.is_empty() {
            let oldest = stale.iter().map(|(_, g)| *g).min().unwrap_or_default();
            let pods: Vec<&Pod> = stale.iter().map(|(p, _)| *p).collect();
            out.push(finding(
                FindingKind::StalePolicy,
                object,
                format!(
                    "{} sidecar(s) still enforce bundle generation {oldest} (or later, before \
                     {generation}) over {}s after generation {generation} was written",
                    stale.len(),
                    input.stale_after.as_secs()
                ),
                "see the pods' sidecar logs and palisade_sidecar_bundle_load_errors_total: a \
                 sidecar keeps its last good bundle when a new one fails to load or verify"
                    .to_owned(),
                &pods,
            ));
        }
    }
}

fn finding(
    kind: FindingKind,
    object: String,
    message: String,
    remedy: String,
    pods: &[&Pod],
) -> Finding {
    let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    names.truncate(MAX_FINDING_PODS);
    Finding {
        kind,
        severity: kind.severity(),
        object,
        message: cut(message, 1024),
        remedy: cut(remedy, 1024),
        pod_count: i32::try_from(pods.len()).unwrap_or(i32::MAX),
        pods: names,
        network_policy: None,
    }
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// The Service's pod selector, unless it has none or asks to be left out.
fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    if svc.annotations().get(IGNORE_ANNOTATION).map(String::as_str) == Some("ignore") {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.labels();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Not being deleted and not finished.
fn live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// What the pod's sidecar container says about its ports.
struct Sidecar<'a> {
    /// The app's port (the sidecar's upstream).
    app_port: Option<i32>,
    /// The sidecar's own container ports.
    ports: &'a [k8s_openapi::api::core::v1::ContainerPort],
}

fn sidecar(pod: &Pod) -> Option<Sidecar<'_>> {
    let spec = pod.spec.as_ref()?;
    let c: &Container = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == SIDECAR_NAME)?;
    let app_port = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == UPSTREAM_PORT_ENV)
        .and_then(|e| e.value.as_deref()?.parse().ok());
    Some(Sidecar {
        app_port,
        ports: c.ports.as_deref().unwrap_or_default(),
    })
}

/// Why `pod` runs without the sidecar.
fn why_without(ns: &Namespace, pod: &Pod) -> &'static str {
    fn label(labels: &BTreeMap<String, String>) -> Option<&str> {
        labels.get(INJECT_LABEL).map(String::as_str)
    }
    match (label(ns.labels()), label(pod.labels())) {
        (_, Some("disabled")) => "opted out with palisade.dev/inject=disabled",
        (Some("disabled"), _) => "the namespace has palisade.dev/inject=disabled",
        (Some("enabled" | "required"), _) | (_, Some("enabled")) => {
            "created without it: before injection was enabled, or the sidecar could not be added \
             (see the pod's admission warnings)"
        }
        _ => "neither the namespace nor the pods opted in with palisade.dev/inject",
    }
}

/// The named ports of the pod's app containers (not the sidecar's), by name.
fn app_port_name(pod: &Pod, number: i32) -> Option<&str> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .filter(|c| c.name != SIDECAR_NAME)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.container_port == number)
        .and_then(|p| p.name.as_deref())
}

/// Whether a port of `svc` sends traffic to the app's port of `pod` (around its sidecar).
fn targets_app_port(svc: &Service, pod: &Pod) -> bool {
    let Some(app) = sidecar(pod).and_then(|s| s.app_port) else {
        return false;
    };
    let app_name = app_port_name(pod, app);
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .any(|p| match &p.target_port {
            Some(IntOrString::Int(n)) => *n == app,
            Some(IntOrString::String(name)) => Some(name.as_str()) == app_name,
            None => p.port == app,
        })
}

/// Whether the app's port of `pod` is closed by the namespace's NetworkPolicies.
#[derive(Debug, PartialEq)]
enum Reach {
    /// Policies select the pod for ingress and none admits the app's port.
    Closed,
    /// No policy selects the pod for ingress: every port is open.
    NoPolicy,
    /// These policies admit the app's port (from some peers at least).
    AdmittedBy(Vec<String>),
}

fn app_port_admitted(policies: &[NetworkPolicy], pod: &Pod) -> Reach {
    let Some(app) = sidecar(pod).and_then(|s| s.app_port) else {
        return Reach::Closed;
    };
    let app_name = app_port_name(pod, app);
    let mut isolated = false;
    let mut admitting = Vec::new();
    for np in policies {
        let Some(spec) = &np.spec else { continue };
        if !label_selector_matches(spec.pod_selector.as_ref(), pod.labels()) {
            continue;
        }
        let ingress = match &spec.policy_types {
            Some(types) => types.iter().any(|t| t == "Ingress"),
            None => true,
        };
        if !ingress {
            continue;
        }
        isolated = true;
        let admits = spec.ingress.iter().flatten().any(|rule| match &rule.ports {
            None => true,
            Some(ports) if ports.is_empty() => true,
            Some(ports) => ports.iter().any(|p| port_admits(p, app, app_name)),
        });
        if admits {
            admitting.push(np.name_any());
        }
    }
    match (isolated, admitting.is_empty()) {
        (false, _) => Reach::NoPolicy,
        (true, true) => Reach::Closed,
        (true, false) => Reach::AdmittedBy(admitting),
    }
}

fn port_admits(p: &NetworkPolicyPort, number: i32, name: Option<&str>) -> bool {
    if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
        return false;
    }
    match &p.port {
        None => true,
        Some(IntOrString::Int(n)) => match p.end_port {
            Some(end) => (*n..=end).contains(&number),
            None => *n == number,
        },
        Some(IntOrString::String(s)) => Some(s.as_str()) == name,
    }
}

/// Whether a NetworkPolicy's `podSelector` selects `labels` (absent or empty: every pod).
fn label_selector_matches(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else { return true };
    let plain = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    plain
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let have = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// A NetworkPolicy that admits ingress to the Service's pods on every port of theirs but the
/// app's ports the sidecars took over.
fn suggested_policy(ns: &str, svc: &Service, pods: &[&Pod]) -> Option<String> {
    let selector = selector_of(svc)?;
    let mut ports: BTreeSet<(i32, String)> = BTreeSet::new();
    let mut apps: BTreeSet<i32> = BTreeSet::new();
    for p in pods {
        let Some(s) = sidecar(p) else { continue };
        apps.extend(s.app_port);
        for cp in s.ports {
            ports.insert((cp.container_port, proto(cp.protocol.as_deref())));
        }
        for c in p.spec.iter().flat_map(|s| &s.containers) {
            for cp in c.ports.iter().flatten() {
                ports.insert((cp.container_port, proto(cp.protocol.as_deref())));
            }
        }
    }
    let ports: Vec<serde_json::Value> = ports
        .into_iter()
        .filter(|(n, _)| !apps.contains(n))
        .map(|(port, protocol)| json!({"port": port, "protocol": protocol}))
        .collect();
    let name: String = format!("palisade-{}", svc.name_any())
        .chars()
        .take(253)
        .collect();
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": ports}],
        },
    });
    // A document marker first, so that several offered policies concatenate into one stream.
    serde_yaml::to_string(&policy)
        .ok()
        .map(|yaml| format!("---\n{yaml}"))
}

fn proto(p: Option<&str>) -> String {
    p.unwrap_or("TCP").to_owned()
}

/// Whether the namespace uses Palisade: the inject label, or any action, rule, injected pod or
/// sidecar reporting.
fn uses_palisade(ns: &Namespace, actions: usize, rules: usize, sidecars: bool) -> bool {
    let label = ns.labels().get(INJECT_LABEL).map(String::as_str);
    matches!(label, Some("enabled" | "required")) || actions > 0 || rules > 0 || sidecars
}

/// `(kind, object, message)` of each finding written.
type FindingKeys = Vec<(FindingKind, String, String)>;

/// What was last written of a namespace's posture: its findings, its score, the generation of
/// each sidecar and of the namespace, and when.
type Written = (FindingKeys, i32, Generations, jiff::Timestamp);

/// The namespace's generation and each sidecar's, as written.
type Generations = (Option<u64>, Vec<(String, Option<u64>)>);

/// What the check remembers between rounds (on the leader).
#[derive(Debug, Default)]
pub struct Memory {
    /// Per namespace: the generation last seen and since when.
    generations: HashMap<String, (u64, jiff::Timestamp)>,
    /// Per namespace: what was last written, and when.
    written: HashMap<String, Written>,
}

/// Checks every namespace that uses Palisade every `--posture-interval`, on the leader.
pub async fn run(
    c: &Collector,
    actions: &Store<SecurityAction>,
    injected: &Store<Pod>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(c.ctx.args.posture_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut memory = Memory::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            () = c.ctx.shutdown.cancelled() => return Ok(()),
        }
        if !c.owns_any() {
            memory = Memory::default();
            continue;
        }
        round(c, actions, injected, &mut memory).await;
    }
}

async fn round(
    c: &Collector,
    actions: &Store<SecurityAction>,
    injected: &Store<Pod>,
    memory: &mut Memory,
) {
    let now = jiff::Timestamp::now();
    let mut per_ns: HashMap<String, (usize, Option<u64>)> = HashMap::new();
    for a in actions.state() {
        let Some(ns) = a.namespace() else { continue };
        let e = per_ns.entry(ns).or_default();
        e.0 += 1;
        let g = a.status.as_ref().and_then(|s| s.bundle_generation);
        if let Some(g) = g.and_then(|g| u64::try_from(g).ok()) {
            e.1 = Some(e.1.map_or(g, |have: u64| have.max(g)));
        }
    }
    let mut rules: HashMap<String, usize> = HashMap::new();
    for r in c.rules.state() {
        if let Some(ns) = r.namespace() {
            *rules.entry(ns).or_default() += 1;
        }
    }
    let mut with_pods: HashSet<String> = injected
        .state()
        .iter()
        .filter_map(|p| p.namespace())
        .collect();
    {
        let state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
        with_pods.extend(state.evidence.namespaces().map(str::to_owned));
    }
    let mut checked = HashSet::new();
    for ns in c.namespaces.state() {
        let name = ns.name_any();
        // Another replica checks the namespaces of the collector shards it owns.
        if !c.owns(&name) {
            continue;
        }
        let (n_actions, generation) = per_ns.get(&name).copied().unwrap_or_default();
        let n_rules = rules.get(&name).copied().unwrap_or_default();
        if !uses_palisade(&ns, n_actions, n_rules, with_pods.contains(&name)) {
            continue;
        }
        checked.insert(name.clone());
        let generation = generation.map(|g| {
            let e = memory.generations.entry(name.clone()).or_insert((g, now));
            if e.0 != g {
                *e = (g, now);
            }
            *e
        });
        match check(c, &ns, n_actions, n_rules, generation, now).await {
            Ok(a) => publish(c, &ns, &a, memory, now).await,
            Err(e) => tracing::warn!(namespace = %name, error = %e, "could not check the posture"),
        }
    }
    let gone: Vec<String> = memory
        .written
        .keys()
        .filter(|ns| !checked.contains(*ns))
        .cloned()
        .collect();
    for ns in gone {
        memory.written.remove(&ns);
        memory.generations.remove(&ns);
        forget_metrics(c, &ns);
        // Moved to another replica with its shard: that one keeps the posture up to date.
        if !c.shards.holds(c.shards.of(&ns))
            && c.namespaces.state().iter().any(|n| n.name_any() == ns)
        {
            continue;
        }
        let api = Api::<SecurityPosture>::namespaced(c.ctx.clients.collector.clone(), &ns);
        if let Err(e) = api.delete(POSTURE_NAME, &DeleteParams::default()).await {
            tracing::debug!(namespace = %ns, error = %e, "could not delete the posture");
        }
    }
}

async fn check(
    c: &Collector,
    ns: &Namespace,
    actions: usize,
    rules: usize,
    generation: Option<(u64, jiff::Timestamp)>,
    now: jiff::Timestamp,
) -> Result<Assessment, kube::Error> {
    let name = ns.name_any();
    let client = c.ctx.clients.collector.clone();
    let lp = ListParams::default();
    let services = Api::<Service>::namespaced(client.clone(), &name)
        .list(&lp)
        .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &name)
        .list(&lp)
        .await?;
    let policies = Api::<NetworkPolicy>::namespaced(client, &name)
        .list(&lp)
        .await?;
    let (reported, proxy) = {
        let state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
        (
            state.evidence.reported(&name),
            state.ingress.note(&name).map(str::to_owned),
        )
    };
    Ok(assess(&Input {
        namespace: ns,
        services: &services.items,
        pods: &pods.items,
        policies: &policies.items,
        actions,
        rules,
        generation,
        reported: &reported,
        client_ip_proxy: proxy.as_deref(),
        grace: c.ctx.args.injector.sidecar_policy_grace,
        stale_after: c.ctx.args.posture_stale_after,
        now,
    }))
}

/// Writes the posture when its findings changed (or every [`REWRITE_AFTER`]), with a Warning
/// Event per new finding, and sets the gauges.
async fn publish(
    c: &Collector,
    ns: &Namespace,
    a: &Assessment,
    memory: &mut Memory,
    now: jiff::Timestamp,
) {
    let name = ns.name_any();
    set_metrics(c, &name, a);
    let keys: FindingKeys = a
        .findings
        .iter()
        .map(|f| (f.kind, f.object.clone(), f.message.clone()))
        .collect();
    let generations: Generations = (
        a.generation,
        a.sidecars.iter().map(|(p, g, _)| (p.clone(), *g)).collect(),
    );
    let (new, due) = match memory.written.get(&name) {
        Some((old, score, gens, at)) => {
            let known: HashSet<(FindingKind, &str)> =
                old.iter().map(|(k, o, _)| (*k, o.as_str())).collect();
            let new: Vec<&Finding> = a
                .findings
                .iter()
                .filter(|f| !known.contains(&(f.kind, f.object.as_str())))
                .collect();
            let due = *old != keys
                || *score != a.score
                || *gens != generations
                || now.duration_since(*at) >= REWRITE_AFTER;
            (new, due)
        }
        None => (a.findings.iter().collect(), true),
    };
    if !due {
        return;
    }
    let api = Api::<SecurityPosture>::namespaced(c.ctx.clients.collector.clone(), &name);
    let pp = PatchParams::apply(MANAGER).force();
    let object = json!({
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "SecurityPosture",
        "metadata": {
            "name": POSTURE_NAME,
            "labels": {"app.kubernetes.io/managed-by": "palisade-operator"},
        },
        "spec": {},
    });
    let written = async {
        let obj = api.patch(POSTURE_NAME, &pp, &Patch::Apply(&object)).await?;
        let status = json!({
            "apiVersion": "palisade.dev/v1alpha1",
            "kind": "SecurityPosture",
            "status": a.status(now),
        });
        api.patch_status(POSTURE_NAME, &pp, &Patch::Apply(&status))
            .await?;
        Ok::<_, kube::Error>(obj)
    }
    .await;
    let obj = match written {
        Ok(obj) => obj,
        Err(e) => {
            tracing::warn!(namespace = %name, error = %e, "could not write the posture");
            return;
        }
    };
    memory
        .written
        .insert(name.clone(), (keys, a.score, generations, now));
    for f in new {
        let ev = Event {
            type_: EventType::Warning,
            reason: f.kind.as_str().into(),
            note: Some(cut(format!("{}: {}", f.object, f.message), 1024)),
            action: "CheckPosture".into(),
            secondary: None,
        };
        if let Err(e) = c.ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(namespace = %name, error = %e, "could not publish Event");
        }
    }
}

fn set_metrics(c: &Collector, ns: &str, a: &Assessment) {
    let m = &c.ctx.metrics;
    m.posture_score
        .get_or_create(&NamespaceLabels {
            namespace: ns.to_owned(),
        })
        .set(i64::from(a.score));
    for kind in FindingKind::ALL {
        let labels = PostureLabels {
            namespace: ns.to_owned(),
            kind: kind.as_str(),
        };
        let n = i64::try_from(a.count(kind)).unwrap_or(i64::MAX);
        m.posture_findings.get_or_create(&labels).set(n);
    }
}

fn forget_metrics(c: &Collector, ns: &str) {
    let m = &c.ctx.metrics;
    m.posture_score.remove(&NamespaceLabels {
        namespace: ns.to_owned(),
    });
    for kind in FindingKind::ALL {
        m.posture_findings.remove(&PostureLabels {
            namespace: ns.to_owned(),
            kind: kind.as_str(),
        });
    }
}

#[cfg(test)]
#[path = "posture_tests.rs"]
mod tests;
