//! `SecurityAction`: allow, deny, flag or rate-limit the requests that match its conditions.
//!
//! Users write the spec; the operator's policy controller reads it (with the pause annotations
//! and the clock), compiles it into the namespace's policy bundle and writes the status.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::{SignedDuration, Timestamp},
};
use kube::{CustomResource, KubeSchema, core::Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::{Mode, Targets},
    duration::Duration,
    matching::MatchConditions,
    strings::HeaderName,
};

fn one_verb_at_least() -> Rule {
    Rule::new("has(self.allow) || has(self.deny) || has(self.flag) || has(self.rateLimit)").message(
        "set one verb: allow: {}, deny: {status: 403}, flag: {headers: [...]} or \
             rateLimit: {requests: 10, per: Second}",
    )
}

fn one_verb_at_most() -> Rule {
    Rule::new(
        "(has(self.allow) ? 1 : 0) + (has(self.deny) ? 1 : 0) + (has(self.flag) ? 1 : 0) + \
         (has(self.rateLimit) ? 1 : 0) <= 1",
    )
    .message(
        "set only one of allow, deny, flag and rateLimit; create a separate SecurityAction for \
         each verb",
    )
}

fn ttl_xor_expire_time() -> Rule {
    Rule::new("!(has(self.ttl) && has(self.expireTime))").message(
        "set either ttl (a duration from creation, like 24h) or expireTime (an RFC 3339 time), \
         not both",
    )
}

fn conditions_required() -> Rule {
    Rule::new("has(self.conditions) || (has(self.matchAll) && self.matchAll)").message(
        "conditions is required: add at least one condition (ipRanges, regionCodes, apiKeys, \
         detectedBy, ...), or set matchAll: true to apply the action to every request",
    )
}

fn match_all_alone() -> Rule {
    Rule::new("!(has(self.matchAll) && self.matchAll && has(self.conditions))").message(
        "matchAll: true matches every request and cannot be combined with conditions; remove \
         one of them",
    )
}

/// Allow, deny, flag or rate-limit the requests that match all of `conditions`, in the protected
/// workloads of this namespace. Set exactly one verb. When several actions match a request,
/// allow wins over deny, and deny over rate limits and flags (a request under every matching
/// rate limit is forwarded, and every matching flag adds its headers). Pause an action with
/// the annotation `palisade.dev/paused: "true"` (or pause every action of a namespace by
/// annotating the namespace).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "SecurityAction",
    namespaced,
    status = "SecurityActionStatus",
    shortname = "secaction",
    shortname = "secactions",
    category = "palisade",
    label("app.kubernetes.io/part-of", "palisade"),
    doc = "A SecurityAction allows, denies, flags or rate-limits the requests that match its conditions.",
    printcolumn(name = "Verb", type_ = "string", json_path = ".status.verb"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expireTime"),
    printcolumn(name = "Pods", type_ = "string", json_path = ".status.enforcingPods"),
    printcolumn(
        name = "Matched-1h",
        type_ = "integer",
        json_path = ".status.matchedRequests.last1h"
    ),
    printcolumn(
        name = "Decided-1h",
        type_ = "integer",
        priority = "1",
        json_path = ".status.decidedRequests.last1h"
    ),
    printcolumn(
        name = "Observed-1h",
        type_ = "integer",
        priority = "1",
        json_path = ".status.observedRequests.last1h"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = one_verb_at_least())]
#[x_kube(validation = one_verb_at_most())]
#[x_kube(validation = ttl_xor_expire_time())]
#[x_kube(validation = conditions_required())]
#[x_kube(validation = match_all_alone())]
#[serde(rename_all = "camelCase")]
pub struct SecurityActionSpec {
    /// Let matching requests through, even when a deny action also matches them (allow wins):
    /// the way to exempt known-good clients. Written `allow: {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Allow>,
    /// Answer matching requests from the proxy with an error status; they never reach the
    /// workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Deny>,
    /// Forward matching requests with extra headers, so the workload (or its logs, or a SIEM)
    /// can tell them apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<Flag>,
    /// Shape matching requests: a client (by IP, IPv6 prefix, API key or access token) above
    /// the rate gets `429 Too Many Requests` with `Retry-After`; the others are forwarded. An
    /// allow or deny action that also matches wins over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Which requests the action applies to: a request matches when it matches every kind
    /// that is set (AND), and a kind when it matches any entry of its list (OR). Example:
    /// `{regionCodes: [KP, IR], httpMethods: [POST]}` matches POST requests from KP or IR.
    /// Required unless `matchAll` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<MatchConditions>,
    /// `true`: the action applies to every request of its targets, with no conditions — the
    /// way to set an environment-wide default (for example flag everything while you observe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_all: Option<bool>,
    /// The protected workloads the action applies to. Absent: every protected workload of the
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Targets>,
    /// How long the action lasts, counted from its creation: `30m`, `24h`, `168h`. When it
    /// has passed, the action stops applying and shows state `Expired`. Exclusive with
    /// `expireTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = crate::duration::duration_bounds("ttl", "1s", "87600h"))]
    pub ttl: Option<Duration>,
    /// When the action stops applying, as an RFC 3339 time: `2026-12-31T23:59:59Z`.
    /// Exclusive with `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<Time>,
    /// `Enforce` (default) acts on requests; `Observe` only counts what it matched and changes
    /// nothing, for every verb (an observed rate limit counts the requests it matched; it
    /// does not meter them).
    #[serde(default)]
    pub mode: Mode,
}

/// Let the request through. Has no fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Allow {}

/// The default status of a deny action.
pub const DEFAULT_DENY_STATUS: i32 = 403;

fn default_deny_status() -> i32 {
    DEFAULT_DENY_STATUS
}

/// Answer the request with an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deny {
    /// The HTTP status of the answer, 400–599. Default 403.
    #[serde(default = "default_deny_status")]
    #[x_kube(validation = Rule::new("self >= 400 && self <= 599").message(
        "deny.status must be an HTTP error status between 400 and 599, like 403 (the default) \
         or 429"
    ))]
    pub status: i32,
    /// The body of the answer (at most 4096 characters). Absent: an empty body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub body: Option<String>,
    /// The `Content-Type` of the body. Default `text/plain; charset=utf-8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new(
        r"self.matches('^[-!#$%&*+.^_`|~0-9A-Za-z]+/[-!#$%&*+.^_`|~0-9A-Za-z]+( *;.*)?$')"
    ).message("deny.contentType must be a media type, like application/json or text/plain; charset=utf-8"))]
    pub content_type: Option<String>,
}

impl Default for Deny {
    fn default() -> Self {
        Self {
            status: DEFAULT_DENY_STATUS,
            body: None,
            content_type: None,
        }
    }
}

/// Forward the request with extra headers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
pub struct Flag {
    /// Headers added to the forwarded request (at most 16; names unique, case-insensitive).
    /// A header of the same name sent by the client is replaced. Example:
    /// `{name: X-Palisade-Flag, value: suspected}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = Rule::new(
        "self.all(h, self.exists_one(o, o.name.lowerAscii() == h.name.lowerAscii()))"
    ).message("flag.headers names must be unique (case-insensitive); merge the duplicates"))]
    pub headers: Vec<Header>,
}

/// The period of a rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("maxLength" = 16))]
pub enum RatePeriod {
    /// Requests per second.
    #[default]
    Second,
    /// Requests per minute.
    Minute,
}

impl RatePeriod {
    /// The period in seconds.
    pub fn seconds(self) -> u32 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
        }
    }
}

/// Answer a client above a rate with `429 Too Many Requests`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Requests one client may send per `per`, across all the pods the action applies to
    /// (each pod's sidecar lets its share through: `requests` ÷ Ready pods). 1–1000000.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests: i32,
    /// `Second` (default) or `Minute`.
    #[serde(default)]
    pub per: RatePeriod,
    /// Requests a client may send at once above the steady rate, like a burst of retries
    /// after a pause (shared by the pods like `requests`). 0–1000000, default 0: requests
    /// are spaced at the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub burst: Option<i32>,
    /// What one client is: `ip` (default), `ipPrefix` (an IPv6 /64, or the namespace's
    /// `palisade.dev/ipv6-prefix-length`; an IPv4 address alone), `apiKey`, `accessToken` or
    /// `userAgent`. A request without that key (no API key, say) is not limited by the action.
    #[serde(default)]
    pub by: crate::rule::ClientKey,
    /// Hold a limited request this long before answering it (`1s`–`10s`), to slow down a
    /// client that retries at once. Absent: answer at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = crate::duration::duration_bounds("rateLimit.tarpit", "1s", "10s"))]
    pub tarpit: Option<Duration>,
}

/// One header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
pub struct Header {
    /// The header name, an HTTP token like `X-Palisade-Flag`.
    pub name: HeaderName,
    /// The header value: printable ASCII, at most 1024 characters.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^[ -~]*$')").message(
        "header value must be printable ASCII (no line breaks or control characters)"
    ))]
    pub value: String,
}

/// Which verb an action has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Verb {
    /// `spec.allow` is set.
    Allow,
    /// `spec.deny` is set.
    Deny,
    /// `spec.flag` is set.
    Flag,
    /// `spec.rateLimit` is set.
    RateLimit,
}

/// Where an action stands, as `kubectl get` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ActionState {
    /// In the policy of the namespace (enforced, or observed in `Observe` mode).
    Active,
    /// Held back by a `palisade.dev/paused: "true"` annotation on the action or namespace.
    Paused,
    /// Its `ttl` or `expireTime` has passed.
    Expired,
    /// It cannot be compiled (for example it references a missing ConfigMap or rule); see the
    /// Ready condition.
    Invalid,
    /// In the policy, but its `targets.workloadSelector` selects no pod that carries the
    /// sidecar, so nothing enforces it (Ready is False with reason `NoSelectedPods`).
    Unenforced,
}

/// What the operator last observed and did about the action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityActionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (compiled into the policy), `Paused` and `Expired`, with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), transform = crate::conditions::bound_condition_strings)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The action's verb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<Verb>,
    /// `Active`, `Paused`, `Expired` or `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ActionState>,
    /// When the action expires: `spec.expireTime`, or the creation time plus `spec.ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<Time>,
    /// When the pause asked for by the `palisade.dev/paused-until` annotation ends (a
    /// duration there counts from when the operator first saw the value). Absent without the
    /// annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<Time>,
    /// The `palisade.dev/paused-until` value `pausedUntil` was resolved from; a new value
    /// re-arms the pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub paused_until_annotation: Option<String>,
    /// The generation of the namespace's policy bundle that first carried this version of
    /// the action: a sidecar enforcing that generation or a later one enforces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_generation: Option<i64>,
    /// `N/M`: of the `M` pods carrying the sidecar that the action's workload selector
    /// selects, `N` reported (within the last three minutes) enforcing `bundleGeneration` or
    /// later. Written by the collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub enforcing_pods: Option<String>,
    /// Requests whose conditions the action matched while enforced (decided by it or by an
    /// action of higher precedence), as reported by the sidecars. Written by the collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_requests: Option<RequestCounts>,
    /// Requests the action would have matched while in `Observe` mode (its own, or the
    /// sidecars' `--observe`). Written by the collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_requests: Option<RequestCounts>,
    /// Requests the action decided: a deny that answered, an allow that won, a flag whose
    /// headers were added, a rate limit that answered `429`. Written by the collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_requests: Option<RequestCounts>,
}

/// Request counts over recent windows, summed over every sidecar of the namespace. The
/// windows end at the collector's last update; the 5-minute and 1-hour windows are exact to
/// the minute, the 24-hour window to the hour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RequestCounts {
    /// The last 5 minutes.
    #[serde(rename = "last5m")]
    pub last_5m: i64,
    /// The last hour.
    #[serde(rename = "last1h")]
    pub last_1h: i64,
    /// The last 24 hours.
    #[serde(rename = "last24h")]
    pub last_24h: i64,
}

impl SecurityActionStatus {
    /// The status without the fields the collector writes (under its own field manager).
    #[must_use]
    pub fn without_evidence(&self) -> Self {
        Self {
            enforcing_pods: None,
            matched_requests: None,
            observed_requests: None,
            decided_requests: None,
            ..self.clone()
        }
    }
}

impl SecurityActionSpec {
    /// The verb that is set (the schema guarantees exactly one).
    pub fn verb(&self) -> Option<Verb> {
        match (&self.allow, &self.deny, &self.flag, &self.rate_limit) {
            (Some(_), None, None, None) => Some(Verb::Allow),
            (None, Some(_), None, None) => Some(Verb::Deny),
            (None, None, Some(_), None) => Some(Verb::Flag),
            (None, None, None, Some(_)) => Some(Verb::RateLimit),
            _ => None,
        }
    }

    /// When the action expires, given its creation time: `expireTime`, or `created + ttl`.
    /// `None` if it never expires (or the ttl is unparseable, which the schema prevents).
    pub fn expires_at(&self, created: Timestamp) -> Option<Timestamp> {
        if let Some(t) = &self.expire_time {
            return Some(t.0);
        }
        let ttl = self.ttl.as_ref()?.to_std().ok()?;
        created
            .checked_add(SignedDuration::try_from(ttl).ok()?)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_is_the_one_that_is_set() {
        let mut spec = SecurityActionSpec {
            deny: Some(Deny::default()),
            ..Default::default()
        };
        assert_eq!(spec.verb(), Some(Verb::Deny));
        spec.flag = Some(Flag::default());
        assert_eq!(spec.verb(), None);
        assert_eq!(SecurityActionSpec::default().verb(), None);
    }

    #[test]
    fn expiry_comes_from_expire_time_or_ttl() {
        let created = Timestamp::from_second(1_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut spec = SecurityActionSpec {
            ttl: Some("1h30m".parse().unwrap_or_else(|_| unreachable!())),
            ..Default::default()
        };
        assert_eq!(
            spec.expires_at(created).map(|t| t.as_second()),
            Some(1_005_400)
        );
        spec.ttl = None;
        assert_eq!(spec.expires_at(created), None);
        spec.expire_time = Some(Time(created));
        assert_eq!(spec.expires_at(created), Some(created));
    }

    #[test]
    fn deny_defaults_to_403() {
        let deny: Deny = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(deny.status, 403);
    }
}
