//! etcd restarted under a running system (issue 18, reliability): etcd is killed (SIGKILL),
//! stays down for 10 s and starts again on its data directory, while a flood runs and steady
//! clients check every answer. The API server fails every request meanwhile: the sidecar keeps
//! enforcing its last bundle, the operator stops leading (it cannot renew its Lease) and leads
//! again once etcd is back, nothing that was stored is lost, an action applied after the
//! return is enforced, and the flood's incident goes on under its name. The figures are
//! printed for bench/results/reliability.md.
//!
//! In a binary of its own, on a control plane of its own: the outage would fail every other
//! test sharing the control plane.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_e2e::http::get;
use palisade_e2e::leadership::{
    STEADY_CLIENT, deny_agent, incidents, leads, protected_and_flooded, status_for, steady_clients,
    wait_to_lead,
};
use palisade_e2e::{ControlPlane, Operator, StartOptions, TempNs, eventually, scope};

const DOWN: Duration = Duration::from_secs(10);

/// A control plane of this test's own (not the shared one), for the whole process.
fn own_control_plane() -> &'static ControlPlane {
    let shared = StartOptions::for_tests();
    let own = |p: &std::path::Path| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        p.with_file_name(format!("{name}-etcd-restart"))
    };
    let cp = ControlPlane::start(StartOptions {
        state_dir: own(&shared.state_dir),
        logs: own(&shared.logs),
        ..shared
    })
    .unwrap_or_else(|e| panic!("cannot start a control plane: {e}"));
    Box::leak(Box::new(cp))
}

#[tokio::test]
async fn etcd_restarted_during_a_flood_loses_no_request_no_object_and_no_incident() {
    if std::env::var_os("PALISADE_E2E_KUBECONFIG").is_some() {
        eprintln!("skipped: restarting etcd needs the control plane this harness starts");
        return;
    }
    palisade_e2e::install_crypto_provider();
    let cp = own_control_plane();
    palisade_e2e::operator_kubeconfig(cp);
    let ns = TempNs::new(cp, "etcd-restart").await;
    let lease = "op-etcd-restart";
    let mut args = scope(&ns).to_vec();
    args.extend(["--collector-snapshot-interval".into(), "1s".into()]);
    let op = Operator::start(cp, "op-etcd-restart", lease, &args);
    wait_to_lead(cp, lease, "op-etcd-restart").await;
    let (sc, name) = protected_and_flooded(cp, ns.name(), &op.collector).await;
    let client: IpAddr = STEADY_CLIENT.parse().expect("ip");
    let stop = Arc::new(AtomicBool::new(false));
    let steady = steady_clients(sc.clone(), client, stop.clone());
    // The flood goes on throughout.
    let flooding = tokio::spawn({
        let (sc, stop) = (sc.clone(), stop.clone());
        async move {
            let flooder: IpAddr = "127.0.0.66".parse().expect("ip");
            while !stop.load(Ordering::Relaxed) {
                let _ = get(flooder, sc.addr, "/", &[]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    let down_at = jiff::Timestamp::now();
    let restart = tokio::task::spawn_blocking(move || cp.restart_etcd(DOWN));
    // While etcd is down the operator cannot renew its Lease: it stops leading.
    let stepped_down = Instant::now();
    eventually(
        "the operator to stop leading while etcd is down",
        || async { (!leads(&op)?).then_some(()).ok_or("still leads".to_owned()) },
    )
    .await;
    let stepped_down = stepped_down.elapsed();
    restart
        .await
        .expect("restart task")
        .expect("etcd started again");
    let back = Instant::now();
    // Nothing stored is lost: the objects are there, the incident too.
    eventually("the API server to answer again", || async {
        cp.kubectl_ok(&["get", "--raw=/readyz"])
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let api_back = back.elapsed();
    for (kind, obj) in [
        ("securityaction", "deny-bad"),
        ("detectionrule", "flooder"),
        ("securityincident", name.as_str()),
    ] {
        cp.kubectl_ok(&["-n", ns.name(), "get", kind, obj])
            .unwrap_or_else(|e| panic!("{kind} {obj} after etcd's restart: {e}"));
    }
    cp.apply(ns.name(), &deny_agent("deny-new", "new"))
        .expect("deny-new");
    let (led, enforced, updated) = (
        std::cell::Cell::new(None::<Duration>),
        std::cell::Cell::new(None::<Duration>),
        std::cell::Cell::new(None::<Duration>),
    );
    eventually(
        "the operator to lead, enforce deny-new and update the incident",
        || async {
            if led.get().is_none() && leads(&op)? {
                led.set(Some(back.elapsed()));
            }
            if enforced.get().is_none() && status_for(&sc, client, "new").await? == 403 {
                enforced.set(Some(back.elapsed()));
            }
            if updated.get().is_none() {
                let all = incidents(cp, ns.name())?;
                let [(n, last)] = all.as_slice() else {
                    return Err(format!("exactly one incident expected: {all:?}"));
                };
                assert_eq!(n, &name, "the incident keeps its name");
                if *last > down_at {
                    updated.set(Some(back.elapsed()));
                }
            }
            match (led.get(), enforced.get(), updated.get()) {
                (Some(_), Some(_), Some(_)) => Ok(()),
                s => Err(format!("led / enforced / updated: {s:?}")),
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    flooding.await.expect("flood");
    let seen = steady.await.expect("steady clients");
    eprintln!(
        "reliability: etcd killed and down {} s during a flood: {} requests, {} failed, {} wrong; \
         the operator stopped leading after {:.1} s; after etcd was back the API server answered \
         after {:.1} s, the operator led again after {:.1} s, an action applied then was enforced \
         after {:.1} s and incident {name} updated after {:.1} s; every object kept",
        DOWN.as_secs(),
        seen.requests,
        seen.failed,
        seen.wrong.len(),
        stepped_down.as_secs_f64(),
        api_back.as_secs_f64(),
        led.get().unwrap_or_default().as_secs_f64(),
        enforced.get().unwrap_or_default().as_secs_f64(),
        updated.get().unwrap_or_default().as_secs_f64(),
    );
    assert_eq!(seen.failed, 0, "{:?}", seen.wrong);
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    assert!(seen.requests > 0, "the steady clients ran");
}
