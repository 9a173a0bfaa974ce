//! Sends window summaries to the operator's detection collector (`POST /v1/reports`),
//! authenticated with the pod's projected service-account token (audience `palisade`),
//! re-read from its file for every report since the kubelet rotates it.
//!
//! A report that cannot be delivered now (collector unreachable, restarting, failing over, a
//! non-leader answering 503…) is kept in a backlog, bounded in bytes
//! (`--report-backlog-bytes`), and sent later, oldest first: every report carries its own
//! slice start and sequence number, so the collector files a late report into the slice it
//! belongs to and ignores one it already has. Each try of the oldest report is made up to
//! three times, each on a new connection (behind the collector Service it may reach another
//! replica), then again after a backoff. When the backlog is full the oldest reports are
//! dropped; a report the collector refuses for what it is (400, 403, 413) is dropped at once.
//! Both are counted in `reports_failed`. At shutdown the counter hands over its last partial
//! slice and the backlog gets one last try.
//!
//! With a CA bundle (`--collector-ca`) reports go over HTTPS, and the collector's certificate
//! must chain to that bundle and name the collector's host.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade_detection::report::Report;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::gauge::Gauge;
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
    /// Undelivered reports kept for a later try, at most this many bytes of JSON.
    pub backlog_bytes: usize,
}

/// The reporter's metrics.
#[derive(Debug, Clone, Default)]
pub struct ReportMetrics {
    /// Reports delivered.
    pub sent: PromCounter,
    /// Reports dropped: refused by the collector, pushed out of a full backlog, or left at
    /// shutdown.
    pub failed: PromCounter,
    /// Reports in the backlog.
    pub pending: Gauge,
}

/// Tries per round; each retry opens a new connection.
const ATTEMPTS: usize = 3;
/// First wait before another round after a failed one; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two rounds while the collector is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long one request to the collector may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Undelivered reports (JSON bodies), oldest first, at most `max_bytes` in all.
#[derive(Debug)]
pub(crate) struct Backlog {
    queue: VecDeque<Bytes>,
    bytes: usize,
    max_bytes: usize,
}

impl Backlog {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Appends a report; returns how many reports were dropped to stay within the bound
    /// (the oldest first, or this one if it alone is over the bound).
    pub(crate) fn push(&mut self, body: Bytes) -> u64 {
        if body.len() > self.max_bytes {
            return 1;
        }
        let mut dropped = 0;
        while self.bytes + body.len() > self.max_bytes {
            self.pop();
            dropped += 1;
        }
        self.bytes += body.len();
        self.queue.push_back(body);
        dropped
    }

    fn front(&self) -> Option<&Bytes> {
        self.queue.front()
    }

    fn pop(&mut self) {
        if let Some(b) = self.queue.pop_front() {
            self.bytes -= b.len();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// Why a delivery failed.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Worth another try later: no connection, a timeout, a 5xx, a 401 (the token may have
    /// been rotated in between).
    Transient(String),
    /// The collector refused the report itself (400, 403, 413): it would refuse it again.
    Refused(String),
}

/// The reporter task's state.
struct Reporter {
    cfg: ReportConfig,
    url: String,
    client: ReportClient,
    backlog: Backlog,
    metrics: ReportMetrics,
    /// Set while the collector is unreachable: the current wait between rounds, and when
    /// the next round is due.
    backoff: Option<(Duration, tokio::time::Instant)>,
    /// Summaries dropped from the full backlog since the collector was last reachable
    /// (logged once per outage, counted in the metric every time).
    dropped_in_outage: u64,
}

impl Reporter {
    fn new(cfg: ReportConfig, metrics: ReportMetrics) -> Self {
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        Self {
            url: format!("{scheme}://{}/v1/reports", cfg.collector),
            client: new_client(&cfg),
            backlog: Backlog::new(cfg.backlog_bytes),
            cfg,
            metrics,
            backoff: None,
            dropped_in_outage: 0,
        }
    }

    fn enqueue(&mut self, report: &Report) {
        let dropped = self.backlog.push(Bytes::from(report.to_json()));
        if dropped > 0 {
            self.metrics.failed.inc_by(dropped);
            if self.dropped_in_outage == 0 {
                tracing::warn!(
                    max_bytes = self.backlog.max_bytes,
                    "report backlog full; the oldest window summaries are dropped until the \
                     collector is reachable (palisade_sidecar_reports_failed_total)"
                );
            }
            self.dropped_in_outage += dropped;
        }
        self.update_pending();
    }

    fn update_pending(&self) {
        self.metrics
            .pending
            .set(i64::try_from(self.backlog.len()).unwrap_or(i64::MAX));
    }

    /// Sends the backlog, oldest first, until it is empty or the collector is unreachable.
    async fn deliver(&mut self) {
        let held = self.backlog.len();
        while let Some(body) = self.backlog.front().cloned() {
            match self.send_with_retries(body).await {
                Ok(()) => {
                    self.metrics.sent.inc();
                }
                Err(Failure::Refused(e)) => {
                    self.metrics.failed.inc();
                    tracing::warn!(error = %e, "the collector refused a window summary; dropped");
                }
                Err(Failure::Transient(e)) => {
                    if self.backoff.is_none() {
                        tracing::warn!(
                            error = %e,
                            pending = self.backlog.len(),
                            "collector unreachable; window summaries are kept for a later try"
                        );
                    }
                    let wait = self
                        .backoff
                        .map_or(MIN_BACKOFF, |(b, _)| (b * 2).min(MAX_BACKOFF));
                    self.backoff = Some((wait, tokio::time::Instant::now() + wait));
                    self.update_pending();
                    return;
                }
            }
            self.backlog.pop();
        }
        if self.backoff.take().is_some() {
            tracing::info!(
                delivered = held,
                dropped = self.dropped_in_outage,
                "collector reachable again; held window summaries sent"
            );
        }
        self.dropped_in_outage = 0;
        self.update_pending();
    }

    async fn send_with_retries(&mut self, body: Bytes) -> Result<(), Failure> {
        let mut last = Failure::Transient(String::new());
        for _attempt in 0..ATTEMPTS {
            match send(&self.client, &self.url, &self.cfg, body.clone()).await {
                Ok(()) => return Ok(()),
                Err(refused @ Failure::Refused(_)) => return Err(refused),
                Err(e) => {
                    tracing::debug!(error = ?e, "report not delivered");
                    // A fresh connection: behind the collector Service it may reach
                    // another replica (a non-leader answers 503).
                    self.client = new_client(&self.cfg);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Runs until the counter closes the queue, then gives the backlog one last try.
    async fn run(mut self, mut rx: mpsc::Receiver<Report>) {
        loop {
            let due = self.backoff.map(|(_, at)| at);
            tokio::select! {
                report = rx.recv() => match report {
                    Some(r) => {
                        self.enqueue(&r);
                        if self.backoff.is_some() {
                            continue;
                        }
                    }
                    None => break,
                },
                () = sleep_until_or_never(due) => {}
            }
            self.deliver().await;
        }
        self.backoff = None;
        self.deliver().await;
        let left = self.backlog.len() as u64;
        if left > 0 {
            self.metrics.failed.inc_by(left);
            tracing::warn!(left, "window summaries not delivered before exit");
        }
    }
}

async fn sleep_until_or_never(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts the reporter; returns the queue the counter sends reports into and the task,
/// which ends once the queue is closed and the backlog had its last try.
pub fn spawn(
    cfg: ReportConfig,
    metrics: ReportMetrics,
) -> (mpsc::Sender<Report>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Report>(8);
    let task = tokio::spawn(Reporter::new(cfg, metrics).run(rx));
    (tx, task)
}

async fn send(
    client: &ReportClient,
    url: &str,
    cfg: &ReportConfig,
    body: Bytes,
) -> Result<(), Failure> {
    let token = tokio::fs::read_to_string(&cfg.token_path)
        .await
        .map_err(|e| Failure::Transient(format!("token {}: {e}", cfg.token_path.display())))?;
    let req = Request::post(url)
        .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| Failure::Transient(e.to_string()))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(Failure::Transient)?;
        let status = resp.status();
        // Read the (short) answer: it explains a refusal, and a read body lets the
        // connection be reused.
        let answer = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        Ok::<_, Failure>((status, answer))
    };
    let (status, answer) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| Failure::Transient("collector timed out".to_owned()))??;
    classify(status, &answer)
}

/// What an answer of the collector means for the report.
fn classify(status: StatusCode, answer: &str) -> Result<(), Failure> {
    let what = || format!("collector answered {status}: {answer}");
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::PAYLOAD_TOO_LARGE => {
            Err(Failure::Refused(what()))
        }
        _ => Err(Failure::Transient(what())),
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

#[cfg(test)]
mod backlog_tests {
    use super::{Backlog, Failure, classify};
    use bytes::Bytes;
    use http::StatusCode;

    fn body(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn the_backlog_keeps_the_newest_reports_within_its_bound() {
        let mut b = Backlog::new(100);
        assert_eq!(b.push(body(40)), 0);
        assert_eq!(b.push(body(40)), 0);
        assert_eq!((b.len(), b.bytes), (2, 80));
        // 80 + 30 > 100: the oldest goes.
        assert_eq!(b.push(body(30)), 1);
        assert_eq!((b.len(), b.bytes), (2, 70));
        assert_eq!(b.front().map(Bytes::len), Some(40));
        // Exactly the bound fits; a report larger than the bound is dropped by itself.
        assert_eq!(b.push(body(30)), 0);
        assert_eq!(b.bytes, 100);
        assert_eq!(b.push(body(101)), 1);
        assert_eq!((b.len(), b.bytes), (3, 100));
        b.pop();
        assert_eq!((b.len(), b.bytes), (2, 60));
    }

    #[test]
    fn refusals_are_dropped_and_outages_retried() {
        assert_eq!(classify(StatusCode::ACCEPTED, ""), Ok(()));
        for s in [
            StatusCode::BAD_REQUEST,
            StatusCode::FORBIDDEN,
            StatusCode::PAYLOAD_TOO_LARGE,
        ] {
            assert!(
                matches!(classify(s, "why"), Err(Failure::Refused(m)) if m.contains("why")),
                "{s}"
            );
        }
        for s in [
            StatusCode::UNAUTHORIZED,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::BAD_GATEWAY,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert!(matches!(classify(s, ""), Err(Failure::Transient(_))), "{s}");
        }
    }
}
