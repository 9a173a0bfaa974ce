//! `pause` and `resume`: the annotations the operator acts on, written with a merge patch
//! under the field manager `kubectl-palisade`.
//!
//! `pause ACTION` sets `palisade.dev/paused: "true"` (until `resume`); `pause ACTION --for 2h`
//! sets `palisade.dev/paused-until: 2h` (the operator counts it from when it first sees the
//! value, and resumes the action itself); `resume` removes both. `pause --all` sets
//! `palisade.dev/paused: "true"` on the namespace, which holds back every action in it.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use palisade_crds::SecurityAction;
use palisade_crds::keys::{PAUSED_ANNOTATION, PAUSED_UNTIL_ANNOTATION, paused_until};
use serde_json::{Value, json};

use crate::{Target, Usage};

/// The field manager of the annotations written here.
pub const MANAGER: &str = "kubectl-palisade";

/// The annotations `pause` writes (`null` removes one): with `duration`, a timed pause
/// checked as the operator will read it.
pub fn pause_annotations(duration: Option<&str>) -> Result<Value, Usage> {
    let Some(d) = duration else {
        return Ok(json!({PAUSED_ANNOTATION: "true", PAUSED_UNTIL_ANNOTATION: null}));
    };
    let meta = ObjectMeta {
        annotations: Some([(PAUSED_UNTIL_ANNOTATION.to_owned(), d.to_owned())].into()),
        ..ObjectMeta::default()
    };
    match paused_until(&meta) {
        Some((value, Ok(_))) => {
            Ok(json!({PAUSED_ANNOTATION: null, PAUSED_UNTIL_ANNOTATION: value}))
        }
        Some((_, Err(e))) => Err(Usage(format!("--for: {e}"))),
        None => Err(Usage("--for: empty".to_owned())),
    }
}

/// The annotations `resume` writes: none of the two left.
pub fn resume_annotations() -> Value {
    json!({PAUSED_ANNOTATION: null, PAUSED_UNTIL_ANNOTATION: null})
}

fn patch(annotations: Value) -> Patch<Value> {
    Patch::Merge(json!({"metadata": {"annotations": annotations}}))
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Checks the names against `--all`.
fn check_names(verb: &str, actions: &[String], all: bool) -> Result<(), Usage> {
    match (actions.is_empty(), all) {
        (false, true) => Err(Usage(format!(
            "{verb}: give SecurityAction names or --all (the namespace), not both"
        ))),
        (true, false) => Err(Usage(format!(
            "{verb}: name the SecurityActions to {verb}, or give --all for the whole namespace"
        ))),
        _ => Ok(()),
    }
}

/// Writes `annotations` on each action, then says what happened; the first action that
/// cannot be patched stops it, named in the error.
async fn patch_actions(
    t: &Target,
    actions: &[String],
    annotations: Value,
    done: &str,
) -> anyhow::Result<()> {
    let api = Api::<SecurityAction>::namespaced(t.client.clone(), &t.namespace);
    for name in actions {
        match api
            .patch(name, &params(), &patch(annotations.clone()))
            .await
        {
            Ok(_) => println!("securityaction.palisade.dev/{name} {done}"),
            Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!(
                "securityaction {name:?} not found in namespace {:?}",
                t.namespace
            ),
            Err(e) => anyhow::bail!(
                "securityaction {name:?} in namespace {:?}: {e}",
                t.namespace
            ),
        }
    }
    Ok(())
}

async fn patch_namespace(t: &Target, annotations: Value, done: &str) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(t.client.clone());
    api.patch(&t.namespace, &params(), &patch(annotations))
        .await
        .map_err(|e| anyhow::anyhow!("namespace {:?}: {e}", t.namespace))?;
    println!("namespace/{} {done}", t.namespace);
    Ok(())
}

/// `pause`.
pub async fn pause(
    t: &Target,
    actions: &[String],
    duration: Option<&str>,
    all: bool,
) -> anyhow::Result<()> {
    check_names("pause", actions, all)?;
    if all {
        if duration.is_some() {
            return Err(Usage(
                "pause --all: the namespace switch has no --for; pause the actions with --for, \
                 or resume --all later"
                    .to_owned(),
            )
            .into());
        }
        return patch_namespace(
            t,
            json!({PAUSED_ANNOTATION: "true"}),
            "paused: no SecurityAction of it applies until `kubectl palisade resume --all`",
        )
        .await;
    }
    let annotations = pause_annotations(duration)?;
    let done = match duration {
        Some(d) => format!("paused until {d} (it resumes by itself)"),
        None => "paused".to_owned(),
    };
    patch_actions(t, actions, annotations, &done).await
}

/// `resume`.
pub async fn resume(t: &Target, actions: &[String], all: bool) -> anyhow::Result<()> {
    check_names("resume", actions, all)?;
    if all {
        return patch_namespace(t, json!({PAUSED_ANNOTATION: null}), "resumed").await;
    }
    patch_actions(t, actions, resume_annotations(), "resumed").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_pins_or_times_and_replaces_the_other_kind() {
        assert_eq!(
            pause_annotations(None).expect("ok"),
            json!({"palisade.dev/paused": "true", "palisade.dev/paused-until": null})
        );
        assert_eq!(
            pause_annotations(Some(" 2h ")).expect("ok"),
            json!({"palisade.dev/paused": null, "palisade.dev/paused-until": "2h"})
        );
        let at = "2030-01-01T08:00:00Z";
        assert_eq!(
            pause_annotations(Some(at)).expect("ok")["palisade.dev/paused-until"],
            at
        );
        assert_eq!(
            resume_annotations(),
            json!({"palisade.dev/paused": null, "palisade.dev/paused-until": null})
        );
    }

    #[test]
    fn what_the_operator_would_not_read_is_refused_before_anything_is_written() {
        for bad in ["2 hours", "tomorrow", "-1h", ""] {
            let e = pause_annotations(Some(bad)).expect_err(bad);
            assert!(e.0.starts_with("--for:"), "{bad}: {e}");
        }
        let e = pause_annotations(Some("soon")).expect_err("soon");
        assert!(e.0.contains("like 2h"), "{e}");
    }

    #[test]
    fn names_and_all_exclude_each_other() {
        assert!(check_names("pause", &["a".into()], true).is_err());
        assert!(check_names("pause", &[], false).is_err());
        assert!(check_names("pause", &["a".into()], false).is_ok());
        assert!(check_names("resume", &[], true).is_ok());
    }
}
