//! Reports reach the leader: the leader advertises its collector endpoint as annotations on
//! the Lease it holds (`palisade.dev/collector-endpoint`, and `palisade.dev/collector-holder`
//! naming the identity that wrote it); a non-leader forwards each authenticated report there
//! with the sidecar's own token (the leader checks it again) and answers with the leader's
//! status. A forwarded request carries `x-palisade-forwarded` and is never forwarded again.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Collector;

/// Header marking a report forwarded by a non-leader (value: the forwarding identity).
pub const FORWARDED: &str = "x-palisade-forwarded";
/// Lease annotation: where the leader's collector listens (`host:port`).
pub const ENDPOINT_ANNOTATION: &str = "palisade.dev/collector-endpoint";
/// Lease annotation: the identity that advertised the endpoint.
pub const HOLDER_ANNOTATION: &str = "palisade.dev/collector-holder";

/// How long a forwarded report may take before the sidecar is told 503.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a looked-up leader endpoint is reused.
const CACHE: Duration = Duration::from_secs(1);
/// Largest answer body relayed back to the sidecar.
const MAX_ANSWER: usize = 16 * 1024;

/// Forwards reports to the leader's collector.
pub struct Forwarder {
    http: Client<HttpConnector, Full<Bytes>>,
    leader: Mutex<Option<(Option<String>, Instant)>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Default for Forwarder {
    fn default() -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(TIMEOUT));
        Self {
            http: Client::builder(TokioExecutor::new()).build(http),
            leader: Mutex::new(None),
        }
    }
}

/// The endpoint this replica advertises when it leads: `--collector-advertise-addr`, else
/// `$POD_IP:<listen port>`, else the listen address when it is a specific one.
pub fn advertise_addr(
    flag: Option<&str>,
    pod_ip: Option<&str>,
    listen: SocketAddr,
) -> Option<String> {
    if let Some(a) = flag.filter(|a| !a.is_empty()) {
        return Some(a.to_owned());
    }
    if let Some(ip) = pod_ip.and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
        return Some(SocketAddr::new(ip, listen.port()).to_string());
    }
    (!listen.ip().is_unspecified()).then(|| listen.to_string())
}

/// Writes this replica's endpoint onto the Lease it holds.
pub async fn advertise(c: &Collector) -> Result<(), kube::Error> {
    let Some(endpoint) = &c.advertise else {
        tracing::warn!(
            "no collector endpoint to advertise: set --collector-advertise-addr or POD_IP; \
             other replicas cannot forward reports to this one"
        );
        return Ok(());
    };
    let args = &c.ctx.args;
    let api: Api<Lease> = Api::namespaced(c.ctx.client.clone(), &args.namespace);
    let patch = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": args.lease_name, "annotations": {
            ENDPOINT_ANNOTATION: endpoint, HOLDER_ANNOTATION: args.identity}}});
    let pp = PatchParams::apply("palisade-collector").force();
    api.patch(&args.lease_name, &pp, &Patch::Apply(&patch))
        .await?;
    tracing::info!(%endpoint, lease = %args.lease_name, "collector endpoint advertised");
    Ok(())
}

/// The leader's endpoint from a Lease: only when the annotations were written by the
/// current holder (and that holder is not `me`).
pub fn endpoint_of(lease: &Lease, me: &str) -> Option<String> {
    let holder = lease.spec.as_ref()?.holder_identity.as_deref()?;
    let ann = lease.metadata.annotations.as_ref()?;
    let advertised_by = ann.get(HOLDER_ANNOTATION)?;
    (advertised_by == holder && holder != me)
        .then(|| ann.get(ENDPOINT_ANNOTATION).cloned())
        .flatten()
}

impl Forwarder {
    /// Sends `body` with `token` to the leader; the answer is the leader's.
    pub async fn forward(&self, c: &Collector, token: &str, body: Bytes) -> (StatusCode, String) {
        let Some(endpoint) = self.leader(c).await else {
            c.count_forward("NoLeader");
            let msg = "no leader is known; retry".to_owned();
            return (StatusCode::SERVICE_UNAVAILABLE, msg);
        };
        let req = Request::post(format!("http://{endpoint}/v1/reports"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(FORWARDED, c.ctx.args.identity.as_str())
            .body(Full::new(body));
        let Ok(req) = req else {
            c.count_forward("Unreachable");
            let msg = format!("leader endpoint {endpoint} is not a valid address");
            return (StatusCode::SERVICE_UNAVAILABLE, msg);
        };
        match tokio::time::timeout(TIMEOUT, self.send(req)).await {
            Ok(Ok((status, text))) => {
                c.count_forward(outcome(status));
                (status, text)
            }
            Ok(Err(e)) => self.unreachable(c, &endpoint, &e),
            Err(_) => self.unreachable(c, &endpoint, "timed out"),
        }
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, String), String> {
        let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    fn unreachable(&self, c: &Collector, endpoint: &str, e: &str) -> (StatusCode, String) {
        c.count_forward("Unreachable");
        *self.leader.lock().unwrap_or_else(PoisonError::into_inner) = None;
        tracing::debug!(%endpoint, error = %e, "report not forwarded to the leader");
        let msg = format!("the leader's collector {endpoint} did not answer: {e}; retry");
        (StatusCode::SERVICE_UNAVAILABLE, msg)
    }

    /// The leader's endpoint, looked up on the Lease at most once per [`CACHE`].
    async fn leader(&self, c: &Collector) -> Option<String> {
        if let Some((endpoint, at)) = &*self.leader.lock().unwrap_or_else(PoisonError::into_inner)
            && at.elapsed() < CACHE
        {
            return endpoint.clone();
        }
        let args = &c.ctx.args;
        let api: Api<Lease> = Api::namespaced(c.ctx.client.clone(), &args.namespace);
        let endpoint = match api.get_opt(&args.lease_name).await {
            Ok(lease) => lease.and_then(|l| endpoint_of(&l, &args.identity)),
            Err(e) => {
                tracing::warn!(lease = %args.lease_name, error = %e, "cannot read the leader Lease");
                None
            }
        };
        *self.leader.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((endpoint.clone(), Instant::now()));
        endpoint
    }
}

fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "Accepted",
        503 => "LeaderUnavailable",
        400..=499 => "Rejected",
        _ => "LeaderError",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::coordination::v1::LeaseSpec;

    use super::*;

    fn lease(holder: &str, advertised_by: &str) -> Lease {
        Lease {
            metadata: kube::api::ObjectMeta {
                annotations: Some(BTreeMap::from([
                    (ENDPOINT_ANNOTATION.to_owned(), "10.0.0.7:9444".to_owned()),
                    (HOLDER_ANNOTATION.to_owned(), advertised_by.to_owned()),
                ])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn only_the_current_holders_endpoint_is_used() {
        assert_eq!(
            endpoint_of(&lease("op-a", "op-a"), "op-b").as_deref(),
            Some("10.0.0.7:9444")
        );
        assert_eq!(
            endpoint_of(&lease("op-b", "op-a"), "op-c"),
            None,
            "advertised by a former leader"
        );
        assert_eq!(
            endpoint_of(&lease("op-b", "op-b"), "op-b"),
            None,
            "never forward to oneself"
        );
        assert_eq!(endpoint_of(&Lease::default(), "op-b"), None);
    }

    #[test]
    fn the_advertised_address_prefers_the_flag_then_the_pod_ip() {
        let any: SocketAddr = "0.0.0.0:9444".parse().unwrap_or_else(|_| unreachable!());
        let local: SocketAddr = "127.0.0.1:7000".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            advertise_addr(Some("c.example:1"), Some("10.1.2.3"), any).as_deref(),
            Some("c.example:1")
        );
        assert_eq!(
            advertise_addr(None, Some("10.1.2.3"), any).as_deref(),
            Some("10.1.2.3:9444")
        );
        assert_eq!(
            advertise_addr(None, Some("fd00::7"), any).as_deref(),
            Some("[fd00::7]:9444")
        );
        assert_eq!(advertise_addr(None, None, any), None);
        assert_eq!(
            advertise_addr(None, None, local).as_deref(),
            Some("127.0.0.1:7000")
        );
    }

    #[test]
    fn forwarded_outcomes_are_bounded_names() {
        assert_eq!(outcome(StatusCode::ACCEPTED), "Accepted");
        assert_eq!(outcome(StatusCode::UNAUTHORIZED), "Rejected");
        assert_eq!(
            outcome(StatusCode::SERVICE_UNAVAILABLE),
            "LeaderUnavailable"
        );
        assert_eq!(outcome(StatusCode::INTERNAL_SERVER_ERROR), "LeaderError");
    }
}
