//! The leader killed with SIGKILL in the middle of a flood and of a bundle change (issue 18,
//! reliability). Two operators share a Lease; a sidecar reports to the one that does not
//! lead. An action is applied and, at once, the leader is killed: whether or not it wrote the
//! new bundle, the other operator takes over and the sidecar enforces the action; the flood's
//! incident goes on under its name; a client that is allowed and one that is denied get the
//! right answer on every request throughout. The figures (requests, failures, the times to
//! take over, to enforce the action and to update the incident) are printed for
//! bench/results/reliability.md.
//!
//! In a binary of its own: it kills an operator.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_e2e::http::get;
use palisade_e2e::injected::api_server;
use palisade_e2e::leadership::{
    STEADY_CLIENT, deny_agent, incidents, leads, lease_holder, protected_and_flooded, sample,
    status_for, steady_clients, wait_to_lead,
};
use palisade_e2e::outage::Link;
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

const LEASE: &str = "op-chaos";

#[tokio::test]
async fn the_leader_killed_during_a_flood_and_a_bundle_change_loses_no_request_and_no_incident() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "chaos").await;
    let mut args = scope(&ns).to_vec();
    args.extend(["--collector-snapshot-interval".into(), "1s".into()]);
    let mut a = Operator::start(cp, "op-chaos-a", LEASE, &args);
    wait_to_lead(cp, LEASE, "op-chaos-a").await;
    let b = Operator::start(cp, "op-chaos-b", LEASE, &args);
    let (sc, name) = protected_and_flooded(cp, ns.name(), &b.collector).await;
    let client: IpAddr = STEADY_CLIENT.parse().expect("ip");

    // Steady clients from here to the end: `ok` is always let through, `bad` always denied.
    let stop = Arc::new(AtomicBool::new(false));
    let steady = steady_clients(sc.clone(), client, stop.clone());

    // A bundle change, and at once the leader dies (SIGKILL: nothing is saved on the way out).
    cp.apply(ns.name(), &deny_agent("deny-new", "new"))
        .expect("deny-new");
    let killed = Instant::now();
    let killed_at = jiff::Timestamp::now();
    a.kill();

    // The flood goes on; the other operator takes over.
    let flooder: IpAddr = "127.0.0.66".parse().expect("ip");
    let took_over = std::cell::Cell::new(None::<Duration>);
    let enforced = std::cell::Cell::new(None::<Duration>);
    let updated = std::cell::Cell::new(None::<Duration>);
    eventually(
        "the new leader to enforce deny-new and update the incident",
        || async {
            for _ in 0..50 {
                get(flooder, sc.addr, "/", &[]).await?;
            }
            let leader = format!("op-chaos-b {}", b.collector);
            if took_over.get().is_none() && lease_holder(cp, LEASE)?.starts_with(&leader) {
                took_over.set(Some(killed.elapsed()));
            }
            if enforced.get().is_none() && status_for(&sc, client, "new").await? == 403 {
                enforced.set(Some(killed.elapsed()));
            }
            if updated.get().is_none() {
                let all = incidents(cp, ns.name())?;
                let [(n, last)] = all.as_slice() else {
                    return Err(format!("exactly one incident expected: {all:?}"));
                };
                assert_eq!(n, &name, "the incident keeps its name");
                if *last > killed_at {
                    updated.set(Some(killed.elapsed()));
                }
            }
            match (took_over.get(), enforced.get(), updated.get()) {
                (Some(_), Some(_), Some(_)) => Ok(()),
                s => Err(format!("took over / enforced / updated: {s:?}")),
            }
        },
    )
    .await;
    // And a while after the recovery: nothing goes wrong later either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = steady.await.expect("steady clients");
    eprintln!(
        "reliability: leader killed during a flood and a bundle change: {} requests, {} failed, {} wrong; \
         new leader after {:.1} s, deny-new enforced after {:.1} s, incident {name} updated \
         after {:.1} s",
        seen.requests,
        seen.failed,
        seen.wrong.len(),
        took_over.get().unwrap_or_default().as_secs_f64(),
        enforced.get().unwrap_or_default().as_secs_f64(),
        updated.get().unwrap_or_default().as_secs_f64(),
    );
    assert_eq!(seen.failed, 0, "{:?}", seen.wrong);
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    assert!(seen.requests > 0, "the steady clients ran");
}

/// A copy of the operator's kubeconfig that reaches the API server through `link`.
fn kubeconfig_through(cp: &'static ControlPlane, link: &Link, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(palisade_e2e::operator_kubeconfig(cp)).expect("kubeconfig");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    for cluster in doc["clusters"].as_sequence_mut().expect("clusters") {
        cluster["cluster"]["server"] = format!("https://127.0.0.1:{}", link.port).into();
    }
    let path = std::env::temp_dir().join(format!("{name}-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, serde_yaml::to_string(&doc).expect("YAML")).expect("write kubeconfig");
    path
}

const CUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_leader_cut_from_the_api_server_steps_down_and_writes_nothing_when_it_returns() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "chaos-cut").await;
    let lease = "op-chaos-cut";
    let mut args = scope(&ns).to_vec();
    args.extend(["--collector-snapshot-interval".into(), "1s".into()]);
    let (host, port) = api_server(cp);
    let link = Link::to(&host, port).await;
    let through = kubeconfig_through(cp, &link, "op-chaos-cut-a");
    let a = Operator::start_as(cp, &through, "op-chaos-cut-a", lease, &args);
    wait_to_lead(cp, lease, "op-chaos-cut-a").await;
    let b = Operator::start(cp, "op-chaos-cut-b", lease, &args);
    let (sc, name) = protected_and_flooded(cp, ns.name(), &b.collector).await;
    let client: IpAddr = STEADY_CLIENT.parse().expect("ip");
    let stop = Arc::new(AtomicBool::new(false));
    let steady = steady_clients(sc.clone(), client, stop.clone());

    // The leader loses the API server; the other replica still has it.
    let reconciles = r#"palisade_operator_reconciles_total{controller="policy"}"#;
    link.cut();
    let cut = Instant::now();
    let cut_at = jiff::Timestamp::now();
    cp.apply(ns.name(), &deny_agent("deny-new", "new"))
        .expect("deny-new");
    let flooder: IpAddr = "127.0.0.66".parse().expect("ip");
    let (stepped_down, took_over, enforced, updated) = (
        std::cell::Cell::new(None::<Duration>),
        std::cell::Cell::new(None::<Duration>),
        std::cell::Cell::new(None::<Duration>),
        std::cell::Cell::new(None::<Duration>),
    );
    eventually(
        "the cut leader to step down and the other to take over",
        || async {
            for _ in 0..50 {
                get(flooder, sc.addr, "/", &[]).await?;
            }
            if stepped_down.get().is_none() && !leads(&a)? {
                stepped_down.set(Some(cut.elapsed()));
            }
            if took_over.get().is_none() && leads(&b)? {
                took_over.set(Some(cut.elapsed()));
            }
            if enforced.get().is_none() && status_for(&sc, client, "new").await? == 403 {
                enforced.set(Some(cut.elapsed()));
            }
            if updated.get().is_none() {
                let all = incidents(cp, ns.name())?;
                let [(n, last)] = all.as_slice() else {
                    return Err(format!("exactly one incident expected: {all:?}"));
                };
                assert_eq!(n, &name, "the incident keeps its name");
                if *last > cut_at {
                    updated.set(Some(cut.elapsed()));
                }
            }
            match (
                stepped_down.get(),
                took_over.get(),
                enforced.get(),
                updated.get(),
            ) {
                (Some(_), Some(_), Some(_), Some(_)) => Ok(()),
                s => Err(format!(
                    "stepped down / took over / enforced / updated: {s:?}"
                )),
            }
        },
    )
    .await;
    // Never two leaders for longer than the lease: the cut one steps down on its own (it
    // cannot renew), at the latest one lease duration (3 s here) after its last renewal.
    let stepped_down = stepped_down.get().unwrap_or_default();
    assert!(
        stepped_down <= Duration::from_secs(5),
        "the cut leader still said it led {stepped_down:?} after the cut"
    );
    let written_while_cut = sample(&a, reconciles).unwrap_or(0.0);
    let remaining = CUT.saturating_sub(cut.elapsed());
    tokio::time::sleep(remaining).await;
    assert!(
        !leads(&a).expect("a's metrics"),
        "the cut replica leads again while cut"
    );

    // Back: it follows, and compiles nothing from the caches it kept while away.
    let before = link.accepted();
    link.restore();
    let restored = Instant::now();
    eventually(
        "the returned replica to reach the API server again",
        || async {
            let now = link.accepted();
            (now > before)
                .then_some(())
                .ok_or(format!("{now} connections"))
        },
    )
    .await;
    // A lease duration and more with the API server back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !leads(&a).expect("a's metrics"),
        "the returned replica leads"
    );
    assert!(
        leads(&b).expect("b's metrics"),
        "the other replica stopped leading"
    );
    assert_eq!(
        sample(&a, reconciles).unwrap_or(0.0),
        written_while_cut,
        "the returned replica reconciled (and may have written) as if it led"
    );
    assert_eq!(status_for(&sc, client, "new").await, Ok(403));
    stop.store(true, Ordering::Relaxed);
    let seen = steady.await.expect("steady clients");
    eprintln!(
        "reliability: the leader cut from the API server for {} s during a flood and a bundle \
         change: {} requests, {} failed, {} wrong; it stepped down after {:.1} s, the other \
         replica led after {:.1} s, deny-new enforced after {:.1} s, incident {name} updated \
         after {:.1} s; back for {:.1} s, the cut replica followed and wrote nothing",
        CUT.as_secs(),
        seen.requests,
        seen.failed,
        seen.wrong.len(),
        stepped_down.as_secs_f64(),
        took_over.get().unwrap_or_default().as_secs_f64(),
        enforced.get().unwrap_or_default().as_secs_f64(),
        updated.get().unwrap_or_default().as_secs_f64(),
        restored.elapsed().as_secs_f64(),
    );
    assert_eq!(seen.failed, 0, "{:?}", seen.wrong);
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    assert!(seen.requests > 0, "the steady clients ran");
}
