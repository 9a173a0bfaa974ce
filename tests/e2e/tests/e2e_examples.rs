//! Every manifest in `examples/` is accepted by the real API server with server-side apply,
//! re-applying it after the operator has reconciled it changes nothing (`kubectl diff
//! --server-side` is empty: no drift for Argo CD), and what users see of it with kubectl —
//! `get palisade`, the printer columns, `explain` — is there.

use std::path::PathBuf;

use palisade_e2e::{ControlPlane, Operator, TempNs, eventually};

fn examples() -> Vec<PathBuf> {
    let dir = palisade_e2e::repo_root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_example_applies_and_reapplies_without_a_diff_after_the_operator_reconciled() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let files = examples();
    assert!(
        files.len() >= 19,
        "expected one example per use case, found {files:?}"
    );
    // One namespace per example, all selected by one operator through a label.
    let label = format!("palisade.dev/e2e-examples={}", std::process::id());
    let mut failures = vec![];
    let mut applied = vec![];
    for file in &files {
        let ns = TempNs::new(cp, "examples").await;
        cp.kubectl_ok(&["label", "namespace", ns.name(), &label])
            .unwrap_or_else(|e| panic!("labelling {}: {e}", ns.name()));
        let path = file.to_string_lossy().into_owned();
        let apply = ["apply", "--server-side", "-n", ns.name(), "-f", &path];
        match cp.kubectl_ok(&apply) {
            Ok(_) => applied.push((ns, path)),
            Err(e) => failures.push(format!("{path}: not accepted: {e}")),
        }
    }
    let _op = Operator::start(
        cp,
        "op-examples",
        "examples",
        &["--namespace-selector", &label],
    );
    for (ns, path) in &applied {
        eventually(&format!("the operator to reconcile {path}"), || async {
            unobserved(cp, ns.name())
        })
        .await;
    }
    for (ns, path) in &applied {
        let out = cp
            .kubectl()
            .args(["diff", "--server-side", "-n", ns.name(), "-f", path])
            .output()
            .unwrap_or_else(|e| panic!("running kubectl diff: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.code() != Some(0) || !stdout.trim().is_empty() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            failures.push(format!(
                "{path}: re-apply would change it ({:?}):\n{stdout}{stderr}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `Ok` once every SecurityAction and DetectionRule of `ns` has a status for its current
/// generation; otherwise the ones still waiting.
fn unobserved(cp: &ControlPlane, ns: &str) -> Result<(), String> {
    let text = cp
        .kubectl_ok(&[
            "-n",
            ns,
            "get",
            "securityactions,detectionrules",
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    let list: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return Err(format!("no SecurityAction or DetectionRule in {ns}"));
    }
    let waiting: Vec<String> = items
        .iter()
        .filter(|o| {
            o["status"]["observedGeneration"] != o["metadata"]["generation"]
                || o["status"]["conditions"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
        })
        .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(format!("not reconciled yet: {waiting:?}"))
    }
}

#[tokio::test]
async fn kubectl_shows_the_resources_with_their_columns_and_docs() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "examples-kubectl").await;
    let root = palisade_e2e::repo_root().join("examples");
    for file in ["deny-tor-exits.yaml", "action-with-ttl.yaml"] {
        let path = root.join(file);
        cp.kubectl_ok(&[
            "apply",
            "--server-side",
            "-n",
            ns.name(),
            "-f",
            &path.to_string_lossy(),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let all = cp
        .kubectl_ok(&["get", "palisade", "-n", ns.name()])
        .unwrap_or_else(|e| panic!("{e}"));
    for expected in [
        "detectionrule.palisade.dev/tor-exits",
        "securityaction.palisade.dev/deny-tor-exits",
    ] {
        assert!(
            all.contains(expected),
            "kubectl get palisade lacks {expected}:\n{all}"
        );
    }
    let actions = cp
        .kubectl_ok(&["get", "secactions", "-n", ns.name()])
        .unwrap_or_else(|e| panic!("{e}"));
    let header = actions.lines().next().unwrap_or_default();
    for column in ["NAME", "VERB", "MODE", "STATE", "EXPIRES", "AGE"] {
        assert!(header.contains(column), "no {column} column: {header}");
    }
    assert!(
        actions.contains("Enforce"),
        "the defaulted mode shows: {actions}"
    );
    let rules = cp
        .kubectl_ok(&["get", "detrules", "-n", ns.name()])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rules.contains("TorList"), "{rules}");
    let incidents = cp.kubectl_ok(&["get", "incidents", "-n", ns.name()]);
    assert!(
        incidents.is_ok(),
        "the short name incidents resolves: {incidents:?}"
    );
    let table = cp
        .kubectl_ok(&[
            "get",
            "crd",
            "securityincidents.palisade.dev",
            "-o",
            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        table,
        "Risk Scope State Rules Clients Requests First Seen Last Seen Age"
    );
    let explain = eventually("kubectl explain to show the CRD docs", || async {
        let out = cp
            .kubectl_ok(&["explain", "securityaction.spec.conditions"])
            .map_err(|e| e.to_string())?;
        if out.contains("ipRanges") {
            Ok(out)
        } else {
            Err(format!("not yet: {out}"))
        }
    })
    .await;
    for expected in ["ipRanges", "regionCodes", "sha256sum", "detectedBy", "AND"] {
        assert!(
            explain.contains(expected),
            "kubectl explain lacks {expected}:\n{explain}"
        );
    }
}
