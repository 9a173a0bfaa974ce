//! The pure core of the injector: pod JSON + [`InjectConfig`] → JSON patch operations that
//! add the native sidecar, take over the named port and keep the app's probes working.
//!
//! It works on the raw pod JSON: a typed round-trip through `k8s_openapi` would drop fields
//! this version does not know, and every operation is additive or a precise `replace`, so
//! whatever the user wrote stays as it was.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::{Value, json};

use super::config::{
    API_CA_FILE, API_TOKEN_FILE, BUNDLE_DIR, EscapedSlashes, GEOIP_DIR, INJECT_LABEL,
    INJECTED_ANNOTATION, INJECTED_LABEL, InjectConfig, JWKS_DIR, LABELS_FILE, REPORT_TOKEN_FILE,
    SIDECAR_NAME, TOKEN_AUDIENCE, TOKEN_DIR, TOKEN_SECONDS,
};

/// Name of the sidecar's admin port (probes use it).
pub const ADMIN_PORT_NAME: &str = "palisade-admin";
const TOKEN_VOLUME: &str = "palisade-token";
const BUNDLE_VOLUME: &str = "palisade-bundle";
const GEOIP_VOLUME: &str = "palisade-geoip";
const JWKS_VOLUME: &str = "palisade-jwks";
const PROBE_KINDS: [&str; 3] = ["livenessProbe", "readinessProbe", "startupProbe"];
const HOOK_KINDS: [&str; 2] = ["postStart", "preStop"];
const HANDLERS: [&str; 2] = ["httpGet", "tcpSocket"];

/// Why a pod is admitted without the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The pod says `palisade.dev/inject: disabled`.
    #[error("the pod opted out with {INJECT_LABEL}: disabled")]
    OptedOut,
    /// The sidecar or the injected annotation is already there.
    #[error("the pod already carries the Palisade sidecar")]
    AlreadyInjected,
    /// The pod's namespace is never injected (kube-system, the operator's own).
    #[error("namespace {0} is never injected")]
    ExcludedNamespace(String),
    /// No container port has one of the takeover names.
    #[error(
        "no TCP port named {wanted} (found {found}); name the app's port `{first}` and use \
         targetPort: {first} in the Service (a numeric targetPort cannot be taken over)"
    )]
    NoNamedPort {
        /// The takeover names, joined.
        wanted: String,
        /// The first takeover name (the one the fix suggests).
        first: String,
        /// The ports the pod has, as `container/name:port`.
        found: String,
    },
    /// A container already uses a port the sidecar needs.
    #[error(
        "container {container} already uses port {port}, which the sidecar needs; change the \
         operator's --sidecar-proxy-port/--sidecar-admin-port or the app's port"
    )]
    PortConflict {
        /// The container.
        container: String,
        /// The port.
        port: u64,
    },
    /// The object is not a pod the injector understands.
    #[error("the object is not a pod with spec.containers: {0}")]
    Malformed(&'static str),
}

impl SkipReason {
    /// PascalCase reason: the Event reason suffix and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::OptedOut => "OptedOut",
            Self::AlreadyInjected => "AlreadyInjected",
            Self::ExcludedNamespace(_) => "ExcludedNamespace",
            Self::NoNamedPort { .. } => "NoNamedPort",
            Self::PortConflict { .. } => "PortConflict",
            Self::Malformed(_) => "Malformed",
        }
    }

    /// Whether the pod would run without the sidecar where one is expected: everything but a
    /// namespace that is never injected. In a `required` namespace such a pod is refused.
    pub fn leaves_unprotected(&self) -> bool {
        !matches!(self, Self::ExcludedNamespace(_))
    }

    /// What to change so that a `required` namespace admits the pod.
    pub fn required_fix(&self) -> &'static str {
        match self {
            Self::OptedOut => "remove the pod's palisade.dev/inject=disabled label",
            Self::AlreadyInjected => {
                "only the injector adds the palisade.dev/injected annotation and the \
                 palisade-sidecar container; remove them from the pod template"
            }
            Self::NoNamedPort { .. } | Self::PortConflict { .. } | Self::Malformed(_) => {
                "fix the pod as said, or set the namespace's palisade.dev/inject label to \
                 enabled to admit such pods without the sidecar"
            }
            Self::ExcludedNamespace(_) => "",
        }
    }

    /// Whether the user should hear about it (admission warning and `InjectionSkipped` Event).
    pub fn warrants_warning(&self) -> bool {
        matches!(
            self,
            Self::NoNamedPort { .. } | Self::PortConflict { .. } | Self::Malformed(_)
        )
    }
}

/// Whether pods of `namespace` are never injected, whatever their labels say.
pub fn excluded_namespace(namespace: &str, operator_namespace: &str) -> bool {
    namespace == "kube-system" || namespace == operator_namespace
}

/// The port the sidecar takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Takeover {
    container: usize,
    port: usize,
    name: String,
    number: u64,
    renamed: String,
}

/// Computes the patch that injects the sidecar into `pod`, or why it is left alone.
pub fn mutate(pod: &Value, cfg: &InjectConfig) -> Result<Vec<PatchOperation>, SkipReason> {
    let meta = &pod["metadata"];
    if meta["labels"][INJECT_LABEL].as_str() == Some("disabled") {
        return Err(SkipReason::OptedOut);
    }
    let spec = &pod["spec"];
    let containers = spec["containers"]
        .as_array()
        .ok_or(SkipReason::Malformed("spec.containers is missing"))?;
    let init = spec["initContainers"].as_array();
    if meta["annotations"][INJECTED_ANNOTATION].is_string()
        || containers
            .iter()
            .chain(init.into_iter().flatten())
            .any(is_sidecar)
    {
        return Err(SkipReason::AlreadyInjected);
    }
    check_port_conflicts(containers.iter().chain(init.into_iter().flatten()), cfg)?;
    let t = find_takeover(containers, cfg)?;
    let mut ops = vec![replace(
        &[
            "spec",
            "containers",
            &idx(t.container),
            "ports",
            &idx(t.port),
            "name",
        ],
        json!(t.renamed),
    )];
    ops.extend(probe_rewrites(&containers[t.container], &t));
    ops.extend(volume_ops(spec, cfg));
    let sidecar = sidecar_container(cfg, &t);
    ops.push(match init {
        Some(_) => add(&["spec", "initContainers", "0"], sidecar),
        None => add(&["spec", "initContainers"], json!([sidecar])),
    });
    ops.push(match meta["labels"].as_object() {
        Some(_) => add(&["metadata", "labels", INJECTED_LABEL], json!("true")),
        None => add(&["metadata", "labels"], json!({ INJECTED_LABEL: "true" })),
    });
    ops.push(match meta["annotations"].as_object() {
        Some(_) => add(
            &["metadata", "annotations", INJECTED_ANNOTATION],
            json!(cfg.version),
        ),
        None => add(
            &["metadata", "annotations"],
            json!({ INJECTED_ANNOTATION: cfg.version }),
        ),
    });
    Ok(ops)
}

fn is_sidecar(c: &Value) -> bool {
    c["name"].as_str() == Some(SIDECAR_NAME)
}

fn ports_of(c: &Value) -> impl Iterator<Item = &Value> {
    c["ports"].as_array().into_iter().flatten()
}

fn check_port_conflicts<'a>(
    all: impl Iterator<Item = &'a Value>,
    cfg: &InjectConfig,
) -> Result<(), SkipReason> {
    let ours = [u64::from(cfg.proxy_port), u64::from(cfg.admin_port)];
    for c in all {
        if let Some(port) = ports_of(c)
            .filter_map(|p| p["containerPort"].as_u64())
            .find(|n| ours.contains(n))
        {
            let container = c["name"].as_str().unwrap_or_default().to_owned();
            return Err(SkipReason::PortConflict { container, port });
        }
    }
    Ok(())
}

fn find_takeover(containers: &[Value], cfg: &InjectConfig) -> Result<Takeover, SkipReason> {
    let tcp = |p: &Value| matches!(p["protocol"].as_str(), None | Some("TCP"));
    for wanted in &cfg.takeover_ports {
        for (ci, c) in containers.iter().enumerate() {
            let hit = ports_of(c)
                .enumerate()
                .find(|(_, p)| p["name"].as_str() == Some(wanted.as_str()) && tcp(p));
            if let Some((pi, p)) = hit {
                let taken: Vec<&str> = ports_of(c).filter_map(|p| p["name"].as_str()).collect();
                return Ok(Takeover {
                    container: ci,
                    port: pi,
                    name: wanted.clone(),
                    number: p["containerPort"].as_u64().unwrap_or_default(),
                    renamed: app_port_name(wanted, &taken),
                });
            }
        }
    }
    let found: Vec<String> = containers
        .iter()
        .flat_map(|c| {
            let cname = c["name"].as_str().unwrap_or_default();
            ports_of(c).map(move |p| {
                let n = p["containerPort"].as_u64().unwrap_or_default();
                match p["name"].as_str() {
                    Some(name) => format!("{cname}/{name}:{n}"),
                    None => format!("{cname}/{n} (unnamed)"),
                }
            })
        })
        .collect();
    Err(SkipReason::NoNamedPort {
        wanted: cfg.takeover_ports.join(" or "),
        first: cfg.takeover_ports.first().cloned().unwrap_or_default(),
        found: if found.is_empty() {
            "no ports".to_owned()
        } else {
            found.join(", ")
        },
    })
}

/// The app's new port name: `<name>-app`, within the 15 characters of an IANA service name,
/// and not already used in the container.
pub fn app_port_name(name: &str, taken: &[&str]) -> String {
    let base: String = name.chars().take(11).collect();
    let base = base.trim_end_matches('-');
    let first = format!("{base}-app");
    if !taken.contains(&first.as_str()) {
        return first;
    }
    (2..100)
        .map(|n| {
            format!(
                "{}-app{n}",
                &base[..base.len().min(8)].trim_end_matches('-')
            )
        })
        .find(|c| !taken.contains(&c.as_str()))
        .unwrap_or_else(|| "palisade-app".to_owned())
}

/// Probes and lifecycle hooks of the app that name the taken-over port must now name the
/// app's renamed port: the kubelet resolves a named probe port in the probed container only.
fn probe_rewrites(c: &Value, t: &Takeover) -> Vec<PatchOperation> {
    let ci = idx(t.container);
    let mut ops = vec![];
    let mut visit = |path: Vec<&str>, handler_parent: &Value| {
        for h in HANDLERS {
            if handler_parent[h]["port"].as_str() == Some(t.name.as_str()) {
                let mut p = vec!["spec", "containers", ci.as_str()];
                p.extend(&path);
                p.extend([h, "port"]);
                ops.push(replace(&p, json!(t.renamed)));
            }
        }
    };
    for k in PROBE_KINDS {
        visit(vec![k], &c[k]);
    }
    for k in HOOK_KINDS {
        visit(vec!["lifecycle", k], &c["lifecycle"][k]);
    }
    ops
}

/// The sidecar's own projected volume, mounted in the sidecar only: what the pod's automounted
/// `kube-api-access` volume would give it (an API token, the cluster CA), so that a pod with
/// `automountServiceAccountToken: false` still gets its policy, plus the collector's token
/// and the pod's labels for `targets.workloadSelector`.
fn sidecar_volume() -> Value {
    json!({
        "name": TOKEN_VOLUME,
        "projected": { "sources": [
            { "serviceAccountToken": { "audience": TOKEN_AUDIENCE,
                "expirationSeconds": TOKEN_SECONDS, "path": REPORT_TOKEN_FILE } },
            { "serviceAccountToken": {
                "expirationSeconds": TOKEN_SECONDS, "path": API_TOKEN_FILE } },
            { "configMap": { "name": "kube-root-ca.crt",
                "items": [{ "key": "ca.crt", "path": API_CA_FILE }] } },
            { "downwardAPI": { "items": [
                { "path": LABELS_FILE, "fieldRef": { "fieldPath": "metadata.labels" } }] } }
        ] }
    })
}

fn volume_ops(spec: &Value, cfg: &InjectConfig) -> Vec<PatchOperation> {
    let token = sidecar_volume();
    let bundle = json!({
        "name": BUNDLE_VOLUME,
        "configMap": { "name": cfg.bundle_configmap, "optional": true }
    });
    let mut ours = vec![token, bundle];
    let sources = [
        (GEOIP_VOLUME, cfg.geoip.as_ref().map(|g| &g.source)),
        (JWKS_VOLUME, cfg.jwks.as_ref().map(|j| &j.source)),
    ];
    for (name, source) in sources {
        if let Some(source) = source {
            let mut volume = source.clone();
            volume.insert("name".into(), json!(name));
            ours.push(Value::Object(volume));
        }
    }
    match spec["volumes"].as_array() {
        Some(_) => ours
            .into_iter()
            .map(|v| add(&["spec", "volumes", "-"], v))
            .collect(),
        None => vec![add(&["spec", "volumes"], Value::Array(ours))],
    }
}

/// Environment that tells the sidecar how to identify clients and what to show.
fn identify_env(cfg: &InjectConfig) -> Vec<Value> {
    let mut env: Vec<Value> = cfg
        .identity
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    let db = |file: &str| format!("{GEOIP_DIR}/{file}");
    if let Some(g) = &cfg.geoip {
        for (name, file) in [
            ("PALISADE_GEOIP_DB", &g.country_file),
            ("PALISADE_ASN_DB", &g.asn_file),
        ] {
            if !file.is_empty() {
                env.push(json!({ "name": name, "value": db(file) }));
            }
        }
    }
    if let Some(j) = &cfg.jwks {
        env.push(
            json!({ "name": "PALISADE_JWKS_PATH", "value": format!("{JWKS_DIR}/{}", j.file) }),
        );
    }
    if cfg.debug_headers {
        env.push(json!({ "name": "PALISADE_DEBUG_HEADERS", "value": "true" }));
    }
    env
}

/// Path settings, only where they differ from the sidecar's defaults.
fn path_env(cfg: &InjectConfig) -> Vec<Value> {
    let mut env = vec![];
    if cfg.escaped_slashes != EscapedSlashes::Reject {
        env.push(json!({ "name": "PALISADE_ESCAPED_SLASHES",
            "value": cfg.escaped_slashes.as_str() }));
    }
    if cfg.forward_original_path {
        env.push(json!({ "name": "PALISADE_FORWARD_ORIGINAL_PATH", "value": "true" }));
    }
    env
}

fn sidecar_container(cfg: &InjectConfig, t: &Takeover) -> Value {
    let field = |path: &str| json!({ "fieldRef": { "fieldPath": path } });
    let mut env = vec![
        json!({ "name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace") }),
        json!({ "name": "POD_NAME", "valueFrom": field("metadata.name") }),
        json!({ "name": "PALISADE_LISTEN", "value": format!("0.0.0.0:{}", cfg.proxy_port) }),
        json!({ "name": "PALISADE_ADMIN_LISTEN", "value": format!("0.0.0.0:{}", cfg.admin_port) }),
        json!({ "name": palisade_policy::transport::UPSTREAM_PORT_ENV, "value": t.number.to_string() }),
        json!({ "name": "PALISADE_BUNDLE_CONFIGMAP", "value": cfg.bundle_configmap }),
        json!({ "name": "PALISADE_BUNDLE_PATH", "value": BUNDLE_DIR }),
        json!({ "name": "PALISADE_TRUSTED_HOPS", "value": cfg.trusted_hops.to_string() }),
        json!({ "name": "PALISADE_TOKEN_PATH", "value": format!("{TOKEN_DIR}/{REPORT_TOKEN_FILE}") }),
        json!({ "name": "PALISADE_API_TOKEN_PATH", "value": format!("{TOKEN_DIR}/{API_TOKEN_FILE}") }),
        json!({ "name": "PALISADE_API_CA_PATH", "value": format!("{TOKEN_DIR}/{API_CA_FILE}") }),
        json!({ "name": "PALISADE_POD_LABELS_FILE", "value": format!("{TOKEN_DIR}/{LABELS_FILE}") }),
    ];
    if let Some(keys) = &cfg.bundle_keys {
        env.push(json!({ "name": palisade_policy::transport::BUNDLE_KEYS_ENV, "value": keys }));
    }
    if cfg.fail_closed {
        env.push(json!({ "name": "PALISADE_FAIL_CLOSED", "value": "true" }));
    }
    env.push(json!({ "name": "PALISADE_POLICY_GRACE",
        "value": format!("{}ms", cfg.policy_grace.as_millis()) }));
    if cfg.ready_without_policy {
        env.push(json!({ "name": "PALISADE_READY_WITHOUT_POLICY", "value": "true" }));
    }
    if !cfg.collector_addr.is_empty() {
        env.push(json!({ "name": "PALISADE_COLLECTOR_ADDR", "value": cfg.collector_addr }));
        if let Some(ca) = &cfg.collector_ca {
            env.push(json!({ "name": "PALISADE_COLLECTOR_CA", "value": ca }));
        }
    }
    env.extend(identify_env(cfg));
    env.extend(path_env(cfg));
    let mut mounts = vec![
        json!({ "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true }),
        json!({ "name": BUNDLE_VOLUME, "mountPath": BUNDLE_DIR, "readOnly": true }),
    ];
    if cfg.geoip.is_some() {
        mounts.push(json!({ "name": GEOIP_VOLUME, "mountPath": GEOIP_DIR, "readOnly": true }));
    }
    if cfg.jwks.is_some() {
        mounts.push(json!({ "name": JWKS_VOLUME, "mountPath": JWKS_DIR, "readOnly": true }));
    }
    let map = |pairs: &[(String, String)]| -> serde_json::Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
    };
    let probe = |path: &str, period: u32| {
        json!({ "httpGet": { "path": path, "port": ADMIN_PORT_NAME },
                "periodSeconds": period, "failureThreshold": 3 })
    };
    json!({
        "name": SIDECAR_NAME,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy.as_str(),
        "restartPolicy": "Always",
        "ports": [
            { "name": t.name, "containerPort": cfg.proxy_port, "protocol": "TCP" },
            { "name": ADMIN_PORT_NAME, "containerPort": cfg.admin_port, "protocol": "TCP" }
        ],
        "env": env,
        "resources": { "requests": map(&cfg.requests), "limits": map(&cfg.limits) },
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "privileged": false, "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" }
        },
        "readinessProbe": probe("/ready", 5),
        "livenessProbe": probe("/live", 10),
        "volumeMounts": mounts
    })
}

fn idx(i: usize) -> String {
    i.to_string()
}

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: ptr(path),
        value,
    })
}

fn replace(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: ptr(path),
        value,
    })
}

#[cfg(test)]
mod tests;
