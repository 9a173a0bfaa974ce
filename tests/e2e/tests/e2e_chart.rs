//! The Helm chart (charts/palisade) against the real API server: lint and render for the
//! defaults and every `ci/*-values.yaml`; every rendered object accepted by a server-side dry
//! run; `helm install` (restricted Pod Security, the RBAC it grants) and `helm uninstall`;
//! and the drift checks that keep the chart equal to what the e2e suite runs: CRD copies,
//! RBAC rules, dashboard metric names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use palisade_e2e::{ControlPlane, TempNs, eventually, repo_root};
use serde_json::Value;

fn chart() -> PathBuf {
    repo_root().join("charts/palisade")
}

/// The helm binary built with the control plane (tests/e2e/controlplane/helm).
fn helm_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        palisade_e2e::ensure_built()
            .unwrap_or_else(|e| panic!("building helm: {e}"))
            .join("helm")
    })
}

/// Runs helm against the test cluster; stdout, or stderr as the error.
fn helm(cp: &ControlPlane, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm_bin())
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(args)
        .output()
        .map_err(|e| format!("running helm: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "helm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ci/*-values.yaml`: the documented example values files (chart-testing's convention).
fn values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .expect("charts/palisade/ci")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected example values files: {files:?}");
    files
}

/// The API server's version, for `helm template --kube-version` (the chart needs ≥ 1.29).
fn kube_version(cp: &ControlPlane) -> String {
    let text = cp
        .kubectl_ok(&["version", "-o", "json"])
        .expect("kubectl version");
    let v: Value = serde_json::from_str(&text).expect("version JSON");
    let git = v["serverVersion"]["gitVersion"]
        .as_str()
        .expect("gitVersion");
    git.trim_start_matches('v').to_owned()
}

/// `helm template` of release `release` in namespace `ns` with `extra` arguments.
fn render(cp: &ControlPlane, release: &str, ns: &str, extra: &[&str]) -> Result<String, String> {
    let chart = chart();
    let kv = kube_version(cp);
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("UTF-8 path"),
        "-n",
        ns,
        "--kube-version",
        &kv,
    ];
    args.extend_from_slice(extra);
    helm(cp, &args)
}

/// The rendered documents as JSON values (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("YAML → JSON"))
        .collect()
}

fn kind_name(doc: &Value) -> (String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (s(&doc["kind"]), s(&doc["metadata"]["name"]))
}

#[test]
fn the_chart_crds_are_the_generated_crds() {
    let fix = "cp crds/*.yaml charts/palisade/files/crds/";
    let src = repo_root().join("crds");
    let mut names: Vec<String> = std::fs::read_dir(&src)
        .expect("crds/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    let mut copies: Vec<String> = std::fs::read_dir(chart().join("files/crds"))
        .expect("charts/palisade/files/crds")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    copies.sort();
    assert_eq!(
        copies, names,
        "the chart's CRD files differ from crds/; run `{fix}`"
    );
    for name in names {
        let a = std::fs::read_to_string(src.join(&name)).expect("crd");
        let b = std::fs::read_to_string(chart().join("files/crds").join(&name)).expect("copy");
        assert!(
            a == b,
            "charts/palisade/files/crds/{name} differs from crds/{name}; run `{fix}`"
        );
    }
}

#[test]
fn helm_lint_and_template_pass_for_the_defaults_and_every_values_file() {
    let cp = ControlPlane::shared();
    let chart = chart();
    let chart = chart.to_str().expect("UTF-8 path");
    helm(cp, &["lint", "--strict", chart]).unwrap_or_else(|e| panic!("{e}"));
    let defaults = render(cp, "palisade", "palisade-system", &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(documents(&defaults).len() > 10, "defaults render the chart");
    for file in values_files() {
        let f = file.to_str().expect("UTF-8 path");
        helm(cp, &["lint", "--strict", chart, "-f", f]).unwrap_or_else(|e| panic!("{e}"));
        let out =
            render(cp, "palisade", "palisade-system", &["-f", f]).unwrap_or_else(|e| panic!("{e}"));
        for doc in documents(&out) {
            let (kind, name) = kind_name(&doc);
            assert!(kind != "Secret", "{f}: the chart renders Secret {name}");
            let text = doc.to_string();
            for secret in ["caBundle", "PRIVATE KEY", "BEGIN CERTIFICATE"] {
                assert!(!text.contains(secret), "{f}: {kind}/{name} has {secret}");
            }
            let labels = &doc["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/managed-by",
                "app.kubernetes.io/part-of",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{f}: {kind}/{name} lacks label {key}"
                );
            }
        }
    }
}

#[test]
fn values_schema_rejects_unknown_keys_and_bad_values() {
    let cp = ControlPlane::shared();
    for (set, what) in [
        ("replicas=3", "replicas"),
        ("sidecar.trustedHops=99", "trustedHops"),
        ("sidecar.trustedProxies={ingress}", "trustedProxies"),
        ("sidecar.identity.jwtUnverified=yes", "jwtUnverified"),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("webhook.certSource=vault", "certSource"),
        ("logFormat=xml", "logFormat"),
        ("leaderElection.leaseDuration=1", "leaseDuration"),
        ("sidecar.identity.apiKeyHeader=X Key", "apiKeyHeader"),
        (
            "sidecar.identity.methodOverrideHeaders={X Override}",
            "methodOverrideHeaders",
        ),
        ("sidecar.jwt.jwksFile=../token", "jwksFile"),
        ("sidecar.jwt.algorithms={RS256,HS256}", "algorithms"),
        ("sidecar.jwt.jwksSecret=Keys", "jwksSecret"),
        ("sidecar.paths.escapedSlashes=allow", "escapedSlashes"),
        (
            "sidecar.paths.forwardOriginalPath=yes",
            "forwardOriginalPath",
        ),
        ("sidecar.geoip.asnFile=../GeoLite2-ASN.mmdb", "asnFile"),
        ("sidecar.geoip.hostPath=var/lib/geoip", "hostPath"),
        ("collector.service.clusterIP=collector.local", "clusterIP"),
        // Enabled without a source, or with two: the template says which values to set.
        (
            "sidecar.geoip.enabled=true",
            "exactly one of sidecar.geoip.configMap",
        ),
        (
            "sidecar.geoip.enabled=true,sidecar.geoip.configMap=g,sidecar.geoip.hostPath=/g",
            "(2 set)",
        ),
        // Two key sets, or a key set with unverified claims: the operator would refuse both.
        (
            "sidecar.jwt.jwksSecret=jwks,sidecar.jwt.jwksConfigMap=jwks",
            "sidecar.jwt",
        ),
        (
            "sidecar.jwt.jwksConfigMap=jwks,sidecar.identity.jwtUnverified=true",
            "choose one",
        ),
    ] {
        let err = render(cp, "palisade", "palisade-system", &["--set", set])
            .expect_err(&format!("--set {set} must be rejected"));
        assert!(err.contains(what), "--set {set}: {err}");
    }
}

/// Minimal Prometheus Operator CRDs, so that ServiceMonitor/PodMonitor can be dry-run.
const MONITORING_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, plural: servicemonitors, listKind: ServiceMonitorList, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: PodMonitor, plural: podmonitors, listKind: PodMonitorList, singular: podmonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

fn install_monitoring_crds(cp: &ControlPlane) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        cp.kubectl_stdin(&["apply", "--server-side", "-f", "-"], MONITORING_CRDS)
            .unwrap_or_else(|e| panic!("monitoring CRDs: {e}"));
        cp.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/podmonitors.monitoring.coreos.com",
        ])
        .unwrap_or_else(|e| panic!("monitoring CRDs: {e}"));
    });
}

#[tokio::test]
async fn every_rendered_object_is_accepted_by_a_server_side_dry_run() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    install_monitoring_crds(cp);
    let ns = TempNs::new(cp, "chart-dry").await;
    let mut cases: Vec<Vec<String>> = vec![vec![]];
    for f in values_files() {
        cases.push(vec!["-f".into(), f.to_string_lossy().into_owned()]);
    }
    for extra in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let yaml = render(cp, "palisade", ns.name(), &extra).unwrap_or_else(|e| panic!("{e}"));
        let out = cp
            .kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "--field-manager=palisade-chart-test",
                    // The install test's release owns the CRDs' labels; ownership is not
                    // what this test checks, validity is.
                    "--force-conflicts",
                    "-f",
                    "-",
                ],
                &yaml,
            )
            .unwrap_or_else(|e| panic!("dry run of the chart with {extra:?}: {e}"));
        let rendered = documents(&yaml).len();
        let accepted = out
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        assert_eq!(accepted, rendered, "{extra:?}: kubectl said:\n{out}");
    }
}

/// Role and ClusterRole rules by `Kind/name`, and bindings as `(roleRef, subjects)`.
fn rbac_of(docs: &[Value]) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let mut roles = BTreeMap::new();
    let mut bindings = BTreeMap::new();
    for doc in docs {
        let (kind, name) = kind_name(doc);
        let key = format!("{kind}/{name}");
        match kind.as_str() {
            "Role" | "ClusterRole" => {
                roles.insert(key, doc["rules"].clone());
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let v = serde_json::json!({"roleRef": doc["roleRef"], "subjects": doc["subjects"]});
                bindings.insert(key, v);
            }
            _ => {}
        }
    }
    (roles, bindings)
}

#[test]
fn the_chart_rbac_is_config_rbac() {
    let cp = ControlPlane::shared();
    let yaml = render(cp, "palisade", "palisade-system", &[]).unwrap_or_else(|e| panic!("{e}"));
    let chart = rbac_of(&documents(&yaml));
    let mut shipped = Vec::new();
    let dir = repo_root().join("config/rbac");
    for entry in std::fs::read_dir(&dir).expect("config/rbac") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("rbac file");
        shipped.extend(documents(&text));
    }
    let config = rbac_of(&shipped);
    assert_eq!(
        chart.0, config.0,
        "the chart's RBAC rules (templates/rbac.yaml), which the e2e suite runs the operator \
         with, differ from config/rbac/*.yaml; change both"
    );
    assert_eq!(
        chart.1, config.1,
        "the chart's bindings differ from config/rbac"
    );
    let sa = documents(&yaml)
        .into_iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "palisade-operator");
}

#[test]
fn the_dashboard_uses_only_metrics_the_code_exports() {
    let path = chart().join("dashboards/palisade.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exported = String::new();
    for file in ["operator/src/metrics.rs", "sidecar/src/metrics.rs"] {
        exported += &std::fs::read_to_string(repo_root().join(file)).expect(file);
    }
    let registered = |prefix: &str, name: &str| {
        exported.contains(&format!("sub_registry_with_prefix(\"{prefix}\")"))
            && exported.contains(&format!("\"{name}\""))
    };
    let panels = dash["panels"].as_array().expect("panels");
    let mut titles = Vec::new();
    let mut metrics = std::collections::BTreeSet::new();
    for p in panels {
        titles.push(p["title"].as_str().unwrap_or_default().to_lowercase());
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("palisade_") {
                    metrics.insert(word.to_owned());
                }
            }
        }
    }
    assert!(!metrics.is_empty());
    for m in &metrics {
        let prefix = if m.starts_with("palisade_sidecar_") {
            "palisade_sidecar"
        } else {
            "palisade_operator"
        };
        let mut name = m.trim_start_matches(prefix).trim_start_matches('_');
        for suffix in ["_total", "_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        assert!(
            registered(prefix, name),
            "dashboard metric {m} is not registered in operator/src/metrics.rs or \
             sidecar/src/metrics.rs"
        );
    }
    for want in ["verdict", "latency", "skew", "detection", "incident"] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no dashboard panel about {want}: {titles:?}"
        );
    }
}

fn can_i(cp: &ControlPlane, sa: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i", "--as", sa];
    all.extend_from_slice(args);
    // `kubectl auth can-i` exits 1 for "no".
    cp.kubectl_ok(&all).is_ok()
}

#[tokio::test]
async fn helm_install_runs_restricted_with_its_rbac_and_uninstall_cleans_up() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "chart-install").await;
    let n = ns.name();
    // Pods of the release namespace must pass the restricted Pod Security Standard.
    cp.kubectl_ok(&[
        "label",
        "namespace",
        n,
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .expect("label namespace");
    let release = "palisade-it";
    // The CRDs exist (installed from crds/ for the other tests): let the release adopt them,
    // as it would on a cluster where they were installed by an earlier release.
    for crd in palisade_crds::all_crds() {
        let crd = format!("crd/{}", crd.metadata.name.unwrap_or_default());
        cp.kubectl_ok(&[
            "label",
            "--overwrite",
            &crd,
            "app.kubernetes.io/managed-by=Helm",
        ])
        .expect("label CRD");
        cp.kubectl_ok(&[
            "annotate",
            "--overwrite",
            &crd,
            &format!("meta.helm.sh/release-name={release}"),
            &format!("meta.helm.sh/release-namespace={n}"),
        ])
        .expect("annotate CRD");
    }
    let chart = chart();
    helm(
        cp,
        &["install", release, chart.to_str().expect("path"), "-n", n],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let status = helm(cp, &["status", release, "-n", n]).expect("helm status");
    assert!(status.contains("STATUS: deployed"), "{status}");
    assert!(
        status.contains("palisade.dev/inject=enabled"),
        "NOTES: {status}"
    );
    let op = format!("{release}-operator");
    // The ReplicaSet creates both pods: the pod template passes `restricted`.
    eventually("2 operator pods admitted under restricted", || async {
        let names = cp
            .kubectl_ok(&[
                "-n",
                n,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/component=operator",
                "-o",
                "name",
            ])
            .map_err(|e| e.to_string())?;
        let count = names.lines().count();
        if count == 2 {
            return Ok(());
        }
        let events = cp
            .kubectl_ok(&["-n", n, "get", "events", "-o", "custom-columns=M:.message"])
            .unwrap_or_default();
        Err(format!("{count} pods; events: {events}"))
    })
    .await;
    let webhook = cp
        .kubectl_ok(&[
            "get",
            "mutatingwebhookconfiguration",
            &format!("{release}-injector"),
            "-o",
            "json",
        ])
        .expect("webhook configuration");
    assert!(!webhook.contains("caBundle"), "Helm must not set caBundle");
    assert!(webhook.contains(&format!("\"namespace\": \"{n}\"")));

    // What the operator's ServiceAccount may and may not do.
    let sa = format!("system:serviceaccount:{n}:{op}");
    let injector = format!("mutatingwebhookconfigurations/{release}-injector");
    let secret = format!("secrets/{release}-webhook-cert");
    for (args, allowed) in [
        (vec!["patch", injector.as_str()], true),
        (vec!["patch", "mutatingwebhookconfigurations/other"], false),
        (vec!["delete", injector.as_str()], false),
        (vec!["-n", n, "get", secret.as_str()], true),
        (vec!["-n", n, "get", "secrets/other"], false),
        (vec!["-n", "default", "create", "secrets"], false),
        (vec!["-n", n, "create", "leases.coordination.k8s.io"], true),
        (
            vec![
                "-n",
                "default",
                "patch",
                "securityactions.palisade.dev",
                "--subresource=status",
            ],
            true,
        ),
        (
            vec!["-n", "default", "patch", "securityactions.palisade.dev"],
            false,
        ),
        (vec!["create", "tokenreviews.authentication.k8s.io"], true),
        (vec!["-n", "default", "get", "pods"], false),
    ] {
        assert_eq!(can_i(cp, &sa, &args), allowed, "can-i {args:?}");
    }

    helm(cp, &["uninstall", release, "-n", n]).unwrap_or_else(|e| panic!("{e}"));
    eventually("the release's objects to be gone", || async {
        let left = cp
            .kubectl_ok(&[
                "-n",
                n,
                "get",
                "deploy,rs,pods,svc,sa,role,rolebinding,pdb",
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
                "-o",
                "name",
            ])
            .map_err(|e| e.to_string())?;
        let cluster = cp
            .kubectl_ok(&[
                "get",
                "clusterrole,clusterrolebinding,mutatingwebhookconfiguration",
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
                "-o",
                "name",
            ])
            .map_err(|e| e.to_string())?;
        let left = format!("{left}{cluster}");
        left.trim().is_empty().then_some(()).ok_or(left)
    })
    .await;
    // crds.keep: the CRDs (and every custom resource) survive the uninstall.
    cp.kubectl_ok(&["get", "crd", "securityactions.palisade.dev"])
        .expect("crds.keep keeps the CRDs");
}

/// The webhooks of the chart's MutatingWebhookConfiguration (namespace, pod, required).
const WEBHOOKS: usize = 3;

#[tokio::test]
async fn reapplying_the_chart_after_the_operator_set_ca_bundle_shows_no_diff() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "chart-gitops").await;
    // Release `palisade`: its webhook configuration is the one the chart's RBAC lets the e2e
    // operator patch. CRDs and RBAC are left out: the install test's release owns the CRDs, and
    // the harness applied this release's RBAC in palisade-system (operator_kubeconfig), which
    // the e2e operator runs with.
    let off = "crds.enabled=false,rbac.create=false";
    let yaml = render(cp, "palisade", ns.name(), &["--set", off]).unwrap_or_else(|e| panic!("{e}"));
    let argo = |verb: &str| {
        cp.kubectl_stdin(
            &[
                verb,
                "--server-side",
                "--field-manager=argocd-controller",
                "-f",
                "-",
            ],
            &yaml,
        )
    };
    argo("apply").unwrap_or_else(|e| panic!("applying the chart: {e}"));
    // The operator runs with the chart's own flags (sidecar defaults, webhook names, collector
    // address), less the listen addresses and Lease the harness sets per test: they parse,
    // validate, and name the webhook configuration it patches.
    let flags = chart_operator_flags(&yaml);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _op = palisade_e2e::Operator::start(cp, "op-chart-gitops", "chart-gitops", &flags);
    let ca_bundle = || {
        cp.kubectl_ok(&[
            "get",
            "mutatingwebhookconfiguration",
            "palisade-injector",
            "-o",
            "jsonpath={.webhooks[*].clientConfig.caBundle}",
        ])
        .map_err(|e| e.to_string())
    };
    eventually("the operator to publish caBundle", || async {
        let b = ca_bundle()?;
        (b.split_whitespace().count() == WEBHOOKS)
            .then_some(())
            .ok_or(format!("caBundle {b:?}"))
    })
    .await;
    // What Argo CD does on every sync: diff, then apply. No drift, and caBundle survives.
    argo("diff").unwrap_or_else(|e| panic!("the chart drifted after the operator ran: {e}"));
    argo("apply").unwrap_or_else(|e| panic!("re-applying the chart: {e}"));
    assert_eq!(
        ca_bundle().expect("caBundle").split_whitespace().count(),
        WEBHOOKS
    );
    let managed = cp
        .kubectl_ok(&[
            "get",
            "mutatingwebhookconfiguration",
            "palisade-injector",
            "-o",
            "jsonpath={range .metadata.managedFields[*]}{.manager}{\"\\n\"}{end}",
        ])
        .expect("managed fields");
    assert!(
        managed.lines().any(|m| m != "argocd-controller"),
        "the operator owns caBundle under its own manager: {managed}"
    );
    let _cleanup = cp.kubectl_ok(&[
        "delete",
        "mutatingwebhookconfiguration",
        "palisade-injector",
    ]);
}

#[test]
fn the_operator_accepts_the_flags_of_the_defaults_and_every_values_file() {
    let cp = ControlPlane::shared();
    let mut cases = vec![("defaults".to_owned(), vec![])];
    for f in values_files() {
        let f = f.to_string_lossy().into_owned();
        cases.push((f.clone(), vec!["-f".to_owned(), f]));
    }
    for (what, extra) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let yaml =
            render(cp, "palisade", "palisade-system", &extra).unwrap_or_else(|e| panic!("{e}"));
        // Flags are validated before the operator connects; with no cluster to reach it then
        // fails with 1. Exit 64 is a flag the chart rendered that the operator refuses.
        let out = Command::new(palisade_e2e::workspace_bin("palisade-operator"))
            .args(chart_operator_flags(&yaml))
            .args(["--admin-addr", "127.0.0.1:0", "--log-format", "plain"])
            .env("KUBECONFIG", "/nonexistent/palisade-chart-test")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("run palisade-operator");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(64),
            "{what}: the operator refuses the chart's flags: {stderr}"
        );
        assert!(
            !out.status.success() && stderr.contains("operator stopped"),
            "{what}: expected a connection failure after validation: {stderr}"
        );
    }
}

/// The operator container's args in the rendered Deployment, without the ones the e2e harness
/// sets itself.
fn chart_operator_flags(yaml: &str) -> Vec<String> {
    let harness = [
        "--admin-addr",
        "--webhook-addr",
        "--collector-listen",
        "--lease-name",
        "--lease-duration",
        "--log-format",
    ];
    let deploy = documents(yaml)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the operator Deployment");
    let args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .filter(|a| !harness.contains(&a.split('=').next().unwrap_or_default()))
        .collect::<Vec<_>>();
    assert!(
        args.iter().any(|a| a.starts_with("--sidecar-image=")),
        "sidecar defaults are passed as flags: {args:?}"
    );
    args
}
