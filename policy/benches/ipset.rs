//! IP set benchmarks at 1M prefixes: IPv4 and IPv6 lookup (independent and dependent chains),
//! build, and bundle encode/decode. `cargo bench -p palisade-policy --bench ipset`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use palisade_policy::{
    ActionId, Bundle, BundleAction, BundleConditions, IpSet, IpSetBuilder, Mode, PrefixList, Verb,
    decode, encode,
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

/// 70 % /32, 20 % /24, 10 % /16–/23 (the distribution of notes/performance-anchors.md).
fn v4_prefixes(n: usize) -> Vec<IpNet> {
    let mut rng = Rng(0x1234_5678);
    (0..n)
        .map(|_| {
            let r = rng.next();
            let len = match r % 10 {
                0..=6 => 32,
                7 | 8 => 24,
                _ => 16 + ((r >> 8) % 8) as u8,
            };
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from((r >> 32) as u32), len).expect("len <= 32"))
        })
        .collect()
}

/// Random prefixes in 2000::/3: 50 % /48, 30 % /64, 20 % /128.
fn v6_prefixes(n: usize) -> Vec<IpNet> {
    let mut rng = Rng(0x8765_4321);
    (0..n)
        .map(|_| {
            let hi = u128::from(rng.next()) << 64 | u128::from(rng.next());
            let addr = (hi >> 3) | (1u128 << 125);
            let len = match rng.next() % 10 {
                0..=4 => 48,
                5..=7 => 64,
                _ => 128,
            };
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).expect("len <= 128")).trunc()
        })
        .collect()
}

/// Nanoseconds this thread has spent on a CPU (`/proc/thread-self/schedstat`), so that a
/// shared, loaded machine does not count time the thread was waiting to run.
fn on_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// On-CPU nanoseconds per call of `f` over `n` calls (`None` off Linux).
fn per_call_on_cpu(n: u64, mut f: impl FnMut(u64) -> u64) -> Option<f64> {
    let start = on_cpu_ns()?;
    let mut acc = 0u64;
    for i in 0..n {
        acc = acc.wrapping_add(f(i ^ acc));
    }
    black_box(acc);
    Some((on_cpu_ns()? - start) as f64 / n as f64)
}

fn set_of(list: &PrefixList) -> IpSet {
    let mut b = IpSetBuilder::new();
    b.add(list, vec![ActionId(0)]);
    b.build().expect("one class")
}

fn v4(c: &mut Criterion) {
    let list = PrefixList::from_nets(v4_prefixes(1_000_000));
    let set = set_of(&list);
    eprintln!(
        "v4: 1,000,000 prefixes -> {} ranges, {} heap bytes = {:.2} B/prefix",
        set.v4.len(),
        set.heap_bytes(),
        set.heap_bytes() as f64 / 1e6
    );
    let dep = per_call_on_cpu(10_000_000, |x| {
        let ip = (x as u32).wrapping_mul(0x9e37_79b1);
        set.v4.lookup(ip).map_or(1, |c| u64::from(c) + 2)
    });
    let listed: Vec<u32> = (0..1 << 16)
        .map(|i| list.v4[(i * 7919) % list.v4.len()].0)
        .collect();
    let listed_dep = per_call_on_cpu(10_000_000, |x| {
        set.v4
            .lookup(listed[(x & 0xffff) as usize])
            .map_or(1, |c| u64::from(c) + 2)
    });
    eprintln!("v4 on-CPU dependent ns/lookup: random {dep:.1?}, listed {listed_dep:.1?}");
    let mut rng = Rng(99);
    let queries: Vec<u32> = (0..1 << 16).map(|_| rng.next() as u32).collect();
    let listed: Vec<u32> = (0..1 << 16)
        .map(|i| list.v4[(i * 7919) % list.v4.len()].0)
        .collect();
    let mut g = c.benchmark_group("ipset_v4_1M");
    g.bench_function("random_independent", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 0xffff;
            black_box(set.v4.lookup(black_box(queries[i])))
        })
    });
    g.bench_function("random_dependent", |b| {
        let mut x = 0x0a00_0001u32;
        b.iter(|| {
            let r = set.v4.lookup(x);
            x = x
                .wrapping_mul(0x9e37_79b1)
                .wrapping_add(r.map_or(1, |c| u32::from(c) + 2));
            r
        })
    });
    g.bench_function("listed_independent", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 0xffff;
            black_box(set.v4.lookup(black_box(listed[i])))
        })
    });
    g.bench_function("ipaddr_lookup", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 0xffff;
            black_box(set.lookup(IpAddr::V4(Ipv4Addr::from(black_box(queries[i])))))
        })
    });
    g.finish();
    mixed(c, &list);
}

/// The 1M list shared by one action, with 1,000 other actions' own 8 addresses each among
/// it (the bundle of `mkbundle`): the set keeps one class and the others as exceptions; a
/// listed address reads its range's exception bit, and only an exception searches them.
fn mixed(c: &mut Criterion, list: &PrefixList) {
    let mut rng = Rng(4242);
    let own: Vec<PrefixList> = (0..1000)
        .map(|_| {
            let own: Vec<IpNet> = (0..8)
                .map(|_| {
                    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(rng.next() as u32), 32).expect("/32"))
                })
                .collect();
            PrefixList::from_nets(own)
        })
        .collect();
    let mut b = IpSetBuilder::new();
    b.add(list, vec![ActionId(0)]);
    for (i, l) in own.iter().enumerate() {
        b.add(l, vec![ActionId(1 + i as u16)]);
    }
    let set = b.build().expect("1,001 classes");
    eprintln!(
        "v4 with 1,000 actions' own addresses: {} ranges, {} heap bytes",
        set.v4.len(),
        set.heap_bytes()
    );
    // One query in eight an action's own address, the others the shared list's.
    let queries: Vec<u32> = (0..1 << 16)
        .map(|i| {
            if i % 8 == 0 {
                own[(i / 8) % own.len()].v4[0].0
            } else {
                list.v4[(i * 7919) % list.v4.len()].0
            }
        })
        .collect();
    let dep = per_call_on_cpu(10_000_000, |x| {
        set.v4
            .lookup(queries[(x & 0xffff) as usize])
            .map_or(1, |c| u64::from(c) + 2)
    });
    eprintln!(
        "v4 with 1,000 actions' own addresses, on-CPU dependent ns/lookup (listed): {dep:.1?}"
    );
    let mut g = c.benchmark_group("ipset_v4_1M");
    g.bench_function("listed_mixed_classes_independent", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 0xffff;
            black_box(set.v4.lookup(black_box(queries[i])))
        })
    });
    g.finish();
}

fn v6(c: &mut Criterion) {
    let list = PrefixList::from_nets(v6_prefixes(1_000_000));
    let set = set_of(&list);
    eprintln!(
        "v6: 1,000,000 prefixes -> {} ranges, {} heap bytes = {:.2} B/prefix",
        set.v6.len(),
        set.heap_bytes(),
        set.heap_bytes() as f64 / 1e6
    );
    let dep = per_call_on_cpu(10_000_000, |x| {
        let i = (x as usize).wrapping_mul(7919) % list.v6.len();
        let q = if x % 2 == 0 {
            list.v6[i].0
        } else {
            list.v6[i].1.wrapping_add(1)
        };
        set.v6.lookup(q).map_or(1, |c| u64::from(c) + 2)
    });
    eprintln!("v6 on-CPU dependent ns/lookup (half listed): {dep:.1?}");
    let mut rng = Rng(77);
    let queries: Vec<u128> = (0..1 << 16)
        .map(|i| {
            if i % 2 == 0 {
                list.v6[(rng.next() as usize) % list.v6.len()].0
            } else {
                (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 3 | 1u128 << 125
            }
        })
        .collect();
    let mut g = c.benchmark_group("ipset_v6_1M");
    g.bench_function("half_listed_independent", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 0xffff;
            black_box(set.v6.lookup(black_box(queries[i])))
        })
    });
    g.bench_function("dependent", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let r = set.v6.lookup(queries[i]);
            i = (i + 1 + r.map_or(0, usize::from)) & 0xffff;
            r
        })
    });
    g.finish();
}

fn build_and_codec(c: &mut Criterion) {
    let nets = v4_prefixes(1_000_000);
    let mut g = c.benchmark_group("bundle_1M_v4");
    g.sample_size(10);
    g.bench_function("normalise_and_build", |b| {
        b.iter(|| set_of(&PrefixList::from_nets(nets.iter().copied())))
    });
    let text: String = nets.iter().map(|n| format!("{n}\n")).collect();
    g.bench_function("parse_text", |b| {
        b.iter(|| PrefixList::parse(black_box(&text)))
    });
    let action = BundleAction {
        name: "deny-list".into(),
        verb: Verb::Allow,
        mode: Mode::Enforce,
        workload_selector: None,
        conditions: BundleConditions {
            ip: true,
            ..Default::default()
        },
        expires_unix_s: None,
    };
    let bundle = Bundle {
        actions: vec![action],
        ips: set_of(&PrefixList::from_nets(nets)),
        ..Default::default()
    };
    let enc = encode(&bundle).expect("encodes");
    let total: usize = enc.shards.iter().map(|(_, s)| s.len()).sum();
    eprintln!(
        "encoded: {} shards, {total} bytes = {:.2} B/prefix",
        enc.shards.len(),
        total as f64 / 1e6
    );
    g.bench_function("encode", |b| b.iter(|| encode(black_box(&bundle))));
    let shards = enc.shards.iter().cloned().collect();
    if let Some(start) = on_cpu_ns() {
        let enc_again = encode(&bundle).expect("encodes");
        let mid = on_cpu_ns().unwrap_or(start);
        black_box(decode(&enc_again.manifest, &shards).expect("decodes"));
        let end = on_cpu_ns().unwrap_or(mid);
        eprintln!(
            "on-CPU ms: encode {:.0}, decode+index {:.0}",
            (mid - start) as f64 / 1e6,
            (end - mid) as f64 / 1e6
        );
    }
    g.bench_function("decode", |b| {
        b.iter(|| decode(&enc.manifest, black_box(&shards)).expect("decodes"))
    });
    g.finish();
}

criterion_group!(benches, v4, v6, build_and_codec);
criterion_main!(benches);
