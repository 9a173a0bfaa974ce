//! A detection crate `Incident` (or an error [`Surge`]) → the status of its `SecurityIncident`
//! object.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use palisade_crds::duration::Duration;
use palisade_crds::incident::{
    IncidentAttributes, IncidentScope, IncidentState, RiskLevel, SecurityIncidentStatus, TopValues,
    TrafficSeries, ValueCount,
};
use palisade_detection::incident::{Incident, IncidentState as DetState};
use palisade_detection::risk::RiskLevel as DetRisk;
use palisade_detection::stats::AttrDim;

use super::surge::Surge;

const TOP: usize = 10;

/// The status the incident's object should carry; `archived` is the user's label.
pub fn status(i: &Incident, archived: bool) -> SecurityIncidentStatus {
    let rules: Vec<String> = i.rules.iter().take(16).cloned().collect();
    let mut by_rule: Vec<(&String, u64)> = i
        .rules
        .iter()
        .map(|r| (r, i.rule_requests.get(r).copied().unwrap_or(0)))
        .collect();
    by_rule.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let rules_top = TopValues {
        distinct: count(i.rules.len() as u64),
        top: by_rule
            .iter()
            .take(TOP)
            .map(|(r, n)| ValueCount {
                value: (*r).clone(),
                requests: count(*n),
                last_detected_time: None,
            })
            .collect(),
    };
    let mut attributes = attributes(&i.attributes, &i.attribute_distinct, &i.attribute_last_seen);
    attributes.rules = Some(rules_top);
    SecurityIncidentStatus {
        scope: Some(IncidentScope::Clients),
        display_name: Some(i.display_name.chars().take(256).collect()),
        risk_level: Some(match i.risk {
            DetRisk::Low => RiskLevel::Low,
            DetRisk::Moderate => RiskLevel::Moderate,
            DetRisk::Severe => RiskLevel::Severe,
        }),
        state: Some(state(archived || i.state == DetState::Archived)),
        rules_summary: Some(rules.join(", ")),
        detection_rules: rules,
        clients: Some(count(i.clients.len() as u64 + i.clients_unlisted)),
        requests: Some(count(i.requests())),
        first_detected_time: Some(Time(i.first_detected)),
        last_detected_time: Some(Time(i.last_detected)),
        duration: Some(Duration::from(i.duration().unsigned_abs())),
        attributes: Some(attributes),
        traffic: Some(traffic(&i.series_with_partial())),
        proposed_action: super::proposed::yaml(i),
    }
}

/// The status of an error surge's incident (scope `Namespace`): no rule, no proposed action;
/// `clients` are the failing clients at the peak, `requests` the app's errors, the traffic
/// series errors per minute. Risk `Moderate`: nobody attacks, but while it lasts the
/// error-based rules do not judge the namespace's answers.
pub fn surge_status(s: &Surge, archived: bool) -> SecurityIncidentStatus {
    let last = s.ended.unwrap_or(s.last_detected);
    SecurityIncidentStatus {
        scope: Some(IncidentScope::Namespace),
        display_name: Some(s.display_name().chars().take(256).collect()),
        risk_level: Some(RiskLevel::Moderate),
        state: Some(state(archived)),
        rules_summary: Some("error surge".to_owned()),
        detection_rules: Vec::new(),
        clients: Some(count(s.peak.failing)),
        requests: Some(count(s.requests())),
        first_detected_time: Some(Time(s.started)),
        last_detected_time: Some(Time(last)),
        duration: Some(Duration::from(
            last.duration_since(s.started).unsigned_abs(),
        )),
        attributes: Some(attributes(
            &s.attributes,
            &s.attribute_distinct,
            &BTreeMap::new(),
        )),
        traffic: Some(traffic(&s.series_with_partial())),
        proposed_action: None,
    }
}

fn state(archived: bool) -> IncidentState {
    if archived {
        IncidentState::Archived
    } else {
        IncidentState::Active
    }
}

/// The last day of a per-minute series.
fn traffic(series: &[(jiff::Timestamp, u64)]) -> TrafficSeries {
    let series = &series[series.len().saturating_sub(1440)..];
    TrafficSeries {
        start_time: series.first().map(|(t, _)| Time(*t)),
        requests: series.iter().map(|(_, n)| count(*n)).collect(),
    }
}

/// Every attribute dimension's top values (without `rules`).
fn attributes(
    values: &BTreeMap<AttrDim, Vec<(String, u64)>>,
    distinct: &BTreeMap<AttrDim, u64>,
    last_seen: &BTreeMap<AttrDim, Vec<jiff::Timestamp>>,
) -> IncidentAttributes {
    let top = |dim: AttrDim| {
        let values = values.get(&dim)?;
        let seen = last_seen.get(&dim);
        let distinct = distinct.get(&dim).copied().unwrap_or(values.len() as u64);
        Some(TopValues {
            distinct: count(distinct),
            top: values
                .iter()
                .take(TOP)
                .enumerate()
                .map(|(n, (v, requests))| ValueCount {
                    value: v.chars().take(512).collect(),
                    requests: count(*requests),
                    last_detected_time: seen.and_then(|s| s.get(n)).map(|t| Time(*t)),
                })
                .collect(),
        })
    };
    IncidentAttributes {
        api_products: top(AttrDim::Product),
        developer_apps: top(AttrDim::App),
        developers: top(AttrDim::Developer),
        countries: top(AttrDim::Region),
        workloads: top(AttrDim::Workload),
        response_codes: top(AttrDim::ResponseCode),
        paths: top(AttrDim::Path),
        ips: top(AttrDim::Ip),
        app_keys: top(AttrDim::AppKey),
        user_agents: top(AttrDim::UserAgent),
        rules: None,
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use palisade_detection::incident::IncidentState as DetState;
    use palisade_detection::key::ClientKey;
    use palisade_detection::rule_spec::RuleType;

    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn the_status_carries_duration_keys_agents_addresses_and_rules_with_counts() {
        let key = ClientKey::api_key("leaked");
        let values = |n: u64, name: &str| -> Vec<(String, u64)> {
            (0..n).map(|i| (format!("{name}{i}"), 100 - i)).collect()
        };
        let i = Incident {
            id: "inc-0123456789abcdef".into(),
            namespace: "shop".into(),
            display_name: "brute + robot from apiKey:sha256:…".into(),
            state: DetState::Active,
            risk: DetRisk::Moderate,
            risk_score: 40,
            rules: ["brute".to_owned(), "robot".to_owned()].into(),
            rule_types: [RuleType::BruteGuessor, RuleType::RobotAbuser].into(),
            clients: [key].into(),
            clients_unlisted: 0,
            traffic: 600,
            traffic_partial: 0,
            first_detected: t(0),
            last_detected: t(5_100),
            counted_until: t(5_100),
            series: vec![],
            attributes: BTreeMap::from([
                (AttrDim::Ip, values(10, "198.51.100.")),
                (AttrDim::UserAgent, values(2, "curl/")),
                (
                    AttrDim::AppKey,
                    vec![("sha256:0123456789abcdef".into(), 600)],
                ),
            ]),
            attribute_distinct: BTreeMap::from([(AttrDim::Ip, 37)]),
            attribute_last_seen: BTreeMap::from([(AttrDim::Ip, vec![t(5_000); 10])]),
            rule_clients: BTreeMap::from([("brute".into(), [key].into())]),
            rule_requests: BTreeMap::from([("brute".into(), 600), ("robot".into(), 20)]),
            peak_share: 0.1,
            merged_from: vec![],
        };
        let s = status(&i, false);
        assert_eq!(s.duration.as_ref().map(|d| d.as_str()), Some("1h25m"));
        let a = s.attributes.unwrap();
        let ips = a.ips.unwrap();
        assert_eq!(
            ips.distinct, 37,
            "all distinct addresses, not only the listed ones"
        );
        assert_eq!(ips.top.len(), 10);
        assert_eq!(
            (ips.top[0].value.as_str(), ips.top[0].requests),
            ("198.51.100.0", 100)
        );
        assert_eq!(ips.top[0].last_detected_time, Some(Time(t(5_000))));
        let ua = a.user_agents.unwrap();
        assert_eq!((ua.distinct, ua.top[1].value.as_str()), (2, "curl/1"));
        let keys = a.app_keys.unwrap();
        assert_eq!(keys.top[0].value, "sha256:0123456789abcdef");
        let rules = a.rules.unwrap();
        assert_eq!(rules.distinct, 2);
        assert_eq!(
            rules
                .top
                .iter()
                .map(|v| (v.value.as_str(), v.requests))
                .collect::<Vec<_>>(),
            [("brute", 600), ("robot", 20)]
        );
    }
}
