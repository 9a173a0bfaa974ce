//! The client-facing accept loop: HTTP/1.1 with keep-alive and h2c (prior knowledge) on one
//! port through hyper-util's auto builder, limits on head size and count, a header-read
//! timeout, an idle timeout (what counts as use: [`crate::idle`]), a bound on the concurrent
//! streams of an HTTP/2 connection, and graceful drain on shutdown within a bounded grace
//! period.
//!
//! An HTTP/2 client's requests run concurrently and go to the application through the shared
//! pool, one upstream connection per request in flight: `max_concurrent_streams` is therefore
//! also the most upstream connections one HTTP/2 client connection can hold at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::idle::{Activity, IdleIo};
use crate::proxy::{Connection, Proxy};

/// Limits and timeouts of client connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request head in bytes (→ 431).
    pub max_header_bytes: usize,
    /// Most header fields (→ 431).
    pub max_headers: usize,
    /// Time to receive a request head; also bounds the HTTP/1.1 keep-alive wait.
    pub header_read_timeout: Duration,
    /// No use (bytes for HTTP/1.x; request and response frames for HTTP/2) for this long
    /// closes the connection.
    pub idle_timeout: Duration,
    /// Most concurrent streams of one HTTP/2 connection (and so upstream connections).
    pub max_concurrent_streams: u32,
    /// Bound on the drain after shutdown is asked.
    pub drain_grace: Duration,
}

fn builder(cfg: &ServerConfig) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_buf_size(cfg.max_header_bytes)
        .max_headers(cfg.max_headers)
        .header_read_timeout(cfg.header_read_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .keep_alive_interval(cfg.idle_timeout / 2)
        .keep_alive_timeout(cfg.idle_timeout / 4);
    b
}

/// Accepts and serves connections until `shutdown` resolves, then drains: stops accepting,
/// lets in-flight requests finish (closing idle keep-alive connections) and upgraded
/// connections end for at most `drain_grace`, and returns the number of connections cut at
/// the deadline.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let builder = builder(&cfg);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_one(&builder, &graceful, stream, peer, &proxy, &cfg),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + cfg.drain_grace;
    let open = graceful.count();
    tracing::info!(connections = open, grace = ?cfg.drain_grace, "draining");
    let cut = match tokio::time::timeout_at(deadline, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    };
    // Upgraded connections left hyper when they switched protocols: they get what is left
    // of the grace period to end on their own.
    let tunnels = proxy.forwarder.tunnels();
    tunnels.close();
    if !tunnels.is_empty() {
        tracing::info!(tunnels = tunnels.len(), "waiting for upgraded connections");
    }
    match tokio::time::timeout_at(deadline, tunnels.wait()).await {
        Ok(()) => cut,
        Err(_) => cut + tunnels.len(),
    }
}

fn serve_one(
    builder: &Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    proxy: &Arc<Proxy>,
    cfg: &ServerConfig,
) {
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = TokioIo::new(IdleIo::new(stream, activity.clone()));
    let proxy_gauge = proxy.metrics.connections.clone();
    let proxy = proxy.clone();
    let (client_side, upstream_side) = Side::pair();
    let state = Arc::new(Connection::driven(Waker::from(upstream_side.clone())));
    let upstream = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        let state = state.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, peer, &state).await) }
    });
    let conn = builder.serve_connection_with_upgrades(io, svc).into_owned();
    let conn = graceful.watch(conn);
    // The client connection's task also drives its upstream connection.
    let conn: Served = Box::pin(conn);
    let conn = drive(conn, client_side, upstream_side, upstream);
    let idle = cfg.idle_timeout;
    let open = proxy_gauge.clone();
    open.inc();
    tokio::spawn(async move {
        tokio::select! {
            res = conn => if let Err(e) = res {
                tracing::debug!(error = %e, %peer, "client connection ended with an error");
            },
            () = activity.idle(idle) => tracing::debug!(%peer, "idle connection closed"),
        }
        open.dec();
    });
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client connection being served (its type named: the task drives it with its upstream).
type Served = std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// One side (the client connection, or its upstream connection) of a client connection's
/// task: whether it was woken since it was last polled. Its waker marks it and wakes the task,
/// unless the task is running its poll loop, which will see the mark.
struct Side {
    woken: AtomicBool,
    task: Arc<TaskWaker>,
}

/// The task both sides share.
#[derive(Default)]
struct TaskWaker {
    /// The task is in its poll loop: a side's wake needs no task wake-up.
    polling: AtomicBool,
    waker: AtomicWaker,
}

impl Side {
    /// The client side (woken: it has a request to read) and the upstream side (no
    /// connection yet) of one task.
    fn pair() -> (Arc<Self>, Arc<Self>) {
        let task = Arc::new(TaskWaker::default());
        let side = |woken| {
            Arc::new(Self {
                woken: AtomicBool::new(woken),
                task: task.clone(),
            })
        };
        (side(true), side(false))
    }
}

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, SeqCst);
        if !self.task.polling.load(SeqCst) {
            self.task.waker.wake();
        }
    }
}

/// Polls of the two sides in one poll of the task before it yields to the scheduler.
const ROUNDS: usize = 16;

/// Runs the client connection `served` and the upstream connection of `state` in one task,
/// each polled only when its own waker fired: a request handed to the upstream connection,
/// and the response handed back, wake no other task and are picked up in the same poll.
fn drive(
    mut served: Served,
    client: Arc<Side>,
    upstream: Arc<Side>,
    state: Arc<Connection>,
) -> impl Future<Output = Result<(), BoxError>> + Send {
    let task = client.task.clone();
    let client_waker = Waker::from(client.clone());
    let upstream_waker = Waker::from(upstream.clone());
    std::future::poll_fn(move |cx| {
        task.waker.register(cx.waker());
        task.polling.store(true, SeqCst);
        for _ in 0..ROUNDS {
            if client.woken.swap(false, SeqCst)
                && let Poll::Ready(out) = served
                    .as_mut()
                    .poll(&mut Context::from_waker(&client_waker))
            {
                task.polling.store(false, SeqCst);
                return Poll::Ready(out);
            }
            if upstream.woken.swap(false, SeqCst) {
                state
                    .affinity
                    .poll_upstream(&mut Context::from_waker(&upstream_waker));
            }
            if client.woken.load(SeqCst) || upstream.woken.load(SeqCst) {
                continue;
            }
            task.polling.store(false, SeqCst);
            // A wake between the checks above and the store went unseen by both: look again.
            if !(client.woken.load(SeqCst) || upstream.woken.load(SeqCst)) {
                return Poll::Pending;
            }
            task.polling.store(true, SeqCst);
        }
        // Still woken after many rounds (a long stream, or tokio's budget spent): yield,
        // and come back.
        task.polling.store(false, SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wake-ups of the task.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    /// A client side that counts its polls and answers with `answer`.
    fn served(
        polls: Arc<AtomicUsize>,
        answer: impl Fn(&mut Context<'_>) -> Poll<Result<(), BoxError>> + Send + 'static,
    ) -> Served {
        Box::pin(std::future::poll_fn(move |cx| {
            assert!(polls.fetch_add(1, SeqCst) < 1000, "the task never yields");
            answer(cx)
        }))
    }

    /// A client connection's task, polled by hand with a waker that counts its wake-ups.
    struct Task {
        fut: Served,
        woken: Arc<Count>,
        waker: Waker,
        /// The wakers of the client side and of the upstream side.
        client: Waker,
        upstream: Waker,
    }

    impl Task {
        fn new(served: Served) -> Self {
            let (client, upstream) = Side::pair();
            let (client_waker, upstream_waker) =
                (Waker::from(client.clone()), Waker::from(upstream.clone()));
            let state = Arc::new(Connection::driven(upstream_waker.clone()));
            let woken = Arc::new(Count::default());
            Self {
                fut: Box::pin(drive(served, client, upstream, state)),
                waker: Waker::from(woken.clone()),
                woken,
                client: client_waker,
                upstream: upstream_waker,
            }
        }

        fn poll(&mut self) -> Poll<Result<(), BoxError>> {
            self.fut
                .as_mut()
                .poll(&mut Context::from_waker(&self.waker))
        }

        fn wakes(&self) -> usize {
            self.woken.0.load(SeqCst)
        }
    }

    #[test]
    fn a_side_that_keeps_waking_itself_yields_to_the_scheduler() {
        // As a resource does when tokio's budget for the poll is spent: wake, and Pending.
        let polls = Arc::new(AtomicUsize::new(0));
        let mut task = Task::new(served(polls.clone(), |cx| {
            cx.waker().wake_by_ref();
            Poll::Pending
        }));
        assert!(task.poll().is_pending());
        assert_eq!(polls.load(SeqCst), ROUNDS);
        assert_eq!(task.wakes(), 1, "the task asks to run again");
        assert!(task.poll().is_pending());
        assert_eq!(polls.load(SeqCst), 2 * ROUNDS);
    }

    #[test]
    fn each_side_is_polled_only_when_its_own_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut task = Task::new(served(polls.clone(), |_| Poll::Pending));
        assert!(task.poll().is_pending());
        assert_eq!(polls.load(SeqCst), 1, "the client side starts woken");
        assert!(task.poll().is_pending());
        assert_eq!(polls.load(SeqCst), 1, "not woken, not polled");
        task.upstream.wake_by_ref();
        assert_eq!(task.wakes(), 1, "a side's wake wakes the idle task");
        assert!(task.poll().is_pending());
        assert_eq!(polls.load(SeqCst), 1, "the upstream wake polls only it");
        task.client.wake_by_ref();
        assert_eq!(task.wakes(), 2);
        assert!(task.poll().is_pending());
        assert_eq!(polls.load(SeqCst), 2);
    }

    #[test]
    fn a_wake_during_the_poll_is_taken_in_the_same_poll_without_waking_the_task() {
        // On its first poll the client side wakes the upstream side (a request handed over)
        // and itself (a response handed back).
        let polls = Arc::new(AtomicUsize::new(0));
        let upstream: Arc<std::sync::Mutex<Option<Waker>>> = Arc::default();
        let (slot, count) = (upstream.clone(), polls.clone());
        let mut task = Task::new(served(polls.clone(), move |cx| {
            if count.load(SeqCst) == 1 {
                if let Some(w) = slot.lock().expect("not poisoned").as_ref() {
                    w.wake_by_ref();
                }
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }));
        *upstream.lock().expect("not poisoned") = Some(task.upstream.clone());
        assert!(task.poll().is_pending());
        assert_eq!(
            polls.load(SeqCst),
            2,
            "woken during the poll: polled again in it"
        );
        assert_eq!(task.wakes(), 0, "no task wake-up for it");
    }

    #[test]
    fn the_client_sides_end_ends_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut task = Task::new(served(polls, |_| Poll::Ready(Ok(()))));
        assert!(matches!(task.poll(), Poll::Ready(Ok(()))));
    }
}
