//! The model of a detection rule (what the operator converts a `DetectionRule` into).
//!
//! Every parameter has a documented default, so `{"name": "f", "rule": {"flooder": {}}}` is
//! a complete rule. The default window comes from the rule type, as in the seeds: Flooder,
//! Static Content Scraper and Advanced Anomaly look at the short window (5 min), the others at
//! the long one (24 h); `window` overrides it (see [`crate::window::Windows::view`]).

use ipnet::IpNet;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::key::{ClientKey, ClientKeyKind};

/// One detection rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    /// Rule name, the "bot reason" that `detectedBy` conditions refer to.
    pub name: String,
    /// Rule type and its parameters.
    pub rule: RuleKind,
    /// Which client key the rule judges (default: IP).
    #[serde(default = "default_key")]
    pub client_key: ClientKeyKind,
    /// How long a detection lasts after the rule last fired (default 1 h).
    #[serde(default = "default_ttl")]
    pub detection_ttl: SignedDuration,
    /// Client IP ranges never detected by this rule (load balancers, partners, monitors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<IpNet>,
    /// The sliding window the rule looks at; `None`: its type's (5 min for Flooder, Static
    /// Content Scraper and Advanced Anomaly, 24 h for the others). See
    /// [`crate::window::Windows::view`] for how it is rounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<SignedDuration>,
}

fn default_key() -> ClientKeyKind {
    ClientKeyKind::Ip
}

fn default_ttl() -> SignedDuration {
    SignedDuration::from_hours(1)
}

impl RuleSpec {
    /// A rule with the default key (IP), TTL (1 h), window (its type's; 1 h for API
    /// Scraper) and no exclusions: what a `DetectionRule` of that type gets from the API
    /// server when it sets nothing (the operator's tests hold the two equal).
    pub fn new(name: impl Into<String>, rule: RuleKind) -> Self {
        let window = matches!(rule, RuleKind::ApiScraper(_)).then(|| SignedDuration::from_hours(1));
        Self {
            name: name.into(),
            rule,
            client_key: default_key(),
            detection_ttl: default_ttl(),
            exclude: Vec::new(),
            window,
        }
    }

    /// Whether `key` is in one of the rule's excluded ranges.
    pub fn excludes(&self, key: &ClientKey) -> bool {
        key.ip()
            .is_some_and(|ip| self.exclude.iter().any(|net| net.contains(&ip)))
    }
}

/// The rule type, without parameters (for weights, names, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuleType {
    /// High share of the namespace's requests from one client (5 min).
    Flooder,
    /// High share of the namespace's response bytes to one client (5 min).
    StaticContentScraper,
    /// High share of 4xx/5xx among one client's responses (24 h).
    BruteGuessor,
    /// Many upstream 403s for one client (24 h).
    RobotAbuser,
    /// Many OAuth sessions with few user agents (24 h).
    OAuthAbuser,
    /// Client IP in a Tor exit list.
    TorList,
    /// Robust statistical outlier of per-client request rate (5 min).
    AdvancedAnomaly,
    /// High share of sequential requests (walking identifiers) from one client (1 h).
    ApiScraper,
}

/// A rule type with its parameters (externally tagged: `{"flooder": {"minShare": 0.1}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleKind {
    /// See [`FlooderParams`].
    Flooder(FlooderParams),
    /// See [`ScraperParams`].
    StaticContentScraper(ScraperParams),
    /// See [`BruteGuessorParams`].
    BruteGuessor(BruteGuessorParams),
    /// See [`RobotAbuserParams`].
    RobotAbuser(RobotAbuserParams),
    /// See [`OAuthAbuserParams`].
    #[serde(rename = "oauthAbuser")]
    OAuthAbuser(OAuthAbuserParams),
    /// See [`TorListParams`].
    TorList(TorListParams),
    /// See [`AnomalyParams`].
    AdvancedAnomaly(AnomalyParams),
    /// See [`ApiScraperParams`].
    ApiScraper(ApiScraperParams),
}

impl RuleKind {
    /// Whether the type looks at the short window (5 min) by default, rather than the long
    /// one (24 h).
    pub fn short_by_default(&self) -> bool {
        matches!(
            self,
            Self::Flooder(_) | Self::StaticContentScraper(_) | Self::AdvancedAnomaly(_)
        )
    }

    /// The type of this rule.
    pub fn rule_type(&self) -> RuleType {
        match self {
            Self::Flooder(_) => RuleType::Flooder,
            Self::StaticContentScraper(_) => RuleType::StaticContentScraper,
            Self::BruteGuessor(_) => RuleType::BruteGuessor,
            Self::RobotAbuser(_) => RuleType::RobotAbuser,
            Self::OAuthAbuser(_) => RuleType::OAuthAbuser,
            Self::TorList(_) => RuleType::TorList,
            Self::AdvancedAnomaly(_) => RuleType::AdvancedAnomaly,
            Self::ApiScraper(_) => RuleType::ApiScraper,
        }
    }
}

/// Flooder: `requests(client) / requests(namespace) ≥ minShare` over 5 min.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FlooderParams {
    /// Share of the namespace's requests (default 0.05).
    pub min_share: f64,
    /// Requests the client must have sent (default 300).
    pub min_requests: u64,
    /// Namespace requests below which the rule stays silent (default 1000).
    pub min_total_requests: u64,
    /// Distinct tracked clients below which the rule stays silent (default 20): with a
    /// handful of clients every one of them has a large share.
    pub min_clients: u64,
}

impl Default for FlooderParams {
    fn default() -> Self {
        Self {
            min_share: 0.05,
            min_requests: 300,
            min_total_requests: 1000,
            min_clients: 20,
        }
    }
}

/// Static Content Scraper: `bytes(client) / bytes(namespace) ≥ minShare` over 5 min.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScraperParams {
    /// Share of the namespace's response bytes (default 0.10).
    pub min_share: f64,
    /// Bytes the client must have received (default 50 MiB).
    pub min_bytes: u64,
    /// Distinct tracked clients below which the rule stays silent (default 10).
    pub min_clients: u64,
}

impl Default for ScraperParams {
    fn default() -> Self {
        Self {
            min_share: 0.10,
            min_bytes: 50 << 20,
            min_clients: 10,
        }
    }
}

/// Brute Guessor: `(4xx + 5xx)(client) / requests(client) ≥ minErrorRatio` over 24 h.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BruteGuessorParams {
    /// Share of the client's responses that are upstream errors (default 0.5).
    pub min_error_ratio: f64,
    /// Requests the client must have sent (default 100, Apigee Sense's default).
    pub min_requests: u64,
}

impl Default for BruteGuessorParams {
    fn default() -> Self {
        Self {
            min_error_ratio: 0.5,
            min_requests: 100,
        }
    }
}

/// Robot Abuser: upstream 403s of the client over 24 h.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RobotAbuserParams {
    /// Upstream 403 responses (default 100). The sidecar's own denials never count.
    pub min_forbidden: u64,
    /// Share of the client's upstream responses that are 403 (default 0.2).
    pub min_forbidden_ratio: f64,
}

impl Default for RobotAbuserParams {
    fn default() -> Self {
        Self {
            min_forbidden: 100,
            min_forbidden_ratio: 0.2,
        }
    }
}

/// OAuth Abuser: many token-endpoint calls (sessions) with few user agents over 24 h.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OAuthAbuserParams {
    /// Token-endpoint calls (default 50).
    pub min_sessions: u64,
    /// Distinct user agents at most (default 2).
    pub max_user_agents: u32,
}

impl Default for OAuthAbuserParams {
    fn default() -> Self {
        Self {
            min_sessions: 50,
            max_user_agents: 2,
        }
    }
}

/// TorList: the client IP is in the given exit list (an input, refreshed by the operator).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TorListParams {
    /// Exit addresses (single addresses or ranges).
    pub exits: Vec<IpNet>,
}

/// Advanced Anomaly: each client's requests in the 5 min window against the namespace's
/// seasonal baseline ([`crate::seasonal`]): its own profile for the hour of the day when it
/// is a busy client, else the cohort of clients without one for the hour of the week. Silent
/// until the baseline has learned `min_history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnomalyParams {
    /// z-score at or above which a client is an outlier (default 6).
    pub min_z: f64,
    /// Requests the client must have sent in the window (default 100).
    pub min_requests: u64,
    /// Active clients the namespace needs in the window (default 30).
    pub min_clients: u64,
    /// History the baseline needs before the rule flags anyone (default 14 days).
    pub min_history: SignedDuration,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        Self {
            min_z: 6.0,
            min_requests: 100,
            min_clients: 30,
            min_history: SignedDuration::from_hours(14 * 24),
        }
    }
}

/// API Scraper: `sequential(client) / requests(client) ≥ minSequentialShare` with at least
/// `minRequests` requests over the rule's window (1 h by default, see [`RuleSpec::new`]). A request is sequential when it continues the client's walk over
/// identifiers, as counted by the sidecar (see [`crate::sequence`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApiScraperParams {
    /// Requests the client must have sent (default 500).
    pub min_requests: u64,
    /// Share of the client's requests that are sequential (default 0.8).
    pub min_sequential_share: f64,
}

impl Default for ApiScraperParams {
    fn default() -> Self {
        Self {
            min_requests: 500,
            min_sequential_share: 0.8,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_gets_every_default() {
        let spec: RuleSpec = serde_json::from_str(r#"{"name":"f","rule":{"flooder":{}}}"#).unwrap();
        assert_eq!(
            spec,
            RuleSpec::new("f", RuleKind::Flooder(FlooderParams::default()))
        );
        let spec: RuleSpec = serde_json::from_str(
            r#"{"name":"o","rule":{"oauthAbuser":{"minSessions":5}},"clientKey":"apiKey",
                "detectionTtl":"PT10M","exclude":["10.0.0.0/8"]}"#,
        )
        .unwrap();
        assert_eq!(spec.client_key, ClientKeyKind::ApiKey);
        assert_eq!(spec.detection_ttl, SignedDuration::from_mins(10));
        let RuleKind::OAuthAbuser(p) = &spec.rule else {
            panic!("{spec:?}")
        };
        assert_eq!((p.min_sessions, p.max_user_agents), (5, 2));
        assert!(spec.excludes(&"ip:10.1.2.3".parse().unwrap()));
        assert!(!spec.excludes(&"ip:11.1.2.3".parse().unwrap()));
    }
}
