//! Talking to the detection collector as a sidecar does, and serving TorList URLs: shared by
//! the detection and failover tests.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use palisade_detection::counter::{Counter, CounterConfig};
use palisade_detection::facts::RequestFacts;
use palisade_detection::report::{Report, SidecarId};

use crate::ControlPlane;

/// One second of traffic: `flood` requests from `flooder` and one from each of 20 ordinary
/// clients `base.1` … `base.20`.
pub fn report_from(
    ns: &str,
    flooder: &str,
    base: [u8; 4],
    flood: u32,
    now: jiff::Timestamp,
) -> Report {
    let id = SidecarId {
        pod: "api-0".into(),
        workload: "api".into(),
        namespace: ns.into(),
    };
    let start = now - jiff::SignedDuration::from_secs(1);
    let mut counter = Counter::new(id, &CounterConfig::default(), start);
    let flooder: IpAddr = flooder.parse().expect("ip");
    for _ in 0..flood {
        counter.record(&RequestFacts::new(flooder, 200));
    }
    for i in 1..=20u8 {
        let [a, b, c, _] = base;
        counter.record(&RequestFacts::new(IpAddr::from([a, b, c, i]), 200));
    }
    counter.take_report(now)
}

/// [`report_from`] now: a flood of `flood` requests from 198.51.100.77 and one request from
/// each of 20 ordinary clients 203.0.113.1 … 203.0.113.20.
pub fn flood_report(ns: &str, flood: u32) -> Report {
    report_from(
        ns,
        "198.51.100.77",
        [203, 0, 113, 0],
        flood,
        jiff::Timestamp::now(),
    )
}

/// The sum of the samples of metric `name` whose line contains `labels` in a Prometheus text
/// (0 when absent).
pub fn metric_sum(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// POSTs a report body to the collector at `collector` with `token`: (status, body).
pub async fn post(collector: &str, token: &str, body: Vec<u8>) -> (u16, String) {
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

/// A token of service account `api` (created if needed) in `ns` for `audience`.
pub fn token(cp: &ControlPlane, ns: &str, audience: &str) -> String {
    let _exists = cp.kubectl_ok(&["-n", ns, "create", "serviceaccount", "api"]);
    let t = cp
        .kubectl_ok(&["-n", ns, "create", "token", "api", "--audience", audience])
        .expect("token");
    t.trim().to_owned()
}

/// The names of the SecurityIncidents of `ns`.
pub fn incident_names(cp: &ControlPlane, ns: &str) -> Result<Vec<String>, String> {
    let out = cp
        .kubectl_ok(&["-n", ns, "get", "securityincidents", "-o", "name"])
        .map_err(|e| e.to_string())?;
    Ok(out
        .lines()
        .map(|l| l.rsplit('/').next().unwrap_or(l).to_owned())
        .collect())
}

/// `Ok` once `ns` has at least one SecurityIncident.
pub fn has_incident(cp: &ControlPlane, ns: &str) -> Result<(), String> {
    let names = incident_names(cp, ns)?;
    (!names.is_empty())
        .then_some(())
        .ok_or_else(|| "no incident yet".to_owned())
}

/// A loopback HTTP server answering every request with the current `(status, body)`.
pub async fn list_server(answer: Arc<Mutex<(u16, String)>>) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind list server");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (status, body) = answer.lock().expect("answer").clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    port
}

/// Whether rule `tor` currently detects `ip` in `palisade-detected`.
pub async fn tor_detects(client: &kube::Client, ns: &str, ip: &str) -> Result<bool, String> {
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), ns);
    let Some(cm) = cms
        .get_opt("palisade-detected")
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let bytes = cm
        .binary_data
        .and_then(|mut d| d.remove("detected"))
        .ok_or("no key")?;
    let doc = palisade_policy::decode_detected(&bytes.0).map_err(|e| e.to_string())?;
    let key = format!("ip:{ip}");
    Ok(doc
        .rules
        .get("tor")
        .is_some_and(|c| c.iter().any(|d| d.key.to_string() == key)))
}

/// `{.status.list}`, the `ListReady` condition (`ready`) and the `Ready` condition
/// (`rule`) of rule `tor`, as one line of JSON.
pub fn tor_status(cp: &ControlPlane, ns: &str) -> Result<serde_json::Value, String> {
    let out = cp
        .kubectl_ok(&["-n", ns, "get", "detectionrule", "tor", "-o", "json"])
        .map_err(|e| e.to_string())?;
    let rule: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let cond = |t: &str| {
        rule["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .cloned()
            .unwrap_or_default()
    };
    Ok(
        serde_json::json!({"list": rule["status"]["list"], "ready": cond("ListReady"),
        "rule": cond("Ready")}),
    )
}
