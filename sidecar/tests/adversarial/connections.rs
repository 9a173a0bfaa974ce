//! What a client can hold: upgraded connections (only WebSocket is tunnelled; tunnels close
//! when idle and their bytes are counted), the admin port (connection limit, read timeout),
//! HTTP/2 connections (closed when idle although they answer the server's pings; the
//! upstream connections one of them can hold are bounded). Raw TCP where the bytes matter.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_detection::report::Report;
use palisade_sidecar::Sidecar;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use crate::support::*;

/// How long a bounded wait waits before the test fails (never a pass condition).
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` until it holds; fails the test after [`PATIENCE`] with `what`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `f`'s output, or a failed test after [`PATIENCE`] (a connection that should have closed).
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .expect("answered and closed in time")
}

/// The value of a sample of the sidecar's metrics (`name{labels}` as written), 0 if absent.
async fn sample(sc: &Sidecar, name: &str) -> f64 {
    metrics(sc)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Reads one response head (up to the blank line) byte by byte, leaving what follows.
async fn read_head(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ---------------------------------------------------------------------------------------
// Upgrades

/// The RFC 6455 §1.3 sample key and its accept value.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An application that switches to whatever protocol a request asks for in `Upgrade` (and
/// then speaks WebSocket, echoing each message), and answers any other request with a JSON
/// description: target and header names.
async fn upgrading_app() -> SocketAddr {
    app(|mut req, _| async move {
        if let Some(proto) = req.headers().get("upgrade").cloned() {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    ws_echo(TokioIo::new(up)).await;
                }
            });
            return Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", proto)
                .header("sec-websocket-accept", WS_ACCEPT)
                .body(full(""))
                .unwrap();
        }
        let desc = serde_json::json!({
            "target": req.uri().to_string(),
            "headers": req.headers().keys().map(|k| k.as_str().to_owned()).collect::<Vec<_>>(),
        });
        Response::new(full(desc.to_string()))
    })
    .await
}

/// Server side of WebSocket: echoes every data frame unmasked; answers a close frame with
/// one and ends; ends at EOF. Payloads under 126 bytes.
async fn ws_echo(mut io: impl AsyncRead + AsyncWrite + Unpin) {
    loop {
        let mut head = [0u8; 2];
        if io.read_exact(&mut head).await.is_err() {
            return;
        }
        let (opcode, len) = (head[0] & 0x0f, usize::from(head[1] & 0x7f));
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 && io.read_exact(&mut mask).await.is_err() {
            return;
        }
        let mut payload = vec![0u8; len];
        if io.read_exact(&mut payload).await.is_err() {
            return;
        }
        payload
            .iter_mut()
            .zip(mask.iter().cycle())
            .for_each(|(b, m)| *b ^= m);
        let mut frame = vec![0x80 | opcode, u8::try_from(len).unwrap()];
        frame.extend(payload);
        if io.write_all(&frame).await.is_err() || opcode == 0x8 {
            return;
        }
    }
}

/// A masked client text frame (RFC 6455 §5.2), payload under 126 bytes.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81, 0x80 | u8::try_from(payload.len()).unwrap()];
    f.extend(mask);
    f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    f
}

/// Opens a WebSocket through the sidecar with a handshake written by hand; returns the
/// stream positioned after the `101` head.
async fn ws_connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET /chat HTTP/1.1\r\nHost: api.example\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(handshake.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket\r\n"), "{head}");
    assert!(
        lower.contains(&format!(
            "sec-websocket-accept: {}",
            WS_ACCEPT.to_ascii_lowercase()
        )),
        "{head}"
    );
    s
}

/// Sends one message and reads its echo; returns (bytes sent, bytes received).
async fn ws_roundtrip(s: &mut TcpStream, msg: &[u8]) -> (u64, u64) {
    let frame = client_frame(msg);
    s.write_all(&frame).await.unwrap();
    let mut back = vec![0u8; 2 + msg.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back[0], 0x81);
    assert_eq!(&back[2..], msg);
    (frame.len() as u64, back.len() as u64)
}

/// `Upgrade: h2c` (with `HTTP2-Settings`) does not switch protocols: the sidecar speaks h2c by
/// prior knowledge only. Neither does any other upgrade that is not a WebSocket handshake:
/// each is forwarded as an ordinary request without `Upgrade` (the application would have
/// switched), and the connection goes on in HTTP/1.1.
#[tokio::test]
async fn only_websocket_handshakes_are_tunnelled() {
    let sc = sidecar(upgrading_app().await, &[]).await;
    let h2c = "GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
               Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n\
               GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let out = within(raw(sc.proxy_addr, h2c.as_bytes())).await;
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert!(!out.contains(" 101 "), "{out}");
    assert!(out.contains(r#""target":"/next""#), "{out}");
    let not_upgrades = [
        ("TLS/1.0", "GET", "HTTP/1.1", "Upgrade, close"),
        ("foo", "GET", "HTTP/1.1", "Upgrade, close"),
        ("h2c", "GET", "HTTP/1.1", "Upgrade, close"),
        ("websocket", "POST", "HTTP/1.1", "Upgrade, close"),
        ("websocket", "GET", "HTTP/1.0", "Upgrade"),
        ("websocket", "GET", "HTTP/1.1", "close"),
        ("websocketx", "GET", "HTTP/1.1", "Upgrade, close"),
    ];
    for (proto, method, version, connection) in not_upgrades {
        let req = format!(
            "{method} /plain {version}\r\nHost: a\r\nConnection: {connection}\r\nUpgrade: {proto}\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
        );
        let out = within(raw(sc.proxy_addr, req.as_bytes())).await;
        let case = format!("{method} {version} Upgrade: {proto}, Connection: {connection}");
        assert_eq!(out.get(8..13), Some(" 200 "), "{case}: {out}");
        let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
        let seen: serde_json::Value = serde_json::from_str(body).unwrap();
        let headers: Vec<String> = serde_json::from_value(seen["headers"].clone()).unwrap();
        assert!(
            !headers.iter().any(|h| h == "upgrade" || h == "connection"),
            "{case}: the application got {headers:?}"
        );
    }
    // CONNECT, a tunnel to anywhere, is not for a reverse proxy: 501 and closed, so bytes
    // sent behind it are never read as a request.
    let connect = "CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n\
                   GET /behind HTTP/1.1\r\nHost: a\r\n\r\n";
    let out = within(raw(sc.proxy_addr, connect.as_bytes())).await;
    assert!(out.starts_with("HTTP/1.1 501"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    // The handshake itself, tokens in any case and among others, is tunnelled.
    let mut s = TcpStream::connect(sc.proxy_addr).await.unwrap();
    let req = format!(
        "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, UPGRADE\r\nUpgrade: WebSocket\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws_roundtrip(&mut s, b"through").await;
}

/// A TCP listener that collects the sidecar's reports (a collector endpoint of the test).
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Report>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = app(move |req, _| {
        let tx = tx.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            tx.send(Report::from_json(&body).unwrap()).unwrap();
            Response::builder().status(202).body(full("")).unwrap()
        }
    })
    .await;
    (addr, rx)
}

/// A WebSocket tunnel carries real frames both ways; the bytes of each direction are counted
/// in the metrics as they move, and when the tunnel ends, detection counts the handshake as
/// one request whose response bytes are what the application sent through the tunnel.
#[tokio::test]
async fn a_tunnel_counts_its_bytes_both_ways_and_for_detection() {
    let (collector, mut reports) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let (addr, token) = (collector.to_string(), token.to_str().unwrap().to_owned());
    let args = [
        "--collector-addr",
        &addr,
        "--token-path",
        &token,
        "--pod-name",
        "api-0",
        "--report-interval",
        "50ms",
    ];
    let sc = sidecar(upgrading_app().await, &args).await;
    let mut s = ws_connect(sc.proxy_addr).await;
    let (mut to_app, mut to_client) = (0, 0);
    for msg in [&b"hello"[..], b"palisade", &[7u8; 125]] {
        let (sent, got) = ws_roundtrip(&mut s, msg).await;
        to_app += sent;
        to_client += got;
    }
    assert_eq!(sample(&sc, "palisade_sidecar_tunnels_open").await, 1.0);
    drop(s);
    eventually("the tunnel to end", || async {
        sample(
            &sc,
            "palisade_sidecar_tunnels_closed_total{reason=\"Ended\"}",
        )
        .await
            == 1.0
    })
    .await;
    #[allow(clippy::cast_precision_loss)]
    let expected = [("to_app", to_app as f64), ("to_client", to_client as f64)];
    for (direction, bytes) in expected {
        let name = format!("palisade_sidecar_tunnel_bytes_total{{direction=\"{direction}\"}}");
        assert_eq!(sample(&sc, &name).await, bytes, "{direction}");
    }
    assert_eq!(sample(&sc, "palisade_sidecar_tunnels_open").await, 0.0);
    let (mut requests, mut bytes) = (0, 0);
    while requests < 1 {
        let r = tokio::time::timeout(PATIENCE, reports.recv())
            .await
            .expect("a report")
            .unwrap();
        requests += r.totals.requests;
        bytes += r.totals.bytes;
    }
    assert_eq!((requests, bytes), (1, to_client));
}

/// A tunnel on which nothing moves for `--tunnel-idle-timeout` is closed; one that keeps
/// talking, over many times that period, is not.
#[tokio::test]
async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
    let sc = sidecar(upgrading_app().await, &["--tunnel-idle-timeout", "200ms"]).await;
    let mut busy = ws_connect(sc.proxy_addr).await;
    let mut quiet = ws_connect(sc.proxy_addr).await;
    ws_roundtrip(&mut quiet, b"then silence").await;
    let closed = tokio::spawn(async move {
        let mut rest = Vec::new();
        quiet.read_to_end(&mut rest).await.map(|_| rest)
    });
    // 40 messages 50 ms apart: 10 idle periods with traffic in each.
    for i in 0..40 {
        ws_roundtrip(&mut busy, format!("message {i}").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rest = tokio::time::timeout(PATIENCE, closed)
        .await
        .expect("the idle tunnel is closed")
        .unwrap();
    assert!(rest.is_ok_and(|r| r.is_empty()), "closed without bytes");
    ws_roundtrip(&mut busy, b"still open").await;
    assert_eq!(
        sample(
            &sc,
            "palisade_sidecar_tunnels_closed_total{reason=\"IdleTimeout\"}"
        )
        .await,
        1.0
    );
}

// ---------------------------------------------------------------------------------------
// The admin port

/// A connection to `addr` from the loopback address `from` (any 127/8 address is local).
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A client that starts a request head and never finishes it.
async fn slow_client(from: &str, addr: SocketAddr) -> TcpStream {
    let mut s = connect_from(from, addr).await;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Slow")
        .await
        .unwrap();
    s
}

/// What a connection that only reads gets (a client that also wrote might see a reset
/// instead of the refusal).
async fn refusal(from: &str, addr: SocketAddr) -> String {
    let mut s = connect_from(from, addr).await;
    let mut out = Vec::new();
    within(s.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /metrics` from `from` on a new connection that asks to close; what came back.
async fn scrape(from: &str, addr: SocketAddr) -> String {
    let mut s = connect_from(from, addr).await;
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = within(s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Slow clients hold at most `--admin-max-connections`, and one peer address at most half of
/// them: one more is answered 503 at once. A slot given back serves the next scrape, from
/// another address, while the other slow clients are still held.
#[tokio::test]
async fn the_admin_port_holds_a_bounded_number_of_connections() {
    let sc = sidecar(
        echo_app().await,
        &["--admin-max-connections", "4", "--admin-timeout", "60s"],
    )
    .await;
    let admin = sc.admin_addr;
    let _a = [
        slow_client("127.0.0.1", admin).await,
        slow_client("127.0.0.1", admin).await,
    ];
    let refused = refusal("127.0.0.1", admin).await;
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "a peer's share: {refused}"
    );
    let _b1 = slow_client("127.0.0.2", admin).await;
    let b2 = slow_client("127.0.0.2", admin).await;
    let refused = refusal("127.0.0.3", admin).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "every slot: {refused}");
    drop(b2);
    // The slot comes back when the server has seen the close: retried until then.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let served = loop {
        let got = scrape("127.0.0.3", admin).await;
        if got.starts_with("HTTP/1.1 200") {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never served: {got}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        served.contains("palisade_sidecar_requests_total"),
        "{served}"
    );
    // Refusals: the two above (and any retry that came before the slot was back).
    for reason in ["PeerFull", "Full"] {
        let name = format!("palisade_sidecar_admin_refused_total{{reason=\"{reason}\"}} ");
        let count = served
            .lines()
            .find_map(|l| l.strip_prefix(&name)?.parse::<u64>().ok());
        assert!(count.is_some_and(|c| c >= 1), "{reason}: {served}");
    }
}

/// An unfinished request head, and a connection left unused after its request, are closed by
/// `--admin-timeout`.
#[tokio::test]
async fn the_admin_port_closes_slow_and_unused_connections() {
    let sc = sidecar(echo_app().await, &["--admin-timeout", "200ms"]).await;
    let mut slow = slow_client("127.0.0.1", sc.admin_addr).await;
    let mut unused = TcpStream::connect(sc.admin_addr).await.unwrap();
    unused
        .write_all(b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut unused).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for (name, s) in [("slow", &mut slow), ("unused", &mut unused)] {
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("the {name} connection is closed"))
            .ok();
        let text = String::from_utf8_lossy(&rest);
        assert!(
            !text.contains("200"),
            "{name}: nothing but a timeout answer: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/2

/// An HTTP/2 connection to `addr` and the task driving it (it ends when the connection does).
async fn h2(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<AppBody>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

async fn h2_get(sender: &mut hyper::client::conn::http2::SendRequest<AppBody>, path: &str) -> u16 {
    let req = Request::get(format!("http://api.example{path}"))
        .body(full(""))
        .unwrap();
    read(sender.send_request(req).await.unwrap()).await.0
}

/// An HTTP/2 client that opens no stream is closed after `--idle-timeout`, although the
/// server pings it (every half idle timeout) and it answers every ping; one that keeps
/// sending requests, over many times that period, is not.
#[tokio::test]
async fn an_idle_h2_connection_is_closed_although_it_answers_pings() {
    let sc = sidecar(echo_app().await, &["--idle-timeout", "300ms"]).await;
    let (mut busy, busy_conn) = h2(sc.proxy_addr).await;
    let (mut quiet, quiet_conn) = h2(sc.proxy_addr).await;
    assert_eq!(h2_get(&mut quiet, "/once").await, 200);
    // 30 requests 50 ms apart: 5 idle periods with requests in each.
    for _ in 0..30 {
        assert_eq!(h2_get(&mut busy, "/busy").await, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(PATIENCE, quiet_conn)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .unwrap();
    assert!(!busy_conn.is_finished());
    assert_eq!(h2_get(&mut busy, "/still-open").await, 200);
}

/// A client that drips the HTTP/2 connection preface, one byte at a time faster than the
/// idle timeout (no header-read timeout runs before the protocol is known), is closed after
/// `--idle-timeout` as if it sent nothing, long before its preface is complete.
#[tokio::test]
async fn a_client_dripping_the_h2_preface_is_closed() {
    let sc = sidecar(echo_app().await, &["--idle-timeout", "300ms"]).await;
    let mut s = TcpStream::connect(sc.proxy_addr).await.unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut closed_after = None;
    for (i, byte) in preface[..preface.len() - 1].iter().enumerate() {
        let _ = s.write_all(&[*byte]).await;
        // Paces the drip (150 ms a byte) and notices the close meanwhile.
        let mut b = [0u8; 1];
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(150), s.read(&mut b)).await {
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "no answer to a partial preface"
            );
            closed_after = Some(i + 1);
            break;
        }
    }
    closed_after.expect("closed before the preface was complete");
}

/// An HTTP/2 client that asks for a large response and stops reading it holds a stream whose
/// DATA cannot move (flow control): it is closed after `--idle-timeout`, although it still
/// answers every ping.
#[tokio::test]
async fn an_h2_client_that_stops_reading_is_closed() {
    let big = app(|_, _| async move { Response::new(full(vec![0u8; 16 << 20])) }).await;
    let sc = sidecar(big, &["--idle-timeout", "300ms"]).await;
    let (mut sender, conn) = h2(sc.proxy_addr).await;
    let req = Request::get("http://api.example/big")
        .body(full(""))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The body is never read: the client's stream window fills and stays full.
    tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the stalled HTTP/2 connection is closed")
        .unwrap();
    drop(resp);
}

/// An application that holds every `/hold` request until the test lets it go, and notes how
/// many it held at once and on how many connections they came.
#[derive(Clone)]
struct Holding {
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    ports: Arc<Mutex<HashSet<u16>>>,
    gate: Arc<Semaphore>,
}

impl Holding {
    fn new() -> Self {
        Self {
            in_flight: Arc::default(),
            most: Arc::default(),
            ports: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }
}

async fn holding_app(h: Holding) -> SocketAddr {
    app(move |req, peer| {
        let h = h.clone();
        async move {
            if req.uri().path() == "/hold" {
                h.ports.lock().unwrap().insert(peer.port());
                let now = h.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                h.most.fetch_max(now, Ordering::SeqCst);
                h.gate.acquire().await.unwrap().forget();
                h.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Response::new(full("ok"))
        }
    })
    .await
}

/// One HTTP/2 connection with many concurrent requests to a slow application holds at most
/// `--max-concurrent-streams` upstream connections: the sidecar advertises that many streams,
/// the client queues the others, and every request is answered in the end.
#[tokio::test]
async fn one_h2_client_holds_a_bounded_number_of_upstream_connections() {
    let h = Holding::new();
    let sc = sidecar(
        holding_app(h.clone()).await,
        &["--max-concurrent-streams", "4"],
    )
    .await;
    let (mut sender, _conn) = h2(sc.proxy_addr).await;
    // One exchange first, so the client has applied the sidecar's SETTINGS.
    assert_eq!(h2_get(&mut sender, "/warm").await, 200);
    let requests: Vec<_> = (0..16)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move { h2_get(&mut sender, "/hold").await })
        })
        .collect();
    eventually("4 requests held by the application", || async {
        h.in_flight.load(Ordering::SeqCst) >= 4
    })
    .await;
    h.gate.add_permits(16);
    for r in requests {
        assert_eq!(
            tokio::time::timeout(PATIENCE, r).await.unwrap().unwrap(),
            200
        );
    }
    assert_eq!(h.most.load(Ordering::SeqCst), 4, "held at once");
    let ports = h.ports.lock().unwrap().len();
    assert!(ports <= 4, "{ports} upstream connections");
}
