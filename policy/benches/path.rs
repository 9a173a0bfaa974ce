//! Path normalisation on the request path: what a normal path (the common case: one scan,
//! no allocation) and a path that needs rewriting cost.
//! `cargo bench -p palisade-policy --bench path`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_policy::path::{EscapedSlashes, normalize, without_params};

/// Nanoseconds this thread has spent on a CPU (not waiting on a loaded machine).
fn on_cpu() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn run(path: &str) -> usize {
    let n = normalize(black_box(path), EscapedSlashes::Reject).expect("accepted");
    without_params(&n).len()
}

fn bench(c: &mut Criterion) {
    let long = format!("/api/v1{}/items/42", "/segment".repeat(24));
    let cases = [
        ("normal_short", "/api/v1/items/42".to_owned()),
        ("normal_long_200b", long),
        ("rewritten", "//api/./v1/x/../%69tems;p=1/42/".to_owned()),
    ];
    for (name, path) in &cases {
        const N: u64 = 1_000_000;
        if let Some(start) = on_cpu() {
            (0..N).for_each(|_| {
                black_box(run(path));
            });
            let ns = on_cpu().map(|end| (end - start) as f64 / N as f64);
            eprintln!("{name} ({} bytes) on-CPU ns/path: {ns:.1?}", path.len());
        }
    }
    let mut g = c.benchmark_group("path_normalize");
    for (name, path) in &cases {
        g.bench_function(*name, |b| b.iter(|| run(path)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
