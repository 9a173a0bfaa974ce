//! The collector scales out: with `--collector-shards`, the namespaces are divided into shards,
//! each owned by one replica through its own Lease, so several operator replicas share the
//! detection work. Real operator processes on the real control plane: two and three replicas
//! with namespaces spread across them, a replica killed during a flood, and a scale-up from
//! two to three replicas moving shards without losing the incident.

use std::collections::{BTreeMap, BTreeSet};

use palisade_e2e::http::{echo_app, get};
use palisade_e2e::leadership::{flood_until_incident, incidents, lease_holder, sample};
use palisade_e2e::{ControlPlane, OPERATOR_NS, Operator, Sidecar, TempNs, eventually};
use palisade_policy::transport::collector_shard;

use palisade_e2e::flood::QUICK_FLOODER as FLOODER;

const SHARDS: u32 = 4;

/// The Lease of `shard` when the leader's is `lease` (as the operator names them).
fn shard_lease(lease: &str, shard: u32) -> String {
    if shard == 0 {
        lease.to_owned()
    } else {
        format!("{lease}-shard-{shard}")
    }
}

/// The holder of every shard's Lease (`None`: no holder yet), with its advertised endpoint.
fn holders(cp: &ControlPlane, lease: &str) -> Vec<Option<(String, String)>> {
    (0..SHARDS)
        .map(|i| {
            let line = lease_holder(cp, &shard_lease(lease, i)).ok()?;
            let (who, endpoint) = line.split_once(' ')?;
            (!who.is_empty()).then(|| (who.to_owned(), endpoint.to_owned()))
        })
        .collect()
}

/// Waits until every shard is held by one of `names`, each holding at least one, and each
/// holder advertising its own collector; returns shard → holder.
async fn spread(cp: &ControlPlane, lease: &str, ops: &[&Operator], names: &[&str]) -> Vec<String> {
    eventually(
        &format!("the {SHARDS} shards spread over {names:?}"),
        || async {
            let hs = holders(cp, lease);
            let mut per: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
            let mut out = Vec::new();
            for (i, h) in hs.iter().enumerate() {
                let Some((who, endpoint)) = h else {
                    return Err(format!("shard {i} has no holder: {hs:?}"));
                };
                let k = names
                    .iter()
                    .position(|n| n == who)
                    .ok_or(format!("shard {i} held by {who}: {hs:?}"))?;
                if *endpoint != ops[k].collector {
                    return Err(format!("shard {i}: {who} advertises {endpoint:?}"));
                }
                *per.entry(who.as_str()).or_default() += 1;
                out.push(who.clone());
            }
            let lo = SHARDS as usize / names.len();
            let hi = (SHARDS as usize).div_ceil(names.len());
            if per.values().any(|&n| n < lo.max(1) || n > hi) {
                return Err(format!("uneven: {per:?}"));
            }
            // Each replica says it owns (restored) what its Leases say it holds.
            for (k, op) in ops.iter().enumerate() {
                let owned = sample(op, "palisade_operator_collector_shards ")?;
                if owned as usize != per[names[k]] {
                    return Err(format!(
                        "{} owns {owned}, holds {}",
                        names[k], per[names[k]]
                    ));
                }
            }
            Ok(out)
        },
    )
    .await
}

/// Namespaces (made for `prefix`) until every shard of `wanted` has one; the others are
/// dropped (deleted) at once.
async fn namespaces_in(
    cp: &'static ControlPlane,
    prefix: &str,
    wanted: &BTreeSet<u32>,
) -> Vec<TempNs> {
    let mut found: BTreeMap<u32, TempNs> = BTreeMap::new();
    for _ in 0..64 {
        let ns = TempNs::new(cp, prefix).await;
        let shard = collector_shard(ns.name(), SHARDS);
        if wanted.contains(&shard) && !found.contains_key(&shard) {
            found.insert(shard, ns);
        }
        if found.len() == wanted.len() {
            return found.into_values().collect();
        }
    }
    panic!("64 namespaces and still not one in each shard of {wanted:?}");
}

/// Operator flags selecting exactly `namespaces`, with `SHARDS` shards and quick saves.
fn args(namespaces: &[TempNs]) -> Vec<String> {
    let names: Vec<&str> = namespaces.iter().map(TempNs::name).collect();
    vec![
        "--namespace-selector".into(),
        format!("kubernetes.io/metadata.name in ({})", names.join(",")),
        "--collector-shards".into(),
        SHARDS.to_string(),
        "--collector-snapshot-interval".into(),
        "1s".into(),
    ]
}

/// The one incident of `ns`: its name and last detection.
fn only_incident(cp: &ControlPlane, ns: &str) -> Result<(String, jiff::Timestamp), String> {
    let all = incidents(cp, ns)?;
    match all.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("exactly one incident expected in {ns}: {all:?}")),
    }
}

/// 50 more requests from `flooder` through `sc`.
async fn flood_more(sc: &Sidecar, flooder: std::net::IpAddr) -> Result<(), String> {
    for _ in 0..50 {
        get(flooder, sc.addr, "/", &[]).await?;
    }
    Ok(())
}

/// Floods on through `sc`; `Ok` once the one incident of `ns` is still `name` and was
/// updated after `since`.
async fn continued(
    cp: &ControlPlane,
    sc: &Sidecar,
    flooder: std::net::IpAddr,
    ns: &str,
    name: &str,
    since: jiff::Timestamp,
) -> Result<(), String> {
    flood_more(sc, flooder).await?;
    let (n, last) = only_incident(cp, ns)?;
    assert_eq!(n, name, "the incident keeps its name");
    (last > since)
        .then_some(())
        .ok_or(format!("lastDetectedTime {last} not after {since}"))
}

/// Who wrote the state ConfigMap of `shard` last.
fn state_taken_by(cp: &ControlPlane, lease: &str, shard: u32) -> Result<String, String> {
    let cm = if shard == 0 {
        format!("{lease}-state")
    } else {
        format!("{lease}-state-{shard}")
    };
    cp.kubectl_ok(&[
        "-n",
        OPERATOR_NS,
        "get",
        "configmap",
        &cm,
        "-o",
        "jsonpath={.metadata.annotations.palisade\\.dev/taken-by}",
    ])
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn three_replicas_share_the_shards_and_each_detects_the_namespaces_it_owns() {
    let cp = ControlPlane::shared();
    let lease = "op-shards3";
    let all: BTreeSet<u32> = (0..SHARDS).collect();
    let spaces = namespaces_in(cp, "shards3", &all).await;
    let args = args(&spaces);
    let names = ["op-shards3-a", "op-shards3-b", "op-shards3-c"];
    let ops: Vec<Operator> = names
        .iter()
        .map(|n| Operator::start(cp, n, lease, &args))
        .collect();
    let refs: Vec<&Operator> = ops.iter().collect();
    let owner = spread(cp, lease, &refs, &names).await;
    assert_eq!(
        owner.iter().collect::<BTreeSet<_>>().len(),
        3,
        "every replica owns a shard: {owner:?}"
    );

    // Every namespace's sidecar reports to replica a, which merges its own shards' reports
    // and forwards the others' to their owners.
    let mut sidecars = Vec::new();
    for ns in &spaces {
        cp.apply(ns.name(), FLOODER).expect("rule");
        sidecars.push(Sidecar::start(
            cp,
            ns.name(),
            "api-0",
            echo_app().await,
            Some(&ops[0].collector),
        ));
    }
    for (ns, sc) in spaces.iter().zip(&sidecars) {
        let shard = collector_shard(ns.name(), SHARDS);
        let what = format!(
            "a flood in {} (shard {shard}, owned by {})",
            ns.name(),
            owner[shard as usize]
        );
        flood_until_incident(cp, ns.name(), sc, &what).await;
        // The owner saves the shard's state (windows and the incident), nobody else.
        eventually(
            &format!("the owner of shard {shard} to save it"),
            || async {
                let by = state_taken_by(cp, lease, shard)?;
                (by == owner[shard as usize]).then_some(()).ok_or(by)
            },
        )
        .await;
    }
    let forwarded = sample(
        &ops[0],
        "palisade_operator_reports_forwarded_total{outcome=\"Accepted\"}",
    )
    .expect("forwarded reports");
    assert!(
        forwarded >= 1.0,
        "a forwarded reports to the other owners: {forwarded}"
    );
    for (k, op) in ops.iter().enumerate().skip(1) {
        let accepted = sample(
            op,
            "palisade_operator_reports_total{controller=\"collector\",reason=\"Accepted\"}",
        )
        .expect("accepted reports");
        assert!(
            accepted >= 1.0,
            "{} merged the reports of its shards: {accepted}",
            names[k]
        );
    }
    // Each replica's windows hold only its own namespaces: the incident of a namespace was
    // written once, by one replica, and none of the others evaluated it.
    for ns in &spaces {
        only_incident(cp, ns.name()).expect("one incident per namespace");
    }

    // The owner names itself in the signed detected-client document; each sidecar then
    // reports straight to it, and a stops forwarding.
    for (ns, sc) in spaces.iter().zip(&sidecars) {
        let shard = collector_shard(ns.name(), SHARDS);
        eventually(
            &format!(
                "the sidecar of {} to report to {}",
                ns.name(),
                owner[shard as usize]
            ),
            || async {
                let text = palisade_e2e::process::http_get(sc.admin.port(), "/metrics")?;
                let direct = palisade_e2e::collector::metric_sum(
                    &text,
                    "palisade_sidecar_reports_direct_total",
                    "",
                );
                let owned_by_a = owner[shard as usize] == names[0];
                // A sidecar whose namespace a owns is pointed at a already: nothing to bypass.
                (owned_by_a || direct >= 3)
                    .then_some(())
                    .ok_or(format!("{direct} sent straight"))
            },
        )
        .await;
    }
    let forwarded = || {
        sample(
            &ops[0],
            "palisade_operator_reports_forwarded_total{outcome=\"Accepted\"}",
        )
        .expect("forwarded")
    };
    // (A direct send refused meanwhile, e.g. by a quota, goes through a once: wait for three
    // quiet seconds rather than assert them at once.)
    eventually("reports to stop going through a", || async {
        let before = forwarded();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let after = forwarded();
        (after == before)
            .then_some(())
            .ok_or(format!("a forwarded {}", after - before))
    })
    .await;
}

#[tokio::test]
async fn a_replica_killed_during_a_flood_leaves_the_incident_updating_under_its_name() {
    let cp = ControlPlane::shared();
    let lease = "op-shardkill";
    let all: BTreeSet<u32> = (1..SHARDS).collect();
    // Namespaces in shards 1 to 3 (shard 0 goes with leadership; the test is about the
    // shard Leases): whichever replica dies, one of them is its.
    let spaces = namespaces_in(cp, "shardkill", &all).await;
    let args = args(&spaces);
    let names = ["op-shardkill-a", "op-shardkill-b"];
    let mut ops: Vec<Operator> = names
        .iter()
        .map(|n| Operator::start(cp, n, lease, &args))
        .collect();
    let refs: Vec<&Operator> = ops.iter().collect();
    let owner = spread(cp, lease, &refs, &names).await;
    // The victim: the owner of shard 1's namespace; the survivor takes the reports.
    let ns = spaces
        .iter()
        .find(|ns| collector_shard(ns.name(), SHARDS) == 1)
        .expect("a namespace in shard 1");
    let victim = names.iter().position(|n| *n == owner[1]).expect("owner");
    let survivor = 1 - victim;
    cp.apply(ns.name(), FLOODER).expect("rule");
    let sc = Sidecar::start(
        cp,
        ns.name(),
        "api-0",
        echo_app().await,
        Some(&ops[survivor].collector),
    );
    let name = flood_until_incident(cp, ns.name(), &sc, "the flood to open an incident").await;
    eventually("the owner to save the shard with the incident", || async {
        let by = state_taken_by(cp, lease, 1)?;
        (by == names[victim]).then_some(()).ok_or(by)
    })
    .await;
    // Saved again after the incident opened: the saved windows hold the flood.
    let saves = |op: &Operator| {
        sample(
            op,
            "palisade_operator_collector_state_total{op=\"save\",outcome=\"Saved\"}",
        )
    };
    let before = saves(&ops[victim]).expect("saves");
    eventually("another save", || async {
        let now = saves(&ops[victim])?;
        (now > before).then_some(()).ok_or(format!("saves {now}"))
    })
    .await;

    let killed_at = jiff::Timestamp::now();
    ops[victim].kill();
    // The flood goes on through the survivor, which takes shard 1 once its Lease expires.
    let flooder: std::net::IpAddr = "127.0.0.66".parse().expect("ip");
    eventually(
        "the survivor to own every shard and update the same incident",
        || async {
            let hs = holders(cp, lease);
            if hs
                .iter()
                .any(|h| h.as_ref().is_none_or(|(who, _)| who != names[survivor]))
            {
                flood_more(&sc, flooder).await?;
                return Err(format!("holders {hs:?}"));
            }
            continued(cp, &sc, flooder, ns.name(), &name, killed_at).await
        },
    )
    .await;
    let restored = sample(
        &ops[survivor],
        "palisade_operator_collector_state_total{op=\"restore\",outcome=\"Restored\"}",
    )
    .expect("restores");
    assert!(
        restored >= 1.0,
        "the survivor restored the dead replica's shard state"
    );
}

#[tokio::test]
async fn scaling_from_two_to_three_replicas_moves_shards_and_keeps_every_incident() {
    let cp = ControlPlane::shared();
    let lease = "op-shardscale";
    let all: BTreeSet<u32> = (0..SHARDS).collect();
    let spaces = namespaces_in(cp, "shardscale", &all).await;
    let args = args(&spaces);
    let names = ["op-shardscale-a", "op-shardscale-b", "op-shardscale-c"];
    let mut ops: Vec<Operator> = names[..2]
        .iter()
        .map(|n| Operator::start(cp, n, lease, &args))
        .collect();
    let refs: Vec<&Operator> = ops.iter().collect();
    let before = spread(cp, lease, &refs, &names[..2]).await;
    let mut sidecars = Vec::new();
    let mut opened = Vec::new();
    for ns in &spaces {
        cp.apply(ns.name(), FLOODER).expect("rule");
        let sc = Sidecar::start(
            cp,
            ns.name(),
            "api-0",
            echo_app().await,
            Some(&ops[0].collector),
        );
        let what = format!("a flood in {}", ns.name());
        opened.push(flood_until_incident(cp, ns.name(), &sc, &what).await);
        sidecars.push(sc);
    }

    let scaled_at = jiff::Timestamp::now();
    ops.push(Operator::start(cp, names[2], lease, &args));
    let refs: Vec<&Operator> = ops.iter().collect();
    let after = spread(cp, lease, &refs, &names).await;
    let moved: Vec<u32> = (0..SHARDS)
        .filter(|&i| before[i as usize] != after[i as usize])
        .collect();
    assert!(
        !moved.is_empty(),
        "the new replica took shards: {before:?} → {after:?}"
    );
    assert!(
        moved.iter().all(|&i| after[i as usize] == names[2]),
        "only moves to the new replica: {before:?} → {after:?}"
    );
    let restored = sample(
        &ops[2],
        "palisade_operator_collector_state_total{op=\"restore\",outcome=\"Restored\"}",
    )
    .expect("restores");
    assert!(
        restored >= 1.0,
        "the new replica restored the state its shards were handed over with"
    );

    // The floods go on; every namespace keeps its one incident under the same name, updated
    // after the scale-up (by the new replica for the shards it took).
    let flooder: std::net::IpAddr = "127.0.0.66".parse().expect("ip");
    for ((ns, sc), name) in spaces.iter().zip(&sidecars).zip(&opened) {
        let shard = collector_shard(ns.name(), SHARDS);
        let what = format!(
            "{} (shard {shard}, {} → {}) to go on with {name}",
            ns.name(),
            before[shard as usize],
            after[shard as usize]
        );
        eventually(&what, || async {
            continued(cp, sc, flooder, ns.name(), name, scaled_at).await
        })
        .await;
    }
}
