//! Request smuggling: a request hidden from the sidecar in the framing of another, so that it
//! reaches the application without being enforced. Every case sends raw bytes over TCP to a
//! sidecar whose policy denies `/smuggled`, with a `GET /smuggled` hidden after the first
//! request the way the class hides it. The application records every request it receives:
//! it must never see `/smuggled`, only requests the sidecar parsed itself. Each case gets the
//! answer named in docs/sidecar.md ("What the client sees"), and the sidecar keeps serving.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use palisade_policy::PathMatch;
use palisade_sidecar::Sidecar;

use crate::support::bundle::{deny, when, write};
use crate::support::*;

/// The hidden request every case carries (asking to close, so that a sidecar which does
/// parse it as a request of its own closes the connection after denying it).
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n";

struct Env {
    sc: Sidecar,
    /// Targets the application received, in order.
    seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// An application that records every target and answers 200, behind a sidecar that denies
/// `/smuggled`.
async fn env() -> Env {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app: SocketAddr = app(move |req, _| {
        log.lock().unwrap().push(req.uri().to_string());
        async move {
            // Read the whole body, as an application does before answering.
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            http::Response::new(full("app"))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let conditions = when(|c| c.paths = vec![PathMatch::Prefix("/smuggled".into())]);
    let hash = write(dir.path(), vec![deny("no-smuggling", conditions)], 1);
    let path = dir.path().to_str().unwrap().to_owned();
    let sc = sidecar(app, &["--bundle-path", &path, "--bundle-poll", "20ms"]).await;
    wait_for_bundle(&sc, &hash).await;
    Env {
        sc,
        seen,
        _dir: dir,
    }
}

impl Env {
    /// Sends `bytes` on a new connection; returns the status of every response the sidecar
    /// wrote before it closed the connection.
    async fn statuses(&self, bytes: &[u8]) -> Vec<String> {
        let text = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            raw(self.sc.proxy_addr, bytes),
        )
        .await
        .expect("the sidecar closes the connection");
        // Bodies here ("app", the deny's name) never contain a status line.
        text.match_indices("HTTP/1.")
            .filter_map(|(i, _)| text.get(i + 9..i + 12))
            .map(str::to_owned)
            .collect()
    }

    /// The sidecar still serves a well-formed request.
    async fn still_serves(&self) {
        let (status, _, body) = get(self.sc.proxy_addr, "/after", &[]).await;
        assert_eq!((status, body.as_str()), (200, "app"));
    }

    fn app_saw(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Cases the parser refuses outright: `400` before any request exists, connection closed, the
/// application sees nothing.
#[tokio::test]
async fn malformed_framing_is_400_and_reaches_nothing() {
    let e = env().await;
    let cases: Vec<(&str, String)> = vec![
        (
            "duplicate Content-Length, different values",
            format!(
                "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{SMUGGLED}",
                5 + SMUGGLED.len()
            ),
        ),
        (
            "Content-Length list with different values",
            format!(
                "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 5, {}\r\n\r\nhello{SMUGGLED}",
                5 + SMUGGLED.len()
            ),
        ),
        (
            // Equal values would frame the same body; the sidecar takes no list at all, so
            // no reading of one can differ from the application's.
            "Content-Length list with equal values",
            format!(
                "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello{SMUGGLED}"
            ),
        ),
        (
            "signed Content-Length",
            format!("POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: +0\r\n\r\n{SMUGGLED}"),
        ),
        (
            "obs-fold continuation line",
            format!(
                "POST /first HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "space before the colon",
            format!(
                "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "Transfer-Encoding other than chunked",
            format!("POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n{SMUGGLED}"),
        ),
        (
            "chunked not the final coding",
            format!(
                "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "lookalike coding",
            format!(
                "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!(
                "POST /first HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "space in the request target",
            format!("GET /first {SMUGGLED}"),
        ),
        (
            "control byte in the request target",
            format!("GET /fi\x01rst HTTP/1.1\r\nHost: a\r\n\r\n{SMUGGLED}"),
        ),
        (
            "tab in the request target",
            format!("GET /fi\trst HTTP/1.1\r\nHost: a\r\n\r\n{SMUGGLED}"),
        ),
        (
            "DEL in the request target",
            format!("GET /fi\x7frst HTTP/1.1\r\nHost: a\r\n\r\n{SMUGGLED}"),
        ),
        (
            "NUL in a header value",
            format!("GET /first HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n{SMUGGLED}"),
        ),
    ];
    for (name, bytes) in &cases {
        let got = e.statuses(bytes.as_bytes()).await;
        assert_eq!(got, ["400"], "{name}: the sidecar answered {got:?}");
        assert_eq!(e.app_saw(), Vec::<String>::new(), "{name}");
    }
    e.still_serves().await;
}

/// Content-Length and Transfer-Encoding together: processed by Transfer-Encoding alone and the
/// connection closed after the answer (RFC 9112 §6.3), so bytes after the chunked body are
/// never read as a request — in either order of the two headers, whichever length would
/// hide the second request.
#[tokio::test]
async fn content_length_with_transfer_encoding_frames_by_chunks_and_closes() {
    let e = env().await;
    let chunked = "0\r\n\r\n";
    let hidden = format!("{chunked}{SMUGGLED}");
    let cases = [
        // A Content-Length that ends before the hidden request: TE wins.
        format!(
            "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{hidden}",
            chunked.len()
        ),
        // A Content-Length that covers it, headers the other way round.
        format!(
            "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        ),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let got = e.statuses(bytes.as_bytes()).await;
        assert_eq!(got, ["200"], "case {i}: one answer, then closed");
    }
    assert_eq!(e.app_saw(), ["/first", "/first"]);
    e.still_serves().await;
}

/// Bare LF line endings, which RFC 9112 §2.2 lets a recipient accept: the sidecar parses the
/// head its way and forwards a head it writes itself (CRLF), so the application can only see
/// what the sidecar saw and enforced. A hidden `Transfer-Encoding` behind a bare LF frames the
/// body as the sidecar reads it; a `/smuggled` after it is a request of its own, denied.
#[tokio::test]
async fn bare_lf_heads_cannot_hide_a_request() {
    let e = env().await;
    let bytes = format!(
        "POST /first HTTP/1.1\nHost: a\nX-A: 1\nTransfer-Encoding: chunked\n\n0\r\n\r\n{SMUGGLED}"
    );
    let got = e.statuses(bytes.as_bytes()).await;
    // Either refused, or two requests both parsed by the sidecar: /first and /smuggled (denied).
    assert!(
        got == ["400"] || got == ["200", "403"],
        "the sidecar answered {got:?}"
    );
    let seen = e.app_saw();
    assert!(seen.iter().all(|t| t == "/first"), "{seen:?}");
    e.still_serves().await;
}

/// A chunk size too large for 64 bits, and chunk sizes that are not hex: the body cannot be
/// framed, so the request fails (no `2xx`) and the connection closes; the bytes after it are
/// never read as a request.
#[tokio::test]
async fn bad_chunk_sizes_fail_the_request_and_close() {
    let e = env().await;
    for size in ["1FFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFFF", "-5", "0x5", "5 5"] {
        let bytes = format!(
            "POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
        );
        let got = e.statuses(bytes.as_bytes()).await;
        assert!(
            got.iter().all(|s| !s.starts_with('2')),
            "chunk size {size:?}: {got:?}"
        );
    }
    let seen = e.app_saw();
    assert!(seen.iter().all(|t| t == "/first"), "{seen:?}");
    e.still_serves().await;
}

/// An absolute-form target whose authority differs from `Host`: RFC 9112 §3.2.2 makes the
/// target's authority win, the application would route by `Host`; the sidecar refuses the
/// disagreement with `400`. The same authority (any case, default port written or not) passes.
#[tokio::test]
async fn absolute_form_with_another_host_is_400() {
    let e = env().await;
    let refused = [
        "GET http://evil.example/first HTTP/1.1\r\nHost: api.example\r\n\r\n",
        "GET http://api.example:8080/first HTTP/1.1\r\nHost: api.example\r\n\r\n",
        "GET http://api.example/first HTTP/1.1\r\nHost: api.example.evil\r\n\r\n",
    ];
    for bytes in refused {
        let got = e.statuses(bytes.as_bytes()).await;
        assert_eq!(got, ["400"], "{bytes:?}");
    }
    assert_eq!(e.app_saw(), Vec::<String>::new());
    let accepted = [
        "GET http://API.example/first HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
        "GET http://api.example:80/first HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
        "GET http://api.example/first HTTP/1.1\r\nHost: api.example:80\r\nConnection: close\r\n\r\n",
    ];
    for bytes in accepted {
        let got = e.statuses(bytes.as_bytes()).await;
        assert_eq!(got, ["200"], "{bytes:?}");
    }
    e.still_serves().await;
}
