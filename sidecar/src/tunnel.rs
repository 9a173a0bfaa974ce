//! The byte pipe of an upgraded (WebSocket) connection: client and application joined until
//! either side closes or nothing moves either way for `--tunnel-idle-timeout`. The bytes of
//! both directions are counted in the metrics as they move; when the tunnel ends, the bytes
//! the application sent are handed to detection as the request's response bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

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

/// Copies bytes both ways between the two upgraded connections until either side closes or
/// the tunnel is idle for `idle`; then reports the application's bytes on `done`.
pub async fn pipe(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    metrics: TunnelMetrics,
    done: watch::Sender<Option<u64>>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            metrics.failed.inc();
            let _ = done.send(Some(0));
            return;
        }
    };
    let activity = Activity::new();
    let mut client = Metered::new(TokioIo::new(client), &activity, &metrics.to_app);
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
