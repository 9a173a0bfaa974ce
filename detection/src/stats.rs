//! The counts kept per client and per namespace, shared by the sidecar counter, the report
//! and the collector's windows. Per-client counts are compact (`u32`; key + counts = 96 bytes) because the
//! sidecar keeps one per tracked client; sums over a window use [`Totals`] (`u64`).

use serde::{Deserialize, Serialize};

use crate::topk::Tally;

/// Up to four distinct user-agent fingerprints; the fifth distinct one saturates the set.
///
/// OAuth Abuser needs "few user agents" (≤ 2 by default), so knowing "4 or more" is enough.
/// Fingerprints are kept as 16 bits (10 bytes per client; two agents share one with odds of
/// 1 in 65,536); reports and snapshots carry them as before (`u32`, the low 16 bits used), so
/// older sidecars and saved windows still read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "UaSetWire", into = "UaSetWire")]
pub struct UaSet {
    /// Fingerprints seen (0 = empty slot).
    slots: [u16; 4],
    /// More distinct fingerprints were seen than fit.
    saturated: bool,
}

/// [`UaSet`] as reports and snapshots carry it.
#[derive(Serialize, Deserialize)]
struct UaSetWire {
    slots: [u32; 4],
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    saturated: bool,
}

impl From<UaSetWire> for UaSet {
    fn from(w: UaSetWire) -> Self {
        let mut set = Self::default();
        for fp in w.slots.into_iter().filter(|fp| *fp != 0) {
            set.insert(fp);
        }
        set.saturated |= w.saturated;
        set
    }
}

impl From<UaSet> for UaSetWire {
    fn from(s: UaSet) -> Self {
        Self {
            slots: s.slots.map(u32::from),
            saturated: s.saturated,
        }
    }
}

impl UaSet {
    /// Adds a fingerprint (its low 16 bits; 0 is mapped to 1 so it never reads as an empty
    /// slot).
    #[inline]
    pub fn insert(&mut self, fingerprint: u32) {
        let fp = (fingerprint as u16).max(1);
        for slot in &mut self.slots {
            if *slot == fp {
                return;
            }
            if *slot == 0 {
                *slot = fp;
                return;
            }
        }
        self.saturated = true;
    }

    /// Distinct user agents seen, capped: 5 means "more than four".
    pub fn distinct(&self) -> u32 {
        let n = self.slots.iter().filter(|s| **s != 0).count() as u32;
        n + u32::from(self.saturated)
    }

    /// Adds every fingerprint of `other`.
    pub fn merge(&mut self, other: &UaSet) {
        for fp in other.slots.iter().filter(|s| **s != 0) {
            self.insert(u32::from(*fp));
        }
        self.saturated |= other.saturated;
    }
}

/// Distinct access tokens of a client: a 64-bit linear-counting sketch (one bit per token
/// hash, 8 bytes per client). Merging is a union (OR), so a token seen in many slices or by
/// many pods counts once over a window. Accurate to about ±10 % up to 100 tokens; it
/// saturates at [`TokenSketch::SATURATED`] (266).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenSketch(u64);

impl TokenSketch {
    /// The estimate once every bit is set: "at least this many".
    pub const SATURATED: u64 = 266;

    /// Adds a token by its digest's first bytes (already uniform).
    #[inline]
    pub fn insert(&mut self, digest_word: u64) {
        self.0 |= 1 << (digest_word % 64);
    }

    /// Unites `other` into `self`.
    pub fn merge(&mut self, other: &TokenSketch) {
        self.0 |= other.0;
    }

    /// Whether no token was seen.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Estimated distinct tokens: `64 · ln(64 / zero bits)`, rounded.
    pub fn estimate(&self) -> u64 {
        let zeros = self.0.count_zeros();
        if zeros == 0 {
            return Self::SATURATED;
        }
        (64.0 * (64.0 / f64::from(zeros)).ln()).round() as u64
    }
}

/// What one client did in one time slice, as counted by a sidecar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCounts {
    /// Requests seen while tracked (including ones the sidecar denied).
    pub requests: u32,
    /// Upstream responses with status 4xx or 5xx (never the sidecar's own answers).
    pub errors: u32,
    /// Upstream responses with status 403 (never the sidecar's own denials).
    pub forbidden: u32,
    /// Requests the sidecar answered itself (its own denials).
    pub denied: u32,
    /// Requests to the token endpoint the app answered with a success (2xx or 3xx: OAuth
    /// sessions started; a failing call and its retries start none).
    pub token_calls: u32,
    /// Sequential requests the app answered: same path shape as the client's previous
    /// request, identifier 1 to 10 away (see [`crate::sequence`]). Absent in reports of older sidecars (0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sequential: u32,
    /// Space-Saving bound: the client may have sent up to this many more requests while
    /// untracked. 0 when counting was exact.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overcount: u32,
    /// Response bytes the app sent to the client (the sidecar's own answers not included).
    pub bytes: u64,
    /// Distinct user agents of the requests the app answered.
    pub user_agents: UaSet,
    /// Distinct access tokens of the requests the app answered (OAuth sessions in use).
    /// Absent in reports of older sidecars.
    #[serde(default, skip_serializing_if = "TokenSketch::is_empty")]
    pub tokens: TokenSketch,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ClientCounts {
    /// Adds `other` into `self` (saturating).
    pub fn merge(&mut self, other: &ClientCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.forbidden = self.forbidden.saturating_add(other.forbidden);
        self.denied = self.denied.saturating_add(other.denied);
        self.token_calls = self.token_calls.saturating_add(other.token_calls);
        self.sequential = self.sequential.saturating_add(other.sequential);
        self.overcount = self.overcount.saturating_add(other.overcount);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.user_agents.merge(&other.user_agents);
        self.tokens.merge(&other.tokens);
    }
}

impl Tally for ClientCounts {
    fn estimate(&self) -> u64 {
        u64::from(self.requests) + u64::from(self.overcount)
    }

    fn add_overcount(&mut self, n: u64) {
        self.overcount = self
            .overcount
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

/// Sums over many clients or slices (namespace totals, window sums).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// Upstream 4xx/5xx responses.
    pub errors: u64,
    /// Upstream 403 responses.
    pub forbidden: u64,
    /// Requests the sidecar denied itself.
    pub denied: u64,
    /// Token-endpoint calls the app answered.
    pub token_calls: u64,
    /// Response bytes the app sent.
    pub bytes: u64,
}

impl Totals {
    /// Requests the app answered (all requests minus the sidecar's own denials): what every
    /// traffic-based rule is computed over.
    pub fn answered(&self) -> u64 {
        self.requests.saturating_sub(self.denied)
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.forbidden += other.forbidden;
        self.denied += other.denied;
        self.token_calls += other.token_calls;
        self.bytes += other.bytes;
    }

    /// Adds one client's slice counts into `self`.
    pub fn add_client(&mut self, c: &ClientCounts) {
        self.requests += u64::from(c.requests);
        self.errors += u64::from(c.errors);
        self.forbidden += u64::from(c.forbidden);
        self.denied += u64::from(c.denied);
        self.token_calls += u64::from(c.token_calls);
        self.bytes += c.bytes;
    }
}

/// One client's counts summed over a window (see [`crate::window::Windows`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientWindow {
    /// Summed counts.
    pub totals: Totals,
    /// Summed Space-Saving overcount bounds.
    pub overcount: u64,
    /// Summed sequential requests (see [`ClientCounts::sequential`]).
    pub sequential: u64,
    /// Distinct user agents across the window (capped, see [`UaSet`]).
    pub user_agents: UaSet,
    /// Distinct access tokens across the window (see [`TokenSketch`]).
    pub tokens: TokenSketch,
    /// The part of `totals` that fell in surge slices (see [`crate::window`]): answers the
    /// error-counting rules leave out.
    pub surge: SurgeCounts,
}

/// Answers, errors and 403s a client received in surge slices, when most of the namespace
/// failed at once (see [`crate::window`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SurgeCounts {
    /// Requests the app answered.
    pub answered: u64,
    /// Of those, errors.
    pub errors: u64,
    /// Of those, 403s.
    pub forbidden: u64,
}

impl SurgeCounts {
    /// Adds one slice's counts of a client.
    pub fn add_client(&mut self, c: &ClientCounts) {
        self.answered += u64::from(c.requests.saturating_sub(c.denied));
        self.errors += u64::from(c.errors);
        self.forbidden += u64::from(c.forbidden);
    }

    /// Adds a slice's totals.
    pub fn add_totals(&mut self, t: &Totals) {
        self.answered += t.answered();
        self.errors += t.errors;
        self.forbidden += t.forbidden;
    }
}

impl Totals {
    /// These totals without the answers of surge slices: what Brute Guessor and Robot
    /// Abuser judge (requests, errors and 403s reduced; denials and the rest kept).
    pub fn outside(&self, surge: &SurgeCounts) -> Totals {
        Totals {
            requests: self.requests.saturating_sub(surge.answered),
            errors: self.errors.saturating_sub(surge.errors),
            forbidden: self.forbidden.saturating_sub(surge.forbidden),
            ..*self
        }
    }
}

impl ClientWindow {
    /// Adds one slice's counts.
    pub fn add(&mut self, c: &ClientCounts) {
        self.totals.add_client(c);
        self.overcount += u64::from(c.overcount);
        self.sequential += u64::from(c.sequential);
        self.user_agents.merge(&c.user_agents);
        self.tokens.merge(&c.tokens);
    }

    /// OAuth sessions: the larger of the successful token-endpoint calls and the distinct
    /// access tokens the client presented (a client whose tokens come from an authorization
    /// server this sidecar does not front shows only the second).
    pub fn sessions(&self) -> u64 {
        self.totals.token_calls.max(self.tokens.estimate())
    }
}

/// An attribute of traffic that incidents show (seed: "Attributes" of an incident).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttrDim {
    /// API product.
    Product,
    /// Developer app.
    App,
    /// Developer.
    Developer,
    /// Country / region code.
    Region,
    /// Request path.
    Path,
    /// Protected workload (the proxy).
    Workload,
    /// Response status code.
    ResponseCode,
    /// Client IP address, recorded for clients of the other key kinds (an API key's,
    /// token's or user agent's addresses; an IP client is its own address).
    Ip,
    /// `User-Agent` header (cut to [`MAX_ATTR_LEN`] bytes).
    UserAgent,
    /// API key (app key), as `sha256:` and the first 16 hex digits of its digest.
    AppKey,
}

/// Attribute values longer than this are cut (on a character boundary).
pub const MAX_ATTR_LEN: usize = 128;

/// Cuts `value` to at most [`MAX_ATTR_LEN`] bytes on a character boundary.
pub fn bounded(value: &str) -> &str {
    if value.len() <= MAX_ATTR_LEN {
        return value;
    }
    let mut end = MAX_ATTR_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_token_sketch_counts_distinct_tokens_within_its_bound() {
        let word =
            |n: u64| crate::key::KeyHash::of(format!("token-{n}").as_bytes()).fingerprint() as u64;
        for n in [1u64, 10, 50, 100] {
            let mut s = TokenSketch::default();
            for i in 0..n {
                // Each token seen many times counts once.
                for _ in 0..3 {
                    s.insert(word(i));
                }
            }
            let e = s.estimate() as f64;
            assert!(
                (e - n as f64).abs() <= (n as f64 * 0.25).max(1.0),
                "{n} → {e}"
            );
        }
        // A union over slices: the same 40 tokens in two halves count 40, not 80.
        let (mut a, mut b) = (TokenSketch::default(), TokenSketch::default());
        (0..40).for_each(|i| a.insert(word(i)));
        (0..40).for_each(|i| b.insert(word(i)));
        a.merge(&b);
        assert!(a.estimate() <= 50, "{}", a.estimate());
        let mut full = TokenSketch::default();
        (0..5_000).for_each(|i| full.insert(word(i)));
        assert_eq!(full.estimate(), TokenSketch::SATURATED);
    }

    #[test]
    fn user_agent_sets_read_as_older_sidecars_wrote_them() {
        let old = r#"{"slots":[305419896,7,0,0]}"#;
        let set: UaSet = serde_json::from_str(old).unwrap();
        assert_eq!(set.distinct(), 2);
        let mut same = UaSet::default();
        same.insert(305_419_896);
        same.insert(7);
        assert_eq!(set, same, "the low 16 bits, as inserted now");
        let back: UaSet = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn ua_set_saturates() {
        let mut s = UaSet::default();
        for fp in [7, 7, 0, 9] {
            s.insert(fp);
        }
        assert_eq!(s.distinct(), 3);
        s.insert(11);
        s.insert(12);
        assert_eq!(s.distinct(), 5);
        s.insert(13);
        assert_eq!(s.distinct(), 5, "saturated stays at 5");
    }

    #[test]
    fn client_counts_are_compact() {
        // One tracked client = key + counts (+ 1 control byte in the map): ≤ 128 B budget.
        let entry = size_of::<(crate::key::ClientKey, ClientCounts)>();
        assert!(entry <= 96, "{entry}");
    }

    #[test]
    fn bounded_cuts_on_char_boundary() {
        let long = "é".repeat(100);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_ATTR_LEN && cut.chars().all(|c| c == 'é'));
    }
}
