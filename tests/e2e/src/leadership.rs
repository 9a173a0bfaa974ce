//! Leadership and incidents as the failover and chaos tests watch them: who holds the Lease
//! (and the collector endpoint it advertises), an operator's metric samples, the incidents of
//! a namespace, a flood kept up until it opens one, and steady clients that check every
//! answer while something fails.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::http::get;
use crate::{ControlPlane, OPERATOR_NS, Operator, Sidecar, eventually};

/// The value of the sample whose name and labels start with `prefix`, e.g.
/// `palisade_operator_leader`.
pub fn sample(op: &Operator, prefix: &str) -> Result<f64, String> {
    let text = op.metrics()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or(format!("no sample {prefix} in the metrics"))
}

/// `<holder> <collector endpoint>` of the Lease `lease`.
pub fn lease_holder(cp: &ControlPlane, lease: &str) -> Result<String, String> {
    cp.kubectl_ok(&[
        "-n",
        OPERATOR_NS,
        "get",
        "lease",
        lease,
        "-o",
        "jsonpath={.spec.holderIdentity} {.metadata.annotations.palisade\\.dev/collector-endpoint}",
    ])
    .map_err(|e| e.to_string())
}

/// Waits until operator `name` holds `lease`.
pub async fn wait_to_lead(cp: &ControlPlane, lease: &str, name: &str) {
    let prefix = format!("{name} ");
    eventually(&format!("{name} to lead"), || async {
        let holder = lease_holder(cp, lease)?;
        holder.starts_with(&prefix).then_some(()).ok_or(holder)
    })
    .await;
}

/// `(name, lastDetectedTime)` of every SecurityIncident in `ns`.
pub fn incidents(cp: &ControlPlane, ns: &str) -> Result<Vec<(String, jiff::Timestamp)>, String> {
    let out = cp
        .kubectl_ok(&[
            "-n",
            ns,
            "get",
            "securityincidents",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.lastDetectedTime}{\"\\n\"}{end}",
        ])
        .map_err(|e| e.to_string())?;
    out.lines()
        .map(|l| {
            let (name, last) = l.split_once(' ').ok_or(format!("incident line {l:?}"))?;
            let last = last
                .parse()
                .map_err(|e| format!("lastDetectedTime of {name}: {e}"))?;
            Ok((name.to_owned(), last))
        })
        .collect()
}

/// Sends bursts of 50 requests from the flooder 127.0.0.66 through `sidecar` until `ns` has a
/// SecurityIncident; its name.
pub async fn flood_until_incident(
    cp: &ControlPlane,
    ns: &str,
    sidecar: &Sidecar,
    what: &str,
) -> String {
    let flooder: IpAddr = "127.0.0.66".parse().expect("ip");
    eventually(what, || async {
        for _ in 0..50 {
            get(flooder, sidecar.addr, "/", &[]).await?;
        }
        let all = incidents(cp, ns)?;
        all.first()
            .map(|(n, _)| n.clone())
            .ok_or(format!("incidents: {all:?}"))
    })
    .await
}

/// A SecurityAction `name` denying (403) the user agent `agent`, as YAML.
pub fn deny_agent(name: &str, agent: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {{name: {name}}}\n\
         spec:\n  deny: {{status: 403}}\n  conditions:\n    userAgents: [{{value: {agent}, type: Exact}}]\n"
    )
}

/// The status `sidecar` answers a GET / from `from` with user agent `agent`.
pub async fn status_for(sidecar: &Sidecar, from: IpAddr, agent: &str) -> Result<u16, String> {
    get(from, sidecar.addr, "/", &[("user-agent", agent)])
        .await
        .map(|(code, _)| code)
}

/// What the steady clients saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests sent.
    pub requests: u64,
    /// Requests that got no answer.
    pub failed: u64,
    /// Every unexpected answer or failure.
    pub wrong: Vec<String>,
}

/// Clients from `client` through `sidecar` until `stop`, every 50 ms: user agent `ok` must
/// always be let through (200), `bad` always denied (403, an action the test applied).
pub fn steady_clients(
    sidecar: Arc<Sidecar>,
    client: IpAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        while !stop.load(Ordering::Relaxed) {
            for (agent, want) in [("ok", 200), ("bad", 403)] {
                seen.requests += 1;
                match status_for(&sidecar, client, agent).await {
                    Ok(got) if got == want => {}
                    Ok(got) => seen.wrong.push(format!("{agent}: {got}")),
                    Err(e) => {
                        seen.failed += 1;
                        seen.wrong.push(format!("{agent}: {e}"));
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        seen
    })
}

/// The client address the chaos tests' steady clients use.
pub const STEADY_CLIENT: &str = "127.0.0.5";

/// The set-up of the chaos tests in `ns`: the quick Flooder rule, `deny-bad` (user agent
/// `bad`) enforced by a sidecar `api-0` reporting to `collector`, and the flood's incident
/// open. The sidecar and the incident's name.
pub async fn protected_and_flooded(
    cp: &'static ControlPlane,
    ns: &str,
    collector: &str,
) -> (Arc<Sidecar>, String) {
    cp.apply(ns, crate::flood::QUICK_FLOODER).expect("rule");
    cp.apply(ns, &deny_agent("deny-bad", "bad"))
        .expect("deny-bad");
    let sc = Arc::new(Sidecar::start(
        cp,
        ns,
        "api-0",
        crate::http::echo_app().await,
        Some(collector),
    ));
    let client: IpAddr = STEADY_CLIENT.parse().expect("ip");
    eventually("deny-bad enforced", || async {
        match status_for(&sc, client, "bad").await? {
            403 => Ok(()),
            s => Err(format!("status {s}")),
        }
    })
    .await;
    let name = flood_until_incident(cp, ns, &sc, "the flood to open an incident").await;
    (sc, name)
}

/// Whether `op` says it leads (`palisade_operator_leader`).
pub fn leads(op: &Operator) -> Result<bool, String> {
    sample(op, "palisade_operator_leader ").map(|v| v == 1.0)
}
