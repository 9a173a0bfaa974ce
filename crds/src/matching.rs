//! The conditions of a SecurityAction: which requests it matches.
//!
//! Conditions are ANDed across kinds and ORed within one kind's list: `{regionCodes: [RU, KP],
//! httpMethods: [POST]}` matches POST requests from RU or KP.

use kube::{KubeSchema, core::Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::IpListSource,
    strings::{IpRange, ObjectName, RegionCode, Sha256Digest},
};

/// The names of the condition kinds, in the order they appear in the schema.
pub const CONDITION_KINDS: [&str; 13] = [
    "ipRanges",
    "ipRangesFrom",
    "regionCodes",
    "asns",
    "apiKeys",
    "accessTokens",
    "apiProducts",
    "developers",
    "developerApps",
    "userAgents",
    "httpMethods",
    "paths",
    "detectedBy",
];

fn at_least_one_kind() -> Rule {
    let any = CONDITION_KINDS
        .map(|k| format!("has(self.{k})"))
        .join(" || ");
    Rule::new(any).message(
        "conditions is empty: set at least one condition kind (ipRanges, regionCodes, apiKeys, \
         detectedBy, ...), or remove conditions and set matchAll: true to match every request",
    )
}

/// Which requests the action applies to. A request matches when it matches every kind that is
/// set (AND), and it matches a kind when it matches any entry of that kind's list (OR). Every
/// list needs at least one entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = at_least_one_kind())]
#[serde(rename_all = "camelCase")]
pub struct MatchConditions {
    /// Client IP addresses and CIDRs, IPv4 or IPv6: `203.0.113.7`, `198.51.100.0/24`,
    /// `2001:db8::/32`. At most 1000; put longer lists in ConfigMaps and use `ipRangesFrom`.
    /// Prefer narrow ranges: `200.0.0.0/16` alone covers 65,536 addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 1000))]
    pub ip_ranges: Vec<IpRange>,
    /// ConfigMaps of this namespace holding IP lists (one IP or CIDR a line, `#` comments), for
    /// lists too long to inline: Tor exits, threat feeds, a million prefixes. An IP matches if
    /// it is in any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 8))]
    pub ip_ranges_from: Vec<IpListSource>,
    /// Client regions by ISO 3166-1 alpha-2 code (`US`, `DE`, `GB`), from the geolocation
    /// database the sidecar is given. Requests whose region is unknown never match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 250))]
    pub region_codes: Vec<RegionCode>,
    /// Autonomous system numbers of the client IP, like `64496`, from the ASN database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = 256),
        inner(range(min = 1, max = 4294967295_i64))
    )]
    pub asns: Vec<i64>,
    /// API keys, as SHA-256 digests `sha256:<64 hex>` — never the keys themselves. Compute one
    /// with `printf %s "$API_KEY" | sha256sum` and prefix `sha256:`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 1000))]
    pub api_keys: Vec<Sha256Digest>,
    /// OAuth access tokens (bearer tokens), as SHA-256 digests `sha256:<64 hex>` of the token
    /// string: `printf %s "$TOKEN" | sha256sum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 1000))]
    pub access_tokens: Vec<Sha256Digest>,
    /// API products the request's credential belongs to, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 253)))]
    pub api_products: Vec<String>,
    /// Developers (the owners of developer apps), by name or email.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 253)))]
    pub developers: Vec<String>,
    /// Developer apps (the applications credentials are issued to), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 253)))]
    pub developer_apps: Vec<String>,
    /// `User-Agent` header values: `{value: "python-requests/", type: Prefix}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64))]
    pub user_agents: Vec<TextMatch>,
    /// HTTP methods, upper case: `GET`, `POST`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 9))]
    pub http_methods: Vec<HttpMethod>,
    /// Request paths (without the query string): `{value: /login}` (exact; `/login/` matches
    /// too) or `{value: /admin/, type: Prefix}`; add `caseInsensitive: true` to ignore case.
    /// They are compared with the path the application will route: the sidecar normalises it
    /// first (`//admin`, `/%61dmin`, `/x/../admin` and `/;x/admin` are all `/admin`; see
    /// "Path normalisation" in docs/sidecar.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 64))]
    pub paths: Vec<PathMatch>,
    /// Names of DetectionRules of this namespace: matches clients that one of these rules
    /// currently detects. `any` matches clients detected by any rule (alone in the list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("!self.exists(r, r == 'any') || size(self) == 1").message(
        "detectedBy: 'any' already matches every rule; list it alone or remove it"
    ))]
    pub detected_by: Vec<ObjectName>,
}

/// How a [`TextMatch`] compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TextMatchType {
    /// The whole value is equal.
    #[default]
    Exact,
    /// The value starts with `value`.
    Prefix,
    /// The value contains `value`.
    Contains,
}

/// A string comparison, case-sensitive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TextMatch {
    /// The text to compare with, like `python-requests/`.
    #[schemars(length(min = 1, max = 512))]
    pub value: String,
    /// `Exact` (default), `Prefix` or `Contains`.
    #[serde(default, rename = "type")]
    pub type_: TextMatchType,
}

/// How a [`PathMatch`] compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    /// The path is equal to `value`, ignoring a trailing slash (`/admin` matches `/admin/`).
    #[default]
    Exact,
    /// The path starts with `value` (a plain string prefix: end it with `/` to match one
    /// directory only).
    Prefix,
}

/// A request path comparison. It is made on the path the application will route: the sidecar
/// first normalises the request path (percent-decodes unreserved characters, merges slashes,
/// removes dot segments, drops `;parameters` of segments) and `Exact` ignores a trailing
/// slash, so a deny on `/admin` also stops `//admin`, `/%61dmin`, `/x/../admin`, `/;x/admin`
/// and `/admin/`. The value is normalised the same way; it cannot contain `;`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// The path to compare with; starts with `/`. Example: `/v1/login`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message(
        "paths value must start with '/', like /v1/login"
    ))]
    #[x_kube(validation = Rule::new("!self.contains(';')").message(
        "paths value must not contain ';': segment parameters (;x) are removed from request paths before matching"
    ))]
    pub value: String,
    /// `Exact` (default) or `Prefix`.
    #[serde(default, rename = "type")]
    pub type_: PathMatchType,
    /// Compare ASCII letters case-insensitively: `/admin` then also matches `/ADMIN` and
    /// `/Admin`. Off by default: whether `/ADMIN` reaches the same handler as `/admin` is the
    /// application's choice (Spring and Express ignore case only when configured to), so set
    /// this when the application routes paths case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_insensitive: Option<bool>,
}

/// An HTTP request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Connect,
    Trace,
}
