//! Authenticates sidecars: each report carries the pod's projected service-account token
//! (audience `palisade`), checked with a TokenReview and cached by its sha256 for a minute.
//! The token's namespace is the only namespace the sidecar may report for; a token bound to a
//! pod (a projected token always is) may only report as that pod.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

/// The audience sidecar tokens must be issued for.
pub const AUDIENCE: &str = "palisade";
const TTL: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 10_000;

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
    /// TokenReview could not be called.
    #[error("TokenReview failed: {0}")]
    Review(#[source] kube::Error),
}

/// A TokenReview cache.
#[derive(Default)]
pub struct Authenticator {
    cache: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks `token`; a cached answer younger than a minute is reused.
    pub async fn check(&self, client: &kube::Client, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = self.cached(&key) {
            return Ok(caller);
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
            return Err(AuthError::Rejected(
                status.error.unwrap_or_else(|| "not authenticated".into()),
            ));
        }
        let user = status.user.unwrap_or_default();
        let pod = user
            .extra
            .as_ref()
            .and_then(|e| e.get(POD_NAME_EXTRA))
            .and_then(|v| v.first())
            .cloned();
        let user = user.username.unwrap_or_default();
        let namespace =
            service_account_namespace(&user).ok_or(AuthError::NotServiceAccount(user))?;
        let caller = Caller { namespace, pod };
        self.remember(key, caller.clone());
        Ok(caller)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Caller> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(c, _)| c.clone())
    }

    fn remember(&self, key: [u8; 32], caller: Caller) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (_, at)| at.elapsed() < TTL);
        }
        cache.insert(key, (caller, Instant::now()));
    }
}

/// `system:serviceaccount:<ns>:<name>` → `<ns>`.
pub fn service_account_namespace(user: &str) -> Option<String> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty()).then(|| ns.to_owned())
}

#[cfg(test)]
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
}
