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
//! Prints one JSON object per run on stdout.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)] // The JSON line on stdout is this tool's output.

use std::io::{self, Read, Write};
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

/// The timerfd's token; connections use their index.
const TIMER: Token = Token(usize::MAX);

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Open-loop HTTP/1.1 load generator (HdrHistogram)"
)]
struct Args {
    /// Target address (loopback).
    #[arg(long)]
    addr: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Total requests per second; 0 = closed-loop saturation.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Warm-up seconds, not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// A request header `NAME` whose value differs on every request (`v` and a sequence
    /// number), as the API keys of many clients sharing a load balancer's connection do.
    #[arg(long = "vary-header")]
    vary_header: Option<String>,
    /// Label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Requests answered (or failed) on this connection; the next one is number `k`.
    k: u64,
    in_flight: bool,
    /// When the in-flight request was due (open loop) or sent (closed loop).
    started: Instant,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.duration <= 0.0 {
        bail!("--connections and --duration must be positive");
    }
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: palisade-bench/1\r\nAccept: */*\r\n",
        args.path, args.addr
    );
    for h in &args.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    // Without `--vary-header` the request is the same bytes every time; with it, this head
    // is completed per request by the varying header and the blank line.
    let head = request.clone().into_bytes();
    request.push_str("\r\n");
    let request = request.into_bytes();
    let mut varied = Vec::with_capacity(head.len() + 64);
    let mut sequence = 0u64;

    let mut poll = Poll::new()?;
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    poll.registry()
        .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;
    let mut conns = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        conns.push(connect(&poll, args.addr, i)?);
    }
    // Give the connects a moment to finish before the clock starts.
    std::thread::sleep(Duration::from_millis(50));

    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3)?;
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let record_from = start + Duration::from_secs_f64(args.warmup);
    let end = record_from + Duration::from_secs_f64(args.duration);
    let c_total = args.connections as f64;
    let due = |c: usize, k: u64| -> Instant {
        start + Duration::from_secs_f64((c as f64 + k as f64 * c_total) / args.rate as f64)
    };
    let (mut errors, mut non2xx) = (0u64, 0u64);
    let mut scratch = vec![0u8; 64 * 1024];

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for (i, conn) in conns.iter_mut().enumerate() {
            if conn.in_flight {
                continue;
            }
            let when = if args.rate == 0 { now } else { due(i, conn.k) };
            if when > now || when >= end {
                continue;
            }
            conn.started = if args.rate == 0 { Instant::now() } else { when };
            conn.in_flight = true;
            let bytes = match &args.vary_header {
                None => &request,
                Some(name) => {
                    use std::io::Write as _;
                    sequence += 1;
                    varied.clear();
                    varied.extend_from_slice(&head);
                    write!(varied, "{name}: v{sequence:016}\r\n\r\n")?;
                    &varied
                }
            };
            if write_all(&mut conn.stream, bytes).is_err() {
                errors += 1;
                *conn = reconnect(&poll, args.addr, i, conn)?;
            }
        }
        // Wake for the next due request (open loop) or for answers, whichever comes first.
        let next = (args.rate > 0)
            .then(|| {
                conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !c.in_flight)
                    .map(|(i, c)| due(i, c.k))
                    .min()
            })
            .flatten()
            .filter(|d| *d < end);
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
            let i = ev.token().0;
            let Some(conn) = conns.get_mut(i) else {
                continue;
            };
            let closed = drain(&mut conn.stream, &mut conn.buf, &mut scratch);
            let done = Instant::now();
            while let Some((len, status)) = parse_response(&conn.buf) {
                conn.buf.drain(..len);
                if conn.in_flight {
                    conn.in_flight = false;
                    if conn.started >= record_from {
                        hist.saturating_record(nanos(done - conn.started));
                        if !(200..300).contains(&status) {
                            non2xx += 1;
                        }
                    }
                    conn.k += 1;
                }
            }
            if closed {
                if conn.in_flight {
                    errors += 1;
                }
                *conn = reconnect(&poll, args.addr, i, conn)?;
            }
        }
    }

    // Requests due before the end but not answered: record what they waited so far.
    let mut incomplete = 0u64;
    let stop = Instant::now().min(end);
    if args.rate > 0 {
        for (i, conn) in conns.iter().enumerate() {
            let mut k = conn.k;
            loop {
                let d = due(i, k);
                if d >= end {
                    break;
                }
                if d >= record_from {
                    hist.saturating_record(nanos(stop.saturating_duration_since(d)));
                    incomplete += 1;
                }
                k += 1;
            }
        }
    }
    let completed = hist.len() - incomplete;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let out = serde_json::json!({
        "label": args.label,
        "addr": args.addr.to_string(),
        "rate": args.rate,
        "connections": args.connections,
        "duration_s": args.duration,
        "completed": completed,
        "incomplete": incomplete,
        "errors": errors,
        "non2xx": non2xx,
        "rps": completed as f64 / args.duration,
        "p50_us": us(0.5),
        "p90_us": us(0.9),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": hist.max() as f64 / 1000.0,
        "mean_us": hist.mean() / 1000.0,
    });
    println!("{out}");
    Ok(())
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
        k: 0,
        in_flight: false,
        started: Instant::now(),
    })
}

/// Replaces a broken connection; the failed request counts as answered so the schedule moves on.
fn reconnect(poll: &Poll, addr: SocketAddr, i: usize, old: &mut Conn) -> anyhow::Result<Conn> {
    let _ = poll.registry().deregister(&mut old.stream);
    let mut fresh = connect(poll, addr, i)?;
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
