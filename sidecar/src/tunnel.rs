//! The byte pipe of an upgraded (WebSocket) connection: client and application joined until
//! either side closes or nothing moves either way for `--tunnel-idle-timeout`. The bytes of
//! both directions are counted in the metrics as they move; when the tunnel ends, the bytes
//! the application sent are handed to detection as the request's response bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_util::either::Either;

use crate::idle::Activity;

/// Metric handles of the tunnels.
#[derive(Debug, Clone, Default)]
pub struct TunnelMetrics {
    /// Tunnels open now.
    pub open: Gauge,
    /// Bytes from the client to the application.
    pub to_app: Counter,
    /// Bytes from the application to the client.
    pub to_client: Counter,
    /// Tunnels that ended because either side closed.
    pub ended: Counter,
    /// Tunnels closed by the idle timeout.
    pub idle: Counter,
    /// Tunnels that ended with an I/O error, or whose upgrade did not complete.
    pub failed: Counter,
}

/// Put in the extensions of a `101` response by the forwarder: resolves to the bytes the
/// application sent through the tunnel once it has ended (`None` while open).
#[derive(Debug, Clone)]
pub struct TunnelClosed(pub watch::Receiver<Option<u64>>);

impl TunnelClosed {
    /// The bytes the application sent, once the tunnel has ended (0 if it never opened).
    pub async fn to_client(mut self) -> u64 {
        match self.0.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(0),
            Err(_) => 0,
        }
    }
}

/// A new end-of-tunnel signal: the sender for the pipe, the receiver for the response.
pub fn closed_signal() -> (watch::Sender<Option<u64>>, TunnelClosed) {
    let (tx, rx) = watch::channel(None);
    (tx, TunnelClosed(rx))
}

/// The client's side of an upgrade: an HTTP/1.x connection of the sidecar's own server
/// ([`crate::h1_server`]) or an upgrade hyper performs.
#[derive(Debug)]
pub enum ClientUpgrade {
    /// Handed over by [`crate::h1_server`] once the `101` is written.
    Own(tokio::sync::oneshot::Receiver<crate::h1_server::Rewind>),
    /// Performed by hyper.
    Hyper(hyper::upgrade::OnUpgrade),
}

impl ClientUpgrade {
    /// Takes the upgrade of `req`'s connection.
    pub fn of<B>(req: &mut http::Request<B>) -> Self {
        match req
            .extensions_mut()
            .remove::<crate::h1_server::OnUpgrade>()
            .and_then(|own| own.take())
        {
            Some(own) => Self::Own(own),
            None => Self::Hyper(hyper::upgrade::on(req)),
        }
    }

    async fn io(
        self,
    ) -> Result<Either<crate::h1_server::Rewind, TokioIo<hyper::upgrade::Upgraded>>, String> {
        match self {
            Self::Own(rx) => rx
                .await
                .map(Either::Left)
                .map_err(|_| "the client connection ended before switching".to_owned()),
            Self::Hyper(on) => on
                .await
                .map(|u| Either::Right(TokioIo::new(u)))
                .map_err(|e| e.to_string()),
        }
    }
}

/// Copies bytes both ways between the two upgraded connections until either side closes or
/// the tunnel is idle for `idle`; then reports the application's bytes on `done`.
pub async fn pipe(
    client: ClientUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle: Duration,
    metrics: TunnelMetrics,
    done: watch::Sender<Option<u64>>,
) {
    let upstream = async { upstream.await.map_err(|e| e.to_string()) };
    let (client, upstream) = match tokio::try_join!(client.io(), upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            metrics.failed.inc();
            let _ = done.send(Some(0));
            return;
        }
    };
    let activity = Activity::new();
    let mut client = Metered::new(client, &activity, &metrics.to_app);
    let mut upstream = Metered::new(TokioIo::new(upstream), &activity, &metrics.to_client);
    metrics.open.inc();
    let outcome = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
            Ok(_) => &metrics.ended,
            Err(e) => {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
                &metrics.failed
            }
        },
        () = activity.clone().idle(idle) => {
            tracing::debug!(?idle, "idle upgraded connection closed");
            &metrics.idle
        }
    };
    outcome.inc();
    metrics.open.dec();
    let _ = done.send(Some(upstream.read));
}

/// One side of a tunnel: bytes read from it are counted and are use.
struct Metered<T> {
    inner: T,
    activity: Activity,
    counter: Counter,
    read: u64,
}

impl<T> Metered<T> {
    fn new(inner: T, activity: &Activity, counter: &Counter) -> Self {
        Self {
            inner,
            activity: activity.clone(),
            counter: counter.clone(),
            read: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let p = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.read += n;
            self.counter.inc_by(n);
            self.activity.touch();
        }
        p
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
