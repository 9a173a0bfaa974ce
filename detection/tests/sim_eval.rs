//! The traffic model through the rule engine on a virtual clock (the operator's path:
//! counters → JSON reports → windows → rules): every injected attack is detected by its
//! rule, and neither the NAT gateways (many users, many logins, high volume) nor any other
//! benign client is.

#![allow(clippy::unwrap_used)]

use jiff::SignedDuration;
use palisade_detection::key::ClientKey;
use palisade_detection::rule_spec::RuleType;
use palisade_detection::sim::eval::{EvalConfig, EvalReport, run};
use palisade_detection::sim::{Scenario, SimConfig};

#[test]
fn every_attack_is_detected_by_its_rule_and_no_benign_client_is() {
    let sim = SimConfig {
        seed: 42,
        // 08:00–14:00: the rising half of the day.
        start: SimConfig::default().start + SignedDuration::from_hours(8),
        duration: SignedDuration::from_hours(6),
        clients: 2_000,
        nat_clients: 3,
        nat_users: (30, 40),
        // Apps that renew their tokens often: a NAT's users then call the token endpoint
        // more than OAuth Abuser's 50 sessions, from many user agents.
        logins_per_user_day: 8.0,
        base_rate: 5.0,
        scenarios: Scenario::ALL.to_vec(),
        attacks_per_kind: 1,
        ..Default::default()
    };
    let opts = EvalConfig::default();
    let result = run(sim, &opts);
    let truth = &result.truth;
    assert_eq!(truth.attacks.len(), Scenario::ALL.len());
    for a in &truth.attacks {
        for ip in &a.ips {
            let rule = a.scenario.rule_type();
            let at = result.first.get(&(rule, ClientKey::Ip(*ip)));
            let at = at.unwrap_or_else(|| {
                panic!(
                    "{:?} attacker {ip} (from {}) not detected by {rule:?}",
                    a.scenario, a.start
                )
            });
            assert!(
                *at >= a.start,
                "{rule:?} detected {ip} at {at}, before its attack"
            );
            assert!(
                *at <= a.end + SignedDuration::from_mins(5),
                "{rule:?} detected {ip} at {at}, long after its attack ({}–{})",
                a.start,
                a.end
            );
        }
    }
    // The NAT gateways really are hard negatives: high volume and many token calls.
    let busiest = result.nat_traffic.iter().max().unwrap();
    assert!(busiest.1 >= 50, "NAT token calls {busiest:?}");
    for ip in &truth.nat {
        let rules: Vec<RuleType> = result
            .first
            .keys()
            .filter(|(_, k)| *k == ClientKey::Ip(*ip))
            .map(|(r, _)| *r)
            .collect();
        assert!(rules.is_empty(), "NAT gateway {ip} detected by {rules:?}");
    }
    let mut report = EvalReport::default();
    report.add(&result);
    for (rule, score) in &report.rules {
        assert_eq!(
            score.on_benign, 0,
            "{rule:?} detected benign clients: {score:?}"
        );
        assert_eq!(score.recall(), Some(1.0), "{rule:?}: {score:?}");
    }
    assert!(report.benign_clients > 1_000, "{}", report.benign_clients);
}
