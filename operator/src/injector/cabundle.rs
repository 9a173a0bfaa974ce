//! Publishes the webhook CA: server-side apply of only
//! `webhooks[name=…].clientConfig.caBundle` on the MutatingWebhookConfiguration (the injector)
//! and the ValidatingWebhookConfiguration (the blast-radius check), under its own field
//! manager, so whoever applies the rest of the configuration (Helm, Argo CD, kubectl) never
//! fights the operator. Leader only.

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::error::InjectorError;

/// The field manager that owns `caBundle`.
pub const FIELD_MANAGER: &str = "palisade-operator-cabundle";

/// A webhook configuration kind: its webhooks' names and current `caBundle`s.
pub trait WebhookConfig:
    kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug
{
    /// `(name, caBundle)` of each webhook.
    fn hooks(&self) -> Vec<(String, Option<Vec<u8>>)>;
}

/// Both kinds have `webhooks[].name` and `webhooks[].clientConfig.caBundle`.
macro_rules! webhook_config {
    ($kind:ty) => {
        impl WebhookConfig for $kind {
            fn hooks(&self) -> Vec<(String, Option<Vec<u8>>)> {
                let hooks = self.webhooks.iter().flatten();
                hooks
                    .map(|w| {
                        let ca = w.client_config.ca_bundle.as_ref().map(|b| b.0.clone());
                        (w.name.clone(), ca)
                    })
                    .collect()
            }
        }
    };
}

webhook_config!(MutatingWebhookConfiguration);
webhook_config!(ValidatingWebhookConfiguration);

/// Makes the `caBundle` of `names` in `config` (a configuration of kind `K`) equal to `pem`;
/// returns whether it wrote. Webhooks missing from the configuration are left alone (an
/// apply would create them half-specified).
pub async fn ensure<K: WebhookConfig>(
    client: kube::Client,
    config: &str,
    names: &[String],
    pem: &str,
) -> Result<bool, InjectorError> {
    let api: Api<K> = Api::all(client);
    let kind = K::kind(&());
    let what = format!("{kind} {config}");
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
        .hooks()
        .into_iter()
        .filter(|(name, _)| names.contains(name))
        .collect();
    let stale = present
        .iter()
        .any(|(_, ca)| ca.as_deref() != Some(pem.as_bytes()));
    if !stale {
        return Ok(false);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
    let webhooks: Vec<_> = present
        .iter()
        .map(|(name, _)| json!({ "name": name, "clientConfig": { "caBundle": b64 } }))
        .collect();
    let body = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
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
