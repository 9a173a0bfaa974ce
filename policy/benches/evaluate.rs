//! Whole-decision benchmark: a 1M-prefix list plus 1000 actions of every condition kind.
//! `cargo bench -p palisade-policy --bench evaluate`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_policy::{
    ActionSpec, CompiledPolicy, Conditions, Header, Inputs, ListRef, Mode, PathMatch, Request,
    Verb, compile, evaluate,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn action(i: usize, conditions: Conditions) -> ActionSpec {
    let verb = match i % 3 {
        0 => Verb::Deny {
            status: 403,
            body: "no".into(),
            content_type: "text/plain".into(),
        },
        1 => Verb::Flag {
            headers: vec![Header {
                name: "x-flag".into(),
                value: i.to_string(),
            }],
        },
        _ => Verb::Allow,
    };
    ActionSpec {
        name: format!("action-{i:04}"),
        verb,
        mode: if i % 10 == 9 {
            Mode::Observe
        } else {
            Mode::Enforce
        },
        conditions,
        match_all: false,
        workload_selector: None,
        paused: false,
        expire_time: None,
    }
}

fn inputs() -> Inputs {
    let mut rng = Rng(42);
    let big = ListRef {
        config_map: "threats".into(),
        key: "v4".into(),
    };
    let text: String = (0..1_000_000)
        .map(|i| {
            let ip = Ipv4Addr::from(rng.next() as u32);
            let len = [32, 32, 32, 32, 32, 32, 32, 24, 24, 20][i % 10];
            format!("{ip}/{len}\n")
        })
        .collect();
    let mut actions = vec![action(
        0,
        Conditions {
            ip_lists: vec![big.clone()],
            ..Default::default()
        },
    )];
    for i in 1..1000 {
        let mut c = Conditions::default();
        match i % 8 {
            0 => c.ip_ranges = vec![format!("{}/24", Ipv4Addr::from(rng.next() as u32))],
            1 => c.region_codes = vec![["DE", "FR", "US", "CN", "RU"][i % 5].into()],
            2 => c.asns = vec![64_500 + (i as u32 % 100)],
            3 => c.user_agents = vec![format!("bot-{i}")],
            4 => {
                c.http_methods = vec!["POST".into()];
                c.paths = vec![PathMatch::Prefix(format!("/api/{}", i % 50))];
            }
            5 => c.api_keys = vec![format!("sha256:{:064x}", i)],
            6 => {
                c.region_codes = vec!["US".into()];
                c.ip_ranges = vec![format!("{}/16", Ipv4Addr::from(rng.next() as u32))];
            }
            _ => c.developer_apps = vec![format!("app-{}", i % 40)],
        }
        actions.push(action(i, c));
    }
    Inputs {
        actions,
        lists: [(big, text)].into(),
        ..Default::default()
    }
}

/// Nanoseconds this thread has spent on a CPU (not waiting on a loaded machine).
fn on_cpu() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
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

    let mut rng = Rng(7);
    let uas: Vec<String> = (0..64).map(|i| format!("bot-{}", i * 8 + 3)).collect();
    let apps: Vec<String> = (0..64).map(|i| format!("app-{i}")).collect();
    let paths: Vec<String> = (0..64).map(|i| format!("/api/{i}/items")).collect();
    let reqs: Vec<(u32, usize)> = (0..4096)
        .map(|_| (rng.next() as u32, rng.next() as usize))
        .collect();
    let make = |i: usize| {
        let (ip, r) = reqs[i & 4095];
        Request {
            region: Some([*b"DE", *b"US", *b"BR", *b"FR"][r % 4]),
            asn: Some(64_500 + (r % 200) as u32),
            user_agent: Some(uas[r % 64].as_str()),
            app: Some(apps[(r >> 8) % 64].as_str()),
            ..Request::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                if r % 2 == 0 { "GET" } else { "POST" },
                paths[(r >> 4) % 64].as_str(),
            )
        }
    };
    if let Some(start) = on_cpu() {
        let n = 2_000_000;
        let mut denied = 0usize;
        for i in 0..n {
            let v = evaluate(&policy, black_box(&make(i)));
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
            let (ip, r) = reqs[i];
            let req = Request {
                region: Some([*b"DE", *b"US", *b"BR", *b"FR"][r % 4]),
                asn: Some(64_500 + (r % 200) as u32),
                user_agent: Some(uas[r % 64].as_str()),
                app: Some(apps[(r >> 8) % 64].as_str()),
                ..Request::new(
                    IpAddr::V4(Ipv4Addr::from(ip)),
                    if r % 2 == 0 { "GET" } else { "POST" },
                    paths[(r >> 4) % 64].as_str(),
                )
            };
            black_box(evaluate(&policy, black_box(&req)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
