//! `SecurityIncident`: detections that belong together, as people look at them.
//!
//! Written by the operator's detection collector (status only); read by people with
//! `kubectl get incidents`. Users archive an incident with the label
//! `palisade.dev/archived=true`; the operator mirrors it into `status.state` and never
//! removes it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// The most values kept per attribute (top-k).
pub const MAX_TOP_VALUES: usize = 10;
/// The most minutes kept in the traffic series (one day).
pub const MAX_SERIES_MINUTES: usize = 1440;

/// A group of detections with similar patterns — the same rules, overlapping clients, close in
/// time — that may be one attack. Created and updated by the operator; everything it knows is
/// in `status`. Archive it with `kubectl label securityincident <name> palisade.dev/archived=true`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "SecurityIncident",
    namespaced,
    status = "SecurityIncidentStatus",
    shortname = "incident",
    shortname = "incidents",
    shortname = "si",
    category = "palisade",
    label("app.kubernetes.io/part-of", "palisade"),
    doc = "A SecurityIncident groups detections that look like one attack.",
    printcolumn(name = "Risk", type_ = "string", json_path = ".status.riskLevel"),
    printcolumn(
        name = "Scope",
        type_ = "string",
        json_path = ".status.scope",
        priority = 1
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        priority = 1
    ),
    printcolumn(name = "Rules", type_ = "string", json_path = ".status.rulesSummary"),
    printcolumn(name = "Clients", type_ = "integer", json_path = ".status.clients"),
    printcolumn(name = "Requests", type_ = "integer", json_path = ".status.requests"),
    printcolumn(
        name = "First Seen",
        type_ = "date",
        json_path = ".status.firstDetectedTime"
    ),
    printcolumn(
        name = "Last Seen",
        type_ = "date",
        json_path = ".status.lastDetectedTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityIncidentSpec {}

/// How urgent an incident is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum RiskLevel {
    /// Investigate after the others.
    Low,
    /// Some risk; investigate before low ones.
    Moderate,
    /// High risk; investigate first.
    Severe,
}

/// What an incident is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum IncidentScope {
    /// Clients detected by DetectionRules.
    #[default]
    Clients,
    /// The whole namespace (an error surge).
    Namespace,
}

/// Whether an incident is still shown by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum IncidentState {
    /// Not archived.
    #[default]
    Active,
    /// Archived by a user (label `palisade.dev/archived=true`).
    Archived,
}

/// What the operator knows about the incident.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityIncidentStatus {
    /// `Clients` (absent means the same): detections of clients, who can be denied. `Namespace`:
    /// something that happened to the whole namespace (the environment), not to be blamed on
    /// its clients — today an error surge, when most clients get errors from the app at once
    /// (a bad deploy, a dependency down). A `Namespace` incident proposes no action and lists
    /// no detection rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<IncidentScope>,
    /// A generated name that summarises the incident, like
    /// `Flooder and BruteGuessor from 14 IPs in 2 regions`, or
    /// `Error surge on /login: 100% errors, 40 of 40 clients failing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// `Severe`, `Moderate` or `Low`, from the rules involved, the incident's share of the
    /// traffic, its number of clients and its duration. It only rises while the incident lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_level: Option<RiskLevel>,
    /// `Active`, or `Archived` when a user set the label `palisade.dev/archived=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<IncidentState>,
    /// Names of the DetectionRules that detected the incident's clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 253)))]
    pub detection_rules: Vec<String>,
    /// `detectionRules` joined with commas, for `kubectl get`; `error surge` for a
    /// `Namespace` incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub rules_summary: Option<String>,
    /// Distinct clients in the incident (of a `Namespace` incident: the clients that got
    /// errors on most of their requests, at the surge's peak).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<i64>,
    /// Incident traffic: requests from the incident's clients while detected (of a
    /// `Namespace` incident: the app's error answers during the surge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<i64>,
    /// When the first detection of the incident happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_detected_time: Option<Time>,
    /// When the last detection of the incident happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_detected_time: Option<Time>,
    /// From the first to the last detection, like `1h25m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// The incident's traffic broken down by attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<IncidentAttributes>,
    /// Incident requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficSeries>,
    /// A SecurityAction (YAML, one document per kind of client key) that denies the
    /// incident's clients for 24 hours: its IP addresses by `ipRanges`, its API keys and
    /// access tokens by their `sha256:` digests (never in clear). It is named after the
    /// incident, in the incident's namespace. Review it, then apply it:
    /// `kubectl get incident <name> -o jsonpath='{.status.proposedAction}' | kubectl apply -f -`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub proposed_action: Option<String>,
}

/// The incident's traffic by attribute (dimension), over the last 24 hours: for each, the
/// number of distinct values and the most frequent ones with their request counts. Counts
/// come from the requests the sidecars sample (1 in 64, scaled back), except the addresses of
/// IP clients, whose counts are exact.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncidentAttributes {
    /// API products of the requests' credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_products: Option<TopValues>,
    /// API keys (app keys), as `sha256:` digests truncated to 16 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_keys: Option<TopValues>,
    /// Client regions (ISO 3166-1 alpha-2; `(not set)` when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countries: Option<TopValues>,
    /// Developers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developers: Option<TopValues>,
    /// Developer apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_apps: Option<TopValues>,
    /// Client IP addresses: the incident's IP clients, and the addresses its API keys, tokens
    /// or user agents were used from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<TopValues>,
    /// Protected workloads that received the traffic (`<kind>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<TopValues>,
    /// Response status codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_codes: Option<TopValues>,
    /// Request paths, as the client sent them without the query string (cut to 128 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<TopValues>,
    /// Detection rules, each with the requests of the clients it detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<TopValues>,
    /// User agents (the header, cut to 128 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agents: Option<TopValues>,
}

/// The top values of one attribute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopValues {
    /// How many distinct values of the attribute were seen (of sampled attributes: a lower
    /// bound).
    #[serde(default)]
    pub distinct: i64,
    /// The most frequent values, most requests first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub top: Vec<ValueCount>,
}

/// One value of an attribute and its requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueCount {
    /// The value, like `203.0.113.7`, `DE` or `429`; `(not set)` when unknown.
    #[schemars(length(max = 512))]
    pub value: String,
    /// Requests with this value.
    pub requests: i64,
    /// When a request with this value was last seen (the end of the window slice that held
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_detected_time: Option<Time>,
}

/// Requests per minute, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSeries {
    /// The start of the first minute of `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Incident requests in each minute from `startTime`, at most 1440 (one day; older
    /// minutes are dropped and `startTime` moves on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1440))]
    pub requests: Vec<i64>,
}
