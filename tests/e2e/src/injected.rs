//! Runs the sidecar container of an injected Pod as a process wired exactly as the stored
//! pod spec says, as the kubelet would run it: the container's environment (`fieldRef`s
//! resolved from the Pod), its volumes written under a directory of the test as the kubelet
//! writes them (projected service-account tokens from the TokenRequest API, bound to the
//! Pod; ConfigMaps; downward-API labels), mount paths in the environment rewritten to that
//! directory, and `KUBERNETES_SERVICE_HOST`/`_PORT` as the kubelet sets them. Nothing else:
//! no kubeconfig and no automounted token, so what the injector leaves out, the process
//! lacks. Only the listen addresses and the app's port move to loopback ports of the test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::{ControlPlane, Sidecar, process, workspace_bin};

/// How the test runs an injected sidecar.
#[derive(Debug, Clone, Default)]
pub struct Wiring {
    /// The app's port on 127.0.0.1 (replaces `PALISADE_UPSTREAM_PORT`).
    pub upstream: u16,
    /// The collector's address; `None` drops the collector settings (the Service name in the
    /// pod spec does not resolve here).
    pub collector: Option<String>,
    /// Point `KUBERNETES_SERVICE_PORT` at a closed port: the API is away, only the mounted
    /// bundle can serve.
    pub api_away: bool,
    /// Point `KUBERNETES_SERVICE_PORT` at this port of 127.0.0.1 (a [`crate::outage::Link`]
    /// to the API server) instead of the API server's.
    pub api_port: Option<u16>,
}

impl Sidecar {
    /// Runs the `palisade-sidecar` container of `pod` (as stored by the API server, after
    /// the injector) in front of the app on `wiring.upstream`.
    pub async fn from_pod(cp: &'static ControlPlane, pod: &Pod, wiring: &Wiring) -> Self {
        let pod = serde_json::to_value(pod).expect("pod JSON");
        let ns = pod["metadata"]["namespace"].as_str().expect("namespace");
        let name = pod["metadata"]["name"].as_str().expect("name");
        let container = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "palisade-sidecar")
            .unwrap_or_else(|| panic!("pod {ns}/{name} carries no sidecar"))
            .clone();
        let dir = std::env::temp_dir().join(format!(
            "palisade-e2e-pod-{}-{ns}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pod dir");
        let client = cp.client().await;
        let mut mounts = Vec::new();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let vol_name = m["name"].as_str().expect("mount name");
            let volume = pod["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == vol_name)
                .unwrap_or_else(|| panic!("volume {vol_name} is mounted but not declared"));
            let target = dir.join(vol_name);
            std::fs::create_dir_all(&target).expect("volume dir");
            write_volume(&client, &pod, volume, &target).await;
            let path = m["mountPath"].as_str().expect("mountPath").to_owned();
            mounts.push((path, target));
        }
        let env = environment(&pod, &container, &mounts, wiring, cp);
        spawn(cp, ns, name, env)
    }
}

/// The container's environment, resolved and moved to this machine.
fn environment(
    pod: &Value,
    container: &Value,
    mounts: &[(String, PathBuf)],
    wiring: &Wiring,
    cp: &ControlPlane,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_owned();
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(path)) => field(pod, path),
            // The API server stores `value: ""` as no value at all.
            (Value::Null, Value::Null) if e["valueFrom"].is_null() => String::new(),
            _ => panic!("env {name}: only value and fieldRef are wired"),
        };
        let value = mounts
            .iter()
            .find_map(|(mount, dir)| {
                value
                    .strip_prefix(mount.as_str())
                    .map(|rest| format!("{}{rest}", dir.display()))
            })
            .unwrap_or(value);
        env.insert(name, value);
    }
    let loopback = || format!("127.0.0.1:{}", process::free_port().expect("port"));
    env.insert("PALISADE_LISTEN".into(), loopback());
    env.insert("PALISADE_ADMIN_LISTEN".into(), loopback());
    env.insert("PALISADE_UPSTREAM_PORT".into(), wiring.upstream.to_string());
    match &wiring.collector {
        Some(c) => {
            env.insert("PALISADE_COLLECTOR_ADDR".into(), c.clone());
            env.remove("PALISADE_COLLECTOR_CA");
        }
        None => {
            env.remove("PALISADE_COLLECTOR_ADDR");
            env.remove("PALISADE_COLLECTOR_CA");
        }
    }
    let (host, port) = api_server(cp);
    let port = if wiring.api_away {
        process::free_port().expect("port")
    } else {
        wiring.api_port.unwrap_or(port)
    };
    env.insert("KUBERNETES_SERVICE_HOST".into(), host);
    env.insert("KUBERNETES_SERVICE_PORT".into(), port.to_string());
    env.insert("RUST_LOG".into(), "info".into());
    env.insert("PALISADE_LOG_FORMAT".into(), "plain".into());
    env
}

fn cluster(cp: &ControlPlane) -> serde_yaml::Value {
    let text = std::fs::read_to_string(cp.kubeconfig()).expect("kubeconfig");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    doc["clusters"][0]["cluster"].clone()
}

/// The API server's CA (PEM), from the admin kubeconfig.
pub(crate) fn api_ca(cp: &ControlPlane) -> Vec<u8> {
    use base64::Engine as _;
    let c = cluster(cp);
    match (
        c["certificate-authority-data"].as_str(),
        c["certificate-authority"].as_str(),
    ) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("certificate-authority-data"),
        (None, Some(file)) => std::fs::read(file).expect("certificate-authority"),
        (None, None) => panic!("the kubeconfig names no CA"),
    }
}

/// Host and port of the API server, from the admin kubeconfig.
pub fn api_server(cp: &ControlPlane) -> (String, u16) {
    let cluster = cluster(cp);
    let server = cluster["server"].as_str().expect("server");
    let authority = server.trim_start_matches("https://").trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "443"));
    (
        host.trim_matches(['[', ']']).to_owned(),
        port.parse().expect("port"),
    )
}

/// A `fieldRef` of the Pod.
fn field(pod: &Value, path: &str) -> String {
    let meta = &pod["metadata"];
    match path {
        "metadata.name" | "metadata.namespace" | "metadata.uid" => meta
            [path.trim_start_matches("metadata.")]
        .as_str()
        .unwrap_or_default()
        .to_owned(),
        "metadata.labels" | "metadata.annotations" => {
            // The kubelet's format: sorted `key="value"` lines.
            let map = meta[path.trim_start_matches("metadata.")]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let sorted: BTreeMap<String, Value> = map.into_iter().collect();
            sorted
                .iter()
                .map(|(k, v)| format!("{k}={}\n", Value::String(v.as_str().unwrap_or("").into())))
                .collect()
        }
        other => panic!("fieldRef {other} is not wired"),
    }
}

/// Writes `volume` into `dir` as the kubelet would.
async fn write_volume(client: &kube::Client, pod: &Value, volume: &Value, dir: &Path) {
    let ns = pod["metadata"]["namespace"].as_str().expect("namespace");
    if let Some(sources) = volume["projected"]["sources"].as_array() {
        for s in sources {
            if s["serviceAccountToken"].is_object() {
                let t = &s["serviceAccountToken"];
                let token = request_token(client, pod, t).await;
                write(dir, t["path"].as_str().expect("path"), token.as_bytes());
            } else if s["configMap"].is_object() {
                write_config_map(client, ns, &s["configMap"], dir).await;
            } else if let Some(items) = s["downwardAPI"]["items"].as_array() {
                for i in items {
                    let path = i["fieldRef"]["fieldPath"].as_str().expect("fieldPath");
                    write(
                        dir,
                        i["path"].as_str().expect("path"),
                        field(pod, path).as_bytes(),
                    );
                }
            } else {
                panic!("projected source {s} is not wired");
            }
        }
    } else if volume["configMap"].is_object() {
        write_config_map(client, ns, &volume["configMap"], dir).await;
    }
    // Other volume kinds (the GeoIP database…) stay empty.
}

/// A ConfigMap volume or projected source: its `items`, or every key of `data` and
/// `binaryData`. An optional ConfigMap that does not exist leaves the directory empty.
async fn write_config_map(client: &kube::Client, ns: &str, source: &Value, dir: &Path) {
    let name = source["name"].as_str().expect("configMap name");
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let cm = if source["optional"] == true {
        api.get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("read ConfigMap {ns}/{name}: {e}"))
    } else {
        // The kubelet waits for a required ConfigMap (kube-root-ca.crt is published by
        // kube-controller-manager shortly after the namespace is created).
        let what = format!("ConfigMap {ns}/{name}");
        Some(
            crate::eventually(&what, || async {
                api.get(name).await.map_err(|e| e.to_string())
            })
            .await,
        )
    };
    let Some(cm) = cm else {
        return;
    };
    let mut keys: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.unwrap_or_default() {
        keys.insert(k, v.into_bytes());
    }
    for (k, v) in cm.binary_data.unwrap_or_default() {
        keys.insert(k, v.0);
    }
    match source["items"].as_array() {
        Some(items) => {
            for i in items {
                let key = i["key"].as_str().expect("key");
                let bytes = keys
                    .get(key)
                    .unwrap_or_else(|| panic!("ConfigMap {ns}/{name} has no key {key}"));
                write(dir, i["path"].as_str().expect("path"), bytes);
            }
        }
        None => keys.iter().for_each(|(k, v)| write(dir, k, v)),
    }
}

/// A token for the Pod's ServiceAccount, bound to the Pod, as the kubelet requests it for a
/// projected `serviceAccountToken` (no audience: the API server's own).
async fn request_token(client: &kube::Client, pod: &Value, source: &Value) -> String {
    let meta = &pod["metadata"];
    let ns = meta["namespace"].as_str().expect("namespace");
    let sa = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let mut spec = json!({
        "expirationSeconds": source["expirationSeconds"].as_i64().unwrap_or(3600),
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
            "name": meta["name"], "uid": meta["uid"]},
    });
    if let Some(audience) = source["audience"].as_str() {
        spec["audiences"] = json!([audience]);
    }
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": spec});
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let resp: TokenRequest = crate::eventually(&format!("a token for {ns}/{sa}"), || async {
        api.create_subresource("token", sa, &PostParams::default(), &body)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    resp.status.and_then(|s| s.token).expect("a token")
}

fn write(dir: &Path, path: &str, bytes: &[u8]) {
    let file = dir.join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).expect("dir");
    }
    std::fs::write(&file, bytes).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
}

fn spawn(cp: &ControlPlane, ns: &str, pod: &str, env: BTreeMap<String, String>) -> Sidecar {
    let addr: SocketAddr = env["PALISADE_LISTEN"].parse().expect("listen");
    let admin: SocketAddr = env["PALISADE_ADMIN_LISTEN"].parse().expect("admin");
    let logs = cp
        .logs()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let _ = std::fs::create_dir_all(&logs);
    let log = logs.join(format!("sidecar-{ns}-{pod}.log"));
    let out = std::fs::File::create(&log).expect("sidecar log");
    let err = out.try_clone().expect("sidecar log");
    let child = Command::new(workspace_bin("palisade-sidecar"))
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start palisade-sidecar");
    Sidecar {
        child,
        addr,
        admin,
        log,
    }
}
