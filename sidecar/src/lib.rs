//! The Palisade sidecar: a reverse proxy in front of each protected API container that
//! identifies the client, enforces the namespace's policy bundle and counts for detection.
#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod client_ip;
pub mod config;
pub mod count;
pub mod credentials;
pub mod enforce;
pub mod forward;
pub mod h1;
pub mod h1_server;
pub mod hits;
pub mod identify;
pub mod idle;
pub mod jwt;
pub mod limit;
pub mod metrics;
pub mod proxy;
pub mod report;
pub mod rescue;
pub mod sanitize;
pub mod server;
pub mod slots;
pub mod source_file;
pub mod source_kube;
pub mod store;
pub mod target;
pub mod telemetry;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::forward::{Forwarder, UpstreamConfig};
use crate::proxy::Proxy;
use crate::server::ServerConfig;

/// A started sidecar: where it listens, and how to stop it.
#[derive(Debug)]
pub struct Sidecar {
    /// Bound proxy address.
    pub proxy_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<usize>,
    store: Arc<store::Store>,
    sources: Vec<tokio::task::JoinHandle<()>>,
    reporting: Option<Reporting>,
}

/// The counting and reporting tasks, finished at shutdown.
#[derive(Debug)]
struct Reporting {
    /// Tells the counter to send its last partial slice and stop.
    finish: tokio_util::sync::CancellationToken,
    /// The reporter; it ends after the last report and one last try of its backlog.
    reporter: tokio::task::JoinHandle<()>,
}

/// How long shutdown waits for the last reports to reach the collector.
const REPORT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl Sidecar {
    /// The policy store (tests read the version in force).
    pub fn store(&self) -> &Arc<store::Store> {
        &self.store
    }

    /// Marks not ready, stops accepting and drains; then sends the last counts to the
    /// collector (waiting at most 3 s). Returns the connections cut at the deadline of the
    /// grace period.
    pub async fn shutdown(self) -> usize {
        self.sources.iter().for_each(tokio::task::JoinHandle::abort);
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.stop.send(());
        let cut = self.served.await.unwrap_or(0);
        if let Some(r) = self.reporting {
            r.finish.cancel();
            if tokio::time::timeout(REPORT_FLUSH_TIMEOUT, r.reporter)
                .await
                .is_err()
            {
                tracing::warn!("the last window summaries were not delivered in time");
            }
        }
        cut
    }
}

/// Requires signed bundles when the operator's keys are given.
fn with_bundle_keys(
    store: store::Store,
    keys: Option<&str>,
    metrics: &metrics::Metrics,
) -> anyhow::Result<store::Store> {
    let Some(keys) = keys else {
        tracing::warn!(
            "bundle signatures are not checked (no --bundle-keys): anyone who can write the \
             bundle ConfigMaps sets this pod's policy; the injector sets the operator's keys"
        );
        return Ok(store);
    };
    let verifier = palisade_policy::sign::Verifier::parse(keys)
        .map_err(|e| anyhow::anyhow!("--bundle-keys (PALISADE_BUNDLE_KEYS): {e}"))?;
    let ids: Vec<&str> = verifier.trusted_ids().collect();
    tracing::info!(keys = ?ids, "bundles are applied only when the operator signed them");
    metrics.bundle_signatures_checked.set(1);
    Ok(store.with_verifier(verifier))
}

/// Binds both ports and starts serving in the background.
pub async fn start(cfg: Config) -> anyhow::Result<Sidecar> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding --listen {}", cfg.listen))?;
    let admin = TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("binding --admin-listen {}", cfg.admin_listen))?;
    let (proxy_addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
    tracing::info!(addr = %proxy_addr, workers = cfg.workers(), "proxy listening");
    tracing::info!(addr = %admin_addr, "admin listening");
    let mut registry = Registry::default();
    let metrics = Arc::new(metrics::Metrics::new(&mut registry));
    let labels = store::parse_labels(&pod_labels(&cfg)?).map_err(anyhow::Error::msg)?;
    client_ip::log_trust(&cfg.identify.trusted_proxies, cfg.identify.trusted_hops);
    let store = Arc::new(with_bundle_keys(
        store::Store::new(labels, metrics.clone())
            .with_rate_limit_clients(cfg.policy.rate_limit_clients),
        cfg.policy.bundle_keys.as_deref(),
        &metrics,
    )?);
    let mut sources = spawn_sources(&cfg, &store);
    sources.push(tokio::spawn(grace(store.clone(), cfg.policy.policy_grace)));
    let identifier = Arc::new(identify::Identifier::new(cfg.identify.clone()));
    let jwt = identifier.jwt();
    jwt.log_mode(cfg.identify.wants_claims());
    metrics.set_jwt_mode(jwt.mode().as_str(), jwt.keys());
    sources.push(tokio::spawn(jwt::spawn_reload(
        identifier.clone(),
        cfg.policy.bundle_poll,
        metrics.clone(),
    )));
    let ready = Arc::new(AtomicBool::new(true));
    let admin_state = Arc::new(admin::AdminState {
        registry,
        ready: ready.clone(),
        store: (cfg.policy.fail_closed || !cfg.policy.ready_without_policy).then(|| store.clone()),
    });
    let admin_cfg = admin::AdminConfig {
        max_connections: cfg.admin_max_connections,
        timeout: cfg.admin_timeout,
        refused: metrics.admin_refused.clone(),
    };
    tokio::spawn(admin::spawn(admin, admin_state, admin_cfg));
    let (counter, reporting) = counter(&cfg, &metrics, &store).unzip();
    let proxy = Arc::new(Proxy {
        forwarder: Forwarder::new(upstream_config(&cfg), metrics.tunnels.clone()),
        metrics,
        max_uri_bytes: cfg.max_uri_bytes,
        identifier,
        store: store.clone(),
        enforce: enforce::EnforceConfig {
            fail_closed: cfg.policy.fail_closed,
            observe: cfg.policy.observe,
            debug_headers: cfg.policy.debug_headers,
        },
        counter,
        token_endpoint: cfg.detection.token_endpoint.clone(),
        paths: target::PathConfig {
            escaped_slashes: cfg.policy.escaped_slashes,
            forward_original: cfg.policy.forward_original_path,
        },
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let served = tokio::spawn(server::serve(listener, proxy, server_config(&cfg), stopped));
    Ok(Sidecar {
        proxy_addr,
        admin_addr,
        ready,
        stop,
        served,
        store,
        sources,
        reporting,
    })
}

/// Starts, serves until SIGTERM/SIGINT, drains, returns.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let sidecar = start(cfg).await?;
    shutdown_signal().await;
    let cut = sidecar.shutdown().await;
    tracing::info!(cut, "drained; exiting");
    Ok(())
}

/// The pod labels: the file's when `--pod-labels-file` is set, else `--pod-labels`.
fn pod_labels(cfg: &Config) -> anyhow::Result<String> {
    match &cfg.policy.pod_labels_file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display())),
        None => Ok(cfg.policy.pod_labels.clone()),
    }
}

/// Starts the bundle sources that are configured: the mounted file and/or the API watch.
fn spawn_sources(cfg: &Config, store: &Arc<store::Store>) -> Vec<tokio::task::JoinHandle<()>> {
    let p = &cfg.policy;
    let mut tasks = Vec::new();
    if let Some(path) = &p.bundle_path {
        tasks.push(tokio::spawn(source_file::spawn(
            store.clone(),
            path.clone(),
            p.bundle_poll,
        )));
    }
    if let Some(name) = &p.bundle_configmap {
        let (ns, detected) = (p.namespace.clone(), p.detected_configmap.clone());
        let access = source_kube::ApiAccess {
            token: p.api_token_path.clone(),
            ca: p.api_ca_path.clone(),
        };
        let task = source_kube::spawn(store.clone(), access, ns, name.clone(), detected);
        tasks.push(tokio::spawn(task));
    }
    if tasks.is_empty() {
        tracing::warn!("no --bundle-path or --bundle-configmap: no policy will ever be loaded");
    }
    tasks
}

/// Waits out the start-up grace, then says whether the pod runs without policy.
async fn grace(store: Arc<store::Store>, grace: std::time::Duration) {
    tokio::time::sleep(grace).await;
    store.check_grace(grace);
}

/// Counting and reporting run only when a collector is configured.
fn counter(
    cfg: &Config,
    metrics: &metrics::Metrics,
    store: &Arc<store::Store>,
) -> Option<(count::CountHandle, Reporting)> {
    let d = &cfg.detection;
    let collector = d.collector_addr.clone().filter(|a| !a.is_empty())?;
    let tls = d
        .collector_ca
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|ca| report::tls_config(ca).ok())
        .map(Arc::new);
    let hint = store.clone();
    let rc = report::ReportConfig {
        collector,
        owner: Some(report::OwnerHint(Arc::new(move || hint.collector_owner()))),
        token_path: d.token_path.clone(),
        tls,
        backlog_bytes: d.report_backlog_bytes,
    };
    let (reports, reporter) = report::spawn(rc, metrics.reports.clone());
    let id = palisade_detection::report::SidecarId {
        pod: d.pod_name.clone(),
        workload: d.workload_name(),
        namespace: cfg.policy.namespace.clone(),
    };
    let finish = tokio_util::sync::CancellationToken::new();
    let handle = count::spawn(
        id,
        d.report_interval,
        metrics.count_dropped.clone(),
        reports,
        finish.clone(),
        store.clone(),
    );
    Some((handle, Reporting { finish, reporter }))
}

fn upstream_config(cfg: &Config) -> UpstreamConfig {
    UpstreamConfig {
        addr: SocketAddr::new(cfg.upstream_host, cfg.upstream_port),
        connect_timeout: cfg.upstream_connect_timeout,
        response_timeout: cfg.upstream_timeout,
        pool_idle: cfg.upstream_pool_idle,
        tunnel_idle: cfg.tunnel_idle_timeout,
    }
}

fn server_config(cfg: &Config) -> ServerConfig {
    ServerConfig {
        max_header_bytes: cfg.max_header_bytes,
        max_headers: cfg.max_headers,
        header_read_timeout: cfg.header_read_timeout,
        idle_timeout: cfg.idle_timeout,
        max_concurrent_streams: cfg.max_concurrent_streams,
        drain_grace: cfg.drain_grace,
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
