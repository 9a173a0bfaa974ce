//! `SecurityPosture`: what in a namespace is not protected, and why.
//!
//! Written by the operator's leader (status only), one object named `palisade` per namespace
//! the operator works in; read by people with `kubectl get securityposture`. Every finding
//! says what to do about it; the score is the share of checks that pass.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The name of the one SecurityPosture the operator keeps in each namespace.
pub const POSTURE_NAME: &str = "palisade";
/// The most findings listed (the count in `findingCount` is exact).
pub const MAX_FINDINGS: usize = 64;
/// The most pod names listed per finding (the count in `podCount` is exact).
pub const MAX_FINDING_PODS: usize = 10;
/// The most sidecars listed (the count in `sidecarCount` is exact).
pub const MAX_SIDECARS: usize = 64;

/// What in this namespace runs without Palisade's protection: Services whose pods run without
/// the sidecar or that send traffic around it, app ports reachable around the sidecar, sidecars
/// that enforce no policy or an old one, actions without detection rules. Created and updated by
/// the operator every `--posture-interval`; everything it found is in `status`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "SecurityPosture",
    namespaced,
    status = "SecurityPostureStatus",
    shortname = "posture",
    shortname = "postures",
    category = "palisade",
    label("app.kubernetes.io/part-of", "palisade"),
    doc = "A SecurityPosture lists what in a namespace is not protected by Palisade.",
    printcolumn(name = "Score", type_ = "integer", json_path = ".status.score"),
    printcolumn(
        name = "Findings",
        type_ = "integer",
        json_path = ".status.findingCount"
    ),
    printcolumn(
        name = "Protected",
        type_ = "string",
        json_path = ".status.protectedServices"
    ),
    printcolumn(name = "Summary", type_ = "string", json_path = ".status.summary"),
    printcolumn(name = "Checked", type_ = "date", json_path = ".status.checkTime")
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPostureSpec {}

/// How much a finding exposes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Severity {
    /// Weakens protection (no detection, enforcement not confirmed).
    Low,
    /// Requests can be served against an outdated or missing policy, or reach the app by a
    /// path most clients do not take.
    Medium,
    /// Requests reach the app with no policy enforced at all.
    High,
}

/// What is wrong.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum FindingKind {
    /// Pods a Service sends traffic to run without the sidecar.
    PodsWithoutSidecar,
    /// A Service targets the app's port (by number or by its renamed name), not the sidecar's.
    ServiceBypassesSidecar,
    /// No NetworkPolicy keeps other pods from reaching the app's port around the sidecar.
    AppPortReachable,
    /// Sidecars running past their start-up grace without a policy (not Ready).
    SidecarWithoutPolicy,
    /// Sidecars that report an older bundle generation than the namespace's.
    StalePolicy,
    /// The namespace has SecurityActions but no DetectionRule: nothing finds new abusers.
    NoDetectionRules,
    /// Nearly all of the namespace's traffic comes from a few private addresses (a proxy the
    /// sidecars do not trust): IP, region and ASN conditions and IP-keyed rules see the proxy.
    ClientIpIsProxy,
}

impl FindingKind {
    /// The kind's name, as in the status, Events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PodsWithoutSidecar => "PodsWithoutSidecar",
            Self::ServiceBypassesSidecar => "ServiceBypassesSidecar",
            Self::AppPortReachable => "AppPortReachable",
            Self::SidecarWithoutPolicy => "SidecarWithoutPolicy",
            Self::StalePolicy => "StalePolicy",
            Self::NoDetectionRules => "NoDetectionRules",
            Self::ClientIpIsProxy => "ClientIpIsProxy",
        }
    }

    /// Every kind, in the order findings are listed.
    pub const ALL: [FindingKind; 7] = [
        Self::PodsWithoutSidecar,
        Self::ServiceBypassesSidecar,
        Self::AppPortReachable,
        Self::SidecarWithoutPolicy,
        Self::StalePolicy,
        Self::NoDetectionRules,
        Self::ClientIpIsProxy,
    ];

    /// How much a finding of this kind exposes.
    pub fn severity(self) -> Severity {
        match self {
            Self::PodsWithoutSidecar | Self::ServiceBypassesSidecar => Severity::High,
            Self::AppPortReachable
            | Self::SidecarWithoutPolicy
            | Self::StalePolicy
            | Self::ClientIpIsProxy => Severity::Medium,
            Self::NoDetectionRules => Severity::Low,
        }
    }
}

/// What the operator found in the namespace at its last check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPostureStatus {
    /// 0–100: the share of the Services checked that are protected, where a Service counts 1
    /// without a finding, ½ with Medium findings only and 0 with a High one (100 when no Service
    /// is checked), less 10 for each namespace finding (actions without detection rules, client
    /// IPs that are a proxy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub score: Option<i32>,
    /// How many findings there are (all of them; `findings` lists at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_count: Option<i32>,
    /// `N/M`: Services checked with no finding, of the Services checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub protected_services: Option<String>,
    /// One line for `kubectl get`, like `1 High, 2 Medium: PodsWithoutSidecar, AppPortReachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub summary: Option<String>,
    /// When the operator last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_time: Option<Time>,
    /// What is not protected, most severe first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub findings: Vec<Finding>,
    /// The bundle generation the namespace's actions were last compiled into (absent without
    /// actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_generation: Option<i64>,
    /// How many live pods carry the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_count: Option<i32>,
    /// The pods that carry the sidecar, by name (at most 64), with the bundle generation each
    /// one's sidecar last reported enforcing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub sidecars: Vec<SidecarReport>,
}

/// What one pod's sidecar last reported to the collector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarReport {
    /// The pod.
    #[schemars(length(max = 253))]
    pub pod: String,
    /// The bundle generation it enforced at its last report (absent: it has not reported in
    /// the last three minutes, or enforces no bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the collector received its last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,
}

/// One thing that is not protected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What is wrong.
    pub kind: FindingKind,
    /// `High`, `Medium` or `Low`.
    pub severity: Severity,
    /// The object it is about, like `Service/checkout` or `Namespace/shop`.
    #[schemars(length(max = 320))]
    pub object: String,
    /// What was found, naming the pods, ports and policies involved.
    #[schemars(length(max = 1024))]
    pub message: String,
    /// What to do about it.
    #[schemars(length(max = 1024))]
    pub remedy: String,
    /// How many pods it concerns (0 for a finding about a Service or the namespace).
    #[serde(default)]
    pub pod_count: i32,
    /// Some of those pods (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(max = 253)))]
    pub pods: Vec<String>,
    /// For `AppPortReachable`: a NetworkPolicy (a YAML document) that admits ingress to these
    /// pods on every port they declare except the app's port the sidecar took over (the sidecar
    /// reaches the app over loopback, which NetworkPolicy does not filter). Review it: it
    /// isolates the pods for ingress, so ports they do not declare close too. Apply every one
    /// offered with `kubectl get posture palisade -o go-template='{{range .status.findings}}{{with
    /// .networkPolicy}}{{.}}{{end}}{{end}}' | kubectl apply -f -`. Only a network plugin
    /// that enforces NetworkPolicy makes it take effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub network_policy: Option<String>,
}
