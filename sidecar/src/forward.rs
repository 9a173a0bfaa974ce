//! Forwards a request to the application on loopback and streams the answer back over
//! keep-alive HTTP/1.1, Host preserved, X-Forwarded-For / X-Forwarded-Proto appended,
//! hop-by-hop headers removed (RFC 9110 §7.6.1). Bodies are streamed both ways, never buffered.
//!
//! Upgrades: only a WebSocket handshake (HTTP/1.1 `GET` with `Connection: upgrade` and
//! `Upgrade: websocket`) is passed on and, on `101`, tunnelled ([`crate::tunnel`]). Any other
//! `Upgrade` (`h2c`, `TLS/1.0`, …) is ignored as RFC 9110 §7.8 allows a server to, and as
//! nginx does by default: the header is hop-by-hop, so it is removed and the request is
//! forwarded as an ordinary one. (The sidecar speaks h2c by prior knowledge only.)
//!
//! Upstream connections: each HTTP/1.x client connection gets its own upstream connection
//! ([`Affinity`]), opened on its first request and reused by the next ones, so the request
//! path shares no connection pool (and no pool lock) with other connections. That connection
//! speaks the sidecar's own HTTP/1.1 client ([`crate::h1`]), read and written by the client
//! connection's task as the request and the response need it: a request and its response
//! cross no task boundary. HTTP/2 clients, whose requests on one connection run concurrently,
//! use a shared keep-alive pool (hyper's client), and a WebSocket handshake a connection of
//! hyper's client that its tunnel takes over.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use crate::h1_server::ReqBody;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::task::TaskTracker;

use crate::body::{self, RespBody};
use crate::h1;
use crate::rescue::ProxyError;
use crate::tunnel::{self, TunnelMetrics};

/// Hop-by-hop headers always removed, besides those named in `Connection`: the one list,
/// read as bytes (names as written, in heads not parsed into a `HeaderMap`) and as
/// [`HOP_BY_HOP`].
const HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// [`HOP_BY_HOP_NAMES`] as header names, in the same order. (A `static`: a `const` array
/// would be built anew, and its custom names dropped, at every use.)
pub(crate) static HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static(HOP_BY_HOP_NAMES[0]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[1]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[2]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[3]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[4]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[5]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[6]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[7]),
];

/// The lengths of the [`HOP_BY_HOP`] names.
const HOP_BY_HOP_LENGTHS: [usize; 6] = [2, 7, 10, 16, 17, 19];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Settings of the upstream side.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Loopback address of the application.
    pub addr: SocketAddr,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time to the response head.
    pub response_timeout: Duration,
    /// Idle time after which connections of the HTTP/2 clients' pool close.
    pub pool_idle: Duration,
    /// An upgraded (WebSocket) connection with no bytes either way for this long is closed.
    pub tunnel_idle: Duration,
}

/// The upstream connection of one client connection, kept between its requests, with the
/// timer that bounds each request's wait for its response head. Only that connection's
/// requests use it, one at a time (HTTP/1.x), so its locks are never contended.
///
/// The timer is re-armed for each request rather than made anew: pushing a pending
/// deadline later is one atomic update in tokio, where a timer per request costs an
/// allocation, a timer-wheel insertion and a removal.
///
/// The connection is read and written by the client connection's task itself ([`h1`]): the
/// request's future writes the request and reads the response head, the response body reads
/// the rest as the client's side sends it, and puts the connection back here when it ends.
#[derive(Debug, Default)]
pub struct Affinity {
    /// The kept connection, between two requests.
    idle: h1::Home,
    deadline: std::sync::Mutex<Option<Pin<Box<Sleep>>>>,
    /// The client's address as an `X-Forwarded-For` element, written on the connection's
    /// first request and appended to every request after it.
    peer: std::sync::OnceLock<(IpAddr, HeaderValue)>,
}

impl Affinity {
    /// The kept connection, if it can take a request, and the timer, armed to fire `after`
    /// from now.
    fn take(&self, after: Duration) -> (Option<Box<h1::Conn>>, Pin<Box<Sleep>>) {
        let at = tokio::time::Instant::now() + after;
        let conn = self.idle.lock().ok().and_then(|mut idle| idle.take());
        let deadline = self.deadline.lock().ok().and_then(|mut d| d.take());
        let deadline = match deadline {
            Some(mut sleep) => {
                sleep.as_mut().reset(at);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(at)),
        };
        (conn.filter(|c| c.is_idle()), deadline)
    }

    /// `peer` as a header value, made once per connection (a connection has one peer; another
    /// address is written anew).
    fn peer_value(&self, peer: IpAddr) -> Option<HeaderValue> {
        match self.peer.get() {
            Some((ip, value)) if *ip == peer => Some(value.clone()),
            Some(_) => ip_value(peer),
            None => {
                let value = ip_value(peer)?;
                Some(self.peer.get_or_init(|| (peer, value)).1.clone())
            }
        }
    }

    /// Keeps the timer for the next request.
    fn keep(&self, deadline: Pin<Box<Sleep>>) {
        if let Ok(mut kept) = self.deadline.lock() {
            kept.get_or_insert(deadline);
        }
    }
}

/// An upstream connection's I/O (hyper's client), run until the connection closes.
type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The client side to the application.
#[derive(Debug)]
pub struct Forwarder {
    client: Client<HttpConnector, ReqBody>,
    cfg: UpstreamConfig,
    authority: http::uri::Authority,
    /// The byte pipes of upgraded (WebSocket) connections, which outlive their HTTP
    /// connection: the drain waits for them.
    tunnels: TaskTracker,
    tunnel_metrics: TunnelMetrics,
}

impl Forwarder {
    /// Builds the client; connects lazily.
    pub fn new(cfg: UpstreamConfig, tunnel_metrics: TunnelMetrics) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .set_host(false)
            .build(connector);
        let authority = cfg
            .addr
            .to_string()
            .parse()
            .expect("a socket address is an authority");
        Self {
            client,
            cfg,
            authority,
            tunnels: TaskTracker::new(),
            tunnel_metrics,
        }
    }

    /// The open upgraded connections.
    pub fn tunnels(&self) -> &TaskTracker {
        &self.tunnels
    }

    /// Sends `req` (from client `peer`, on the client connection whose upstream connection
    /// is `affinity`) to the application and returns its response.
    pub async fn forward(
        &self,
        mut req: Request<ReqBody>,
        peer: IpAddr,
        affinity: &Affinity,
    ) -> Result<Response<RespBody>, ProxyError> {
        if is_websocket(&req) {
            let on_client = tunnel::ClientUpgrade::of(&mut req);
            self.prepare(&mut req, affinity.peer_value(peer), false)?;
            return self.forward_upgrade(req, on_client).await;
        }
        let concurrent = req.version() == Version::HTTP_2;
        self.prepare(&mut req, affinity.peer_value(peer), concurrent)?;
        let timeout = self.cfg.response_timeout;
        let resp = if concurrent {
            match tokio::time::timeout(timeout, self.client.request(req)).await {
                Err(_) => return Err(ProxyError::UpstreamTimeout(timeout)),
                Ok(Err(e)) => return Err(self.classify(e)),
                Ok(Ok(resp)) => resp,
            }
        } else {
            let (kept, mut deadline) = affinity.take(timeout);
            let sent = tokio::select! {
                biased;
                sent = self.send_own(req, kept, &affinity.idle) => sent,
                () = deadline.as_mut() => {
                    // The connection is dropped with the request it was sending.
                    affinity.keep(deadline);
                    return Err(ProxyError::UpstreamTimeout(timeout));
                }
            };
            affinity.keep(deadline);
            // Its head is parsed and stripped of hop-by-hop fields by `h1`.
            return Ok(sent?.map(body::stream));
        };
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body::stream(incoming)))
    }

    /// Sends on the client connection's own upstream connection (`kept`, which the
    /// application has not closed as far as the sidecar has seen), opening one if there is
    /// none. When a kept connection closes under a safe, bodiless request before any byte of
    /// an answer (the application's idle close racing the request), the request is written
    /// once more on a new connection, as nginx's `proxy_next_upstream` does.
    async fn send_own(
        &self,
        req: Request<ReqBody>,
        kept: Option<Box<h1::Conn>>,
        home: &h1::Home,
    ) -> Result<Response<h1::ResponseBody>, ProxyError> {
        let upstream = |e: h1::Error| ProxyError::Upstream(Box::new(e));
        let (conn, reused) = match kept {
            Some(conn) => (conn, true),
            None => (h1::Conn::new(self.connect().await?), false),
        };
        match conn.send(req, home).await {
            Ok(resp) => Ok(resp),
            Err(failed) if reused && failed.may_replay() => {
                tracing::debug!(error = %failed.error, "kept upstream connection closed under a request: writing it again");
                let io = self.connect().await?;
                failed.replay(io, home).await.map_err(upstream)
            }
            Err(failed) => Err(upstream(failed.error)),
        }
    }

    /// A new TCP connection to the application.
    async fn connect(&self) -> Result<TcpStream, ProxyError> {
        let addr = self.cfg.addr.to_string();
        let connect =
            tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(self.cfg.addr));
        let stream = match connect.await {
            Err(_) => return Err(ProxyError::UpstreamConnectTimeout { addr }),
            Ok(Err(e)) => {
                return Err(ProxyError::UpstreamRefused {
                    addr,
                    source: Box::new(e),
                });
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A new HTTP/1.1 connection to the application through hyper's client, for a WebSocket
    /// handshake (its tunnel takes the socket over), and its I/O to run until it closes.
    async fn handshake(&self) -> Result<(SendRequest<ReqBody>, Driver), ProxyError> {
        let stream = self.connect().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Upstream(Box::new(e)))?;
        let driver = Box::pin(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok((sender, driver))
    }

    /// Rewrites the request for the upstream hop: absolute-form for the shared pool
    /// (`pooled`), origin-form on a connection of our own; `peer` (the client connection's
    /// address as text) is appended to `X-Forwarded-For`.
    fn prepare(
        &self,
        req: &mut Request<ReqBody>,
        peer: Option<HeaderValue>,
        pooled: bool,
    ) -> Result<(), ProxyError> {
        if !req.headers().contains_key(header::HOST) {
            let host = req.uri().authority().map(|a| a.as_str().to_owned());
            let host = host.ok_or(ProxyError::BadRequest("request without Host"))?;
            let value = HeaderValue::from_str(&host).map_err(|_| ProxyError::BadRequest("Host"))?;
            req.headers_mut().insert(header::HOST, value);
        }
        let path = || req.uri().path_and_query().cloned();
        if pooled {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(self.authority.clone());
            parts.path_and_query =
                Some(path().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
            *req.uri_mut() =
                Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("target"))?;
        } else if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            // An absolute-form target from the client: origin-form to the app (the common
            // origin-form request is passed as it came, without a rebuild).
            *req.uri_mut() = path().map_or(Uri::from_static("/"), Uri::from);
        }
        *req.version_mut() = Version::HTTP_11;
        // No hop-by-hop header is left to strip: the client's went in `sanitize` before the
        // request was read, a WebSocket handshake's `Connection`/`Upgrade` are set again by
        // `forward_upgrade`, and `enforce` never adds one (see [`may_be_added`]).
        append_forwarded_value(req.headers_mut(), peer);
        Ok(())
    }

    /// Maps a client error to the precise failure.
    fn classify(&self, e: hyper_util::client::legacy::Error) -> ProxyError {
        let addr = self.cfg.addr.to_string();
        if e.is_connect() {
            match io_kind(&e) {
                Some(std::io::ErrorKind::TimedOut) => ProxyError::UpstreamConnectTimeout { addr },
                _ => ProxyError::UpstreamRefused {
                    addr,
                    source: Box::new(e),
                },
            }
        } else {
            ProxyError::Upstream(Box::new(e))
        }
    }

    /// A WebSocket handshake gets a dedicated connection, handed over to a byte pipe on 101.
    /// The `101` response carries a [`tunnel::TunnelClosed`] for detection.
    async fn forward_upgrade(
        &self,
        mut req: Request<ReqBody>,
        on_client: tunnel::ClientUpgrade,
    ) -> Result<Response<RespBody>, ProxyError> {
        let proto = HeaderValue::from_static("websocket");
        let (mut sender, driver) = self.handshake().await?;
        // A task of its own: the tunnel outlives the client connection's HTTP state.
        tokio::spawn(driver);
        set_upgrade(req.headers_mut(), proto.clone());
        let sent = tokio::time::timeout(self.cfg.response_timeout, sender.send_request(req));
        let mut resp = match sent.await {
            Err(_) => return Err(ProxyError::UpstreamTimeout(self.cfg.response_timeout)),
            Ok(Err(e)) => return Err(ProxyError::Upstream(Box::new(e))),
            Ok(Ok(resp)) => resp,
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, incoming) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Ok(Response::from_parts(parts, body::stream(incoming)));
        }
        let on_upstream = hyper::upgrade::on(&mut resp);
        let (done, closed) = tunnel::closed_signal();
        let (idle, metrics) = (self.cfg.tunnel_idle, self.tunnel_metrics.clone());
        self.tunnels
            .spawn(tunnel::pipe(on_client, on_upstream, idle, metrics, done));
        let (mut parts, _) = resp.into_parts();
        let proto = parts.headers.get(header::UPGRADE).cloned().unwrap_or(proto);
        strip_hop_by_hop(&mut parts.headers);
        set_upgrade(&mut parts.headers, proto);
        parts.extensions.insert(closed);
        Ok(Response::from_parts(parts, body::empty()))
    }
}

/// Whether `req` is a WebSocket opening handshake (RFC 6455 §4.1): HTTP/1.1, `GET`,
/// `Connection` naming `upgrade`, and `Upgrade` listing `websocket` (tokens compared without
/// case). Any other upgrade is not tunnelled.
fn is_websocket<B>(req: &Request<B>) -> bool {
    if req.version() != Version::HTTP_11 || req.method() != http::Method::GET {
        return false;
    }
    let Some(upgrade) = req.headers().get(header::UPGRADE) else {
        return false;
    };
    let websocket = elements(upgrade).any(|t| t.eq_ignore_ascii_case(b"websocket"));
    websocket
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(elements)
            .any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

/// The protocol a WebSocket handshake asks for (`websocket`), `None` for any other request:
/// its `Upgrade` is not honoured.
pub(crate) fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    is_websocket(req).then(|| HeaderValue::from_static("websocket"))
}

fn set_upgrade(headers: &mut HeaderMap, proto: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, proto);
}

/// The elements of a list-valued field (RFC 9110 §5.6.1), as bytes: split at commas, spaces
/// and tabs trimmed, empty ones skipped. Bytes, not text: an element with a non-ASCII byte
/// must not hide the others of its line (`Connection: x-a, é` still names `x-a`).
pub(crate) fn elements(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    list(value.as_bytes())
}

/// The elements of a list value's bytes (see [`elements`]).
pub(crate) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers: the fixed list and every header named in `Connection`.
/// One pass over the names finds which are present, so a message without any (the common
/// request) costs no lookup and no allocation.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for name in headers.keys() {
        // Most names have a length no hop-by-hop name has: no comparison for them.
        if !HOP_BY_HOP_LENGTHS.contains(&name.as_str().len()) {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present == 1 && names_no_header(headers.get_all(header::CONNECTION)) {
        // The common response: one `Connection: keep-alive` and nothing else hop-by-hop.
        headers.remove(header::CONNECTION);
        return;
    }
    if present & 1 != 0
        && let header::Entry::Occupied(e) = headers.entry(header::CONNECTION)
    {
        // Taken out first, so its tokens can name headers to remove from the same map.
        let mut values = e.remove_entry_mult().1;
        let first = values.next();
        let rest: Vec<HeaderValue> = values.collect(); // no allocation for one line
        for value in first.iter().chain(&rest) {
            for token in elements(value) {
                // A name of the fixed list goes below if present (`keep-alive`, the common
                // token); any other is looked for among the message's few names, compared
                // without case, rather than parsed into a name and hashed (`close`, the
                // other common token, names no header and costs one pass).
                if HOP_BY_HOP_NAMES
                    .iter()
                    .any(|h| h.as_bytes().eq_ignore_ascii_case(token))
                {
                    continue;
                }
                let named = headers
                    .keys()
                    .find(|n| n.as_str().as_bytes().eq_ignore_ascii_case(token))
                    .cloned();
                if let Some(name) = named {
                    headers.remove(&name);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Whether `Connection` is one line whose tokens are only `keep-alive` (any case): when no
/// `Keep-Alive` header is present, it names nothing else to remove. (`close` is left to the
/// general path: a header of that name would have to go too.)
fn names_no_header(values: header::GetAll<'_, HeaderValue>) -> bool {
    let mut lines = values.iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return false;
    };
    line.as_bytes().split(|&b| b == b',').all(|token| {
        let token = token.trim_ascii();
        token.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// Whether `name` is one of the fixed hop-by-hop names (not counting those a `Connection`
/// value names).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP_LENGTHS.contains(&name.as_str().len()) && HOP_BY_HOP.contains(name)
}

/// Whether `name`, a field name as written (any case), is one of the fixed hop-by-hop
/// names: the same list as [`is_hop_by_hop`], for heads not parsed into a `HeaderMap`.
pub(crate) fn is_hop_by_hop_raw(name: &[u8]) -> bool {
    HOP_BY_HOP_LENGTHS.contains(&name.len())
        && HOP_BY_HOP_NAMES
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether the sidecar may add a header of this name to a forwarded request: never a
/// hop-by-hop header, `Host` or `Content-Length` (the API server refuses such flag names;
/// this holds for any bundle).
pub fn may_be_added(name: &HeaderName) -> bool {
    !(HOP_BY_HOP.contains(name) || name == header::HOST || name == header::CONTENT_LENGTH)
}

/// Appends the peer to `X-Forwarded-For` and `http` to `X-Forwarded-Proto`.
pub fn append_forwarded(headers: &mut HeaderMap, peer: IpAddr) {
    append_forwarded_value(headers, ip_value(peer));
}

/// [`append_forwarded`] with the peer already written as a header value.
fn append_forwarded_value(headers: &mut HeaderMap, peer: Option<HeaderValue>) {
    // One lookup per header (the entry API); a new header is the common case.
    if let Some(peer) = peer {
        match headers.entry(X_FORWARDED_FOR) {
            header::Entry::Vacant(e) => {
                e.insert(peer);
            }
            header::Entry::Occupied(e) => join(e, peer.to_str().unwrap_or_default()),
        }
    }
    match headers.entry(X_FORWARDED_PROTO) {
        header::Entry::Vacant(e) => {
            e.insert(HeaderValue::from_static("http"));
        }
        header::Entry::Occupied(e) => join(e, "http"),
    }
}

/// `ip` as a header value.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let mut buf = [0u8; 48];
    HeaderValue::from_str(ip_text(ip, &mut buf)).ok()
}

/// `ip` as text in `buf`, without allocating: IPv4 digit by digit (the formatter machinery
/// of `Display` costs more than the rest of the header rewrite), IPv6 through `Display`
/// (at most 45 bytes).
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{v6}");
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    };
    std::str::from_utf8(&buf[..n]).unwrap_or_default()
}

/// Sets `name` to its earlier values (every line, comma-joined) followed by `value`.
/// Replaces the header's lines with one: their non-empty values and `value`, comma-joined.
fn join(mut e: header::OccupiedEntry<'_, HeaderValue>, value: &str) {
    let mut joined = String::new();
    for prev in e.iter() {
        if let Ok(prev) = prev.to_str().map(str::trim)
            && !prev.is_empty()
        {
            joined.push_str(prev);
            joined.push_str(", ");
        }
    }
    joined.push_str(value);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        e.insert(v);
    }
}

fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_writes_its_peer_once_and_any_other_address_anew() {
        let a = Affinity::default();
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        for (ip, text) in [(v4, "192.0.2.1"), (v4, "192.0.2.1"), (v6, "2001:db8::1")] {
            assert_eq!(a.peer_value(ip).expect("value"), text);
        }
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.1"));
        append_forwarded_value(&mut h, a.peer_value(v4));
        assert_eq!(h[X_FORWARDED_FOR], "198.51.100.1, 192.0.2.1");
    }

    /// The API server refuses a flag header the sidecar would not add, and the sidecar adds
    /// every other: what a SecurityAction's flag says is what the application gets.
    #[test]
    fn the_names_never_added_are_the_ones_the_api_server_refuses() {
        use palisade_crds::strings::RESERVED_HEADERS;
        let never: Vec<&str> = HOP_BY_HOP_NAMES
            .iter()
            .copied()
            .chain(["host", "content-length"])
            .collect();
        for &name in &never {
            assert!(
                RESERVED_HEADERS.contains(&name),
                "{name} is not refused by the API"
            );
            assert!(!may_be_added(&HeaderName::from_static(name)), "{name}");
        }
        for name in RESERVED_HEADERS {
            assert!(
                never.contains(&name),
                "{name} is refused but would be added"
            );
        }
        assert!(may_be_added(&HeaderName::from_static("x-palisade-flag")));
    }

    #[test]
    fn the_length_filter_lets_every_hop_by_hop_name_through() {
        for (name, text) in HOP_BY_HOP.iter().zip(HOP_BY_HOP_NAMES) {
            assert_eq!(name.as_str(), text);
            assert!(HOP_BY_HOP_LENGTHS.contains(&name.as_str().len()), "{name}");
        }
    }

    #[test]
    fn strips_hop_by_hop_and_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn appends_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        append_forwarded(&mut h, "198.51.100.7".parse().expect("ip"));
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.1, 198.51.100.7");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn formats_addresses_like_display() {
        let mut buf = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "100.200.255.9",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }

    #[test]
    fn appends_to_every_earlier_line() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static(" "));
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("192.0.2.2, 192.0.2.3"),
        );
        h.append(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        append_forwarded(&mut h, "2001:db8::7".parse().expect("ip"));
        let xff: Vec<_> = h.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(xff, ["192.0.2.1, 192.0.2.2, 192.0.2.3, 2001:db8::7"]);
        assert_eq!(h[X_FORWARDED_PROTO], "https, http");
        let mut fresh = HeaderMap::new();
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        append_forwarded(&mut fresh, longest.parse().expect("ip"));
        assert_eq!(
            fresh[X_FORWARDED_FOR],
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }

    #[test]
    fn strips_every_connection_line_and_keeps_a_clean_map_untouched() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(header::CONNECTION, HeaderValue::from_static("X-A , ,x-b"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::HOST, HeaderValue::from_static("api"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::HOST]);
        let mut clean = HeaderMap::new();
        clean.insert(header::HOST, HeaderValue::from_static("api"));
        clean.insert("x-c", HeaderValue::from_static("1"));
        let before = clean.clone();
        strip_hop_by_hop(&mut clean);
        assert_eq!(clean, before);
    }

    #[test]
    fn a_lone_keep_alive_goes_and_every_other_connection_line_takes_the_full_path() {
        let strip = |lines: &[&'static str], others: &[&'static str]| {
            let mut h = HeaderMap::new();
            for line in lines {
                h.append(header::CONNECTION, HeaderValue::from_static(line));
            }
            for name in others {
                h.append(*name, HeaderValue::from_static("1"));
            }
            strip_hop_by_hop(&mut h);
            h.keys().map(|n| n.as_str().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(strip(&["keep-alive"], &["etag"]), ["etag"]);
        assert_eq!(strip(&[" Keep-Alive ,KEEP-ALIVE"], &["etag"]), ["etag"]);
        // `close` names a header of that name, if the message has one.
        assert_eq!(strip(&["close"], &["close", "etag"]), ["etag"]);
        assert_eq!(strip(&["keep-alive, close"], &["close", "etag"]), ["etag"]);
        // A named header, a second line, a token that is not keep-alive.
        assert_eq!(strip(&["keep-alive, x-a"], &["x-a", "etag"]), ["etag"]);
        assert_eq!(strip(&["keep-alive", "x-a"], &["x-a", "etag"]), ["etag"]);
        assert_eq!(
            strip(&["keep-alive-x"], &["keep-alive-x", "etag"]),
            ["etag"]
        );
        assert_eq!(
            strip(&["x-keep-alive"], &["x-keep-alive"]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_non_ascii_element_of_connection_hides_no_other() {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"x-a, \xc3\xa9").expect("obs-text is a valid value");
        h.append(header::CONNECTION, value);
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-b"]);
    }

    #[test]
    fn connection_tokens_name_headers_in_any_case_with_every_value() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("Close, KEEP-Alive, X-Multi, x-absent, bad name"),
        );
        h.insert("close", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append("x-multi", HeaderValue::from_static("1"));
        h.append("x-multi", HeaderValue::from_static("2"));
        h.insert("x-multiple", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-multiple"]);
    }
}
