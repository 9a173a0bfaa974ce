//! Publishes the webhook CA: server-side apply of only
//! `webhooks[name=…].clientConfig.caBundle` on the MutatingWebhookConfiguration, under its
//! own field manager, so whoever applies the rest of the configuration (Helm, Argo CD,
//! kubectl) never fights the operator. Leader only.

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::error::InjectorError;

/// The field manager that owns `caBundle`.
pub const FIELD_MANAGER: &str = "palisade-operator-cabundle";

/// Makes the `caBundle` of `names` in `config` equal to `pem`; returns whether it wrote.
/// Webhooks missing from the configuration are left alone (an apply would create them
/// half-specified).
pub async fn ensure(
    client: kube::Client,
    config: &str,
    names: &[String],
    pem: &str,
) -> Result<bool, InjectorError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let what = format!("MutatingWebhookConfiguration {config}");
    let Some(current) = api
        .get_opt(config)
        .await
        .map_err(InjectorError::kube(format!("reading {what}")))?
    else {
        tracing::warn!(
            config,
            "webhook configuration not found; caBundle not published"
        );
        return Ok(false);
    };
    let present: Vec<_> = current
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .filter(|w| names.contains(&w.name))
        .collect();
    let stale = present.iter().any(|w| {
        w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(pem.as_bytes())
    });
    if !stale {
        return Ok(false);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    let webhooks: Vec<_> = present
        .iter()
        .map(|w| json!({ "name": w.name, "clientConfig": { "caBundle": b64 } }))
        .collect();
    let body = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": config },
        "webhooks": webhooks,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(config, &pp, &Patch::Apply(&body))
        .await
        .map_err(InjectorError::kube(format!("applying caBundle to {what}")))?;
    tracing::info!(config, webhooks = present.len(), "caBundle published");
    Ok(true)
}
