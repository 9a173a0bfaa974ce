//! Writes a namespace's encoded policy bundle into ConfigMaps the operator owns: one
//! ConfigMap per content-addressed shard (`palisade-bundle-<shard>`, written once, never
//! rewritten), the manifest ConfigMap `palisade-bundle` written last, and a Role that lets
//! the namespace's service accounts read exactly these ConfigMaps (applied when its shards
//! change, and every five minutes). Shards the manifest no longer names are deleted
//! afterwards. What is in place is read from the operator's watches ([`crate::caches`]).
//!
//! The manifest ConfigMap also carries the manifest's signature (`manifest.sig`) and the
//! operator's public key chain (`keys.json`), so sidecars apply only what the operator wrote
//! (`palisade_policy::sign`).
//!
//! When the shards together fit [`INLINE_SHARDS_MAX`], the manifest ConfigMap also carries
//! them in `binaryData` (one key per shard name), so the ConfigMap volume the injector mounts
//! holds the whole bundle: the sidecar's mounted fallback can load it without the API.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams};
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
pub fn signed_data(manifest: &str, ring: &KeyRing) -> BTreeMap<String, String> {
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

/// What the operator last wrote into each namespace's manifest ConfigMap and Role, so that
/// a reconcile can trust the watch's copy once the watch has caught up with the write, and
/// applies the Role only when the shards change (or every [`ROLE_REFRESH`], in case it was
/// removed).
#[derive(Debug, Default)]
pub struct Ledger(Mutex<HashMap<String, Written>>);

#[derive(Debug, Default)]
struct Written {
    data: Option<BTreeMap<String, String>>,
    inline: Vec<String>,
    role: Option<(Vec<String>, Instant)>,
}

/// How often the reader Role is applied again although its shards did not change.
pub const ROLE_REFRESH: Duration = Duration::from_secs(300);

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Written>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `cm` is what the operator last wrote into `ns` (the watch is up to date).
    fn matches(&self, ns: &str, cm: &ConfigMap) -> bool {
        let keys: Vec<String> = cm
            .binary_data
            .iter()
            .flat_map(|d| d.keys().cloned())
            .collect();
        self.lock()
            .get(ns)
            .is_some_and(|w| w.data.is_some() && w.data == cm.data && w.inline == keys)
    }

    fn record_manifest(&self, ns: &str, data: BTreeMap<String, String>, inline: Vec<String>) {
        let mut map = self.lock();
        let w = map.entry(ns.to_owned()).or_default();
        w.data = Some(data);
        w.inline = inline;
    }

    /// Whether the Role naming `shards` is due in `ns` (it names other shards, or was
    /// applied [`ROLE_REFRESH`] ago or never by this replica), and whether its RoleBinding is
    /// (applied [`ROLE_REFRESH`] ago or never: it names no shard).
    fn role_due(&self, ns: &str, shards: &[String], now: Instant) -> (bool, bool) {
        let map = self.lock();
        let role = map.get(ns).and_then(|w| w.role.as_ref());
        let stale = role.is_none_or(|(_, at)| now.duration_since(*at) >= ROLE_REFRESH);
        (
            stale || role.is_some_and(|(names, _)| names != shards),
            stale,
        )
    }

    /// Records the Role written for `shards`; `refreshed`: with its RoleBinding, so the next
    /// refresh is [`ROLE_REFRESH`] from `now`.
    fn record_role(&self, ns: &str, shards: Vec<String>, now: Instant, refreshed: bool) {
        let mut map = self.lock();
        let w = map.entry(ns.to_owned()).or_default();
        let at = match (&w.role, refreshed) {
            (Some((_, at)), false) => *at,
            _ => now,
        };
        w.role = Some((shards, at));
    }
}

/// The manifest ConfigMap of `ns`: the watch's copy `watched` when it is what the operator
/// last wrote there, else read from the API server (after the operator's own write, until the
/// watch has caught up; on a new leader; when someone else wrote it).
pub async fn manifest_cm(
    client: &kube::Client,
    ns: &str,
    watched: Option<&ConfigMap>,
    ledger: &Ledger,
) -> Result<Option<ConfigMap>, kube::Error> {
    if let Some(cm) = watched.filter(|cm| ledger.matches(ns, cm)) {
        return Ok(Some(cm.clone()));
    }
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(MANIFEST_CM)
        .await
}

/// Writes `encoded`, signed with `ring`, into namespace `ns`, where `current` is the manifest
/// ConfigMap in place ([`manifest_cm`]) and `shards` the shard ConfigMaps the watch shows;
/// returns the bytes written (0 when nothing changed).
pub async fn write(
    client: &kube::Client,
    ns: &str,
    encoded: &Encoded,
    ring: &KeyRing,
    (current, shards): (Option<&ConfigMap>, &[PartialObjectMeta<ConfigMap>]),
    ledger: &Ledger,
) -> Result<usize, kube::Error> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams::apply(MANAGER).force();
    let existing: Vec<String> = shards
        .iter()
        .filter(|m| m.labels().get(KIND_LABEL).is_some_and(|k| k == "shard"))
        .filter(|m| {
            m.labels()
                .get("app.kubernetes.io/managed-by")
                .is_some_and(|k| k == MANAGER)
        })
        .map(|m| m.name_any())
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
    let now = Instant::now();
    let (role, binding) = ledger.role_due(ns, &wanted, now);
    if role {
        write_reader_role(client, ns, &wanted, binding).await?;
        ledger.record_role(ns, wanted.clone(), now, binding);
    }
    let manifest = encoded.manifest.to_json();
    let data = signed_data(&manifest, ring);
    let inline = inline_shards(encoded);
    let inline_keys: Vec<String> = inline.keys().cloned().collect();
    // Ed25519 signatures are deterministic: the same manifest and key give the same data.
    let unchanged = current.is_some_and(|c| {
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
    ledger.record_manifest(ns, data, inline_keys);
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
pub fn inline_shards(encoded: &Encoded) -> BTreeMap<String, String> {
    let total: usize = encoded.shards.iter().map(|(_, b)| b.len()).sum();
    if total > INLINE_SHARDS_MAX {
        return BTreeMap::new();
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

/// The manifest in `cm` (the namespace's manifest ConfigMap, if any), checked against `ring`.
pub fn current_manifest(cm: Option<&ConfigMap>, ring: &KeyRing) -> Current {
    let Some(cm) = cm else {
        return Current::Missing;
    };
    if let Err(e) = check_signature(cm, ring) {
        return Current::Foreign(e);
    }
    let json = cm.data.as_ref().and_then(|d| d.get(MANIFEST_KEY));
    Current::Signed(json.and_then(|j| palisade_policy::Manifest::from_json(j).ok()))
}

/// A Role granting get/list/watch on exactly the bundle ConfigMaps, bound (`binding`: the
/// RoleBinding is applied too) to every service account of the namespace, so sidecars can
/// read the bundle without anyone writing RBAC.
async fn write_reader_role(
    client: &kube::Client,
    ns: &str,
    shards: &[String],
    binding: bool,
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
    if !binding {
        return Ok(());
    }
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

#[cfg(test)]
mod ledger_tests {
    use super::*;

    #[test]
    fn the_role_is_due_when_its_shards_change_and_the_binding_only_on_refresh() {
        let l = Ledger::default();
        let t0 = Instant::now();
        let a = vec!["palisade-bundle-s-a".to_owned()];
        let b = vec!["palisade-bundle-s-b".to_owned()];
        assert_eq!(l.role_due("shop", &a, t0), (true, true), "never written");
        l.record_role("shop", a.clone(), t0, true);
        assert_eq!(
            l.role_due("shop", &a, t0),
            (false, false),
            "written, same shards"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            l.role_due("shop", &b, later),
            (true, false),
            "new shards: the Role only"
        );
        l.record_role("shop", b.clone(), later, false);
        assert_eq!(l.role_due("shop", &b, later), (false, false));
        let refresh = t0 + ROLE_REFRESH;
        assert_eq!(
            l.role_due("shop", &b, refresh),
            (true, true),
            "refresh from the first write"
        );
        assert_eq!(
            l.role_due("other", &b, later),
            (true, true),
            "per namespace"
        );
    }

    #[test]
    fn the_watched_manifest_is_trusted_only_when_it_is_what_was_written() {
        let l = Ledger::default();
        let data: BTreeMap<String, String> = [("manifest.json".to_owned(), "{}".to_owned())].into();
        let mut cm = ConfigMap {
            data: Some(data.clone()),
            ..ConfigMap::default()
        };
        assert!(
            !l.matches("shop", &cm),
            "nothing written by this replica yet"
        );
        l.record_manifest("shop", data, vec![]);
        assert!(l.matches("shop", &cm));
        cm.data = Some([("manifest.json".to_owned(), "{\"forged\":1}".to_owned())].into());
        assert!(
            !l.matches("shop", &cm),
            "someone else's, or the watch is behind"
        );
        assert!(!l.matches("other", &cm));
    }
}
