//! Hostile application responses: what a broken or hostile application behind the sidecar
//! can make of the upstream hop by the bytes it answers with — ambiguous framing
//! (`Content-Length` with `Transfer-Encoding`, two lengths, odd codings, bad chunks),
//! malformed or oversized heads, interim and bodiless responses, connections closed at any
//! point, and a response nobody asked for queued ahead of the next request's answer. The
//! application here is raw TCP that writes exact bytes; the client is an ordinary HTTP/1.1
//! client. Each case gets an answer that is either the application's own, framed as the
//! application framed it, or a `502` (or a cut-off body once the status has gone); an
//! upstream connection whose framing was doubtful is never used again, and the sidecar
//! keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, Request, header};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use palisade_sidecar::Sidecar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What the application does with one request.
#[derive(Clone, Default)]
struct Reply {
    /// Written in order, each flushed before the next (so one write can end between two).
    writes: Vec<Vec<u8>>,
    /// Close the connection after writing (else wait for the next request on it).
    close: bool,
    /// Answer without reading the request's `Content-Length` body.
    skip_body: bool,
    /// On any request but its connection's first, close without a byte of an answer: the
    /// application's idle close racing the request.
    stale: bool,
}

impl Reply {
    /// Writes `bytes` and keeps the connection for the next request.
    fn keep(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            writes: vec![bytes.into()],
            ..Self::default()
        }
    }

    /// Writes `bytes` and closes the connection.
    fn close(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            close: true,
            ..Self::keep(bytes)
        }
    }
}

/// The ordinary answer every application here gives to `/ok`.
const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A raw TCP application: `/ok` gets [`OK`], `/{i}` gets `replies[i]`, anything else a 404.
/// It counts the connections it accepted and those it closed itself.
struct App {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl App {
    async fn start(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (accepted, closed) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
        let replies = Arc::new(replies);
        let (acc, clo) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, replies.clone(), clo.clone()));
            }
        });
        Self {
            addr,
            accepted,
            closed,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until the application has closed `n` connections itself.
    async fn closed(&self, n: usize) {
        within("the application to close its connection", async {
            while self.closed.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

/// Serves one connection: reads each request head (and its `Content-Length` body, unless
/// the reply says not to: the clients here send no chunked bodies) and writes the scripted
/// reply.
async fn serve(mut stream: TcpStream, replies: Arc<Vec<Reply>>, closed: Arc<AtomicUsize>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    for served in 0.. {
        let Some((path, body_len, head_len)) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        buf.drain(..head_len);
        let reply = match path.as_str() {
            "/ok" => Reply::keep(OK),
            p => p
                .strip_prefix('/')
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| replies.get(i).cloned())
                .unwrap_or_else(|| {
                    Reply::keep("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                }),
        };
        if reply.stale && served > 0 {
            drop(stream);
            closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if !reply.skip_body {
            while buf.len() < body_len {
                let mut chunk = [0u8; 16 << 10];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..body_len);
        }
        for bytes in &reply.writes {
            if stream.write_all(bytes).await.is_err() || stream.flush().await.is_err() {
                return;
            }
        }
        if reply.close {
            let _ = stream.shutdown().await;
            drop(stream);
            closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// Reads until `buf` holds a whole request head; its path, `Content-Length` (0 if none) and
/// length. `None` at the end of the connection.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, usize, usize)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
            let body_len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            return Some((path, body_len, end + 4));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An application serving `replies` and a sidecar without a policy (it forwards everything)
/// in front of it.
struct Env {
    app: App,
    sc: Sidecar,
}

async fn env(replies: Vec<Reply>) -> Env {
    env_with(replies, &[]).await
}

/// [`env`] with more sidecar flags.
async fn env_with(replies: Vec<Reply>, flags: &[&str]) -> Env {
    let app = App::start(replies).await;
    let sc = sidecar(app.addr, flags).await;
    Env { app, sc }
}

impl Env {
    /// A new client connection to the sidecar.
    async fn client(&self) -> SendRequest<AppBody> {
        h1(self.sc.proxy_addr).await
    }

    /// The next request on `client` is answered, on a new upstream connection (the
    /// application's second), and the sidecar keeps serving.
    async fn next_on_a_new_upstream_connection(
        &self,
        client: &mut SendRequest<AppBody>,
        case: &str,
    ) {
        let next = ask(client, "/ok").await;
        assert_eq!(
            (next.status, next.body.as_deref()),
            (200, Ok("ok")),
            "{case}"
        );
        assert_eq!(
            self.app.accepted(),
            2,
            "{case}: the upstream connection was reused"
        );
        self.still_serves().await;
    }

    /// The sidecar still answers an ordinary request on a new connection.
    async fn still_serves(&self) {
        let (status, _, body) =
            within("an ordinary request", get(self.sc.proxy_addr, "/ok", &[])).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "ok"),
            "the sidecar keeps serving"
        );
    }
}

/// What the client received: the status and headers, and the body or why reading it failed.
#[derive(Debug)]
struct Answer {
    version: http::Version,
    status: u16,
    headers: HeaderMap,
    body: Result<String, String>,
}

impl Answer {
    /// Whether this is a whole, cleanly framed `200` (what a cut-off response must not be).
    fn is_clean_200(&self) -> bool {
        self.status == 200 && self.body.is_ok()
    }
}

/// `f`'s output, or a failed test after [`patience`]: a hang detector, not a measurement.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(patience(), f)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

/// Sends `method path` with `body` on `sender`; `Err` when no response head came back.
async fn try_ask(
    sender: &mut SendRequest<AppBody>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Answer, String> {
    within(&format!("the answer to {method} {path}"), async {
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "api.example")
            .body(full(body))
            .expect("request");
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("no response: {e}"))?;
        let (version, status) = (resp.version(), resp.status().as_u16());
        let headers = resp.headers().clone();
        let body = match resp.into_body().collect().await {
            Ok(b) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
            Err(e) => Err(format!("body: {e}")),
        };
        Ok(Answer {
            version,
            status,
            headers,
            body,
        })
    })
    .await
}

/// `GET path` on `sender`, which must be answered.
async fn ask(sender: &mut SendRequest<AppBody>, path: &str) -> Answer {
    try_ask(sender, "GET", path, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `200 OK` with `extra` header lines (each ending in CRLF) and `rest` after the head.
fn ok_with(extra: &str, rest: &str) -> String {
    format!("HTTP/1.1 200 OK\r\n{extra}\r\n{rest}")
}

/// Each reply on a new client connection of one sidecar gets `502`; then the sidecar still
/// serves.
async fn each_is_502(cases: &[(&str, Reply)]) {
    let e = env(cases.iter().map(|(_, r)| r.clone()).collect()).await;
    for (i, (name, _)) in cases.iter().enumerate() {
        let got = ask(&mut e.client().await, &format!("/{i}")).await;
        assert_eq!(got.status, 502, "{name}: the client got {got:?}");
    }
    e.still_serves().await;
}

/// Each reply's body is cut off: the client never receives a whole `200` (the status may
/// have gone before the failure; then the body read fails). The sidecar still serves.
async fn each_is_cut_off(cases: &[(&str, Reply)]) {
    let e = env(cases.iter().map(|(_, r)| r.clone()).collect()).await;
    for (i, (name, _)) in cases.iter().enumerate() {
        let got = try_ask(&mut e.client().await, "GET", &format!("/{i}"), Vec::new()).await;
        assert!(
            !got.as_ref().is_ok_and(Answer::is_clean_200),
            "{name}: the client got a clean answer: {got:?}"
        );
    }
    e.still_serves().await;
}

// ---------------------------------------------------------------------------------------
// Framing

/// `Content-Length` with `Transfer-Encoding: chunked` (either order, a length shorter or
/// longer than the chunked bytes): the chunks frame the body (RFC 9112 §6.3), the client gets
/// exactly the decoded body with no `Content-Length` that disagrees with it, and the upstream
/// connection is not used again: the next request arrives on a new one.
#[tokio::test]
async fn content_length_with_chunked_is_framed_by_chunks_and_the_connection_not_reused() {
    let chunked = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let cases = [
        ok_with(
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            chunked,
        ),
        ok_with(
            "Transfer-Encoding: chunked\r\nContent-Length: 200\r\n",
            chunked,
        ),
    ];
    for case in cases {
        let e = env(vec![Reply::keep(case.clone())]).await;
        let mut client = e.client().await;
        let got = ask(&mut client, "/0").await;
        assert_eq!(
            (got.status, got.body.as_deref()),
            (200, Ok("hello world")),
            "{case:?}"
        );
        if let Some(len) = got.headers.get(header::CONTENT_LENGTH) {
            assert_eq!(len, "11", "{case:?}: a length that disagrees with the body");
        }
        e.next_on_a_new_upstream_connection(&mut client, &format!("{case:?}"))
            .await;
    }
}

/// Two `Content-Length` values that differ, in two lines or one list: `502`.
#[tokio::test]
async fn two_different_content_lengths_are_502() {
    each_is_502(&[
        (
            "two lines",
            Reply::keep(ok_with(
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                "hello!",
            )),
        ),
        (
            "one list",
            Reply::keep(ok_with("Content-Length: 5, 6\r\n", "hello!")),
        ),
    ])
    .await;
}

/// A `Content-Length` that is not a plain decimal number that fits: `502`.
#[tokio::test]
async fn an_invalid_content_length_is_502() {
    let cases: Vec<(&str, Reply)> = ["+5", "-1", "5a", "99999999999999999999999"]
        .into_iter()
        .map(|len| {
            let reply = Reply::keep(ok_with(&format!("Content-Length: {len}\r\n"), "hello"));
            (len, reply)
        })
        .collect();
    each_is_502(&cases).await;
}

/// Any `Transfer-Encoding` other than exactly `chunked` — another coding before or after it,
/// another coding alone, a lookalike — is `502`, as nginx answers ("upstream sent unknown
/// Transfer-Encoding"), rather than a body read until the connection closes.
#[tokio::test]
async fn a_transfer_encoding_other_than_chunked_is_502() {
    let cases: Vec<(&str, Reply)> = ["gzip, chunked", "chunked, gzip", "identity", "xchunked"]
        .into_iter()
        .map(|te| {
            let head = format!("Transfer-Encoding: {te}\r\n");
            (te, Reply::close(ok_with(&head, "5\r\nhello\r\n0\r\n\r\n")))
        })
        .collect();
    each_is_502(&cases).await;
}

/// A chunked body that breaks — a size that is not hex, a size past 64 bits, chunk data not
/// followed by CRLF, a connection closed before the last chunk — never reaches the client as
/// a whole response: the status may have gone, the body is then cut off.
#[tokio::test]
async fn a_broken_chunked_body_is_cut_off() {
    let chunked = |body: &str| ok_with("Transfer-Encoding: chunked\r\n", body);
    each_is_cut_off(&[
        (
            "size not hex",
            Reply::keep(chunked("zz\r\nhello\r\n0\r\n\r\n")),
        ),
        (
            "size past 64 bits",
            Reply::keep(chunked("ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
        ),
        (
            "no CRLF after the data",
            Reply::keep(chunked("5\r\nhelloXX0\r\n\r\n")),
        ),
        (
            "closed before the last chunk",
            Reply::close(chunked("5\r\nhello\r\n")),
        ),
    ])
    .await;
}

/// Chunk extensions and trailer fields are valid chunked framing: the body arrives intact,
/// and the next request on the connection gets its own answer (the trailers were consumed).
#[tokio::test]
async fn chunk_extensions_and_trailers_leave_the_body_intact() {
    let body = "5;name=value\r\nhello\r\n6;a=\"b c\";flag\r\n world\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n";
    let e = env(vec![Reply::keep(ok_with(
        "Transfer-Encoding: chunked\r\n",
        body,
    ))])
    .await;
    let mut client = e.client().await;
    let got = ask(&mut client, "/0").await;
    assert_eq!((got.status, got.body.as_deref()), (200, Ok("hello world")));
    let next = ask(&mut client, "/ok").await;
    assert_eq!((next.status, next.body.as_deref()), (200, Ok("ok")));
    e.still_serves().await;
}

/// A body read until the application closes (HTTP/1.1, neither `Content-Length` nor
/// `Transfer-Encoding`) reaches the client whole; the next request goes to a new upstream
/// connection.
#[tokio::test]
async fn a_close_delimited_body_arrives_whole_and_the_next_request_gets_a_new_connection() {
    let body: String = (0..20_000).map(|i| format!("{i:05}\n")).collect();
    let e = env(vec![Reply::close(format!("HTTP/1.1 200 OK\r\n\r\n{body}"))]).await;
    let mut client = e.client().await;
    let got = ask(&mut client, "/0").await;
    assert_eq!(got.status, 200);
    assert!(
        got.body.as_deref() == Ok(body.as_str()),
        "the body is cut or changed"
    );
    e.next_on_a_new_upstream_connection(&mut client, "close-delimited")
        .await;
}

/// The application queues a second, unasked response behind its answer (in the same write,
/// or in a write of its own): no later request, on that client connection or another, ever
/// receives it; each gets its own answer.
#[tokio::test]
async fn an_unasked_response_is_never_delivered_to_a_later_request() {
    let first = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst";
    let poison = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison";
    let replies = [
        Reply::keep(format!("{first}{poison}")),
        Reply {
            writes: vec![first.into(), poison.into()],
            ..Reply::default()
        },
    ];
    for (i, reply) in replies.into_iter().enumerate() {
        let e = env(vec![reply]).await;
        for round in 0..10 {
            let mut client = e.client().await;
            let got = ask(&mut client, "/0").await;
            assert_eq!(got.body.as_deref(), Ok("first"), "case {i}, round {round}");
            let next = ask(&mut client, "/ok").await;
            assert_eq!(
                (next.status, next.body.as_deref()),
                (200, Ok("ok")),
                "case {i}, round {round}: the same client connection"
            );
            let other = ask(&mut e.client().await, "/ok").await;
            assert_eq!(
                (other.status, other.body.as_deref()),
                (200, Ok("ok")),
                "case {i}, round {round}: another client connection"
            );
        }
        e.still_serves().await;
    }
}

// ---------------------------------------------------------------------------------------
// Heads

/// obs-fold (a line continuing the previous one), a space before the colon, NUL or a bare
/// CR inside a value: `502`.
#[tokio::test]
async fn malformed_header_lines_are_502() {
    let with = |line: &str| Reply::keep(ok_with(&format!("{line}\r\nContent-Length: 2\r\n"), "no"));
    each_is_502(&[
        ("obs-fold", with("X-A: 1\r\n folded")),
        ("obs-fold with a tab", with("X-A: 1\r\n\tfolded")),
        ("space before the colon", with("X-A : 1")),
        ("NUL in a value", with("X-A: 1\x002")),
        ("CR in a value", with("X-A: 1\r2")),
    ])
    .await;
}

/// A status line that is not `HTTP/1.x` with a three-digit code: `502`.
#[tokio::test]
async fn an_invalid_status_line_is_502() {
    let cases: Vec<(&str, Reply)> = [
        "HTTP/1.1 99999 X",
        "HTTP/1.1 99 X",
        "HTTP/2.0 200 OK",
        "FOO",
    ]
    .into_iter()
    .map(|line| {
        let reply = Reply::keep(format!("{line}\r\nContent-Length: 2\r\n\r\nno"));
        (line, reply)
    })
    .collect();
    each_is_502(&cases).await;
}

/// A response head of 1 MiB, or of 1000 header fields: `502`.
#[tokio::test]
async fn an_oversized_response_head_is_502() {
    let big = format!("X-Big: {}\r\nContent-Length: 2\r\n", "a".repeat(1 << 20));
    let many: String = (0..1000).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    each_is_502(&[
        ("a 1 MiB value", Reply::keep(ok_with(&big, "no"))),
        (
            "1000 fields",
            Reply::keep(ok_with(&format!("{many}Content-Length: 2\r\n"), "no")),
        ),
    ])
    .await;
}

/// Interim responses (`100`, `103` with a field) before the final one: the client gets the
/// final response and its body, and the connection goes on serving.
#[tokio::test]
async fn interim_responses_are_passed_over_for_the_final_one() {
    let fin = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal";
    let e = env(vec![
        Reply::keep(format!("HTTP/1.1 100 Continue\r\n\r\n{fin}")),
        Reply::keep(format!(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n{fin}"
        )),
        Reply::keep(format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n{fin}"
        )),
    ])
    .await;
    let mut client = e.client().await;
    for i in 0..3 {
        let got = ask(&mut client, &format!("/{i}")).await;
        assert_eq!(
            (got.status, got.body.as_deref()),
            (200, Ok("final")),
            "/{i}"
        );
    }
    e.still_serves().await;
}

/// Interim heads without end (a thousand `100 Continue` and no final response) are not
/// counted: `--upstream-timeout`, which runs until the final head, ends the wait with `504`.
#[tokio::test]
async fn interim_responses_without_a_final_one_end_at_the_upstream_timeout() {
    let e = env_with(
        vec![Reply::keep("HTTP/1.1 100 Continue\r\n\r\n".repeat(1000))],
        &["--upstream-timeout", "300ms"],
    )
    .await;
    let got = ask(&mut e.client().await, "/0").await;
    assert_eq!(got.status, 504, "{got:?}");
    e.still_serves().await;
}

/// `101 Switching Protocols` to a request that asked for no upgrade: `502`, not a tunnel.
#[tokio::test]
async fn an_unasked_switching_protocols_is_502() {
    each_is_502(&[(
        "101 without an upgrade",
        Reply::keep(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        ),
    )])
    .await;
}

/// `204` and `304` with a `Content-Length`, and the answer to `HEAD`, have no body: the
/// client gets them without the sidecar waiting for body bytes that never come, and the
/// next request on the same connection gets its own answer.
#[tokio::test]
async fn bodiless_responses_are_not_waited_for() {
    let e = env(vec![
        Reply::keep("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
        Reply::keep("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
        Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
    ])
    .await;
    for (i, method, status) in [(0, "GET", 204), (1, "GET", 304), (2, "HEAD", 200)] {
        let mut client = e.client().await;
        let got = try_ask(&mut client, method, &format!("/{i}"), Vec::new())
            .await
            .expect("an answer");
        assert_eq!((got.status, got.body.as_deref()), (status, Ok("")), "/{i}");
        let next = ask(&mut client, "/ok").await;
        assert_eq!(
            (next.status, next.body.as_deref()),
            (200, Ok("ok")),
            "after /{i}"
        );
    }
    e.still_serves().await;
}

// ---------------------------------------------------------------------------------------
// Connections

/// `Connection: close`, and a response in HTTP/1.0 (with or without `keep-alive`), end the
/// upstream connection even when the application leaves it open: the client gets its answer,
/// in the sidecar's own HTTP/1.1 (RFC 9110 §6.2), and its next request on the same client
/// connection arrives on a new upstream connection.
#[tokio::test]
async fn connection_close_and_http_1_0_end_the_upstream_connection() {
    let cases = [
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
    ];
    for case in cases {
        let e = env(vec![Reply::keep(case)]).await;
        let mut client = e.client().await;
        let got = ask(&mut client, "/0").await;
        assert_eq!(
            (got.status, got.body.as_deref()),
            (200, Ok("hello")),
            "{case:?}"
        );
        assert_eq!(got.version, http::Version::HTTP_11, "{case:?}");
        e.next_on_a_new_upstream_connection(&mut client, &format!("{case:?}"))
            .await;
    }
}

/// A kept upstream connection closes under the next request before any byte of an answer
/// (the application's idle close racing the request, which the sidecar cannot see coming):
/// a `GET`, `HEAD` or `OPTIONS` without a body is written again on a new connection and
/// answered. A `POST` is not (RFC 9112 §9.3.1 allows no automatic retry of it): `502`.
#[tokio::test]
async fn a_safe_request_on_a_kept_connection_closed_under_it_is_written_again() {
    let stale = Reply {
        stale: true,
        ..Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
    };
    for (method, status, body) in [
        ("GET", 200, "fresh"),
        ("HEAD", 200, ""),
        ("OPTIONS", 200, "fresh"),
        ("POST", 502, ""),
    ] {
        let e = env(vec![stale.clone()]).await;
        let mut client = e.client().await;
        // The first request leaves the upstream connection kept; the application closes it
        // under the second.
        assert_eq!(ask(&mut client, "/ok").await.status, 200, "{method}");
        let got = try_ask(&mut client, method, "/0", Vec::new())
            .await
            .expect("an answer");
        assert_eq!(got.status, status, "{method}: {got:?}");
        if status == 200 {
            assert_eq!(got.body.as_deref(), Ok(body), "{method}");
            assert_eq!(
                e.app.accepted(),
                2,
                "{method}: written again on a new connection"
            );
        } else {
            assert_eq!(e.app.accepted(), 1, "{method}: written once");
        }
        e.still_serves().await;
    }
}

/// The application closes before any byte of its answer, or within the status line or the
/// head: `502`.
#[tokio::test]
async fn a_connection_closed_before_the_head_ends_is_502() {
    each_is_502(&[
        ("before any byte", Reply::close("")),
        ("within the status line", Reply::close("HTTP/1.")),
        (
            "within the head",
            Reply::close("HTTP/1.1 200 OK\r\nContent-Le"),
        ),
    ])
    .await;
}

/// The application closes before its `Content-Length` body is complete: the client's body
/// is cut off, never a clean short body.
#[tokio::test]
async fn a_connection_closed_within_the_body_cuts_the_body_off() {
    each_is_cut_off(&[(
        "9 of 100 bytes",
        Reply::close("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"),
    )])
    .await;
}

/// A kept upstream connection that the application closed while idle (after an answer that
/// did not say so) is not used for the next request: it gets `200` on a new connection, never
/// a `502`. Ten rounds, each on a new client connection; every other next request is a `POST`
/// with a body, which may not be written again once sent, so it shows that the close was seen
/// before the connection was chosen (not recovered from after).
#[tokio::test]
async fn a_kept_connection_the_application_closed_is_replaced_without_a_502() {
    let e = env(vec![Reply::close(OK)]).await;
    for round in 1..=10 {
        let mut client = e.client().await;
        let got = ask(&mut client, "/0").await;
        assert_eq!(
            (got.status, got.body.as_deref()),
            (200, Ok("ok")),
            "round {round}"
        );
        e.app.closed(round).await;
        let next = match round % 2 {
            0 => try_ask(&mut client, "POST", "/ok", b"a body".to_vec())
                .await
                .unwrap_or_else(|e| panic!("round {round}: POST /ok: {e}")),
            _ => ask(&mut client, "/ok").await,
        };
        assert_eq!(
            (next.status, next.body.as_deref()),
            (200, Ok("ok")),
            "round {round}: {:?}",
            next.headers.get("palisade-error")
        );
        assert_eq!(e.app.accepted(), 2 * round, "round {round}");
    }
    e.still_serves().await;
}

/// The application answers `413` and closes without reading the 8 MiB body the client is
/// still sending: the client gets the `413`, and does not hang.
#[tokio::test]
async fn an_early_answer_to_a_large_upload_reaches_the_client() {
    let e = env(vec![Reply {
        skip_body: true,
        ..Reply::close("HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n")
    }])
    .await;
    let got = try_ask(&mut e.client().await, "POST", "/0", vec![b'x'; 8 << 20]).await;
    let status = got.as_ref().map(|a| a.status);
    assert_eq!(status, Ok(413), "the client got {got:?}");
    e.still_serves().await;
}

/// The application's fields reach the client as it wrote them (names in its case, its own
/// `Date` and no second one), less every hop-by-hop field: the fixed list and every name a
/// `Connection` element names, in any case, also on a line with a non-ASCII element.
#[tokio::test]
async fn hop_by_hop_fields_of_a_response_are_removed_and_the_rest_passed_as_written() {
    let head = concat!(
        "HTTP/1.1 200 OK\r\n",
        "Server: App/1\r\n",
        "Date: Sun, 06 Dec 2026 12:00:00 GMT\r\n",
        "Connection: X-Secret, keep-alive\r\n",
        "X-Secret: s\r\n",
        "Connection: x-OTHER, \u{e9}\r\n",
        "x-other: o\r\n",
        "Keep-Alive: timeout=5\r\n",
        "Proxy-Connection: keep-alive\r\n",
        "Trailer: X-T\r\n",
        "Upgrade: websocket\r\n",
        "TE: trailers\r\n",
        "Proxy-Authorization: Basic eA==\r\n",
        "X-Kept-Case: Value\r\n",
        "Content-Length: 2\r\n",
        "\r\nok",
    );
    let e = env(vec![Reply::keep(head)]).await;
    let mut s = TcpStream::connect(e.sc.proxy_addr).await.unwrap();
    s.write_all(b"GET /0 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    within("the answer", s.read_to_end(&mut out)).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body, "ok");
    let mut lines: Vec<&str> = head.lines().skip(1).collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "Content-Length: 2",
            "Date: Sun, 06 Dec 2026 12:00:00 GMT",
            "Server: App/1",
            "X-Kept-Case: Value",
            "connection: close",
        ],
        "{text}"
    );
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
}
