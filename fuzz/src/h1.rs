//! `h1_response`: what the sidecar makes of the bytes the application sends back on the
//! upstream hop (sidecar/src/h1.rs). The application behind the sidecar may be hostile, so its
//! response heads and chunked bodies are hostile input to [`parse_head`] and
//! [`ChunkedDecoder`]. Input layout:
//!
//! ```text
//! byte 0   flags: bit 0 the request was HEAD; bit 1 body only (the stream is a chunked body,
//!          no head); bit 2 pad (a filler field after the stream's first line makes the head
//!          about MAX_HEAD_BYTES - 500 bytes, so the size limit is in reach of small inputs);
//!          bits 3-7 the size of every other chunk when the body is encoded again (1-32)
//! byte 1   split a: the head is read in pieces cut at a/256 and b/256 of the stream; the
//! byte 2   split b  body in pieces of a+1, b+1, a+1, … bytes
//! rest     the stream: what the application sends (interim heads, a head, a body, more)
//! ```
//!
//! Properties of the head:
//!
//! - Read in pieces (each piece appended to what the last call left, as socket reads deliver
//!   them) it parses as read whole: the same head (status, fields, framing, reuse) and the
//!   same bytes left, the same refusal (compared by its text), or both incomplete with the
//!   same bytes left (interim heads removed as they complete). The one difference allowed: a
//!   head the whole stream shows malformed after [`MAX_HEAD_BYTES`] may be refused as
//!   `HeadTooLarge` in pieces, since a read that stops at the limit never sees the bad byte;
//!   both refuse it.
//! - Nothing is kept waiting for more at [`MAX_HEAD_BYTES`] or beyond; what is left is a
//!   suffix of the stream.
//! - An accepted head is checked against httparse's own reading of the same bytes (interim
//!   heads skipped): version 1.1 for the client; a final status, not 1xx; the final head
//!   within [`MAX_HEAD_BYTES`]; its fields are the head's fields, byte for byte and in order
//!   per name, less the hop-by-hop ones (the fixed list and every name a `Connection` element
//!   names) and less `Content-Length` when `Transfer-Encoding` is present; a
//!   `Transfer-Encoding` is `chunked` alone in HTTP/1.1; the framing is `Empty` for `HEAD`,
//!   `204` and `304`, else chunked, else the one length all `Content-Length` elements give
//!   (`Empty` for 0), else close-delimited; a kept `Content-Length` equals a `Length(n)`;
//!   the connection is reused exactly when the response is HTTP/1.1, no `Connection`
//!   element is `close`, it did not carry both framings and is not close-delimited. Elements
//!   are read from the bytes (split at commas, trimmed), so a line holding a non-ASCII byte
//!   still says what its other elements say.
//! - A refusal after a whole head says what the head has: `101`, two lengths, an invalid
//!   length, a coding other than `chunked`.
//!
//! Properties of a chunked body (after a chunked head, and in body-only mode):
//!
//! - Decoded in pieces of the fuzzer's sizes it gives what it gives decoded whole: the same
//!   data, trailers, end (or refusal, with the same allowance for a trailer section over
//!   the limit) and bytes left after the end.
//! - No empty data piece; no more data than body bytes; nothing kept waiting at
//!   [`MAX_HEAD_BYTES`]; a decoder at its end says so and stays there.
//! - What it decodes, encoded again in other chunk sizes (with extensions) with its trailers,
//!   decodes to the same data and trailers, and ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::BytesMut;
use http::{HeaderMap, StatusCode, Version};
use palisade_sidecar::h1::{
    Chunk, ChunkedDecoder, Error, Framing, Head, MAX_HEAD_BYTES, MAX_HEADERS, RawFields, parse_head,
};

/// Flag: the request was `HEAD`.
const HEAD_REQUEST: u8 = 1;
/// Flag: the stream is a chunked body only.
const BODY_ONLY: u8 = 2;
/// Flag: pad the head with a filler field.
const PAD: u8 = 4;
/// Bytes of the filler field's value.
const PAD_BYTES: usize = MAX_HEAD_BYTES - 512;

/// The hop-by-hop fields the sidecar never passes on (`forward::strip_hop_by_hop`), written
/// out here rather than read from the sidecar: the oracle says on its own what must go.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stream ended before a final head (the sidecar would read on).
    Partial,
    /// The head was refused (`502`): the error's variant.
    Refused(&'static str),
    /// A final head was accepted with this framing (not chunked, or chunked but the response
    /// has no body).
    Head(Framing),
    /// A chunked body was decoded.
    Body {
        /// After an accepted head (else in body-only mode).
        after_head: bool,
        /// The body ended (last chunk and trailer section read).
        ended: bool,
        /// It had trailer fields.
        trailers: bool,
        /// It was refused, with the reason.
        refused: Option<&'static str>,
    },
}

/// The target: parses the head in `data`'s stream whole and in pieces, decodes its chunked
/// body whole and in pieces, and checks every property. Panics when one fails.
pub fn h1_response(data: &[u8]) -> Outcome {
    let (flags, a, b, rest) = match data {
        [flags, a, b, rest @ ..] => (*flags, *a, *b, rest),
        _ => (0, 0, 0, &[][..]),
    };
    let again = [usize::from(flags >> 3) + 1, usize::from(b) + 1];
    if flags & BODY_ONLY != 0 {
        return check_body(rest, [a, b], again, false);
    }
    let padded;
    let stream = if flags & PAD != 0 {
        padded = pad(rest);
        &padded[..]
    } else {
        rest
    };
    let head_request = flags & HEAD_REQUEST != 0;

    let mut whole = BytesMut::from(stream);
    let one = parse_head(&mut whole, head_request);
    let cuts = [a, b].map(|s| usize::from(s) * stream.len() / 256);
    let (lo, hi) = (cuts[0].min(cuts[1]), cuts[0].max(cuts[1]));
    let (pieces, left) = in_pieces(
        &[&stream[..lo], &stream[lo..hi], &stream[hi..]],
        head_request,
    );
    compare_heads(&one, &whole, &pieces, &left);
    assert!(
        stream.ends_with(&whole),
        "what parse_head left is not a suffix of the stream"
    );
    match one {
        Ok(None) => {
            assert!(
                whole.len() < MAX_HEAD_BYTES,
                "{} bytes kept waiting for the rest of a head",
                whole.len()
            );
            Outcome::Partial
        }
        Err(e) => {
            check_refusal(&e, stream);
            Outcome::Refused(kind(&e))
        }
        Ok(Some(head)) => {
            let consumed = &stream[..stream.len() - whole.len()];
            check_head(&head, consumed, head_request);
            if head.framing == Framing::Chunked {
                check_body(&whole, [a, b], again, true)
            } else {
                Outcome::Head(head.framing)
            }
        }
    }
}

/// `rest` with the filler field after its first line (or at its end).
fn pad(rest: &[u8]) -> Vec<u8> {
    let at = rest
        .iter()
        .position(|&c| c == b'\n')
        .map_or(rest.len(), |i| i + 1);
    let mut out = Vec::with_capacity(rest.len() + PAD_BYTES + 16);
    out.extend_from_slice(&rest[..at]);
    out.extend_from_slice(b"x-pad: ");
    out.resize(out.len() + PAD_BYTES, b'p');
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&rest[at..]);
    out
}

/// Parses the head as reads deliver it: each piece appended to what is left, until a head or
/// a refusal; the pieces after that are appended unread. Returns the result and what is left.
fn in_pieces(pieces: &[&[u8]], head_request: bool) -> (Result<Option<Head>, Error>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut result = Ok(None);
    let mut pieces = pieces.iter();
    for piece in pieces.by_ref() {
        buf.extend_from_slice(piece);
        result = parse_head(&mut buf, head_request);
        if !matches!(result, Ok(None)) {
            break;
        }
        assert!(
            buf.len() < MAX_HEAD_BYTES,
            "{} bytes kept waiting for the rest of a head read in pieces",
            buf.len()
        );
    }
    for piece in pieces {
        buf.extend_from_slice(piece);
    }
    (result, buf)
}

/// Whole and in pieces agree (see the module docs).
fn compare_heads(
    one: &Result<Option<Head>, Error>,
    one_left: &[u8],
    pieces: &Result<Option<Head>, Error>,
    pieces_left: &[u8],
) {
    match (one, pieces) {
        (Ok(None), Ok(None)) => {
            assert_eq!(
                one_left, pieces_left,
                "incomplete, but different bytes left"
            );
        }
        (Ok(Some(x)), Ok(Some(y))) => {
            assert_eq!(x.parts.status, y.parts.status, "status read in pieces");
            assert_eq!(x.parts.version, y.parts.version, "version read in pieces");
            assert_eq!(x.fields(), y.fields(), "fields read in pieces");
            assert_eq!(x.framing, y.framing, "framing read in pieces");
            assert_eq!(x.keep_alive, y.keep_alive, "reuse read in pieces");
            assert_eq!(one_left, pieces_left, "bytes after the head read in pieces");
        }
        (Err(x), Err(y)) => {
            let allowed = matches!((x, y), (Error::Head(_), Error::HeadTooLarge));
            assert!(
                allowed || x.to_string() == y.to_string(),
                "refused whole as `{x}`, in pieces as `{y}`"
            );
        }
        _ => panic!("whole: {one:?}; in pieces: {pieces:?}"),
    }
}

/// The name of an error's variant (its reason, for a broken chunk). Panics for the errors of
/// a connection, which no parser returns.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Head(_) => "Head",
        Error::HeadTooLarge => "HeadTooLarge",
        Error::BadField(_) => "BadField",
        Error::ConflictingLength => "ConflictingLength",
        Error::UnsupportedCoding => "UnsupportedCoding",
        Error::UnrequestedUpgrade => "UnrequestedUpgrade",
        Error::BadChunk(reason) => reason,
        other => panic!("a parser returned a connection's error: {other}"),
    }
}

/// A head's fields as httparse reads them: names in lower case, values as sent.
#[derive(Debug, Default)]
pub(crate) struct Fields(Vec<(String, Vec<u8>)>);

impl Fields {
    pub(crate) fn of(headers: &[httparse::Header<'_>]) -> Self {
        Self(
            headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
        )
    }

    /// The comma-separated elements of every `name` field, trimmed, empty ones skipped.
    pub(crate) fn elements(&self, name: &str) -> Vec<&[u8]> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(|&c| c == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|e| !e.is_empty())
            .collect()
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
}

impl std::ops::Deref for Fields {
    type Target = [(String, Vec<u8>)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A response head as httparse reads it.
struct RawHead {
    /// Its length.
    len: usize,
    /// The lengths of the interim heads before it.
    interim: Vec<usize>,
    /// `HTTP/1.1` (else 1.0).
    http11: bool,
    code: u16,
    fields: Fields,
}

impl RawHead {
    /// The final head at the start of `stream` (interim heads other than `101` skipped), if
    /// httparse reads one whole.
    fn read(stream: &[u8]) -> Option<Self> {
        let mut at = 0;
        let mut interim = Vec::new();
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut fields);
            let Ok(httparse::Status::Complete(len)) = resp.parse(&stream[at..]) else {
                return None;
            };
            let code = resp.code?;
            if (100..200).contains(&code) && code != 101 {
                interim.push(len);
                at += len;
                continue;
            }
            return Some(Self {
                len,
                interim,
                http11: resp.version == Some(1),
                code,
                fields: Fields::of(resp.headers),
            });
        }
    }

    /// The `Content-Length` elements as numbers; `None` for one that is empty, not digits or
    /// over 64 bits (an empty element too: a length is never a list with holes).
    fn lengths(&self) -> Option<Vec<u64>> {
        self.fields
            .iter()
            .filter(|(n, _)| n == "content-length")
            .flat_map(|(_, v)| v.split(|&c| c == b','))
            .map(|e| {
                let e = e.trim_ascii();
                let digits = !e.is_empty() && e.iter().all(u8::is_ascii_digit);
                let n = std::str::from_utf8(e).ok()?.parse().ok()?;
                digits.then_some(n)
            })
            .collect()
    }
}

/// An accepted head against httparse's reading of the bytes it consumed.
fn check_head(head: &Head, consumed: &[u8], head_request: bool) {
    let raw = RawHead::read(consumed).expect("httparse does not read the accepted head");
    assert_eq!(
        raw.interim.iter().sum::<usize>() + raw.len,
        consumed.len(),
        "the bytes consumed are not the interim heads and the final one"
    );
    for len in raw.interim.iter().chain([&raw.len]) {
        assert!(*len <= MAX_HEAD_BYTES, "a head of {len} bytes accepted");
    }
    let parts = &head.parts;
    assert!(
        parts.headers.is_empty(),
        "fields in the map: {:?}",
        parts.headers
    );
    let kept = parts
        .extensions
        .get::<RawFields>()
        .expect("no RawFields in the head");
    let headers = head.fields();
    // The fields passed on are the head's own lines, in order and as written (case kept).
    let mut lines = raw_lines(consumed);
    for (n, v) in kept.iter() {
        assert!(
            lines.any(|(ln, lv)| ln == n && lv == v),
            "{:?}: {:?} is not a line of the head, in order",
            String::from_utf8_lossy(n),
            String::from_utf8_lossy(v)
        );
    }
    assert_eq!(
        kept.date,
        kept.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"date")),
        "date"
    );
    assert_eq!(parts.version, Version::HTTP_11, "not answered in HTTP/1.1");
    assert_eq!(parts.status.as_u16(), raw.code, "status");
    assert!(
        !parts.status.is_informational(),
        "an interim head ({}) taken as final",
        raw.code
    );

    let te = raw.fields.has("transfer-encoding");
    if te {
        let codings = raw.fields.elements("transfer-encoding");
        assert!(
            raw.http11 && codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked"),
            "Transfer-Encoding {codings:?} accepted (HTTP/1.1: {})",
            raw.http11
        );
    }
    let length = if te {
        None
    } else {
        let lengths = raw.lengths().expect("an invalid Content-Length accepted");
        assert!(
            lengths.windows(2).all(|w| w[0] == w[1]),
            "different lengths accepted: {lengths:?}"
        );
        lengths.first().copied()
    };
    let status = parts.status;
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Empty
        } else if te {
            Framing::Chunked
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
    assert_eq!(head.framing, framing, "framing");

    let connection = raw.fields.elements("connection");
    let close = connection.iter().any(|t| t.eq_ignore_ascii_case(b"close"));
    let both = te && raw.fields.has("content-length");
    let keep = raw.http11 && !close && !both && framing != Framing::Close;
    assert_eq!(
        head.keep_alive, keep,
        "reuse (HTTP/1.1 {}, close {close}, both framings {both}, {framing:?})",
        raw.http11
    );

    // The fields: the head's, less the hop-by-hop ones and a length beside chunks.
    let named = |n: &str| {
        connection
            .iter()
            .any(|t| t.eq_ignore_ascii_case(n.as_bytes()))
    };
    let mut want: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    for (n, v) in raw.fields.iter() {
        if HOP_BY_HOP.contains(&n.as_str()) || named(n) || (te && n == "content-length") {
            continue;
        }
        want.entry(n).or_default().push(v);
    }
    let mut got: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    for (n, v) in &headers {
        got.entry(n.as_str()).or_default().push(v.as_bytes());
    }
    assert_eq!(
        got, want,
        "the fields passed on are not the head's less the hop-by-hop ones (Connection: \
         {connection:?})"
    );
    match head.framing {
        Framing::Chunked => assert!(
            !headers.contains_key(http::header::CONTENT_LENGTH),
            "Content-Length kept beside chunks"
        ),
        Framing::Length(n) => {
            assert!(n > 0, "Length(0)");
            assert_eq!(kept.length, Some(n), "the length passed on");
            for v in headers.get_all(http::header::CONTENT_LENGTH) {
                let text = std::str::from_utf8(v.as_bytes()).unwrap_or("");
                for e in text.split(',').map(str::trim) {
                    assert_eq!(
                        e.parse::<u64>().ok(),
                        Some(n),
                        "Content-Length {v:?} kept for {n}"
                    );
                }
            }
        }
        Framing::Close => assert!(
            !head.keep_alive,
            "a close-delimited body on a kept connection"
        ),
        Framing::Empty => {}
    }
}

/// The field lines of the final head at the end of `consumed`, as written.
fn raw_lines(consumed: &[u8]) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
    let raw = RawHead::read(consumed).expect("httparse reads the head");
    let start = raw.interim.iter().sum::<usize>();
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let _ = resp.parse(&consumed[start..]);
    resp.headers
        .iter()
        .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
        .collect::<Vec<_>>()
        .into_iter()
}

/// A refusal of a whole head says what the head has.
fn check_refusal(e: &Error, stream: &[u8]) {
    let raw = || RawHead::read(stream).expect("refused after a whole head httparse cannot read");
    match e {
        Error::UnrequestedUpgrade => assert_eq!(raw().code, 101, "UnrequestedUpgrade"),
        Error::ConflictingLength => {
            let raw = raw();
            let distinct = raw
                .fields
                .elements("content-length")
                .into_iter()
                .filter_map(|e| std::str::from_utf8(e).ok()?.parse::<u64>().ok())
                .collect::<std::collections::BTreeSet<_>>();
            assert!(
                distinct.len() > 1,
                "ConflictingLength with lengths {distinct:?}"
            );
        }
        Error::BadField("Content-Length") => {
            assert!(raw().lengths().is_none(), "a valid Content-Length refused");
        }
        Error::UnsupportedCoding => {
            let raw = raw();
            let codings = raw.fields.elements("transfer-encoding");
            let chunked = codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked");
            assert!(
                !raw.http11 || !chunked,
                "Transfer-Encoding: chunked refused in HTTP/1.1"
            );
        }
        _ => {}
    }
}

/// What decoding a chunked body came to.
#[derive(Debug, Default)]
struct Decoded {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// The error's reason and text.
    error: Option<(&'static str, String)>,
    /// What is left unread: after the end, or an incomplete trailer section.
    left: Vec<u8>,
}

/// Decodes `body` read in pieces of `sizes` (the rest in one piece when they run out).
fn decode(body: &[u8], mut sizes: impl Iterator<Item = usize>) -> Decoded {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Decoded::default();
    let mut at = 0;
    'read: while at < body.len() {
        let n = sizes.next().unwrap_or(usize::MAX).clamp(1, body.len() - at);
        buf.extend_from_slice(&body[at..at + n]);
        at += n;
        loop {
            match decoder.decode(&mut buf) {
                Ok(None) => {
                    assert!(
                        buf.len() < MAX_HEAD_BYTES,
                        "{} bytes of a body kept waiting",
                        buf.len()
                    );
                    break;
                }
                Ok(Some(Chunk::Data(d))) => {
                    assert!(!d.is_empty(), "an empty data piece");
                    out.data.extend_from_slice(&d);
                }
                Ok(Some(Chunk::Trailers(t))) => {
                    out.trailers = Some(t);
                    out.ended = true;
                    break 'read;
                }
                Ok(Some(Chunk::End)) => {
                    out.ended = true;
                    break 'read;
                }
                Err(e) => {
                    out.error = Some((kind(&e), e.to_string()));
                    break 'read;
                }
            }
        }
    }
    buf.extend_from_slice(&body[at..]);
    if out.ended {
        assert!(decoder.is_end(), "ended, but the decoder does not say so");
        let before = buf.clone();
        let after = decoder.decode(&mut buf);
        assert!(
            matches!(after, Ok(Some(Chunk::End))) && buf == before,
            "a decoder at its end read on: {after:?}"
        );
    } else if out.error.is_none() {
        assert!(
            !decoder.is_end(),
            "the decoder says it ended, but it did not"
        );
    }
    out.left = buf.to_vec();
    out
}

/// Decodes `body` whole and in pieces, and encoded again; returns the outcome.
fn check_body(body: &[u8], split: [u8; 2], again: [usize; 2], after_head: bool) -> Outcome {
    let one = decode(body, std::iter::empty());
    let sizes = split.map(|s| usize::from(s) + 1);
    let pieces = decode(body, sizes.into_iter().cycle());
    assert_eq!(one.data, pieces.data, "data decoded in pieces");
    match (&one.error, &pieces.error) {
        (None, None) => {
            assert_eq!(one.trailers, pieces.trailers, "trailers decoded in pieces");
            assert_eq!(one.ended, pieces.ended, "end decoded in pieces");
            assert_eq!(one.left, pieces.left, "bytes left decoded in pieces");
        }
        (Some((_, x)), Some((_, y))) => {
            let allowed = x == "the application's chunked body is malformed: trailer section"
                && y == "the application's chunked body is malformed: trailer section too large";
            assert!(
                allowed || x == y,
                "refused whole as `{x}`, in pieces as `{y}`"
            );
        }
        (x, y) => panic!("refused whole: {x:?}; in pieces: {y:?}"),
    }
    assert!(one.data.len() <= body.len(), "more data than body");

    let trailers = one.trailers.clone().unwrap_or_default();
    let encoded = chunked(&one.data, again.into_iter().cycle(), &trailers);
    let decoded = decode(&encoded, std::iter::empty());
    assert!(
        decoded.ended && decoded.error.is_none(),
        "encoded again, it does not end: {decoded:?}"
    );
    assert_eq!(decoded.data, one.data, "data encoded again");
    assert_eq!(
        decoded.trailers.unwrap_or_default(),
        trailers,
        "trailers encoded again"
    );
    assert!(
        decoded.left.is_empty(),
        "bytes left after a body encoded again"
    );

    Outcome::Body {
        after_head,
        ended: one.ended,
        trailers: !trailers.is_empty(),
        refused: one.error.map(|(reason, _)| reason),
    }
}

/// `data` as a chunked body in chunks of `sizes` (each at least 1 byte; every other chunk
/// with an extension), its last chunk and `trailers`.
pub fn chunked(data: &[u8], sizes: impl Iterator<Item = usize>, trailers: &HeaderMap) -> Vec<u8> {
    let mut out = String::new();
    let mut bytes = Vec::new();
    let mut rest = data;
    for (i, size) in sizes.enumerate() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
        rest = tail;
        out.clear();
        // Writing to a String cannot fail.
        let _ = write!(out, "{:x}", chunk.len());
        if i % 2 == 1 {
            let _ = write!(out, ";n={i};q=\"a b\"");
        }
        bytes.extend_from_slice(out.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    if !rest.is_empty() {
        // `sizes` ran out: the rest in one chunk.
        bytes.extend_from_slice(format!("{:x}\r\n", rest.len()).as_bytes());
        bytes.extend_from_slice(rest);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        bytes.extend_from_slice(name.as_str().as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes
}
