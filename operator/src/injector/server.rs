//! The webhook's HTTPS server: tokio-rustls in front of an axum router, with the serving
//! certificate read per handshake from a [`CertStore`] so a renewed certificate is used by
//! the next connection without a restart. Every replica serves; none waits for leadership.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::middleware::Next;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The certificate served now; swapped atomically on renewal. Empty: handshakes fail.
#[derive(Debug, Default)]
pub struct CertStore(ArcSwapOption<CertifiedKey>);

impl CertStore {
    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.0.store(Some(key));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }
}

/// A rustls config that takes its certificate from `store` (HTTP/2 and HTTP/1.1).
pub fn tls_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Binds `addr` and serves `app` over TLS until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    store: Arc<CertStore>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "webhook listening");
    serve_on(listener, store, app, shutdown).await
}

/// How long a client may take for its TLS handshake, and then to start its first request.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1 client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take from its headers to its answer (its body included): a client
/// trickling a body is cut off with 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once from one address (the API server needs a few; a hostile pod
/// cannot hold more).
pub const MAX_CONNECTIONS_PER_PEER: usize = 32;
/// Connections open at once in all.
pub const MAX_CONNECTIONS: usize = 1024;

/// Serves `app` over TLS on an already bound listener until `shutdown` (see [`serve_with`]).
pub async fn serve_on(
    listener: TcpListener,
    store: Arc<CertStore>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls_config(store).map_err(std::io::Error::other)?);
    serve_with(listener, Some(acceptor), app, shutdown).await
}

/// Serves `app` on `listener`, over TLS with `tls`, until `shutdown`, bounded against slow and
/// greedy clients: at most [`MAX_CONNECTIONS`] connections ([`MAX_CONNECTIONS_PER_PEER`] from
/// one address; more are closed at once), [`START_TIMEOUT`] for the handshake and the first
/// request to begin, [`HEADER_TIMEOUT`] for HTTP/1 headers, [`REQUEST_TIMEOUT`] per request
/// (`408`). Body sizes are bounded by each router (`DefaultBodyLimit`).
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn(request_deadline));
    let open = Arc::new(Connections::default());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = shutdown.cancelled() => return Ok(()),
        };
        let Some(guard) = open.admit(peer.ip()) else {
            tracing::warn!(%peer, "connection refused: too many open (per address or in all)");
            drop(tcp);
            continue;
        };
        let (tls, app) = (tls.clone(), app.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let started = Arc::new(AtomicBool::new(false));
            let flag = started.clone();
            let app = app.layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: Next| {
                    flag.store(true, Ordering::Relaxed);
                    async move { next.run(req).await }
                },
            ));
            let service = TowerToHyperService::new(app);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let serve = async {
                match tls {
                    Some(acceptor) => {
                        let tls = tokio::time::timeout(START_TIMEOUT, acceptor.accept(tcp))
                            .await
                            .map_err(|_| "TLS handshake timed out".to_owned())?
                            .map_err(|e| format!("TLS handshake failed: {e}"))?;
                        builder
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    None => builder
                        .serve_connection(TokioIo::new(tcp), service)
                        .await
                        .map_err(|e| e.to_string()),
                }
            };
            // A client that never starts a request is dropped after START_TIMEOUT.
            let idle = async {
                tokio::time::sleep(START_TIMEOUT).await;
                if started.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                r = serve => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                },
                () = idle => tracing::debug!(%peer, "connection closed: no request within the start timeout"),
            }
        });
    }
}

/// Answers `408` to a request not answered within [`REQUEST_TIMEOUT`] (its body included).
async fn request_deadline(req: axum::extract::Request, next: Next) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (
            http::StatusCode::REQUEST_TIMEOUT,
            format!(
                "request not completed within {}s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
            .into_response(),
    }
}

/// Open connections, in all and per address.
#[derive(Debug, Default)]
struct Connections {
    per_peer: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds a connection's place; gives it back when dropped.
#[derive(Debug)]
struct ConnectionGuard {
    open: Arc<Connections>,
    peer: IpAddr,
}

impl Connections {
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionGuard> {
        let mut map = self
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = map.values().sum();
        let mine = map.entry(peer).or_default();
        if *mine >= MAX_CONNECTIONS_PER_PEER || total >= MAX_CONNECTIONS {
            return None;
        }
        *mine += 1;
        Some(ConnectionGuard {
            open: self.clone(),
            peer,
        })
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut map = self
            .open
            .per_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
    }
}
