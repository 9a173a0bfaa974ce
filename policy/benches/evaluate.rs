//! Whole-decision benchmark: a 1M-prefix list plus 1000 actions of every condition kind —
//! the workload of `make bench` ([`palisade_policy::synthetic`]).
//! `cargo bench -p palisade-policy --bench evaluate`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_policy::synthetic::{self, RequestMix};
use palisade_policy::{CompiledPolicy, compile, evaluate};

/// Nanoseconds this thread has spent on a CPU (not waiting on a loaded machine).
fn on_cpu() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn bench(c: &mut Criterion) {
    let list = synthetic::v4_prefixes(1_000_000, 0x1234_5678)
        .collect::<Vec<_>>()
        .join("\n");
    let inputs = synthetic::inputs(list, 1000);
    let now = "2026-01-01T00:00:00Z".parse().expect("timestamp");
    if let Some(start) = on_cpu() {
        black_box(compile(&inputs, now));
        let ms = on_cpu().map(|end| (end - start) as f64 / 1e6);
        eprintln!("compile (1000 actions, 1M-line list) on-CPU ms: {ms:.0?}");
    }
    let mut g = c.benchmark_group("evaluate_1000_actions_1M_prefixes");
    g.sample_size(10);
    g.bench_function("compile", |b| b.iter(|| compile(black_box(&inputs), now)));
    let out = compile(&inputs, now);
    assert_eq!(out.bundle.actions.len(), 1000);
    g.bench_function("load_for_workload", |b| {
        b.iter(|| CompiledPolicy::new(out.bundle.clone(), &BTreeMap::new()))
    });
    g.finish();
    let policy = CompiledPolicy::new(out.bundle, &BTreeMap::new());

    let mix = RequestMix::default();
    if let Some(start) = on_cpu() {
        let n = 2_000_000;
        let mut denied = 0usize;
        for i in 0..n {
            let v = evaluate(&policy, black_box(&mix.request(i)));
            denied += usize::from(matches!(v.decision, palisade_policy::Decision::Deny(_)));
        }
        let per = on_cpu().map(|end| (end - start) as f64 / n as f64);
        eprintln!("evaluate on-CPU ns/request: {per:.0?} ({denied} of {n} denied)");
    }
    let mut g = c.benchmark_group("evaluate_1000_actions_1M_prefixes");
    g.bench_function("evaluate", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 4095;
            let req = mix.request(i);
            black_box(evaluate(&policy, black_box(&req)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
