//! The request pipeline, in order: check limits → identify the client → enforce the policy →
//! forward to the application; every failure goes through `rescue`, every request is counted.
//! (Plain async functions rather than tower layers: each step is a function of the previous
//! one's output, and the chain stays readable on one screen without boxing services.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::RespBody;
use crate::enforce::{DEBUG_HEADER, EnforceConfig, Outcome, enforce};
use crate::forward::Forwarder;
use crate::identify::Identifier;
use crate::metrics::Metrics;
use crate::metrics::{ReasonLabel, SourceLabel, VerdictLabel};
use crate::rescue::{ProxyError, rescue};
use crate::store::Store;

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
    pub identifier: Identifier,
    /// The policy in force.
    pub store: Arc<Store>,
    /// Enforcement switches.
    pub enforce: EnforceConfig,
}

impl Proxy {
    /// Answers one request; never fails (errors become responses).
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<RespBody> {
        let start = Instant::now();
        let (verdict, resp) = match self.process(req, peer).await {
            Ok(ok) => ok,
            Err(e) => {
                if e.is_upstream() {
                    self.metrics
                        .upstream_errors
                        .get_or_create(&ReasonLabel { reason: e.reason() })
                        .inc();
                    tracing::warn!(reason = e.reason(), error = %e, "upstream failed");
                }
                ("error", rescue(&e))
            }
        };
        let label = VerdictLabel { verdict };
        self.metrics.requests.get_or_create(&label).inc();
        self.metrics
            .latency
            .get_or_create(&label)
            .observe(start.elapsed().as_secs_f64());
        resp
    }

    async fn process(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<(&'static str, Response<RespBody>), ProxyError> {
        let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target_len > self.max_uri_bytes {
            return Err(ProxyError::UriTooLong {
                len: target_len,
                max: self.max_uri_bytes,
            });
        }
        let (mut parts, body) = req.into_parts();
        let who = self.identifier.identify(&parts, peer.ip());
        let source = SourceLabel {
            source: who.ip_source.as_str(),
        };
        self.metrics.client_ip.get_or_create(&source).inc();
        let (verdict, outcome) =
            enforce(self.enforce, &self.store, &self.metrics, &who, &mut parts)?;
        let debug = match outcome {
            Outcome::Answer(resp) => return Ok((verdict, resp)),
            Outcome::Forward(debug) => debug,
        };
        let req = Request::from_parts(parts, body);
        let mut resp = self.forwarder.forward(req, peer.ip()).await?;
        if let Some(v) = debug {
            resp.headers_mut().insert(DEBUG_HEADER, v);
        }
        Ok((verdict, resp))
    }
}
