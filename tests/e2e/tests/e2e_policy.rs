//! The policy controller end to end: SecurityActions applied with kubectl become bundle
//! content the sidecar-side decoder reads back; pause, expiry, referenced lists, status,
//! Events, GitOps cleanliness and leader hand-over — operator run with its own RBAC.

use palisade_e2e::bundle::{action_names, read_bundle};
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

const DENY: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-bad-net}
spec:
  deny: {status: 429}
  conditions:
    ipRanges: ["198.51.100.0/24"]
"#;

const FLAG: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: flag-all}
spec:
  flag:
    headers: [{name: X-Palisade-Test, value: "yes"}]
  matchAll: true
"#;

async fn names_in_bundle(client: &kube::Client, ns: &str) -> Result<Vec<String>, String> {
    read_bundle(client, ns).await.map(|(_, b)| action_names(&b))
}

async fn wait_for_actions(client: &kube::Client, ns: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    eventually(&format!("bundle of {ns} to hold {want:?}"), || async {
        let got = names_in_bundle(client, ns).await?;
        (got == want)
            .then_some(())
            .ok_or(format!("bundle holds {got:?}"))
    })
    .await;
}

/// Waits until action `name` has `status.state == state` and an Event with that reason.
async fn wait_state_and_event(cp: &ControlPlane, ns: &str, name: &str, state: &str) {
    let obj = format!("securityaction/{name}");
    eventually(
        &format!("state {state} and a {state} Event on {name}"),
        || async {
            let s = jsonpath(cp, ns, &obj, "{.status.state}")?;
            let events = cp
                .kubectl_ok(&["-n", ns, "events", "--for", &obj])
                .map_err(|e| e.to_string())?;
            (s == state && events.contains(state))
                .then_some(())
                .ok_or(format!("state {s}, events {events}"))
        },
    )
    .await;
}

fn jsonpath(cp: &ControlPlane, ns: &str, obj: &str, path: &str) -> Result<String, String> {
    cp.kubectl_ok(&["-n", ns, "get", obj, "-o", &format!("jsonpath={path}")])
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn actions_are_compiled_into_the_bundle_and_follow_edits_and_deletes() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "policy-crud").await;
    let _op = Operator::start(cp, "op-crud", "op-crud", &scope(&ns));
    let client = cp.client().await;
    cp.apply(ns.name(), DENY).expect("apply deny");
    wait_for_actions(&client, ns.name(), &["deny-bad-net"]).await;
    let (_, bundle) = read_bundle(&client, ns.name()).await.expect("bundle");
    let ip: std::net::IpAddr = "198.51.100.7".parse().expect("ip");
    assert!(
        !bundle.ips.actions_for(ip).is_empty(),
        "the deny's prefix is in the bundle's IP set"
    );
    let other: std::net::IpAddr = "203.0.113.1".parse().expect("ip");
    assert!(
        bundle.ips.actions_for(other).is_empty(),
        "an address outside the prefix is not"
    );

    cp.apply(ns.name(), FLAG).expect("apply flag");
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;

    let edited = DENY.replace("198.51.100.0/24", "192.0.2.0/25");
    cp.apply(ns.name(), &edited).expect("edit deny");
    eventually("the edited prefix in the bundle", || async {
        let (_, b) = read_bundle(&client, ns.name()).await?;
        let moved = !b
            .ips
            .actions_for("192.0.2.1".parse().expect("ip"))
            .is_empty()
            && b.ips.actions_for(ip).is_empty();
        moved
            .then_some(())
            .ok_or_else(|| "old prefix still there".to_owned())
    })
    .await;

    cp.kubectl_ok(&["-n", ns.name(), "delete", "securityaction", "deny-bad-net"])
        .expect("delete");
    wait_for_actions(&client, ns.name(), &["flag-all"]).await;
    eventually("status Ready=True on flag-all", || async {
        let s = jsonpath(cp, ns.name(), "securityaction/flag-all", "{.status.state}")?;
        (s == "Active").then_some(()).ok_or(format!("state {s:?}"))
    })
    .await;
}

#[tokio::test]
async fn pausing_an_action_or_its_namespace_removes_it_and_resuming_restores_it() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "policy-pause").await;
    let _op = Operator::start(cp, "op-pause", "op-pause", &scope(&ns));
    let client = cp.client().await;
    cp.apply(ns.name(), DENY).expect("apply");
    cp.apply(ns.name(), FLAG).expect("apply");
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;

    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "annotate",
        "securityaction",
        "deny-bad-net",
        "palisade.dev/paused=true",
    ])
    .expect("annotate");
    wait_for_actions(&client, ns.name(), &["flag-all"]).await;
    wait_state_and_event(cp, ns.name(), "deny-bad-net", "Paused").await;

    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "annotate",
        "securityaction",
        "deny-bad-net",
        "palisade.dev/paused-",
    ])
    .expect("unannotate");
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;

    cp.kubectl_ok(&[
        "annotate",
        "namespace",
        ns.name(),
        "palisade.dev/paused=true",
    ])
    .expect("pause ns");
    wait_for_actions(&client, ns.name(), &[]).await;
    eventually("the namespace pause in the status", || async {
        let r = jsonpath(
            cp,
            ns.name(),
            "securityaction/flag-all",
            r#"{.status.conditions[?(@.type=="Paused")].reason}"#,
        )?;
        (r == "NamespacePaused")
            .then_some(())
            .ok_or(format!("reason {r:?}"))
    })
    .await;
    cp.kubectl_ok(&["annotate", "namespace", ns.name(), "palisade.dev/paused-"])
        .expect("resume ns");
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;
}

/// `palisade.dev/paused-until`: a time pauses the action until then and the operator
/// resumes it by itself (nothing else changes: it must requeue at the end), with a Resumed
/// Event naming the end; a duration counts from when the operator first saw the value and is
/// not re-armed by re-applying it; a value that does not parse pauses nothing and says why.
#[tokio::test]
async fn paused_until_pauses_an_action_until_then_and_resumes_it_on_time() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "policy-pause-until").await;
    let _op = Operator::start(cp, "op-pause-until", "op-pause-until", &scope(&ns));
    let client = cp.client().await;
    cp.apply(ns.name(), FLAG).expect("apply");
    let obj = "securityaction/deny-bad-net";
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8);
    let until = until.round(jiff::Unit::Second).expect("round");
    let paused = format!(
        "{}metadata: {{name: deny-bad-net, annotations: {{palisade.dev/paused-until: \"{until}\"}}}}",
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\n"
    );
    let paused = DENY.replace(
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {name: deny-bad-net}",
        &paused,
    );
    assert_ne!(paused, DENY, "the annotation is in the manifest");
    cp.apply(ns.name(), &paused)
        .expect("apply the paused action");
    wait_state_and_event(cp, ns.name(), "deny-bad-net", "Paused").await;
    assert_eq!(
        names_in_bundle(&client, ns.name()).await,
        Ok(vec!["flag-all".to_owned()])
    );
    let reason = jsonpath(
        cp,
        ns.name(),
        obj,
        r#"{.status.conditions[?(@.type=="Paused")].reason} {.status.pausedUntil}"#,
    );
    assert_eq!(reason, Ok(format!("PausedUntil {until}")));
    // Resumed on time by the operator alone.
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;
    eventually(
        "state Active and a Resumed Event naming the timed pause",
        || async {
            let state = jsonpath(cp, ns.name(), obj, "{.status.state}")?;
            let events = cp
                .kubectl_ok(&["-n", ns.name(), "events", "--for", obj])
                .map_err(|e| e.to_string())?;
            let resumed = events.lines().any(|l| {
                l.contains(" Resumed ") && l.contains("palisade.dev/paused-until ended at")
            });
            (state == "Active" && resumed)
                .then_some(())
                .ok_or(format!("state {state}, events {events}"))
        },
    )
    .await;

    // A duration: the end is recorded once; re-applying the same value keeps it.
    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "annotate",
        "--overwrite",
        obj,
        "palisade.dev/paused-until=1h",
    ])
    .expect("annotate 1h");
    wait_for_actions(&client, ns.name(), &["flag-all"]).await;
    let end = eventually("status.pausedUntil for 1h", || async {
        let got = jsonpath(
            cp,
            ns.name(),
            obj,
            "{.status.pausedUntilAnnotation} {.status.pausedUntil}",
        )?;
        let at = got.strip_prefix("1h ").ok_or(got.clone())?;
        at.parse::<jiff::Timestamp>()
            .map_err(|e| format!("{got}: {e}"))
    })
    .await;
    let ahead = jiff::Timestamp::now().duration_until(end).as_secs();
    assert!(
        (3500..=3600).contains(&ahead),
        "about an hour ahead: {end} ({ahead} s)"
    );
    // A spec change makes the operator reconcile the action again (new generation) while
    // the annotation keeps its value.
    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "patch",
        obj,
        "--type=merge",
        "-p",
        r#"{"spec":{"deny":{"status":430}}}"#,
    ])
    .expect("a spec change");
    eventually("the spec change reconciled", || async {
        let g = jsonpath(
            cp,
            ns.name(),
            obj,
            "{.metadata.generation} {.status.observedGeneration}",
        )?;
        let (want, seen) = g.split_once(' ').ok_or(g.clone())?;
        (want == seen).then_some(()).ok_or(g.clone())
    })
    .await;
    assert_eq!(
        jsonpath(cp, ns.name(), obj, "{.status.pausedUntil}"),
        Ok(end.to_string()),
        "the same value does not re-arm the pause"
    );

    // A value that does not parse: enforced, and the Paused condition and a Warning say why.
    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "annotate",
        "--overwrite",
        obj,
        "palisade.dev/paused-until=tomorrow",
    ])
    .expect("annotate tomorrow");
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;
    eventually("the InvalidPausedUntil condition and Warning", || async {
        let c = jsonpath(
            cp,
            ns.name(),
            obj,
            r#"{.status.state} {.status.conditions[?(@.type=="Paused")].reason}"#,
        )?;
        let events = cp
            .kubectl_ok(&[
                "-n",
                ns.name(),
                "events",
                "--for",
                obj,
                "--types",
                "Warning",
            ])
            .map_err(|e| e.to_string())?;
        (c == "Active InvalidPausedUntil" && events.contains("\"tomorrow\" is neither"))
            .then_some(())
            .ok_or(format!("{c}; warnings: {events}"))
    })
    .await;
}

#[tokio::test]
async fn an_action_with_a_ttl_leaves_the_bundle_by_itself() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "policy-ttl").await;
    let _op = Operator::start(cp, "op-ttl", "op-ttl", &scope(&ns));
    let client = cp.client().await;
    cp.apply(ns.name(), FLAG).expect("apply flag");
    let short = DENY.replace("deny: {status: 429}", "deny: {status: 429}\n  ttl: 5s");
    cp.apply(ns.name(), &short).expect("apply ttl action");
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;
    let expire = jsonpath(
        cp,
        ns.name(),
        "securityaction/deny-bad-net",
        "{.status.expireTime}",
    )
    .expect("get");
    assert!(!expire.is_empty(), "status.expireTime is computed from ttl");
    // Nothing else changes from here on: the operator must requeue at the expiry instant.
    wait_for_actions(&client, ns.name(), &["flag-all"]).await;
    wait_state_and_event(cp, ns.name(), "deny-bad-net", "Expired").await;
}

#[tokio::test]
async fn a_referenced_list_is_compiled_and_a_change_to_it_recompiles() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "policy-list").await;
    let _op = Operator::start(cp, "op-list", "op-list", &scope(&ns));
    let client = cp.client().await;
    let list = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: blocklist}\ndata:\n  ips: |\n    # bad actors\n    203.0.113.0/24\n    2001:db8::/32\n";
    cp.apply(ns.name(), list).expect("list");
    let action = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-listed}
spec:
  deny: {}
  conditions:
    ipRangesFrom: [{name: blocklist, key: ips}]
"#;
    cp.apply(ns.name(), action).expect("action");
    wait_for_actions(&client, ns.name(), &["deny-listed"]).await;
    let (_, b) = read_bundle(&client, ns.name()).await.expect("bundle");
    assert!(
        !b.ips
            .actions_for("2001:db8::1".parse().expect("ip"))
            .is_empty(),
        "IPv6 from the list"
    );
    assert!(
        !b.ips
            .actions_for("203.0.113.9".parse().expect("ip"))
            .is_empty(),
        "IPv4 from the list"
    );

    cp.apply(
        ns.name(),
        &list.replace("203.0.113.0/24", "198.51.100.0/24"),
    )
    .expect("edit list");
    eventually("the edited list in the bundle", || async {
        let (_, b) = read_bundle(&client, ns.name()).await?;
        let ok = !b
            .ips
            .actions_for("198.51.100.1".parse().expect("ip"))
            .is_empty()
            && b.ips
                .actions_for("203.0.113.9".parse().expect("ip"))
                .is_empty();
        ok.then_some(())
            .ok_or_else(|| "list change not compiled yet".to_owned())
    })
    .await;

    cp.apply(
        ns.name(),
        &list.replace("203.0.113.0/24", "203.0.113.300/24"),
    )
    .expect("break list");
    eventually("Invalid status naming the bad line", || async {
        let msg = jsonpath(
            cp,
            ns.name(),
            "securityaction/deny-listed",
            r#"{.status.conditions[?(@.type=="Ready")].message}"#,
        )?;
        (msg.contains("blocklist") && msg.contains("203.0.113.300/24"))
            .then_some(())
            .ok_or(format!("message {msg:?}"))
    })
    .await;
}

#[tokio::test]
async fn reapplying_the_manifests_shows_no_diff_and_the_operator_never_writes_spec() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "policy-gitops").await;
    let _op = Operator::start(cp, "op-gitops", "op-gitops", &scope(&ns));
    let client = cp.client().await;
    let both = format!("{DENY}\n---\n{FLAG}");
    cp.apply(ns.name(), &both).expect("apply");
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;
    eventually("statuses written", || async {
        let s = jsonpath(cp, ns.name(), "securityactions", "{.items[*].status.state}")?;
        (s == "Active Active")
            .then_some(())
            .ok_or(format!("states {s:?}"))
    })
    .await;
    let diff = cp.kubectl_stdin(
        &[
            "diff",
            "--server-side",
            "--field-manager=palisade-e2e",
            "-n",
            ns.name(),
            "-f",
            "-",
        ],
        &both,
    );
    assert!(
        diff.is_ok(),
        "kubectl diff --server-side shows a difference: {diff:?}"
    );
    let managed = jsonpath(
        cp,
        ns.name(),
        "securityactions",
        "{range .items[*].metadata.managedFields[*]}{.manager}/{.subresource};{end}",
    )
    .expect("managedFields");
    for entry in managed
        .split(';')
        .filter(|e| e.starts_with("palisade-operator"))
    {
        assert_eq!(
            entry, "palisade-operator/status",
            "the operator writes status only: {managed}"
        );
    }
    assert!(
        managed.contains("palisade-operator/status"),
        "the operator wrote status: {managed}"
    );
}

fn leads(op: &Operator) -> bool {
    let metrics = op.metrics().unwrap_or_default();
    metrics
        .lines()
        .any(|l| l.trim() == "palisade_operator_leader 1")
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "policy-leader").await;
    let client = cp.client().await;
    let mut a = Operator::start(cp, "op-leader-a", "leader-test", &scope(&ns));
    let mut b = Operator::start(cp, "op-leader-b", "leader-test", &scope(&ns));
    cp.apply(ns.name(), DENY).expect("apply");
    wait_for_actions(&client, ns.name(), &["deny-bad-net"]).await;
    eventually("exactly one leader", || async {
        match (leads(&a), leads(&b)) {
            (true, false) | (false, true) => Ok(()),
            other => Err(format!("leadership a/b = {other:?}")),
        }
    })
    .await;
    // Kill whichever leads; the other must take over within the lease and keep reconciling.
    let (dead, survivor) = if leads(&a) {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    dead.kill();
    eventually("the standby to become leader", || async {
        leads(survivor)
            .then_some(())
            .ok_or_else(|| "not leader yet".to_owned())
    })
    .await;
    cp.apply(ns.name(), FLAG).expect("apply flag");
    wait_for_actions(&client, ns.name(), &["deny-bad-net", "flag-all"]).await;
}
