//! Annotation and label keys that users and the operator set on objects.
//!
//! These are part of the API as much as the CRD schemas: they are how a user pauses actions,
//! archives incidents and asks for the sidecar, without the operator ever writing `spec`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Annotation that pauses a `SecurityAction` (on the action), or every action of a namespace
/// (on the `Namespace`), when its value is `"true"`. Remove it, or set `"false"`, to resume.
pub const PAUSED_ANNOTATION: &str = "palisade.dev/paused";

/// Label that archives a `SecurityIncident` when its value is `"true"`. Archiving is the user's
/// decision; the operator only mirrors it into `status.state` and never removes the label.
pub const ARCHIVED_LABEL: &str = "palisade.dev/archived";

/// Label or annotation on a `Pod` or `Namespace` that asks the injector for the sidecar when its
/// value is [`INJECT_ENABLED`]; [`INJECT_DISABLED`] on a pod opts it out of a namespace-wide
/// injection.
pub const INJECT_KEY: &str = "palisade.dev/inject";

/// Annotation on a `Namespace` naming the proxies its sidecars trust (CIDRs or addresses,
/// separated by commas): only from a peer inside them are `X-Forwarded-For` and the identity
/// headers read. It replaces the sidecars' `--trusted-proxies`; an empty value trusts no one.
pub const TRUSTED_PROXIES_ANNOTATION: &str = "palisade.dev/trusted-proxies";

/// Value of [`INJECT_KEY`] that enables sidecar injection.
pub const INJECT_ENABLED: &str = "enabled";

/// Value of [`INJECT_KEY`] that disables sidecar injection for a pod.
pub const INJECT_DISABLED: &str = "disabled";

/// Whether `map[key]` is the string `"true"` (the only value that turns a flag on; anything
/// else, including `"True"` or `"yes"`, is off).
pub fn is_true(map: Option<&BTreeMap<String, String>>, key: &str) -> bool {
    map.and_then(|m| m.get(key)).is_some_and(|v| v == "true")
}

/// Whether the object carries `palisade.dev/paused: "true"`.
pub fn is_paused(meta: &ObjectMeta) -> bool {
    is_true(meta.annotations.as_ref(), PAUSED_ANNOTATION)
}

/// Whether the object carries the label `palisade.dev/archived: "true"`.
pub fn is_archived(meta: &ObjectMeta) -> bool {
    is_true(meta.labels.as_ref(), ARCHIVED_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_string_true_pauses() {
        let meta = |v: &str| ObjectMeta {
            annotations: Some([(PAUSED_ANNOTATION.to_string(), v.to_string())].into()),
            ..ObjectMeta::default()
        };
        assert!(is_paused(&meta("true")));
        assert!(!is_paused(&meta("True")));
        assert!(!is_paused(&meta("false")));
        assert!(!is_paused(&ObjectMeta::default()));
    }

    #[test]
    fn archived_is_a_label() {
        let meta = ObjectMeta {
            labels: Some([(ARCHIVED_LABEL.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        };
        assert!(is_archived(&meta));
        let annotated = ObjectMeta {
            annotations: meta.labels.clone(),
            ..ObjectMeta::default()
        };
        assert!(!is_archived(&annotated));
    }
}
