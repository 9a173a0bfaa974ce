//! Posture on the real control plane: the operator's leader finds what in a namespace is not
//! protected (pods without the sidecar, including one that only wears the injected label; an
//! app port no NetworkPolicy closes; a Service aimed at the app's port; a sidecar still on an
//! old bundle; actions without detection rules), writes it to the SecurityPosture `palisade`
//! with a score, Events and metrics, and clears each finding once it is fixed: the
//! NetworkPolicy it offers is applied as it stands. When a namespace stops using Palisade,
//! its posture goes.
//!
//! No network plugin runs here: what is checked is what the NetworkPolicies declare.

use palisade_e2e::collector::{metric_sum, post, report_from, token};
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};
use serde_json::Value;

/// A pod as the injector leaves it: the sidecar as a native sidecar that took over port `http`
/// (app port 8080 renamed `http-app`), and a gRPC port.
fn injected(name: &str, app: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
  "metadata": {{"name": "{name}", "labels": {{"app": "{app}", "palisade.dev/injected": "true"}},
               "annotations": {{"palisade.dev/injected": "0.1.0"}}}},
  "spec": {{
    "initContainers": [{{"name": "palisade-sidecar", "image": "example.invalid/palisade:1",
      "restartPolicy": "Always",
      "ports": [{{"name": "http", "containerPort": 15080}}, {{"name": "palisade-admin", "containerPort": 15081}}],
      "env": [{{"name": "PALISADE_UPSTREAM_PORT", "value": "8080"}}]}}],
    "containers": [{{"name": "app", "image": "example.invalid/web:1",
      "ports": [{{"name": "http-app", "containerPort": 8080}}, {{"name": "grpc", "containerPort": 9090}}]}}]}}}}"#
    )
}

/// A pod without the sidecar, with extra `labels` (JSON members).
fn bare(name: &str, app: &str, labels: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
  "metadata": {{"name": "{name}", "labels": {{"app": "{app}"{labels}}}}},
  "spec": {{"containers": [{{"name": "app", "image": "example.invalid/web:1",
    "ports": [{{"name": "http", "containerPort": 8080}}]}}]}}}}"#
    )
}

fn service(name: &str, app: &str, target: &str, annotations: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Service",
  "metadata": {{"name": "{name}", "annotations": {{{annotations}}}}},
  "spec": {{"selector": {{"app": "{app}"}}, "ports": [{{"port": 80, "targetPort": {target}}}]}}}}"#
    )
}

const ACTION: &str = palisade_e2e::DENY_ONE;

const RULE: &str = r#"apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: flooder}
spec:
  type: Flooder
"#;

fn posture(cp: &ControlPlane, ns: &str) -> Result<Value, String> {
    let out = cp
        .kubectl_ok(&["-n", ns, "get", "securityposture", "palisade", "-o", "json"])
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    // The operator creates the object, then writes its status (a second request): between
    // the two the object has no score yet, which is not a posture to judge.
    if v["status"]["score"].is_null() {
        return Err(format!("no status written yet: {}", v["status"]));
    }
    Ok(v["status"].clone())
}

/// `(kind, object, pods)` of each finding.
fn findings(status: &Value) -> Vec<(String, String, Vec<String>)> {
    status["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let pods = f["pods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            (
                f["kind"].as_str().unwrap_or_default().to_owned(),
                f["object"].as_str().unwrap_or_default().to_owned(),
                pods,
            )
        })
        .collect()
}

fn finding(kind: &str, object: &str, pods: &[&str]) -> (String, String, Vec<String>) {
    (
        kind.to_owned(),
        object.to_owned(),
        pods.iter().map(|p| (*p).to_owned()).collect(),
    )
}

/// Waits until the posture shows exactly `want` (in its order) with `score`.
async fn shows(
    cp: &ControlPlane,
    ns: &str,
    want: &[(String, String, Vec<String>)],
    score: i64,
) -> Value {
    eventually(&format!("the posture to show {want:?}"), || async {
        let s = posture(cp, ns)?;
        (findings(&s) == want && s["score"].as_i64() == Some(score))
            .then_some(s.clone())
            .ok_or(format!("{s}"))
    })
    .await
}

/// The reasons of the Warning Events about the namespace's SecurityPosture.
fn posture_events(cp: &ControlPlane, ns: &str) -> Result<Vec<String>, String> {
    let out = cp
        .kubectl_ok(&["-n", ns, "get", "events.events.k8s.io", "-o", "json"])
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == "SecurityPosture" && e["type"] == "Warning")
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test]
async fn the_posture_finds_what_is_unprotected_and_clears_what_is_fixed() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "posture").await;
    let n = ns.name();
    let args = [
        scope(&ns).to_vec(),
        vec![
            "--posture-interval".into(),
            "1s".into(),
            "--posture-stale-after".into(),
            "2s".into(),
        ],
    ]
    .concat();
    let op = Operator::start(cp, "op-posture", "op-posture", &args);

    // `web`: one pod with the sidecar, its app port open. `legacy`: a pod that opted out and
    // one that only wears the injected label and annotation (no sidecar runs in it). `db`:
    // left out by its annotation. One action, no detection rule.
    cp.apply(n, &injected("web-0", "web")).expect("pod");
    cp.apply(
        n,
        &bare(
            "legacy-0",
            "legacy",
            r#", "palisade.dev/inject": "disabled""#,
        ),
    )
    .expect("pod");
    cp.apply(
        n,
        &bare("legacy-1", "legacy", r#", "palisade.dev/injected": "true""#),
    )
    .expect("pod");
    cp.apply(n, &bare("db-0", "db", "")).expect("pod");
    cp.apply(n, &service("web", "web", r#""http""#, ""))
        .expect("svc");
    cp.apply(n, &service("legacy", "legacy", r#""http""#, ""))
        .expect("svc");
    cp.apply(
        n,
        &service("db", "db", "5432", r#""palisade.dev/posture": "ignore""#),
    )
    .expect("svc");
    cp.apply(n, ACTION).expect("action");

    // web counts ½ (a Medium finding), legacy 0 (High): 25, less 10 without detection rules.
    let status = shows(
        cp,
        n,
        &[
            finding(
                "PodsWithoutSidecar",
                "Service/legacy",
                &["legacy-0", "legacy-1"],
            ),
            finding("AppPortReachable", "Service/web", &["web-0"]),
            finding("NoDetectionRules", &format!("Namespace/{n}"), &[]),
        ],
        15,
    )
    .await;
    assert_eq!(status["protectedServices"], "0/2", "{status}");
    assert_eq!(status["findingCount"], 3, "{status}");
    let legacy = &status["findings"][0]["message"];
    assert!(
        legacy.as_str().is_some_and(|m| m.contains("opted out")),
        "{legacy}"
    );
    let table = cp
        .kubectl_ok(&["-n", n, "get", "posture"])
        .expect("kubectl get posture");
    assert!(
        table.contains("SCORE") && table.contains("15") && table.contains("0/2"),
        "{table}"
    );
    eventually("a Warning Event per finding", || async {
        let mut reasons = posture_events(cp, n)?;
        reasons.sort();
        reasons.dedup();
        (reasons == ["AppPortReachable", "NoDetectionRules", "PodsWithoutSidecar"])
            .then_some(())
            .ok_or(format!("{reasons:?}"))
    })
    .await;
    let m = op.metrics().expect("metrics");
    let labels = format!("namespace=\"{n}\"");
    assert_eq!(
        metric_sum(&m, "palisade_operator_posture_score", &labels),
        15
    );
    let kind = |k: &str| format!("{labels},kind=\"{k}\"");
    let findings_metric = "palisade_operator_posture_findings";
    assert_eq!(
        metric_sum(&m, findings_metric, &kind("AppPortReachable")),
        1,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, findings_metric, &kind("PodsWithoutSidecar")),
        1,
        "{m}"
    );
    assert!(
        m.contains(&format!("{findings_metric}{{{}}} 0", kind("StalePolicy"))),
        "{m}"
    );

    // Fix it: apply the NetworkPolicy the finding offers as it stands, add a detection rule,
    // remove the legacy pods.
    // As docs/api.md says to (every policy offered, in one stream).
    let offered = cp
        .kubectl_ok(&[
            "-n",
            n,
            "get",
            "posture",
            "palisade",
            "-o",
            "go-template={{range .status.findings}}{{with .networkPolicy}}{{.}}{{end}}{{end}}",
        ])
        .expect("the offered NetworkPolicies");
    assert!(offered.starts_with("---\n"), "{offered}");
    assert_eq!(
        offered.matches("kind: NetworkPolicy").count(),
        1,
        "{offered}"
    );
    cp.apply(n, &offered)
        .expect("the offered NetworkPolicy applies");
    cp.apply(n, RULE).expect("rule");
    cp.kubectl_ok(&[
        "-n",
        n,
        "delete",
        "pod",
        "legacy-0",
        "legacy-1",
        "--wait=false",
    ])
    .expect("delete");
    let status = shows(cp, n, &[], 100).await;
    assert_eq!(status["protectedServices"], "1/1", "{status}");
    assert_eq!(status["summary"], "no findings", "{status}");

    // A sidecar that keeps reporting a bundle older than the namespace's is stale.
    let generation = eventually("the action's bundle generation", || async {
        let out = cp
            .kubectl_ok(&["-n", n, "get", "securityaction", "deny-one", "-o", "json"])
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        v["status"]["bundleGeneration"]
            .as_u64()
            .ok_or(format!("{}", v["status"]))
    })
    .await;
    let report = |generation: u64| {
        let mut r = report_from(n, "127.0.0.9", [127, 0, 2, 0], 1, jiff::Timestamp::now());
        r.sidecar.pod = "web-0".into();
        r.sidecar.workload = "web".into();
        r.generation = Some(generation);
        r.to_json()
    };
    let sa = token(cp, n, "palisade");
    eventually("the stale sidecar to be found", || async {
        let (code, msg) = post(&op.collector, &sa, report(generation - 1)).await;
        if code != 202 {
            return Err(format!("report: {code} {msg}"));
        }
        let s = posture(cp, n)?;
        (findings(&s) == [finding("StalePolicy", "Service/web", &["web-0"])])
            .then_some(())
            .ok_or(format!("{s}"))
    })
    .await;
    // The posture lists each sidecar's generation, and `kubectl palisade status` shows it.
    let s = posture(cp, n).expect("posture");
    assert_eq!(s["bundleGeneration"].as_u64(), Some(generation), "{s}");
    assert_eq!(s["sidecarCount"], 1, "{s}");
    assert_eq!(s["sidecars"][0]["pod"], "web-0", "{s}");
    assert_eq!(
        s["sidecars"][0]["generation"].as_u64(),
        Some(generation - 1),
        "{s}"
    );
    let out = palisade_e2e::kubectl_palisade(cp, &["status", "-n", n]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("web-0") && l.contains("behind")),
        "{table}"
    );
    let (code, msg) = post(&op.collector, &sa, report(generation)).await;
    assert_eq!(code, 202, "{msg}");
    let s = shows(cp, n, &[], 100).await;
    assert_eq!(
        s["sidecars"][0]["generation"].as_u64(),
        Some(generation),
        "{s}"
    );

    // A second Service aimed at the app's port number goes around the sidecar.
    cp.apply(n, &service("direct", "web", "8080", ""))
        .expect("svc");
    let status = shows(
        cp,
        n,
        &[finding(
            "ServiceBypassesSidecar",
            "Service/direct",
            &["web-0"],
        )],
        50,
    )
    .await;
    assert_eq!(status["protectedServices"], "1/2", "{status}");
}

/// A namespace that stops using Palisade (no action, rule, labelled opt-in, injected pod or
/// reporting sidecar left) loses its posture and its gauges.
#[tokio::test]
async fn a_namespace_that_stops_using_palisade_loses_its_posture() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "posture-gone").await;
    let n = ns.name();
    let args = [
        scope(&ns).to_vec(),
        vec!["--posture-interval".into(), "1s".into()],
    ]
    .concat();
    let op = Operator::start(cp, "op-posture-gone", "op-posture-gone", &args);
    cp.apply(n, ACTION).expect("action");
    let s = eventually("the posture", || async { posture(cp, n) }).await;
    assert_eq!(s["score"], 90, "an action without rules: {s}");
    let labels = format!("namespace=\"{n}\"");
    eventually("the posture gauge", || async {
        let m = op.metrics()?;
        (metric_sum(&m, "palisade_operator_posture_score", &labels) == 90)
            .then_some(())
            .ok_or(m)
    })
    .await;
    cp.kubectl_ok(&["-n", n, "delete", "securityaction", "deny-one"])
        .expect("delete");
    eventually("the posture to be deleted", || async {
        match posture(cp, n) {
            Err(e) if e.contains("NotFound") || e.contains("not found") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eventually("the posture metrics to go", || async {
        let m = op.metrics()?;
        let left = m
            .lines()
            .any(|l| l.starts_with("palisade_operator_posture") && l.contains(&labels));
        (!left).then_some(()).ok_or(m)
    })
    .await;
}
