//! The upstream hop's HTTP/1.1 client: writes a request to the application and reads its
//! response, in the task of the client connection, with no dispatcher task or channel in
//! between (hyper's client connection polls a dispatcher's read, write and flush states
//! three times a request; this reads and writes the socket in straight-line code, as the
//! request and its body need it).
//!
//! What it accepts from the application, and what it refuses (the client gets **502** for a
//! refused head; a refused body is cut off, as its head was already sent), per RFC 9112:
//!
//! - The head is parsed by `httparse` (the parser hyper uses): a status line that is not
//!   `HTTP/1.0` or `HTTP/1.1` with a three-digit status, a header line folded onto the next
//!   (obs-fold), a space before a header's colon, a control character in a value, more than
//!   [`MAX_HEADERS`] fields or a head over [`MAX_HEAD_BYTES`] are refused.
//! - Interim responses (`100`, `102`, `103`, …) are read and dropped; `101` to a request that
//!   did not ask to upgrade is refused.
//! - The body's length (§6.3): none for a `HEAD` request, a `204` or a `304` whatever the
//!   fields say; `Transfer-Encoding` must be exactly `chunked` (any other coding is refused,
//!   as nginx does) and then wins over a `Content-Length`, which is removed, and the
//!   connection is not reused; `Content-Length` values must be digits and all equal; with
//!   neither, the body runs to the connection's close.
//! - Chunked bodies are decoded strictly: hex sizes that fit in 64 bits, then spaces and `;`
//!   and an extension of at most [`MAX_CHUNK_EXT`] bytes, or CRLF; CRLF after each chunk's
//!   data; a trailer section of at most [`MAX_HEAD_BYTES`] parsed like a head, without its
//!   framing and hop-by-hop fields.
//! - A bare LF ends a head's line as CRLF does (httparse reads responses so, as hyper and
//!   nginx do); interim heads are not counted (the response timeout bounds them).
//! - A connection is reused only when the response was HTTP/1.1 without `Connection: close`,
//!   its body ended where its framing said, the request was sent whole, and no byte followed
//!   the response (an application that answers twice never has its second answer served to
//!   the next request).
//!
//! Hop-by-hop fields (the fixed list and every name a `Connection` element names) are removed
//! from the parsed head, which keeps the rest as the application wrote them ([`RawFields`]).

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use crate::h1_server::ReqBody;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use crate::forward::{self, is_hop_by_hop, list};

/// Largest response head (and chunked trailer section) read from the application.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
// Offsets into a head fit in 16 bits (see `parse_head`).
const _: () = assert!(MAX_HEAD_BYTES <= u16::MAX as usize + 1);
/// Most header fields of a response head (and trailer fields of a chunked body).
pub const MAX_HEADERS: usize = 100;
/// Longest extension of one chunk's size line.
pub const MAX_CHUNK_EXT: usize = 4096;
/// Most digits of a chunk size (leading zeros included).
const MAX_SIZE_DIGITS: u8 = 64;
/// What one read from the application asks for, at least.
const READ_SIZE: usize = 8 * 1024;
/// What one read of a long body asks for, at most.
const MAX_READ_SIZE: usize = 64 * 1024;

/// What is wrong with what the application sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the application's response head is not valid HTTP/1.x: {0}")]
    Head(httparse::Error),
    #[error("the application's response head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("the application's response has an invalid {0} value")]
    BadField(&'static str),
    #[error("the application's response has two different Content-Length values")]
    ConflictingLength,
    #[error("the application's response has a Transfer-Encoding other than `chunked`")]
    UnsupportedCoding,
    #[error("the application switched protocols (101) on a request that did not ask to")]
    UnrequestedUpgrade,
    #[error("the application's chunked body is malformed: {0}")]
    BadChunk(&'static str),
    #[error("the application closed the connection before the response head was complete")]
    ClosedBeforeHead,
    #[error("the application closed the connection before the response body was complete")]
    ClosedInBody,
    #[error("the client's request body failed")]
    RequestBody(#[source] crate::rescue::BoxError),
    #[error("reading from or writing to the application failed")]
    Io(#[from] std::io::Error),
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the application closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status and headers (hop-by-hop fields removed; `Content-Length` removed when the body
    /// is chunked); the version is 1.1.
    pub parts: http::response::Parts,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection may take another request after this response.
    pub keep_alive: bool,
}

/// Most distinct field names one connection remembers ([`Names`]).
const MAX_NAMES: usize = 32;

/// The field names a connection's heads used, as they were written and parsed: a peer
/// repeats the same names from one head to the next (usually in the same order), and a name
/// seen before is not parsed again (for a name of no standard field, parsing also
/// allocates). At most [`MAX_NAMES`]; a peer that sends ever new names only replaces them.
#[derive(Debug, Default)]
pub struct Names {
    seen: Vec<(Box<[u8]>, HeaderName)>,
}

impl Names {
    /// The name of the `i`th field of a head, written as `raw`.
    pub fn get(&mut self, i: usize, raw: &[u8]) -> Result<HeaderName, header::InvalidHeaderName> {
        if let Some((r, name)) = self.seen.get(i)
            && **r == *raw
        {
            return Ok(name.clone());
        }
        if let Some((_, name)) = self.seen.iter().find(|(r, _)| **r == *raw) {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw)?;
        let entry = (Box::from(raw), name.clone());
        if i < self.seen.len() {
            self.seen[i] = entry;
        } else if self.seen.len() < MAX_NAMES {
            self.seen.push(entry);
        }
        Ok(name)
    }
}

/// The fields of an application's response head as it wrote them (names in its case),
/// less the hop-by-hop ones, sharing the bytes read: put in the response's extensions by
/// [`parse_head`] and written to the client by [`crate::h1_server`] as they are, so the
/// fields of a response are never parsed into a `HeaderMap` only to be written again.
/// Fields the sidecar adds go in the response's `HeaderMap` and are written after these.
#[derive(Debug, Clone)]
pub struct RawFields {
    head: Bytes,
    /// Offset and length of each field's name and value in `head`.
    spans: Vec<[u16; 4]>,
    /// A `Date` field is among them.
    pub date: bool,
    /// The value of a `Content-Length` among them (none beside chunked framing).
    pub length: Option<u64>,
}

impl RawFields {
    /// The fields, name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|&[n, nl, v, vl]| {
            let (n, nl, v, vl) = (
                usize::from(n),
                usize::from(nl),
                usize::from(v),
                usize::from(vl),
            );
            (&self.head[n..n + nl], &self.head[v..v + vl])
        })
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The fields as a `HeaderMap` (names in lower case).
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.len());
        for (n, v) in self.iter() {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                map.append(n, v);
            }
        }
        map
    }
}

impl Head {
    /// The fields passed on, as a `HeaderMap` (names in lower case).
    pub fn fields(&self) -> HeaderMap {
        self.parts
            .extensions
            .get::<RawFields>()
            .map(RawFields::to_map)
            .unwrap_or_default()
    }
}

/// Parses the final response head at the start of `buf`, dropping interim (1xx) heads before
/// it, and removes what it read from `buf`. `Ok(None)`: the head is not complete yet (bytes of
/// dropped interim heads are removed all the same). `head_request`: the request was `HEAD`,
/// so the response has no body whatever its fields say. The fields go in the head's
/// extensions as [`RawFields`]; its `HeaderMap` is empty.
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Error> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(Error::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Error::Head(e)),
        };
        if len > MAX_HEAD_BYTES {
            return Err(Error::HeadTooLarge);
        }
        let code = resp.code.unwrap_or(0);
        let version = match resp.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        if code == 101 {
            return Err(Error::UnrequestedUpgrade);
        }
        let status = StatusCode::from_u16(code).map_err(|_| Error::BadField("status"))?;
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        // Where each field's name and value are in `buf` (which is under 64 KiB), so that
        // the fields can share its bytes; the framing and hop-by-hop fields are read in the
        // same pass.
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            (
                (s.as_ptr() as usize).wrapping_sub(base) as u16,
                s.len() as u16,
            )
        };
        let mut f = Fields::default();
        let mut spans = Vec::with_capacity(resp.headers.len());
        // httparse has refused a value with a control byte other than tab, or DEL
        // (`a_field_value_with_a_control_byte_is_refused` holds it to that), so the values
        // are not scanned again here.
        for h in resp.headers.iter() {
            let (name, value) = (h.name.as_bytes(), h.value);
            if f.read(name, value)? {
                let (n, nl) = at(name);
                let (v, vl) = at(value);
                spans.push([n, nl, v, vl]);
            }
        }
        let head = buf.split_to(len).freeze();
        let raw = RawFields {
            head,
            spans,
            date: f.date,
            length: None,
        };
        return f.head(status, version, raw, head_request).map(Some);
    }
}

/// The name of the field at `span` in `head`.
fn name_of<'a>(head: &'a [u8], &[n, nl, ..]: &[u16; 4]) -> &'a [u8] {
    &head[usize::from(n)..usize::from(n) + usize::from(nl)]
}

/// What a field's name makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Length,
    Connection,
    Coding,
    Date,
    /// Another hop-by-hop field.
    HopByHop,
    Other,
}

impl Kind {
    /// The kind of a field named `name` (in any case). The hop-by-hop names are the
    /// sidecar's one list ([`forward::is_hop_by_hop_raw`]), so a name added there is
    /// dropped from passed-through heads too.
    fn of(name: &[u8]) -> Self {
        let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match name.len() {
            4 if is("date") => Self::Date,
            10 if is("connection") => Self::Connection,
            14 if is("content-length") => Self::Length,
            17 if is("transfer-encoding") => Self::Coding,
            _ if forward::is_hop_by_hop_raw(name) => Self::HopByHop,
            _ => Self::Other,
        }
    }
}

/// What the fields of a response head say about its framing and its connection, read as
/// the fields are, in one pass.
#[derive(Debug, Default)]
struct Fields {
    /// A `Connection` value names something other than `keep-alive` or `close`: a field to
    /// remove.
    connection_names: bool,
    /// The `Connection` values (read again when they name fields).
    connection_values: Vec<Bytes>,
    close: bool,
    /// `Transfer-Encoding` lines, and whether their codings are exactly one `chunked`.
    coding_lines: bool,
    codings: u32,
    chunked: bool,
    length: Option<u64>,
    date: bool,
}

impl Fields {
    /// Reads one field; whether it is passed on (hop-by-hop fields are not).
    fn read(&mut self, name: &[u8], value: &[u8]) -> Result<bool, Error> {
        match Kind::of(name) {
            Kind::Other => Ok(true),
            Kind::Date => {
                self.date = true;
                Ok(true)
            }
            Kind::Length => {
                // Digits only; a list of one repeated length is allowed (RFC 9110 §8.6).
                let bad = || Error::BadField("Content-Length");
                let digits = value;
                if !digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit)
                {
                    // One length (the common field): digits that fit in 64 bits.
                    let n = digits
                        .iter()
                        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
                    return match self.length {
                        Some(m) if m != n => Err(Error::ConflictingLength),
                        _ => {
                            self.length = Some(n);
                            Ok(true)
                        }
                    };
                }
                for element in std::str::from_utf8(value).map_err(|_| bad())?.split(',') {
                    let element = element.trim_matches([' ', '\t']);
                    if element.is_empty() || !element.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad());
                    }
                    let n: u64 = element.parse().map_err(|_| bad())?;
                    match self.length {
                        Some(m) if m != n => return Err(Error::ConflictingLength),
                        _ => self.length = Some(n),
                    }
                }
                Ok(true)
            }
            Kind::Connection => {
                for t in list(value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        self.connection_names = true;
                    }
                }
                if self.connection_names {
                    self.connection_values.push(Bytes::copy_from_slice(value));
                }
                Ok(false)
            }
            Kind::Coding => {
                self.coding_lines = true;
                for t in list(value) {
                    self.codings += 1;
                    self.chunked = t.eq_ignore_ascii_case(b"chunked");
                }
                Ok(false)
            }
            Kind::HopByHop => Ok(false),
        }
    }

    /// The head: framing (RFC 9112 §6.3) and reuse.
    fn head(
        self,
        status: StatusCode,
        version: Version,
        mut raw: RawFields,
        head_request: bool,
    ) -> Result<Head, Error> {
        let mut keep_alive = version == Version::HTTP_11 && !self.close;
        let chunked = match (self.coding_lines, self.codings, self.chunked) {
            (false, ..) => false,
            // Any coding but one `chunked`, or any in HTTP/1.0 (RFC 9112 §6.1).
            (true, 1, true) if version == Version::HTTP_11 => true,
            (true, ..) => return Err(Error::UnsupportedCoding),
        };
        let head: &[u8] = &raw.head;
        let spans = &mut raw.spans;
        let mut filtered = false;
        if chunked && self.length.is_some() {
            // Both framings: the chunked one wins (RFC 9112 §6.3), the length is removed,
            // and the connection is not trusted with another request.
            spans.retain(|s| Kind::of(name_of(head, s)) != Kind::Length);
            keep_alive = false;
            filtered = true;
        }
        if self.connection_names {
            // Fields the `Connection` values name are hop-by-hop too.
            spans.retain(|s| {
                let name = name_of(head, s);
                !self
                    .connection_values
                    .iter()
                    .flat_map(|v| list(v))
                    .any(|t| t.eq_ignore_ascii_case(name))
            });
            filtered = true;
        }
        let (kept_length, date) = match filtered {
            false => (true, self.date),
            true => (
                spans
                    .iter()
                    .any(|s| Kind::of(name_of(head, s)) == Kind::Length),
                spans
                    .iter()
                    .any(|s| Kind::of(name_of(head, s)) == Kind::Date),
            ),
        };
        let framing = if head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if chunked {
            Framing::Chunked
        } else {
            match self.length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => {
                    keep_alive = false;
                    Framing::Close
                }
            }
        };
        raw.length = self.length.filter(|_| kept_length);
        raw.date = date;
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = status;
        // The client is answered in the sidecar's own HTTP/1.1 (RFC 9110 §6.2), whatever
        // the application's version.
        parts.version = Version::HTTP_11;
        parts.extensions.insert(raw);
        Ok(Head {
            parts,
            framing,
            keep_alive,
        })
    }
}

/// A piece of a chunked body.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section (after the last chunk; the body ends after it).
    Trailers(HeaderMap),
    /// The body ended.
    End,
}

/// Decodes a chunked body as its bytes arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// In the size's hex digits: the value so far, and how many digits.
    Size(u64, u8),
    /// After the size, in spaces or tabs (before `;` or CR): their count, and the size.
    SizeWs(usize, u64),
    /// In the size line's extension: its length so far, and the size.
    Ext(usize, u64),
    /// After the size line's CR.
    SizeLf(u64),
    /// In a chunk's data, with this many bytes left.
    Data(u64),
    /// After a chunk's data.
    DataCr,
    DataLf,
    /// After the last chunk: the trailer section.
    Trailers,
    End,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: ChunkState::Size(0, 0),
        }
    }
}

impl ChunkedDecoder {
    /// The next piece of the body from `buf`, removing what it used; `Ok(None)` when `buf`
    /// holds no complete piece yet (what it did hold was consumed, save an incomplete trailer
    /// section).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, Error> {
        use ChunkState::*;
        let mut i = 0;
        let out = loop {
            if let Data(left) = self.state {
                buf.advance(i);
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                self.state = if left == n as u64 {
                    DataCr
                } else {
                    Data(left - n as u64)
                };
                return Ok(Some(Chunk::Data(data)));
            }
            if self.state == Trailers {
                buf.advance(i);
                return self.trailers(buf);
            }
            if self.state == End {
                break Some(Chunk::End);
            }
            let Some(&b) = buf.get(i) else {
                break None;
            };
            i += 1;
            self.state = match (self.state, b) {
                (Size(v, d), b) if b.is_ascii_hexdigit() => {
                    if v > u64::MAX >> 4 {
                        return Err(Error::BadChunk("chunk size over 64 bits"));
                    }
                    if d == MAX_SIZE_DIGITS {
                        return Err(Error::BadChunk("chunk size of too many digits"));
                    }
                    let digit = (b as char).to_digit(16).unwrap_or(0);
                    Size((v << 4) | u64::from(digit), d + 1)
                }
                (Size(_, 0), _) => return Err(Error::BadChunk("chunk size is not hex")),
                (Size(v, _) | SizeWs(_, v), b'\r') => SizeLf(v),
                (Size(v, _) | SizeWs(_, v), b';') => Ext(1, v),
                (Size(v, _), b' ' | b'\t') => SizeWs(1, v),
                (SizeWs(n, _), _) if n >= MAX_CHUNK_EXT => {
                    return Err(Error::BadChunk("chunk extension too long"));
                }
                (SizeWs(n, v), b' ' | b'\t') => SizeWs(n + 1, v),
                (Size(..), _) => return Err(Error::BadChunk("chunk size is not hex")),
                (SizeWs(..), _) => {
                    return Err(Error::BadChunk(
                        "chunk size followed by other than `;` or CRLF",
                    ));
                }
                (Ext(_, v), b'\r') => SizeLf(v),
                (Ext(n, _), _) if n >= MAX_CHUNK_EXT => {
                    return Err(Error::BadChunk("chunk extension too long"));
                }
                (Ext(_, _), b'\n') => return Err(Error::BadChunk("bare LF in a size line")),
                (Ext(_, _), b) if b < 0x20 && b != b'\t' || b == 0x7f => {
                    return Err(Error::BadChunk("control character in a chunk extension"));
                }
                (Ext(n, v), _) => Ext(n + 1, v),
                (SizeLf(0), b'\n') => Trailers,
                (SizeLf(v), b'\n') => Data(v),
                (SizeLf(_), _) => return Err(Error::BadChunk("size line not ended by CRLF")),
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size(0, 0),
                (DataCr | DataLf, _) => return Err(Error::BadChunk("chunk not ended by CRLF")),
                (Data(_) | Trailers | End, _) => unreachable!("handled above"),
            };
        };
        buf.advance(i);
        Ok(out)
    }

    /// The trailer section, once whole in `buf`.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, Error> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = ChunkState::End;
            return Ok(Some(Chunk::End));
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, map) = match httparse::parse_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete((len, fields))) => {
                let mut map = HeaderMap::with_capacity(fields.len());
                for f in fields {
                    let name = HeaderName::from_bytes(f.name.as_bytes())
                        .map_err(|_| Error::BadChunk("trailer field name"))?;
                    // A trailer cannot frame the message or speak for the connection
                    // (RFC 9110 §6.5.1): such fields are dropped.
                    if is_hop_by_hop(&name) || name == header::CONTENT_LENGTH {
                        continue;
                    }
                    let value = HeaderValue::from_bytes(f.value)
                        .map_err(|_| Error::BadChunk("trailer field value"))?;
                    map.append(name, value);
                }
                (len, map)
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(Error::BadChunk("trailer section too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Error::BadChunk("trailer section")),
        };
        if len > MAX_HEAD_BYTES {
            return Err(Error::BadChunk("trailer section too large"));
        }
        buf.advance(len);
        self.state = ChunkState::End;
        Ok(Some(Chunk::Trailers(map)))
    }

    /// The body ended (its last chunk and trailer section were read).
    pub fn is_end(&self) -> bool {
        self.state == ChunkState::End
    }
}

/// How a request's body goes to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    Empty,
    Length,
    Chunked,
}

/// Writes the request head for the application into `out`: the request line in origin form,
/// the fields as they are, and `Transfer-Encoding: chunked` when the body is chunked.
fn encode_head(parts: &http::request::Parts, sending: Sending, out: &mut Vec<u8>) {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if sending == Sending::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the fields of a trailer section.
fn encode_fields(fields: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// An HTTP/1.1 connection to the application.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet used.
    rbuf: BytesMut,
    /// Bytes to write, from `wpos` on.
    wbuf: Vec<u8>,
    wpos: usize,
}

/// Where a connection that can take another request is put back when its response ends.
pub type Home = Arc<Mutex<Option<Box<Conn>>>>;

impl Conn {
    /// A connection over `io`.
    pub fn new(io: TcpStream) -> Box<Self> {
        Box::new(Self {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            wpos: 0,
        })
    }

    /// Whether a kept connection can take a request: the application has not closed it, and
    /// sent nothing unasked.
    ///
    /// `try_read` reads the socket only when the reactor has seen it readable since a read
    /// last drained it (the application's close or unasked bytes make it so): a connection
    /// nothing came on costs no system call (`bench/results/profile.md`, system calls per
    /// request). A close the reactor has not polled yet is the race every reuse has: a safe,
    /// bodiless request is then written again on a new connection ([`Failed::may_replay`]).
    pub fn is_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        self.rbuf.is_empty()
            && matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Sends `req` (origin-form target, `Host` set) and reads the response head; its body is
    /// read by the [`ResponseBody`] this returns, which puts the connection back in `home`
    /// once the body has ended, if the connection can take another request.
    ///
    /// The request's body is written as the client sends it, while the response is read, and
    /// after its head has come (the response body goes on writing it): an application that
    /// answers as it reads (an echo) streams both ways; one that answers before reading the
    /// whole body (a `413`) is answered to the client, and the connection is then not reused.
    ///
    /// On failure, [`Failed::replay`] says whether the request may be written again on a new
    /// connection.
    pub async fn send(
        mut self: Box<Self>,
        req: http::Request<ReqBody>,
        home: &Home,
    ) -> Result<Response<ResponseBody>, Failed> {
        let idempotent = matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let head_request = req.method() == Method::HEAD;
        let (parts, body) = req.into_parts();
        let sending = if parts.headers.contains_key(header::CONTENT_LENGTH) {
            Sending::Length
        } else if body.is_end_stream() {
            Sending::Empty
        } else {
            Sending::Chunked
        };
        self.wbuf.clear();
        encode_head(&parts, sending, &mut self.wbuf);
        drop(parts);
        let out = Outgoing {
            body,
            sending,
            done: sending == Sending::Empty,
        };
        let replayable = idempotent && sending == Sending::Empty;
        self.exchange(out, head_request, replayable, home).await
    }

    /// Writes the request in `wbuf` (and `out`'s body) from its start and reads the head.
    async fn exchange(
        mut self: Box<Self>,
        mut out: Outgoing,
        head_request: bool,
        replayable: bool,
        home: &Home,
    ) -> Result<Response<ResponseBody>, Failed> {
        self.wpos = 0;
        let mut write_failed = None;
        let conn = &mut *self;
        let head = std::future::poll_fn(|cx| {
            if write_failed.is_none()
                && let Err(e) = conn.poll_send(cx, &mut out)
            {
                match e {
                    Error::Io(e) => write_failed = Some(e),
                    e => return Poll::Ready(Err(e)),
                }
            }
            conn.poll_head(cx, head_request, &mut write_failed)
        })
        .await;
        let head = match head {
            Ok(head) => head,
            Err(error) => {
                // Nothing of an answer came: the connection was closed under the request.
                let unanswered = self.rbuf.is_empty()
                    && matches!(&error, Error::ClosedBeforeHead | Error::Io(_));
                let replay = (replayable && unanswered).then(|| Replay {
                    conn: self,
                    out,
                    head_request,
                });
                return Err(Failed { error, replay });
            }
        };
        let sent = out.done && self.wpos == self.wbuf.len();
        let (keep, out) = match write_failed {
            Some(_) => (false, None),
            None => (head.keep_alive, (!sent).then_some(out)),
        };
        let body = ResponseBody::new(self, head.framing, out, keep.then(|| home.clone()));
        Ok(Response::from_parts(head.parts, body))
    }

    /// Writes what is buffered and the request body's frames as they come, until the socket
    /// or the body has nothing more now.
    fn poll_send(&mut self, cx: &mut Context<'_>, out: &mut Outgoing) -> Result<(), Error> {
        let sending = out.sending;
        loop {
            while self.wpos < self.wbuf.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                    Poll::Ready(Ok(0)) => {
                        return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => self.wpos += n,
                    Poll::Ready(Err(e)) => return Err(Error::Io(e)),
                    Poll::Pending => return Ok(()),
                }
            }
            if out.done {
                return Ok(());
            }
            self.wbuf.clear();
            self.wpos = 0;
            match Pin::new(&mut out.body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Err(e))) => return Err(Error::RequestBody(e)),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if sending == Sending::Chunked => {
                        // Writing to a `Vec` cannot fail.
                        let _ = write!(self.wbuf, "{:x}\r\n", data.len());
                        self.wbuf.extend_from_slice(&data);
                        self.wbuf.extend_from_slice(b"\r\n");
                    }
                    Ok(data) => self.wbuf.extend_from_slice(&data),
                    Err(frame) => {
                        if let (Ok(trailers), Sending::Chunked) = (frame.into_trailers(), sending) {
                            self.wbuf.extend_from_slice(b"0\r\n");
                            encode_fields(&trailers, &mut self.wbuf);
                            self.wbuf.extend_from_slice(b"\r\n");
                            // The trailers end the body.
                            out.finish();
                        }
                    }
                },
                Poll::Ready(None) => {
                    if sending == Sending::Chunked {
                        self.wbuf.extend_from_slice(b"0\r\n\r\n");
                    }
                    out.finish();
                }
            }
        }
    }

    /// Reads until the final response head is whole.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        write_failed: &mut Option<std::io::Error>,
    ) -> Poll<Result<Head, Error>> {
        loop {
            if !self.rbuf.is_empty()
                && let Some(head) = parse_head(&mut self.rbuf, head_request)?
            {
                return Poll::Ready(Ok(head));
            }
            self.rbuf.reserve(READ_SIZE);
            match ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)) {
                Ok(0) => {
                    return Poll::Ready(Err(match write_failed.take() {
                        Some(e) if self.rbuf.is_empty() => Error::Io(e),
                        _ => Error::ClosedBeforeHead,
                    }));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Error::Io(e))),
            }
        }
    }

    /// Reads more of the body into `rbuf`, asking for up to `want` bytes; `Ok(0)` at the
    /// connection's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: u64) -> Poll<std::io::Result<usize>> {
        let want = usize::try_from(want).unwrap_or(MAX_READ_SIZE);
        self.rbuf.reserve(want.clamp(READ_SIZE, MAX_READ_SIZE));
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }
}

/// A failed exchange: what went wrong, and the request again if it may be replayed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failed {
    /// What went wrong.
    #[source]
    pub error: Error,
    replay: Option<Replay>,
}

/// A request whose connection closed before any byte of an answer, kept to be written again.
#[derive(Debug)]
struct Replay {
    conn: Box<Conn>,
    out: Outgoing,
    head_request: bool,
}

impl Failed {
    /// Whether the request may be written again on a new connection: no byte of an answer
    /// came, the method is safe (`GET`, `HEAD`, `OPTIONS`, `TRACE`: RFC 9112 §9.3.1 allows
    /// no automatic retry of others) and it has no body.
    pub fn may_replay(&self) -> bool {
        self.replay.is_some()
    }

    /// Writes the request again on `io`, once (a second failure is final).
    pub async fn replay(self, io: TcpStream, home: &Home) -> Result<Response<ResponseBody>, Error> {
        let Some(Replay {
            mut conn,
            out,
            head_request,
        }) = self.replay
        else {
            return Err(self.error);
        };
        conn.io = io;
        conn.rbuf.clear();
        conn.exchange(out, head_request, false, home)
            .await
            .map_err(|f| f.error)
    }
}

/// A request body being written to the application.
#[derive(Debug)]
struct Outgoing {
    body: ReqBody,
    sending: Sending,
    /// The body's last frame is buffered (what is left of the buffer is still to write).
    done: bool,
}

impl Outgoing {
    /// The body's last frame is buffered: the body is dropped now rather than with the
    /// exchange, which hands the client's connection back to watch for the client leaving
    /// while the application works.
    fn finish(&mut self) {
        self.done = true;
        self.body = ReqBody::Empty;
    }
}

/// The body of an application's response, read from its connection as the client's side
/// asks for it; it also writes what is left of the request's body.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Box<Conn>>,
    state: Reading,
    /// The request's body, while it is not all written.
    out: Option<Outgoing>,
    /// Where the connection goes when the body ends (`None`: it cannot be reused).
    home: Option<Home>,
}

#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

impl ResponseBody {
    fn new(conn: Box<Conn>, framing: Framing, out: Option<Outgoing>, home: Option<Home>) -> Self {
        let state = match framing {
            Framing::Empty => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(ChunkedDecoder::default()),
            Framing::Close => Reading::Close,
        };
        let mut body = Self {
            conn: Some(conn),
            state,
            out,
            home,
        };
        if matches!(body.state, Reading::Done) {
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes home if it can take another request, the request
    /// was all sent and nothing followed the response.
    fn finish(&mut self) {
        self.state = Reading::Done;
        if let (Some(conn), Some(home), None) = (self.conn.take(), self.home.take(), &self.out)
            && conn.rbuf.is_empty()
            && let Ok(mut slot) = home.lock()
        {
            *slot = Some(conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = Reading::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let (Some(conn), Some(out)) = (this.conn.as_mut(), this.out.as_mut()) {
            match conn.poll_send(cx, out) {
                Ok(()) if out.done && conn.wpos == conn.wbuf.len() => this.out = None,
                Ok(()) => {}
                // The application stopped reading it (or the client stopped sending it): the
                // response is still read, and the connection not reused.
                Err(_) => {
                    this.out = None;
                    this.home = None;
                }
            }
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                Reading::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Reading::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Reading::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.rbuf.len());
                        *left -= n as u64;
                        let data = conn.rbuf.split_to(n).freeze();
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let want = *left;
                    match ready!(conn.poll_fill(cx, want)) {
                        Ok(0) => return this.fail(Error::ClosedInBody),
                        Ok(_) => {}
                        Err(e) => return this.fail(Error::Io(e)),
                    }
                }
                Reading::Chunked(decoder) => match decoder.decode(&mut conn.rbuf) {
                    Err(e) => return this.fail(e),
                    Ok(Some(Chunk::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Chunk::Trailers(map))) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(map))));
                    }
                    Ok(Some(Chunk::End)) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => match ready!(conn.poll_fill(cx, MAX_READ_SIZE as u64)) {
                        Ok(0) => return this.fail(Error::ClosedInBody),
                        Ok(_) => {}
                        Err(e) => return this.fail(Error::Io(e)),
                    },
                },
                Reading::Close => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx, MAX_READ_SIZE as u64)) {
                        Ok(0) => {
                            this.home = None;
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return this.fail(Error::Io(e)),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, Reading::Done | Reading::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Reading::Done => SizeHint::with_exact(0),
            Reading::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, head_request: bool) -> (Result<Option<Head>, Error>, BytesMut) {
        let mut buf = BytesMut::from(text);
        let parsed = parse_head(&mut buf, head_request);
        (parsed, buf)
    }

    #[test]
    fn a_field_value_with_a_control_byte_is_refused() {
        // LF is not among them: it ends the line (bare LF is a line ending).
        for b in (0u8..0x20)
            .filter(|&b| b != b'\t' && b != b'\n')
            .chain([0x7f])
        {
            for value in [vec![b], vec![b'a', b, b'b'], vec![b'a', b' ', b]] {
                let mut text = b"HTTP/1.1 200 OK\r\nx-a: ".to_vec();
                text.extend_from_slice(&value);
                text.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
                let mut buf = BytesMut::from(&text[..]);
                let parsed = parse_head(&mut buf, false);
                assert!(parsed.is_err(), "{value:?}: {parsed:?}");
            }
        }
        for b in [b'\t', b' ', b'~', 0x80, 0xff] {
            let mut text = b"HTTP/1.1 200 OK\r\nx-a: a".to_vec();
            text.push(b);
            text.extend_from_slice(b"b\r\ncontent-length: 0\r\n\r\n");
            let mut buf = BytesMut::from(&text[..]);
            let head = parse_head(&mut buf, false)
                .expect("accepted")
                .expect("whole");
            assert_eq!(head.fields()["x-a"].as_bytes(), [b'a', b, b'b'], "{b:#x}");
        }
    }

    #[test]
    fn every_name_of_the_shared_hop_by_hop_list_is_dropped_in_any_case() {
        for name in &forward::HOP_BY_HOP {
            let lower = name.as_str();
            let upper = lower.to_ascii_uppercase();
            for written in [lower, upper.as_str()] {
                assert_ne!(Kind::of(written.as_bytes()), Kind::Other, "{written}");
                assert_ne!(Kind::of(written.as_bytes()), Kind::Date, "{written}");
            }
        }
        for name in [
            "x-te",
            "dates",
            "upgrade-insecure-requests",
            "proxy-authenticate",
        ] {
            assert_eq!(Kind::of(name.as_bytes()), Kind::Other, "{name}");
        }
    }

    fn head_of(text: &str) -> Head {
        match parse(text, false) {
            (Ok(Some(head)), _) => head,
            (other, _) => panic!("{text:?}: {other:?}"),
        }
    }

    fn refusal(text: &str) -> String {
        match parse(text, false).0 {
            Err(e) => e.to_string(),
            Ok(other) => panic!("{text:?} was accepted: {other:?}"),
        }
    }

    #[test]
    fn a_head_is_read_whole_and_its_body_left_in_the_buffer() {
        let (parsed, rest) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
            false,
        );
        let head = parsed.expect("valid").expect("complete");
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let fields = head.fields();
        let xa: Vec<_> = fields.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        assert_eq!(&rest[..], b"hello");
        for cut in 0.."HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r".len() {
            let text = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
            let (parsed, rest) = parse(&text[..cut], false);
            assert!(matches!(parsed, Ok(None)), "cut at {cut}");
            assert_eq!(rest.len(), cut, "an incomplete head is left to complete");
        }
    }

    #[test]
    fn the_length_of_a_body_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0007\r\nContent-Length: 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n",
                Framing::Length(9_999_999_999_999_999_999),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            // Both: chunked wins, Content-Length goes, the connection is not reused.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::Close, false),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
                Framing::Length(2),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n",
                Framing::Length(2),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
                Framing::Length(2),
                false,
            ),
        ];
        for (text, framing, keep_alive) in cases {
            let head = head_of(text);
            assert_eq!(
                (head.framing, head.keep_alive),
                (framing, keep_alive),
                "{text:?}"
            );
            assert_eq!(head.parts.version, Version::HTTP_11, "{text:?}");
            if framing == Framing::Chunked {
                assert!(
                    !head.fields().contains_key(header::CONTENT_LENGTH),
                    "{text:?}"
                );
            }
        }
        let (parsed, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        let head = parsed.expect("valid").expect("complete");
        assert_eq!(head.framing, Framing::Empty, "a HEAD response has no body");
        assert_eq!(head.fields()[header::CONTENT_LENGTH], "9");
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "two different",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                "two different",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                "switched protocols",
            ),
            ("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "not valid"),
            ("HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n", "not valid"),
            ("HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n", "not valid"),
            ("HTTP/2.0 200 OK\r\n\r\n", "not valid"),
            ("HTTP/1.1 2000 OK\r\n\r\n", "not valid"),
            ("FOO\r\n\r\n", "not valid"),
        ];
        for (text, says) in cases {
            let e = refusal(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(refusal(&many).contains("not valid"));
        let large = format!("HTTP/1.1 200 OK\r\nX-A: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(refusal(&large).contains("larger than"));
    }

    #[test]
    fn a_bare_lf_ends_a_line_as_crlf_does() {
        let (parsed, rest) = parse("HTTP/1.1 200 OK\nContent-Length: 2\nX-A: 1\n\nok", false);
        let head = parsed.expect("valid").expect("complete");
        assert_eq!(
            (head.framing, &head.fields()["x-a"]),
            (Framing::Length(2), &HeaderValue::from_static("1"))
        );
        assert_eq!(&rest[..], b"ok");
    }

    #[test]
    fn interim_heads_are_dropped_and_the_final_one_read() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        let (parsed, rest) = parse(text, false);
        let head = parsed.expect("valid").expect("complete");
        assert_eq!(head.parts.status, StatusCode::CREATED);
        assert!(!head.fields().contains_key("link"), "{head:?}");
        assert_eq!(&rest[..], b"ok");
        // An interim head alone is consumed; the final one is awaited.
        let (parsed, rest) = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", false);
        assert!(matches!(parsed, Ok(None)));
        assert_eq!(&rest[..], b"HTTP/1.1 2");
    }

    #[test]
    fn an_element_with_a_non_ascii_byte_hides_no_other_of_its_line() {
        // Found by the fuzz target h1_response: these lines were read as text, and a line
        // that was not ASCII was skipped whole.
        let head = head_of(
            "HTTP/1.1 200 OK\r\nConnection: x-a, \u{e9}\r\nX-A: 1\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(!head.fields().contains_key("x-a"), "{head:?}");
        let head =
            head_of("HTTP/1.1 200 OK\r\nConnection: close, \u{e9}\r\nContent-Length: 1\r\n\r\n");
        assert!(!head.keep_alive);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\xff\r\n\r\n"[..]);
        assert!(matches!(
            parse_head(&mut buf, false),
            Err(Error::UnsupportedCoding)
        ));
    }

    #[test]
    fn hop_by_hop_fields_of_the_application_are_removed() {
        let head = head_of(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\nUpgrade: h2c\r\nTrailer: X-T\r\nX-Kept: 1\r\nContent-Length: 1\r\n\r\n",
        );
        let fields = head.fields();
        let mut names: Vec<_> = fields.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "x-kept"]);
    }

    /// Decodes `input` fed in pieces of `step` bytes: the data, the trailers, and whether the
    /// body ended, or the error.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, bool), String> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                    Some(Chunk::Data(d)) => data.extend_from_slice(&d),
                    Some(Chunk::Trailers(t)) => trailers = Some(t),
                    Some(Chunk::End) => return Ok((data, trailers, true)),
                    None => break,
                }
                if decoder.is_end() {
                    return Ok((data, trailers, true));
                }
            }
        }
        Ok((data, trailers, false))
    }

    #[test]
    fn a_chunked_body_decodes_the_same_however_its_bytes_arrive() {
        let body =
            b"5;name=value\r\nhello\r\n6\r\n world\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\nContent-Length: 9\r\nConnection: close\r\n\r\n";
        let whole = decode(body, body.len()).expect("valid");
        assert_eq!(whole.0, b"hello world0123456789");
        let trailers = whole.1.expect("trailers");
        assert_eq!(trailers["x-t"], "1");
        assert_eq!(
            trailers.len(),
            1,
            "framing and hop-by-hop trailers are dropped"
        );
        assert!(whole.2);
        for step in 1..body.len() {
            let (data, trailers, ended) = decode(body, step).expect("valid");
            assert_eq!((&data, ended), (&whole.0, true), "step {step}");
            assert!(trailers.is_some(), "step {step}");
        }
        assert_eq!(decode(b"0\r\n\r\n", 1), Ok((Vec::new(), None, true)));
        assert_eq!(decode(b"3\r\nab", 1), Ok((b"ab".to_vec(), None, false)));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused_at_the_first_bad_byte() {
        let cases: [(&[u8], &str); 10] = [
            (b"zz\r\nhello\r\n0\r\n\r\n", "not hex"),
            (b"\r\n", "not hex"),
            (b"1ffffffffffffffff\r\n", "over 64 bits"),
            (b"5 6\r\nhello\r\n", "other than"),
            (b"5\r\nhelloXX0\r\n\r\n", "not ended by CRLF"),
            (b"5\nhello\r\n", "not hex"),
            (b"5\r\rhello\r\n", "not ended by CRLF"),
            (b"5;a\nb\r\n", "bare LF"),
            (b"5;a\x01\r\n", "control character"),
            (b"0\r\nX-A : 1\r\n\r\n", "trailer section"),
        ];
        for (body, says) in cases {
            for step in [1, body.len()] {
                let e = decode(body, step).expect_err("refused");
                assert!(e.contains(says), "{body:?} step {step}: {e}");
            }
        }
        let long_ext = format!("5;{}\r\n", "a".repeat(MAX_CHUNK_EXT));
        let e = decode(long_ext.as_bytes(), 7).expect_err("refused");
        assert!(e.contains("too long"), "{e}");
        let max = b"ffffffffffffffff\r\nab";
        assert_eq!(decode(max, 3), Ok((b"ab".to_vec(), None, false)));
        let zeros = b"00000000000000000002 ;x\r\nab\r\n0\r\n\r\n";
        assert_eq!(decode(zeros, 1), Ok((b"ab".to_vec(), None, true)));
        let many = format!("{}1\r\n", "0".repeat(usize::from(MAX_SIZE_DIGITS)));
        let e = decode(many.as_bytes(), 5).expect_err("refused");
        assert!(e.contains("too many digits"), "{e}");
    }

    #[test]
    fn a_request_head_is_written_in_origin_form_with_its_framing() {
        let req = http::Request::post("/p?q=1")
            .header("host", "api.example")
            .header("x-a", "1")
            .body(())
            .expect("valid");
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        encode_head(&parts, Sending::Chunked, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "POST /p?q=1 HTTP/1.1\r\nhost: api.example\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_head(&parts, Sending::Length, &mut out);
        assert!(
            !String::from_utf8(out)
                .expect("ascii")
                .contains("transfer-encoding")
        );
    }
}
