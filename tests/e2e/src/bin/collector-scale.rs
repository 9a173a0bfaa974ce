//! `make bench`: the collector's scale run. Starts a control plane and, in turn, 1, 2 and 4
//! operator processes sharing `--collector-shards` shards; a load generator posts real
//! reports, as 200 simulated sidecars over 50 namespaces with 1,000,000 distinct clients
//! (20,000 per namespace, the windows' bound), once a second each (the sidecar's default
//! interval), either straight to the replica owning the namespace's shard (as sidecars do
//! once the owner's detected-client document names it) or spread over the replicas as the
//! collector Service does (the fallback: every replica forwards what it does not own); during the
//! measured minute it floods some namespaces and times each flood's first report → its
//! flooder listed in the namespace's `palisade-detected` ConfigMap. Per replica count it
//! measures reports merged per second and replica, CPU and memory per replica, the clients
//! each replica holds, evaluation round time and detect→mitigate. Writes
//! bench/results/scale.md.
//!
//! Every process shares this machine's cores: the figures of several replicas are what they
//! cost together on these cores, not what separate nodes would give.
//!
//! Knobs (environment): `PALISADE_SCALE_NAMESPACES` (50), `PALISADE_SCALE_SIDECARS` (200),
//! `PALISADE_SCALE_CLIENTS` (1000000), `PALISADE_SCALE_SHARDS` (16),
//! `PALISADE_SCALE_REPLICAS` (`1,2,4`), `PALISADE_SCALE_WARM` (40 s),
//! `PALISADE_SCALE_SECS` (60 s), `PALISADE_SCALE_PER_REPORT` (250 clients a report),
//! `PALISADE_SCALE_FLOODS` (6 per replica count).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_detection::counter::{Counter, CounterConfig};
use palisade_detection::facts::RequestFacts;
use palisade_detection::report::SidecarId;
use palisade_e2e::collector::token;
use palisade_e2e::leadership::lease_holder;
use palisade_e2e::{ControlPlane, Operator, StartOptions, TempNs};
use palisade_policy::transport::collector_shard;

/// A flood is 3 s of `FLOOD_PER_SECOND` requests from one address, reported by one sidecar:
/// far above the rule's 1 % share of a namespace's 5 minutes (20,000 clients, each about one
/// request every 20 s: some 300,000 requests).
const FLOOD_PER_SECOND: u32 = 4_000;
const FLOOD_SECS: u64 = 3;

const RULE: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: flooder}
spec:
  type: Flooder
  detectionTtl: 10m
  flooder: {minSharePercent: 1, minRequests: 2000, minActiveClients: 1}
"#;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
struct Cfg {
    namespaces: usize,
    sidecars: usize,
    clients: usize,
    shards: u32,
    replicas: Vec<usize>,
    warm: Duration,
    secs: Duration,
    per_report: usize,
    floods: usize,
}

impl Cfg {
    fn from_env() -> Self {
        let replicas = std::env::var("PALISADE_SCALE_REPLICAS")
            .unwrap_or_else(|_| "1,2,4".into())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect();
        Self {
            namespaces: env("PALISADE_SCALE_NAMESPACES", 50) as usize,
            sidecars: env("PALISADE_SCALE_SIDECARS", 200) as usize,
            clients: env("PALISADE_SCALE_CLIENTS", 1_000_000) as usize,
            shards: env("PALISADE_SCALE_SHARDS", 16) as u32,
            replicas,
            warm: Duration::from_secs(env("PALISADE_SCALE_WARM", 40)),
            secs: Duration::from_secs(env("PALISADE_SCALE_SECS", 60)),
            per_report: env("PALISADE_SCALE_PER_REPORT", 250) as usize,
            floods: env("PALISADE_SCALE_FLOODS", 6) as usize,
        }
    }

    fn pool(&self) -> usize {
        (self.clients / self.sidecars.max(1)).max(1)
    }
}

/// One keep-alive connection to a collector.
struct Conn {
    addr: String,
    stream: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Conn {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            stream: None,
        }
    }

    /// POSTs a report; its status (0: no answer).
    fn post(&mut self, token: &str, body: &[u8]) -> u16 {
        for _ in 0..2 {
            match self.try_post(token, body) {
                Ok(code) => return code,
                Err(_) => self.stream = None,
            }
        }
        0
    }

    fn try_post(&mut self, token: &str, body: &[u8]) -> std::io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            let r = BufReader::new(s.try_clone()?);
            self.stream = Some((s, r));
        }
        let Some((w, r)) = self.stream.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        let mut req = format!(
            "POST /v1/reports HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        w.write_all(&req)?;
        let mut status = String::new();
        r.read_line(&mut status)?;
        let code = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut rest = vec![0u8; length];
        r.read_exact(&mut rest)?;
        Ok(code)
    }
}

/// A flood one sidecar adds to its reports until `until`; `first` is when its first report
/// carrying it was answered.
#[derive(Debug, Clone)]
struct Flood {
    sidecar: usize,
    ip: IpAddr,
    until: Instant,
    first: Option<Instant>,
}

/// What the generator saw.
#[derive(Debug, Default)]
struct Tally {
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// Client `i` of sidecar `s`: 11.0.0.0/8 plus a running number (public-looking, distinct).
fn client(pool: usize, s: usize, i: usize) -> IpAddr {
    let n = u32::try_from(s * pool + i).unwrap_or(u32::MAX) & 0x00ff_ffff;
    IpAddr::V4(Ipv4Addr::from(0x0b00_0000 | n))
}

/// Runs the simulated sidecars on `threads` threads until `stop`.
#[allow(clippy::too_many_arguments)]
fn generate(
    cfg: &Cfg,
    names: &[String],
    tokens: &[String],
    collectors: &[String],
    route: &Arc<Vec<Option<usize>>>,
    floods: &Arc<Mutex<Vec<Flood>>>,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
    threads: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let cfg = cfg.clone();
            let (names, tokens, collectors) =
                (names.to_vec(), tokens.to_vec(), collectors.to_vec());
            let (floods, tally, stop) = (floods.clone(), tally.clone(), stop.clone());
            let route = route.clone();
            std::thread::spawn(move || {
                let mine: Vec<usize> = (t..cfg.sidecars).step_by(threads).collect();
                let now = jiff::Timestamp::now();
                let mut counters: Vec<Counter> = mine
                    .iter()
                    .map(|&s| {
                        let ns = &names[s % names.len()];
                        let id = SidecarId {
                            pod: format!("api-{s}"),
                            workload: "api".into(),
                            namespace: ns.clone(),
                        };
                        Counter::new(id, &CounterConfig::default(), now)
                    })
                    .collect();
                let mut conns: Vec<Conn> = collectors.iter().map(|c| Conn::new(c)).collect();
                let pool = cfg.pool();
                let mut turn = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let tick = Instant::now();
                    for (k, &s) in mine.iter().enumerate() {
                        let c = &mut counters[k];
                        for j in 0..cfg.per_report {
                            let i = (turn * cfg.per_report + j) % pool;
                            c.record(&RequestFacts::new(client(pool, s, i), 200));
                        }
                        let flood = floods
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .iter()
                            .find(|f| f.sidecar == s && f.until > tick)
                            .map(|f| f.ip);
                        if let Some(ip) = flood {
                            for _ in 0..FLOOD_PER_SECOND {
                                c.record(&RequestFacts::new(ip, 200));
                            }
                        }
                        let report = c.take_report(jiff::Timestamp::now());
                        let body = serde_json::to_vec(&report).expect("report JSON");
                        // To the owner, or spread over the replicas as the Service does.
                        let n = conns.len();
                        let k = route.get(s).copied().flatten().unwrap_or((s + turn) % n);
                        let conn = &mut conns[k % n];
                        let code = conn.post(&tokens[s % names.len()], &body);
                        match code {
                            202 => tally.accepted.fetch_add(1, Ordering::Relaxed),
                            0 => tally.failed.fetch_add(1, Ordering::Relaxed),
                            _ => tally.refused.fetch_add(1, Ordering::Relaxed),
                        };
                        if code == 202 && flood.is_some() {
                            let mut fs = floods
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            if let Some(f) =
                                fs.iter_mut().find(|f| f.sidecar == s && f.first.is_none())
                            {
                                f.first = Some(Instant::now());
                            }
                        }
                    }
                    turn += 1;
                    if let Some(rest) = Duration::from_secs(1).checked_sub(tick.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            })
        })
        .collect()
}

/// The samples of `text` whose line starts with `prefix`, summed.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One replica's counters at a moment.
#[derive(Debug, Clone, Default)]
struct Sample {
    cpu: f64,
    merged: f64,
    eval_sum: f64,
    eval_count: f64,
    buckets: BTreeMap<String, f64>,
}

fn sample(op: &Operator) -> Sample {
    let text = op.metrics().unwrap_or_default();
    let mut buckets = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| l.starts_with("palisade_operator_collector_evaluation_seconds_bucket"))
    {
        if let (Some(le), Some(v)) = (
            l.split("le=\"").nth(1).and_then(|r| r.split('"').next()),
            l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()),
        ) {
            buckets.insert(le.to_owned(), v);
        }
    }
    Sample {
        cpu: op.cpu_seconds().unwrap_or(0.0),
        merged: metric(
            &text,
            "palisade_operator_reports_total{controller=\"collector\",reason=\"Accepted\"}",
        ),
        eval_sum: metric(&text, "palisade_operator_collector_evaluation_seconds_sum"),
        eval_count: metric(
            &text,
            "palisade_operator_collector_evaluation_seconds_count",
        ),
        buckets,
    }
}

/// The upper bound of the bucket holding the 99th percentile of the rounds between two
/// samples.
fn p99_bucket(a: &Sample, b: &Sample) -> Option<f64> {
    let mut les: Vec<(f64, f64)> = b
        .buckets
        .iter()
        .map(|(le, v)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            (bound, v - a.buckets.get(le).copied().unwrap_or(0.0))
        })
        .collect();
    les.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = les.last()?.1;
    (total > 0.0).then(|| {
        les.iter()
            .find(|(_, n)| *n >= 0.99 * total)
            .map_or(f64::INFINITY, |x| x.0)
    })
}

/// Whether `palisade-detected` of `ns` lists `ip` under rule `flooder`.
async fn detected(client: &kube::Client, ns: &str, ip: IpAddr) -> bool {
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), ns);
    let Ok(Some(cm)) = cms.get_opt("palisade-detected").await else {
        return false;
    };
    let Some(bytes) = cm.binary_data.and_then(|mut d| d.remove("detected")) else {
        return false;
    };
    let Ok(doc) = palisade_policy::decode_detected(&bytes.0) else {
        return false;
    };
    let key = format!("ip:{ip}");
    doc.rules
        .get("flooder")
        .is_some_and(|c| c.iter().any(|d| d.key.to_string() == key))
}

/// What one replica count gave.
#[derive(Debug)]
struct Run {
    replicas: usize,
    /// Reports went straight to the shard owner (else spread over the replicas).
    direct: bool,
    offered: f64,
    accepted: f64,
    refused: u64,
    failed: u64,
    /// Per replica: merged reports/s, CPU cores, RSS MiB, clients held, namespaces held.
    per: Vec<(f64, f64, f64, usize, usize)>,
    eval_mean: f64,
    eval_p99: Option<f64>,
    detect: Vec<Duration>,
    missed: usize,
}

async fn run_with(
    cp: &'static ControlPlane,
    cfg: &Cfg,
    spaces: &[TempNs],
    tokens: &[String],
    r: usize,
    direct: bool,
) -> anyhow::Result<Run> {
    let lease = format!("scale-{r}-{}", if direct { "owner" } else { "spread" });
    let args: Vec<String> = vec![
        "--namespace-selector".into(),
        "palisade.dev/scale=true".into(),
        "--collector-shards".into(),
        cfg.shards.to_string(),
        "--collector-window-budget-mib".into(),
        "16384".into(),
    ];
    let ops: Vec<Operator> = (0..r)
        .map(|k| Operator::start(cp, &format!("{lease}-{k}"), &lease, &args))
        .collect();
    // Settled: every shard held, as many owned as held, and no move for 5 s.
    let shard_lease = |i: u32| {
        if i == 0 {
            lease.clone()
        } else {
            format!("{lease}-shard-{i}")
        }
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last: Option<(Vec<Option<String>>, Instant)> = None;
    let holders: Vec<String> = loop {
        let hs: Vec<Option<String>> = (0..cfg.shards)
            .map(|i| {
                let l = lease_holder(cp, &shard_lease(i)).ok()?;
                let who = l.split(' ').next()?.to_owned();
                (!who.is_empty()).then_some(who)
            })
            .collect();
        let owned: f64 = ops
            .iter()
            .map(|o| {
                metric(
                    &o.metrics().unwrap_or_default(),
                    "palisade_operator_collector_shards ",
                )
            })
            .sum();
        let complete = hs.iter().all(Option::is_some) && owned as u32 == cfg.shards;
        match &last {
            Some((prev, since)) if complete && *prev == hs => {
                if since.elapsed() >= Duration::from_secs(5) {
                    break hs.into_iter().flatten().collect();
                }
            }
            _ => last = Some((hs.clone(), Instant::now())),
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "shards not settled over {r} replicas: {hs:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let names: Vec<String> = spaces.iter().map(|n| n.name().to_owned()).collect();
    let collectors: Vec<String> = ops.iter().map(|o| o.collector.clone()).collect();
    let floods = Arc::new(Mutex::new(Vec::new()));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let route: Vec<Option<usize>> = (0..cfg.sidecars)
        .map(|s| {
            let ns = &names[s % names.len()];
            let holder = &holders[collector_shard(ns, cfg.shards) as usize];
            (0..r)
                .find(|k| *holder == format!("{lease}-{k}"))
                .filter(|_| direct)
        })
        .collect();
    let route = Arc::new(route);
    let threads = generate(
        cfg,
        &names,
        tokens,
        &collectors,
        &route,
        &floods,
        &tally,
        &stop,
        4,
    );
    tokio::time::sleep(cfg.warm).await;

    let before: Vec<Sample> = ops.iter().map(sample).collect();
    let accepted0 = tally.accepted.load(Ordering::Relaxed);
    let (refused0, failed0) = (
        tally.refused.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    let client = cp.client().await;
    let mut watching: Vec<(usize, IpAddr, String)> = Vec::new();
    let mut detect = Vec::new();
    let gap = cfg.secs / u32::try_from(cfg.floods.max(1)).unwrap_or(1);
    let mut next_flood = started;
    while started.elapsed() < cfg.secs {
        if watching.len() < cfg.floods && Instant::now() >= next_flood {
            let n = watching.len();
            // Sidecars of namespaces spread over the list (and so over the shards).
            let sidecar = (n * cfg.sidecars / cfg.floods.max(1) + r) % cfg.sidecars;
            let ip = IpAddr::V4(Ipv4Addr::new(
                198,
                18,
                u8::try_from(r).unwrap_or(0),
                u8::try_from(n + 1).unwrap_or(1),
            ));
            floods
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Flood {
                    sidecar,
                    ip,
                    until: Instant::now() + Duration::from_secs(FLOOD_SECS),
                    first: None,
                });
            watching.push((sidecar, ip, names[sidecar % names.len()].clone()));
            next_flood += gap;
        }
        let mut done = Vec::new();
        for (k, (sidecar, ip, ns)) in watching.iter().enumerate() {
            if detect.iter().any(|(j, _)| *j == k) {
                continue;
            }
            let first = floods
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find(|f| f.sidecar == *sidecar && f.ip == *ip)
                .and_then(|f| f.first);
            if let Some(first) = first
                && detected(&client, ns, *ip).await
            {
                done.push((k, first.elapsed()));
            }
        }
        detect.extend(done);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let after: Vec<Sample> = ops.iter().map(sample).collect();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let accepted = (tally.accepted.load(Ordering::Relaxed) - accepted0) as f64 / secs;
    let per = ops
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let me = format!("{lease}-{k}");
            let shards: Vec<u32> = (0..cfg.shards)
                .filter(|&i| holders[i as usize] == me)
                .collect();
            let held_ns = names
                .iter()
                .filter(|n| shards.contains(&collector_shard(n, cfg.shards)))
                .count();
            let clients = held_ns * (cfg.sidecars / cfg.namespaces.max(1)) * cfg.pool();
            (
                (after[k].merged - before[k].merged) / secs,
                (after[k].cpu - before[k].cpu) / secs,
                o.rss_bytes().unwrap_or(0) as f64 / f64::from(1 << 20),
                clients,
                held_ns,
            )
        })
        .collect();
    let (sum, count) = before
        .iter()
        .zip(&after)
        .fold((0.0, 0.0), |(s, c), (a, b)| {
            (s + b.eval_sum - a.eval_sum, c + b.eval_count - a.eval_count)
        });
    let eval_p99 = before
        .iter()
        .zip(&after)
        .filter_map(|(a, b)| p99_bucket(a, b))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let mut times: Vec<Duration> = detect.into_iter().map(|(_, d)| d).collect();
    times.sort();
    Ok(Run {
        replicas: r,
        direct,
        offered: cfg.sidecars as f64,
        accepted,
        refused: tally.refused.load(Ordering::Relaxed) - refused0,
        failed: tally.failed.load(Ordering::Relaxed) - failed0,
        per,
        eval_mean: if count > 0.0 { sum / count } else { 0.0 },
        eval_p99,
        missed: watching.len() - times.len(),
        detect: times,
    })
}

fn write(cfg: &Cfg, runs: &[Run]) -> anyhow::Result<()> {
    let mut md = String::new();
    md.push_str("# Collector scale run\n\n");
    md.push_str(&format!(
        "`make bench` (`$CARGO_TARGET_DIR/release/collector-scale`), {}. Real operator \
         processes (release build) on the local control plane, `--collector-shards {}`; a \
         generator posts real reports as {} simulated sidecars over {} namespaces with {} \
         distinct clients ({} per namespace), one report a second each with {} clients, sent \
         straight to the replica owning the namespace's shard (as sidecars do once its \
         `palisade-detected` names it) and, with 2 and 4 replicas, also spread over the replicas \
         as the collector Service does (each forwarding what it does not own); {} floods per run ({} requests/s for \
         {} s from one address) are timed from their first report's answer to the flooder \
         listed in the namespace's `palisade-detected`. Measured over {} s after {} s of \
         warm-up. **Every process (control plane, generator, replicas) shares this machine's \
         {} cores**: several replicas here compete for the same cores, so per-replica CPU and \
         memory, not total throughput, say what separate nodes would give.\n\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        cfg.shards,
        cfg.sidecars,
        cfg.namespaces,
        cfg.clients,
        cfg.clients / cfg.namespaces.max(1),
        cfg.per_report,
        cfg.floods,
        FLOOD_PER_SECOND,
        FLOOD_SECS,
        cfg.secs.as_secs(),
        cfg.warm.as_secs(),
        std::thread::available_parallelism().map_or(0, usize::from),
    ));
    md.push_str("| replicas | reports go to | reports/s offered | accepted/s | refused | no answer | merged/s per replica | CPU cores per replica | RSS MiB per replica | clients held per replica (max) | eval round mean | eval round p99 ≤ | detect→mitigate p50 | p99 | missed |\n");
    md.push_str(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let fmt_list = |xs: Vec<String>| xs.join(" / ");
    for r in runs {
        let pct = |p: f64| -> String {
            if r.detect.is_empty() {
                return "—".into();
            }
            let i = ((r.detect.len() as f64 * p).ceil() as usize).max(1) - 1;
            format!("{:.2} s", r.detect[i.min(r.detect.len() - 1)].as_secs_f64())
        };
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} | {:.0} ms | {} | {} | {} | {} |\n",
            r.replicas,
            if r.replicas == 1 { "the one replica" } else if r.direct { "the shard owner" } else { "any replica (forwarded)" },
            r.offered,
            r.accepted,
            r.refused,
            r.failed,
            fmt_list(r.per.iter().map(|p| format!("{:.1}", p.0)).collect()),
            fmt_list(r.per.iter().map(|p| format!("{:.2}", p.1)).collect()),
            fmt_list(r.per.iter().map(|p| format!("{:.0}", p.2)).collect()),
            r.per.iter().map(|p| p.3).max().unwrap_or(0),
            r.eval_mean * 1000.0,
            r.eval_p99.map_or("—".into(), |p| if p.is_finite() {
                format!("{:.0} ms", p * 1000.0)
            } else {
                "> top bucket".into()
            }),
            pct(0.5),
            pct(0.99),
            r.missed,
        ));
    }
    if let (Some(one), Some(most)) = (
        runs.iter().find(|r| r.replicas == 1),
        runs.iter().filter(|r| r.direct).max_by_key(|r| r.replicas),
    ) && most.replicas > 1
    {
        let max = |r: &Run| r.per.iter().map(|p| p.3).max().unwrap_or(0).max(1) as f64;
        let rss = |r: &Run| r.per.iter().map(|p| p.2).fold(0.0, f64::max);
        let capacity = max(one) / max(most);
        md.push_str(&format!(
            "\n**Capacity with {} replicas: {:.2}× one replica's clients ({})** (clients held by \
             the busiest replica, {} → {}; goal ≥ 3.5× with 4): namespaces go to shards by a \
             hash of their name and replicas even out the namespaces they hold, within one \
             shard's namespaces. Busiest replica's memory: {:.0} → {:.0} MiB. Same latency: \
             compare the evaluation round and detect→mitigate columns of the first and last \
             \"shard owner\" rows.\n",
            most.replicas,
            capacity,
            if most.replicas >= 4 && capacity >= 3.5 {
                "goal met in this run"
            } else if most.replicas >= 4 {
                "goal not met in this run"
            } else {
                "no 4-replica run"
            },
            max(one),
            max(most),
            rss(one),
            rss(most),
        ));
    }
    md.push_str(&format!(
        "\nNamespaces held per replica: {}.\n",
        runs.iter()
            .filter(|r| r.direct)
            .map(|r| format!(
                "{} replica(s): {}",
                r.replicas,
                fmt_list(r.per.iter().map(|p| p.4.to_string()).collect())
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let out = palisade_e2e::repo_root().join("bench/results/scale.md");
    std::fs::write(&out, &md)?;
    eprintln!("{md}\nwritten to {}", out.display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    palisade_e2e::install_crypto_provider();
    let cfg = Cfg::from_env();
    let cp: &'static ControlPlane =
        Box::leak(Box::new(ControlPlane::start(StartOptions::for_tests())?));
    cp.install_crds();
    let mut spaces = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..cfg.namespaces {
        let ns = TempNs::new(cp, "scale").await;
        cp.kubectl_ok(&["label", "namespace", ns.name(), "palisade.dev/scale=true"])?;
        cp.apply(ns.name(), RULE)?;
        tokens.push(token(cp, ns.name(), "palisade"));
        spaces.push(ns);
    }
    let mut runs = Vec::new();
    for &r in &cfg.replicas {
        // One replica owns everything: both routes are the same.
        let routes: &[bool] = if r == 1 { &[true] } else { &[true, false] };
        for &direct in routes {
            eprintln!("collector-scale: {r} replica(s), direct {direct}");
            let run = run_with(cp, &cfg, &spaces, &tokens, r, direct).await?;
            eprintln!("{run:?}");
            runs.push(run);
        }
    }
    write(&cfg, &runs)
}
