//! Sends window summaries to the operator's detection collector (`POST /v1/reports`),
//! authenticated with the pod's projected service-account token (audience `palisade`),
//! re-read from its file for every report since the kubelet rotates it. A report that
//! cannot be delivered is dropped after two retries, each on a new connection (behind the
//! collector Service it may reach another replica; a non-leader answers 503): the
//! collector's windows tolerate a lost report, and a sidecar never queues without bound.

use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade_detection::report::Report;
use prometheus_client::metrics::counter::Counter as PromCounter;
use tokio::sync::mpsc;

/// Where and how reports go.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// `host:port` of the collector.
    pub collector: String,
    /// The projected service-account token file.
    pub token_path: PathBuf,
}

/// Tries per report; each retry opens a new connection.
const ATTEMPTS: usize = 3;

fn new_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Starts the reporter; returns the queue the counter sends reports into.
pub fn spawn(cfg: ReportConfig, sent: PromCounter, failed: PromCounter) -> mpsc::Sender<Report> {
    let (tx, mut rx) = mpsc::channel::<Report>(8);
    tokio::spawn(async move {
        let mut client = new_client();
        let url = format!("http://{}/v1/reports", cfg.collector);
        while let Some(report) = rx.recv().await {
            let body = Bytes::from(report.to_json());
            let mut delivered = false;
            for _attempt in 0..ATTEMPTS {
                match send(&client, &url, &cfg, body.clone()).await {
                    Ok(()) => {
                        delivered = true;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "report not delivered");
                        // A fresh connection: behind the collector Service it may reach
                        // another replica (a non-leader answers 503).
                        client = new_client();
                    }
                }
            }
            if delivered {
                sent.inc()
            } else {
                failed.inc()
            };
        }
    });
    tx
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    cfg: &ReportConfig,
    body: Bytes,
) -> Result<(), String> {
    let token = tokio::fs::read_to_string(&cfg.token_path)
        .await
        .map_err(|e| format!("token {}: {e}", cfg.token_path.display()))?;
    let req = Request::post(url)
        .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "collector timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    match resp.status() {
        StatusCode::ACCEPTED | StatusCode::OK => Ok(()),
        s => Err(format!("collector answered {s}")),
    }
}
