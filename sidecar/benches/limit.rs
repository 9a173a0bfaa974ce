//! The rate limiter on the request path (`src/limit.rs`): what one check costs for a client
//! that keeps its cell, for many clients spread over a full table (cache misses), and for four
//! threads on one client (compare-and-swap contention); and the memory per tracked client.
//! `cargo bench -p palisade-sidecar --bench limit`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_policy::{ClientKeyKind, RateLimit};
use palisade_sidecar::limit::{DEFAULT_CELLS, Table};
use prometheus_client::metrics::counter::Counter;

fn limit() -> RateLimit {
    // High enough that nothing is limited: every check is a full update.
    RateLimit {
        requests: 1_000_000,
        period_s: 1,
        burst: 1000,
        by: ClientKeyKind::Ip,
        tarpit_ms: 0,
        pods: 1,
    }
}

fn bench(c: &mut Criterion) {
    let table = Table::new(DEFAULT_CELLS, ClientKeyKind::Ip, Counter::default());
    eprintln!(
        "memory: {} cells, {} bytes, 8 bytes per tracked client",
        table.len(),
        table.len() * 8
    );
    let l = limit();
    let mut g = c.benchmark_group("rate_limit");
    let key = [0u8, 0, 192, 0, 2, 7];
    g.bench_function("one_client", |b| {
        b.iter(|| table.check(&l, black_box(&key), Instant::now()))
    });
    // 50,000 clients (three quarters of the default table) in turn.
    let keys: Vec<[u8; 6]> = (0..50_000u32)
        .map(|i| {
            let o = i.to_be_bytes();
            [0, 0, 10, o[1], o[2], o[3]]
        })
        .collect();
    let mut i = 0;
    g.bench_function("50k_clients_in_turn", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            table.check(&l, black_box(&keys[i]), Instant::now())
        })
    });
    g.finish();
    // Four threads hammering one client: the cost of contention on one cell.
    let shared = Arc::new(Table::new(
        DEFAULT_CELLS,
        ClientKeyKind::Ip,
        Counter::default(),
    ));
    const N: u32 = 250_000;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (t, l) = (shared.clone(), l.clone());
            s.spawn(move || {
                for _ in 0..N {
                    black_box(t.check(&l, &key, Instant::now()));
                }
            });
        }
    });
    let per = t0.elapsed() / (4 * N);
    eprintln!(
        "contended: 4 threads on one client: {} ns per check (wall / checks)",
        per.as_nanos()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
