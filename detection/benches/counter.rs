//! Cost of `Counter::record`, the per-request accounting on the sidecar's request path.
//! Goal (issue 8, P9): ≤ 50 ns per request, ≤ 128 B per tracked client (printed after each
//! case as `memory <case>: … B/client`). Run with
//! `cargo bench -p palisade-detection --bench counter`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use palisade_detection::counter::{Counter, CounterConfig};
use palisade_detection::facts::RequestFacts;
use palisade_detection::key::{ClientKeyKind, KeyHash};
use palisade_detection::report::SidecarId;
use palisade_detection::sequence::PathShape;

/// Client ids of `n` requests from `clients` distinct IPs with a skewed (roughly Zipf)
/// popularity. Facts are built per request from these ids, on the stack, as the sidecar
/// does; a pre-built array of facts would measure memory bandwidth instead.
fn client_ids(n: usize, clients: u32) -> Vec<u32> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Squaring a uniform draw skews towards small ids: a few heavy clients.
            let u = (x % 1_000_000) as f64 / 1_000_000.0;
            (u * u * f64::from(clients)) as u32
        })
        .collect()
}

fn facts(i: usize, id: u32, keys: &[KeyHash]) -> RequestFacts<'static> {
    let mut f = RequestFacts::new(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + id)), 200);
    f.bytes = 1024;
    f.status = if i.is_multiple_of(50) { 404 } else { 200 };
    f.api_key = Some(keys[id as usize % keys.len()]);
    f.access_token = Some(keys[(id as usize + 1) % keys.len()]);
    f.user_agent = Some(keys[id as usize % 3]);
    f.attrs.path = Some("/items");
    // Every client walks the same collection: the sequential check compares each request
    // with the client's previous one (one table lookup per key kind).
    f.shape = Some(PathShape {
        shape: 0x5EC0,
        number: i as u64,
    });
    f
}

fn id() -> SidecarId {
    SidecarId {
        pod: "api-0".into(),
        workload: "api".into(),
        namespace: "bench".into(),
    }
}

#[allow(clippy::print_stdout, reason = "bench/bench.py reads the memory line")]
fn bench_case(c: &mut Criterion, name: &str, cfg: CounterConfig, clients: u32) {
    let ids = client_ids(1 << 16, clients);
    let keys: Vec<KeyHash> = (0..64u32).map(|i| KeyHash::of(&i.to_le_bytes())).collect();
    let now = Timestamp::UNIX_EPOCH;
    let mut counter = Counter::new(id(), &cfg, now);
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            for (i, id) in ids.iter().enumerate() {
                counter.record(&facts(i, black_box(*id), &keys));
            }
            // One report per batch, like the sidecar's 1 s tick.
            black_box(counter.take_report(now));
        })
    });
    group.finish();
    // Memory with one batch's clients tracked (the maps keep their size across slices).
    for (i, id) in ids.iter().enumerate() {
        counter.record(&facts(i, *id, &keys));
    }
    let (m, n) = (counter.memory(), counter.tracked());
    println!(
        "memory {name}: client maps {} bytes for {n} tracked keys = {:.0} B/client; \
         attributes {} bytes; sequence table {} bytes",
        m.client_maps,
        m.client_maps as f64 / n.max(1) as f64,
        m.attributes,
        m.sequence
    );
}

fn record(c: &mut Criterion) {
    bench_case(c, "ip_10k_clients", CounterConfig::default(), 10_000);
    let no_attrs = CounterConfig {
        attr_sample: u32::MAX,
        ..Default::default()
    };
    bench_case(c, "ip_10k_clients_no_attrs", no_attrs, 10_000);
    let all = CounterConfig {
        key_kinds: ClientKeyKind::ALL.to_vec(),
        ..Default::default()
    };
    bench_case(c, "all_kinds_10k_clients", all, 10_000);
    let exact = CounterConfig {
        max_clients: 16_384,
        ..Default::default()
    };
    bench_case(c, "ip_10k_clients_exact", exact, 10_000);
    let small = CounterConfig {
        max_clients: 1024,
        ..Default::default()
    };
    bench_case(c, "ip_100k_clients_bounded_1k", small, 100_000);
}

criterion_group!(benches, record);
criterion_main!(benches);
