//! The webhook's HTTPS server: tokio-rustls in front of an axum router, with the serving
//! certificate read per handshake from a [`CertStore`] so a renewed certificate is used by
//! the next connection without a restart. Every replica serves; none waits for leadership.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// Serves `app` over TLS on an already bound listener until `shutdown`.
pub async fn serve_on(
    listener: TcpListener,
    store: Arc<CertStore>,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls_config(store).map_err(std::io::Error::other)?);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = shutdown.cancelled() => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            };
            let service = TowerToHyperService::new(app);
            let conn = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = conn {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}
