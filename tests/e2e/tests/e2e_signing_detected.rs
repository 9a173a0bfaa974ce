//! A forged detected-client document on the real control plane. A namespace editor (bound to
//! Kubernetes' built-in `edit` ClusterRole) writes `palisade-detected`: sidecars refuse it
//! (not signed: `sidecar/tests/enforce.rs`), so pods started since would hold no detected
//! clients until the set next changed. The operator replaces it with its own signed document
//! at its next evaluation, counts it and says so with a `ForeignBundle` Event.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::{ControlPlane, Operator, Sidecar, TempNs, eventually, scope};
use palisade_policy::sign::{Domain, Verifier};

const EDITOR: &str = "dora";

/// Whether the namespace's `palisade-detected` holds a document signed by one of `keys` (a
/// trust list: base64 public keys, comma-separated).
async fn signed_by_the_operator(client: &kube::Client, ns: &str, keys: &str) -> Result<(), String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("palisade-detected")
        .await
        .map_err(|e| e.to_string())?;
    let doc = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get("detected"))
        .ok_or("no detected document")?;
    let data = cm.data.unwrap_or_default();
    Verifier::parse(keys)
        .map_err(|e| e.to_string())?
        .verify(
            Domain::Detected,
            &doc.0,
            data.get("detected.sig").map(String::as_str),
        )
        .map_err(|e| e.to_string())
}

/// The operator's `ForeignBundle` Events about namespace `ns`'s detected-client document.
async fn foreign_bundle_events(client: &kube::Client, ns: &str) -> usize {
    let notes = palisade_e2e::namespace_events(client, ns, "ForeignBundle").await;
    notes
        .iter()
        .filter(|n| n.contains("palisade-detected"))
        .count()
}

#[tokio::test]
async fn a_forged_detected_client_document_is_replaced_with_a_signed_one() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TempNs::new(cp, "signing-detected").await;
    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "create",
        "rolebinding",
        "dora-edit",
        "--clusterrole=edit",
        &format!("--user={EDITOR}"),
    ])
    .expect("bind the editor");
    let op = Operator::start(
        cp,
        "op-signing-detected",
        "op-signing-detected",
        &scope(&ns),
    );
    // An action, so that the namespace has a bundle (and the operator's key chain beside it).
    let deny = "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {name: deny-bot}\n\
                spec:\n  deny: {}\n  conditions:\n    userAgents: [{value: bad-bot}]\n";
    cp.apply(ns.name(), deny).expect("apply the action");
    // A sidecar that reports, so the collector evaluates the namespace every second.
    let app = echo_app().await;
    let sc = Sidecar::start(cp, ns.name(), "api-0", app, Some(op.collector.as_str()));
    let from = "127.0.0.31".parse().expect("ip");
    eventually("the sidecar to answer", || async {
        get(from, sc.addr, "/", &[]).await.map(|_| ())
    })
    .await;
    // The operator's public keys, from the key chain it publishes beside its bundle.
    let keys = eventually("the operator's signed bundle", || async {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns.name())
            .get("palisade-bundle")
            .await
            .map_err(|e| e.to_string())?;
        let chain = cm.data.and_then(|d| d.get("keys.json").cloned());
        let chain: Vec<palisade_policy::sign::PublicKey> =
            serde_json::from_str(&chain.ok_or("no keys.json yet")?).map_err(|e| e.to_string())?;
        Ok::<_, String>(
            chain
                .into_iter()
                .map(|k| k.key)
                .collect::<Vec<_>>()
                .join(","),
        )
    })
    .await;

    // The operator publishes its signed document at its first evaluation: wait for it, so that
    // the forgery always replaces a published document (the case a client-side apply cannot
    // even express: its `data.detected` beside the operator's `binaryData.detected` is refused
    // by the API server as a duplicate key, and whether the operator had published yet was a
    // race).
    eventually("the operator's first signed document", || async {
        signed_by_the_operator(&client, ns.name(), &keys).await
    })
    .await;
    // The editor's forgery: a whole new object (an unconditional update) holding a document
    // that claims whatever it likes, unsigned.
    let forged = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: palisade-detected\n  namespace: {}\n\
         data:\n  detected: '{{\"generation\": 18446744073709551615, \"rules\": {{}}}}'\n",
        ns.name()
    );
    let out = cp
        .kubectl_stdin(
            &["--as", EDITOR, "replace", "-o", "json", "-f", "-"],
            &forged,
        )
        .expect("the namespace editor may replace palisade-detected");
    // The object as the API server stored it (the operator may put its own back any moment).
    let stored: ConfigMap = serde_json::from_str(&out).expect("kubectl's JSON");
    assert!(
        stored.binary_data.is_none() && stored.data.is_some_and(|d| d.contains_key("detected")),
        "the forgery replaced the operator's document: {out}"
    );

    eventually("the operator's signed document back in place", || async {
        signed_by_the_operator(&client, ns.name(), &keys).await
    })
    .await;
    eventually("a ForeignBundle Event about palisade-detected", || async {
        let n = foreign_bundle_events(&client, ns.name()).await;
        (n >= 1).then_some(()).ok_or(format!("{n} Events"))
    })
    .await;
    let m = op.metrics().expect("operator metrics");
    assert!(
        m.lines()
            .any(|l| l
                .starts_with("palisade_operator_foreign_bundles_total{reason=\"BundleUnsigned\"}")),
        "{m}"
    );
}
