//! Golden files: `testdata/<case>.pod.json` → `testdata/<case>.patch.json` (the operations,
//! or `{"skip": "<Reason>"}`). `UPDATE_GOLDEN=1 cargo test -p palisade-operator` rewrites
//! them; review the diff. Property tests below apply the patch and check the result.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::injector::config::{EscapedSlashes, Jwks, PullPolicy};

const CASES: [&str; 10] = [
    "plain",
    "no-automount",
    "init-containers",
    "probes",
    "numeric-port",
    "already-injected",
    "opted-out",
    "multi",
    "udp-only",
    "port-conflict",
];

/// Golden cases with every optional sidecar setting on ([`full_cfg`]): `(golden, pod)`.
const FULL_CASES: [(&str, &str); 2] = [
    ("full-settings", "plain"),
    ("full-settings-volumes", "init-containers"),
];

fn cfg() -> InjectConfig {
    InjectConfig {
        image: "ghcr.io/palisade-dev/palisade-sidecar:test".into(),
        image_pull_policy: PullPolicy::IfNotPresent,
        version: "0.1.0".into(),
        requests: vec![
            ("cpu".into(), "50m".into()),
            ("memory".into(), "64Mi".into()),
        ],
        limits: vec![("memory".into(), "256Mi".into())],
        proxy_port: 15080,
        admin_port: 15081,
        takeover_ports: vec!["grpc".into(), "http".into()],
        trusted_hops: 1,
        fail_closed: false,
        ready_without_policy: false,
        policy_grace: std::time::Duration::from_secs(30),
        bundle_configmap: "palisade-bundle".into(),
        collector_addr: "https://palisade-collector.palisade-system.svc:9444".into(),
        collector_ca: None,
        bundle_keys: None,
        debug_headers: false,
        identity: vec![
            ("PALISADE_API_KEY_HEADER".into(), "x-api-key".into()),
            ("PALISADE_DEVELOPER_CLAIM".into(), String::new()),
        ],
        jwks: None,
        escaped_slashes: EscapedSlashes::Reject,
        forward_original_path: false,
        geoip: None,
    }
}

/// GeoIP volume (a ConfigMap), JWKS volume (a Secret), JWT claims, custom headers, path
/// settings and debug headers.
fn full_cfg() -> InjectConfig {
    let source = json!({"configMap": {"name": "geoip", "optional": true}});
    let jwks = json!({"secret": {"secretName": "jwks"}});
    InjectConfig {
        image_pull_policy: PullPolicy::Never,
        debug_headers: true,
        identity: vec![
            ("PALISADE_API_KEY_HEADER".into(), "x-client-key".into()),
            ("PALISADE_API_KEY_QUERY".into(), String::new()),
            ("PALISADE_DEVELOPER_CLAIM".into(), "sub".into()),
            ("PALISADE_APP_CLAIM".into(), "azp".into()),
            ("PALISADE_JWT_ISSUER".into(), "https://idp.example".into()),
        ],
        jwks: Some(Jwks {
            source: jwks.as_object().expect("object").clone(),
            file: "keys/jwks.json".into(),
        }),
        escaped_slashes: EscapedSlashes::Unescape,
        forward_original_path: true,
        geoip: Some(crate::injector::config::GeoIp {
            source: source.as_object().expect("object").clone(),
            country_file: "GeoIP2-City.mmdb".into(),
            asn_file: String::new(),
        }),
        ..cfg()
    }
}

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/injector/testdata")
        .join(name)
}

fn pod(case: &str) -> Value {
    let text = std::fs::read_to_string(testdata(&format!("{case}.pod.json"))).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn outcome(case: &str, cfg: &InjectConfig) -> Value {
    match mutate(&pod(case), cfg) {
        Ok(ops) => serde_json::to_value(ops).expect("ops serialize"),
        Err(skip) => json!({ "skip": skip.reason() }),
    }
}

fn applied(case: &str) -> Value {
    let mut doc = pod(case);
    let ops = mutate(&doc, &cfg()).expect("injected");
    json_patch::patch(&mut doc, &ops).expect("the patch applies");
    doc
}

#[test]
fn golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let plain = CASES.iter().map(|c| (*c, *c, cfg()));
    let full = FULL_CASES.iter().map(|(g, p)| (*g, *p, full_cfg()));
    for (case, pod, cfg) in plain.chain(full) {
        let got = outcome(pod, &cfg);
        let path = testdata(&format!("{case}.patch.json"));
        if update {
            let text = serde_json::to_string_pretty(&got).expect("json") + "\n";
            std::fs::write(&path, text).expect("write golden");
            continue;
        }
        let want: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| panic!("{} missing; run UPDATE_GOLDEN=1", path.display()));
        assert_eq!(got, want, "{case}: patch differs from {}", path.display());
    }
}

#[test]
fn native_sidecar_first_with_restricted_security_context() {
    let doc = applied("init-containers");
    let init = doc["spec"]["initContainers"]
        .as_array()
        .expect("init containers");
    assert_eq!(init.len(), 2);
    let s = &init[0];
    assert_eq!(s["name"], SIDECAR_NAME);
    assert_eq!(s["restartPolicy"], "Always");
    assert_eq!(
        init[1]["name"], "migrate",
        "existing init containers keep their order"
    );
    let sc = &s["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(s["readinessProbe"]["httpGet"]["port"], ADMIN_PORT_NAME);
    assert_eq!(s["livenessProbe"]["httpGet"]["port"], ADMIN_PORT_NAME);
    assert_eq!(doc["metadata"]["annotations"]["team"], "payments");
    assert_eq!(doc["metadata"]["annotations"][INJECTED_ANNOTATION], "0.1.0");
    let vols: Vec<&str> = doc["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vols, ["data", "palisade-token", "palisade-bundle"]);
}

#[test]
fn port_takeover_renames_the_app_port_and_forwards_to_it() {
    let doc = applied("plain");
    let app = &doc["spec"]["containers"][0];
    assert_eq!(
        app["ports"][0],
        json!({"name": "http-app", "containerPort": 8080})
    );
    let s = &doc["spec"]["initContainers"][0];
    assert_eq!(s["ports"][0]["name"], "http");
    assert_eq!(s["ports"][0]["containerPort"], 15080);
    let env = |name: &str| {
        s["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(env("PALISADE_UPSTREAM_PORT")["value"], "8080");
    assert_eq!(env("PALISADE_LISTEN")["value"], "0.0.0.0:15080");
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env("PALISADE_BUNDLE_CONFIGMAP")["value"], "palisade-bundle");
    assert!(env("PALISADE_COLLECTOR_ADDR")["value"].is_string());
    assert_eq!(
        env("PALISADE_FAIL_CLOSED"),
        Value::Null,
        "fail open by default"
    );
    let token = &doc["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], TOKEN_AUDIENCE);
}

/// The sidecar's own projected volume holds what it needs to read its policy without the
/// pod's automounted token (an API token, the cluster CA) and the pod's labels; it is
/// mounted in the sidecar only, and the environment names the files inside the mount.
#[test]
fn the_sidecar_gets_its_own_api_token_ca_and_the_pod_labels() {
    let doc = applied("no-automount");
    assert_eq!(
        doc["spec"]["automountServiceAccountToken"], false,
        "the pod's own choice is untouched"
    );
    assert_eq!(
        doc["metadata"]["labels"],
        json!({"app.kubernetes.io/name": "api", "tier": "public", INJECTED_LABEL: "true"}),
        "the pod's labels stay; the injected label is added"
    );
    assert_eq!(
        applied("multi")["metadata"]["labels"],
        json!({ INJECTED_LABEL: "true" }),
        "a pod without labels gets the map"
    );
    let volume = doc["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == TOKEN_VOLUME)
        .cloned()
        .expect("the sidecar's volume");
    let sources = volume["projected"]["sources"].as_array().expect("sources");
    let file_of = |pred: &dyn Fn(&Value) -> bool| -> Vec<String> {
        sources
            .iter()
            .filter(|s| pred(s))
            .flat_map(|s| {
                let one = s["serviceAccountToken"]["path"].as_str().map(str::to_owned);
                let items = ["configMap", "downwardAPI"]
                    .iter()
                    .flat_map(|k| s[*k]["items"].as_array().cloned().unwrap_or_default())
                    .filter_map(|i| i["path"].as_str().map(str::to_owned));
                one.into_iter().chain(items).collect::<Vec<_>>()
            })
            .collect()
    };
    let api_audience = |s: &Value| {
        s["serviceAccountToken"].is_object() && s["serviceAccountToken"]["audience"].is_null()
    };
    assert_eq!(
        file_of(&api_audience),
        [API_TOKEN_FILE],
        "API server audience"
    );
    let collector = |s: &Value| s["serviceAccountToken"]["audience"] == TOKEN_AUDIENCE;
    assert_eq!(file_of(&collector), [REPORT_TOKEN_FILE]);
    let ca = |s: &Value| s["configMap"]["name"] == "kube-root-ca.crt";
    assert_eq!(file_of(&ca), [API_CA_FILE]);
    let labels =
        |s: &Value| s["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.labels";
    assert_eq!(file_of(&labels), [LABELS_FILE]);

    let s = &doc["spec"]["initContainers"][0];
    let mount = s["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == TOKEN_VOLUME)
        .cloned()
        .expect("mounted in the sidecar");
    let dir = mount["mountPath"].as_str().expect("path");
    assert_eq!(mount["readOnly"], true);
    let env = |name: &str| {
        s["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned)
    };
    for (var, file) in [
        ("PALISADE_API_TOKEN_PATH", API_TOKEN_FILE),
        ("PALISADE_API_CA_PATH", API_CA_FILE),
        ("PALISADE_POD_LABELS_FILE", LABELS_FILE),
        ("PALISADE_TOKEN_PATH", REPORT_TOKEN_FILE),
    ] {
        assert_eq!(env(var), Some(format!("{dir}/{file}")), "{var}");
    }
    assert_eq!(
        env("PALISADE_READY_WITHOUT_POLICY"),
        None,
        "honest by default"
    );
    assert_eq!(
        env("PALISADE_POLICY_GRACE").as_deref(),
        Some("30000ms"),
        "the sidecar's grace is the one the policy controller waits for"
    );
    let app = &doc["spec"]["containers"][0];
    assert!(
        app["volumeMounts"].is_null(),
        "the app container sees none of it: {app}"
    );
}

#[test]
fn ready_without_policy_is_passed_only_when_asked() {
    let mut c = cfg();
    c.ready_without_policy = true;
    let mut doc = pod("plain");
    let ops = mutate(&doc, &c).expect("injected");
    json_patch::patch(&mut doc, &ops).expect("applies");
    let env = doc["spec"]["initContainers"][0]["env"].as_array().cloned();
    assert!(
        env.expect("env")
            .contains(&json!({"name": "PALISADE_READY_WITHOUT_POLICY", "value": "true"}))
    );
}

#[test]
fn probes_on_the_named_port_follow_the_app() {
    let doc = applied("probes");
    let app = &doc["spec"]["containers"][0];
    assert_eq!(app["livenessProbe"]["httpGet"]["port"], "http-app");
    assert_eq!(app["readinessProbe"]["tcpSocket"]["port"], "http-app");
    assert_eq!(
        app["startupProbe"]["httpGet"]["port"], 8080,
        "numeric probes are untouched"
    );
    assert_eq!(app["lifecycle"]["preStop"]["httpGet"]["port"], "http-app");
    assert_eq!(
        app["ports"][1]["name"], "metrics",
        "other ports are untouched"
    );
}

#[test]
fn takes_the_first_wanted_name_in_any_container_and_avoids_name_clashes() {
    let doc = applied("multi");
    let api = &doc["spec"]["containers"][1];
    assert_eq!(api["ports"][1]["name"], "http-app2", "http-app was taken");
    assert_eq!(api["readinessProbe"]["httpGet"]["port"], "http-app2");
    assert_eq!(doc["spec"]["containers"][0]["ports"][0]["name"], "metrics");
    let s = &doc["spec"]["initContainers"][0];
    assert_eq!(s["ports"][0]["name"], "http");
}

#[test]
fn skips_say_why_and_what_to_do() {
    let skip = |case: &str| mutate(&pod(case), &cfg()).expect_err("skipped");
    let numeric = skip("numeric-port");
    assert!(numeric.warrants_warning());
    let msg = numeric.to_string();
    assert!(msg.contains("targetPort"), "{msg}");
    assert!(msg.contains("web/8080 (unnamed)"), "{msg}");
    assert_eq!(skip("udp-only").reason(), "NoNamedPort");
    assert_eq!(skip("opted-out"), SkipReason::OptedOut);
    assert!(!skip("opted-out").warrants_warning());
    assert_eq!(skip("already-injected"), SkipReason::AlreadyInjected);
    assert!(matches!(
        skip("port-conflict"),
        SkipReason::PortConflict { port: 15080, .. }
    ));
    let malformed = mutate(&json!({"metadata": {}}), &cfg()).expect_err("malformed");
    assert_eq!(malformed.reason(), "Malformed");
}

#[test]
fn injecting_twice_is_a_no_op() {
    let doc = applied("probes");
    assert_eq!(mutate(&doc, &cfg()), Err(SkipReason::AlreadyInjected));
}

#[test]
fn the_operators_bundle_keys_reach_the_sidecar_env() {
    let mut c = cfg();
    c.bundle_keys = Some("a2V5MQ==,a2V5Mg==".into());
    let ops = mutate(&pod("plain"), &c).expect("injected");
    let mut doc = pod("plain");
    json_patch::patch(&mut doc, &ops).expect("applies");
    let env = doc["spec"]["initContainers"][0]["env"].clone();
    let keys = env
        .as_array()
        .expect("env list")
        .iter()
        .find(|e| e["name"] == "PALISADE_BUNDLE_KEYS")
        .expect("PALISADE_BUNDLE_KEYS");
    assert_eq!(keys["value"].as_str(), c.bundle_keys.as_deref());
}

#[test]
fn a_collector_ca_reaches_the_sidecar_env_only_with_a_collector() {
    let env = |c: &InjectConfig| {
        let ops = mutate(&pod("plain"), c).expect("injected");
        let mut doc = pod("plain");
        json_patch::patch(&mut doc, &ops).expect("applies");
        doc["spec"]["initContainers"][0]["env"].clone()
    };
    let mut c = cfg();
    c.collector_ca = Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into());
    let with = env(&c);
    let ca = with
        .as_array()
        .expect("env list")
        .iter()
        .find(|e| e["name"] == "PALISADE_COLLECTOR_CA")
        .expect("PALISADE_COLLECTOR_CA");
    assert_eq!(ca["value"].as_str(), c.collector_ca.as_deref());
    c.collector_addr.clear();
    assert!(!env(&c).to_string().contains("PALISADE_COLLECTOR_CA"));
}

#[test]
fn fail_closed_and_no_collector_change_the_env() {
    let mut c = cfg();
    c.fail_closed = true;
    c.collector_addr.clear();
    c.limits.clear();
    let ops = mutate(&pod("plain"), &c).expect("injected");
    let mut doc = pod("plain");
    json_patch::patch(&mut doc, &ops).expect("applies");
    let env = doc["spec"]["initContainers"][0]["env"].to_string();
    assert!(env.contains("PALISADE_FAIL_CLOSED"));
    assert!(!env.contains("PALISADE_COLLECTOR_ADDR"));
    assert_eq!(
        doc["spec"]["initContainers"][0]["resources"]["limits"],
        json!({})
    );
}

#[test]
fn geoip_is_mounted_read_only_and_named_to_the_sidecar() {
    let mut doc = pod("init-containers");
    let ops = mutate(&doc, &full_cfg()).expect("injected");
    json_patch::patch(&mut doc, &ops).expect("applies");
    let vol = doc["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "palisade-geoip")
        .cloned()
        .expect("the GeoIP volume");
    assert_eq!(
        vol,
        json!({"name": "palisade-geoip", "configMap": {"name": "geoip", "optional": true}})
    );
    let s = &doc["spec"]["initContainers"][0];
    let mount = s["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "palisade-geoip")
        .cloned()
        .expect("the GeoIP mount");
    assert_eq!(mount["mountPath"], GEOIP_DIR);
    assert_eq!(mount["readOnly"], true);
    let env = s["env"].as_array().expect("env");
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        value("PALISADE_GEOIP_DB"),
        Some(json!("/etc/palisade/geoip/GeoIP2-City.mmdb"))
    );
    assert_eq!(
        value("PALISADE_ASN_DB"),
        None,
        "an empty file name is left out"
    );
    assert_eq!(value("PALISADE_DEBUG_HEADERS"), Some(json!("true")));
    assert_eq!(value("PALISADE_DEVELOPER_CLAIM"), Some(json!("sub")));
    assert_eq!(
        value("PALISADE_API_KEY_QUERY"),
        Some(json!("")),
        "empty turns it off"
    );
}

#[test]
fn jwks_is_mounted_read_only_in_the_sidecar_only_and_named_to_it() {
    let mut doc = pod("init-containers");
    let ops = mutate(&doc, &full_cfg()).expect("injected");
    json_patch::patch(&mut doc, &ops).expect("applies");
    let vol = doc["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "palisade-jwks")
        .cloned()
        .expect("the JWKS volume");
    assert_eq!(
        vol,
        json!({"name": "palisade-jwks", "secret": {"secretName": "jwks"}})
    );
    let s = &doc["spec"]["initContainers"][0];
    assert_eq!(s["name"], SIDECAR_NAME);
    let mount = s["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "palisade-jwks")
        .cloned()
        .expect("the JWKS mount");
    assert_eq!(
        mount,
        json!({"name": "palisade-jwks", "mountPath": JWKS_DIR, "readOnly": true})
    );
    let env = s["env"].as_array().expect("env");
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        value("PALISADE_JWKS_PATH"),
        Some(json!("/etc/palisade/jwks/keys/jwks.json"))
    );
    assert_eq!(
        value("PALISADE_JWT_ISSUER"),
        Some(json!("https://idp.example"))
    );
    // The key set is the sidecar's business: no app container sees it.
    let others = doc["spec"]["initContainers"]
        .as_array()
        .expect("init")
        .iter()
        .skip(1)
        .chain(doc["spec"]["containers"].as_array().expect("containers"));
    for c in others {
        assert!(!c.to_string().contains("palisade-jwks"), "{c}");
    }
}

#[test]
fn path_settings_reach_the_sidecar_env_only_when_not_the_default() {
    let env_of = |cfg: &InjectConfig| {
        let mut doc = pod("plain");
        let ops = mutate(&doc, cfg).expect("injected");
        json_patch::patch(&mut doc, &ops).expect("applies");
        doc["spec"]["initContainers"][0]["env"].clone()
    };
    let value = |env: &Value, name: &str| {
        env.as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    let full = env_of(&full_cfg());
    assert_eq!(
        value(&full, "PALISADE_ESCAPED_SLASHES"),
        Some(json!("unescape"))
    );
    assert_eq!(
        value(&full, "PALISADE_FORWARD_ORIGINAL_PATH"),
        Some(json!("true"))
    );
    let keep = env_of(&InjectConfig {
        escaped_slashes: EscapedSlashes::Keep,
        ..cfg()
    });
    assert_eq!(
        value(&keep, "PALISADE_ESCAPED_SLASHES"),
        Some(json!("keep"))
    );
    assert_eq!(value(&keep, "PALISADE_FORWARD_ORIGINAL_PATH"), None);
    let plain = env_of(&cfg());
    assert_eq!(value(&plain, "PALISADE_ESCAPED_SLASHES"), None);
    assert_eq!(value(&plain, "PALISADE_FORWARD_ORIGINAL_PATH"), None);
}

#[test]
fn without_geoip_or_debug_nothing_extra_is_added() {
    let doc = applied("plain");
    let s = &doc["spec"]["initContainers"][0];
    let text = s.to_string();
    for absent in [
        "palisade-geoip",
        "palisade-jwks",
        "PALISADE_JWKS_PATH",
        "PALISADE_GEOIP_DB",
        "PALISADE_ASN_DB",
        "PALISADE_DEBUG_HEADERS",
    ] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
    assert_eq!(s["volumeMounts"].as_array().map(Vec::len), Some(2));
}

#[test]
fn app_port_names_are_valid_service_names() {
    assert_eq!(app_port_name("http", &[]), "http-app");
    assert_eq!(app_port_name("http-metrics-x", &[]), "http-metric-app");
    assert_eq!(app_port_name("abcdefghij-klm", &[]), "abcdefghij-app");
    assert_eq!(app_port_name("http", &["http-app"]), "http-app2");
    for n in ["http", "http-metrics-x", "abcdefghijklmno"] {
        assert!(app_port_name(n, &[]).len() <= 15);
    }
}

#[test]
fn kube_system_and_the_operator_namespace_are_excluded() {
    assert!(excluded_namespace("kube-system", "palisade-system"));
    assert!(excluded_namespace("palisade-system", "palisade-system"));
    assert!(!excluded_namespace("shop", "palisade-system"));
}

/// The contract between the injector and the sidecar: every environment variable the
/// injector writes is one the sidecar reads (by the `env` of one of its flags), and the
/// sidecar's own parser and validation accept the values, for the defaults and for every
/// setting the injector passes on. A renamed variable on either side fails here.
#[test]
fn the_sidecar_parses_the_environment_the_injector_writes() {
    use clap::Parser as _;
    use palisade_sidecar::config::Config;
    let flags = palisade_sidecar::config::env_flags();
    let keys = palisade_policy::sign::KeyRing::generate(1)
        .expect("key")
        .trust_list();
    let configs = [
        cfg(),
        InjectConfig {
            bundle_keys: Some(keys.clone()),
            fail_closed: true,
            ready_without_policy: true,
            ..full_cfg()
        },
    ];
    for c in configs {
        let ops = mutate(&pod("plain"), &c).expect("injected");
        let mut doc = pod("plain");
        json_patch::patch(&mut doc, &ops).expect("applies");
        let sidecar = &doc["spec"]["initContainers"][0];
        // The container's mounts, as directories of the test (the downward-API labels file
        // is read at start).
        let dir = tempfile::tempdir().expect("dir");
        let mounts: Vec<(String, PathBuf)> = sidecar["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| {
                let local = dir.path().join(m["name"].as_str().expect("mount name"));
                std::fs::create_dir_all(&local).expect("mount dir");
                (
                    m["mountPath"].as_str().expect("mountPath").to_owned(),
                    local,
                )
            })
            .collect();
        let mut args = vec!["palisade-sidecar".to_owned()];
        for e in sidecar["env"].as_array().expect("env") {
            let name = e["name"].as_str().expect("name");
            let mut value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(path)) => format!("from-{}", path.replace('.', "-")),
                _ => String::new(),
            };
            if let Some((mount, local)) = mounts.iter().find(|(m, _)| value.starts_with(m.as_str()))
            {
                let path = local.join(value[mount.len()..].trim_start_matches('/'));
                if name == "PALISADE_POD_LABELS_FILE" {
                    std::fs::write(&path, "app=\"web\"\n").expect("labels file");
                }
                value = path.display().to_string();
            }
            let Some((long, takes_value)) = flags.get(name) else {
                panic!("the injector sets {name}, which no flag of the sidecar reads");
            };
            if *takes_value {
                args.push(format!("--{long}={value}"));
            } else {
                assert_eq!(value, "true", "{name} is a switch");
                args.push(format!("--{long}"));
            }
        }
        let parsed = Config::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("the sidecar refuses the injector's {args:?}: {e}"));
        parsed
            .validate()
            .unwrap_or_else(|e| panic!("the sidecar refuses the injector's {args:?}: {e}"));
        assert_eq!(parsed.policy.bundle_keys, c.bundle_keys);
        assert_eq!(parsed.policy.fail_closed, c.fail_closed);
        assert_eq!(parsed.policy.namespace, "from-metadata-namespace");
        assert_eq!(parsed.upstream_port, 8080);
    }
}
