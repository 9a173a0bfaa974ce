//! What the client sees when something goes wrong: every error of the request path maps to a
//! response here, in one function, so the whole table reads on one screen.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, RespBody};

/// Boxed error as it comes from hyper and the upstream client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every way a request can fail in the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the application refused the connection on {addr}: is it listening?")]
    UpstreamRefused { addr: String, source: BoxError },
    #[error("connecting to the application on {addr} timed out")]
    UpstreamConnectTimeout { addr: String },
    #[error("the application sent no response head within {0:?}")]
    UpstreamTimeout(Duration),
    #[error("the exchange with the application failed")]
    Upstream(#[source] BoxError),
    #[error("request target of {len} bytes exceeds --max-uri-bytes {max}")]
    UriTooLong { len: usize, max: usize },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request path refused: {0}")]
    Path(#[source] palisade_policy::path::PathError),
    #[error("no policy bundle loaded yet and --fail-closed is set")]
    NoPolicy,
    #[error("CONNECT asks for a tunnel; the sidecar tunnels only WebSocket handshakes")]
    Connect,
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
}

impl ProxyError {
    /// Short fixed name: the metric label and log reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UpstreamRefused { .. } => "UpstreamRefused",
            Self::UpstreamConnectTimeout { .. } => "UpstreamConnectTimeout",
            Self::UpstreamTimeout(_) => "UpstreamTimeout",
            Self::Upstream(_) => "UpstreamError",
            Self::UriTooLong { .. } => "UriTooLong",
            Self::BadRequest(_) => "BadRequest",
            Self::Path(e) => e.reason(),
            Self::NoPolicy => "NoPolicy",
            Self::Connect => "Connect",
            Self::Credentials(e) => e.reason(),
        }
    }

    /// Whether the failure is on the application side (counted as an upstream error).
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            Self::UpstreamRefused { .. }
                | Self::UpstreamConnectTimeout { .. }
                | Self::UpstreamTimeout(_)
                | Self::Upstream(_)
        )
    }
}

/// The one mapping from error to response.
///
/// | error | status | connection |
/// | --- | --- | --- |
/// | application refused / other upstream failure | 502 | kept |
/// | application connect or response timeout | 504 | kept |
/// | request target too long | 414 | kept |
/// | malformed request the parser let through | 400 | closed |
/// | path refused by normalisation (bad escape, escaped slash, backslash) | 400 | kept |
/// | no bundle yet with `--fail-closed` | 503 | kept |
/// | `CONNECT` (a tunnel to anywhere) | 501 | closed |
/// | more than 4 distinct API keys, tokens or methods; conflicting ones with `--reject-conflicting-credentials` | 400 | kept |
///
/// Heads that do not parse (400), oversized heads (431), too many headers (431) and heads not
/// whole by the header-read timeout (408) are answered by the HTTP/1 server
/// ([`crate::h1_server`]; hyper's for HTTP/2) before a request exists, with the connection
/// closed.
pub fn rescue(err: &ProxyError) -> Response<RespBody> {
    let (status, close) = match err {
        ProxyError::UpstreamRefused { .. } | ProxyError::Upstream(_) => {
            (StatusCode::BAD_GATEWAY, false)
        }
        ProxyError::UpstreamConnectTimeout { .. } | ProxyError::UpstreamTimeout(_) => {
            (StatusCode::GATEWAY_TIMEOUT, false)
        }
        ProxyError::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, false),
        ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, true),
        ProxyError::Path(_) => (StatusCode::BAD_REQUEST, false),
        ProxyError::NoPolicy => (StatusCode::SERVICE_UNAVAILABLE, false),
        // Closed: a client may send its tunnel's bytes right behind the request.
        ProxyError::Connect => (StatusCode::NOT_IMPLEMENTED, true),
        ProxyError::Credentials(_) => (StatusCode::BAD_REQUEST, false),
    };
    let text = status.canonical_reason().unwrap_or("error");
    let mut resp = Response::new(body::full(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("palisade-error", HeaderValue::from_static(err.reason()));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let refused = ProxyError::UpstreamRefused {
            addr: "x".into(),
            source: "no".into(),
        };
        assert_eq!(rescue(&refused).status(), 502);
        assert_eq!(
            rescue(&ProxyError::UpstreamTimeout(Duration::from_secs(1))).status(),
            504
        );
        assert_eq!(
            rescue(&ProxyError::UriTooLong { len: 2, max: 1 }).status(),
            414
        );
        let bad = rescue(&ProxyError::BadRequest("x"));
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.headers()[header::CONNECTION], "close");
        assert_eq!(rescue(&ProxyError::NoPolicy).status(), 503);
        let connect = rescue(&ProxyError::Connect);
        assert_eq!(connect.status(), 501);
        assert_eq!(connect.headers()[header::CONNECTION], "close");
        let path = rescue(&ProxyError::Path(
            palisade_policy::path::PathError::EscapedSlash,
        ));
        assert_eq!(path.status(), 400);
        assert_eq!(path.headers()["palisade-error"], "EscapedSlash");
        assert!(!path.headers().contains_key(header::CONNECTION));
        let kind = crate::credentials::Kind::ApiKey;
        let ambiguous = rescue(&crate::credentials::CredentialError::Conflicting(kind).into());
        assert_eq!(ambiguous.status(), 400);
        assert_eq!(
            ambiguous.headers()["palisade-error"],
            "ConflictingCredentials"
        );
        assert!(!ambiguous.headers().contains_key(header::CONNECTION));
    }
}
