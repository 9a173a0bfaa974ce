//! Who sent the request: client IP (socket, or `X-Forwarded-For` from a trusted proxy: see
//! [`crate::client_ip`]), API keys, access tokens and methods (read by [`crate::credentials`],
//! kept only as sha256), developer / developer app / API product (headers, read only from a
//! trusted proxy; or JWT claims, read only from a token whose signature verified: see
//! [`crate::jwt`]), user agent, and region / ASN from MaxMind-format databases. Secrets are
//! hashed here and never logged.

use std::net::IpAddr;
use std::path::Path;

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use maxminddb::{Reader, path};

use crate::config::IdentifyConfig;
use crate::credentials::{self, Credentials};

pub use crate::client_ip::IpSource;
use crate::client_ip::client_ip;
use crate::jwt::{ClaimsOutcome, Jwt};

/// Identity headers a client sent from a peer that is not a trusted proxy: ignored, counted
/// by kind (the `header` label of `identity_headers_ignored`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoredHeaders {
    /// The developer header was sent.
    pub developer: bool,
    /// The developer app header was sent.
    pub app: bool,
    /// The API product header was sent.
    pub product: bool,
}

impl IgnoredHeaders {
    /// Label values of the `header` label.
    pub const KINDS: [&'static str; 3] = ["developer", "app", "product"];

    /// The kinds that were ignored.
    pub fn kinds(self) -> impl Iterator<Item = &'static str> {
        [self.developer, self.app, self.product]
            .into_iter()
            .zip(Self::KINDS)
            .filter_map(|(ignored, kind)| ignored.then_some(kind))
    }
}

/// Everything known about the client of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Client IP.
    pub ip: IpAddr,
    /// Where `ip` came from.
    pub ip_source: IpSource,
    /// sha256 of the API key (the first of `credentials.api_keys`).
    pub api_key_hash: Option<[u8; 32]>,
    /// sha256 of the access token (the first of `credentials.tokens`).
    pub token_hash: Option<[u8; 32]>,
    /// Every API key, token and method the request can be read as.
    pub credentials: Credentials,
    /// Developer.
    pub developer: Option<String>,
    /// Developer app.
    pub app: Option<String>,
    /// API product.
    pub product: Option<String>,
    /// ISO 3166-1 alpha-2 country, upper case.
    pub region: Option<[u8; 2]>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Identity headers ignored because the peer is not a trusted proxy.
    pub ignored_headers: IgnoredHeaders,
    /// What became of the Bearer token's JWT claims.
    pub claims: ClaimsOutcome,
}

/// What the requests of one client connection repeat, worked out once per connection: the
/// hashes of its credentials and user agent ([`credentials::HashSlot`]) and the region and
/// ASN of its client address (the databases are loaded once, so an address's answer cannot
/// change while the process runs). Every request is still read in full; only the repeated
/// hashing and lookups are skipped.
#[derive(Debug, Default)]
pub struct Memo {
    /// API key and token hashes.
    pub credentials: credentials::Memo,
    /// `User-Agent` hash (for detection).
    pub user_agent: credentials::HashSlot,
    /// The last client address looked up, with its region and ASN.
    place: Option<(IpAddr, Option<[u8; 2]>, Option<u32>)>,
}

/// Identifies clients; built once from the configuration.
#[derive(Debug)]
pub struct Identifier {
    cfg: IdentifyConfig,
    /// The configured header names, parsed once (a `&str` lookup would parse and lowercase
    /// the name on every request).
    headers: Headers,
    geo: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
    credentials: credentials::Reader,
    jwt: Jwt,
}

/// The headers identities are read from; `None` where the flag is empty.
#[derive(Debug)]
struct Headers {
    api_key: Option<HeaderName>,
    developer: Option<HeaderName>,
    app: Option<HeaderName>,
    product: Option<HeaderName>,
}

/// A header flag's value as a header name: `None` when empty (the flag turns the header off).
pub fn header_name(flag: &str, value: &str) -> Result<Option<HeaderName>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    HeaderName::from_bytes(value.as_bytes())
        .map(Some)
        .map_err(|_| format!("{flag} {value:?} is not a valid HTTP header name"))
}

/// A database that could not be opened (the sidecar runs on without it).
#[derive(Debug, thiserror::Error)]
#[error("cannot open MaxMind database {path}: {source}; region/ASN conditions will not match")]
pub struct DbError {
    path: String,
    source: maxminddb::MaxMindDbError,
}

impl Identifier {
    /// Opens the databases; a missing or unreadable one is logged once and left out.
    /// Header names that do not parse (rejected by `Config::validate`) read nothing.
    pub fn new(cfg: IdentifyConfig) -> Self {
        let geo = open_db(cfg.geoip_db.as_deref(), "region");
        let asn = open_db(cfg.asn_db.as_deref(), "ASN");
        let cfg_jwt = cfg.jwt();
        let name = |v: &str| header_name("", v).ok().flatten();
        let headers = Headers {
            api_key: name(&cfg.api_key_header),
            developer: name(&cfg.developer_header),
            app: name(&cfg.app_header),
            product: name(&cfg.product_header),
        };
        let c = &cfg.credentials;
        let credentials = credentials::Reader {
            api_key_header: headers.api_key.clone(),
            api_key_query: cfg.api_key_query.clone(),
            token_query: c.access_token_query.clone(),
            override_headers: credentials::header_names("", &c.method_override_headers)
                .unwrap_or_default(),
            override_query: c.method_override_query.clone(),
            reject_conflicting: c.reject_conflicting_credentials,
        };
        Self {
            cfg,
            headers,
            geo,
            asn,
            credentials,
            jwt: Jwt::new(&cfg_jwt),
        }
    }

    /// The JWT claims reader (its JWKS is reloaded by [`crate::jwt::spawn_reload`]).
    pub fn jwt(&self) -> &Jwt {
        &self.jwt
    }

    /// Identifies the client of a request received from `peer`, trusting `--trusted-proxies`.
    pub fn identify(&self, parts: &Parts, peer: IpAddr) -> Identity {
        self.identify_with(parts, peer, None, &mut Memo::default())
    }

    /// Identifies the client of a request received from `peer`; `trusted` (the namespace's
    /// list, carried in the bundle in force) replaces `--trusted-proxies` when given; `memo`
    /// is the connection's (see [`Memo`]).
    pub fn identify_with(
        &self,
        parts: &Parts,
        peer: IpAddr,
        trusted: Option<&palisade_policy::TrustedProxies>,
        memo: &mut Memo,
    ) -> Identity {
        let trusted = trusted.unwrap_or(&self.cfg.trusted_proxies);
        let (ip, ip_source) = client_ip(&parts.headers, peer, trusted, self.cfg.trusted_hops);
        let trusted_peer = trusted.contains(peer);
        let h = &parts.headers;
        let names = &self.headers;
        let credentials = self.credentials.read_with(parts, &mut memo.credentials);
        // The token is looked up only when claims are read (not by default).
        let token = self
            .cfg
            .wants_claims()
            .then(|| credentials::bearer(h))
            .flatten();
        let (claims, claims_outcome) = match token {
            Some(t) => self.jwt.claims(t),
            None => (None, ClaimsOutcome::Unread),
        };
        let mut ignored = IgnoredHeaders::default();
        let [developer, app, product] = identity_headers(h, names);
        // A header is believed only from a trusted proxy; from anyone else it is counted and
        // the claim (or nothing) is used.
        let pick = |header: Option<&HeaderValue>, claim: &str, ignored: &mut bool| {
            let sent = header_str(header);
            *ignored = sent.is_some() && !trusted_peer;
            sent.filter(|_| trusted_peer)
                .map(str::to_owned)
                .or_else(|| claim_str(claims.as_ref(), claim))
        };
        let developer = pick(developer, &self.cfg.developer_claim, &mut ignored.developer);
        let app = pick(app, &self.cfg.app_claim, &mut ignored.app);
        let product = pick(product, &self.cfg.product_claim, &mut ignored.product);
        let (region, asn) = self.place(ip, memo);
        Identity {
            ip,
            ip_source,
            api_key_hash: credentials.api_keys.first().copied(),
            token_hash: credentials.tokens.first().copied(),
            credentials,
            developer,
            app,
            product,
            region,
            asn,
            ignored_headers: ignored,
            claims: claims_outcome,
        }
    }
}

impl Identifier {
    /// Region and ASN of `ip`, from `memo` when it is the connection's last address.
    fn place(&self, ip: IpAddr, memo: &mut Memo) -> (Option<[u8; 2]>, Option<u32>) {
        if let Some((kept, region, asn)) = memo.place
            && kept == ip
        {
            return (region, asn);
        }
        let region = self.geo.as_ref().and_then(|db| region(db, ip));
        let asn = self.asn.as_ref().and_then(|db| asn(db, ip));
        memo.place = Some((ip, region, asn));
        (region, asn)
    }
}

fn open_db(path: Option<&Path>, what: &str) -> Option<Reader<Vec<u8>>> {
    let Some(path) = path else {
        tracing::warn!(
            conditions = what,
            "no MaxMind database configured; these conditions never match"
        );
        return None;
    };
    match Reader::open_readfile(path) {
        Ok(r) => Some(r),
        Err(source) => {
            let e = DbError {
                path: path.display().to_string(),
                source,
            };
            tracing::warn!(error = %e, "database unavailable");
            None
        }
    }
}

/// The first value of the developer, app and product headers, found in one pass over the
/// request's few headers (cheaper than a hash lookup per configured name).
fn identity_headers<'a>(h: &'a HeaderMap, names: &Headers) -> [Option<&'a HeaderValue>; 3] {
    let wanted = [
        names.developer.as_ref(),
        names.app.as_ref(),
        names.product.as_ref(),
    ];
    let mut found = [None; 3];
    if wanted.iter().all(Option::is_none) {
        return found;
    }
    for (name, value) in h {
        for (slot, want) in found.iter_mut().zip(wanted) {
            if slot.is_none() && want == Some(name) {
                *slot = Some(value);
            }
        }
    }
    found
}

fn header_str(value: Option<&HeaderValue>) -> Option<&str> {
    value
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn claim_str(
    claims: Option<&serde_json::Map<String, serde_json::Value>>,
    name: &str,
) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    match claims?.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn region(db: &Reader<Vec<u8>>, ip: IpAddr) -> Option<[u8; 2]> {
    let found = db.lookup(ip).ok()?;
    // Borrowed from the database: no allocation per request.
    let code: &str = found.decode_path(&path!["country", "iso_code"]).ok()??;
    let code: [u8; 2] = code.as_bytes().try_into().ok()?;
    Some(code.map(|b| b.to_ascii_uppercase()))
}

fn asn(db: &Reader<Vec<u8>>, ip: IpAddr) -> Option<u32> {
    let found = db.lookup(ip).ok()?;
    found.decode_path(&path!["autonomous_system_number"]).ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_claims() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"dev-1","azp":"app-9"}"#);
        let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        let value = format!("Bearer {jwt}");
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().expect("value"));
        assert_eq!(credentials::bearer(&h), Some(jwt.as_str()));
        let jwt_reader = Jwt::new(&crate::jwt::JwtSettings {
            unverified: true,
            ..Default::default()
        });
        let (claims, outcome) = jwt_reader.claims(&jwt);
        assert_eq!(outcome, ClaimsOutcome::Unverified);
        assert_eq!(claim_str(claims.as_ref(), "sub").as_deref(), Some("dev-1"));
        assert_eq!(claim_str(claims.as_ref(), "missing"), None);
    }
}
