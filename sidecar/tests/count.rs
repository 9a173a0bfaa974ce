//! Counting for detection inside one process: real requests through the sidecar, its
//! reports received by a small collector endpoint of the test (`POST /v1/reports`), and the
//! per-client counts they carry — here the sequential requests API Scraper judges.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
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

/// A collector endpoint that accepts every report and hands it to the test.
async fn collector() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Report>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = app(move |req, _| {
        let tx = tx.clone();
        async move {
            assert_eq!(req.uri().path(), "/v1/reports");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            tx.send(Report::from_json(&body).unwrap()).unwrap();
            http::Response::builder()
                .status(202)
                .body(full(""))
                .unwrap()
        }
    })
    .await;
    (addr, rx)
}

/// A sidecar in front of `app` that counts every request (clients by `X-Forwarded-For`) and
/// reports every 50 ms to a collector endpoint of the test.
async fn counting_sidecar(
    app: std::net::SocketAddr,
) -> (Sidecar, mpsc::UnboundedReceiver<Report>, tempfile::TempDir) {
    let (collector, reports) = collector().await;
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
        "50ms",
        "--trusted-hops",
        "1",
    ];
    (sidecar(app, &args).await, reports, dir)
}

/// Per-client counts summed over the reports until `requests` requests are counted.
async fn sum_reports(
    reports: &mut mpsc::UnboundedReceiver<Report>,
    requests: u32,
) -> HashMap<ClientKey, ClientCounts> {
    let mut counts: HashMap<ClientKey, ClientCounts> = HashMap::new();
    while counts.values().map(|c| c.requests).sum::<u32>() < requests {
        let r = tokio::time::timeout(Duration::from_secs(10), reports.recv())
            .await
            .expect("a report within 10 s")
            .unwrap();
        for e in r.clients {
            let c = counts.entry(e.key).or_default();
            c.requests += e.counts.requests;
            c.sequential += e.counts.sequential;
            c.bytes += e.counts.bytes;
        }
    }
    counts
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
