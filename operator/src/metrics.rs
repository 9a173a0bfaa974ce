//! The operator's Prometheus metrics. Labels are bounded: controller names and error
//! reasons (`Error::reason()`), never object names or user input.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// policy, injector, collector.
    pub controller: &'static str,
}

/// Label set naming a controller and a failure reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// policy, injector, collector.
    pub controller: &'static str,
    /// The error's PascalCase reason.
    pub reason: &'static str,
}

/// Label set of an admission answered by the injector webhook.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// injected, skipped, ignored, invalid.
    pub result: &'static str,
    /// PascalCase reason (Injected, NoNamedPort, OptedOut, …).
    pub reason: &'static str,
}

/// Label set of a reason alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// PascalCase reason.
    pub reason: &'static str,
}

/// Label set of a report forwarded to the leader.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Accepted, Rejected, LeaderUnavailable, LeaderError, Unreachable, NoLeader.
    pub outcome: &'static str,
}

/// Label set of a save or restore of the collector's persisted state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// save, restore.
    pub op: &'static str,
    /// Saved, Restored, NoState, StateCorrupt, StateIncompatible, StateTooLarge, …
    pub outcome: &'static str,
}

/// Label set of the per-action request counts (bounded: the actions of the namespaces whose
/// sidecars report, at most 1024 per namespace, removed with the action).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action's namespace.
    pub namespace: String,
    /// The SecurityAction's name.
    pub action: String,
    /// matched, observed, decided.
    pub result: &'static str,
}

/// Label set of a namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    /// The namespace (one that uses Palisade; removed when it no longer does).
    pub namespace: String,
}

/// Label set of a posture finding kind in a namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PostureLabels {
    /// The namespace.
    pub namespace: String,
    /// The finding kind (PodsWithoutSidecar, AppPortReachable, …).
    pub kind: &'static str,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciliations run.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciliations that failed, by reason.
    pub failures: Family<FailureLabels, Counter>,
    /// Reconciliation duration in seconds.
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    /// Size in bytes of the last bundle written (all shards).
    pub bundle_bytes: Gauge,
    /// Time to compile a namespace's bundle, in seconds.
    pub bundle_build_seconds: Histogram,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Sidecar reports received, by outcome (Accepted, Unauthenticated, NotLeader, …).
    pub reports: Family<FailureLabels, Counter>,
    /// Detections produced by rule runs.
    pub detections: Counter,
    /// SecurityIncidents opened.
    pub incidents_opened: Counter,
    /// Admissions answered by the injector webhook, by result and reason.
    pub admissions: Family<AdmissionLabels, Counter>,
    /// Reports this replica forwarded to the leader, by the leader's answer.
    pub reports_forwarded: Family<OutcomeLabels, Counter>,
    /// Saves and restores of the collector's persisted state, by outcome.
    pub collector_state: Family<StateLabels, Counter>,
    /// Size of the last collector state written (compressed bytes).
    pub collector_state_bytes: Gauge,
    /// Clients in the short windows of the state restored on gaining a collector shard
    /// (the last shard restored).
    pub collector_restored_clients: Gauge,
    /// Collector shards this replica owns (holds the Lease of and has restored).
    pub collector_shards: Gauge,
    /// Heap bytes of the detection windows of every namespace (leader; 0 elsewhere).
    pub collector_window_bytes: Gauge,
    /// Time of one evaluation round over every namespace, in seconds.
    pub collector_evaluation_seconds: Histogram,
    /// Requests the operator's Kubernetes client sent, by verb and resource.
    pub kube_requests: crate::kube_requests::KubeRequests,
    /// Namespaces whose client IPs nearly all resolve to a handful of private addresses
    /// (the leader's; see `collector::ingress`).
    pub client_ip_proxy_namespaces: Gauge,
    /// Warnings raised for such namespaces (one per episode).
    pub client_ip_proxy_warnings: Counter,
    /// Requests each SecurityAction matched, observed (Observe mode) and decided, as the
    /// sidecars report them (leader).
    pub action_requests: Family<ActionLabels, Counter>,
    /// Blast-radius checks of SecurityActions, by result and reason.
    pub blast_radius: Family<AdmissionLabels, Counter>,
    /// Bundle manifests found in place without the operator's valid signature (written by
    /// someone else) and replaced, by reason.
    pub foreign_bundles: Family<ReasonLabels, Counter>,
    /// Reports refused and window slices dropped by the collector's quotas, by reason.
    pub collector_quota: Family<ReasonLabels, Counter>,
    /// Environment-wide error surges reported (one per episode and namespace).
    pub error_surges: Counter,
    /// Namespaces in an error surge now (leader).
    pub error_surge_namespaces: Gauge,
    /// Bundle-signing keys made by this replica (the first one and each rotation).
    pub signing_keys_made: Counter,
    /// Each namespace's posture score, 0–100 (leader).
    pub posture_score: Family<NamespaceLabels, Gauge>,
    /// Each namespace's posture findings, by kind (leader).
    pub posture_findings: Family<PostureLabels, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under the `palisade_operator` prefix;
    /// `kube_requests` is the family the client's middleware counts into (it exists before
    /// the client, which exists before the rest of the context).
    pub fn new(registry: &mut Registry, kube_requests: crate::kube_requests::KubeRequests) -> Self {
        let hist = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let m = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            reconcile_seconds: Family::new_with_constructor(hist),
            bundle_bytes: Gauge::default(),
            bundle_build_seconds: hist(),
            leader: Gauge::default(),
            reports: Family::default(),
            detections: Counter::default(),
            incidents_opened: Counter::default(),
            admissions: Family::default(),
            reports_forwarded: Family::default(),
            collector_state: Family::default(),
            collector_state_bytes: Gauge::default(),
            collector_restored_clients: Gauge::default(),
            collector_shards: Gauge::default(),
            collector_window_bytes: Gauge::default(),
            collector_evaluation_seconds: hist(),
            kube_requests,
            client_ip_proxy_namespaces: Gauge::default(),
            client_ip_proxy_warnings: Counter::default(),
            action_requests: Family::default(),
            blast_radius: Family::default(),
            foreign_bundles: Family::default(),
            signing_keys_made: Counter::default(),
            collector_quota: Family::default(),
            error_surges: Counter::default(),
            error_surge_namespaces: Gauge::default(),
            posture_score: Family::default(),
            posture_findings: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("palisade_operator");
        r.register("reconciles", "Reconciliations run", m.reconciles.clone());
        r.register(
            "posture_score",
            "Each namespace's posture score, 0-100 (SecurityPosture status.score; leader)",
            m.posture_score.clone(),
        );
        r.register(
            "posture_findings",
            "Each namespace's posture findings by kind (PodsWithoutSidecar, \
             ServiceBypassesSidecar, AppPortReachable, SidecarWithoutPolicy, StalePolicy, \
             NoDetectionRules, ClientIpIsProxy; leader)",
            m.posture_findings.clone(),
        );
        r.register(
            "foreign_bundles",
            "Bundle manifests found without the operator's valid signature and replaced, by \
             reason (BundleUnsigned, SigningKeyUnknown, SignatureInvalid, SignatureMalformed)",
            m.foreign_bundles.clone(),
        );
        r.register(
            "error_surges",
            "Environment-wide error surges reported (a SecurityIncident of scope Namespace and \
             its Event ErrorSurge; one per episode and namespace)",
            m.error_surges.clone(),
        );
        r.register(
            "error_surge_namespaces",
            "Namespaces in an error surge now (leader)",
            m.error_surge_namespaces.clone(),
        );
        r.register(
            "collector_quota",
            "Collector quotas that bit, by reason: reports refused (ReportRateExceeded, \
             NamespaceReportRateExceeded, PodQuotaExceeded) and window slices dropped over the memory budget (WindowMemory)",
            m.collector_quota.clone(),
        );
        r.register(
            "bundle_signing_keys_made",
            "Bundle-signing keys made (the first one and each rotation)",
            m.signing_keys_made.clone(),
        );
        r.register(
            "blast_radius_checks",
            "Blast-radius checks of SecurityActions by the validating webhook, by result \
             (allowed, warned, denied) and reason",
            m.blast_radius.clone(),
        );
        r.register(
            "action_requests",
            "Requests each SecurityAction matched, observed (Observe mode) and decided, as \
             reported by the sidecars",
            m.action_requests.clone(),
        );
        r.register(
            "reconcile_failures",
            "Reconciliations that failed, by reason",
            m.failures.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconciliation duration",
            m.reconcile_seconds.clone(),
        );
        r.register(
            "bundle_bytes",
            "Size of the last policy bundle written",
            m.bundle_bytes.clone(),
        );
        r.register(
            "bundle_build_seconds",
            "Time to compile a policy bundle",
            m.bundle_build_seconds.clone(),
        );
        r.register(
            "leader",
            "Whether this replica is the leader (1) or not (0)",
            m.leader.clone(),
        );
        r.register(
            "reports",
            "Sidecar reports received, by outcome",
            m.reports.clone(),
        );
        r.register(
            "detections",
            "Detections produced by rule runs",
            m.detections.clone(),
        );
        r.register(
            "incidents_opened",
            "SecurityIncidents opened",
            m.incidents_opened.clone(),
        );
        r.register(
            "injector_admissions",
            "Admissions answered by the injector webhook, by result and reason",
            m.admissions.clone(),
        );
        r.register(
            "reports_forwarded",
            "Sidecar reports forwarded to the owner of their collector shard, by its answer",
            m.reports_forwarded.clone(),
        );
        r.register(
            "collector_state",
            "Saves and restores of the collector's persisted state, by outcome",
            m.collector_state.clone(),
        );
        r.register(
            "collector_state_bytes",
            "Size of the last collector state written (compressed)",
            m.collector_state_bytes.clone(),
        );
        r.register(
            "collector_restored_clients",
            "Clients in the short windows restored on gaining a collector shard (the last one)",
            m.collector_restored_clients.clone(),
        );
        r.register(
            "collector_shards",
            "Collector shards this replica owns (holds the Lease of and has restored)",
            m.collector_shards.clone(),
        );
        r.register(
            "collector_window_bytes",
            "Heap bytes of the detection windows of every namespace (the leader's)",
            m.collector_window_bytes.clone(),
        );
        r.register(
            "collector_evaluation_seconds",
            "Time of one evaluation round of the detection rules over every namespace",
            m.collector_evaluation_seconds.clone(),
        );
        r.register(
            "kube_requests",
            "Requests sent to the Kubernetes API, by verb and resource",
            m.kube_requests.clone(),
        );
        r.register(
            "client_ip_proxy_namespaces",
            "Namespaces whose client IPs nearly all resolve to a handful of private addresses: the sidecars probably see a proxy, not the clients",
            m.client_ip_proxy_namespaces.clone(),
        );
        r.register(
            "client_ip_proxy_warnings",
            "ClientIpIsProxy warnings raised (a Warning Event on the namespace, once per episode)",
            m.client_ip_proxy_warnings.clone(),
        );
        m
    }
}
