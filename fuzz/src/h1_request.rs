//! `h1_request`: what the sidecar makes of the bytes a client sends on an HTTP/1.x connection
//! (sidecar/src/h1_server.rs). Every byte a client sends is hostile input to
//! [`parse_head`]; a request's chunked body goes through the decoder `h1_response` fuzzes.
//! Input layout:
//!
//! ```text
//! byte 0   most fields: byte + 1 (1-256: above 128 the parser's field array is on the heap)
//! byte 1   largest head: 256 + 64 × byte bytes (256-16,576)
//! byte 2   split a: the head is read in pieces cut at a/256 and b/256 of the stream
//! byte 3   split b
//! rest     the stream: what the client sends (a head, a body, more requests)
//! ```
//!
//! Properties:
//!
//! - Read in pieces (each piece appended to what the last call left, as socket reads deliver
//!   them, with the scratch space — the field names — the whole read left, as a
//!   connection's next head finds it) it parses as read whole: the same head and the same
//!   bytes left, the same refusal, or both incomplete with the same bytes left. The one
//!   difference allowed: a head the whole stream shows refused after the size limit may be
//!   refused as too large in pieces, since a read that stops at the limit never sees why.
//! - Nothing is kept waiting for more at the size limit or beyond; what is left is a suffix
//!   of the stream.
//! - An accepted head is checked against httparse's own reading of the same bytes: within
//!   both limits; the method and version; its fields are the head's, byte for byte and in
//!   order per name, less `Content-Length` beside a `Transfer-Encoding`; a
//!   `Transfer-Encoding` is one `chunked` in HTTP/1.1; `Content-Length` lines are digits and
//!   agree, also beside a `Transfer-Encoding`; the framing is chunked, else the length
//!   (`Empty` for none or 0); the connection is kept exactly when HTTP/1.1 has no `close`
//!   element (HTTP/1.0: a `keep-alive` and no `close`) and the head did not carry both
//!   framings; `Expect: 100-continue` and `Upgrade` are seen.
//! - A refusal of a head httparse reads whole within the limits names what is wrong, and it
//!   is: the method, the target, a field's name or value, `Transfer-Encoding` or
//!   `Content-Length`.
//! - The head after an accepted one (the next request on the connection) parses with the
//!   connection's scratch space as with fresh scratch space.

use crate::h1::Fields;
use bytes::BytesMut;
use http::{HeaderName, HeaderValue, Method, Uri, Version};
use palisade_sidecar::h1_server::{
    BodyFraming, HeadError, Limits, RequestHead, Scratch, parse_head,
};

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stream ended before a whole head.
    Partial,
    /// The head was refused: the status the client gets, and the reason.
    Refused(u16, String),
    /// A head was accepted with this framing.
    Head(BodyFraming),
}

/// The target. Panics when a property fails.
pub fn h1_request(data: &[u8]) -> Outcome {
    let (fields, size, a, b, stream) = match data {
        [f, s, a, b, rest @ ..] => (*f, *s, *a, *b, rest),
        _ => (99, 255, 0, 0, &[][..]),
    };
    let limits = Limits {
        max_headers: usize::from(fields) + 1,
        max_head_bytes: 256 + 64 * usize::from(size),
    };
    let mut whole = BytesMut::from(stream);
    let mut scratch = Scratch::default();
    let one = parse_head(&mut whole, limits, &mut scratch);
    assert!(
        stream.ends_with(&whole),
        "what parse_head left is not a suffix of the stream"
    );
    let cuts = [a, b].map(|s| usize::from(s) * stream.len() / 256);
    let (lo, hi) = (cuts[0].min(cuts[1]), cuts[0].max(cuts[1]));
    let (pieces, left) = in_pieces(
        &[&stream[..lo], &stream[lo..hi], &stream[hi..]],
        limits,
        &mut scratch,
    );
    compare(&one, &whole, &pieces, &left);
    match one {
        Ok(None) => {
            assert!(
                whole.len() < limits.max_head_bytes,
                "{} bytes kept waiting for the rest of a head",
                whole.len()
            );
            Outcome::Partial
        }
        Err(e) => {
            check_refusal(&e, stream, limits);
            Outcome::Refused(e.status().as_u16(), e.to_string())
        }
        Ok(Some(head)) => {
            let consumed = &stream[..stream.len() - whole.len()];
            check_head(&head, consumed, limits);
            // The next request on the connection: the scratch space the first left makes
            // no difference.
            let mut next = whole.clone();
            let with = parse_head(&mut next, limits, &mut scratch);
            let mut fresh_left = whole.clone();
            let fresh = parse_head(&mut fresh_left, limits, &mut Scratch::default());
            compare(&fresh, &fresh_left, &with, &next);
            Outcome::Head(head.framing)
        }
    }
}

/// Parses as reads deliver the stream; the pieces after a result are appended unread.
fn in_pieces(
    pieces: &[&[u8]],
    limits: Limits,
    scratch: &mut Scratch,
) -> (Result<Option<RequestHead>, HeadError>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut result = Ok(None);
    let mut pieces = pieces.iter();
    for piece in pieces.by_ref() {
        buf.extend_from_slice(piece);
        result = parse_head(&mut buf, limits, scratch);
        if !matches!(result, Ok(None)) {
            break;
        }
        assert!(
            buf.len() < limits.max_head_bytes,
            "{} bytes kept waiting for the rest of a head read in pieces",
            buf.len()
        );
    }
    for piece in pieces {
        buf.extend_from_slice(piece);
    }
    (result, buf)
}

fn compare(
    one: &Result<Option<RequestHead>, HeadError>,
    one_left: &[u8],
    other: &Result<Option<RequestHead>, HeadError>,
    other_left: &[u8],
) {
    match (one, other) {
        (Ok(None), Ok(None)) => assert_eq!(one_left, other_left, "incomplete, other bytes left"),
        (Ok(Some(x)), Ok(Some(y))) => {
            assert_eq!(x.parts.method, y.parts.method, "method");
            assert_eq!(x.parts.uri, y.parts.uri, "target");
            assert_eq!(x.parts.version, y.parts.version, "version");
            assert_eq!(x.parts.headers, y.parts.headers, "fields");
            assert_eq!(x.framing, y.framing, "framing");
            assert_eq!(x.keep_alive, y.keep_alive, "keep-alive");
            assert_eq!(x.expect_continue, y.expect_continue, "expect");
            assert_eq!(x.upgrade, y.upgrade, "upgrade");
            assert_eq!(one_left, other_left, "bytes after the head");
        }
        (Err(x), Err(y)) => assert!(
            x == y || *y == HeadError::TooLarge,
            "refused as `{x}`, and as `{y}`"
        ),
        _ => panic!("one read: {one:?}; the other: {other:?}"),
    }
}

/// A request head as httparse reads it (with room for any number of fields).
struct RawHead {
    len: usize,
    method: String,
    target: Vec<u8>,
    http11: bool,
    fields: Fields,
}

impl RawHead {
    fn read(stream: &[u8]) -> Option<Self> {
        let mut fields = vec![httparse::EMPTY_HEADER; 4096];
        let mut req = httparse::Request::new(&mut fields);
        let Ok(httparse::Status::Complete(len)) = req.parse(stream) else {
            return None;
        };
        Some(Self {
            len,
            method: req.method?.to_owned(),
            target: req.path?.as_bytes().to_vec(),
            http11: req.version == Some(1),
            fields: Fields::of(req.headers),
        })
    }

    /// `Content-Length` lines: `Some(lengths)` when each is plain digits that fit in 64 bits.
    fn lengths(&self) -> Option<Vec<u64>> {
        self.fields
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| {
                let digits = !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit);
                digits.then(|| std::str::from_utf8(v).ok()?.parse().ok())?
            })
            .collect()
    }

    /// Whether the framing fields are acceptable: `Content-Length` lines plain digits that
    /// agree (also beside a `Transfer-Encoding`, which then wins: an invalid length is
    /// refused rather than ignored), and a `Transfer-Encoding` one `chunked` in HTTP/1.1.
    fn framing_ok(&self) -> bool {
        let lengths = self
            .lengths()
            .is_some_and(|l| l.windows(2).all(|w| w[0] == w[1]));
        let coding = !self.fields.has("transfer-encoding") || {
            let codings = self.fields.elements("transfer-encoding");
            self.http11 && codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked")
        };
        lengths && coding
    }
}

fn check_head(head: &RequestHead, consumed: &[u8], limits: Limits) {
    let raw = RawHead::read(consumed).expect("httparse does not read the accepted head");
    assert_eq!(
        raw.len,
        consumed.len(),
        "the bytes consumed are not the head"
    );
    assert!(
        raw.len <= limits.max_head_bytes,
        "a head of {} bytes",
        raw.len
    );
    assert!(
        raw.fields.len() <= limits.max_headers,
        "{} fields accepted",
        raw.fields.len()
    );
    let parts = &head.parts;
    assert_eq!(parts.method.as_str(), raw.method, "method");
    let version = if raw.http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    assert_eq!(parts.version, version, "version");
    assert_eq!(
        Some(&parts.uri),
        Uri::try_from(raw.target.as_slice()).ok().as_ref(),
        "target"
    );
    assert!(
        raw.framing_ok(),
        "framing fields accepted: {:?}",
        raw.fields
    );
    let te = raw.fields.has("transfer-encoding");
    let framing = if te {
        BodyFraming::Chunked
    } else {
        match raw.lengths().and_then(|l| l.first().copied()) {
            None | Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        }
    };
    assert_eq!(head.framing, framing, "framing");
    let connection = raw.fields.elements("connection");
    let close = connection.iter().any(|t| t.eq_ignore_ascii_case(b"close"));
    let alive = connection
        .iter()
        .any(|t| t.eq_ignore_ascii_case(b"keep-alive"));
    let both = te && raw.fields.has("content-length");
    let keep = (raw.http11 || alive) && !close && !both;
    assert_eq!(head.keep_alive, keep, "keep-alive (both framings: {both})");
    let expect = raw
        .fields
        .iter()
        .rev()
        .find(|(n, _)| n == "expect")
        .is_some_and(|(_, v)| v.eq_ignore_ascii_case(b"100-continue"));
    assert_eq!(head.expect_continue, expect && raw.http11, "expect");
    assert_eq!(head.upgrade, raw.fields.has("upgrade"), "upgrade");
    let want: Vec<(&str, &[u8])> = raw
        .fields
        .iter()
        .filter(|(n, _)| !(te && n == "content-length"))
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    for name in parts.headers.keys() {
        let got: Vec<&[u8]> = parts
            .headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let expected: Vec<&[u8]> = want
            .iter()
            .filter(|(n, _)| *n == name.as_str())
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(got, expected, "the values of {name}");
    }
    assert_eq!(parts.headers.len(), want.len(), "field count");
}

/// A refusal of a head that httparse reads whole within the limits says what is wrong.
fn check_refusal(e: &HeadError, stream: &[u8], limits: Limits) {
    let Some(raw) = RawHead::read(stream) else {
        return;
    };
    if raw.len > limits.max_head_bytes {
        return;
    }
    match e {
        HeadError::TooLarge => panic!("a head of {} bytes refused as too large", raw.len),
        HeadError::TooManyFields => assert!(
            raw.fields.len() > limits.max_headers,
            "{} fields refused as too many",
            raw.fields.len()
        ),
        HeadError::Malformed(what) => {
            let why = match *what {
                "method" => Method::from_bytes(raw.method.as_bytes()).is_err(),
                "target" => Uri::try_from(raw.target.as_slice()).is_err(),
                "field name" => raw
                    .fields
                    .iter()
                    .any(|(n, _)| HeaderName::from_bytes(n.as_bytes()).is_err()),
                "field value" => raw
                    .fields
                    .iter()
                    .any(|(_, v)| HeaderValue::from_bytes(v).is_err()),
                "Transfer-Encoding" | "Content-Length" => !raw.framing_ok(),
                // httparse's own refusals: it read the head whole above only with more room
                // for fields.
                _ => raw.fields.len() > limits.max_headers,
            };
            assert!(
                why,
                "refused ({what}) a head with nothing wrong of that kind"
            );
        }
    }
}
