//! `DetectionRule`: which behaviour marks a client as abusive.
//!
//! Users write the spec; the operator's detection collector runs the rule over the traffic
//! summaries the sidecars report, publishes the clients it detects (in `Enforce` mode) and
//! writes the status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, core::Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::{Mode, Targets},
    duration::{Duration, duration_bounds},
    rule_params::*,
    strings::IpRange,
};

/// The kind of behaviour a rule detects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("maxLength" = 32))]
pub enum RuleType {
    /// A high share of all traffic from one client in a short window (default 5 minutes).
    Flooder,
    /// A high share of the response payload bytes to one client in a short window.
    StaticContentScraper,
    /// A high proportion of error responses to one client over 24 hours.
    BruteGuessor,
    /// Many 403 rejections of one client over 24 hours.
    RobotAbuser,
    /// Many OAuth sessions from few user agents over 24 hours.
    OAuthAbuser,
    /// The client IP is a Tor exit node.
    TorList,
    /// The clients behind an anomalous shift of the namespace's traffic (learned model).
    AdvancedAnomaly,
    /// Clients that systematically extract data from the API (learned model plus heuristics).
    ApiScraper,
}

/// Each rule type and the spec field that holds its parameters.
pub const RULE_TYPES: [(RuleType, &str); 8] = [
    (RuleType::Flooder, "flooder"),
    (RuleType::StaticContentScraper, "staticContentScraper"),
    (RuleType::BruteGuessor, "bruteGuessor"),
    (RuleType::RobotAbuser, "robotAbuser"),
    (RuleType::OAuthAbuser, "oauthAbuser"),
    (RuleType::TorList, "torList"),
    (RuleType::AdvancedAnomaly, "advancedAnomaly"),
    (RuleType::ApiScraper, "apiScraper"),
];

/// One rule per parameter field: it may only be set for its own type.
fn params_match_type() -> Vec<Rule> {
    RULE_TYPES
        .iter()
        .map(|(t, field)| {
            Rule::new(format!("!has(self.{field}) || self.type == '{t:?}'")).message(
                kube::core::Message::Message(format!(
                    "{field} applies only to type {t:?}; remove it or set type: {t:?}"
                )),
            )
        })
        .collect()
}

fn tor_needs_source() -> Rule {
    Rule::new("self.type != 'TorList' || has(self.torList)").message(
        "type TorList needs torList with fromConfigMap (a list you maintain) or url (a list the \
         operator downloads)",
    )
}

fn no_targets() -> Rule {
    Rule::new("!has(self.targets)").message(
        "targets is not supported on DetectionRules yet: a rule looks at the traffic of every \
         protected workload of its namespace; remove targets",
    )
}

fn client_key_fits_type() -> Rule {
    Rule::new(
        "!has(self.clientKey) || self.clientKey == 'ip' || \
         !(self.type in ['TorList', 'AdvancedAnomaly'])",
    )
    .message("types TorList and AdvancedAnomaly detect IP addresses: set clientKey: ip or omit it")
}

/// Detect abusive clients from the traffic of the protected workloads of this namespace. The
/// clients a rule detects stay detected for `detectionTtl` after their last detection; actions
/// act on them with the condition `detectedBy: [<rule name>]`, and related detections are
/// grouped into SecurityIncidents.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "DetectionRule",
    namespaced,
    status = "DetectionRuleStatus",
    shortname = "detrule",
    shortname = "detrules",
    category = "palisade",
    label("app.kubernetes.io/part-of", "palisade"),
    doc = "A DetectionRule marks clients as abusive from the traffic itself.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Detected",
        type_ = "integer",
        json_path = ".status.detectedClients"
    ),
    printcolumn(
        name = "Evaluated",
        type_ = "date",
        json_path = ".status.lastEvaluationTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = params_match_type()[0].clone())]
#[x_kube(validation = params_match_type()[1].clone())]
#[x_kube(validation = params_match_type()[2].clone())]
#[x_kube(validation = params_match_type()[3].clone())]
#[x_kube(validation = params_match_type()[4].clone())]
#[x_kube(validation = params_match_type()[5].clone())]
#[x_kube(validation = params_match_type()[6].clone())]
#[x_kube(validation = params_match_type()[7].clone())]
#[x_kube(validation = tor_needs_source())]
#[x_kube(validation = client_key_fits_type())]
#[x_kube(validation = no_targets())]
#[serde(rename_all = "camelCase")]
pub struct DetectionRuleSpec {
    /// The behaviour to detect: `Flooder`, `StaticContentScraper`, `BruteGuessor`,
    /// `RobotAbuser`, `OAuthAbuser`, `TorList`, `AdvancedAnomaly` or `ApiScraper`. Tune it with
    /// the field of the same name (`flooder: {...}`, ...); absent fields take their defaults.
    #[serde(rename = "type")]
    pub type_: RuleType,
    /// What identifies a client: `ip` (default), `apiKey`, `accessToken` or `userAgent`.
    /// `TorList` and `AdvancedAnomaly` always use `ip`.
    #[serde(default)]
    pub client_key: ClientKey,
    /// How long a detected client stays detected after its last detection. Default `1h`.
    #[serde(default = "default_detection_ttl")]
    #[x_kube(validation = duration_bounds("detectionTtl", "1m", "720h"))]
    pub detection_ttl: Duration,
    /// Client IPs and CIDRs never reported by this rule: load balancers, NAT gateways,
    /// monitoring probes, partners. At most 256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub exclude: Vec<IpRange>,
    /// Not supported yet: a rule looks at the traffic of every protected workload of its
    /// namespace. Rejected when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Targets>,
    /// `Enforce` (default): publish detected clients to actions (`detectedBy`). `Observe`:
    /// only report them (status, incidents, Events).
    #[serde(default)]
    pub mode: Mode,
    /// Parameters of type `Flooder`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flooder: Option<FlooderParams>,
    /// Parameters of type `StaticContentScraper`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_content_scraper: Option<StaticContentScraperParams>,
    /// Parameters of type `BruteGuessor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brute_guessor: Option<BruteGuessorParams>,
    /// Parameters of type `RobotAbuser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robot_abuser: Option<RobotAbuserParams>,
    /// Parameters of type `OAuthAbuser`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "oauthAbuser"
    )]
    pub oauth_abuser: Option<OAuthAbuserParams>,
    /// Where type `TorList` gets the Tor exit list (required for that type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tor_list: Option<TorListParams>,
    /// Parameters of type `AdvancedAnomaly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced_anomaly: Option<AdvancedAnomalyParams>,
    /// Parameters of type `ApiScraper`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_scraper: Option<ApiScraperParams>,
}

fn default_detection_ttl() -> Duration {
    Duration::from_static("1h")
}

/// What identifies a client for a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("maxLength" = 32))]
pub enum ClientKey {
    /// The client IP address.
    #[default]
    Ip,
    /// The API key (its SHA-256 digest).
    ApiKey,
    /// The OAuth access token (its SHA-256 digest).
    AccessToken,
    /// The `User-Agent` header.
    UserAgent,
    /// The client's network: its IPv6 /64 (the namespace's `palisade.dev/ipv6-prefix-length`
    /// changes the length), an IPv4 address alone. A client rotating its IPv6 privacy
    /// addresses inside its prefix stays one client, and a `detectedBy` deny covers the
    /// whole prefix.
    IpPrefix,
}

/// What the operator last observed about the rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetectionRuleStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the rule runs), with reason and message (for example a missing Tor list);
    /// `Paused`; for `TorList`, `ListReady` (see `list`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), transform = crate::conditions::bound_condition_strings)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// When the collector last ran the rule (updated at most once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_time: Option<Time>,
    /// How many clients the rule currently detects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_clients: Option<i32>,
    /// For `TorList`: the list in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ListStatus>,
}

/// The IP list a `TorList` rule uses. The condition `ListReady` says whether the last
/// download or read worked (reasons `Fetched`, `Read`, `FetchFailed`, `Stale` for a list
/// older than `maxAge`, `ConfigMapNotFound`, `KeyNotFound`, `InvalidList`); while it is
/// False, so is `Ready`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListStatus {
    /// Where the list comes from, like `url https://check.torproject.org/torbulkexitlist` or
    /// `configmap shop/tor-exit-list key torbulkexitlist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2100))]
    pub source: Option<String>,
    /// How many addresses and prefixes the list in use holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<i64>,
    /// `url`: when the list in use was downloaded. `fromConfigMap`: since when the list in use
    /// has its content (the first read that saw it; a new operator leader keeps the time shown
    /// here when the source and the number of entries are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<Time>,
    /// Why the last download or read failed (absent after a good one). The last good list
    /// stays in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub last_error: Option<String>,
}

impl DetectionRuleSpec {
    /// A rule of this type with every other field at its default.
    pub fn of_type(type_: RuleType) -> Self {
        Self {
            type_,
            client_key: ClientKey::default(),
            detection_ttl: default_detection_ttl(),
            exclude: Vec::new(),
            targets: None,
            mode: Mode::default(),
            flooder: None,
            static_content_scraper: None,
            brute_guessor: None,
            robot_abuser: None,
            oauth_abuser: None,
            tor_list: None,
            advanced_anomaly: None,
            api_scraper: None,
        }
    }

    /// The client key in effect (`ip` for the types that only detect IPs).
    pub fn effective_client_key(&self) -> ClientKey {
        match self.type_ {
            RuleType::TorList | RuleType::AdvancedAnomaly => ClientKey::Ip,
            _ => self.client_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_types_serialize_as_documented() {
        for (t, _) in RULE_TYPES {
            let json = serde_json::to_value(t).expect("serializes");
            assert_eq!(json, serde_json::json!(format!("{t:?}")));
        }
        let key = serde_json::to_value(ClientKey::ApiKey).expect("serializes");
        assert_eq!(key, "apiKey");
    }

    #[test]
    fn a_minimal_rule_takes_the_defaults() {
        let spec: DetectionRuleSpec =
            serde_json::from_value(serde_json::json!({"type": "Flooder"})).expect("parses");
        assert_eq!(spec, DetectionRuleSpec::of_type(RuleType::Flooder));
        assert_eq!(spec.detection_ttl.as_str(), "1h");
        let tor = DetectionRuleSpec {
            client_key: ClientKey::ApiKey,
            ..DetectionRuleSpec::of_type(RuleType::TorList)
        };
        assert_eq!(tor.effective_client_key(), ClientKey::Ip);
    }
}
