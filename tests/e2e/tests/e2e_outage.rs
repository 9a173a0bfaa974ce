//! The API server away for a minute while traffic runs (issue 18, reliability). An injected
//! sidecar, run as its stored pod spec says, reaches the API server through a link the test
//! cuts ([`Link`]): for 60 s it can neither watch nor read. It keeps enforcing the last good
//! bundle with no failed request, an action's `ttl` still ends on time (the expiry travels
//! in the bundle), and once the link is back the change applied meanwhile arrives. The
//! figures (requests, failures, recovery time) are printed for bench/results/reliability.md.
//!
//! In a binary of its own: it takes a minute and registers the cluster-wide webhook.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::injected::{Wiring, api_server};
use palisade_e2e::outage::Link;
use palisade_e2e::{ControlPlane, Sidecar, TempNs, eventually_within, webhook};
use serde_json::{Value, json};

const OUTAGE: Duration = Duration::from_secs(60);

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "api"}},
        "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "web", "image": "example.invalid/web:1",
                "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

fn deny_agent(name: &str, agent: &str, extra: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {{name: {name}}}
spec:
  deny: {{status: 403}}
  conditions:
    userAgents: [{{value: {agent}, type: Exact}}]
{extra}"
    )
}

async fn status_for(sc: &Sidecar, agent: &str) -> Result<u16, String> {
    let from: IpAddr = "127.0.0.1".parse().expect("ip");
    get(from, sc.addr, "/", &[("user-agent", agent)])
        .await
        .map(|(s, _)| s)
}

async fn wait_status(sc: &Sidecar, agent: &str, want: u16, what: &str) {
    eventually_within(2, what, || async {
        let got = status_for(sc, agent).await?;
        (got == want).then_some(()).ok_or(format!("status {got}"))
    })
    .await;
}

#[tokio::test]
async fn a_minute_without_the_api_server_loses_no_request_and_no_expiry() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TempNs::new(cp, "outage").await;
    let op = webhook::injecting_operator(cp, &ns, "op-outage", &[], &pod("probe")).await;

    let (host, port) = api_server(cp);
    let link = Link::to(&host, port).await;
    let admitted: Pod = serde_json::from_value(pod("api-0")).expect("pod");
    let admitted = Api::<Pod>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &admitted)
        .await
        .expect("create the pod");
    let wiring = Wiring {
        upstream: echo_app().await,
        api_port: Some(link.port),
        ..Wiring::default()
    };
    let sc = Sidecar::from_pod(cp, &admitted, &wiring).await;
    // `bad` for good; `brief` until its ttl ends, during the outage.
    cp.apply(ns.name(), &deny_agent("deny-bad", "bad", ""))
        .expect("apply deny-bad");
    cp.apply(
        ns.name(),
        &deny_agent("deny-brief", "brief", "  ttl: 35s\n"),
    )
    .expect("apply deny-brief");
    wait_status(&sc, "bad", 403, "deny-bad enforced").await;
    wait_status(&sc, "brief", 403, "deny-brief enforced").await;
    let expire: jiff::Timestamp = cp
        .kubectl_ok(&[
            "-n",
            ns.name(),
            "get",
            "securityaction",
            "deny-brief",
            "-o",
            "jsonpath={.status.expireTime}",
        ])
        .expect("expireTime")
        .trim()
        .parse()
        .expect("an RFC 3339 time");

    link.cut();
    let cut_at = Instant::now();
    // Applied while the sidecar cannot see the API server: it cannot know yet.
    cp.apply(ns.name(), &deny_agent("deny-new", "new", ""))
        .expect("apply deny-new");
    let (mut requests, mut failed, mut wrong) = (0u64, 0u64, Vec::new());
    while cut_at.elapsed() < OUTAGE {
        let now = jiff::Timestamp::now();
        // One second of margin either side of the expiry for the clocks of test and sidecar.
        let brief_want = if now < expire - jiff::SignedDuration::from_secs(1) {
            Some(403)
        } else if now > expire + jiff::SignedDuration::from_secs(1) {
            Some(200)
        } else {
            None
        };
        for (agent, want) in [("ok", Some(200)), ("bad", Some(403)), ("brief", brief_want)] {
            requests += 1;
            match status_for(&sc, agent).await {
                Ok(got) if want.is_none_or(|w| w == got) => {}
                Ok(got) => wrong.push(format!("{agent} at {now}: {got}")),
                Err(e) => {
                    failed += 1;
                    wrong.push(format!("{agent} at {now}: {e}"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        jiff::Timestamp::now() > expire,
        "the ttl ended during the outage"
    );
    assert_eq!(failed, 0, "{wrong:?}");
    assert!(wrong.is_empty(), "{} wrong answers: {wrong:?}", wrong.len());
    assert_eq!(status_for(&sc, "new").await, Ok(200), "not seen yet");

    link.restore();
    let back_at = Instant::now();
    wait_status(
        &sc,
        "new",
        403,
        "the change made during the outage to arrive",
    )
    .await;
    let recovery = back_at.elapsed();
    assert_eq!(status_for(&sc, "bad").await, Ok(403));
    assert_eq!(status_for(&sc, "brief").await, Ok(200));
    eprintln!(
        "reliability: API server away {}s: {requests} requests through the sidecar, {failed} \
         failed, 0 wrong; the ttl ended on time during the outage; the change applied during \
         the outage reached the sidecar {:.1}s after the API server was back",
        OUTAGE.as_secs(),
        recovery.as_secs_f64()
    );
    drop(op);
}
