//! Palisade on a real node: Pods started by a kubelet (containerd, runc, the CNI bridge),
//! reached through Services (kube-proxy). Images are built from this checkout's binaries and
//! imported into the node's containerd (no registry).
//!
//! Every test here needs the node; without one (PALISADE_E2E_NODE=off, not root, …) each
//! prints `SKIPPED <test>: <why>` and returns.

use std::time::Duration;

use palisade_e2e::{
    ControlPlane, TempNs, eventually_within, node_or_skip, repo_root, workspace_bin,
};

const DEMO_IMAGE: &str = "palisade.local/palisade-demo-api:e2e";
const OPERATOR_IMAGE: &str = "palisade.local/palisade-operator";
const SIDECAR_IMAGE: &str = "palisade.local/palisade-sidecar";
const TAG: &str = "e2e";
/// Where the chart installs the operator in this test's cluster.
const RELEASE_NS: &str = "palisade-system";
/// The collector Service's fixed ClusterIP (`collector.service.clusterIP`): the node has no
/// cluster DNS, so the sidecars are given this address. The same as `make demo`'s.
const COLLECTOR_IP: &str = "198.19.0.10";

/// The tests that install the chart (one release in [`RELEASE_NS`]) take turns.
static CHART: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// GET `http://<ip>:<port><path>` from this host; the status code.
async fn get_status(ip: &str, port: u16, path: &str) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let connect = tokio::net::TcpStream::connect((ip, port));
    let mut s = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .map_err(|_| format!("connect {ip}:{port}: timed out"))?
        .map_err(|e| format!("connect {ip}:{port}: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write to {ip}:{port}: {e}"))?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .map_err(|_| format!("read from {ip}:{port}: timed out"))?
        .map_err(|e| format!("read from {ip}:{port}: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status from {ip}:{port}: {text:?}"))
}

/// The demo API as a Deployment and Service; `labels` extends the pod's labels
/// (`", tier: x"`), `pod_spec` is added to the pod spec (lines indented by six spaces).
fn demo_api(name: &str, labels: &str, pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}{labels}}}
    spec:
      enableServiceLinks: false
{pod_spec}      containers:
        - name: api
          image: {DEMO_IMAGE}
          imagePullPolicy: Never
          args: [--listen, 0.0.0.0:8081]
          ports: [{{name: http, containerPort: 8081}}]
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: 1
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
            seccompProfile: {{type: RuntimeDefault}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"
    )
}

fn cluster_ip(cp: &ControlPlane, ns: &str, svc: &str) -> String {
    cp.kubectl_ok(&[
        "-n",
        ns,
        "get",
        "service",
        svc,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
    .unwrap_or_else(|e| panic!("service {ns}/{svc}: {e}"))
}

async fn wait_ready(cp: &ControlPlane, ns: &str, deploy: &str) {
    eventually_within(
        6,
        &format!("deployment {ns}/{deploy} rolled out"),
        || async {
            // Rolled out, not only Available: after a re-apply with other images the old
            // pod keeps the Deployment Available (and would answer the webhook).
            cp.kubectl_ok(&[
                "-n",
                ns,
                "rollout",
                "status",
                "--timeout=2s",
                &format!("deployment/{deploy}"),
            ])
            .map(drop)
            .map_err(|e| {
                let pods = cp
                    .kubectl_ok(&["-n", ns, "get", "pods", "-o", "wide"])
                    .unwrap_or_default();
                let events = cp
                    .kubectl_ok(&["-n", ns, "get", "events", "--sort-by=.lastTimestamp"])
                    .unwrap_or_default();
                format!("{e}\npods:\n{pods}\nevents:\n{events}")
            })
        },
    )
    .await;
}

#[tokio::test]
async fn a_deployment_runs_on_the_node_and_answers_through_its_service() {
    let cp = ControlPlane::shared_with_node();
    let Some(node) = node_or_skip(
        cp,
        "a_deployment_runs_on_the_node_and_answers_through_its_service",
    ) else {
        return;
    };
    node.import_binary(DEMO_IMAGE, &workspace_bin("palisade-demo-api"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ns = TempNs::new(cp, "node-plain").await;
    cp.apply(ns.name(), &demo_api("plain", "", ""))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_ready(cp, ns.name(), "plain").await;
    let ip = cluster_ip(cp, ns.name(), "plain");
    let status = eventually_within(2, "GET / through the Service", || {
        let ip = ip.clone();
        async move {
            match get_status(&ip, 80, "/").await? {
                200 => Ok(200),
                other => Err(format!("status {other}")),
            }
        }
    })
    .await;
    assert_eq!(status, 200);
}

/// `helm template` of the chart (the helm built with the control plane) with the operator
/// and sidecar images set to the local tags, applied with kubectl.
fn install_chart(cp: &ControlPlane) {
    let helm = palisade_e2e::ensure_built()
        .unwrap_or_else(|e| panic!("building helm: {e}"))
        .join("helm");
    let version = cp
        .kubectl_ok(&["version", "-o", "json"])
        .unwrap_or_else(|e| panic!("{e}"));
    let version: serde_json::Value = serde_json::from_str(&version).expect("version JSON");
    let kube_version = version["serverVersion"]["gitVersion"]
        .as_str()
        .expect("serverVersion.gitVersion")
        .trim_start_matches('v')
        .to_owned();
    let chart = repo_root().join("charts/palisade");
    let sets = [
        format!("image.repository={OPERATOR_IMAGE}"),
        format!("image.tag={TAG}"),
        "image.pullPolicy=Never".to_owned(),
        format!("sidecar.image.repository={SIDECAR_IMAGE}"),
        format!("sidecar.image.tag={TAG}"),
        "replicaCount=1".to_owned(),
        "podDisruptionBudget.enabled=false".to_owned(),
        // No cluster DNS on the e2e node: the sidecars get the collector by address.
        format!("collector.service.clusterIP={COLLECTOR_IP}"),
        "logFormat=plain".to_owned(),
    ];
    let mut cmd = std::process::Command::new(&helm);
    cmd.args(["template", "palisade"]).arg(&chart).args([
        "-n",
        RELEASE_NS,
        "--kube-version",
        &kube_version,
    ]);
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifests = String::from_utf8(out.stdout).expect("UTF-8 manifests");
    let _exists = cp.kubectl_ok(&["create", "namespace", RELEASE_NS]);
    cp.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=palisade-e2e",
            "-n",
            RELEASE_NS,
            "-f",
            "-",
        ],
        &manifests,
    )
    .unwrap_or_else(|e| panic!("applying the rendered chart: {e}"));
}

/// Waits until `GET /` on port 80 of the ClusterIP `ip` answers `want`.
async fn wait_http(ip: &str, want: u16, what: &str) {
    wait_path(ip, "/", want, what).await;
}

/// Waits until `GET <path>` on port 80 of the ClusterIP `ip` answers `want`.
async fn wait_path(ip: &str, path: &str, want: u16, what: &str) {
    eventually_within(2, what, || {
        let ip = ip.to_owned();
        async move {
            match get_status(&ip, 80, path).await? {
                s if s == want => Ok(()),
                other => Err(format!("status {other}, want {want}")),
            }
        }
    })
    .await;
}

/// Imports the images, installs the chart and waits for its operator to roll out.
async fn chart_operator(cp: &ControlPlane, node: &palisade_e2e::node::Node) {
    for (image, bin) in [
        (format!("{OPERATOR_IMAGE}:{TAG}"), "palisade-operator"),
        (format!("{SIDECAR_IMAGE}:{TAG}"), "palisade-sidecar"),
        (DEMO_IMAGE.to_owned(), "palisade-demo-api"),
    ] {
        node.import_binary(&image, &workspace_bin(bin))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    install_chart(cp);
    let operator = cp
        .kubectl_ok(&[
            "-n",
            RELEASE_NS,
            "get",
            "deployment",
            "-l",
            "app.kubernetes.io/component=operator",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .unwrap_or_else(|e| panic!("the chart's operator Deployment: {e}"));
    assert!(
        !operator.is_empty(),
        "the chart rendered no operator Deployment"
    );
    wait_ready(cp, RELEASE_NS, &operator).await;
}

/// A namespace opted in to injection.
async fn injected_ns(cp: &'static ControlPlane, prefix: &str) -> TempNs {
    let ns = TempNs::new(cp, prefix).await;
    cp.kubectl_ok(&[
        "label",
        "namespace",
        ns.name(),
        "palisade.dev/inject=enabled",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    ns
}

#[tokio::test]
async fn the_chart_operator_injects_the_sidecar_and_a_deny_action_reaches_it_through_the_service() {
    let test =
        "the_chart_operator_injects_the_sidecar_and_a_deny_action_reaches_it_through_the_service";
    let cp = ControlPlane::shared_with_node();
    let Some(node) = node_or_skip(cp, test) else {
        return;
    };
    let _chart = CHART.lock().await;
    chart_operator(cp, node).await;

    // A namespace opted in to injection; its API Deployment gets the native sidecar.
    let ns = injected_ns(cp, "node-inject").await;
    cp.apply(ns.name(), &demo_api("api", "", ""))
        .unwrap_or_else(|e| panic!("{e}"));
    wait_ready(cp, ns.name(), "api").await;
    let pod = cp
        .kubectl_ok(&[
            "-n",
            ns.name(),
            "get",
            "pods",
            "-l",
            "app=api",
            "-o",
            "jsonpath={.items[0].spec.initContainers[0].name} {.items[0].spec.initContainers[0].image} \
             {.items[0].status.initContainerStatuses[0].ready} {.items[0].metadata.annotations}",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        pod.starts_with(&format!("palisade-sidecar {SIDECAR_IMAGE}:{TAG} true ")),
        "the API pod runs the injected sidecar (name image ready annotations): {pod}"
    );
    assert!(pod.contains("palisade.dev/injected"), "{pod}");

    // From this host through kube-proxy to the Service, whose targetPort `http` is now the
    // sidecar's; the host's source address on the bridge is the gateway.
    let ip = cluster_ip(cp, ns.name(), "api");
    wait_http(&ip, 200, "200 through the Service and the sidecar").await;

    let deny = format!(
        r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {{name: deny-host}}
spec:
  deny: {{status: 403, body: "blocked by palisade\n"}}
  conditions:
    ipRanges: ["{gw}/32"]
"#,
        gw = palisade_e2e::node::GATEWAY
    );
    cp.apply(ns.name(), &deny).unwrap_or_else(|e| panic!("{e}"));
    wait_http(&ip, 403, "403 after the deny action").await;

    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "annotate",
        "securityaction",
        "deny-host",
        "palisade.dev/paused=true",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    wait_http(&ip, 200, "200 after pausing the deny").await;
}

/// Issue 17 items 1 and 2 on real pods: a deny scoped by `targets.workloadSelector` applies
/// in the selected workload only (the injected sidecar reads its pod's labels from the
/// downward API), also in a pod with `automountServiceAccountToken: false` (the sidecar reads
/// its bundle with its own projected token); an action selecting no pod reads `Unenforced`.
#[tokio::test]
async fn a_workload_scoped_deny_applies_to_the_selected_pods_only_on_the_node() {
    let test = "a_workload_scoped_deny_applies_to_the_selected_pods_only_on_the_node";
    let cp = ControlPlane::shared_with_node();
    let Some(node) = node_or_skip(cp, test) else {
        return;
    };
    let _chart = CHART.lock().await;
    chart_operator(cp, node).await;
    let ns = injected_ns(cp, "node-scope").await;
    let no_token = "      automountServiceAccountToken: false\n";
    let apis = demo_api("internal", ", tier: internal", "")
        + "---\n"
        + &demo_api("public", ", tier: public", no_token);
    cp.apply(ns.name(), &apis).unwrap_or_else(|e| panic!("{e}"));
    wait_ready(cp, ns.name(), "internal").await;
    wait_ready(cp, ns.name(), "public").await;
    let automount = cp
        .kubectl_ok(&[
            "-n",
            ns.name(),
            "get",
            "pods",
            "-l",
            "app=public",
            "-o",
            "jsonpath={.items[0].spec.automountServiceAccountToken} {.items[0].spec.initContainers[0].name}",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        automount, "false palisade-sidecar",
        "the public pod runs the sidecar without the pod's API token"
    );
    let internal = cluster_ip(cp, ns.name(), "internal");
    let public = cluster_ip(cp, ns.name(), "public");
    wait_http(&internal, 200, "200 from the internal API").await;
    wait_http(&public, 200, "200 from the public API").await;

    // One deny per workload, distinguishable by status: the public one denies everything,
    // the internal one only /internal-only (so a 200 on / there is the scope, not a sidecar
    // that has not loaded the bundle yet).
    let actions = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-public}
spec:
  deny: {status: 403}
  matchAll: true
  targets: {workloadSelector: {matchLabels: {tier: public}}}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-internal-path}
spec:
  deny: {status: 451}
  conditions: {paths: [{value: /internal-only}]}
  targets: {workloadSelector: {matchLabels: {tier: internal}}}
---
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-nobody}
spec:
  deny: {status: 403}
  matchAll: true
  targets: {workloadSelector: {matchLabels: {tier: nobody}}}
"#;
    cp.apply(ns.name(), actions)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_path(
        &public,
        "/",
        403,
        "403 from the public API (its scoped deny)",
    )
    .await;
    wait_path(
        &public,
        "/internal-only",
        403,
        "the public API answers the public deny on /internal-only",
    )
    .await;
    wait_path(
        &internal,
        "/internal-only",
        451,
        "451 from the internal API (its own scoped deny)",
    )
    .await;
    for _ in 0..5 {
        let got = get_status(&internal, 80, "/")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got, 200,
            "the public deny must not apply to the internal API"
        );
    }

    let state = |name: &str| {
        cp.kubectl_ok(&[
            "-n",
            ns.name(),
            "get",
            "securityaction",
            name,
            "-o",
            "jsonpath={.status.state}",
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    };
    eventually_within(2, "the actions' states", || async {
        let states = [
            state("deny-public"),
            state("deny-internal-path"),
            state("deny-nobody"),
        ];
        (states == ["Active", "Active", "Unenforced"])
            .then_some(())
            .ok_or(format!("states {states:?}"))
    })
    .await;
}

/// `make demo` on the node: the chart's operator as a Deployment, the demo API as a
/// Deployment whose pod gets the sidecar from the webhook, requests through its Service from
/// client addresses on the node's bridge, and every step of the story (the flood reported to
/// the collector over HTTPS at its fixed ClusterIP, detected, denied).
#[tokio::test]
async fn make_demo_runs_on_the_node_with_pods() {
    let test = "make_demo_runs_on_the_node_with_pods";
    let cp = ControlPlane::shared_with_node();
    let Some(node) = node_or_skip(cp, test) else {
        return;
    };
    let _chart = CHART.lock().await;
    let run = palisade_e2e::demo::run(cp, "pods", Some(node.dir()));
    run.assert_story();
    let out = &run.stdout;
    let pods = out
        .split("get pods -o wide\n")
        .nth(1)
        .expect("step 0 lists the demo's pods");
    let row = pods.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("demo-api-") && row.contains(" 2/2 ") && row.contains(" Running "),
        "the demo API pod runs its container and the injected sidecar: {row}\n{out}"
    );
    assert!(
        out.contains("init container palisade-sidecar (restartPolicy Always): palisade.local/"),
        "the sidecar is a native sidecar from the local image:\n{out}"
    );
    assert!(
        out.contains("curl --interface 198.18.0.202 -X GET http://198.19.0."),
        "requests go to the Service's ClusterIP from a bridge address:\n{out}"
    );
    let env = cp
        .kubectl_ok(&[
            "-n",
            "demo",
            "get",
            "pods",
            "-l",
            "app=demo-api",
            "-o",
            "jsonpath={range .items[0].spec.initContainers[0].env[*]}{.name}={.value}{\"\\n\"}{end}",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        env.lines()
            .any(|l| l == format!("PALISADE_COLLECTOR_ADDR={COLLECTOR_IP}:9444")),
        "the sidecar reports to the collector's ClusterIP: {env}"
    );
    assert!(
        env.lines()
            .any(|l| l.starts_with("PALISADE_COLLECTOR_CA=-----BEGIN CERTIFICATE-----")),
        "the sidecar verifies the collector's certificate (HTTPS): {env}"
    );
}
