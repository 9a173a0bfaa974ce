//! The detected-client document: which clients each detection rule has marked, until when.
//! It changes often, so it travels on its own (one small ConfigMap), never inside the bundle.
//!
//! Wire form: `"PLSC"`, [`DETECTED_FORMAT_VERSION`] (u32 LE), sha256 of the JSON (32 bytes),
//! then the zlib-compressed JSON. The sidecar turns it into a [`DetectedIndex`] against the
//! rule table of the bundle it enforces.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::SHARD_MAX_BYTES;
use crate::error::BundleError;
pub use crate::key::ClientKey;
use crate::wire::{Reader, deflate, inflate};

/// The detected-client document format version.
pub const DETECTED_FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 4] = b"PLSC";
/// Uncompressed JSON beyond this is refused.
const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;

/// Clients marked by detection rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectedClients {
    /// A number that grows with every change (for status and logs).
    pub generation: u64,
    /// Rule name → the clients it marked.
    pub rules: BTreeMap<String, Vec<DetectedClient>>,
    /// The collector endpoint (`host:port`) of the operator replica that owns this
    /// namespace's collector shard and wrote this document: sidecars send their reports
    /// straight there, and through the collector Service when it does not answer. Absent in
    /// documents of older operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<String>,
}

/// One marked client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectedClient {
    /// Who.
    pub key: ClientKey,
    /// The mark no longer counts at and after this instant.
    pub expires: Timestamp,
}

/// Encodes the document; errors if it would not fit one ConfigMap.
pub fn encode_detected(doc: &DetectedClients) -> Result<Vec<u8>, BundleError> {
    let json = serde_json::to_vec(doc).map_err(BundleError::Json)?;
    let mut out = Vec::with_capacity(json.len() / 4 + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&DETECTED_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&json));
    let packed = deflate(&json, 6).map_err(|e| BundleError::Inflate {
        name: "detected".into(),
        source: e,
    })?;
    out.extend_from_slice(&packed);
    if out.len() > SHARD_MAX_BYTES {
        return Err(BundleError::TooLarge {
            shards: out.len().div_ceil(SHARD_MAX_BYTES),
        });
    }
    Ok(out)
}

/// Decodes and validates the document (size, version, hash, JSON).
pub fn decode_detected(bytes: &[u8]) -> Result<DetectedClients, BundleError> {
    let malformed = |what: &str| BundleError::Malformed {
        what: format!("detected clients: {what}"),
    };
    if bytes.len() > SHARD_MAX_BYTES {
        return Err(BundleError::TooLarge {
            shards: bytes.len().div_ceil(SHARD_MAX_BYTES),
        });
    }
    let mut r = Reader::new(bytes);
    if r.bytes(4) != Some(MAGIC.as_slice()) {
        return Err(malformed("magic"));
    }
    let found = r.u32_le().ok_or_else(|| malformed("header"))?;
    if found != DETECTED_FORMAT_VERSION {
        return Err(BundleError::UnsupportedVersion {
            found,
            supported: DETECTED_FORMAT_VERSION,
        });
    }
    let hash = r.bytes(32).ok_or_else(|| malformed("header"))?;
    let json = inflate(r.rest(), MAX_JSON_BYTES).map_err(|e| BundleError::Inflate {
        name: "detected".into(),
        source: e,
    })?;
    if Sha256::digest(&json).as_slice() != hash {
        return Err(BundleError::BundleHash);
    }
    serde_json::from_slice(&json).map_err(BundleError::Json)
}

/// The document indexed for lookups against one bundle's rule table
/// ([`Bundle::rules`](crate::Bundle::rules)); entries of other rules are dropped.
#[derive(Clone, Debug, Default)]
pub struct DetectedIndex {
    marks: HashMap<ClientKey, Vec<(u8, i64)>>,
    has_user_agents: bool,
    /// The IPv6 prefix lengths marked, each once (a namespace uses one; a change of its
    /// length leaves marks of the old one until they expire).
    v6_prefix_lens: Vec<u8>,
    has_v4_prefixes: bool,
}

impl DetectedIndex {
    /// Indexes `doc` for the enabled rules `rules` (bit `i` of a mask = `rules[i]`).
    pub fn new(doc: &DetectedClients, rules: &[String]) -> Self {
        let mut marks: HashMap<ClientKey, Vec<(u8, i64)>> = HashMap::new();
        for (name, clients) in &doc.rules {
            let Some(bit) = rules.iter().position(|r| r == name).filter(|&b| b < 64) else {
                continue;
            };
            for c in clients {
                let key = match c.key {
                    ClientKey::Ip(ip) => ClientKey::Ip(canonical_ip(ip)),
                    other => other,
                };
                marks
                    .entry(key)
                    .or_default()
                    .push((bit as u8, c.expires.as_second()));
            }
        }
        let has_user_agents = marks.keys().any(|k| matches!(k, ClientKey::UserAgent(_)));
        let mut v6_prefix_lens: Vec<u8> = marks
            .keys()
            .filter_map(|k| match k {
                ClientKey::IpPrefix(ipnet::IpNet::V6(net)) => Some(net.prefix_len()),
                _ => None,
            })
            .collect();
        v6_prefix_lens.sort_unstable();
        v6_prefix_lens.dedup();
        let has_v4_prefixes = marks
            .keys()
            .any(|k| matches!(k, ClientKey::IpPrefix(ipnet::IpNet::V4(_))));
        Self {
            marks,
            has_user_agents,
            v6_prefix_lens,
            has_v4_prefixes,
        }
    }

    /// Whether some entry is keyed by user agent (only then is the request's UA hashed).
    pub fn has_user_agents(&self) -> bool {
        self.has_user_agents
    }

    /// The mask of rules that marked the network of `ip` (an IPv6 prefix of a marked
    /// length, or the IPv4 address as a /32) and have not expired at `now_unix_s`.
    pub fn prefix_rules_for(&self, ip: IpAddr, now_unix_s: i64) -> u64 {
        let ip = canonical_ip(ip);
        let mut mask = 0;
        match ip {
            IpAddr::V4(_) if self.has_v4_prefixes => {
                mask |= self.rules_for(&[Some(ClientKey::prefix_of(ip, 128))], now_unix_s);
            }
            IpAddr::V6(_) => {
                for &len in &self.v6_prefix_lens {
                    mask |= self.rules_for(&[Some(ClientKey::prefix_of(ip, len))], now_unix_s);
                }
            }
            IpAddr::V4(_) => {}
        }
        mask
    }

    /// Whether nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// The mask of rules that marked any of these keys and have not expired at
    /// `now_unix_s` (bit `i` = `rules[i]` of [`DetectedIndex::new`]).
    pub fn rules_for(&self, keys: &[Option<ClientKey>], now_unix_s: i64) -> u64 {
        let mut mask = 0u64;
        for key in keys.iter().flatten() {
            for &(bit, expires) in self.marks.get(key).map_or(&[][..], Vec::as_slice) {
                if now_unix_s < expires {
                    mask |= 1 << bit;
                }
            }
        }
        mask
    }
}

/// IPv4-mapped IPv6 addresses are the same client as their IPv4 address.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn doc() -> DetectedClients {
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        let mut rules = BTreeMap::new();
        rules.insert(
            "flooder".to_string(),
            vec![
                DetectedClient {
                    key: ClientKey::Ip("10.0.0.1".parse().unwrap()),
                    expires: at(100),
                },
                DetectedClient {
                    key: ClientKey::ApiKey(crate::KeyHash([0xab; 32])),
                    expires: at(200),
                },
            ],
        );
        rules.insert(
            "paused-rule".to_string(),
            vec![DetectedClient {
                key: ClientKey::Ip("10.0.0.1".parse().unwrap()),
                expires: at(500),
            }],
        );
        DetectedClients {
            generation: 7,
            rules,
            collector: None,
        }
    }

    /// A marked IPv6 /64 catches every address inside it (privacy addresses rotate there)
    /// and no address outside; a marked IPv4 prefix is its one address.
    #[test]
    fn a_marked_prefix_catches_every_address_of_its_network() {
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        let mark = |ip: &str, len| DetectedClient {
            key: ClientKey::prefix_of(ip.parse().unwrap(), len),
            expires: at(100),
        };
        let mut rules = BTreeMap::new();
        rules.insert(
            "flooder".to_string(),
            vec![mark("2001:db8:1:2::1", 64), mark("198.51.100.9", 64)],
        );
        let d = DetectedIndex::new(
            &DetectedClients {
                generation: 1,
                rules,
                collector: None,
            },
            &["flooder".into()],
        );
        let hit = |ip: &str, now| d.prefix_rules_for(ip.parse().unwrap(), now);
        assert_eq!(hit("2001:db8:1:2:dead:beef:0:1", 50), 1);
        assert_eq!(hit("2001:db8:1:2::ffff", 50), 1);
        assert_eq!(hit("2001:db8:1:3::1", 50), 0, "the next /64");
        assert_eq!(hit("198.51.100.9", 50), 1);
        assert_eq!(hit("::ffff:198.51.100.9", 50), 1);
        assert_eq!(hit("198.51.100.10", 50), 0);
        assert_eq!(hit("2001:db8:1:2::1", 100), 0, "expired");
        // The address itself is not marked as an IP client.
        let ip = ClientKey::Ip("2001:db8:1:2::1".parse().unwrap());
        assert_eq!(d.rules_for(&[Some(ip)], 50), 0);
    }

    #[test]
    fn round_trip_and_corruption() {
        let bytes = encode_detected(&doc()).unwrap();
        assert_eq!(decode_detected(&bytes).unwrap(), doc());
        // The owner's endpoint travels; a document without one (an older operator's) reads
        // as none.
        let owned = DetectedClients {
            collector: Some("10.0.3.7:9444".into()),
            ..doc()
        };
        assert_eq!(
            decode_detected(&encode_detected(&owned).unwrap()).unwrap(),
            owned
        );
        let json = serde_json::to_string(&doc()).unwrap();
        assert!(!json.contains("collector"), "{json}");
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert_eq!(
            decode_detected(&bad).unwrap_err().reason(),
            "UnsupportedVersion"
        );
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert_eq!(
            decode_detected(&bad).unwrap_err().reason(),
            "BundleHashMismatch"
        );
        let mut bad = bytes;
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(decode_detected(&bad).is_err());
    }

    #[test]
    fn index_respects_rule_table_and_expiry() {
        let rules = vec!["other".to_string(), "flooder".to_string()];
        let idx = DetectedIndex::new(&doc(), &rules);
        let ip = |s: &str| Some(ClientKey::Ip(s.parse().unwrap()));
        assert_eq!(idx.rules_for(&[ip("10.0.0.1")], 99), 0b10);
        assert_eq!(
            idx.rules_for(&[ip("10.0.0.1")], 100),
            0,
            "expired at the exact second"
        );
        assert_eq!(
            idx.rules_for(
                &[ip(
                    &canonical_ip("::ffff:10.0.0.1".parse().unwrap()).to_string()
                )],
                0
            ),
            0b10
        );
        let key = Some(ClientKey::ApiKey(crate::KeyHash([0xab; 32])));
        assert_eq!(idx.rules_for(&[ip("10.9.9.9"), key], 150), 0b10);
        let token = Some(ClientKey::AccessToken(crate::KeyHash([0xab; 32])));
        assert_eq!(idx.rules_for(&[ip("10.9.9.9"), token], 150), 0);
        assert!(!idx.has_user_agents());
    }

    #[test]
    fn client_keys_use_the_detection_text_form() {
        let h = "ab".repeat(32);
        for text in [
            "ip:203.0.113.7".to_string(),
            "ip:2001:db8::1".to_string(),
            format!("apiKey:sha256:{h}"),
            format!("token:sha256:{h}"),
            format!("ua:sha256:{h}"),
        ] {
            let key: ClientKey = text.parse().unwrap();
            assert_eq!(key.to_string(), text);
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(serde_json::from_str::<ClientKey>(&json).unwrap(), key);
        }
        assert!("apiKey:abc".parse::<ClientKey>().is_err());
        assert!("host:x".parse::<ClientKey>().is_err());
    }
}
