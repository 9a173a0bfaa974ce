//! The sidecar-side counter: what detection needs, per time slice and per client key.
//!
//! [`Counter::record`] is called once per finished request, on the request path: a hash-map
//! update per tracked key kind (default: IP only), no allocation unless a new client appears,
//! no lock, no clock read. [`Counter::take_report`] drains the slice into a [`Report`]
//! (default every second). The number of tracked clients is bounded by a Space-Saving sketch
//! ([`crate::topk`]); namespace totals stay exact. Attributes for incidents (product, app,
//! developer, region, path, workload, response code) are sampled 1 in `attr_sample` requests
//! and scaled back, so they cost a fraction of a nanosecond per request on average.
//! Sequential requests (API Scraper) are told apart with one more lookup per key kind in a
//! fixed table of each client's previous path shape ([`crate::sequence::SeqTable`], 2 ×
//! `max_clients` slots of 32 bytes), kept across slices.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};

use jiff::Timestamp;

use crate::client_id::{PREFIX_TAG, ip_key, ip_word, word_of as client_word};
use crate::facts::{RequestFacts, Responder};
use crate::key::{ClientKey, ClientKeyKind, KeyHash};
use crate::report::{AttrEntry, ClientEntry, REPORT_VERSION, Report, SidecarId};
use crate::sequence::SeqTable;
use crate::stats::{AttrDim, ClientCounts, Totals, bounded};
use crate::topk::{FastHash, Tally, TopK};

/// How the counter bounds itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterConfig {
    /// Client keys tracked per slice before the heavy-hitter bound evicts (default 3584: 7/8
    /// of 4096, so a full map fits 4096 buckets — std's map is at most 7/8 full — instead of
    /// doubling to 8192 for a few more keys).
    pub max_clients: usize,
    /// Which key kinds are counted (default: IP). The first one is the *primary* kind that
    /// attributes are attached to. Each extra kind costs one more map update per request.
    pub key_kinds: Vec<ClientKeyKind>,
    /// Attributes are recorded for 1 request in this many (default 64; 1 = every request).
    /// A sampled request costs a few hundred ns (up to 7 pair updates, a text copy for new
    /// pairs), so sampling keeps the average within the per-request budget; heavy clients —
    /// the ones incidents are about — are still sampled many times per window.
    pub attr_sample: u32,
    /// (client, attribute value) pairs tracked per slice (default 1024).
    pub max_attrs: usize,
    /// IPv6 prefix length of `ipPrefix` clients (default 64; IPv4 clients are /32).
    pub ipv6_prefix_len: u8,
}

impl Default for CounterConfig {
    fn default() -> Self {
        Self {
            max_clients: 3584,
            key_kinds: vec![ClientKeyKind::Ip],
            attr_sample: 64,
            max_attrs: 1024,
            ipv6_prefix_len: crate::key::DEFAULT_IPV6_PREFIX_LEN,
        }
    }
}

/// (client word, kind and dimension, value hash): small, register-friendly.
type AttrKey = (u128, u16, u64);

/// A sampled attribute pair; the client and the value text are set once, on insert.
#[derive(Debug, Default)]
struct AttrSlot {
    client: Option<ClientKey>,
    value: Box<str>,
    count: u64,
    overcount: u64,
}

impl Tally for AttrSlot {
    fn estimate(&self) -> u64 {
        self.count + self.overcount
    }
    fn add_overcount(&mut self, n: u64) {
        self.overcount += n;
    }
}

/// Counts of a client of a hashed kind, with its full digest for the report (the kind is
/// in the map key).
#[derive(Debug, Default)]
struct HashedSlot {
    digest: [u8; 32],
    counts: ClientCounts,
}

impl Tally for HashedSlot {
    fn estimate(&self) -> u64 {
        self.counts.estimate()
    }
    fn add_overcount(&mut self, n: u64) {
        self.counts.add_overcount(n);
    }
}

/// Heap bytes a [`Counter`] holds, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterMemory {
    /// The per-client maps (IPs, and hashed API keys, tokens and user agents).
    pub client_maps: usize,
    /// The sampled attribute map (its values' strings not included).
    pub attributes: usize,
    /// The fixed sequential-request table.
    pub sequence: usize,
}

/// Per-slice counters of one sidecar (see the module docs).
#[derive(Debug)]
pub struct Counter {
    sidecar: SidecarId,
    kinds: [bool; 5],
    primary: ClientKeyKind,
    attr_sample: u32,
    sample_tick: u32,
    /// IP clients, keyed by the address as one `u128` (IPv4 as IPv4-mapped IPv6): a key
    /// built and passed in registers keeps the hot path free of store-forwarding stalls.
    ips: TopK<u128, ClientCounts>,
    /// Clients of the hashed kinds (API key, token, user agent), keyed by kind and 126 bits
    /// of the digest.
    hashed: TopK<[u64; 2], HashedSlot>,
    /// IP-prefix clients, keyed by the masked address word (IPv4 whole).
    prefixes: TopK<u128, ClientCounts>,
    /// The IPv6 prefix length of the slice being counted, and the one from the next slice.
    v6_len: u8,
    next_v6_len: u8,
    attrs: TopK<AttrKey, AttrSlot>,
    /// Each client's previous path shape (kept across slices: a walk spans reports).
    sequence: SeqTable,
    hasher: FastHash,
    totals: Totals,
    evicted: u64,
    seq: u64,
    start: Timestamp,
}

impl Counter {
    /// A counter for `sidecar` whose first slice starts at `now`.
    pub fn new(sidecar: SidecarId, cfg: &CounterConfig, now: Timestamp) -> Self {
        let mut kinds = [false; 5];
        for kind in &cfg.key_kinds {
            kinds[kind_index(*kind)] = true;
        }
        let primary = cfg.key_kinds.first().copied().unwrap_or(ClientKeyKind::Ip);
        kinds[kind_index(primary)] = true;
        Self {
            sidecar,
            kinds,
            primary,
            attr_sample: cfg.attr_sample.max(1),
            sample_tick: 0,
            ips: TopK::new(cfg.max_clients),
            // Without a hashed key kind (API key, token, user agent) the map stays empty:
            // no room is reserved for it.
            hashed: if HASHED_KINDS.iter().any(|k| kinds[kind_index(*k)]) {
                TopK::new(cfg.max_clients)
            } else {
                TopK::unallocated(cfg.max_clients)
            },
            prefixes: if kinds[kind_index(ClientKeyKind::IpPrefix)] {
                TopK::new(cfg.max_clients)
            } else {
                TopK::unallocated(cfg.max_clients)
            },
            v6_len: clamp_len(cfg.ipv6_prefix_len),
            next_v6_len: clamp_len(cfg.ipv6_prefix_len),
            attrs: TopK::new(cfg.max_attrs),
            sequence: SeqTable::new(2 * cfg.max_clients),
            hasher: FastHash::default(),
            totals: Totals::default(),
            evicted: 0,
            seq: 0,
            start: now,
        }
    }

    /// Counts one finished request, and records its attributes for 1 request in
    /// `attr_sample` (the counter samples).
    #[inline]
    pub fn record(&mut self, facts: &RequestFacts<'_>) {
        self.record_counts(facts);
        self.sample_tick += 1;
        if self.sample_tick >= self.attr_sample {
            self.sample_tick = 0;
            self.record_attrs(facts, u64::from(self.attr_sample));
        }
    }

    /// Records the attributes of a request the caller sampled, as `weight` requests (the
    /// caller's sampling rate). With [`Self::record_counts`], for a caller that samples
    /// itself, like the sidecar, which copies attributes only for the requests it samples.
    pub fn record_sampled(&mut self, facts: &RequestFacts<'_>, weight: u32) {
        self.record_attrs(facts, u64::from(weight.max(1)));
    }

    /// Counts one finished request, without its attributes.
    #[inline]
    pub fn record_counts(&mut self, facts: &RequestFacts<'_>) {
        let own = facts.responder == Responder::Sidecar;
        self.totals.requests += 1;
        if own {
            self.totals.denied += 1;
        } else if facts.responder.is_upstream() {
            self.totals.bytes += facts.bytes;
            self.totals.token_calls += u64::from(facts.token_endpoint && facts.status < 400);
            self.totals.errors += u64::from(facts.status >= 400);
            self.totals.forbidden += u64::from(facts.status == 403);
        }
        let before = self.ips.evicted() + self.hashed.evicted() + self.prefixes.evicted();
        if self.kinds[kind_index(ClientKeyKind::Ip)] {
            let word = ip_word(facts.ip);
            let sequential = self.sequence.step(word, facts.shape);
            count(self.ips.entry(word), facts, own, sequential);
        }
        if self.kinds[kind_index(ClientKeyKind::IpPrefix)] {
            let word = prefix_word(facts.ip, self.v6_len);
            let sequential = self.sequence.step(word ^ PREFIX_TAG, facts.shape);
            count(self.prefixes.entry(word), facts, own, sequential);
        }
        for kind in HASHED_KINDS {
            if self.kinds[kind_index(kind)]
                && let Some(key) = key_of(kind, facts, self.v6_len)
            {
                let word = client_word(&key);
                let sequential = self.sequence.step(word, facts.shape);
                let slot = self.hashed.entry(split(word));
                if slot.counts.requests == 0
                    && let Some(digest) = digest_of(&key)
                {
                    slot.digest = digest.0;
                }
                count(&mut slot.counts, facts, own, sequential);
            }
        }
        self.evicted +=
            self.ips.evicted() + self.hashed.evicted() + self.prefixes.evicted() - before;
    }

    /// Clients currently tracked in this slice.
    pub fn tracked(&self) -> usize {
        self.ips.len() + self.hashed.len() + self.prefixes.len()
    }

    /// Heap bytes held, by part (the maps keep their size across slices).
    pub fn memory(&self) -> CounterMemory {
        CounterMemory {
            client_maps: self.ips.heap_bytes()
                + self.hashed.heap_bytes()
                + self.prefixes.heap_bytes(),
            attributes: self.attrs.heap_bytes(),
            sequence: self.sequence.heap_bytes(),
        }
    }

    /// Drains the current slice into a report covering `[previous take, now)`.
    pub fn take_report(&mut self, now: Timestamp) -> Report {
        self.seq += 1;
        let ips = self.ips.drain().map(|(w, counts)| ClientEntry {
            key: ip_key(w),
            counts,
        });
        let hashed = self
            .hashed
            .drain()
            .filter_map(|(word, slot)| hashed_entry(word, slot));
        let v6_len = self.v6_len;
        let prefixes = self.prefixes.drain().map(|(w, counts)| ClientEntry {
            key: prefix_key(w, v6_len),
            counts,
        });
        let clients = ips.chain(hashed).chain(prefixes).collect();
        self.v6_len = self.next_v6_len;
        let attributes = self
            .attrs
            .drain()
            .filter_map(|((_, tag, _), a)| {
                Some(AttrEntry {
                    client: a.client?,
                    dim: dim_of(tag),
                    value: a.value.into(),
                    count: a.count,
                })
            })
            .collect();
        let start = std::mem::replace(&mut self.start, now);
        Report {
            version: REPORT_VERSION,
            sidecar: self.sidecar.clone(),
            seq: self.seq,
            start,
            end: now.max(start + jiff::SignedDuration::from_nanos(1)),
            totals: std::mem::take(&mut self.totals),
            clients,
            attributes,
            evicted: std::mem::take(&mut self.evicted),
            actions: Vec::new(),
            generation: None,
            samples: Vec::new(),
        }
    }

    /// Counts these key kinds from the next request on. The primary kind (IP by default)
    /// is always counted. Called between slices when the namespace's rules change which
    /// kinds they judge by; a kind no longer counted keeps nothing (its map empties with
    /// the next report).
    pub fn set_key_kinds(&mut self, kinds: &[ClientKeyKind]) {
        let mut on = [false; 5];
        for kind in kinds {
            on[kind_index(*kind)] = true;
        }
        on[kind_index(self.primary)] = true;
        self.kinds = on;
    }

    /// Groups IPv6 clients of the `ipPrefix` kind by `len` bits: at once while no prefix is
    /// counted in this slice (right after a report), else from the next slice on.
    pub fn set_ipv6_prefix_len(&mut self, len: u8) {
        self.next_v6_len = clamp_len(len);
        if self.prefixes.is_empty() {
            self.v6_len = self.next_v6_len;
        }
    }

    /// The IPv6 prefix length of the slice being counted.
    pub fn ipv6_prefix_len(&self) -> u8 {
        self.v6_len
    }

    /// The key kinds counted, in [`ClientKeyKind::ALL`] order.
    pub fn key_kinds(&self) -> Vec<ClientKeyKind> {
        ClientKeyKind::ALL
            .into_iter()
            .filter(|k| self.kinds[kind_index(*k)])
            .collect()
    }

    /// Records the sampled request's attributes for its client of every counted kind, so an
    /// incident about an API key, a token or a user agent shows its addresses, user agents
    /// and the rest as one about an IP does.
    #[cold]
    fn record_attrs(&mut self, facts: &RequestFacts<'_>, weight: u64) {
        for kind in ClientKeyKind::ALL {
            if self.kinds[kind_index(kind)]
                && let Some(client) = key_of(kind, facts, self.v6_len)
            {
                self.record_attrs_of(client, facts, weight);
            }
        }
    }

    fn record_attrs_of(&mut self, client: ClientKey, facts: &RequestFacts<'_>, weight: u64) {
        let word = client_word(&client);
        let kind = (kind_index(client.kind()) as u16) << 8;
        let a = &facts.attrs;
        let dims = [
            (AttrDim::Product, a.product),
            (AttrDim::App, a.app),
            (AttrDim::Developer, a.developer),
            (AttrDim::Region, a.region),
            (AttrDim::Path, a.path),
            (AttrDim::Workload, Some(self.sidecar.workload.as_str())),
            (AttrDim::UserAgent, a.user_agent),
        ];
        for (dim, value) in dims {
            if let Some(value) = value.map(bounded) {
                let key = (word, kind | dim_tag(dim), self.hasher.hash_one(value));
                add_attr(&mut self.attrs, key, client, weight, || value.into());
            }
        }
        let code = facts.status;
        let key = (word, kind | dim_tag(AttrDim::ResponseCode), u64::from(code));
        add_attr(&mut self.attrs, key, client, weight, || {
            code.to_string().into()
        });
        if let Some(app_key) = facts.api_key {
            let key = (
                word,
                kind | dim_tag(AttrDim::AppKey),
                app_key_word(&app_key),
            );
            add_attr(&mut self.attrs, key, client, weight, || {
                short_digest(&app_key).into()
            });
        }
        if !matches!(client, ClientKey::Ip(_)) {
            let ip = facts.ip;
            let key = (
                word,
                kind | dim_tag(AttrDim::Ip),
                self.hasher.hash_one(ip_word(ip)),
            );
            add_attr(&mut self.attrs, key, client, weight, || {
                ip.to_canonical().to_string().into()
            });
        }
    }
}

/// `sha256:` and the first 16 hex digits of a digest: how incidents show app keys.
pub fn short_digest(h: &KeyHash) -> String {
    format!("sha256:{}", hex::encode(&h.0[..8]))
}

fn app_key_word(h: &KeyHash) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&h.0[..8]);
    u64::from_le_bytes(w)
}

/// Adds `weight` to an attribute pair; client and value text are only stored for a new pair.
fn add_attr(
    attrs: &mut TopK<AttrKey, AttrSlot>,
    key: AttrKey,
    client: ClientKey,
    weight: u64,
    value: impl FnOnce() -> Box<str>,
) {
    let slot = attrs.entry(key);
    if slot.client.is_none() {
        slot.client = Some(client);
        slot.value = value();
    }
    slot.count += weight;
}

const DIMS: [AttrDim; 10] = [
    AttrDim::Product,
    AttrDim::App,
    AttrDim::Developer,
    AttrDim::Region,
    AttrDim::Path,
    AttrDim::Workload,
    AttrDim::ResponseCode,
    AttrDim::Ip,
    AttrDim::UserAgent,
    AttrDim::AppKey,
];

fn dim_tag(dim: AttrDim) -> u16 {
    DIMS.iter().position(|d| *d == dim).unwrap_or(0) as u16
}

fn dim_of(tag: u16) -> AttrDim {
    DIMS[usize::from(tag & 0xff) % DIMS.len()]
}

/// The report entry of a hashed-kind client (the kind is in the top bits of the key).
fn hashed_entry([hi, _]: [u64; 2], slot: HashedSlot) -> Option<ClientEntry> {
    let digest = KeyHash(slot.digest);
    let key = match hi >> 62 {
        1 => ClientKey::ApiKey(digest),
        2 => ClientKey::AccessToken(digest),
        3 => ClientKey::UserAgent(digest),
        _ => return None,
    };
    Some(ClientEntry {
        key,
        counts: slot.counts,
    })
}

/// A `u128` as two words (8-byte aligned: keeps hashed-kind entries within budget).
#[inline]
fn split(word: u128) -> [u64; 2] {
    [(word >> 64) as u64, word as u64]
}

fn digest_of(key: &ClientKey) -> Option<&KeyHash> {
    match key {
        ClientKey::ApiKey(h) | ClientKey::AccessToken(h) | ClientKey::UserAgent(h) => Some(h),
        ClientKey::Ip(_) | ClientKey::IpPrefix(_) => None,
    }
}

const HASHED_KINDS: [ClientKeyKind; 3] = [
    ClientKeyKind::ApiKey,
    ClientKeyKind::AccessToken,
    ClientKeyKind::UserAgent,
];

#[inline]
fn kind_index(kind: ClientKeyKind) -> usize {
    match kind {
        ClientKeyKind::Ip => 0,
        ClientKeyKind::ApiKey => 1,
        ClientKeyKind::AccessToken => 2,
        ClientKeyKind::UserAgent => 3,
        ClientKeyKind::IpPrefix => 4,
    }
}

fn clamp_len(len: u8) -> u8 {
    len.clamp(crate::key::MIN_IPV6_PREFIX_LEN, 128)
}

/// The address word of `ip`'s prefix: an IPv4 address whole, an IPv6 one cut to `v6_len`.
#[inline]
fn prefix_word(ip: IpAddr, v6_len: u8) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits() & (u128::MAX << (128 - u32::from(v6_len))),
    }
}

/// Inverse of [`prefix_word`].
fn prefix_key(word: u128, v6_len: u8) -> ClientKey {
    ClientKey::prefix_of(IpAddr::V6(Ipv6Addr::from_bits(word)), v6_len)
}

#[inline]
fn key_of(kind: ClientKeyKind, facts: &RequestFacts<'_>, v6_len: u8) -> Option<ClientKey> {
    match kind {
        ClientKeyKind::IpPrefix => Some(ClientKey::prefix_of(facts.ip, v6_len)),
        ClientKeyKind::Ip => Some(ClientKey::Ip(facts.ip)),
        ClientKeyKind::ApiKey => facts.api_key.map(ClientKey::ApiKey),
        ClientKeyKind::AccessToken => facts.access_token.map(ClientKey::AccessToken),
        ClientKeyKind::UserAgent => facts.user_agent.map(ClientKey::UserAgent),
    }
}

#[inline]
fn count(c: &mut ClientCounts, facts: &RequestFacts<'_>, own: bool, sequential: bool) {
    c.requests = c.requests.saturating_add(1);
    if own {
        // The sidecar's own answer: counted as a denial and nothing else, so no rule can
        // find evidence in it (nor lose any: a denied request's user agent does not make
        // a client look more diverse).
        c.denied = c.denied.saturating_add(1);
        return;
    }
    c.sequential = c.sequential.saturating_add(u32::from(sequential));
    if let Some(token) = facts.access_token {
        c.tokens.insert(token.fingerprint().into());
    }
    if facts.responder.is_upstream() {
        c.bytes = c.bytes.saturating_add(facts.bytes);
        c.token_calls = c
            .token_calls
            .saturating_add(u32::from(facts.token_endpoint && facts.status < 400));
        c.errors = c.errors.saturating_add(u32::from(facts.status >= 400));
        c.forbidden = c.forbidden.saturating_add(u32::from(facts.status == 403));
    }
    if let Some(ua) = facts.user_agent {
        c.user_agents.insert(ua.fingerprint());
    }
}

#[cfg(test)]
#[path = "counter_tests.rs"]
mod tests;
