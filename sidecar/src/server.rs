//! The client-facing accept loop: HTTP/1.1 with keep-alive and h2c (prior knowledge) on one
//! port through hyper-util's auto builder, limits on head size and count, a header-read
//! timeout, an idle timeout (what counts as use: [`crate::idle`]), a bound on the concurrent
//! streams of an HTTP/2 connection, and graceful drain on shutdown within a bounded grace
//! period.
//!
//! An HTTP/2 client's requests run concurrently and go to the application through the shared
//! pool, one upstream connection per request in flight: `max_concurrent_streams` is therefore
//! also the most upstream connections one HTTP/2 client connection can hold at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::idle::{Activity, IdleIo};
use crate::proxy::{Connection, Proxy};

/// Limits and timeouts of client connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request head in bytes (→ 431).
    pub max_header_bytes: usize,
    /// Most header fields (→ 431).
    pub max_headers: usize,
    /// Time to receive a request head; also bounds the HTTP/1.1 keep-alive wait.
    pub header_read_timeout: Duration,
    /// No use (bytes for HTTP/1.x; request and response frames for HTTP/2) for this long
    /// closes the connection.
    pub idle_timeout: Duration,
    /// Most concurrent streams of one HTTP/2 connection (and so upstream connections).
    pub max_concurrent_streams: u32,
    /// Bound on the drain after shutdown is asked.
    pub drain_grace: Duration,
}

fn builder(cfg: &ServerConfig) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_buf_size(cfg.max_header_bytes)
        .max_headers(cfg.max_headers)
        .header_read_timeout(cfg.header_read_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .keep_alive_interval(cfg.idle_timeout / 2)
        .keep_alive_timeout(cfg.idle_timeout / 4);
    b
}

/// Accepts and serves connections until `shutdown` resolves, then drains: stops accepting,
/// lets in-flight requests finish (closing idle keep-alive connections) and upgraded
/// connections end for at most `drain_grace`, and returns the number of connections cut at
/// the deadline.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let builder = builder(&cfg);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_one(&builder, &graceful, stream, peer, &proxy, &cfg),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + cfg.drain_grace;
    let open = graceful.count();
    tracing::info!(connections = open, grace = ?cfg.drain_grace, "draining");
    let cut = match tokio::time::timeout_at(deadline, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    };
    // Upgraded connections left hyper when they switched protocols: they get what is left
    // of the grace period to end on their own.
    let tunnels = proxy.forwarder.tunnels();
    tunnels.close();
    if !tunnels.is_empty() {
        tracing::info!(tunnels = tunnels.len(), "waiting for upgraded connections");
    }
    match tokio::time::timeout_at(deadline, tunnels.wait()).await {
        Ok(()) => cut,
        Err(_) => cut + tunnels.len(),
    }
}

fn serve_one(
    builder: &Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    proxy: &Arc<Proxy>,
    cfg: &ServerConfig,
) {
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = TokioIo::new(IdleIo::new(stream, activity.clone()));
    let proxy_gauge = proxy.metrics.connections.clone();
    let proxy = proxy.clone();
    let state = Arc::new(Connection::default());
    let svc = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        let state = state.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, peer, &state).await) }
    });
    let conn = builder.serve_connection_with_upgrades(io, svc).into_owned();
    let conn = graceful.watch(conn);
    let idle = cfg.idle_timeout;
    let open = proxy_gauge.clone();
    open.inc();
    tokio::spawn(async move {
        tokio::select! {
            res = conn => if let Err(e) = res {
                tracing::debug!(error = %e, %peer, "client connection ended with an error");
            },
            () = activity.idle(idle) => tracing::debug!(%peer, "idle connection closed"),
        }
        open.dec();
    });
}
