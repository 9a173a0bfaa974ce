//! The status of each SecurityAction after a compile: computed purely from the compiler's
//! verdict and written (status subresource, server-side apply) only when it changed, with an
//! Event for each transition a user acts on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use palisade_crds::action::{ActionState, SecurityActionStatus};
use palisade_crds::conditions::{
    CLAIMS_VERIFIED, EXPIRED, PAUSED, READY, condition, set_condition,
};
use palisade_policy::ActionStatus;

use super::pause::{INVALID_PAUSED_UNTIL, PAUSED_UNTIL, Pause, Timed};

/// Message of an action whose `targets.workloadSelector` selects no pod with the sidecar.
pub const NO_SELECTED_PODS: &str = "the action is in the policy bundle, but \
    targets.workloadSelector selects no pod with the Palisade sidecar in this namespace, so \
    nothing enforces it; check the selector against the pods' labels";

/// Message of an action with identity conditions while injected sidecars read JWT claims
/// without verifying them.
pub const CLAIMS_UNVERIFIED: &str = "developers, developerApps or apiProducts may match JWT \
    claims, and the operator injects sidecars with --sidecar-jwt-unverified: they read claims \
    without checking the signature, so a client can claim any of them with a token it made; \
    give the sidecars a JWKS (--sidecar-jwks-volume) or use this only behind a gateway that \
    verifies tokens";

/// `ClaimsVerified` of an action: `None` for an action without developer, app or product
/// conditions (no such condition), else whether the claims it may match are verified.
pub fn claims_verified(
    c: Option<&palisade_crds::matching::MatchConditions>,
    sidecars_read_unverified_claims: bool,
) -> Option<bool> {
    let uses_identity = c.is_some_and(|c| {
        !(c.developers.is_empty() && c.developer_apps.is_empty() && c.api_products.is_empty())
    });
    uses_identity.then_some(!sidecars_read_unverified_claims)
}

/// Whether `selector` (absent: every workload) selects any of the injected pods, given by
/// their labels. An action without a selector counts as selecting: it applies to every
/// sidecar of the namespace.
pub fn selects_any<'a>(
    selector: Option<&palisade_crds::common::WorkloadSelector>,
    mut pods: impl Iterator<Item = &'a std::collections::BTreeMap<String, String>>,
) -> bool {
    selector.is_none_or(|s| pods.any(|labels| s.matches(labels)))
}

/// The status an action should have: `current` updated with the compile verdict `verdict`;
/// an active action whose workload selector selects no injected pod (`selects_pods` false)
/// is `Unenforced`, not Ready; `claims_verified` is [`claims_verified`]'s answer. Timestamps
/// only move on transitions, so the result is stable across reconciles.
#[allow(clippy::too_many_arguments)]
pub fn desired(
    current: Option<&SecurityActionStatus>,
    verdict: &ActionStatus,
    selects_pods: bool,
    claims_verified: Option<bool>,
    verb: Option<palisade_crds::action::Verb>,
    expire_time: Option<jiff::Timestamp>,
    generation: Option<i64>,
    pause: &Pause,
    now: jiff::Timestamp,
) -> SecurityActionStatus {
    let mut s = current.cloned().unwrap_or_default();
    s.observed_generation = generation;
    s.verb = verb;
    s.expire_time = expire_time.map(Time);
    (s.paused_until, s.paused_until_annotation) = match &pause.timed {
        Timed::Until { value, at } => (Some(Time(*at)), Some(value.clone())),
        Timed::None | Timed::Invalid { .. } => (None, None),
    };
    let timed_message = pause.message(now);
    let (state, ready, paused, expired) = match verdict {
        ActionStatus::Active if !selects_pods => (
            ActionState::Unenforced,
            (false, "NoSelectedPods", NO_SELECTED_PODS),
            false,
            false,
        ),
        ActionStatus::Active => (
            ActionState::Active,
            (true, "Active", "the action is in the policy bundle"),
            false,
            false,
        ),
        ActionStatus::Paused {
            by_namespace: false,
        } if timed_message.is_some() => (
            ActionState::Paused,
            (
                false,
                PAUSED_UNTIL,
                timed_message.as_deref().unwrap_or_default(),
            ),
            true,
            false,
        ),
        ActionStatus::Paused { by_namespace } => {
            let msg = if *by_namespace {
                "the namespace carries palisade.dev/paused=true; remove the annotation to resume"
            } else {
                "the action carries palisade.dev/paused=true; remove the annotation to resume"
            };
            (
                ActionState::Paused,
                (false, verdict.reason(), msg),
                true,
                false,
            )
        }
        ActionStatus::Expired { .. } => (
            ActionState::Expired,
            (
                false,
                "Expired",
                "the action expired; raise ttl/expireTime or delete it",
            ),
            false,
            true,
        ),
        ActionStatus::Invalid { reason, message } => (
            ActionState::Invalid,
            (false, *reason, message.as_str()),
            false,
            false,
        ),
    };
    s.state = Some(state);
    let (ready_ok, ready_reason, ready_msg) = ready;
    set_condition(
        &mut s.conditions,
        condition(READY, ready_ok, ready_reason, ready_msg, generation),
        now,
    );
    let (paused_reason, paused_msg) = match &pause.timed {
        _ if paused => (ready_reason, ready_msg),
        Timed::Invalid { message } => (INVALID_PAUSED_UNTIL, message.as_str()),
        _ => ("NotPaused", ""),
    };
    set_condition(
        &mut s.conditions,
        condition(PAUSED, paused, paused_reason, paused_msg, generation),
        now,
    );
    let expired_reason = if expired { "Expired" } else { "NotExpired" };
    set_condition(
        &mut s.conditions,
        condition(
            EXPIRED,
            expired,
            expired_reason,
            if expired { ready_msg } else { "" },
            generation,
        ),
        now,
    );
    match claims_verified {
        None => s.conditions.retain(|c| c.type_ != CLAIMS_VERIFIED),
        Some(verified) => {
            let (reason, msg) = match verified {
                true => ("ClaimsVerified", ""),
                false => ("ClaimsUnverified", CLAIMS_UNVERIFIED),
            };
            let c = condition(CLAIMS_VERIFIED, verified, reason, msg, generation);
            set_condition(&mut s.conditions, c, now);
        }
    }
    s
}

/// The status of a DetectionRule as the policy controller sees it: whether its detections can
/// trigger `detectedBy` conditions (Ready) or it is paused. The collector adds
/// `detectedClients` and `lastEvaluationTime` under its own field manager, and for a TorList
/// rule `ListReady`: when that is False (`list`), so is Ready, with its reason and message.
pub fn rule_desired(
    current: Option<&palisade_crds::DetectionRuleStatus>,
    paused: bool,
    observe: bool,
    list: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> (
    Option<i64>,
    Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) {
    // Only the types this controller owns: the collector writes `ListReady` under its own
    // field manager, and re-applying a stale copy of it would undo the collector's update.
    let mut conditions: Vec<_> = current
        .map(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ == READY || c.type_ == PAUSED)
        .collect();
    let (ready, reason, msg) = if paused {
        (
            false,
            "Paused",
            "the rule carries palisade.dev/paused=true; remove the annotation to resume",
        )
    } else if let Some(l) = list.filter(|l| l.status == "False") {
        (false, l.reason.as_str(), l.message.as_str())
    } else if observe {
        (
            true,
            "Observe",
            "the rule runs and opens incidents; its detections do not trigger detectedBy",
        )
    } else {
        (
            true,
            "Active",
            "the rule runs on the namespace's traffic; its detections trigger detectedBy",
        )
    };
    set_condition(
        &mut conditions,
        condition(READY, ready, reason, msg, generation),
        now,
    );
    let paused_reason = if paused { "Paused" } else { "NotPaused" };
    set_condition(
        &mut conditions,
        condition(
            PAUSED,
            paused,
            paused_reason,
            if paused { msg } else { "" },
            generation,
        ),
        now,
    );
    (generation, conditions)
}

/// The Event a state change deserves: `(reason, note)`; `None` for routine changes.
pub fn transition_event(
    old: Option<ActionState>,
    new: &ActionStatus,
) -> Option<(&'static str, String)> {
    use ActionState as S;
    match (old, new) {
        (Some(S::Paused), ActionStatus::Paused { .. })
        | (Some(S::Expired), ActionStatus::Expired { .. }) => None,
        (_, ActionStatus::Paused { by_namespace }) => Some((
            "Paused",
            if *by_namespace {
                "paused by its namespace's palisade.dev/paused annotation"
            } else {
                "paused by its palisade.dev/paused annotation"
            }
            .to_owned(),
        )),
        (Some(S::Paused), ActionStatus::Active) => {
            Some(("Resumed", "the action is enforced again".to_owned()))
        }
        (_, ActionStatus::Expired { at }) => Some((
            "Expired",
            format!("expired at {at}; it left the policy bundle"),
        )),
        (Some(S::Invalid), ActionStatus::Invalid { .. }) => None,
        (_, ActionStatus::Invalid { reason, message }) => Some((reason, message.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).expect("valid")
    }

    /// [`desired`] of an action without identity conditions, verb or expiry, generation 1.
    fn plain(
        current: Option<&SecurityActionStatus>,
        verdict: &ActionStatus,
        selects_pods: bool,
        pause: &Pause,
        now: jiff::Timestamp,
    ) -> SecurityActionStatus {
        desired(
            current,
            verdict,
            selects_pods,
            None,
            None,
            None,
            Some(1),
            pause,
            now,
        )
    }

    #[test]
    fn an_unchanged_verdict_gives_an_identical_status() {
        let first = plain(None, &ActionStatus::Active, true, &Pause::default(), t(10));
        let again = plain(
            Some(&first),
            &ActionStatus::Active,
            true,
            &Pause::default(),
            t(99),
        );
        assert_eq!(first, again, "no timestamp churn between reconciles");
        assert_eq!(first.state, Some(ActionState::Active));
    }

    #[test]
    fn pausing_flips_ready_and_paused_with_a_new_transition_time() {
        let active = plain(None, &ActionStatus::Active, true, &Pause::default(), t(10));
        let paused = plain(
            Some(&active),
            &ActionStatus::Paused { by_namespace: true },
            true,
            &Pause::default(),
            t(20),
        );
        let c = |s: &SecurityActionStatus, ty: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == ty)
                .cloned()
                .expect("condition")
        };
        assert_eq!(c(&paused, READY).status, "False");
        assert_eq!(c(&paused, PAUSED).status, "True");
        assert_eq!(c(&paused, PAUSED).reason, "NamespacePaused");
        assert_eq!(c(&paused, PAUSED).last_transition_time.0, t(20));
        assert_eq!(paused.state, Some(ActionState::Paused));
    }

    /// A timed pause reads Paused with reason PausedUntil and the recorded end; once over,
    /// Active again with the end still recorded (so the same value does not re-arm); a value
    /// that does not parse leaves the action Active and says why in the Paused condition.
    #[test]
    fn a_timed_pause_shows_its_end_and_a_bad_value_says_why() {
        let c = |s: &SecurityActionStatus, ty: &str| {
            let c = s
                .conditions
                .iter()
                .find(|c| c.type_ == ty)
                .expect("condition");
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let until = Pause {
            pinned: false,
            timed: Timed::Until {
                value: "2h".into(),
                at: t(100),
            },
        };
        let paused = ActionStatus::Paused {
            by_namespace: false,
        };
        let s = plain(None, &paused, true, &until, t(10));
        assert_eq!(s.state, Some(ActionState::Paused));
        assert_eq!(s.paused_until, Some(Time(t(100))));
        assert_eq!(s.paused_until_annotation.as_deref(), Some("2h"));
        let (status, reason, msg) = c(&s, PAUSED);
        assert_eq!((status.as_str(), reason.as_str()), ("True", PAUSED_UNTIL));
        assert!(
            msg.contains("paused until") && msg.contains("resumes then"),
            "{msg}"
        );
        let over = plain(Some(&s), &ActionStatus::Active, true, &until, t(100));
        assert_eq!(over.state, Some(ActionState::Active));
        assert_eq!(over.paused_until, Some(Time(t(100))));
        assert_eq!(c(&over, PAUSED).1, "NotPaused");

        let bad = Pause {
            pinned: false,
            timed: Timed::Invalid {
                message: "palisade.dev/paused-until: \"soon\" is neither".into(),
            },
        };
        let s = plain(None, &ActionStatus::Active, true, &bad, t(10));
        assert_eq!(s.state, Some(ActionState::Active));
        assert_eq!(s.paused_until, None);
        let (status, reason, msg) = c(&s, PAUSED);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", INVALID_PAUSED_UNTIL)
        );
        assert!(msg.contains("soon"), "{msg}");
    }

    /// An active action whose selector selects no injected pod does not read Active or
    /// Ready, and reads Active again once a selected pod appears; a paused one stays Paused.
    #[test]
    fn an_action_that_selects_no_pod_is_unenforced_not_active() {
        let sel: palisade_crds::common::WorkloadSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"app": "api"}}))
                .expect("selector");
        let labels =
            |app: &str| std::collections::BTreeMap::from([("app".to_owned(), app.to_owned())]);
        let shop = [labels("shop")];
        assert!(!selects_any(Some(&sel), shop.iter()));
        assert!(selects_any(
            Some(&sel),
            [labels("shop"), labels("api")].iter()
        ));
        assert!(selects_any(None, shop.iter()), "no selector: every sidecar");
        assert!(!selects_any(Some(&sel), [].iter()));

        let idle = plain(None, &ActionStatus::Active, false, &Pause::default(), t(10));
        assert_eq!(idle.state, Some(ActionState::Unenforced));
        let ready = idle
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NoSelectedPods")
        );
        assert!(
            ready.message.contains("workloadSelector"),
            "{}",
            ready.message
        );
        let active = plain(
            Some(&idle),
            &ActionStatus::Active,
            true,
            &Pause::default(),
            t(20),
        );
        assert_eq!(active.state, Some(ActionState::Active));
        let paused = ActionStatus::Paused {
            by_namespace: false,
        };
        let paused = plain(None, &paused, false, &Pause::default(), t(30));
        assert_eq!(
            paused.state,
            Some(ActionState::Paused),
            "paused says paused"
        );
    }

    #[test]
    fn a_failing_tor_list_makes_the_rule_not_ready_with_its_reason() {
        let bad = condition(
            "ListReady",
            false,
            "ConfigMapNotFound",
            "ConfigMap shop/tor not found",
            Some(1),
        );
        let ready = |list, paused| {
            let (_, cs) = rule_desired(None, paused, false, list, Some(1), t(5));
            let c = cs.into_iter().find(|c| c.type_ == READY).expect("Ready");
            (c.status, c.reason, c.message)
        };
        assert_eq!(
            ready(Some(&bad), false),
            (
                "False".into(),
                "ConfigMapNotFound".into(),
                "ConfigMap shop/tor not found".into()
            )
        );
        assert_eq!(ready(Some(&bad), true).1, "Paused", "paused wins");
        let good = condition("ListReady", true, "Read", "read", Some(1));
        assert_eq!(ready(Some(&good), false).0, "True");
        assert_eq!(ready(None, false).1, "Active");
    }

    #[test]
    fn events_only_on_transitions() {
        let paused = ActionStatus::Paused {
            by_namespace: false,
        };
        assert_eq!(
            transition_event(Some(ActionState::Active), &paused).map(|e| e.0),
            Some("Paused")
        );
        assert_eq!(transition_event(Some(ActionState::Paused), &paused), None);
        assert_eq!(
            transition_event(Some(ActionState::Paused), &ActionStatus::Active).map(|e| e.0),
            Some("Resumed")
        );
        assert_eq!(
            transition_event(Some(ActionState::Active), &ActionStatus::Active),
            None
        );
        let expired = ActionStatus::Expired { at: t(5) };
        assert_eq!(
            transition_event(Some(ActionState::Active), &expired).map(|e| e.0),
            Some("Expired")
        );
        assert_eq!(transition_event(Some(ActionState::Expired), &expired), None);
    }

    #[test]
    fn identity_conditions_are_named_unverified_while_sidecars_read_unverified_claims() {
        use palisade_crds::matching::MatchConditions;
        let by_developer = MatchConditions {
            developers: vec!["mallory".into()],
            ..Default::default()
        };
        let by_ua = MatchConditions::default();
        assert_eq!(claims_verified(Some(&by_developer), true), Some(false));
        assert_eq!(claims_verified(Some(&by_developer), false), Some(true));
        assert_eq!(claims_verified(Some(&by_ua), true), None);
        assert_eq!(claims_verified(None, true), None);
        let status = |current, verified| {
            desired(
                current,
                &ActionStatus::Active,
                true,
                verified,
                None,
                None,
                Some(1),
                &Pause::default(),
                t(10),
            )
        };
        let unverified = status(None, Some(false));
        let c = palisade_crds::conditions::find(&unverified.conditions, CLAIMS_VERIFIED)
            .expect("ClaimsVerified");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", "ClaimsUnverified", CLAIMS_UNVERIFIED)
        );
        // Still Active: the action is enforced, only what it matches is weaker.
        assert_eq!(unverified.state, Some(ActionState::Active));
        let verified = status(Some(&unverified), Some(true));
        let c = palisade_crds::conditions::find(&verified.conditions, CLAIMS_VERIFIED)
            .expect("ClaimsVerified");
        assert_eq!(c.status, "True");
        // The identity conditions removed: no condition left behind.
        let gone = status(Some(&unverified), None);
        assert!(palisade_crds::conditions::find(&gone.conditions, CLAIMS_VERIFIED).is_none());
    }
}
