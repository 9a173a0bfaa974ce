//! `palisade-loadgen`: the detection traffic model (`palisade_detection::sim`) from the
//! command line. See `docs/detection.md` ("Evaluating the rules").
//!
//! - `eval`: every scenario through the rule engine on a virtual clock → Markdown
//!   (`make eval-detection` writes `bench/results/detection.md` with it).
//! - `trace`: the model's requests as JSON lines (virtual time), then the ground truth.
//! - `send`: the same requests in real time over HTTP to one or more sidecars, each client
//!   from its own 127.0.0.0/8 source address; prints a summary as JSON.
//! - `app`: an upstream that answers each request with the `X-Sim-Status` status and an
//!   `X-Sim-Bytes`-byte body, so the sidecar sees the model's statuses and sizes.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)] // The reports on stdout are this tool's output.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use jiff::SignedDuration;
use palisade_bench::send::{self, SendConfig};
use palisade_detection::sim::eval::{self, EvalConfig};
use palisade_detection::sim::{Scenario, SimConfig, Traffic};

#[derive(Debug, Parser)]
#[command(
    name = "palisade-loadgen",
    about = "Palisade's detection traffic model"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Model options shared by `trace` and `send`.
#[derive(Debug, clap::Args)]
struct Model {
    /// Seed (same seed, same traffic).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Attack scenario to inject (repeatable): flooder, static-content-scraper,
    /// brute-guessor, robot-abuser, oauth-abuser, tor-list, api-scraper.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Instances of each scenario, spread over the run.
    #[arg(long, default_value_t = 1)]
    attacks: u32,
    /// Length of the run (`90s`, `10m`, `24h`).
    #[arg(long, default_value = "10m")]
    duration: String,
    /// Single-user client IPs.
    #[arg(long, default_value_t = 10_000)]
    clients: u32,
    /// NAT gateways.
    #[arg(long, default_value_t = 20)]
    nat_clients: u32,
    /// Mean benign requests per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Hour of the (virtual) day the run starts at (shapes the diurnal rate).
    #[arg(long, default_value_t = 12)]
    start_hour: i64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Evaluate every rule on every scenario (virtual clock) and write Markdown.
    Eval {
        /// Simulated days per scenario.
        #[arg(long, default_value_t = 1)]
        days: u32,
        /// Base seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Virtual seconds between runs of the 5-minute rules.
        #[arg(long, default_value_t = 5)]
        short_every: i64,
        /// Virtual seconds between runs of the 24-hour rules and TorList.
        #[arg(long, default_value_t = 300)]
        long_every: i64,
    },
    /// Print the requests as JSON lines, then the ground truth.
    Trace {
        #[command(flatten)]
        model: Model,
    },
    /// Send the traffic in real time over HTTP.
    Send {
        #[command(flatten)]
        model: Model,
        /// Target (sidecar) address; repeat for several sidecars (requests alternate).
        #[arg(long = "addr", required = true)]
        addrs: Vec<SocketAddr>,
        /// Worker threads.
        #[arg(long, default_value_t = 32)]
        workers: usize,
    },
    /// Run an upstream that answers with X-Sim-Status and X-Sim-Bytes.
    App {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
}

fn sim_config(m: &Model, ip_base: Ipv4Addr) -> anyhow::Result<SimConfig> {
    let scenarios = m
        .scenarios
        .iter()
        .map(|s| Scenario::parse(s).with_context(|| format!("--scenario {s}: unknown scenario")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let duration: SignedDuration = m
        .duration
        .parse::<jiff::Span>()
        .with_context(|| format!("--duration {}: expected e.g. 90s, 10m, 24h", m.duration))?
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())?;
    let d = SimConfig::default();
    Ok(SimConfig {
        seed: m.seed,
        start: d.start + SignedDuration::from_hours(m.start_hour),
        duration,
        clients: m.clients,
        nat_clients: m.nat_clients,
        base_rate: m.rate,
        scenarios,
        attacks_per_kind: m.attacks,
        ip_base,
        ..d
    })
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Eval {
            days,
            seed,
            out,
            short_every,
            long_every,
        } => {
            let mut opts = EvalConfig {
                days,
                short_every: SignedDuration::from_secs(short_every),
                long_every: SignedDuration::from_secs(long_every),
                ..Default::default()
            };
            opts.sim.seed = seed;
            let report = eval::evaluate(&opts, |s, day, run| {
                eprintln!(
                    "{} day {day}: {} requests, {} detections",
                    s.name(),
                    run.requests,
                    run.first.len()
                );
            });
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let cpu = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| {
                    c.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|s| s.trim().to_owned())
                })
                .unwrap_or_default();
            let text = format!(
                "# Detection rules on the traffic model (precision, recall, time to detect)\n\n\
                 - Date: {now}; command: `make eval-detection` (`palisade-loadgen eval --days {days} --seed {seed} --short-every {short_every} --long-every {long_every}`); \
                 machine: {cpu}, {cores} CPUs; load average at the end: {load}.\n{body}",
                now = jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
                cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
                load = load.trim(),
                body = eval::markdown(&report, &opts),
            );
            match out {
                Some(path) => {
                    std::fs::write(&path, &text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
        }
        Cmd::Trace { model } => {
            let mut t = Traffic::new(sim_config(&model, Ipv4Addr::new(10, 0, 0, 1))?);
            let out = std::io::stdout();
            let mut out = out.lock();
            while let Some(batch) = t.next_second() {
                for r in batch {
                    let line = serde_json::json!({
                        "t": r.offset_ns as f64 / 1e9, "ip": r.ip, "path": t.path(r.path),
                        "status": r.status, "bytes": r.bytes, "ua": t.user_agent(r.ua),
                        "token": r.token_endpoint, "attack": r.attack,
                    });
                    writeln!(out, "{line}")?;
                }
            }
            let truth = t.truth();
            for a in &truth.attacks {
                let line = serde_json::json!({"attack": a.id, "scenario": a.scenario.name(),
                    "ips": a.ips, "start": a.start.to_string(), "end": a.end.to_string(), "rate": a.rate});
                writeln!(out, "{line}")?;
            }
            writeln!(out, "{}", serde_json::json!({"nat": truth.nat}))?;
        }
        Cmd::Send {
            model,
            addrs,
            workers,
        } => {
            let t = Traffic::new(sim_config(&model, Ipv4Addr::new(127, 0, 1, 1))?);
            let truth = t.truth().clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let running = send::spawn(
                t,
                SendConfig {
                    targets: addrs.clone(),
                    workers,
                    ..Default::default()
                },
                tx,
            );
            let late = std::sync::Arc::clone(&running.late);
            let mut statuses: BTreeMap<(String, u16), u64> = BTreeMap::new();
            let mut errors = BTreeMap::<String, u64>::new();
            for o in rx {
                let who = match o.attack {
                    Some(a) => format!("attack {a}"),
                    None => "benign".to_owned(),
                };
                *statuses.entry((who, o.status)).or_default() += 1;
                if let Some(e) = o.error {
                    *errors.entry(e).or_default() += 1;
                }
            }
            running.wait();
            let statuses: Vec<_> = statuses
                .into_iter()
                .map(|((who, s), n)| serde_json::json!({"who": who, "status": s, "count": n}))
                .collect();
            let attacks: Vec<_> = truth
                .attacks
                .iter()
                .map(|a| serde_json::json!({"attack": a.id, "scenario": a.scenario.name(), "ips": a.ips, "start": a.start.to_string()}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"statuses": statuses, "errors": errors, "attacks": attacks,
                    "late": late.load(std::sync::atomic::Ordering::Relaxed)})
            );
        }
        Cmd::App { listen } => app(listen)?,
    }
    Ok(())
}

/// Answers each request with `X-Sim-Status` (default 200) and an `X-Sim-Bytes`-byte body
/// (default 2, at most 16 MiB), one thread per connection.
fn app(listen: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    eprintln!("palisade-loadgen app listening on {listen}");
    for conn in l.incoming() {
        let Ok(mut s) = conn else { continue };
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut r = BufReader::new(s.try_clone()?);
            loop {
                let (mut status, mut bytes, mut close) = (200u16, 2u64, false);
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                        break;
                    }
                    let Some((k, v)) = h.split_once(':') else {
                        continue;
                    };
                    let v = v.trim();
                    match k.trim().to_ascii_lowercase().as_str() {
                        "x-sim-status" => status = v.parse().unwrap_or(200),
                        "x-sim-bytes" => bytes = v.parse().unwrap_or(2).min(16 << 20),
                        "connection" => close = v.eq_ignore_ascii_case("close"),
                        _ => {}
                    }
                }
                if !(100..=599).contains(&status) {
                    bail!("bad X-Sim-Status {status}");
                }
                write!(
                    s,
                    "HTTP/1.1 {status} Sim\r\nContent-Length: {bytes}\r\nContent-Type: application/octet-stream\r\n\r\n"
                )?;
                let chunk = [b'x'; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    s.write_all(&chunk[..n])?;
                    left -= n as u64;
                }
                if close {
                    return Ok(());
                }
            }
        });
    }
    Ok(())
}
