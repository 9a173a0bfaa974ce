//! The injector end to end: the operator process serves the webhook (URL mode on loopback),
//! manages its certificate and `caBundle`; kube-controller-manager creates Pods from
//! Deployments through admission, and the stored Pods carry the native sidecar.
//!
//! One test, in stages, because the webhook configuration is cluster-wide and the last stage
//! stops the operator.

use std::io::Write as _;
use std::process::Stdio;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use palisade_e2e::{ControlPlane, OPERATOR_NS, Operator, TempNs, eventually, webhook};
use serde_json::{Value, json};

const SECRET: &str = "palisade-webhook-cert";

#[tokio::test]
async fn the_operator_injects_the_native_sidecar_into_opted_in_pods() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    // The chart's optional sidecar settings, so the API server (and PodSecurity `restricted`
    // below) stores pods with the GeoIP volume, the identity environment and debug headers.
    let mut op = Operator::start(
        cp,
        "injector-e2e",
        "injector-e2e",
        &[
            "--webhook-cert-check",
            "1s",
            "--sidecar-geoip-volume",
            r#"{"configMap":{"name":"geoip","optional":true}}"#,
            "--sidecar-geoip-asn-file",
            "",
            "--sidecar-developer-claim",
            "sub",
            "--sidecar-debug-headers",
        ],
    );
    webhook::register(cp, &op.webhook).await;
    let first_ca = webhook::wait_for_ca_bundle(&client, None).await;

    // Opt-in by namespace: a Deployment's Pods, created by the ReplicaSet controller.
    let on = labelled_ns(cp, "inj-on", &[("palisade.dev/inject", "enabled")]).await;
    webhook::wait_until_injecting(&client, on.name(), &web_pod("probe", &json!({}))).await;
    create_deployment(&client, on.name(), "web", json!({})).await;
    let pod = wait_for_pod(&client, on.name(), "web").await;
    assert_injected(&pod);
    assert_event(&client, on.name(), "Injected").await;

    // Opt-out on the pod template.
    let opt_out = json!({"palisade.dev/inject": "disabled"});
    create_deployment(&client, on.name(), "optout", opt_out).await;
    assert_untouched(&wait_for_pod(&client, on.name(), "optout").await);

    // A numeric port cannot be taken over: admitted untouched, with a warning and an Event.
    let stderr = kubectl_create(cp, on.name(), &numeric_port_pod());
    assert!(
        stderr.contains("sidecar not injected"),
        "kubectl warned: {stderr}"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), on.name());
    assert_untouched(&json(
        &pods.get("numeric").await.expect("the pod is stored"),
    ));
    assert_event(&client, on.name(), "InjectionSkipped").await;

    // Opt-in by pod label in a namespace without the label; other pods there are untouched.
    let plain = labelled_ns(cp, "inj-plain", &[]).await;
    create_deployment(&client, plain.name(), "untouched", json!({})).await;
    let opt_in = json!({"palisade.dev/inject": "enabled"});
    create_deployment(&client, plain.name(), "optin", opt_in.clone()).await;
    assert_untouched(&wait_for_pod(&client, plain.name(), "untouched").await);
    assert_injected(&wait_for_pod(&client, plain.name(), "optin").await);

    // kube-system is never injected, whatever the pod says.
    let name = format!("inj-{}", std::process::id());
    create_deployment(&client, "kube-system", &name, opt_in).await;
    assert_untouched(&wait_for_pod(&client, "kube-system", &name).await);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    let _ = deployments.delete(&name, &DeleteParams::default()).await;

    // PodSecurity `restricted` (a validating admission that runs after us) admits the result.
    let labels = [
        ("palisade.dev/inject", "enabled"),
        ("pod-security.kubernetes.io/enforce", "restricted"),
    ];
    let restricted = labelled_ns(cp, "inj-restricted", &labels).await;
    webhook::wait_until_injecting(&client, restricted.name(), &web_pod("probe", &json!({}))).await;
    let pod = create_restricted_pod(&client, restricted.name()).await;
    assert_injected(&json(&pod));

    // A namespace that requires the sidecar: a pod that would run without it (opted out, a
    // forged injected annotation, a decoy container named like the sidecar) is refused by
    // the API server with the reason; an ordinary pod is injected.
    let required = labelled_ns(cp, "inj-required", &[("palisade.dev/inject", "required")]).await;
    webhook::wait_until_injecting(&client, required.name(), &web_pod("probe", &json!({}))).await;
    let in_required: Api<Pod> = Api::namespaced(client.clone(), required.name());
    let mut decoy = web_pod("decoy", &json!({}));
    decoy["spec"]["initContainers"] = json!([{"name": "palisade-sidecar", "image": "evil:1",
        "restartPolicy": "Always"}]);
    let mut forged = web_pod("forged", &json!({}));
    forged["metadata"]["annotations"] = json!({"palisade.dev/injected": "v0"});
    for (pod, fix) in [
        (
            web_pod("optout", &json!({"palisade.dev/inject": "disabled"})),
            "remove the pod's palisade.dev/inject=disabled label",
        ),
        (forged, "only the injector adds"),
        (decoy, "only the injector adds"),
    ] {
        let name = pod["metadata"]["name"].clone();
        let refused = in_required
            .create(
                &PostParams::default(),
                &serde_json::from_value(pod).expect("pod"),
            )
            .await;
        match refused {
            Err(kube::Error::Api(s)) => assert!(
                s.message.contains("requires the Palisade sidecar") && s.message.contains(fix),
                "{name}: {s:?}"
            ),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    let ordinary = in_required
        .create(
            &PostParams::default(),
            &serde_json::from_value(web_pod("ordinary", &json!({}))).expect("pod"),
        )
        .await
        .expect("an ordinary pod is admitted");
    assert_injected(&json(&ordinary));

    let metrics = op.metrics().expect("metrics");
    assert!(
        metrics.contains(
            r#"palisade_operator_injector_admissions_total{result="injected",reason="Injected"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"palisade_operator_injector_admissions_total{result="denied",reason="OptedOut"}"#
        ),
        "{metrics}"
    );

    // Certificate rotation: the Secret is lost; the operator issues a new CA, publishes it
    // (with the CA it still serves) before switching, and the webhook keeps working.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NS);
    secrets
        .delete(SECRET, &DeleteParams::default())
        .await
        .expect("delete Secret");
    webhook::wait_for_ca_bundle(&client, Some(&first_ca)).await;
    eventually("the operator to store a new Secret", || async {
        secrets
            .get(SECRET)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    create_deployment(&client, on.name(), "after-rotation", json!({})).await;
    assert_injected(&wait_for_pod(&client, on.name(), "after-rotation").await);

    // failurePolicy Fail: without the operator, an opted-in pod is refused, not created bare.
    op.kill();
    let refused = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(web_pod("refused", &json!({}))).expect("pod"),
        )
        .await;
    match refused {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("palisade"), "{s:?}"),
        other => panic!("expected the API server to refuse the pod, got {other:?}"),
    }
}

async fn labelled_ns(cp: &'static ControlPlane, prefix: &str, labels: &[(&str, &str)]) -> TempNs {
    let ns = TempNs::new(cp, prefix).await;
    if !labels.is_empty() {
        let mut args = vec![
            "label".to_owned(),
            "namespace".to_owned(),
            ns.name().to_owned(),
        ];
        args.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cp.kubectl_ok(&args).expect("label the namespace");
    }
    ns
}

/// A pod whose app container names its port `http` and would pass PodSecurity `restricted`
/// on its own, so a refusal in a restricted namespace can only come from the injected part.
fn web_pod(name: &str, labels: &Value) -> Value {
    let mut all = json!({"app": name});
    let extra = labels.as_object().cloned().unwrap_or_default();
    all.as_object_mut().expect("map").extend(extra);
    json!({"metadata": {"name": name, "labels": all},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "web", "image": "example.invalid/web:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "securityContext": {"allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "livenessProbe": {"tcpSocket": {"port": "http"}}}]}})
}

fn numeric_port_pod() -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "numeric"},
        "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1",
            "ports": [{"containerPort": 8080}]}]}})
    .to_string()
}

async fn create_deployment(client: &kube::Client, ns: &str, name: &str, labels: Value) {
    let template = web_pod(name, &labels);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": template}
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap_or_else(|e| panic!("create deployment {ns}/{name}: {e}"));
}

async fn create_restricted_pod(client: &kube::Client, ns: &str) -> Pod {
    let pod: Pod = serde_json::from_value(web_pod("restricted", &json!({}))).expect("pod");
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("PodSecurity restricted refused the injected pod: {e}"))
}

/// The Pod the ReplicaSet controller created for Deployment `app`.
async fn wait_for_pod(client: &kube::Client, ns: &str, app: &str) -> Value {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("app={app}"));
    eventually(&format!("a Pod of Deployment {ns}/{app}"), || async {
        let list = pods.list(&lp).await.map_err(|e| e.to_string())?;
        list.items
            .first()
            .map(json)
            .ok_or_else(|| "no Pod yet".to_owned())
    })
    .await
}

fn json(pod: &Pod) -> Value {
    serde_json::to_value(pod).expect("pod JSON")
}

fn assert_injected(pod: &Value) {
    let spec = &pod["spec"];
    let sidecar = &spec["initContainers"][0];
    assert_eq!(
        sidecar["name"], "palisade-sidecar",
        "the sidecar is first: {spec}"
    );
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(
        sidecar["ports"][0]["name"], "http",
        "the sidecar took the Service's port"
    );
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
    let env = sidecar["env"].to_string();
    assert!(
        env.contains("PALISADE_UPSTREAM_PORT") && env.contains("8080"),
        "{env}"
    );
    let app = &spec["containers"][0];
    assert_eq!(app["ports"][0]["name"], "http-app");
    assert_eq!(app["ports"][0]["containerPort"], 8080);
    assert_eq!(
        app["readinessProbe"]["httpGet"]["port"], "http-app",
        "probes hit the app"
    );
    assert_eq!(app["livenessProbe"]["tcpSocket"]["port"], "http-app");
    let token = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "palisade");
    assert!(
        token,
        "a projected token for the collector: {}",
        spec["volumes"]
    );
    assert!(pod["metadata"]["annotations"]["palisade.dev/injected"].is_string());
    let geoip = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "palisade-geoip")
        .unwrap_or_else(|| panic!("the GeoIP volume: {}", spec["volumes"]));
    assert_eq!(geoip["configMap"]["name"], "geoip");
    let mount = sidecar["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == "palisade-geoip")
        .unwrap_or_else(|| panic!("the GeoIP mount: {}", sidecar["volumeMounts"]));
    assert_eq!(mount["mountPath"], "/etc/palisade/geoip");
    assert_eq!(mount["readOnly"], true);
    for (name, value) in [
        (
            "PALISADE_GEOIP_DB",
            "/etc/palisade/geoip/GeoLite2-Country.mmdb",
        ),
        ("PALISADE_DEVELOPER_CLAIM", "sub"),
        ("PALISADE_API_KEY_HEADER", "x-api-key"),
        ("PALISADE_DEBUG_HEADERS", "true"),
    ] {
        let e = json!({"name": name, "value": value}).to_string();
        assert!(env.contains(&e), "{e} in {env}");
    }
    assert!(!env.contains("PALISADE_ASN_DB"), "{env}");
}

fn assert_untouched(pod: &Value) {
    let spec = &pod["spec"];
    assert!(spec.get("initContainers").is_none(), "no sidecar: {spec}");
    let port = &spec["containers"][0]["ports"][0];
    assert!(
        port["name"] == "http" || port.get("name").is_none(),
        "{port}"
    );
    assert!(
        pod["metadata"]["annotations"]
            .get("palisade.dev/injected")
            .is_none()
    );
}

async fn assert_event(client: &kube::Client, ns: &str, reason: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(&format!("an Event {reason} in {ns}"), || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.reporting_controller.as_deref() == Some("palisade.dev/operator")
        });
        found
            .then_some(())
            .ok_or_else(|| format!("{} events, none {reason}", list.items.len()))
    })
    .await;
}

/// `kubectl create -f -` (to see the admission warnings kubectl prints); returns stderr.
fn kubectl_create(cp: &ControlPlane, ns: &str, manifest: &str) -> String {
    let mut child = cp
        .kubectl()
        .args(["-n", ns, "create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("kubectl create");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kubectl create failed: {stderr}");
    stderr
}
