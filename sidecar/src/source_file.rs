//! Bundle source: the mounted files, polled for changes (a mounted ConfigMap changes by an
//! atomic symlink swap, which polling sees reliably). Layout: `<dir>/manifest.json` and one
//! file per shard named by its shard name (`<dir>/<shard>`), and optionally the
//! detected-client document (`<dir>/detected`); `--bundle-path` may name the directory or the
//! manifest file itself. The signatures and the operator's key chain are read from beside
//! them (`manifest.sig`, `detected.sig`, `keys.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use palisade_policy::sign::{DETECTED_SIG_KEY, KEYS_KEY, MANIFEST_SIG_KEY};

use crate::store::{Signed, Store};

const MANIFEST_FILE: &str = "manifest.json";
/// The detected-client document, beside the manifest (optional).
pub const DETECTED_FILE: &str = "detected";

/// Polls `path` every `every` and applies changed bundles. Runs until dropped.
pub async fn spawn(store: Arc<Store>, path: PathBuf, every: Duration) {
    let (manifest_path, dir) = if path.is_dir() {
        (path.join(MANIFEST_FILE), path.clone())
    } else {
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        (path.clone(), dir)
    };
    // What was last tried, with its signature: a file read between the kubelet's swap of the
    // manifest and of its signature is tried again once the signature changes.
    let mut last_seen: (String, Option<String>) = (String::new(), None);
    let mut last_detected: (Vec<u8>, Option<String>) = (Vec::new(), None);
    let mut warned = false;
    loop {
        if let Ok(bytes) = tokio::fs::read(dir.join(DETECTED_FILE)).await {
            let signature = beside(&dir, DETECTED_SIG_KEY).await;
            if (&bytes, &signature) != (&last_detected.0, &last_detected.1) {
                let keys = beside(&dir, KEYS_KEY).await;
                let doc = Signed {
                    body: bytes.as_slice(),
                    signature: signature.as_deref(),
                    keys: keys.as_deref(),
                };
                store.apply_detected("file", doc);
                last_detected = (bytes, signature);
            }
        }
        match tokio::fs::read_to_string(&manifest_path).await {
            Ok(text) => {
                let signature = beside(&dir, MANIFEST_SIG_KEY).await;
                if (&text, &signature) != (&last_seen.0, &last_seen.1)
                    && check(&store, &text, signature.as_deref(), &dir).await
                {
                    last_seen = (text, signature);
                }
            }
            Err(e) if !warned => {
                tracing::warn!(path = %manifest_path.display(), error = %e, "mounted bundle not readable yet");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

/// Reads the shards named by `text` and applies the bundle. Returns false when a shard file is
/// not there yet (retried on the next poll, not counted as a bad bundle).
async fn check(store: &Store, text: &str, signature: Option<&str>, dir: &Path) -> bool {
    let keys = beside(dir, KEYS_KEY).await;
    let doc = Signed {
        body: text,
        signature,
        keys: keys.as_deref(),
    };
    let Some(manifest) = store.parse_manifest("file", doc) else {
        return true;
    };
    if !store.wants(&manifest) {
        return true;
    }
    let mut shards = BTreeMap::new();
    for shard in &manifest.shards {
        // Shard names are content-derived `s-<hex>`; anything else would escape the directory.
        if shard.name.contains(['/', '\\']) || shard.name.starts_with('.') {
            continue;
        }
        match tokio::fs::read(dir.join(&shard.name)).await {
            Ok(bytes) => {
                shards.insert(shard.name.clone(), bytes);
            }
            Err(e) => {
                tracing::debug!(shard = %shard.name, error = %e, "shard file not there yet");
                return false;
            }
        }
    }
    store.apply("file", &manifest, |n| shards.get(n).map(Vec::as_slice));
    true
}

/// The text of `<dir>/<name>`, if there is one.
async fn beside(dir: &Path, name: &str) -> Option<String> {
    tokio::fs::read_to_string(dir.join(name)).await.ok()
}
