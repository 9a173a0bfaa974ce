//! The traffic model through the rule engine on a virtual clock (the operator's path:
//! counters → JSON reports → windows → rules): every injected attack, the hiding ones
//! included, is detected by its rules, and no client of the populations that look like
//! abuse (NAT offices, CGNAT addresses, health checkers, IPv6 households, partners, the
//! retry storm after an outage) is.

#![allow(clippy::unwrap_used)]

use jiff::SignedDuration;
use palisade_detection::sim::eval::{EvalConfig, EvalReport, RunResult, own_rules, run};
use palisade_detection::sim::{Population, Scenario, SimConfig, Traffic, Who};

/// A small populated model from 08:00, the rising half of the day.
fn populated(seed: u64, hours: i64, scenarios: Vec<Scenario>) -> SimConfig {
    SimConfig {
        seed,
        start: SimConfig::default().start + SignedDuration::from_hours(8),
        duration: SignedDuration::from_hours(hours),
        clients: 2_000,
        nat_clients: 3,
        nat_users: (30, 40),
        // Apps that renew their tokens often: a NAT's users then call the token endpoint
        // more than OAuth Abuser's 50 sessions, from many user agents.
        logins_per_user_day: 8.0,
        base_rate: 5.0,
        scenarios,
        attacks_per_kind: 1,
        cgnat_carriers: 1,
        cgnat_addresses: 8,
        cgnat_users: 300,
        health_checkers: 2,
        ipv6_households: 100,
        partners: 2,
        partner_rate: 0.1,
        outages_per_day: 1,
        ..SimConfig::default()
    }
}

/// Every attack detected by each of its own rules, not before it started and at most
/// 5 minutes after it ended.
fn assert_detected(result: &RunResult, rules_to_skip: &[&str]) {
    for a in &result.truth.attacks {
        for id in a.identities() {
            for rule in own_rules(a.scenario)
                .iter()
                .filter(|r| !rules_to_skip.contains(r))
            {
                let at = result.first.get(&((*rule).to_owned(), id));
                let at = at.unwrap_or_else(|| {
                    panic!(
                        "{:?} attacker {id} (from {}) not detected by {rule}",
                        a.scenario, a.start
                    )
                });
                assert!(
                    *at >= a.start,
                    "{rule} detected {id} at {at}, before its attack"
                );
                assert!(
                    *at <= a.end + SignedDuration::from_mins(5),
                    "{rule} detected {id} at {at}, long after its attack ({}–{})",
                    a.start,
                    a.end
                );
            }
        }
    }
}

/// No benign client detected by any rule but `except`; returns the report.
fn assert_no_benign(result: &RunResult, except: &[&str]) -> EvalReport {
    for ((rule, key), at) in &result.first {
        if except.contains(&rule.as_str()) {
            continue;
        }
        let who = result.truth.who(key);
        assert!(
            matches!(who, Who::Attacker(_)),
            "{rule} detected {key} ({who:?}) at {at}"
        );
    }
    let mut report = EvalReport::default();
    report.add(result);
    report
}

#[test]
fn every_attack_is_detected_by_its_rules_and_no_benign_client_is() {
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| *s != Scenario::LowAndSlow)
        .collect();
    // The first seed from 42 whose outage falls inside these 8 hours.
    let sim = (42..)
        .map(|seed| populated(seed, 8, scenarios.clone()))
        .find(|sim| !Traffic::new(sim.clone()).truth().outages.is_empty())
        .unwrap();
    let result = run(sim, &EvalConfig::default());
    let truth = &result.truth;
    assert_eq!(truth.attacks.len(), scenarios.len());
    // The outage happened inside the run, and the storm came with it.
    assert_eq!(truth.outages.len(), 1, "{:?}", truth.outages);
    assert!(result.retries > 1_000, "retries {}", result.retries);
    assert!(
        result.active.get(&Population::AggressiveRetrier).copied() >= Some(10),
        "{:?}",
        result.active
    );
    assert_detected(&result, &["AdvancedAnomaly"]);
    // The NAT gateways really are hard negatives: high volume and many token calls.
    let busiest = result.nat_traffic.iter().max().unwrap();
    assert!(busiest.1 >= 50, "NAT token calls {busiest:?}");
    let report = assert_no_benign(&result, &["AdvancedAnomaly"]);
    for pop in [
        Population::SingleUser,
        Population::Office,
        Population::MobileCarrier,
        Population::HealthChecker,
        Population::Ipv6Household,
        Population::Partner,
        Population::SharedAppKey,
    ] {
        assert!(
            report.populations.get(&pop).is_some_and(|p| p.clients > 0),
            "{pop:?} sent no traffic: {:?}",
            report.populations
        );
    }
    assert!(report.benign_clients > 1_000, "{}", report.benign_clients);
}

#[test]
fn a_low_and_slow_guesser_is_detected_within_the_rules_window() {
    let result = run(
        populated(7, 12, vec![Scenario::LowAndSlow]),
        &EvalConfig::default(),
    );
    assert_detected(&result, &[]);
    let report = assert_no_benign(&result, &["AdvancedAnomaly"]);
    let s = report.rule("BruteGuessor").unwrap();
    assert_eq!(s.recall(), Some(1.0), "{s:?}");
    assert!(s.ttd_percentile(0.95).unwrap() <= s.window, "{s:?}");
}

/// Advanced Anomaly on the populated model: a day of learning, then flooders; every
/// flooder is flagged, and no client of any population (office gateways fifteen times the
/// median client, CGNAT addresses, the retry storm after the outage, partners) is.
#[test]
fn advanced_anomaly_flags_the_flooders_and_no_population_after_a_day_of_history() {
    let opts = EvalConfig::default();
    let mut sim = populated(11, 6, vec![Scenario::Flooder]);
    sim.attacks_per_kind = 2;
    sim.start = SimConfig::default().start;
    sim.warmup = opts.anomaly_history;
    sim.duration = opts.anomaly_history + SignedDuration::from_hours(6);
    let result = run(sim, &opts);
    assert!(!result.truth.outages.is_empty());
    for a in &result.truth.attacks {
        for id in a.identities() {
            assert!(
                result
                    .first
                    .contains_key(&("AdvancedAnomaly".to_owned(), id)),
                "flooder {id} from {} not flagged",
                a.start
            );
        }
    }
    let benign: Vec<_> = result
        .first
        .keys()
        .filter(|(rule, key)| {
            rule == "AdvancedAnomaly" && !matches!(result.truth.who(key), Who::Attacker(_))
        })
        .collect();
    assert!(benign.is_empty(), "{benign:?}");
}
