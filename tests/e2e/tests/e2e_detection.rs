//! The detection collector end to end: sidecar reports authenticated by projected
//! service-account tokens (audience `palisade`) are merged, a DetectionRule fires, the
//! detected-client set reaches its ConfigMap, and a SecurityIncident with an Event appears.

use std::net::IpAddr;

use palisade_detection::counter::{Counter, CounterConfig};
use palisade_detection::facts::RequestFacts;
use palisade_detection::report::{Report, SidecarId};
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

const FLOODER: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: flooder}
spec:
  type: Flooder
  detectionTtl: 10m
  flooder: {minSharePercent: 50, minRequests: 100, minActiveClients: 1}
"#;

/// One second of traffic: `flood` requests from 198.51.100.66 and one from each of 20
/// ordinary clients.
fn report(ns: &str, flood: u32, now: jiff::Timestamp) -> Report {
    let id = SidecarId {
        pod: "api-0".into(),
        workload: "api".into(),
        namespace: ns.into(),
    };
    let start = now - jiff::SignedDuration::from_secs(1);
    let mut counter = Counter::new(id, &CounterConfig::default(), start);
    let flooder: IpAddr = "198.51.100.66".parse().expect("ip");
    for _ in 0..flood {
        counter.record(&RequestFacts::new(flooder, 200));
    }
    for i in 1..=20u8 {
        counter.record(&RequestFacts::new(IpAddr::from([203, 0, 113, i]), 200));
    }
    counter.take_report(now)
}

async fn post(collector: &str, token: &str, body: Vec<u8>) -> (u16, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("http://{collector}/v1/reports"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body).expect("write body");
    }
    let out = child.wait_with_output().expect("curl output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn token(cp: &ControlPlane, ns: &str, audience: &str) -> String {
    let _exists = cp.kubectl_ok(&["-n", ns, "create", "serviceaccount", "api"]);
    let t = cp
        .kubectl_ok(&["-n", ns, "create", "token", "api", "--audience", audience])
        .expect("token");
    t.trim().to_owned()
}

#[tokio::test]
async fn a_flood_reported_by_a_sidecar_becomes_a_detection_and_an_incident() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "detect").await;
    let op = Operator::start(cp, "op-detect", "op-detect", &scope(&ns));
    cp.apply(ns.name(), FLOODER).expect("rule");
    let tok = token(cp, ns.name(), "palisade");

    // Refused: no token, a token for another audience, a report for another namespace.
    let body = report(ns.name(), 10, jiff::Timestamp::now()).to_json();
    let c = &op.collector;
    eventually("the collector to answer", || async {
        let (code, msg) = post(c, "", body.clone()).await;
        (code == 401).then_some(()).ok_or(format!("{code} {msg}"))
    })
    .await;
    let wrong_aud = token(
        cp,
        ns.name(),
        "https://kubernetes.default.svc.cluster.local",
    );
    assert_eq!(
        post(c, &wrong_aud, body.clone()).await.0,
        401,
        "token for another audience"
    );
    let other = report("someone-else", 10, jiff::Timestamp::now()).to_json();
    let (code, msg) = post(c, &tok, other).await;
    assert_eq!(
        code, 403,
        "a sidecar may only report for its own namespace: {msg}"
    );
    let (code, msg) = post(c, &tok, b"{not json".to_vec()).await;
    assert_eq!(code, 400, "malformed report: {msg}");

    // Accepted: a flood from one client, reported every second (as a sidecar does).
    let (code, msg) = eventually("the leader to accept a report", || async {
        let (code, msg) = post(
            c,
            &tok,
            report(ns.name(), 2000, jiff::Timestamp::now()).to_json(),
        )
        .await;
        (code == 202)
            .then_some((code, msg.clone()))
            .ok_or(format!("{code} {msg}"))
    })
    .await;
    assert_eq!(code, 202, "{msg}");
    let client = cp.client().await;
    eventually("the flooder in palisade-detected", || async {
        let _ = post(
            c,
            &tok,
            report(ns.name(), 2000, jiff::Timestamp::now()).to_json(),
        )
        .await;
        let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), ns.name());
        let cm = cms
            .get_opt("palisade-detected")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no ConfigMap yet")?;
        let bytes = cm
            .binary_data
            .and_then(|mut d| d.remove("detected"))
            .ok_or("no detected key")?;
        let doc = palisade_policy::decode_detected(&bytes.0).map_err(|e| e.to_string())?;
        let listed = doc
            .rules
            .get("flooder")
            .is_some_and(|c| c.iter().any(|d| d.key.to_string() == "ip:198.51.100.66"));
        let ordinary = doc
            .rules
            .values()
            .flatten()
            .any(|d| d.key.to_string().starts_with("ip:203.0.113."));
        assert!(!ordinary, "ordinary clients are not detected");
        listed.then_some(()).ok_or(format!("detected: {doc:?}"))
    })
    .await;
    let name = eventually("a SecurityIncident naming the flooder rule", || async {
        let out = cp
            .kubectl_ok(&["-n", ns.name(), "get", "securityincidents", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.rulesSummary} {.status.riskLevel} {.status.clients}{\"\\n\"}{end}"])
            .map_err(|e| e.to_string())?;
        let line = out.lines().find(|l| l.contains("flooder")).ok_or(format!("incidents: {out:?}"))?;
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(matches!(fields.get(2), Some(&("Low" | "Moderate" | "Severe"))), "risk level: {line}");
        Ok::<_, String>(fields[0].to_owned())
    })
    .await;
    eventually("the rule's status: Ready and a detected-client count", || async {
        let out = cp
            .kubectl_ok(&["-n", ns.name(), "get", "detectionrule", "flooder", "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.detectedClients}"])
            .map_err(|e| e.to_string())?;
        (out == "True 1").then_some(()).ok_or(out)
    })
    .await;
    let listed = cp
        .kubectl_ok(&["-n", ns.name(), "get", "incidents"])
        .expect("short name works");
    assert!(
        listed.contains(&name) && listed.contains("RISK"),
        "printer columns: {listed}"
    );
    eventually("an IncidentOpened Event", || async {
        let ev = cp
            .kubectl_ok(&[
                "-n",
                ns.name(),
                "events",
                "--for",
                &format!("securityincident/{name}"),
            ])
            .map_err(|e| e.to_string())?;
        ev.contains("IncidentOpened").then_some(()).ok_or(ev)
    })
    .await;
}
