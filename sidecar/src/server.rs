//! The client-facing accept loop: HTTP/1.x with keep-alive ([`crate::h1_server`]) and h2c
//! (prior knowledge, hyper's HTTP/2 server) on one port, told apart by the first bytes;
//! limits on head size and count, a header-read timeout, an idle timeout (what counts as use:
//! [`crate::idle`]), a bound on the concurrent streams of an HTTP/2 connection, and graceful
//! drain on shutdown within a bounded grace period.
//!
//! An HTTP/2 client's requests run concurrently and go to the application through the shared
//! pool, one upstream connection per request in flight: `max_concurrent_streams` is therefore
//! also the most upstream connections one HTTP/2 client connection can hold at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::server::conn::http2::Builder;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::h1_server::{self, Drain, Limits, ReqBody, Rewind};
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
    b.timer(TokioTimer::new())
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
    let server = Arc::new(Server {
        h2: builder(&cfg),
        drain: Drain::default(),
        cfg,
        proxy,
    });
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(server.clone().serve_one(stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + server.cfg.drain_grace;
    tracing::info!(connections = connections.len(), grace = ?server.cfg.drain_grace, "draining");
    server.drain.start();
    connections.close();
    let cut = match tokio::time::timeout_at(deadline, connections.wait()).await {
        Ok(()) => 0,
        Err(_) => connections.len(),
    };
    let proxy = &server.proxy;
    // Upgraded connections left their client connections when they switched protocols:
    // they get what is left of the grace period to end on their own.
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

/// What every client connection shares.
struct Server {
    h2: Builder<TokioExecutor>,
    /// Started when the server stops accepting.
    drain: Drain,
    cfg: ServerConfig,
    proxy: Arc<Proxy>,
}

impl Server {
    /// Serves one client connection until it ends, the idle timeout closes it, or the drain
    /// does (an HTTP/1.x connection between requests, an HTTP/2 one after its streams).
    async fn serve_one(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let open = self.proxy.metrics.connections.clone();
        open.inc();
        let idle = activity.clone().idle(self.cfg.idle_timeout);
        tokio::select! {
            () = self.serve_conn(stream, peer, activity) => {}
            () = idle => tracing::debug!(%peer, "idle connection closed"),
        }
        open.dec();
    }

    async fn serve_conn(&self, mut stream: TcpStream, peer: SocketAddr, activity: Activity) {
        let mut first = BytesMut::new();
        // The first bytes tell HTTP/2's preface from an HTTP/1.x request line. Bytes of the
        // preface are not use (see `crate::idle`); the header-read timeout bounds the wait.
        let sniffed = tokio::select! {
            sniffed = h1_server::sniff(&mut stream, &mut first) => sniffed,
            () = tokio::time::sleep(self.cfg.header_read_timeout) => return,
            () = self.drain.started() => return,
        };
        match sniffed {
            Ok(false) => {
                activity.touch();
                let limits = Limits {
                    max_head_bytes: self.cfg.max_header_bytes,
                    max_headers: self.cfg.max_headers,
                };
                h1_server::serve(
                    stream,
                    first,
                    peer,
                    self.proxy.clone(),
                    limits,
                    self.cfg.header_read_timeout,
                    activity,
                    self.drain.clone(),
                )
                .await;
            }
            Ok(true) => self.serve_h2(stream, first, peer, activity).await,
            Err(e) => tracing::debug!(error = %e, %peer, "client connection ended"),
        }
    }

    async fn serve_h2(
        &self,
        stream: TcpStream,
        first: BytesMut,
        peer: SocketAddr,
        activity: Activity,
    ) {
        let io = TokioIo::new(IdleIo::new(Rewind::new(first.freeze(), stream), activity));
        let proxy = self.proxy.clone();
        let state = Arc::new(Connection::default());
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let proxy = proxy.clone();
            let state = state.clone();
            let req = req.map(ReqBody::H2);
            async move { Ok::<_, Infallible>(proxy.handle(req, peer, &state).await) }
        });
        let conn = self.h2.serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, %peer, "client connection ended with an error");
                }
                return;
            }
            () = self.drain.started() => conn.as_mut().graceful_shutdown(),
        }
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, %peer, "client connection ended with an error");
        }
    }
}
