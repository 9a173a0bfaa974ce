//! One admission review in, one out: parses the `AdmissionReview`, keeps the pod as raw
//! JSON for [`mutate`], and says what happened (metric labels, the Event to publish). Pure:
//! the HTTP server and the Event recorder are the caller's.

use json_patch::Patch;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use super::config::{INJECT_LABEL, InjectConfig};
use super::patch::{SkipReason, excluded_namespace, mutate};

/// What the webhook did with one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `injected`, `skipped`, `denied` (a `required` namespace), `ignored` (not a pod
    /// creation) or `invalid`.
    pub result: &'static str,
    /// PascalCase reason (`Injected`, a [`SkipReason::reason`], …).
    pub reason: &'static str,
    /// The Event to publish, if the user should hear about it.
    pub event: Option<EventNote>,
}

/// An Event about an admission: `Injected` or `InjectionSkipped`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventNote {
    /// The pod's controller (its ReplicaSet…) or, without one, the pod.
    pub regarding: ObjectReference,
    /// Warning (skipped) or Normal (injected).
    pub warning: bool,
    /// `Injected`, `InjectionSkipped` or `InjectionRequired`.
    pub reason: &'static str,
    /// The message.
    pub note: String,
}

/// Whether the namespace only admits pods that get the sidecar (`palisade.dev/inject:
/// required`; the API server sends those namespaces' pods to `/mutate-required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A pod that cannot or should not be injected is admitted unchanged.
    OptIn,
    /// A pod that would not get the sidecar is refused, with the reason.
    Required,
}

/// Answers one AdmissionReview body.
pub fn review(
    body: &[u8],
    cfg: &InjectConfig,
    operator_ns: &str,
    mode: Mode,
) -> (AdmissionReview<DynamicObject>, Outcome) {
    let parsed = serde_json::from_slice::<Value>(body).ok().and_then(|raw| {
        let review = serde_json::from_value::<AdmissionReview<DynamicObject>>(raw.clone());
        let req: AdmissionRequest<DynamicObject> = review.ok()?.try_into().ok()?;
        Some((raw, req))
    });
    let Some((raw, req)) = parsed else {
        let res = AdmissionResponse::invalid("the body is not an admission.k8s.io/v1 review");
        return (res.into_review(), outcome("invalid", "InvalidReview", None));
    };
    let (res, out) = decide(&raw["request"]["object"], &req, cfg, operator_ns, mode);
    (res.into_review(), out)
}

/// Answers one AdmissionReview with a refusal: the injector cannot inject right now.
pub fn unavailable(body: &[u8], msg: &str) -> (AdmissionReview<DynamicObject>, Outcome) {
    let req = serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
        .ok()
        .and_then(|r| -> Option<AdmissionRequest<DynamicObject>> { r.try_into().ok() });
    let Some(req) = req else {
        let res = AdmissionResponse::invalid("the body is not an admission.k8s.io/v1 review");
        return (res.into_review(), outcome("invalid", "InvalidReview", None));
    };
    let res = AdmissionResponse::from(&req).deny(msg);
    (
        res.into_review(),
        outcome("denied", "SigningKeyNotLoaded", None),
    )
}

fn decide(
    pod: &Value,
    req: &AdmissionRequest<DynamicObject>,
    cfg: &InjectConfig,
    operator_ns: &str,
    mode: Mode,
) -> (AdmissionResponse, Outcome) {
    let res = AdmissionResponse::from(req);
    let is_pod_create = req.operation == Operation::Create
        && req.kind.kind == "Pod"
        && req.sub_resource.as_deref().unwrap_or_default().is_empty();
    if !is_pod_create {
        return (res, outcome("ignored", "NotPodCreate", None));
    }
    let ns = req.namespace.clone().unwrap_or_default();
    let result = if excluded_namespace(&ns, operator_ns) {
        Err(SkipReason::ExcludedNamespace(ns.clone()))
    } else {
        mutate(pod, cfg)
    };
    let event = |warning, reason, note| {
        (!req.dry_run).then(|| EventNote {
            regarding: regarding(pod, &ns),
            warning,
            reason,
            note,
        })
    };
    match result {
        Ok(ops) => match res.clone().with_patch(Patch(ops)) {
            Ok(res) => {
                let note = format!("Palisade sidecar {} injected", cfg.version);
                (
                    res,
                    outcome("injected", "Injected", event(false, "Injected", note)),
                )
            }
            Err(_) => (res, outcome("skipped", "PatchSerialize", None)),
        },
        Err(skip) if mode == Mode::Required && skip.leaves_unprotected() => {
            let msg = format!(
                "palisade: namespace {ns} requires the Palisade sidecar ({INJECT_LABEL}=required) \
                 and this pod would run without it: {skip}; {}",
                skip.required_fix()
            );
            let ev = event(true, "InjectionRequired", msg.clone());
            (res.deny(msg), outcome("denied", skip.reason(), ev))
        }
        Err(skip) if skip.warrants_warning() => {
            let msg = format!("palisade: sidecar not injected: {skip}");
            let mut res = res;
            res.warnings = Some(vec![msg.clone()]);
            let ev = event(true, "InjectionSkipped", msg);
            (res, outcome("skipped", skip.reason(), ev))
        }
        Err(skip) => (res, outcome("skipped", skip.reason(), None)),
    }
}

fn outcome(result: &'static str, reason: &'static str, event: Option<EventNote>) -> Outcome {
    Outcome {
        result,
        reason,
        event,
    }
}

/// The pod's controlling owner if it has one (the pod may not have a name yet), else the pod.
fn regarding(pod: &Value, ns: &str) -> ObjectReference {
    let meta = &pod["metadata"];
    let owner = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"].as_bool() == Some(true));
    let s = |v: &Value| v.as_str().map(str::to_owned);
    match owner {
        Some(o) => ObjectReference {
            api_version: s(&o["apiVersion"]),
            kind: s(&o["kind"]),
            name: s(&o["name"]),
            uid: s(&o["uid"]),
            namespace: Some(ns.to_owned()),
            ..ObjectReference::default()
        },
        None => ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: s(&meta["name"]).or_else(|| s(&meta["generateName"])),
            namespace: Some(ns.to_owned()),
            ..ObjectReference::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cfg() -> InjectConfig {
        InjectConfig {
            image: "sidecar:test".into(),
            image_pull_policy: crate::injector::config::PullPolicy::IfNotPresent,
            version: "0.1.0".into(),
            requests: vec![],
            limits: vec![],
            proxy_port: 15080,
            admin_port: 15081,
            takeover_ports: vec!["http".into()],
            trusted_hops: 0,
            fail_closed: false,
            ready_without_policy: false,
            policy_grace: std::time::Duration::from_secs(30),
            bundle_configmap: "palisade-bundle".into(),
            collector_addr: String::new(),
            collector_ca: None,
            bundle_keys: Some("a2V5".into()),
            debug_headers: false,
            identity: vec![],
            jwks: None,
            escaped_slashes: crate::injector::config::EscapedSlashes::Reject,
            forward_original_path: false,
            geoip: None,
        }
    }

    fn body(ns: &str, op: &str, pod: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": ns, "operation": op, "userInfo": {"username": "kcm"},
                "object": pod, "oldObject": null, "dryRun": false
            }
        }))
        .expect("json")
    }

    fn pod(port: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "ownerReferences": [{"apiVersion": "apps/v1",
                "kind": "ReplicaSet", "name": "web-1", "uid": "rs-uid", "controller": true}]},
            "spec": {"containers": [{"name": "web", "image": "w", "ports": [port]}]}})
    }

    fn response(r: &AdmissionReview<DynamicObject>) -> Value {
        serde_json::to_value(r).expect("json")["response"].clone()
    }

    #[test]
    fn an_opted_in_pod_gets_a_json_patch_and_an_injected_event_on_its_replicaset() {
        let b = body(
            "shop",
            "CREATE",
            pod(json!({"name": "http", "containerPort": 8080})),
        );
        let (r, out) = review(&b, &cfg(), "palisade-system", Mode::OptIn);
        let res = response(&r);
        assert_eq!(res["uid"], "u-1");
        assert_eq!(res["allowed"], true);
        assert_eq!(res["patchType"], "JSONPatch");
        // kube serializes the patch bytes as a JSON array, which the API server's decoder
        // accepts for a []byte field like a base64 string.
        let bytes: Vec<u8> = serde_json::from_value(res["patch"].clone()).expect("patch bytes");
        let ops: Vec<json_patch::PatchOperation> = serde_json::from_slice(&bytes).expect("ops");
        assert!(ops.len() >= 4, "{ops:?}");
        assert_eq!(out.result, "injected");
        let ev = out.event.expect("event");
        assert_eq!(ev.regarding.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(ev.regarding.name.as_deref(), Some("web-1"));
    }

    #[test]
    fn a_numeric_port_is_admitted_untouched_with_a_warning_and_an_event() {
        let b = body("shop", "CREATE", pod(json!({"containerPort": 8080})));
        let (r, out) = review(&b, &cfg(), "palisade-system", Mode::OptIn);
        let res = response(&r);
        assert_eq!(res["allowed"], true);
        assert!(res.get("patch").is_none());
        let warning = res["warnings"][0].as_str().expect("a warning");
        assert!(warning.contains("targetPort"), "{warning}");
        assert!(warning.len() <= 256, "{} chars", warning.len());
        assert_eq!((out.result, out.reason), ("skipped", "NoNamedPort"));
        assert_eq!(out.event.expect("event").reason, "InjectionSkipped");
    }

    /// Until the operator has loaded its bundle-signing key, a pod is refused with a message
    /// that says so (an injected sidecar without the keys would take anyone's bundle).
    #[test]
    fn without_the_signing_key_a_pod_is_refused_with_the_reason() {
        let pod = json!({"metadata": {"name": "web-0"}, "spec": {"containers": []}});
        let msg = "palisade: the operator has not loaded its bundle-signing key yet";
        let (review, out) = unavailable(&body("shop", "CREATE", pod), msg);
        let res = serde_json::to_value(&review).expect("review JSON");
        assert_eq!(res["response"]["allowed"], false, "{res}");
        assert_eq!(res["response"]["status"]["message"], msg, "{res}");
        assert_eq!((out.result, out.reason), ("denied", "SigningKeyNotLoaded"));
        let (_, out) = unavailable(b"not a review", msg);
        assert_eq!(out.reason, "InvalidReview");
    }

    /// In a `required` namespace a pod that would run without the sidecar is refused with
    /// the reason and the fix (opted out, a forged injected annotation, a decoy container
    /// named like the sidecar, a port that cannot be taken over); one that can be injected is.
    #[test]
    fn a_required_namespace_refuses_pods_that_would_run_without_the_sidecar() {
        let named = json!({"name": "http", "containerPort": 8080});
        let mut opted_out = pod(named.clone());
        opted_out["metadata"]["labels"] = json!({"palisade.dev/inject": "disabled"});
        let mut forged = pod(named.clone());
        forged["metadata"]["annotations"] = json!({"palisade.dev/injected": "v1"});
        let mut decoy = pod(named.clone());
        decoy["spec"]["initContainers"] =
            json!([{"name": "palisade-sidecar", "image": "evil", "restartPolicy": "Always"}]);
        let numeric = pod(json!({"containerPort": 8080}));
        for (p, reason, fix) in [
            (
                opted_out,
                "OptedOut",
                "remove the pod's palisade.dev/inject=disabled label",
            ),
            (forged, "AlreadyInjected", "only the injector adds"),
            (decoy, "AlreadyInjected", "only the injector adds"),
            (numeric, "NoNamedPort", "targetPort"),
        ] {
            let (r, out) = review(
                &body("shop", "CREATE", p),
                &cfg(),
                "palisade-system",
                Mode::Required,
            );
            let res = response(&r);
            assert_eq!(res["allowed"], false, "{reason}");
            let msg = res["status"]["message"].as_str().expect("a message");
            assert!(
                msg.contains("namespace shop requires the Palisade sidecar") && msg.contains(fix),
                "{reason}: {msg}"
            );
            assert_eq!((out.result, out.reason), ("denied", reason));
            assert_eq!(out.event.expect("event").reason, "InjectionRequired");
        }
        let (r, out) = review(
            &body("shop", "CREATE", pod(named)),
            &cfg(),
            "palisade-system",
            Mode::Required,
        );
        assert_eq!(response(&r)["allowed"], true);
        assert_eq!(out.result, "injected");
    }

    #[test]
    fn excluded_namespaces_updates_and_garbage_are_not_mutated() {
        let p = pod(json!({"name": "http", "containerPort": 8080}));
        for (ns, op, reason) in [
            ("kube-system", "CREATE", "ExcludedNamespace"),
            ("palisade-system", "CREATE", "ExcludedNamespace"),
            ("shop", "UPDATE", "NotPodCreate"),
        ] {
            let (r, out) = review(
                &body(ns, op, p.clone()),
                &cfg(),
                "palisade-system",
                Mode::OptIn,
            );
            let res = response(&r);
            assert_eq!(res["allowed"], true);
            assert!(res.get("patch").is_none(), "{ns} {op}");
            assert_eq!(out.reason, reason);
            assert!(out.event.is_none());
        }
        let (r, out) = review(b"{not json", &cfg(), "palisade-system", Mode::OptIn);
        assert_eq!(response(&r)["allowed"], false);
        assert_eq!(out.result, "invalid");
    }
}
