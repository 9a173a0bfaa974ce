//! The injector webhook over real HTTPS: the server, the admission handling and the patch,
//! of the operator's library, answering a real TLS client that trusts only
//! the generated CA — and the certificate swapped under it without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use palisade_operator::injector::admit;
use palisade_operator::injector::certs::{self, CertBundle, Plan};
use palisade_operator::injector::config::{EscapedSlashes, InjectConfig, PullPolicy};
use palisade_operator::injector::server::{self, CertStore};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn cfg() -> InjectConfig {
    InjectConfig {
        image: "palisade-sidecar:test".into(),
        image_pull_policy: PullPolicy::IfNotPresent,
        version: "0.1.0".into(),
        requests: vec![("cpu".into(), "50m".into())],
        limits: vec![],
        proxy_port: 15080,
        admin_port: 15081,
        takeover_ports: vec!["http".into()],
        trusted_hops: 0,
        fail_closed: false,
        ready_without_policy: false,
        policy_grace: Duration::from_secs(30),
        bundle_configmap: "palisade-bundle".into(),
        collector_addr: String::new(),
        collector_ca: None,
        bundle_keys: Some("a2V5".into()),
        debug_headers: false,
        identity: vec![],
        jwks: None,
        escaped_slashes: EscapedSlashes::Reject,
        forward_original_path: false,
        geoip: None,
    }
}

fn issue(plan: Plan, current: Option<&CertBundle>) -> CertBundle {
    let sans = certs::sans("palisade-webhook", "palisade-system");
    let year = Duration::from_secs(365 * 24 * 3600);
    certs::issue(plan, current, None, &sans, jiff::Timestamp::now(), year).expect("issued")
}

struct Webhook {
    addr: SocketAddr,
    store: Arc<CertStore>,
    stop: CancellationToken,
}

async fn start(bundle: Option<&CertBundle>) -> Webhook {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = Arc::new(CertStore::default());
    if let Some(b) = bundle {
        store.set(b.certified_key().expect("usable key"));
    }
    let cfg = Arc::new(cfg());
    let app = Router::new().route(
        "/mutate",
        post(move |body: Bytes| {
            let cfg = cfg.clone();
            async move {
                let (review, _) = admit::review(&body, &cfg, "palisade-system", admit::Mode::OptIn);
                axum::Json(serde_json::to_value(review).expect("review JSON"))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(server::serve_on(listener, store.clone(), app, stop.clone()));
    Webhook { addr, store, stop }
}

/// POSTs `body` to `/mutate` trusting only `ca_pem`, as the API server does with `caBundle`.
async fn post_review(addr: SocketAddr, ca_pem: &str, body: &Value) -> Result<Value, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::post("/mutate")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    assert_eq!(resp.status(), 200);
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// The patch bytes: a base64 string, or (as kube serializes `Vec<u8>`) an array of numbers;
/// the API server's Go decoder accepts both for its `[]byte` field.
fn patch_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64"),
        other => serde_json::from_value(other.clone()).expect("an array of bytes"),
    }
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
        "spec": {"containers": [{"name": "web", "image": "w",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}})
}

fn review_of(pod: &Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "abc", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE", "userInfo": {"username": "u"},
            "object": pod, "oldObject": null, "dryRun": false}})
}

#[tokio::test]
async fn answers_an_admission_review_with_a_patch_that_injects_the_sidecar() {
    let bundle = issue(Plan::NewCa, None);
    let hook = start(Some(&bundle)).await;
    let out = post_review(hook.addr, &bundle.ca_bundle(), &review_of(&pod()))
        .await
        .expect("the webhook answers over TLS");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    let res = &out["response"];
    assert_eq!(res["uid"], "abc");
    assert_eq!(res["allowed"], true);
    assert_eq!(res["patchType"], "JSONPatch");
    let raw = patch_bytes(&res["patch"]);
    let ops: Vec<json_patch::PatchOperation> = serde_json::from_slice(&raw).expect("ops");
    let mut doc = pod();
    json_patch::patch(&mut doc, &ops).expect("the patch applies to the pod");
    let sidecar = &doc["spec"]["initContainers"][0];
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["ports"][0]["name"], "http");
    assert_eq!(doc["spec"]["containers"][0]["ports"][0]["name"], "http-app");
    assert_eq!(
        doc["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        "http-app"
    );
    hook.stop.cancel();
}

#[tokio::test]
async fn a_pod_without_a_named_port_is_admitted_with_a_warning() {
    let bundle = issue(Plan::NewCa, None);
    let hook = start(Some(&bundle)).await;
    let mut p = pod();
    p["spec"]["containers"][0]["ports"][0] = json!({"containerPort": 8080});
    let out = post_review(hook.addr, &bundle.ca_bundle(), &review_of(&p))
        .await
        .expect("answer");
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none());
    let warning = out["response"]["warnings"][0].as_str().expect("warning");
    assert!(warning.contains("targetPort"), "{warning}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_the_next_connection_without_a_restart() {
    let first = issue(Plan::NewCa, None);
    let hook = start(Some(&first)).await;
    post_review(hook.addr, &first.ca_bundle(), &review_of(&pod()))
        .await
        .expect("first cert");

    // Same CA, new serving certificate: clients that trust the CA do not notice.
    let renewed = issue(Plan::RenewServing, Some(&first));
    hook.store.set(renewed.certified_key().expect("key"));
    post_review(hook.addr, &first.ca_bundle(), &review_of(&pod()))
        .await
        .expect("renewed");

    // New CA: a client with the new caBundle (new + previous CA) works; one that trusts only
    // the old CA is refused, which proves the new certificate is the one served.
    let rotated = issue(Plan::NewCa, Some(&renewed));
    hook.store.set(rotated.certified_key().expect("key"));
    post_review(hook.addr, &rotated.ca_bundle(), &review_of(&pod()))
        .await
        .expect("rotated");
    let refused = post_review(hook.addr, &first.ca_crt, &review_of(&pod())).await;
    assert!(
        refused.is_err(),
        "the old CA alone must not verify the new certificate"
    );
}

#[tokio::test]
async fn without_a_certificate_handshakes_fail_and_the_server_keeps_running() {
    let hook = start(None).await;
    let bundle = issue(Plan::NewCa, None);
    let err = post_review(hook.addr, &bundle.ca_bundle(), &review_of(&pod())).await;
    assert!(err.is_err(), "no certificate, no handshake");
    hook.store.set(bundle.certified_key().expect("key"));
    post_review(hook.addr, &bundle.ca_bundle(), &review_of(&pod()))
        .await
        .expect("now served");
}
