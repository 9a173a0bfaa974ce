//! Issue 18's quota test, in a binary of its own: it keeps the machine busy for a minute
//! (maximal reports parsed by a debug build), which must not slow the other collector tests.

use palisade_detection::report::Report;
use palisade_e2e::collector::{flood_report, has_incident, metric_sum, post, token};
use palisade_e2e::flood::QUICK_FLOODER as FLOODER;
use palisade_e2e::{ControlPlane, Operator, TempNs, eventually, scope};

/// A maximal report of a hostile sender in `ns`: every client new (16,384 of them), 4096
/// attribute values of 128 bytes, a made-up pod name.
fn hostile_report(ns: &str, pod: &str, salt: u32) -> Report {
    use palisade_detection::report::{
        AttrEntry, ClientEntry, MAX_REPORT_ATTRIBUTES, MAX_REPORT_CLIENTS, SidecarId,
    };
    use palisade_detection::stats::{AttrDim, ClientCounts, MAX_ATTR_LEN, Totals};
    use palisade_policy::ClientKey;
    let now = jiff::Timestamp::now();
    let counts = ClientCounts {
        requests: 1,
        ..ClientCounts::default()
    };
    let clients: Vec<ClientEntry> = (0..MAX_REPORT_CLIENTS as u32)
        .map(|i| {
            let n = (salt.wrapping_mul(MAX_REPORT_CLIENTS as u32) + i) & 0x00ff_ffff;
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | n);
            ClientEntry {
                key: ClientKey::Ip(ip.into()),
                counts,
            }
        })
        .collect();
    let mut totals = Totals::default();
    for c in &clients {
        totals.add_client(&c.counts);
    }
    let attributes = (0..MAX_REPORT_ATTRIBUTES)
        .map(|i| {
            let mut value = format!("/{salt}/{i}/");
            value.extend(std::iter::repeat_n('x', MAX_ATTR_LEN - value.len()));
            AttrEntry {
                client: clients[i].key,
                dim: AttrDim::Path,
                value,
                count: 1,
            }
        })
        .collect();
    Report {
        version: palisade_detection::report::REPORT_VERSION,
        sidecar: SidecarId {
            pod: pod.into(),
            workload: "hostile".into(),
            namespace: ns.into(),
        },
        seq: 1,
        start: now - jiff::SignedDuration::from_secs(1),
        end: now,
        totals,
        clients,
        attributes,
        evicted: 0,
        actions: Vec::new(),
        generation: None,
        samples: Vec::new(),
    }
}

/// Issue 18's quota test: for a minute a hostile namespace sends maximal reports (16,384 new
/// clients and 4096 long attribute values each, a new pod name each) and hammers the
/// collector from one pod. Its pod is held to its report rate (429), the windows are held to
/// `--collector-window-budget-mib` by dropping the hostile namespace's oldest slices, the
/// leader's memory stays far below the chart's limit, and a flood in another namespace still
/// opens its incident.
#[tokio::test]
async fn a_hostile_namespace_cannot_exhaust_the_leader() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "quota").await;
    let hostile = TempNs::new(cp, "quota-hostile").await;
    let args = [
        &scope(&ns)[..],
        &["--collector-window-budget-mib".into(), "8".into()],
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

    // A minute of maximal reports under new pod names, from two senders.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sender = |task: u32| {
        let (c, evil, hostile) = (c.clone(), evil.clone(), hostile.name().to_owned());
        tokio::spawn(async move {
            let mut sent = 0u32;
            while std::time::Instant::now() < deadline {
                let body = hostile_report(
                    &hostile,
                    &format!("fake-{task}-{sent}"),
                    task * 100_000 + sent,
                )
                .to_json();
                let (code, msg) = post(&c, &evil, body).await;
                assert_eq!(code, 202, "a maximal report is within the bounds: {msg}");
                sent += 1;
            }
            sent
        })
    };
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
    let mut sent = 0;
    for s in senders {
        sent += s.await.expect("sender");
    }
    let m = op.metrics().expect("operator metrics");
    let quota = |reason: &str| {
        metric_sum(
            &m,
            "palisade_operator_collector_quota_total{",
            &format!("reason=\"{reason}\""),
        )
    };
    assert!(quota("ReportRateExceeded") >= 1, "{m}");
    assert!(
        quota("WindowMemory") >= 1,
        "{sent} maximal reports: slices dropped"
    );
    let windows = metric_sum(&m, "palisade_operator_collector_window_bytes", "");
    // The budget, and at most the current slices of the two namespaces beyond it.
    assert!(
        windows <= 16 << 20,
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
/// connection (10,000 curls would take minutes): the status of each.
fn post_keepalive(addr: &str, token: &str, bodies: impl Iterator<Item = Vec<u8>>) -> Vec<u16> {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = std::net::TcpStream::connect(addr).expect("connect to the collector");
    // Headers and body go in one write: split, Nagle and delayed ACKs cost 40 ms each.
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut codes = Vec::new();
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
        codes.push(code);
    }
    codes
}

/// A namespace's pods are bounded: past 10,000 pod names reporting within 5 minutes, a
/// report from a new name is refused (429 `PodQuotaExceeded`, counted), while the pods
/// already known and another namespace go on reporting.
#[tokio::test]
async fn made_up_pod_names_are_refused_beyond_the_namespace_quota() {
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
    const QUOTA: usize = 10_000;
    let (addr, token_) = (c.clone(), evil.clone());
    let report_ = report.clone();
    let codes = tokio::task::spawn_blocking(move || {
        post_keepalive(
            &addr,
            &token_,
            (0..=QUOTA).map(|i| report_(&format!("made-up-{i}"))),
        )
    })
    .await
    .expect("sender");
    assert!(
        codes[..QUOTA].iter().all(|c| *c == 202),
        "the first {QUOTA} pods are accepted: {:?}",
        codes
            .iter()
            .filter(|c| **c != 202)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(codes[QUOTA], 429, "pod {} is one too many", QUOTA + 1);
    let (code, msg) = post(&c, &evil, report("made-up-one-more")).await;
    assert_eq!(code, 429, "{msg}");
    assert!(
        msg.contains("PodQuotaExceeded") || msg.contains("pods"),
        "{msg}"
    );
    let (code, msg) = post(&c, &evil, report("made-up-7")).await;
    assert_eq!(code, 202, "a known pod goes on reporting: {msg}");
    let (code, msg) = post(&c, &good, flood_report(other.name(), 1).to_json()).await;
    assert_eq!(code, 202, "another namespace is not affected: {msg}");
    let m = op.metrics().expect("operator metrics");
    let refused = metric_sum(
        &m,
        "palisade_operator_collector_quota_total{",
        "reason=\"PodQuotaExceeded\"",
    );
    assert!(refused >= 2, "{m}");
}
