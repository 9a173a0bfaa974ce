//! Validates one action's spec and normalises its conditions, resolving referenced lists.
//! Every error names the field and says what to fix; it becomes the action's `Invalid` status.

use std::collections::BTreeMap;

use crate::bundle::BundleConditions;
use crate::lists::{PrefixList, parse_prefix};
use crate::path::{EscapedSlashes, normalize};
use crate::spec::{ActionSpec, Conditions, DetectedBy, Header, ListRef, PathMatch, RuleSpec, Verb};

/// Why an action cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

fn invalid(reason: &'static str, message: String) -> Invalid {
    Invalid { reason, message }
}

/// A valid action: its normalised conditions, inline prefixes and referenced lists.
#[derive(Debug)]
pub(crate) struct Checked {
    pub conditions: BundleConditions,
    pub inline: PrefixList,
    pub lists: Vec<ListRef>,
}

/// Referenced lists, each parsed once however many actions use it.
#[derive(Debug)]
pub(crate) struct ListCache<'a> {
    texts: &'a BTreeMap<ListRef, String>,
    parsed: BTreeMap<ListRef, Result<PrefixList, String>>,
}

impl<'a> ListCache<'a> {
    pub fn new(texts: &'a BTreeMap<ListRef, String>) -> Self {
        Self {
            texts,
            parsed: BTreeMap::new(),
        }
    }

    /// The parsed list, or what is wrong with it (without the field name).
    fn check(&mut self, r: &ListRef) -> Result<(), String> {
        let texts = self.texts;
        let entry = self
            .parsed
            .entry(r.clone())
            .or_insert_with(|| match texts.get(r) {
                None => Err(format!("{r} not found; create it or remove the reference")),
                Some(text) => PrefixList::parse(text).map_err(|e| {
                    format!(
                        "{r} line {}: {:?} is not an IP prefix; fix or remove the line",
                        e.line, e.text
                    )
                }),
            });
        entry.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// A list that [`ListCache::check`] accepted.
    pub fn get(&self, r: &ListRef) -> Option<&PrefixList> {
        self.parsed.get(r).and_then(|p| p.as_ref().ok())
    }
}

/// Checks an action against the namespace's rules and lists.
pub(crate) fn check(
    action: &ActionSpec,
    rules: &[RuleSpec],
    lists: &mut ListCache<'_>,
) -> Result<Checked, Invalid> {
    check_verb(&action.verb)?;
    if let Some(sel) = &action.workload_selector {
        sel.validate()
            .map_err(|m| invalid("InvalidSelector", format!("workloadSelector.{m}")))?;
    }
    let c = &action.conditions;
    match (action.match_all, c.is_empty()) {
        (false, true) => {
            return Err(invalid(
                "NoConditions",
                "conditions: no condition is set; add at least one condition, or set \
                 matchAll: true to match every request"
                    .into(),
            ));
        }
        (true, false) => {
            return Err(invalid(
                "MatchAllWithConditions",
                "matchAll: true cannot be combined with conditions; remove one of them".into(),
            ));
        }
        _ => {}
    }
    let mut inline = Vec::with_capacity(c.ip_ranges.len());
    for (i, r) in c.ip_ranges.iter().enumerate() {
        inline.push(parse_prefix(r).ok_or_else(|| {
            invalid(
                "InvalidCondition",
                format!(
                    "ipRanges[{i}]: {r:?} is not an IP prefix or address; use a.b.c.d/n, an \
                     IPv6 prefix or a bare address"
                ),
            )
        })?);
    }
    for (i, r) in c.ip_lists.iter().enumerate() {
        lists
            .check(r)
            .map_err(|m| invalid("InvalidReference", format!("ipRangesFrom[{i}]: {m}")))?;
    }
    let conditions = normalise(c, rules)?;
    Ok(Checked {
        conditions,
        inline: PrefixList::from_nets(inline),
        lists: c.ip_lists.clone(),
    })
}

fn normalise(c: &Conditions, rules: &[RuleSpec]) -> Result<BundleConditions, Invalid> {
    Ok(BundleConditions {
        ip: !c.ip_ranges.is_empty() || !c.ip_lists.is_empty(),
        region_codes: each(&c.region_codes, "regionCodes", |s| {
            (s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()))
                .then(|| s.to_ascii_uppercase())
                .ok_or("is not a two-letter ISO 3166-1 region code; use e.g. \"US\"")
        })?,
        asns: c.asns.clone(),
        api_keys: each(&c.api_keys, "apiKeys", hash)?,
        access_tokens: each(&c.access_tokens, "accessTokens", hash)?,
        api_products: each(&c.api_products, "apiProducts", non_empty)?,
        developers: each(&c.developers, "developers", non_empty)?,
        developer_apps: each(&c.developer_apps, "developerApps", non_empty)?,
        user_agents: each(&c.user_agents, "userAgents", non_empty)?,
        user_agent_patterns: c.user_agent_patterns.clone(),
        http_methods: each(&c.http_methods, "httpMethods", |s| {
            (!s.is_empty() && s.bytes().all(is_token_byte))
                .then(|| s.to_ascii_uppercase())
                .ok_or("is not an HTTP method; use e.g. GET or POST")
        })?,
        paths: paths(&c.paths)?,
        detected_by: detected_by(c.detected_by.as_ref(), rules)?,
    })
}

/// Checks and maps every entry of a list field; the error names `field[i]`.
fn each(
    values: &[String],
    field: &str,
    f: impl Fn(&str) -> Result<String, &'static str>,
) -> Result<Vec<String>, Invalid> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            f(v).map_err(|why| invalid("InvalidCondition", format!("{field}[{i}]: {v:?} {why}")))
        })
        .collect()
}

fn non_empty(s: &str) -> Result<String, &'static str> {
    (!s.is_empty())
        .then(|| s.to_string())
        .ok_or("is empty; remove it or give a value")
}

fn hash(s: &str) -> Result<String, &'static str> {
    s.strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or("is not a hash; write sha256:<64 hex digits> (the sha256 of the secret)")
}

/// Every path value starts with `/` and is stored as requests are matched: normalised
/// (escaped slashes kept), exact values without their trailing slash. A `;` is refused: segment
/// parameters are removed from request paths before matching, so such a value never matches.
fn paths(paths: &[PathMatch]) -> Result<Vec<PathMatch>, Invalid> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = p.value();
            let bad = |why: String| invalid("InvalidCondition", format!("paths[{i}]: {s:?} {why}"));
            if !s.starts_with('/') {
                return Err(bad(
                    "does not start with \"/\"; write an absolute path".into()
                ));
            }
            let n = normalize(s, EscapedSlashes::Keep).map_err(|e| bad(format!("has an {e}")))?;
            if n.contains(';') {
                return Err(bad(
                    "contains ';': segment parameters (;x) are removed from request paths \
                     before matching, so it would never match; remove the parameter"
                        .into(),
                ));
            }
            let value = match n.strip_suffix('/') {
                Some(head) if !p.is_prefix() && !head.is_empty() => head.to_string(),
                _ => n.into_owned(),
            };
            Ok(p.with_value(value))
        })
        .collect()
}

fn detected_by(d: Option<&DetectedBy>, rules: &[RuleSpec]) -> Result<Option<DetectedBy>, Invalid> {
    if let Some(DetectedBy::Rules(names)) = d {
        if names.is_empty() {
            return Err(invalid(
                "InvalidCondition",
                "detectedBy.rules is empty; name at least one DetectionRule or use any".into(),
            ));
        }
        for (i, n) in names.iter().enumerate() {
            if !rules.iter().any(|r| &r.name == n) {
                return Err(invalid(
                    "InvalidReference",
                    format!(
                        "detectedBy.rules[{i}]: DetectionRule {n:?} not found in this namespace; \
                         create it or remove the reference"
                    ),
                ));
            }
        }
    }
    Ok(d.cloned())
}

fn check_verb(verb: &Verb) -> Result<(), Invalid> {
    match verb {
        Verb::Allow => Ok(()),
        Verb::Deny {
            status,
            content_type,
            ..
        } => {
            if !(100..=599).contains(status) {
                return Err(invalid(
                    "InvalidVerb",
                    format!("deny.status {status} is not an HTTP status code; use 100-599"),
                ));
            }
            if !is_header_value(content_type) {
                return Err(invalid(
                    "InvalidVerb",
                    format!(
                        "deny.contentType {content_type:?} contains CR, LF or NUL; remove them"
                    ),
                ));
            }
            Ok(())
        }
        Verb::Flag { headers } if headers.is_empty() => Err(invalid(
            "InvalidVerb",
            "flag.headers is empty; a flag action adds at least one header".into(),
        )),
        Verb::Flag { headers } => headers.iter().enumerate().try_for_each(check_header),
        Verb::RateLimit(r) => check_rate_limit(r),
    }
}

/// The most requests per period, burst and tarpit a rate limit may have.
pub const MAX_RATE_REQUESTS: u32 = 1_000_000;
/// The longest a limited request is held before its `429` (ms).
pub const MAX_TARPIT_MS: u32 = 10_000;

fn check_rate_limit(r: &crate::spec::RateLimit) -> Result<(), Invalid> {
    let bad = |msg: String| Err(invalid("InvalidVerb", msg));
    if !(1..=MAX_RATE_REQUESTS).contains(&r.requests) {
        return bad(format!(
            "rateLimit.requests {} is out of range; use 1-{MAX_RATE_REQUESTS}",
            r.requests
        ));
    }
    if r.period_s != 1 && r.period_s != 60 {
        return bad(format!(
            "rateLimit period {} s is not a second or a minute",
            r.period_s
        ));
    }
    if r.burst > MAX_RATE_REQUESTS {
        return bad(format!(
            "rateLimit.burst {} is out of range; use 0-{MAX_RATE_REQUESTS}",
            r.burst
        ));
    }
    if r.tarpit_ms > MAX_TARPIT_MS {
        return bad(format!(
            "rateLimit.tarpit {} ms is longer than {MAX_TARPIT_MS} ms",
            r.tarpit_ms
        ));
    }
    if r.pods == 0 {
        return bad("rateLimit shared by 0 pods; at least 1".into());
    }
    Ok(())
}

fn check_header((i, h): (usize, &Header)) -> Result<(), Invalid> {
    if h.name.is_empty() || !h.name.bytes().all(is_token_byte) {
        return Err(invalid(
            "InvalidVerb",
            format!(
                "flag.headers[{i}].name {:?} is not an HTTP header name",
                h.name
            ),
        ));
    }
    if !is_header_value(&h.value) {
        return Err(invalid(
            "InvalidVerb",
            format!("flag.headers[{i}].value contains CR, LF or NUL; remove them"),
        ));
    }
    Ok(())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_header_value(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}
