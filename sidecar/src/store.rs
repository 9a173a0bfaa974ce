//! The policy store: the compiled policy in force, behind an `ArcSwap` that the request path
//! reads once per request without a lock. Sources (the mounted file, the Kubernetes API) hand
//! it a manifest and a way to fetch shards; it decodes, validates (format version, sizes,
//! hashes — in `palisade_policy::decode_with`), compiles for this workload and swaps. A bundle
//! that fails never replaces the last good one: it is counted and logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use palisade_policy::{BundleError, CompiledPolicy, Manifest};

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
            Self::Bundle { error, .. } => error.reason(),
        }
    }
}

/// The store shared by the sources and the request path.
#[derive(Debug)]
pub struct Store {
    current: ArcSwapOption<Loaded>,
    labels: BTreeMap<String, String>,
    metrics: Arc<Metrics>,
}

impl Store {
    /// An empty store for a workload with these pod labels.
    pub fn new(labels: BTreeMap<String, String>, metrics: Arc<Metrics>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            labels,
            metrics,
        }
    }

    /// The policy in force, if any (one atomic load + refcount).
    pub fn load(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// Whether a manifest would change the policy in force: a different hash and a generation
    /// not older than the current one (so the slower mounted file cannot roll back the API).
    pub fn wants(&self, manifest: &Manifest) -> bool {
        match &*self.current.load() {
            None => true,
            Some(cur) => cur.hash != manifest.bundle_hash && manifest.generation >= cur.generation,
        }
    }

    /// Parses a manifest's JSON, counting a failure.
    pub fn parse_manifest(&self, source_name: &'static str, json: &str) -> Option<Manifest> {
        match Manifest::from_json(json) {
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
        let loaded = Loaded {
            version: format!("{}-{short}", manifest.generation),
            hash: manifest.bundle_hash.clone(),
            generation: manifest.generation,
            policy: CompiledPolicy::new(bundle, &self.labels),
        };
        tracing::info!(
            source = source_name,
            version = %loaded.version,
            actions = loaded.policy.bundle().actions.len(),
            "bundle applied"
        );
        self.metrics.set_bundle(&loaded.version);
        self.current.store(Some(Arc::new(loaded)));
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
