//! SecurityIncidents are written by the operator through the status subresource: a full
//! status is accepted and shows in `kubectl get incidents`, and the bounds that keep an
//! incident small (top-k attributes, the per-minute series) are enforced by the API server.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use palisade_e2e::{ControlPlane, TempNs};
use serde_json::{Value, json};

fn incidents(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("palisade.dev", "v1alpha1", "SecurityIncident");
    Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "securityincidents"),
    )
}

async fn create_with_status(
    api: &Api<DynamicObject>,
    name: &str,
    status: Value,
) -> Result<(), String> {
    let obj = json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityIncident",
        "metadata": {"name": name}, "spec": {}});
    let pp = PatchParams::apply("palisade-admit-test");
    api.patch(name, &pp, &Patch::Apply(&obj))
        .await
        .map_err(|e| e.to_string())?;
    let status = json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityIncident",
        "metadata": {"name": name}, "status": status});
    match api
        .patch_status(name, &pp.force(), &Patch::Apply(&status))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.message),
        Err(e) => panic!("writing the status of {name}: {e}"),
    }
}

fn status() -> Value {
    json!({
        "scope": "Clients",
        "displayName": "Flooder from 2 IPs",
        "riskLevel": "Severe",
        "state": "Active",
        "detectionRules": ["flooder", "brute-guessor"],
        "rulesSummary": "flooder,brute-guessor",
        "clients": 2,
        "requests": 18234,
        "firstDetectedTime": "2026-11-26T09:02:00Z",
        "lastDetectedTime": "2026-11-26T12:00:00Z",
        "duration": "2h58m",
        "attributes": {"ips": {"distinct": 2, "top": [{"value": "198.51.100.23", "requests": 18000}]},
                       "paths": {"distinct": 1, "top": [{"value": "/login", "requests": 18000}]}},
        "traffic": {"startTime": "2026-11-26T09:02:00Z", "requests": [120, 480]},
    })
}

#[tokio::test]
async fn the_operator_status_is_accepted_and_shown() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "admit-incident-ok").await;
    let api = incidents(cp.client().await, ns.name());
    create_with_status(&api, "flood", status())
        .await
        .unwrap_or_else(|m| panic!("{m}"));
    let table = cp
        .kubectl_ok(&["get", "incidents", "-n", ns.name()])
        .unwrap_or_else(|e| panic!("{e}"));
    for shown in [
        "RISK",
        "Severe",
        "flooder,brute-guessor",
        "18234",
        "FIRST SEEN",
        "LAST SEEN",
    ] {
        assert!(
            table.contains(shown),
            "kubectl get incidents lacks {shown}:\n{table}"
        );
    }
}

#[tokio::test]
async fn incident_status_is_bounded() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "admit-incident").await;
    let api = incidents(cp.client().await, ns.name());
    let mut too_many_ips = status();
    too_many_ips["attributes"]["ips"]["top"] = (0..11)
        .map(|i| json!({"value": format!("192.0.2.{i}"), "requests": 1}))
        .collect();
    let mut too_long_series = status();
    too_long_series["traffic"]["requests"] = json!(vec![1; 1441]);
    let mut bad_risk = status();
    bad_risk["riskLevel"] = json!("Critical");
    let mut bad_scope = status();
    bad_scope["scope"] = json!("Everything");
    let cases = [
        (
            "unknown scope",
            bad_scope,
            "status.scope: Unsupported value: \"Everything\"",
        ),
        (
            "11 top IPs",
            too_many_ips,
            "status.attributes.ips.top: Too many: 11: must have at most 10 items",
        ),
        (
            "1441 minutes",
            too_long_series,
            "status.traffic.requests: Too many: 1441: must have at most 1440 items",
        ),
        (
            "unknown risk",
            bad_risk,
            "status.riskLevel: Unsupported value: \"Critical\"",
        ),
    ];
    for (i, (what, status, expected)) in cases.into_iter().enumerate() {
        let msg = create_with_status(&api, &format!("bad-{i}"), status)
            .await
            .expect_err(what);
        assert!(msg.contains(expected), "{what}: {msg}");
    }
}
