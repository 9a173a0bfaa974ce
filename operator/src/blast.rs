//! The blast-radius check: a validating admission webhook on SecurityActions that replays a
//! new or changed deny against the last hour of its namespace's traffic (the replay sample,
//! `collector::replay`) before the API server stores it. Above
//! `--blast-radius-warn-percent` of the traffic the answer carries an admission *warning*
//! (`kubectl apply` and Argo CD show it); above `--blast-radius-refuse-percent` the action is
//! refused, unless it carries the annotation `palisade.dev/blast-radius-ok: "true"`. It
//! catches the self-inflicted outage a mistyped CIDR causes.
//!
//! Only what can deny traffic is checked: a `deny` in `Enforce` mode, not paused, whose spec
//! is new (CREATE, or an UPDATE that changed the spec: re-applying an unchanged manifest
//! never warns or refuses). Without a sample (no traffic reported yet) or when the sample
//! cannot be read, the action is admitted as it is: the check is advisory and its webhook
//! fails open (`failurePolicy: Ignore`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use kube::ResourceExt as _;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use palisade_crds::SecurityAction;
use palisade_crds::common::Mode;

use crate::collector::replay::{self, Estimate};
use crate::context::Context;
use crate::injector::config::InjectConfig;
use crate::metrics::AdmissionLabels;
use crate::policy::convert;

/// The webhook's name in its ValidatingWebhookConfiguration.
pub const WEBHOOK_NAME: &str = "blast-radius.palisade.dev";
/// The annotation that lets a deny through above the refuse threshold.
pub const OVERRIDE_ANNOTATION: &str = "palisade.dev/blast-radius-ok";

/// The blast-radius check's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BlastArgs {
    /// ValidatingWebhookConfiguration whose `caBundle` the operator keeps up to date (the
    /// blast-radius check); empty: none.
    #[arg(
        long = "blast-radius-webhook-config",
        env = "PALISADE_BLAST_RADIUS_WEBHOOK_CONFIG",
        default_value = "palisade-blast-radius"
    )]
    pub blast_webhook_config: String,
    /// A deny that would have matched more than this share of the last hour's requests (in
    /// percent) is admitted with a warning.
    #[arg(
        long = "blast-radius-warn-percent",
        env = "PALISADE_BLAST_RADIUS_WARN_PERCENT",
        default_value_t = 5.0
    )]
    pub warn_percent: f64,
    /// A deny above this share (in percent) is refused unless annotated
    /// `palisade.dev/blast-radius-ok: "true"`; 100 never refuses.
    #[arg(
        long = "blast-radius-refuse-percent",
        env = "PALISADE_BLAST_RADIUS_REFUSE_PERCENT",
        default_value_t = 50.0
    )]
    pub refuse_percent: f64,
}

impl BlastArgs {
    /// Checks the thresholds; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, v) in [
            ("--blast-radius-warn-percent", self.warn_percent),
            ("--blast-radius-refuse-percent", self.refuse_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{flag} {v} is not a percentage between 0 and 100"));
            }
        }
        Ok(())
    }
}

/// What the check concludes about one admission.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not a deny that could change anything now, or no sample: admitted silently.
    Skip(&'static str),
    /// Below the warn threshold.
    Fine,
    /// Admitted with this warning.
    Warn(String),
    /// Refused with this message.
    Refuse(String),
}

impl Verdict {
    fn label(&self) -> &'static str {
        match self {
            Self::Skip(reason) => reason,
            Self::Fine => "BelowThreshold",
            Self::Warn(_) => "Warned",
            Self::Refuse(_) => "Refused",
        }
    }
}

/// Whether the request is one the check looks at: a deny, enforced, not paused, new or with
/// a changed spec.
pub fn wants(req: &AdmissionRequest<SecurityAction>) -> Result<&SecurityAction, &'static str> {
    let Some(a) = req.object.as_ref() else {
        return Err("NoObject");
    };
    if a.spec.deny.is_none() {
        return Err("NotDeny");
    }
    if a.spec.mode == Mode::Observe {
        return Err("Observe");
    }
    if palisade_crds::keys::is_paused(&a.metadata) {
        return Err("Paused");
    }
    if req.operation == Operation::Update
        && req.old_object.as_ref().is_some_and(|old| {
            serde_json::to_value(&old.spec).ok() == serde_json::to_value(&a.spec).ok()
        })
    {
        return Err("SpecUnchanged");
    }
    Ok(a)
}

/// Decides from an estimate: warn, refuse or fine.
pub fn judge(a: &SecurityAction, ns: &str, e: &Estimate, args: &BlastArgs) -> Verdict {
    let what = format!(
        "SecurityAction {ns}/{} would have denied ~{:.1} % of the last hour's requests in {ns} \
         ({} of {}, from at least {} clients)",
        a.name_any(),
        e.percent,
        e.matched_requests,
        e.total_requests,
        e.clients
    );
    let overridden = a
        .annotations()
        .get(OVERRIDE_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    // An estimate that had to ignore conditions (a workload selector, detectedBy) is an
    // upper bound: a deny scoped to one workload may rightly deny all of that workload's
    // traffic. It warns, never refuses.
    if !e.ignored.is_empty() {
        if e.percent > args.warn_percent {
            return Verdict::Warn(format!(
                "{what} if its {} matched every request (the sample cannot tell); replay it \
                 with palisade-operator replay",
                e.ignored.join(" and ")
            ));
        }
        return Verdict::Fine;
    }
    if e.percent > args.refuse_percent && args.refuse_percent < 100.0 && !overridden {
        return Verdict::Refuse(format!(
            "{what}, above the {:.0} % limit; check the conditions (a mistyped CIDR?), try it \
             with mode: Observe, or if it is meant, annotate it {OVERRIDE_ANNOTATION}: \"true\"",
            args.refuse_percent
        ));
    }
    if e.percent > args.warn_percent {
        return Verdict::Warn(format!("{what}; replay it with palisade-operator replay"));
    }
    Verdict::Fine
}

async fn check(ctx: &Context, req: &AdmissionRequest<SecurityAction>) -> Verdict {
    let a = match wants(req) {
        Ok(a) => a,
        Err(reason) => return Verdict::Skip(reason),
    };
    let ns = req.namespace.clone().unwrap_or_default();
    let client = &ctx.clients.injector;
    let doc = match replay::read(client, &ns).await {
        Ok(doc) => doc,
        Err(e) => {
            tracing::debug!(namespace = %ns, error = %e, "no replay sample: blast radius not checked");
            return Verdict::Skip("NoSample");
        }
    };
    let configmaps =
        match crate::policy::referenced_configmaps(client, &ns, std::slice::from_ref(a)).await {
            Ok(cms) => cms,
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "blast radius: cannot read IP lists");
                return Verdict::Skip("ListsUnreadable");
            }
        };
    let spec = convert::action(a, &configmaps, false);
    let lists = convert::list_texts(std::slice::from_ref(&spec), &configmaps);
    match replay::estimate(&doc, spec, lists, jiff::Timestamp::now()) {
        Ok(e) => judge(a, &ns, &e, &ctx.args.blast_radius),
        // The CRD's validation and the policy controller say what is wrong with it.
        Err(_) => Verdict::Skip("DoesNotCompile"),
    }
}

/// `POST /validate-securityaction`.
pub async fn validate(
    State((ctx, _)): State<(Arc<Context>, Arc<InjectConfig>)>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let review: AdmissionReview<SecurityAction> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let res = AdmissionResponse::invalid(format!("not an admission review: {e}"));
            return axum::Json(serde_json::to_value(res.into_review()).unwrap_or_default());
        }
    };
    let req: AdmissionRequest<SecurityAction> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            let res = AdmissionResponse::invalid(format!("no request in the review: {e}"));
            return axum::Json(serde_json::to_value(res.into_review()).unwrap_or_default());
        }
    };
    let verdict = check(&ctx, &req).await;
    let labels = AdmissionLabels {
        result: match verdict {
            Verdict::Refuse(_) => "denied",
            Verdict::Warn(_) => "warned",
            _ => "allowed",
        },
        reason: verdict.label(),
    };
    ctx.metrics.blast_radius.get_or_create(&labels).inc();
    let mut res = AdmissionResponse::from(&req);
    match verdict {
        Verdict::Refuse(msg) => res = res.deny(msg),
        Verdict::Warn(msg) => res.warnings = Some(vec![msg]),
        Verdict::Skip(_) | Verdict::Fine => {}
    }
    axum::Json(serde_json::to_value(res.into_review()).unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn action(yaml: &str) -> SecurityAction {
        serde_yaml::from_str(yaml).unwrap()
    }

    const DENY: &str = "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {name: d, namespace: shop}\nspec:\n  deny: {status: 403}\n  conditions: {ipRanges: [192.0.2.0/24]}\n";

    fn request(op: Operation, object: &str, old: Option<&str>) -> AdmissionRequest<SecurityAction> {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "palisade.dev", "version": "v1alpha1", "kind": "SecurityAction"},
                "resource": {"group": "palisade.dev", "version": "v1alpha1", "resource": "securityactions"},
                "operation": match op { Operation::Create => "CREATE", _ => "UPDATE" },
                "namespace": "shop", "name": "d",
                "userInfo": {},
                "object": serde_json::to_value(action(object)).unwrap(),
                "oldObject": old.map(|o| serde_json::to_value(action(o)).unwrap()),
            }
        });
        let review: AdmissionReview<SecurityAction> = serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    fn estimate(percent: f64) -> Estimate {
        Estimate {
            matched_requests: (percent * 10.0) as u64,
            clients: 3,
            total_requests: 1000,
            percent,
            samples_matched: 1,
            samples: 10,
            from: None,
            ignored: vec![],
        }
    }

    /// A workload-scoped deny (or one on detected clients) cannot be replayed exactly: the
    /// estimate ignores the selector, so it warns and never refuses.
    #[test]
    fn an_estimate_that_ignored_conditions_warns_but_never_refuses() {
        let scoped = DENY.replace(
            "spec:\n",
            "spec:\n  targets: {workloadSelector: {matchLabels: {tier: public}}}\n",
        );
        let a = action(&scoped);
        let mut e = estimate(100.0);
        e.ignored = vec!["workloadSelector"];
        match judge(&a, "shop", &e, &args()) {
            Verdict::Warn(msg) => assert!(msg.contains("workloadSelector"), "{msg}"),
            other => panic!("{other:?}"),
        }
        e.percent = 1.0;
        assert!(matches!(judge(&a, "shop", &e, &args()), Verdict::Fine));
        // The same estimate without ignored conditions is refused.
        e.percent = 100.0;
        e.ignored.clear();
        assert!(matches!(judge(&a, "shop", &e, &args()), Verdict::Refuse(_)));
    }

    fn args() -> BlastArgs {
        BlastArgs {
            blast_webhook_config: String::new(),
            warn_percent: 5.0,
            refuse_percent: 50.0,
        }
    }

    #[test]
    fn only_new_enforced_denies_are_checked() {
        assert!(wants(&request(Operation::Create, DENY, None)).is_ok());
        let observe = DENY.replace("spec:\n", "spec:\n  mode: Observe\n");
        assert_eq!(
            wants(&request(Operation::Create, &observe, None)).unwrap_err(),
            "Observe"
        );
        let flag = DENY.replace(
            "deny: {status: 403}",
            "flag: {headers: [{name: X-A, value: b}]}",
        );
        assert_eq!(
            wants(&request(Operation::Create, &flag, None)).unwrap_err(),
            "NotDeny"
        );
        let paused = DENY.replace(
            "namespace: shop}",
            "namespace: shop, annotations: {palisade.dev/paused: \"true\"}}",
        );
        assert_eq!(
            wants(&request(Operation::Create, &paused, None)).unwrap_err(),
            "Paused"
        );
        // Re-applying the same manifest (GitOps) is not checked again; a changed spec is.
        assert_eq!(
            wants(&request(Operation::Update, DENY, Some(DENY))).unwrap_err(),
            "SpecUnchanged"
        );
        let wider = DENY.replace("192.0.2.0/24", "0.0.0.0/0");
        assert!(wants(&request(Operation::Update, &wider, Some(DENY))).is_ok());
    }

    #[test]
    fn thresholds_warn_then_refuse_unless_overridden() {
        let a = action(DENY);
        assert_eq!(judge(&a, "shop", &estimate(1.0), &args()), Verdict::Fine);
        let Verdict::Warn(w) = judge(&a, "shop", &estimate(12.0), &args()) else {
            panic!("a warning")
        };
        assert!(w.contains("shop/d") && w.contains("12.0 %"), "{w}");
        let Verdict::Refuse(r) = judge(&a, "shop", &estimate(80.0), &args()) else {
            panic!("a refusal")
        };
        assert!(
            r.contains("80.0 %") && r.contains(OVERRIDE_ANNOTATION),
            "{r}"
        );
        let ok = action(&DENY.replace(
            "namespace: shop}",
            "namespace: shop, annotations: {palisade.dev/blast-radius-ok: \"true\"}}",
        ));
        assert!(matches!(
            judge(&ok, "shop", &estimate(80.0), &args()),
            Verdict::Warn(_)
        ));
        let never = BlastArgs {
            refuse_percent: 100.0,
            ..args()
        };
        assert!(matches!(
            judge(&a, "shop", &estimate(100.0), &never),
            Verdict::Warn(_)
        ));
        assert!(
            BlastArgs {
                warn_percent: 120.0,
                ..args()
            }
            .validate()
            .is_err()
        );
    }
}
