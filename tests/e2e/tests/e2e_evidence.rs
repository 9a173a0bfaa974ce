//! Evidence for every action, on the real control plane: sidecar processes read their bundle
//! through the API and report to the operator's collector; exact traffic through them must
//! show up, exactly, in each SecurityAction's `status.matchedRequests`, `observedRequests`,
//! `decidedRequests` and `enforcingPods`, and in `palisade_operator_action_requests_total`.
//! A rollout that reaches one pod of two reads `1/2`; a report naming another pod than its
//! token's, or too many actions, is refused.

use std::net::IpAddr;

use palisade_e2e::collector::post;
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::{ControlPlane, Operator, Sidecar, TempNs, eventually, scope, webhook};
use serde_json::Value;

const ACTIONS: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: allow-partner}
spec:
  allow: {}
  conditions:
    userAgents: [{value: partner}]
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-blocked}
spec:
  deny: {status: 403}
  conditions:
    paths: [{value: /blocked}]
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: flag-beta}
spec:
  flag:
    headers: [{name: X-Beta, value: "yes"}]
  conditions:
    paths: [{value: /beta}]
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: observe-admin}
spec:
  mode: Observe
  deny: {status: 403}
  conditions:
    paths: [{value: /admin}]
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-api-only}
spec:
  deny: {status: 451}
  conditions:
    paths: [{value: /api-only}]
  targets:
    workloadSelector:
      matchLabels: {app: api}
"#;

const NAMES: [&str; 5] = [
    "allow-partner",
    "deny-blocked",
    "flag-beta",
    "observe-admin",
    "deny-api-only",
];

/// A pod object as the injector leaves it (label `palisade.dev/injected=true`); no kubelet
/// runs it: its sidecar is a process of this test, or nothing at all.
fn pod(name: &str, app: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}", "labels": {{"app": "{app}", "palisade.dev/injected": "true"}}}},
            "spec": {{"containers": [{{"name": "web", "image": "example.invalid/web:1"}}]}}}}"#
    )
}

fn status(cp: &ControlPlane, ns: &str, name: &str) -> Result<Value, String> {
    let out = cp
        .kubectl_ok(&["-n", ns, "get", "securityaction", name, "-o", "json"])
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(v["status"].clone())
}

/// `(last5m, last1h, last24h)` of `field` (all three windows hold the test's traffic).
fn windows(s: &Value, field: &str) -> (i64, i64, i64) {
    let w = &s[field];
    let n = |k: &str| w[k].as_i64().unwrap_or(-1);
    (n("last5m"), n("last1h"), n("last24h"))
}

/// What the status shows: (matched, observed, decided) of the last 5 minutes, and pods.
fn shown(cp: &ControlPlane, ns: &str, name: &str) -> Result<(i64, i64, i64, String), String> {
    let s = status(cp, ns, name)?;
    let (m, _, _) = windows(&s, "matchedRequests");
    let (o, _, _) = windows(&s, "observedRequests");
    let (d, _, _) = windows(&s, "decidedRequests");
    let pods = s["enforcingPods"].as_str().unwrap_or_default().to_owned();
    Ok((m, o, d, pods))
}

async fn wait_shown(cp: &ControlPlane, ns: &str, name: &str, want: (i64, i64, i64, &str)) {
    eventually(&format!("{name} to show {want:?}"), || async {
        let got = shown(cp, ns, name)?;
        (got.0 == want.0 && got.1 == want.1 && got.2 == want.2 && got.3 == want.3)
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
}

async fn send(sc: &Sidecar, path: &str, ua: Option<&str>, times: usize, want: u16) {
    let from: IpAddr = "127.0.0.1".parse().expect("ip");
    let headers: Vec<(&str, &str)> = ua.map(|u| ("user-agent", u)).into_iter().collect();
    for _ in 0..times {
        let (code, _) = get(from, sc.addr, path, &headers)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, want, "GET {path} with {ua:?}");
    }
}

/// The generation of the bundle a sidecar enforces (`<generation>-<hash>` in its metrics).
fn enforced_generation(sc: &Sidecar) -> Option<i64> {
    sc.bundle_version()?.split('-').next()?.parse().ok()
}

fn bundle_generations(cp: &ControlPlane, ns: &str) -> Result<Vec<i64>, String> {
    NAMES
        .iter()
        .map(|n| {
            status(cp, ns, n)?["bundleGeneration"]
                .as_i64()
                .ok_or(format!("{n}: no bundleGeneration"))
        })
        .collect()
}

#[tokio::test]
async fn each_action_shows_exactly_what_it_matched_observed_and_decided_and_who_enforces_it() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "evidence").await;
    let op = Operator::start(
        cp,
        "op-evidence",
        "op-evidence",
        &[
            &scope(&ns)[..],
            &["--evidence-interval".into(), "1s".into()],
        ]
        .concat(),
    );
    for (name, app) in [("api-0", "api"), ("api-1", "api"), ("shop-0", "shop")] {
        cp.apply(ns.name(), &pod(name, app)).expect("pod");
    }
    cp.apply(ns.name(), ACTIONS).expect("actions");
    let app = echo_app().await;
    let c = Some(op.collector.as_str());
    // api-1 has no sidecar running: it never reports.
    let api =
        Sidecar::start_with_args(cp, ns.name(), "api-0", app, c, &["--pod-labels", "app=api"]);
    let shop = Sidecar::start_with_args(
        cp,
        ns.name(),
        "shop-0",
        app,
        c,
        &["--pod-labels", "app=shop"],
    );
    // Both sidecars hold the bundle that carries every action as it is now. (Waiting on the
    // metrics, not on traffic: traffic would count.)
    eventually("both sidecars to enforce every action", || async {
        let want = bundle_generations(cp, ns.name())?;
        let want = want.iter().max().copied().unwrap_or_default();
        let got = [enforced_generation(&api), enforced_generation(&shop)];
        got.iter()
            .all(|g| g.is_some_and(|g| g >= want))
            .then_some(())
            .ok_or(format!("sidecars at {got:?}, actions at {want}"))
    })
    .await;

    send(&api, "/blocked", None, 3, 403).await;
    send(&api, "/blocked", Some("partner"), 2, 200).await;
    send(&api, "/beta", None, 4, 200).await;
    send(&api, "/admin", None, 5, 200).await;
    send(&api, "/api-only", None, 6, 451).await;
    send(&shop, "/blocked", None, 1, 403).await;
    send(&shop, "/api-only", None, 2, 200).await;
    send(&shop, "/", None, 7, 200).await;

    // Namespace-wide actions select the three injected pods; two run a sidecar that reports.
    wait_shown(cp, ns.name(), "deny-blocked", (6, 0, 4, "2/3")).await;
    wait_shown(cp, ns.name(), "allow-partner", (2, 0, 2, "2/3")).await;
    wait_shown(cp, ns.name(), "flag-beta", (4, 0, 4, "2/3")).await;
    wait_shown(cp, ns.name(), "observe-admin", (0, 5, 0, "2/3")).await;
    // The workload-scoped deny selects api-0 and api-1: only api-0 enforces it, and the shop
    // pod's /api-only requests are not its matches.
    wait_shown(cp, ns.name(), "deny-api-only", (6, 0, 6, "1/2")).await;
    let s = status(cp, ns.name(), "deny-blocked").expect("status");
    assert_eq!(windows(&s, "matchedRequests"), (6, 6, 6), "{s}");
    // Counted once: a few more reports and updates later, the same numbers.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        shown(cp, ns.name(), "deny-blocked"),
        Ok((6, 0, 4, "2/3".into()))
    );
    let metrics = op.metrics().expect("operator metrics");
    let line = |action: &str, result: &str| {
        format!(
            "palisade_operator_action_requests_total{{namespace=\"{}\",action=\"{action}\",result=\"{result}\"}} ",
            ns.name()
        )
    };
    for (action, result, n) in [
        ("deny-blocked", "matched", 6),
        ("deny-blocked", "decided", 4),
        ("observe-admin", "observed", 5),
        ("flag-beta", "decided", 4),
    ] {
        let want = format!("{}{n}", line(action, result));
        assert!(metrics.lines().any(|l| l == want), "{want} in\n{metrics}");
    }
    // The columns users see.
    let table = cp
        .kubectl_ok(&["-n", ns.name(), "get", "securityactions"])
        .expect("get");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("PODS") && header.contains("MATCHED-1H"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("deny-blocked") && l.contains(" 2/3 ") && l.contains(" 6 ")),
        "{table}"
    );

    // A rollout: the shop sidecar stops, deny-blocked changes; only api-0 gets the new
    // version, so 1 of the 3 selected pods enforces it (the shop pod goes on reporting
    // nothing, and its last report names the old generation).
    let before = status(cp, ns.name(), "deny-blocked").expect("status")["bundleGeneration"]
        .as_i64()
        .expect("bundleGeneration");
    drop(shop);
    cp.apply(
        ns.name(),
        &ACTIONS.replace(
            "deny: {status: 403}\n  conditions:\n    paths: [{value: /blocked}]",
            "deny: {status: 410}\n  conditions:\n    paths: [{value: /blocked}]",
        ),
    )
    .expect("change deny-blocked");
    eventually("deny-blocked to be in a newer bundle", || async {
        let g = status(cp, ns.name(), "deny-blocked")?["bundleGeneration"]
            .as_i64()
            .unwrap_or_default();
        (g > before).then_some(()).ok_or(format!("{g}"))
    })
    .await;
    wait_shown(cp, ns.name(), "deny-blocked", (6, 0, 4, "1/3")).await;
    // An action whose version did not change stays enforced by both pods' last reports.
    let (.., pods) = shown(cp, ns.name(), "flag-beta").expect("flag-beta");
    assert_eq!(pods, "2/3");
    send(&api, "/blocked", None, 1, 410).await;
    wait_shown(cp, ns.name(), "deny-blocked", (7, 0, 5, "1/3")).await;

    // The namespace turns the decision header on for its sidecars: the annotation travels in
    // the bundle (the sidecar side: sidecar/tests/enforce.rs).
    let client = cp.client().await;
    let header_on = || async {
        let (_, bundle) = palisade_e2e::bundle::read_bundle(&client, ns.name()).await?;
        Ok::<bool, String>(bundle.debug_headers)
    };
    assert_eq!(header_on().await, Ok(false), "off by default");
    cp.kubectl_ok(&[
        "annotate",
        "namespace",
        ns.name(),
        "palisade.dev/debug-headers=true",
    ])
    .expect("annotate");
    eventually("the bundle to turn the decision header on", || async {
        header_on()
            .await?
            .then_some(())
            .ok_or("still off".to_owned())
    })
    .await;

    // Deleting an action forgets its counts (and its metric series).
    cp.kubectl_ok(&["-n", ns.name(), "delete", "securityaction", "observe-admin"])
        .expect("delete");
    eventually("the deleted action's metric to go", || async {
        let m = op.metrics()?;
        (!m.contains(&line("observe-admin", "observed")))
            .then_some(())
            .ok_or("still exported".to_owned())
    })
    .await;
}

#[tokio::test]
async fn a_report_cannot_speak_for_another_pod_or_name_unbounded_actions() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "evidence-hostile").await;
    let op = Operator::start(cp, "op-ev-hostile", "op-ev-hostile", &scope(&ns));
    cp.apply(ns.name(), &pod("api-1", "api")).expect("pod");
    // A projected-style token of the pod's service account, bound to pod api-1.
    let bound = cp
        .kubectl_ok(&[
            "-n",
            ns.name(),
            "create",
            "token",
            "default",
            "--audience",
            "palisade",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "api-1",
        ])
        .expect("bound token");
    let bound = bound.trim();
    let report = |pod: &str, actions: usize| {
        let mut r = palisade_e2e::collector::report_from(
            ns.name(),
            "127.0.0.9",
            [127, 0, 1, 0],
            1,
            jiff::Timestamp::now(),
        );
        r.sidecar.pod = pod.into();
        r.generation = Some(1);
        r.actions = (0..actions)
            .map(|i| palisade_detection::report::ActionCount {
                name: format!("a-{i}"),
                matched: 1,
                ..Default::default()
            })
            .collect();
        r.to_json()
    };
    let c = &op.collector;
    let (code, msg) = eventually("the collector to accept the bound pod's report", || async {
        let (code, msg) = post(c, bound, report("api-1", 1)).await;
        (code == 202)
            .then_some((code, msg.clone()))
            .ok_or(format!("{code} {msg}"))
    })
    .await;
    assert_eq!(code, 202, "{msg}");
    let (code, msg) = post(c, bound, report("api-0", 1)).await;
    assert_eq!(code, 403, "another pod's name: {msg}");
    assert!(msg.contains("api-1") && msg.contains("api-0"), "{msg}");
    let (code, msg) = post(c, bound, report("api-1", 1025)).await;
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("1024"), "{msg}");

    // A client without a valid token announcing a 4 MB body gets its 401 from the headers
    // alone: the collector neither waits for nor holds the body.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(c.as_str())
        .await
        .expect("connect to the collector");
    let head = format!(
        "POST /v1/reports HTTP/1.1\r\nHost: {c}\r\nAuthorization: Bearer not-a-token\r\n\
         Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n"
    );
    conn.write_all(head.as_bytes())
        .await
        .expect("send the head");
    let mut got = vec![0u8; 512];
    let n = tokio::time::timeout(palisade_e2e::patience(), conn.read(&mut got))
        .await
        .expect("an answer before the body is sent")
        .expect("read");
    let answer = String::from_utf8_lossy(&got[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

/// Runs `palisade-operator replay -n ns -f - -o json` with the admin kubeconfig: (exit
/// status success, stdout, stderr).
fn replay(cp: &ControlPlane, ns: &str, action: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(palisade_e2e::workspace_bin("palisade-operator"))
        .args(["replay", "-n", ns, "-f", "-", "-o", "json"])
        .env("KUBECONFIG", cp.kubeconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("palisade-operator replay");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(action.as_bytes())
            .expect("write the action");
    }
    let out = child.wait_with_output().expect("replay output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn candidate(conditions: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {{name: candidate}}\n\
         spec:\n  deny: {{status: 403}}\n  conditions:\n{conditions}\n"
    )
}

/// `kubectl palisade <args>`: (exit code, stdout, stderr).
fn plugin(cp: &ControlPlane, args: &[&str]) -> (i32, String, String) {
    let out = palisade_e2e::kubectl_palisade(cp, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_candidate_action_is_replayed_against_the_last_hours_traffic() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "replay").await;
    let op = Operator::start(
        cp,
        "op-replay",
        "op-replay",
        &[
            &scope(&ns)[..],
            &[
                "--replay-interval".into(),
                "1s".into(),
                "--webhook-cert-check".into(),
                "1s".into(),
                "--blast-radius-refuse-percent".into(),
                "90".into(),
            ],
        ]
        .concat(),
    );
    let app = echo_app().await;
    let sc = Sidecar::start(cp, ns.name(), "api-0", app, Some(&op.collector));
    let waits = std::sync::atomic::AtomicU64::new(0);
    eventually("the sidecar to serve", || async {
        let from: IpAddr = "127.0.0.1".parse().expect("ip");
        let got = get(from, sc.addr, "/", &[]).await;
        if got.is_ok() {
            waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (code, _) = got?;
        (code == 200).then_some(()).ok_or(format!("{code}"))
    })
    .await;
    let sent = waits.load(std::sync::atomic::Ordering::Relaxed) + 640;
    // 640 requests, round robin over five clients: the sidecar samples one request in 64,
    // and 64 steps of a five-client cycle visit every client, so the ten samples are two of
    // each client whatever came before.
    for i in 0..640u32 {
        let from: IpAddr = format!("127.0.0.{}", 11 + i % 5).parse().expect("ip");
        let path = if i % 5 == 0 { "/login" } else { "/items" };
        let (code, _) = get(from, sc.addr, path, &[]).await.expect("request");
        assert_eq!(code, 200);
    }
    let two = candidate("    ipRanges: [127.0.0.11/32, 127.0.0.12/32]");
    let est: Value = eventually("the replay sample to hold the traffic", || async {
        let (ok, out, err) = replay(cp, ns.name(), &two);
        if !ok {
            return Err(err);
        }
        let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
        (v["totalRequests"].as_u64() == Some(sent))
            .then_some(v.clone())
            .ok_or(format!("{v}"))
    })
    .await;
    // Ten samples of the round robin (plus one if a readiness request was sampled), two of
    // each client: the two denied clients are four of them.
    let samples = est["samples"].as_u64().unwrap_or_default();
    assert!((10..=12).contains(&samples), "{est}");
    assert_eq!(est["samplesMatched"], 4, "{est}");
    assert_eq!(est["clients"], 2, "{est}");
    let percent = est["percent"].as_f64().unwrap_or_default();
    assert!((20.0..=60.0).contains(&percent), "about 40 %: {est}");
    // `kubectl palisade replay` reads the same sample with the caller's kubeconfig, and can
    // keep to its last minutes (the traffic above is all in them).
    let file = std::env::temp_dir().join(format!("replay-{}.yaml", std::process::id()));
    std::fs::write(&file, &two).expect("manifest");
    let path = file.to_string_lossy().into_owned();
    for since in [None, Some("30m")] {
        let mut args = vec!["replay", "-n", ns.name(), "-f", &path, "-o", "json"];
        args.extend(since.iter().flat_map(|s| ["--since", *s]));
        let (code, out, err) = plugin(cp, &args);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(
            (v["samplesMatched"].as_u64(), v["totalRequests"].as_u64()),
            (Some(4), Some(sent)),
            "{since:?}: {v}"
        );
    }
    let (code, out, _) = plugin(cp, &["replay", "-n", ns.name(), "-f", &path]);
    assert!(
        code == 0 && out.starts_with(&format!("{}/candidate would have matched", ns.name())),
        "{out}"
    );
    let (code, _, err) = plugin(
        cp,
        &["replay", "-n", ns.name(), "-f", &path, "--since", "2h"],
    );
    assert!(code == 2 && err.contains("the last hour"), "{code}: {err}");
    let _ = std::fs::remove_file(&file);
    // Paths are replayed too; an action matching nothing says so.
    let (ok, out, err) = replay(cp, ns.name(), &candidate("    paths: [{value: /login}]"));
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (v["samplesMatched"].as_u64(), v["clients"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    let (ok, out, err) = replay(cp, ns.name(), &candidate("    ipRanges: [192.0.2.0/24]"));
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["matchedRequests"], 0, "{v}");
    // An action the compiler refuses is an error naming it, not "matches nothing".
    let (ok, _, err) = replay(cp, ns.name(), &candidate("    apiKeys: [key-in-clear]"));
    assert!(
        !ok && err.contains("candidate") && err.contains("does not compile"),
        "{err}"
    );
    // A namespace without traffic has no sample, and the error says when it will have one.
    let (ok, _, err) = replay(cp, "default", &two);
    assert!(!ok && err.contains("palisade-replay"), "{err}");

    // The blast-radius check, through the real API server: the same deny applied with
    // kubectl is admitted with a warning (about 40 % > 5 %); a deny of every client is refused
    // (> 90 %) unless annotated; re-applying an unchanged manifest says nothing; an Observe
    // action is never checked.
    webhook::register_blast_radius(cp, &op.webhook, ns.name()).await;
    let named = |name: &str, conditions: &str, extra: &str| {
        candidate(conditions).replace(
            "metadata: {name: candidate}",
            &format!("metadata: {{name: {name}{extra}}}"),
        )
    };
    let two = named(
        "deny-two",
        "    ipRanges: [127.0.0.11/32, 127.0.0.12/32]",
        "",
    );
    let (ok, err) = kubectl_apply(cp, ns.name(), &two);
    assert!(ok, "{err}");
    assert!(
        err.contains("Warning:") && err.contains("would have denied") && err.contains("deny-two"),
        "a warning on stderr: {err}"
    );
    let (ok, err) = kubectl_apply(cp, ns.name(), &two);
    assert!(
        ok && !err.contains("Warning:"),
        "unchanged: no warning: {err}"
    );
    let all = named("deny-all", "    ipRanges: [127.0.0.0/8]", "");
    let (ok, err) = kubectl_apply(cp, ns.name(), &all);
    assert!(
        !ok && err.contains("palisade.dev/blast-radius-ok"),
        "refused: {err}"
    );
    assert!(
        cp.kubectl_ok(&["-n", ns.name(), "get", "securityaction", "deny-all"])
            .is_err(),
        "not stored"
    );
    let meant = named(
        "deny-all",
        "    ipRanges: [127.0.0.0/8]",
        ", annotations: {palisade.dev/blast-radius-ok: \"true\"}",
    );
    let (ok, err) = kubectl_apply(cp, ns.name(), &meant);
    assert!(
        ok && err.contains("Warning:"),
        "admitted with a warning: {err}"
    );
    let observe = named("observe-all", "    ipRanges: [127.0.0.0/8]", "")
        .replace("spec:\n", "spec:\n  mode: Observe\n");
    let (ok, err) = kubectl_apply(cp, ns.name(), &observe);
    assert!(ok && !err.contains("Warning:"), "{err}");
    let m = op.metrics().expect("metrics");
    assert!(
        m.contains(
            "palisade_operator_blast_radius_checks_total{result=\"denied\",reason=\"Refused\"} 1"
        ),
        "{m}"
    );
    webhook::unregister_blast_radius(cp).await;
}

/// `kubectl apply -f -` in `ns`: (success, stderr).
fn kubectl_apply(cp: &ControlPlane, ns: &str, yaml: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = cp
        .kubectl()
        .args(["-n", ns, "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(yaml.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("kubectl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
