//! `kubectl palisade` on the real control plane, found by kubectl itself on the `PATH`: pause
//! and resume an action (until resumed, and for a while), the namespace switch, `status` in
//! each output format; usage errors exit 2 and write nothing, missing objects and contexts
//! exit 1 naming them.

use std::process::Output;

use palisade_e2e::workspace_bin;
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};
use serde_json::Value;

const ACTION: &str = r#"apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-one}
spec:
  deny: {status: 403}
  conditions:
    ipRanges: [192.0.2.1/32]
"#;

/// `kubectl palisade <args>` as a user runs it: kubectl finds the plugin on the `PATH`.
fn plugin(cp: &ControlPlane, args: &[&str]) -> Output {
    let bin = workspace_bin("kubectl-palisade");
    let dir = bin.parent().expect("the binaries' directory");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new(cp.kubectl_path())
        .env("KUBECONFIG", cp.kubeconfig())
        .env("PATH", path)
        .arg("palisade")
        .args(args)
        .output()
        .expect("run kubectl palisade")
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
