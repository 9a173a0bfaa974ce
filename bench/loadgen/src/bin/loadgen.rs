//! Open-loop HTTP/1.1 load generator for `make bench`, in the manner of wrk2.
//!
//! `--rate R` spreads R requests per second over `--connections C` keep-alive connections:
//! request k of connection c is due at `start + (c + k·C) / R`. Latency is measured from that
//! due time, not from when the request could be sent, so a stalled server is charged for
//! every request it delayed (no coordinated omission). Requests still unanswered at the end
//! are recorded with the time they had waited so far (a lower bound) and counted as
//! `incomplete`. `--rate 0` is the closed-loop saturation mode: each connection sends its next
//! request as soon as the previous answer is in; latency is then from the send.
//!
//! One thread waits in epoll on non-blocking sockets and a timerfd armed (in nanoseconds) for
//! the next due request, so sends happen on time and answers are stamped when they arrive,
//! without busy-polling (a spinning generator loses the CPU to anything else on its core).
//! Run it on a core of its own (`taskset`).
//! Prints one JSON object per run (per target of an interleaved run) on stdout, with the
//! run's histogram (`histogram`: `[value in ns, count]` per recorded bucket). `--pool` reads
//! such lines and prints, per label and rate, the percentiles of all their samples together.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)] // The JSON line on stdout is this tool's output.

use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

/// The timerfd's token; connections use `target · connections + index`.
const TIMER: Token = Token(usize::MAX);
/// A connection's slice before its target's first turn.
const NO_SLICE: usize = usize::MAX;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Open-loop HTTP/1.1 load generator (HdrHistogram)"
)]
struct Args {
    /// Target address (loopback); or `--target` (repeatable) for an interleaved run.
    #[arg(
        long,
        required_unless_present_any = ["targets", "pool"],
        conflicts_with = "targets"
    )]
    addr: Option<SocketAddr>,
    /// Sends nothing: reads result lines of earlier runs on stdin (this tool's output) and
    /// prints one line per label and rate with the percentiles of all their samples
    /// together, as one histogram of the rounds of a benchmark (a p99 of every sample
    /// rather than a median of each round's).
    #[arg(long, conflicts_with_all = ["addr", "targets"])]
    pool: bool,
    /// `LABEL=ADDR`, repeatable: an interleaved run. The targets take turns in slices of
    /// `--slice` seconds (each cycle gives every target one slice, in an order rotated and
    /// reversed from cycle to cycle); `--rate` is each target's rate in its slices, and
    /// `--duration` the seconds measured for each. A slow drift of the host (another
    /// tenant, a frequency change) then falls on every target alike instead of on the
    /// one whose turn it was. One JSON line per target.
    #[arg(long = "target", value_parser = parse_target)]
    targets: Vec<(String, SocketAddr)>,
    /// Seconds of each slice of an interleaved run.
    #[arg(long, default_value_t = 1.0)]
    slice: f64,
    /// Seconds at the start of each slice that are not recorded (the target's connections
    /// were idle while the others had their turn).
    #[arg(long, default_value_t = 0.1)]
    slice_warmup: f64,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Total requests per second; 0 = closed-loop saturation.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Keep-alive connections (to each target).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Warm-up seconds, not recorded (an interleaved run: one unrecorded cycle first).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// A request header `NAME` whose value differs on every request (`v` and a sequence
    /// number), as the API keys of many clients sharing a load balancer's connection do.
    #[arg(long = "vary-header")]
    vary_header: Option<String>,
    /// Label copied into the JSON output (single-target run).
    #[arg(long, default_value = "")]
    label: String,
}

fn parse_target(s: &str) -> Result<(String, SocketAddr), String> {
    let (label, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected LABEL=ADDR"))?;
    let addr = addr.parse().map_err(|e| format!("`{s}`: {e}"))?;
    Ok((label.to_owned(), addr))
}

/// When each slice runs and whose turn it is. A single-target run is one slice spanning
/// the whole run, its warm-up the slice's.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    targets: usize,
    slice: Duration,
    /// The start of each slice that is not recorded.
    slice_warmup: Duration,
    /// Leading cycles that are not recorded at all.
    warm_cycles: usize,
    cycles: usize,
}

impl Schedule {
    fn slices(&self) -> usize {
        self.targets * self.cycles
    }

    /// The target of slice `s`: cycle `j` takes the targets rotated by `j`, reversed when
    /// `j` is odd, so no target has two turns in a row and none always follows the same one.
    fn target(&self, s: usize) -> usize {
        let (cycle, pos) = (s / self.targets, s % self.targets);
        let pos = if cycle % 2 == 1 {
            self.targets - 1 - pos
        } else {
            pos
        };
        (pos + cycle) % self.targets
    }

    /// Offset of slice `s`'s start from the run's start.
    fn start(&self, s: usize) -> Duration {
        self.slice * u32::try_from(s).unwrap_or(u32::MAX)
    }

    /// Offset from the run's start from which slice `s` is recorded (`None`: not at all).
    fn recorded_from(&self, s: usize) -> Option<Duration> {
        (s / self.targets >= self.warm_cycles).then(|| self.start(s) + self.slice_warmup)
    }

    /// Seconds recorded for each target.
    fn measured(&self) -> f64 {
        (self.cycles - self.warm_cycles) as f64 * (self.slice - self.slice_warmup).as_secs_f64()
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The slice the connection's schedule counts from: the next request is that slice's
    /// number `k`, counting requests answered (or failed) on this connection.
    slice: usize,
    k: u64,
    in_flight: bool,
    /// The in-flight request is of an earlier turn than `slice`.
    stale: bool,
    /// Whether the in-flight request is recorded (it was due after its slice's warm-up).
    record: bool,
    /// When the in-flight request was due (open loop) or sent (closed loop).
    started: Instant,
}

/// One target: its connections and what was measured of it.
struct Target {
    label: String,
    addr: SocketAddr,
    conns: Vec<Conn>,
    hist: Histogram<u64>,
    errors: u64,
    non2xx: u64,
    incomplete: u64,
}

impl Target {
    fn new(label: String, addr: SocketAddr, conns: Vec<Conn>) -> anyhow::Result<Self> {
        Ok(Self {
            label,
            addr,
            conns,
            hist: histogram()?,
            errors: 0,
            non2xx: 0,
            incomplete: 0,
        })
    }

    /// Records the requests of a connection's turn `window` (`[recorded from, end)`) that
    /// were due but never sent (the connection was still waiting for an earlier answer when
    /// the turn, and the late sends after it, were over), with what they had waited when
    /// the turn ended or at `now` if sooner: a lower bound, so a stalled target is charged
    /// for every request it delayed and never for the other targets' turns. `from` is the
    /// first such request's number.
    fn omitted(
        &mut self,
        due: impl Fn(u64) -> Instant,
        from: u64,
        window: (Instant, Instant),
        now: Instant,
    ) {
        let until = now.min(window.1);
        let mut k = from;
        loop {
            let d = due(k);
            if d >= until {
                break;
            }
            if d >= window.0 {
                self.hist
                    .saturating_record(nanos(until.saturating_duration_since(d)));
                self.incomplete += 1;
            }
            k += 1;
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.pool {
        for line in pool(io::stdin().lock())? {
            println!("{line}");
        }
        return Ok(());
    }
    if args.connections == 0 || args.duration <= 0.0 {
        bail!("--connections and --duration must be positive");
    }
    let interleaved = args.addr.is_none();
    let targets: Vec<(String, SocketAddr)> = match args.addr {
        Some(addr) => vec![(args.label.clone(), addr)],
        None => args.targets.clone(),
    };
    let schedule = if interleaved {
        let measured = args.slice - args.slice_warmup;
        if args.slice_warmup < 0.0 || measured <= 0.0 {
            bail!("--slice must be longer than --slice-warmup");
        }
        let warm_cycles = usize::from(args.warmup > 0.0);
        Schedule {
            targets: targets.len(),
            slice: Duration::from_secs_f64(args.slice),
            slice_warmup: Duration::from_secs_f64(args.slice_warmup),
            warm_cycles,
            cycles: warm_cycles + (args.duration / measured).ceil() as usize,
        }
    } else {
        Schedule {
            targets: 1,
            slice: Duration::from_secs_f64(args.warmup + args.duration),
            slice_warmup: Duration::from_secs_f64(args.warmup),
            warm_cycles: 0,
            cycles: 1,
        }
    };
    // Each target's request (its own `Host`). Without `--vary-header` it is the same bytes
    // every time; with it, the head is completed per request by the varying header and the
    // blank line.
    let mut heads = Vec::with_capacity(targets.len());
    let mut requests = Vec::with_capacity(targets.len());
    for (_, addr) in &targets {
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: palisade-bench/1\r\nAccept: */*\r\n",
            args.path
        );
        for h in &args.headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        requests.push(format!("{head}\r\n").into_bytes());
        heads.push(head.into_bytes());
    }
    let mut varied = Vec::with_capacity(heads[0].len() + 64);
    let mut sequence = 0u64;

    let mut poll = Poll::new()?;
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    poll.registry()
        .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;
    let cn = args.connections;
    let mut all = Vec::with_capacity(targets.len());
    for (t, (label, addr)) in targets.iter().enumerate() {
        let mut conns = Vec::with_capacity(cn);
        for i in 0..cn {
            conns.push(connect(&poll, *addr, t * cn + i)?);
        }
        all.push(Target::new(label.clone(), *addr, conns)?);
    }
    // Give the connects a moment to finish before the clock starts.
    std::thread::sleep(Duration::from_millis(50));

    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let end = start + schedule.start(schedule.slices());
    let c_total = cn as f64;
    let rate = args.rate;
    // Request k of connection c in slice s is due at the slice's start + (c + k·C) / R.
    let due = |s: usize, c: usize, k: u64| -> Instant {
        start
            + schedule.start(s)
            + Duration::from_secs_f64((c as f64 + k as f64 * c_total) / rate as f64)
    };
    let window = |s: usize| -> (Instant, Instant) {
        let from = schedule.recorded_from(s).map_or(end, |r| start + r);
        (from, start + schedule.start(s + 1))
    };
    let mut scratch = vec![0u8; 64 * 1024];

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let s = (((now - start).as_secs_f64() / schedule.slice.as_secs_f64()) as usize)
            .min(schedule.slices() - 1);
        // The turn in progress, then (open loop) the one before it: a request due just
        // before that turn's end is sent late, when the loop woke after the end, and charged
        // from its due time like any late request, rather than left unsent.
        let late = (rate > 0 && s > 0).then(|| s - 1);
        for (slice, current) in std::iter::once((s, true)).chain(late.map(|l| (l, false))) {
            let t = schedule.target(slice);
            let slice_end = start + schedule.start(slice + 1);
            let recorded_from = window(slice).0;
            let target = &mut all[t];
            for i in 0..cn {
                let conn = &mut target.conns[i];
                if current && conn.slice != slice {
                    // The connection's first moment in this turn: what its last turn left
                    // unsent (its connection still waiting) is charged, and its schedule
                    // starts again; an answer still due belongs to that last turn.
                    let (old, from) = (conn.slice, conn.k + u64::from(conn.in_flight));
                    (conn.slice, conn.k, conn.stale) = (slice, 0, conn.in_flight);
                    if rate > 0 && old != NO_SLICE && old < slice {
                        target.omitted(|k| due(old, i, k), from, window(old), now);
                    }
                } else if conn.slice != slice {
                    continue;
                }
                let conn = &mut target.conns[i];
                if conn.in_flight {
                    continue;
                }
                let when = if rate == 0 {
                    now
                } else {
                    due(slice, i, conn.k)
                };
                if when > now || when >= slice_end {
                    continue;
                }
                conn.started = if rate == 0 { Instant::now() } else { when };
                conn.in_flight = true;
                conn.record = when >= recorded_from;
                let bytes = match &args.vary_header {
                    None => &requests[t],
                    Some(name) => {
                        use std::io::Write as _;
                        sequence += 1;
                        varied.clear();
                        varied.extend_from_slice(&heads[t]);
                        write!(varied, "{name}: v{sequence:016}\r\n\r\n")?;
                        &varied
                    }
                };
                if write_all(&mut conn.stream, bytes).is_err() {
                    target.errors += 1;
                    let fresh = reconnect(&poll, target.addr, t * cn + i, conn)?;
                    target.conns[i] = fresh;
                }
            }
        }
        let t = schedule.target(s);
        let slice_end = start + schedule.start(s + 1);
        let target = &all[t];
        // Wake for the next due request (open loop), the slice's end, or answers,
        // whichever comes first.
        let next = (rate > 0)
            .then(|| {
                target
                    .conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !c.in_flight)
                    .map(|(i, c)| due(s, i, c.k))
                    .min()
            })
            .flatten()
            .filter(|d| *d < slice_end)
            .or((schedule.slices() > 1).then_some(slice_end));
        let now = Instant::now();
        let wait = next.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(now)
                .max(Duration::from_nanos(1))
        });
        timerfd_settime(
            &timer,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: wait.as_secs() as i64,
                    tv_nsec: i64::from(wait.subsec_nanos()),
                },
            },
        )?;
        poll.poll(&mut events, Some(end.saturating_duration_since(now)))?;
        for ev in &events {
            if ev.token() == TIMER {
                let mut ticks = [0u8; 8];
                let _ = rustix::io::read(&timer, &mut ticks);
                continue;
            }
            let (t, i) = (ev.token().0 / cn, ev.token().0 % cn);
            let Some(target) = all.get_mut(t) else {
                continue;
            };
            let conn = &mut target.conns[i];
            let closed = drain(&mut conn.stream, &mut conn.buf, &mut scratch);
            let done = Instant::now();
            while let Some((len, status)) = parse_response(&conn.buf) {
                conn.buf.drain(..len);
                if conn.in_flight {
                    conn.in_flight = false;
                    if conn.record {
                        target.hist.saturating_record(nanos(done - conn.started));
                        if !(200..300).contains(&status) {
                            target.non2xx += 1;
                        }
                    }
                    // The answer to a request of the connection's last turn does not move
                    // the schedule of its current one.
                    if !std::mem::take(&mut conn.stale) {
                        conn.k += 1;
                    }
                }
            }
            if closed {
                if conn.in_flight {
                    target.errors += 1;
                }
                let fresh = reconnect(&poll, target.addr, t * cn + i, conn)?;
                target.conns[i] = fresh;
            }
        }
    }

    // Requests due before the end but not answered: record what they waited so far.
    let stop = Instant::now().min(end);
    for target in &mut all {
        for i in 0..cn {
            let conn = &target.conns[i];
            let (s, k, in_flight, record) = (conn.slice, conn.k, conn.in_flight, conn.record);
            if rate == 0 || s == NO_SLICE {
                continue;
            }
            if in_flight && record {
                let waited = stop.saturating_duration_since(target.conns[i].started);
                target.hist.saturating_record(nanos(waited));
                target.incomplete += 1;
            }
            target.omitted(|k| due(s, i, k), k + u64::from(in_flight), window(s), stop);
        }
    }
    let measured = if interleaved {
        schedule.measured()
    } else {
        args.duration
    };
    for target in &all {
        let hist = &target.hist;
        let completed = hist.len() - target.incomplete;
        let mut out = serde_json::json!({
            "label": target.label,
            "addr": target.addr.to_string(),
            "rate": rate,
            "connections": cn,
            "duration_s": measured,
            "active_s": schedule.cycles as f64 * schedule.slice.as_secs_f64(),
            "completed": completed,
            "incomplete": target.incomplete,
            "errors": target.errors,
            "non2xx": target.non2xx,
            "rps": completed as f64 / measured,
            "histogram": buckets(hist),
        });
        percentiles(hist, &mut out);
        println!("{out}");
    }
    Ok(())
}

/// Adds a histogram's percentiles (µs) to a result line.
fn percentiles(hist: &Histogram<u64>, out: &mut serde_json::Value) {
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    out["p50_us"] = us(0.5).into();
    out["p90_us"] = us(0.9).into();
    out["p99_us"] = us(0.99).into();
    out["p999_us"] = us(0.999).into();
    out["max_us"] = (hist.max() as f64 / 1000.0).into();
    out["mean_us"] = (hist.mean() / 1000.0).into();
}

/// A histogram as `[value in ns, count]` per recorded bucket (the bucket's highest
/// equivalent value): enough to rebuild it, bucket for bucket, in [`pool`].
fn buckets(hist: &Histogram<u64>) -> Vec<[u64; 2]> {
    hist.iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(
        1_000,
        120_000_000_000,
        3,
    )?)
}

/// Pools result lines by label and rate (in the order first seen): one line each with the
/// number of runs and samples and the percentiles of all the samples together.
fn pool(input: impl BufRead) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut pooled: Vec<((String, u64), u64, Histogram<u64>)> = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("line {}: not JSON", n + 1))?;
        let label = r["label"].as_str().unwrap_or_default().to_owned();
        let rate = r["rate"].as_u64().unwrap_or_default();
        let Some(hist) = r["histogram"].as_array() else {
            bail!(
                "line {} ({label} at {rate}/s): no `histogram` to pool",
                n + 1
            );
        };
        let key = (label, rate);
        let i = match pooled.iter().position(|(k, ..)| *k == key) {
            Some(i) => i,
            None => {
                pooled.push((key, 0, histogram()?));
                pooled.len() - 1
            }
        };
        let (key, runs, h) = &mut pooled[i];
        *runs += 1;
        for b in hist {
            let (Some(value), Some(count)) = (b[0].as_u64(), b[1].as_u64()) else {
                bail!(
                    "line {} ({} at {}/s): a bucket is not [ns, count]",
                    n + 1,
                    key.0,
                    key.1
                );
            };
            h.saturating_record_n(value, count);
        }
    }
    Ok(pooled
        .into_iter()
        .map(|((label, rate), runs, h)| {
            let mut out = serde_json::json!({
                "label": label,
                "rate": rate,
                "runs": runs,
                "samples": h.len(),
            });
            percentiles(&h, &mut out);
            out
        })
        .collect())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn connect(poll: &Poll, addr: SocketAddr, i: usize) -> anyhow::Result<Conn> {
    let std_stream =
        std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    std_stream.set_nodelay(true)?;
    std_stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(std_stream);
    poll.registry()
        .register(&mut stream, Token(i), Interest::READABLE)?;
    Ok(Conn {
        stream,
        buf: Vec::with_capacity(4096),
        slice: NO_SLICE,
        k: 0,
        in_flight: false,
        stale: false,
        record: false,
        started: Instant::now(),
    })
}

/// Replaces a broken connection; the failed request counts as answered so the schedule moves on.
fn reconnect(poll: &Poll, addr: SocketAddr, i: usize, old: &mut Conn) -> anyhow::Result<Conn> {
    let _ = poll.registry().deregister(&mut old.stream);
    let mut fresh = connect(poll, addr, i)?;
    fresh.slice = old.slice;
    fresh.k = old.k + u64::from(old.in_flight);
    Ok(fresh)
}

fn write_all(stream: &mut TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads until the socket would block (edge-triggered); returns whether the peer closed.
fn drain(stream: &mut TcpStream, buf: &mut Vec<u8>, scratch: &mut [u8]) -> bool {
    loop {
        match stream.read(scratch) {
            Ok(0) => return true,
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Length and status of the first complete response in `buf` (Content-Length or chunked).
fn parse_response(buf: &[u8]) -> Option<(usize, u16)> {
    let head_end = find(buf, b"\r\n\r\n", 0)? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status = head.get(9..12)?.parse().ok()?;
    let mut len = 0usize;
    let mut chunked = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    if chunked {
        // The last chunk `0\r\n\r\n` (no trailers), at the body's start or after a CRLF.
        let mut from = head_end;
        loop {
            let p = find(buf, b"0\r\n\r\n", from)?;
            if p == head_end || buf[p - 1] == b'\n' {
                return Some((p + 5, status));
            }
            from = p + 1;
        }
    }
    (buf.len() >= head_end + len).then_some((head_end + len, status))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn schedule(targets: usize, cycles: usize) -> Schedule {
        Schedule {
            targets,
            slice: Duration::from_secs(1),
            slice_warmup: Duration::from_millis(100),
            warm_cycles: 1,
            cycles,
        }
    }

    /// Every cycle gives each target exactly one turn; no target has two turns in a row,
    /// and across cycles each target follows more than one other.
    #[test]
    fn targets_take_turns_fairly() {
        for n in 2..=9 {
            let sc = schedule(n, 12);
            for cycle in 0..sc.cycles {
                let mut turns: Vec<usize> = (0..n).map(|pos| sc.target(cycle * n + pos)).collect();
                turns.sort_unstable();
                assert_eq!(turns, (0..n).collect::<Vec<_>>(), "cycle {cycle} of {n}");
            }
            for s in 1..sc.slices() {
                assert_ne!(sc.target(s - 1), sc.target(s), "slice {s} of {n}");
            }
            if n > 2 {
                let before_first: std::collections::HashSet<usize> = (1..sc.slices())
                    .filter(|&s| sc.target(s) == 0)
                    .map(|s| sc.target(s - 1))
                    .collect();
                assert!(before_first.len() > 1, "{n} targets: {before_first:?}");
            }
        }
    }

    /// The warm-up cycle is not recorded; every other slice is, after its own warm-up.
    #[test]
    fn the_warm_cycle_and_each_slices_start_are_not_recorded() {
        let sc = schedule(3, 4);
        assert_eq!(sc.slices(), 12);
        for s in 0..3 {
            assert_eq!(sc.recorded_from(s), None);
        }
        assert_eq!(sc.recorded_from(3), Some(Duration::from_millis(3100)));
        assert_eq!(sc.recorded_from(11), Some(Duration::from_millis(11100)));
        assert!((sc.measured() - 2.7).abs() < 1e-9, "{}", sc.measured());
    }

    /// Requests a stalled connection never sent are charged what they had waited when their
    /// turn ended (or now, if sooner), from the first recorded one: never the other
    /// targets' turns that passed before the connection's next turn.
    #[test]
    fn unsent_requests_are_charged_until_their_turn_ended() {
        let base = Instant::now();
        let due = |k: u64| base + Duration::from_millis(k);
        let window = (
            base + Duration::from_millis(2),
            base + Duration::from_millis(10),
        );
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut t = Target::new("t".into(), addr, Vec::new()).unwrap();
        // Six turns of others later: requests 2..=9 waited 8 ms down to 1 ms.
        t.omitted(due, 0, window, base + Duration::from_millis(60));
        assert_eq!(t.incomplete, 8);
        assert_eq!(t.hist.len(), 8);
        let ms = |v: u64| v as f64 / 1e6;
        assert!(
            (ms(t.hist.max()) - 8.0).abs() < 0.01,
            "{}",
            ms(t.hist.max())
        );
        assert!(
            (ms(t.hist.min()) - 1.0).abs() < 0.01,
            "{}",
            ms(t.hist.min())
        );
        // Before the turn's end (the run's end inside it): until now, from request `from`.
        let mut t = Target::new("t".into(), addr, Vec::new()).unwrap();
        t.omitted(due, 3, window, base + Duration::from_millis(5));
        assert_eq!(t.incomplete, 2);
        assert!(
            (ms(t.hist.max()) - 2.0).abs() < 0.01,
            "{}",
            ms(t.hist.max())
        );
    }

    /// Pooled rounds give the percentiles of one histogram of all their samples, label by
    /// label and rate by rate; a line without its histogram is refused, not skipped.
    #[test]
    fn pooled_rounds_are_the_percentiles_of_all_their_samples() {
        let round = |label: &str, rate: u64, from_us: u64, to_us: u64| {
            let mut h = histogram().unwrap();
            for us in from_us..to_us {
                h.record(us * 1000).unwrap();
            }
            let line = serde_json::json!({"label": label, "rate": rate, "histogram": buckets(&h)});
            (h, line.to_string())
        };
        // Two rounds of one contender that disagree (the second slower, with a tail) and a
        // second contender, at two rates.
        let (a1, l1) = round("a", 1000, 100, 1100);
        let (a2, l2) = round("a", 1000, 300, 2300);
        let (b, l3) = round("b", 1000, 50, 60);
        let (a5, l4) = round("a", 5000, 900, 910);
        let input = format!("{l1}\n{l3}\n\n{l2}\n{l4}\n");
        let out = pool(input.as_bytes()).unwrap();
        let keys: Vec<_> = out
            .iter()
            .map(|o| (o["label"].as_str().unwrap(), o["rate"].as_u64().unwrap()))
            .collect();
        assert_eq!(keys, [("a", 1000), ("b", 1000), ("a", 5000)]);
        let mut all = a1.clone();
        all.add(&a2).unwrap();
        for (o, h, runs) in [(&out[0], &all, 2), (&out[1], &b, 1), (&out[2], &a5, 1)] {
            assert_eq!(o["runs"], runs);
            assert_eq!(o["samples"], h.len());
            for (key, q) in [("p50_us", 0.5), ("p99_us", 0.99), ("p999_us", 0.999)] {
                let want = h.value_at_quantile(q) as f64 / 1000.0;
                assert_eq!(o[key].as_f64().unwrap(), want, "{key} of {o}");
            }
        }
        // Not a median of the rounds' p99s: the pooled p99 is the slower round's tail.
        let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
        assert!(out[0]["p99_us"].as_f64().unwrap() > p99(&a1));
        assert!((out[0]["p99_us"].as_f64().unwrap() - 2270.0).abs() < 5.0);

        let err = pool(r#"{"label":"a","rate":1000,"p99_us":1.0}"#.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no `histogram`"), "{err}");
    }

    #[test]
    fn targets_are_label_equals_address() {
        let (label, addr) = parse_target("nginx=127.0.0.1:8080").unwrap();
        assert_eq!((label.as_str(), addr.port()), ("nginx", 8080));
        assert!(parse_target("127.0.0.1:8080").is_err());
        assert!(parse_target("x=nowhere").is_err());
    }
}
