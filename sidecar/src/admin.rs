//! The admin server on its own port: `/metrics` (Prometheus text), `/live` (the process runs),
//! `/ready` (accepting traffic: not draining, and holding a bundle when `--fail-closed`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::body::{self, RespBody};
use crate::store::Store;

/// What the admin endpoints read.
#[derive(Debug)]
pub struct AdminState {
    /// The metrics registry.
    pub registry: Registry,
    /// False while draining.
    pub ready: Arc<AtomicBool>,
    /// With `--fail-closed`: not ready until this store holds a bundle.
    pub store: Option<Arc<Store>>,
}

impl AdminState {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.store.as_ref().is_none_or(|s| s.load().is_some())
    }
}

/// Serves the admin endpoints until the task is dropped.
pub async fn spawn(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
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
