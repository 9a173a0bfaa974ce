//! Cost of building the collector's window views, which the leader does for every namespace
//! each `--detection-interval`: the 24 h view merges up to 96 slices of up to 20,000 clients.
//! Views are built again and again within a slice, as the leader does (the sums of closed
//! slices are kept between them). And the collector's cost of one maximal report (the most a
//! hostile sender can make it do per request): parsing it and merging it into the windows.
//! Run with `cargo bench -p palisade-detection --bench window`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use palisade_detection::key::ClientKey;
use palisade_detection::report::{ClientEntry, REPORT_VERSION, Report, SidecarId};
use palisade_detection::stats::{ClientCounts, Totals};
use palisade_detection::window::{WindowConfig, Windows};

/// One report per long slice for 24 h, each with `clients` clients (the same ones in every
/// slice: a steady population, the common case): 97 slices hold them (the 96 long ones and
/// the current short one).
fn filled(clients: u32) -> (Windows, Timestamp) {
    filled_with(clients, |i| {
        ClientKey::Ip(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)))
    })
}

/// Slices holding each client: the 96 long slices and the current short one.
const SLICES: usize = 97;

/// [`filled`] with the clients `key` makes.
fn filled_with(clients: u32, key: impl Fn(u32) -> ClientKey) -> (Windows, Timestamp) {
    let cfg = WindowConfig::default();
    let mut w = Windows::new(&cfg);
    let base: Timestamp = "2026-11-26T00:00:00Z".parse().expect("timestamp");
    let slice = cfg.long_slice;
    let n = cfg.long_slices as i32;
    let now = base + slice * (n - 1) + SignedDuration::from_secs(1);
    let entries: Vec<ClientEntry> = (0..clients)
        .map(|i| ClientEntry {
            key: key(i),
            counts: ClientCounts {
                requests: 3,
                ..Default::default()
            },
        })
        .collect();
    for s in 0..n {
        let start = base + slice * s;
        let report = Report {
            version: REPORT_VERSION,
            sidecar: SidecarId {
                pod: "api-0".into(),
                workload: "api".into(),
                namespace: "shop".into(),
            },
            seq: u64::try_from(s).expect("positive") + 1,
            start,
            end: start + SignedDuration::from_secs(1),
            totals: Totals {
                requests: u64::from(clients) * 3,
                ..Default::default()
            },
            clients: entries.clone(),
            attributes: vec![],
            evicted: 0,
            actions: Vec::new(),
            generation: None,
            samples: Vec::new(),
        };
        w.merge(&report, now);
    }
    (w, now)
}

#[allow(
    clippy::print_stdout,
    reason = "bench/bench.py copies the memory lines"
)]
fn views(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    for clients in [10, 1_000, 20_000] {
        let (w, now) = filled(clients);
        assert_eq!(w.long(now).clients.len(), clients as usize);
        let _ = w.short(now);
        print_memory(&format!("windows_{clients}_clients"), &w, clients);
        g.bench_function(format!("long_96_slices_{clients}_clients"), |b| {
            b.iter(|| black_box(w.long(black_box(now))));
        });
        g.bench_function(format!("short_10_slices_{clients}_clients"), |b| {
            b.iter(|| black_box(w.short(black_box(now))));
        });
    }
    g.finish();
}

#[allow(
    clippy::print_stdout,
    reason = "bench/bench.py copies the memory lines"
)]
fn print_memory(name: &str, w: &Windows, clients: u32) {
    let mem = w.memory();
    println!(
        "memory {name}: slices {} B, kept view sums {} B, client keys {} B = {:.0} B/client, \
         {:.1} B per client per slice",
        mem.slices,
        mem.views,
        mem.keys,
        (mem.slices + mem.views + mem.keys) as f64 / f64::from(clients),
        (mem.slices + mem.keys) as f64 / (f64::from(clients) * SLICES as f64)
    );
}

/// The memory of windows whose clients are API keys (each one's full key is held once per
/// namespace, besides its id in each slice).
/// And the cost of their views: each id is read back through the table of full keys.
fn hashed_clients(c: &mut Criterion) {
    let clients = 20_000;
    let (w, now) = filled_with(clients, |i| ClientKey::api_key(&format!("key-{i}")));
    assert_eq!(w.long(now).clients.len(), clients as usize);
    let _ = w.short(now);
    print_memory(&format!("windows_{clients}_api_key_clients"), &w, clients);
    let mut g = c.benchmark_group("window");
    g.bench_function(format!("long_96_slices_{clients}_api_key_clients"), |b| {
        b.iter(|| black_box(w.long(black_box(now))));
    });
    // The first view of a new slice sums every closed slice again (every 15 min).
    g.sample_size(10);
    g.bench_function(
        format!("long_96_slices_{clients}_api_key_clients_summed_afresh"),
        |b| {
            b.iter_batched(
                || {
                    let mut w = w.clone();
                    w.clear_kept_sums();
                    w
                },
                |w| black_box(w.long(black_box(now))),
                criterion::BatchSize::PerIteration,
            );
        },
    );
    g.finish();
}

#[allow(clippy::print_stdout, reason = "bench/bench.py copies the size line")]
fn ingest(c: &mut Criterion) {
    let cfg = WindowConfig::default();
    let now: Timestamp = "2026-11-26T12:00:00Z".parse().expect("timestamp");
    let body = Report::maximal("shop", "fake-0", 0, now).to_json();
    println!("size maximal_report: {} bytes of JSON", body.len());
    let mut g = c.benchmark_group("window");
    g.sample_size(20);
    // Parsed and merged into windows that have not seen its clients (each has a fresh
    // window: the worst case, every client a new entry).
    g.bench_function("ingest_maximal_report", |b| {
        b.iter_batched(
            || Windows::new(&cfg),
            |mut w| {
                let report = Report::from_json(black_box(&body)).expect("a valid report");
                black_box(w.merge(&report, now));
                w
            },
            criterion::BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, views, hashed_clients, ingest);
criterion_main!(benches);
