//! Workload-scoped actions in injected pods, on the real control plane: Pods admitted through
//! the operator's real webhook, with `automountServiceAccountToken: false`, and their
//! injected sidecars run as processes wired exactly as the stored pod specs say
//! ([`Sidecar::from_pod`]: environment, projected tokens from the TokenRequest API, the
//! cluster CA, the downward-API labels; no kubeconfig). Each sidecar reads its bundle through
//! the API with its own projected token; a deny scoped to one workload answers 403 there and
//! 200 in the other; JWT claims count only from a token that verifies against the key set
//! the injector mounts (`--sidecar-jwks-volume`); an action whose selector selects no injected
//! pod reads `Unenforced`; a
//! pod whose sidecar stays not Ready past its grace gets a `PolicyNotLoaded` Event; and with
//! the API away, the mounted bundle alone carries the policy.
//!
//! One test, in stages: the webhook configuration is cluster-wide.

use std::net::IpAddr;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::injected::Wiring;
use palisade_e2e::{ControlPlane, Sidecar, TempNs, eventually, webhook};
use serde_json::{Value, json};

const LOCAL: &str = "127.0.0.1";

/// A pod of workload `app` whose app container names its port `http`, without the pod's
/// automounted API token.
fn pod(name: &str, app: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": app, "tier": "public"}},
        "spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "web", "image": "example.invalid/web:1",
                "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

async fn create(client: &kube::Client, ns: &str, pod: &Value) -> Pod {
    let pod: Pod = serde_json::from_value(pod.clone()).expect("pod");
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod: {e}"))
}

async fn status(sc: &Sidecar) -> Result<u16, String> {
    status_with(sc, &[]).await
}

async fn status_with(sc: &Sidecar, headers: &[(&str, &str)]) -> Result<u16, String> {
    let from: IpAddr = LOCAL.parse().expect("ip");
    get(from, sc.addr, "/", headers).await.map(|(s, _)| s)
}

async fn wait_status(sc: &Sidecar, want: u16, what: &str) {
    eventually(what, || async {
        let got = status(sc).await?;
        (got == want).then_some(()).ok_or(format!("status {got}"))
    })
    .await;
}

/// An ES256 signing key of the test and its public JWK.
struct Signer {
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl Signer {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let public = pair.public_key_raw(); // 0x04 || x || y
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64(&public[1..33]), "y": b64(&public[33..])});
        Self {
            pkcs8: pair.serialize_der(),
            jwk,
        }
    }

    /// `Authorization: Bearer` of a token for `sub`, valid ten minutes.
    fn bearer(&self, sub: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = self.jwk["kid"].as_str().map(str::to_owned);
        let claims = json!({"sub": sub, "exp": jiff::Timestamp::now().as_second() + 600});
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8);
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims, &key).expect("sign")
        )
    }
}

/// The same claims in a token nobody signed (`alg: none`).
fn unsigned_bearer(sub: &str) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let claims = json!({"sub": sub, "exp": jiff::Timestamp::now().as_second() + 600});
    let header = br#"{"alg":"none","kid":"operator"}"#;
    format!(
        "Bearer {}.{}.",
        b64(header),
        b64(claims.to_string().as_bytes())
    )
}

fn bundle_version(sc: &Sidecar) -> Option<String> {
    sc.bundle_version()
}

/// The status code of the sidecar's `/ready`.
fn ready(sc: &Sidecar) -> Result<u16, String> {
    let resp = palisade_e2e::process::http_get(sc.admin.port(), "/ready")?;
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(resp)
}

fn action_state(cp: &ControlPlane, ns: &str, name: &str) -> Result<String, String> {
    cp.kubectl_ok(&[
        "-n",
        ns,
        "get",
        "securityaction",
        name,
        "-o",
        "jsonpath={.status.state}/{.status.conditions[?(@.type==\"Ready\")].reason}",
    ])
    .map_err(|e| e.to_string())
}

async fn wait_state(cp: &ControlPlane, ns: &str, name: &str, want: &str) {
    eventually(&format!("{name} to read {want}"), || async {
        let got = action_state(cp, ns, name)?;
        (got == want).then_some(()).ok_or(got)
    })
    .await;
}

const DENY_API: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-api}
spec:
  deny: {status: 403}
  matchAll: true
  targets:
    workloadSelector:
      matchLabels: {app: api}
"#;

const DENY_MALLORY: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-mallory}
spec:
  deny: {status: 451}
  conditions: {developers: [mallory]}
"#;

const DENY_NOBODY: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-batch}
spec:
  deny: {status: 403}
  matchAll: true
  targets:
    workloadSelector:
      matchLabels: {app: batch}
"#;

#[tokio::test]
async fn a_workload_scoped_deny_applies_to_the_selected_workload_only() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TempNs::new(cp, "workload").await;
    // The key set injected sidecars verify Bearer tokens against, in a ConfigMap of the
    // namespace, before any pod mounts it.
    let operator_key = Signer::new("operator");
    let jwks = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "jwks"},
        "data": {"jwks.json": json!({"keys": [operator_key.jwk]}).to_string()}});
    cp.apply(ns.name(), &jwks.to_string())
        .expect("apply the jwks ConfigMap");
    let extra = [
        "--sidecar-jwks-volume".into(),
        r#"{"configMap":{"name":"jwks"}}"#.into(),
        "--sidecar-developer-claim".into(),
        "sub".into(),
    ];
    let probe = pod("probe", "probe");
    let _op = webhook::injecting_operator(cp, &ns, "op-workload", &extra, &probe).await;

    // Two workloads, admitted through the webhook, and their sidecars started before any
    // action exists: the deny below can only reach them through the API watch.
    let api_pod = create(&client, ns.name(), &pod("api-0", "api")).await;
    let shop_pod = create(&client, ns.name(), &pod("shop-0", "shop")).await;
    let app = echo_app().await;
    let wiring = Wiring {
        upstream: app,
        ..Wiring::default()
    };
    let api = Sidecar::from_pod(cp, &api_pod, &wiring).await;
    let shop = Sidecar::from_pod(cp, &shop_pod, &wiring).await;
    wait_status(&api, 200, "the api sidecar to forward").await;
    wait_status(&shop, 200, "the shop sidecar to forward").await;

    cp.apply(ns.name(), DENY_API).expect("apply deny-api");
    wait_status(&api, 403, "the workload-scoped deny to reach the api pod").await;
    // (The namespace got an empty bundle as soon as it had injected pods; wait until the
    // shop sidecar holds the one with the deny, as the api sidecar does.)
    let with_deny = bundle_version(&api).expect("the api sidecar's bundle");
    eventually(
        "the shop sidecar to hold the bundle with the deny",
        || async {
            let got = bundle_version(&shop);
            (got.as_deref() == Some(with_deny.as_str()))
                .then_some(())
                .ok_or(format!("{got:?}"))
        },
    )
    .await;
    assert_eq!(
        status(&shop).await,
        Ok(200),
        "the shop workload is not selected"
    );
    for sc in [&api, &shop] {
        assert_eq!(ready(sc), Ok(200), "Ready once the bundle is loaded");
    }
    wait_state(cp, ns.name(), "deny-api", "Active/Active").await;

    // JWT claims in an injected pod: the developer is read from a token only when its
    // signature verifies against the mounted key set; the same claims signed by another key
    // or not signed at all name nobody.
    cp.apply(ns.name(), DENY_MALLORY)
        .expect("apply deny-mallory");
    let signed = operator_key.bearer("mallory");
    eventually("a verified token of mallory to be denied", || async {
        let got = status_with(&shop, &[("authorization", &signed)]).await?;
        (got == 451).then_some(()).ok_or(format!("status {got}"))
    })
    .await;
    let forged = Signer::new("operator").bearer("mallory");
    for (what, token) in [
        ("signed by another key", forged),
        ("unsigned", unsigned_bearer("mallory")),
    ] {
        assert_eq!(
            status_with(&shop, &[("authorization", &token)]).await,
            Ok(200),
            "a token {what} names no developer"
        );
    }
    eventually("deny-mallory to read ClaimsVerified=True", || async {
        let verified = cp
            .kubectl_ok(&[
                "-n",
                ns.name(),
                "get",
                "securityaction",
                "deny-mallory",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"ClaimsVerified\")].status}",
            ])
            .map_err(|e| e.to_string())?;
        (verified == "True").then_some(()).ok_or(verified)
    })
    .await;

    // An action whose selector selects no injected pod says so, until such a pod appears.
    cp.apply(ns.name(), DENY_NOBODY).expect("apply deny-batch");
    wait_state(cp, ns.name(), "deny-batch", "Unenforced/NoSelectedPods").await;
    create(&client, ns.name(), &pod("batch-0", "batch")).await;
    wait_state(cp, ns.name(), "deny-batch", "Active/Active").await;
    Api::<Pod>::namespaced(client.clone(), ns.name())
        .delete("batch-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete batch-0");
    wait_state(cp, ns.name(), "deny-batch", "Unenforced/NoSelectedPods").await;

    // Playing the kubelet: a pod whose sidecar has run for an hour without being Ready (a
    // sidecar is Ready only with a policy) gets a PolicyNotLoaded Event from the operator.
    create(&client, ns.name(), &pod("stuck-0", "stuck")).await;
    let kubelet = json!({"status": {"phase": "Running", "initContainerStatuses": [{
        "name": "palisade-sidecar", "ready": false, "started": true, "restartCount": 0,
        "image": "palisade-sidecar", "imageID": "",
        "state": {"running": {"startedAt": "2020-01-01T00:00:00Z"}}}]}});
    Api::<Pod>::namespaced(client.clone(), ns.name())
        .patch_status("stuck-0", &PatchParams::default(), &Patch::Merge(&kubelet))
        .await
        .expect("the kubelet's status");
    let events: Api<Event> = Api::namespaced(client.clone(), ns.name());
    eventually("a PolicyNotLoaded Event on stuck-0", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let on = |e: &&Event| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("stuck-0")
                && e.reporting_controller.as_deref() == Some("palisade.dev/operator")
        };
        let reasons: Vec<_> = list
            .items
            .iter()
            .filter(on)
            .map(|e| e.reason.clone())
            .collect();
        reasons
            .contains(&Some("PolicyNotLoaded".to_owned()))
            .then_some(())
            .ok_or(format!("events on stuck-0: {reasons:?}"))
    })
    .await;

    // The API away: a new api pod's sidecar loads the bundle from its mounted ConfigMap
    // alone (the operator copies small bundles' shards into it).
    let away_pod = create(&client, ns.name(), &pod("api-1", "api")).await;
    let away = Sidecar::from_pod(
        cp,
        &away_pod,
        &Wiring {
            upstream: app,
            api_away: true,
            ..Wiring::default()
        },
    )
    .await;
    wait_status(&away, 403, "the mounted bundle to carry the deny").await;
}
