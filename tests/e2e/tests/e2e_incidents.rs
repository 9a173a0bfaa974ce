//! SecurityIncident retention on the real API server: the leader deletes every incident —
//! archived ones too — `--incident-retention` after its last detection
//! (`status.lastDetectedTime`), and keeps the younger ones.

use palisade_e2e::collector::incident_names as names;
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

/// Creates incident `name` whose last detection was `ago` before now.
fn incident(cp: &ControlPlane, ns: &str, name: &str, ago: jiff::SignedDuration, archived: bool) {
    let labels = if archived {
        "{palisade.dev/archived: \"true\"}"
    } else {
        "{}"
    };
    let yaml = format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityIncident\n\
         metadata: {{name: {name}, labels: {labels}}}\nspec: {{}}\n"
    );
    cp.apply(ns, &yaml).expect("create incident");
    let last = (jiff::Timestamp::now() - ago)
        .round(jiff::Unit::Second)
        .expect("round");
    let status = format!(r#"{{"status":{{"lastDetectedTime":"{last}","requests":1}}}}"#);
    cp.patch_status(ns, "securityincident", name, &status)
        .expect("incident status");
}

#[tokio::test]
async fn incidents_older_than_the_retention_are_deleted_archived_ones_too() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "retention").await;
    cp.install_crds();
    let hour = jiff::SignedDuration::from_hours(1);
    incident(cp, ns.name(), "inc-old", hour, false);
    incident(cp, ns.name(), "inc-old-archived", hour, true);
    incident(
        cp,
        ns.name(),
        "inc-recent",
        jiff::SignedDuration::from_mins(1),
        false,
    );
    incident(
        cp,
        ns.name(),
        "inc-recent-archived",
        jiff::SignedDuration::ZERO,
        true,
    );
    let mut args = scope(&ns).to_vec();
    args.extend(["--incident-retention".to_owned(), "30m".to_owned()]);
    let op = Operator::start(cp, "op-retention", "op-retention", &args);
    eventually("the incidents older than 30m to be deleted", || async {
        let left = names(cp, ns.name())?;
        let old = left.iter().any(|n| n.starts_with("inc-old"));
        (!old).then_some(()).ok_or(format!("left: {left:?}"))
    })
    .await;
    let left = names(cp, ns.name()).expect("incidents");
    assert_eq!(
        left,
        ["inc-recent", "inc-recent-archived"],
        "younger incidents stay, archived or not"
    );
    let log = std::fs::read_to_string(&op.log).unwrap_or_default();
    assert!(
        log.contains("incident deleted after its retention"),
        "the deletion is logged: {log}"
    );
}
