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
//!
//! The collector Service may reach any operator replica; the one that owns this namespace's
//! collector shard names its endpoint in the signed detected-client document. Each report is
//! first sent straight there (verified under the collector's host name, as through the
//! Service), saving the replica behind the Service a forward; when the owner does not take it
//! (unreachable, handing the shard over), the report goes through the Service as before.

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

/// The endpoint of the replica owning this namespace's collector shard, as the last verified
/// detected-client document names it.
#[derive(Clone)]
pub struct OwnerHint(pub std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for OwnerHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OwnerHint").field(&(self.0)()).finish()
    }
}

/// Where and how reports go.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// `host:port` of the collector.
    pub collector: String,
    /// Where the owner of the namespace's collector shard listens, when known: reports go
    /// there first.
    pub owner: Option<OwnerHint>,
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
    /// Reports delivered straight to the replica owning the namespace's collector shard.
    pub direct: PromCounter,
}

/// Tries per round; each retry opens a new connection.
const ATTEMPTS: usize = 3;
/// First wait before another round after a failed one; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two rounds while the collector is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long one request to the collector may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shard owner that did not take a report is passed over (unless the detected
/// document names another one meanwhile): a crashed replica's address may not even refuse.
const OWNER_PAUSE: Duration = Duration::from_secs(30);

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

/// A client for the shard owner's own address that verifies its certificate under the
/// collector's host name (the name the operator's certificate carries), not the address.
fn owner_client(cfg: &ReportConfig) -> Option<ReportClient> {
    let Some(tls) = &cfg.tls else {
        return Some(ReportClient::Http(
            Client::builder(TokioExecutor::new()).build_http(),
        ));
    };
    let host = host_of(&cfg.collector);
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((**tls).clone())
        .https_only()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        .enable_http1()
        .build();
    Some(ReportClient::Https(
        Client::builder(TokioExecutor::new()).build(https),
    ))
}

/// The host of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            addr
        }
    });
    host.trim_start_matches('[').trim_end_matches(']')
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
    /// The shard owner's endpoint reports went to last, its URL and client.
    owner: Option<(String, String, ReportClient)>,
    /// The owner endpoint that last failed, and when.
    owner_failed: Option<(String, tokio::time::Instant)>,
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
            owner: None,
            owner_failed: None,
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

    /// Sends `body` straight to the shard owner, if one is named; `None`: not sent there
    /// (none named, or it did not take it), go through the Service.
    async fn send_to_owner(&mut self, body: &Bytes) -> Option<Result<(), Failure>> {
        let endpoint = self
            .cfg
            .owner
            .as_ref()
            .and_then(|h| (h.0)())
            .filter(|e| !e.is_empty() && *e != self.cfg.collector)?;
        if self
            .owner_failed
            .as_ref()
            .is_some_and(|(e, at)| *e == endpoint && at.elapsed() < OWNER_PAUSE)
        {
            return None;
        }
        if self.owner.as_ref().is_none_or(|(e, _, _)| *e != endpoint) {
            let scheme = if self.cfg.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let url = format!("{scheme}://{endpoint}/v1/reports");
            self.owner = owner_client(&self.cfg).map(|c| (endpoint, url, c));
        }
        let (endpoint, url, client) = self.owner.as_ref()?;
        match send(client, url, &self.cfg, body.clone()).await {
            Ok(()) => {
                self.metrics.direct.inc();
                Some(Ok(()))
            }
            Err(refused @ Failure::Refused(_)) => Some(Err(refused)),
            Err(e) => {
                tracing::debug!(%endpoint, error = ?e, "the shard owner did not take the report; \
                    sending it through the collector Service");
                self.owner_failed = Some((endpoint.clone(), tokio::time::Instant::now()));
                self.owner = None;
                None
            }
        }
    }

    async fn send_with_retries(&mut self, body: Bytes) -> Result<(), Failure> {
        if let Some(sent) = self.send_to_owner(&body).await {
            return sent;
        }
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
#[allow(clippy::unwrap_used)]
mod backlog_tests {
    use super::{
        Backlog, Failure, OwnerHint, ReportConfig, ReportMetrics, Reporter, classify, host_of,
    };
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

    /// A collector on loopback answering every report with `status`; the number it got.
    async fn collector(status: u16) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let got = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = got.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + length {
                            continue;
                        }
                        buf.drain(..end + 4 + length);
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, got)
    }

    #[tokio::test]
    async fn reports_go_to_the_named_shard_owner_and_through_the_service_when_it_fails() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t").unwrap();
        let (service, via_service) = collector(202).await;
        let (owner, at_owner) = collector(202).await;
        let (busy, at_busy) = collector(503).await;
        let named = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let hint = named.clone();
        let cfg = ReportConfig {
            collector: service,
            owner: Some(OwnerHint(std::sync::Arc::new(move || {
                hint.lock().unwrap().clone()
            }))),
            token_path: token,
            tls: None,
            backlog_bytes: 1 << 20,
        };
        let metrics = ReportMetrics::default();
        let mut r = Reporter::new(cfg, metrics.clone());
        // No owner named yet: through the Service.
        r.send_with_retries(body(10)).await.unwrap();
        assert_eq!((via_service.load(SeqCst), at_owner.load(SeqCst)), (1, 0));
        // Named: straight there, counted as direct.
        *named.lock().unwrap() = Some(owner.clone());
        r.send_with_retries(body(10)).await.unwrap();
        r.send_with_retries(body(10)).await.unwrap();
        assert_eq!((via_service.load(SeqCst), at_owner.load(SeqCst)), (1, 2));
        assert_eq!(metrics.direct.get(), 2);
        // An owner that does not take it (503: handing over): the Service takes it, and that
        // owner is passed over for a while; a newly named one is tried at once.
        *named.lock().unwrap() = Some(busy.clone());
        r.send_with_retries(body(10)).await.unwrap();
        r.send_with_retries(body(10)).await.unwrap();
        assert_eq!(at_busy.load(SeqCst), 1, "tried once, then paused");
        assert_eq!(via_service.load(SeqCst), 3);
        *named.lock().unwrap() = Some(owner);
        r.send_with_retries(body(10)).await.unwrap();
        assert_eq!(at_owner.load(SeqCst), 3);
        assert_eq!(metrics.direct.get(), 3);
    }

    #[test]
    fn the_host_of_an_endpoint_is_its_tls_name() {
        assert_eq!(
            host_of("palisade-collector.palisade-system.svc:9444"),
            "palisade-collector.palisade-system.svc"
        );
        assert_eq!(host_of("10.96.0.20:9444"), "10.96.0.20");
        assert_eq!(host_of("[fd00::20]:9444"), "fd00::20");
        assert_eq!(host_of("collector"), "collector");
    }
}
