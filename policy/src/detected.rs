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

/// How a detected client is identified.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientKey {
    /// The client IP address.
    Ip(IpAddr),
    /// sha256 of the API key, lower-case hex.
    ApiKey(String),
    /// sha256 of the access token, lower-case hex.
    AccessToken(String),
}

/// Encodes the document; errors if it would not fit one ConfigMap.
pub fn encode_detected(doc: &DetectedClients) -> Result<Vec<u8>, BundleError> {
    let json = serde_json::to_vec(doc).map_err(BundleError::Json)?;
    let mut out = Vec::with_capacity(json.len() / 4 + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&DETECTED_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&json));
    let packed = deflate(&json).map_err(|e| BundleError::Inflate {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Api([u8; 32]),
    Token([u8; 32]),
}

/// The document indexed for lookups against one bundle's rule table
/// ([`Bundle::rules`](crate::Bundle::rules)); entries of other rules are dropped.
#[derive(Clone, Debug, Default)]
pub struct DetectedIndex {
    marks: HashMap<Key, Vec<(u8, i64)>>,
}

impl DetectedIndex {
    /// Indexes `doc` for the enabled rules `rules` (bit `i` of a mask = `rules[i]`).
    pub fn new(doc: &DetectedClients, rules: &[String]) -> Self {
        let mut marks: HashMap<Key, Vec<(u8, i64)>> = HashMap::new();
        for (name, clients) in &doc.rules {
            let Some(bit) = rules.iter().position(|r| r == name).filter(|&b| b < 64) else {
                continue;
            };
            for c in clients {
                let Some(key) = index_key(&c.key) else {
                    continue;
                };
                marks
                    .entry(key)
                    .or_default()
                    .push((bit as u8, c.expires.as_second()));
            }
        }
        Self { marks }
    }

    /// Whether nothing is marked.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// The mask of rules that marked this client and have not expired at `now_unix_s`.
    pub fn rules_for(
        &self,
        ip: IpAddr,
        api_key: Option<&[u8; 32]>,
        token: Option<&[u8; 32]>,
        now_unix_s: i64,
    ) -> u64 {
        let keys = [
            Some(Key::Ip(ip)),
            api_key.map(|k| Key::Api(*k)),
            token.map(|k| Key::Token(*k)),
        ];
        let mut mask = 0u64;
        for key in keys.into_iter().flatten() {
            for &(bit, expires) in self.marks.get(&key).map_or(&[][..], Vec::as_slice) {
                if now_unix_s < expires {
                    mask |= 1 << bit;
                }
            }
        }
        mask
    }
}

fn index_key(k: &ClientKey) -> Option<Key> {
    let hash = |h: &str| {
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out).ok().map(|()| out)
    };
    match k {
        ClientKey::Ip(ip) => Some(Key::Ip(canonical_ip(*ip))),
        ClientKey::ApiKey(h) => hash(h).map(Key::Api),
        ClientKey::AccessToken(h) => hash(h).map(Key::Token),
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
                    key: ClientKey::ApiKey("ab".repeat(32)),
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
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let bytes = encode_detected(&doc()).unwrap();
        assert_eq!(decode_detected(&bytes).unwrap(), doc());
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
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(idx.rules_for(ip, None, None, 99), 0b10);
        assert_eq!(
            idx.rules_for(ip, None, None, 100),
            0,
            "expired at the exact second"
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(idx.rules_for(canonical_ip(mapped), None, None, 0), 0b10);
        let key = [0xab; 32];
        assert_eq!(
            idx.rules_for("10.9.9.9".parse().unwrap(), Some(&key), None, 150),
            0b10
        );
        assert_eq!(
            idx.rules_for("10.9.9.9".parse().unwrap(), None, Some(&key), 150),
            0
        );
    }
}
