//! The one way e2e tests wait: poll until a condition holds, with a patience set once for
//! the whole suite.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`eventually`] waits: `PALISADE_E2E_PATIENCE` seconds, default 30.
pub fn patience() -> Duration {
    let secs = std::env::var("PALISADE_E2E_PATIENCE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Polls `check` every 100 ms until it returns `Ok`, and returns its value. Panics after
/// [`patience`] with `what`, the last error, and where the control-plane logs are.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(1, what, check).await
}

/// [`eventually`] with a patience of `times` × [`patience`], for the few waits that do
/// heavy work (a million-prefix compile in a debug build).
pub async fn eventually_within<T, F, Fut>(times: u32, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let limit = patience() * times;
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                // The logs of the control planes this process started (never starts one).
                let logs = crate::controlplane::started_logs()
                    .iter()
                    .map(|p| format!("; control-plane logs: {}", p.display()))
                    .collect::<String>();
                panic!("gave up waiting for {what} after {limit:?}: {last}{logs}");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
