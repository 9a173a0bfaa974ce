//! A replica compiles bundles only from complete watches (issue 18, item 5). The operator
//! reads SecurityActions, DetectionRules, pods and ConfigMaps from its watches; a reconcile
//! run before one of them has listed everything would compile a bundle without the objects
//! not seen yet, and every sidecar of the namespace would stop enforcing them.
//!
//! The slowest watch is made deterministic here: a new leader whose ServiceAccount cannot list
//! SecurityActions yet (an upgrade that ships its RBAC after its Deployment, a ClusterRole
//! edited by hand). It must leave the last good bundle in place, say why on `/ready`, and
//! compile as soon as it can list, including what changed meanwhile.
//!
//! In a binary of its own: it adds a ServiceAccount and RBAC of its own to the cluster.

use std::path::PathBuf;

use palisade_e2e::bundle::{action_names, read_bundle};
use palisade_e2e::leadership::{sample, wait_to_lead};
use palisade_e2e::{
    ControlPlane, OPERATOR_NS, Operator, TempNs, chart_rbac, eventually, scope, token_kubeconfig,
};

fn action(name: &str, agent: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {{name: {name}}}\n\
         spec:\n  deny: {{status: 403}}\n  conditions:\n    userAgents: [{{value: {agent}, type: Exact}}]\n"
    )
}

fn ready(op: &Operator) -> Result<String, String> {
    palisade_e2e::process::http_get(op.admin.port(), "/ready")
}

fn status(response: &str) -> &str {
    response.split_whitespace().nth(1).unwrap_or_default()
}

/// The chart's RBAC for a ServiceAccount `<sa>-<suffix>`: the same bindings, except that
/// the operator's main ClusterRole (the bound one granting SecurityActions) is a copy that lists
/// and watches SecurityActions only when `can_list`.
fn rbac_for(cp: &ControlPlane, suffix: &str, can_list: bool) -> (String, String) {
    use serde::Deserialize as _;
    let (chart, sa) = chart_rbac(cp);
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&chart)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML document"))
        .collect();
    let grants_actions = |d: &serde_yaml::Value| {
        d["rules"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|r| r["resources"][0].as_str() == Some("securityactions"))
    };
    let bound: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ClusterRoleBinding"))
        .filter_map(|d| d["roleRef"]["name"].as_str())
        .collect();
    // (The chart's user-facing roles grant SecurityActions too, bound to no one.)
    let main = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ClusterRole") && grants_actions(d))
        .find(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| bound.contains(&n))
        })
        .and_then(|d| d["metadata"]["name"].as_str())
        .expect("the chart's ClusterRole that grants SecurityActions")
        .to_owned();
    let ours = format!("{sa}-{suffix}");
    let renamed = |name: &str| format!("{name}-{suffix}");
    let mut out = vec![];
    for mut doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match kind.as_str() {
            "ServiceAccount" => {}
            "ClusterRole" if name == main => {
                if !can_list {
                    for rule in doc["rules"].as_sequence_mut().expect("rules") {
                        if let Some(resources) = rule["resources"].as_sequence_mut() {
                            resources.retain(|r| r.as_str() != Some("securityactions"));
                        }
                    }
                }
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                let role = doc["roleRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if role == main {
                    doc["roleRef"]["name"] = renamed(&role).into();
                }
                for subject in doc["subjects"].as_sequence_mut().expect("subjects") {
                    subject["name"] = ours.clone().into();
                }
            }
            // The other roles are bound as the chart has them.
            _ => continue,
        }
        doc["metadata"]["name"] = renamed(&name).into();
        out.push(serde_yaml::to_string(&doc).expect("YAML"));
    }
    (out.join("---\n"), ours)
}

fn apply_rbac(cp: &ControlPlane, yaml: &str) {
    cp.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=palisade-e2e",
            "-f",
            "-",
        ],
        yaml,
    )
    .unwrap_or_else(|e| panic!("applying RBAC:\n{yaml}\n{e}"));
}

/// A kubeconfig of a new ServiceAccount with the chart's permissions minus listing and
/// watching SecurityActions; and the RBAC that gives them back.
fn blind_identity(cp: &'static ControlPlane) -> (PathBuf, String) {
    palisade_e2e::operator_kubeconfig(cp);
    let suffix = format!("blind-{}", std::process::id());
    let (blind, sa) = rbac_for(cp, &suffix, false);
    let (sighted, _) = rbac_for(cp, &suffix, true);
    apply_rbac(cp, &blind);
    let token = cp
        .kubectl_ok(&["-n", OPERATOR_NS, "create", "token", &sa, "--duration=1h"])
        .expect("a token");
    let path = std::env::temp_dir().join(format!("palisade-e2e-{suffix}.kubeconfig"));
    token_kubeconfig(cp.kubeconfig(), token.trim(), &path);
    (path, sighted)
}

#[tokio::test]
async fn a_leader_that_cannot_list_the_actions_yet_leaves_the_bundle_alone() {
    let cp = ControlPlane::shared();
    palisade_e2e::operator_kubeconfig(cp);
    let ns = TempNs::new(cp, "startup").await;
    let client = cp.client().await;
    cp.apply(ns.name(), &action("deny-scanner", "scanner"))
        .expect("apply the action");
    let lease = format!("startup-{}", std::process::id());
    let mut first = Operator::start(cp, "startup-first", &lease, &scope(&ns));
    let before = eventually("the action in the bundle", || async {
        let (m, b) = read_bundle(&client, ns.name()).await?;
        let names = action_names(&b);
        (names == ["deny-scanner"])
            .then_some(m)
            .ok_or(format!("actions {names:?}"))
    })
    .await;
    first.kill();

    let (kubeconfig, sighted) = blind_identity(cp);
    let blind = Operator::start_as(cp, &kubeconfig, "startup-blind", &lease, &scope(&ns));
    wait_to_lead(cp, &lease, "startup-blind").await;
    // It leads, its other watches are filled, and it says which one is not.
    let why = eventually("/ready to name the SecurityAction watch", || async {
        let r = ready(&blind)?;
        (status(&r) == "503" && r.contains("SecurityAction"))
            .then_some(r.clone())
            .ok_or(r)
    })
    .await;
    assert!(why.contains("have not completed their first list"), "{why}");
    // As the new leader it reconciles every namespace: it either waits (and says so) or
    // compiles from the empty store (and the bundle loses the action).
    let waiting = |l: &str| {
        l.contains("waiting for the watches' first lists")
            && l.contains(ns.name())
            && l.contains("SecurityAction")
    };
    eventually("its reconcile of the namespace", || async {
        let log = std::fs::read_to_string(&blind.log).map_err(|e| e.to_string())?;
        if log.lines().any(waiting) {
            return Ok(());
        }
        let (m, _) = read_bundle(&client, ns.name()).await?;
        (m.generation != before.generation)
            .then_some(())
            .ok_or("not yet".to_owned())
    })
    .await;
    let (during, bundle) = read_bundle(&client, ns.name()).await.expect("the bundle");
    assert_eq!(
        action_names(&bundle),
        ["deny-scanner"],
        "a leader that has not listed the actions wrote a bundle without them"
    );
    assert_eq!(during.generation, before.generation);
    // A change it cannot see yet.
    cp.apply(ns.name(), &action("deny-crawler", "crawler"))
        .expect("apply the second action");
    let reconciles = r#"palisade_operator_reconciles_total{controller="policy"}"#;
    assert!(
        sample(&blind, reconciles).unwrap_or(0.0) == 0.0,
        "it compiled before its watches were filled: {:?}",
        sample(&blind, reconciles)
    );

    // Given the permission back, it lists, turns ready and compiles both actions.
    apply_rbac(cp, &sighted);
    eventually("/ready to be 200 once it can list", || async {
        let r = ready(&blind)?;
        (status(&r) == "200").then_some(()).ok_or(r)
    })
    .await;
    let after = eventually("both actions in the bundle", || async {
        let (m, b) = read_bundle(&client, ns.name()).await?;
        let names = action_names(&b);
        (names == ["deny-crawler", "deny-scanner"])
            .then_some(m)
            .ok_or(format!("actions {names:?}"))
    })
    .await;
    assert!(after.generation > before.generation);
    assert!(sample(&blind, reconciles).is_ok_and(|n| n >= 1.0));
}
