//! "The client IP is the ingress" (issue 17 item 5): when nearly all of a namespace's
//! reported traffic comes from a handful of private addresses, the leader raises one Warning
//! Event `ClientIpIsProxy` on the Namespace and counts it — once per episode, not per report —
//! while ordinary internet clients raise nothing.

use palisade_e2e::collector::{post, report_from, token};
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

/// The value of an unlabelled series of the operator's metrics (0 when absent).
fn metric(op: &Operator, name: &str) -> f64 {
    let text = op.metrics().unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The `ClientIpIsProxy` Events about Namespace `ns`: their messages.
fn warnings(cp: &ControlPlane, ns: &str) -> Result<Vec<String>, String> {
    let selector = format!("reason=ClientIpIsProxy,involvedObject.name={ns}");
    let out = cp
        .kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.involvedObject.kind}|{.type}|{.message}{\"\\n\"}{end}",
        ])
        .map_err(|e| e.to_string())?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Waits until the leader has run `n` more evaluation rounds.
async fn rounds(op: &Operator, n: f64) {
    let name = "palisade_operator_collector_evaluation_seconds_count";
    let from = metric(op, name);
    eventually(&format!("{n} evaluation rounds"), || async {
        let now = metric(op, name);
        (now >= from + n)
            .then_some(())
            .ok_or(format!("{now} rounds"))
    })
    .await;
}

#[tokio::test]
async fn a_namespace_whose_clients_are_all_one_proxy_is_warned_once() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "clientip").await;
    let args = [
        scope(&ns).to_vec(),
        vec!["--posture-interval".into(), "1s".into()],
    ]
    .concat();
    let op = Operator::start(cp, "op-clientip", "op-clientip", &args);
    let tok = token(cp, ns.name(), "palisade");
    let c = &op.collector;
    let now = jiff::Timestamp::now;

    // Internet clients (203.0.113.x, 198.51.100.77): nothing to warn about.
    let public = report_from(ns.name(), "198.51.100.77", [203, 0, 113, 0], 300, now());
    eventually("the leader to accept a report", || async {
        match post(c, &tok, public.to_json()).await {
            (202, _) => Ok(()),
            (code, msg) => Err(format!("{code} {msg}")),
        }
    })
    .await;
    rounds(&op, 3.0).await;
    assert_eq!(
        warnings(cp, ns.name()).expect("events"),
        Vec::<String>::new()
    );
    assert_eq!(
        metric(&op, "palisade_operator_client_ip_proxy_warnings_total"),
        0.0
    );

    // Then nearly everything from one in-cluster address (the ingress pod, say).
    let ingress = || report_from(ns.name(), "10.244.0.17", [10, 244, 1, 0], 20_000, now());
    let (code, msg) = post(c, &tok, ingress().to_json()).await;
    assert_eq!(code, 202, "{msg}");
    let found = eventually("a ClientIpIsProxy Event on the namespace", || async {
        let w = warnings(cp, ns.name())?;
        (!w.is_empty())
            .then_some(w)
            .ok_or("no Event yet".to_owned())
    })
    .await;
    let [event] = found.as_slice() else {
        panic!("one Event: {found:?}");
    };
    assert!(event.starts_with("Namespace|Warning|"), "{event}");
    assert!(event.contains("10.244.0.17"), "names the address: {event}");
    assert!(
        event.contains("trusted-proxies"),
        "says what to do: {event}"
    );
    assert_eq!(
        metric(&op, "palisade_operator_client_ip_proxy_namespaces"),
        1.0
    );
    // The namespace's posture carries the warning (its sidecars report, so it uses Palisade),
    // and `kubectl palisade status` shows it with what to do.
    let table = eventually("the posture to carry the warning", || async {
        let out = palisade_e2e::kubectl_palisade(cp, &["status", "-n", ns.name()]);
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        t.contains("ClientIpIsProxy").then_some(t.clone()).ok_or(t)
    })
    .await;
    assert!(
        table.contains("10.244.0.17") && table.contains("trusted-proxies"),
        "{table}"
    );

    // More of the same, over more rounds: no second warning.
    for _ in 0..3 {
        let (code, msg) = post(c, &tok, ingress().to_json()).await;
        assert_eq!(code, 202, "{msg}");
    }
    rounds(&op, 3.0).await;
    assert_eq!(
        metric(&op, "palisade_operator_client_ip_proxy_warnings_total"),
        1.0
    );
    assert_eq!(warnings(cp, ns.name()).expect("events").len(), 1);
}
