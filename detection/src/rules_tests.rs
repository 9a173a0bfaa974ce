#![allow(clippy::unwrap_used)]

use super::*;
use crate::facts::Responder;
use crate::key::{ClientKeyKind, KeyHash};
use crate::rule_spec::*;
use crate::stats::ClientCounts;
use crate::testutil::{ipk, report, reqs, t};
use crate::window::{WindowConfig, Windows};

/// Windows holding one report with `clients`, starting at virtual second 0.
fn win(clients: &[(ClientKey, ClientCounts)]) -> Windows {
    let mut w = Windows::new(&WindowConfig::default());
    w.merge(&report("a", 1, 0, clients), t(1));
    w
}

/// `n` benign clients (ids 100..) with `each` requests of `bytes` bytes each.
fn benign(n: u32, each: u32, bytes: u64) -> Vec<(ClientKey, ClientCounts)> {
    (0..n)
        .map(|i| {
            let c = ClientCounts {
                requests: each,
                bytes: bytes * u64::from(each),
                ..Default::default()
            };
            (ipk(100 + i), c)
        })
        .collect()
}

fn with(
    mut clients: Vec<(ClientKey, ClientCounts)>,
    extra: (ClientKey, ClientCounts),
) -> Vec<(ClientKey, ClientCounts)> {
    clients.push(extra);
    clients
}

fn flooder() -> RuleSpec {
    RuleSpec::new("Flooder", RuleKind::Flooder(FlooderParams::default()))
}

fn run(w: &Windows, rule: &RuleSpec, now: i64) -> Detections {
    run_rules(w, std::slice::from_ref(rule), t(now))
}

// Flooder ------------------------------------------------------------------------------

#[test]
fn flooder_fires_above_share_and_sets_evidence_and_expiry() {
    // 50 clients × 100 = 5000; the flooder sends 1000 of 6000 (16.7 %).
    let w = win(&with(benign(50, 100, 1), (ipk(1), reqs(1000))));
    let d = run(&w, &flooder(), 10);
    assert_eq!(d.len(), 1, "{d:?}");
    let hit = &d.items[0];
    assert_eq!(
        (hit.rule.as_str(), hit.key, hit.rule_type),
        ("Flooder", ipk(1), RuleType::Flooder)
    );
    assert_eq!(hit.expires_at, t(10) + SignedDuration::from_hours(1));
    assert!((hit.evidence.value - 1000.0 / 6000.0).abs() < 1e-9);
    assert_eq!(
        (hit.evidence.requests, hit.evidence.total_requests),
        (1000, 6000)
    );
    assert_eq!(hit.evidence.window, SignedDuration::from_mins(5));
}

#[test]
fn flooder_stays_silent_below_share() {
    // 200 of 5200: 3.8 % < 5 %.
    let w = win(&with(benign(50, 100, 1), (ipk(1), reqs(200))));
    assert!(run(&w, &flooder(), 10).is_empty());
}

#[test]
fn flooder_respects_minimum_traffic() {
    // A 50 % share of a quiet namespace (800 requests) is not a flood.
    let w = win(&with(benign(20, 20, 1), (ipk(1), reqs(400))));
    assert!(run(&w, &flooder(), 10).is_empty());
    // Nor is a big share among too few clients.
    let w = win(&with(benign(5, 300, 1), (ipk(1), reqs(2000))));
    assert!(run(&w, &flooder(), 10).is_empty());
}

#[test]
fn flooder_honours_exclusions_like_a_load_balancer() {
    let mut rule = flooder();
    rule.exclude = vec!["198.51.100.0/30".parse().unwrap()];
    let w = win(&with(benign(50, 100, 1), (ipk(1), reqs(1000))));
    assert!(run(&w, &rule, 10).is_empty());
}

#[test]
fn flooder_detection_lapses_when_the_window_slides() {
    let w = win(&with(benign(50, 100, 1), (ipk(1), reqs(1000))));
    assert_eq!(run(&w, &flooder(), 299).len(), 1);
    assert!(
        run(&w, &flooder(), 300).is_empty(),
        "slice left the 5 min window"
    );
    let mut rule = flooder();
    rule.detection_ttl = SignedDuration::from_mins(10);
    assert_eq!(
        run(&w, &rule, 20).items[0].expires_at,
        t(20) + SignedDuration::from_mins(10)
    );
}

#[test]
fn flooder_ignores_a_short_burst_in_a_busy_namespace() {
    let mut w = Windows::new(&WindowConfig::default());
    for (seq, s) in (0..10).map(|i| (i as u64 + 1, i * 30)) {
        w.merge(&report("a", seq, s, &benign(50, 40, 1)), t(s + 1));
    }
    // A 10 s burst of 500 requests: 500 / 20 500 = 2.4 %.
    w.merge(&report("a", 99, 290, &[(ipk(1), reqs(500))]), t(291));
    assert!(run(&w, &flooder(), 295).is_empty());
}

#[test]
fn flooder_judges_the_rule_key_kind() {
    let key = ClientKey::ApiKey(KeyHash::of(b"k"));
    let w = win(&with(benign(50, 100, 1), (key, reqs(1000))));
    assert!(
        run(&w, &flooder(), 10).is_empty(),
        "IP rule ignores API-key clients"
    );
    let mut rule = flooder();
    rule.client_key = ClientKeyKind::ApiKey;
    rule.rule = RuleKind::Flooder(FlooderParams {
        min_clients: 1,
        ..Default::default()
    });
    assert!(run(&w, &rule, 10).contains("Flooder", &key));
}

// Static Content Scraper -----------------------------------------------------------------

fn scraper() -> RuleSpec {
    RuleSpec::new(
        "Scraper",
        RuleKind::StaticContentScraper(ScraperParams::default()),
    )
}

fn bytes(requests: u32, bytes: u64) -> ClientCounts {
    ClientCounts {
        requests,
        bytes,
        ..Default::default()
    }
}

#[test]
fn scraper_fires_on_byte_share_not_request_share() {
    // 50 clients × 100 × 10 KiB = 50 MiB; the scraper pulls 100 MiB in only 50 requests.
    let w = win(&with(
        benign(50, 100, 10 << 10),
        (ipk(1), bytes(50, 100 << 20)),
    ));
    let d = run(&w, &scraper(), 10);
    assert!(d.contains("Scraper", &ipk(1)), "{d:?}");
    assert_eq!(d.len(), 1);
    assert!(run(&w, &flooder(), 10).is_empty(), "not a flooder");
}

#[test]
fn scraper_silent_below_share_and_below_min_bytes() {
    // 10 MiB of 60 MiB is 16 % but below the 50 MiB floor.
    let w = win(&with(
        benign(50, 100, 10 << 10),
        (ipk(1), bytes(50, 10 << 20)),
    ));
    assert!(run(&w, &scraper(), 10).is_empty());
    // 60 MiB over the 50 MiB floor, but 60 / (586 + 60) MiB = 9.3 % < 10 %.
    let w = win(&with(
        benign(50, 100, 120 << 10),
        (ipk(1), bytes(50, 60 << 20)),
    ));
    assert!(run(&w, &scraper(), 10).is_empty());
}

#[test]
fn scraper_honours_exclusions_and_expiry() {
    let mut rule = scraper();
    rule.exclude = vec!["198.51.100.1/32".parse().unwrap()];
    let w = win(&with(
        benign(50, 100, 10 << 10),
        (ipk(1), bytes(50, 100 << 20)),
    ));
    assert!(run(&w, &rule, 10).is_empty());
    assert!(run(&w, &scraper(), 300).is_empty());
}

// Brute Guessor --------------------------------------------------------------------------

fn brute() -> RuleSpec {
    RuleSpec::new(
        "Brute",
        RuleKind::BruteGuessor(BruteGuessorParams::default()),
    )
}

fn errs(requests: u32, errors: u32, denied: u32) -> ClientCounts {
    ClientCounts {
        requests,
        errors,
        denied,
        ..Default::default()
    }
}

#[test]
fn brute_guessor_fires_on_error_ratio_over_24h() {
    let w = win(&[(ipk(1), errs(200, 150, 0)), (ipk(2), errs(200, 20, 0))]);
    let d = run(&w, &brute(), 3_600);
    assert_eq!(
        d.items.iter().map(|d| d.key).collect::<Vec<_>>(),
        vec![ipk(1)]
    );
    assert_eq!(d.items[0].evidence.window, SignedDuration::from_hours(24));
    assert!(
        run(&w, &brute(), 86_399).contains("Brute", &ipk(1)),
        "still inside 24 h"
    );
    assert!(
        run(&w, &brute(), 86_400).is_empty(),
        "out of the 24 h window"
    );
}

#[test]
fn brute_guessor_needs_min_requests_and_honours_exclusions() {
    let w = win(&[(ipk(1), errs(99, 99, 0))]);
    assert!(run(&w, &brute(), 10).is_empty());
    let mut rule = brute();
    rule.exclude = vec!["198.51.100.0/24".parse().unwrap()];
    let w = win(&[(ipk(1), errs(200, 150, 0))]);
    assert!(run(&w, &rule, 10).is_empty());
}

#[test]
fn brute_guessor_ignores_own_denials() {
    // 1000 requests the sidecar denied (action in force) + 100 upstream 200s: no evidence.
    let w = win(&[(ipk(1), errs(1100, 0, 1000))]);
    assert!(run(&w, &brute(), 10).is_empty());
}

// Robot Abuser ---------------------------------------------------------------------------

fn robot() -> RuleSpec {
    RuleSpec::new("Robot", RuleKind::RobotAbuser(RobotAbuserParams::default()))
}

fn forbidden(requests: u32, forbidden: u32, denied: u32) -> ClientCounts {
    ClientCounts {
        requests,
        errors: forbidden,
        forbidden,
        denied,
        ..Default::default()
    }
}

#[test]
fn robot_abuser_fires_on_many_upstream_403s() {
    let w = win(&[
        (ipk(1), forbidden(300, 150, 0)),
        (ipk(2), forbidden(300, 99, 0)),
    ]);
    let d = run(&w, &robot(), 10);
    assert_eq!(
        d.items.iter().map(|d| d.key).collect::<Vec<_>>(),
        vec![ipk(1)]
    );
    assert_eq!(d.items[0].evidence.value, 150.0);
}

#[test]
fn robot_abuser_needs_a_403_share_and_honours_exclusions_and_expiry() {
    // 150 403s among 10 000 requests: 1.5 % < 20 %.
    let w = win(&[(ipk(1), forbidden(10_000, 150, 0))]);
    assert!(run(&w, &robot(), 10).is_empty());
    let mut rule = robot();
    rule.exclude = vec!["198.51.100.1/32".parse().unwrap()];
    let w = win(&[(ipk(1), forbidden(300, 150, 0))]);
    assert!(run(&w, &rule, 10).is_empty());
    assert!(run(&w, &robot(), 86_400).is_empty());
}

#[test]
fn robot_abuser_is_not_fed_by_own_denials() {
    // A client denied by an action: 5000 sidecar 403s, counted as `denied`, not `forbidden`.
    let w = win(&[(ipk(1), forbidden(5_000, 0, 5_000))]);
    assert!(run(&w, &robot(), 10).is_empty());
}

// OAuth Abuser ---------------------------------------------------------------------------

fn oauth() -> RuleSpec {
    RuleSpec::new("OAuth", RuleKind::OAuthAbuser(OAuthAbuserParams::default()))
}

fn sessions(token_calls: u32, uas: u32) -> ClientCounts {
    let mut c = ClientCounts {
        requests: token_calls,
        token_calls,
        ..Default::default()
    };
    for ua in 0..uas {
        c.user_agents.insert(ua + 1);
    }
    c
}

#[test]
fn oauth_abuser_fires_on_many_sessions_with_few_user_agents() {
    let w = win(&[
        (ipk(1), sessions(60, 1)),
        (ipk(2), sessions(60, 4)),
        (ipk(3), sessions(40, 1)),
    ]);
    let d = run(&w, &oauth(), 10);
    assert_eq!(
        d.items.iter().map(|d| d.key).collect::<Vec<_>>(),
        vec![ipk(1)],
        "{d:?}"
    );
}

#[test]
fn oauth_sessions_are_successful_token_calls_or_distinct_tokens() {
    use crate::counter::{Counter, CounterConfig};
    use crate::facts::RequestFacts;
    let id = crate::report::SidecarId {
        pod: "a".into(),
        workload: "api".into(),
        namespace: "shop".into(),
    };
    let mut c = Counter::new(id, &CounterConfig::default(), t(0));
    let ua = KeyHash::of(b"farm/1.0");
    for i in 0..300u32 {
        // 1: a client retrying a failing token call 300 times starts no session.
        let mut f = RequestFacts::new(crate::testutil::ip(1), 401);
        f.token_endpoint = true;
        f.user_agent = Some(ua);
        c.record(&f);
        // 2: a client using 60 distinct tokens it got elsewhere (no token call here).
        let mut f = RequestFacts::new(crate::testutil::ip(2), 200);
        f.access_token = Some(KeyHash::of(format!("stolen-{}", i % 60).as_bytes()));
        f.user_agent = Some(ua);
        c.record(&f);
        // 3: an ordinary client refreshing one token all day.
        let mut f = RequestFacts::new(crate::testutil::ip(3), 200);
        f.access_token = Some(KeyHash::of(b"mine"));
        f.user_agent = Some(ua);
        c.record(&f);
    }
    let mut w = Windows::new(&WindowConfig::default());
    w.merge(&c.take_report(t(1)), t(1));
    let view = w.view(SignedDuration::from_hours(24), t(1));
    assert_eq!(view.clients[&ipk(1)].sessions(), 0);
    let tokens = view.clients[&ipk(2)].sessions();
    assert!((45..=75).contains(&tokens), "60 tokens estimated {tokens}");
    assert_eq!(view.clients[&ipk(3)].sessions(), 1);
    let d = run(&w, &oauth(), 10);
    assert_eq!(
        d.items.iter().map(|d| d.key).collect::<Vec<_>>(),
        vec![ipk(2)],
        "{d:?}"
    );
}

#[test]
fn oauth_abuser_honours_exclusions_and_expiry() {
    let mut rule = oauth();
    rule.exclude = vec!["198.51.100.0/31".parse().unwrap()];
    let w = win(&[(ipk(1), sessions(60, 1))]);
    assert!(run(&w, &rule, 10).is_empty());
    assert_eq!(run(&w, &oauth(), 86_399).len(), 1);
    assert!(run(&w, &oauth(), 86_400).is_empty());
}

// TorList --------------------------------------------------------------------------------

fn tor(exits: &[&str]) -> RuleSpec {
    let exits = exits.iter().map(|e| e.parse().unwrap()).collect();
    RuleSpec::new("Tor", RuleKind::TorList(TorListParams { exits }))
}

#[test]
fn tor_list_marks_listed_addresses_only() {
    let w = win(&[(ipk(1), reqs(1)), (ipk(2), reqs(1)), (ipk(9), reqs(1))]);
    let d = run(&w, &tor(&["198.51.100.1/32", "198.51.100.8/30"]), 10);
    assert_eq!(
        d.items.iter().map(|d| d.key).collect::<Vec<_>>(),
        vec![ipk(1), ipk(9)]
    );
    assert!(
        run(&w, &tor(&[]), 10).is_empty(),
        "empty list, no detection"
    );
}

#[test]
fn tor_list_honours_exclusions_and_expiry() {
    let mut rule = tor(&["198.51.100.1/32"]);
    rule.exclude = vec!["198.51.100.1/32".parse().unwrap()];
    let w = win(&[(ipk(1), reqs(1))]);
    assert!(run(&w, &rule, 10).is_empty());
    assert!(
        run(&w, &tor(&["198.51.100.1/32"]), 86_400).is_empty(),
        "no traffic in 24 h"
    );
}

// Advanced Anomaly -----------------------------------------------------------------------

fn anomaly() -> RuleSpec {
    RuleSpec::new(
        "Anomaly",
        RuleKind::AdvancedAnomaly(AnomalyParams::default()),
    )
}

/// Without a baseline (no period learned) the rule flags nobody, however far a client
/// stands from its peers: it judges clients against their history, not each other (the
/// seasonal tests are in `seasonal_tests.rs`).
#[test]
fn anomaly_without_a_baseline_is_silent() {
    let clients: Vec<_> = (0..60).map(|i| (ipk(100 + i), reqs(5 + i % 20))).collect();
    let w = win(&with(clients, (ipk(1), reqs(5_000))));
    assert!(w.seasonal().is_none());
    assert!(run(&w, &anomaly(), 10).is_empty());
}

// All rules together ---------------------------------------------------------------------

#[test]
fn nat_gateway_below_thresholds_is_not_flagged_by_any_rule() {
    // A NAT carrying many users: 4 % of the traffic, normal error rate, many user agents.
    let mut nat = ClientCounts {
        requests: 220,
        errors: 5,
        token_calls: 30,
        bytes: 220 << 10,
        ..Default::default()
    };
    for ua in 0..8 {
        nat.user_agents.insert(ua + 1);
    }
    let w = win(&with(benign(50, 100, 1 << 10), (ipk(1), nat)));
    let rules = [flooder(), scraper(), brute(), robot(), oauth(), tor(&[])];
    let d = run_rules(&w, &rules, t(10));
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn detections_are_sorted_and_deterministic() {
    let w = win(&with(
        with(benign(50, 100, 1), (ipk(2), reqs(1000))),
        (ipk(1), reqs(1000)),
    ));
    let rules = [flooder(), tor(&["198.51.100.2/32"])];
    let a = run_rules(&w, &rules, t(10));
    let b = run_rules(&w, &rules, t(10));
    assert_eq!(a, b);
    let order: Vec<_> = a.items.iter().map(|d| (d.rule.as_str(), d.key)).collect();
    assert_eq!(
        order,
        vec![("Flooder", ipk(1)), ("Flooder", ipk(2)), ("Tor", ipk(2))]
    );
}

// Windows ------------------------------------------------------------------------------

#[test]
fn a_rule_window_selects_the_slices_it_looks_at() {
    // Benign traffic in the first slice [0, 30); a burst from client 1 in [270, 300).
    let mut w = Windows::new(&WindowConfig::default());
    w.merge(&report("a", 1, 0, &benign(50, 100, 1)), t(1));
    w.merge(
        &report("a", 2, 270, &with(benign(50, 1, 1), (ipk(1), reqs(1000)))),
        t(271),
    );
    let mut one_minute = flooder();
    one_minute.window = Some(SignedDuration::from_mins(1));
    // 5 min: 1000 of 6050 requests (16.5 %); 1 min: 1000 of 1050. Both fire, each with the
    // evidence of its own window.
    let d = run(&w, &one_minute, 299);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d.items[0].evidence.window, SignedDuration::from_mins(1));
    assert_eq!(
        d.items[0].evidence.total_requests, 1050,
        "only the last minute"
    );
    assert_eq!(
        run(&w, &flooder(), 299).items[0].evidence.total_requests,
        6050
    );

    // A share rule on a 1 min window misses a client whose share was in the older slices.
    let mut w = Windows::new(&WindowConfig::default());
    w.merge(
        &report("a", 1, 0, &with(benign(50, 100, 1), (ipk(1), reqs(2000)))),
        t(1),
    );
    w.merge(&report("a", 2, 270, &benign(50, 30, 1)), t(271));
    assert_eq!(run(&w, &flooder(), 299).len(), 1, "5 min sees the burst");
    assert!(run(&w, &one_minute, 299).is_empty(), "1 min does not");
}

#[test]
fn a_long_rule_window_is_counted_in_15_minute_slices() {
    let mut w = Windows::new(&WindowConfig::default());
    let errors = ClientCounts {
        requests: 200,
        errors: 200,
        ..Default::default()
    };
    w.merge(&report("a", 1, 0, &[(ipk(1), errors)]), t(1));
    w.merge(&report("a", 2, 7_200, &[(ipk(2), errors)]), t(7_201));
    let mut brute = RuleSpec::new("b", RuleKind::BruteGuessor(BruteGuessorParams::default()));
    let all: Vec<ClientKey> = run(&w, &brute, 7_300).items.iter().map(|d| d.key).collect();
    assert_eq!(all, [ipk(1), ipk(2)], "24 h by default");
    brute.window = Some(SignedDuration::from_mins(40));
    let d = run(&w, &brute, 7_300);
    let keys: Vec<ClientKey> = d.items.iter().map(|d| d.key).collect();
    assert_eq!(keys, [ipk(2)], "40 min → the last 3 slices of 15 min");
    assert_eq!(d.items[0].evidence.window, SignedDuration::from_mins(45));
}

// API Scraper ---------------------------------------------------------------------------

/// Windows fed from request facts, through a sidecar counter and its report: each client
/// sends the paths `paths(client)` in turn, interleaved with the other clients.
fn from_paths(clients: &[(u32, Vec<String>)]) -> Windows {
    use crate::counter::{Counter, CounterConfig};
    use crate::facts::RequestFacts;
    use crate::report::SidecarId;
    use crate::sequence::PathShape;
    let id = SidecarId {
        pod: "a".into(),
        workload: "api".into(),
        namespace: "shop".into(),
    };
    let mut c = Counter::new(id, &CounterConfig::default(), t(0));
    let longest = clients.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (n, paths) in clients {
            let Some(target) = paths.get(i) else {
                continue;
            };
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target.as_str(), None),
            };
            let mut f = RequestFacts::new(crate::testutil::ip(*n), 200);
            f.shape = PathShape::of(path, query);
            c.record(&f);
        }
    }
    let report = c.take_report(t(1));
    let mut w = Windows::new(&WindowConfig::default());
    w.merge(&report, t(1));
    w
}

fn api_scraper(min_requests: u64) -> RuleSpec {
    let mut r = RuleSpec::new(
        "ApiScraper",
        RuleKind::ApiScraper(ApiScraperParams {
            min_requests,
            ..Default::default()
        }),
    );
    r.window = Some(SignedDuration::from_hours(1));
    r
}

#[test]
fn api_scraper_flags_an_enumerating_client_only() {
    let mut rng = crate::sim::Rng::new(7);
    // 1: walks /items/1..600, skipping a missing id now and then, with a page of
    // listings every 50 items.
    let walker: Vec<String> = (1..=600u64)
        .filter(|n| n % 37 != 0)
        .map(|n| {
            if n % 50 == 0 {
                format!("/items?page={}", n / 50)
            } else {
                format!("/items/{n}")
            }
        })
        .collect();
    // 2: reads 600 random items of a 100 000-item catalogue.
    let random: Vec<String> = (0..600)
        .map(|_| format!("/items/{}", rng.below(100_000)))
        .collect();
    // 3: refreshes the same item 600 times.
    let refresher: Vec<String> = (0..600).map(|_| "/items/42".to_owned()).collect();
    // 4: walks too, but only 100 requests.
    let short: Vec<String> = (1..=100).map(|n| format!("/users/{n}/orders")).collect();
    // 5: pages through a search, 600 pages.
    let pager: Vec<String> = (1..=600)
        .map(|n| format!("/search?q=lamp&page={n}"))
        .collect();
    let w = from_paths(&[
        (1, walker),
        (2, random),
        (3, refresher),
        (4, short),
        (5, pager),
    ]);
    let view = w.view(SignedDuration::from_hours(1), t(1));
    let seq = |n| view.clients[&ipk(n)].sequential;
    assert!(seq(1) > 500, "walker: {}", seq(1));
    assert!(seq(2) < 10, "random: {}", seq(2));
    assert_eq!((seq(3), seq(4), seq(5)), (0, 99, 599));
    let d = run(&w, &api_scraper(500), 10);
    let flagged: Vec<ClientKey> = d.items.iter().map(|d| d.key).collect();
    assert_eq!(flagged, vec![ipk(1), ipk(5)], "{d:?}");
    let hit = &d.items[0];
    assert_eq!(hit.rule_type, RuleType::ApiScraper);
    assert!((hit.evidence.threshold - 0.8).abs() < 1e-9);
    assert!(
        hit.evidence.value >= 0.8 && hit.evidence.value < 1.0,
        "{hit:?}"
    );
    assert_eq!(hit.evidence.window, SignedDuration::from_hours(1));
    assert!(
        run(&w, &api_scraper(50), 10).contains("ApiScraper", &ipk(4)),
        "the short walker is one once minRequests allows it"
    );
}

#[test]
fn api_scraper_honours_exclusions_and_the_share() {
    let walker: Vec<String> = (1..=600).map(|n| format!("/items/{n}")).collect();
    let w = from_paths(&[(1, walker)]);
    let mut r = api_scraper(500);
    r.exclude = vec!["198.51.100.0/24".parse().unwrap()];
    assert!(run(&w, &r, 10).is_empty());
    let RuleKind::ApiScraper(p) = &mut r.rule else {
        unreachable!()
    };
    p.min_sequential_share = 1.0;
    r.exclude.clear();
    assert!(
        run(&w, &r, 10).is_empty(),
        "599 of 600 sequential is under 100 %"
    );
}

// The sidecar's own denials never make a client guilty --------------------------------------
//
// Each case goes through the sidecar's counter and its report, as in production: a client
// denied by an action keeps retrying with exactly what the rule looks for; the denied
// retries must not make it guilty. The control sends the same requests answered by the app
// and is flagged, so each case shows the denials are what the rule ignores.

/// How the app or the sidecar answered one request of the suspect (ip 1).
#[derive(Clone, Copy)]
struct Req {
    status: u16,
    bytes: u64,
    token_endpoint: bool,
    /// User-agent number (0 = none).
    ua: u32,
    /// `/items/<n>` (0 = no path shape).
    item: u64,
}

const PLAIN: Req = Req {
    status: 200,
    bytes: 1_000,
    token_endpoint: false,
    ua: 1,
    item: 0,
};

/// Windows after one report of a counter that saw: 40 benign clients (ids 100..) with 100
/// app-answered requests of 1 kB each (each its own user agent), then the suspect's
/// `answered` requests (app) and `denied` requests (the sidecar's own answers).
fn counted(answered: &[Req], denied: &[Req]) -> Windows {
    let suspect = answered
        .iter()
        .map(|r| (*r, Responder::Upstream))
        .chain(denied.iter().map(|r| (*r, Responder::Sidecar)));
    counted_as(suspect)
}

/// [`counted`] with the suspect's requests and who answered each.
fn counted_as(suspect: impl IntoIterator<Item = (Req, Responder)>) -> Windows {
    use crate::counter::{Counter, CounterConfig};
    use crate::facts::RequestFacts;
    use crate::report::SidecarId;
    use crate::sequence::PathShape;
    let id = SidecarId {
        pod: "a".into(),
        workload: "api".into(),
        namespace: "shop".into(),
    };
    let mut c = Counter::new(id, &CounterConfig::default(), t(0));
    let facts = |n: u32, r: &Req, responder: Responder, path: &str| {
        let mut f = RequestFacts::new(crate::testutil::ip(n), r.status);
        f.bytes = r.bytes;
        f.token_endpoint = r.token_endpoint;
        f.responder = responder;
        f.user_agent = (r.ua > 0).then(|| KeyHash::of(format!("ua-{}", r.ua).as_bytes()));
        f.shape = (r.item > 0).then(|| PathShape::of(path, None)).flatten();
        f
    };
    for n in 100..140 {
        for _ in 0..100 {
            let benign = Req { ua: n, ..PLAIN };
            c.record(&facts(n, &benign, Responder::Upstream, "/"));
        }
    }
    for (r, responder) in suspect {
        let path = format!("/items/{}", r.item);
        c.record(&facts(1, &r, responder, &path));
    }
    let mut w = Windows::new(&WindowConfig::default());
    w.merge(&c.take_report(t(1)), t(1));
    w
}

/// `(with denials, control)`: whether the rule flags the suspect when `retries` are the
/// sidecar's denials, and when the app answered them.
fn guilty(rule: &RuleSpec, answered: &[Req], retries: &[Req]) -> (bool, bool) {
    let flagged = |w: &Windows| run(w, rule, 10).contains(&rule.name, &ipk(1));
    let denied = counted(answered, retries);
    let all: Vec<Req> = answered.iter().chain(retries).copied().collect();
    (flagged(&denied), flagged(&counted(&all, &[])))
}

fn times(r: Req, n: usize) -> Vec<Req> {
    vec![r; n]
}

#[test]
fn own_denials_never_make_a_flooder() {
    // 20 answered + 2000 denied retries: 2020 of 6020 requests (34 %) if denials counted.
    let (denied, control) = guilty(&flooder(), &times(PLAIN, 20), &times(PLAIN, 2_000));
    assert!(!denied, "flagged by its denied retries");
    assert!(control, "the same traffic answered by the app is a flood");
}

#[test]
fn own_denials_never_make_a_scraper() {
    let mut rule = RuleSpec::new(
        "Scraper",
        RuleKind::StaticContentScraper(ScraperParams::default()),
    );
    rule.window = None;
    // Denied responses with large bodies: 600 × 100 kB = 60 MB against 4 MB of others.
    let big = Req {
        bytes: 100_000,
        ..PLAIN
    };
    let (denied, control) = guilty(&rule, &times(PLAIN, 10), &times(big, 600));
    assert!(!denied, "flagged by the bytes of its denials");
    assert!(control);
}

#[test]
fn own_denials_never_make_a_brute_guessor() {
    // One app 403 and 99 denied retries: 1 error of 1 answered, 100 requests in all.
    let err = Req {
        status: 403,
        ..PLAIN
    };
    let (denied, control) = guilty(&brute(), &[err], &times(err, 99));
    assert!(
        !denied,
        "one app error and denied retries are not brute guessing"
    );
    assert!(control, "100 app errors are");
}

#[test]
fn own_denials_never_make_a_robot_abuser() {
    let err = Req {
        status: 403,
        ..PLAIN
    };
    let (denied, control) = guilty(&robot(), &[err], &times(err, 5_000));
    assert!(!denied);
    assert!(control);
}

#[test]
fn own_denials_never_make_an_oauth_abuser_nor_hide_one() {
    let call = Req {
        token_endpoint: true,
        ..PLAIN
    };
    let (denied, control) = guilty(&oauth(), &[call], &times(call, 100));
    assert!(!denied, "denied token calls start no session");
    assert!(control);
    // The other way round: 60 sessions with one user agent, and denied requests with many
    // user agents sent to look diverse. Still flagged.
    let decoys: Vec<Req> = (2..20).map(|ua| Req { ua, ..PLAIN }).collect();
    let w = counted(&times(call, 60), &decoys);
    assert!(run(&w, &oauth(), 10).contains("OAuth", &ipk(1)));
}

#[test]
fn own_denials_never_make_an_api_scraper() {
    let walk: Vec<Req> = (1..=600).map(|item| Req { item, ..PLAIN }).collect();
    let (denied, control) = guilty(&api_scraper(500), &walk[..10], &walk[10..]);
    assert!(!denied, "a walk the sidecar denies is not scraping");
    assert!(control);
}

#[test]
fn a_denied_tor_exit_stays_detected() {
    // TorList judges the address, not the traffic: a denied exit stays an exit (and its
    // detection does not lapse while an action denies it).
    let rule = RuleSpec::new(
        "Tor",
        RuleKind::TorList(TorListParams {
            exits: vec!["198.51.100.1/32".parse().unwrap()],
        }),
    );
    let w = counted(&[], &times(PLAIN, 10));
    assert!(run(&w, &rule, 10).contains("Tor", &ipk(1)));
}

// Requests the client left before the answer ------------------------------------------
//
// The sidecar stops the app's work on a request whose client closed (nginx's 499) and counts
// it as `Responder::Client`: asked of the app, answered by nobody.

/// The same as the app's 499 but left by the client.
const LEFT: Req = Req {
    status: 499,
    bytes: 0,
    ..PLAIN
};

#[test]
fn a_flooder_that_never_waits_for_its_answers_is_still_a_flooder() {
    // Fire and forget: 2000 requests, each closed at once (2000 of 6000 requests, 33 %).
    let w = counted_as(
        times(LEFT, 2_000)
            .into_iter()
            .map(|r| (r, Responder::Client)),
    );
    assert!(run(&w, &flooder(), 10).contains("Flooder", &ipk(1)));
    // The same requests as the sidecar's own denials are no flood: what counts is that the
    // app was asked.
    assert!(!run(&counted(&[], &times(LEFT, 2_000)), &flooder(), 10).contains("Flooder", &ipk(1)));
}

#[test]
fn requests_left_unanswered_are_no_errors() {
    // A client on a flaky network, or with a short timeout against a slow app: 100 requests
    // it gave up on are no failed guesses; the same statuses from the app would be.
    let left = counted_as(times(LEFT, 100).into_iter().map(|r| (r, Responder::Client)));
    assert!(!run(&left, &brute(), 10).contains("Brute", &ipk(1)));
    let answered = counted(&times(LEFT, 100), &[]);
    assert!(
        run(&answered, &brute(), 10).contains("Brute", &ipk(1)),
        "control"
    );
}

// IPv6 prefixes ------------------------------------------------------------------------

/// A flooder behind IPv6 privacy addresses: 3000 requests, each from a new address of one
/// /64, among 40 steady clients (100 requests each, some of them IPv6 neighbours in other
/// /64s of the same /48). Counted through the sidecar's counter: by IP no client stands out
/// (each address sent one request); by prefix the /64 is the flood, and nothing else is.
#[test]
fn a_flooder_rotating_its_ipv6_addresses_is_one_client_by_prefix() {
    use crate::counter::{Counter, CounterConfig};
    use crate::facts::RequestFacts;
    use crate::report::SidecarId;
    let id = SidecarId {
        pod: "a".into(),
        workload: "api".into(),
        namespace: "shop".into(),
    };
    let cfg = CounterConfig {
        key_kinds: vec![ClientKeyKind::Ip, ClientKeyKind::IpPrefix],
        ..CounterConfig::default()
    };
    let mut c = Counter::new(id, &cfg, t(0));
    let v6 = |net: u16, host: u64| {
        let bits = (0x2001_0db8_0001_u128 << 80) | (u128::from(net) << 64) | u128::from(host);
        IpAddr::V6(std::net::Ipv6Addr::from_bits(bits))
    };
    for n in 0..40u16 {
        let ip = if n % 2 == 0 {
            crate::testutil::ip(u32::from(n) + 100)
        } else {
            v6(n, 7)
        };
        for _ in 0..100 {
            c.record(&RequestFacts::new(ip, 200));
        }
    }
    for i in 0..3000u64 {
        let rotating = v6(0xbad, 0x1000 + i * 7919);
        c.record(&RequestFacts::new(rotating, 200));
    }
    let mut w = Windows::new(&WindowConfig::default());
    w.merge(&c.take_report(t(1)), t(1));
    let mut by_ip = flooder();
    by_ip.client_key = ClientKeyKind::Ip;
    assert!(run(&w, &by_ip, 10).is_empty(), "no single address floods");
    let mut by_prefix = flooder();
    by_prefix.client_key = ClientKeyKind::IpPrefix;
    let found = run(&w, &by_prefix, 10);
    let flood = ClientKey::prefix_of(v6(0xbad, 1), 64);
    assert!(found.contains(&by_prefix.name, &flood), "{found:?}");
    assert_eq!(found.len(), 1, "only the rotating /64: {found:?}");
    // A coarser namespace length groups more: the flood's /48 holds the neighbours too.
    let mut coarse = Counter::new(
        SidecarId {
            pod: "a".into(),
            workload: "api".into(),
            namespace: "shop".into(),
        },
        &CounterConfig {
            ipv6_prefix_len: 48,
            ..cfg
        },
        t(0),
    );
    coarse.record(&RequestFacts::new(v6(1, 1), 200));
    coarse.record(&RequestFacts::new(v6(2, 1), 200));
    let report = coarse.take_report(t(1));
    let prefixes: Vec<String> = report
        .clients
        .iter()
        .filter(|e| e.key.kind() == ClientKeyKind::IpPrefix)
        .map(|e| format!("{} {}", e.key, e.counts.requests))
        .collect();
    assert_eq!(prefixes, ["prefix:2001:db8:1::/48 2"]);
}

// Error surges ---------------------------------------------------------------------------

/// 40 clients of a namespace whose every answer is an error (a bad deploy): `each` requests
/// each, ids 100...
fn all_failing(n: u32, each: u32) -> Vec<(ClientKey, ClientCounts)> {
    (0..n)
        .map(|i| (ipk(100 + i), errs(each, each, 0)))
        .collect()
}

/// When every client gets errors, the client that retries hardest is not a Brute Guessor:
/// its error ratio is the namespace's. The same client among healthy neighbours is one, and
/// a real guesser during a partial outage (a third of the answers failing) still stands out.
#[test]
fn an_error_surge_is_not_brute_guessing_but_a_guesser_still_stands_out() {
    let retrier = (ipk(1), errs(5_000, 5_000, 0));
    let surge = win(&with(all_failing(40, 150), retrier));
    assert!(run(&surge, &brute(), 10).is_empty(), "a surge flags nobody");
    let healthy: Vec<_> = (0..40).map(|i| (ipk(100 + i), errs(150, 3, 0))).collect();
    let normal = win(&with(healthy, retrier));
    assert!(run(&normal, &brute(), 10).contains("Brute", &ipk(1)));
    let partial: Vec<_> = (0..40).map(|i| (ipk(100 + i), errs(150, 50, 0))).collect();
    let guesser = (ipk(1), errs(500, 480, 0));
    let outage = win(&with(partial, guesser));
    let found = run(&outage, &brute(), 10);
    assert!(found.contains("Brute", &ipk(1)), "{found:?}");
    assert_eq!(found.len(), 1, "{found:?}");
}

/// An upstream that answers 403 to everyone (an authorisation service down) makes no Robot
/// Abuser; a robot among healthy clients is one.
#[test]
fn an_upstream_forbidding_everyone_makes_no_robot_abuser() {
    let everyone: Vec<_> = (0..40)
        .map(|i| (ipk(100 + i), forbidden(300, 300, 0)))
        .collect();
    let robot_like = (ipk(1), forbidden(3_000, 3_000, 0));
    assert!(run(&win(&with(everyone, robot_like)), &robot(), 10).is_empty());
    let healthy: Vec<_> = (0..40)
        .map(|i| (ipk(100 + i), forbidden(300, 2, 0)))
        .collect();
    assert!(run(&win(&with(healthy, robot_like)), &robot(), 10).contains("Robot", &ipk(1)));
}

/// 24 h of 15-minute slices: `healthy(slice)` for every slice, `extra(slice)` added.
fn day_of_slices(extra: impl Fn(i64) -> Vec<(ClientKey, ClientCounts)>) -> (Windows, i64) {
    let mut w = Windows::new(&WindowConfig::default());
    let mut seq = 0;
    for slice in 0..96i64 {
        let at = slice * 900;
        // 40 ordinary clients, a few errors each (404s).
        let mut clients: Vec<_> = (0..40).map(|i| (ipk(100 + i), errs(30, 1, 0))).collect();
        clients.extend(extra(slice));
        seq += 1;
        w.merge(&report("a", seq, at, &clients), t(at + 1));
    }
    (w, 95 * 900 + 10)
}

/// A ten-minute outage at slice 50 (every client failing, the aggressive ones retrying every
/// second) is a surge slice: its answers are left out, so the retriers are no guessers,
/// while a guesser working through the rest of the day is one.
#[test]
fn an_outage_and_its_retry_storm_make_no_guesser_but_a_guesser_outside_it_stands_out() {
    const OUTAGE: i64 = 50;
    let (w, now) = day_of_slices(|slice| {
        let mut extra = Vec::new();
        if slice == OUTAGE {
            // Everyone fails; 20 aggressive retriers send 600 failing retries each.
            extra.extend((0..40).map(|i| (ipk(100 + i), errs(20, 20, 0))));
            extra.extend((0..20).map(|i| (ipk(300 + i), errs(600, 600, 0))));
        }
        // A guesser: 10 attempts a slice, 9 failing, all day.
        extra.push((ipk(1), errs(10, 9, 0)));
        extra
    });
    let view = w.long(t(now));
    assert_eq!(view.surge_slices, 1, "the outage slice and no other");
    let found = run(&w, &brute(), now);
    assert!(found.contains("Brute", &ipk(1)), "{found:?}");
    assert_eq!(found.len(), 1, "only the guesser: {found:?}");
    // The retriers' 600 failures are all in the surge slice; the guesser's are not.
    assert_eq!(view.clients[&ipk(300)].surge.errors, 600);
    assert_eq!(view.clients[&ipk(1)].surge.errors, 9);
}

/// A guesser loud enough to make most of a slice's errors is still one failing client: it
/// cannot declare a surge and hide in it.
#[test]
fn a_loud_guesser_cannot_make_a_surge_of_its_own() {
    let (w, now) = day_of_slices(|slice| {
        if slice == 70 {
            vec![(ipk(1), errs(50_000, 49_000, 0))]
        } else {
            Vec::new()
        }
    });
    assert_eq!(w.long(t(now)).surge_slices, 0);
    let found = run(&w, &brute(), now);
    assert!(found.contains("Brute", &ipk(1)), "{found:?}");
}

/// A namespace where failing is ordinary (a third of the clients get mostly 404s in every
/// slice) has no surge slices: the failing share is judged against its own median.
#[test]
fn a_namespace_that_always_fails_a_lot_has_no_surge_slices() {
    let (w, now) = day_of_slices(|_| (0..20).map(|i| (ipk(500 + i), errs(10, 9, 0))).collect());
    let view = w.long(t(now));
    assert!(view.failing_baseline > 0.3, "{}", view.failing_baseline);
    assert_eq!(view.surge_slices, 0);
}

/// An outage longer than the 5-minute window fills every short slice: they are still surge
/// slices, judged against the day's median rather than their own.
#[test]
fn an_outage_filling_the_short_window_is_still_a_surge() {
    let (mut w, now) = day_of_slices(|_| Vec::new());
    let mut seq = 1_000;
    for i in 0..10 {
        let at = now + 60 + i * 30;
        let mut clients: Vec<_> = (0..40).map(|c| (ipk(100 + c), errs(6, 6, 0))).collect();
        clients.push((ipk(1), errs(30, 30, 0)));
        seq += 1;
        w.merge(&report("a", seq, at, &clients), t(at + 1));
    }
    let end = now + 60 + 271;
    let short = w.short(t(end));
    assert_eq!(
        short.surge_slices, 10,
        "baseline {}",
        short.failing_baseline
    );
    assert_eq!(short.clients[&ipk(1)].surge.errors, 300);
}
