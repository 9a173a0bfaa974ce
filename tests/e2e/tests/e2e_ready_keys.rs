//! `/ready` waits for the bundle-signing key too (issue 18): a replica that could not sign a
//! bundle must not be routed webhook and collector traffic as if it were whole. Here a replica
//! that does not lead (someone else holds its Lease, so it never makes a key) finds no key
//! Secret: it answers 503 and says why, and turns ready as soon as the Secret appears (it
//! watches it).
//!
//! In a binary of its own: it removes the shared key Secret for a while (and puts it back).

use palisade_e2e::{ControlPlane, OPERATOR_NS, Operator, eventually};

const KEYS: &str = "palisade-bundle-signing";

fn ready(op: &Operator) -> Result<String, String> {
    palisade_e2e::process::http_get(op.admin.port(), "/ready")
}

fn status(response: &str) -> &str {
    response.split_whitespace().nth(1).unwrap_or_default()
}

#[tokio::test]
async fn ready_only_once_the_bundle_signing_key_is_loaded() {
    let cp = ControlPlane::shared();
    let pid = std::process::id();
    palisade_e2e::operator_kubeconfig(cp);
    // A leader of its own writes the webhook certificate and the keys; keep the keys.
    let lease = format!("ready-keys-{pid}");
    let mut leader = Operator::start(
        cp,
        "ready-keys-leader",
        &lease,
        &["--webhook-cert-check", "1h"],
    );
    eventually(
        "the leader to be ready (certificate and keys written)",
        || async {
            let r = ready(&leader)?;
            (status(&r) == "200").then_some(()).ok_or(r)
        },
    )
    .await;
    leader.terminate();
    let keys = cp
        .kubectl_ok(&["-n", OPERATOR_NS, "get", "secret", KEYS, "-o", "json"])
        .expect("the key Secret");
    let mut keys: serde_json::Value = serde_json::from_str(&keys).expect("json");
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ] {
        keys["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove(field);
    }
    cp.kubectl_ok(&["-n", OPERATOR_NS, "delete", "secret", KEYS])
        .expect("delete the key Secret");

    // Someone else holds the follower's Lease for an hour: it never leads, never makes a key.
    let held = format!("ready-keys-held-{pid}");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        .to_string();
    cp.apply(
        OPERATOR_NS,
        &format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {held}}}\n\
             spec: {{holderIdentity: elsewhere, leaseDurationSeconds: 3600, acquireTime: \"{now}\", \
             renewTime: \"{now}\"}}\n"
        ),
    )
    .expect("a Lease held by someone else");
    let follower = Operator::start(
        cp,
        "ready-keys-follower",
        &held,
        &["--webhook-cert", "secret", "--webhook-cert-check", "1h"],
    );
    let waiting = eventually("the follower to say why it is not ready", || async {
        let r = ready(&follower)?;
        r.contains("bundle-signing key")
            .then_some(r.clone())
            .ok_or(r)
    })
    .await;
    assert_eq!(status(&waiting), "503", "{waiting}");
    // Still not ready a while later: nothing it could do makes a key.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let still = ready(&follower).expect("/ready");
    assert_eq!(status(&still), "503", "{still}");

    // The keys come back (as a leader would write them): ready at once, from the watch.
    cp.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=palisade-e2e",
            "-f",
            "-",
        ],
        &keys.to_string(),
    )
    .expect("restore the key Secret");
    eventually("the follower to load the key and be ready", || async {
        let r = ready(&follower)?;
        (status(&r) == "200").then_some(()).ok_or(r)
    })
    .await;
    let _ = cp.kubectl_ok(&["-n", OPERATOR_NS, "delete", "lease", &held]);
}
