//! The admin server on its own port: `/metrics` (Prometheus text), `/live` (the process runs),
//! `/ready` (accepting traffic: not draining, and holding a policy bundle unless
//! `--ready-without-policy`).
//!
//! Limits, so that clients of this port (which any pod may reach unless a NetworkPolicy
//! says otherwise) cannot exhaust memory or file descriptors, nor starve the probes: at most
//! `max_connections` open at once, at most half of them (rounded up) from one peer address
//! (one more is answered `503` and closed at once); a request head must arrive within
//! `timeout`, and a connection on which nothing moves for `timeout` is closed.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};

use crate::body::{self, RespBody};
use crate::idle::{Activity, IdleIo};
use crate::metrics::ReasonLabel;
use crate::slots::Slots;
use crate::store::Store;

/// What a connection over the limit gets before it is closed.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Limits of the admin port.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Most connections open at once (one peer address: half of them, rounded up).
    pub max_connections: usize,
    /// Time to receive a request head, and the longest a connection may sit unused.
    pub timeout: Duration,
    /// Connections refused, by reason.
    pub refused: Family<ReasonLabel, Counter>,
}

/// What the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// The metrics registry.
    pub registry: Registry,
    /// False while draining.
    pub ready: Arc<AtomicBool>,
    /// Not ready until this store holds a bundle (`None` with `--ready-without-policy`).
    pub store: Option<Arc<Store>>,
}

impl AdminState {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.store.as_ref().is_none_or(|s| s.load().is_some())
    }
}

/// Serves the admin endpoints until the task is dropped.
pub async fn spawn(listener: TcpListener, state: Arc<AdminState>, cfg: AdminConfig) {
    let slots = Slots::new(cfg.max_connections, cfg.max_connections.div_ceil(2));
    let builder = Arc::new(builder(&cfg));
    let timeout = cfg.timeout;
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                tracing::debug!(%peer, reason = refused.reason(), "admin connection refused");
                let reason = refused.reason();
                cfg.refused.get_or_create(&ReasonLabel { reason }).inc();
                // Best effort and never waiting: a client that does not read just loses it.
                let _ = stream.try_write(BUSY);
                continue;
            }
        };
        let (state, builder) = (state.clone(), builder.clone());
        tokio::spawn(async move {
            serve_one(&builder, stream, state, timeout).await;
            drop(slot);
        });
    }
}

fn builder(cfg: &AdminConfig) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.timeout);
    b.http2().timer(TokioTimer::new()).max_concurrent_streams(4);
    b
}

async fn serve_one(
    builder: &Builder<TokioExecutor>,
    stream: TcpStream,
    state: Arc<AdminState>,
    timeout: Duration,
) {
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(&state, &req)) }
    });
    let activity = Activity::new();
    let io = TokioIo::new(IdleIo::new(stream, activity.clone()));
    tokio::select! {
        _ = builder.serve_connection(io, svc) => {}
        () = activity.idle(timeout) => {}
    }
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<RespBody> {
    match req.uri().path() {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
                Ok(()) => plain(
                    StatusCode::OK,
                    text,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(_) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encode failed\n".into(),
                    "text/plain",
                ),
            }
        }
        "/live" => plain(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/ready" if state.is_ready() => plain(StatusCode::OK, "ready\n".into(), "text/plain"),
        "/ready" => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready\n".into(),
            "text/plain",
        ),
        _ => plain(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

fn plain(status: StatusCode, text: String, content_type: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
