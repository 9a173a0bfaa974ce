//! Counting for detection inside one process: real requests through the sidecar, its
//! reports received by a small collector endpoint of the test (`POST /v1/reports`), and the
//! per-client counts they carry — here the sequential requests API Scraper judges.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::BodyExt;
use palisade_detection::key::ClientKey;
use palisade_detection::report::Report;
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

#[tokio::test]
async fn reports_count_each_clients_sequential_requests() {
    let (collector, mut reports) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let app = echo_app().await;
    let (addr, token) = (collector.to_string(), token.to_str().unwrap().to_owned());
    let sc = sidecar(
        app,
        &[
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
        ],
    )
    .await;
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
    // Sum the reports until every request is counted.
    let mut counts: HashMap<ClientKey, (u32, u32)> = HashMap::new();
    while counts.values().map(|c| c.0).sum::<u32>() < sent.len() as u32 {
        let r = tokio::time::timeout(Duration::from_secs(10), reports.recv())
            .await
            .expect("a report within 10 s")
            .unwrap();
        for e in r.clients {
            let c = counts.entry(e.key).or_default();
            c.0 += e.counts.requests;
            c.1 += e.counts.sequential;
        }
    }
    let of = |n: u8| counts[&format!("ip:{}", client(n)).parse::<ClientKey>().unwrap()];
    // 24 items: the first, and the one after each skip, still follow (step 2 ≤ 10).
    assert_eq!(of(1), (24, 23));
    assert_eq!(of(2), (30, 29));
    assert_eq!(of(3), (30, 0));
    assert_eq!(of(4), (30, 0), "a refresh is not sequential");
}
