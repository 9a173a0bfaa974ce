//! The collector over HTTPS: it serves the operator's managed certificate (the webhook's,
//! whose SANs include the collector Service); a sidecar verifies it with the CA bundle, a
//! non-leader forwards over HTTPS to the leader verifying the Service name, and a flood
//! reported that way is detected. Plain HTTP is refused by the HTTPS port.

use std::net::IpAddr;

use palisade_e2e::http::{echo_app, get};
use palisade_e2e::{ControlPlane, OPERATOR_NS, Operator, Sidecar, TempNs, eventually, scope};

const LEASE: &str = "op-tls";

use palisade_e2e::flood::QUICK_FLOODER as FLOODER;

fn holder(cp: &ControlPlane) -> Result<String, String> {
    cp.kubectl_ok(&[
        "-n",
        OPERATOR_NS,
        "get",
        "lease",
        LEASE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .map_err(|e| e.to_string())
}

/// The CA the operator manages (`ca.crt` of its certificate Secret).
fn ca(cp: &ControlPlane) -> Result<String, String> {
    let b64 = cp
        .kubectl_ok(&[
            "-n",
            OPERATOR_NS,
            "get",
            "secret",
            "palisade-webhook-cert",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])
        .map_err(|e| e.to_string())?;
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("ca.crt: {e}"))?;
    let pem = String::from_utf8(pem).map_err(|e| e.to_string())?;
    pem.contains("BEGIN CERTIFICATE")
        .then_some(pem)
        .ok_or("no CA yet".into())
}

fn plain_http_status(addr: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://{addr}/v1/reports"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn sidecar_reports_over_https_are_forwarded_over_https_and_detected() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "tls").await;
    let mut args = scope(&ns).to_vec();
    args.push("--collector-plain-http=false".into());
    let _a = Operator::start(cp, "op-tls-a", LEASE, &args);
    eventually("op-tls-a to lead", || async {
        let h = holder(cp)?;
        (h == "op-tls-a").then_some(()).ok_or(h)
    })
    .await;
    let b = Operator::start(cp, "op-tls-b", LEASE, &args);
    let ca = eventually("the operator's CA", || async { ca(cp) }).await;
    cp.apply(ns.name(), FLOODER).expect("rule");

    eventually(
        "op-tls-b to serve HTTPS (plain HTTP is refused)",
        || async {
            let code = plain_http_status(&b.collector);
            (code == "000" || code == "400")
                .then_some(())
                .ok_or(format!("plain HTTP answered {code}"))
        },
    )
    .await;

    let app = echo_app().await;
    let sc = Sidecar::start_with_ca(cp, ns.name(), "api-0", app, Some(&b.collector), Some(&ca));
    let flooder: IpAddr = "127.0.0.66".parse().expect("ip");
    eventually(
        "the flood, reported over HTTPS to the non-leader, to open an incident",
        || async {
            for _ in 0..50 {
                get(flooder, sc.addr, "/", &[]).await?;
            }
            palisade_e2e::collector::has_incident(cp, ns.name())
        },
    )
    .await;
    let metrics = b.metrics().expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("palisade_operator_reports_forwarded_total{outcome=\"Accepted\"}")),
        "op-tls-b forwarded over HTTPS: {}",
        metrics
            .lines()
            .filter(|l| l.contains("forwarded"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
