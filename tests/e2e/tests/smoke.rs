//! Proves the control plane is real: server-side apply and watches, controllers that
//! create and delete objects, RBAC that refuses a ServiceAccount without permission.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use palisade_e2e::{ControlPlane, TempNs, eventually};
use serde_json::json;

#[tokio::test]
async fn server_side_apply_is_seen_through_a_watch() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "smoke-ssa").await;
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, ns.name());
    let wc = watcher::Config::default().fields("metadata.name=greeting");
    let mut seen = watcher(cms.clone(), wc).applied_objects().boxed();

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "greeting"}, "data": {"hello": "world"}});
    let pp = PatchParams::apply("palisade-e2e").force();
    cms.patch("greeting", &pp, &Patch::Apply(&cm))
        .await
        .expect("server-side apply");

    let got = tokio::time::timeout(palisade_e2e::patience(), seen.try_next())
        .await
        .expect("the watch delivers the ConfigMap")
        .expect("watch stream ok")
        .expect("an object");
    assert_eq!(
        got.data
            .unwrap_or_default()
            .get("hello")
            .map(String::as_str),
        Some("world")
    );
    let stored = cms.get("greeting").await.expect("get");
    let managers: Vec<_> = stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        vec!["palisade-e2e".to_owned()],
        "SSA records its field manager"
    );
}

#[tokio::test]
async fn a_deployment_gets_a_replicaset_and_pods_from_the_controller_manager() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "smoke-deploy").await;
    let client = cp.client().await;
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}}
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &deploy)
        .await
        .expect("create deployment");

    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let owner = eventually("a ReplicaSet owned by the Deployment", || async {
        let list = rss
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let rs = list.items.into_iter().next().ok_or("no ReplicaSet yet")?;
        let owned = rs
            .metadata
            .owner_references
            .unwrap_or_default()
            .iter()
            .any(|o| o.kind == "Deployment" && o.name == "web");
        owned
            .then_some(rs.metadata.name.unwrap_or_default())
            .ok_or_else(|| "not owned".to_owned())
    })
    .await;
    eventually("2 Pods created by the ReplicaSet", || async {
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let owned = list
            .items
            .iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "ReplicaSet" && o.name == owner)
            })
            .count();
        (owned == 2)
            .then_some(())
            .ok_or(format!("{owned} pods so far"))
    })
    .await;
}

#[tokio::test]
async fn a_deleted_namespace_goes_away() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "smoke-delete"}})).expect("ns");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).expect("cm");
    Api::<ConfigMap>::namespaced(client.clone(), "smoke-delete")
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    nss.delete("smoke-delete", &DeleteParams::default())
        .await
        .expect("delete namespace");
    eventually("the namespace to be finalized and removed", || async {
        match nss
            .get_opt("smoke-delete")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(n) => Err(format!(
                "still there, phase {:?}",
                n.status.and_then(|s| s.phase)
            )),
        }
    })
    .await;
}

#[tokio::test]
async fn a_service_account_without_rbac_is_refused() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "smoke-rbac").await;
    cp.kubectl_ok(&["-n", ns.name(), "create", "serviceaccount", "nobody"])
        .expect("create SA");
    let token = cp
        .kubectl_ok(&["-n", ns.name(), "create", "token", "nobody"])
        .expect("token");
    let as_sa = cp.client_with_token(token.trim()).await;
    let secrets: Api<Secret> = Api::namespaced(as_sa, ns.name());
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "refused with Forbidden: {s:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    // The same token works once RBAC allows it: the 403 was RBAC, not a broken token.
    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "create",
        "role",
        "read-secrets",
        "--verb=list",
        "--resource=secrets",
    ])
    .expect("role");
    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "create",
        "rolebinding",
        "read-secrets",
        "--role=read-secrets",
        &format!("--serviceaccount={}:nobody", ns.name()),
    ])
    .expect("binding");
    eventually("the bound ServiceAccount to list secrets", || async {
        secrets
            .list(&ListParams::default())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
}
