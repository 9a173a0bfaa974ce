//! The response body type of the proxy: the application's streamed body, or a small body the
//! sidecar writes itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use crate::count::{CountHandle, Fact};
use crate::rescue::BoxError;

/// Body of every response the proxy returns.
pub type RespBody = BoxBody<Bytes, BoxError>;

/// A complete body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> RespBody {
    full(Bytes::new())
}

/// Boxes any streamed body without buffering it.
pub fn stream<B>(b: B) -> RespBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

/// `body`, counted as it streams: `fact` is recorded with the bytes sent once the body ends,
/// fails, or is dropped (the client went away).
pub fn counted(body: RespBody, fact: Fact, counter: CountHandle) -> RespBody {
    Counted {
        inner: body,
        fact: Some(fact),
        counter,
        bytes: 0,
    }
    .boxed()
}

struct Counted {
    inner: RespBody,
    fact: Option<Fact>,
    counter: CountHandle,
    bytes: u64,
}

impl Counted {
    fn finish(&mut self) {
        if let Some(mut fact) = self.fact.take() {
            fact.bytes = self.bytes;
            self.counter.record(fact);
        }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.bytes = self.bytes.saturating_add(n);
            }
            Poll::Ready(None | Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}
