//! `rateLimit` on the real control plane: the operator counts the Ready pods a limit applies
//! to and writes the count into the bundle; two sidecars (the two pods of the workload) each
//! enforce their share, so the workload lets through what the action says; when a pod stops
//! being Ready the other one gets the whole limit, and the clients it already limited stay
//! limited.

use std::net::IpAddr;

use palisade_e2e::http::{echo_app, get};
use palisade_e2e::{ControlPlane, Operator, Sidecar, TempNs, eventually, scope};
use serde_json::Value;

/// 2 a minute plus a burst of 2, per client, across the `app: api` pods.
const ACTION: &str = r#"apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: limit-search}
spec:
  rateLimit: {requests: 2, per: Minute, burst: 2}
  conditions:
    paths: [{value: /search, type: Prefix}]
  targets:
    workloadSelector:
      matchLabels: {app: api}
"#;

/// A pod object as the injector leaves it (label `palisade.dev/injected=true`); no kubelet
/// runs it: its sidecar is a process of this test, or nothing at all.
fn pod(name: &str, app: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}", "labels": {{"app": "{app}", "palisade.dev/injected": "true"}}}},
            "spec": {{"containers": [{{"name": "web", "image": "example.invalid/web:1"}}]}}}}"#
    )
}

/// Sets the pod's `Ready` condition, as the kubelet would.
fn set_ready(cp: &ControlPlane, ns: &str, pod: &str, ready: bool) {
    let patch = format!(
        r#"{{"status": {{"conditions": [{{"type": "Ready", "status": "{}"}}]}}}}"#,
        if ready { "True" } else { "False" }
    );
    cp.patch_status(ns, "pod", pod, &patch)
        .expect("pod status patched");
}

fn bundle_generation(cp: &ControlPlane, ns: &str) -> Result<i64, String> {
    let out = cp
        .kubectl_ok(&[
            "-n",
            ns,
            "get",
            "securityaction",
            "limit-search",
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v["status"]["bundleGeneration"]
        .as_i64()
        .ok_or(format!("no bundleGeneration yet: {}", v["status"]))
}

fn enforced(sc: &Sidecar) -> Option<i64> {
    sc.bundle_version()?.split('-').next()?.parse().ok()
}

/// Waits until every sidecar enforces a bundle that carries the action as it is now.
async fn enforcing(cp: &ControlPlane, ns: &str, sidecars: &[&Sidecar]) {
    eventually("the sidecars to enforce the action", || async {
        let want = bundle_generation(cp, ns)?;
        let got: Vec<_> = sidecars.iter().map(|s| enforced(s)).collect();
        got.iter()
            .all(|g| g.is_some_and(|g| g >= want))
            .then_some(())
            .ok_or(format!("action at {want}, sidecars at {got:?}"))
    })
    .await
}

/// Sends `n` requests for /search from `from` to each sidecar in turn; returns how many the
/// app answered (the rest must be `429`).
async fn passed(sidecars: &[&Sidecar], from: &str, n: usize) -> usize {
    let from: IpAddr = from.parse().expect("ip");
    let mut ok = 0;
    for i in 0..n {
        let sc = sidecars[i % sidecars.len()];
        let (status, _) = get(from, sc.addr, "/search/items", &[])
            .await
            .expect("request");
        match status {
            200 => ok += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    ok
}

#[tokio::test]
async fn two_ready_pods_share_a_limit_and_one_leaving_hands_over_its_share() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "ratelimit").await;
    let _op = Operator::start(cp, "op-ratelimit", "op-ratelimit", &scope(&ns));
    // Two Ready pods of `app: api`; a Ready `app: shop` pod and a `app: api` pod that is not
    // Ready do not share the limit.
    for (name, app, ready) in [
        ("api-0", "api", true),
        ("api-1", "api", true),
        ("api-2", "api", false),
        ("shop-0", "shop", true),
    ] {
        cp.apply(ns.name(), &pod(name, app)).expect("pod");
        set_ready(cp, ns.name(), name, ready);
    }
    cp.apply(ns.name(), ACTION).expect("action");
    let app = echo_app().await;
    let labels = ["--pod-labels", "app=api"];
    let one = Sidecar::start_with_args(cp, ns.name(), "api-0", app, None, &labels);
    let two = Sidecar::start_with_args(cp, ns.name(), "api-1", app, None, &labels);
    enforcing(cp, ns.name(), &[&one, &two]).await;
    let first = enforced(&one).expect("a bundle");

    // Each of the 2 pods: 1 a minute and a burst of 1, so 2 at once; the workload: 4, the
    // action's 2 + 2. Were each pod to count the whole limit, it would be 6.
    assert_eq!(passed(&[&one, &two], "127.0.0.21", 20).await, 4);
    // A client whose requests all reach one pod gets that pod's share.
    assert_eq!(passed(&[&one], "127.0.0.22", 10).await, 2);

    // api-1 stops being Ready: api-0 alone carries the whole limit (3 at once).
    // (The action itself did not change, so its status keeps its generation: the next
    // bundle the sidecar applies is the one with the new count.)
    set_ready(cp, ns.name(), "api-1", false);
    eventually("api-0 to apply the bundle with one Ready pod", || async {
        let now = enforced(&one);
        now.filter(|g| *g > first)
            .ok_or(format!("api-0 at {now:?}, was {first}"))
    })
    .await;
    assert_eq!(passed(&[&one], "127.0.0.23", 10).await, 3);
    // A client it limited before is still limited (for a minute after its requests): the new
    // bundle kept its state.
    assert_eq!(passed(&[&one], "127.0.0.22", 3).await, 0);
}
