//! The detected-client document: which clients each detection rule has marked, until when.
//! It changes often, so it travels on its own (one small ConfigMap), never inside the bundle.
//!
//! Wire form: `"PLSC"`, [`DETECTED_FORMAT_VERSION`] (u32 LE), sha256 of the JSON (32 bytes),
//! then the zlib-compressed JSON. The sidecar turns it into a [`DetectedIndex`] against the
//! rule table of the bundle it enforces.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

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

/// A kind of client key: what a DetectionRule's `clientKey` names, and what the sidecars
/// count for detection (see [`Bundle::count_keys`](crate::Bundle::count_keys)).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum KeyKind {
    /// The client IP address.
    #[default]
    Ip,
    /// The API key.
    ApiKey,
    /// The OAuth access token.
    AccessToken,
    /// The `User-Agent` header.
    UserAgent,
}

impl ClientKey {
    /// The kind of this key.
    pub fn kind(&self) -> KeyKind {
        match self {
            Self::Ip(_) => KeyKind::Ip,
            Self::ApiKey(_) => KeyKind::ApiKey,
            Self::AccessToken(_) => KeyKind::AccessToken,
            Self::UserAgent(_) => KeyKind::UserAgent,
        }
    }
}

/// How a detected client is identified. Serialised as text, the same form as the detection
/// crate's keys: `ip:203.0.113.7`, `apiKey:sha256:<hex>`, `token:sha256:<hex>`,
/// `ua:sha256:<hex>` (secrets and user agents are only ever held as sha256 digests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKey {
    /// The client IP address.
    Ip(IpAddr),
    /// sha256 of the API key.
    ApiKey([u8; 32]),
    /// sha256 of the access token.
    AccessToken([u8; 32]),
    /// sha256 of the `User-Agent` header.
    UserAgent([u8; 32]),
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, hash) = match self {
            Self::Ip(ip) => return write!(f, "ip:{ip}"),
            Self::ApiKey(h) => ("apiKey", h),
            Self::AccessToken(h) => ("token", h),
            Self::UserAgent(h) => ("ua", h),
        };
        write!(f, "{prefix}:sha256:{}", hex::encode(hash))
    }
}

impl FromStr for ClientKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a client key (ip:…, apiKey:sha256:…, token:…, ua:…)");
        let (prefix, rest) = s.split_once(':').ok_or_else(bad)?;
        if prefix == "ip" {
            return rest
                .parse()
                .map(|ip| Self::Ip(canonical_ip(ip)))
                .map_err(|_| bad());
        }
        let mut h = [0u8; 32];
        let hex_part = rest.strip_prefix("sha256:").ok_or_else(bad)?;
        hex::decode_to_slice(hex_part, &mut h).map_err(|_| bad())?;
        match prefix {
            "apiKey" => Ok(Self::ApiKey(h)),
            "token" => Ok(Self::AccessToken(h)),
            "ua" => Ok(Self::UserAgent(h)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for ClientKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClientKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
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
        Self {
            marks,
            has_user_agents,
        }
    }

    /// Whether some entry is keyed by user agent (only then is the request's UA hashed).
    pub fn has_user_agents(&self) -> bool {
        self.has_user_agents
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
                    key: ClientKey::ApiKey([0xab; 32]),
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
        let key = Some(ClientKey::ApiKey([0xab; 32]));
        assert_eq!(idx.rules_for(&[ip("10.9.9.9"), key], 150), 0b10);
        let token = Some(ClientKey::AccessToken([0xab; 32]));
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
