//! Client keys: who sent a request, as the detection rules judge it and as `detectedBy`
//! conditions match it. One type for the sidecar's counter, the collector's rules and the
//! published detected-client document (the detection crate re-exports this module).
//!
//! Secrets (API keys, access tokens) are only ever held as SHA-256 digests, the same
//! `sha256:<hex>` form the policy bundle uses, so a detected client can be matched without
//! storing the secret. User agents are hashed too: that bounds the size of every key to
//! 33 bytes and keeps free text out of reports.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Which kind of key identifies a client for a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientKeyKind {
    /// The client IP address (as resolved by the sidecar).
    Ip,
    /// The API key (consumer key), hashed.
    ApiKey,
    /// The OAuth access token, hashed.
    AccessToken,
    /// The `User-Agent` header, hashed.
    UserAgent,
    /// The network of the client IP: its IPv6 /64 (or the namespace's
    /// `palisade.dev/ipv6-prefix-length`), an IPv4 address alone (/32). A client that rotates
    /// its addresses inside its prefix (IPv6 privacy addresses) stays one client.
    IpPrefix,
}

impl ClientKeyKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ClientKeyKind; 5] = [
        Self::Ip,
        Self::ApiKey,
        Self::AccessToken,
        Self::UserAgent,
        Self::IpPrefix,
    ];

    /// The prefix of this kind in a key's text form (`ip:`, `apiKey:`, …).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::ApiKey => "apiKey",
            Self::AccessToken => "token",
            Self::UserAgent => "ua",
            Self::IpPrefix => "prefix",
        }
    }
}

/// The IPv6 prefix length clients are grouped by unless the namespace says otherwise.
pub const DEFAULT_IPV6_PREFIX_LEN: u8 = 64;
/// The shortest IPv6 prefix a namespace may group clients by (a /32 is a whole provider).
pub const MIN_IPV6_PREFIX_LEN: u8 = 32;

/// A SHA-256 digest of a secret or of free text; printed as `sha256:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes `value` with SHA-256. Call it once per request, outside the counter.
    pub fn of(value: &[u8]) -> Self {
        Self(Sha256::digest(value).into())
    }

    /// A short, non-cryptographic fingerprint (first 4 bytes), for distinct counting.
    pub fn fingerprint(&self) -> u32 {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl FromStr for KeyHash {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let hex_part = s.strip_prefix("sha256:").ok_or_else(|| KeyError::bad(s))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| KeyError::bad(s))?;
        Ok(Self(out))
    }
}

/// A client as a rule sees it. Text form: `ip:203.0.113.7`, `apiKey:sha256:…`,
/// `token:sha256:…`, `ua:sha256:…` (this is also its serde form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientKey {
    /// A client IP address.
    Ip(IpAddr),
    /// A hashed API key.
    ApiKey(KeyHash),
    /// A hashed access token.
    AccessToken(KeyHash),
    /// A hashed user agent.
    UserAgent(KeyHash),
    /// A client network: an IPv6 prefix (host bits zero) or an IPv4 address as a /32.
    IpPrefix(ipnet::IpNet),
}

impl ClientKey {
    /// The key of an API key given in clear (hashed here; the secret is not kept).
    pub fn api_key(secret: &str) -> Self {
        Self::ApiKey(KeyHash::of(secret.as_bytes()))
    }

    /// The key of an access token given in clear (hashed here; the token is not kept).
    pub fn access_token(secret: &str) -> Self {
        Self::AccessToken(KeyHash::of(secret.as_bytes()))
    }

    /// The key of a user agent (hashed, so keys stay small and reports carry no free text).
    pub fn user_agent(ua: &str) -> Self {
        Self::UserAgent(KeyHash::of(ua.as_bytes()))
    }

    /// The prefix key of `ip`: its IPv6 network of `v6_len` bits (clamped to
    /// [`MIN_IPV6_PREFIX_LEN`]..=128), or the IPv4 address as a /32 (an IPv4-mapped IPv6
    /// address counts as its IPv4 address).
    pub fn prefix_of(ip: IpAddr, v6_len: u8) -> Self {
        use ipnet::{IpNet, Ipv4Net, Ipv6Net};
        let net = match ip.to_canonical() {
            IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new_assert(v4, 32)),
            IpAddr::V6(v6) => {
                let len = v6_len.clamp(MIN_IPV6_PREFIX_LEN, 128);
                IpNet::V6(Ipv6Net::new_assert(v6, len).trunc())
            }
        };
        Self::IpPrefix(net)
    }

    /// The kind of this key.
    pub fn kind(&self) -> ClientKeyKind {
        match self {
            Self::Ip(_) => ClientKeyKind::Ip,
            Self::ApiKey(_) => ClientKeyKind::ApiKey,
            Self::AccessToken(_) => ClientKeyKind::AccessToken,
            Self::UserAgent(_) => ClientKeyKind::UserAgent,
            Self::IpPrefix(_) => ClientKeyKind::IpPrefix,
        }
    }

    /// The IP address, for IP keys.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip) => Some(*ip),
            _ => None,
        }
    }
}

/// Hashes one machine word per key (the hot path hashes a key per request): the tag and
/// the IPv4 address, or the tag and 8 bytes of the digest (already uniformly random).
/// Equal keys hash equally; the map's seeded hasher does the mixing.
impl Hash for ClientKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Self::Ip(IpAddr::V4(v4)) => state.write_u64(u64::from(v4.to_bits())),
            Self::Ip(IpAddr::V6(v6)) => state.write_u128(v6.to_bits()),
            Self::ApiKey(h) => state.write_u64(word(h) ^ 1 << 62),
            Self::AccessToken(h) => state.write_u64(word(h) ^ 2 << 62),
            Self::UserAgent(h) => state.write_u64(word(h) ^ 3 << 62),
            Self::IpPrefix(net) => {
                let bits = match net.network() {
                    IpAddr::V4(v4) => u128::from(v4.to_bits()),
                    IpAddr::V6(v6) => v6.to_bits(),
                };
                state.write_u128(bits ^ u128::from(net.prefix_len()) << 120 ^ 1 << 127);
            }
        }
    }
}

#[inline]
fn word(h: &KeyHash) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&h.0[..8]);
    u64::from_le_bytes(w)
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.kind().prefix();
        match self {
            Self::Ip(ip) => write!(f, "{prefix}:{ip}"),
            Self::ApiKey(h) | Self::AccessToken(h) | Self::UserAgent(h) => {
                write!(f, "{prefix}:{h}")
            }
            Self::IpPrefix(net) => write!(f, "{prefix}:{net}"),
        }
    }
}

impl FromStr for ClientKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (prefix, rest) = s.split_once(':').ok_or_else(|| KeyError::bad(s))?;
        match prefix {
            "ip" => rest
                .parse::<IpAddr>()
                .map(|ip| Self::Ip(ip.to_canonical()))
                .map_err(|_| KeyError::bad(s)),
            "apiKey" => rest.parse().map(Self::ApiKey),
            "token" => rest.parse().map(Self::AccessToken),
            "ua" => rest.parse().map(Self::UserAgent),
            "prefix" => match rest.parse::<ipnet::IpNet>() {
                // Only canonical prefixes: the host bits are zero, an IPv4 client is a /32,
                // an IPv6 prefix is at least MIN_IPV6_PREFIX_LEN long.
                Ok(net @ ipnet::IpNet::V4(v4)) if v4.prefix_len() == 32 => Ok(Self::IpPrefix(net)),
                Ok(net @ ipnet::IpNet::V6(v6))
                    if v6.prefix_len() >= MIN_IPV6_PREFIX_LEN && v6.trunc() == v6 =>
                {
                    Ok(Self::IpPrefix(net))
                }
                _ => Err(KeyError::bad(s)),
            },
            _ => Err(KeyError::bad(s)),
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
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A client key's text form could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid client key {text:?}; expected ip:<address>, apiKey:sha256:<hex>, \
     token:sha256:<hex>, ua:sha256:<hex> or prefix:<network>/<length>"
)]
pub struct KeyError {
    /// The text that was rejected (cut to 80 characters).
    pub text: String,
}

impl KeyError {
    fn bad(text: &str) -> Self {
        Self {
            text: text.chars().take(80).collect(),
        }
    }

    /// Short fixed name of the error, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        "InvalidClientKey"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for key in [
            ClientKey::Ip("203.0.113.7".parse().unwrap()),
            ClientKey::Ip("2001:db8::1".parse().unwrap()),
            ClientKey::api_key("k-123"),
            ClientKey::access_token("tok"),
            ClientKey::user_agent("curl/8"),
            ClientKey::prefix_of("2001:db8:1:2:aa:bb:cc:dd".parse().unwrap(), 64),
            ClientKey::prefix_of("203.0.113.7".parse().unwrap(), 64),
        ] {
            let text = key.to_string();
            assert_eq!(text.parse::<ClientKey>().unwrap(), key, "{text}");
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(serde_json::from_str::<ClientKey>(&json).unwrap(), key);
        }
    }

    #[test]
    fn secrets_are_never_in_clear() {
        let key = ClientKey::api_key("super-secret-key");
        let text = key.to_string();
        assert!(!text.contains("super-secret-key"));
        // Same form as the policy bundle: sha256 of the key, lowercase hex.
        assert_eq!(
            text,
            format!(
                "apiKey:sha256:{}",
                hex::encode(Sha256::digest(b"super-secret-key"))
            )
        );
    }

    #[test]
    fn bad_text_is_rejected_with_a_hint() {
        let err = "apiKey:plain".parse::<ClientKey>().unwrap_err();
        assert!(err.to_string().contains("apiKey:sha256:<hex>"));
        assert!("nope".parse::<ClientKey>().is_err());
        assert!("ip:999.1.1.1".parse::<ClientKey>().is_err());
    }

    /// Every address of a /64 is one prefix client; the next /64, an IPv4 client and a
    /// non-canonical text are not.
    #[test]
    fn a_prefix_groups_the_addresses_of_one_network() {
        let p = |ip: &str, len| ClientKey::prefix_of(ip.parse().unwrap(), len);
        let home = p("2001:db8:1:2::1", 64);
        assert_eq!(home.to_string(), "prefix:2001:db8:1:2::/64");
        assert_eq!(p("2001:db8:1:2:ffff:1:2:3", 64), home);
        assert_ne!(p("2001:db8:1:3::1", 64), home);
        assert_eq!(p("2001:db8:1:3::1", 56), p("2001:db8:1:2::9", 56));
        assert_eq!(
            p("2001:db8::1", 8),
            p("2001:db8::1", MIN_IPV6_PREFIX_LEN),
            "clamped"
        );
        assert_eq!(p("203.0.113.7", 64).to_string(), "prefix:203.0.113.7/32");
        assert_eq!(p("::ffff:203.0.113.7", 64), p("203.0.113.7", 64));
        assert_eq!(home.kind(), ClientKeyKind::IpPrefix);
        for bad in [
            "prefix:2001:db8:1:2::1/64",
            "prefix:2001:db8::/16",
            "prefix:203.0.113.0/24",
            "prefix:nope",
        ] {
            assert!(bad.parse::<ClientKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_small() {
        assert!(size_of::<ClientKey>() <= 34);
    }
}
