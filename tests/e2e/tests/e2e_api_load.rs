//! What the collector costs the API server: the leader evaluates every namespace's
//! DetectionRules each `--detection-interval` (here 1 s) from its watch of the rules, never
//! with a LIST per namespace and tick. Measured with the operator's own count of its API
//! requests (`palisade_operator_kube_requests_total`), so that nothing else talking to the
//! API server (kube-controller-manager, other tests) and no scheduling delay changes the
//! verdict. The leader also exports what the windows hold and how long a round takes.

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

/// A counter of the operator's own metrics (0 when it has not counted yet).
fn counter(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What the operator's collector has asked the API server about DetectionRules, and how many
/// evaluation rounds it has run, from the operator's own metrics.
#[derive(Debug, Clone, Copy)]
struct Calls {
    lists: u64,
    watches: u64,
    rounds: u64,
}

fn calls(op: &Operator) -> Calls {
    let m = op.metrics().expect("operator metrics");
    let requests = |verb: &str| {
        counter(
            &m,
            "palisade_operator_kube_requests_total{",
            &format!("component=\"collector\",verb=\"{verb}\",resource=\"detectionrules\""),
        )
    };
    Calls {
        lists: requests("list"),
        watches: requests("watch"),
        rounds: counter(
            &m,
            "palisade_operator_collector_evaluation_seconds_count",
            "",
        ),
    }
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

    // Five more evaluation rounds with reports coming in, however long a busy machine takes
    // to run them. The operator counts its own API requests per component: the API server's
    // counter would also see kube-controller-manager (its garbage collector and quota
    // controller list every resource they discover) and the policy controller (which lists a
    // namespace's rules when it reconciles it: whenever a rule's status or the detected set
    // changes, at no fixed tick). A watcher may relist (a watch that expired or lost its
    // resource version): legitimate, and always followed by a new WATCH. A LIST per tick would
    // not be: so every collector LIST in the window must be paired with a WATCH.
    let before = calls(&op);
    eventually("five evaluation rounds with reports coming in", || async {
        let (code, msg) = post(c, &tok, report(ns.name(), 2000).to_json()).await;
        if code != 202 {
            return Err(format!("report: {code} {msg}"));
        }
        let now = calls(&op);
        match now.rounds - before.rounds {
            n if n >= 5 => Ok(()),
            n => Err(format!("{n} rounds so far")),
        }
    })
    .await;
    let after = eventually("every DetectionRule LIST to be a watcher's", || async {
        let now = calls(&op);
        let (lists, watches) = (now.lists - before.lists, now.watches - before.watches);
        if lists <= watches {
            Ok(now)
        } else {
            Err(format!(
                "{lists} LISTs but {watches} WATCHes of DetectionRules in {} evaluation rounds \
                 of one namespace: something lists outside the watch",
                now.rounds - before.rounds
            ))
        }
    })
    .await;
    eprintln!("DetectionRule requests in the window: {before:?} -> {after:?}");
    assert!(
        before.lists >= 1 && before.watches >= 1,
        "the collector's request counter saw its watch's first LIST and WATCH: {before:?}"
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
}
