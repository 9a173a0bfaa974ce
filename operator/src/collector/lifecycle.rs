//! What happens to SecurityIncident objects after the collector wrote them. One reflector
//! watches them; the evaluator asks it which incidents a user archived (label
//! `palisade.dev/archived=true`: they never absorb a detection again), and on the leader every
//! incident of a selected namespace — archived ones too — is deleted `--incident-retention`
//! after its last detection. The sweep sleeps until the next deletion is due (at most ten
//! minutes): a new incident is never due sooner than one retention from now.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use palisade_crds::SecurityIncident;
use palisade_crds::keys::is_archived;

use super::Collector;

/// The longest the sweep sleeps.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// How often a replica that does not lead checks again.
const IDLE: Duration = Duration::from_secs(10);

/// Ids of the archived incidents of `namespace`, from the reflector's store.
pub fn archived(store: &Store<SecurityIncident>, namespace: &str) -> BTreeSet<String> {
    store
        .state()
        .iter()
        .filter(|i| i.namespace().as_deref() == Some(namespace) && is_archived(&i.metadata))
        .map(|i| i.name_any())
        .collect()
}

/// One incident as the sweep sees it: namespace, name and last detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Namespace.
    pub namespace: String,
    /// Name (the incident id).
    pub name: String,
    /// `status.lastDetectedTime`, else the creation time.
    pub last: Timestamp,
}

/// The incidents due for deletion at `now` and when the next one will be.
pub fn plan(items: &[Seen], retention: Duration, now: Timestamp) -> (Vec<Seen>, Option<Timestamp>) {
    let retention = jiff::SignedDuration::try_from(retention).unwrap_or(jiff::SignedDuration::MAX);
    let mut due = Vec::new();
    let mut next: Option<Timestamp> = None;
    for s in items {
        let at = s.last.checked_add(retention).unwrap_or(Timestamp::MAX);
        if at <= now {
            due.push(s.clone());
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (due, next)
}

/// Runs the reflector and, on the leader, the retention sweep, until shutdown.
pub async fn run(
    c: Arc<Collector>,
    writer: reflector::store::Writer<SecurityIncident>,
) -> anyhow::Result<()> {
    let api = Api::<SecurityIncident>::all(c.ctx.clients.collector.clone());
    let watch = super::reflect(
        writer,
        watcher(api, watcher::Config::default()),
        "SecurityIncidents",
    );
    tokio::select! {
        () = watch => Ok(()),
        r = sweep_loop(&c) => r,
    }
}

async fn sweep_loop(c: &Collector) -> anyhow::Result<()> {
    tokio::select! {
        r = c.incidents.wait_until_ready() => r?,
        () = c.ctx.shutdown.cancelled() => return Ok(()),
    }
    loop {
        let wait = if c.owns_any() {
            match sweep(c).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "incident retention sweep failed");
                    IDLE
                }
            }
        } else {
            IDLE
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {},
            () = c.ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Deletes the incidents that are due; returns how long to sleep.
async fn sweep(c: &Collector) -> Result<Duration, kube::Error> {
    let client = &c.ctx.clients.collector;
    // The selected namespaces, from the operator's watch.
    let selected: BTreeSet<String> = c
        .namespaces
        .state()
        .iter()
        .map(|n| n.name_any())
        .filter(|ns| c.owns(ns))
        .collect();
    let items: Vec<Seen> = c
        .incidents
        .state()
        .iter()
        .filter_map(|i| {
            let namespace = i.namespace().filter(|ns| selected.contains(ns))?;
            let last = i
                .status
                .as_ref()
                .and_then(|s| s.last_detected_time.as_ref())
                .or(i.metadata.creation_timestamp.as_ref())?;
            Some(Seen {
                namespace,
                name: i.name_any(),
                last: last.0,
            })
        })
        .collect();
    let retention = c.ctx.args.incident_retention;
    let now = Timestamp::now();
    let (due, next) = plan(&items, retention, now);
    for s in due {
        let api: Api<SecurityIncident> = Api::namespaced(client.clone(), &s.namespace);
        match api.delete(&s.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        forget(c, &s);
        tracing::info!(namespace = %s.namespace, incident = %s.name, last_detected = %s.last,
            "incident deleted after its retention");
    }
    let wait = next.map_or(MAX_WAIT, |t| now.duration_until(t).unsigned_abs());
    Ok(wait.clamp(Duration::from_secs(1), MAX_WAIT))
}

/// Drops a deleted incident from the leader's memory, so it is not written again.
fn forget(c: &Collector, s: &Seen) {
    let mut state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(incidents) = state.incidents.get_mut(&s.namespace) {
        incidents.retain(|i| i.id != s.name);
    }
    state.written.remove(&s.name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, last: i64) -> Seen {
        Seen {
            namespace: "shop".into(),
            name: name.into(),
            last: Timestamp::from_second(last).expect("ts"),
        }
    }

    #[test]
    fn incidents_are_due_one_retention_after_their_last_detection() {
        let items = [seen("old", 1_000), seen("edge", 2_000), seen("new", 2_500)];
        let now = Timestamp::from_second(2_600).expect("ts");
        let (due, next) = plan(&items, Duration::from_secs(600), now);
        let names: Vec<&str> = due.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["old", "edge"], "due at exactly last + retention");
        assert_eq!(next, Some(Timestamp::from_second(3_100).expect("ts")));
        let (due, next) = plan(&[], Duration::from_secs(600), now);
        assert!(due.is_empty() && next.is_none());
    }
}
