//! The bundle-signing keys (see `palisade_policy::sign`). They live in one Secret of the
//! operator's namespace (`--bundle-signing-secret`, key `keys.json`): every replica watches it
//! and loads it into [`Context::signing`]; the leader creates it when it is missing or
//! unusable and adds a new key, endorsed by the current one, every `--bundle-key-rotation`.
//! A new key makes the policy controller re-sign every namespace's bundle.
//!
//! Only the operator's ServiceAccount can read the Secret (a Role by resource name); the
//! public keys reach sidecars through the injector (`PALISADE_BUNDLE_KEYS`) and, endorsed,
//! through the `keys.json` beside each signature.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use palisade_policy::sign::{KeyRing, SignError};
use serde_json::json;

use crate::context::Context;
use crate::metrics::FailureLabels;

/// Key of the key ring in the Secret.
pub const SECRET_KEY: &str = "keys.json";
/// The longest wait between two checks of the Secret.
const CHECK_MAX: Duration = Duration::from_secs(60);

/// Why the keys could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The API refused or failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The key material is unusable.
    #[error("Secret {secret}: {source}")]
    Keys {
        /// `namespace/name` of the Secret.
        secret: String,
        /// Why.
        #[source]
        source: SignError,
    },
}

impl SigningError {
    /// PascalCase reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "SigningSecretUnavailable",
            Self::Keys { source, .. } => source.reason(),
        }
    }
}

/// Runs until shutdown: a check at start, on every change of the Secret, on a leader change
/// and at least every minute (or a quarter of the rotation period, when shorter).
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let mut leader = ctx.leader.clone();
    let name = ctx.args.bundle_signing_secret.clone();
    let mut changes = crate::watch_one::changes(secrets(&ctx), name, "bundle-signing Secret");
    let every = (ctx.args.bundle_key_rotation / 4).clamp(Duration::from_millis(250), CHECK_MAX);
    loop {
        if let Err(e) = tick(&ctx).await {
            tracing::warn!(error = %e, reason = e.reason(), "bundle-signing key check failed");
            let labels = FailureLabels {
                controller: "signing",
                reason: e.reason(),
            };
            ctx.metrics.failures.get_or_create(&labels).inc();
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = leader.changed() => if changed.is_err() { return Ok(()) },
            Some(()) = changes.next() => {}
            () = ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}

fn secrets(ctx: &Context) -> Api<Secret> {
    Api::namespaced(ctx.clients.policy.clone(), &ctx.args.namespace)
}

/// What the leader does with the ring in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Keep,
    Create,
    Rotate,
}

fn plan(current: Option<&KeyRing>, now_s: i64, rotation: Duration) -> Plan {
    let rotation = i64::try_from(rotation.as_secs()).unwrap_or(i64::MAX);
    match current {
        None => Plan::Create,
        Some(r) if now_s.saturating_sub(r.current_created()) >= rotation => Plan::Rotate,
        Some(_) => Plan::Keep,
    }
}

async fn tick(ctx: &Context) -> Result<(), SigningError> {
    let name = &ctx.args.bundle_signing_secret;
    let what = format!("Secret {}/{name}", ctx.args.namespace);
    let secret = secrets(ctx)
        .get_opt(name)
        .await
        .map_err(|source| SigningError::Kube {
            what: format!("reading {what}"),
            source,
        })?;
    let mut current = match secret.as_ref().map(decode).transpose() {
        Ok(r) => r.flatten(),
        Err(source) if ctx.is_leader() => {
            // Unusable material cannot sign anything: start a new ring. Pods injected with
            // the old keys refuse the new bundles until they are restarted; say so.
            tracing::error!(error = %source, secret = %what,
                "bundle-signing Secret unusable; making a new key (restart the injected pods \
                 so they trust it)");
            None
        }
        Err(source) => {
            return Err(SigningError::Keys {
                secret: what,
                source,
            });
        }
    };
    if ctx.is_leader() {
        let now = jiff::Timestamp::now().as_second();
        let keys_err = |source| SigningError::Keys {
            secret: what.clone(),
            source,
        };
        let next = match (
            plan(current.as_ref(), now, ctx.args.bundle_key_rotation),
            &current,
        ) {
            (Plan::Create, _) | (Plan::Rotate, None) => {
                Some(KeyRing::generate(now).map_err(keys_err)?)
            }
            (Plan::Rotate, Some(r)) => Some(r.rotated(now).map_err(keys_err)?),
            (Plan::Keep, _) => None,
        };
        if let Some(next) = next {
            if !write(ctx, &next, secret.as_ref()).await? {
                // Another replica wrote first: use what it wrote (the next check reads it).
                return Ok(());
            }
            ctx.metrics.signing_keys_made.inc();
            tracing::info!(secret = %what, key = next.current_id(), "bundle-signing key made");
            current = Some(next);
        }
    }
    let Some(current) = current else {
        tracing::info!(secret = %what, "waiting for the bundle-signing key");
        return Ok(());
    };
    let same = ctx
        .signing
        .borrow()
        .as_deref()
        .is_some_and(|r| *r == current);
    if !same {
        tracing::info!(secret = %what, key = current.current_id(), "bundle-signing key loaded");
        ctx.signing.send_replace(Some(Arc::new(current)));
    }
    Ok(())
}

/// The ring in `secret`; `None` when the Secret holds no ring yet.
fn decode(secret: &Secret) -> Result<Option<KeyRing>, SignError> {
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(SECRET_KEY)) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes.0);
    KeyRing::from_json(&text).map(Some)
}

/// Writes `ring` over `read` (the Secret as read, `None` when there was none) only if nobody
/// changed it since: creating fails if it exists, patching fails on another resourceVersion.
/// Returns false when another writer came first, so two replicas that both think they lead
/// (for a moment, at a hand-over) never each hand out a different key.
async fn write(ctx: &Context, ring: &KeyRing, read: Option<&Secret>) -> Result<bool, SigningError> {
    let name = &ctx.args.bundle_signing_secret;
    let ns = &ctx.args.namespace;
    let mut body = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": name, "namespace": ns,
            "labels": { "app.kubernetes.io/part-of": "palisade",
                        "app.kubernetes.io/managed-by": "palisade-operator" },
        },
        "data": { SECRET_KEY: base64::engine::general_purpose::STANDARD.encode(ring.to_json()) },
    });
    let api = secrets(ctx);
    let result = match read.and_then(|s| s.metadata.resource_version.clone()) {
        None => {
            let secret: Secret = serde_json::from_value(body).unwrap_or_default();
            api.create(&PostParams::default(), &secret).await.map(drop)
        }
        Some(rv) => {
            body["metadata"]["resourceVersion"] = json!(rv);
            let pp = PatchParams::default();
            api.patch(name, &pp, &Patch::Merge(&body)).await.map(drop)
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(source) => Err(SigningError::Kube {
            what: format!("writing Secret {ns}/{name}"),
            source,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_creates_a_ring_and_rotates_it_when_its_key_is_old() {
        let day = Duration::from_secs(86_400);
        assert_eq!(plan(None, 100, day), Plan::Create);
        let ring = KeyRing::generate(100).unwrap();
        assert_eq!(plan(Some(&ring), 100 + 86_399, day), Plan::Keep);
        assert_eq!(plan(Some(&ring), 100 + 86_400, day), Plan::Rotate);
        // A key from the future (a clock that went back) is kept, not rotated in a loop.
        assert_eq!(plan(Some(&ring), 50, day), Plan::Keep);
    }

    #[test]
    fn the_secret_round_trips_and_bad_material_is_named() {
        let ring = KeyRing::generate(1).unwrap();
        let data = |text: &str| Secret {
            data: Some(
                [(SECRET_KEY.to_owned(), k8s_openapi::ByteString(text.into()))]
                    .into_iter()
                    .collect(),
            ),
            ..Secret::default()
        };
        assert_eq!(decode(&data(&ring.to_json())).unwrap().unwrap(), ring);
        assert!(decode(&Secret::default()).unwrap().is_none());
        let e = decode(&data("{")).unwrap_err();
        assert_eq!(e.reason(), "SignatureMalformed");
    }
}
