//! Applies the policy in force to an identified request: allow > deny > flag (decided by
//! `palisade_policy::evaluate`). Deny is answered here (status, body, content type); flag adds
//! the actions' headers to the forwarded request; global observe mode (`--observe`) only
//! counts. Deny and flag decisions are logged as structured JSON (target `palisade::decision`)
//! with hashed identities; `--debug-headers` names the deciding action in a response header.

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::request::Parts;
use http::{Response, StatusCode};
use palisade_policy::{ActionId, ActionSet, CompiledPolicy, Decision, Request, Verdict, evaluate};
use sha2::{Digest, Sha256};

use crate::body::{self, RespBody};
use crate::identify::Identity;
use crate::metrics::Metrics;
use crate::rescue::ProxyError;
use crate::store::Store;

/// Response header naming the deciding action(s) when `--debug-headers` is on.
pub const DEBUG_HEADER: HeaderName = HeaderName::from_static("palisade-decision");

/// Enforcement switches.
#[derive(Debug, Clone, Copy)]
pub struct EnforceConfig {
    /// No bundle yet → 503 instead of forwarding.
    pub fail_closed: bool,
    /// Count only; never deny or flag.
    pub observe: bool,
    /// Add [`DEBUG_HEADER`].
    pub debug_headers: bool,
}

/// What to do with the request.
#[derive(Debug)]
pub enum Outcome {
    /// Answer with this response (a deny).
    Answer(Response<RespBody>),
    /// Forward it; add this debug header value to the response.
    Forward(Option<HeaderValue>),
}

/// Decides and applies; returns the verdict label and the outcome. Path conditions match
/// `match_path`, or `parts.uri.path()` when it is `None` (see `target::prepare`).
pub fn enforce(
    cfg: EnforceConfig,
    store: &Store,
    metrics: &Metrics,
    who: &Identity,
    match_path: Option<&str>,
    parts: &mut Parts,
) -> Result<(&'static str, Outcome), ProxyError> {
    let Some(loaded) = store.load() else {
        return match cfg.fail_closed {
            true => Err(ProxyError::NoPolicy),
            false => Ok(("none", Outcome::Forward(None))),
        };
    };
    let p = &loaded.policy;
    let detected = store.detected_for(&loaded);
    let mut req = request(who, match_path, parts);
    req.detected = detected.as_ref().map(|d| &d.index);
    let v = evaluate(p, &req);
    for name in &loaded.flag_names {
        parts.headers.remove(name);
    }
    if cfg.observe || !v.observed.is_empty() {
        let would_be = if cfg.observe {
            decision_label(&merged(&v))
        } else {
            decision_label(&v.would_be)
        };
        metrics.observed(would_be);
    }
    if cfg.observe {
        let debug = cfg
            .debug_headers
            .then(|| debug_value("observe", p, v.matched.or(&v.observed)));
        return Ok(("observed", Outcome::Forward(debug.flatten())));
    }
    match v.decision {
        Decision::Deny(id) => Ok(("deny", Outcome::Answer(deny(cfg, p, id, who, parts)))),
        Decision::Allow(id) => {
            let debug = cfg.debug_headers.then(|| debug_value("allow", p, one(id)));
            Ok(("allow", Outcome::Forward(debug.flatten())))
        }
        Decision::Forward if !v.flags.is_empty() => {
            for (name, value) in p.flag_headers(&v) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    parts.headers.append(n, v);
                }
            }
            log_decision("flag", p, v.flags, None, who, parts);
            let debug = cfg.debug_headers.then(|| debug_value("flag", p, v.flags));
            Ok(("flag", Outcome::Forward(debug.flatten())))
        }
        Decision::Forward => Ok(("none", Outcome::Forward(None))),
    }
}

fn merged(v: &Verdict) -> Decision {
    if v.observed.is_empty() {
        v.decision
    } else {
        v.would_be
    }
}

fn decision_label(d: &Decision) -> &'static str {
    match d {
        Decision::Allow(_) => "allow",
        Decision::Deny(_) => "deny",
        Decision::Forward => "forward",
    }
}

fn one(id: ActionId) -> ActionSet {
    let mut s = ActionSet::EMPTY;
    s.insert(id);
    s
}

/// The policy's view of the request (borrowed; no allocation).
fn request<'a>(who: &'a Identity, path: Option<&'a str>, parts: &'a Parts) -> Request<'a> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Request {
        ip: who.ip,
        region: who.region,
        asn: who.asn,
        api_key_hash: who.api_key_hash.as_ref(),
        token_hash: who.token_hash.as_ref(),
        developer: who.developer.as_deref(),
        app: who.app.as_deref(),
        product: who.product.as_deref(),
        user_agent: parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()),
        method: parts.method.as_str(),
        path: path.unwrap_or(parts.uri.path()),
        detected: None,
        now_unix_s: i64::try_from(now).unwrap_or(i64::MAX),
    }
}

fn deny(
    cfg: EnforceConfig,
    p: &CompiledPolicy,
    id: ActionId,
    who: &Identity,
    parts: &Parts,
) -> Response<RespBody> {
    let (status, body, content_type) = match p.deny_response(id) {
        Some(d) => (d.status, d.body.to_owned(), d.content_type),
        None => (403, String::new(), "text/plain"),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    log_decision("deny", p, one(id), Some(status.as_u16()), who, parts);
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = status;
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    if let Some(v) = cfg
        .debug_headers
        .then(|| debug_value("deny", p, one(id)))
        .flatten()
    {
        resp.headers_mut().insert(DEBUG_HEADER, v);
    }
    resp
}

/// `deny; action=name` (several names comma-separated).
fn debug_value(verb: &str, p: &CompiledPolicy, ids: ActionSet) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{verb}; action={}", names(p, ids))).ok()
}

fn names(p: &CompiledPolicy, ids: ActionSet) -> String {
    let names: Vec<&str> = ids
        .iter()
        .filter_map(|id| p.action(id))
        .map(|a| a.name.as_str())
        .collect();
    names.join(",")
}

/// One structured line per deny/flag, for a SIEM. IP, API key and token appear only as
/// truncated sha256 hashes.
fn log_decision(
    verdict: &str,
    p: &CompiledPolicy,
    ids: ActionSet,
    status: Option<u16>,
    who: &Identity,
    parts: &Parts,
) {
    let short = |h: &[u8; 32]| hex::encode(&h[..8]);
    let ip_hash: [u8; 32] = Sha256::digest(who.ip.to_string().as_bytes()).into();
    tracing::info!(
        target: "palisade::decision",
        verdict,
        actions = %names(p, ids),
        status,
        method = %parts.method,
        path = parts.uri.path(),
        client_ip_sha256 = %short(&ip_hash),
        api_key_sha256 = who.api_key_hash.as_ref().map(short),
        token_sha256 = who.token_hash.as_ref().map(short),
        developer = who.developer.as_deref(),
        app = who.app.as_deref(),
        product = who.product.as_deref(),
        region = who.region.map(|r| String::from_utf8_lossy(&r).into_owned()),
        asn = who.asn,
        "security decision"
    );
}
