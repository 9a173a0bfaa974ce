//! The compiler's input model: what the operator converts each namespace's SecurityActions,
//! DetectionRules, pause annotations and referenced ConfigMaps into. Kube-free; the CRD types
//! in `crds/` map onto these one to one.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::selector::LabelSelector;

/// Everything `compile` needs for one namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// The namespace carries `palisade.dev/paused: "true"`: every action is paused.
    pub namespace_paused: bool,
    /// An opaque number the operator derives from its inputs (recorded in the manifest as the
    /// generation the bundle was built from).
    pub generation: u64,
    /// The namespace's SecurityActions, in any order.
    pub actions: Vec<ActionSpec>,
    /// The namespace's DetectionRules, in any order.
    pub rules: Vec<RuleSpec>,
    /// The text of every referenced list the operator could read, by reference. A reference
    /// missing from this map is reported as an invalid reference.
    pub lists: BTreeMap<ListRef, String>,
    /// The namespace's trusted proxies (its `palisade.dev/trusted-proxies` annotation), which
    /// replace the sidecars' `--trusted-proxies`; `None` leaves the flag in force.
    pub trusted_proxies: Option<crate::TrustedProxies>,
    /// The namespace asks sidecars to name the deciding action in a response header
    /// (`palisade.dev/debug-headers: "true"`).
    pub debug_headers: bool,
    /// The IPv6 prefix length `ipPrefix` clients are grouped by (the namespace's
    /// `palisade.dev/ipv6-prefix-length`); `None`: /64.
    pub ipv6_prefix_len: Option<u8>,
}

/// One SecurityAction.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionSpec {
    /// The action's name, unique in its namespace.
    pub name: String,
    /// What happens to a matching request.
    pub verb: Verb,
    /// Enforce, or only observe (count) what would have happened.
    pub mode: Mode,
    /// What a request must match (AND across kinds, OR within one kind's list).
    pub conditions: Conditions,
    /// Match every request. Exclusive with `conditions`; one of the two must be set.
    pub match_all: bool,
    /// Which workloads (pods) of the namespace enforce the action; `None` selects all.
    pub workload_selector: Option<LabelSelector>,
    /// The action carries `palisade.dev/paused: "true"`.
    pub paused: bool,
    /// The instant the action stops applying (`spec.expireTime`, or creation + `spec.ttl`).
    pub expire_time: Option<Timestamp>,
}

/// What an action does to the requests it matches. Precedence: allow > deny > rate limit and
/// flag (a request under every limit that matched is forwarded with the flags' headers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verb {
    /// Forward the request and skip every deny and flag action.
    Allow,
    /// Answer the request from the sidecar.
    #[serde(rename_all = "camelCase")]
    Deny {
        /// HTTP status code (100–599).
        status: u16,
        /// Response body.
        body: String,
        /// `Content-Type` of the body.
        content_type: String,
    },
    /// Forward the request with extra headers.
    Flag {
        /// Headers added to the forwarded request, in order.
        headers: Vec<Header>,
    },
    /// Answer `429 Too Many Requests` to a client above a rate; forward the others.
    RateLimit(RateLimit),
}

/// A rate per client (GCRA: a steady rate plus a burst), shared by the workload's pods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests one client may send per period, across the workload's pods (at least 1).
    pub requests: u32,
    /// The period, in seconds (1 or 60).
    pub period_s: u32,
    /// Requests a client may send at once above the steady rate, across the pods.
    #[serde(default)]
    pub burst: u32,
    /// What one client is.
    pub by: crate::key::ClientKeyKind,
    /// How long a limited request is held before its `429` is sent, in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tarpit_ms: u32,
    /// The Ready pods that share the limit: each lets `requests ÷ pods` through (at least 1).
    #[serde(default = "one_pod")]
    pub pods: u32,
}

fn one_pod() -> u32 {
    1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RateLimit {
    /// Nanoseconds between two requests of one client at one pod: the steady rate of its
    /// share (`period × pods ÷ requests`).
    pub fn interval_ns(&self) -> u64 {
        let period_ns = u64::from(self.period_s.max(1)) * 1_000_000_000;
        period_ns.saturating_mul(u64::from(self.pods.max(1))) / u64::from(self.requests.max(1))
    }

    /// The burst at one pod: its share of `burst`, rounded up.
    pub fn burst_share(&self) -> u32 {
        self.burst.div_ceil(self.pods.max(1))
    }
}

/// A header a flag action adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Header name (an HTTP token).
    pub name: String,
    /// Header value (no CR, LF or NUL).
    pub value: String,
}

/// Whether an action is enforced or only observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The verb is applied.
    #[default]
    Enforce,
    /// Nothing is applied; the verdict records the match so that it can be counted.
    Observe,
}

/// The conditions of an action. Empty lists mean "this kind is not constrained".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Inline prefixes or bare addresses (`spec.conditions.ipRanges`).
    pub ip_ranges: Vec<String>,
    /// Named lists (`spec.conditions.ipRangesFrom`), one prefix a line.
    pub ip_lists: Vec<ListRef>,
    /// ISO 3166-1 alpha-2 codes.
    pub region_codes: Vec<String>,
    /// Autonomous system numbers.
    pub asns: Vec<u32>,
    /// API keys as `sha256:<64 hex>`.
    pub api_keys: Vec<String>,
    /// Access tokens as `sha256:<64 hex>`.
    pub access_tokens: Vec<String>,
    /// API product names.
    pub api_products: Vec<String>,
    /// Developer ids or emails.
    pub developers: Vec<String>,
    /// Developer app names.
    pub developer_apps: Vec<String>,
    /// User agents, matched exactly.
    pub user_agents: Vec<String>,
    /// User agents matched by prefix or substring (OR with `user_agents`).
    pub user_agent_patterns: Vec<TextPattern>,
    /// HTTP methods (normalised to upper case).
    pub http_methods: Vec<String>,
    /// Request paths, exact or by prefix.
    pub paths: Vec<PathMatch>,
    /// Detection rules that must have marked the client.
    pub detected_by: Option<DetectedBy>,
}

impl Conditions {
    /// Whether no condition kind is set.
    pub fn is_empty(&self) -> bool {
        self.ip_ranges.is_empty()
            && self.ip_lists.is_empty()
            && self.region_codes.is_empty()
            && self.asns.is_empty()
            && self.api_keys.is_empty()
            && self.access_tokens.is_empty()
            && self.api_products.is_empty()
            && self.developers.is_empty()
            && self.developer_apps.is_empty()
            && self.user_agents.is_empty()
            && self.user_agent_patterns.is_empty()
            && self.http_methods.is_empty()
            && self.paths.is_empty()
            && self.detected_by.is_none()
    }
}

/// A reference to a list of prefixes: a key of a ConfigMap in the action's namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListRef {
    /// ConfigMap name.
    pub config_map: String,
    /// Key in the ConfigMap's `data`.
    pub key: String,
}

impl fmt::Display for ListRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigMap {} key {}", self.config_map, self.key)
    }
}

/// A path condition. It is compared with the request's match path
/// ([`crate::path::without_params`] of [`crate::path::normalize`]), never with the raw target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    /// The path equals this string, ignoring a trailing slash on either side (`/admin`
    /// matches `/admin/`).
    Exact(String),
    /// The path starts with this string.
    Prefix(String),
    /// As `Exact`, ASCII letters compared case-insensitively.
    ExactIgnoreCase(String),
    /// As `Prefix`, ASCII letters compared case-insensitively.
    PrefixIgnoreCase(String),
}

impl PathMatch {
    /// The path (or prefix) compared with.
    pub fn value(&self) -> &str {
        match self {
            Self::Exact(s)
            | Self::Prefix(s)
            | Self::ExactIgnoreCase(s)
            | Self::PrefixIgnoreCase(s) => s,
        }
    }

    /// Whether it compares by prefix.
    pub fn is_prefix(&self) -> bool {
        matches!(self, Self::Prefix(_) | Self::PrefixIgnoreCase(_))
    }

    /// Whether ASCII letters compare case-insensitively.
    pub fn ignores_case(&self) -> bool {
        matches!(self, Self::ExactIgnoreCase(_) | Self::PrefixIgnoreCase(_))
    }

    /// The same kind of comparison with another value.
    pub fn with_value(&self, value: String) -> Self {
        match self {
            Self::Exact(_) => Self::Exact(value),
            Self::Prefix(_) => Self::Prefix(value),
            Self::ExactIgnoreCase(_) => Self::ExactIgnoreCase(value),
            Self::PrefixIgnoreCase(_) => Self::PrefixIgnoreCase(value),
        }
    }
}

/// A text condition that is not an exact match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TextPattern {
    /// The value starts with this string.
    Prefix(String),
    /// The value contains this string.
    Contains(String),
}

impl TextPattern {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Contains(p) => value.contains(p.as_str()),
        }
    }
}

/// A `detectedBy` condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DetectedBy {
    /// Any enabled detection rule marked the client.
    Any,
    /// One of these rules (by DetectionRule name) marked the client.
    Rules(Vec<String>),
}

/// One DetectionRule, as far as the policy needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// The rule's name, unique in its namespace.
    pub name: String,
    /// The rule carries `palisade.dev/paused: "true"`: its detections do not trigger actions.
    pub paused: bool,
    /// In observe mode its detections are recorded but do not trigger actions.
    pub mode: Mode,
    /// What identifies a client for the rule (its `clientKey`, `ip` for the types that only
    /// judge addresses): the sidecars count clients of this kind.
    pub client_key: crate::ClientKeyKind,
}

impl RuleSpec {
    /// Whether the rule's detections can trigger `detectedBy` conditions.
    pub fn enabled(&self) -> bool {
        !self.paused && self.mode == Mode::Enforce
    }
}
