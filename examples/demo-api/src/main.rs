//! The demo API of `make demo`: a tiny HTTP/1.1 service that stands for "your API" behind
//! the Palisade sidecar. It has what abuse looks for — a login, a token endpoint, static
//! content — and `GET /headers`, which shows what the sidecar forwarded (flag headers,
//! `X-Forwarded-For`).
#![forbid(unsafe_code)]

mod routes;

use std::net::SocketAddr;

use clap::Parser;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A tiny HTTP API to protect in the Palisade demo.
#[derive(Debug, Parser)]
#[command(name = "palisade-demo-api", version, about)]
struct Args {
    /// Address to listen on (the sidecar forwards to it on loopback).
    #[arg(long, env = "DEMO_API_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "demo API listening");
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(routes::handle);
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
