//! Shared test support: a tiny application server, an in-process sidecar, HTTP clients.
#![allow(dead_code, clippy::unwrap_used)]

pub mod bundle;
pub mod mmdb;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_sidecar::Sidecar;
use palisade_sidecar::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type AppBody = BoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> AppBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Starts an application on 127.0.0.1 answering with `handler`; returns its address.
pub async fn app<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<AppBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req, peer);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An application that answers 200 with a description of what it received.
pub async fn echo_app() -> SocketAddr {
    app(|req, peer| async move {
        let h = req.headers();
        let get = |n: &str| {
            h.get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let desc = serde_json::json!({
            "method": req.method().as_str(),
            "target": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "host": get("host"),
            "xff": get("x-forwarded-for"),
            "xfp": get("x-forwarded-proto"),
            "peer_port": peer.port(),
            "headers": h.keys().map(|k| k.as_str().to_owned()).collect::<Vec<_>>(),
            "flag": get("x-palisade-flag"),
        });
        Response::new(full(desc.to_string()))
    })
    .await
}

/// Parses sidecar flags (ports on 127.0.0.1:0 unless given) for an app on `app`.
pub fn config(app: SocketAddr, extra: &[&str]) -> Config {
    let port = app.port().to_string();
    let mut args = vec![
        "palisade-sidecar",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream-port",
        &port,
    ];
    args.extend_from_slice(extra);
    let cfg = Config::try_parse_from(args).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// Starts an in-process sidecar in front of a new echo app that reads its bundle from `dir`
/// (polled every 20 ms) and takes `X-Forwarded-For` from loopback peers, so a test chooses
/// its client addresses; `extra` flags are added.
pub async fn file_sidecar(dir: &std::path::Path, extra: &[&str]) -> Sidecar {
    let path = dir.to_str().unwrap().to_owned();
    let mut args = vec![
        "--bundle-path",
        &path,
        "--bundle-poll",
        "20ms",
        "--trusted-proxies",
        "127.0.0.0/8",
    ];
    args.extend_from_slice(extra);
    sidecar(echo_app().await, &args).await
}

/// Starts an in-process sidecar in front of `app`.
pub async fn sidecar(app: SocketAddr, extra: &[&str]) -> Sidecar {
    palisade_sidecar::start(config(app, extra)).await.unwrap()
}

/// An HTTP/1.1 connection to `addr`.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<AppBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// An HTTP/2 connection (prior knowledge) to `addr`.
pub async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<AppBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends one GET over a fresh HTTP/1.1 connection; returns status, headers, body text.
pub async fn get(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut sender = h1(addr).await;
    let mut req = Request::get(target).header("host", "api.example");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(full("")).unwrap())
        .await
        .unwrap();
    read(resp).await
}

/// Sends on an existing connection once it is ready; returns status, headers, body text.
pub async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<AppBody>,
    req: Request<AppBody>,
) -> (u16, http::HeaderMap, String) {
    sender.ready().await.unwrap();
    read(sender.send_request(req).await.unwrap()).await
}

pub async fn read(resp: Response<Incoming>) -> (u16, http::HeaderMap, String) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Writes raw bytes on a new connection and reads until the server closes it.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the Prometheus text of the admin port.
pub async fn metrics(sidecar: &Sidecar) -> String {
    get(sidecar.admin_addr, "/metrics", &[]).await.2
}

/// Waits until the sidecar enforces a bundle whose hash is `hash`.
pub async fn wait_for_bundle(sidecar: &Sidecar, hash: &str) {
    loop {
        if sidecar.store().load().is_some_and(|l| l.hash == hash) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// How long a test waits for something that must happen (a report, a log line, a drain)
/// before it fails: `PALISADE_E2E_PATIENCE` seconds as for the e2e suite, default 30. A
/// bound for hangs only, never a speed goal: a busy machine may take most of it.
pub fn patience() -> std::time::Duration {
    let secs = std::env::var("PALISADE_E2E_PATIENCE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(30);
    std::time::Duration::from_secs(secs)
}
