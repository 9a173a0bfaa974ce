//! Annotation and label keys that users and the operator set on objects.
//!
//! These are part of the API as much as the CRD schemas: they are how a user pauses actions,
//! archives incidents and asks for the sidecar, without the operator ever writing `spec`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Annotation that pauses a `SecurityAction` (on the action), or every action of a namespace
/// (on the `Namespace`), when its value is `"true"`. Remove it, or set `"false"`, to resume.
pub const PAUSED_ANNOTATION: &str = "palisade.dev/paused";

/// Annotation that pauses a `SecurityAction` until a time: an RFC 3339 timestamp
/// (`2026-12-24T08:00:00Z`), or a duration (`2h`, `30m`, see [`crate::duration`]) counted from
/// when the operator first saw that value (it records the end in `status.pausedUntil`). The
/// operator resumes the action on time, with a `Resumed` Event; changing the value re-arms it.
pub const PAUSED_UNTIL_ANNOTATION: &str = "palisade.dev/paused-until";

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

/// Namespace annotation: `"true"` makes the namespace's sidecars name the action that decided
/// each request in the `palisade-decision` response header (as their `--debug-headers` flag
/// does for one pod). Meant for trying a policy out: the header tells clients which action
/// caught them.
pub const DEBUG_HEADERS_ANNOTATION: &str = "palisade.dev/debug-headers";

/// Namespace annotation: the IPv6 prefix length (32–128, default 64) by which DetectionRules
/// with `clientKey: ipPrefix` group clients, and their detections deny.
pub const IPV6_PREFIX_LENGTH_ANNOTATION: &str = "palisade.dev/ipv6-prefix-length";

/// Value of [`INJECT_KEY`] that enables sidecar injection.
pub const INJECT_ENABLED: &str = "enabled";

/// Value of [`INJECT_KEY`] on a `Namespace` that injects every pod and refuses one that would
/// run without the sidecar.
pub const INJECT_REQUIRED: &str = "required";

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

/// What a [`PAUSED_UNTIL_ANNOTATION`] value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseUntil {
    /// Paused until this instant.
    At(k8s_openapi::jiff::Timestamp),
    /// Paused for this long from when the value was first seen.
    For(std::time::Duration),
}

/// The object's [`PAUSED_UNTIL_ANNOTATION`], parsed: `None` without it; the error says what to
/// write instead.
pub fn paused_until(meta: &ObjectMeta) -> Option<(&str, Result<PauseUntil, String>)> {
    let value = meta.annotations.as_ref()?.get(PAUSED_UNTIL_ANNOTATION)?;
    let text = value.trim();
    let parsed = if let Ok(at) = text.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(PauseUntil::At(at))
    } else if let Ok(d) = crate::duration::parse_duration(text) {
        Ok(PauseUntil::For(d))
    } else {
        // At most 64 characters of it in the message (a condition message and an Event note
        // are bounded; a huge value must not make the status unwritable).
        let shown: String = text.chars().take(64).collect();
        let more = if shown.len() < text.len() { "…" } else { "" };
        Err(format!(
            "{PAUSED_UNTIL_ANNOTATION}: {shown:?}{more} is neither an RFC 3339 time (like \
             2026-12-24T08:00:00Z) nor a duration (like 2h or 1h30m); the action is not paused"
        ))
    };
    // The trimmed value: what was parsed, and short enough for `status.pausedUntilAnnotation`
    // (a valid time or duration is at most 40 characters; padding must not break the status).
    Some((text, parsed))
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
    fn paused_until_is_a_time_or_a_duration() {
        let meta = |v: &str| ObjectMeta {
            annotations: Some([(PAUSED_UNTIL_ANNOTATION.to_string(), v.to_string())].into()),
            ..ObjectMeta::default()
        };
        let at: k8s_openapi::jiff::Timestamp = "2026-12-24T08:00:00Z".parse().expect("timestamp");
        let m = meta("2026-12-24T08:00:00Z");
        assert_eq!(
            paused_until(&m).expect("annotated").1,
            Ok(PauseUntil::At(at))
        );
        let m = meta("2026-12-24T09:00:00+01:00");
        assert_eq!(
            paused_until(&m).expect("annotated").1,
            Ok(PauseUntil::At(at))
        );
        let padded = format!("{:>80}", "1h30m ");
        let m = meta(&padded);
        let (value, parsed) = paused_until(&m).expect("annotated");
        assert_eq!(
            value, "1h30m",
            "the trimmed value is what the status records"
        );
        assert_eq!(
            parsed,
            Ok(PauseUntil::For(std::time::Duration::from_secs(5400)))
        );
        let huge = "x".repeat(100_000);
        let m = meta(&huge);
        let err = paused_until(&m).expect("annotated").1.expect_err("invalid");
        assert!(
            err.len() < 300,
            "the message stays short: {} bytes",
            err.len()
        );
        for bad in ["tomorrow", "2d", "", "2026-12-24", "-1h"] {
            let m = meta(bad);
            let err = paused_until(&m).expect("annotated").1.expect_err("invalid");
            assert!(
                err.contains("RFC 3339") && err.contains("not paused"),
                "{bad}: {err}"
            );
        }
        assert_eq!(paused_until(&ObjectMeta::default()), None);
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
