//! The counts kept per client and per namespace, shared by the sidecar counter, the report
//! and the collector's windows. Per-client counts are compact (`u32`; key + counts = 96 bytes) because the
//! sidecar keeps one per tracked client; sums over a window use [`Totals`] (`u64`).

use serde::{Deserialize, Serialize};

use crate::topk::Tally;

/// Up to four distinct user-agent fingerprints; the fifth distinct one saturates the set.
///
/// OAuth Abuser needs "few user agents" (≤ 2 by default), so knowing "4 or more" is enough.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UaSet {
    /// Fingerprints seen (0 = empty slot).
    slots: [u32; 4],
    /// More distinct fingerprints were seen than fit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    saturated: bool,
}

impl UaSet {
    /// Adds a fingerprint (0 is mapped to 1 so it never reads as an empty slot).
    #[inline]
    pub fn insert(&mut self, fingerprint: u32) {
        let fp = fingerprint.max(1);
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
            self.insert(*fp);
        }
        self.saturated |= other.saturated;
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
    /// Requests to the token endpoint the app answered (OAuth sessions started).
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
}

impl ClientWindow {
    /// Adds one slice's counts.
    pub fn add(&mut self, c: &ClientCounts) {
        self.totals.add_client(c);
        self.overcount += u64::from(c.overcount);
        self.sequential += u64::from(c.sequential);
        self.user_agents.merge(&c.user_agents);
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
mod tests {
    use super::*;

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
