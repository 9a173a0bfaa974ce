use serde_json::{Value, json};

use super::*;

fn t(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(s).expect("valid")
}

fn ns(labels: Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": "shop", "labels": labels}})).expect("ns")
}

/// A pod of app `web` with the sidecar (app port 8080 renamed `http-app`, a gRPC port 9090).
fn injected(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop",
            "labels": {"app": "web", "palisade.dev/injected": "true"}},
        "spec": {
            "initContainers": [{
                "name": "palisade-sidecar", "restartPolicy": "Always",
                "ports": [{"name": "http", "containerPort": 15080},
                          {"name": "palisade-admin", "containerPort": 15081}],
                "env": [{"name": "PALISADE_UPSTREAM_PORT", "value": "8080"}],
            }],
            "containers": [{"name": "app", "ports": [
                {"name": "http-app", "containerPort": 8080},
                {"name": "grpc", "containerPort": 9090},
            ]}],
        },
        "status": {"phase": "Running"},
    }))
    .expect("pod")
}

/// A pod of app `web` without the sidecar.
fn bare(name: &str, labels: Value) -> Pod {
    let mut l = json!({"app": "web"});
    for (k, v) in labels.as_object().into_iter().flatten() {
        l[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "labels": l},
        "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running"},
    }))
    .expect("pod")
}

fn service(name: &str, target: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": target}]},
    }))
    .expect("service")
}

fn policy(name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec}))
        .expect("policy")
}

struct Case {
    ns: Namespace,
    services: Vec<Service>,
    pods: Vec<Pod>,
    policies: Vec<NetworkPolicy>,
    actions: usize,
    rules: usize,
    generation: Option<(u64, jiff::Timestamp)>,
    reported: HashMap<String, (jiff::Timestamp, Option<u64>)>,
    proxy: Option<String>,
    now: jiff::Timestamp,
}

impl Case {
    fn new(services: Vec<Service>, pods: Vec<Pod>) -> Self {
        Self {
            ns: ns(json!({"palisade.dev/inject": "enabled"})),
            services,
            pods,
            policies: vec![],
            actions: 1,
            rules: 1,
            generation: None,
            reported: HashMap::new(),
            proxy: None,
            now: t(10_000),
        }
    }

    fn assess(&self) -> Assessment {
        assess(&Input {
            namespace: &self.ns,
            services: &self.services,
            pods: &self.pods,
            policies: &self.policies,
            actions: self.actions,
            rules: self.rules,
            generation: self.generation,
            reported: &self.reported,
            client_ip_proxy: self.proxy.as_deref(),
            grace: Duration::from_secs(30),
            stale_after: Duration::from_secs(60),
            now: self.now,
        })
    }
}

/// Only the sidecar's ports (and the pods' other ports) admitted.
fn closing_policy() -> NetworkPolicy {
    policy(
        "web",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
               "ingress": [{"ports": [{"port": 15080}, {"port": 15081}]}]}),
    )
}

fn kinds(a: &Assessment) -> Vec<FindingKind> {
    a.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn a_protected_service_has_no_finding_and_full_score() {
    let mut c = Case::new(
        vec![service("web", json!("http"))],
        vec![injected("web-1"), injected("web-2")],
    );
    c.policies = vec![closing_policy()];
    let a = c.assess();
    assert_eq!(kinds(&a), vec![]);
    assert_eq!((a.score, a.services, a.protected), (100, 1, 1));
    let s = a.status(c.now);
    assert_eq!(s.protected_services.as_deref(), Some("1/1"));
    assert_eq!(s.summary.as_deref(), Some("no findings"));
}

#[test]
fn pods_without_the_sidecar_are_found_with_the_reason() {
    let c = Case::new(
        vec![service("web", json!("http"))],
        vec![
            injected("web-1"),
            bare("web-2", json!({"palisade.dev/inject": "disabled"})),
            bare("web-3", json!({})),
        ],
    );
    let a = c.assess();
    let f = &a.findings[0];
    assert_eq!(
        (f.kind, f.severity),
        (FindingKind::PodsWithoutSidecar, Severity::High)
    );
    assert_eq!(f.object, "Service/web");
    assert_eq!(
        (f.pod_count, f.pods.clone()),
        (2, vec!["web-2".into(), "web-3".into()])
    );
    assert!(f.message.starts_with("2 of 3 pods"), "{}", f.message);
    assert!(
        f.message
            .contains("opted out with palisade.dev/inject=disabled"),
        "{}",
        f.message
    );
    assert!(f.message.contains("created without it"), "{}", f.message);
    assert_eq!(a.score, 0, "a High finding makes the Service count nothing");

    // In a namespace that did not opt in, the reason says so.
    let mut c = Case::new(
        vec![service("web", json!("http"))],
        vec![bare("web-3", json!({}))],
    );
    c.ns = ns(json!({}));
    let a = c.assess();
    assert!(
        a.findings[0]
            .message
            .contains("neither the namespace nor the pods opted in")
    );
    assert_eq!(
        kinds(&a),
        vec![FindingKind::PodsWithoutSidecar],
        "no port check without a sidecar"
    );
}

#[test]
fn an_open_app_port_is_found_and_the_offered_policy_closes_it() {
    let mut c = Case::new(vec![service("web", json!("http"))], vec![injected("web-1")]);
    let a = c.assess();
    assert_eq!(kinds(&a), vec![FindingKind::AppPortReachable]);
    let f = &a.findings[0];
    assert!(f.message.contains("port 8080"), "{}", f.message);
    assert!(
        f.message.contains("no NetworkPolicy selects them"),
        "{}",
        f.message
    );
    assert_eq!(a.score, 50, "a Medium finding makes the Service count half");
    let offered: NetworkPolicy =
        serde_yaml::from_str(f.network_policy.as_deref().expect("a policy is offered"))
            .expect("yaml");
    assert_eq!(offered.metadata.name.as_deref(), Some("palisade-web"));
    assert_eq!(offered.metadata.namespace.as_deref(), Some("shop"));
    let spec = offered.spec.clone().expect("spec");
    let ports: Vec<i32> = spec
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| r.ports.iter().flatten())
        .filter_map(|p| match p.port {
            Some(IntOrString::Int(n)) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(ports, vec![9090, 15080, 15081], "every port but the app's");
    // Applying it closes the port: the same check finds nothing.
    c.policies = vec![offered];
    let a = c.assess();
    assert_eq!(kinds(&a), vec![]);
    assert_eq!(a.score, 100);
}

#[test]
fn a_policy_that_still_admits_the_app_port_is_named() {
    let mut c = Case::new(vec![service("web", json!("http"))], vec![injected("web-1")]);
    let admits = |spec: Value| {
        let mut c2 = Case::new(vec![service("web", json!("http"))], vec![injected("web-1")]);
        c2.policies = vec![closing_policy(), policy("other", spec)];
        c2.assess()
            .findings
            .into_iter()
            .map(|f| f.message)
            .collect::<Vec<_>>()
    };
    // A rule without ports admits every port.
    let m = admits(json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}));
    assert!(
        m.len() == 1 && m[0].contains("NetworkPolicy other admits it"),
        "{m:?}"
    );
    // A port range around 8080, and the renamed port by name.
    let m = admits(
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 8000, "endPort": 8100}]}]}),
    );
    assert_eq!(m.len(), 1, "{m:?}");
    let m = admits(json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http-app"}]}]}));
    assert_eq!(m.len(), 1, "{m:?}");
    // Not: UDP 8080, another range, another name, an Egress-only policy, other pods.
    for spec in [
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 8080, "protocol": "UDP"}]}]}),
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 8081, "endPort": 8100}]}]}),
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
        json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}),
        json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]},
               "ingress": [{}]}),
    ] {
        assert_eq!(admits(spec.clone()), Vec::<String>::new(), "{spec}");
    }
    // An Egress-only policy alone does not isolate ingress.
    c.policies = vec![policy(
        "egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )];
    assert_eq!(kinds(&c.assess()), vec![FindingKind::AppPortReachable]);
    // A deny-all ingress policy closes it.
    c.policies = vec![policy(
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )];
    assert_eq!(kinds(&c.assess()), vec![]);
}

#[test]
fn a_service_that_targets_the_apps_port_goes_around_the_sidecar() {
    for target in [json!(8080), json!("http-app")] {
        let mut c = Case::new(
            vec![service("direct", target.clone())],
            vec![injected("web-1")],
        );
        c.policies = vec![closing_policy()];
        let a = c.assess();
        assert_eq!(
            kinds(&a),
            vec![FindingKind::ServiceBypassesSidecar],
            "{target}"
        );
        assert_eq!(a.findings[0].severity, Severity::High);
        assert!(
            a.findings[0]
                .message
                .contains(&target.to_string().replace('"', ""))
        );
    }
    // The sidecar's name or another port of the pod is not around the sidecar.
    for target in [json!("http"), json!(15080), json!(9090), json!("grpc")] {
        let mut c = Case::new(vec![service("s", target.clone())], vec![injected("web-1")]);
        c.policies = vec![closing_policy()];
        assert_eq!(kinds(&c.assess()), vec![], "{target}");
    }
}

#[test]
fn stale_sidecars_are_found_once_they_had_time_to_load() {
    let mut c = Case::new(
        vec![service("web", json!("http"))],
        vec![injected("web-1"), injected("web-2"), injected("web-3")],
    );
    c.policies = vec![closing_policy()];
    let since = t(9_000);
    c.generation = Some((5, since));
    c.reported.insert(
        "web-1".into(),
        (since + jiff::SignedDuration::from_secs(61), Some(3)),
    );
    c.reported.insert(
        "web-2".into(),
        (since + jiff::SignedDuration::from_secs(61), Some(5)),
    );
    // Reported the old generation, but too soon after the new one was written.
    c.reported.insert(
        "web-3".into(),
        (since + jiff::SignedDuration::from_secs(5), Some(4)),
    );
    let a = c.assess();
    assert_eq!(kinds(&a), vec![FindingKind::StalePolicy]);
    assert_eq!(a.findings[0].pods, vec!["web-1".to_owned()]);
    assert!(
        a.findings[0].message.contains("generation 3"),
        "{}",
        a.findings[0].message
    );
    let st = a.status(c.now);
    assert_eq!((st.bundle_generation, st.sidecar_count), (Some(5), Some(3)));
    let listed: Vec<(&str, Option<i64>)> = st
        .sidecars
        .iter()
        .map(|s| (s.pod.as_str(), s.generation))
        .collect();
    assert_eq!(
        listed,
        vec![("web-1", Some(3)), ("web-2", Some(5)), ("web-3", Some(4))]
    );
    c.generation = None;
    assert_eq!(
        kinds(&c.assess()),
        vec![],
        "no generation known, nothing stale"
    );
}

#[test]
fn sidecars_without_policy_past_their_grace_are_found() {
    let mut pod = injected("web-1");
    let status: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(json!({
        "phase": "Running",
        "initContainerStatuses": [{"name": "palisade-sidecar", "ready": false, "restartCount": 0,
            "image": "x", "imageID": "",
            "state": {"running": {"startedAt": "1970-01-01T02:00:00Z"}}}],
    }))
    .expect("status");
    pod.status = Some(status);
    let mut c = Case::new(vec![service("web", json!("http"))], vec![pod]);
    c.policies = vec![closing_policy()];
    c.now = t(7200 + 29);
    assert_eq!(kinds(&c.assess()), vec![], "within the grace");
    c.now = t(7200 + 31);
    assert_eq!(kinds(&c.assess()), vec![FindingKind::SidecarWithoutPolicy]);
}

#[test]
fn actions_without_detection_rules_cost_ten_points() {
    let mut c = Case::new(vec![service("web", json!("http"))], vec![injected("web-1")]);
    c.policies = vec![closing_policy()];
    c.rules = 0;
    let a = c.assess();
    assert_eq!(kinds(&a), vec![FindingKind::NoDetectionRules]);
    assert_eq!(
        (a.findings[0].object.as_str(), a.score),
        ("Namespace/shop", 90)
    );
    assert_eq!(a.protected, 1, "a namespace finding is not a Service's");
    c.actions = 0;
    assert_eq!(kinds(&c.assess()), vec![], "nothing to detect for");
}

#[test]
fn what_is_not_an_api_workload_is_not_checked() {
    let mut ignored = service("db", json!(5432));
    ignored.metadata.annotations =
        Some([(IGNORE_ANNOTATION.to_owned(), "ignore".to_owned())].into());
    let external: Service = serde_json::from_value(json!({"metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.org", "selector": {"app": "web"}}}))
    .expect("svc");
    let headless_without_selector: Service = serde_json::from_value(
        json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .expect("svc");
    let mut other = service("other", json!("http"));
    other.spec.as_mut().expect("spec").selector =
        Some([("app".to_owned(), "none".to_owned())].into());
    let mut done = bare("job-1", json!({}));
    done.status.as_mut().expect("status").phase = Some("Succeeded".into());
    let mut leaving = bare("web-9", json!({}));
    leaving.metadata.deletion_timestamp = Some(Time(t(1)));
    let c = Case::new(
        vec![ignored, external, headless_without_selector, other],
        vec![done, leaving],
    );
    let a = c.assess();
    assert_eq!((kinds(&a), a.services, a.score), (vec![], 0, 100));
}

#[test]
fn findings_are_sorted_bounded_and_summarised() {
    let mut services = vec![];
    let mut pods = vec![];
    for i in 0..40 {
        let mut s = service(&format!("s{i}"), json!("http"));
        s.spec.as_mut().expect("spec").selector =
            Some([("app".to_owned(), format!("a{i}"))].into());
        services.push(s);
        let mut p = injected(&format!("p{i}"));
        p.metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("app".into(), format!("a{i}"));
        pods.push(p);
        let mut b = bare(&format!("b{i}"), json!({}));
        b.metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("app".into(), format!("a{i}"));
        pods.push(b);
    }
    let mut c = Case::new(services, pods);
    c.rules = 0;
    let a = c.assess();
    assert_eq!(a.findings.len(), 81);
    assert_eq!(a.findings[0].severity, Severity::High);
    assert_eq!(
        a.findings[80].kind,
        FindingKind::NoDetectionRules,
        "Low last"
    );
    assert_eq!(
        a.summary(),
        "40 High, 40 Medium, 1 Low: PodsWithoutSidecar, AppPortReachable, NoDetectionRules"
    );
    let s = a.status(c.now);
    assert_eq!(
        (s.findings.len(), s.finding_count),
        (MAX_FINDINGS, Some(81))
    );
    assert_eq!(
        s.score,
        Some(0),
        "every Service has a High finding; 0 less 10 stays 0"
    );
}

#[test]
fn a_namespace_uses_palisade_by_label_or_by_its_objects() {
    assert!(uses_palisade(
        &ns(json!({"palisade.dev/inject": "required"})),
        0,
        0,
        false
    ));
    assert!(uses_palisade(&ns(json!({})), 1, 0, false));
    assert!(uses_palisade(&ns(json!({})), 0, 1, false));
    assert!(uses_palisade(&ns(json!({})), 0, 0, true));
    assert!(!uses_palisade(&ns(json!({})), 0, 0, false));
    assert!(!uses_palisade(
        &ns(json!({"palisade.dev/inject": "disabled"})),
        0,
        0,
        false
    ));
}

#[test]
fn long_messages_are_cut_on_a_character_boundary() {
    let s = cut("é".repeat(600), 1024);
    assert!(s.len() <= 1024 && s.ends_with("..."), "{}", s.len());
}

#[test]
fn client_ips_that_are_a_proxys_are_a_namespace_finding() {
    let mut c = Case::new(vec![service("web", json!("http"))], vec![injected("web-1")]);
    c.policies = vec![closing_policy()];
    c.proxy =
        Some("97% of the last 20000 requests came from 1 private address(es) (10.244.0.17)".into());
    let a = c.assess();
    assert_eq!(kinds(&a), vec![FindingKind::ClientIpIsProxy]);
    let f = &a.findings[0];
    assert_eq!(
        (f.severity, f.object.as_str()),
        (Severity::Medium, "Namespace/shop")
    );
    assert!(
        f.message.contains("10.244.0.17") && f.remedy.contains("trusted-proxies"),
        "{f:?}"
    );
    assert_eq!((a.score, a.protected), (90, 1));
    c.rules = 0;
    assert_eq!(c.assess().score, 80, "10 less per namespace finding");
}
