//! The watched objects the operator's components read instead of asking the API server: one
//! watch per kind for the whole process. The policy controller drives these watches (their
//! events are its triggers, [`crate::policy::spawn`]); the collector, the evidence writer
//! and the posture checks read the same stores. A reconcile reads everything from here and
//! asks the API server only for the ConfigMaps of referenced IP lists whose version changed
//! ([`ListCache`]) and, after its own write until the watch has caught up, the bundle manifest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use palisade_crds::{DetectionRule, SecurityAction};

/// The stores (clones read the same objects).
#[derive(Clone)]
pub struct Caches {
    /// The namespaces `--namespace-selector` selects.
    pub namespaces: Store<Namespace>,
    /// Every SecurityAction.
    pub actions: Store<SecurityAction>,
    /// Every DetectionRule.
    pub rules: Store<DetectionRule>,
    /// The pods that carry the sidecar (label `palisade.dev/injected=true`), whole: their
    /// readiness and start times matter.
    pub injected_pods: Store<Pod>,
    /// Every ConfigMap, metadata only: label selectors of IP lists, versions of referenced
    /// lists, the operator's own shards. (Shards are up to 900 KiB each: a whole watch would
    /// hold every bundle in memory.)
    pub configmaps: Store<PartialObjectMeta<ConfigMap>>,
    /// The bundle manifest ConfigMaps (`palisade-bundle`), whole: their signatures are checked.
    pub manifests: Store<ConfigMap>,
    /// The referenced IP-list ConfigMaps, read whole.
    pub lists: Arc<ListCache>,
    /// One bit per store whose first list is complete (see [`Caches::mark_filled`]).
    filled: Arc<tokio::sync::watch::Sender<u8>>,
}

/// The writers of [`Caches`], for the watches that fill them.
pub struct Writers {
    /// See [`Caches::namespaces`].
    pub namespaces: Writer<Namespace>,
    /// See [`Caches::actions`].
    pub actions: Writer<SecurityAction>,
    /// See [`Caches::rules`].
    pub rules: Writer<DetectionRule>,
    /// See [`Caches::injected_pods`].
    pub injected_pods: Writer<Pod>,
    /// See [`Caches::configmaps`].
    pub configmaps: Writer<PartialObjectMeta<ConfigMap>>,
    /// See [`Caches::manifests`].
    pub manifests: Writer<ConfigMap>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers").finish_non_exhaustive()
    }
}

/// The stores, one bit each in [`Caches::filled`], in this order (for [`Caches::filling`]).
const KINDS: [&str; 6] = [
    "Namespace",
    "SecurityAction",
    "DetectionRule",
    "Pod",
    "ConfigMap",
    "bundle manifest",
];
const ALL: u8 = (1 << KINDS.len()) - 1;

impl Caches {
    /// An inspector for the watch of store number `bit` of [`KINDS`], placed after its
    /// `reflect`: records in [`Caches::filled`] that its first list is complete (the store
    /// is swapped in before the `InitDone` event is passed on).
    ///
    /// Everyone waits on `filled`, never on the stores: a kube `Store` wakes only the task
    /// that polled its readiness last (one waker slot in a oneshot channel), so a second task
    /// waiting on a store (the Controller waits on its own) would stay asleep for ever.
    pub fn mark_filled<K>(&self, kind: &str) -> impl Fn(&watcher::Event<K>) + use<K> {
        let bit = KINDS
            .iter()
            .position(|k| *k == kind)
            .expect("a kind of KINDS");
        let filled = self.filled.clone();
        move |e| {
            if matches!(e, watcher::Event::InitDone) {
                filled.send_if_modified(|m| {
                    let was = *m;
                    *m |= 1 << bit;
                    *m != was
                });
            }
        }
    }

    /// Resolves once every store holds its first complete list. A reconcile that compiled
    /// from a store still filling would write a bundle missing the objects not listed yet.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.filled.subscribe();
        // The sender lives as long as `self`: this fails only if it is dropped meanwhile.
        let _ = rx.wait_for(|m| *m == ALL).await;
    }

    /// Whether every store holds its first complete list.
    pub fn ready(&self) -> bool {
        *self.filled.borrow() == ALL
    }

    /// The stores that have not completed their first list yet, by kind (for logs).
    pub fn filling(&self) -> Vec<&'static str> {
        let m = *self.filled.borrow();
        KINDS
            .iter()
            .enumerate()
            .filter(|(bit, _)| m & (1 << bit) == 0)
            .map(|(_, k)| *k)
            .collect()
    }
}

/// Empty stores and their writers.
pub fn new() -> (Caches, Writers) {
    let (namespaces, ns_w) = reflector::store();
    let (actions, actions_w) = reflector::store();
    let (rules, rules_w) = reflector::store();
    let (injected_pods, pods_w) = reflector::store();
    let (configmaps, cms_w) = reflector::store();
    let (manifests, manifests_w) = reflector::store();
    (
        Caches {
            namespaces,
            actions,
            rules,
            injected_pods,
            configmaps,
            manifests,
            lists: Arc::default(),
            filled: Arc::new(tokio::sync::watch::Sender::new(0)),
        },
        Writers {
            namespaces: ns_w,
            actions: actions_w,
            rules: rules_w,
            injected_pods: pods_w,
            configmaps: cms_w,
            manifests: manifests_w,
        },
    )
}

/// The objects of `store` in namespace `ns`, by name (a List's order: compiling them in a
/// fixed order keeps the bundle's hash the same when nothing changed).
pub fn in_namespace<K>(store: &Store<K>, ns: &str) -> Vec<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut items: Vec<K> = store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        .map(|o| (**o).clone())
        .collect();
    items.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    items
}

/// The ConfigMaps of IP lists the actions reference, read whole once per version: a
/// reconcile reads one again only when the metadata watch shows a new `resourceVersion`.
#[derive(Debug, Default)]
pub struct ListCache {
    read: Mutex<HashMap<(String, String), Arc<ConfigMap>>>,
}

impl ListCache {
    /// The ConfigMaps `names` of `ns` whose metadata `metas` holds, whole: from the cache when
    /// its version is the one `metas` shows, else read from the API server. Entries of `ns`
    /// not asked for are dropped (a list no longer referenced is not kept).
    pub async fn get(
        &self,
        client: &kube::Client,
        ns: &str,
        names: &std::collections::BTreeSet<String>,
        metas: &[PartialObjectMeta<ConfigMap>],
    ) -> Result<Vec<ConfigMap>, kube::Error> {
        let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(meta) = metas.iter().find(|m| m.name_any() == *name) else {
                continue;
            };
            let key = (ns.to_owned(), name.clone());
            let cached = self
                .read
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .filter(|cm| cm.resource_version() == meta.resource_version())
                .cloned();
            let cm = match cached {
                Some(cm) => cm,
                None => {
                    let Some(cm) = api.get_opt(name).await? else {
                        continue;
                    };
                    let cm = Arc::new(cm);
                    self.read
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(key, cm.clone());
                    cm
                }
            };
            out.push((*cm).clone());
        }
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(n, name), _| n != ns || names.contains(name));
        Ok(out)
    }
}
