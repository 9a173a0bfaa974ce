//! What one pod, and one namespace, may cost the collector: reports per second per pod (a
//! token bucket: a sidecar sends one a second, and after an outage its held reports in a
//! burst), reports per second per namespace, and pods per namespace. Anyone in a namespace
//! can mint a `palisade` token and name any pod in its reports, so made-up pod names must not
//! multiply what a namespace may send: its budget grows with the pods that really carry the
//! sidecar (pods of the operator's watch whose sidecar container runs), not with the names in
//! its reports. What
//! the windows hold is bounded there (clients per slice, pods, and the memory budget of
//! `--collector-window-budget-mib`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Reports per second a pod may send, sustained.
pub const REPORTS_PER_SECOND: f64 = 10.0;
/// Reports a pod may send at once (a sidecar flushing the summaries it held while the
/// collector was away).
pub const BURST: f64 = 120.0;
/// Pods a namespace's report budget counts at least: a namespace reports at most
/// [`REPORTS_PER_SECOND`] and [`BURST`] times its injected pods, or times this many when it
/// has fewer (sidecars started by hand).
pub const MIN_NAMESPACE_PODS: usize = 2;
/// Pods tracked per namespace.
pub const MAX_PODS: usize = 10_000;
/// A pod silent this long is forgotten (a full bucket again).
const IDLE: Duration = Duration::from_secs(300);

/// Which quota refused a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The pod sent more than [`REPORTS_PER_SECOND`] (beyond its burst).
    ReportRate,
    /// The namespace sent more than its pods may together (see [`MIN_NAMESPACE_PODS`]).
    NamespaceReportRate,
    /// The namespace already has [`MAX_PODS`] pods reporting.
    Pods,
}

impl Refused {
    /// PascalCase reason (metric label, answer).
    pub fn reason(self) -> &'static str {
        match self {
            Self::ReportRate => "ReportRateExceeded",
            Self::NamespaceReportRate => "NamespaceReportRateExceeded",
            Self::Pods => "PodQuotaExceeded",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// The tokens at `now`, refilled at `rate` a second up to `capacity`.
    fn refill(&mut self, now: Instant, rate: f64, capacity: f64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.last = now;
    }
}

#[derive(Debug)]
struct Namespace {
    bucket: Bucket,
    pods: HashMap<String, Bucket>,
}

/// The buckets of every namespace and pod that reported recently.
#[derive(Debug, Default)]
pub struct Quotas {
    namespaces: HashMap<String, Namespace>,
    /// Pods carrying the sidecar per namespace, from the operator's watch.
    injected: HashMap<String, usize>,
}

impl Quotas {
    /// Takes one report of `namespace` at `now` from the namespace's budget, or refuses it.
    /// Checked before the report is read: the namespace is the token's, and a refused report
    /// costs no parsing.
    pub fn admit_namespace(&mut self, namespace: &str, now: Instant) -> Result<(), Refused> {
        let pods = self
            .injected
            .get(namespace)
            .copied()
            .unwrap_or_default()
            .max(MIN_NAMESPACE_PODS) as f64;
        let (rate, capacity) = (REPORTS_PER_SECOND * pods, BURST * pods);
        let ns = self
            .namespaces
            .entry(namespace.to_owned())
            .or_insert_with(|| Namespace {
                bucket: Bucket {
                    tokens: capacity,
                    last: now,
                },
                pods: HashMap::new(),
            });
        ns.bucket.refill(now, rate, capacity);
        if ns.bucket.tokens < 1.0 {
            return Err(Refused::NamespaceReportRate);
        }
        ns.bucket.tokens -= 1.0;
        Ok(())
    }

    /// Takes one report of `pod` in `namespace` at `now` (once the report is read), or says
    /// which quota refuses it.
    pub fn admit(&mut self, namespace: &str, pod: &str, now: Instant) -> Result<(), Refused> {
        let pods = &mut self
            .namespaces
            .entry(namespace.to_owned())
            .or_insert_with(|| Namespace {
                bucket: Bucket {
                    tokens: 0.0,
                    last: now,
                },
                pods: HashMap::new(),
            })
            .pods;
        if let Some(b) = pods.get_mut(pod) {
            b.refill(now, REPORTS_PER_SECOND, BURST);
            if b.tokens < 1.0 {
                return Err(Refused::ReportRate);
            }
            b.tokens -= 1.0;
            return Ok(());
        }
        if pods.len() >= MAX_PODS {
            pods.retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
            if pods.len() >= MAX_PODS {
                return Err(Refused::Pods);
            }
        }
        pods.insert(
            pod.to_owned(),
            Bucket {
                tokens: BURST - 1.0,
                last: now,
            },
        );
        Ok(())
    }

    /// The pods carrying the sidecar in each namespace (the operator's watch), which set
    /// each namespace's report budget.
    pub fn set_injected(&mut self, injected: HashMap<String, usize>) {
        self.injected = injected;
    }

    /// Forgets pods silent for five minutes, and namespaces silent as long (a namespace
    /// forgotten earlier would get a full budget again).
    pub fn prune(&mut self, now: Instant) {
        for ns in self.namespaces.values_mut() {
            ns.pods
                .retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
        }
        self.namespaces.retain(|_, ns| {
            !ns.pods.is_empty() || now.saturating_duration_since(ns.bucket.last) < IDLE
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_gets_its_burst_then_its_rate() {
        let mut q = Quotas::default();
        let t0 = Instant::now();
        for _ in 0..BURST as usize {
            q.admit("shop", "api-0", t0).unwrap();
        }
        assert_eq!(q.admit("shop", "api-0", t0), Err(Refused::ReportRate));
        // Another pod has its own bucket.
        q.admit("shop", "api-1", t0).unwrap();
        // A second later, ten more.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..REPORTS_PER_SECOND as usize {
            q.admit("shop", "api-0", t1).unwrap();
        }
        assert_eq!(q.admit("shop", "api-0", t1), Err(Refused::ReportRate));
        // A sidecar at one report a second is never refused.
        for s in 2..1000 {
            q.admit("shop", "api-1", t0 + Duration::from_secs(s))
                .unwrap();
        }
    }

    #[test]
    fn made_up_pod_names_are_bounded_per_namespace() {
        let mut q = Quotas::default();
        let t0 = Instant::now();
        for i in 0..MAX_PODS {
            q.admit("shop", &format!("fake-{i}"), t0).unwrap();
        }
        assert_eq!(q.admit("shop", "one-more", t0), Err(Refused::Pods));
        // Pods already known keep reporting; other namespaces are not affected.
        q.admit("shop", "fake-7", t0).unwrap();
        q.admit("other", "api-0", t0).unwrap();
        // Once the made-up pods fall silent, new pods are admitted again.
        let later = t0 + IDLE;
        q.admit("shop", "api-0", later).unwrap();
        q.prune(later + Duration::from_secs(1));
        assert_eq!(q.namespaces["shop"].pods.len(), 1);
    }

    #[test]
    fn made_up_pod_names_share_their_namespace_budget() {
        let mut q = Quotas::default();
        // Three pods carry the sidecar: 30 reports a second, bursts of 360, however many
        // names the reports use.
        q.set_injected([("shop".to_owned(), 3)].into());
        let t0 = Instant::now();
        let burst = 3 * BURST as usize;
        let both = |q: &mut Quotas, pod: &str, t: Instant| {
            q.admit_namespace("shop", t)?;
            q.admit("shop", pod, t)
        };
        for i in 0..burst {
            both(&mut q, &format!("fake-{i}"), t0).unwrap();
        }
        assert_eq!(
            both(&mut q, "fake-new", t0),
            Err(Refused::NamespaceReportRate)
        );
        assert_eq!(
            both(&mut q, "fake-7", t0),
            Err(Refused::NamespaceReportRate)
        );
        // Another namespace has its own budget.
        q.admit_namespace("other", t0).unwrap();
        // A second later: 30 more, whatever the names.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..30 {
            both(&mut q, &format!("later-{i}"), t1).unwrap();
        }
        assert_eq!(
            both(&mut q, "later-30", t1),
            Err(Refused::NamespaceReportRate)
        );
        // Three real sidecars at one report a second are never refused.
        for s in 2..1000 {
            for pod in ["api-0", "api-1", "api-2"] {
                both(&mut q, pod, t0 + Duration::from_secs(s)).unwrap();
            }
        }
        // A namespace without injected pods counts as MIN_NAMESPACE_PODS.
        let mut q = Quotas::default();
        for _ in 0..MIN_NAMESPACE_PODS * BURST as usize {
            q.admit_namespace("bare", t0).unwrap();
        }
        assert_eq!(
            q.admit_namespace("bare", t0),
            Err(Refused::NamespaceReportRate)
        );
        // Its refused reports named no pod: pruning does not forget its spent budget.
        q.prune(t0 + Duration::from_millis(10));
        assert_eq!(
            q.admit_namespace("bare", t0 + Duration::from_millis(10)),
            Err(Refused::NamespaceReportRate)
        );
    }
}
