//! Sends the traffic model ([`palisade_detection::sim`]) over HTTP in real time.
//!
//! Virtual time maps 1:1 onto wall-clock time from the moment [`spawn`] is called: a
//! request due `offset` after the start of the model is sent `offset` after the call. Each
//! simulated client has its own source address: the model's client IPs are used as they
//! are, so give it an `ip_base` in 127.0.0.0/8 (Linux accepts any loopback source address)
//! and the sidecar sees one IP per client. Requests go to the targets in turn (as a Service
//! spreads them over pods), one connection per request (`Connection: close`), from a pool
//! of worker threads. Each request carries `X-Sim-Status` and `X-Sim-Bytes`, which the
//! `palisade-loadgen app` upstream answers with; other upstreams ignore them.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_detection::sim::{SimRequest, Traffic};
use socket2::{Domain, Protocol, Socket, Type};

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Source address (the simulated client).
    pub ip: IpAddr,
    /// Index of the target it went to.
    pub target: usize,
    /// Status received (0: no answer; see `error`).
    pub status: u16,
    /// When it was sent.
    pub sent: Instant,
    /// The attack it belongs to (ground truth).
    pub attack: Option<u32>,
    /// Why it got no answer.
    pub error: Option<String>,
}

/// How to send.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Where requests go (sidecars), in turn.
    pub targets: Vec<SocketAddr>,
    /// Worker threads (concurrent connections at most).
    pub workers: usize,
    /// Connect and read timeout per request.
    pub timeout: Duration,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            workers: 32,
            timeout: Duration::from_secs(5),
        }
    }
}

struct Job {
    req: SimRequest,
    target: usize,
    path: String,
    ua: String,
}

/// A running sender; [`Running::stop`] ends it early.
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    dispatcher: Option<JoinHandle<()>>,
    /// Requests that were due but could not be handed to a worker in time (late sends).
    pub late: Arc<AtomicU64>,
}

impl Running {
    /// Stops sending (requests in flight finish) and waits for the dispatcher.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
    }

    /// Waits until the model's traffic has all been sent.
    pub fn wait(mut self) {
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts sending `traffic` in real time; every outcome goes to `results` (dropped
/// silently once the receiver is gone).
pub fn spawn(mut traffic: Traffic, cfg: SendConfig, results: Sender<Outcome>) -> Running {
    assert!(!cfg.targets.is_empty(), "send: no target address");
    let stop = Arc::new(AtomicBool::new(false));
    let late = Arc::new(AtomicU64::new(0));
    let (jobs_tx, jobs_rx) = channel::<Job>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    for _ in 0..cfg.workers.max(1) {
        let rx = Arc::clone(&jobs_rx);
        let results = results.clone();
        let targets = cfg.targets.clone();
        let timeout = cfg.timeout;
        std::thread::spawn(move || worker(&rx, &targets, timeout, &results));
    }
    let stop2 = Arc::clone(&stop);
    let late2 = Arc::clone(&late);
    let n = cfg.targets.len();
    let dispatcher = std::thread::spawn(move || {
        let origin = Instant::now();
        let mut next = 0usize;
        while let Some(batch) = traffic.next_second() {
            for req in batch {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let due = origin + Duration::from_nanos(req.offset_ns.max(0) as u64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                } else if now - due > Duration::from_millis(100) {
                    late2.fetch_add(1, Ordering::Relaxed);
                }
                let job = Job {
                    req,
                    target: next % n,
                    path: traffic.path(req.path).to_owned(),
                    ua: traffic.user_agent(req.ua).to_owned(),
                };
                next += 1;
                if jobs_tx.send(job).is_err() {
                    return;
                }
            }
        }
    });
    Running {
        stop,
        dispatcher: Some(dispatcher),
        late,
    }
}

fn worker(
    jobs: &Mutex<Receiver<Job>>,
    targets: &[SocketAddr],
    timeout: Duration,
    results: &Sender<Outcome>,
) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let sent = Instant::now();
        let (status, error) = match request(&job, targets[job.target], timeout) {
            Ok(s) => (s, None),
            Err(e) => (0, Some(e)),
        };
        let outcome = Outcome {
            ip: job.req.ip,
            target: job.target,
            status,
            sent,
            attack: job.req.attack,
            error,
        };
        if results.send(outcome).is_err() {
            return;
        }
    }
}

/// One `GET` from the client's own source address; returns the status.
fn request(job: &Job, to: SocketAddr, timeout: Duration) -> Result<u16, String> {
    let from = SocketAddr::new(job.req.ip, 0);
    let domain = if to.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
    sock.bind(&from.into())
        .map_err(|e| format!("bind {from}: {e}"))?;
    sock.connect_timeout(&to.into(), timeout)
        .map_err(|e| format!("connect {to}: {e}"))?;
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let r = &job.req;
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: api.example\r\nUser-Agent: {}\r\nX-Sim-Status: {}\r\n\
         X-Sim-Bytes: {}\r\nConnection: close\r\n\r\n",
        job.path, job.ua, r.status, r.bytes
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if got.len() < 64 {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if got.len() >= 12 => {
                let _ = e;
                break;
            }
            Err(e) => return Err(format!("read from {to}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response from {to}: {text:?}"))
}
