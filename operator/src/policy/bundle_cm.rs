//! Writes a namespace's encoded policy bundle into ConfigMaps the operator owns: one
//! ConfigMap per content-addressed shard (`palisade-bundle-<shard>`, written once, never
//! rewritten), the manifest ConfigMap `palisade-bundle` written last, and a Role that lets
//! the namespace's service accounts read exactly these ConfigMaps. Shards the manifest no
//! longer names are deleted afterwards.
//!
//! The manifest ConfigMap also carries the manifest's signature (`manifest.sig`) and the
//! operator's public key chain (`keys.json`), so sidecars apply only what the operator wrote
//! (`palisade_policy::sign`).
//!
//! When the shards together fit [`INLINE_SHARDS_MAX`], the manifest ConfigMap also carries
//! them in `binaryData` (one key per shard name), so the ConfigMap volume the injector mounts
//! holds the whole bundle: the sidecar's mounted fallback can load it without the API.

use base64::Engine as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use palisade_policy::Encoded;
use palisade_policy::sign::{self, Domain, KeyRing, Verifier};
use serde_json::json;

pub use palisade_policy::transport::{
    DETECTED_CM, DETECTED_KEY, MANIFEST_CM, MANIFEST_KEY, OPERATOR_MANAGER as MANAGER, SHARD_KEY,
};
/// Largest total of shard bytes copied into the manifest ConfigMap for the mounted fallback
/// (a ConfigMap holds at most 1 MiB; the rest is left for the manifest).
pub const INLINE_SHARDS_MAX: usize = 512 * 1024;
const ROLE: &str = "palisade-sidecar-bundle-reader";
const KIND_LABEL: &str = "palisade.dev/bundle";

/// The ConfigMap name of a shard.
pub fn shard_cm(shard: &str) -> String {
    palisade_policy::transport::shard_cm(MANIFEST_CM, shard)
}

fn labels(kind: &str) -> serde_json::Value {
    json!({
        "app.kubernetes.io/managed-by": MANAGER,
        "app.kubernetes.io/part-of": "palisade",
        KIND_LABEL: kind,
    })
}

/// The manifest ConfigMap's `data`: the manifest JSON, its signature by `ring` and the
/// public key chain.
pub fn signed_data(manifest: &str, ring: &KeyRing) -> std::collections::BTreeMap<String, String> {
    [
        (MANIFEST_KEY, manifest.to_owned()),
        (
            sign::MANIFEST_SIG_KEY,
            ring.sign(Domain::Manifest, manifest.as_bytes()).to_json(),
        ),
        (sign::KEYS_KEY, sign::chain_to_json(&ring.chain())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Whether the manifest ConfigMap `cm` carries a manifest signed by a key of `ring`; the
/// refusal otherwise (its reason names what is wrong).
pub fn check_signature(cm: &ConfigMap, ring: &KeyRing) -> Result<(), sign::SignError> {
    let data = cm.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(String::as_str);
    let manifest = get(MANIFEST_KEY).ok_or(sign::SignError::Unsigned)?;
    let verifier = Verifier::parse(&ring.trust_list())?;
    verifier.verify(
        Domain::Manifest,
        manifest.as_bytes(),
        get(sign::MANIFEST_SIG_KEY),
    )
}

/// Whether `cm` (a `palisade-detected` ConfigMap) carries a detected-client document `ring`
/// signed.
pub fn check_detected_signature(cm: &ConfigMap, ring: &KeyRing) -> Result<(), sign::SignError> {
    let doc = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(DETECTED_KEY))
        .ok_or(sign::SignError::Unsigned)?;
    let signature = cm
        .data
        .as_ref()
        .and_then(|d| d.get(sign::DETECTED_SIG_KEY))
        .map(String::as_str);
    let verifier = Verifier::parse(&ring.trust_list())?;
    verifier.verify(Domain::Detected, &doc.0, signature)
}

/// Writes `encoded`, signed with `ring`, into namespace `ns`; returns the bytes written (0
/// when nothing changed).
pub async fn write(
    client: &kube::Client,
    ns: &str,
    encoded: &Encoded,
    ring: &KeyRing,
) -> Result<usize, kube::Error> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams::apply(MANAGER).force();
    let existing = cms
        .list_metadata(&ListParams::default().labels(&format!("{KIND_LABEL}=shard")))
        .await?;
    let existing: Vec<String> = existing
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    let mut written = 0;
    for (name, bytes) in &encoded.shards {
        let cm_name = shard_cm(name);
        if existing.contains(&cm_name) {
            continue;
        }
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm_name, "labels": labels("shard")},
            "immutable": true,
            "binaryData": {SHARD_KEY: data}});
        cms.patch(&cm_name, &pp, &Patch::Apply(&cm)).await?;
        written += bytes.len();
    }
    let wanted: Vec<String> = encoded.shards.iter().map(|(n, _)| shard_cm(n)).collect();
    write_reader_role(client, ns, &wanted).await?;
    let manifest = encoded.manifest.to_json();
    let data = signed_data(&manifest, ring);
    let inline = inline_shards(encoded);
    let current = cms.get_opt(MANIFEST_CM).await?;
    // Ed25519 signatures are deterministic: the same manifest and key give the same data.
    let unchanged = current.as_ref().is_some_and(|c| {
        let keys: Vec<&String> = c.binary_data.iter().flat_map(|d| d.keys()).collect();
        c.data.as_ref() == Some(&data) && keys == inline.keys().collect::<Vec<_>>()
    });
    if !unchanged {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": MANIFEST_CM, "labels": labels("manifest")},
            "data": data,
            "binaryData": inline});
        cms.patch(MANIFEST_CM, &pp, &Patch::Apply(&cm)).await?;
        written += manifest.len();
    }
    for stale in existing.iter().filter(|n| !wanted.contains(n)) {
        cms.delete(stale, &DeleteParams::default())
            .await
            .map(drop)
            .or_else(ignore_not_found)?;
    }
    Ok(written)
}

/// The shards to copy into the manifest ConfigMap (base64, by shard name): all of them when
/// they fit [`INLINE_SHARDS_MAX`] together, else none (the API serves big bundles).
pub fn inline_shards(encoded: &Encoded) -> std::collections::BTreeMap<String, String> {
    let total: usize = encoded.shards.iter().map(|(_, b)| b.len()).sum();
    if total > INLINE_SHARDS_MAX {
        return std::collections::BTreeMap::new();
    }
    encoded
        .shards
        .iter()
        .map(|(n, b)| {
            (
                n.clone(),
                base64::engine::general_purpose::STANDARD.encode(b),
            )
        })
        .collect()
}

/// The manifest ConfigMap of namespace `ns`, as it is.
#[derive(Debug)]
pub enum Current {
    /// There is none.
    Missing,
    /// Signed by a key of the operator's ring (`None`: its JSON does not parse).
    Signed(Option<palisade_policy::Manifest>),
    /// Not signed by the operator: someone else wrote it (or an operator before signing).
    Foreign(sign::SignError),
}

/// The manifest in force in namespace `ns`, checked against `ring`.
pub async fn current_manifest(
    client: &kube::Client,
    ns: &str,
    ring: &KeyRing,
) -> Result<Current, kube::Error> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(MANIFEST_CM)
        .await?;
    let Some(cm) = cm else {
        return Ok(Current::Missing);
    };
    if let Err(e) = check_signature(&cm, ring) {
        return Ok(Current::Foreign(e));
    }
    let json = cm.data.as_ref().and_then(|d| d.get(MANIFEST_KEY));
    Ok(Current::Signed(json.and_then(|j| {
        palisade_policy::Manifest::from_json(j).ok()
    })))
}

/// Whether namespace `ns` has a bundle already.
pub async fn exists(client: &kube::Client, ns: &str) -> Result<bool, kube::Error> {
    Ok(Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_metadata_opt(MANIFEST_CM)
        .await?
        .is_some())
}

/// A Role granting get/list/watch on exactly the bundle ConfigMaps, bound to every service
/// account of the namespace, so sidecars can read the bundle without anyone writing RBAC.
async fn write_reader_role(
    client: &kube::Client,
    ns: &str,
    shards: &[String],
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(MANAGER).force();
    let mut names: Vec<&str> = vec![MANIFEST_CM, DETECTED_CM];
    names.extend(shards.iter().map(String::as_str));
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": ROLE, "labels": labels("rbac")},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                   "resourceNames": names, "verbs": ["get", "list", "watch"]}]});
    Api::<Role>::namespaced(client.clone(), ns)
        .patch(ROLE, &pp, &Patch::Apply(&role))
        .await?;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": ROLE, "labels": labels("rbac")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                      "name": format!("system:serviceaccounts:{ns}")}]});
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .patch(ROLE, &pp, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

fn ignore_not_found(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}
