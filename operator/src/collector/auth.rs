//! Authenticates sidecars: each report carries the pod's projected service-account token
//! (audience `palisade`), checked with a TokenReview. Answers are cached by the token's
//! sha256: an accepted token for a minute (never beyond its own `exp`), a refused one for
//! [`NEGATIVE_TTL`], so a sidecar retrying with a stale token, or a client replaying a bad
//! one, costs the API server one review, not one per request. A bearer value that is not
//! even shaped like a JWT is refused without a review. The token's namespace is the only
//! namespace the sidecar may report for; a token bound to a pod (a projected token always
//! is) may only report as that pod.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

/// The audience sidecar tokens must be issued for.
pub const AUDIENCE: &str = "palisade";
/// How long an accepted token's answer is reused (at most: never beyond the token's `exp`).
const TTL: Duration = Duration::from_secs(60);
/// How long a refused token's answer is reused.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 10_000;
/// Longer bearer values are refused without a review (projected tokens are about 1 kB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Who sent a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The namespace of the caller's ServiceAccount.
    pub namespace: String,
    /// The pod the token is bound to, when it is (`authentication.kubernetes.io/pod-name`).
    pub pod: Option<String>,
}

/// The TokenReview `extra` key naming the pod a bound token belongs to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token; the sidecar sends its projected service-account token")]
    Missing,
    /// The API server says the token is not valid for audience `palisade`.
    #[error("token rejected by TokenReview: {0}")]
    Rejected(String),
    /// The token is valid but not a ServiceAccount's.
    #[error("token of {0} is not a service account's")]
    NotServiceAccount(String),
    /// The bearer value is not a JWT (three base64url parts, at most 16 KiB).
    #[error("the bearer value is not a service-account token (a JWT)")]
    Malformed,
    /// TokenReview could not be called (the caller should retry).
    #[error("TokenReview failed: {0}")]
    Review(#[source] kube::Error),
}

impl AuthError {
    /// Whether the caller may succeed by retrying the same token later (the API server
    /// could not be asked), rather than being refused.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::Review(_))
    }
}

/// A cached answer: the caller, or why the token was refused; valid until the instant.
#[derive(Clone, Debug)]
enum Answer {
    Accepted(Caller),
    Refused(String),
}

/// A TokenReview cache (see the module docs).
#[derive(Default)]
pub struct Authenticator {
    cache: Mutex<HashMap<[u8; 32], (Answer, Instant)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks `token`; a cached answer still valid is reused (see the module docs).
    pub async fn check(&self, client: &kube::Client, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if !jwt_shaped(token) {
            return Err(AuthError::Malformed);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match self.cached(&key) {
            Some(Answer::Accepted(caller)) => return Ok(caller),
            Some(Answer::Refused(why)) => return Err(AuthError::Rejected(why)),
            None => {}
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![AUDIENCE.into()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(client.clone());
        let out = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(AuthError::Review)?;
        let status = out.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            self.remember(key, Answer::Refused(why.clone()), NEGATIVE_TTL);
            return Err(AuthError::Rejected(why));
        }
        let user = status.user.unwrap_or_default();
        let pod = user
            .extra
            .as_ref()
            .and_then(|e| e.get(POD_NAME_EXTRA))
            .and_then(|v| v.first())
            .cloned();
        let user = user.username.unwrap_or_default();
        let Some(namespace) = service_account_namespace(&user) else {
            let why = format!("token of {user} is not a service account's");
            self.remember(key, Answer::Refused(why), NEGATIVE_TTL);
            return Err(AuthError::NotServiceAccount(user));
        };
        let caller = Caller { namespace, pod };
        let ttl = expires_in(token).map_or(TTL, |left| left.min(TTL));
        self.remember(key, Answer::Accepted(caller.clone()), ttl);
        Ok(caller)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Answer> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(a, _)| a.clone())
    }

    fn remember(&self, key: [u8; 32], answer: Answer, ttl: Duration) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= MAX_ENTRIES {
                // Still full of live answers: refusals go first (a flood of bad tokens
                // must not push out the sidecars' good ones).
                cache.retain(|_, (a, _)| matches!(a, Answer::Accepted(_)));
            }
            if cache.len() >= MAX_ENTRIES {
                return;
            }
        }
        cache.insert(key, (answer, Instant::now() + ttl));
    }
}

/// Whether `token` is shaped like a JWT: three non-empty base64url parts, at most
/// [`MAX_TOKEN_BYTES`]. Anything else cannot be a service-account token.
fn jwt_shaped(token: &str) -> bool {
    let b64 = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    };
    let parts: Vec<&str> = token.split('.').collect();
    token.len() <= MAX_TOKEN_BYTES && parts.len() == 3 && parts.iter().all(|p| b64(p))
}

/// Time left until the token's `exp` claim (read without verifying: only ever to shorten
/// how long a reviewed answer is reused). `None` when it has none or cannot be read.
fn expires_in(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

/// `system:serviceaccount:<ns>:<name>` → `<ns>`.
pub fn service_account_namespace(user: &str) -> Option<String> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty()).then(|| ns.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_service_account_users_have_a_namespace() {
        assert_eq!(
            service_account_namespace("system:serviceaccount:shop:default").as_deref(),
            Some("shop")
        );
        assert_eq!(
            service_account_namespace("system:serviceaccount:shop"),
            None
        );
        assert_eq!(service_account_namespace("alice"), None);
        assert_eq!(service_account_namespace("system:serviceaccount::x"), None);
    }

    fn jwt(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", enc(r#"{"alg":"RS256"}"#), enc(claims))
    }

    #[test]
    fn only_an_api_server_that_cannot_review_is_a_reason_to_send_again() {
        let down = AuthError::Review(kube::Error::Service(Box::new(std::io::Error::other(
            "connection refused",
        ))));
        assert!(down.is_temporary(), "503: the sidecar keeps the report");
        for refused in [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::Rejected("expired".into()),
            AuthError::NotServiceAccount("alice".into()),
        ] {
            assert!(!refused.is_temporary(), "401: {refused}");
        }
    }

    #[test]
    fn only_jwt_shaped_values_are_reviewed() {
        assert!(jwt_shaped(&jwt(r#"{"sub":"x"}"#)));
        for bad in [
            "hunter2",
            "a.b",
            "a..c",
            "a.b.c.d",
            "a.b.c d",
            "a.b.<script>",
        ] {
            assert!(!jwt_shaped(bad), "{bad}");
        }
        assert!(!jwt_shaped(&format!("a.{}.c", "b".repeat(MAX_TOKEN_BYTES))));
    }

    #[test]
    fn an_answer_is_reused_until_the_tokens_expiry_at_most() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let left = expires_in(&jwt(&format!(r#"{{"exp":{}}}"#, now + 20))).unwrap();
        assert!(left <= Duration::from_secs(20) && left >= Duration::from_secs(18));
        assert_eq!(
            expires_in(&jwt(&format!(r#"{{"exp":{}}}"#, now - 5))),
            Some(Duration::ZERO),
            "expired: not cached"
        );
        assert_eq!(expires_in(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(expires_in("a.!!.c"), None);
    }

    #[test]
    fn refusals_are_cached_briefly_and_never_push_out_accepted_callers() {
        let auth = Authenticator::default();
        let caller = Caller {
            namespace: "shop".into(),
            pod: None,
        };
        auth.remember([1; 32], Answer::Accepted(caller.clone()), TTL);
        auth.remember([2; 32], Answer::Refused("bad".into()), NEGATIVE_TTL);
        assert!(matches!(auth.cached(&[1; 32]), Some(Answer::Accepted(c)) if c == caller));
        assert!(matches!(auth.cached(&[2; 32]), Some(Answer::Refused(w)) if w == "bad"));
        auth.remember([3; 32], Answer::Refused("gone".into()), Duration::ZERO);
        assert!(
            auth.cached(&[3; 32]).is_none(),
            "expired answers are not reused"
        );
        // A flood of distinct refused tokens fills the cache: the accepted one stays.
        for i in 0..MAX_ENTRIES as u32 + 10 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            key[31] = 9;
            auth.remember(key, Answer::Refused("bad".into()), NEGATIVE_TTL);
        }
        assert!(matches!(auth.cached(&[1; 32]), Some(Answer::Accepted(_))));
        let len = auth.cache.lock().unwrap().len();
        assert!(len <= MAX_ENTRIES, "{len}");
    }
}
