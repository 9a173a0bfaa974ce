//! Tests that run the built binary: configuration errors, drain on SIGTERM, bounded memory
//! while streaming 100 MB each way.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_palisade-sidecar");

/// Starts the binary in front of `app`; returns the child and its proxy address.
fn spawn(app: SocketAddr, extra: &[&str]) -> (Child, SocketAddr) {
    let (child, addr, _log) = spawn_logged(app, extra);
    (child, addr)
}

/// [`spawn`], also returning the lines the sidecar logs from the one saying it listens on.
fn spawn_logged(
    app: SocketAddr,
    extra: &[&str],
) -> (Child, SocketAddr, std::sync::mpsc::Receiver<String>) {
    spawn_logged_with(app, extra, "info")
}

/// [`spawn_logged`] with this `RUST_LOG`.
fn spawn_logged_with(
    app: SocketAddr,
    extra: &[&str],
    rust_log: &str,
) -> (Child, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "plain",
        ])
        .args(["--upstream-port", &app.port().to_string()])
        .args(extra)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, listening) = loop {
        let line = lines
            .next()
            .expect("sidecar exited before listening")
            .unwrap();
        if line.contains("proxy listening") {
            let at = line.find("addr=").unwrap() + 5;
            let addr = line[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            break (addr, line);
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(listening).unwrap();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _receiver_gone = tx.send(line);
        }
    });
    (child, addr, rx)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn bad_config_exits_64_with_a_message() {
    let out = Command::new(BIN)
        .args(["--upstream-port", "8081", "--max-header-bytes", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-header-bytes 10 is below the minimum 8192"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["--upstream-port", "not-a-port"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "missing --upstream-port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let auto = std::thread::available_parallelism().unwrap().get();
    drains_in_flight_requests(&[], auto).await;
}

/// The single-threaded runtime (`--worker-threads 1`, what a container limited to one CPU
/// gets) serves concurrent requests and drains them like the multi-threaded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_thread_sigterm_drains_in_flight_requests() {
    drains_in_flight_requests(&["--worker-threads", "1"], 1).await;
}

async fn drains_in_flight_requests(extra: &[&str], workers: usize) {
    let arrived = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let app = {
        let arrived = arrived.clone();
        app(move |_, _| {
            let arrived = arrived.clone();
            let mut release = release_rx.clone();
            async move {
                arrived.fetch_add(1, Ordering::SeqCst);
                release.wait_for(|r| *r).await.unwrap();
                Response::new(full("done"))
            }
        })
        .await
    };
    let (mut child, addr, log) = spawn_logged(app, &[&["--drain-grace", "60s"], extra].concat());
    let listening = log.recv().unwrap();
    assert!(
        listening.contains(&format!("workers={workers}")),
        "{listening}"
    );
    const N: usize = 8;
    let requests: Vec<_> = (0..N).map(|_| tokio::spawn(get_owned(addr))).collect();
    while arrived.load(Ordering::SeqCst) < N {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    sigterm(&child);
    // The listener closes: new connections are refused once the drain started.
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    release_tx.send(true).unwrap();
    for r in requests {
        let (status, connection, body) = r.await.unwrap();
        // Answered whole, and told the connection ends with it.
        assert_eq!(
            (status, connection.as_str(), body.as_str()),
            (200, "close", "done")
        );
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

/// Status, `Connection` field and body of `GET /slow`.
async fn get_owned(addr: SocketAddr) -> (u16, String, String) {
    let (s, h, b) = get(addr, "/slow", &[]).await;
    let connection = h
        .get(http::header::CONNECTION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (s, connection, b)
}

/// 100 MB up and 100 MB down through the binary; its peak RSS stays far below that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_with_bounded_memory() {
    const TOTAL: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let app = app(|req, _| async move {
        if req.uri().path() == "/download" {
            let chunks = futures::stream::iter(
                (0..TOTAL / CHUNK)
                    .map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![7u8; CHUNK])))),
            );
            return Response::new(StreamBody::new(chunks).boxed());
        }
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.unwrap().into_data() {
                n += d.len();
            }
        }
        Response::new(full(n.to_string()))
    })
    .await;
    let (mut child, addr) = spawn(app, &[]);
    let mut client = h1(addr).await;
    let chunks = futures::stream::iter(
        (0..TOTAL / CHUNK).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![1u8; CHUNK])))),
    );
    let req = Request::post("/upload")
        .header("host", "a")
        .body(StreamBody::new(chunks).boxed())
        .unwrap();
    let (status, _, body) = read(client.send_request(req).await.unwrap()).await;
    assert_eq!((status, body), (200, TOTAL.to_string()));
    let req = Request::get("/download")
        .header("host", "a")
        .body(full(""))
        .unwrap();
    let mut client = h1(addr).await;
    let mut body = client.send_request(req).await.unwrap().into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            n += d.len();
        }
    }
    assert_eq!(n, TOTAL);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let hwm_kb: usize = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        hwm_kb < 40 * 1024,
        "peak RSS {hwm_kb} kB for 200 MB streamed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A deny is logged as one `palisade::decision` line for a SIEM, with the action, the status
/// and the client's identity as truncated hashes only: the API key never appears in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_is_logged_without_the_key_in_clear() {
    use support::bundle::{deny, sha, when, write};
    const KEY: &str = "k-partner-secret-0042";
    let dir = tempfile::tempdir().unwrap();
    let hash = write(
        dir.path(),
        vec![deny("deny-partner", when(|c| c.api_keys = vec![sha(KEY)]))],
        1,
    );
    let path = dir.path().to_str().unwrap().to_owned();
    let app = echo_app().await;
    let (mut child, addr, log) =
        spawn_logged(app, &["--bundle-path", &path, "--bundle-poll", "20ms"]);
    // The bundle is picked up asynchronously; a request before it is answered by the app.
    let deadline = std::time::Instant::now() + patience();
    let mut status = 0;
    while std::time::Instant::now() < deadline {
        status = get(addr, "/orders", &[("x-api-key", KEY)]).await.0;
        if status == 403 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 403, "bundle {hash} never denied the key");
    let line = loop {
        let line = log
            .recv_timeout(patience())
            .expect("no decision line logged");
        if line.contains("palisade::decision") {
            break line;
        }
    };
    child.kill().unwrap();
    let _ = child.wait();
    let short = &sha(KEY)["sha256:".len().."sha256:".len() + 16];
    for want in [
        "verdict=\"deny\"",
        "deny-partner",
        "status=403",
        "path=\"/orders\"",
        short,
    ] {
        assert!(line.contains(want), "no `{want}` in {line}");
    }
    assert!(!line.contains(KEY), "the key is logged in clear: {line}");
}

/// The first `palisade::decision` line of `log`.
fn next_decision(log: &std::sync::mpsc::Receiver<String>) -> String {
    loop {
        let line = log
            .recv_timeout(patience())
            .expect("no decision line logged");
        if line.contains("palisade::decision") {
            return line;
        }
    }
}

/// Allowed requests are logged only when the decision target is enabled at debug level, and
/// then name the allow that decided them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_decisions_are_logged_only_when_asked_for() {
    use support::bundle::{allow, deny, when, write};
    let dir = tempfile::tempdir().unwrap();
    let hash = write(
        dir.path(),
        vec![
            allow(
                "allow-partner",
                when(|c| c.user_agents = vec!["partner".into()]),
            ),
            deny("deny-bot", when(|c| c.user_agents = vec!["bot".into()])),
        ],
        1,
    );
    let path = dir.path().to_str().unwrap().to_owned();
    for (rust_log, logged) in [("info", false), ("info,palisade::decision=debug", true)] {
        let app = echo_app().await;
        let (mut child, addr, log) = spawn_logged_with(
            app,
            &["--bundle-path", &path, "--bundle-poll", "20ms"],
            rust_log,
        );
        let deadline = std::time::Instant::now() + patience();
        while get(addr, "/", &[("user-agent", "bot")]).await.0 != 403 {
            assert!(
                std::time::Instant::now() < deadline,
                "bundle {hash} never denied"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(next_decision(&log).contains("verdict=\"deny\""));
        assert_eq!(get(addr, "/", &[("user-agent", "partner")]).await.0, 200);
        assert_eq!(get(addr, "/", &[("user-agent", "bot")]).await.0, 403);
        let line = next_decision(&log);
        if logged {
            assert!(
                line.contains("verdict=\"allow\"") && line.contains("allow-partner"),
                "{line}"
            );
        } else {
            assert!(
                line.contains("verdict=\"deny\""),
                "no allow line at info: {line}"
            );
        }
        child.kill().unwrap();
        let _ = child.wait();
    }
}
