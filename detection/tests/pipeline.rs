//! The whole detection path on a virtual clock, through the public API only: two sidecars
//! count requests and send JSON reports (one lost, one duplicated), the collector merges
//! them, runs the rules, keeps the detected-client set and clusters incidents.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use jiff::{SignedDuration, Timestamp};
use palisade_detection::counter::{Counter, CounterConfig};
use palisade_detection::detected::DetectedSet;
use palisade_detection::facts::{RequestFacts, Responder};
use palisade_detection::incident::{IncidentConfig, IncidentEvent, cluster};
use palisade_detection::key::ClientKey;
use palisade_detection::report::{Report, SidecarId};
use palisade_detection::rule_spec::{FlooderParams, RobotAbuserParams, RuleKind, RuleSpec};
use palisade_detection::rules::run_rules;
use palisade_detection::window::{MergeOutcome, WindowConfig, WindowSet};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_057_600 + s).unwrap()
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xCB00_7100 + n)) // 203.0.113.n
}

fn sidecar(pod: &str) -> SidecarId {
    SidecarId {
        pod: pod.into(),
        workload: "api".into(),
        namespace: "shop".into(),
    }
}

const FLOODER: u32 = 1;
const ROBOT: u32 = 2;
const DENIED: u32 = 3;

/// One virtual second of traffic on both pods. `deny_flooder`: an action is in force and
/// the sidecars answer the flooder themselves.
fn second(pods: &mut [Counter; 2], deny_flooder: bool) {
    for n in 10..70 {
        pods[(n % 2) as usize].record(&RequestFacts::new(ip(n), 200));
    }
    for i in 0..20 {
        let mut f = RequestFacts::new(ip(FLOODER), 200);
        if deny_flooder {
            f.status = 403;
            f.responder = Responder::Sidecar;
        }
        pods[i % 2].record(&f);
    }
    // A robot probing forbidden paths: the app answers 403.
    pods[0].record(&RequestFacts::new(ip(ROBOT), 403));
    // A client denied by an action all along: only the sidecar's own 403s.
    let mut f = RequestFacts::new(ip(DENIED), 403);
    f.responder = Responder::Sidecar;
    pods[1].record(&f);
}

#[test]
fn flood_is_detected_clustered_and_own_denials_are_not_evidence() {
    let mut pods = [
        Counter::new(sidecar("api-0"), &CounterConfig::default(), t(0)),
        Counter::new(sidecar("api-1"), &CounterConfig::default(), t(0)),
    ];
    let mut windows = WindowSet::new(WindowConfig::default());
    let rules = [
        RuleSpec::new("Flooder", RuleKind::Flooder(FlooderParams::default())),
        RuleSpec::new(
            "Robot",
            RuleKind::RobotAbuser(RobotAbuserParams {
                min_forbidden: 100,
                ..Default::default()
            }),
        ),
    ];
    let mut detected = DetectedSet::default();
    let mut incidents = Vec::new();
    let mut events = Vec::new();
    for s in 1..=180 {
        second(&mut pods, s > 120);
        for pod in &mut pods {
            let body = pod.take_report(t(s)).to_json();
            let report = Report::from_json(&body).unwrap();
            if report.sidecar.pod == "api-1" && report.seq == 50 {
                continue; // lost on the way
            }
            assert_eq!(windows.merge(&report, t(s)), MergeOutcome::Accepted);
            if report.seq == 60 {
                assert_eq!(windows.merge(&report, t(s)), MergeOutcome::Duplicate);
            }
        }
        if s % 10 == 0 {
            let w = windows.get("shop").unwrap();
            let found = run_rules(w, &rules, t(s));
            detected.expire(t(s));
            detected.update(&found);
            let cfg = IncidentConfig::default();
            events.extend(cluster(&mut incidents, "shop", &found, w, &cfg, t(s)));
        }
    }
    let flooder = ClientKey::Ip(ip(FLOODER));
    assert!(detected.contains(&flooder, "Flooder"));
    assert_eq!(
        detected.next_expiry(),
        Some(t(180) + SignedDuration::from_hours(1))
    );
    // The robot's 180 upstream 403s are evidence; the denied client's 180 own 403s are not,
    // and neither are the flooder's denials after the action took effect.
    assert!(detected.contains(&ClientKey::Ip(ip(ROBOT)), "Robot"));
    assert_eq!(detected.rules_of(&ClientKey::Ip(ip(DENIED))).count(), 0);
    assert_eq!(
        detected.rules_of(&flooder).collect::<Vec<_>>(),
        vec!["Flooder"]
    );
    assert!((10..70).all(|n| detected.rules_of(&ClientKey::Ip(ip(n))).count() == 0));
    // One incident per unrelated client, opened once, updated since.
    let flood = incidents
        .iter()
        .find(|i| i.clients.contains(&flooder))
        .unwrap();
    assert_eq!(flood.display_name, "Flooder from ip:203.0.113.1");
    assert_eq!(incidents.len(), 2, "{incidents:#?}");
    let opened = events
        .iter()
        .filter(|e| matches!(e, IncidentEvent::Opened { .. }))
        .count();
    assert_eq!(opened, 2);
    assert!(flood.traffic > 2_000, "{}", flood.traffic);
    let stats = windows.get("shop").unwrap().stats();
    assert_eq!(
        (stats.lost, stats.duplicates),
        (1, 2),
        "seq 60 of both pods sent twice"
    );
}
