//! What every component of the operator shares: the client, the Event recorder, metrics,
//! leadership, readiness and the shutdown signal.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwapOption;

use kube::runtime::events::{Recorder, Reporter};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::args::Args;
use crate::metrics::Metrics;

/// Shared state of the operator's components.
pub struct Context {
    /// The Kubernetes clients, one per component (each counts its own requests).
    pub clients: crate::kube_requests::Clients,
    /// The one Event recorder (`reportingController: palisade.dev/operator`).
    pub recorder: Recorder,
    /// The flags the operator was started with.
    pub args: Args,
    /// The metric registry served on `/metrics`.
    pub registry: Registry,
    /// The metrics.
    pub metrics: Metrics,
    /// `true` while this replica holds the leader Lease.
    pub leader: watch::Receiver<bool>,
    /// Set once the controllers' caches are synced.
    pub ready: AtomicBool,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// The managed serving certificate (webhook and collector HTTPS).
    pub certs: Arc<crate::injector::server::CertStore>,
    /// The CA bundle (PEM) that verifies [`Self::certs`]; set once it is loaded.
    pub ca_bundle: ArcSwapOption<String>,
}

impl Context {
    /// Builds the context; `leader` comes from [`crate::leader::start`], `kube_requests` is
    /// what `clients` count their requests into.
    pub fn new(
        clients: crate::kube_requests::Clients,
        kube_requests: crate::kube_requests::KubeRequests,
        args: Args,
        leader: watch::Receiver<bool>,
    ) -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry, kube_requests);
        let reporter = Reporter {
            controller: "palisade.dev/operator".into(),
            instance: Some(args.identity.clone()),
        };
        Self {
            recorder: Recorder::new(clients.events.clone(), reporter),
            clients,
            args,
            registry,
            metrics,
            leader,
            ready: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            certs: Arc::default(),
            ca_bundle: ArcSwapOption::empty(),
        }
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}
