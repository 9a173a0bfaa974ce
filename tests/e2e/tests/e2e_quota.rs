//! Issue 18's quota test, in a binary of its own: it keeps the machine busy for a minute
//! (maximal reports parsed by a debug build), which must not slow the other collector tests.

use palisade_detection::report::Report;
use palisade_e2e::collector::{flood_report, has_incident, metric_sum, post, token};
use palisade_e2e::flood::QUICK_FLOODER as FLOODER;
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

/// A maximal report of a hostile sender in `ns` (16,384 new clients, 4096 attribute values
/// of 128 bytes) under a made-up pod name.
fn hostile_report(ns: &str, pod: &str, salt: u32) -> Report {
    Report::maximal(ns, pod, salt, jiff::Timestamp::now())
}

/// Issue 18's quota test: for a minute a hostile namespace sends maximal reports (16,384 new
/// clients and 4096 long attribute values each, under 48 made-up pod names) and hammers the
/// collector from one pod. Its pod is held to its report rate (429), the made-up pod names
/// share the namespace's budget (429: they do not multiply what it may send, so the leader's
/// CPU is bounded too), the windows are held to `--collector-window-budget-mib` by dropping
/// the hostile namespace's oldest slices, the leader's memory stays far below the chart's
/// limit, and a flood in another namespace still opens its incident.
#[tokio::test]
async fn a_hostile_namespace_cannot_exhaust_the_leader() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "quota").await;
    let hostile = TempNs::new(cp, "quota-hostile").await;
    let args = [
        &scope(&ns)[..],
        &["--collector-window-budget-mib".into(), "4".into()],
    ]
    .concat();
    let op = Operator::start(cp, "op-quota", "op-quota", &args);
    cp.apply(ns.name(), FLOODER).expect("rule");
    let good = token(cp, ns.name(), "palisade");
    let evil = token(cp, hostile.name(), "palisade");
    let c = op.collector.clone();
    eventually("the collector to accept a report", || async {
        let (code, msg) = post(&c, &good, flood_report(ns.name(), 10).to_json()).await;
        (code == 202).then_some(()).ok_or(format!("{code} {msg}"))
    })
    .await;

    // One pod name, as fast as it can: refused beyond its burst.
    let mut rate_limited = 0;
    for _ in 0..400 {
        let (code, _) = post(&c, &evil, flood_report(hostile.name(), 1).to_json()).await;
        if code == 429 {
            rate_limited += 1;
            break;
        }
        assert_eq!(code, 202);
    }
    assert_eq!(rate_limited, 1, "one pod is held to its report rate");

    // A minute of maximal reports under made-up pod names, from two senders. (Built
    // beforehand: building one takes longer than sending it.)
    const BODIES: u32 = 48;
    let bodies = std::sync::Arc::new(
        tokio::task::spawn_blocking({
            let hostile = hostile.name().to_owned();
            move || {
                (0..BODIES)
                    .map(|i| hostile_report(&hostile, &format!("fake-{i}"), i).to_json())
                    .collect::<Vec<_>>()
            }
        })
        .await
        .expect("maximal reports"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sender = |task: u32| {
        let (c, evil, bodies) = (c.clone(), evil.clone(), bodies.clone());
        tokio::spawn(async move {
            let (mut sent, mut accepted) = (0u32, 0u32);
            while std::time::Instant::now() < deadline {
                let body = bodies[((task * BODIES / 2 + sent) % BODIES) as usize].clone();
                let (code, msg) = post(&c, &evil, body).await;
                match code {
                    202 => accepted += 1,
                    429 => assert!(
                        msg.contains("NamespaceReportRateExceeded"),
                        "a maximal report is within the bounds, only the namespace's rate \
                         refuses it: {msg}"
                    ),
                    _ => panic!("a maximal report: {code} {msg}"),
                }
                sent += 1;
            }
            (sent, accepted)
        })
    };
    let cpu_before = op.cpu_seconds().expect("the operator's CPU time");
    let started = std::time::Instant::now();
    let senders = [sender(1), sender(2)];
    // Meanwhile the other namespace's flood is detected.
    eventually(
        "a flood in the other namespace to open its incident",
        || async {
            let (code, msg) = post(&c, &good, flood_report(ns.name(), 2000).to_json()).await;
            if code != 202 {
                return Err(format!("report: {code} {msg}"));
            }
            has_incident(cp, ns.name())
        },
    )
    .await;
    let (mut sent, mut accepted) = (0, 0);
    for s in senders {
        let (n, a) = s.await.expect("sender");
        sent += n;
        accepted += a;
    }
    let cpu = op.cpu_seconds().expect("the operator's CPU time") - cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "quota: {sent} maximal reports in {elapsed:.0} s under made-up pod names, {accepted} accepted \
         (the namespace's budget: {} a second, bursts of {}); the operator (debug build) used \
         {cpu:.1} s of CPU = {:.0} % of one core",
        10 * 2,
        120 * 2,
        100.0 * cpu / elapsed
    );
    let m = op.metrics().expect("operator metrics");
    let quota = |reason: &str| {
        metric_sum(
            &m,
            "palisade_operator_collector_quota_total{",
            &format!("reason=\"{reason}\""),
        )
    };
    assert!(quota("ReportRateExceeded") >= 1, "{m}");
    // The namespace (no pod carries the sidecar: counted as 2 pods) took its burst of 240,
    // less what the single pod used above, and 20 a second after that. (A debug build of
    // the operator takes more time than that per maximal report, so here the senders rarely
    // outrun the budget; `made_up_pod_names_share_their_namespace_budget` shows it biting.)
    let most = 240.0 + 20.0 * elapsed + 1.0;
    assert!(
        f64::from(accepted) <= most,
        "{accepted} maximal reports accepted in {elapsed:.0} s; at most {most:.0}"
    );
    assert!(accepted >= 1, "the budget lets some through");
    assert!(
        quota("WindowMemory") >= 1,
        "{sent} maximal reports: slices dropped"
    );
    let windows = metric_sum(&m, "palisade_operator_collector_window_bytes", "");
    // The budget (4 MiB), plus what shrinking does not take: each namespace's current 30 s
    // slice, at most 20,000 clients (about 2 MB).
    assert!(
        windows <= 8 << 20,
        "windows hold {} MiB after {sent} maximal reports",
        windows >> 20
    );
    let rss = op.rss_bytes().expect("the operator's RSS");
    assert!(rss < 256 << 20, "operator RSS {} MiB", rss >> 20);
    // The incident is about the flood: its clients are the flooder, none of the hostile
    // namespace's made-up ones.
    let incidents = cp
        .kubectl_ok(&["-n", ns.name(), "get", "securityincidents", "-o", "json"])
        .expect("incidents");
    assert!(incidents.contains("198.51.100.77"), "{incidents}");
    assert!(!incidents.contains("\"10."), "{incidents}");
}

/// POSTs `bodies` to the collector at `addr` one after the other on one keep-alive
/// connection (10,000 curls would take minutes): the status and body of each.
fn post_keepalive(
    addr: &str,
    token: &str,
    bodies: impl Iterator<Item = Vec<u8>>,
) -> Vec<(u16, String)> {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = std::net::TcpStream::connect(addr).expect("connect to the collector");
    // Headers and body go in one write: split, Nagle and delayed ACKs cost 40 ms each.
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut answers = Vec::new();
    for body in bodies {
        let mut request = format!(
            "POST /v1/reports HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        writer.write_all(&request).expect("write request");
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("status line {status:?}"));
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("content-length");
            }
        }
        let mut rest = vec![0u8; length];
        reader.read_exact(&mut rest).expect("body");
        answers.push((code, String::from_utf8_lossy(&rest).into_owned()));
    }
    answers
}

/// Made-up pod names do not multiply what a namespace may send: reports under 1000 new names
/// sent at once are accepted up to the namespace's burst (240 for a namespace whose pods do
/// not carry the sidecar), then refused (429 `NamespaceReportRateExceeded`, counted) whatever
/// the name, while another namespace goes on reporting. (The bound on pod names a namespace may
/// use, 10,000 per 5 minutes, is unit-tested in `operator/src/collector/quota.rs`: at the
/// namespace's rate it takes minutes to reach.)
#[tokio::test]
async fn made_up_pod_names_share_their_namespace_budget() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "podquota").await;
    let other = TempNs::new(cp, "podquota-other").await;
    let op = Operator::start(cp, "op-podquota", "op-podquota", &scope(&ns));
    let evil = token(cp, ns.name(), "palisade");
    let good = token(cp, other.name(), "palisade");
    let c = op.collector.clone();
    eventually("the collector to accept a report", || async {
        let (code, msg) = post(&c, &good, flood_report(other.name(), 1).to_json()).await;
        (code == 202).then_some(()).ok_or(format!("{code} {msg}"))
    })
    .await;
    let name = ns.name().to_owned();
    let report = move |pod: &str| {
        let mut r = flood_report(&name, 1);
        r.sidecar.pod = pod.into();
        r.to_json()
    };
    const NAMES: usize = 1000;
    const BURST: usize = 240;
    let (addr, token_) = (c.clone(), evil.clone());
    let report_ = report.clone();
    let started = std::time::Instant::now();
    let answers = tokio::task::spawn_blocking(move || {
        post_keepalive(
            &addr,
            &token_,
            (0..NAMES).map(|i| report_(&format!("made-up-{i}"))),
        )
    })
    .await
    .expect("sender");
    let elapsed = started.elapsed().as_secs_f64();
    let codes: Vec<u16> = answers.iter().map(|(code, _)| *code).collect();
    let accepted = codes.iter().filter(|c| **c == 202).count();
    assert!(
        codes.iter().all(|c| *c == 202 || *c == 429),
        "only accepted or refused by a quota: {:?}",
        codes
            .iter()
            .filter(|c| **c != 202 && **c != 429)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(
        codes[..BURST].iter().all(|c| *c == 202),
        "the namespace's burst is accepted"
    );
    // Its burst, and its rate (20 a second) while the reports went out.
    let most = BURST as f64 + 20.0 * elapsed + 1.0;
    assert!(
        (accepted as f64) <= most,
        "{accepted} of {NAMES} reports under new names accepted in {elapsed:.1} s; at most {most:.0}"
    );
    // Refused for the namespace's rate (read from the refusals themselves: a report sent
    // after the run could find a token the bucket refilled meanwhile, 20 a second).
    let (_, refusal) = answers
        .iter()
        .find(|(code, _)| *code == 429)
        .expect("reports beyond the burst and the rate are refused");
    assert!(refusal.contains("NamespaceReportRateExceeded"), "{refusal}");
    let (code, msg) = post(&c, &good, flood_report(other.name(), 1).to_json()).await;
    assert_eq!(code, 202, "another namespace is not affected: {msg}");
    let m = op.metrics().expect("operator metrics");
    let refused = metric_sum(
        &m,
        "palisade_operator_collector_quota_total{",
        "reason=\"NamespaceReportRateExceeded\"",
    );
    assert!(refused >= (NAMES - accepted) as u64, "{m}");
    // Given time, the namespace reports again.
    eventually("the namespace's budget to refill", || async {
        let (code, msg) = post(&c, &evil, report("made-up-7")).await;
        (code == 202).then_some(()).ok_or(format!("{code} {msg}"))
    })
    .await;
}
