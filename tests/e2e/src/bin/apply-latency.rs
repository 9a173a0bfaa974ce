//! `make bench`: apply→bundle-written latency of the policy controller on the real control
//! plane. Starts a control plane and the operator (release build beside this binary),
//! server-side applies `PALISADE_BENCH_CHANGES` (default 200) successive edits of one
//! SecurityAction and times each until the manifest ConfigMap carries the new bundle, then
//! times how late a `ttl` expiry leaves the bundle. Writes bench/results/apply-latency.md.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use palisade_e2e::{ControlPlane, Operator, StartOptions, TempNs, scope};

fn manifest_of(cm: &ConfigMap) -> Option<String> {
    cm.data.as_ref()?.get("manifest.json").cloned()
}

fn action(i: u32) -> serde_json::Value {
    serde_json::json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityAction",
        "metadata": {"name": "bench"},
        "spec": {"deny": {}, "conditions": {"ipRanges": [format!("198.18.{}.{}/32", i / 250, i % 250)]}}})
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    palisade_e2e::install_crypto_provider();
    let changes: u32 = std::env::var("PALISADE_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cp: &'static ControlPlane =
        Box::leak(Box::new(ControlPlane::start(StartOptions::for_tests())?));
    cp.install_crds();
    let ns = TempNs::new(cp, "bench").await;
    let _op = Operator::start(cp, "op-bench", "op-bench", &scope(&ns));
    let client = cp.client().await;
    let actions: Api<palisade_crds::SecurityAction> = Api::namespaced(client.clone(), ns.name());
    let cms: Api<ConfigMap> = Api::namespaced(client, ns.name());
    let wc = watcher::Config::default().fields("metadata.name=palisade-bundle");
    let mut manifests = watcher(cms, wc).applied_objects().boxed();
    let pp = PatchParams::apply("palisade-bench").force();
    let mut last = None;
    let mut latencies = Vec::new();
    for i in 0..=changes {
        let start = Instant::now();
        actions
            .patch("bench", &pp, &Patch::Apply(action(i)))
            .await?;
        loop {
            let cm = tokio::time::timeout(Duration::from_secs(30), manifests.next()).await?;
            let Some(Ok(cm)) = cm else {
                anyhow::bail!("manifest watch ended")
            };
            let m = manifest_of(&cm);
            if m.is_some() && m != last {
                last = m;
                break;
            }
        }
        if i > 0 {
            latencies.push(start.elapsed()); // the first apply also creates the bundle: warm-up
        }
    }
    latencies.sort();
    let ttl = serde_json::json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityAction",
        "metadata": {"name": "bench-ttl"},
        "spec": {"deny": {}, "ttl": "3s", "conditions": {"ipRanges": ["198.19.0.1/32"]}}});
    let mut lateness = Vec::new();
    for round in 0..5 {
        let name = format!("bench-ttl-{round}");
        let mut obj = ttl.clone();
        obj["metadata"]["name"] = serde_json::json!(name);
        let created = actions.patch(&name, &pp, &Patch::Apply(&obj)).await?;
        let made = created
            .metadata
            .creation_timestamp
            .map(|t| t.0)
            .unwrap_or_default();
        let expires = made + jiff::SignedDuration::from_secs(3);
        let mut seen_in = false;
        loop {
            let cm = tokio::time::timeout(Duration::from_secs(30), manifests.next()).await?;
            let Some(Ok(_cm)) = cm else {
                anyhow::bail!("manifest watch ended")
            };
            let (_, b) = palisade_e2e::bundle::read_bundle(&cp.client().await, ns.name())
                .await
                .map_err(anyhow::Error::msg)?;
            let present = b.actions.iter().any(|a| a.name == name);
            if present {
                seen_in = true;
            } else if seen_in {
                let late = jiff::Timestamp::now().duration_since(expires);
                lateness.push(Duration::try_from(late).unwrap_or_default());
                break;
            }
        }
    }
    lateness.sort();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = format!(
        "# Apply → bundle written (real control plane)\n\n\
         - Date: {now}; command: `make bench` (`palisade-e2e --bin apply-latency`, {profile} build); load average: {load}\n\
         - {changes} server-side applies of one SecurityAction (a new /32 each), each timed from the \
         apply call to the watch event of the manifest ConfigMap carrying the new bundle; \
         operator, kube-apiserver and etcd on this machine (2 vCPU).\n\n\
         | measure | p50 | p99 | max |\n|---|---|---|---|\n\
         | apply → bundle written | {p50:?} | {p99:?} | {max:?} |\n\
         | ttl expiry → bundle rewritten (5 rounds) | {l50:?} | {l99:?} | {lmax:?} |\n\n\
         Goals (issue 5): p50 ≤ 150 ms, p99 ≤ 500 ms; expiry ≤ 1 s late. \
         Status: p50 {s50}, p99 {s99}, expiry {sl}.\n",
        now = jiff::Timestamp::now(),
        profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        load = load.trim(),
        p50 = pct(&latencies, 0.5),
        p99 = pct(&latencies, 0.99),
        max = latencies[latencies.len() - 1],
        l50 = pct(&lateness, 0.5),
        l99 = pct(&lateness, 0.99),
        lmax = lateness[lateness.len() - 1],
        s50 = if pct(&latencies, 0.5) <= Duration::from_millis(150) {
            "met"
        } else {
            "not met"
        },
        s99 = if pct(&latencies, 0.99) <= Duration::from_millis(500) {
            "met"
        } else {
            "not met"
        },
        sl = if lateness[lateness.len() - 1] <= Duration::from_secs(1) {
            "met"
        } else {
            "not met"
        },
    );
    let out = palisade_e2e::repo_root().join("bench/results/apply-latency.md");
    std::fs::write(&out, &report)?;
    eprintln!("{report}\nwritten to {}", out.display());
    Ok(())
}
