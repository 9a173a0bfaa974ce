#![allow(clippy::unwrap_used)]

use super::*;
use crate::report::AttrEntry;
use crate::rules::Evidence;
use crate::testutil::{ipk, report, reqs, t};
use crate::window::WindowConfig;

fn det(rule: &str, rule_type: RuleType, key: ClientKey, at: i64) -> Detection {
    Detection {
        rule: rule.into(),
        rule_type,
        key,
        detected_at: t(at),
        expires_at: t(at + 3_600),
        evidence: Evidence {
            value: 0.2,
            threshold: 0.05,
            requests: 0,
            total_requests: 0,
            window: SignedDuration::from_mins(5),
            detail: None,
        },
    }
}

fn flood(key: ClientKey, at: i64) -> Detection {
    det("Flooder", RuleType::Flooder, key, at)
}

fn dets(items: Vec<Detection>) -> Detections {
    Detections { items }
}

/// Windows where client 1 sends 100 requests per 30 s slice in [0, 300) among 900 others.
fn traffic() -> Windows {
    let mut w = Windows::new(&WindowConfig::default());
    for i in 0..10 {
        let mut r = report(
            "a",
            i + 1,
            i as i64 * 30,
            &[(ipk(1), reqs(100)), (ipk(50), reqs(90))],
        );
        if i == 0 {
            r.attributes.push(AttrEntry {
                client: ipk(1),
                dim: AttrDim::Path,
                value: "/login".into(),
                count: 80,
            });
        }
        w.merge(&r, t(i as i64 * 30 + 1));
    }
    w
}

fn run(incs: &mut Vec<Incident>, d: &Detections, w: &Windows, now: i64) -> Vec<IncidentEvent> {
    cluster(incs, "shop", d, w, &IncidentConfig::default(), t(now))
}

#[test]
fn a_detection_opens_an_incident_with_traffic_series_and_attributes() {
    let w = traffic();
    let mut incs = Vec::new();
    let ev = run(&mut incs, &dets(vec![flood(ipk(1), 299)]), &w, 299);
    assert_eq!(incs.len(), 1);
    let inc = &incs[0];
    assert_eq!(ev, vec![IncidentEvent::Opened { id: inc.id.clone() }]);
    assert!(inc.id.starts_with("inc-") && inc.id.len() == 20);
    assert_eq!(inc.display_name, "Flooder from ip:198.51.100.1");
    assert_eq!(inc.state, IncidentState::Active);
    // Slices [0, 270) are complete at 299 s: 9 × 100 requests, 2 slices per minute.
    assert_eq!(inc.traffic, 900);
    assert_eq!(inc.series.first(), Some(&(t(0), 200)));
    assert_eq!(inc.series.last(), Some(&(t(240), 100)));
    // The current slice [270, 300) counts too, so a short incident never shows 0 requests.
    assert_eq!((inc.traffic_partial, inc.requests()), (100, 1000));
    assert_eq!(inc.series_with_partial().last(), Some(&(t(240), 200)));
    assert_eq!(
        inc.attributes[&AttrDim::Path],
        vec![("/login".to_string(), 80)]
    );
    // 1000 of 1900 requests in 5 min: share ≥ 10 % → Flooder 2 + 1 = Moderate.
    assert!(inc.peak_share > 0.5);
    assert_eq!((inc.risk_score, inc.risk), (3, RiskLevel::Moderate));
}

#[test]
fn rerunning_the_same_input_updates_instead_of_duplicating() {
    let w = traffic();
    let d = dets(vec![flood(ipk(1), 299)]);
    let mut incs = Vec::new();
    run(&mut incs, &d, &w, 299);
    let before = incs.clone();
    let ev = run(&mut incs, &d, &w, 299);
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(
        incs, before,
        "same input, same incidents, traffic not counted twice"
    );
    // A later tick adds only the new slice.
    run(&mut incs, &dets(vec![flood(ipk(1), 330)]), &w, 330);
    assert_eq!(incs.len(), 1);
    assert_eq!(incs[0].id, before[0].id);
    assert_eq!(incs[0].traffic, 1000);
    assert_eq!(incs[0].last_detected, t(330));
}

#[test]
fn unrelated_detections_make_separate_incidents() {
    let w = traffic();
    let other = ClientKey::Ip("203.0.113.9".parse().unwrap());
    let d = dets(vec![
        flood(ipk(1), 100),
        det("Brute", RuleType::BruteGuessor, other, 100),
    ]);
    let mut incs = Vec::new();
    run(&mut incs, &d, &w, 100);
    assert_eq!(incs.len(), 2);
    assert_ne!(incs[0].id, incs[1].id);
}

#[test]
fn same_rule_same_network_close_in_time_merge() {
    let w = traffic();
    let mut incs = Vec::new();
    run(&mut incs, &dets(vec![flood(ipk(1), 100)]), &w, 100);
    run(&mut incs, &dets(vec![flood(ipk(2), 200)]), &w, 200);
    assert_eq!(incs.len(), 1);
    assert_eq!(incs[0].clients.len(), 2);
    assert_eq!(incs[0].display_name, "Flooder from 2 clients");
}

#[test]
fn same_rule_same_network_far_apart_stay_separate() {
    let w = traffic();
    let mut incs = Vec::new();
    run(&mut incs, &dets(vec![flood(ipk(1), 100)]), &w, 100);
    run(
        &mut incs,
        &dets(vec![flood(ipk(2), 100 + 31 * 60)]),
        &w,
        100 + 31 * 60,
    );
    assert_eq!(incs.len(), 2, "beyond the 30 min merge gap");
    // Another rule from the same network is not enough either.
    let mut incs = Vec::new();
    run(&mut incs, &dets(vec![flood(ipk(1), 100)]), &w, 100);
    run(
        &mut incs,
        &dets(vec![det("Robot", RuleType::RobotAbuser, ipk(2), 150)]),
        &w,
        150,
    );
    assert_eq!(incs.len(), 2);
}

#[test]
fn a_detection_that_bridges_two_incidents_merges_them_into_the_oldest() {
    let w = traffic();
    let mut incs = Vec::new();
    run(&mut incs, &dets(vec![flood(ipk(1), 100)]), &w, 100);
    run(
        &mut incs,
        &dets(vec![det("Robot", RuleType::RobotAbuser, ipk(2), 120)]),
        &w,
        120,
    );
    assert_eq!(incs.len(), 2, "different rules: separate");
    let (old, young) = (incs[0].id.clone(), incs[1].id.clone());
    // Robot Abuser now marks client 1: same client as the first, same rule and /24 as the
    // second. The two incidents belong together.
    let ev = run(
        &mut incs,
        &dets(vec![det("Robot", RuleType::RobotAbuser, ipk(1), 150)]),
        &w,
        150,
    );
    assert_eq!(incs.len(), 1, "{incs:#?}");
    assert_eq!(incs[0].id, old);
    assert_eq!(incs[0].merged_from, vec![young.clone()]);
    assert!(ev.contains(&IncidentEvent::Merged {
        into: old,
        from: young
    }));
    assert_eq!(incs[0].rules.len(), 2);
    assert_eq!(incs[0].clients.len(), 2);
}

#[test]
fn risk_rises_with_more_rules_and_never_falls_while_open() {
    let w = traffic();
    let mut incs = Vec::new();
    run(&mut incs, &dets(vec![flood(ipk(1), 299)]), &w, 299);
    assert_eq!(incs[0].risk, RiskLevel::Moderate);
    let ev = run(
        &mut incs,
        &dets(vec![det("Brute", RuleType::BruteGuessor, ipk(1), 330)]),
        &w,
        330,
    );
    // Brute 3 + 2 rules + share = 5: Severe.
    assert_eq!(incs[0].risk, RiskLevel::Severe);
    assert!(ev.contains(&IncidentEvent::RiskRaised {
        id: incs[0].id.clone(),
        from: RiskLevel::Moderate,
        to: RiskLevel::Severe
    }));
    // Later, traffic is gone from the short window; the level stays.
    run(&mut incs, &Detections::default(), &w, 1_000);
    assert_eq!(incs[0].risk, RiskLevel::Severe);
}

#[test]
fn quiet_incidents_close_and_closed_or_archived_ones_are_not_reopened() {
    let w = traffic();
    let mut incs = Vec::new();
    run(&mut incs, &dets(vec![flood(ipk(1), 100)]), &w, 100);
    let ev = run(&mut incs, &Detections::default(), &w, 100 + 7_201);
    assert_eq!(
        ev,
        vec![IncidentEvent::Closed {
            id: incs[0].id.clone()
        }]
    );
    run(&mut incs, &dets(vec![flood(ipk(1), 8_000)]), &w, 8_000);
    assert_eq!(incs.len(), 2, "a new incident, the closed one untouched");
    assert_eq!(incs[0].state, IncidentState::Closed);
    incs[1].state = IncidentState::Archived;
    run(&mut incs, &dets(vec![flood(ipk(1), 8_100)]), &w, 8_100);
    assert_eq!(incs.len(), 3);
    assert_eq!(incs[1].state, IncidentState::Archived);
}

#[test]
fn an_archived_incident_stays_archived_and_a_renewed_detection_opens_a_new_one() {
    let w = traffic();
    let mut incs = Vec::new();
    run(&mut incs, &dets(vec![flood(ipk(1), 100)]), &w, 100);
    let first = incs[0].clone();
    sync_archived(&mut incs, &BTreeSet::from([first.id.clone()]));
    let ev = run(&mut incs, &dets(vec![flood(ipk(1), 130)]), &w, 130);
    assert_eq!(
        incs.len(),
        2,
        "the same client opens a new incident: {ev:?}"
    );
    let archived = incs.iter().find(|i| i.id == first.id).unwrap();
    assert_eq!(archived.state, IncidentState::Archived);
    assert_eq!(
        archived.last_detected, first.last_detected,
        "it absorbed nothing"
    );
    // Unarchived: closed, still never reopened.
    sync_archived(&mut incs, &BTreeSet::new());
    let again = incs.iter().find(|i| i.id == first.id).unwrap();
    assert_eq!(again.state, IncidentState::Closed);
    assert_eq!(
        incs.iter()
            .filter(|i| i.state == IncidentState::Active)
            .count(),
        1
    );
}

#[test]
fn incidents_are_deleted_after_retention() {
    let w = traffic();
    let mut incs = Vec::new();
    run(&mut incs, &dets(vec![flood(ipk(1), 100)]), &w, 100);
    let cfg = IncidentConfig::default();
    prune(&mut incs, &cfg, t(100) + cfg.retention);
    assert_eq!(incs.len(), 1);
    prune(&mut incs, &cfg, t(101) + cfg.retention);
    assert!(incs.is_empty());
}

#[test]
fn client_list_and_series_are_bounded() {
    let w = traffic();
    let cfg = IncidentConfig {
        max_clients: 3,
        series_minutes: 2,
        ..Default::default()
    };
    let mut incs = Vec::new();
    let items = (1..=10).map(|i| flood(ipk(i), 299)).collect();
    cluster(&mut incs, "shop", &dets(items), &w, &cfg, t(299));
    assert_eq!(incs.len(), 1);
    assert_eq!(incs[0].clients.len(), 3);
    assert_eq!(incs[0].clients_unlisted, 7);
    assert_eq!(incs[0].display_name, "Flooder from 10 clients");
    assert_eq!(incs[0].series.len(), 2);
}

#[test]
fn hashed_keys_are_shortened_in_names() {
    let key = ClientKey::api_key("secret");
    let w = traffic();
    let mut incs = Vec::new();
    run(
        &mut incs,
        &dets(vec![det("OAuth", RuleType::OAuthAbuser, key, 10)]),
        &w,
        10,
    );
    let name = &incs[0].display_name;
    assert!(
        name.starts_with("OAuth from apiKey:sha256:") && name.ends_with('…'),
        "{name}"
    );
    assert!(name.chars().count() < 50);
}

#[test]
fn an_api_key_incident_lists_its_addresses_user_agents_and_requests_per_rule() {
    let key = ClientKey::api_key("leaked");
    let mut w = Windows::new(&WindowConfig::default());
    let mut r = report("a", 1, 0, &[(key, reqs(600)), (ipk(50), reqs(90))]);
    // Sampled: the key used from 7 addresses, by two user agents.
    for n in 1..=7u32 {
        r.attributes.push(AttrEntry {
            client: key,
            dim: AttrDim::Ip,
            value: crate::testutil::ip(n).to_string(),
            count: 64 * u64::from(n),
        });
    }
    for (ua, count) in [("curl/8.1", 448), ("python-requests/2.31", 64)] {
        r.attributes.push(AttrEntry {
            client: key,
            dim: AttrDim::UserAgent,
            value: ua.into(),
            count,
        });
    }
    w.merge(&r, t(1));
    let cfg = IncidentConfig {
        top_k: 5,
        ..IncidentConfig::default()
    };
    let mut incs = Vec::new();
    let brute = det("brute", RuleType::BruteGuessor, key, 10);
    let robot = det("robot", RuleType::RobotAbuser, key, 10);
    cluster(
        &mut incs,
        "shop",
        &dets(vec![brute, robot]),
        &w,
        &cfg,
        t(20),
    );
    assert_eq!(incs.len(), 1, "{incs:?}");
    let inc = &incs[0];
    let ips = &inc.attributes[&AttrDim::Ip];
    assert_eq!(ips.len(), 5, "the top 5 of 7");
    assert_eq!(ips[0], ("198.51.100.7".to_string(), 448));
    assert_eq!(inc.attribute_distinct[&AttrDim::Ip], 7, "beyond the top 5");
    assert_eq!(inc.attribute_last_seen[&AttrDim::Ip].len(), 5);
    assert_eq!(
        inc.attributes[&AttrDim::UserAgent],
        [
            ("curl/8.1".to_string(), 448),
            ("python-requests/2.31".to_string(), 64)
        ]
    );
    assert_eq!(
        inc.rule_requests,
        BTreeMap::from([("brute".to_string(), 600), ("robot".to_string(), 600)])
    );
    assert_eq!(inc.clients, BTreeSet::from([key]));
}
