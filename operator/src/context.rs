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
    /// Failed reconciles of each namespace in a row, for the policy controller's backoff.
    pub policy_backoff: Backoff,
    /// The watched objects every component reads ([`crate::caches`]).
    pub caches: crate::caches::Caches,
    /// What the policy controller last wrote into each namespace's bundle.
    pub bundles: crate::policy::Ledger,
    /// The bundle-signing keys, once loaded from their Secret (see [`crate::signing`]);
    /// subscribers hear of every new key.
    pub signing: watch::Sender<Option<Arc<palisade_policy::sign::KeyRing>>>,
    /// Namespaces whose `palisade-detected` someone else wrote, with why it failed
    /// verification: the collector publishes its own document there again at its next
    /// evaluation (see [`Context::foreign_detected`]).
    foreign_detected: std::sync::Mutex<std::collections::BTreeMap<String, &'static str>>,
    /// Namespaces whose manifest ConfigMap the watch saw written by someone else, with why it
    /// failed verification: the next reconcile reports it, even when a reconcile already in
    /// flight has written the operator's bundle over it (see [`Context::foreign_manifest`]).
    foreign_manifest: std::sync::Mutex<std::collections::BTreeMap<String, (&'static str, String)>>,
}

/// Per-object exponential backoff: a namespace whose reconcile keeps failing is retried
/// after 2 s, 4 s, 8 s … up to [`Backoff::MAX`], and from 2 s again once one succeeds; one
/// failing namespace does not slow the others.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Backoff {
    /// The first delay.
    pub const FIRST: std::time::Duration = std::time::Duration::from_secs(2);
    /// The longest delay.
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(300);

    /// Records a failure of `key`; returns how long to wait before the next try.
    pub fn failed(&self, key: &str) -> std::time::Duration {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        Self::FIRST
            .saturating_mul(1 << (*n - 1).min(16))
            .min(Self::MAX)
    }

    /// Records a success of `key`: its next failure waits [`Self::FIRST`] again.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

impl Context {
    /// Builds the context; `leader` comes from [`crate::leader::start`], `kube_requests` is
    /// what `clients` count their requests into.
    pub fn new(
        clients: crate::kube_requests::Clients,
        kube_requests: crate::kube_requests::KubeRequests,
        args: Args,
        leader: watch::Receiver<bool>,
        caches: crate::caches::Caches,
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
            policy_backoff: Backoff::default(),
            caches,
            bundles: crate::policy::Ledger::default(),
            signing: watch::Sender::new(None),
            foreign_detected: std::sync::Mutex::default(),
            foreign_manifest: std::sync::Mutex::default(),
        }
    }

    /// Notes that namespace `ns`'s detected-client document failed verification (`reason`):
    /// sidecars refuse it, so pods started since hold no detected clients until the
    /// collector writes its own again.
    pub fn foreign_detected(&self, ns: &str, reason: &'static str) {
        self.foreign_detected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(ns.to_owned(), reason);
    }

    /// Notes that the manifest ConfigMap of `ns` failed verification (`reason`, `detail`) when
    /// the watch saw it.
    pub fn foreign_manifest(&self, ns: &str, reason: &'static str, detail: String) {
        self.foreign_manifest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(ns.to_owned(), (reason, detail));
    }

    /// Takes the note of [`Context::foreign_manifest`] for `ns`, if any.
    pub fn take_foreign_manifest(&self, ns: &str) -> Option<(&'static str, String)> {
        self.foreign_manifest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(ns)
    }

    /// Takes the note of [`Context::foreign_detected`] for `ns`, if any.
    pub fn take_foreign_detected(&self, ns: &str) -> Option<&'static str> {
        self.foreign_detected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(ns)
    }

    /// The bundle-signing keys, if loaded.
    pub fn signing_keys(&self) -> Option<Arc<palisade_policy::sign::KeyRing>> {
        self.signing.borrow().clone()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    #[test]
    fn failures_back_off_per_object_and_a_success_starts_over() {
        let b = Backoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.failed("shop").as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.failed("other"), Duration::from_secs(2), "per object");
        b.succeeded("shop");
        assert_eq!(
            b.failed("shop"),
            Duration::from_secs(2),
            "from the start again"
        );
        for _ in 0..100 {
            assert!(b.failed("long") <= Backoff::MAX);
        }
    }
}
