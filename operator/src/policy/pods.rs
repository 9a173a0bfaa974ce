//! The pods that carry the sidecar (label `palisade.dev/injected=true`), as the policy
//! controller sees them: their labels tell whether a workload selector selects any, and a
//! sidecar still not Ready past its start-up grace runs without policy (a sidecar is Ready
//! only once it holds a bundle) and gets a `PolicyNotLoaded` Event on its pod.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::injector::config::SIDECAR_NAME;

/// Event reason on a pod whose sidecar has no policy past its grace.
pub const POLICY_NOT_LOADED: &str = "PolicyNotLoaded";

/// The pods of `all` that are not being deleted.
pub fn live(all: Vec<Pod>) -> Vec<Pod> {
    all.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The labels of each pod.
pub fn labels(pods: &[Pod]) -> Vec<BTreeMap<String, String>> {
    pods.iter()
        .map(|p| p.metadata.labels.clone().unwrap_or_default())
        .collect()
}

/// The labels of the pods that are Ready (their `Ready` condition is `True`): the pods a
/// Service sends traffic to, which share a rate limit.
pub fn ready_labels(pods: &[Pod]) -> Vec<BTreeMap<String, String>> {
    pods.iter()
        .filter(|p| is_ready(p))
        .map(|p| p.metadata.labels.clone().unwrap_or_default())
        .collect()
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pods whose sidecar has been running for at least `grace` without being Ready, and how
/// long until the next one's grace ends (a sidecar running, not Ready, still within it).
pub fn without_policy(
    pods: &[Pod],
    grace: Duration,
    now: jiff::Timestamp,
) -> (Vec<&Pod>, Option<Duration>) {
    let mut stuck = Vec::new();
    let mut next: Option<Duration> = None;
    for pod in pods {
        let Some(since) = unready_since(pod) else {
            continue;
        };
        let waited = now.duration_since(since).unsigned_abs();
        match grace.checked_sub(waited) {
            Some(left) if !left.is_zero() => {
                next = Some(next.map_or(left, |n| n.min(left)));
            }
            _ => stuck.push(pod),
        }
    }
    (stuck, next)
}

/// Whether the kubelet reports `pod`'s sidecar container running (not only the
/// `palisade.dev/injected` label, which anyone who creates pods can set). What a namespace's
/// report budget counts ([`crate::collector`]'s quotas).
pub fn runs_sidecar(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.name == SIDECAR_NAME && c.state.as_ref().is_some_and(|s| s.running.is_some())
            })
}

/// When the sidecar of `pod` started running, if it runs and is not Ready.
fn unready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    let status = pod
        .status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == SIDECAR_NAME)?;
    if status.ready {
        return None;
    }
    status
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()
        .map(|t| t.0)
}

/// The Event note for a pod without policy.
pub fn note(grace: Duration) -> String {
    format!(
        "the palisade-sidecar container is not Ready {}s after it started: it holds no policy \
         bundle, so the pod takes no Service traffic; see palisade_sidecar_policy_missing and \
         the sidecar's log (can it read the bundle ConfigMaps?)",
        grace.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("valid")
    }

    fn pod(name: &str, sidecar: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "status": {"initContainerStatuses": [sidecar]}
        }))
        .expect("pod")
    }

    fn sidecar(ready: bool, started: &str) -> serde_json::Value {
        json!({"name": SIDECAR_NAME, "ready": ready, "restartCount": 0, "image": "s",
            "imageID": "", "state": {"running": {"startedAt": started}}})
    }

    /// A pod counts for its namespace's report budget only when its sidecar runs: a pod
    /// wearing the injected label without one (or whose sidecar waits) adds nothing.
    #[test]
    fn only_pods_whose_sidecar_runs_count() {
        let running = pod("running", sidecar(false, "1970-01-01T00:01:00Z"));
        let waiting = pod(
            "waiting",
            json!({"name": SIDECAR_NAME, "ready": false, "restartCount": 0, "image": "s",
                "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}),
        );
        let forged = pod(
            "forged",
            json!({"name": "decoy", "ready": true, "restartCount": 0, "image": "s",
                "imageID": "", "state": {"running": {"startedAt": "1970-01-01T00:01:00Z"}}}),
        );
        let no_status: Pod = serde_json::from_value(
            json!({"metadata": {"name": "bare", "labels": {"palisade.dev/injected": "true"}}}),
        )
        .expect("pod");
        let mut leaving = running.clone();
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(100)));
        assert!(runs_sidecar(&running));
        for p in [&waiting, &forged, &no_status, &leaving] {
            assert!(!runs_sidecar(p), "{:?}", p.metadata.name);
        }
    }

    #[test]
    fn only_running_unready_sidecars_past_the_grace_are_without_policy() {
        let grace = Duration::from_secs(30);
        let pods = [
            pod("old-unready", sidecar(false, "1970-01-01T00:01:00Z")),
            pod("young-unready", sidecar(false, "1970-01-01T00:01:50Z")),
            pod("ready", sidecar(true, "1970-01-01T00:00:00Z")),
            pod(
                "waiting",
                json!({"name": SIDECAR_NAME, "ready": false, "restartCount": 0, "image": "s",
                    "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}),
            ),
            pod(
                "no-status",
                json!({"name": "other", "ready": false, "restartCount": 0,
                "image": "s", "imageID": ""}),
            ),
        ];
        let (stuck, next) = without_policy(&pods, grace, t(120));
        let names: Vec<_> = stuck
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(names, ["old-unready"]);
        assert_eq!(
            next,
            Some(Duration::from_secs(20)),
            "young-unready's grace ends"
        );
        let (stuck, next) = without_policy(&pods, grace, t(140));
        assert_eq!(stuck.len(), 2, "exactly at the end of the grace");
        assert_eq!(next, None);
    }

    #[test]
    fn pods_being_deleted_do_not_count() {
        let mut gone = pod("gone", sidecar(false, "1970-01-01T00:00:00Z"));
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(1)));
        let here = pod("here", sidecar(true, "1970-01-01T00:00:00Z"));
        let live = live(vec![gone, here]);
        assert_eq!(
            labels(&live),
            [BTreeMap::from([("app".into(), "here".into())])]
        );
    }

    #[test]
    fn only_pods_whose_ready_condition_is_true_share_a_rate_limit() {
        let with = |name: &str, conditions: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": name}},
                "status": {"conditions": conditions}
            }))
            .expect("pod")
        };
        let pods = [
            with("ready", json!([{"type": "Ready", "status": "True"}])),
            with("unready", json!([{"type": "Ready", "status": "False"}])),
            with(
                "scheduled",
                json!([{"type": "PodScheduled", "status": "True"}]),
            ),
            with("no-status", json!([])),
        ];
        assert_eq!(
            ready_labels(&pods),
            [BTreeMap::from([("app".into(), "ready".into())])]
        );
    }
}
