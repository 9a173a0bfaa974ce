//! Bundle generator and policy timer for `make bench`.
//!
//! - `mkbundle gen DIR [--prefixes N]`: the synthetic IPv4 list (70 % /32, 20 % /24,
//!   10 % /16–/23, uniform random, never 0/8, 127/8 or 224/3, so loopback clients miss it) as
//!   `list-v4.txt` (also HAProxy's `-f` file), `nginx-geo.conf` and `nginx-deny.conf` (the
//!   same list for nginx), and `geo.mmdb` / `asn.mmdb` mapping 127.0.0.0/8 to a region and an
//!   ASN no action names (so region and ASN conditions are evaluated but do not match).
//! - `mkbundle compile DIR`: compiles `list-v4.txt` plus 1000 actions of every condition kind
//!   with the policy crate, encodes the bundle and writes it to `DIR/big/` (`manifest.json`
//!   and one file per shard, the layout of the sidecar's `--bundle-path`); writes an empty
//!   bundle to `DIR/empty/`. Prints the timings as JSON (run it under `/usr/bin/time -v`
//!   for peak RSS).
//! - `mkbundle eval DIR`: reads `DIR/big/` back, times decode and load, then times each of
//!   2M `evaluate` calls into a histogram (a request mix that walks every condition kind),
//!   and prints JSON.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)] // The JSON line on stdout is this tool's output.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use palisade_bench::mmdb;
use palisade_policy::synthetic;
use palisade_policy::{
    CompiledPolicy, Inputs, Manifest, Request, compile, decode, encode, evaluate,
};
use sha2::{Digest, Sha256};

#[derive(Debug, Parser)]
#[command(
    name = "mkbundle",
    about = "Generate and time the benchmark policy bundle"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write the list and its nginx/HAProxy forms, and the GeoIP/ASN databases.
    Gen {
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        prefixes: usize,
    },
    /// Compile the list + 1000 actions into DIR/big, and an empty policy into DIR/empty.
    Compile {
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        actions: usize,
    },
    /// Decode DIR/big and time evaluate per call.
    Eval {
        dir: PathBuf,
        #[arg(long, default_value_t = 2_000_000)]
        calls: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Gen { dir, prefixes } => gen_lists(&dir, prefixes),
        Cmd::Compile { dir, actions } => compile_bundles(&dir, actions),
        Cmd::Eval { dir, calls } => eval(&dir, calls),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn gen_lists(dir: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut list = String::with_capacity(n * 18);
    let mut geo = String::with_capacity(n * 22 + 64);
    let mut deny = String::with_capacity(n * 24);
    list.push_str("# palisade bench: synthetic 70/20/10 IPv4 list\n");
    geo.push_str("default 0;\n");
    for net in synthetic::v4_prefixes(n, 0x1234_5678) {
        list.push_str(&net);
        list.push('\n');
        geo.push_str(&net);
        geo.push_str(" 1;\n");
        deny.push_str("deny ");
        deny.push_str(&net);
        deny.push_str(";\n");
    }
    std::fs::write(dir.join("list-v4.txt"), list)?;
    std::fs::write(dir.join("nginx-geo.conf"), geo)?;
    std::fs::write(dir.join("nginx-deny.conf"), deny)?;
    std::fs::write(
        dir.join("geo.mmdb"),
        mmdb::countries(&[("127.0.0.0", 8, "BR")]),
    )?;
    std::fs::write(
        dir.join("asn.mmdb"),
        mmdb::asns(&[("127.0.0.0", 8, 64_999)]),
    )?;
    println!("{}", serde_json::json!({ "prefixes": n }));
    Ok(())
}

fn write_bundle(dir: &Path, enc: &palisade_policy::Encoded) -> anyhow::Result<u64> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let mut bytes = 0u64;
    for (name, data) in &enc.shards {
        std::fs::write(tmp.join(name), data)?;
        bytes += data.len() as u64;
    }
    std::fs::write(tmp.join("manifest.json"), enc.manifest.to_json())?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)?;
    Ok(bytes)
}

fn compile_bundles(dir: &Path, n: usize) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now();
    let t = Instant::now();
    let empty = compile(&Inputs::default(), now);
    write_bundle(&dir.join("empty"), &encode(&empty.bundle)?)?;
    let empty_ms = ms(t);

    let text = std::fs::read_to_string(dir.join("list-v4.txt"))
        .with_context(|| format!("{}/list-v4.txt: run `mkbundle gen` first", dir.display()))?;
    let prefixes = text.lines().filter(|l| !l.starts_with('#')).count();
    let inputs = synthetic::inputs(text, n);
    let t = Instant::now();
    let out = compile(&inputs, now);
    let compile_ms = ms(t);
    let active = out
        .statuses
        .values()
        .filter(|s| **s == palisade_policy::ActionStatus::Active)
        .count();
    let t = Instant::now();
    let enc = encode(&out.bundle)?;
    let encode_ms = ms(t);
    let t = Instant::now();
    let bytes = write_bundle(&dir.join("big"), &enc)?;
    let write_ms = ms(t);
    println!(
        "{}",
        serde_json::json!({
            "prefixes": prefixes,
            "actions": out.bundle.actions.len(),
            "active": active,
            "v4_ranges": out.bundle.ips.v4.len(),
            "index_heap_bytes": out.bundle.ips.heap_bytes(),
            "compile_ms": compile_ms,
            "encode_ms": encode_ms,
            "write_ms": write_ms,
            "total_ms": compile_ms + encode_ms + write_ms,
            "shards": enc.shards.len(),
            "bundle_bytes": bytes,
            "bundle_bytes_per_prefix": bytes as f64 / prefixes as f64,
            "empty_ms": empty_ms,
        })
    );
    Ok(())
}

fn eval(dir: &Path, calls: usize) -> anyhow::Result<()> {
    let big = dir.join("big");
    let manifest = Manifest::from_json(&std::fs::read_to_string(big.join("manifest.json"))?)?;
    let mut shards = BTreeMap::new();
    for s in &manifest.shards {
        shards.insert(s.name.clone(), std::fs::read(big.join(&s.name))?);
    }
    let t = Instant::now();
    let bundle = decode(&manifest, &shards)?;
    let decode_ms = ms(t);
    let t = Instant::now();
    let policy = CompiledPolicy::new(bundle, &BTreeMap::new());
    let load_ms = ms(t);

    // Request mix: random IPv4 (mostly misses), every region/ASN/UA/app/method/path kind.
    let mix = synthetic::RequestMix::default();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let mut timer = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let mut denied = 0usize;
    for n in 0..calls {
        let req = mix.request(n);
        let t = Instant::now();
        let v = evaluate(&policy, black_box(&req));
        let d = t.elapsed();
        let t2 = Instant::now();
        let d2 = black_box(t2.elapsed());
        hist.saturating_record(d.as_nanos() as u64);
        timer.saturating_record(d2.as_nanos() as u64);
        if matches!(v.decision, palisade_policy::Decision::Deny(_)) {
            denied += 1;
        }
    }
    // The benchmark's own request, as the sidecar sees it.
    let key: [u8; 32] = Sha256::digest("bench-key").into();
    let own = Request {
        region: Some(*b"BR"),
        asn: Some(64_999),
        user_agent: Some("palisade-bench/1"),
        api_key_hash: Some(&key),
        now_unix_s: 1_800_000_000,
        ..Request::new(IpAddr::V4(Ipv4Addr::LOCALHOST), "GET", "/index.html")
    };
    let own_verdict = evaluate(&policy, &own);
    let mut own_hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    for _ in 0..calls / 4 {
        let t = Instant::now();
        black_box(evaluate(&policy, black_box(&own)));
        own_hist.saturating_record(t.elapsed().as_nanos() as u64);
    }
    println!(
        "{}",
        serde_json::json!({
            "decode_ms": decode_ms,
            "load_ms": load_ms,
            "calls": calls,
            "denied_share": denied as f64 / calls as f64,
            "eval_p50_ns": hist.value_at_quantile(0.5),
            "eval_p99_ns": hist.value_at_quantile(0.99),
            "eval_p999_ns": hist.value_at_quantile(0.999),
            "eval_mean_ns": hist.mean(),
            "timer_p50_ns": timer.value_at_quantile(0.5),
            "timer_p99_ns": timer.value_at_quantile(0.99),
            "own_request_forwarded": matches!(own_verdict.decision, palisade_policy::Decision::Forward),
            "own_p50_ns": own_hist.value_at_quantile(0.5),
            "own_p99_ns": own_hist.value_at_quantile(0.99),
        })
    );
    Ok(())
}
