//! Counting for detection inside one process: real requests through the sidecar, its
//! reports received by a small collector endpoint of the test (`POST /v1/reports`), and the
//! per-client counts they carry — here the sequential requests API Scraper judges.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use palisade_detection::key::ClientKey;
use palisade_detection::report::Report;
use palisade_detection::stats::ClientCounts;
use palisade_sidecar::Sidecar;
use support::*;
use tokio::sync::mpsc;

/// A collector endpoint of the test: while `up` is set it accepts every report and hands it
/// to the test; while not, it answers 503 (as a collector with no leader does) and counts
/// the refusals in `refused`.
struct TestCollector {
    addr: std::net::SocketAddr,
    reports: mpsc::UnboundedReceiver<Report>,
    up: Arc<AtomicBool>,
    refused: Arc<AtomicU32>,
}

async fn collector(up: bool) -> TestCollector {
    let (tx, reports) = mpsc::unbounded_channel();
    let up = Arc::new(AtomicBool::new(up));
    let refused = Arc::new(AtomicU32::new(0));
    let (is_up, refusals) = (up.clone(), refused.clone());
    let addr = app(move |req, _| {
        let (tx, is_up, refusals) = (tx.clone(), is_up.clone(), refusals.clone());
        async move {
            assert_eq!(req.uri().path(), "/v1/reports");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if !is_up.load(Ordering::SeqCst) {
                refusals.fetch_add(1, Ordering::SeqCst);
                let resp = http::Response::builder().status(503);
                return resp.body(full("no leader; retry")).unwrap();
            }
            tx.send(Report::from_json(&body).unwrap()).unwrap();
            http::Response::builder()
                .status(202)
                .body(full(""))
                .unwrap()
        }
    })
    .await;
    TestCollector {
        addr,
        reports,
        up,
        refused,
    }
}

/// A sidecar in front of `app` that counts every request (clients by `X-Forwarded-For`) and
/// reports every `interval` to `collector`.
async fn reporting_sidecar(
    app: std::net::SocketAddr,
    collector: std::net::SocketAddr,
    interval: &str,
) -> (Sidecar, tempfile::TempDir) {
    reporting_sidecar_with(app, collector, interval, &[]).await
}

/// [`reporting_sidecar`] with `extra` flags.
async fn reporting_sidecar_with(
    app: std::net::SocketAddr,
    collector: std::net::SocketAddr,
    interval: &str,
    extra: &[&str],
) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let (addr, token) = (collector.to_string(), token.to_str().unwrap().to_owned());
    let args = [
        "--collector-addr",
        &addr,
        "--token-path",
        &token,
        "--pod-name",
        "api-0",
        "--report-interval",
        interval,
        "--trusted-proxies",
        "127.0.0.0/8",
    ];
    let args: Vec<&str> = args.iter().copied().chain(extra.iter().copied()).collect();
    (sidecar(app, &args).await, dir)
}

/// A sidecar in front of `app` reporting every 50 ms to a collector of the test that is up.
async fn counting_sidecar(
    app: std::net::SocketAddr,
) -> (Sidecar, mpsc::UnboundedReceiver<Report>, tempfile::TempDir) {
    let c = collector(true).await;
    let (sc, dir) = reporting_sidecar(app, c.addr, "50ms").await;
    (sc, c.reports, dir)
}

/// The value of a sample of the sidecar's metrics, 0 when absent.
async fn sample(sc: &Sidecar, name: &str) -> f64 {
    metrics(sc)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Per-client counts summed over the reports until `requests` requests are counted (every
/// client is an IP here).
async fn sum_reports(
    reports: &mut mpsc::UnboundedReceiver<Report>,
    requests: u32,
) -> HashMap<ClientKey, ClientCounts> {
    sum_reports_by_ip(reports, requests).await.0
}

/// Response bytes reach the counts whether the app sends a Content-Length or streams a
/// chunked body (counted as it streams).
#[tokio::test]
async fn reports_count_response_bytes_of_fixed_and_chunked_bodies() {
    let app = app(|req, _| async move {
        let body = match req.uri().path() {
            "/stream" => {
                let frames = (0..3).map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; 1000]))));
                StreamBody::new(futures::stream::iter(frames)).boxed()
            }
            _ => full(vec![b'y'; 500]),
        };
        http::Response::new(body)
    })
    .await;
    let (sc, mut reports, _dir) = counting_sidecar(app).await;
    let (mut chunked, mut fixed) = (false, false);
    for _ in 0..2 {
        let (status, headers, body) = get(
            sc.proxy_addr,
            "/stream",
            &[("x-forwarded-for", "198.51.100.1")],
        )
        .await;
        assert_eq!((status, body.len()), (200, 3000));
        chunked |= headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked");
        let (status, headers, body) = get(
            sc.proxy_addr,
            "/fixed",
            &[("x-forwarded-for", "198.51.100.2")],
        )
        .await;
        assert_eq!((status, body.len()), (200, 500));
        fixed |= headers.get("content-length").is_some_and(|v| v == "500");
    }
    assert!(chunked && fixed, "one body of each kind went through");
    let counts = sum_reports(&mut reports, 4).await;
    let of = |ip: &str| counts[&format!("ip:{ip}").parse::<ClientKey>().unwrap()];
    assert_eq!(
        (of("198.51.100.1").requests, of("198.51.100.1").bytes),
        (2, 6000)
    );
    assert_eq!(
        (of("198.51.100.2").requests, of("198.51.100.2").bytes),
        (2, 1000)
    );
}

#[tokio::test]
async fn reports_count_each_clients_sequential_requests() {
    let app = echo_app().await;
    let (sc, mut reports, _dir) = counting_sidecar(app).await;
    let client = |n: u8| format!("198.51.100.{n}");
    let mut sent: Vec<(String, String)> = Vec::new();
    for i in 1..=30u32 {
        // 1 walks the items (skipping every fifth); 2 pages through a search;
        // 3 reads random items; 4 refreshes one page.
        if i % 5 != 0 {
            sent.push((client(1), format!("/v1/items/{i}")));
        }
        sent.push((client(2), format!("/v1/search?q=lamp&page={i}")));
        sent.push((client(3), format!("/v1/items/{}", (i * 7919) % 100_000)));
        sent.push((client(4), "/v1/items/42?sort=asc".to_owned()));
    }
    for (from, target) in &sent {
        let (status, _, _) = get(sc.proxy_addr, target, &[("x-forwarded-for", from)]).await;
        assert_eq!(status, 200, "{from} {target}");
    }
    let counts = sum_reports(&mut reports, sent.len() as u32).await;
    let of = |n: u8| {
        let c = counts[&format!("ip:{}", client(n)).parse::<ClientKey>().unwrap()];
        (c.requests, c.sequential)
    };
    // 24 items: the first, and the one after each skip, still follow (step 2 ≤ 10).
    assert_eq!(of(1), (24, 23));
    assert_eq!(of(2), (30, 29));
    assert_eq!(of(3), (30, 0));
    assert_eq!(of(4), (30, 0), "a refresh is not sequential");
}

/// While the collector cannot take reports (503) the sidecar holds them and says so
/// (`reports_pending`); once it is back they are all delivered: every request is counted
/// exactly once and nothing is dropped.
#[tokio::test]
async fn reports_held_while_the_collector_is_down_are_delivered_when_it_is_back() {
    let app = echo_app().await;
    let mut c = collector(false).await;
    let (sc, _dir) = reporting_sidecar(app, c.addr, "50ms").await;
    for i in 0..20 {
        let (status, _, _) = get(
            sc.proxy_addr,
            &format!("/v1/items/{i}"),
            &[("x-forwarded-for", "198.51.100.7")],
        )
        .await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pending = "palisade_sidecar_reports_pending";
    let held = tokio::time::timeout(patience(), async {
        loop {
            let held = sample(&sc, pending).await;
            if held >= 2.0 {
                return held;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("reports held while the collector refuses them");
    assert!(
        c.refused.load(Ordering::SeqCst) > 0,
        "the collector refused"
    );
    assert!(c.reports.is_empty(), "nothing accepted while down");

    c.up.store(true, Ordering::SeqCst);
    let counts = sum_reports(&mut c.reports, 20).await;
    let ip: ClientKey = "ip:198.51.100.7".parse().unwrap();
    assert_eq!(
        counts[&ip].requests, 20,
        "{held} held reports, all delivered once"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.reports.try_recv().is_err(), "no report delivered twice");
    assert_eq!(sample(&sc, pending).await, 0.0);
    assert_eq!(
        sample(&sc, "palisade_sidecar_reports_failed_total").await,
        0.0
    );
    assert!(sample(&sc, "palisade_sidecar_reports_sent_total").await >= held);
}

/// At shutdown the counts of the current, unfinished interval are reported too.
#[tokio::test]
async fn the_last_partial_interval_is_reported_at_shutdown() {
    let app = echo_app().await;
    let mut c = collector(true).await;
    let (sc, _dir) = reporting_sidecar(app, c.addr, "1h").await;
    for _ in 0..7 {
        let (status, _, _) = get(sc.proxy_addr, "/", &[("x-forwarded-for", "198.51.100.8")]).await;
        assert_eq!(status, 200);
    }
    assert!(c.reports.is_empty(), "no interval has ended yet");
    sc.shutdown().await;
    let report = c
        .reports
        .try_recv()
        .expect("the last report, sent before shutdown returned");
    let ip: ClientKey = "ip:198.51.100.8".parse().unwrap();
    let counted: u32 = report
        .clients
        .iter()
        .filter(|e| e.key == ip)
        .map(|e| e.counts.requests)
        .sum();
    assert_eq!((report.totals.requests, u64::from(counted)), (7, 7));
}

/// Per-client counts and attributes of the reports, until the IP clients alone add up to
/// `requests` requests (each request counts once per key kind).
async fn sum_reports_by_ip(
    reports: &mut mpsc::UnboundedReceiver<Report>,
    requests: u32,
) -> (
    HashMap<ClientKey, ClientCounts>,
    Vec<palisade_detection::report::AttrEntry>,
) {
    let mut counts: HashMap<ClientKey, ClientCounts> = HashMap::new();
    let mut attrs = Vec::new();
    let by_ip = |c: &HashMap<ClientKey, ClientCounts>| -> u32 {
        c.iter()
            .filter(|(k, _)| matches!(k, ClientKey::Ip(_)))
            .map(|(_, c)| c.requests)
            .sum()
    };
    while by_ip(&counts) < requests {
        let r = tokio::time::timeout(patience(), reports.recv())
            .await
            .expect("a report within the patience")
            .unwrap();
        for e in r.clients {
            let c = counts.entry(e.key).or_default();
            c.requests += e.counts.requests;
            c.errors += e.counts.errors;
            c.sequential += e.counts.sequential;
            c.bytes += e.counts.bytes;
        }
        attrs.extend(r.attributes);
    }
    (counts, attrs)
}

/// The bundle names the client key kinds the namespace's rules judge by (a rule with
/// `clientKey: apiKey`): the sidecar counts API keys then, with their addresses and user
/// agents, and stops when a new bundle no longer asks for them.
#[tokio::test]
async fn the_bundle_decides_which_client_keys_are_counted() {
    use palisade_detection::stats::AttrDim;
    use palisade_policy::{ClientKeyKind, Inputs, Mode, RuleSpec};
    let c = collector(true).await;
    let bundles = tempfile::tempdir().unwrap();
    let by_key = |generation: u64, kind: Option<ClientKeyKind>| Inputs {
        generation,
        rules: kind
            .map(|k| RuleSpec {
                name: "brute-by-key".into(),
                paused: false,
                mode: Mode::Enforce,
                client_key: k,
            })
            .into_iter()
            .collect(),
        ..Inputs::default()
    };
    let hash = bundle::write_inputs(bundles.path(), &by_key(1, Some(ClientKeyKind::ApiKey)));
    let path = bundles.path().to_str().unwrap().to_owned();
    let app = app(|_, _| async {
        http::Response::builder()
            .status(401)
            .body(full("bad key"))
            .unwrap()
    })
    .await;
    let extra = ["--bundle-path", &path, "--bundle-poll", "20ms"];
    let (sc, _dir) = reporting_sidecar_with(app, c.addr, "50ms", &extra).await;
    wait_for_bundle(&sc, &hash).await;
    let mut reports = c.reports;
    // Let a report pass so the counter follows the bundle (it switches between slices).
    tokio::time::timeout(patience(), reports.recv())
        .await
        .unwrap();
    // One key from three addresses and two user agents; 192 requests so the 1-in-64
    // attribute sample sees each address.
    let send = |n: u32| {
        let ip = format!("198.51.100.{}", n % 3 + 1);
        let ua = if n.is_multiple_of(2) {
            "curl/8.1"
        } else {
            "python-requests/2.31"
        };
        (ip, ua)
    };
    for n in 0..192u32 {
        let (ip, ua) = send(n);
        let headers = [
            ("x-forwarded-for", ip.as_str()),
            ("x-api-key", "k-leaked"),
            ("user-agent", ua),
        ];
        let (status, _, _) = get(sc.proxy_addr, "/login", &headers).await;
        assert_eq!(status, 401);
    }
    let (counts, attrs) = sum_reports_by_ip(&mut reports, 192).await;
    let key = ClientKey::api_key("k-leaked");
    assert_eq!(
        (counts[&key].requests, counts[&key].errors),
        (192, 192),
        "{counts:?}"
    );
    let of = |dim| {
        let mut v: Vec<String> = attrs
            .iter()
            .filter(|a| a.client == key && a.dim == dim)
            .map(|a| a.value.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(of(AttrDim::Path), ["/login"]);
    let paths: u64 = attrs
        .iter()
        .filter(|a| a.client == key && a.dim == AttrDim::Path)
        .map(|a| a.count)
        .sum();
    assert_eq!(paths, 192, "3 sampled requests, each standing for 64");
    assert!(
        !of(AttrDim::Ip).is_empty(),
        "the key's addresses: {attrs:?}"
    );
    assert!(
        of(AttrDim::Ip)
            .iter()
            .all(|ip| ip.starts_with("198.51.100.")),
        "{:?}",
        of(AttrDim::Ip)
    );
    assert!(!of(AttrDim::UserAgent).is_empty(), "{attrs:?}");

    // No rule by key any more: API keys are no longer counted.
    let hash = bundle::write_inputs(bundles.path(), &by_key(2, None));
    wait_for_bundle(&sc, &hash).await;
    tokio::time::timeout(patience(), reports.recv())
        .await
        .unwrap();
    for n in 0..10u32 {
        let (ip, ua) = send(n);
        let headers = [
            ("x-forwarded-for", ip.as_str()),
            ("x-api-key", "k-leaked"),
            ("user-agent", ua),
        ];
        get(sc.proxy_addr, "/login", &headers).await;
    }
    let (counts, _) = sum_reports_by_ip(&mut reports, 10).await;
    assert!(
        counts.keys().all(|k| matches!(k, ClientKey::Ip(_))),
        "{counts:?}"
    );
}

/// A sidecar in front of `app` reporting every 50 ms to a new collector, with a bundle of one
/// enforced rule keyed by `key` (and `ipv6_prefix_len`); returns once the bundle is in force
/// and the first report arrived, with the collector's report stream.
async fn sidecar_with_rule(
    app: std::net::SocketAddr,
    key: palisade_policy::ClientKeyKind,
    ipv6_prefix_len: Option<u8>,
) -> (
    Sidecar,
    Vec<tempfile::TempDir>,
    mpsc::UnboundedReceiver<Report>,
) {
    use palisade_policy::{Inputs, Mode, RuleSpec};
    let inputs = Inputs {
        generation: 1,
        rules: vec![RuleSpec {
            name: "the-rule".into(),
            paused: false,
            mode: Mode::Enforce,
            client_key: key,
        }],
        ipv6_prefix_len,
        ..Inputs::default()
    };
    sidecar_with_bundle(app, &inputs).await
}

/// A sidecar in front of `app` reporting every 50 ms to a new collector, with the bundle of
/// `inputs`; returns once the bundle is in force and the first report arrived, with the
/// collector's report stream.
async fn sidecar_with_bundle(
    app: std::net::SocketAddr,
    inputs: &palisade_policy::Inputs,
) -> (
    Sidecar,
    Vec<tempfile::TempDir>,
    mpsc::UnboundedReceiver<Report>,
) {
    let c = collector(true).await;
    let bundles = tempfile::tempdir().unwrap();
    let hash = bundle::write_inputs(bundles.path(), inputs);
    let path = bundles.path().to_str().unwrap().to_owned();
    let extra = ["--bundle-path", &path, "--bundle-poll", "20ms"];
    let (sc, dir) = reporting_sidecar_with(app, c.addr, "50ms", &extra).await;
    wait_for_bundle(&sc, &hash).await;
    let mut reports = c.reports;
    tokio::time::timeout(patience(), reports.recv())
        .await
        .unwrap();
    (sc, vec![dir, bundles], reports)
}

/// A rule with `clientKey: ipPrefix` and the namespace's prefix length in the bundle: the
/// sidecar counts each IPv6 /56 (here) as one client, whatever address of it a request
/// came from, and IPv4 clients by address.
#[tokio::test]
async fn the_bundle_sets_the_ipv6_prefix_clients_are_counted_by() {
    use palisade_policy::ClientKeyKind;
    let (sc, _dirs, mut reports) =
        sidecar_with_rule(echo_app().await, ClientKeyKind::IpPrefix, Some(56)).await;
    let from = [
        "2001:db8:1:2::1",
        "2001:db8:1:2:aaaa::9",
        "2001:db8:1:ff::1",
        "2001:db8:1:100::1",
        "198.51.100.7",
    ];
    for ip in from {
        let (status, _, _) = get(sc.proxy_addr, "/", &[("x-forwarded-for", ip)]).await;
        assert_eq!(status, 200);
    }
    let (counts, _) = sum_reports_by_ip(&mut reports, from.len() as u32).await;
    let mut prefixes: Vec<String> = counts
        .iter()
        .filter(|(k, _)| k.kind() == ClientKeyKind::IpPrefix)
        .map(|(k, c)| format!("{k} {}", c.requests))
        .collect();
    prefixes.sort();
    assert_eq!(
        prefixes,
        [
            "prefix:198.51.100.7/32 1",
            "prefix:2001:db8:1:100::/56 1",
            "prefix:2001:db8:1::/56 3",
        ]
    );
}

/// A client connection keeps the hash of its last user agent (and API key): a client that
/// switches `User-Agent` back and forth on one keep-alive connection is counted under each
/// request's own user agent, never the connection's previous one.
#[tokio::test]
async fn a_connection_switching_user_agents_is_counted_under_each() {
    use palisade_policy::ClientKeyKind;
    let app = app(|_, _| async { http::Response::new(full("ok")) }).await;
    let (sc, _dirs, mut reports) = sidecar_with_rule(app, ClientKeyKind::UserAgent, None).await;
    // Same-length agents too, so no comparison of lengths could pass for the memo's.
    let agents = [
        "curl/8.1",
        "curl/8.2",
        "curl/8.1",
        "python-requests/2",
        "curl/8.1",
        "curl/8.2",
    ];
    let mut conn = h1(sc.proxy_addr).await;
    for round in 0..5 {
        for ua in agents {
            let req = http::Request::get(format!("/r{round}"))
                .header("host", "api.example")
                .header("user-agent", ua)
                .body(full(""))
                .unwrap();
            assert_eq!(send(&mut conn, req).await.0, 200);
        }
    }
    let (counts, _) = sum_reports_by_ip(&mut reports, 30).await;
    let of = |ua: &str| {
        counts
            .get(&ClientKey::user_agent(ua))
            .map_or(0, |c| c.requests)
    };
    assert_eq!(
        (of("curl/8.1"), of("curl/8.2"), of("python-requests/2")),
        (15, 10, 5),
        "{counts:?}"
    );
}

/// What a holding application saw of one request: the request arrived, then its connection
/// closed.
#[derive(Debug, PartialEq)]
enum Seen {
    Request,
    Closed,
}

/// An application of raw TCP that reads each request (head and `Content-Length` body) and
/// never answers: it reports the request, then reports when the sidecar closes the
/// connection (a read of 0 bytes, or an error).
async fn holding_app() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let whole = |got: &[u8]| {
                    let text = String::from_utf8_lossy(got).to_ascii_lowercase();
                    let Some(end) = text.find("\r\n\r\n") else {
                        return false;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                    got.len() >= end + 4 + length
                };
                while !whole(&got) {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                tx.send(Seen::Request).unwrap();
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                tx.send(Seen::Closed).unwrap();
            });
        }
    });
    (addr, seen)
}

/// Clients that leave while their request is at the application — a GET and a POST whose
/// body was sent whole, each closing its connection, and a GET whose client shuts down only
/// its sending side (nginx takes that for leaving too) — are let go: the sidecar drops each
/// request, the application sees its connection close, and each request is still counted
/// for detection (a request the application was asked, no error) and in the metrics as
/// `abandoned`. A client that never waits for its answers is no cheaper to count.
#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_let_go_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (app, mut seen) = holding_app().await;
    let (sc, mut reports, _dir) = counting_sidecar(app).await;
    let requests = [
        "GET /v1/slow HTTP/1.1\r\nHost: api\r\nX-Forwarded-For: 198.51.100.21\r\n\r\n",
        "POST /v1/slow HTTP/1.1\r\nHost: api\r\nX-Forwarded-For: 198.51.100.22\r\n\
         Content-Length: 5\r\n\r\nhello",
        "GET /v1/slow HTTP/1.1\r\nHost: api\r\nX-Forwarded-For: 198.51.100.23\r\n\r\n",
    ];
    for (i, request) in requests.iter().enumerate() {
        let mut client = tokio::net::TcpStream::connect(sc.proxy_addr).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        let arrived = tokio::time::timeout(patience(), seen.recv()).await.unwrap();
        assert_eq!(
            arrived,
            Some(Seen::Request),
            "request {i} at the application"
        );
        if i == 2 {
            // Half-closed: the client could still read, and gets nothing.
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            tokio::time::timeout(patience(), client.read_to_end(&mut rest))
                .await
                .expect("the sidecar closes the connection")
                .unwrap();
            assert_eq!(rest, b"", "no answer to a client taken for gone");
        } else {
            drop(client);
        }
        let closed = tokio::time::timeout(patience(), seen.recv())
            .await
            .expect("the application sees the request dropped");
        assert_eq!(closed, Some(Seen::Closed), "request {i}");
    }
    let (counts, attrs) = sum_reports_by_ip(&mut reports, 3).await;
    for n in 21..=23 {
        let c = counts[&format!("ip:198.51.100.{n}").parse::<ClientKey>().unwrap()];
        assert_eq!((c.requests, c.errors, c.bytes), (1, 0, 0), "198.51.100.{n}");
    }
    // The first request is the one in 64 whose attributes are sampled: its status is 499.
    let first: ClientKey = "ip:198.51.100.21".parse().unwrap();
    let code = |a: &&palisade_detection::report::AttrEntry| {
        a.client == first && a.dim == palisade_detection::stats::AttrDim::ResponseCode
    };
    let codes: Vec<&str> = attrs
        .iter()
        .filter(code)
        .map(|a| a.value.as_str())
        .collect();
    assert_eq!(codes, ["499"], "{attrs:?}");
    let abandoned = r#"palisade_sidecar_requests_total{verdict="abandoned"}"#;
    assert_eq!(sample(&sc, abandoned).await, 3.0);
}

/// An HTTP/2 client that resets its stream while the application works is let go and counted
/// the same way (the stream's request is dropped when the reset arrives), and so is a request
/// the application fails (a 502 when nothing listens, the app's error): no way of ending a
/// request sent to the application keeps it out of the counts.
#[tokio::test]
async fn reset_streams_and_failed_exchanges_are_counted() {
    let (app, mut seen) = holding_app().await;
    let (sc, mut reports, _dir) = counting_sidecar(app).await;
    let mut sender = h2(sc.proxy_addr).await;
    for _ in 0..2 {
        let req = http::Request::get("http://api/v1/slow")
            .header("x-forwarded-for", "198.51.100.31")
            .body(full(""))
            .unwrap();
        let pending = sender.send_request(req);
        // The request is at the application; dropping its future resets the stream.
        let arrived = tokio::select! {
            seen = tokio::time::timeout(patience(), seen.recv()) => seen.unwrap(),
            _ = pending => panic!("the application never answers"),
        };
        assert_eq!(arrived, Some(Seen::Request));
        let closed = tokio::time::timeout(patience(), seen.recv())
            .await
            .expect("the application sees the request dropped");
        assert_eq!(closed, Some(Seen::Closed));
    }
    let counts = sum_reports(&mut reports, 2).await;
    let c = counts[&"ip:198.51.100.31".parse::<ClientKey>().unwrap()];
    assert_eq!((c.requests, c.errors), (2, 0));
    let abandoned = r#"palisade_sidecar_requests_total{verdict="abandoned"}"#;
    assert_eq!(sample(&sc, abandoned).await, 2.0);

    // Nothing listens where this sidecar sends: each request is the application's 502.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = gone.local_addr().unwrap();
    drop(gone);
    let (sc, mut reports, _dir) = counting_sidecar(nowhere).await;
    for _ in 0..3 {
        let (status, _, _) = get(sc.proxy_addr, "/", &[("x-forwarded-for", "198.51.100.32")]).await;
        assert_eq!(status, 502);
    }
    let counts = sum_reports(&mut reports, 3).await;
    let c = counts[&"ip:198.51.100.32".parse::<ClientKey>().unwrap()];
    assert_eq!((c.requests, c.errors), (3, 3), "the application's errors");
}

/// A client that leaves while a rate limit's tarpit holds its 429 was denied all the same:
/// the request is counted before the hold starts, as a request and never as an error, and
/// the hold ends with the client (the request's metric says `abandoned`).
#[tokio::test]
async fn a_client_that_leaves_a_tarpit_is_counted() {
    use palisade_policy::{ClientKeyKind, Inputs, RateLimit, Verb};
    let limit = Verb::RateLimit(RateLimit {
        requests: 1,
        period_s: 60,
        burst: 0,
        by: ClientKeyKind::Ip,
        tarpit_ms: 10_000,
        pods: 1,
    });
    let all = bundle::when(|c| c.ip_ranges = vec!["0.0.0.0/0".into()]);
    let inputs = Inputs {
        generation: 1,
        actions: vec![bundle::action("held", limit, all)],
        ..Inputs::default()
    };
    let (sc, _dirs, mut reports) = sidecar_with_bundle(echo_app().await, &inputs).await;
    let client = [("x-forwarded-for", "198.51.100.41")];
    assert_eq!(get(sc.proxy_addr, "/a", &client).await.0, 200);
    // The second request is over the limit: its 429 is held for ten seconds (the most a
    // tarpit holds), and the client
    // does not wait for it.
    let held = get(sc.proxy_addr, "/a", &client);
    let waited = tokio::time::timeout(Duration::from_millis(300), held).await;
    assert!(waited.is_err(), "the 429 is held");
    let counts = sum_reports(&mut reports, 2).await;
    let c = counts[&"ip:198.51.100.41".parse::<ClientKey>().unwrap()];
    assert_eq!((c.requests, c.errors), (2, 0));
    let abandoned = r#"palisade_sidecar_requests_total{verdict="abandoned"}"#;
    let t0 = std::time::Instant::now();
    while sample(&sc, abandoned).await != 1.0 {
        assert!(
            t0.elapsed() < patience(),
            "the hold never ended with its client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request the sidecar cannot send to the application (HTTP/1.1 with no `Host`, which it
/// answers 400 itself) is still counted for detection, as a request of its client and not
/// as the application's error.
#[tokio::test]
async fn a_request_the_sidecar_refuses_to_send_is_counted_as_its_own_answer() {
    let (sc, mut reports, _dir) = counting_sidecar(echo_app().await).await;
    for _ in 0..3 {
        let head = raw(
            sc.proxy_addr,
            b"GET /v1/items HTTP/1.1\r\nX-Forwarded-For: 198.51.100.42\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    }
    let counts = sum_reports(&mut reports, 3).await;
    let c = counts[&"ip:198.51.100.42".parse::<ClientKey>().unwrap()];
    assert_eq!((c.requests, c.errors), (3, 0), "the sidecar's own answers");
}
