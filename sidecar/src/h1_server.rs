//! The client-facing side of an HTTP/1.x connection: reads each request head, hands the
//! request to the proxy, and writes its response, in the connection's task with no
//! dispatcher in between (hyper's server connection polls a dispatcher's read, write and
//! flush states for every request and encodes a head it was handed as a `HeaderMap`; this
//! reads and writes the socket in straight-line code).
//!
//! What it accepts from a client, and what it refuses, per RFC 9112 (the connection is closed
//! after every refusal, and nothing of a refused request reaches the proxy):
//!
//! - The head is parsed by `httparse` (the parser hyper uses): a request line or field that is
//!   not HTTP/1.0 or HTTP/1.1 syntax (a control character in the target or a value, a space
//!   before a field's colon, a folded line) is **400**; a head over `--max-header-bytes`, or
//!   more than `--max-headers` fields, is **431**. A bare LF ends a line as CRLF does (the
//!   head forwarded to the application is written anew, always with CRLF).
//! - The body's length (§6.3): `Transfer-Encoding` must be exactly one `chunked` (any other
//!   coding, a list, or any coding in HTTP/1.0 is **400**); with a `Content-Length` beside it
//!   the chunked framing wins, the length is removed and the connection is closed after the
//!   answer; `Content-Length` must be digits, and repeated lines must agree (**400**);
//!   with neither, the request has no body.
//! - Chunked bodies are decoded strictly ([`crate::h1::ChunkedDecoder`]): a body that cannot
//!   be framed fails the request, and the connection is closed.
//! - `Expect: 100-continue`: `100 Continue` is written when the proxy first reads the body
//!   (not when it answers before reading it, as a denial does).
//! - The connection takes another request when the request was HTTP/1.1 without
//!   `Connection: close` (HTTP/1.0 with `Connection: keep-alive`), its body was read (or,
//!   left unread but already all in the read buffer, skipped) to its end, and the response
//!   was written whole; requests sent ahead (pipelined) are answered in order. Otherwise it
//!   is closed after the response.
//! - A WebSocket handshake answered `101` hands the connection (with any bytes the client
//!   sent ahead) to the tunnel.
//! - The head must be complete within `--header-read-timeout` (also the wait for the next
//!   request on a kept connection); a client that sent part of a head by then gets **408**.
//! - A client that closes (or shuts down its sending side) while its request is at the
//!   application, with its request body sent whole and nothing sent ahead, has left: the
//!   request is dropped, which closes its upstream connection, so the application sees the
//!   close too, as behind nginx (its 499). Until the socket turns readable this costs no
//!   system call.

use std::future::Future;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::task::AtomicWaker;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;

use crate::body::RespBody;
use crate::forward::elements;
use crate::h1::{Chunk, ChunkedDecoder, Names, RawFields};
use crate::idle::Activity;
use crate::proxy::{Connection, Proxy};
use crate::rescue::BoxError;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Fields of a head parsed with a buffer on the stack; more (a raised `--max-headers`) use
/// one on the heap.
const STACK_FIELDS: usize = 128;
/// What one read from the client asks for, at least.
const READ_SIZE: usize = 8 * 1024;
/// What one read of a long body asks for, at most.
const MAX_READ_SIZE: usize = 64 * 1024;
/// Response body frames up to this size are copied behind the head (one write); larger ones
/// are written from their own buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// Bytes gathered before a write even when the body has more ready.
const WRITE_BATCH: usize = 64 * 1024;

/// Limits of request heads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest head in bytes (→ 431).
    pub max_head_bytes: usize,
    /// Most fields (→ 431).
    pub max_headers: usize,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is larger than the limit")]
    TooLarge,
    #[error("the request head has more fields than the limit")]
    TooManyFields,
    #[error("the request head is not valid HTTP/1.x: {0}")]
    Malformed(&'static str),
}

impl HeadError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge | Self::TooManyFields => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes (more than zero).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and fields (`Content-Length` removed when the body is
    /// chunked; hop-by-hop fields are left to the proxy).
    pub parts: http::request::Parts,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// The connection may take another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (HTTP/1.1).
    pub expect_continue: bool,
    /// An `Upgrade` field is present.
    pub upgrade: bool,
}

/// What the fields of a request head say about its framing and its connection.
#[derive(Debug, Default)]
struct Fields {
    close: bool,
    keep_alive: bool,
    length: Option<u64>,
    coding_lines: bool,
    codings: u32,
    chunked: bool,
    expect_continue: bool,
    upgrade: bool,
}

impl Fields {
    fn read(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), HeadError> {
        if *name == header::CONTENT_LENGTH {
            // Digits only (no sign, list or spaces); repeated lines must agree.
            let digits = value.as_bytes();
            if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Malformed("Content-Length"));
            }
            let n = digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            match self.length {
                Some(m) if m != n => return Err(HeadError::Malformed("Content-Length")),
                _ => self.length = Some(n),
            }
        } else if *name == header::TRANSFER_ENCODING {
            self.coding_lines = true;
            for t in elements(value) {
                self.codings += 1;
                self.chunked = t.eq_ignore_ascii_case(b"chunked");
            }
        } else if *name == header::CONNECTION {
            for t in elements(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if *name == header::EXPECT {
            self.expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if *name == header::UPGRADE {
            self.upgrade = true;
        }
        Ok(())
    }
}

/// What a connection keeps from one request head to the next: room for where the fields
/// are, and the field names its client used ([`Names`]).
#[derive(Debug, Default)]
pub struct Scratch {
    spans: Vec<[u32; 4]>,
    names: Names,
}

/// Parses the request head at the start of `buf` and removes it from `buf`. `Ok(None)`: the
/// head is not complete yet. `scratch` is the connection's, kept between calls.
pub fn parse_head(
    buf: &mut BytesMut,
    limits: Limits,
    scratch: &mut Scratch,
) -> Result<Option<RequestHead>, HeadError> {
    let Scratch { spans, names } = scratch;
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut heap = Vec::new();
    let fields = if limits.max_headers <= STACK_FIELDS {
        &mut stack[..limits.max_headers]
    } else {
        heap.resize_with(limits.max_headers, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, fields);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(httparse::Error::Token) => return Err(HeadError::Malformed("method or field name")),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("request line")),
        Err(_) => return Err(HeadError::Malformed("request line or field")),
    };
    if len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed("method"))?;
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // Where the target, names and values are in `buf`, so that the values can share its
    // bytes once it is frozen.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        (
            (s.as_ptr() as usize).wrapping_sub(base) as u32,
            s.len() as u32,
        )
    };
    let target = at(req.path.unwrap_or("").as_bytes());
    spans.clear();
    for h in req.headers.iter() {
        let (n, nl) = at(h.name.as_bytes());
        let (v, vl) = at(h.value);
        spans.push([n, nl, v, vl]);
    }
    let bytes = buf.split_to(len).freeze();
    let slice = |(at, len): (u32, u32)| bytes.slice(at as usize..(at + len) as usize);
    let uri = Uri::from_maybe_shared(slice(target)).map_err(|_| HeadError::Malformed("target"))?;
    let mut f = Fields::default();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (i, &[n, nl, v, vl]) in spans.iter().enumerate() {
        let name = names
            .get(i, &bytes[n as usize..(n + nl) as usize])
            .map_err(|_| HeadError::Malformed("field name"))?;
        let value = if vl == 0 {
            HeaderValue::from_static("")
        } else {
            HeaderValue::from_maybe_shared(slice((v, vl)))
                .map_err(|_| HeadError::Malformed("field value"))?
        };
        f.read(&name, &value)?;
        headers.append(name, value);
    }
    let mut keep_alive = match version {
        Version::HTTP_11 => !f.close,
        _ => f.keep_alive && !f.close,
    };
    let framing = match (f.coding_lines, f.codings, f.chunked) {
        (false, ..) => match f.length {
            None | Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        },
        // Exactly one `chunked`, in HTTP/1.1 (RFC 9112 §6.1).
        (true, 1, true) if version == Version::HTTP_11 => {
            if headers.remove(header::CONTENT_LENGTH).is_some() {
                // Both framings: the chunked one wins and the connection is closed after
                // the answer (RFC 9112 §6.3), so nothing hidden behind either is read.
                keep_alive = false;
            }
            BodyFraming::Chunked
        }
        (true, ..) => return Err(HeadError::Malformed("Transfer-Encoding")),
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue: f.expect_continue && version == Version::HTTP_11,
        upgrade: f.upgrade,
    }))
}

/// The read side of a client connection: the socket and the bytes read but not yet used.
#[derive(Debug)]
pub struct ReadSide {
    io: OwnedReadHalf,
    buf: BytesMut,
    activity: Activity,
}

impl ReadSide {
    /// While the connection waits for an answer: `Ready(true)` once the client has closed
    /// its sending side (or reset the connection), `Ready(false)` when it sent more (a
    /// request ahead, read when its turn comes), `Pending` until either. A peek: nothing is
    /// taken from the socket, and no system call is made until it turns readable.
    fn poll_left(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut byte = [MaybeUninit::uninit()];
        let mut peeked = ReadBuf::uninit(&mut byte);
        Poll::Ready(!matches!(ready!(self.io.poll_peek(cx, &mut peeked)), Ok(n) if n > 0))
    }

    /// Reads more into `buf`; `Ok(0)` at the connection's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: u64) -> Poll<std::io::Result<usize>> {
        let want = usize::try_from(want).unwrap_or(MAX_READ_SIZE);
        self.buf.reserve(want.clamp(READ_SIZE, MAX_READ_SIZE));
        let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        if n > 0 {
            self.activity.touch();
        }
        Poll::Ready(Ok(n))
    }
}

/// What a request body hands back to its connection when it is dropped.
#[derive(Debug)]
struct Returned {
    side: Box<ReadSide>,
    /// The body was read to its end without error.
    complete: bool,
}

/// A request's `Expect: 100-continue`, asked for by the body's first read.
#[derive(Debug, Default)]
struct Continue {
    asked: AtomicBool,
    waker: AtomicWaker,
}

/// Why a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client's chunked body is malformed")]
    Chunk(#[source] crate::h1::Error),
    #[error("the client closed the connection before the request body was complete")]
    Closed,
    #[error("reading the request body failed")]
    Io(#[source] std::io::Error),
}

/// The body of a request read from an HTTP/1.x client connection, as the proxy asks for it.
#[derive(Debug)]
pub struct RequestBody {
    side: Option<Box<ReadSide>>,
    state: Reading,
    /// `Expect: 100-continue` not asked for yet.
    expect: Option<Arc<Continue>>,
    back: Option<oneshot::Sender<Returned>>,
    failed: bool,
}

#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// The chunked body's trailers were returned; its end is next.
    Done,
}

impl RequestBody {
    fn is_complete(&self) -> bool {
        !self.failed
            && match &self.state {
                Reading::Length(n) => *n == 0,
                Reading::Chunked(d) => d.is_end(),
                Reading::Done => true,
            }
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.failed = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let (Some(mut side), Some(back)) = (self.side.take(), self.back.take()) {
            self.skip_buffered(&mut side.buf);
            let complete = self.is_complete();
            let _ = back.send(Returned { side, complete });
        }
    }
}

impl RequestBody {
    /// What is left of a body the proxy did not read to its end (a request it answered
    /// itself, an upstream that failed), when the client has already sent all of it — it is
    /// in the read buffer — is skipped by its framing, exactly as reading it would, so the
    /// connection can take the next request. A body not all here is left unread: the
    /// connection closes after the answer, and nothing in the body is ever parsed as a head.
    fn skip_buffered(&mut self, buf: &mut BytesMut) {
        if self.failed {
            return;
        }
        match &mut self.state {
            Reading::Length(left) => {
                if let Ok(n) = usize::try_from(*left)
                    && n <= buf.len()
                {
                    buf.advance(n);
                    *left = 0;
                }
            }
            Reading::Chunked(decoder) => loop {
                match decoder.decode(buf) {
                    Ok(Some(Chunk::Data(_))) => {}
                    Ok(Some(Chunk::Trailers(_) | Chunk::End)) => {
                        self.state = Reading::Done;
                        return;
                    }
                    Ok(None) => return,
                    Err(_) => {
                        self.failed = true;
                        return;
                    }
                }
            },
            Reading::Done => {}
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        if let Some(c) = this.expect.take() {
            c.asked.store(true, Ordering::Release);
            c.waker.wake();
        }
        let Some(side) = this.side.as_deref_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match &mut this.state {
                Reading::Length(0) | Reading::Done => return Poll::Ready(None),
                Reading::Length(left) => {
                    if !side.buf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(side.buf.len());
                        *left -= n as u64;
                        return Poll::Ready(Some(Ok(Frame::data(side.buf.split_to(n).freeze()))));
                    }
                    let want = *left;
                    match ready!(side.poll_fill(cx, want)) {
                        Ok(0) => return this.fail(BodyError::Closed),
                        Ok(_) => {}
                        Err(e) => return this.fail(BodyError::Io(e)),
                    }
                }
                Reading::Chunked(decoder) => {
                    match decoder.decode(&mut side.buf) {
                        Ok(Some(Chunk::Data(data))) => {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Ok(Some(Chunk::Trailers(t))) => {
                            this.state = Reading::Done;
                            return Poll::Ready(Some(Ok(Frame::trailers(t))));
                        }
                        Ok(Some(Chunk::End)) => {
                            this.state = Reading::Done;
                            return Poll::Ready(None);
                        }
                        Ok(None) => {}
                        Err(e) => return this.fail(BodyError::Chunk(e)),
                    }
                    match ready!(side.poll_fill(cx, 0)) {
                        Ok(0) => return this.fail(BodyError::Closed),
                        Ok(_) => {}
                        Err(e) => return this.fail(BodyError::Io(e)),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, Reading::Length(0) | Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Reading::Length(n) => SizeHint::with_exact(n),
            Reading::Done => SizeHint::with_exact(0),
            Reading::Chunked(_) => SizeHint::default(),
        }
    }
}

/// The client side's request body: none, an HTTP/1.x body read by [`RequestBody`], or an
/// HTTP/2 stream's (hyper's).
#[derive(Debug, Default)]
pub enum ReqBody {
    /// No body.
    #[default]
    Empty,
    /// Read from an HTTP/1.x connection.
    H1(Box<RequestBody>),
    /// An HTTP/2 stream's body.
    H2(hyper::body::Incoming),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::H1(b) => Pin::new(&mut **b).poll_frame(cx).map_err(Into::into),
            Self::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::H1(b) => b.is_end_stream(),
            Self::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::H1(b) => b.size_hint(),
            Self::H2(b) => b.size_hint(),
        }
    }
}

/// Put in a request's extensions when it has an `Upgrade` field: the client's connection,
/// handed over once a `101` to it has been written. (Extensions must be `Clone`; the first
/// to take it has it.)
#[derive(Debug, Clone)]
pub struct OnUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Rewind>>>>);

impl OnUpgrade {
    /// The receiver, once.
    pub fn take(&self) -> Option<oneshot::Receiver<Rewind>> {
        self.0.lock().ok()?.take()
    }
}

/// The write side of a client connection, with what is to be written.
#[derive(Debug)]
struct WriteSide {
    io: OwnedWriteHalf,
    buf: Vec<u8>,
    pos: usize,
    /// A large body frame, written after `buf`.
    big: Bytes,
    /// What is written after `big`.
    tail: Vec<u8>,
    activity: Activity,
}

impl WriteSide {
    fn is_empty(&self) -> bool {
        self.pos == self.buf.len() && self.big.is_empty() && self.tail.is_empty()
    }

    /// Where bytes to write next go: after everything buffered.
    fn out(&mut self) -> &mut Vec<u8> {
        match self.big.is_empty() {
            true => &mut self.buf,
            false => &mut self.tail,
        }
    }

    /// Writes everything buffered.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.pos < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pos += n;
            self.activity.touch();
        }
        self.buf.clear();
        self.pos = 0;
        while !self.big.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.big))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.big.advance(n);
            self.activity.touch();
        }
        if !self.tail.is_empty() {
            std::mem::swap(&mut self.buf, &mut self.tail);
            return self.poll_flush(cx);
        }
        Poll::Ready(Ok(()))
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Appends body bytes: copied when small (or when a large frame is already waiting),
    /// else kept to write from their own buffer after what is buffered.
    fn data(&mut self, data: Bytes) {
        if data.len() <= COPY_LIMIT || !self.big.is_empty() {
            self.out().extend_from_slice(&data);
        } else {
            self.big = data;
        }
    }

    /// Whether enough is buffered to write before reading more of the body.
    fn full(&self) -> bool {
        !self.big.is_empty() || self.buf.len() - self.pos >= WRITE_BATCH
    }
}

/// How a response's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes more.
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// The `date` field's value, formatted once a second per thread.
fn write_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Writes the response head into `out`; returns how the body is written and whether the
/// connection may stay open after it.
fn encode_head(
    parts: &http::response::Parts,
    body_hint: SizeHint,
    request: (&Method, Version),
    mut keep_alive: bool,
    out: &mut Vec<u8>,
) -> (Encoding, bool) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    let mut date = false;
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    // An application's fields as it wrote them (hop-by-hop ones already removed), then the
    // ones the sidecar added.
    if let Some(raw) = parts.extensions.get::<RawFields>() {
        for (name, value) in raw.iter() {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        date = raw.date;
        length = raw.length;
    }
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH {
            if length.is_some() {
                continue;
            }
            length = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            if length.is_none() {
                continue;
            }
        } else if *name == header::TRANSFER_ENCODING {
            continue;
        } else if *name == header::CONNECTION && !upgrade {
            if elements(value).any(|t| t.eq_ignore_ascii_case(b"close")) {
                keep_alive = false;
            }
            continue;
        } else if *name == header::DATE {
            date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !date {
        write_date(out);
    }
    let (method, version) = request;
    let bodyless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let encoding = if bodyless {
        if length.is_none()
            && *method == Method::HEAD
            && let Some(n) = body_hint.exact().filter(|n| *n > 0)
        {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Encoding::None
    } else if let Some(n) = length {
        Encoding::Length(n)
    } else if let Some(n) = body_hint.exact() {
        let _ = write!(out, "content-length: {n}\r\n");
        Encoding::Length(n)
    } else if version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Encoding::Chunked
    } else {
        keep_alive = false;
        Encoding::Close
    };
    if !upgrade {
        match (keep_alive, version) {
            (false, _) => out.extend_from_slice(b"connection: close\r\n"),
            (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
            (true, _) => {}
        }
    }
    out.extend_from_slice(b"\r\n");
    (encoding, keep_alive)
}

/// Why writing a response ended the connection.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("writing to the client failed")]
    Io(#[from] std::io::Error),
    #[error("the response body failed")]
    Body(#[source] BoxError),
    #[error("the response body was longer than its Content-Length")]
    TooLong,
    #[error("the response body ended before its Content-Length")]
    TooShort,
}

/// Writes the body's frames as they come, batching what is ready into one write.
fn poll_body(
    w: &mut WriteSide,
    cx: &mut Context<'_>,
    body: &mut RespBody,
    encoding: &mut Encoding,
    done: &mut bool,
) -> Poll<Result<(), WriteError>> {
    loop {
        if *done {
            ready!(w.poll_flush(cx))?;
            return Poll::Ready(Ok(()));
        }
        if w.full() {
            ready!(w.poll_flush(cx))?;
        }
        let frame = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => {
                if w.is_empty() {
                    return Poll::Pending;
                }
                ready!(w.poll_flush(cx))?;
                continue;
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(WriteError::Body(e))),
            Poll::Ready(None) => {
                match *encoding {
                    Encoding::Length(n) if n > 0 => return Poll::Ready(Err(WriteError::TooShort)),
                    Encoding::Chunked => w.out().extend_from_slice(b"0\r\n\r\n"),
                    _ => {}
                }
                *done = true;
                continue;
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let (Ok(trailers), Encoding::Chunked) = (frame.into_trailers(), *encoding) {
                    let out = w.out();
                    out.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        out.extend_from_slice(name.as_str().as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"\r\n");
                    *encoding = Encoding::None;
                    *done = true;
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        match encoding {
            Encoding::None => {}
            Encoding::Length(left) => {
                if data.len() as u64 > *left {
                    return Poll::Ready(Err(WriteError::TooLong));
                }
                *left -= data.len() as u64;
                w.data(data);
            }
            Encoding::Chunked => {
                let _ = write!(w.out(), "{:x}\r\n", data.len());
                w.data(data);
                w.out().extend_from_slice(b"\r\n");
            }
            Encoding::Close => w.data(data),
        }
    }
}

/// A plain response the connection writes itself (a refused head).
fn refusal(w: &mut WriteSide, status: StatusCode) {
    let reason = status.canonical_reason().unwrap_or("error");
    let _ = write!(
        w.buf,
        "HTTP/1.1 {} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        reason.len() + 1
    );
    write_date(&mut w.buf);
    let _ = write!(w.buf, "\r\n{reason}\n");
}

/// The server's drain, as its connections see it: a flag read once per request, and a
/// signal that wakes connections waiting between requests.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    started: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Drain {
    /// Starts the drain.
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the drain has started.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Resolves once the drain has started.
    pub async fn started(&self) {
        self.token.cancelled().await;
    }
}

/// The header-read timeout of a connection: one timer per connection, moved only when it
/// fires early (a deadline that moved later since it was set), so that waiting for a head
/// costs a clock read rather than a timer's reset per request.
struct HeadTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl HeadTimer {
    fn new(timeout: Duration) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }

    /// Whether a wait that began at `since` has lasted the timeout; if not, the timer wakes
    /// the task by then.
    fn poll_expired(&mut self, cx: &mut Context<'_>, since: tokio::time::Instant) -> bool {
        let due = since + self.timeout;
        if self.sleep.deadline() > due {
            self.sleep.as_mut().reset(due);
        }
        while self.sleep.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= due {
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
        false
    }
}

/// How the wait for a request head ended.
enum Waited {
    Head(Box<RequestHead>),
    /// The client closed, or went quiet between requests, or the server is draining.
    Closed,
    /// Part of a head came, then nothing more in time.
    TimedOut,
    Refused(HeadError),
}

/// Serves an HTTP/1.x client connection whose first bytes (not an HTTP/2 preface) are in
/// `first`, until it closes, the client goes quiet between requests, or the drain starts.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    stream: TcpStream,
    first: BytesMut,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    limits: Limits,
    header_timeout: Duration,
    activity: Activity,
    drain: Drain,
) {
    let (rd, wr) = stream.into_split();
    let mut side = Some(Box::new(ReadSide {
        io: rd,
        buf: first,
        activity: activity.clone(),
    }));
    let mut w = WriteSide {
        io: wr,
        buf: Vec::with_capacity(4096),
        pos: 0,
        big: Bytes::new(),
        tail: Vec::new(),
        activity,
    };
    let conn = Connection::default();
    let mut scratch = Scratch::default();
    let stopped = drain.token.clone().cancelled_owned();
    tokio::pin!(stopped);
    let mut waiting = Waiting {
        timer: HeadTimer::new(header_timeout),
        drain: &drain,
        stopped,
        registered: false,
    };
    loop {
        let Some(r) = side.as_deref_mut() else {
            return;
        };
        let waited = read_head(r, limits, &mut scratch, &mut waiting);
        let head = match waited.await {
            Waited::Head(head) => head,
            Waited::Closed => return,
            Waited::TimedOut => {
                refusal(&mut w, StatusCode::REQUEST_TIMEOUT);
                let _ = w.flush().await;
                return;
            }
            Waited::Refused(e) => {
                tracing::debug!(error = %e, %peer, "request head refused");
                refusal(&mut w, e.status());
                let _ = w.flush().await;
                return;
            }
        };
        let RequestHead {
            mut parts,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        } = *head;
        let method = parts.method.clone();
        let version = parts.version;
        let expect = (expect_continue && framing != BodyFraming::Empty)
            .then(|| Arc::new(Continue::default()));
        let mut returned = None;
        let body = match framing {
            BodyFraming::Empty => ReqBody::Empty,
            BodyFraming::Length(_) | BodyFraming::Chunked => {
                let (back, rx) = oneshot::channel();
                returned = Some(rx);
                ReqBody::H1(Box::new(RequestBody {
                    side: side.take(),
                    state: match framing {
                        BodyFraming::Length(n) => Reading::Length(n),
                        _ => Reading::Chunked(ChunkedDecoder::default()),
                    },
                    expect: expect.clone(),
                    back: Some(back),
                    failed: false,
                }))
            }
        };
        let mut upgraded = None;
        if upgrade {
            let (tx, rx) = oneshot::channel();
            upgraded = Some(tx);
            parts
                .extensions
                .insert(OnUpgrade(Arc::new(std::sync::Mutex::new(Some(rx)))));
        }
        let req = Request::from_parts(parts, body);
        let handled = proxy.handle(req, peer, &conn);
        tokio::pin!(handled);
        let mut continued = false;
        // Whether the client's leaving is watched for: once its request is all read, and
        // when it sent nothing ahead (a client that pipelines is answered in order).
        let mut watch = side.as_ref().is_some_and(|r| r.buf.is_empty());
        let mut incomplete = false;
        let resp = std::future::poll_fn(|cx| {
            if let Some(c) = &expect {
                c.waker.register(cx.waker());
            }
            if let Poll::Ready(resp) = handled.as_mut().poll(cx) {
                return Poll::Ready(Ok(Some(resp)));
            }
            if let Some(rx) = returned.as_mut()
                && let Poll::Ready(back) = Pin::new(rx).poll(cx)
            {
                // The body is back: the proxy has sent it (or dropped it).
                returned = None;
                match back {
                    Ok(Returned { side: r, complete }) if complete => {
                        watch = r.buf.is_empty();
                        side = Some(r);
                    }
                    _ => incomplete = true,
                }
            }
            if watch
                && let Some(r) = side.as_deref_mut()
                && let Poll::Ready(left) = r.poll_left(cx)
            {
                if left {
                    return Poll::Ready(Ok(None));
                }
                watch = false;
            }
            if let Some(c) = &expect
                && !continued
                && c.asked.load(Ordering::Acquire)
            {
                continued = true;
                w.buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            if !w.is_empty() {
                ready!(w.poll_flush(cx))?;
            }
            Poll::Pending
        })
        .await;
        let resp: Response<RespBody> = match resp {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                // Dropping the request (`handled`, on return) closes its upstream connection.
                tracing::debug!(%peer, "the client left before the answer; request dropped");
                return;
            }
            Err(e) => {
                let e: std::io::Error = e;
                tracing::debug!(error = %e, %peer, "writing to the client failed");
                return;
            }
        };
        let (parts, mut body) = resp.into_parts();
        let stopping = drain.is_started();
        let (mut encoding, keep) = encode_head(
            &parts,
            body.size_hint(),
            (&method, version),
            keep_alive && !stopping,
            &mut w.buf,
        );
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            drop(body);
            drop(parts);
            if let Err(e) = w.flush().await {
                tracing::debug!(error = %e, %peer, "writing to the client failed");
                return;
            }
            let (Some(tx), Some(r)) = (upgraded, side.take()) else {
                return;
            };
            let ReadSide { io, buf, .. } = *r;
            if let Ok(io) = io.reunite(w.io) {
                let _ = tx.send(Rewind::new(buf.freeze(), io));
            }
            return;
        }
        drop(upgraded);
        drop(parts);
        let mut done = encoding == Encoding::None;
        let written =
            std::future::poll_fn(|cx| poll_body(&mut w, cx, &mut body, &mut encoding, &mut done))
                .await;
        drop(body);
        if let Err(e) = written {
            tracing::debug!(error = %e, %peer, "response not written whole; connection closed");
            return;
        }
        if let Some(mut rx) = returned {
            // The request body comes back when the proxy has dropped it.
            match rx.try_recv() {
                Ok(Returned { side: r, complete }) => {
                    if !complete {
                        return;
                    }
                    side = Some(r);
                }
                Err(_) => return,
            }
        }
        if incomplete {
            return;
        }
        if !keep || encoding == Encoding::Close {
            return;
        }
    }
}

/// What ends a connection's wait between requests besides a head: the header-read timeout
/// and the drain (whose signal is registered once per connection).
struct Waiting<'a, S> {
    timer: HeadTimer,
    drain: &'a Drain,
    stopped: Pin<&'a mut S>,
    registered: bool,
}

/// Waits for the next request head.
async fn read_head<S: Future<Output = ()>>(
    r: &mut ReadSide,
    limits: Limits,
    scratch: &mut Scratch,
    w: &mut Waiting<'_, S>,
) -> Waited {
    let mut since = None;
    std::future::poll_fn(|cx| {
        loop {
            if !r.buf.is_empty() {
                match parse_head(&mut r.buf, limits, scratch) {
                    Ok(Some(head)) => return Poll::Ready(Waited::Head(Box::new(head))),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Waited::Refused(e)),
                }
            }
            if r.buf.is_empty() && w.drain.is_started() {
                return Poll::Ready(Waited::Closed);
            }
            match r.poll_fill(cx, 0) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Waited::Closed),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => {}
            }
            if !w.registered {
                // Registers the task for the drain's signal, which then wakes it.
                w.registered = true;
                if w.stopped.as_mut().poll(cx).is_ready() && r.buf.is_empty() {
                    return Poll::Ready(Waited::Closed);
                }
            }
            let since = *since.get_or_insert_with(tokio::time::Instant::now);
            if w.timer.poll_expired(cx, since) {
                return Poll::Ready(match r.buf.is_empty() {
                    true => Waited::Closed,
                    false => Waited::TimedOut,
                });
            }
            return Poll::Pending;
        }
    })
    .await
}

/// Reads the first bytes of a connection until they are known not to be an HTTP/2 preface
/// (or are one). `Ok(true)`: an HTTP/2 preface.
pub async fn sniff(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt as _;
    loop {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        buf.reserve(READ_SIZE);
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A stream with bytes already read from it put back in front: an HTTP/2 connection's
/// preface, or what a client sent behind its WebSocket handshake.
#[derive(Debug)]
pub struct Rewind {
    ahead: Bytes,
    io: TcpStream,
}

impl Rewind {
    /// `io`, read as `ahead` then what follows.
    pub fn new(ahead: Bytes, io: TcpStream) -> Self {
        Self { ahead, io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.ahead.is_empty() {
            let n = self.ahead.len().min(buf.remaining());
            buf.put_slice(&self.ahead[..n]);
            self.ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_bytes: 1024,
        max_headers: 8,
    };

    fn parse(bytes: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_head(&mut BytesMut::from(bytes), LIMITS, &mut Scratch::default())
    }

    fn head(bytes: &str) -> RequestHead {
        parse(bytes).unwrap().unwrap()
    }

    #[test]
    fn a_head_fed_a_byte_at_a_time_parses_once_whole() {
        let text = "POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET";
        let mut buf = BytesMut::new();
        let mut scratch = Scratch::default();
        let mut got = None;
        for b in text.bytes() {
            buf.extend_from_slice(&[b]);
            if let Some(h) = parse_head(&mut buf, LIMITS, &mut scratch).unwrap() {
                got = Some(h);
                break;
            }
        }
        let h = got.unwrap();
        assert_eq!(
            (h.parts.method, h.parts.uri.to_string()),
            (Method::POST, "/a?b".into())
        );
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"");
    }

    #[test]
    fn framing_and_keep_alive_follow_rfc_9112() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", BodyFraming::Empty, true),
            (
                "GET / HTTP/1.1\r\nConnection: x, Close\r\n\r\n",
                BodyFraming::Empty,
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", BodyFraming::Empty, false),
            (
                "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                BodyFraming::Empty,
                true,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                BodyFraming::Empty,
                true,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
                BodyFraming::Length(7),
                true,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
                BodyFraming::Chunked,
                true,
            ),
            // Both framings: chunked, the length removed, closed after the answer.
            (
                "POST / HTTP/1.1\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
                BodyFraming::Chunked,
                false,
            ),
            // A bare LF ends a line.
            ("GET / HTTP/1.1\nHost: x\n\n", BodyFraming::Empty, true),
        ];
        for (text, framing, keep) in cases {
            let h = head(text);
            assert_eq!((h.framing, h.keep_alive), (framing, keep), "{text:?}");
            if framing == BodyFraming::Chunked {
                assert!(
                    !h.parts.headers.contains_key(header::CONTENT_LENGTH),
                    "{text:?}"
                );
            }
        }
        let h = head(
            "PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nUpgrade: x\r\nContent-Length: 1\r\n\r\n",
        );
        assert!(h.expect_continue && h.upgrade);
        assert!(!head("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn refusals_name_their_status() {
        let cases = [
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX-A : 1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
            ("GET /a b HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\nI: 1\r\n\r\n",
                431,
            ),
        ];
        for (text, status) in cases {
            let e = parse(text).map(|_| ()).unwrap_err();
            assert_eq!(e.status().as_u16(), status, "{text:?}: {e}");
        }
        // Too large: complete beyond the limit, or incomplete at it.
        let big = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
        assert_eq!(parse(&big).map(|_| ()), Err(HeadError::TooLarge));
        let partial = format!("GET /{}", "a".repeat(2000));
        assert_eq!(parse(&partial).map(|_| ()), Err(HeadError::TooLarge));
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
    }

    #[test]
    fn names_repeated_or_changed_are_read_right() {
        let mut scratch = Scratch::default();
        let heads = [
            "GET / HTTP/1.1\r\nHost: a\r\nX-Key: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Key: 2\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nX-KEY: 3\r\nX-Other: 4\r\n\r\n",
        ];
        let mut seen = Vec::new();
        for text in heads {
            let h = parse_head(&mut BytesMut::from(text), LIMITS, &mut scratch)
                .unwrap()
                .unwrap();
            let fresh = head(text);
            assert_eq!(h.parts.headers, fresh.parts.headers, "{text:?}");
            seen.push(h.parts.headers.get("x-key").cloned());
        }
        assert_eq!(
            seen,
            ["1", "2", "3"].map(|v| Some(HeaderValue::from_static(v)))
        );
    }

    fn response(status: u16, fields: &[(&str, &str)]) -> http::response::Parts {
        let mut r = Response::builder().status(status);
        for (n, v) in fields {
            r = r.header(*n, *v);
        }
        r.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_response_head_frames_the_body_for_the_client() {
        let get = (&Method::GET, Version::HTTP_11);
        let exact = SizeHint::with_exact(5);
        let unknown = SizeHint::default();
        // The response, its body's size, the request; how the body goes, kept, a line of the
        // head.
        type Case<'a> = (
            http::response::Parts,
            SizeHint,
            (&'a Method, Version),
            Encoding,
            bool,
            &'a str,
        );
        let cases: [Case<'_>; 7] = [
            (
                response(200, &[]),
                exact,
                get,
                Encoding::Length(5),
                true,
                "content-length: 5\r\n",
            ),
            (
                response(200, &[]),
                unknown,
                get,
                Encoding::Chunked,
                true,
                "transfer-encoding: chunked\r\n",
            ),
            (
                response(200, &[]),
                unknown,
                (&Method::GET, Version::HTTP_10),
                Encoding::Close,
                false,
                "connection: close\r\n",
            ),
            (
                response(200, &[("content-length", "9")]),
                unknown,
                get,
                Encoding::Length(9),
                true,
                "content-length: 9\r\n",
            ),
            (
                response(200, &[]),
                exact,
                (&Method::HEAD, Version::HTTP_11),
                Encoding::None,
                true,
                "content-length: 5\r\n",
            ),
            (
                response(304, &[("etag", "x")]),
                unknown,
                get,
                Encoding::None,
                true,
                "etag: x\r\n",
            ),
            (
                response(400, &[("connection", "close")]),
                exact,
                get,
                Encoding::Length(5),
                false,
                "connection: close\r\n",
            ),
        ];
        for (parts, hint, request, encoding, keep, line) in cases {
            let mut out = Vec::new();
            let got = encode_head(&parts, hint, request, true, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(got, (encoding, keep), "{text}");
            assert!(text.contains(line), "{line:?} not in {text}");
            assert!(
                text.ends_with("\r\n\r\n") && text.contains("\r\ndate: "),
                "{text}"
            );
            assert!(text.matches("content-length").count() <= 1, "{text}");
        }
        // HTTP/1.0 keep-alive is said; a drain closes.
        let mut out = Vec::new();
        let kept = encode_head(
            &response(200, &[]),
            exact,
            (&Method::GET, Version::HTTP_10),
            true,
            &mut out,
        );
        assert_eq!(kept, (Encoding::Length(5), true));
        assert!(String::from_utf8_lossy(&out).contains("connection: keep-alive\r\n"));
        let mut out = Vec::new();
        let closing = encode_head(&response(200, &[]), exact, get, false, &mut out);
        assert_eq!(closing, (Encoding::Length(5), false));
        assert!(String::from_utf8_lossy(&out).contains("connection: close\r\n"));
    }
}
