//! What the collector costs the API server: the leader evaluates every namespace's
//! DetectionRules each `--detection-interval` (here 1 s) from its watch of the rules, never
//! with a LIST per namespace and tick. Measured with the API server's own request counter
//! (`apiserver_request_total`), so this test runs alone in its binary: other operators
//! starting in parallel would list rules too. The leader also exports what the windows
//! hold and how long a round takes.

use palisade_detection::report::Report;
use palisade_e2e::collector::{has_incident, post, report_from, token};
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

use palisade_e2e::flood::QUICK_FLOODER as FLOODER;

fn report(ns: &str, flood: u32) -> Report {
    report_from(
        ns,
        "198.51.100.77",
        [203, 0, 113, 0],
        flood,
        jiff::Timestamp::now(),
    )
}

/// LIST requests for DetectionRules the API server has answered since it started.
fn rule_lists(cp: &ControlPlane) -> u64 {
    let metrics = cp
        .kubectl_ok(&["get", "--raw", "/metrics"])
        .expect("API server metrics");
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains("resource=\"detectionrules\"")
                && l.contains("verb=\"LIST\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn the_leader_evaluates_rules_from_its_watch_without_listing_them_each_tick() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "apiload").await;
    // The harness runs operators with `--detection-interval 1s`.
    let op = Operator::start(cp, "op-apiload", "op-apiload", &scope(&ns));
    cp.apply(ns.name(), FLOODER).expect("rule");
    let tok = token(cp, ns.name(), "palisade");
    let c = &op.collector;
    // The rule is evaluated: a reported flood opens an incident.
    eventually("a reported flood to open an incident", || async {
        let (code, msg) = post(c, &tok, report(ns.name(), 2000).to_json()).await;
        if code != 202 {
            return Err(format!("report: {code} {msg}"));
        }
        has_incident(cp, ns.name())
    })
    .await;

    // Five more ticks with reports coming in: the rule is still evaluated every second.
    let before = rule_lists(cp);
    for _ in 0..5 {
        let (code, msg) = post(c, &tok, report(ns.name(), 2000).to_json()).await;
        assert_eq!(code, 202, "{msg}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let lists = rule_lists(cp) - before;
    assert_eq!(
        lists, 0,
        "DetectionRule LISTs during 5 evaluation ticks of one namespace (the watch serves them)"
    );

    // What it costs the leader is exported: the windows' memory and the rounds' time.
    let metrics = op.metrics().expect("operator metrics");
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("palisade_operator_collector_window_bytes") > 0.0,
        "the windows of {} take memory",
        ns.name()
    );
    assert!(
        value("palisade_operator_collector_evaluation_seconds_count") >= 5.0,
        "at least the 5 rounds above were timed"
    );
}
