//! `evaluate` against an oracle: every action's conditions read one by one from its spec, as
//! the SecurityAction docs state them (AND across kinds, OR within one; allow > deny > rate
//! limit and flag; observe-mode actions only recorded; expired actions not applied). Random
//! policies whose actions combine kinds, and requests drawn from the same values plus misses,
//! so that every mix of hits and misses across kinds is evaluated, the indexes' short cuts
//! (the miss of every kind, the unconstrained actions, the detected masks) included.

use std::net::IpAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::actionset::{ActionId, ActionSet};
use crate::detected::{ClientKey, DetectedClient, DetectedClients, DetectedIndex, canonical_ip};
use crate::evaluate::{Decision, Request, Verdict, evaluate};
use crate::policy::CompiledPolicy;
use crate::spec::{ActionSpec, Conditions, DetectedBy, Inputs, Mode, PathMatch, RuleSpec};
use crate::spec::{TextPattern, Verb};
use crate::synthetic::Rng;
use crate::testutil::{allow, deny, flag, rate_limit, ts};

const IPS: [&str; 5] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "192.0.2.0/24",
    "192.0.2.7/32",
    "2001:db8::/32",
];
const REQUEST_IPS: [&str; 8] = [
    "10.0.0.1",
    "10.1.2.3",
    "192.0.2.7",
    "192.0.2.8",
    "11.0.0.1",
    "2001:db8::1",
    "::ffff:10.1.0.1",
    "2001:db9::1",
];
const REGIONS: [&str; 3] = ["DE", "US", "BR"];
const ASNS: [u32; 3] = [1, 2, 3];
const NAMES: [&str; 3] = ["n0", "n1", "n2"];
const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
const AGENTS: [&str; 4] = ["ua0", "ua1", "ua-bot", "curl"];
const PATHS: [&str; 9] = ["/a", "/a/", "/a/x", "/b", "/B/", "/c/d", "/C/d", "/", "/ax"];
const RULES: [&str; 2] = ["flooder", "brute"];
/// Requests are evaluated at this time; an action expires before or after it.
const NOW: i64 = 1_800_000_000;

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn pick<T: Clone>(rng: &mut Rng, from: &[T]) -> T {
    from[(rng.next_u64() % from.len() as u64) as usize].clone()
}

/// One to three values of `from`.
fn some<T: Clone>(rng: &mut Rng, from: &[T]) -> Vec<T> {
    let n = 1 + rng.next_u64() % 3;
    (0..n).map(|_| pick(rng, from)).collect()
}

fn strings(v: Vec<&str>) -> Vec<String> {
    v.into_iter().map(String::from).collect()
}

/// A random action: each kind constrained with probability 1/4, a verb, a mode, sometimes an
/// expiry (before or after [`NOW`]).
fn random_action(rng: &mut Rng, i: usize) -> ActionSpec {
    let name = format!("action-{i:03}");
    let mut a = match rng.next_u64() % 4 {
        0 => allow(&name),
        1 => deny(&name),
        2 => flag(&name, &format!("x-{i}")),
        _ => rate_limit(&name, 10),
    };
    let mut c = Conditions::default();
    let kind = |rng: &mut Rng| rng.next_u64().is_multiple_of(4);
    if kind(rng) {
        c.ip_ranges = strings(some(rng, &IPS));
    }
    if kind(rng) {
        c.region_codes = strings(some(rng, &REGIONS));
    }
    if kind(rng) {
        c.asns = some(rng, &ASNS);
    }
    if kind(rng) {
        c.api_keys = some(rng, &NAMES)
            .iter()
            .map(|k| format!("sha256:{}", hex::encode(digest(&format!("key-{k}")))))
            .collect();
    }
    if kind(rng) {
        c.access_tokens = some(rng, &NAMES)
            .iter()
            .map(|k| format!("sha256:{}", hex::encode(digest(&format!("token-{k}")))))
            .collect();
    }
    if kind(rng) {
        c.api_products = strings(some(rng, &NAMES));
    }
    if kind(rng) {
        c.developers = strings(some(rng, &NAMES));
    }
    if kind(rng) {
        c.developer_apps = strings(some(rng, &NAMES));
    }
    if kind(rng) {
        if rng.next_u64().is_multiple_of(2) {
            c.user_agents = strings(some(rng, &AGENTS));
        }
        if rng.next_u64().is_multiple_of(2) {
            let patterns = [
                TextPattern::Prefix("ua".into()),
                TextPattern::Contains("bot".into()),
                TextPattern::Prefix("curl/".into()),
            ];
            c.user_agent_patterns = some(rng, &patterns);
        }
    }
    if kind(rng) {
        c.http_methods = strings(some(rng, &METHODS));
    }
    if kind(rng) {
        let paths = [
            PathMatch::Exact("/a".into()),
            PathMatch::Exact("/a/".into()),
            PathMatch::Prefix("/a/".into()),
            PathMatch::Prefix("/c".into()),
            PathMatch::ExactIgnoreCase("/b".into()),
            PathMatch::PrefixIgnoreCase("/c/".into()),
            PathMatch::Exact("/".into()),
        ];
        c.paths = some(rng, &paths);
    }
    if kind(rng) {
        c.detected_by = Some(match rng.next_u64() % 3 {
            0 => DetectedBy::Any,
            1 => DetectedBy::Rules(vec!["flooder".into()]),
            _ => DetectedBy::Rules(vec!["brute".into()]),
        });
    }
    a.match_all = c.is_empty();
    a.conditions = c;
    if rng.next_u64().is_multiple_of(5) {
        a.mode = Mode::Observe;
    }
    if rng.next_u64().is_multiple_of(6) {
        let at = NOW + [-1, 0, 1][(rng.next_u64() % 3) as usize];
        a.expire_time = Some(jiff::Timestamp::from_second(at).expect("time"));
    }
    a
}

/// A random request over the same values, with misses of every kind.
struct Drawn {
    ip: IpAddr,
    region: Option<[u8; 2]>,
    asn: Option<u32>,
    key: Option<[u8; 32]>,
    token: Option<[u8; 32]>,
    product: Option<&'static str>,
    developer: Option<&'static str>,
    app: Option<&'static str>,
    agent: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    detected: bool,
}

fn maybe<T>(rng: &mut Rng, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    (!rng.next_u64().is_multiple_of(3)).then(|| f(rng))
}

fn draw(rng: &mut Rng) -> Drawn {
    let name = |rng: &mut Rng| pick(rng, &["n0", "n1", "n2", "n3"]);
    Drawn {
        ip: pick(rng, &REQUEST_IPS).parse().expect("ip"),
        region: maybe(rng, |r| {
            let code = pick(r, &["DE", "US", "BR", "FR"]).as_bytes();
            [code[0], code[1]]
        }),
        asn: maybe(rng, |r| pick(r, &[1, 2, 3, 4])),
        key: maybe(rng, |r| digest(&format!("key-{}", name(r)))),
        token: maybe(rng, |r| digest(&format!("token-{}", name(r)))),
        product: maybe(rng, name),
        developer: maybe(rng, name),
        app: maybe(rng, name),
        agent: maybe(rng, |r| pick(r, &AGENTS)),
        method: pick(rng, &METHODS),
        path: pick(rng, &PATHS),
        detected: rng.next_u64().is_multiple_of(2),
    }
}

/// `10.0.0.1` marked by `flooder`, `192.0.2.7` by `brute`, the agent `ua-bot` by `flooder`,
/// `10.1.0.1` by `brute` until [`NOW`] (expired when evaluated).
fn detected_clients() -> DetectedClients {
    let client = |key: ClientKey, expires: i64| DetectedClient {
        key,
        expires: jiff::Timestamp::from_second(expires).expect("time"),
    };
    let ip = |s: &str| ClientKey::Ip(s.parse().expect("ip"));
    let mut doc = DetectedClients::default();
    doc.rules.insert(
        "flooder".into(),
        vec![
            client(ip("10.0.0.1"), NOW + 60),
            client(ClientKey::user_agent("ua-bot"), NOW + 60),
        ],
    );
    doc.rules.insert(
        "brute".into(),
        vec![
            client(ip("192.0.2.7"), NOW + 60),
            client(ip("10.1.0.1"), NOW),
        ],
    );
    doc
}

/// Whether `spec` matches the request, read from its conditions one by one.
fn oracle_matches(spec: &ActionSpec, d: &Drawn, doc: &DetectedClients) -> bool {
    let c = &spec.conditions;
    if spec.expire_time.is_some_and(|t| t.as_second() <= NOW) {
        return false;
    }
    let ip = canonical_ip(d.ip);
    let hashed = |values: &[String], got: Option<[u8; 32]>| {
        values.is_empty()
            || got.is_some_and(|h| {
                values
                    .iter()
                    .any(|v| v == &format!("sha256:{}", hex::encode(h)))
            })
    };
    let named = |values: &[String], got: Option<&str>| {
        values.is_empty() || got.is_some_and(|g| values.iter().any(|v| v == g))
    };
    let trim = |p: &str| match p.strip_suffix('/') {
        Some(head) if !head.is_empty() => head.to_owned(),
        _ => p.to_owned(),
    };
    let path_ok = |m: &PathMatch| match m {
        PathMatch::Exact(v) => trim(d.path) == trim(v),
        PathMatch::Prefix(v) => d.path.starts_with(v.as_str()),
        PathMatch::ExactIgnoreCase(v) => trim(d.path).eq_ignore_ascii_case(&trim(v)),
        PathMatch::PrefixIgnoreCase(v) => d
            .path
            .get(..v.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(v)),
    };
    let marked_by = |rule: &str| {
        d.detected
            && doc.rules.get(rule).is_some_and(|clients| {
                clients.iter().any(|cl| {
                    cl.expires.as_second() > NOW
                        && (cl.key == ClientKey::Ip(ip)
                            || d.agent.is_some_and(|a| cl.key == ClientKey::user_agent(a)))
                })
            })
    };
    let ips_ok = c.ip_ranges.is_empty()
        || c.ip_ranges
            .iter()
            .any(|r| r.parse::<IpNet>().expect("range").contains(&ip));
    let agent_ok = (c.user_agents.is_empty() && c.user_agent_patterns.is_empty())
        || d.agent.is_some_and(|a| {
            c.user_agents.iter().any(|u| u == a)
                || c.user_agent_patterns.iter().any(|p| p.matches(a))
        });
    ips_ok
        && named(
            &c.region_codes,
            d.region
                .as_ref()
                .map(|r| std::str::from_utf8(r).expect("code")),
        )
        && (c.asns.is_empty() || d.asn.is_some_and(|a| c.asns.contains(&a)))
        && hashed(&c.api_keys, d.key)
        && hashed(&c.access_tokens, d.token)
        && named(&c.api_products, d.product)
        && named(&c.developers, d.developer)
        && named(&c.developer_apps, d.app)
        && agent_ok
        && (c.http_methods.is_empty() || c.http_methods.iter().any(|m| m == d.method))
        && (c.paths.is_empty() || c.paths.iter().any(path_ok))
        && match &c.detected_by {
            None => true,
            Some(DetectedBy::Any) => RULES.iter().any(|r| marked_by(r)),
            Some(DetectedBy::Rules(names)) => names.iter().any(|r| marked_by(r)),
        }
}

/// allow > deny > rate limit and flag, the first by name deciding.
fn oracle_decide(specs: &[ActionSpec], matched: &[usize]) -> (Decision, ActionSet, ActionSet) {
    let id = |i: usize| ActionId(i as u16);
    let first = |f: fn(&Verb) -> bool| matched.iter().copied().find(|&i| f(&specs[i].verb));
    if let Some(i) = first(|v| matches!(v, Verb::Allow)) {
        return (Decision::Allow(id(i)), ActionSet::EMPTY, ActionSet::EMPTY);
    }
    if let Some(i) = first(|v| matches!(v, Verb::Deny { .. })) {
        return (Decision::Deny(id(i)), ActionSet::EMPTY, ActionSet::EMPTY);
    }
    let set = |f: fn(&Verb) -> bool| {
        matched
            .iter()
            .filter(|&&i| f(&specs[i].verb))
            .map(|&i| id(i))
            .collect()
    };
    (
        Decision::Forward,
        set(|v| matches!(v, Verb::Flag { .. })),
        set(|v| matches!(v, Verb::RateLimit(_))),
    )
}

fn oracle(specs: &[ActionSpec], d: &Drawn, doc: &DetectedClients) -> Verdict {
    let all: Vec<usize> = (0..specs.len())
        .filter(|&i| oracle_matches(&specs[i], d, doc))
        .collect();
    let enforced: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| specs[i].mode == Mode::Enforce)
        .collect();
    let ids = |v: &[usize]| v.iter().map(|&i| ActionId(i as u16)).collect::<ActionSet>();
    let (decision, flags, limits) = oracle_decide(specs, &enforced);
    Verdict {
        decision,
        flags,
        limits,
        matched: ids(&enforced),
        observed: ids(&all).and_not(&ids(&enforced)),
        would_be: match all.len() == enforced.len() {
            true => decision,
            false => oracle_decide(specs, &all).0,
        },
    }
}

#[test]
fn evaluate_answers_what_each_action_s_conditions_say() {
    let mut rng = Rng(0x05ee_d0f0_ac1e);
    let doc = detected_clients();
    let (mut decided, mut forwarded_with_hits, mut nothing) = (0, 0, 0);
    for round in 0..300 {
        let n = 1 + (rng.next_u64() % 40) as usize;
        let specs: Vec<ActionSpec> = (0..n).map(|i| random_action(&mut rng, i)).collect();
        let inputs = Inputs {
            actions: specs.clone(),
            rules: RULES
                .iter()
                .map(|r| RuleSpec {
                    name: (*r).into(),
                    paused: false,
                    mode: Mode::Enforce,
                    client_key: crate::ClientKeyKind::Ip,
                })
                .collect(),
            ..Default::default()
        };
        let out = crate::compile::compile(&inputs, ts("2026-01-01T00:00:00Z"));
        assert!(
            out.statuses.values().all(|s| s.reason() == "Active"),
            "round {round}: {:?}",
            out.statuses
        );
        let names: Vec<&str> = out.bundle.actions.iter().map(|a| a.name.as_str()).collect();
        let spec_names: Vec<&str> = specs.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, spec_names, "ids are the specs' positions");
        let p = CompiledPolicy::new(out.bundle, &Default::default());
        let index = DetectedIndex::new(&doc, &p.bundle().rules);
        for _ in 0..200 {
            let d = draw(&mut rng);
            let req = Request {
                ip: d.ip,
                region: d.region,
                asn: d.asn,
                api_key_hash: d.key.as_ref(),
                token_hash: d.token.as_ref(),
                developer: d.developer,
                app: d.app,
                product: d.product,
                user_agent: d.agent,
                method: d.method,
                path: d.path,
                detected: d.detected.then_some(&index),
                now_unix_s: NOW,
            };
            let want = oracle(&specs, &d, &doc);
            let got = evaluate(&p, &req);
            assert_eq!(
                got, want,
                "round {round}, request {req:?}, actions {:#?}",
                specs
            );
            match want.decision {
                Decision::Forward if want.matched.is_empty() && want.observed.is_empty() => {
                    nothing += 1
                }
                Decision::Forward => forwarded_with_hits += 1,
                _ => decided += 1,
            }
        }
    }
    // The draw reaches every outcome often, so the comparison above is not of empty verdicts.
    assert!(
        decided > 5_000 && forwarded_with_hits > 1_000 && nothing > 5_000,
        "decided {decided}, forwarded with matches {forwarded_with_hits}, nothing {nothing}"
    );
}
