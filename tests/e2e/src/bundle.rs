//! Reads a namespace's policy bundle back from its ConfigMaps, the way a sidecar does, and
//! decodes it with the `policy` crate (so tests check what sidecars would enforce).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use palisade_policy::{Bundle, Manifest, decode};

/// The manifest ConfigMap's name.
pub const MANIFEST_CM: &str = "palisade-bundle";

/// The decoded bundle of `ns` and its manifest; `Err` while there is none or it is invalid.
pub async fn read_bundle(client: &kube::Client, ns: &str) -> Result<(Manifest, Bundle), String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = cms
        .get_opt(MANIFEST_CM)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no bundle yet")?;
    let text = cm
        .data
        .and_then(|mut d| d.remove("manifest.json"))
        .ok_or("manifest.json missing")?;
    let manifest = Manifest::from_json(&text).map_err(|e| e.to_string())?;
    let mut shards = BTreeMap::new();
    for s in &manifest.shards {
        let name = format!("{MANIFEST_CM}-{}", s.name);
        let cm = cms
            .get(&name)
            .await
            .map_err(|e| format!("shard {name}: {e}"))?;
        let bytes = cm
            .binary_data
            .and_then(|mut d| d.remove("shard"))
            .ok_or("shard key missing")?;
        shards.insert(s.name.clone(), bytes.0);
    }
    let bundle = decode(&manifest, &shards).map_err(|e| e.to_string())?;
    Ok((manifest, bundle))
}

/// The names of the actions in a bundle, sorted.
pub fn action_names(b: &Bundle) -> Vec<String> {
    let mut names: Vec<String> = b.actions.iter().map(|a| a.name.clone()).collect();
    names.sort();
    names
}
