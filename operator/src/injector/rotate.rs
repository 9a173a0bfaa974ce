//! Keeps the webhook's certificate current. Every replica watches the Secret (operator
//! namespace), re-reads it on every change and every `--webhook-cert-check`, and loads what
//! it holds into its [`CertStore`]; the leader also creates the
//! Secret, renews well before expiry, and publishes `caBundle` — before the new certificate
//! is served, so the API server trusts it from the first handshake. The same certificate
//! serves the detection collector (its SANs include the collector Service), and its CA
//! bundle is kept in the context for the injector (sidecars verify the collector with it)
//! and the collector's forwarding.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::cabundle;
use super::certs::{self, CertBundle, Plan};
use super::config::CertSource;
use super::error::InjectorError;
use super::server::CertStore;
use crate::context::Context;
use crate::metrics::FailureLabels;

/// Field manager of the Secret.
const FIELD_MANAGER: &str = "palisade-operator-webhook-cert";

/// Runs until shutdown: a check every `--webhook-cert-check`, and at once on a leader change
/// or a change of the Secret — so a replica serves the certificate the leader has just
/// written (at start, or after a renewal) without waiting for the next periodic check.
pub async fn run(ctx: Arc<Context>, store: Arc<CertStore>) -> Result<(), InjectorError> {
    let mut served: Option<CertBundle> = None;
    let mut leader = ctx.leader.clone();
    let mut changes = secret_changes(&ctx);
    loop {
        if let Err(e) = tick(&ctx, &store, &mut served).await {
            tracing::warn!(error = %e, reason = e.reason(), "webhook certificate check failed");
            let labels = FailureLabels {
                controller: "injector",
                reason: e.reason(),
            };
            ctx.metrics.failures.get_or_create(&labels).inc();
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.args.injector.webhook_cert_check) => {}
            changed = leader.changed() => if changed.is_err() { return Ok(()) },
            Some(()) = changes.next() => {}
            () = ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Yields once per change of the webhook Secret.
fn secret_changes(ctx: &Context) -> futures::stream::BoxStream<'static, ()> {
    let secrets: Api<Secret> = Api::namespaced(ctx.clients.injector.clone(), &ctx.args.namespace);
    let name = ctx.args.injector.webhook_secret.clone();
    crate::watch_one::changes(secrets, name, "webhook Secret")
}

async fn tick(
    ctx: &Context,
    store: &CertStore,
    served: &mut Option<CertBundle>,
) -> Result<(), InjectorError> {
    let a = &ctx.args.injector;
    let ns = &ctx.args.namespace;
    let secrets: Api<Secret> = Api::namespaced(ctx.clients.injector.clone(), ns);
    let what = format!("Secret {ns}/{}", a.webhook_secret);
    let secret = secrets
        .get_opt(&a.webhook_secret)
        .await
        .map_err(InjectorError::kube(format!("reading {what}")))?;
    let mut current = match secret.as_ref().map(decode).transpose() {
        Ok(c) => c,
        Err(e) if a.webhook_cert == CertSource::Managed => {
            tracing::warn!(error = %e, "webhook Secret unusable; the leader replaces it");
            None
        }
        Err(e) => return Err(e),
    };
    let manage = a.webhook_cert == CertSource::Managed && ctx.is_leader();
    if manage {
        let mut sans = certs::sans(&a.webhook_service, ns);
        // The collector serves the same certificate (HTTPS unless --collector-plain-http).
        sans.extend(
            certs::sans(&ctx.args.collector_service, ns)
                .into_iter()
                .filter(|s| !sans.contains(s))
                .collect::<Vec<_>>(),
        );
        // Sidecars told to reach the collector by address (no cluster DNS) verify that
        // address against the certificate.
        if let Some(ip) = certs::ip_host(&a.collector_addr).filter(|ip| !sans.contains(ip)) {
            sans.push(ip);
        }
        let now = jiff::Timestamp::now();
        let plan = certs::plan(current.as_ref(), &sans, now, a.webhook_cert_renew_before);
        if plan != Plan::Keep {
            let served_ca = served.as_ref().map(|s| s.ca_crt.as_str());
            let validity = a.webhook_cert_validity;
            let new = certs::issue(plan, current.as_ref(), served_ca, &sans, now, validity)?;
            publish(ctx, &new).await?;
            write(&secrets, &a.webhook_secret, ns, &new).await?;
            tracing::info!(?plan, secret = %what, "webhook certificate issued");
            current = Some(new);
        }
    }
    let Some(current) = current else {
        tracing::info!(secret = %what, "waiting for the webhook certificate");
        return Ok(());
    };
    if served.as_ref() != Some(&current) {
        store.set(current.certified_key()?);
        ctx.ca_bundle.store(Some(Arc::new(current.ca_bundle())));
        tracing::info!(secret = %what, "webhook serving certificate loaded");
        // From now on the webhook can answer: the replica may receive traffic (/ready).
        ctx.ready.store(true, std::sync::atomic::Ordering::Relaxed);
        *served = Some(current.clone());
    }
    if manage {
        publish(ctx, &current).await?;
    }
    Ok(())
}

async fn publish(ctx: &Context, bundle: &CertBundle) -> Result<bool, InjectorError> {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let a = &ctx.args.injector;
    let pem = bundle.ca_bundle();
    let client = ctx.clients.injector.clone();
    let mut wrote = cabundle::ensure::<MutatingWebhookConfiguration>(
        client.clone(),
        &a.webhook_config,
        &a.webhook_names,
        &pem,
    )
    .await?;
    let blast = &ctx.args.blast_radius;
    if !blast.blast_webhook_config.is_empty() {
        let names = [crate::blast::WEBHOOK_NAME.to_owned()];
        let config = &blast.blast_webhook_config;
        // The blast-radius check is advisory: failing to publish its CA never holds up the
        // injector's.
        match cabundle::ensure::<ValidatingWebhookConfiguration>(client, config, &names, &pem).await
        {
            Ok(w) => wrote |= w,
            Err(e) => tracing::warn!(config = %config, error = %e,
                "cannot publish the blast-radius webhook's caBundle; retrying"),
        }
    }
    Ok(wrote)
}

fn decode(secret: &Secret) -> Result<CertBundle, InjectorError> {
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    Ok(CertBundle::from_secret(&data, &annotations)?)
}

async fn write(
    secrets: &Api<Secret>,
    name: &str,
    ns: &str,
    bundle: &CertBundle,
) -> Result<(), InjectorError> {
    let b64 = |s: &String| base64::engine::general_purpose::STANDARD.encode(s);
    let data: BTreeMap<_, _> = bundle
        .to_secret_data()
        .iter()
        .map(|(k, v)| (k.clone(), b64(v)))
        .collect();
    let body = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {
            "name": name, "namespace": ns,
            "labels": { "app.kubernetes.io/part-of": "palisade",
                        "app.kubernetes.io/managed-by": "palisade-operator" },
            "annotations": bundle.to_annotations(),
        },
        "data": data,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    secrets
        .patch(name, &pp, &Patch::Apply(&body))
        .await
        .map_err(InjectorError::kube(format!("writing Secret {ns}/{name}")))?;
    Ok(())
}
