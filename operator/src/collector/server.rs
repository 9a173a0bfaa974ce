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

/// The token is checked from the headers before the body is read: a client without a valid
/// token gets its 401 without the collector reading (or holding) its body.
async fn report(State(c): State<Arc<Collector>>, request: Request) -> (StatusCode, String) {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let caller = match c.auth.check(&c.ctx.clients.collector, token).await {
        Ok(caller) => caller,
        Err(e) if e.is_temporary() => {
            c.count("TokenReviewFailed");
            let msg = format!("{e}; retry");
            return (StatusCode::SERVICE_UNAVAILABLE, msg);
        }
        Err(e) => {
            c.count("Unauthenticated");
            return (StatusCode::UNAUTHORIZED, e.to_string());
        }
    };
    let body: Bytes = match axum::body::to_bytes(body, MAX_REPORT_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            c.count("ReportTooLarge");
            let msg = format!("report body refused: {e}; at most {MAX_REPORT_BYTES} bytes");
            return (StatusCode::PAYLOAD_TOO_LARGE, msg);
        }
    };
    let report = match Report::from_json(&body) {
        Ok(r) => r,
        Err(e) => {
            c.count(e.reason());
            return (StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    if report.sidecar.namespace != caller.namespace {
        c.count("WrongNamespace");
        let msg = format!(
            "a sidecar of namespace {} cannot report for namespace {}",
            caller.namespace, report.sidecar.namespace
        );
        return (StatusCode::FORBIDDEN, msg);
    }
    if let Some(pod) = caller.pod.as_ref().filter(|p| **p != report.sidecar.pod) {
        c.count("WrongPod");
        let msg = format!(
            "the token of pod {pod} cannot report for pod {}",
            report.sidecar.pod
        );
        return (StatusCode::FORBIDDEN, msg);
    }
    let admitted = c
        .quotas
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(
            &report.sidecar.namespace,
            &report.sidecar.pod,
            std::time::Instant::now(),
        );
    if let Err(refused) = admitted {
        c.count(refused.reason());
        c.count_quota(refused.reason(), 1);
        let msg = format!(
            "{}: at most {} reports a second per pod (bursts of {}) and {} pods per namespace; \
             retry later",
            refused.reason(),
            super::quota::REPORTS_PER_SECOND,
            super::quota::BURST,
            super::quota::MAX_PODS
        );
        return (StatusCode::TOO_MANY_REQUESTS, msg);
    }
    if !c.leading() {
        if headers.contains_key(super::forward::FORWARDED) || c.ctx.is_leader() {
            c.count("NotLeader");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "this replica is not the leader (or is restoring its state); retry".into(),
            );
        }
        c.count("Forwarded");
        return c.forward.forward(&c, token, body).await;
    }
    let outcome = c.merge(&report);
    c.count("Accepted");
    (StatusCode::ACCEPTED, format!("{outcome:?}"))
}
