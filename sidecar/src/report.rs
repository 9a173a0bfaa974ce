//! Sends window summaries to the operator's detection collector (`POST /v1/reports`),
//! authenticated with the pod's projected service-account token (audience `palisade`),
//! re-read from its file for every report since the kubelet rotates it. A report that
//! cannot be delivered is dropped after two retries, each on a new connection (behind the
//! collector Service it may reach another replica; a non-leader answers 503): the
//! collector's windows tolerate a lost report, and a sidecar never queues without bound.
//! With a CA bundle (`--collector-ca`) reports go over HTTPS, and the collector's certificate
//! must chain to that bundle and name the collector's host.

use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
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
    /// HTTPS with this configuration (trusting the collector's CA); `None`: plain HTTP.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Tries per report; each retry opens a new connection.
const ATTEMPTS: usize = 3;

/// A plain or an HTTPS client.
#[derive(Clone)]
enum ReportClient {
    Http(Client<HttpConnector, Full<Bytes>>),
    Https(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl ReportClient {
    async fn request(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        match self {
            Self::Http(c) => c.request(req).await,
            Self::Https(c) => c.request(req).await,
        }
        .map_err(|e| e.to_string())
    }
}

fn new_client(cfg: &ReportConfig) -> ReportClient {
    let Some(tls) = &cfg.tls else {
        return ReportClient::Http(Client::builder(TokioExecutor::new()).build_http());
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((**tls).clone())
        .https_only()
        .enable_http1()
        .build();
    ReportClient::Https(Client::builder(TokioExecutor::new()).build(https))
}

/// A TLS client configuration trusting only the certificates of `ca_pem`.
pub fn tls_config(ca_pem: &str) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Starts the reporter; returns the queue the counter sends reports into.
pub fn spawn(cfg: ReportConfig, sent: PromCounter, failed: PromCounter) -> mpsc::Sender<Report> {
    let (tx, mut rx) = mpsc::channel::<Report>(8);
    tokio::spawn(async move {
        let mut client = new_client(&cfg);
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/v1/reports", cfg.collector);
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
                        client = new_client(&cfg);
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
    client: &ReportClient,
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
        .map_err(|_| "collector timed out".to_owned())??;
    match resp.status() {
        StatusCode::ACCEPTED | StatusCode::OK => Ok(()),
        s => Err(format!("collector answered {s}")),
    }
}

#[cfg(test)]
mod tls_tests {
    #[test]
    fn a_collector_ca_without_a_certificate_is_refused_with_a_reason() {
        let e = super::tls_config("not a certificate").expect_err("no PEM");
        assert!(e.contains("no certificate"), "{e}");
        let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(super::tls_config(bad).is_err(), "not a certificate");
    }
}
