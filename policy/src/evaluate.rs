//! `evaluate(&CompiledPolicy, &Request) -> Verdict`: the per-request decision.
//!
//! A request is one lookup per constrained condition kind in the policy's inverted indexes,
//! each giving the bitset of actions that list the request's value (its hit); an action
//! passes a kind it constrains through the hit, one it does not constrain always (AND across
//! kinds, OR within a kind). A request that hits no kind — most of them — leaves the actions
//! that constrain no kind, one AND. Then allow > deny > flag among the enforce-mode
//! survivors. Nothing allocates.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::actionset::{ActionId, ActionSet};
use crate::detected::{ClientKey, DetectedIndex, canonical_ip};
use crate::index::KindIndex;
use crate::key::KeyHash;
use crate::policy::CompiledPolicy;

/// What the sidecar knows about a request, borrowed from it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Client IP (socket, or `X-Forwarded-For` through trusted hops).
    pub ip: IpAddr,
    /// Region (ISO 3166-1 alpha-2, upper case) from the GeoIP database.
    pub region: Option<[u8; 2]>,
    /// Autonomous system number from the ASN database.
    pub asn: Option<u32>,
    /// sha256 of the API key.
    pub api_key_hash: Option<&'a [u8; 32]>,
    /// sha256 of the bearer access token.
    pub token_hash: Option<&'a [u8; 32]>,
    /// Developer.
    pub developer: Option<&'a str>,
    /// Developer app.
    pub app: Option<&'a str>,
    /// API product.
    pub product: Option<&'a str>,
    /// `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// HTTP method, as sent (methods are case-sensitive; conditions are upper case).
    pub method: &'a str,
    /// The match path, without the query string: [`crate::path::without_params`] of
    /// [`crate::path::normalize`] of the request's path. A raw path would let `//admin` or
    /// `/%61dmin` past a condition on `/admin`.
    pub path: &'a str,
    /// Detected clients, indexed against this policy's rules; `None` = nobody is detected.
    pub detected: Option<&'a DetectedIndex>,
    /// Now, in Unix seconds (detections expire).
    pub now_unix_s: i64,
}

impl<'a> Request<'a> {
    /// A request with only the IP, method and path known.
    pub fn new(ip: IpAddr, method: &'a str, path: &'a str) -> Self {
        Self {
            ip,
            region: None,
            asn: None,
            api_key_hash: None,
            token_hash: None,
            developer: None,
            app: None,
            product: None,
            user_agent: None,
            method,
            path,
            detected: None,
            now_unix_s: 0,
        }
    }
}

/// What to do with the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No allow or deny action matched: forward (with the headers of `Verdict::flags`).
    Forward,
    /// An allow action matched (the first by name): forward, skipping deny and flag actions.
    Allow(ActionId),
    /// A deny action matched and no allow did (the first by name): answer with its response.
    Deny(ActionId),
}

/// The outcome of [`evaluate`]. `Copy`, no allocation; ids index the policy's bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// Enforced flag actions whose headers to add (empty unless the decision is `Forward`).
    pub flags: ActionSet,
    /// Enforced rate-limit actions whose limits the request must be under to be forwarded
    /// (empty unless the decision is `Forward`); the sidecar, which holds the rates, checks
    /// them in action order.
    pub limits: ActionSet,
    /// Every enforce-mode action that matched (for counting).
    pub matched: ActionSet,
    /// Every observe-mode action that matched (for counting; nothing is applied).
    pub observed: ActionSet,
    /// What the decision would have been had the observed actions been enforced.
    pub would_be: Decision,
}

impl Verdict {
    /// The verdict when nothing matched.
    pub const NONE: Self = Self {
        decision: Decision::Forward,
        flags: ActionSet::EMPTY,
        limits: ActionSet::EMPTY,
        matched: ActionSet::EMPTY,
        observed: ActionSet::EMPTY,
        would_be: Decision::Forward,
    };
}

impl Verdict {
    /// The action that decided (allow or deny), if any.
    pub fn decision_id(&self) -> Option<ActionId> {
        match self.decision {
            Decision::Allow(id) | Decision::Deny(id) => Some(id),
            Decision::Forward => None,
        }
    }
}

/// Evaluates a request: allow > deny > flag among enforce-mode matches; observe-mode matches
/// are only recorded.
pub fn evaluate(p: &CompiledPolicy, req: &Request<'_>) -> Verdict {
    let mut m = p.selected;
    // An action past its expiry no longer applies, whether or not the operator has published
    // the bundle without it yet (one comparison while nothing has expired).
    if p.expiring
        .first()
        .is_some_and(|(at, _)| *at <= req.now_unix_s)
    {
        m = m.and_not(&p.expired(req.now_unix_s));
    }
    if m.is_empty() {
        return Verdict::NONE;
    }
    // Each constrained kind's hit: the actions that list the request's value. An action
    // passes a kind it constrains only through the hit, one it does not constrain always.
    // Most requests hit nothing; then what is left are the actions that constrain no kind,
    // one AND instead of one per kind.
    let ip = match p.ip_active {
        true => p
            .bundle
            .ips
            .lookup(req.ip)
            .and_then(|c| p.ip_classes.get(usize::from(c))),
        false => None,
    };
    // Policies are mostly IP ranges and most requests come from none of them: when the IP
    // kind leaves no action, the other kinds' lookups are not done at all.
    if p.ip_active {
        m = m.and(&ip.map_or(p.ip_unconstrained, |s| s.or(&p.ip_unconstrained)));
        if m.is_empty() {
            return Verdict::NONE;
        }
    }
    let path = match p.paths.active {
        true => p.paths.hit(req.path),
        false => None,
    };
    let user_agent = match p.user_agent.active {
        true => user_agent_hit(p, req.user_agent),
        false => None,
    };
    // The IP kind is in `m` already (so not ANDed again below), but its hit decides whether
    // any kind hit.
    let kinds: [(bool, Option<&ActionSet>, &ActionSet); 11] = [
        (false, ip, &p.ip_unconstrained),
        (p.paths.active, path.as_ref(), p.paths.unconstrained()),
        (
            p.user_agent.active,
            user_agent.as_ref(),
            p.user_agent.unconstrained(),
        ),
        kind(&p.method, Some(req.method)),
        kind(&p.region, req.region.as_ref()),
        kind(&p.asn, req.asn.as_ref()),
        kind(&p.api_key, req.api_key_hash),
        kind(&p.token, req.token_hash),
        kind(&p.product, req.product),
        kind(&p.developer, req.developer),
        kind(&p.app, req.app),
    ];
    if kinds.iter().all(|(_, hit, _)| hit.is_none()) {
        m = m.and(&p.unconstrained);
    } else {
        for (active, hit, unconstrained) in kinds {
            if active {
                m = m.and(&hit.map_or(*unconstrained, |s| s.or(unconstrained)));
            }
        }
    }
    if m.is_empty() {
        return Verdict::NONE;
    }
    if m.intersects(&p.detected_constrained) {
        let rules = req.detected.map_or(0, |d| detected_rules(d, req));
        let mut ok = ActionSet::EMPTY;
        if rules != 0 {
            for &(id, want) in &p.detected_masks {
                if rules & want != 0 {
                    ok.insert(id);
                }
            }
        }
        m = m.and_not(&p.detected_constrained).or(&m.and(&ok));
        if m.is_empty() {
            return Verdict::NONE;
        }
    }
    let matched = m.and(&p.enforce);
    let observed = m.and_not(&p.enforce);
    let (decision, flags, limits) = p.decide(matched);
    let would_be = if observed.is_empty() {
        decision
    } else {
        p.decide(m).0
    };
    Verdict {
        decision,
        flags,
        limits,
        matched,
        observed,
        would_be,
    }
}

/// One exact-value kind: whether it is constrained, the request value's hit, the
/// unconstrained actions.
#[inline]
fn kind<'p, K, Q>(
    index: &'p KindIndex<K>,
    value: Option<&Q>,
) -> (bool, Option<&'p ActionSet>, &'p ActionSet)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    match index.active {
        true => (true, index.hit(value), index.unconstrained()),
        false => (false, None, index.unconstrained()),
    }
}

/// The actions that list this user agent exactly or by a pattern; `None` when none does.
fn user_agent_hit(p: &CompiledPolicy, user_agent: Option<&str>) -> Option<ActionSet> {
    let agent = user_agent?;
    let mut set = p.user_agent.hit(Some(agent)).copied();
    for (id, pattern) in &p.ua_patterns {
        if pattern.matches(agent) {
            set.get_or_insert(ActionSet::EMPTY).insert(*id);
        }
    }
    set
}

/// The rules that marked this request's client (by IP, API key, token or user agent).
fn detected_rules(d: &DetectedIndex, req: &Request<'_>) -> u64 {
    let ua = req
        .user_agent
        .filter(|_| d.has_user_agents())
        .map(|ua| ClientKey::UserAgent(KeyHash(Sha256::digest(ua.as_bytes()).into())));
    let keys = [
        Some(ClientKey::Ip(canonical_ip(req.ip))),
        req.api_key_hash.map(|h| ClientKey::ApiKey(KeyHash(*h))),
        req.token_hash.map(|h| ClientKey::AccessToken(KeyHash(*h))),
        ua,
    ];
    d.rules_for(&keys, req.now_unix_s) | d.prefix_rules_for(req.ip, req.now_unix_s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bundle::Bundle;
    use crate::compile::compile;
    use crate::detected::{ClientKey, DetectedClient, DetectedClients};
    use crate::selector::LabelSelector;
    use crate::spec::{ActionSpec, Inputs, PathMatch, RuleSpec};
    use crate::spec::{DetectedBy, Mode};
    use crate::testutil::{allow, deny, flag, rate_limit, ts, with_ips};

    fn policy_for(actions: Vec<ActionSpec>, labels: &[(&str, &str)]) -> CompiledPolicy {
        let inputs = Inputs {
            actions,
            rules: vec![
                RuleSpec {
                    name: "flooder".into(),
                    paused: false,
                    mode: Mode::Enforce,
                    client_key: crate::ClientKeyKind::Ip,
                },
                RuleSpec {
                    name: "brute".into(),
                    paused: false,
                    mode: Mode::Enforce,
                    client_key: crate::ClientKeyKind::Ip,
                },
            ],
            ..Default::default()
        };
        let out = compile(&inputs, ts("2026-01-01T00:00:00Z"));
        assert!(
            out.statuses.values().all(|s| s.reason() == "Active"),
            "{:?}",
            out.statuses
        );
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CompiledPolicy::new(out.bundle, &labels)
    }

    fn policy(actions: Vec<ActionSpec>) -> CompiledPolicy {
        policy_for(actions, &[])
    }

    fn req(ip: &str) -> Request<'static> {
        Request::new(ip.parse().unwrap(), "GET", "/")
    }

    fn name(p: &CompiledPolicy, d: Decision) -> &str {
        match d {
            Decision::Allow(id) | Decision::Deny(id) => &p.action(id).unwrap().name,
            Decision::Forward => "forward",
        }
    }

    #[test]
    fn precedence_allow_over_deny_over_flag() {
        let p = policy(vec![
            with_ips(deny("deny"), &["10.0.0.0/8"]),
            with_ips(allow("allow"), &["10.1.0.0/16"]),
            with_ips(flag("flag-a", "x-a"), &["10.0.0.0/8"]),
            with_ips(flag("flag-b", "x-b"), &["10.2.0.0/16", "10.3.0.0/16"]),
            with_ips(flag("flag-c", "x-c"), &["0.0.0.0/0"]),
        ]);
        let v = evaluate(&p, &req("10.1.2.3"));
        assert_eq!(name(&p, v.decision), "allow");
        assert!(v.flags.is_empty());
        assert_eq!(v.matched.len(), 4);

        let v = evaluate(&p, &req("10.2.2.3"));
        assert_eq!(name(&p, v.decision), "deny");
        assert!(v.flags.is_empty());
        let r = p.deny_response(v.decision_id().unwrap()).unwrap();
        assert_eq!(
            (r.status, r.body, r.content_type),
            (403, "denied", "text/plain")
        );

        let v = evaluate(&p, &req("11.0.0.1"));
        assert_eq!(v.decision, Decision::Forward);
        assert_eq!(p.flag_headers(&v).collect::<Vec<_>>(), [("x-c", "flag-c")]);

        let p = policy(vec![
            with_ips(flag("flag-a", "x-a"), &["10.0.0.0/8"]),
            with_ips(flag("flag-b", "x-b"), &["10.2.0.0/16"]),
        ]);
        let v = evaluate(&p, &req("10.2.0.1"));
        assert_eq!(v.decision, Decision::Forward);
        assert_eq!(
            p.flag_headers(&v).collect::<Vec<_>>(),
            [("x-a", "flag-a"), ("x-b", "flag-b")]
        );
        assert_eq!(evaluate(&p, &req("9.0.0.1")), Verdict::NONE);
    }

    #[test]
    fn rate_limits_come_after_allow_and_deny_and_beside_flags() {
        let p = policy(vec![
            with_ips(allow("a-allow"), &["10.1.0.0/16"]),
            with_ips(deny("b-deny"), &["10.2.0.0/16"]),
            with_ips(rate_limit("c-limit", 10), &["10.0.0.0/8"]),
            with_ips(rate_limit("d-limit", 5), &["10.3.0.0/16"]),
            with_ips(flag("e-flag", "x-e"), &["10.0.0.0/8"]),
        ]);
        let names = |v: &Verdict| -> Vec<String> {
            v.limits
                .iter()
                .map(|id| p.action(id).unwrap().name.clone())
                .collect()
        };
        let v = evaluate(&p, &req("10.1.0.1"));
        assert_eq!(name(&p, v.decision), "a-allow");
        assert!(v.limits.is_empty(), "an allowed request is not limited");
        let v = evaluate(&p, &req("10.2.0.1"));
        assert_eq!(name(&p, v.decision), "b-deny");
        assert!(v.limits.is_empty());
        let v = evaluate(&p, &req("10.3.0.1"));
        assert_eq!(v.decision, Decision::Forward);
        assert_eq!(names(&v), ["c-limit", "d-limit"], "in action (name) order");
        assert_eq!(p.flag_headers(&v).collect::<Vec<_>>(), [("x-e", "e-flag")]);
        let id = v.limits.first().unwrap();
        assert_eq!(p.rate_limit(id).map(|l| l.requests), Some(10));
        assert_eq!(evaluate(&p, &req("11.0.0.1")), Verdict::NONE);
        let mut observed = with_ips(rate_limit("f-observed", 1), &["12.0.0.0/8"]);
        observed.mode = Mode::Observe;
        let p = policy(vec![observed]);
        let v = evaluate(&p, &req("12.0.0.1"));
        assert!(v.limits.is_empty(), "an observed rate limit limits nothing");
        assert_eq!(v.observed.len(), 1);
    }

    #[test]
    fn a_rate_limit_is_shared_by_its_pods() {
        let mut l = crate::spec::RateLimit {
            requests: 100,
            period_s: 1,
            burst: 21,
            by: crate::ClientKeyKind::Ip,
            tarpit_ms: 0,
            pods: 1,
        };
        assert_eq!((l.interval_ns(), l.burst_share()), (10_000_000, 21));
        l.pods = 4;
        assert_eq!((l.interval_ns(), l.burst_share()), (40_000_000, 6));
        l.period_s = 60;
        l.requests = 3;
        l.pods = 1;
        assert_eq!(l.interval_ns(), 20_000_000_000);
    }

    #[test]
    fn and_across_kinds_or_within_a_kind() {
        let mut a = with_ips(deny("a"), &["10.0.0.1", "10.0.0.2"]);
        a.conditions.http_methods = vec!["post".into(), "PUT".into()];
        a.conditions.paths = vec![PathMatch::Prefix("/login".into())];
        let p = policy(vec![a]);
        let denied = |ip: &str, method: &str, path: &str| {
            let r = Request::new(ip.parse().unwrap(), method, path);
            matches!(evaluate(&p, &r).decision, Decision::Deny(_))
        };
        assert!(denied("10.0.0.1", "POST", "/login"));
        assert!(denied("10.0.0.2", "PUT", "/login/form"));
        assert!(!denied("10.0.0.3", "POST", "/login"), "IP not listed");
        assert!(!denied("10.0.0.1", "GET", "/login"), "method not listed");
        assert!(!denied("10.0.0.1", "POST", "/logout"), "path not listed");
    }

    #[test]
    fn a_path_deny_stops_every_spelling_of_the_path() {
        use crate::path::{EscapedSlashes, normalize, without_params};
        let mut exact = deny("exact");
        exact.conditions.paths = vec![PathMatch::Exact("/admin".into())];
        let mut prefix = deny("prefix");
        prefix.conditions.paths = vec![PathMatch::Prefix("/internal/".into())];
        let mut any_case = deny("any-case");
        any_case.conditions.paths = vec![PathMatch::ExactIgnoreCase("/login".into())];
        let p = policy(vec![exact, prefix, any_case]);
        let decided = |raw: &str| {
            let n = normalize(raw, EscapedSlashes::Reject).unwrap();
            let path = without_params(&n);
            let r = Request::new("192.0.2.1".parse().unwrap(), "GET", &path);
            let id = evaluate(&p, &r).decision_id();
            id.and_then(|id| p.action(id)).map(|a| a.name.clone())
        };
        for raw in [
            "/admin",
            "//admin",
            "/%61dmin",
            "/x/../admin",
            "/;x/admin",
            "/admin/",
        ] {
            assert_eq!(decided(raw).as_deref(), Some("exact"), "{raw}");
        }
        for raw in [
            "/internal/x",
            "/internal//x",
            "/x/%2E%2E/internal/",
            "/internal;a/b",
        ] {
            assert_eq!(decided(raw).as_deref(), Some("prefix"), "{raw}");
        }
        for raw in ["/login", "/LOGIN", "/Log%49n/", "//LoGiN;x"] {
            assert_eq!(decided(raw).as_deref(), Some("any-case"), "{raw}");
        }
        for raw in [
            "/ADMIN",
            "/admin/x",
            "/adminx",
            "/internal",
            "/INTERNAL/x",
            "/login/x",
        ] {
            assert_eq!(decided(raw), None, "{raw}");
        }
    }

    #[test]
    fn user_agents_match_exactly_by_prefix_or_by_substring() {
        use crate::spec::TextPattern;
        let mut exact = deny("exact");
        exact.conditions.user_agents = vec!["curl/8.0".into()];
        let mut prefix = deny("prefix");
        prefix.conditions.user_agent_patterns =
            vec![TextPattern::Prefix("python-requests/".into())];
        let mut contains = deny("contains");
        contains.conditions.user_agent_patterns = vec![TextPattern::Contains("bot".into())];
        let p = policy(vec![exact, prefix, contains]);
        let name = |ua: Option<&str>| {
            let r = Request {
                user_agent: ua,
                ..Request::new("192.0.2.1".parse().unwrap(), "GET", "/")
            };
            evaluate(&p, &r)
                .decision_id()
                .and_then(|id| p.action(id).map(|a| a.name.clone()))
        };
        assert_eq!(name(Some("curl/8.0")).as_deref(), Some("exact"));
        assert_eq!(
            name(Some("python-requests/2.31")).as_deref(),
            Some("prefix")
        );
        assert_eq!(
            name(Some("Mozilla/5.0 (compatible; AcmeBot/1.0)")).as_deref(),
            None,
            "case matters"
        );
        assert_eq!(name(Some("acmebot/1.0")).as_deref(), Some("contains"));
        assert_eq!(name(Some("curl/8.1")), None, "exact means exact");
        assert_eq!(
            name(None),
            None,
            "no user agent matches no user-agent condition"
        );
    }

    #[test]
    fn every_condition_kind_matches_its_value_only() {
        let key = [7u8; 32];
        let token = [9u8; 32];
        let mut a = deny("a");
        let c = &mut a.conditions;
        c.region_codes = vec!["de".into()];
        c.asns = vec![64500];
        c.api_keys = vec![format!("sha256:{}", hex::encode(key))];
        c.access_tokens = vec![format!("sha256:{}", hex::encode(token).to_uppercase())];
        c.api_products = vec!["gold".into()];
        c.developers = vec!["dev@example.com".into()];
        c.developer_apps = vec!["app1".into()];
        c.user_agents = vec!["curl/8.0".into()];
        c.paths = vec![PathMatch::Exact("/v1/items".into())];
        let p = policy(vec![a]);
        let full = Request {
            region: Some(*b"DE"),
            asn: Some(64500),
            api_key_hash: Some(&key),
            token_hash: Some(&token),
            product: Some("gold"),
            developer: Some("dev@example.com"),
            app: Some("app1"),
            user_agent: Some("curl/8.0"),
            ..Request::new("192.0.2.1".parse().unwrap(), "GET", "/v1/items")
        };
        assert!(matches!(evaluate(&p, &full).decision, Decision::Deny(_)));
        let other = [9u8; 32];
        let misses: [Request<'_>; 10] = [
            Request {
                region: Some(*b"FR"),
                ..full
            },
            Request { asn: None, ..full },
            Request {
                api_key_hash: Some(&other),
                ..full
            },
            Request {
                token_hash: None,
                ..full
            },
            Request {
                product: Some("silver"),
                ..full
            },
            Request {
                developer: Some("x"),
                ..full
            },
            Request {
                app: Some("app2"),
                ..full
            },
            Request {
                user_agent: Some("curl/8.1"),
                ..full
            },
            Request {
                path: "/v1/items/1",
                ..full
            },
            Request {
                region: None,
                ..full
            },
        ];
        for (i, r) in misses.iter().enumerate() {
            assert_eq!(evaluate(&p, r), Verdict::NONE, "case {i}");
        }
    }

    #[test]
    fn observe_mode_records_but_enforces_nothing() {
        let mut d = with_ips(deny("deny-observed"), &["10.0.0.0/8"]);
        d.mode = Mode::Observe;
        let mut f = with_ips(flag("flag-observed", "x-o"), &["10.0.0.0/8"]);
        f.mode = Mode::Observe;
        let p = policy(vec![d, f, with_ips(flag("flag", "x-f"), &["10.0.0.0/8"])]);
        let v = evaluate(&p, &req("10.0.0.1"));
        assert_eq!(v.decision, Decision::Forward);
        assert_eq!(p.flag_headers(&v).collect::<Vec<_>>(), [("x-f", "flag")]);
        assert_eq!(v.observed.len(), 2);
        assert_eq!(name(&p, v.would_be), "deny-observed");
        assert_eq!(v.matched.len(), 1);
    }

    #[test]
    fn workload_selector_is_applied_at_load() {
        let mut a = with_ips(deny("api-only"), &["10.0.0.0/8"]);
        a.workload_selector = Some(LabelSelector {
            match_labels: [("app".to_string(), "api".to_string())].into(),
            ..Default::default()
        });
        let b = with_ips(flag("everyone", "x-e"), &["10.0.0.0/8"]);
        let api = policy_for(vec![a.clone(), b.clone()], &[("app", "api"), ("tier", "x")]);
        let web = policy_for(vec![a, b], &[("app", "web")]);
        assert_eq!(api.selected().len(), 2);
        assert_eq!(web.selected().len(), 1);
        assert!(matches!(
            evaluate(&api, &req("10.0.0.1")).decision,
            Decision::Deny(_)
        ));
        let v = evaluate(&web, &req("10.0.0.1"));
        assert_eq!(v.decision, Decision::Forward);
        assert_eq!(v.flags.len(), 1);
    }

    /// An action stops applying at its expiry in the bundle itself, with no new bundle
    /// (the operator may be down); the others keep applying.
    #[test]
    fn an_expired_action_no_longer_applies_without_a_new_bundle() {
        let all = |mut a: ActionSpec| {
            a.match_all = true;
            a
        };
        let mut soon = all(deny("soon"));
        soon.expire_time = Some(ts("2026-01-02T00:00:00Z"));
        let mut later = all(flag("later", "x-later"));
        later.expire_time = Some(ts("2026-01-03T00:00:00Z"));
        let p = policy(vec![soon, later, all(flag("always", "x-always"))]);
        let end_soon = ts("2026-01-02T00:00:00Z").as_second();
        let end_later = ts("2026-01-03T00:00:00Z").as_second();
        let at = |now: i64| Request {
            now_unix_s: now,
            ..req("10.0.0.1")
        };
        assert_eq!(name(&p, evaluate(&p, &at(end_soon - 1)).decision), "soon");
        let v = evaluate(&p, &at(end_soon));
        assert_eq!(v.decision, Decision::Forward, "soon expired");
        assert_eq!(v.flags.len(), 2, "later and always still flag");
        let v = evaluate(&p, &at(end_later));
        assert_eq!(
            p.flag_headers(&v).collect::<Vec<_>>(),
            [("x-always", "always")]
        );
    }

    #[test]
    fn detected_by_uses_the_detected_clients_and_their_expiry() {
        let mut by_rule = deny("by-flooder");
        by_rule.conditions.detected_by = Some(DetectedBy::Rules(vec!["flooder".into()]));
        let mut by_any = flag("by-any", "x-bot");
        by_any.conditions.detected_by = Some(DetectedBy::Any);
        let p = policy(vec![by_rule, by_any]);
        let mut doc = DetectedClients::default();
        let client = |ip: &str, exp: i64| DetectedClient {
            key: ClientKey::Ip(ip.parse().unwrap()),
            expires: jiff::Timestamp::from_second(exp).unwrap(),
        };
        doc.rules
            .insert("flooder".into(), vec![client("10.0.0.1", 100)]);
        doc.rules
            .insert("brute".into(), vec![client("10.0.0.2", 100)]);
        let idx = DetectedIndex::new(&doc, &p.bundle().rules);
        let at = |ip: &str, now: i64| Request {
            detected: Some(&idx),
            now_unix_s: now,
            ..Request::new(ip.parse().unwrap(), "GET", "/")
        };
        assert_eq!(
            name(&p, evaluate(&p, &at("10.0.0.1", 99)).decision),
            "by-flooder"
        );
        let v = evaluate(&p, &at("10.0.0.2", 99));
        assert_eq!(v.decision, Decision::Forward);
        assert_eq!(
            p.flag_headers(&v).collect::<Vec<_>>(),
            [("x-bot", "by-any")]
        );
        assert_eq!(evaluate(&p, &at("10.0.0.1", 100)), Verdict::NONE, "expired");
        assert_eq!(evaluate(&p, &at("10.0.0.3", 0)), Verdict::NONE);
        let no_index = Request::new("10.0.0.1".parse().unwrap(), "GET", "/");
        assert_eq!(evaluate(&p, &no_index), Verdict::NONE);

        // A client marked by user agent (hashed, as the detection crate keys it).
        let ua_key = ClientKey::user_agent("evil-bot/1.0");
        doc.rules.insert(
            "flooder".into(),
            vec![DetectedClient {
                key: ua_key,
                expires: jiff::Timestamp::from_second(100).unwrap(),
            }],
        );
        let idx = DetectedIndex::new(&doc, &p.bundle().rules);
        let ua = |agent: &'static str| Request {
            detected: Some(&idx),
            user_agent: Some(agent),
            ..Request::new("10.9.9.9".parse().unwrap(), "GET", "/")
        };
        assert_eq!(
            name(&p, evaluate(&p, &ua("evil-bot/1.0")).decision),
            "by-flooder"
        );
        assert_eq!(evaluate(&p, &ua("good-bot/1.0")), Verdict::NONE);
    }

    #[test]
    fn ipv6_mapped_addresses_and_match_all() {
        let mut everyone = flag("everyone", "x-all");
        everyone.match_all = true;
        let p = policy(vec![
            with_ips(deny("v6"), &["2001:db8::/32", "10.0.0.0/8"]),
            everyone,
        ]);
        assert!(matches!(
            evaluate(&p, &req("2001:db8::1")).decision,
            Decision::Deny(_)
        ));
        assert!(matches!(
            evaluate(&p, &req("::ffff:10.0.0.1")).decision,
            Decision::Deny(_)
        ));
        let v = evaluate(&p, &req("2001:db9::1"));
        assert_eq!((v.decision, v.flags.len()), (Decision::Forward, 1));
    }

    #[test]
    fn empty_policy_forwards() {
        let p = CompiledPolicy::new(Bundle::default(), &BTreeMap::new());
        assert_eq!(evaluate(&p, &req("10.0.0.1")), Verdict::NONE);
    }
}
