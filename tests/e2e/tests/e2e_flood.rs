//! The traffic model's Flooder attack, in real time, through two sidecar processes of one
//! namespace on the real control plane: both sidecars report to the operator's collector,
//! the `flooder` rule (CRD defaults) detects the attacker, a SecurityIncident and its Event
//! appear, and the existing `detectedBy: [flooder]` deny action answers the attacker 403
//! at both sidecars while the benign clients keep getting 200.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use jiff::SignedDuration;
use palisade_bench::send::{self, SendConfig};
use palisade_detection::sim::{Scenario, SimConfig, Traffic};
use palisade_e2e::flood::{Tally, setup};
use palisade_e2e::{ControlPlane, eventually};

const RULE: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: flooder}
spec:
  type: Flooder
  detectionTtl: 10m
"#;

#[tokio::test]
async fn a_generated_flood_through_two_sidecars_is_detected_and_denied_at_both() {
    let cp = ControlPlane::shared();
    let f = setup(cp, "flood2", RULE).await;
    let targets = f.sidecars.iter().map(|s| s.addr).collect();
    // 300 single-user clients and 2 NATs at 30 requests/s; after 20 s one flooder at
    // 60 requests/s (two thirds of the traffic) for up to 100 s.
    let traffic = Traffic::new(SimConfig {
        seed: 8,
        duration: SignedDuration::from_secs(120),
        clients: 300,
        nat_clients: 2,
        nat_users: (5, 10),
        base_rate: 30.0,
        scenarios: vec![Scenario::Flooder],
        attacks_per_kind: 1,
        warmup: SignedDuration::from_secs(20),
        attack_rate: Some(60.0),
        ip_base: std::net::Ipv4Addr::new(127, 0, 2, 1),
        ..Default::default()
    });
    let truth = traffic.truth().clone();
    let attacker = truth.attacks[0].ips[0];
    let (tx, rx) = mpsc::channel();
    let running = send::spawn(
        traffic,
        SendConfig {
            targets,
            ..Default::default()
        },
        tx,
    );
    // Collect outcomes until the attacker is denied at both sidecars, then 5 s more.
    let tally = tokio::task::spawn_blocking(move || {
        let mut tally = Tally::default();
        let mut done: Option<Instant> = None;
        while let Ok(o) = rx.recv_timeout(Duration::from_secs(10)) {
            tally.add(o);
            if done.is_none() {
                done = tally.blocked_everywhere(attacker, 2);
            }
            if done.is_some_and(|d| d.elapsed() > Duration::from_secs(5)) {
                break;
            }
        }
        (tally, done)
    });
    let (tally, done) = tally.await.expect("collector thread");
    running.stop();
    let sent_by = |ip| tally.outcomes.iter().filter(|o| o.ip == ip).count();
    let blocked = done.unwrap_or_else(|| {
        panic!(
            "flooder {attacker} not denied at both sidecars: first 403s {:?}, {} of its requests sent, \
             statuses {:?}",
            tally.first_403,
            sent_by(attacker),
            tally
                .outcomes
                .iter()
                .filter(|o| o.ip == attacker)
                .map(|o| o.status)
                .collect::<std::collections::BTreeSet<_>>()
        )
    });
    // Benign clients: never denied, answered 200 at both sidecars after the flooder was.
    let benign: Vec<_> = tally
        .outcomes
        .iter()
        .filter(|o| o.attack.is_none())
        .collect();
    let denied: Vec<_> = benign.iter().filter(|o| o.status == 403).collect();
    assert!(denied.is_empty(), "benign clients denied: {denied:?}");
    let failed = benign.iter().filter(|o| o.status != 200).count();
    assert!(
        failed * 100 <= benign.len(),
        "{failed} of {} benign requests failed: {:?}",
        benign.len(),
        benign.iter().find(|o| o.status != 200)
    );
    for i in 0..2 {
        let after = benign
            .iter()
            .filter(|o| o.target == i && o.sent > blocked && o.status == 200)
            .count();
        assert!(
            after >= 20,
            "sidecar {i}: {after} benign 200s after the flooder was denied"
        );
    }
    let ns = f.ns.name();
    // `status.attributes.ips` lists addresses, the flooder's with its exact requests.
    let key = attacker.to_string();
    let name = eventually("a SecurityIncident for the flooder", || async {
        let out = cp
            .kubectl_ok(&[
                "-n",
                ns,
                "get",
                "securityincidents",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.rulesSummary} {.status.attributes.ips.top[*].value}{\"\\n\"}{end}",
            ])
            .map_err(|e| e.to_string())?;
        let line = out
            .lines()
            .find(|l| l.contains("flooder") && l.split(' ').any(|w| w == key))
            .ok_or(format!("incidents: {out:?}"))?;
        Ok::<_, String>(line.split(' ').next().unwrap_or_default().to_owned())
    })
    .await;
    let listed = cp
        .kubectl_ok(&["-n", ns, "get", "securityincidents"])
        .expect("kubectl get securityincidents");
    assert!(
        listed.contains(&name),
        "kubectl get securityincidents: {listed}"
    );
    eventually("an IncidentOpened Event", || async {
        let ev = cp
            .kubectl_ok(&[
                "-n",
                ns,
                "events",
                "--for",
                &format!("securityincident/{name}"),
            ])
            .map_err(|e| e.to_string())?;
        ev.contains("IncidentOpened").then_some(()).ok_or(ev)
    })
    .await;
    // Only the flooder is in the detected set: no benign client, no NAT gateway.
    eventually(
        "the flooder rule's status to count one detected client",
        || async {
            let n = cp
                .kubectl_ok(&[
                    "-n",
                    ns,
                    "get",
                    "detectionrule",
                    "flooder",
                    "-o",
                    "jsonpath={.status.detectedClients}",
                ])
                .map_err(|e| e.to_string())?;
            (n == "1").then_some(()).ok_or(n)
        },
    )
    .await;
}
