//! `/ready` tells the truth: a replica whose webhook has no serving certificate yet is not
//! ready (the API server could not call it, so the webhook Service must not route to it), and
//! becomes ready once it loads one — here a replica reading a certificate someone else writes
//! (`--webhook-cert secret`, as with cert-manager), then the leader that writes it. A replica
//! waiting for the certificate loads it when the Secret is written (it watches the Secret),
//! not at its next periodic re-read.

use palisade_e2e::{ControlPlane, OPERATOR_NS, Operator, eventually};

const SECRET: &str = "palisade-webhook-cert";

fn ready(op: &Operator) -> Result<String, String> {
    palisade_e2e::process::http_get(op.admin.port(), "/ready")
}

/// The status code of a raw HTTP response.
fn status(response: &str) -> &str {
    response.split_whitespace().nth(1).unwrap_or_default()
}

#[tokio::test]
async fn ready_only_once_the_webhook_serves_a_certificate() {
    let cp = ControlPlane::shared();
    let pid = std::process::id();
    let lease = format!("ready-{pid}");
    // Nobody has written the certificate yet (the operator's RBAC allows this one name).
    palisade_e2e::operator_kubeconfig(cp);
    let _ = cp.kubectl_ok(&[
        "-n",
        OPERATOR_NS,
        "delete",
        "secret",
        SECRET,
        "--ignore-not-found",
    ]);
    // The periodic re-read is an hour away: only the watch on the Secret can load what the
    // leader writes below.
    let reader = Operator::start(
        cp,
        "ready-reader",
        &format!("{lease}-reader"),
        &["--webhook-cert", "secret", "--webhook-cert-check", "1h"],
    );
    let waiting = eventually("the reader to answer /ready", || async { ready(&reader) }).await;
    assert!(
        status(&waiting) == "503" && waiting.contains("no serving certificate"),
        "ready without a certificate:\n{waiting}"
    );

    // A reader never writes the Secret; a managed leader does (on its own Lease, so both run).
    let managed = Operator::start(cp, "ready-managed", &lease, &["--webhook-cert-check", "1h"]);
    eventually("the managed operator to be ready", || async {
        let r = ready(&managed)?;
        (status(&r) == "200").then_some(()).ok_or(r)
    })
    .await;
    eventually(
        "the waiting reader to load the certificate as soon as it is written",
        || async {
            let r = ready(&reader)?;
            (status(&r) == "200").then_some(()).ok_or(r)
        },
    )
    .await;
    let late = Operator::start(
        cp,
        "ready-reader-2",
        &format!("{lease}-reader-2"),
        &["--webhook-cert", "secret", "--webhook-cert-check", "1h"],
    );
    eventually("a reader started later to load it at start", || async {
        let r = ready(&late)?;
        (status(&r) == "200").then_some(()).ok_or(r)
    })
    .await;
}
