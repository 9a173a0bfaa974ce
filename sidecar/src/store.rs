//! The policy store: the compiled policy in force, behind an `ArcSwap` that the request path
//! reads once per request without a lock. Sources (the mounted file, the Kubernetes API) hand
//! it a manifest and a way to fetch shards; it decodes, validates (format version, sizes,
//! hashes — in `palisade_policy::decode_with`), compiles for this workload and swaps. A bundle
//! that fails never replaces the last good one: it is counted and logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use palisade_policy::sign::{Domain, SignError, Verifier};
use palisade_policy::{BundleError, CompiledPolicy, DetectedClients, DetectedIndex, Manifest};

use crate::hits::{ActionHits, Retired};
use crate::metrics::{Metrics, ReasonLabel};

/// A policy in force.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled policy.
    pub policy: CompiledPolicy,
    /// The manifest's bundle hash.
    pub hash: String,
    /// The generation it was compiled from.
    pub generation: u64,
    /// `<generation>-<first 12 hex digits of the hash>`: the version reported in metrics/logs.
    pub version: String,
    /// Every header name a flag action sets: removed from client requests, so a client cannot
    /// forge a flag the application trusts.
    pub flag_names: Vec<http::HeaderName>,
    /// What each of its actions matched, observed and decided (see [`crate::hits`]).
    pub hits: ActionHits,
    /// The rates of its rate-limit actions' clients (see [`crate::limit`]).
    pub limits: crate::limit::Limits,
}

/// The detected-client set, indexed against the rules of one bundle.
#[derive(Debug)]
pub struct Detected {
    /// Hash of the bundle whose rule table the index uses.
    pub for_hash: String,
    /// The index `evaluate` reads.
    pub index: DetectedIndex,
}

/// Why a bundle was not applied.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The manifest is not valid JSON for this build.
    #[error("bundle manifest from {source_name} does not parse: {error}")]
    Manifest {
        /// Where it came from.
        source_name: &'static str,
        /// Why.
        #[source]
        error: BundleError,
    },
    /// The detected-client document does not decode.
    #[error(
        "detected-client document from {source_name} rejected: {error}; keeping the last good one"
    )]
    Detected {
        /// Where it came from.
        source_name: &'static str,
        /// Why.
        #[source]
        error: BundleError,
    },
    /// The bundle's generation is further ahead of this pod's clock than any the operator
    /// writes ([`palisade_policy::GENERATION_AHEAD_MAX_MS`]).
    #[error(
        "bundle from {source_name} rejected: its generation {generation} is more than an hour \
         ahead of this pod's clock, so the operator did not write it; keeping the last good bundle"
    )]
    GenerationAhead {
        /// Where it came from.
        source_name: &'static str,
        /// Its generation.
        generation: u64,
    },
    /// The document is not signed by a key of the operator this pod trusts.
    #[error("{what} from {source_name} rejected: {error}; keeping the last good one")]
    Signature {
        /// Where it came from.
        source_name: &'static str,
        /// `bundle manifest` or `detected-client document`.
        what: &'static str,
        /// Why.
        #[source]
        error: SignError,
    },
    /// Decoding or validating the bundle failed.
    #[error("bundle {hash} from {source_name} rejected: {error}; keeping the last good bundle")]
    Bundle {
        /// Where it came from.
        source_name: &'static str,
        /// The manifest's hash.
        hash: String,
        /// Why.
        #[source]
        error: BundleError,
    },
}

impl StoreError {
    /// Fixed reason name (metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Manifest { .. } => "ManifestInvalid",
            Self::GenerationAhead { .. } => "GenerationAhead",
            Self::Signature { error, .. } => error.reason(),
            Self::Bundle { error, .. } | Self::Detected { error, .. } => error.reason(),
        }
    }
}

/// The store shared by the sources and the request path.
#[derive(Debug)]
pub struct Store {
    current: ArcSwapOption<Loaded>,
    detected: ArcSwapOption<Detected>,
    /// The last good detected-client document (read only off the request path).
    detected_doc: Mutex<Option<DetectedClients>>,
    labels: BTreeMap<String, String>,
    metrics: Arc<Metrics>,
    /// Action counts of bundles no longer in force, not yet reported.
    retired: Retired,
    /// The operator's keys (`--bundle-keys`); `None`: signatures are not checked.
    verifier: Option<Mutex<Verifier>>,
    /// Cells of each rate-limit table (`--rate-limit-clients`).
    rate_limit_cells: usize,
}

/// A document as a source read it, with what proves who wrote it.
#[derive(Debug)]
pub struct Signed<'a, T: ?Sized> {
    /// The document exactly as stored (the signed bytes).
    pub body: &'a T,
    /// Its signature (`manifest.sig`, `detected.sig`), if one was stored beside it.
    pub signature: Option<&'a str>,
    /// The operator's published key chain (`keys.json`), if stored beside it.
    pub keys: Option<&'a str>,
}

impl<T: ?Sized> Clone for Signed<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for Signed<'_, T> {}

impl Store {
    /// An empty store for a workload with these pod labels.
    pub fn new(labels: BTreeMap<String, String>, metrics: Arc<Metrics>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            detected: ArcSwapOption::empty(),
            detected_doc: Mutex::new(None),
            labels,
            metrics,
            retired: Retired::default(),
            verifier: None,
            rate_limit_cells: crate::limit::DEFAULT_CELLS,
        }
    }

    /// Gives each rate-limit action's table `cells` cells (`--rate-limit-clients`).
    pub fn with_rate_limit_clients(mut self, cells: usize) -> Self {
        self.rate_limit_cells = cells;
        self
    }

    /// Requires every manifest and detected-client document to be signed by a key `verifier`
    /// trusts (or one those keys endorsed).
    pub fn with_verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = Some(Mutex::new(verifier));
        self
    }

    /// Checks `doc`'s signature when this store requires signatures.
    fn verified<T: AsRef<[u8]> + ?Sized>(
        &self,
        source_name: &'static str,
        what: &'static str,
        domain: Domain,
        doc: Signed<'_, T>,
    ) -> bool {
        let Some(verifier) = &self.verifier else {
            return true;
        };
        let result = verifier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .check(domain, doc.body.as_ref(), doc.signature, doc.keys);
        match result {
            Ok(()) => true,
            Err(error) => {
                self.rejected(&StoreError::Signature {
                    source_name,
                    what,
                    error,
                });
                false
            }
        }
    }

    /// The action counts since the last call (of the bundle in force and of those it
    /// replaced), and the generation in force.
    pub fn take_action_counts(
        &self,
    ) -> (Vec<palisade_detection::report::ActionCount>, Option<u64>) {
        let loaded = self.load();
        let counts = crate::hits::take(&self.retired, loaded.as_deref().map(|l| &l.hits));
        (counts, loaded.map(|l| l.generation))
    }

    /// The policy in force, if any (one atomic load + refcount).
    pub fn load(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// The detected-client index for `loaded`, if one is built for exactly that bundle.
    pub fn detected_for(&self, loaded: &Loaded) -> Option<Arc<Detected>> {
        self.detected
            .load_full()
            .filter(|d| d.for_hash == loaded.hash)
    }

    /// Decodes a detected-client document and indexes it against the bundle in force; a bad
    /// document is counted and the previous one kept.
    pub fn apply_detected(&self, source_name: &'static str, doc: Signed<'_, [u8]>) {
        let what = "detected-client document";
        if !self.verified(source_name, what, Domain::Detected, doc) {
            return;
        }
        match palisade_policy::decode_detected(doc.body) {
            Ok(doc) => {
                tracing::info!(
                    source = source_name,
                    generation = doc.generation,
                    "detected clients applied"
                );
                *self
                    .detected_doc
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(doc);
                self.reindex();
            }
            Err(error) => self.rejected(&StoreError::Detected { source_name, error }),
        }
    }

    /// The collector endpoint the last verified detected-client document names: the operator
    /// replica that owns this namespace's collector shard (read once per report sent).
    pub fn collector_owner(&self) -> Option<String> {
        self.detected_doc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|d| d.collector.clone())
    }

    /// Rebuilds the detected index for the bundle in force.
    fn reindex(&self) {
        let Some(loaded) = self.load() else { return };
        let doc = self
            .detected_doc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(doc) = doc.as_ref() else { return };
        let index = DetectedIndex::new(doc, &loaded.policy.bundle().rules);
        self.detected.store(Some(Arc::new(Detected {
            for_hash: loaded.hash.clone(),
            index,
        })));
    }

    /// Whether a manifest would change the policy in force: a different hash and a generation
    /// not older than the current one (so the slower mounted file cannot roll back the API).
    /// A policy held with a generation far ahead of the clock (from a version that took one)
    /// does not block newer bundles.
    pub fn wants(&self, manifest: &Manifest) -> bool {
        match &*self.current.load() {
            None => true,
            Some(cur) => {
                cur.hash != manifest.bundle_hash
                    && (manifest.generation >= cur.generation
                        || palisade_policy::generation_from_the_future(cur.generation, now_ms()))
            }
        }
    }

    /// Checks a manifest's signature and parses its JSON, counting a failure.
    pub fn parse_manifest(
        &self,
        source_name: &'static str,
        doc: Signed<'_, str>,
    ) -> Option<Manifest> {
        if !self.verified(source_name, "bundle manifest", Domain::Manifest, doc) {
            return None;
        }
        match Manifest::from_json(doc.body) {
            Ok(m) => Some(m),
            Err(error) => {
                self.rejected(&StoreError::Manifest { source_name, error });
                None
            }
        }
    }

    /// Decodes, validates, compiles and swaps; on failure keeps the current policy. Returns
    /// whether the policy changed.
    pub fn apply<'a>(
        &self,
        source_name: &'static str,
        manifest: &Manifest,
        shard: impl FnMut(&str) -> Option<&'a [u8]>,
    ) -> bool {
        if !self.wants(manifest) {
            return false;
        }
        if palisade_policy::generation_from_the_future(manifest.generation, now_ms()) {
            self.rejected(&StoreError::GenerationAhead {
                source_name,
                generation: manifest.generation,
            });
            return false;
        }
        let bundle = match palisade_policy::decode_with(manifest, shard) {
            Ok(b) => b,
            Err(error) => {
                let hash = manifest.bundle_hash.clone();
                self.rejected(&StoreError::Bundle {
                    source_name,
                    hash,
                    error,
                });
                return false;
            }
        };
        let short = manifest
            .bundle_hash
            .get(..12)
            .unwrap_or(&manifest.bundle_hash);
        let flag_names = flag_names(&bundle);
        let names = bundle.actions.iter().map(|a| a.name.clone()).collect();
        let policy = CompiledPolicy::new(bundle, &self.labels);
        let previous = self.current.load();
        let limits = crate::limit::Limits::build(
            &policy,
            self.rate_limit_cells,
            previous.as_deref().map(|l| &l.limits),
            &self.metrics.rate_limit_evictions,
        );
        self.metrics
            .rate_limit_bytes
            .set(i64::try_from(limits.bytes()).unwrap_or(i64::MAX));
        let loaded = Loaded {
            hits: ActionHits::new(names, self.retired.clone()),
            limits,
            flag_names,
            version: format!("{}-{short}", manifest.generation),
            hash: manifest.bundle_hash.clone(),
            generation: manifest.generation,
            policy,
        };
        tracing::info!(
            source = source_name,
            version = %loaded.version,
            actions = loaded.policy.bundle().actions.len(),
            trusted_proxies = loaded.policy.bundle().trusted_proxies.as_ref().map(|t| t.to_string()),
            "bundle applied"
        );
        let version = loaded.version.clone();
        self.current.store(Some(Arc::new(loaded)));
        // After the swap: whoever reads the metric finds the bundle in force.
        self.metrics.set_bundle(&version);
        self.reindex();
        true
    }

    /// Called once the start-up grace has passed: without a bundle, says so (an error and
    /// `palisade_sidecar_policy_missing` 1, until a bundle is applied). Returns whether the
    /// policy is missing.
    pub fn check_grace(&self, grace: std::time::Duration) -> bool {
        if self.load().is_some() {
            return false;
        }
        self.metrics.policy_missing.set(1);
        if self.load().is_some() {
            // A bundle was applied between the two loads; `apply` may have cleared the
            // gauge before it was set.
            self.metrics.policy_missing.set(0);
            return false;
        }
        tracing::error!(
            grace = ?grace,
            "no policy bundle after the start-up grace: nothing is enforced; check that the \
             operator selects this namespace and that the sidecar can read the bundle \
             ConfigMaps"
        );
        true
    }

    fn rejected(&self, e: &StoreError) {
        self.metrics
            .bundle_errors
            .get_or_create(&ReasonLabel { reason: e.reason() })
            .inc();
        tracing::warn!(reason = e.reason(), error = %e, "bundle rejected");
    }
}

/// This pod's clock in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn flag_names(bundle: &palisade_policy::Bundle) -> Vec<http::HeaderName> {
    let mut names: Vec<http::HeaderName> = bundle
        .actions
        .iter()
        .filter_map(|a| match &a.verb {
            palisade_policy::Verb::Flag { headers } => Some(headers),
            _ => None,
        })
        .flatten()
        .filter_map(|h| http::HeaderName::from_bytes(h.name.as_bytes()).ok())
        // A name the sidecar never adds (hop-by-hop, Host, Content-Length) is not a flag.
        .filter(crate::forward::may_be_added)
        .collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// Parses pod labels from `k=v,k=v` or the downward-API file format (`k="v"` per line).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| format!("label `{l}` is not key=value"))?;
            Ok((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let l = parse_labels("app=\"web\"\ntier=\"api\"\n").expect("parses");
        assert_eq!(l["app"], "web");
        assert_eq!(parse_labels("a=1,b=2").expect("parses").len(), 2);
        assert!(parse_labels("oops").is_err());
    }
}
