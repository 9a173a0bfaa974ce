//! `make bench`: apply→bundle-written and apply→enforce latency on the real control plane.
//! Starts a control plane and the operator (the build beside this binary), server-side
//! applies `PALISADE_BENCH_CHANGES` (default 200) successive edits of one SecurityAction and
//! times each until the manifest ConfigMap carries the new bundle, then times how late a
//! `ttl` expiry leaves the bundle. Then starts `PALISADE_BENCH_SIDECARS` (default 10) sidecar
//! processes of the namespace, each reading the bundle from the API server as an injected pod
//! does, and times `PALISADE_BENCH_ENFORCE_CHANGES` (default 50) applies of a deny for a new
//! client address from the apply call to that client's first 403 at every sidecar (P7).
//! Writes bench/results/apply-latency.md.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::{ControlPlane, Operator, Sidecar, StartOptions, TempNs, eventually, scope};

/// How often each sidecar is asked whether the new client is denied yet: the resolution of
/// the apply→enforce times.
const POLL: Duration = Duration::from_millis(5);

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn status(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

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
    let changes = env("PALISADE_BENCH_CHANGES", 200);
    let sidecar_count = env("PALISADE_BENCH_SIDECARS", 10);
    let enforce_changes = env("PALISADE_BENCH_ENFORCE_CHANGES", 50);
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

    // Apply → enforce: sidecars of the namespace in front of one app, each watching the
    // bundle's ConfigMaps through the API server as an injected pod does.
    let app = echo_app().await;
    let sidecars: Vec<Sidecar> = (0..sidecar_count)
        .map(|i| Sidecar::start(cp, ns.name(), &format!("api-{i}"), app, None))
        .collect();
    for sc in &sidecars {
        eventually("the sidecar to forward", || async {
            let (s, _) = get([127, 0, 0, 9].into(), sc.addr, "/", &[]).await?;
            (s == 200).then_some(()).ok_or(format!("status {s}"))
        })
        .await;
    }
    let (mut every, mut first) = (Vec::new(), Vec::new());
    for i in 0..=enforce_changes {
        // A client address no earlier change denied: its 403 can only come from this apply.
        let client = std::net::Ipv4Addr::new(127, 0, 21 + (i / 250) as u8, 1 + (i % 250) as u8);
        for sc in &sidecars {
            let (s, _) = get(client.into(), sc.addr, "/", &[])
                .await
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(
                s == 200,
                "{client} answered {s} by {} before its deny",
                sc.addr
            );
        }
        let obj = serde_json::json!({"apiVersion": "palisade.dev/v1alpha1",
            "kind": "SecurityAction", "metadata": {"name": "bench-enforce"},
            "spec": {"deny": {"status": 403}, "conditions": {"ipRanges": [format!("{client}/32")]}}});
        let start = Instant::now();
        actions
            .patch("bench-enforce", &pp, &Patch::Apply(obj))
            .await?;
        let denied = futures::future::join_all(sidecars.iter().map(|sc| async move {
            loop {
                if let Ok((403, _)) = get(client.into(), sc.addr, "/", &[]).await {
                    return Ok(start.elapsed());
                }
                if start.elapsed() > Duration::from_secs(60) {
                    anyhow::bail!("{client} not denied by {} 60 s after the apply", sc.addr);
                }
                tokio::time::sleep(POLL).await;
            }
        }))
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<Duration>>>()?;
        // The first apply creates the action (and the sidecars' first swap of it): warm-up.
        if i > 0 {
            every.push(denied.iter().copied().max().unwrap_or_default());
            first.push(denied.iter().copied().min().unwrap_or_default());
        }
    }
    every.sort();
    first.sort();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = format!(
        "# Apply → bundle written, apply → enforce (real control plane)\n\n\
         - Date: {now}; command: `make bench` (`palisade-e2e --bin apply-latency`, {profile} build); load average: {load}\n\
         - {changes} server-side applies of one SecurityAction (a new /32 each), each timed from the \
         apply call to the watch event of the manifest ConfigMap carrying the new bundle; \
         operator, kube-apiserver and etcd on this machine (2 vCPU).\n\n\
         | measure | p50 | p99 | max |\n|---|---|---|---|\n\
         | apply → bundle written | {p50} | {p99} | {max} |\n\
         | ttl expiry → bundle rewritten (5 rounds) | {l50} | {l99} | {lmax} |\n\n\
         Goals (issue 5): p50 ≤ 150 ms, p99 ≤ 500 ms; expiry ≤ 1 s late. \
         Status: p50 {s50}, p99 {s99}, expiry {sl}.\n\n\
         ## Apply → enforce\n\n\
         {sidecar_count} sidecar processes of the namespace in front of one app, each watching the \
         bundle through the API server as an injected pod does. {enforce_changes} server-side \
         applies of a deny action for a new client address (127.0.21.x, 403 from no sidecar before), \
         each timed from the apply call until that client's request is answered 403 by the \
         sidecar; every sidecar is asked every {poll} (a new connection each time), so a \
         time is up to that much late. The first apply (it creates the action) is not timed.\n\n\
         | measure | p50 | p99 | max |\n|---|---|---|---|\n\
         | apply → first 403 at every sidecar | {e50} | {e99} | {emax} |\n\
         | apply → first 403 at the first sidecar | {f50} | {f99} | {fmax} |\n\n\
         | goal | measured | status |\n|---|---|---|\n\
         | P7 apply→enforce p50 ≤ 300 ms, p99 ≤ 1 s (first 403 at every one of {sidecar_count} sidecars) \
         | p50 {e50}, p99 {e99} | **{se}** |\n",
        now = jiff::Timestamp::now(),
        profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        load = load.trim(),
        p50 = ms(pct(&latencies, 0.5)),
        p99 = ms(pct(&latencies, 0.99)),
        max = ms(latencies[latencies.len() - 1]),
        l50 = ms(pct(&lateness, 0.5)),
        l99 = ms(pct(&lateness, 0.99)),
        lmax = ms(lateness[lateness.len() - 1]),
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
        poll = ms(POLL),
        e50 = ms(pct(&every, 0.5)),
        e99 = ms(pct(&every, 0.99)),
        emax = ms(every[every.len() - 1]),
        f50 = ms(pct(&first, 0.5)),
        f99 = ms(pct(&first, 0.99)),
        fmax = ms(first[first.len() - 1]),
        se = status(
            pct(&every, 0.5) <= Duration::from_millis(300)
                && pct(&every, 0.99) <= Duration::from_secs(1)
        ),
    );
    let out = palisade_e2e::repo_root().join("bench/results/apply-latency.md");
    std::fs::write(&out, &report)?;
    eprintln!("{report}\nwritten to {}", out.display());
    Ok(())
}
