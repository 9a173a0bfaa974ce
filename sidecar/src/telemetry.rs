//! Logging setup: `RUST_LOG`-style filter (default `info`), JSON or plain lines on stderr.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        // Colours only on a terminal: not in `kubectl logs` or a log file.
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
