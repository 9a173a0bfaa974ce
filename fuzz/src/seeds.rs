//! Seed inputs, made with the real encoders so that they start the fuzzer past the format's
//! first checks.

use std::collections::BTreeMap;

use palisade_policy::synthetic::{self, v4_prefixes};
use palisade_policy::{
    ActionSpec, Conditions, Inputs, LabelSelector, Mode, PathMatch, Verb, compile, encode,
};

use crate::{bundle, h1};

/// `(target, file name, bytes)` of every seed.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, inputs) in bundles() {
        let now = "2026-12-01T00:00:00Z".parse().unwrap_or_default();
        let Ok(encoded) = encode(&compile(&inputs, now).bundle) else {
            continue;
        };
        for raw in [false, true] {
            let file = format!("seed-{name}{}", if raw { "-raw" } else { "" });
            out.push(("bundle_decode", file, bundle::input_for(&encoded, raw)));
        }
    }
    for (name, bits, peer, text) in requests() {
        let mut bytes = vec![bits, peer];
        bytes.extend_from_slice(&text);
        out.push(("identify_headers", format!("seed-{name}"), bytes));
    }
    for (name, bytes) in responses() {
        out.push(("h1_response", format!("seed-{name}"), bytes));
    }
    for (name, fields, size, stream) in REQUESTS {
        let mut bytes = vec![*fields, *size, 90, 180];
        bytes.extend_from_slice(stream.as_bytes());
        out.push(("h1_request", format!("seed-{name}"), bytes));
    }
    for (i, (mode, path)) in PATHS.iter().enumerate() {
        let mut bytes = vec![*mode];
        bytes.extend_from_slice(path.as_bytes());
        out.push(("path_normalize", format!("seed-{i:02}"), bytes));
    }
    out
}

/// Client streams for `h1_request`: `(name, most fields - 1, (head limit - 256) / 64,
/// stream)` (see `palisade_fuzz::h1_request`): requests as clients send them, pipelined, and
/// each class of refusal the parser has.
const REQUESTS: &[(&str, u8, u8, &str)] = &[
    (
        "get",
        99,
        255,
        "GET /index.html?x=1 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: curl/8\r\nX-Api-Key: k\r\n\r\n",
    ),
    (
        "pipelined",
        99,
        255,
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\nX-New: 1\r\n\r\n",
    ),
    (
        "chunked-and-length",
        99,
        255,
        "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "http10-keep-alive",
        99,
        255,
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    ),
    (
        "expect-upgrade",
        99,
        255,
        "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nUpgrade: websocket\r\nConnection: upgrade, close\r\nContent-Length: 3\r\n\r\nabc",
    ),
    (
        "absolute-form",
        99,
        255,
        "GET http://api.example:8080/p?q HTTP/1.1\r\nHost: api.example:8080\r\n\r\n",
    ),
    (
        "bad-coding",
        99,
        255,
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    ),
    (
        "two-lengths",
        99,
        255,
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ),
    ("bare-lf", 99, 255, "GET /lf HTTP/1.1\nHost: a\nX-A: 1\n\n"),
    (
        "many-fields",
        2,
        255,
        "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
    ),
    (
        "heap-fields",
        200,
        255,
        "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n",
    ),
    (
        "too-large",
        99,
        0,
        "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
    ),
    ("control-in-target", 99, 255, "GET /a\x01b HTTP/1.1\r\n\r\n"),
];

/// Paths for `path_normalize`, `(escaped-slash mode, path)`: every bypass of a deny on
/// `/admin` that issue 17 lists, and the escapes, dot segments and parameters around them.
const PATHS: &[(u8, &str)] = &[
    (0, "//admin"),
    (0, "/%61dmin"),
    (0, "/x/../admin"),
    (0, "/;x/admin"),
    (0, "/admin/"),
    (0, "/ADMIN"),
    (0, "/..;/admin;jsessionid=1/"),
    (0, "/%2e%2E/admin/./x/.."),
    (0, "/files/a%2cb%3Bc"),
    (0, "/a%2Fb"),
    (0, "/a\\b"),
    (0, "/bad%zz"),
    (0, "*"),
    (1, "/keep%2fthis\\too//x"),
    (2, "/un%5Cescape%2F..%2Fadmin"),
    (0, "/caf\u{e9}/%C3%A9/~user/a-b_c.d"),
];

/// Streams for `h1_response`: `(name, input)` (see `palisade_fuzz::h1` for the layout), what
/// hostile and ordinary applications answer, chunked bodies made by the harness's encoder.
fn responses() -> Vec<(&'static str, Vec<u8>)> {
    use http::{HeaderMap, HeaderValue};
    // flags, split a, split b, then the stream.
    let input = |flags: u8, a: u8, b: u8, parts: &[&[u8]]| {
        let mut out = vec![flags, a, b];
        out.extend(parts.concat());
        out
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("sha256=abc"));
    trailers.append("server-timing", HeaderValue::from_static("db;dur=53"));
    let sizes = [3, 1, 40, 7].into_iter().cycle();
    let body = h1::chunked(b"{\"items\":[1,2,3],\"next\":null}\n", sizes, &trailers);
    let plain = h1::chunked(b"hello, world", [5].into_iter().cycle(), &HeaderMap::new());
    let chunked_head: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\nTrailer: x-checksum, server-timing\r\n\
        Connection: keep-alive, x-internal\r\nX-Internal: secret\r\n\r\n";
    vec![
        (
            "plain-200",
            input(0, 0x40, 0xc0, &[
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
                  Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nDate: Tue, 01 Dec 2026 \
                  00:00:00 GMT\r\n\r\nhello",
            ]),
        ),
        (
            "chunked-ext-trailers",
            input(3 << 3, 4, 0x90, &[chunked_head, &body]),
        ),
        (
            "split-head-byte-reads",
            input(0, 1, 2, &[chunked_head, &plain]),
        ),
        (
            "interim-then-200",
            input(0, 0x10, 0x30, &[
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\
                  Link: </s.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
                  HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &plain,
            ]),
        ),
        (
            "204-with-length",
            input(0, 0x80, 0x80, &[b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"]),
        ),
        (
            "304-chunked",
            input(0, 0x20, 0xf0, &[
                b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nTransfer-Encoding: chunked\r\n\r\n",
            ]),
        ),
        (
            "head-request",
            input(1, 0x33, 0x66, &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/html\r\n\r\n",
            ]),
        ),
        (
            "length-and-chunked",
            input(0, 0x50, 0xa0, &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                &plain,
            ]),
        ),
        (
            "obs-fold",
            input(0, 0x20, 0x40, &[
                b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
            ]),
        ),
        (
            "two-lengths",
            input(0, 0x30, 0x60, &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            ]),
        ),
        (
            "equal-lengths",
            input(0, 0x30, 0x60, &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 5, 005\r\nContent-Length: 5\r\n\r\nhello",
            ]),
        ),
        (
            "bad-length",
            input(0, 0x30, 0x60, &[b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"]),
        ),
        (
            "gzip-chunked",
            input(0, 0x30, 0x60, &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                &plain,
            ]),
        ),
        (
            "http10-chunked",
            input(0, 0x30, 0x60, &[
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &plain,
            ]),
        ),
        (
            "close-delimited",
            input(0, 0x08, 0x70, &[
                b"HTTP/1.0 200 OK\r\nServer: old\r\nConnection: keep-alive\r\n\r\n\
                  the body runs to the close",
            ]),
        ),
        (
            "connection-close",
            input(0, 0x08, 0x70, &[
                b"HTTP/1.1 404 Not Found\r\nConnection: Close\r\nContent-Length: 4\r\n\r\nnope",
            ]),
        ),
        (
            "unasked-101",
            input(0, 0x40, 0x80, &[
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
            ]),
        ),
        (
            "answers-twice",
            input(0, 0x40, 0x80, &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                  HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret",
            ]),
        ),
        (
            "truncated-head",
            input(0, 0x40, 0x80, &[b"HTTP/1.1 200 OK\r\nContent-Type: text/pl"]),
        ),
        (
            "broken-chunk",
            input(0, 0x40, 0x80, &[chunked_head, b"5\r\nhello\r\n3\r\nabcX\r\n0\r\n\r\n"]),
        ),
        (
            "padded-head",
            input(4, 0x80, 0xff, &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        ),
        (
            "padded-head-too-large",
            input(4, 0x80, 0xff, &[
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-more: ",
                &[b'm'; 600],
                b"\r\n\r\nok",
            ]),
        ),
        ("body-only", input(2, 0, 6, &[&body])),
        (
            "body-only-broken",
            input(2, 2, 0, &[b"4;ext=\"quoted\"\r\nwiki\r\nffffffffffffffffff\r\n"]),
        ),
    ]
}

/// Requests for `identify_headers`: `(name, configuration bits, peer index, text)` (see
/// `palisade_fuzz::identify` for the bits).
fn requests() -> Vec<(&'static str, u8, u8, Vec<u8>)> {
    use base64::Engine as _;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"sub":"dev-1","azp":"app-9","scope":"gold"}"#);
    let jwt = format!("eyJhbGciOiJub25lIn0.{claims}.sig");
    let lines = |l: &[&str]| l.join("\n").into_bytes();
    vec![
        (
            "proxied",
            1,
            1,
            lines(&[
                "/v1/items?apikey=k%20y+z&page=2",
                "x-forwarded-for: 203.0.113.9, 10.0.0.1",
                "x-api-key: abc",
                "x-developer: alice",
                "x-developer-app: shop",
                "x-api-product: gold",
                "user-agent: curl/8.0",
            ]),
        ),
        (
            "jwt-claims",
            4,
            2,
            lines(&["/login", &format!("authorization: Bearer {jwt}")]),
        ),
        (
            "xff-v6-two-hops",
            2,
            4,
            lines(&[
                "/",
                "x-forwarded-for: [2001:db8::1]:443",
                "x-forwarded-for: 198.51.100.1, ::ffff:192.0.2.1",
            ]),
        ),
        (
            "untrusted-peer-forges",
            1,
            2,
            lines(&[
                "/admin",
                "x-forwarded-for: 10.0.0.7",
                "x-developer: trusted-partner",
                "x-api-product: unlimited",
            ]),
        ),
        (
            "two-hop-bound",
            1 | (2 << 3),
            1,
            lines(&[
                "/",
                "x-forwarded-for: 203.0.113.1, 10.0.0.3, 10.0.0.2",
                "x-forwarded-for: 10.0.0.1",
            ]),
        ),
        (
            "method-overrides",
            32,
            0,
            lines(&[
                "HEAD /items?_method=delete&apikey=a&API%4Bey=a&access_token=t",
                "x-http-method-override: PUT, patch",
                "x-api-key: a",
                "authorization: BEARER\tt",
            ]),
        ),
        (
            "many-keys",
            0,
            3,
            lines(&[
                "POST /x?apikey=1&apikey[]=2;apikey=3&ApiKey=4",
                "x-api-key: 5",
                "x-api-key: 1",
            ]),
        ),
        (
            "junk",
            3,
            5,
            [
                b"/a/../b?apikey=%zz&apikey=\n".as_slice(),
                b"x-forwarded-for: not-an-ip, \xc3\xa9t\xe9\n",
                b"authorization: bearer\t  tok\n",
                b"authorization: Basic dXNlcjpwdw==\n",
                b"x-api-key: \n",
                b"bad header: x\n",
            ]
            .concat(),
        ),
    ]
}

/// Small policies that between them use every condition kind, both IP families, workload
/// selectors, observe mode and detection rules.
fn bundles() -> Vec<(&'static str, Inputs)> {
    let prefixes: String = v4_prefixes(40, 7).map(|p| p + "\n").collect();
    let selector = LabelSelector {
        match_labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        ..Default::default()
    };
    let v6 = ActionSpec {
        name: "v6-admin".into(),
        verb: Verb::Deny {
            status: 404,
            body: "not here".into(),
            content_type: "text/plain".into(),
        },
        mode: Mode::Enforce,
        conditions: Conditions {
            ip_ranges: vec!["2001:db8::/32".into(), "10.0.0.0/8".into()],
            paths: vec![
                PathMatch::Prefix("/admin".into()),
                PathMatch::Exact("/login".into()),
            ],
            ..Default::default()
        },
        match_all: false,
        workload_selector: Some(selector),
        paused: false,
        expire_time: None,
    };
    vec![
        ("empty", Inputs::default()),
        ("every-condition", synthetic::inputs(prefixes, 24)),
        (
            "v6-selector",
            Inputs {
                actions: vec![v6],
                generation: 9,
                ..Default::default()
            },
        ),
    ]
}
