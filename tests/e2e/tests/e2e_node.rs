//! Palisade on a real node: Pods started by a kubelet (containerd, runc, the CNI bridge),
//! reached through Services (kube-proxy). Images are built from this checkout's binaries and
//! imported into the node's containerd (no registry).
//!
//! Every test here needs the node; without one (PALISADE_E2E_NODE=off, not root, …) each
//! prints `SKIPPED <test>: <why>` and returns.

use std::time::Duration;

use palisade_e2e::{ControlPlane, TempNs, eventually_within, node_or_skip, workspace_bin};

const DEMO_IMAGE: &str = "palisade.local/palisade-demo-api:e2e";

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

fn demo_api(name: &str, labels: &str) -> String {
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
      automountServiceAccountToken: false
      containers:
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
        &format!("deployment {ns}/{deploy} available"),
        || async {
            cp.kubectl_ok(&[
                "-n",
                ns,
                "wait",
                "--for=condition=Available",
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
    cp.apply(ns.name(), &demo_api("plain", ""))
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
