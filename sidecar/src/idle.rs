//! What counts as use of a client connection, for the idle timeout.
//!
//! HTTP/1.x: any byte either way. The start of an HTTP/2 connection preface is not use until
//! the preface is complete. HTTP/2 (recognised by its connection preface): only frames
//! that carry requests and responses — HEADERS, CONTINUATION and DATA, either way. PING
//! (the server's own keep-alive pings and the client's), SETTINGS, WINDOW_UPDATE and the
//! other control frames are not use, so an HTTP/2 client that opens no stream is closed
//! after the idle timeout although the connection answers pings, and so is one that stops
//! reading a response (its stream moves no DATA). The frame scan reads the 9-byte frame
//! headers only and skips payloads: a few comparisons per read or write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of an HTTP/2 frame header.
const FRAME_HEAD: usize = 9;
/// Frame types that carry a request or a response.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;

/// Whether a connection was used since the last look; shared by the I/O wrapper and the
/// watch that closes it.
#[derive(Debug, Clone)]
pub struct Activity(Arc<AtomicBool>);

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A fresh flag (connections start as used).
    pub fn new() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    /// Notes use.
    pub fn touch(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether there was use since the last call.
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }

    /// Resolves once there was no use for about `idle` (checked in quarters).
    pub async fn idle(self, idle: Duration) {
        let tick = idle / 4;
        let mut quiet = 0;
        loop {
            tokio::time::sleep(tick).await;
            if self.take() {
                quiet = 0;
            } else {
                quiet += 1;
                if quiet >= 4 {
                    return;
                }
            }
        }
    }
}

/// Frame boundaries of one direction of an HTTP/2 connection.
#[derive(Debug, Default, Clone)]
struct Frames {
    head: [u8; FRAME_HEAD],
    have: usize,
    skip: usize,
}

impl Frames {
    /// Follows `bytes`; true when a DATA, HEADERS or CONTINUATION frame starts in them.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut used = false;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEAD - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEAD {
                let h = &self.head;
                self.skip =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                used |= matches!(h[3], DATA | HEADERS | CONTINUATION);
                self.have = 0;
            }
        }
        used
    }
}

/// What the wrapper knows of the protocol so far.
#[derive(Debug, Clone)]
enum Protocol {
    /// This many bytes read so far, all matching the HTTP/2 preface.
    Sniffing(usize),
    /// HTTP/1.x: every byte is use.
    Http1,
    /// HTTP/2: request and response frames are use.
    Http2 { read: Frames, write: Frames },
}

impl Protocol {
    /// Follows bytes read; whether they are use.
    fn read(&mut self, bytes: &[u8]) -> bool {
        match self {
            Self::Http1 => true,
            Self::Http2 { read, .. } => read.feed(bytes),
            Self::Sniffing(seen) => {
                let want = &PREFACE[*seen..];
                let n = want.len().min(bytes.len());
                if bytes[..n] != want[..n] {
                    *self = Self::Http1;
                    return true;
                }
                *seen += n;
                if *seen < PREFACE.len() {
                    // Not use yet: a client dripping the preface (on which no header-read
                    // timeout runs) is closed like one that sends nothing.
                    return false;
                }
                let mut read = Frames::default();
                let used = read.feed(&bytes[n..]);
                *self = Self::Http2 {
                    read,
                    write: Frames::default(),
                };
                used
            }
        }
    }

    /// Follows bytes written; whether they are use.
    fn write<'a>(&mut self, bytes: impl IntoIterator<Item = &'a [u8]>) -> bool {
        match self {
            Self::Http2 { write, .. } => bytes.into_iter().fold(false, |u, b| write.feed(b) | u),
            _ => true,
        }
    }
}

/// A client connection's stream that notes use in an [`Activity`].
#[derive(Debug)]
pub struct IdleIo<T> {
    inner: T,
    activity: Activity,
    protocol: Protocol,
}

impl<T> IdleIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Activity) -> Self {
        Self {
            inner,
            activity,
            protocol: Protocol::Sniffing(0),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let p = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(p, Poll::Ready(Ok(()))) && self.protocol.read(&buf.filled()[before..]) {
            self.activity.touch();
        }
        p
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = p
            && self.protocol.write([&buf[..n]])
        {
            self.activity.touch();
        }
        p
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = p {
            let written = bufs.iter().scan(n, |left, b| {
                let take = (*left).min(b.len());
                *left -= take;
                Some(&b[..take])
            });
            if self.protocol.write(written) {
                self.activity.touch();
            }
        }
        p
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: usize) -> Vec<u8> {
        let len = u32::try_from(payload).expect("small").to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, 0, 0, 0, 0, 1];
        f.resize(FRAME_HEAD + payload, 0xAB);
        f
    }

    const PING: u8 = 0x6;
    const SETTINGS: u8 = 0x4;
    const WINDOW_UPDATE: u8 = 0x8;

    #[test]
    fn http1_bytes_are_use() {
        let mut p = Protocol::Sniffing(0);
        assert!(p.read(b"GET / HTTP/1.1\r\n"));
        assert!(matches!(p, Protocol::Http1));
        assert!(p.write([&b"HTTP/1.1 200 OK\r\n"[..]]));
    }

    #[test]
    fn http2_pings_and_settings_are_not_use_but_headers_and_data_are() {
        let mut p = Protocol::Sniffing(0);
        // The preface split across reads (not use until it is complete), then control
        // frames only.
        assert!(!p.read(&PREFACE[..5]));
        let mut rest = PREFACE[5..].to_vec();
        rest.extend(frame(SETTINGS, 12));
        assert!(!p.read(&rest));
        assert!(matches!(p, Protocol::Http2 { .. }));
        assert!(!p.write([&frame(SETTINGS, 0)[..], &frame(PING, 8)[..]]));
        assert!(!p.read(&frame(PING, 8)));
        assert!(!p.read(&frame(WINDOW_UPDATE, 4)));
        // A HEADERS frame, one byte at a time: use once its header is complete.
        let headers = frame(HEADERS, 20);
        let used: Vec<bool> = headers.chunks(1).map(|b| p.read(b)).collect();
        assert_eq!(used.iter().filter(|u| **u).count(), 1);
        assert!(used[FRAME_HEAD - 1]);
        // A large DATA payload is skipped, and the PING after it is seen as a PING.
        let mut data = frame(DATA, 70_000);
        data.extend(frame(PING, 8));
        assert!(p.write([&data[..10], &data[10..]]));
        assert!(!p.write([&frame(PING, 8)[..]]));
        assert!(p.write([&frame(CONTINUATION, 3)[..]]));
    }

    #[test]
    fn a_near_preface_is_http1() {
        let mut p = Protocol::Sniffing(0);
        assert!(p.read(b"PRI * HTTP/2.0\r\n\r\nXX"));
        assert!(matches!(p, Protocol::Http1));
    }
}
