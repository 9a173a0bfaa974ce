//! The timed pause of an action (`palisade.dev/paused-until`), resolved against the clock and
//! what the status recorded: a duration counts from when the operator first saw the value, so
//! re-applying the same manifest (GitOps) does not pause the action again, and a new value
//! re-arms it.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use palisade_crds::SecurityAction;
use palisade_crds::keys::{PAUSED_UNTIL_ANNOTATION, PauseUntil, is_paused, paused_until};

/// How an action's pause annotations hold it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pause {
    /// `palisade.dev/paused: "true"`: paused until the annotation goes.
    pub pinned: bool,
    /// `palisade.dev/paused-until`.
    pub timed: Timed,
}

/// The `palisade.dev/paused-until` annotation, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Timed {
    /// No such annotation.
    #[default]
    None,
    /// Paused until `at` (from the annotation `value`).
    Until {
        /// The annotation's value.
        value: String,
        /// When the pause ends.
        at: Timestamp,
    },
    /// The value does not parse: the action is not paused by it.
    Invalid {
        /// What to write instead.
        message: String,
    },
}

/// Reason of the `Paused` condition while the timed pause holds the action.
pub const PAUSED_UNTIL: &str = "PausedUntil";
/// Reason of the `Paused` condition (False) and of the Warning Event for a value that does
/// not parse.
pub const INVALID_PAUSED_UNTIL: &str = "InvalidPausedUntil";

/// The pause of `a` at `now`.
pub fn resolve(a: &SecurityAction, now: Timestamp) -> Pause {
    let timed = match paused_until(&a.metadata) {
        None => Timed::None,
        Some((_, Err(message))) => Timed::Invalid { message },
        Some((value, Ok(PauseUntil::At(at)))) => Timed::Until {
            value: value.to_owned(),
            at,
        },
        Some((value, Ok(PauseUntil::For(d)))) => {
            let status = a.status.as_ref();
            let recorded = status
                .filter(|s| s.paused_until_annotation.as_deref() == Some(value))
                .and_then(|s| s.paused_until.as_ref())
                .map(|t| t.0);
            let at = recorded.unwrap_or_else(|| {
                let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
                now.checked_add(d).unwrap_or(Timestamp::MAX)
            });
            Timed::Until {
                value: value.to_owned(),
                at,
            }
        }
    };
    Pause {
        pinned: is_paused(&a.metadata),
        timed,
    }
}

impl Pause {
    /// Whether the action's own annotations pause it at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        self.pinned || self.timed_active(now)
    }

    /// Whether the timed pause holds at `now`.
    pub fn timed_active(&self, now: Timestamp) -> bool {
        matches!(self.timed, Timed::Until { at, .. } if now < at)
    }

    /// When the timed pause ends, if that is still ahead (the controller requeues then).
    pub fn ends(&self, now: Timestamp) -> Option<Timestamp> {
        match self.timed {
            Timed::Until { at, .. } if now < at => Some(at),
            _ => None,
        }
    }

    /// The `Paused` condition's message while only the timed pause holds the action.
    pub fn message(&self, now: Timestamp) -> Option<String> {
        match &self.timed {
            Timed::Until { at, .. } if !self.pinned && now < *at => Some(format!(
                "paused until {at} by the action's {PAUSED_UNTIL_ANNOTATION} annotation; it \
                 resumes then, or remove the annotation to resume now"
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use palisade_crds::action::SecurityActionStatus;

    fn action(
        annotations: &[(&str, &str)],
        status: Option<SecurityActionStatus>,
    ) -> SecurityAction {
        let mut a = SecurityAction::new("a", Default::default());
        a.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        a.status = status;
        a
    }

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_time_pauses_until_then() {
        let a = action(&[(PAUSED_UNTIL_ANNOTATION, "2026-12-03T12:00:00Z")], None);
        let p = resolve(&a, t("2026-12-03T11:00:00Z"));
        assert!(p.active(t("2026-12-03T11:59:59Z")));
        assert!(!p.active(t("2026-12-03T12:00:00Z")));
        assert_eq!(
            p.ends(t("2026-12-03T11:00:00Z")),
            Some(t("2026-12-03T12:00:00Z"))
        );
        assert_eq!(p.ends(t("2026-12-03T12:00:01Z")), None);
        assert!(
            p.message(t("2026-12-03T11:00:00Z"))
                .expect("a message")
                .contains("2026-12-03T12:00:00Z")
        );
    }

    #[test]
    fn a_duration_counts_from_when_the_value_was_first_seen() {
        let now = t("2026-12-03T11:00:00Z");
        let a = action(&[(PAUSED_UNTIL_ANNOTATION, "2h")], None);
        let first = resolve(&a, now);
        assert_eq!(first.ends(now), Some(t("2026-12-03T13:00:00Z")));
        // Seen again an hour later, with the status the operator wrote: the same end.
        let recorded = SecurityActionStatus {
            paused_until: Some(Time(t("2026-12-03T13:00:00Z"))),
            paused_until_annotation: Some("2h".into()),
            ..Default::default()
        };
        let a = action(&[(PAUSED_UNTIL_ANNOTATION, "2h")], Some(recorded.clone()));
        let later = t("2026-12-03T12:00:00Z");
        assert_eq!(
            resolve(&a, later).ends(later),
            Some(t("2026-12-03T13:00:00Z"))
        );
        // After the end, re-applying the same value does not pause it again.
        let after = t("2026-12-03T14:00:00Z");
        assert!(!resolve(&a, after).active(after));
        // A new value re-arms it.
        let a = action(&[(PAUSED_UNTIL_ANNOTATION, "30m")], Some(recorded));
        assert_eq!(
            resolve(&a, after).ends(after),
            Some(t("2026-12-03T14:30:00Z"))
        );
    }

    #[test]
    fn a_bad_value_does_not_pause_and_says_why() {
        let now = t("2026-12-03T11:00:00Z");
        let a = action(&[(PAUSED_UNTIL_ANNOTATION, "tomorrow")], None);
        let p = resolve(&a, now);
        assert!(!p.active(now));
        assert!(matches!(&p.timed, Timed::Invalid { message } if message.contains("\"tomorrow\"")));
        // The pinned pause still works beside it.
        let a = action(
            &[
                (PAUSED_UNTIL_ANNOTATION, "tomorrow"),
                ("palisade.dev/paused", "true"),
            ],
            None,
        );
        assert!(resolve(&a, now).active(now));
        assert_eq!(resolve(&a, now).message(now), None);
    }
}
