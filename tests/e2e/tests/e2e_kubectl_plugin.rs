//! `kubectl palisade` on the real control plane, found by kubectl itself on the `PATH`: pause
//! and resume an action (until resumed, and for a while), the namespace switch, `status` in
//! each output format; usage errors exit 2 and write nothing, missing objects and contexts
//! exit 1 naming them.

use std::process::Output;

use palisade_e2e::workspace_bin;
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};
use serde_json::Value;

const ACTION: &str = palisade_e2e::DENY_ONE;

fn plugin(cp: &ControlPlane, args: &[&str]) -> Output {
    palisade_e2e::kubectl_palisade(cp, args)
}

fn ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = plugin(cp, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "kubectl palisade {args:?}: {stderr}");
    stdout.into_owned()
}

/// The exit code and stderr of a command that must fail.
fn fails(cp: &ControlPlane, args: &[&str]) -> (i32, String) {
    let out = plugin(cp, args);
    assert!(!out.status.success(), "kubectl palisade {args:?} succeeded");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn action(cp: &ControlPlane, ns: &str) -> Value {
    let out = cp
        .kubectl_ok(&["-n", ns, "get", "securityaction", "deny-one", "-o", "json"])
        .expect("get action");
    serde_json::from_str(&out).expect("json")
}

async fn state_is(cp: &ControlPlane, ns: &str, want: &str) -> Value {
    eventually(&format!("the action to be {want}"), || async {
        let a = action(cp, ns);
        (a["status"]["state"] == want)
            .then_some(a.clone())
            .ok_or(format!("{}", a["status"]))
    })
    .await
}

#[tokio::test]
async fn kubectl_palisade_pauses_resumes_and_shows_the_namespace() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "plugin").await;
    let n = ns.name();
    let args = [
        scope(&ns).to_vec(),
        vec!["--posture-interval".into(), "1s".into()],
    ]
    .concat();
    let _op = Operator::start(cp, "op-plugin", "op-plugin", &args);
    cp.apply(n, ACTION).expect("action");
    state_is(cp, n, "Active").await;

    // Until resumed.
    let out = ok(cp, &["pause", "deny-one", "-n", n]);
    assert_eq!(out.trim(), "securityaction.palisade.dev/deny-one paused");
    let a = state_is(cp, n, "Paused").await;
    assert_eq!(a["metadata"]["annotations"]["palisade.dev/paused"], "true");
    let table = ok(cp, &["status", "-n", n]);
    assert!(
        table.contains("ACTION")
            && table
                .lines()
                .any(|l| l.starts_with("deny-one") && l.contains("Paused")),
        "{table}"
    );
    ok(cp, &["resume", "deny-one", "-n", n]);
    let a = state_is(cp, n, "Active").await;
    assert!(
        a["metadata"]["annotations"]["palisade.dev/paused"].is_null(),
        "{a}"
    );

    // For a while: the operator resolves the duration and resumes by itself.
    let out = ok(cp, &["pause", "deny-one", "--for", "2h", "-n", n]);
    assert!(out.contains("paused until 2h"), "{out}");
    let a = state_is(cp, n, "Paused").await;
    assert_eq!(
        a["metadata"]["annotations"]["palisade.dev/paused-until"],
        "2h"
    );
    assert!(a["status"]["pausedUntil"].is_string(), "{}", a["status"]);
    let table = eventually("status to show the pause's end and the posture", || async {
        let t = ok(cp, &["status", "-n", n]);
        // The posture comes with the leader's first check of the namespace.
        (t.contains("paused until 20") && t.contains("Posture: score"))
            .then_some(t.clone())
            .ok_or(t)
    })
    .await;
    assert!(table.contains("Posture: score"), "{table}");

    // Usage errors exit 2 and leave the annotations as they were.
    let (code, err) = fails(cp, &["pause", "deny-one", "--for", "soon", "-n", n]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--for") && err.contains("like 2h"), "{err}");
    let (code, err) = fails(cp, &["pause", "-n", n]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--all"), "{err}");
    let (code, _) = fails(cp, &["status", "-o", "xml", "-n", n]);
    assert_eq!(code, 2);
    assert_eq!(
        action(cp, n)["metadata"]["annotations"]["palisade.dev/paused-until"],
        "2h"
    );
    // Missing objects and contexts exit 1, named.
    let (code, err) = fails(cp, &["pause", "missing", "-n", n]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "securityaction \"missing\" not found in namespace \"{n}\""
        )),
        "{err}"
    );
    let (code, err) = fails(cp, &["status", "--context", "nope", "-n", n]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("\"nope\""), "{err}");
    ok(cp, &["resume", "deny-one", "-n", n]);
    state_is(cp, n, "Active").await;

    // The namespace switch.
    let out = ok(cp, &["pause", "--all", "-n", n]);
    assert!(out.starts_with(&format!("namespace/{n} paused")), "{out}");
    state_is(cp, n, "Paused").await;
    let json: Value =
        serde_json::from_str(&ok(cp, &["status", "-o", "json", "-n", n])).expect("json");
    assert_eq!(json["paused"], true, "{json}");
    assert_eq!(json["actions"][0]["name"], "deny-one", "{json}");
    assert_eq!(json["actions"][0]["state"], "Paused", "{json}");
    assert_eq!(json["rules"], Value::Array(vec![]), "{json}");
    ok(cp, &["resume", "--all", "-n", n]);
    state_is(cp, n, "Active").await;

    // YAML and wide.
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&ok(cp, &["status", "-o", "yaml", "-n", n])).expect("yaml");
    assert_eq!(yaml["namespace"].as_str(), Some(n));
    assert!(ok(cp, &["status", "-o", "wide", "-n", n]).contains("GENERATION"));
}

/// Actions of every kind of outcome: a deny, an allow that overrides it for one address, a
/// flag, an observed deny, a workload-scoped deny, a paused deny, a rate limit.
const ACTIONS: &str = r#"apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-bad}
spec:
  deny: {status: 403}
  conditions: {ipRanges: [192.0.2.0/24]}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: allow-office}
spec:
  allow: {}
  conditions: {ipRanges: [192.0.2.7/32]}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: flag-login}
spec:
  flag: {headers: [{name: X-Suspect, value: login}]}
  conditions: {paths: [{value: /login, type: Prefix}]}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: observe-admin}
spec:
  mode: Observe
  deny: {status: 404}
  conditions: {paths: [{value: /admin, type: Prefix}]}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-internal}
spec:
  deny: {status: 451}
  conditions: {paths: [{value: /internal, type: Prefix}]}
  targets: {workloadSelector: {matchLabels: {app: api}}}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata:
  name: paused-deny
  annotations: {palisade.dev/paused: "true"}
spec:
  deny: {status: 403}
  conditions: {paths: [{value: /, type: Prefix}]}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: limit-search}
spec:
  rateLimit: {requests: 10, per: Second}
  conditions: {paths: [{value: /search, type: Prefix}]}
"#;

/// A pod as the injector leaves it, whose sidecar trusts `keys`.
fn injected_pod(name: &str, keys: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
  "metadata": {{"name": "{name}", "labels": {{"app": "api", "palisade.dev/injected": "true"}}}},
  "spec": {{
    "initContainers": [{{"name": "palisade-sidecar", "image": "example.invalid/palisade:1",
      "restartPolicy": "Always",
      "env": [{{"name": "PALISADE_UPSTREAM_PORT", "value": "8080"}},
              {{"name": "PALISADE_BUNDLE_KEYS", "value": "{keys}"}},
              {{"name": "PALISADE_BUNDLE_DIR", "value": "/etc/palisade/bundle"}}]}}],
    "containers": [{{"name": "app", "image": "example.invalid/web:1",
      "ports": [{{"name": "http-app", "containerPort": 8080}}]}}]}}}}"#
    )
}

fn explain(cp: &ControlPlane, ns: &str, args: &[&str]) -> Value {
    let mut all = vec!["explain", "-n", ns, "-o", "json"];
    all.extend(args);
    serde_json::from_str(&ok(cp, &all)).expect("json")
}

/// `(matches, outcome)` of action `name` in an explanation.
fn of(e: &Value, name: &str) -> (Value, String) {
    let a = e["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {e}"));
    (
        a["matches"].clone(),
        a["outcome"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn kubectl_palisade_explain_answers_with_the_enforced_bundle_and_the_sidecars_code() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "explain").await;
    let n = ns.name();
    let _op = Operator::start(cp, "op-explain", "op-explain", &scope(&ns));
    cp.apply(n, ACTIONS).expect("actions");
    // The keys the operator publishes with its bundle: what the injector gives sidecars.
    let keys = eventually("the bundle with every action", || async {
        let out = cp
            .kubectl_ok(&["-n", n, "get", "configmap", "palisade-bundle", "-o", "json"])
            .map_err(|e| e.to_string())?;
        let cm: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let manifest = cm["data"]["manifest.json"].as_str().unwrap_or_default();
        if !manifest.contains("limit-search") && !cm["binaryData"].is_object() {
            return Err("no bundle yet".to_owned());
        }
        let chain: Value = serde_json::from_str(cm["data"]["keys.json"].as_str().unwrap_or("[]"))
            .map_err(|e| e.to_string())?;
        let keys: Vec<&str> = chain
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["key"].as_str())
            .collect();
        (!keys.is_empty())
            .then(|| keys.join(","))
            .ok_or(format!("{cm}"))
    })
    .await;
    cp.apply(n, &injected_pod("api-0", &keys)).expect("pod");
    let foreign = palisade_policy::sign::KeyRing::generate(1)
        .expect("a key")
        .trust_list();
    cp.apply(n, &injected_pod("api-1", &foreign)).expect("pod");
    eventually("every action compiled", || async {
        let e = explain(cp, n, &["--ip", "203.0.113.1"]);
        let pending = e["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| {
                a["outcome"]
                    .as_str()
                    .is_some_and(|o| o.contains("not in the bundle yet"))
            })
            .count();
        (e["actions"].as_array().map(Vec::len) == Some(7) && pending == 0)
            .then_some(())
            .ok_or(format!("{e}"))
    })
    .await;

    // A deny decides; the paused action is not in the bundle.
    let e = explain(cp, n, &["--ip", "192.0.2.9", "--path", "/x"]);
    assert_eq!(
        (
            e["decision"].as_str(),
            e["decidedBy"].as_str(),
            e["status"].as_u64()
        ),
        (Some("deny"), Some("deny-bad"), Some(403)),
        "{e}"
    );
    assert!(of(&e, "deny-bad").1.starts_with("decides"), "{e}");
    assert_eq!(of(&e, "allow-office").0, false, "{e}");
    assert!(
        of(&e, "paused-deny")
            .1
            .starts_with("not in the bundle: Paused"),
        "{e}"
    );
    assert!(
        e["signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("not checked")),
        "{e}"
    );
    // The allow overrides it for its one address.
    let e = explain(cp, n, &["--ip", "192.0.2.7", "--path", "/x"]);
    assert_eq!(
        (e["decision"].as_str(), e["decidedBy"].as_str()),
        (Some("allow"), Some("allow-office")),
        "{e}"
    );
    assert!(
        of(&e, "deny-bad")
            .1
            .contains("overridden: allow action allow-office wins"),
        "{e}"
    );
    // Paths are matched as the sidecar normalises them: /x/../login is /login.
    let e = explain(
        cp,
        n,
        &[
            "--ip",
            "198.51.100.1",
            "--path",
            "/x/../login",
            "--method",
            "POST",
        ],
    );
    assert_eq!(e["decision"], "forward", "{e}");
    assert_eq!(e["flaggedBy"], serde_json::json!(["flag-login"]), "{e}");
    assert_eq!(
        of(&e, "flag-login"),
        (Value::Bool(true), "adds its headers".to_owned()),
        "{e}"
    );
    // Observe mode matches and applies nothing.
    let e = explain(cp, n, &["--ip", "198.51.100.1", "--path", "/admin/users"]);
    assert_eq!(e["decision"], "forward", "{e}");
    assert!(of(&e, "observe-admin").1.contains("Observe mode"), "{e}");
    // A forged X-Forwarded-For from a peer nobody trusts does not move the client.
    let e = explain(
        cp,
        n,
        &[
            "--ip",
            "10.1.2.3",
            "-H",
            "X-Forwarded-For: 192.0.2.9",
            "--path",
            "/x",
        ],
    );
    assert_eq!(
        (e["clientIp"].as_str(), e["decision"].as_str()),
        (Some("10.1.2.3"), Some("forward")),
        "{e}"
    );
    // A rate limit meters; only the sidecars know the client's rate.
    let e = explain(cp, n, &["--ip", "198.51.100.1", "--path", "/search"]);
    assert!(of(&e, "limit-search").1.starts_with("meters"), "{e}");
    assert!(e["notes"].to_string().contains("limit-search"), "{e}");

    // Workload-scoped: only with --pod, and then against the keys that pod trusts.
    let e = explain(cp, n, &["--ip", "198.51.100.1", "--path", "/internal"]);
    assert_eq!(e["decision"], "forward", "{e}");
    assert!(of(&e, "deny-internal").1.contains("give --pod"), "{e}");
    let e = explain(
        cp,
        n,
        &[
            "--ip",
            "198.51.100.1",
            "--path",
            "/internal",
            "--pod",
            "api-0",
        ],
    );
    assert_eq!(
        (e["decidedBy"].as_str(), e["status"].as_u64()),
        (Some("deny-internal"), Some(451)),
        "{e}"
    );
    assert_eq!(
        e["signature"], "verified with the keys pod api-0 trusts",
        "{e}"
    );
    let (code, err) = fails(
        cp,
        &["explain", "-n", n, "--ip", "198.51.100.1", "--pod", "api-1"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not signed by a key pod \"api-1\" trusts"),
        "{err}"
    );

    // For people; and what cannot be read is said.
    let table = ok(
        cp,
        &["explain", "-n", n, "--ip", "192.0.2.9", "--path", "/x"],
    );
    assert!(table.contains("Decision:  DENY 403 by deny-bad"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ACTION") && l.contains("WHY")),
        "{table}"
    );
    let (code, err) = fails(
        cp,
        &["explain", "-n", n, "--ip", "192.0.2.9", "-H", "no colon"],
    );
    assert_eq!(code, 2, "{err}");
    let (code, err) = fails(
        cp,
        &["explain", "-n", n, "--ip", "192.0.2.9", "--pod", "missing"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pod \"missing\""), "{err}");
}

/// An incident as the collector writes it, proposing a deny of its one IP.
fn incident(cp: &ControlPlane, ns: &str, name: &str) {
    cp.apply(
        ns,
        &format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: SecurityIncident\nmetadata: {{name: {name}}}\nspec: {{}}\n"
        ),
    )
    .expect("incident");
    let proposed = format!(
        "# Proposed by Palisade for SecurityIncident {name}: deny its clients for 24h.\n---\n\
         apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\n  labels:\n    palisade.dev/incident: {name}\nspec:\n  deny: {{}}\n  \
         conditions:\n    ipRanges:\n    - 198.51.100.77\n  ttl: 24h\n"
    );
    let status = serde_json::json!({"status": {
        "riskLevel": "Severe", "state": "Active", "displayName": "Flooder from 2 IPs",
        "detectionRules": ["flooder"], "rulesSummary": "flooder", "clients": 2, "requests": 900,
        "firstDetectedTime": "2026-12-04T10:00:00Z", "lastDetectedTime": "2026-12-04T10:04:00Z",
        "duration": "4m",
        "traffic": {"startTime": "2026-12-04T10:00:00Z", "requests": [0, 5, 100, 300, 495]},
        "attributes": {"ips": {"distinct": 2, "top": [
            {"value": "198.51.100.77", "requests": 850}, {"value": "198.51.100.78", "requests": 50}]}},
        "proposedAction": proposed,
    }});
    cp.patch_status(ns, "securityincident", name, &status.to_string())
        .expect("incident status");
}

#[tokio::test]
async fn kubectl_palisade_lists_describes_watches_and_applies_incidents() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "plugin-incidents").await;
    let n = ns.name();
    let out = ok(cp, &["incidents", "-n", n]);
    assert_eq!(
        out.trim(),
        format!("No SecurityIncidents in namespace {n}.")
    );

    // A watch started before the incident sees it opened.
    let bin = workspace_bin("kubectl-palisade");
    let mut watch = std::process::Command::new(&bin)
        .env("KUBECONFIG", cp.kubeconfig())
        .args(["incidents", "-w", "-n", n])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    incident(cp, n, "flood-1");
    let mut seen = vec![];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !seen
        .iter()
        .any(|l: &String| l.starts_with("flood-1") && l.contains("Severe"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("the watch did not show flood-1 ({e}): {seen:?}"),
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen[0].starts_with("NAME") && seen[0].contains("RISK"),
        "{seen:?}"
    );

    let table = ok(cp, &["incidents", "-n", n]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("flood-1") && l.contains("Severe") && l.contains("900")),
        "{table}"
    );
    let json: Value =
        serde_json::from_str(&ok(cp, &["incidents", "-o", "json", "-n", n])).expect("json");
    assert_eq!(
        (json[0]["name"].as_str(), json[0]["clients"].as_i64()),
        (Some("flood-1"), Some(2))
    );

    let d = ok(cp, &["describe", "incident", "flood-1", "-n", n]);
    for want in [
        "Risk:        Severe",
        "Summary:     Flooder from 2 IPs",
        " ▁▂▅█",
        "peak 495/min",
        "198.51.100.77 (850)",
        "incident apply flood-1 --dry-run",
    ] {
        assert!(d.contains(want), "{want:?} in:\n{d}");
    }

    // The dry run writes nothing; the apply writes the proposed deny with the TTL asked for.
    let dry = ok(cp, &["incident", "apply", "flood-1", "--dry-run", "-n", n]);
    assert!(
        dry.contains("server dry run") && dry.contains("198.51.100.77"),
        "{dry}"
    );
    assert!(
        cp.kubectl_ok(&["-n", n, "get", "securityaction", "flood-1"])
            .is_err(),
        "a dry run wrote the action"
    );
    let out = ok(
        cp,
        &["incident", "apply", "flood-1", "--ttl", "2h", "-n", n],
    );
    assert_eq!(
        out.trim(),
        "securityaction.palisade.dev/flood-1 applied (proposed by securityincident flood-1)"
    );
    let a: Value = serde_json::from_str(
        &cp.kubectl_ok(&["-n", n, "get", "securityaction", "flood-1", "-o", "json"])
            .expect("action"),
    )
    .expect("json");
    assert_eq!(a["spec"]["ttl"], "2h", "{a}");
    assert_eq!(
        a["spec"]["conditions"]["ipRanges"][0], "198.51.100.77",
        "{a}"
    );
    assert_eq!(
        a["metadata"]["labels"]["palisade.dev/incident"], "flood-1",
        "{a}"
    );

    let (code, err) = fails(
        cp,
        &["incident", "apply", "flood-1", "--ttl", "soon", "-n", n],
    );
    assert_eq!(code, 2, "{err}");
    let (code, err) = fails(cp, &["describe", "incident", "missing", "-n", n]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "securityincident \"missing\" not found in namespace \"{n}\""
        )),
        "{err}"
    );
}

/// `.krew.yaml`, rendered as krew-release-bot renders it for a tag, names the archive
/// `scripts/plugin-dist.sh` packs (what `make plugin` runs), with its checksum, and every file
/// it installs is in that archive.
#[test]
fn the_krew_manifest_describes_the_archive_make_plugin_packs() {
    let root = palisade_e2e::repo_root();
    let dist = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/plugin-dist.sh"))
        .arg(workspace_bin("kubectl-palisade"))
        .env("DIST_DIR", dist.path())
        .output()
        .expect("plugin-dist.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let (archive, sha) = printed.trim().rsplit_once(' ').expect("path and sha256");
    let file = std::path::Path::new(archive)
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let platform = file
        .trim_start_matches("kubectl-palisade_")
        .trim_end_matches(".tar.gz")
        .to_owned();
    let (os, arch) = platform.split_once('_').expect("os_arch");
    let listing = std::process::Command::new("tar")
        .args(["tzf", archive])
        .output()
        .expect("tar");
    let listed = String::from_utf8_lossy(&listing.stdout).into_owned();

    let template = std::fs::read_to_string(root.join(".krew.yaml")).expect(".krew.yaml");
    let tag = "v0.1.0";
    let mut rendered = String::new();
    for line in template.lines() {
        let line = line.replace("{{ .TagName }}", tag);
        match line.trim_start().strip_prefix("{{addURIAndSha \"") {
            Some(rest) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                let uri = rest.split('"').next().expect("uri");
                let this = uri.ends_with(&file);
                let sum = if this { sha.to_owned() } else { "0".repeat(64) };
                rendered.push_str(&format!("{indent}uri: {uri}\n{indent}sha256: {sum}\n"));
            }
            None => rendered.push_str(&format!("{line}\n")),
        }
    }
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(doc["kind"].as_str(), Some("Plugin"));
    assert_eq!(doc["metadata"]["name"].as_str(), Some("palisade"));
    assert_eq!(doc["spec"]["version"].as_str(), Some(tag));
    let platforms = doc["spec"]["platforms"].as_sequence().expect("platforms");
    let here = platforms
        .iter()
        .find(|p| {
            p["selector"]["matchLabels"]["os"].as_str() == Some(os)
                && p["selector"]["matchLabels"]["arch"].as_str() == Some(arch)
        })
        .unwrap_or_else(|| panic!("no platform {os}/{arch} in .krew.yaml"));
    assert!(
        here["uri"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/{tag}/{file}"))),
        "{here:?}"
    );
    assert_eq!(here["sha256"].as_str(), Some(sha));
    assert_eq!(here["bin"].as_str(), Some("kubectl-palisade"));
    for f in here["files"].as_sequence().expect("files") {
        let from = f["from"].as_str().expect("from");
        assert!(
            listed.lines().any(|l| l == from),
            "{from} is not in the archive: {listed}"
        );
    }
}
