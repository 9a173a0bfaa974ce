//! The policy bundle: what the operator compiles for one namespace and every sidecar of that
//! namespace enforces. Its wire encoding is in `codec`.

use serde::{Deserialize, Serialize};

use crate::ipset::IpSet;
use crate::selector::LabelSelector;
use crate::spec::{DetectedBy, Mode, PathMatch, Verb};

/// The bundle format version. `decode` rejects any other.
pub const FORMAT_VERSION: u32 = 1;

/// How far ahead of a clock a bundle generation may be, in milliseconds. Generations are the
/// operator's clock in milliseconds (at least the previous one plus one), so one further ahead
/// was not written by the operator: the operator does not continue from it (it starts again
/// from its clock) and sidecars refuse it, and a sidecar that holds one (from an older
/// version) takes newer bundles with a plausible generation.
pub const GENERATION_AHEAD_MAX_MS: u64 = 60 * 60 * 1000;

/// Whether `generation` is further ahead of `now_ms` than [`GENERATION_AHEAD_MAX_MS`].
pub fn generation_from_the_future(generation: u64, now_ms: u64) -> bool {
    generation > now_ms.saturating_add(GENERATION_AHEAD_MAX_MS)
}

/// The most enabled detection rules a bundle can name (`detectedBy` matches on a 64-bit mask).
pub const MAX_RULES: usize = 64;

/// A compiled namespace policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The generation of the inputs it was compiled from.
    pub generation: u64,
    /// Enabled detection rules (not paused, enforce mode), sorted by name. A detected-client
    /// entry counts only for these.
    pub rules: Vec<String>,
    /// Active actions, sorted by name; an [`ActionId`](crate::ActionId) indexes this list.
    pub actions: Vec<BundleAction>,
    /// The IP conditions of all actions, with shared lists stored once.
    pub ips: IpSet,
    /// The namespace's trusted proxies, replacing the sidecars' `--trusted-proxies` when set.
    pub trusted_proxies: Option<crate::TrustedProxies>,
    /// The namespace asks for the `palisade-decision` response header (its
    /// `palisade.dev/debug-headers: "true"` annotation), as `--debug-headers` does.
    pub debug_headers: bool,
    /// The client key kinds the namespace's DetectionRules judge by, sorted, always with
    /// `ip`: the sidecars count clients of exactly these kinds for detection.
    pub count_keys: Vec<crate::ClientKeyKind>,
    /// The IPv6 prefix length `ipPrefix` clients are counted by (the namespace's
    /// `palisade.dev/ipv6-prefix-length`, default [`crate::key::DEFAULT_IPV6_PREFIX_LEN`]).
    pub ipv6_prefix_len: u8,
}

impl Default for Bundle {
    fn default() -> Self {
        Self {
            generation: 0,
            rules: Vec::new(),
            actions: Vec::new(),
            ips: IpSet::default(),
            trusted_proxies: None,
            debug_headers: false,
            count_keys: DEFAULT_COUNT_KEYS.to_vec(),
            ipv6_prefix_len: crate::key::DEFAULT_IPV6_PREFIX_LEN,
        }
    }
}

/// The key kinds counted when a bundle names none (a bundle of an older operator): IP only.
pub const DEFAULT_COUNT_KEYS: [crate::ClientKeyKind; 1] = [crate::ClientKeyKind::Ip];

/// One active action in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleAction {
    /// The SecurityAction's name.
    pub name: String,
    /// What happens to a matching request.
    pub verb: Verb,
    /// Enforce or observe.
    pub mode: Mode,
    /// The workloads that enforce it; `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    /// Its conditions, validated and normalised.
    pub conditions: BundleConditions,
    /// When it expires (`ttl`/`expireTime`), in Unix seconds: from then on the sidecar does
    /// not apply it, even before the operator publishes the bundle without it (the operator
    /// or the API server may be down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_s: Option<i64>,
}

/// Validated, normalised conditions. An empty list leaves that kind unconstrained.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleConditions {
    /// The action has an IP condition; its ranges are in [`Bundle::ips`]. (It may match no
    /// address at all, e.g. when its only list is empty.)
    #[serde(default, skip_serializing_if = "is_false")]
    pub ip: bool,
    /// Upper-case two-letter region codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_codes: Vec<String>,
    /// ASNs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asns: Vec<u32>,
    /// SHA-256 of API keys, lower-case hex (no `sha256:` prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
    /// SHA-256 of access tokens, lower-case hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_tokens: Vec<String>,
    /// API products.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_products: Vec<String>,
    /// Developers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub developers: Vec<String>,
    /// Developer apps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub developer_apps: Vec<String>,
    /// User agents (exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_agents: Vec<String>,
    /// User agents by prefix or substring.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_agent_patterns: Vec<crate::spec::TextPattern>,
    /// Upper-case HTTP methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_methods: Vec<String>,
    /// Paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    /// Detection rules (names, present in [`Bundle::rules`] or known but disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_by: Option<DetectedBy>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Bundle {
    /// The bundle's content hash (sha256 of its canonical bytes, lower-case hex): equal
    /// bundles have equal hashes, so the operator can skip rewriting an unchanged bundle.
    pub fn content_hash(&self) -> Result<String, crate::BundleError> {
        crate::codec::encode(self).map(|e| e.manifest.bundle_hash)
    }

    /// Looks an action up by name.
    pub fn action(&self, name: &str) -> Option<&BundleAction> {
        self.actions
            .binary_search_by(|a| a.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.actions[i])
    }
}
