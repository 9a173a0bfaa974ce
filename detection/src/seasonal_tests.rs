#![allow(clippy::unwrap_used)]

use super::*;
use crate::rule_spec::{AnomalyParams, RuleKind, RuleSpec};
use crate::rules::run_rules;
use crate::stats::ClientCounts;
use crate::testutil::{ip, ipk, report, reqs, t};
use crate::window::{WindowConfig, Windows};

/// 40 ordinary clients with 1–4 requests a period, an office gateway busy by day (300 a
/// period from 08:00 to 18:00, 20 at night), and `extra(period)`.
fn traffic(
    period: i64,
    extra: &dyn Fn(i64) -> Vec<(ClientKey, ClientCounts)>,
) -> Vec<(ClientKey, ClientCounts)> {
    let hour = period * 300 % 86_400 / 3600;
    let mut clients: Vec<_> = (0..40)
        .map(|i| (ipk(100 + i), reqs(1 + ((i as i64 + period) % 4) as u32)))
        .collect();
    let office = if (8..18).contains(&hour) { 300 } else { 20 };
    clients.push((ipk(2), reqs(office)));
    clients.extend(extra(period));
    clients
}

/// Windows fed `periods` periods of [`traffic`], the baseline observed after each with
/// `learn_all`.
fn learned(
    periods: i64,
    learn_all: SignedDuration,
    extra: &dyn Fn(i64) -> Vec<(ClientKey, ClientCounts)>,
) -> Windows {
    let mut w = Windows::new(&WindowConfig::default());
    for p in 0..periods {
        w.merge(
            &report("a", p as u64 + 1, p * 300, &traffic(p, extra)),
            t(p * 300 + 1),
        );
        assert!(w.observe_season(t(p * 300 + 300), learn_all));
        assert!(
            !w.observe_season(t(p * 300 + 301), learn_all),
            "once a period"
        );
    }
    w
}

const DAY: i64 = 288;

fn anomaly(min_history: SignedDuration) -> RuleSpec {
    RuleSpec::new(
        "Anomaly",
        RuleKind::AdvancedAnomaly(AnomalyParams {
            min_history,
            ..AnomalyParams::default()
        }),
    )
}

fn none(_: i64) -> Vec<(ClientKey, ClientCounts)> {
    Vec::new()
}

#[test]
fn a_busy_client_is_judged_against_its_own_hours() {
    let w = learned(2 * DAY, SignedDuration::from_hours(24), &none);
    let s = w.seasonal().unwrap();
    assert_eq!(s.history(), SignedDuration::from_hours(48));
    let office = ip(2);
    // Its usual day: not anomalous; the same volume at 03:00 is 15 times its night.
    let day = s.score(network(office), 320, 0, t(14 * 3600)).unwrap();
    assert!(day.own && day.z < 1.0, "{day:?}");
    let night = s.score(network(office), 300, 0, t(3 * 3600)).unwrap();
    assert!(night.own && night.z > 6.0, "{night:?}");
    assert!(
        night.explain(t(3 * 3600)).contains("15.0x its usual 20"),
        "{}",
        night.explain(t(3 * 3600))
    );
    // An unknown client with the office's daytime volume is far above the cohort.
    let new = s.score(network(ip(9)), 300, 0, t(14 * 3600)).unwrap();
    assert!(!new.own && new.z > 6.0, "{new:?}");
    // An ordinary client is not.
    let usual = s.score(network(ip(9)), 3, 0, t(14 * 3600)).unwrap();
    assert!(usual.z < 2.0, "{usual:?}");
}

#[test]
fn the_rule_stays_silent_until_min_history_and_then_flags_the_shift_only() {
    // A flooder from 12:00 of the third day, 3000 requests a period.
    let flood = |p: i64| {
        if p >= 2 * DAY + 144 {
            vec![(ipk(1), reqs(3000))]
        } else {
            Vec::new()
        }
    };
    let two_days = SignedDuration::from_hours(48);
    let w = learned(2 * DAY + 146, two_days, &flood);
    let now = t((2 * DAY + 146) * 300 - 10);
    let found = run_rules(&w, &[anomaly(two_days)], now);
    assert_eq!(
        found.items.iter().map(|d| d.key).collect::<Vec<_>>(),
        vec![ipk(1)]
    );
    let detail = found.items[0].evidence.detail.clone().unwrap();
    assert!(detail.contains("without history"), "{detail}");
    // The office gateway, 15 times busier than the median client all day, is not flagged.
    assert!(!found.contains("Anomaly", &ipk(2)));
    // With a longer minHistory than the baseline has, nothing.
    let longer = SignedDuration::from_hours(72);
    assert!(run_rules(&w, &[anomaly(longer)], now).is_empty());
}

#[test]
fn an_attack_is_not_learned_once_the_baseline_is_complete() {
    // A client that was ordinary, then sends 2000 a period for 6 hours.
    let shift = |p: i64| {
        let n = if p >= 2 * DAY { 2000 } else { 25 };
        vec![(ipk(3), reqs(n))]
    };
    let one_day = SignedDuration::from_hours(24);
    let w = learned(2 * DAY + 72, one_day, &shift);
    let s = w.seasonal().unwrap();
    let at = t((2 * DAY + 72) * 300 - 10);
    let score = s.score(network(ip(3)), 2000, 0, at).unwrap();
    assert!(
        score.own && score.z > 6.0,
        "still anomalous after 6 hours: {score:?}"
    );
    assert!(score.expected < 100.0, "{score:?}");
    let found = run_rules(&w, &[anomaly(one_day)], at);
    assert!(found.contains("Anomaly", &ipk(3)), "{found:?}");
}

#[test]
fn the_baseline_survives_a_snapshot_and_profiles_are_bounded() {
    let many = |p: i64| {
        // Every period 50 new busy clients: more than the profiles hold.
        (0..50)
            .map(|i| (ipk(10_000 + (p as u32) * 50 + i), reqs(25)))
            .collect()
    };
    let w = learned(40, SignedDuration::from_hours(24), &many);
    let s = w.seasonal().unwrap();
    assert!(s.profiles.len() <= MAX_PROFILES, "{}", s.profiles.len());
    let snap = w.snapshot(t(40 * 300));
    let json = serde_json::to_string(&snap).unwrap();
    let back: crate::window::WindowsSnapshot = serde_json::from_str(&json).unwrap();
    let restored = Windows::restore(&WindowConfig::default(), &back);
    assert_eq!(restored.seasonal(), w.seasonal());
    // A snapshot of an operator without the baseline restores without one.
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("seasonal");
    let old: crate::window::WindowsSnapshot = serde_json::from_value(old).unwrap();
    assert!(
        Windows::restore(&WindowConfig::default(), &old)
            .seasonal()
            .is_none()
    );
}

/// A baseline of two days, then `last` as the client 1's traffic in one more period; the
/// rule's detections at the end of that period.
fn judged_after_two_days(rule: &RuleSpec, last: ClientCounts) -> crate::rules::Detections {
    let end = 2 * DAY + 1;
    let extra = move |p: i64| {
        if p == end - 1 {
            vec![(ipk(1), last)]
        } else {
            Vec::new()
        }
    };
    let w = learned(end, SignedDuration::from_hours(24), &extra);
    run_rules(&w, std::slice::from_ref(rule), t(end * 300 - 10))
}

#[test]
fn own_denials_never_make_an_anomaly() {
    let rule = anomaly(SignedDuration::from_hours(24));
    let denied = ClientCounts {
        requests: 100_020,
        denied: 100_000,
        ..Default::default()
    };
    let found = judged_after_two_days(&rule, denied);
    assert!(found.is_empty(), "20 answered requests: {found:?}");
    let found = judged_after_two_days(&rule, reqs(100_020));
    assert!(
        found.contains("Anomaly", &ipk(1)),
        "the same traffic answered: {found:?}"
    );
}

#[test]
fn anomaly_needs_min_requests_and_honours_exclusions() {
    let mut rule = anomaly(SignedDuration::from_hours(24));
    assert!(
        judged_after_two_days(&rule, reqs(99)).is_empty(),
        "below minRequests"
    );
    assert!(!judged_after_two_days(&rule, reqs(5_000)).is_empty());
    rule.exclude = vec!["198.51.100.1/32".parse().unwrap()];
    assert!(
        judged_after_two_days(&rule, reqs(5_000)).is_empty(),
        "excluded"
    );
}

/// A busy IPv6 device whose privacy address changes every hour keeps its history: it is
/// learned and judged by its /64, so a new address with its usual volume is no anomaly,
/// while the same volume from a /64 never seen is.
#[test]
fn a_device_rotating_its_ipv6_address_is_judged_by_its_64() {
    let device = |p: i64| -> IpAddr {
        let hour = (p * 300 / 3600) as u128;
        format!("2001:db8:1:2::{:x}", 0x1000 + hour)
            .parse()
            .unwrap()
    };
    let busy = move |p: i64| vec![(ClientKey::Ip(device(p)), reqs(150))];
    let one_day = SignedDuration::from_hours(24);
    let periods = 2 * DAY + 1;
    let w = learned(periods, one_day, &busy);
    let at = t(periods * 300 - 10);
    let found = run_rules(&w, &[anomaly(one_day)], at);
    assert!(found.is_empty(), "{found:?}");
    let s = w.seasonal().unwrap();
    let home: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
    assert!(s.score(network(home), 150, 0, at).unwrap().own);
    let stranger: IpAddr = "2001:db8:9:9::1".parse().unwrap();
    let score = s.score(network(stranger), 150, 0, at).unwrap();
    assert!(!score.own && score.z > 6.0, "{score:?}");
}

/// The evidence names a path that takes most of the client's sampled requests and little of
/// the namespace's (the path mix that sets it apart).
#[test]
fn an_anomaly_names_the_path_that_sets_it_apart() {
    use crate::report::AttrEntry;
    use crate::stats::AttrDim;
    let one_day = SignedDuration::from_hours(24);
    let end = 2 * DAY + 1;
    let mut w = learned(end - 1, one_day, &none);
    let p = end - 1;
    let flood = |_: i64| vec![(ipk(1), reqs(3000))];
    let mut r = report("a", p as u64 + 1, p * 300, &traffic(p, &flood));
    let attr = |client, value: &str, count| AttrEntry {
        client,
        dim: AttrDim::Path,
        value: value.into(),
        count,
    };
    r.attributes.push(attr(ipk(1), "/api/v1/login", 45));
    r.attributes.push(attr(ipk(1), "/home", 2));
    r.attributes.push(attr(ipk(100), "/home", 300));
    w.merge(&r, t(p * 300 + 1));
    assert!(w.observe_season(t(end * 300), one_day));
    let found = run_rules(&w, &[anomaly(one_day)], t(end * 300 - 10));
    let detail = found.items[0].evidence.detail.clone().unwrap();
    assert!(
        detail.contains("96 % of its sampled requests to /api/v1/login (13 % of the namespace's)"),
        "{detail}"
    );
    // A client whose mix is the namespace's gets no such words.
    assert!(!detail.contains("/home"), "{detail}");
}
