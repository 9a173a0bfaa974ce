//! The operator's mutating webhook on the test control plane: `config/webhook.yaml`'s
//! configuration registered in URL mode (the API server dials the operator on loopback), and
//! the waits until it serves.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::{ControlPlane, eventually};

/// Name of the MutatingWebhookConfiguration (config/webhook.yaml).
pub const CONFIG: &str = "palisade-injector";

/// Applies `config/webhook.yaml`'s MutatingWebhookConfiguration with its clientConfig
/// rewritten to URL mode (the API server dials the operator at `addr`, each webhook's path
/// kept).
pub async fn register(cp: &ControlPlane, addr: &str) {
    let path = crate::repo_root().join("config/webhook.yaml");
    let text = std::fs::read_to_string(&path).expect("config/webhook.yaml");
    let mut config = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML"))
        .map(|v| serde_json::to_value(v).expect("JSON"))
        .find(|v| v["kind"] == "MutatingWebhookConfiguration")
        .expect("a MutatingWebhookConfiguration in config/webhook.yaml");
    for hook in config["webhooks"].as_array_mut().expect("webhooks") {
        assert!(
            hook["clientConfig"].get("caBundle").is_none(),
            "caBundle is the operator's"
        );
        let path = hook["clientConfig"]["service"]["path"]
            .as_str()
            .unwrap_or("/mutate")
            .to_owned();
        hook["clientConfig"] = json!({ "url": format!("https://{addr}{path}") });
    }
    let api: Api<MutatingWebhookConfiguration> = Api::all(cp.client().await);
    api.patch(
        CONFIG,
        &PatchParams::apply("palisade-e2e").force(),
        &Patch::Apply(&config),
    )
    .await
    .expect("apply the webhook configuration");
}

/// Waits until every webhook has a caBundle (different from `old`, if given) written by the
/// operator's own field manager; returns it.
pub async fn wait_for_ca_bundle(client: &kube::Client, old: Option<&[u8]>) -> Vec<u8> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    eventually("the operator to publish caBundle", || async {
        let c = api.get(CONFIG).await.map_err(|e| e.to_string())?;
        let hooks = c.webhooks.clone().unwrap_or_default();
        let bundles: Vec<Vec<u8>> = hooks
            .iter()
            .filter_map(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()))
            .collect();
        if bundles.len() != hooks.len() || bundles.iter().any(|b| Some(b.as_slice()) == old) {
            return Err(format!(
                "{} of {} webhooks have a new caBundle",
                bundles.len(),
                hooks.len()
            ));
        }
        let owner = c
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("palisade-operator-cabundle"));
        owner
            .then(|| bundles[0].clone())
            .ok_or("caBundle not owned by the operator".into())
    })
    .await
}

/// A dry-run create of `pod` in `ns` until the webhook answers with the sidecar (the API
/// server may still hold the previous caBundle for a moment).
pub async fn wait_until_injecting(client: &kube::Client, ns: &str, pod: &Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod.clone()).expect("pod");
    eventually("the webhook to inject (dry run)", || async {
        let created = pods
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &pod,
            )
            .await;
        let created = created.map_err(|e| e.to_string())?;
        let created = serde_json::to_value(&created).map_err(|e| e.to_string())?;
        let injected = created["spec"]["initContainers"][0]["name"] == "palisade-sidecar";
        injected
            .then_some(())
            .ok_or_else(|| "admitted without the sidecar".to_owned())
    })
    .await;
}

/// What every test of injected pods starts with: namespace `ns` labelled for injection, an
/// operator `name` scoped to it (its own Lease; `--webhook-cert-check 1s` and `extra` flags),
/// its webhook registered, and a dry run of `probe` injected.
pub async fn injecting_operator(
    cp: &'static ControlPlane,
    ns: &crate::TempNs,
    name: &str,
    extra: &[String],
    probe: &Value,
) -> crate::Operator {
    cp.kubectl_ok(&[
        "label",
        "namespace",
        ns.name(),
        "palisade.dev/inject=enabled",
    ])
    .expect("label the namespace");
    let args = [
        &crate::scope(ns)[..],
        &["--webhook-cert-check".into(), "1s".into()],
        extra,
    ]
    .concat();
    let op = crate::Operator::start(cp, name, name, &args);
    let client = cp.client().await;
    register(cp, &op.webhook).await;
    wait_for_ca_bundle(&client, None).await;
    wait_until_injecting(&client, ns.name(), probe).await;
    op
}

/// Name of the blast-radius ValidatingWebhookConfiguration (config/webhook.yaml).
pub const BLAST_RADIUS_CONFIG: &str = "palisade-blast-radius";

/// Applies `config/webhook.yaml`'s blast-radius ValidatingWebhookConfiguration in URL mode
/// (the operator at `addr`), limited to namespace `ns` so that other tests' actions are not
/// checked; waits until the operator has published its `caBundle`. Delete it with
/// [`unregister_blast_radius`].
pub async fn register_blast_radius(cp: &ControlPlane, addr: &str, ns: &str) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let path = crate::repo_root().join("config/webhook.yaml");
    let text = std::fs::read_to_string(&path).expect("config/webhook.yaml");
    let mut config = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML"))
        .map(|v| serde_json::to_value(v).expect("JSON"))
        .find(|v| v["kind"] == "ValidatingWebhookConfiguration")
        .expect("a ValidatingWebhookConfiguration in config/webhook.yaml");
    assert_eq!(config["metadata"]["name"], BLAST_RADIUS_CONFIG);
    for hook in config["webhooks"].as_array_mut().expect("webhooks") {
        let path = hook["clientConfig"]["service"]["path"]
            .as_str()
            .expect("path")
            .to_owned();
        hook["clientConfig"] = json!({ "url": format!("https://{addr}{path}") });
        hook["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
    }
    let api: Api<ValidatingWebhookConfiguration> = Api::all(cp.client().await);
    api.patch(
        BLAST_RADIUS_CONFIG,
        &PatchParams::apply("palisade-e2e").force(),
        &Patch::Apply(&config),
    )
    .await
    .expect("apply the blast-radius webhook configuration");
    eventually(
        "the operator to publish the blast-radius caBundle",
        || async {
            let c = api
                .get(BLAST_RADIUS_CONFIG)
                .await
                .map_err(|e| e.to_string())?;
            let hooks = c.webhooks.unwrap_or_default();
            hooks
                .iter()
                .all(|w| w.client_config.ca_bundle.is_some())
                .then_some(())
                .ok_or("no caBundle yet".to_owned())
        },
    )
    .await;
}

/// Deletes the blast-radius configuration.
pub async fn unregister_blast_radius(cp: &ControlPlane) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let api: Api<ValidatingWebhookConfiguration> = Api::all(cp.client().await);
    let _ = api
        .delete(BLAST_RADIUS_CONFIG, &kube::api::DeleteParams::default())
        .await;
}
