//! Client ids: a client key in 16 bytes, for the tables that hold one per client per slice.
//!
//! A [`ClientKey`] takes 33 bytes (a 32-byte digest and its kind), and the collector keeps
//! one per client in each of a namespace's ~100 slices. A [`ClientId`] takes 16. An IP
//! client's id is its address (IPv4 as IPv4-mapped IPv6), read back without help. Any other
//! client's id (API key, access token, user agent, prefix) is a keyed hash of its whole key
//! (two SipHash-1-3 words under keys drawn at random for each [`KeyTable`]), and its key is
//! held once per namespace in the table, not once per slice.
//!
//! Reports are written by sidecars, and a hostile one can name any digest, prefix or address.
//! Were ids a public function of the key, it could name a key whose id is another client's
//! address and take that client's counts (or have its reports left out); under a secret key
//! it cannot aim an id anywhere: two clients share an id with odds of 2^-128 per pair.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};

use crate::key::{ClientKey, KeyHash};
use crate::topk::FastHash;

/// A client key in 16 bytes (see the module docs). Two words rather than a `u128`, so a
/// table entry with it stays 8-byte aligned (a `u128` would pad `(id, counts)` to 80 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientId([u64; 2]);

impl std::hash::Hash for ClientId {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
        state.write_u64(self.0[1]);
    }
}

impl ClientId {
    fn from_word(w: u128) -> Self {
        Self([w as u64, (w >> 64) as u64])
    }

    fn word(self) -> u128 {
        u128::from(self.0[0]) | u128::from(self.0[1]) << 64
    }
}

/// Tells a prefix's word apart from an address's where both share a table (the sidecar's
/// sequence and attribute tables).
pub(crate) const PREFIX_TAG: u128 = 0x5a << 120;

/// The sidecar counter's word of a client key: the address, the tagged network and length,
/// or the kind and 126 bits of the digest. Anyone can compute it, which is fine for keys the
/// sidecar derives from requests itself, not for keys a report names: the collector's
/// windows use [`KeyTable::id_of`].
#[inline]
pub(crate) fn word_of(key: &ClientKey) -> u128 {
    let (tag, hash) = match key {
        ClientKey::Ip(ip) => return ip_word(*ip),
        ClientKey::IpPrefix(net) => {
            // A network of at most 120 bits has a zero low byte: the length goes there. A
            // longer IPv6 prefix (up to /128) keeps its own low bits.
            return ip_word(net.network()) ^ PREFIX_TAG ^ u128::from(net.prefix_len());
        }
        ClientKey::ApiKey(h) => (1u128, h),
        ClientKey::AccessToken(h) => (2, h),
        ClientKey::UserAgent(h) => (3, h),
    };
    hashed_word(tag, hash)
}

#[inline]
fn hashed_word(tag: u128, hash: &KeyHash) -> u128 {
    let mut prefix = [0u8; 16];
    prefix.copy_from_slice(&hash.0[..16]);
    (u128::from_le_bytes(prefix) >> 2) | (tag << 126)
}

/// An address as one word (IPv4 as IPv4-mapped IPv6).
#[inline]
pub(crate) fn ip_word(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// Inverse of [`ip_word`]; an IPv4-mapped IPv6 address reads as its IPv4 address.
pub(crate) fn ip_key(word: u128) -> ClientKey {
    ClientKey::Ip(Ipv6Addr::from_bits(word).to_canonical())
}

/// The keys of a namespace's clients whose id is not their address (every kind but IP),
/// once each (see the module docs). Keys no slice holds any more are swept out when the
/// table has grown to twice what was live at the last sweep, and by at least
/// [`KeyTable::SWEEP_SLACK`] and a sixteenth of the entries the slices hold: a sweep reads
/// every entry, so it costs at most 16 lookups per key added since the last one, however
/// many address clients the slices hold, and the table stays within twice the live keys
/// plus that slack.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    /// Each key, with the mark a sweep sets on the ones still in use.
    keys: HashMap<ClientId, (ClientKey, bool), FastHash>,
    /// The two keyed hashes of non-IP ids (std's SipHash-1-3, random keys per table).
    ids: [RandomState; 2],
    /// Size after the last sweep.
    live: usize,
    sweeps: u64,
}

impl KeyTable {
    /// Keys added after a sweep before the next one is considered.
    pub const SWEEP_SLACK: usize = 4096;

    /// The id of `key` in this table's namespace (see the module docs).
    #[inline]
    pub fn id_of(&self, key: &ClientKey) -> ClientId {
        let whole = match key {
            ClientKey::Ip(ip) => return ClientId::from_word(ip_word(*ip)),
            ClientKey::ApiKey(h) => (1u8, h.0, 0u8),
            ClientKey::AccessToken(h) => (2, h.0, 0),
            ClientKey::UserAgent(h) => (3, h.0, 0),
            ClientKey::IpPrefix(net) => {
                let mut bytes = [0u8; 32];
                bytes[..16].copy_from_slice(&ip_word(net.network()).to_le_bytes());
                (4, bytes, net.prefix_len())
            }
        };
        ClientId([self.ids[0].hash_one(whole), self.ids[1].hash_one(whole)])
    }

    /// The id of `key`, holding its key when it is not an address.
    #[inline]
    pub fn intern(&mut self, key: &ClientKey) -> ClientId {
        let id = self.id_of(key);
        if !matches!(key, ClientKey::Ip(_)) {
            self.keys.entry(id).or_insert((*key, false));
        }
        id
    }

    /// The key of `id` (an id the table does not hold is an address).
    #[inline]
    pub fn key(&self, id: ClientId) -> ClientKey {
        if self.keys.is_empty() {
            return ip_key(id.word());
        }
        match self.keys.get(&id) {
            Some((key, _)) => *key,
            None => ip_key(id.word()),
        }
    }

    /// Whether `id` is an IP client's.
    #[inline]
    pub fn is_ip(&self, id: ClientId) -> bool {
        self.keys.is_empty() || !self.keys.contains_key(&id)
    }

    /// Whether the table has grown enough since the last sweep to sweep it now; `held`
    /// counts the entries (ids) the slices hold, which a sweep reads (asked only when the
    /// table has grown past the other bounds).
    pub fn wants_sweep(&self, held: impl FnOnce() -> usize) -> bool {
        let grown = |slack: usize| self.keys.len() > (2 * self.live).max(self.live + slack);
        grown(Self::SWEEP_SLACK) && grown(held() / 16)
    }

    /// Sweeps done since creation.
    pub fn sweeps(&self) -> u64 {
        self.sweeps
    }

    /// Keeps the keys of the ids in `live` (the ids some slice still holds; addresses and
    /// repeats welcome), in place: no set of the live ids is built.
    pub fn sweep(&mut self, live: impl Iterator<Item = ClientId>) {
        for (_, mark) in self.keys.values_mut() {
            *mark = false;
        }
        for id in live {
            if let Some((_, mark)) = self.keys.get_mut(&id) {
                *mark = true;
            }
        }
        self.keys.retain(|_, (_, mark)| *mark);
        self.keys.shrink_to_fit();
        self.live = self.keys.len();
        self.sweeps += 1;
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held (every id is an address).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Heap bytes of the table.
    pub fn heap_bytes(&self) -> usize {
        crate::topk::table_bytes::<ClientId, (ClientKey, bool)>(self.keys.capacity())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::ClientKeyKind;

    fn keys() -> Vec<ClientKey> {
        vec![
            ClientKey::Ip("203.0.113.7".parse().unwrap()),
            ClientKey::Ip("2001:db8::7".parse().unwrap()),
            ClientKey::api_key("k-1"),
            ClientKey::access_token("k-1"),
            ClientKey::user_agent("k-1"),
            ClientKey::prefix_of("203.0.113.7".parse().unwrap(), 64),
            ClientKey::prefix_of("2001:db8:1:2::7".parse().unwrap(), 64),
            ClientKey::prefix_of("2001:db8:1:2::7".parse().unwrap(), 48),
            ClientKey::prefix_of("2001:db8:1:2::7".parse().unwrap(), 128),
        ]
    }

    #[test]
    fn every_kind_reads_back_as_its_key_and_only_addresses_skip_the_table() {
        let mut table = KeyTable::default();
        let ids: Vec<ClientId> = keys().iter().map(|k| table.intern(k)).collect();
        for (key, id) in keys().iter().zip(&ids) {
            assert_eq!(table.key(*id), *key);
            assert_eq!(table.is_ip(*id), key.kind() == ClientKeyKind::Ip, "{key}");
        }
        assert_eq!(
            table.len(),
            keys().len() - 2,
            "the two addresses are not held"
        );
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "no two keys share an id");
        for k in keys() {
            assert_eq!(
                table.intern(&k),
                table.id_of(&k),
                "interning again: the same id"
            );
        }
        assert_eq!(table.len(), keys().len() - 2);
    }

    /// A mapped address is its IPv4 address.
    #[test]
    fn a_mapped_address_is_its_ipv4_address() {
        let table = KeyTable::default();
        let v4 = ClientKey::Ip("198.51.100.1".parse().unwrap());
        let mapped = ClientKey::Ip("::ffff:198.51.100.1".parse().unwrap());
        assert_eq!(table.id_of(&mapped), table.id_of(&v4));
        assert_eq!(table.key(table.id_of(&mapped)), v4);
    }

    /// What a hostile sidecar can compute does not aim an id: neither the public counter
    /// word of a key, nor a digest sharing the first bytes of another's, gives the id of an
    /// address or of that other key; and two tables give the same key different ids.
    #[test]
    fn an_id_cannot_be_aimed_from_what_a_report_can_name() {
        let table = KeyTable::default();
        let victim = ClientKey::Ip("2001:db8::40".parse().unwrap());
        // The prefix whose public word is the victim's address (the attack on public ids).
        let aimed = ipnet::Ipv6Net::new(
            Ipv6Addr::from_bits(ip_word("2001:db8::40".parse().unwrap()) ^ PREFIX_TAG ^ 128),
            128,
        )
        .unwrap();
        let aimed = ClientKey::IpPrefix(ipnet::IpNet::V6(aimed));
        assert_eq!(word_of(&aimed), ip_word("2001:db8::40".parse().unwrap()));
        assert_ne!(table.id_of(&aimed), table.id_of(&victim));
        // A user agent whose digest is the victim's public word, and a digest equal to
        // another one's but in its last byte.
        let real = KeyHash::of(b"victim-key");
        let mut near = real;
        near.0[31] ^= 1;
        assert_ne!(
            table.id_of(&ClientKey::ApiKey(near)),
            table.id_of(&ClientKey::ApiKey(real))
        );
        assert_ne!(
            KeyTable::default().id_of(&ClientKey::ApiKey(real)),
            table.id_of(&ClientKey::ApiKey(real)),
            "each table has its own keys"
        );
    }

    #[test]
    fn a_sweep_keeps_live_keys_and_waits_for_growth() {
        let mut table = KeyTable::default();
        let ids: Vec<ClientId> = (0..KeyTable::SWEEP_SLACK + 1)
            .map(|i| table.intern(&ClientKey::api_key(&format!("k{i}"))))
            .collect();
        assert!(table.wants_sweep(|| 0));
        assert!(
            !table.wants_sweep(|| 16 * (KeyTable::SWEEP_SLACK + 1)),
            "not before a sixteenth of the slices' entries were added"
        );
        table.sweep(ids[..10].iter().copied().chain(ids[..3].iter().copied()));
        assert_eq!(table.len(), 10);
        assert!(!table.wants_sweep(|| 0));
        for id in &ids[..10] {
            assert_ne!(table.key(*id).kind(), ClientKeyKind::Ip);
        }
        // An id swept out reads as an address: it is in no slice any more.
        assert_eq!(table.key(ids[10]).kind(), ClientKeyKind::Ip);
    }
}
