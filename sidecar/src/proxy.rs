//! The request pipeline, in order: check limits → drop the client's hop-by-hop headers →
//! normalise the path → identify the client → drop reserved headers → enforce the policy →
//! forward to the application; every failure goes through `rescue`, every request is counted.
//! (Plain async functions rather than tower layers: each step is a function of the previous
//! one's output, and the chain stays readable on one screen without boxing services.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::h1_server::ReqBody;
use http::{Request, Response};

use crate::body::{self, RespBody};
use crate::count::{CountHandle, Fact, OwnedAttrs};
use crate::enforce::{DEBUG_HEADER, EnforceConfig, Outcome, enforce};
use crate::forward::{Affinity, Forwarder};
use crate::identify::{Identifier, Identity, Memo};
use crate::metrics::Metrics;
use crate::metrics::ReasonLabel;
use crate::rescue::{ProxyError, rescue};
use crate::sanitize;
use crate::store::Store;
use crate::target;
use crate::tunnel::TunnelClosed;
use palisade_detection::facts::Responder;
use palisade_detection::report::{MAX_SAMPLE_TEXT, bounded_text};
use palisade_detection::sequence::PathShape;

/// What one client connection keeps between its requests: its upstream connection and what
/// its requests repeat ([`Memo`]).
#[derive(Debug, Default)]
pub struct Connection {
    /// The upstream connection of this client connection.
    pub affinity: Affinity,
    memo: std::sync::Mutex<Memo>,
}

impl Connection {
    /// Runs `f` with the connection's memo. The requests of an HTTP/1.x connection come one at
    /// a time; a concurrent HTTP/2 request that finds the memo in use gets an empty one rather
    /// than wait.
    fn with_memo<R>(&self, f: impl FnOnce(&mut Memo) -> R) -> R {
        match self.memo.try_lock() {
            Ok(mut memo) => f(&mut memo),
            Err(_) => f(&mut Memo::default()),
        }
    }
}

/// Everything the request path reads.
#[derive(Debug)]
pub struct Proxy {
    /// Client to the application.
    pub forwarder: Forwarder,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// Longest request target accepted.
    pub max_uri_bytes: usize,
    /// Client identification.
    pub identifier: Arc<Identifier>,
    /// The policy in force.
    pub store: Arc<Store>,
    /// Enforcement switches.
    pub enforce: EnforceConfig,
    /// Counting for detection (when a collector is configured).
    pub counter: Option<CountHandle>,
    /// Path of the OAuth token endpoint.
    pub token_endpoint: String,
    /// Path normalisation.
    pub paths: target::PathConfig,
}

impl Proxy {
    /// Answers one request; never fails (errors become responses).
    /// `conn` is the client connection the request came on. A request whose future is
    /// dropped before it ends (its client left: an HTTP/1 connection closed, an HTTP/2
    /// stream reset) is counted as `abandoned`.
    pub async fn handle(
        &self,
        req: Request<ReqBody>,
        peer: SocketAddr,
        conn: &Connection,
    ) -> Response<RespBody> {
        let mut ended = Ended {
            metrics: &self.metrics,
            start: Instant::now(),
            verdict: "abandoned",
        };
        let (verdict, resp) = match self.process(req, peer, conn).await {
            Ok(ok) => ok,
            Err(e) => {
                self.failed(&e);
                ("error", rescue(&e))
            }
        };
        ended.verdict = verdict;
        resp
    }

    /// Counts and logs a failed request by its error.
    fn failed(&self, e: &ProxyError) {
        if e.is_upstream() {
            self.metrics
                .upstream_errors
                .get_or_create(&ReasonLabel { reason: e.reason() })
                .inc();
            tracing::warn!(reason = e.reason(), error = %e, "upstream failed");
        }
        if let ProxyError::Path(p) = e {
            self.metrics.rejected_path(p.reason());
        }
    }

    async fn process(
        &self,
        req: Request<ReqBody>,
        peer: SocketAddr,
        conn: &Connection,
    ) -> Result<(&'static str, Response<RespBody>), ProxyError> {
        let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target_len > self.max_uri_bytes {
            return Err(ProxyError::UriTooLong {
                len: target_len,
                max: self.max_uri_bytes,
            });
        }
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::Connect);
        }
        same_authority(&req)?;
        // The client's hop-by-hop headers go first: the sidecar identifies the client from
        // what the application will see, and nothing it adds below can be named by them.
        let mut req = req;
        sanitize::strip_client_hop_by_hop(&mut req);
        let (mut parts, body) = req.into_parts();
        let match_path = target::prepare(self.paths, &mut parts)?;
        let loaded = self.store.load();
        let trusted = loaded
            .as_deref()
            .and_then(|l| l.policy.bundle().trusted_proxies.as_ref());
        let who = conn.with_memo(|memo| {
            self.identifier
                .identify_with(&parts, peer.ip(), trusted, memo)
        });
        if let Some(refused) = who.credentials.refused {
            return Err(refused.into());
        }
        sanitize::strip_reserved(&mut parts.headers);
        self.metrics.client_ip(who.ip_source.as_str());
        self.metrics.ignored_headers(who.ignored_headers);
        self.metrics.jwt_claims(who.claims);
        let (verdict, outcome) = enforce(
            self.enforce,
            &self.store,
            &self.metrics,
            &who,
            match_path.as_deref(),
            &mut parts,
        )?;
        // What detection needs of the request, taken before the request moves upstream
        // (a few hashes and flags; no copy of the headers).
        let fact = self.fact(&who, &parts, conn);
        let debug = match outcome {
            Outcome::Answer(resp) => {
                return Ok((verdict, self.count(fact, resp, Responder::Sidecar)));
            }
            Outcome::Hold(resp, delay) => {
                // Counted before the hold: a client that leaves during it was denied all
                // the same.
                let resp = self.count(fact, resp, Responder::Sidecar);
                if !crate::limit::tarpit(delay).await {
                    self.metrics.tarpit_skipped.inc();
                }
                return Ok((verdict, resp));
            }
            Outcome::Forward(debug) => debug,
        };
        let req = Request::from_parts(parts, body);
        let mut asked = Asked(self.counter.as_ref().zip(fact));
        let resp = match self.forwarder.forward(req, peer.ip(), &conn.affinity).await {
            Ok(resp) => resp,
            Err(e) => {
                // The application failed (its 502 or 504), or the request could not be sent
                // (the sidecar's own refusal): counted either way.
                self.failed(&e);
                let responder = if e.is_upstream() {
                    Responder::Upstream
                } else {
                    Responder::Sidecar
                };
                return Ok(("error", self.count(asked.take(), rescue(&e), responder)));
            }
        };
        let mut resp = self.count(asked.take(), resp, Responder::Upstream);
        if let Some(v) = debug {
            resp.headers_mut().insert(DEBUG_HEADER, v);
        }
        Ok((verdict, resp))
    }

    /// What detection needs of a request (`None` when nothing counts): the response's
    /// status and size are filled in by [`Self::count`].
    fn fact(
        &self,
        who: &Identity,
        parts: &http::request::Parts,
        conn: &Connection,
    ) -> Option<Fact> {
        let counter = self.counter.as_ref()?;
        let attrs = counter.sample_attributes().then(|| {
            Box::new(OwnedAttrs {
                product: who.product.clone(),
                app: who.app.clone(),
                developer: who.developer.clone(),
                region: who.region.map(|r| String::from_utf8_lossy(&r).into_owned()),
                path: Some(bounded_text(parts.uri.path(), MAX_SAMPLE_TEXT)),
                method: who
                    .credentials
                    .methods
                    .first()
                    .map_or(parts.method.as_str(), http::Method::as_str)
                    .to_owned(),
                user_agent: parts
                    .headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(|ua| bounded_text(ua, MAX_SAMPLE_TEXT)),
                asn: who.asn,
            })
        });
        let user_agent = parts
            .headers
            .get(http::header::USER_AGENT)
            .map(|ua| conn.with_memo(|memo| memo.user_agent.digest(ua.as_bytes())));
        Some(Fact {
            ip: who.ip,
            api_key: who.api_key_hash,
            token: who.token_hash,
            user_agent,
            status: 0,
            bytes: 0,
            token_endpoint: parts.uri.path() == self.token_endpoint,
            responder: Responder::Upstream,
            // Hashed while read, no allocation (see palisade_detection::sequence).
            shape: PathShape::of(parts.uri.path(), parts.uri.query()),
            attrs,
        })
    }

    /// Hands `fact`, completed with the response, to the counter; `responder` says who
    /// answered (the sidecar's own answers, denials, are never counted as the app's errors).
    /// A body of known length (Content-Length, or one the sidecar wrote) is counted at once;
    /// any other (a chunked or close-delimited response) as it streams, recorded when it
    /// ends or the client goes away. A WebSocket tunnel is recorded when it ends, with the
    /// bytes the application sent through it.
    fn count(
        &self,
        fact: Option<Fact>,
        mut resp: Response<RespBody>,
        responder: Responder,
    ) -> Response<RespBody> {
        let (Some(counter), Some(mut fact)) = (&self.counter, fact) else {
            return resp;
        };
        fact.status = resp.status().as_u16();
        fact.responder = responder;
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(closed) = resp.extensions_mut().remove::<TunnelClosed>()
        {
            // A tunnel: its response bytes are what the application sends through it,
            // known when it ends.
            let counter = counter.clone();
            tokio::spawn(async move {
                fact.bytes = closed.to_client().await;
                counter.record(fact);
            });
            return resp;
        }
        let known = http_body::Body::size_hint(resp.body()).exact().or_else(|| {
            resp.headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        });
        match known {
            Some(bytes) => {
                fact.bytes = bytes;
                counter.record(fact);
                resp
            }
            None => resp.map(|body| body::counted(body, fact, counter.clone())),
        }
    }
}

/// Records a request's metrics when it ends, however it ends: its verdict once answered,
/// `abandoned` when its future is dropped first.
struct Ended<'a> {
    metrics: &'a Metrics,
    start: Instant,
    verdict: &'static str,
}

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.metrics.request(self.verdict, self.start.elapsed());
    }
}

/// The status nginx logs for a request whose client closed before the answer.
const CLIENT_CLOSED: u16 = 499;

/// A request's fact while the application works on it. Taken when the exchange ends; if the
/// request's future is dropped first (its client left, and the sidecar stopped the exchange),
/// the fact is counted then, as a request the app was asked and nobody answered: a client
/// that never waits for its answers is counted all the same.
struct Asked<'a>(Option<(&'a CountHandle, Fact)>);

impl Asked<'_> {
    fn take(&mut self) -> Option<Fact> {
        self.0.take().map(|(_, fact)| fact)
    }
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        if let Some((counter, mut fact)) = self.0.take() {
            fact.status = CLIENT_CLOSED;
            fact.responder = Responder::Client;
            counter.record(fact);
        }
    }
}

/// An absolute-form target (or HTTP/2 `:authority`) and a `Host` header must name the same
/// host and port: the target wins for the sidecar (RFC 9112 §3.2.2) while an application may
/// route by `Host`, so a disagreement is refused (RFC 9113 §8.3.1 calls it malformed). The
/// common origin-form request has no authority and costs one branch.
fn same_authority<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let Some(target) = req.uri().authority() else {
        return Ok(());
    };
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        // None: the target's authority is forwarded as Host. Several: refused.
        return match req.headers().contains_key(http::header::HOST) {
            true => Err(ProxyError::BadRequest("host")),
            false => Ok(()),
        };
    };
    let host: http::uri::Authority = host
        .to_str()
        .ok()
        .and_then(|h| h.parse().ok())
        .ok_or(ProxyError::BadRequest("host"))?;
    let default = match req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        true => 443,
        false => 80,
    };
    let same = target.host().eq_ignore_ascii_case(host.host())
        && target.port_u16().unwrap_or(default) == host.port_u16().unwrap_or(default);
    match same {
        true => Ok(()),
        false => Err(ProxyError::BadRequest("host")),
    }
}
