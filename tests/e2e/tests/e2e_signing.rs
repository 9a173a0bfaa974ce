//! Signed bundles on the real control plane. A namespace editor (a user bound to Kubernetes'
//! built-in `edit` ClusterRole, which may write ConfigMaps) rewrites the namespace's bundle
//! manifest; the injected sidecar, run as a process wired exactly as its stored pod spec says
//! ([`Sidecar::from_pod`]), refuses it and keeps enforcing, the operator answers with a
//! `ForeignBundle` Event and its metric and writes its own signed bundle back. A manifest with
//! the generation `u64::MAX` freezes nothing. After the signing key rotates (twice and more),
//! the sidecar, given only the first key at admission, follows the endorsed chain and keeps
//! applying the operator's bundles.
//!
//! One test, in stages: the webhook configuration is cluster-wide.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams};
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::injected::Wiring;
use palisade_e2e::{ControlPlane, Operator, Sidecar, TempNs, eventually, scope, webhook};
use palisade_policy::sign::{self, Domain, Verifier};
use serde_json::{Value, json};

const EDITOR: &str = "eddie";

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "api"}},
        "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "web", "image": "example.invalid/web:1",
                "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

fn deny_agent(name: &str, agent: &str, status: u16) -> String {
    format!(
        "apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {{name: {name}}}
spec:
  deny: {{status: {status}}}
  conditions:
    userAgents: [{{value: {agent}, type: Exact}}]
"
    )
}

async fn status_for(sc: &Sidecar, agent: &str) -> Result<u16, String> {
    let from: IpAddr = "127.0.0.1".parse().expect("ip");
    get(from, sc.addr, "/", &[("user-agent", agent)])
        .await
        .map(|(s, _)| s)
}

async fn wait_status(sc: &Sidecar, agent: &str, want: u16, what: &str) {
    eventually(what, || async {
        let got = status_for(sc, agent).await?;
        (got == want).then_some(()).ok_or(format!("status {got}"))
    })
    .await;
}

fn sidecar_metrics(sc: &Sidecar) -> Result<String, String> {
    palisade_e2e::process::http_get(sc.admin.port(), "/metrics")
}

/// Waits until `metrics()` has a line starting with `prefix` (a sample of a labelled series).
async fn wait_metric(what: &str, prefix: &str, metrics: impl Fn() -> Result<String, String>) {
    eventually(what, || async {
        let m = metrics()?;
        m.lines()
            .any(|l| l.starts_with(prefix))
            .then_some(())
            .ok_or(format!("no {prefix} in the metrics"))
    })
    .await;
}

/// The manifest ConfigMap as it is: `(manifest JSON, signature, key chain)`.
async fn manifest_cm(client: &kube::Client, ns: &str) -> (String, Option<String>, Option<String>) {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("palisade-bundle")
        .await
        .expect("the manifest ConfigMap");
    let data = cm.data.unwrap_or_default();
    (
        data.get("manifest.json").cloned().unwrap_or_default(),
        data.get(sign::MANIFEST_SIG_KEY).cloned(),
        data.get(sign::KEYS_KEY).cloned(),
    )
}

/// Runs `kubectl` as the namespace editor; fails the test if the API server refuses.
fn as_editor(cp: &ControlPlane, ns: &str, args: &[&str]) {
    let mut all = vec!["--as", EDITOR, "-n", ns];
    all.extend_from_slice(args);
    if let Err(e) = cp.kubectl_ok(&all) {
        panic!("the namespace editor may {args:?}, but: {e}");
    }
}

/// The editor's merge patch of the manifest ConfigMap's `data`.
fn editor_patches_manifest(cp: &ControlPlane, ns: &str, data: &Value) {
    let patch = json!({ "data": data }).to_string();
    as_editor(
        cp,
        ns,
        &[
            "patch",
            "configmap",
            "palisade-bundle",
            "--type",
            "merge",
            "-p",
            &patch,
        ],
    );
}

/// The operator's `ForeignBundle` Events about namespace `ns`.
async fn foreign_bundle_events(client: &kube::Client, ns: &str) -> usize {
    palisade_e2e::namespace_events(client, ns, "ForeignBundle")
        .await
        .len()
}

/// Waits until the operator's signed bundle is back in place (its signature verifies with the
/// keys the pod was given, or keys they endorsed) with a generation other than `not`.
async fn wait_restored(client: &kube::Client, ns: &str, keys: &str, not: &str) -> String {
    eventually("the operator to write its signed bundle back", || async {
        let (manifest, sig, chain) = manifest_cm(client, ns).await;
        if manifest == not {
            return Err("the forged manifest is still in place".into());
        }
        let mut v = Verifier::parse(keys).map_err(|e| e.to_string())?;
        v.check(
            Domain::Manifest,
            manifest.as_bytes(),
            sig.as_deref(),
            chain.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        Ok(manifest)
    })
    .await
}

#[tokio::test]
async fn only_the_operators_signed_bundles_are_enforced() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TempNs::new(cp, "signing").await;
    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "create",
        "rolebinding",
        "eddie-edit",
        "--clusterrole=edit",
        &format!("--user={EDITOR}"),
    ])
    .expect("bind the editor");
    let op = webhook::injecting_operator(cp, &ns, "op-signing", &[], &pod("probe")).await;

    // An injected pod: the operator's public keys are in its sidecar's environment.
    cp.apply(ns.name(), &deny_agent("deny-evil", "evil-bot", 403))
        .expect("apply deny-evil");
    let admitted: Pod = serde_json::from_value(pod("api-0")).expect("pod");
    let admitted = Api::<Pod>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &admitted)
        .await
        .expect("create the pod");
    let spec = serde_json::to_value(&admitted).expect("pod JSON");
    let keys = spec["spec"]["initContainers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "PALISADE_BUNDLE_KEYS")
        .and_then(|e| e["value"].as_str())
        .expect("PALISADE_BUNDLE_KEYS in the injected sidecar")
        .to_owned();
    let admitted_ids: Vec<String> = Verifier::parse(&keys)
        .expect("keys parse")
        .trusted_ids()
        .map(str::to_owned)
        .collect();
    let app = echo_app().await;
    let wiring = Wiring {
        upstream: app,
        ..Wiring::default()
    };
    let sc = Sidecar::from_pod(cp, &admitted, &wiring).await;
    wait_status(&sc, "evil-bot", 403, "the signed deny to be enforced").await;
    let m = sidecar_metrics(&sc).expect("sidecar metrics");
    assert!(
        m.contains("palisade_sidecar_bundle_signatures_checked 1"),
        "{m}"
    );
    let (signed, _, _) = manifest_cm(&client, ns.name()).await;

    // The editor's forgery: an empty bundle (its shard in a ConfigMap the editor may create)
    // under the operator's old signature.
    let mut empty =
        palisade_policy::compile(&palisade_policy::Inputs::default(), jiff::Timestamp::now())
            .bundle;
    let current: palisade_policy::Manifest =
        serde_json::from_str(&signed).expect("the signed manifest");
    empty.generation = current.generation + 1;
    let forged = palisade_policy::encode(&empty).expect("encode");
    let dir = tempfile::tempdir().expect("dir");
    for (name, bytes) in &forged.shards {
        let file = dir.path().join("shard");
        std::fs::write(&file, bytes).expect("shard file");
        let from = format!("--from-file=shard={}", file.display());
        let cm = format!("palisade-bundle-{name}");
        as_editor(cp, ns.name(), &["create", "configmap", &cm, &from]);
    }
    let forged_json = forged.manifest.to_json();
    editor_patches_manifest(cp, ns.name(), &json!({ "manifest.json": forged_json }));
    wait_metric(
        "the sidecar to refuse the forged manifest",
        "palisade_sidecar_bundle_load_errors_total{reason=\"SignatureInvalid\"}",
        || sidecar_metrics(&sc),
    )
    .await;
    assert_eq!(
        status_for(&sc, "evil-bot").await,
        Ok(403),
        "still enforcing"
    );
    let restored = wait_restored(&client, ns.name(), &keys, &forged_json).await;
    wait_metric(
        "the operator to count the foreign bundle",
        "palisade_operator_foreign_bundles_total{reason=\"SignatureInvalid\"}",
        || op.metrics(),
    )
    .await;
    eventually("a ForeignBundle Event on the namespace", || async {
        let n = foreign_bundle_events(&client, ns.name()).await;
        (n >= 1).then_some(()).ok_or(format!("{n} Events"))
    })
    .await;
    assert_eq!(
        status_for(&sc, "evil-bot").await,
        Ok(403),
        "still enforcing"
    );

    // A generation far ahead, unsigned: refused, replaced, and it freezes nothing.
    let mut ahead: Value = serde_json::from_str(&restored).expect("manifest JSON");
    ahead["generation"] = json!(u64::MAX);
    let ahead = ahead.to_string();
    editor_patches_manifest(
        cp,
        ns.name(),
        &json!({ "manifest.json": ahead, "manifest.sig": null }),
    );
    wait_metric(
        "the sidecar to refuse the unsigned manifest",
        "palisade_sidecar_bundle_load_errors_total{reason=\"BundleUnsigned\"}",
        || sidecar_metrics(&sc),
    )
    .await;
    wait_restored(&client, ns.name(), &keys, &ahead).await;
    cp.apply(ns.name(), &deny_agent("deny-other", "other-bot", 429))
        .expect("apply deny-other");
    wait_status(
        &sc,
        "other-bot",
        429,
        "the next bundle to apply after the freeze attempt",
    )
    .await;
    assert_eq!(status_for(&sc, "evil-bot").await, Ok(403));

    // Rotation: a new operator makes a key every two seconds; the pod knows only the keys it
    // was admitted with and follows the endorsements.
    drop(op);
    let rotating = [
        &scope(&ns)[..],
        &["--webhook-cert-check".into(), "1s".into()],
        &["--bundle-key-rotation".into(), "2s".into()],
    ]
    .concat();
    let op = Operator::start(cp, "op-signing-2", "op-signing", &rotating);
    let signer = eventually("two more signing keys", || async {
        let (_, sig, chain) = manifest_cm(&client, ns.name()).await;
        let chain: Vec<sign::PublicKey> =
            serde_json::from_str(chain.as_deref().unwrap_or("[]")).map_err(|e| e.to_string())?;
        let sig =
            sign::Signature::from_json(sig.as_deref().unwrap_or("")).map_err(|e| e.to_string())?;
        let new = chain
            .iter()
            .filter(|k| !admitted_ids.contains(&k.id))
            .count();
        (new >= 2 && !admitted_ids.contains(&sig.key_id))
            .then_some(sig.key_id)
            .ok_or(format!("{new} new keys in the chain"))
    })
    .await;
    cp.apply(ns.name(), &deny_agent("deny-third", "third-bot", 418))
        .expect("apply deny-third");
    wait_status(
        &sc,
        "third-bot",
        418,
        "a bundle signed by a rotated key to apply",
    )
    .await;
    assert!(
        !admitted_ids.contains(&signer),
        "signed by a key the pod was not given"
    );
    assert_eq!(status_for(&sc, "evil-bot").await, Ok(403));
    let m = sidecar_metrics(&sc).expect("sidecar metrics");
    assert!(
        !m.contains("reason=\"SigningKeyUnknown\""),
        "no rotated bundle was refused:\n{m}"
    );
    drop(op);
}
