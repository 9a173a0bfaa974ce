//! Shared by the `admit_*` tests: apply a Palisade resource written as a YAML `spec` with
//! server-side apply (strict field validation, as `kubectl apply --server-side` does) and
//! check what the API server answers.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use palisade_e2e::ControlPlane;
use serde_json::{Value, json};

/// An invalid manifest and the fragments its rejection message must contain: the field path
/// and the words that say what to do.
#[derive(Debug)]
pub struct Case {
    pub name: &'static str,
    pub spec: String,
    pub expect: &'static [&'static str],
}

impl Case {
    pub fn new(name: &'static str, spec: &str, expect: &'static [&'static str]) -> Self {
        Self {
            name,
            spec: spec.to_owned(),
            expect,
        }
    }
}

fn api(client: kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("palisade.dev", "v1alpha1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

fn object(kind: &str, name: &str, spec_yaml: &str) -> Value {
    let spec: Value = serde_yaml::from_str(spec_yaml)
        .unwrap_or_else(|e| panic!("test spec {spec_yaml} is not YAML: {e}"));
    json!({
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": kind,
        "metadata": { "name": name },
        "spec": spec,
    })
}

async fn apply(
    cp: &ControlPlane,
    ns: &str,
    kind: &str,
    name: &str,
    spec: &str,
    dry_run: bool,
) -> Result<Value, String> {
    let mut pp = PatchParams::apply("palisade-admit-test").validation_strict();
    pp.dry_run = dry_run;
    let obj = object(kind, name, spec);
    match api(cp.client().await, ns, kind)
        .patch(name, &pp, &Patch::Apply(&obj))
        .await
    {
        Ok(stored) => Ok(serde_json::to_value(stored).unwrap_or_default()),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(e) => panic!("applying {kind} {name}: not an answer from the API server: {e}"),
    }
}

/// Applies the spec for real and returns the stored object (with the server's defaults).
pub async fn accepts(cp: &ControlPlane, ns: &str, kind: &str, name: &str, spec: &str) -> Value {
    apply(cp, ns, kind, name, spec, false)
        .await
        .unwrap_or_else(|msg| panic!("{kind} spec {spec} was rejected: {msg}"))
}

/// Applies every case (dry run) and fails listing each case that was accepted, or rejected
/// with a message missing an expected fragment.
pub async fn rejects(cp: &ControlPlane, ns: &str, kind: &str, cases: &[Case]) {
    let mut failures = vec![];
    for (i, case) in cases.iter().enumerate() {
        match apply(cp, ns, kind, &format!("bad-{i}"), &case.spec, true).await {
            Ok(_) => failures.push(format!("{}: accepted: {}", case.name, case.spec)),
            Err(msg) => {
                let missing: Vec<_> = case.expect.iter().filter(|f| !msg.contains(*f)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{}: message lacks {missing:?}: {msg}", case.name));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
