//! Component tests of the proxy core: a real application and the sidecar on loopback, real
//! hyper clients.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn forwards_with_host_xff_and_without_hop_by_hop() {
    let app = echo_app().await;
    let sc = sidecar(app, &[]).await;
    let (status, _, body) = get(
        sc.proxy_addr,
        "/v1/items?q=1",
        &[
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("x-forwarded-for", "192.0.2.9"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["target"], "/v1/items?q=1");
    assert_eq!(seen["host"], "api.example");
    assert_eq!(seen["xff"], "192.0.2.9, 127.0.0.1");
    assert_eq!(seen["xfp"], "http");
    let headers: Vec<String> = serde_json::from_value(seen["headers"].clone()).unwrap();
    assert!(
        !headers.iter().any(|h| h == "x-secret" || h == "keep-alive"),
        "{headers:?}"
    );
}

/// A client speaking to the sidecar as to a forward proxy (absolute-form target): the app
/// gets the origin-form target, the request's Host, and hop-by-hop headers of every
/// `Connection` line removed.
#[tokio::test]
async fn absolute_form_reaches_the_app_in_origin_form() {
    let app = echo_app().await;
    let sc = sidecar(app, &[]).await;
    let resp = raw(
        sc.proxy_addr,
        b"GET http://api.example/v1/items?q=1 HTTP/1.1\r\nHost: api.example\r\n\
          Connection: x-a\r\nConnection: x-b\r\nX-A: 1\r\nX-B: 1\r\nX-Kept: 1\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["target"], "/v1/items?q=1");
    assert_eq!(seen["host"], "api.example");
    let headers: Vec<String> = serde_json::from_value(seen["headers"].clone()).unwrap();
    assert!(headers.iter().any(|h| h == "x-kept"), "{headers:?}");
    assert!(
        !headers.iter().any(|h| h == "x-a" || h == "x-b"),
        "{headers:?}"
    );
}

#[tokio::test]
async fn keep_alive_both_sides() {
    let app = echo_app().await;
    let sc = sidecar(app, &[]).await;
    let mut client = h1(sc.proxy_addr).await;
    let mut upstream_ports = HashSet::new();
    for _ in 0..5 {
        let req = Request::get("/")
            .header("host", "a")
            .body(full(""))
            .unwrap();
        let (status, _, body) = send(&mut client, req).await;
        assert_eq!(status, 200);
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        upstream_ports.insert(seen["peer_port"].as_u64().unwrap());
    }
    assert_eq!(upstream_ports.len(), 1, "upstream connection reused");
}

/// Each client connection has its own upstream connection (no pool shared between client
/// connections), and one the application closes is replaced without failing a request.
#[tokio::test]
async fn each_client_connection_has_its_own_upstream_connection() {
    let app = app(|req, peer| async move {
        let mut resp = Response::new(full(peer.port().to_string()));
        if req.uri().path() == "/close" {
            // The application ends the keep-alive connection after this answer.
            resp.headers_mut()
                .insert("connection", http::HeaderValue::from_static("close"));
        }
        resp
    })
    .await;
    let sc = sidecar(app, &[]).await;
    let port = |path: &'static str| Request::get(path).header("host", "a").body(full(""));
    let mut a = h1(sc.proxy_addr).await;
    let mut b = h1(sc.proxy_addr).await;
    let a1 = send(&mut a, port("/").unwrap()).await.2;
    let b1 = send(&mut b, port("/").unwrap()).await.2;
    let a2 = send(&mut a, port("/").unwrap()).await.2;
    let b2 = send(&mut b, port("/").unwrap()).await.2;
    assert_eq!(a1, a2, "client a keeps its upstream connection");
    assert_eq!(b1, b2, "client b keeps its upstream connection");
    assert_ne!(a1, b1, "two clients, two upstream connections");

    let closed = send(&mut a, port("/close").unwrap()).await;
    assert_eq!((closed.0, closed.2.as_str()), (200, a1.as_str()));
    // The app closed that connection: the next request on client a gets a new one.
    for _ in 0..3 {
        let (status, _, body) = send(&mut a, port("/").unwrap()).await;
        assert_eq!(status, 200);
        assert_ne!(body, a1, "a closed upstream connection is not reused");
    }
}

#[tokio::test]
async fn ipv6_client() {
    let app = echo_app().await;
    let mut cfg = config(app, &[]);
    cfg.listen = "[::1]:0".parse().unwrap();
    let sc = palisade_sidecar::start(cfg).await.unwrap();
    let (status, _, body) = get(sc.proxy_addr, "/", &[]).await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["xff"], "::1");
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let app = echo_app().await;
    let sc = sidecar(app, &[]).await;
    let mut sender = h2(sc.proxy_addr).await;
    for _ in 0..3 {
        let req = Request::get("http://api.example/h2?x=1")
            .body(full(""))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let (status, _, body) = read(resp).await;
        assert_eq!(status, 200);
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["host"], "api.example");
        assert_eq!(seen["target"], "/h2?x=1");
        assert_eq!(seen["version"], "HTTP/1.1");
    }
}

/// On shutdown an HTTP/2 client connection is drained: the client is told that no new
/// stream will be served (a new request on the connection fails once it has heard), a stream
/// in flight is still answered whole, and the drain ends, closing the connection, as soon as
/// that stream is done — no connection is cut.
#[tokio::test]
async fn the_drain_answers_an_http2_stream_in_flight_and_refuses_new_ones() {
    let (release, released) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let app = app(move |req, _| {
        let mut released = released.clone();
        let arrived = arrived_tx.clone();
        async move {
            let path = req.uri().path().to_owned();
            if path == "/slow" {
                let _ = arrived.send(());
                released.wait_for(|r| *r).await.unwrap();
            }
            Response::new(full(format!("{path} answered")))
        }
    })
    .await;
    let sc = sidecar(app, &["--drain-grace", "30s"]).await;
    let stream = TcpStream::connect(sc.proxy_addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let get = |path: &str| {
        Request::get(format!("http://a{path}"))
            .body(full(""))
            .unwrap()
    };
    let mut first = sender.clone();
    let slow = get("/slow");
    let in_flight = tokio::spawn(async move { first.send_request(slow).await });
    tokio::time::timeout(patience(), arrived.recv())
        .await
        .expect("the slow request reaches the application");

    let draining = tokio::spawn(sc.shutdown());
    // Requests sent before the client has heard of the drain may still be served; once it
    // has, a new stream fails without reaching the application.
    let refused = async {
        let mut sender = sender.clone();
        while let Ok(resp) = sender.send_request(get("/new")).await {
            let (status, _, body) = read(resp).await;
            assert_eq!((status, body.as_str()), (200, "/new answered"));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(patience(), refused)
        .await
        .expect("a new stream is refused once the drain started");
    assert!(
        !draining.is_finished(),
        "the drain waits for the stream in flight"
    );
    assert!(!in_flight.is_finished(), "the slow stream is still open");

    release.send(true).unwrap();
    let resp = tokio::time::timeout(patience(), in_flight)
        .await
        .expect("the stream in flight is answered")
        .unwrap()
        .expect("answered, not reset");
    let (status, _, body) = read(resp).await;
    assert_eq!((status, body.as_str()), (200, "/slow answered"));
    let cut = tokio::time::timeout(patience(), draining)
        .await
        .expect("the drain ends once the stream is done")
        .unwrap();
    assert_eq!(cut, 0, "no connection cut");
    tokio::time::timeout(patience(), conn)
        .await
        .expect("the sidecar closes the drained connection")
        .unwrap()
        .expect("closed cleanly (GOAWAY), not reset");
}

/// An application that accepts every WebSocket upgrade and echoes what it receives.
async fn ws_echo_app() -> std::net::SocketAddr {
    app(|mut req, _| async move {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(on.await.unwrap());
            let mut buf = [0u8; 1024];
            loop {
                let n = io.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                io.write_all(&buf[..n]).await.unwrap();
            }
        });
        Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(full(""))
            .unwrap()
    })
    .await
}

/// Opens a WebSocket tunnel through the sidecar at `addr`.
async fn open_tunnel(addr: std::net::SocketAddr) -> TokioIo<hyper::upgrade::Upgraded> {
    let mut client = h1(addr).await;
    let req = Request::get("/ws")
        .header("host", "a")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .body(full(""))
        .unwrap();
    let mut resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["upgrade"], "websocket");
    assert_eq!(
        resp.headers()["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap())
}

/// Sends `msg` through the tunnel and reads the echo.
async fn echo(io: &mut TokioIo<hyper::upgrade::Upgraded>, msg: &[u8]) {
    io.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn websocket_upgrade_echo() {
    let sc = sidecar(ws_echo_app().await, &[]).await;
    let mut io = open_tunnel(sc.proxy_addr).await;
    for msg in [&b"hello"[..], b"palisade", b"bye"] {
        echo(&mut io, msg).await;
    }
}

/// On shutdown an open tunnel keeps working through the drain, which ends when the client
/// closes it; a tunnel still open at the end of `--drain-grace` is cut and counted.
#[tokio::test]
async fn the_drain_waits_for_open_tunnels_up_to_the_grace_period() {
    let app = ws_echo_app().await;
    let sc = sidecar(app, &["--drain-grace", "30s"]).await;
    let mut io = open_tunnel(sc.proxy_addr).await;
    echo(&mut io, b"before").await;
    let draining = tokio::spawn(sc.shutdown());
    echo(&mut io, b"during the drain").await;
    assert!(!draining.is_finished(), "the drain waits for the tunnel");
    drop(io);
    let cut = tokio::time::timeout(patience(), draining)
        .await
        .expect("the drain ends once the tunnel is closed")
        .unwrap();
    assert_eq!(cut, 0);

    let sc = sidecar(app, &["--drain-grace", "1s"]).await;
    let mut io = open_tunnel(sc.proxy_addr).await;
    echo(&mut io, b"left open").await;
    assert_eq!(sc.shutdown().await, 1, "cut at the deadline");
}

#[tokio::test]
async fn bad_input_gets_clear_answers_and_the_process_keeps_serving() {
    let app = echo_app().await;
    let sc = sidecar(
        app,
        &["--max-header-bytes", "8192", "--max-uri-bytes", "100"],
    )
    .await;
    let big = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let resp = raw(sc.proxy_addr, big.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let many: String = (0..150).map(|i| format!("x-h{i}: 1\r\n")).collect();
    let resp = raw(
        sc.proxy_addr,
        format!("GET / HTTP/1.1\r\nhost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let long = format!(
        "GET /{} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        "p".repeat(200)
    );
    let resp = raw(sc.proxy_addr, long.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 414"), "{resp}");
    let resp = raw(sc.proxy_addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(
        sc.proxy_addr,
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let (status, _, _) = get(sc.proxy_addr, "/still-alive", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn upstream_down_is_502() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sc = sidecar(closed, &[]).await;
    let (status, headers, _) = get(sc.proxy_addr, "/", &[]).await;
    assert_eq!(status, 502);
    assert_eq!(headers["palisade-error"], "UpstreamRefused");
    let m = metrics(&sc).await;
    assert!(
        m.contains("palisade_sidecar_upstream_errors_total{reason=\"UpstreamRefused\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let app = app(|_, _| async move {
        std::future::pending::<()>().await;
        Response::new(full(""))
    })
    .await;
    let sc = sidecar(app, &["--upstream-timeout", "200ms"]).await;
    let (status, headers, _) = get(sc.proxy_addr, "/", &[]).await;
    assert_eq!(status, 504);
    assert_eq!(headers["palisade-error"], "UpstreamTimeout");
}

/// One client connection's requests share a re-armed timer: each request gets the whole
/// `--upstream-timeout` from its own start (a fast request before does not shorten it, one
/// that timed out does not end the next), and the connection serves on after a 504.
#[tokio::test]
async fn every_request_on_a_connection_gets_the_whole_upstream_timeout() {
    let app = app(|req, _| async move {
        let wait = match req.uri().path() {
            "/hang" => std::time::Duration::from_secs(3600),
            "/slow" => std::time::Duration::from_millis(300),
            _ => std::time::Duration::ZERO,
        };
        tokio::time::sleep(wait).await;
        Response::new(full("ok"))
    })
    .await;
    let sc = sidecar(app, &["--upstream-timeout", "500ms"]).await;
    let mut client = h1(sc.proxy_addr).await;
    let mut status = |path: &'static str| {
        let req = Request::get(path)
            .header("host", "api.example")
            .body(full(""))
            .unwrap();
        let sent = client.send_request(req);
        async move { sent.await.unwrap().status().as_u16() }
    };
    let started = std::time::Instant::now();
    assert_eq!(status("/").await, 200);
    // 300 ms twice: each within its own 500 ms, although 600 ms pass since the first.
    assert_eq!(status("/slow").await, 200);
    assert_eq!(status("/slow").await, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
    assert_eq!(status("/hang").await, 504);
    assert_eq!(
        status("/slow").await,
        200,
        "the timer re-armed after it fired"
    );
    assert_eq!(status("/hang").await, 504);
    assert_eq!(status("/").await, 200);
}

/// The app echoes each request chunk as it reads it; the client sends chunk n+1 only after it
/// got chunk n back. A proxy that buffered either body would deadlock here.
#[tokio::test]
async fn bodies_stream_both_ways_in_lockstep() {
    let app = app(|req, _| async move {
        let body = req.into_body().map_frame(|f| f.map_data(|d| d));
        Response::new(body.map_err(|e| Box::new(e) as BoxError).boxed())
    })
    .await;
    let sc = sidecar(app, &[]).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let body = StreamBody::new(tokio_stream(rx));
    let mut client = h1(sc.proxy_addr).await;
    let req = Request::post("/echo")
        .header("host", "a")
        .body(body.boxed())
        .unwrap();
    let sent = tokio::spawn(async move { client.send_request(req).await });
    tx.send(Ok(Frame::data(Bytes::from_static(b"chunk-0"))))
        .await
        .unwrap();
    let mut resp_body = sent.await.unwrap().unwrap().into_body();
    for i in 0..20 {
        let got = next_data(&mut resp_body).await;
        assert_eq!(got, format!("chunk-{i}"));
        tx.send(Ok(Frame::data(Bytes::from(format!("chunk-{}", i + 1)))))
            .await
            .unwrap();
    }
}

/// A client connection's task drives its upstream connection too, polling each side while
/// it has work. A long response streamed as fast as both sockets allow must still leave the
/// (one-thread) runtime to the other connections: another client's requests are all answered
/// while the stream is still flowing.
#[tokio::test]
async fn a_long_stream_on_one_connection_leaves_the_others_served() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 4096; // 256 MiB
    let app = app(|req, _| async move {
        if req.uri().path() != "/stream" {
            return Response::new(full("ok"));
        }
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let frames = (0..CHUNKS).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
        Response::new(StreamBody::new(futures::stream::iter(frames)).boxed())
    })
    .await;
    let sc = sidecar(app, &[]).await;
    let get = |path: &str| {
        Request::get(path)
            .header("host", "a")
            .body(full(""))
            .unwrap()
    };
    let mut streaming = h1(sc.proxy_addr).await;
    let mut body = streaming
        .send_request(get("/stream"))
        .await
        .unwrap()
        .into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let reader = tokio::spawn(async move {
        let mut bytes = first.len();
        while let Some(frame) = body.frame().await {
            bytes += frame.unwrap().into_data().map_or(0, |d| d.len());
        }
        bytes
    });
    let mut other = h1(sc.proxy_addr).await;
    for _ in 0..20 {
        let (status, _, text) = send(&mut other, get("/")).await;
        assert_eq!((status, text.as_str()), (200, "ok"));
    }
    assert!(
        !reader.is_finished(),
        "the other connection was answered only after the stream ended"
    );
    assert_eq!(reader.await.unwrap(), CHUNK * CHUNKS);
}

async fn next_data(body: &mut hyper::body::Incoming) -> String {
    loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            return String::from_utf8(data.to_vec()).unwrap();
        }
    }
}

fn tokio_stream<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn admin_endpoints() {
    let app = echo_app().await;
    let sc = sidecar(app, &[]).await;
    assert_eq!(get(sc.admin_addr, "/live", &[]).await.0, 200);
    assert_eq!(
        get(sc.admin_addr, "/ready", &[]).await.0,
        503,
        "not Ready without a policy bundle"
    );
    get(sc.proxy_addr, "/", &[]).await;
    let m = metrics(&sc).await;
    assert!(
        m.contains("palisade_sidecar_requests_total{verdict=\"none\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("palisade_sidecar_request_duration_seconds_count{verdict=\"none\"} 1"),
        "{m}"
    );
    sc.shutdown().await;
}

/// A client that never finishes its request head (slowloris) is cut off by the header-read
/// timeout; an idle keep-alive connection by the idle timeout. Both: the server closes.
#[tokio::test]
async fn slow_and_idle_clients_are_disconnected() {
    let app = echo_app().await;
    let sc = sidecar(
        app,
        &["--header-read-timeout", "100ms", "--idle-timeout", "200ms"],
    )
    .await;
    let mut slow = TcpStream::connect(sc.proxy_addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: a\r\nx-partial")
        .await
        .unwrap();
    let mut out = Vec::new();
    slow.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let mut idle = TcpStream::connect(sc.proxy_addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    idle.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}
