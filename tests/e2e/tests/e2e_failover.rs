//! Collector high availability on the real control plane: two operators share one Lease; a
//! sidecar reports to the non-leader, which forwards its reports to the leader, and a flood
//! is detected. Then the leader dies: the other one takes over, restores the persisted
//! windows (the flood is detected again without new traffic) and keeps updating the same
//! SecurityIncident instead of opening a second one. A leader stopped gracefully (SIGTERM)
//! persists its state on the way out; a corrupt persisted state is ignored with a Warning
//! Event and never stops the leader. A TorList rule's downloaded list goes over to the new
//! leader, which detects its exits though the URL is down. The SecurityActions' request counts
//! go over with the windows: the new leader counts on from them.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use palisade_e2e::collector::{list_server, tor_detects, tor_status};
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::leadership::{
    flood_until_incident, incidents, lease_holder, sample, wait_to_lead,
};
use palisade_e2e::{ControlPlane, OPERATOR_NS, Operator, Sidecar, TempNs, eventually, scope};

const LEASE: &str = "op-failover";

use palisade_e2e::flood::QUICK_FLOODER as FLOODER;

#[tokio::test]
async fn reports_reach_the_leader_and_a_new_leader_continues_windows_and_incident() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "failover").await;
    let mut args = scope(&ns).to_vec();
    args.extend(["--collector-snapshot-interval".into(), "1s".into()]);
    let mut a = Operator::start(cp, "op-failover-a", LEASE, &args);
    eventually(
        "op-failover-a to lead and advertise its collector",
        || async {
            let holder = lease_holder(cp, LEASE)?;
            (holder == format!("op-failover-a {}", a.collector))
                .then_some(())
                .ok_or(holder)
        },
    )
    .await;
    let b = Operator::start(cp, "op-failover-b", LEASE, &args);
    cp.apply(ns.name(), FLOODER).expect("rule");

    // The sidecar reports to the replica that does not lead.
    let app = echo_app().await;
    let sc = Sidecar::start(cp, ns.name(), "api-0", app, Some(&b.collector));
    let name = flood_until_incident(
        cp,
        ns.name(),
        &sc,
        "the flood, reported through the non-leader, to open an incident",
    )
    .await;
    let forwarded = sample(
        &b,
        "palisade_operator_reports_forwarded_total{outcome=\"Accepted\"}",
    )
    .expect("op-failover-b forwarded reports");
    assert!(forwarded >= 1.0, "forwarded and accepted: {forwarded}");
    assert!(
        sample(&b, "palisade_operator_leader ").expect("leader gauge") == 0.0,
        "op-failover-b does not lead"
    );

    // Traffic stops; the leader persists its state once more with the incident, then dies.
    let saved = sample(
        &a,
        "palisade_operator_collector_state_total{op=\"save\",outcome=\"Saved\"}",
    )
    .unwrap_or(0.0);
    eventually("op-failover-a to save its state again", || async {
        let now = sample(
            &a,
            "palisade_operator_collector_state_total{op=\"save\",outcome=\"Saved\"}",
        )?;
        (now > saved).then_some(()).ok_or(format!("saves: {now}"))
    })
    .await;
    let taken_by = cp
        .kubectl_ok(&[
            "-n",
            OPERATOR_NS,
            "get",
            "configmap",
            &format!("{LEASE}-state"),
            "-o",
            "jsonpath={.metadata.annotations.palisade\\.dev/taken-by}",
        ])
        .expect("the state ConfigMap");
    assert_eq!(taken_by, "op-failover-a", "the leader persisted the state");
    let before = incidents(cp, ns.name()).expect("incidents");
    assert_eq!(before.len(), 1, "one incident: {before:?}");
    let killed_at = jiff::Timestamp::now();
    a.kill();

    eventually(
        "op-failover-b to take over and restore the windows",
        || async {
            let restored = sample(
                &b,
                "palisade_operator_collector_state_total{op=\"restore\",outcome=\"Restored\"}",
            )?;
            let clients = sample(&b, "palisade_operator_collector_restored_clients ")?;
            (restored == 1.0 && clients >= 1.0)
                .then_some(())
                .ok_or(format!("restores {restored}, clients {clients}"))
        },
    )
    .await;
    eventually(
        "the same incident to be updated from the restored windows, without new traffic",
        || async {
            let all = incidents(cp, ns.name())?;
            let [(n, last)] = all.as_slice() else {
                return Err(format!("exactly one incident expected: {all:?}"));
            };
            assert_eq!(n, &name, "the incident keeps its name");
            (*last > killed_at)
                .then_some(())
                .ok_or(format!("lastDetectedTime {last} not after {killed_at}"))
        },
    )
    .await;
    let holder = lease_holder(cp, LEASE).expect("lease");
    assert_eq!(
        holder,
        format!("op-failover-b {}", b.collector),
        "the new leader advertises its own collector"
    );
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_persists_its_windows_for_the_next_one() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "shutdown").await;
    let lease = "op-shutdown";
    // No periodic snapshot during the test: only the one taken on shutdown can carry the flood.
    let mut args = scope(&ns).to_vec();
    args.extend(["--collector-snapshot-interval".into(), "1h".into()]);
    args.extend(["--evidence-interval".into(), "1s".into()]);
    let mut a = Operator::start(cp, "op-shutdown-a", lease, &args);
    wait_to_lead(cp, lease, "op-shutdown-a").await;
    let b = Operator::start(cp, "op-shutdown-b", lease, &args);
    cp.apply(ns.name(), FLOODER).expect("rule");
    cp.apply(ns.name(), GONE).expect("action");
    let app = echo_app().await;
    let sc = Sidecar::start(cp, ns.name(), "api-0", app, Some(&a.collector));
    flood_until_incident(cp, ns.name(), &sc, "the flood to open an incident").await;
    // The action's counts go over to the next leader too.
    eventually("the sidecar to deny /gone", || async {
        let code = status_of(&sc, "/gone").await?;
        (code == 410).then_some(()).ok_or(format!("{code}"))
    })
    .await;
    for _ in 0..2 {
        assert_eq!(status_of(&sc, "/gone").await, Ok(410));
    }
    wait_matched(cp, ns.name(), 3).await;

    a.terminate();
    eventually(
        "op-shutdown-b to take over with the windows saved on shutdown",
        || async {
            let clients = sample(&b, "palisade_operator_collector_restored_clients ")?;
            (clients >= 1.0)
                .then_some(())
                .ok_or(format!("restored clients {clients}"))
        },
    )
    .await;
    let all = incidents(cp, ns.name()).expect("incidents");
    assert_eq!(all.len(), 1, "still one incident: {all:?}");
    // The new leader counts on from the saved counts: 3 + 1, not 1.
    let sc = Sidecar::start(cp, ns.name(), "api-1", app, Some(&b.collector));
    eventually("the new sidecar to deny /gone", || async {
        let code = status_of(&sc, "/gone").await?;
        (code == 410).then_some(()).ok_or(format!("{code}"))
    })
    .await;
    wait_matched(cp, ns.name(), 4).await;
}

const GONE: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-gone}
spec:
  deny: {status: 410}
  conditions:
    paths: [{value: /gone}]
"#;

async fn status_of(sc: &Sidecar, path: &str) -> Result<u16, String> {
    let from: IpAddr = "127.0.0.1".parse().expect("ip");
    get(from, sc.addr, path, &[]).await.map(|(s, _)| s)
}

/// Waits until `deny-gone` shows `n` matched requests in the last hour.
async fn wait_matched(cp: &ControlPlane, ns: &str, n: i64) {
    eventually(&format!("deny-gone to show {n} matched"), || async {
        let got = cp
            .kubectl_ok(&[
                "-n",
                ns,
                "get",
                "securityaction",
                "deny-gone",
                "-o",
                "jsonpath={.status.matchedRequests.last1h}",
            ])
            .map_err(|e| e.to_string())?;
        (got.trim() == n.to_string())
            .then_some(())
            .ok_or(format!("matched {got:?}"))
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_state_is_ignored_with_a_warning_event_and_the_leader_still_detects() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "corrupt").await;
    let lease = "op-corrupt";
    let state = format!("{lease}-state");
    palisade_e2e::operator_kubeconfig(cp);
    let _ = cp.kubectl_ok(&["-n", OPERATOR_NS, "delete", "configmap", &state]);
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("state");
    std::fs::write(&garbage, [0xff, 0xfe, 0x00, 0x01]).expect("write");
    cp.kubectl_ok(&[
        "-n",
        OPERATOR_NS,
        "create",
        "configmap",
        &state,
        &format!("--from-file=state={}", garbage.display()),
    ])
    .expect("a corrupt state ConfigMap (binaryData: not gzip)");
    let mut args = scope(&ns).to_vec();
    args.extend(["--collector-snapshot-interval".into(), "1s".into()]);
    let op = Operator::start(cp, "op-corrupt", lease, &args);
    eventually(
        "a StateCorrupt Warning Event on the state ConfigMap",
        || async {
            let ev = cp
                .kubectl_ok(&[
                    "-n",
                    OPERATOR_NS,
                    "events",
                    "--for",
                    &format!("configmap/{state}"),
                ])
                .map_err(|e| e.to_string())?;
            (ev.contains("StateCorrupt") && ev.contains("Warning"))
                .then_some(())
                .ok_or(ev)
        },
    )
    .await;
    cp.apply(ns.name(), FLOODER).expect("rule");
    let app = echo_app().await;
    let sc = Sidecar::start(cp, ns.name(), "api-0", app, Some(&op.collector));
    flood_until_incident(
        cp,
        ns.name(),
        &sc,
        "the leader, started empty, to detect the flood",
    )
    .await;
    eventually("the leader to overwrite the corrupt state", || async {
        let by = cp
            .kubectl_ok(&[
                "-n",
                OPERATOR_NS,
                "get",
                "configmap",
                &state,
                "-o",
                "jsonpath={.metadata.annotations.palisade\\.dev/taken-by}",
            ])
            .map_err(|e| e.to_string())?;
        (by == "op-corrupt")
            .then_some(())
            .ok_or(format!("taken-by {by:?}"))
    })
    .await;
}

#[tokio::test]
async fn a_new_leader_keeps_the_downloaded_tor_list_when_the_url_is_down() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "torfail").await;
    let n = ns.name();
    let lease = "op-torfail";
    let mut a = Operator::start(cp, "op-torfail-a", lease, &scope(&ns));
    wait_to_lead(cp, lease, "op-torfail-a").await;
    let b = Operator::start(cp, "op-torfail-b", lease, &scope(&ns));
    let answer = Arc::new(Mutex::new((
        200u16,
        "127.0.0.77\n198.51.100.20\n".to_owned(),
    )));
    let port = list_server(answer.clone()).await;
    let rule = format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: DetectionRule\nmetadata: {{name: tor}}\n\
         spec:\n  type: TorList\n  detectionTtl: 1m\n  \
         torList: {{url: 'http://127.0.0.1:{port}/exits', refreshInterval: 5m}}\n"
    );
    cp.apply(n, &rule).expect("rule");
    let fetched = eventually("op-torfail-a to fetch the list", || async {
        let st = tor_status(cp, n)?;
        (st["list"]["entries"] == 2 && st["ready"]["reason"] == "Fetched")
            .then(|| st["list"]["updateTime"].clone())
            .ok_or(st.to_string())
    })
    .await;

    // The list server goes down, then the leader stops (saving its state on the way out).
    *answer.lock().expect("answer") = (503, "maintenance".into());
    a.terminate();
    wait_to_lead(cp, lease, "op-torfail-b").await;

    // Traffic from an exit through a sidecar reporting to the new leader is detected with the
    // list the old leader downloaded.
    let app = echo_app().await;
    let sc = Sidecar::start(cp, n, "api-0", app, Some(&b.collector));
    let exit: IpAddr = "127.0.0.77".parse().expect("ip");
    let client = cp.client().await;
    eventually("the exit 127.0.0.77 detected by op-torfail-b", || async {
        get(exit, sc.addr, "/", &[]).await?;
        tor_detects(&client, n, "127.0.0.77")
            .await?
            .then_some(())
            .ok_or("not yet".to_owned())
    })
    .await;
    // Not downloaded again before it is due: the status still shows the first download.
    let st = tor_status(cp, n).expect("status");
    assert_eq!(st["list"]["entries"], 2, "{st}");
    assert_eq!(st["list"]["updateTime"], fetched, "{st}");
    assert_eq!(st["ready"]["reason"], "Fetched", "{st}");
}
