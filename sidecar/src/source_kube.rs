//! Bundle source: the Kubernetes API. Watches the manifest ConfigMap by name (the operator's
//! Role grants get/list/watch on exactly the bundle ConfigMaps, so the watch uses a
//! `metadata.name` field selector) and fetches the shard ConfigMaps it names
//! (`<manifest>-<shard>`, immutable and content-addressed, so each is fetched once and cached;
//! the copies of small bundles' shards in the manifest ConfigMap are for the mounted file).
//! Without a reachable API server this source logs once and the mounted file stays in charge.
//!
//! It authenticates with the token the injector projects into the sidecar
//! (`--api-token-path`, `--api-ca-path`), so a pod with `automountServiceAccountToken: false`
//! still reads its policy; without those flags, with KUBECONFIG or the automounted token.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::store::{Signed, Store};

pub use palisade_policy::transport::{DETECTED_KEY, MANIFEST_KEY, SHARD_KEY};

/// How the watch reaches the API server.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    /// The projected token file (audience: the API server); `None`: KUBECONFIG or the
    /// automounted token (`kube::Client::try_default`).
    pub token: Option<PathBuf>,
    /// The API server's CA bundle (PEM), with `token`.
    pub ca: Option<PathBuf>,
}

/// Why the API client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The kubelet sets both variables in every container; outside a pod they are missing.
    #[error(
        "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not both set; run in a pod \
         or set them to the API server's address"
    )]
    NoServer,
    /// The variables do not form a URL.
    #[error("https://{0} (from KUBERNETES_SERVICE_HOST/PORT) is not a URL")]
    BadServer(String),
    /// A projected file cannot be read.
    #[error("cannot read {path}: {source}; mount the injector's projected volume there")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no certificate.
    #[error("{0} holds no PEM certificate; project ca.crt of the kube-root-ca.crt ConfigMap")]
    NoCertificate(PathBuf),
    /// The client could not be built or inferred.
    #[error("{0}")]
    Client(#[from] kube::Error),
}

impl ApiError {
    /// Fixed reason name (log field).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoServer => "NoServer",
            Self::BadServer(_) => "BadServer",
            Self::Read { .. } => "ProjectedFileUnreadable",
            Self::NoCertificate(_) => "NoCertificate",
            Self::Client(_) => "ClientUnavailable",
        }
    }
}

/// The client configuration for the projected `token` and `ca` files and the API server at
/// `host`:`port` (the kubelet's `KUBERNETES_SERVICE_*`). The token file is re-read as the
/// kubelet rotates it, and so is the CA file.
pub fn projected_config(
    token: &Path,
    ca: &Path,
    host: Option<&str>,
    port: Option<&str>,
    namespace: &str,
) -> Result<kube::Config, ApiError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let (Some(host), Some(port)) = (
        host.filter(|h| !h.is_empty()),
        port.filter(|p| !p.is_empty()),
    ) else {
        return Err(ApiError::NoServer);
    };
    let authority = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let url: http::Uri = format!("https://{authority}")
        .parse()
        .map_err(|_| ApiError::BadServer(authority.clone()))?;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ApiError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    read(token)?;
    let roots: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&read(ca)?)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    if roots.is_empty() {
        return Err(ApiError::NoCertificate(ca.to_path_buf()));
    }
    let mut cfg = kube::Config::new(url);
    cfg.default_namespace = namespace.to_owned();
    cfg.root_cert = Some(roots);
    cfg.root_cert_file = Some(ca.to_path_buf());
    cfg.auth_info.token_file = Some(token.display().to_string());
    Ok(cfg)
}

/// The API client `access` describes.
pub async fn client(access: &ApiAccess, namespace: &str) -> Result<kube::Client, ApiError> {
    match (&access.token, &access.ca) {
        (Some(token), Some(ca)) => {
            let env = |k: &str| std::env::var(k).ok();
            let cfg = projected_config(
                token,
                ca,
                env("KUBERNETES_SERVICE_HOST").as_deref(),
                env("KUBERNETES_SERVICE_PORT").as_deref(),
                namespace,
            )?;
            Ok(kube::Client::try_from(cfg)?)
        }
        _ => Ok(kube::Client::try_default().await?),
    }
}

/// Watches the manifest `name` and the detected-client ConfigMap `detected` in `ns` until
/// dropped.
pub async fn spawn(
    store: Arc<Store>,
    access: ApiAccess,
    ns: String,
    name: String,
    detected: String,
) {
    let client = match client(&access, &ns).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(reason = e.reason(), error = %e, "Kubernetes API unavailable; only the mounted bundle is used");
            return;
        }
    };
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    tokio::join!(
        watch_manifest(&store, &api, &name),
        watch_detected(&store, &api, &detected)
    );
}

/// The watches' retry delays: 250 ms doubling up to 8 s, each with ±50 % jitter, from the
/// start again after an event. kube's default grows to 30 s: after a long API outage a
/// sidecar would wait up to half a minute for the change made meanwhile; the jitter spreads
/// the reconnections of a namespace's sidecars.
#[derive(Debug, Clone)]
struct WatchBackoff {
    next: std::time::Duration,
}

impl WatchBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(250);
    const MAX: std::time::Duration = std::time::Duration::from_secs(8);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        use std::hash::{BuildHasher as _, Hasher as _};
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // A random factor in [0.5, 1.5) from the process's random hasher keys.
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let factor = 0.5 + (r >> 11) as f64 / (1u64 << 53) as f64;
        Some(base.mul_f64(factor))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

/// Follows the manifest `name`. A manifest whose shards could not all be read (an API
/// error, the reader Role naming a new shard not yet in force at the API server, a shard not
/// written yet) is read again with [`WatchBackoff`]'s delays until it is complete or a newer
/// manifest arrives: the watch alone would keep the old bundle until the next change.
async fn watch_manifest(store: &Store, api: &Api<ConfigMap>, name: &str) {
    let mut cache: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut events = watcher(api.clone(), by_name(name))
        .backoff(WatchBackoff::default())
        .applied_objects()
        .boxed();
    let mut incomplete: Option<(ConfigMap, WatchBackoff)> = None;
    loop {
        let retry = incomplete.as_mut().and_then(|(_, b)| b.next());
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
            () = sleep_or_never(retry) => {
                let (cm, backoff) = incomplete.take().expect("a retry is pending");
                if !on_manifest(store, api, name, &cm, &mut cache).await {
                    incomplete = Some((cm, backoff));
                }
                continue;
            }
        };
        match event {
            Ok(cm) => {
                incomplete = (!on_manifest(store, api, name, &cm, &mut cache).await)
                    .then(|| (cm, WatchBackoff::default()));
            }
            Err(e) => tracing::warn!(error = %e, configmap = %name, "bundle watch error; retrying"),
        }
    }
}

/// Sleeps `delay`, or for ever when there is none.
async fn sleep_or_never(delay: Option<std::time::Duration>) {
    match delay {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn watch_detected(store: &Store, api: &Api<ConfigMap>, name: &str) {
    let mut events = watcher(api.clone(), by_name(name))
        .backoff(WatchBackoff::default())
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(cm) => match cm.binary_data.as_ref().and_then(|d| d.get(DETECTED_KEY)) {
                Some(bytes) => store.apply_detected(
                    "api",
                    Signed {
                        body: &bytes.0,
                        signature: data(&cm, palisade_policy::sign::DETECTED_SIG_KEY),
                        keys: data(&cm, palisade_policy::sign::KEYS_KEY),
                    },
                ),
                None => tracing::warn!(configmap = %name, "no binaryData key {DETECTED_KEY}"),
            },
            Err(e) => {
                tracing::warn!(error = %e, configmap = %name, "detected watch error; retrying")
            }
        }
    }
}

/// A `data` entry of `cm`.
fn data<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.data.as_ref()?.get(key).map(String::as_str)
}

/// Reads the shards `cm` names and applies the bundle; `false` when a shard could not be read
/// (worth reading again), `true` otherwise (applied, or refused for good).
async fn on_manifest(
    store: &Store,
    api: &Api<ConfigMap>,
    name: &str,
    cm: &ConfigMap,
    cache: &mut BTreeMap<String, Vec<u8>>,
) -> bool {
    let Some(json) = cm.data.as_ref().and_then(|d| d.get(MANIFEST_KEY)) else {
        tracing::warn!(configmap = %name, "manifest ConfigMap has no {MANIFEST_KEY}");
        return true;
    };
    let doc = Signed {
        body: json.as_str(),
        signature: data(cm, palisade_policy::sign::MANIFEST_SIG_KEY),
        keys: data(cm, palisade_policy::sign::KEYS_KEY),
    };
    let Some(manifest) = store.parse_manifest("api", doc) else {
        return true;
    };
    if !store.wants(&manifest) {
        return true;
    }
    let mut complete = true;
    for shard in &manifest.shards {
        if cache.contains_key(&shard.name) {
            continue;
        }
        // A small bundle's shards travel in the manifest ConfigMap too (for the mounted
        // fallback): no read, and no wait for the reader Role to name a new shard. The
        // bundle's hash checks them like any other.
        if let Some(inline) = cm.binary_data.as_ref().and_then(|d| d.get(&shard.name)) {
            cache.insert(shard.name.clone(), inline.0.clone());
            continue;
        }
        let cm_name = palisade_policy::transport::shard_cm(name, &shard.name);
        match api.get_opt(&cm_name).await {
            Ok(Some(cm)) => {
                let bytes = cm
                    .binary_data
                    .and_then(|mut d| d.remove(SHARD_KEY))
                    .map(|b| b.0);
                match bytes {
                    Some(bytes) => {
                        cache.insert(shard.name.clone(), bytes);
                    }
                    None => complete = false,
                }
            }
            Ok(None) => complete = false,
            Err(e) => {
                complete = false;
                tracing::warn!(error = %e, configmap = %cm_name, "cannot read bundle shard; reading it again shortly");
            }
        }
    }
    cache.retain(|k, _| manifest.shards.iter().any(|s| &s.name == k));
    store.apply("api", &manifest, |n| cache.get(n).map(Vec::as_slice));
    complete
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUJm3Qv7yzM6vQ6Yc0n8W0uQx1V1MwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";

    fn files(ca: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let (token, ca_path) = (dir.path().join("api-token"), dir.path().join("ca.crt"));
        std::fs::write(&token, "t0ken").expect("token");
        std::fs::write(&ca_path, ca).expect("ca");
        (dir, token, ca_path)
    }

    #[test]
    fn the_projected_files_and_the_kubelet_variables_make_the_client_config() {
        let (_dir, token, ca) = files(CA);
        let cfg =
            projected_config(&token, &ca, Some("10.96.0.1"), Some("443"), "shop").expect("config");
        assert_eq!(cfg.cluster_url.to_string(), "https://10.96.0.1:443/");
        assert_eq!(cfg.default_namespace, "shop");
        assert_eq!(cfg.root_cert.as_ref().map(Vec::len), Some(1));
        assert_eq!(cfg.root_cert_file.as_deref(), Some(ca.as_path()));
        let file = token.display().to_string();
        assert_eq!(cfg.auth_info.token_file.as_deref(), Some(file.as_str()));
        assert!(
            cfg.auth_info.token.is_none(),
            "re-read from the file as it rotates"
        );
        let v6 = projected_config(&token, &ca, Some("fd00::1"), Some("6443"), "shop");
        assert_eq!(
            v6.expect("config").cluster_url.to_string(),
            "https://[fd00::1]:6443/"
        );
    }

    #[test]
    fn the_watch_retries_within_seconds_and_starts_again_after_an_event() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::default();
        let delays: Vec<std::time::Duration> = (&mut b).take(12).collect();
        for (i, d) in delays.iter().enumerate() {
            let base = (WatchBackoff::FIRST * (1 << i.min(5))).min(WatchBackoff::MAX);
            assert!(
                *d >= base / 2 && *d < base * 3 / 2,
                "delay {i}: {d:?} around {base:?}"
            );
        }
        assert!(
            delays
                .iter()
                .all(|d| *d < std::time::Duration::from_secs(12))
        );
        b.reset();
        assert!(b.next().expect("a delay") < std::time::Duration::from_millis(375));
    }

    #[test]
    fn what_is_missing_is_named() {
        let (_dir, token, ca) = files(CA);
        let err = |host, port, token: &Path, ca: &Path| {
            projected_config(token, ca, host, port, "shop").expect_err("refused")
        };
        assert_eq!(err(None, Some("443"), &token, &ca).reason(), "NoServer");
        assert_eq!(err(Some(""), Some("443"), &token, &ca).reason(), "NoServer");
        assert_eq!(
            err(Some("a b"), Some("443"), &token, &ca).reason(),
            "BadServer"
        );
        let gone = token.with_file_name("nothing");
        let e = err(Some("h"), Some("443"), &gone, &ca);
        assert_eq!(e.reason(), "ProjectedFileUnreadable");
        assert!(e.to_string().contains("nothing"), "{e}");
        let (_d2, token2, not_pem) = files("not a certificate");
        let e = err(Some("h"), Some("443"), &token2, &not_pem);
        assert_eq!(e.reason(), "NoCertificate");
    }
}
