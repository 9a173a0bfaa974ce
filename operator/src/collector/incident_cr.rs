//! A detection crate `Incident` → the status of its `SecurityIncident` object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use palisade_crds::incident::{
    IncidentAttributes, IncidentState, RiskLevel, SecurityIncidentStatus, TopValues, TrafficSeries,
    ValueCount,
};
use palisade_detection::incident::{Incident, IncidentState as DetState};
use palisade_detection::risk::RiskLevel as DetRisk;
use palisade_detection::stats::AttrDim;

const TOP: usize = 10;

/// The status the incident's object should carry; `archived` is the user's label.
pub fn status(i: &Incident, archived: bool) -> SecurityIncidentStatus {
    let rules: Vec<String> = i.rules.iter().take(16).cloned().collect();
    let top = |dim: AttrDim| {
        i.attributes.get(&dim).map(|values| TopValues {
            distinct: i64::try_from(values.len()).unwrap_or(i64::MAX),
            top: values
                .iter()
                .take(TOP)
                .map(|(v, n)| ValueCount {
                    value: v.chars().take(512).collect(),
                    requests: count(*n),
                    last_detected_time: None,
                })
                .collect(),
        })
    };
    let ips = TopValues {
        distinct: count(i.clients.len() as u64 + i.clients_unlisted),
        top: i
            .clients
            .iter()
            .take(TOP)
            .map(|c| ValueCount {
                value: c.to_string(),
                requests: 0,
                last_detected_time: None,
            })
            .collect(),
    };
    let series = i.series_with_partial();
    let series = &series[series.len().saturating_sub(1440)..];
    let series_start = series.first().map(|(t, _)| Time(*t));
    SecurityIncidentStatus {
        display_name: Some(i.display_name.chars().take(256).collect()),
        risk_level: Some(match i.risk {
            DetRisk::Low => RiskLevel::Low,
            DetRisk::Moderate => RiskLevel::Moderate,
            DetRisk::Severe => RiskLevel::Severe,
        }),
        state: Some(if archived || i.state == DetState::Archived {
            IncidentState::Archived
        } else {
            IncidentState::Active
        }),
        rules_summary: Some(rules.join(", ")),
        detection_rules: rules,
        clients: Some(count(i.clients.len() as u64 + i.clients_unlisted)),
        requests: Some(count(i.requests())),
        first_detected_time: Some(Time(i.first_detected)),
        last_detected_time: Some(Time(i.last_detected)),
        attributes: Some(IncidentAttributes {
            api_products: top(AttrDim::Product),
            developer_apps: top(AttrDim::App),
            developers: top(AttrDim::Developer),
            countries: top(AttrDim::Region),
            workloads: top(AttrDim::Workload),
            response_codes: top(AttrDim::ResponseCode),
            ips: Some(ips),
            ..IncidentAttributes::default()
        }),
        traffic: Some(TrafficSeries {
            start_time: series_start,
            requests: series.iter().map(|(_, n)| count(*n)).collect(),
        }),
        proposed_action: super::proposed::yaml(i),
        ..SecurityIncidentStatus::default()
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
