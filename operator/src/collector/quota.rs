//! What one pod may cost the collector: reports per second per pod (a token bucket: a
//! sidecar sends one a second, and after an outage its held reports in a burst), and pods
//! per namespace. Anyone in a namespace can mint a `palisade` token and name any pod in its
//! reports, so both are bounded here, before a report reaches the windows; what the windows
//! hold is bounded there (clients per slice, pods, and the memory budget of
//! `--collector-window-budget-mib`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Reports per second a pod may send, sustained.
pub const REPORTS_PER_SECOND: f64 = 10.0;
/// Reports a pod may send at once (a sidecar flushing the summaries it held while the
/// collector was away).
pub const BURST: f64 = 120.0;
/// Pods tracked per namespace.
pub const MAX_PODS: usize = 10_000;
/// A pod silent this long is forgotten (a full bucket again).
const IDLE: Duration = Duration::from_secs(300);

/// Which quota refused a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The pod sent more than [`REPORTS_PER_SECOND`] (beyond its burst).
    ReportRate,
    /// The namespace already has [`MAX_PODS`] pods reporting.
    Pods,
}

impl Refused {
    /// PascalCase reason (metric label, answer).
    pub fn reason(self) -> &'static str {
        match self {
            Self::ReportRate => "ReportRateExceeded",
            Self::Pods => "PodQuotaExceeded",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of every pod that reported recently.
#[derive(Debug, Default)]
pub struct Quotas {
    namespaces: HashMap<String, HashMap<String, Bucket>>,
}

impl Quotas {
    /// Takes one report of `pod` in `namespace` at `now`, or says which quota refuses it.
    pub fn admit(&mut self, namespace: &str, pod: &str, now: Instant) -> Result<(), Refused> {
        let pods = self.namespaces.entry(namespace.to_owned()).or_default();
        if let Some(b) = pods.get_mut(pod) {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * REPORTS_PER_SECOND).min(BURST);
            b.last = now;
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

    /// Forgets pods silent for five minutes, and namespaces without pods.
    pub fn prune(&mut self, now: Instant) {
        for pods in self.namespaces.values_mut() {
            pods.retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
        }
        self.namespaces.retain(|_, pods| !pods.is_empty());
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
        assert_eq!(q.namespaces["shop"].len(), 1);
    }
}
