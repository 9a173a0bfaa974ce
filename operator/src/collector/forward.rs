//! Reports reach the replica that owns their namespace's shard: the owner advertises its
//! collector endpoint as annotations on the shard's Lease (`palisade.dev/collector-endpoint`,
//! and `palisade.dev/collector-holder` naming the identity that wrote it; shard 0's Lease is
//! the leader's); any other replica forwards each authenticated report there with the
//! sidecar's own token (the owner checks it again) and answers with the owner's status. A
//! forwarded request carries `x-palisade-forwarded` and is never forwarded again. Over HTTPS
//! (the default) the owner's certificate is verified against the operator's CA bundle under
//! the collector Service's name, whatever address it advertised.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
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

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Forwards reports to the leader's collector.
pub struct Forwarder {
    http: Client<HttpConnector, Full<Bytes>>,
    /// The HTTPS client for the current CA bundle.
    https: Mutex<Option<(Arc<String>, HttpsClient)>>,
    /// The owner's endpoint of each shard looked up lately, and when.
    owners: Mutex<std::collections::HashMap<u32, (Option<String>, Instant)>>,
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
            https: Mutex::new(None),
            owners: Mutex::default(),
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

/// Writes this replica's endpoint onto the Lease of `shard`, which it holds.
pub async fn advertise(c: &Collector, shard: u32) -> Result<(), kube::Error> {
    let Some(endpoint) = &c.advertise else {
        tracing::warn!(
            "no collector endpoint to advertise: set --collector-advertise-addr or POD_IP; \
             other replicas cannot forward reports to this one"
        );
        return Ok(());
    };
    let args = &c.ctx.args;
    let lease = c.shards.lease(args, shard);
    let api: Api<Lease> = Api::namespaced(c.ctx.clients.collector.clone(), &args.namespace);
    let patch = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease, "annotations": {
            ENDPOINT_ANNOTATION: endpoint, HOLDER_ANNOTATION: args.identity}}});
    let pp = PatchParams::apply(palisade_policy::transport::COLLECTOR_MANAGER).force();
    api.patch(&lease, &pp, &Patch::Apply(&patch)).await?;
    tracing::info!(%endpoint, %lease, shard, "collector endpoint advertised");
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
    /// Sends `body` with `token` to the owner of `shard`; the answer is the owner's.
    pub async fn forward(
        &self,
        c: &Collector,
        shard: u32,
        token: &str,
        body: Bytes,
    ) -> (StatusCode, String) {
        let Some(endpoint) = self.owner(c, shard).await else {
            c.count_forward("NoLeader");
            let msg = format!("no replica is known to own collector shard {shard}; retry");
            return (StatusCode::SERVICE_UNAVAILABLE, msg);
        };
        let scheme = if c.ctx.args.collector_plain_http {
            "http"
        } else {
            "https"
        };
        let req = Request::post(format!("{scheme}://{endpoint}/v1/reports"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(FORWARDED, c.ctx.args.identity.as_str())
            .body(Full::new(body));
        let Ok(req) = req else {
            c.count_forward("Unreachable");
            let msg = format!("leader endpoint {endpoint} is not a valid address");
            return (StatusCode::SERVICE_UNAVAILABLE, msg);
        };
        let sent = if c.ctx.args.collector_plain_http {
            tokio::time::timeout(TIMEOUT, send(&self.http, req)).await
        } else {
            match self.https_client(c) {
                Ok(client) => tokio::time::timeout(TIMEOUT, send(&client, req)).await,
                Err(e) => Ok(Err(e)),
            }
        };
        match sent {
            Ok(Ok((status, text))) => {
                c.count_forward(outcome(status));
                (status, text)
            }
            Ok(Err(e)) => self.unreachable(c, shard, &endpoint, &e),
            Err(_) => self.unreachable(c, shard, &endpoint, "timed out"),
        }
    }

    /// The HTTPS client trusting the current CA bundle (rebuilt when the bundle changes).
    fn https_client(&self, c: &Collector) -> Result<HttpsClient, String> {
        let ca = c
            .ctx
            .ca_bundle
            .load_full()
            .ok_or("the collector's CA is not loaded yet")?;
        let mut cached = self.https.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((pem, client)) = &*cached
            && *pem == ca
        {
            return Ok(client.clone());
        }
        let name = format!(
            "{}.{}.svc",
            c.ctx.args.collector_service, c.ctx.args.namespace
        );
        let client = https_client(&ca, &name)?;
        *cached = Some((ca, client.clone()));
        Ok(client)
    }

    fn unreachable(
        &self,
        c: &Collector,
        shard: u32,
        endpoint: &str,
        e: &str,
    ) -> (StatusCode, String) {
        c.count_forward("Unreachable");
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&shard);
        tracing::debug!(%endpoint, shard, error = %e, "report not forwarded to the shard's owner");
        let msg =
            format!("the collector {endpoint} owning shard {shard} did not answer: {e}; retry");
        (StatusCode::SERVICE_UNAVAILABLE, msg)
    }

    /// The endpoint of the owner of `shard`, looked up on its Lease at most once per
    /// [`CACHE`].
    async fn owner(&self, c: &Collector, shard: u32) -> Option<String> {
        if let Some((endpoint, at)) = self
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&shard)
            && at.elapsed() < CACHE
        {
            return endpoint.clone();
        }
        let args = &c.ctx.args;
        let lease = c.shards.lease(args, shard);
        let api: Api<Lease> = Api::namespaced(c.ctx.clients.collector.clone(), &args.namespace);
        let endpoint = match api.get_opt(&lease).await {
            Ok(l) => l.and_then(|l| endpoint_of(&l, &args.identity)),
            Err(e) => {
                tracing::warn!(%lease, error = %e, "cannot read the shard's Lease");
                None
            }
        };
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(shard, (endpoint.clone(), Instant::now()));
        endpoint
    }
}

async fn send<C>(
    client: &Client<C, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, String), String>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// An HTTPS client that trusts only `ca_pem` and verifies every server as `server_name`.
pub fn https_client(ca_pem: &str, server_name: &str) -> Result<HttpsClient, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("CA bundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("CA bundle: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .with_server_name_resolver(FixedServerNameResolver::new(name))
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
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
