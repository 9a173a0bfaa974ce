//! A link the test can cut: a TCP proxy on loopback in front of a server (the API server),
//! so that a process of the test loses it as when the API server is stopped, with no change
//! to the shared control plane the other tests use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy to `upstream`; [`Link::cut`] drops every connection and refuses new ones until
/// [`Link::restore`].
#[derive(Debug)]
pub struct Link {
    /// Its port on 127.0.0.1.
    pub port: u16,
    cut: Arc<AtomicBool>,
    changes: watch::Sender<bool>,
    accepted: Arc<AtomicU64>,
}

impl Link {
    /// Starts the proxy to `host:port`.
    pub async fn to(host: &str, port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the link");
        let local = listener.local_addr().expect("local address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let (changes, _) = watch::channel(false);
        let upstream = format!("{host}:{port}");
        let accepted = Arc::new(AtomicU64::new(0));
        let (flag, tx, count) = (cut.clone(), changes.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let (upstream, mut cut_rx) = (upstream.clone(), tx.subscribe());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self {
            port: local,
            cut,
            changes,
            accepted,
        }
    }

    /// How many connections it has let through so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Drops the connections through the link and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.changes.send_replace(true);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.changes.send_replace(false);
    }
}
