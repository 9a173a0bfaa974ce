//! JWT claims of the Bearer token, believed only when the token's signature verifies against a
//! key of the configured JWKS (`--jwks-path`, a file mounted from a Secret or ConfigMap and
//! re-read when it changes). Allowed algorithms are explicit and asymmetric only (no `none`,
//! no HMAC: a public key can never be used as an HMAC secret); `exp` is required, `nbf`
//! honoured, `iss` / `aud` checked when configured. Keys embedded in the token (`jwk`, `jku`,
//! `x5u` headers) are never used. `--jwt-unverified` keeps reading claims without a signature
//! (the gateway in front verified it); it is explicit, warned about at start, and named in
//! metrics and the decision log.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The claims of a token.
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// Algorithms `--jwt-algorithms` accepts: the asymmetric ones.
pub const ASYMMETRIC: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// How JWT claims are read (the `mode` label of `jwt_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Claims are never read (no JWKS, no `--jwt-unverified`).
    Off,
    /// Only from a token whose signature verified.
    Verified,
    /// From any token, without verification (`--jwt-unverified`).
    Unverified,
}

impl Mode {
    /// Every value, in label order.
    pub const ALL: [Self; 3] = [Self::Off, Self::Verified, Self::Unverified];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Verified => "verified",
            Self::Unverified => "unverified",
        }
    }
}

/// Why a token's claims were not believed (the `outcome` label of `jwt_claims`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not a JWT (three base64url parts with JSON), or an unknown `alg` such as `none`.
    Malformed,
    /// `alg` not in `--jwt-algorithms`.
    Algorithm,
    /// No key of the JWKS has the token's `kid` and algorithm (or, without `kid`, more than one
    /// could).
    UnknownKey,
    /// No JWKS loaded.
    NoKeys,
    /// The signature does not verify.
    Signature,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iss` is not `--jwt-issuer`.
    Issuer,
    /// `aud` does not name `--jwt-audience` (or names an audience when none is configured).
    Audience,
    /// A required claim (`exp`; `iss`, `aud` when configured) is missing or not valid.
    Claims,
}

impl Reject {
    /// Every value, in label order.
    pub const ALL: [Self; 10] = [
        Self::Malformed,
        Self::Algorithm,
        Self::UnknownKey,
        Self::NoKeys,
        Self::Signature,
        Self::Expired,
        Self::NotYetValid,
        Self::Issuer,
        Self::Audience,
        Self::Claims,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::NoKeys => "no_keys",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Claims => "claims",
        }
    }
}

/// What became of the Bearer token's claims for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimsOutcome {
    /// Not read: no claim configured, no Bearer token, or mode off.
    #[default]
    Unread,
    /// Read from a verified token.
    Verified,
    /// Read without verification (`--jwt-unverified`).
    Unverified,
    /// Not believed.
    Rejected(Reject),
}

impl ClaimsOutcome {
    /// Label value (`None` for [`ClaimsOutcome::Unread`]).
    pub fn label(self) -> Option<&'static str> {
        match self {
            Self::Unread => None,
            Self::Verified => Some("verified"),
            Self::Unverified => Some("unverified"),
            Self::Rejected(r) => Some(r.as_str()),
        }
    }
}

/// The JWT settings (`IdentifyConfig`'s JWT flags), validated.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// JWKS file.
    pub jwks_path: Option<PathBuf>,
    /// Allowed algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss` (empty: not checked).
    pub issuer: String,
    /// Required `aud` (empty: not checked).
    pub audience: String,
    /// `--jwt-unverified`.
    pub unverified: bool,
}

/// Parses `--jwt-algorithms`: a comma-separated list of [`ASYMMETRIC`] names.
pub fn parse_algorithms(s: &str) -> Result<Vec<Algorithm>, String> {
    let names: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Err("is empty; list at least one of RS256, ES256, EdDSA…".into());
    }
    names
        .into_iter()
        .map(|n| match n {
            n if ASYMMETRIC.contains(&n) => Algorithm::from_str(n).map_err(|e| e.to_string()),
            "none" => Err("`none` accepts unsigned tokens and is never allowed".into()),
            n if n.starts_with("HS") => Err(format!(
                "{n} is an HMAC (shared-secret) algorithm and is not supported: a JWKS holds \
                 public keys; use RS*, PS*, ES* or EdDSA"
            )),
            n => Err(format!(
                "unknown algorithm {n:?}; use one of {}",
                ASYMMETRIC.join(", ")
            )),
        })
        .collect()
}

/// One usable key of the JWKS.
struct Key {
    kid: Option<String>,
    /// The algorithms this key verifies (its `alg`, or every one of its type and curve).
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Why a JWKS was not loaded (the last good one stays).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file cannot be read.
    #[error("cannot read JWKS {path}: {source}; mount the Secret or ConfigMap there")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a JSON object with a `keys` array.
    #[error("JWKS {path} is not a JSON Web Key Set (an object with a `keys` array): {detail}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// No key in the set can verify an allowed algorithm.
    #[error(
        "JWKS {path} has no signing key for the allowed algorithms ({skipped} skipped); add an \
         RSA, EC or OKP public key with `use` sig"
    )]
    NoUsableKey {
        /// The file.
        path: String,
        /// Keys skipped.
        skipped: usize,
    },
}

impl JwksError {
    /// PascalCase reason (metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Read { .. } => "Read",
            Self::Format { .. } => "Format",
            Self::NoUsableKey { .. } => "NoUsableKey",
        }
    }
}

/// Verifies tokens against the keys loaded last.
#[derive(Debug)]
pub struct Verifier {
    keys: ArcSwap<Vec<Key>>,
    /// One validation per allowed algorithm (built once; a `Validation` holds sets).
    validations: Vec<(Algorithm, Validation)>,
}

impl Verifier {
    fn new(s: &JwtSettings) -> Self {
        let validations = s
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = LEEWAY.as_secs();
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                if !s.issuer.is_empty() {
                    v.set_issuer(&[&s.issuer]);
                    required.push("iss");
                }
                if s.audience.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&[&s.audience]);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        Self {
            keys: ArcSwap::from_pointee(Vec::new()),
            validations,
        }
    }

    /// Replaces the keys with those of a JWKS document; returns how many are usable. On error
    /// the keys in force stay.
    pub fn load(&self, path: &Path, text: &[u8]) -> Result<usize, JwksError> {
        let p = || path.display().to_string();
        let format = |detail: String| JwksError::Format { path: p(), detail };
        let doc: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format(e.to_string()))?;
        let entries = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| format("no `keys` array".into()))?;
        let allowed: Vec<Algorithm> = self.validations.iter().map(|(a, _)| *a).collect();
        let keys: Vec<Key> = entries
            .iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v.clone()).ok())
            .filter_map(|jwk| usable(&jwk, &allowed))
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                path: p(),
                skipped: entries.len(),
            });
        }
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(n)
    }

    /// The verified claims of `token`.
    pub fn verify(&self, token: &str) -> Result<Claims, Reject> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Reject::Malformed)?;
        let (_, validation) = self
            .validations
            .iter()
            .find(|(a, _)| *a == header.alg)
            .ok_or(Reject::Algorithm)?;
        let keys = self.keys.load();
        if keys.is_empty() {
            return Err(Reject::NoKeys);
        }
        let mut candidates = keys.iter().filter(|k| {
            k.algorithms.contains(&header.alg)
                && (header.kid.is_none() || k.kid.as_deref() == header.kid.as_deref())
        });
        let key = match (candidates.next(), candidates.next()) {
            (Some(k), None) => k,
            _ => return Err(Reject::UnknownKey),
        };
        jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map(|data| data.claims)
            .map_err(|e| reject(e.kind()))
    }
}

/// The key of a JWK when it is a public signing key for an allowed algorithm.
fn usable(jwk: &Jwk, allowed: &[Algorithm]) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let of_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => {
            use Algorithm::*;
            vec![RS256, RS384, RS512, PS256, PS384, PS512]
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // Symmetric keys (`oct`) never: their bytes would be an HMAC secret.
        _ => return None,
    };
    let declared = jwk
        .common
        .key_algorithm
        .map(|a: KeyAlgorithm| Algorithm::from_str(&a.to_string()));
    let algorithms: Vec<Algorithm> = of_type
        .into_iter()
        .filter(|a| allowed.contains(a))
        .filter(|a| match &declared {
            None => true,
            Some(Ok(d)) => d == a,
            Some(Err(_)) => false,
        })
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

fn reject(kind: &ErrorKind) -> Reject {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => Reject::Signature,
        ErrorKind::ExpiredSignature => Reject::Expired,
        ErrorKind::ImmatureSignature => Reject::NotYetValid,
        ErrorKind::InvalidIssuer => Reject::Issuer,
        ErrorKind::InvalidAudience => Reject::Audience,
        ErrorKind::MissingRequiredClaim(_) => Reject::Claims,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => Reject::Algorithm,
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            Reject::Signature
        }
        _ => Reject::Malformed,
    }
}

/// Reads the claims of Bearer tokens as configured.
#[derive(Debug)]
pub struct Jwt {
    mode: Mode,
    verifier: Option<Verifier>,
    path: Option<PathBuf>,
    /// sha256 of the JWKS text read last (the reload task is its only other user).
    last: Mutex<Option<[u8; 32]>>,
    keys: AtomicUsize,
}

impl Jwt {
    /// Builds the reader; with a JWKS, loads it once (a failure is logged; tokens are rejected
    /// with `no_keys` until a later load succeeds).
    pub fn new(s: &JwtSettings) -> Self {
        let mode = match (&s.jwks_path, s.unverified) {
            (_, true) => Mode::Unverified,
            (Some(_), false) => Mode::Verified,
            (None, false) => Mode::Off,
        };
        let jwt = Self {
            mode,
            verifier: (mode == Mode::Verified).then(|| Verifier::new(s)),
            path: s.jwks_path.clone(),
            last: Mutex::new(None),
            keys: AtomicUsize::new(0),
        };
        jwt.reload();
        jwt
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Keys of the JWKS in force.
    pub fn keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// The claims of `token`, and what became of them.
    pub fn claims(&self, token: &str) -> (Option<Claims>, ClaimsOutcome) {
        match (self.mode, &self.verifier) {
            (Mode::Verified, Some(v)) => match v.verify(token) {
                Ok(c) => (Some(c), ClaimsOutcome::Verified),
                Err(r) => (None, ClaimsOutcome::Rejected(r)),
            },
            (Mode::Unverified, _) => match unverified_claims(token) {
                Some(c) => (Some(c), ClaimsOutcome::Unverified),
                None => (None, ClaimsOutcome::Rejected(Reject::Malformed)),
            },
            _ => (None, ClaimsOutcome::Unread),
        }
    }

    /// Re-reads the JWKS when its bytes changed since the last read; returns the load result
    /// when it read something new (a failed read is retried every time).
    pub fn reload(&self) -> Option<Result<usize, JwksError>> {
        use sha2::Digest as _;
        let (Some(v), Some(path)) = (&self.verifier, &self.path) else {
            return None;
        };
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match std::fs::read(path) {
            Err(source) => Err(JwksError::Read {
                path: path.display().to_string(),
                source,
            }),
            Ok(text) => {
                let hash: [u8; 32] = sha2::Sha256::digest(&text).into();
                if *last == Some(hash) {
                    return None;
                }
                *last = Some(hash);
                v.load(path, &text)
            }
        };
        match &result {
            Ok(keys) => {
                self.keys.store(*keys, Ordering::Relaxed);
                tracing::info!(path = %path.display(), keys, "JWKS loaded");
            }
            Err(e) => tracing::warn!(reason = e.reason(), error = %e, "JWKS not loaded"),
        }
        Some(result)
    }

    /// Logs the mode once at start-up: a WARN for unverified claims, and for claims that are
    /// configured but can never be read.
    pub fn log_mode(&self, claims_configured: bool) {
        match (self.mode, claims_configured) {
            (Mode::Unverified, true) => tracing::warn!(
                jwt_mode = "unverified",
                "--jwt-unverified: JWT claims are read WITHOUT verifying the signature; any \
                 client can name itself a developer, app or product. Use it only behind a \
                 gateway that verifies tokens and rejects the rest"
            ),
            (Mode::Off, true) => tracing::warn!(
                jwt_mode = "off",
                "JWT claims are configured but neither --jwks-path nor --jwt-unverified is \
                 set: claims are never read"
            ),
            (mode, _) => tracing::info!(jwt_mode = mode.as_str(), "JWT claims"),
        }
    }
}

/// Re-reads the JWKS every `poll` (a changed file is loaded, a failed load counted); ends at
/// once when there is no JWKS.
pub async fn spawn_reload(
    identifier: Arc<crate::identify::Identifier>,
    poll: Duration,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let jwt = identifier.jwt();
    if jwt.verifier.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(poll);
    loop {
        tick.tick().await;
        match jwt.reload() {
            Some(Ok(n)) => {
                metrics.jwks_keys.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Some(Err(e)) => metrics.jwks_error(e.reason()),
            None => {}
        }
    }
}

/// The payload of a JWT, decoded but not verified (`--jwt-unverified`).
fn unverified_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_are_asymmetric_and_explicit() {
        assert_eq!(
            parse_algorithms("RS256, ES256,EdDSA"),
            Ok(vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA])
        );
        assert!(
            parse_algorithms("none")
                .expect_err("none")
                .contains("never")
        );
        assert!(
            parse_algorithms("RS256,HS256")
                .expect_err("hs")
                .contains("HMAC")
        );
        assert!(
            parse_algorithms("ES512")
                .expect_err("unknown")
                .contains("ES512")
        );
        assert!(parse_algorithms(" , ").is_err());
    }

    #[test]
    fn unverified_claims_read_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"d"}"#);
        let c = unverified_claims(&format!("h.{payload}.s")).expect("claims");
        assert_eq!(c["sub"], "d");
        assert_eq!(unverified_claims("opaque"), None);
    }

    #[test]
    fn a_jwks_without_signing_keys_is_refused_and_the_last_good_one_stays() {
        let v = Verifier::new(&JwtSettings {
            algorithms: vec![Algorithm::ES256],
            ..Default::default()
        });
        let p = Path::new("jwks.json");
        assert_eq!(v.load(p, b"[]").expect_err("format").reason(), "Format");
        let oct = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#;
        assert_eq!(v.load(p, oct).expect_err("oct").reason(), "NoUsableKey");
        assert_eq!(v.verify("a.b.c"), Err(Reject::Malformed));
    }
}
