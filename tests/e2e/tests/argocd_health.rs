//! The Argo CD health checks in `deploy/argocd/palisade.dev/<Kind>/health.lua`, run the way
//! Argo CD runs them: Lua 5.1 (Argo CD embeds gopher-lua) with only the base, table and
//! package libraries open (no `string`, unless `useOpenLibs` is set), the object as the global
//! `obj`, JSON nulls as `nil`.
//!
//! Every case of each `health_test.yaml` (Argo CD's upstream layout) is checked, and so are the
//! SecurityActions and DetectionRules the real operator writes statuses on: active, paused (on
//! the action, then on its namespace), expired, invalid, not yet observed; a running rule, a
//! paused one and a TorList rule whose ConfigMap is missing; and a SecurityIncident the
//! collector opens from reported traffic.
//! `PALISADE_ARGOCD_WRITE_TESTDATA=1` writes those live objects into the testdata, so the
//! fixtures are real status.

use std::path::{Path, PathBuf};

use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaOptions, LuaSerdeExt as _, StdLib, Table};
use palisade_e2e::{ControlPlane, Operator, TempNs, collector, eventually};
use serde::Deserialize;

const KINDS: [&str; 3] = ["SecurityAction", "DetectionRule", "SecurityIncident"];

fn kind_dir(kind: &str) -> PathBuf {
    palisade_e2e::repo_root()
        .join("deploy/argocd/palisade.dev")
        .join(kind)
}

/// What a health check returned.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Health {
    status: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    health_status: Health,
    input_path: String,
}

#[derive(Debug, Deserialize)]
struct HealthTests {
    tests: Vec<Case>,
}

/// Runs `kind`'s health.lua on `obj` as Argo CD does.
fn health(kind: &str, obj: &serde_json::Value) -> Result<Health, String> {
    let path = kind_dir(kind).join("health.lua");
    let script = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lua = Lua::new_with(StdLib::TABLE | StdLib::PACKAGE, LuaOptions::default())
        .map_err(|e| e.to_string())?;
    let opts = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, opts).map_err(|e| e.to_string())?;
    lua.globals().set("obj", value).map_err(|e| e.to_string())?;
    let out: Table = lua
        .load(&script)
        .set_name(path.display().to_string())
        .eval()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let status: String = out.get("status").map_err(|e| e.to_string())?;
    let message: Option<String> = out.get("message").map_err(|e| e.to_string())?;
    Ok(Health {
        status,
        message: message.unwrap_or_default(),
    })
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_case_of_every_health_test_yaml_returns_its_status_and_message() {
    let mut seen = std::collections::BTreeSet::new();
    for kind in KINDS {
        let dir = kind_dir(kind);
        let tests: HealthTests = read_yaml(&dir.join("health_test.yaml"));
        assert!(
            !tests.tests.is_empty(),
            "{kind}: health_test.yaml has no case"
        );
        for case in tests.tests {
            let obj: serde_json::Value = read_yaml(&dir.join(&case.input_path));
            assert_eq!(obj["kind"], kind, "{}: wrong kind", case.input_path);
            let got = health(kind, &obj).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(got, case.health_status, "{kind} {}", case.input_path);
            seen.insert((kind, got.status));
        }
    }
    for want in [
        ("SecurityAction", "Healthy"),
        ("SecurityAction", "Progressing"),
        ("SecurityAction", "Degraded"),
        ("SecurityAction", "Suspended"),
        ("DetectionRule", "Healthy"),
        ("DetectionRule", "Progressing"),
        ("DetectionRule", "Degraded"),
        ("DetectionRule", "Suspended"),
        ("SecurityIncident", "Healthy"),
        ("SecurityIncident", "Progressing"),
    ] {
        assert!(
            seen.contains(&(want.0, want.1.to_owned())),
            "no test case for {want:?}"
        );
    }
}

#[test]
fn every_testdata_file_is_used_by_a_case() {
    for kind in KINDS {
        let dir = kind_dir(kind);
        let tests: HealthTests = read_yaml(&dir.join("health_test.yaml"));
        let used: Vec<&str> = tests.tests.iter().map(|c| c.input_path.as_str()).collect();
        for entry in std::fs::read_dir(dir.join("testdata")).expect("testdata dir") {
            let name = entry.expect("entry").file_name();
            let rel = format!("testdata/{}", name.to_string_lossy());
            assert!(used.contains(&rel.as_str()), "{kind}: {rel} is not tested");
        }
    }
}

#[test]
fn the_scripts_need_no_string_library() {
    // Argo CD opens `string` only with resource.customizations.useOpenLibs; a script calling
    // string.* would fail there while passing with a full Lua.
    let obj = serde_json::json!({
        "apiVersion": "palisade.dev/v1alpha1",
        "metadata": {"name": "x", "generation": 1},
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": "R", "message": "m"}]}
    });
    for kind in KINDS {
        let got = health(kind, &obj).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(got.status, "Degraded", "{kind}");
        assert_eq!(got.message, "R: m", "{kind}");
    }
}

const ACTIONS: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: active}
spec:
  deny: {status: 429}
  conditions:
    ipRanges: ["198.51.100.0/24"]
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata:
  name: paused
  annotations: {palisade.dev/paused: "true"}
spec:
  deny: {}
  conditions:
    ipRanges: ["203.0.113.0/24"]
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: invalid}
spec:
  deny: {}
  conditions:
    ipRangesFrom: [{name: missing-list, key: ips}]
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: unenforced}
spec:
  deny: {}
  matchAll: true
  targets:
    workloadSelector:
      matchLabels: {app: nobody}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: expired}
spec:
  ttl: 1s
  deny: {}
  conditions:
    ipRanges: ["192.0.2.0/24"]
"#;

const RULES: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: flooder}
spec:
  type: Flooder
  flooder: {window: 5m, minSharePercent: 5, minRequests: 300, minActiveClients: 20}
---
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata:
  name: paused-rule
  annotations: {palisade.dev/paused: "true"}
spec:
  type: Flooder
  flooder: {window: 1m, minSharePercent: 5, minRequests: 300, minActiveClients: 20}
---
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: tor-list}
spec:
  type: TorList
  torList:
    fromConfigMap: {name: tor-exit-list, key: torbulkexitlist}
"#;

/// The SecurityAction as Argo CD sees it (no managedFields noise in fixtures).
fn live(cp: &ControlPlane, ns: &str, name: &str) -> Result<serde_json::Value, String> {
    live_kind(cp, ns, "securityaction", name)
}

/// The object `kind`/`name` as Argo CD sees it.
fn live_kind(
    cp: &ControlPlane,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<serde_json::Value, String> {
    let text = cp
        .kubectl_ok(&["-n", ns, "get", kind, name, "-o", "json"])
        .map_err(|e| e.to_string())?;
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if let Some(meta) = v["metadata"].as_object_mut() {
        for noisy in [
            "managedFields",
            "uid",
            "resourceVersion",
            "creationTimestamp",
        ] {
            meta.remove(noisy);
        }
        meta.insert("namespace".into(), "shop".into());
    }
    Ok(v)
}

/// Waits until SecurityAction `name`'s health is `want` and returns the object.
async fn wait_health(cp: &ControlPlane, ns: &str, name: &str, want: &str) -> serde_json::Value {
    wait_kind_health(cp, ns, "SecurityAction", name, want).await
}

/// Waits until `kind`/`name`'s health is `want` and returns the object.
async fn wait_kind_health(
    cp: &ControlPlane,
    ns: &str,
    kind: &str,
    name: &str,
    want: &str,
) -> serde_json::Value {
    eventually(&format!("{kind} {name} to be {want}"), || async {
        let obj = live_kind(cp, ns, &kind.to_lowercase(), name)?;
        let h = health(kind, &obj)?;
        (h.status == want)
            .then_some(obj)
            .ok_or(format!("{name} is {h:?}"))
    })
    .await
}

#[tokio::test]
async fn the_real_operators_statuses_map_to_the_documented_health() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "argocd-health").await;
    cp.apply(ns.name(), ACTIONS).expect("apply actions");
    cp.apply(ns.name(), RULES).expect("apply rules");
    // Before any operator ran: no status yet.
    let fresh = live(cp, ns.name(), "active").expect("active");
    assert_eq!(
        health("SecurityAction", &fresh).expect("health").status,
        "Progressing"
    );
    let _op = Operator::start(
        cp,
        "op-argocd-health",
        "argocd-health",
        &palisade_e2e::scope(&ns),
    );
    let active = wait_health(cp, ns.name(), "active", "Healthy").await;
    let paused = wait_health(cp, ns.name(), "paused", "Suspended").await;
    let invalid = wait_health(cp, ns.name(), "invalid", "Degraded").await;
    // In the bundle, but its workload selector selects no pod with the sidecar: nothing
    // enforces it, and Argo CD must not show it Healthy.
    let unenforced = wait_health(cp, ns.name(), "unenforced", "Degraded").await;
    let expired = eventually("expired to be Expired", || async {
        let obj = live(cp, ns.name(), "expired")?;
        let h = health("SecurityAction", &obj)?;
        (h.status == "Healthy" && h.message.starts_with("Expired: "))
            .then_some(obj)
            .ok_or(format!("expired is {h:?}"))
    })
    .await;
    let m = |o: &serde_json::Value| health("SecurityAction", o).expect("health").message;
    assert!(m(&paused).contains("palisade.dev/paused"), "{}", m(&paused));
    assert!(m(&invalid).contains("missing-list"), "{}", m(&invalid));
    assert!(
        m(&unenforced).starts_with("NoSelectedPods: ") && m(&unenforced).contains("selects no pod"),
        "{}",
        m(&unenforced)
    );

    // DetectionRules: one that runs, one paused (Ready=False as well, but not Degraded).
    let rule = |o: &serde_json::Value| health("DetectionRule", o).expect("health").message;
    let flooder = wait_kind_health(cp, ns.name(), "DetectionRule", "flooder", "Healthy").await;
    let rule_paused =
        wait_kind_health(cp, ns.name(), "DetectionRule", "paused-rule", "Suspended").await;
    assert!(
        rule(&rule_paused).contains("palisade.dev/paused"),
        "{}",
        rule(&rule_paused)
    );
    assert!(!rule(&flooder).is_empty());
    // A TorList rule whose ConfigMap does not exist cannot detect anyone: Degraded, saying
    // which ConfigMap is missing.
    let tor_missing =
        wait_kind_health(cp, ns.name(), "DetectionRule", "tor-list", "Degraded").await;
    let want = format!(
        "ConfigMapNotFound: ConfigMap {}/tor-exit-list not found",
        ns.name()
    );
    assert!(
        rule(&tor_missing).starts_with(&want),
        "{}",
        rule(&tor_missing)
    );

    // A spec change the operator has not observed yet is Progressing, whatever the status.
    let mut stale = active.clone();
    stale["metadata"]["generation"] = serde_json::json!(
        active["status"]["observedGeneration"]
            .as_i64()
            .expect("observed")
            + 1
    );
    assert_eq!(
        health("SecurityAction", &stale).expect("health").status,
        "Progressing"
    );

    // Pausing the namespace suspends every action in it, the active one included.
    cp.kubectl_ok(&[
        "annotate",
        "namespace",
        ns.name(),
        "palisade.dev/paused=true",
    ])
    .expect("annotate namespace");
    let ns_paused = wait_health(cp, ns.name(), "active", "Suspended").await;
    assert!(
        m(&ns_paused).contains("palisade.dev/paused"),
        "{}",
        m(&ns_paused)
    );

    if std::env::var_os("PALISADE_ARGOCD_WRITE_TESTDATA").is_some() {
        let dir = kind_dir("DetectionRule").join("testdata");
        for (file, obj) in [
            ("healthy.yaml", &flooder),
            ("suspended-paused.yaml", &rule_paused),
            ("degraded-missing-list.yaml", &tor_missing),
        ] {
            // Messages name the test namespace; fixtures say `shop`.
            let text = serde_yaml::to_string(obj)
                .expect("YAML")
                .replace(ns.name(), "shop");
            std::fs::write(dir.join(file), text).expect("write testdata");
        }
        let dir = kind_dir("SecurityAction").join("testdata");
        for (file, obj) in [
            ("progressing-no-status.yaml", &fresh),
            ("healthy.yaml", &active),
            ("suspended-paused.yaml", &paused),
            ("degraded-invalid.yaml", &invalid),
            ("degraded-unenforced.yaml", &unenforced),
            ("healthy-expired.yaml", &expired),
            ("progressing-generation.yaml", &stale),
        ] {
            let text = serde_yaml::to_string(obj).expect("YAML");
            std::fs::write(dir.join(file), text).expect("write testdata");
        }
    }
}

use palisade_e2e::flood::QUICK_FLOODER as FLOODER;

#[tokio::test]
async fn a_real_incident_from_the_collector_is_healthy_with_its_risk_and_summary() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "argocd-incident").await;
    let op = Operator::start(
        cp,
        "op-argocd-incident",
        "argocd-incident",
        &palisade_e2e::scope(&ns),
    );
    cp.apply(ns.name(), FLOODER).expect("apply rule");
    let token = collector::token(cp, ns.name(), "palisade");
    // Report every try, as a sidecar does every second, until the collector opens an incident.
    let incident = eventually("a SecurityIncident from the flood", || async {
        // One second of a sidecar's traffic: 2000 requests from 198.51.100.66 and one from
        // each of 20 ordinary clients.
        let now = jiff::Timestamp::now();
        let report =
            collector::report_from(ns.name(), "198.51.100.66", [203, 0, 113, 0], 2000, now);
        let (code, _) = collector::post(&op.collector, &token, report.to_json()).await;
        let text = cp
            .kubectl_ok(&["-n", ns.name(), "get", "securityincidents", "-o", "json"])
            .map_err(|e| e.to_string())?;
        let list: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["status"]["state"].is_string()))
            .cloned()
            .ok_or(format!(
                "report answered {code}; no incident with a status yet"
            ))
    })
    .await;
    let got = health("SecurityIncident", &incident).expect("health");
    let status = &incident["status"];
    assert_eq!(got.status, "Healthy", "{got:?} for {status}");
    let risk = status["riskLevel"].as_str().expect("riskLevel");
    let summary = status["displayName"].as_str().expect("displayName");
    assert_eq!(got.message, format!("{risk} risk: {summary}"), "{status}");

    let mut fresh = incident.clone();
    fresh.as_object_mut().expect("object").remove("status");
    assert_eq!(
        health("SecurityIncident", &fresh).expect("health").status,
        "Progressing"
    );

    if std::env::var_os("PALISADE_ARGOCD_WRITE_TESTDATA").is_some() {
        let name = incident["metadata"]["name"].as_str().expect("name");
        let obj = live_kind(cp, ns.name(), "securityincident", name).expect("incident");
        let dir = kind_dir("SecurityIncident").join("testdata");
        // The proposed action names the test namespace; fixtures say `shop`.
        let text = serde_yaml::to_string(&obj)
            .expect("YAML")
            .replace(ns.name(), "shop");
        std::fs::write(dir.join("healthy-active.yaml"), text).expect("write testdata");
    }
}
