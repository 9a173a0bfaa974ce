//! Applies the policy in force to an identified request: allow > deny > flag (decided by
//! `palisade_policy::evaluate`). Deny is answered here (status, body, content type); flag adds
//! the actions' headers to the forwarded request; global observe mode (`--observe`) only
//! counts. Deny and flag decisions are logged as structured JSON (target `palisade::decision`)
//! with hashed identities, allow decisions too when that target is enabled at debug level;
//! `--debug-headers` (or the bundle's namespace setting) names the deciding action in a
//! response header.

use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::request::Parts;
use http::{Response, StatusCode};
use palisade_policy::{ActionId, ActionSet, CompiledPolicy, Decision, Request, Verdict, evaluate};
use sha2::{Digest, Sha256};

use crate::body::{self, RespBody};
use crate::credentials::{Credentials, Distinct};
use crate::identify::Identity;
use crate::limit::{self, Check, Limits};
use crate::metrics::Metrics;
use crate::rescue::ProxyError;
use crate::store::{Loaded, Store};

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
    /// Answer with this response (a deny, or a `429` of a rate limit).
    Answer(Response<RespBody>),
    /// Answer with this response after holding the request this long (a rate limit's
    /// tarpit).
    Hold(Response<RespBody>, Duration),
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
    let v = verdict(store, &loaded, who, match_path, parts);
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
    let hits = &loaded.hits;
    let debug_headers = cfg.debug_headers || p.bundle().debug_headers;
    if cfg.observe {
        let all = v.matched.or(&v.observed);
        hits.observed(&all);
        let debug = debug_headers.then(|| debug_value("observe", p, all));
        return Ok(("observed", Outcome::Forward(debug.flatten())));
    }
    hits.matched(&v.matched);
    hits.observed(&v.observed);
    let cfg = EnforceConfig {
        debug_headers,
        ..cfg
    };
    if v.decision == Decision::Forward
        && !v.limits.is_empty()
        && let Some((id, wait)) = over_limit(p, &loaded.limits, v.limits, who, parts)
    {
        hits.decided_one(id);
        return Ok(("ratelimit", too_many(cfg, p, id, wait, who, parts)));
    }
    match v.decision {
        Decision::Deny(id) => {
            hits.decided_one(id);
            Ok(("deny", Outcome::Answer(deny(cfg, p, id, who, parts))))
        }
        Decision::Allow(id) => {
            hits.decided_one(id);
            // Allowed requests are most of the traffic of an allow-list: logged only when
            // asked for (RUST_LOG=palisade::decision=debug).
            if tracing::enabled!(target: "palisade::decision", tracing::Level::DEBUG) {
                log_decision("allow", p, one(id), None, who, parts);
            }
            let debug = cfg.debug_headers.then(|| debug_value("allow", p, one(id)));
            Ok(("allow", Outcome::Forward(debug.flatten())))
        }
        Decision::Forward if !v.flags.is_empty() => {
            for (name, value) in p.flag_headers(&v) {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) && crate::forward::may_be_added(&n)
                {
                    parts.headers.append(n, v);
                }
            }
            hits.decided(&v.flags);
            log_decision("flag", p, v.flags, None, who, parts);
            let debug = cfg.debug_headers.then(|| debug_value("flag", p, v.flags));
            Ok(("flag", Outcome::Forward(debug.flatten())))
        }
        Decision::Forward => Ok(("none", Outcome::Forward(None))),
    }
}

/// The verdict of the policy `loaded` (held by `store`, with its detected clients) on a request
/// from `who`: what [`enforce`] acts on. Public for `kubectl palisade explain`, which answers
/// with this very code.
pub fn verdict(
    store: &Store,
    loaded: &Loaded,
    who: &Identity,
    match_path: Option<&str>,
    parts: &Parts,
) -> Verdict {
    let detected = store.detected_for(loaded);
    let mut req = request(who, match_path, parts);
    req.detected = detected.as_ref().map(|d| &d.index);
    evaluate_readings(&loaded.policy, &req, &who.credentials)
}

/// Evaluates every reading of the request (each combination of its candidate API keys, tokens
/// and methods, see `credentials`) and keeps the strictest verdict, so a request whose reading
/// by the application the sidecar cannot know is denied if any reading is. An unambiguous
/// request (the common one) is evaluated once, as it is.
pub fn evaluate_readings(p: &CompiledPolicy, base: &Request<'_>, c: &Credentials) -> Verdict {
    if c.readings() == 1 {
        return evaluate(p, base);
    }
    let mut out: Option<Verdict> = None;
    for key in options(&c.api_keys) {
        for token in options(&c.tokens) {
            for method in c.methods.iter() {
                let req = Request {
                    api_key_hash: key,
                    token_hash: token,
                    method: method.as_str(),
                    ..*base
                };
                let v = evaluate(p, &req);
                out = Some(out.map_or(v, |acc| strictest(acc, v)));
            }
        }
    }
    out.unwrap_or_else(|| evaluate(p, base))
}

/// Each value, or one `None` when there is none.
fn options(d: &Distinct<[u8; 32]>) -> impl Iterator<Item = Option<&[u8; 32]>> {
    d.iter().map(Some).chain(d.is_empty().then_some(None))
}

/// The stricter of two readings' verdicts: a deny of either (the first's, when both deny),
/// an allow only when both allow, else forward with the flags and under the rate limits of
/// each reading that forwards.
pub fn strictest(a: Verdict, b: Verdict) -> Verdict {
    let decision = stricter(a.decision, b.decision);
    let forwarded = |v: &Verdict| match v.decision {
        Decision::Forward => (v.flags, v.limits),
        _ => (ActionSet::EMPTY, ActionSet::EMPTY),
    };
    let (flags, limits) = match decision {
        Decision::Forward => {
            let ((fa, la), (fb, lb)) = (forwarded(&a), forwarded(&b));
            (fa.or(&fb), la.or(&lb))
        }
        _ => (ActionSet::EMPTY, ActionSet::EMPTY),
    };
    Verdict {
        decision,
        flags,
        limits,
        matched: a.matched.or(&b.matched),
        observed: a.observed.or(&b.observed),
        would_be: stricter(a.would_be, b.would_be),
    }
}

fn stricter(a: Decision, b: Decision) -> Decision {
    match (a, b) {
        (Decision::Deny(id), _) | (_, Decision::Deny(id)) => Decision::Deny(id),
        (Decision::Allow(id), Decision::Allow(_)) => Decision::Allow(id),
        _ => Decision::Forward,
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
        // Upper case (see `credentials`); the other readings are evaluated by
        // `evaluate_readings`.
        method: who
            .credentials
            .methods
            .first()
            .map_or(parts.method.as_str(), http::Method::as_str),
        path: path.unwrap_or(parts.uri.path()),
        detected: None,
        now_unix_s: i64::try_from(now).unwrap_or(i64::MAX),
    }
}

/// The first rate limit of `ids` (in action order) the request's client is above, and how
/// long until it may send again. Each limit before it counted the request as passed.
fn over_limit(
    p: &CompiledPolicy,
    limits: &Limits,
    ids: ActionSet,
    who: &Identity,
    parts: &Parts,
) -> Option<(ActionId, Duration)> {
    let now = Instant::now();
    let v6_len = p.bundle().ipv6_prefix_len;
    let mut buf = [0u8; 18];
    for id in ids.iter() {
        let (Some(limit), Some(table)) = (p.rate_limit(id), limits.table(id)) else {
            continue;
        };
        // The user agent is looked up only for a limit that counts by it.
        let user_agent = (limit.by == palisade_policy::ClientKeyKind::UserAgent)
            .then(|| parts.headers.get(USER_AGENT).map(HeaderValue::as_bytes))
            .flatten();
        let secrets = (
            who.api_key_hash.as_ref(),
            who.token_hash.as_ref(),
            user_agent,
        );
        let Some(key) = limit::client_key(limit.by, who.ip, v6_len, secrets, &mut buf) else {
            continue;
        };
        if let Check::Limited(wait) = table.check(limit, key, now) {
            return Some((id, wait));
        }
    }
    None
}

/// `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up, at least 1), held
/// for the action's tarpit first if it has one. Logged only at debug level: a limited client
/// sends many.
fn too_many(
    cfg: EnforceConfig,
    p: &CompiledPolicy,
    id: ActionId,
    wait: Duration,
    who: &Identity,
    parts: &Parts,
) -> Outcome {
    let retry_after = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    if tracing::enabled!(target: "palisade::decision", tracing::Level::DEBUG) {
        log_decision("ratelimit", p, one(id), Some(429), who, parts);
    }
    let mut resp = Response::new(body::full("too many requests\n".to_owned()));
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = resp.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(v) = cfg
        .debug_headers
        .then(|| debug_value("ratelimit", p, one(id)))
        .flatten()
    {
        headers.insert(DEBUG_HEADER, v);
    }
    match p.rate_limit(id).map_or(0, |l| l.tarpit_ms) {
        0 => Outcome::Answer(resp),
        ms => Outcome::Hold(resp, Duration::from_millis(u64::from(ms))),
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
        readings = who.credentials.readings(),
        developer = who.developer.as_deref(),
        app = who.app.as_deref(),
        product = who.product.as_deref(),
        claims = who.claims.label(),
        region = who.region.map(|r| String::from_utf8_lossy(&r).into_owned()),
        asn = who.asn,
        "security decision"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(decision: Decision, flags: &[u16]) -> Verdict {
        let flags: ActionSet = flags.iter().map(|i| ActionId(*i)).collect();
        Verdict {
            decision,
            flags,
            matched: flags,
            ..Verdict::NONE
        }
    }

    #[test]
    fn the_strictest_reading_wins() {
        let (allow, deny) = (Decision::Allow(ActionId(1)), Decision::Deny(ActionId(2)));
        let forward = verdict(Decision::Forward, &[5]);
        let cases = [
            (verdict(allow, &[]), verdict(deny, &[]), deny),
            (verdict(deny, &[]), verdict(allow, &[]), deny),
            (forward, verdict(deny, &[]), deny),
            (verdict(allow, &[]), verdict(allow, &[]), allow),
            (verdict(allow, &[]), forward, Decision::Forward),
            (forward, verdict(allow, &[]), Decision::Forward),
        ];
        for (a, b, want) in cases {
            assert_eq!(strictest(a, b).decision, want, "{a:?} {b:?}");
        }
        let first_deny = strictest(
            verdict(deny, &[]),
            verdict(Decision::Deny(ActionId(3)), &[]),
        );
        assert_eq!(first_deny.decision, deny);
        // Forward keeps the flags of every reading that forwards, not those of an allowed one.
        let both = strictest(forward, verdict(Decision::Forward, &[6]));
        assert_eq!(both.flags.iter().map(|i| i.0).collect::<Vec<_>>(), [5, 6]);
        let allowed_flags = verdict(allow, &[7]);
        let one = strictest(allowed_flags, forward);
        assert_eq!(one.flags.iter().map(|i| i.0).collect::<Vec<_>>(), [5]);
        assert!(strictest(verdict(deny, &[]), forward).flags.is_empty());
        assert_eq!(one.matched.iter().map(|i| i.0).collect::<Vec<_>>(), [5, 7]);
    }
}
