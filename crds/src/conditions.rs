//! Status conditions: the condition types and reasons Palisade uses, the bounded schema of the
//! `conditions` list, and a helper that updates a list without churning timestamps.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use schemars::Schema;
use serde_json::json;

/// Condition type: the object is valid and compiled into the policy (actions, rules) or
/// published (incidents).
pub const READY: &str = "Ready";
/// Condition type: a `palisade.dev/paused` annotation (on the object or its namespace) holds
/// the action back.
pub const PAUSED: &str = "Paused";
/// Condition type: the action's `ttl` or `expireTime` has passed.
pub const EXPIRED: &str = "Expired";
/// Condition type, on actions with `developers`, `developerApps` or `apiProducts` conditions
/// only: whether the JWT claims those conditions may match come from verified tokens. `False`
/// (reason `ClaimsUnverified`) when the operator injects sidecars with
/// `--sidecar-jwt-unverified` and JWT claims configured: a client can then claim any
/// developer, app or product with a token it made itself.
pub const CLAIMS_VERIFIED: &str = "ClaimsVerified";

/// The maximum number of conditions on one object.
pub const MAX_CONDITIONS: usize = 8;

/// Bounds the strings of the `conditions` list items (metav1.Condition's own limits), for
/// `#[schemars(transform = ...)]` on a `Vec<Condition>` field.
pub(crate) fn bound_condition_strings(schema: &mut Schema) {
    let limits = [
        ("type", 316),
        ("status", 16),
        ("reason", 1024),
        ("message", 32768),
        ("lastTransitionTime", 64),
    ];
    if let Some(props) = schema
        .get_mut("items")
        .and_then(|i| i.get_mut("properties"))
    {
        for (field, max) in limits {
            if let Some(p) = props.get_mut(field).and_then(|p| p.as_object_mut()) {
                p.insert("maxLength".into(), json!(max));
            }
        }
    }
}

/// Builds a condition. `status` is `"True"`, `"False"` or `"Unknown"`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Puts `new` into `conditions` (replacing the condition of the same type) and returns whether
/// anything changed. `lastTransitionTime` is `now` only when the status flips (or the condition
/// is new); otherwise the old time is kept, so re-running a reconcile writes nothing new.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, now: Timestamp) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                Time(now)
            };
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            new.last_transition_time = Time(now);
            conditions.push(new);
            conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
            true
        }
    }
}

/// The condition of this type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_condition_keeps_the_transition_time_while_status_holds() {
        let t1 = Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let t2 = Timestamp::from_second(2_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut list = vec![];
        assert!(set_condition(
            &mut list,
            condition(READY, true, "Compiled", "ok", Some(1)),
            t1
        ));
        assert!(!set_condition(
            &mut list,
            condition(READY, true, "Compiled", "ok", Some(1)),
            t2
        ));
        assert_eq!(list[0].last_transition_time, Time(t1));
        assert!(set_condition(
            &mut list,
            condition(READY, true, "Compiled", "ok", Some(2)),
            t2
        ));
        assert_eq!(list[0].last_transition_time, Time(t1));
        assert!(set_condition(
            &mut list,
            condition(READY, false, "Invalid", "bad", Some(2)),
            t2
        ));
        assert_eq!(list[0].last_transition_time, Time(t2));
        assert!(set_condition(
            &mut list,
            condition(PAUSED, false, "NotPaused", "", Some(2)),
            t2
        ));
        assert_eq!(
            list.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            [PAUSED, READY]
        );
        assert_eq!(
            find(&list, READY).map(|c| c.reason.as_str()),
            Some("Invalid")
        );
    }
}
