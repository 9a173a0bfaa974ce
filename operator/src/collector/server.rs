//! The report endpoint: `POST /v1/reports` with a sidecar's window summary (JSON) and its
//! projected service-account token. Answers: 202 merged, 400 malformed report, 401 bad
//! token, 403 report for another namespace (or, with a pod-bound token, another pod). A non-leader forwards the report to the leader
//! and answers with the leader's status; 503 when no leader is known or reachable, when the
//! leader is still restoring its state, or when a forwarded report reaches a non-leader.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::routing::post;
use palisade_detection::report::{MAX_REPORT_BYTES, Report};

use super::Collector;

/// The collector's routes.
pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route("/v1/reports", post(report))
        .layer(DefaultBodyLimit::max(MAX_REPORT_BYTES))
        .with_state(collector)
}

/// Why a report was not merged: one variant per answer, each with its status
/// ([`Refusal::status`]) and its reason for `palisade_operator_reports_total`
/// ([`Refusal::reason`]), as the sidecar's `rescue` maps its errors.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The API server could not review the token (an outage): the sidecar retries.
    #[error("{0}; retry")]
    TokenReviewFailed(super::auth::AuthError),
    /// No token, or one not valid for audience `palisade`.
    #[error("{0}")]
    Unauthenticated(super::auth::AuthError),
    /// A body over the limit (or one that did not arrive).
    #[error("report body refused: {0}; at most {MAX_REPORT_BYTES} bytes")]
    TooLarge(String),
    /// Not a report of a supported version, or beyond its bounds.
    #[error("{0}")]
    Malformed(palisade_detection::report::ReportError),
    /// A sidecar reporting for another namespace.
    #[error("a sidecar of namespace {caller} cannot report for namespace {report}")]
    WrongNamespace {
        /// The token's namespace.
        caller: String,
        /// The report's.
        report: String,
    },
    /// A pod-bound token reporting for another pod.
    #[error("the token of pod {caller} cannot report for pod {report}")]
    WrongPod {
        /// The token's pod.
        caller: String,
        /// The report's.
        report: String,
    },
    /// A quota of the pod or the namespace.
    #[error(
        "{}: at most {} reports a second per pod (bursts of {}), as many per pod carrying the \
         sidecar for the whole namespace (counting at least {} pods), and {} pods per \
         namespace; retry later",
        .0.reason(),
        super::quota::REPORTS_PER_SECOND,
        super::quota::BURST,
        super::quota::MIN_NAMESPACE_PODS,
        super::quota::MAX_PODS
    )]
    Quota(super::quota::Refused),
    /// This replica does not own the report's collector shard (or is restoring it), and the
    /// report was forwarded here or this replica is about to own it.
    #[error("this replica does not own the report's collector shard (or is restoring it); retry")]
    NotLeader,
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TokenReviewFailed(_) | Self::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::WrongNamespace { .. } | Self::WrongPod { .. } => StatusCode::FORBIDDEN,
            Self::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `reason` label of `palisade_operator_reports_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TokenReviewFailed(_) => "TokenReviewFailed",
            Self::Unauthenticated(_) => "Unauthenticated",
            Self::TooLarge(_) => "ReportTooLarge",
            Self::Malformed(e) => e.reason(),
            Self::WrongNamespace { .. } => "WrongNamespace",
            Self::WrongPod { .. } => "WrongPod",
            Self::Quota(q) => q.reason(),
            Self::NotLeader => "NotLeader",
        }
    }
}

/// Answers a report: merged (202), forwarded to the leader (its answer), or refused.
async fn report(State(c): State<Arc<Collector>>, request: Request) -> (StatusCode, String) {
    match accept(&c, request).await {
        Ok(answer) => answer,
        Err(refusal) => {
            c.count(refusal.reason());
            if let Refusal::Quota(q) = &refusal {
                c.count_quota(q.reason(), 1);
            }
            (refusal.status(), refusal.to_string())
        }
    }
}

/// The token is checked from the headers before the body is read: a client without a valid
/// token gets its 401 without the collector reading (or holding) its body.
async fn accept(c: &Collector, request: Request) -> Result<(StatusCode, String), Refusal> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let caller = c
        .auth
        .check(&c.ctx.clients.collector, token)
        .await
        .map_err(|e| match e.is_temporary() {
            true => Refusal::TokenReviewFailed(e),
            false => Refusal::Unauthenticated(e),
        })?;
    // The namespace's budget first: a report it has no budget for is not even read.
    c.quotas
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit_namespace(&caller.namespace, std::time::Instant::now())
        .map_err(Refusal::Quota)?;
    let body: Bytes = axum::body::to_bytes(body, MAX_REPORT_BYTES)
        .await
        .map_err(|e| Refusal::TooLarge(e.to_string()))?;
    let report = Report::from_json(&body).map_err(Refusal::Malformed)?;
    if report.sidecar.namespace != caller.namespace {
        return Err(Refusal::WrongNamespace {
            caller: caller.namespace,
            report: report.sidecar.namespace,
        });
    }
    if let Some(pod) = caller.pod.as_ref().filter(|p| **p != report.sidecar.pod) {
        return Err(Refusal::WrongPod {
            caller: pod.clone(),
            report: report.sidecar.pod,
        });
    }
    c.quotas
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(
            &report.sidecar.namespace,
            &report.sidecar.pod,
            std::time::Instant::now(),
        )
        .map_err(Refusal::Quota)?;
    let shard = c.shards.of(&report.sidecar.namespace);
    if !c.shards.owns_shard(shard) {
        // Held but not restored yet, or forwarded here by a replica that thought so: the
        // sidecar keeps the report and sends it again.
        if headers.contains_key(super::forward::FORWARDED) || c.shards.holds(shard) {
            return Err(Refusal::NotLeader);
        }
        c.count("Forwarded");
        return Ok(c.forward.forward(c, shard, token, body).await);
    }
    let outcome = c.merge(&report).ok_or(Refusal::NotLeader)?;
    c.count("Accepted");
    Ok((StatusCode::ACCEPTED, format!("{outcome:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_reason() {
        let quota = super::super::quota::Refused::ReportRate;
        let cases = [
            (Refusal::NotLeader, 503, "NotLeader"),
            (
                Refusal::TooLarge("length limit exceeded".into()),
                413,
                "ReportTooLarge",
            ),
            (
                Refusal::WrongNamespace {
                    caller: "a".into(),
                    report: "b".into(),
                },
                403,
                "WrongNamespace",
            ),
            (
                Refusal::WrongPod {
                    caller: "p".into(),
                    report: "q".into(),
                },
                403,
                "WrongPod",
            ),
            (Refusal::Quota(quota), 429, "ReportRateExceeded"),
        ];
        for (r, status, reason) in cases {
            assert_eq!((r.status().as_u16(), r.reason()), (status, reason), "{r}");
        }
        let msg = Refusal::WrongNamespace {
            caller: "shop".into(),
            report: "bank".into(),
        }
        .to_string();
        assert_eq!(
            msg,
            "a sidecar of namespace shop cannot report for namespace bank"
        );
        assert!(Refusal::Quota(quota).to_string().contains("retry later"));
        let malformed = Report::from_json(b"{").expect_err("not a report");
        let r = Refusal::Malformed(malformed);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let missing = Refusal::Unauthenticated(super::super::auth::AuthError::Missing);
        assert_eq!(
            (missing.status().as_u16(), missing.reason()),
            (401, "Unauthenticated")
        );
        let down = super::super::auth::AuthError::Review(kube::Error::Service(Box::new(
            std::io::Error::other("connection refused"),
        )));
        let outage = Refusal::TokenReviewFailed(down);
        assert_eq!(
            (outage.status().as_u16(), outage.reason()),
            (503, "TokenReviewFailed")
        );
        assert!(outage.to_string().ends_with("; retry"), "{outage}");
        let pods = Refusal::Quota(super::super::quota::Refused::Pods);
        assert_eq!(
            (pods.status().as_u16(), pods.reason()),
            (429, "PodQuotaExceeded")
        );
        let ns = Refusal::Quota(super::super::quota::Refused::NamespaceReportRate);
        assert_eq!(
            (ns.status().as_u16(), ns.reason()),
            (429, "NamespaceReportRateExceeded")
        );
    }
}
