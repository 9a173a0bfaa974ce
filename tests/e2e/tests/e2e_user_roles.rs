//! The roles for people (config/rbac/users.yaml, the chart's templates/rbac-users.yaml; docs/
//! operations.md "Roles for people"): kubectl run as users bound to each role, and to
//! Kubernetes' `view`, `edit` and `admin` (which aggregate them), on the real control plane.
//! Every line of the docs' table is an allowed call here, and what a role must not do is a
//! call the API server refuses.

use palisade_e2e::{ControlPlane, TempNs, eventually, repo_root};

const ACTION: &str = "apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: NAME}
spec:
  deny: {status: 403}
  conditions: {ipRanges: [203.0.113.0/24]}
";

const RULE: &str = "apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: NAME}
spec: {type: Flooder}
";

const INCIDENT: &str = "apiVersion: palisade.dev/v1alpha1
kind: SecurityIncident
metadata: {name: NAME}
spec: {}
";

/// One user's kubectl in the test namespace.
struct As<'a> {
    cp: &'static ControlPlane,
    ns: &'a str,
    user: &'static str,
}

impl As<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut all = vec!["--as", self.user, "-n", self.ns];
        all.extend_from_slice(args);
        match stdin {
            Some(text) => self.cp.kubectl_stdin(&all, text),
            None => self.cp.kubectl_ok(&all),
        }
        .map_err(|e| e.to_string())
    }

    fn apply(&self, template: &str, name: &str) -> Result<String, String> {
        let args = [
            "apply",
            "--server-side",
            "--field-manager",
            self.user,
            "-f",
            "-",
        ];
        self.run(&args, Some(&template.replace("NAME", name)))
    }

    /// Fails the test unless the call succeeds.
    fn may(&self, what: &str, result: Result<String, String>) {
        if let Err(e) = result {
            panic!("{} may {what}, but: {e}", self.user);
        }
    }

    /// Fails the test unless the API server refuses the call as forbidden.
    fn may_not(&self, what: &str, result: Result<String, String>) {
        match result {
            Ok(out) => panic!("{} may not {what}, but it succeeded: {out}", self.user),
            Err(e) => assert!(
                e.contains("forbidden"),
                "{} may not {what}: refused, but not as forbidden: {e}",
                self.user
            ),
        }
    }

    fn pause(&self, action: &str) -> Result<String, String> {
        let pause = ["annotate", "--overwrite", "securityaction", action];
        self.run(&[&pause[..], &["palisade.dev/paused=true"]].concat(), None)
    }

    /// Sets the incident's `palisade.dev/archived` label to `value` (to a value it does not
    /// have yet: kubectl makes no call for an unchanged label).
    fn label_archived(&self, incident: &str, value: &str) -> Result<String, String> {
        let label = format!("palisade.dev/archived={value}");
        let args = ["label", "--overwrite", "securityincident", incident, &label];
        self.run(&args, None)
    }

    fn archive(&self, incident: &str) -> Result<String, String> {
        self.label_archived(incident, "true")
    }

    fn write_status(&self, action: &str) -> Result<String, String> {
        self.run(
            &[
                "patch",
                "securityaction",
                action,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"observedGeneration":1}}"#,
            ],
            None,
        )
    }

    fn read_all(&self) -> Result<String, String> {
        self.run(
            &[
                "get",
                "securityactions,detectionrules,securityincidents,securitypostures",
            ],
            None,
        )
    }
}

fn bind(cp: &ControlPlane, ns: &str, user: &str, role: &str) {
    cp.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "rolebinding",
        &format!("{user}-{role}"),
        &format!("--clusterrole={role}"),
        &format!("--user={user}"),
    ])
    .unwrap_or_else(|e| panic!("bind {user} to {role}: {e}"));
}

#[tokio::test]
async fn each_role_for_people_may_do_what_the_docs_say_and_nothing_more() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let roles = std::fs::read_to_string(repo_root().join("config/rbac/users.yaml"))
        .expect("config/rbac/users.yaml");
    cp.kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &roles,
    )
    .unwrap_or_else(|e| panic!("applying config/rbac/users.yaml: {e}"));
    let ns = TempNs::new(cp, "roles").await;
    let ns = ns.name();
    // What the users work on, made by the administrator.
    for (template, name) in [(ACTION, "block-a"), (RULE, "flood"), (INCIDENT, "flood-1")] {
        cp.apply(ns, &template.replace("NAME", name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let user = |user| As { cp, ns, user };
    for (name, role) in [
        ("vera", "palisade-viewer"),
        ("eddie", "palisade-editor"),
        ("rita", "palisade-incident-responder"),
        ("vic", "view"),
        ("eve", "edit"),
        ("ada", "admin"),
    ] {
        bind(cp, ns, name, role);
    }

    // Viewer: reads everything, changes nothing.
    let vera = user("vera");
    vera.may(
        "read actions, rules, incidents and postures",
        vera.read_all(),
    );
    vera.may_not("create an action", vera.apply(ACTION, "vera"));
    vera.may_not("pause an action", vera.pause("block-a"));
    vera.may_not("archive an incident", vera.archive("flood-1"));

    // Editor: writes actions and rules and pauses them; incidents and status are not theirs.
    let eddie = user("eddie");
    eddie.may("read", eddie.read_all());
    eddie.may("create an action", eddie.apply(ACTION, "eddie"));
    eddie.may("pause an action", eddie.pause("eddie"));
    eddie.may("create a rule", eddie.apply(RULE, "eddie"));
    eddie.may(
        "delete an action",
        eddie.run(&["delete", "securityaction", "eddie"], None),
    );
    eddie.may_not("archive an incident", eddie.archive("flood-1"));
    eddie.may_not("write an action's status", eddie.write_status("block-a"));
    eddie.may_not(
        "write the bundle ConfigMaps",
        eddie.run(&["create", "configmap", "palisade-bundle-x"], None),
    );

    // Incident responder: archives incidents, applies and pauses actions; nothing else.
    let rita = user("rita");
    rita.may("read", rita.read_all());
    rita.may("archive an incident", rita.archive("flood-1"));
    rita.may("apply a proposed action", rita.apply(ACTION, "rita"));
    rita.may("pause an action", rita.pause("block-a"));
    rita.may_not(
        "delete an action",
        rita.run(&["delete", "securityaction", "block-a"], None),
    );
    rita.may_not("change a rule", rita.apply(RULE, "flood"));
    rita.may_not(
        "delete an incident",
        rita.run(&["delete", "securityincident", "flood-1"], None),
    );
    rita.may_not("create an incident", rita.apply(INCIDENT, "rita"));
    rita.may_not("write an action's status", rita.write_status("block-a"));
    let archived = cp
        .kubectl_ok(&[
            "-n",
            ns,
            "get",
            "securityincident",
            "flood-1",
            "-o",
            "jsonpath={.metadata.labels.palisade\\.dev/archived}",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(archived, "true", "rita's archive label is on the incident");

    // Kubernetes' own roles, by aggregation (kube-controller-manager fills them in).
    let vic = user("vic");
    eventually("view to aggregate palisade-viewer", || async {
        vic.read_all().map(drop)
    })
    .await;
    vic.may_not("create an action", vic.apply(ACTION, "vic"));
    let eve = user("eve");
    eventually("edit to aggregate palisade-editor", || async {
        eve.apply(ACTION, "eve").map(drop)
    })
    .await;
    eve.may("pause an action", eve.pause("eve"));
    eve.may_not(
        "unarchive an incident",
        eve.label_archived("flood-1", "false"),
    );
    eve.may_not("write an action's status", eve.write_status("eve"));
    let ada = user("ada");
    eventually("admin to aggregate the incident responder", || async {
        ada.label_archived("flood-1", "false").map(drop)
    })
    .await;
    ada.may("create a rule", ada.apply(RULE, "ada"));
    ada.may_not("write an action's status", ada.write_status("block-a"));
}
