//! Unusual and hostile HTTP/1.x clients against the sidecar's own server (`h1_server`):
//! requests sent ahead of their answers (pipelining) with bodies between them, bodies the
//! sidecar never reads because it denies the request (whose bytes must never become a
//! request of their own), `Expect: 100-continue`, HTTP/1.0 clients with and without
//! keep-alive, `HEAD`, chunked bodies with trailers, heads dripped a byte at a time, bytes
//! sent behind a WebSocket handshake, and a client that gives up in the middle of a body.
//! The application records what it received; the client is raw TCP writing exact bytes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use palisade_policy::PathMatch;
use palisade_sidecar::Sidecar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::bundle::{deny, when, write};
use crate::support::*;

/// One request as the application received it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    target: String,
    body: String,
    /// Trailer fields, `name: value`.
    trailers: Vec<String>,
}

struct Env {
    sc: Sidecar,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

/// An application that reads each request whole and answers `200` with `target body`
/// (`HEAD`: the same fields, no body; `/chunked`: a body without a length, so it is
/// chunked), behind a sidecar that denies `/denied`.
async fn env(extra: &[&str]) -> Env {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app: SocketAddr = app(move |req, _| {
        let log = log.clone();
        async move {
            let target = req.uri().to_string();
            let collected = req.into_body().collect().await.unwrap();
            let trailers = collected
                .trailers()
                .map(|t| {
                    t.iter()
                        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
            let answer = format!("{target} {body}");
            log.lock().unwrap().push(Seen {
                target: target.clone(),
                body,
                trailers,
            });
            if target == "/chunked" {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<_, BoxError>>(4);
                tokio::spawn(async move {
                    for part in ["one ", "two ", "three"] {
                        let frame = http_body::Frame::data(bytes::Bytes::from(part));
                        let _ = tx.send(Ok(frame)).await;
                    }
                });
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                });
                return http::Response::new(http_body_util::StreamBody::new(stream).boxed());
            }
            http::Response::new(full(answer))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let conditions = when(|c| c.paths = vec![PathMatch::Prefix("/denied".into())]);
    let hash = write(dir.path(), vec![deny("no", conditions)], 1);
    let path = dir.path().to_str().unwrap().to_owned();
    let mut args = vec!["--bundle-path", &path, "--bundle-poll", "20ms"];
    args.extend_from_slice(extra);
    let sc = sidecar(app, &args).await;
    wait_for_bundle(&sc, &hash).await;
    Env {
        sc,
        seen,
        _dir: dir,
    }
}

impl Env {
    /// Writes `bytes` on a new connection and reads until the sidecar closes it.
    async fn exchange(&self, bytes: &[u8]) -> String {
        tokio::time::timeout(patience(), raw(self.sc.proxy_addr, bytes))
            .await
            .expect("the sidecar closes the connection")
    }

    fn targets(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|s| s.target.clone()).collect()
    }

    async fn still_serves(&self) {
        let (status, _, body) = get(self.sc.proxy_addr, "/after", &[]).await;
        assert_eq!((status, body.as_str()), (200, "/after "));
    }
}

/// The status codes of the responses in `text`, in order (bodies here hold no status line).
fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12))
        .collect()
}

/// Reads from `s` until `text` holds `want`, or fails after the patience.
async fn read_until(s: &mut TcpStream, text: &mut String, want: &str) {
    let wait = async {
        let mut buf = [0u8; 4096];
        while !text.contains(want) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before {want:?}; got {text:?}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    tokio::time::timeout(patience(), wait)
        .await
        .unwrap_or_else(|_| panic!("no {want:?} in {text:?}"));
}

/// Requests written in one go, with a `Content-Length` and a chunked body between bodiless
/// ones, are answered in order, each body framed exactly: nothing of one body is read as the
/// next request, and nothing is lost.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let e = env(&[]).await;
    let bytes = concat!(
        "GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        "GET /d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let text = e.exchange(bytes.as_bytes()).await;
    assert_eq!(statuses(&text), ["200", "200", "200", "200"], "{text}");
    let bodies: Vec<&str> = ["/a ", "/b hello", "/c abcde", "/d "]
        .into_iter()
        .filter(|b| text.contains(b))
        .collect();
    assert_eq!(bodies.len(), 4, "{text}");
    let order: Vec<usize> = ["/a ", "/b hello", "/c abcde", "/d "]
        .iter()
        .map(|b| text.find(b).unwrap())
        .collect();
    assert!(order.is_sorted(), "answers out of order: {text}");
    assert_eq!(e.targets(), ["/a", "/b", "/c", "/d"]);
}

/// A request hidden in a body, and the cases that carry it: a request the sidecar answers
/// without reading its body (a denial; a `414` for a target over `--max-uri-bytes`, here
/// 64), with its status, the body framed by `Content-Length` or chunks, asked to continue or
/// not. `whole`: the body is all sent with the head; otherwise part of it is.
fn unread_cases(whole: bool) -> Vec<(&'static str, String)> {
    let hidden = "GET /hidden HTTP/1.1\r\nHost: a\r\n\r\n";
    // Sent short: ten bytes more are announced than sent, or the last chunk is missing.
    let length = hidden.len() + if whole { 0 } else { 10 };
    let end = if whole { "0\r\n\r\n" } else { "" };
    let chunks = format!("{:x}\r\n{hidden}\r\n{end}", hidden.len());
    // With trailer fields: sent short, the blank line that ends them is missing.
    let trailers = if whole { "\r\n" } else { "" };
    let with_trailers = format!(
        "{:x}\r\n{hidden}\r\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n{trailers}",
        hidden.len()
    );
    let long = format!("/long/{}", "x".repeat(64));
    let mut cases = Vec::new();
    for (status, target) in [("403", "/denied"), ("414", long.as_str())] {
        cases.push((
            status,
            format!(
                "POST {target} HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\r\n{hidden}"
            ),
        ));
        cases.push((
            status,
            format!(
                "POST {target} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}"
            ),
        ));
        cases.push((
            status,
            format!(
                "POST {target} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{with_trailers}"
            ),
        ));
        cases.push((
            status,
            format!(
                "POST {target} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {length}\r\n\r\n{hidden}"
            ),
        ));
    }
    cases
}

/// A sidecar whose application refuses connections: every request is answered `502`
/// without its body being read.
async fn refused_upstream() -> Sidecar {
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    sidecar(addr, &[]).await
}

/// Sends each denied case of `unread_cases`, its target changed to `/up`, to a sidecar whose
/// application fails: sent whole with a request after it, two `502`s come back (a request read
/// from the body would be a third answer); sent in part, one, and the connection closes.
/// Returns whether each case was sent whole, with what the client read.
async fn unread_bodies_to_a_failing_application(sc: &Sidecar) -> Vec<(bool, String)> {
    let after = "GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut read = Vec::new();
    for whole in [true, false] {
        for (status, case) in unread_cases(whole) {
            if status != "403" {
                continue;
            }
            let case = case.replacen("/denied", "/up", 1);
            let sent = if whole {
                format!("{case}{after}")
            } else {
                case.clone()
            };
            let text = tokio::time::timeout(patience(), raw(sc.proxy_addr, sent.as_bytes()))
                .await
                .expect("the sidecar closes the connection");
            // A `100 Continue` the sidecar relayed before the application failed is no answer.
            let answers: Vec<_> = statuses(&text)
                .into_iter()
                .filter(|s| *s != "100")
                .collect();
            let want: &[&str] = if whole { &["502", "502"] } else { &["502"] };
            assert_eq!(answers, want, "{case:?} → {text}");
            read.push((whole, text));
        }
    }
    read
}

/// The same holds when the application fails before the sidecar read the body (here it
/// refuses the connection, `502`): a body sent whole is skipped and the connection takes the
/// next request; one sent in part closes it. Each request hidden in a body would be answered
/// `502` of its own, so the count of answers shows none was read as a request.
#[tokio::test]
async fn an_unread_body_behind_a_failed_upstream_is_skipped_or_closes() {
    let sc = refused_upstream().await;
    for (_, text) in unread_bodies_to_a_failing_application(&sc).await {
        assert!(!text.contains("100 Continue"), "{text}");
    }
}

/// An application that accepts the connection, reads the request's head and closes without
/// reading the body or answering: the sidecar has passed the body on (as body bytes), answers
/// `502`, and the request hidden in the body is never read as one. Sent whole, the connection
/// takes the next request (which the application closes on as well: two `502`s; a hidden
/// request would be a third answer and a head the application saw); sent in part, the
/// connection closes after the one answer (the sidecar cannot know where the body ends).
#[tokio::test]
async fn an_unread_body_behind_an_application_that_closes_is_never_a_request() {
    let heads = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let log = heads.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1];
                // A byte at a time, so nothing past the head is taken from the socket.
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(1) => head.push(buf[0]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
                log.lock().unwrap().push(target);
                // Dropped here: closed with the body unread (a reset when some of it came).
            });
        }
    });
    let sc = sidecar(app, &[]).await;
    let read = unread_bodies_to_a_failing_application(&sc).await;
    let heads = heads.lock().unwrap().clone();
    let count = |target: &str| heads.iter().filter(|t| *t == target).count();
    assert_eq!(count("/hidden"), 0, "{heads:?}");
    assert_eq!(count("/up"), read.len(), "{heads:?}");
    let whole = read.iter().filter(|(whole, _)| *whole).count();
    assert_eq!(count("/after"), whole, "{heads:?}");
}

/// A body the sidecar does not read, which the client sent whole with its head, is skipped
/// by its framing (as nginx discards it): the connection takes the next request, and the
/// request hidden in the body never reaches the application.
#[tokio::test]
async fn an_unread_body_sent_whole_is_skipped_and_never_becomes_a_request() {
    let e = env(&["--max-uri-bytes", "64"]).await;
    let after = "GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let cases = unread_cases(true);
    for (status, case) in &cases {
        let text = e.exchange(format!("{case}{after}").as_bytes()).await;
        assert_eq!(statuses(&text), [*status, "200"], "{case:?} → {text}");
        assert!(!text.contains("100 Continue"), "{text}");
    }
    assert_eq!(e.targets(), vec!["/after"; cases.len()]);
}

/// A body the sidecar does not read and the client has not sent whole, or whose chunks are
/// malformed: the sidecar cannot know where it ends, so the connection is closed after the
/// answer, and nothing in the body (here a request) is ever read as a request.
#[tokio::test]
async fn an_unread_body_not_all_sent_or_malformed_closes_the_connection() {
    let e = env(&["--max-uri-bytes", "64"]).await;
    let malformed = (
        "403",
        "POST /denied HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
         zz\r\nGET /hidden HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n"
            .to_owned(),
    );
    for (status, case) in unread_cases(false).iter().chain([&malformed]) {
        let text = e.exchange(case.as_bytes()).await;
        assert_eq!(statuses(&text), [*status], "{case:?} → {text}");
        assert!(!text.contains("100 Continue"), "{text}");
    }
    assert_eq!(e.targets(), Vec::<String>::new());
    e.still_serves().await;
}

/// `Expect: 100-continue`: the client is told to send its body when the request is
/// forwarded (the application reads it), and gets the final answer without one when the
/// request is denied.
#[tokio::test]
async fn expect_100_continue_is_answered_only_for_a_forwarded_request() {
    let e = env(&[]).await;
    let mut s = TcpStream::connect(e.sc.proxy_addr).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut text = String::new();
    read_until(&mut s, &mut text, "\r\n\r\n").await;
    assert_eq!(text, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    read_until(&mut s, &mut text, "/up hello").await;
    assert_eq!(statuses(&text), ["100", "200"], "{text}");
    // The same connection takes the next request; a denied one gets no `100`.
    let mut text = String::new();
    s.write_all(
        b"POST /denied HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(patience(), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    text.push_str(&String::from_utf8_lossy(&rest));
    assert_eq!(statuses(&text), ["403"], "{text}");
    let seen = e.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].target.as_str(), seen[0].body.as_str()),
        ("/up", "hello")
    );
}

/// HTTP/1.0: closed after the answer unless the client asked for keep-alive, in which case
/// the answer says so and the connection takes the next request; a body of unknown length
/// is delimited by the close (an HTTP/1.0 client cannot read chunks).
#[tokio::test]
async fn http_1_0_clients_get_answers_they_can_read() {
    let e = env(&[]).await;
    let text = e.exchange(b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("/old "), "{text}");
    let text = e
        .exchange(
            b"GET /k1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /k2 HTTP/1.0\r\nHost: a\r\n\r\n",
        )
        .await;
    assert_eq!(statuses(&text), ["200", "200"], "{text}");
    assert!(text.contains("connection: keep-alive\r\n"), "{text}");
    assert!(text.contains("/k1 ") && text.ends_with("/k2 "), "{text}");
    let text = e
        .exchange(b"GET /chunked HTTP/1.0\r\nHost: a\r\n\r\n")
        .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\none two three"), "{text}");
    // HTTP/1.1 gets the same body in chunks.
    let text = e
        .exchange(b"GET /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "{text}");
}

/// A `HEAD` answer has the fields of a `GET`'s and no body, so the next answer on the
/// connection is read where it starts.
#[tokio::test]
async fn a_head_answer_has_no_body_and_the_next_answer_follows_it() {
    let e = env(&[]).await;
    let text = e
        .exchange(
            b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(statuses(&text), ["200", "200"], "{text}");
    let second = text.rfind("HTTP/1.1 200").unwrap();
    let first_head = &text[..second];
    assert!(
        first_head.ends_with("\r\n\r\n"),
        "a body after HEAD: {text}"
    );
    assert!(first_head.contains("content-length: 3\r\n"), "{text}");
    assert!(text.ends_with("/g "), "{text}");
}

/// A chunked request body's trailer fields reach the application after the body; trailer
/// fields that would frame the message or speak for the connection are dropped.
#[tokio::test]
async fn request_trailers_reach_the_application() {
    let e = env(&[]).await;
    let text = e
        .exchange(
            b"POST /t HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\nConnection: x-checksum\r\n\r\n",
        )
        .await;
    assert_eq!(statuses(&text), ["200"], "{text}");
    let seen = e.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [Seen {
            target: "/t".into(),
            body: "hello".into(),
            trailers: vec!["x-checksum: abc".into()],
        }]
    );
}

/// A head (and body) arriving one byte per write is read whole; so are the byte-by-byte
/// heads of the requests that follow on the connection.
#[tokio::test]
async fn a_request_dripped_a_byte_at_a_time_is_served() {
    let e = env(&[]).await;
    let mut s = TcpStream::connect(e.sc.proxy_addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let bytes = b"POST /drip HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcdGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    for b in bytes {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let mut out = Vec::new();
    tokio::time::timeout(patience(), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&text), ["200", "200"], "{text}");
    assert!(
        text.contains("/drip abcd") && text.ends_with("/x "),
        "{text}"
    );
}

/// A client that stops in the middle of a body: the request fails upstream, the sidecar
/// keeps serving others, and the partial body is not forwarded as a whole one.
#[tokio::test]
async fn a_client_that_leaves_in_the_middle_of_a_body() {
    let e = env(&[]).await;
    let mut s = TcpStream::connect(e.sc.proxy_addr).await.unwrap();
    s.write_all(b"POST /cut HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(s);
    e.still_serves().await;
    let seen = e.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| s.target != "/cut"),
        "a cut body reached the app as a whole request: {seen:?}"
    );
}

/// The part of a head sent before the header-read timeout gets `408`, and the connection
/// closes; a connection with nothing sent is closed without an answer.
#[tokio::test]
async fn a_partial_head_gets_408_at_the_header_read_timeout() {
    let e = env(&["--header-read-timeout", "200ms"]).await;
    let text = {
        let mut s = TcpStream::connect(e.sc.proxy_addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(patience(), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    let mut s = TcpStream::connect(e.sc.proxy_addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(patience(), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(e.targets(), Vec::<String>::new());
}

/// On a kept connection the header-read timeout counts from the end of the last answer.
/// The connection's one timer is set when its first bytes come; a later wait with a later
/// deadline lets it fire early and must not take that as its own timeout: a head still
/// coming in at the connection's first deadline is served, and one that never ends gets
/// `408` at its own deadline, not at an earlier wait's.
#[tokio::test]
async fn a_kept_connection_s_next_head_gets_the_whole_timeout() {
    let timeout = Duration::from_secs(4);
    let e = env(&["--header-read-timeout", "4s"]).await;
    let mut s = TcpStream::connect(e.sc.proxy_addr).await.unwrap();
    let mut text = String::new();
    // The connection's timer is set now, due at `first + timeout`.
    let first = tokio::time::Instant::now();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, &mut text, "/one ").await;
    // The next wait starts halfway, so its deadline is later than the timer's.
    tokio::time::sleep_until(first + timeout / 2).await;
    s.write_all(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, &mut text, "/two ").await;
    // Half a head at once, the rest after the timer's first deadline (it fires then, early
    // for this wait).
    s.write_all(b"GET /three HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep_until(first + timeout * 9 / 8).await;
    // The next wait begins after the sidecar has this end of the head and answered it.
    let fourth = tokio::time::Instant::now();
    s.write_all(b"Host: a\r\n\r\n").await.unwrap();
    read_until(&mut s, &mut text, "/three ").await;
    assert_eq!(statuses(&text), ["200", "200", "200"], "{text}");
    // A head that never ends: 408 once its own wait has lasted the timeout, not at the
    // deadline of the wait before (the timer is due then).
    s.write_all(b"GET /four HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(patience() + timeout, s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 408"), "{rest}");
    assert!(
        fourth.elapsed() >= timeout,
        "408 before the head's own wait lasted the timeout"
    );
    assert_eq!(e.targets(), ["/one", "/two", "/three"]);
}

/// Bytes a client sends right behind its WebSocket handshake (before it has read the `101`)
/// are the tunnel's first bytes: they reach the application once, after the switch.
#[tokio::test]
async fn bytes_sent_behind_a_websocket_handshake_go_through_the_tunnel() {
    // An application that switches and then echoes what it reads, prefixed.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&buf[..n]);
            s.write_all(&out).await.unwrap();
        }
    });
    let sc = sidecar(app, &[]).await;
    let mut s = TcpStream::connect(sc.proxy_addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nahead",
    )
    .await
    .unwrap();
    let mut text = String::new();
    read_until(&mut s, &mut text, "echo:ahead").await;
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert_eq!(text.matches("echo:").count(), 1, "{text}");
    s.write_all(b"later").await.unwrap();
    read_until(&mut s, &mut text, "echo:later").await;
}
