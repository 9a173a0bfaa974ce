//! The response body type of the proxy: the application's streamed body, or a small body the
//! sidecar writes itself.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

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
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}
