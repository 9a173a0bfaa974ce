//! Bundle source: the Kubernetes API. Watches the manifest ConfigMap by name (the operator's
//! Role grants get/list/watch on exactly the bundle ConfigMaps, so the watch uses a
//! `metadata.name` field selector) and fetches the shard ConfigMaps it names
//! (`<manifest>-<shard>`, immutable and content-addressed, so each is fetched once and cached).
//! Without a reachable API server this source logs once and the mounted file stays in charge.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::store::Store;

/// Key of the manifest JSON in the manifest ConfigMap's `data`.
pub const MANIFEST_KEY: &str = "manifest.json";
/// Key of a shard's bytes in its ConfigMap's `binaryData`.
pub const SHARD_KEY: &str = "shard";
/// Key of the detected-client document in its ConfigMap's `binaryData`.
pub const DETECTED_KEY: &str = "detected";

/// Watches the manifest `name` and the detected-client ConfigMap `detected` in `ns` until
/// dropped.
pub async fn spawn(store: Arc<Store>, ns: String, name: String, detected: String) {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "Kubernetes API unavailable; only the mounted bundle is used");
            return;
        }
    };
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    tokio::join!(
        watch_manifest(&store, &api, &name),
        watch_detected(&store, &api, &detected)
    );
}

fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

async fn watch_manifest(store: &Store, api: &Api<ConfigMap>, name: &str) {
    let mut cache: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut events = watcher(api.clone(), by_name(name))
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(cm) => on_manifest(store, api, name, &cm, &mut cache).await,
            Err(e) => tracing::warn!(error = %e, configmap = %name, "bundle watch error; retrying"),
        }
    }
}

async fn watch_detected(store: &Store, api: &Api<ConfigMap>, name: &str) {
    let mut events = watcher(api.clone(), by_name(name))
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(cm) => match cm.binary_data.as_ref().and_then(|d| d.get(DETECTED_KEY)) {
                Some(bytes) => store.apply_detected("api", &bytes.0),
                None => tracing::warn!(configmap = %name, "no binaryData key {DETECTED_KEY}"),
            },
            Err(e) => {
                tracing::warn!(error = %e, configmap = %name, "detected watch error; retrying")
            }
        }
    }
}

async fn on_manifest(
    store: &Store,
    api: &Api<ConfigMap>,
    name: &str,
    cm: &ConfigMap,
    cache: &mut BTreeMap<String, Vec<u8>>,
) {
    let Some(json) = cm.data.as_ref().and_then(|d| d.get(MANIFEST_KEY)) else {
        tracing::warn!(configmap = %name, "manifest ConfigMap has no {MANIFEST_KEY}");
        return;
    };
    let Some(manifest) = store.parse_manifest("api", json) else {
        return;
    };
    if !store.wants(&manifest) {
        return;
    }
    for shard in &manifest.shards {
        if cache.contains_key(&shard.name) {
            continue;
        }
        let cm_name = format!("{name}-{}", shard.name);
        match api.get_opt(&cm_name).await {
            Ok(Some(cm)) => {
                let bytes = cm
                    .binary_data
                    .and_then(|mut d| d.remove(SHARD_KEY))
                    .map(|b| b.0);
                if let Some(bytes) = bytes {
                    cache.insert(shard.name.clone(), bytes);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, configmap = %cm_name, "cannot read bundle shard"),
        }
    }
    cache.retain(|k, _| manifest.shards.iter().any(|s| &s.name == k));
    store.apply("api", &manifest, |n| cache.get(n).map(Vec::as_slice));
}
