//! The Palisade sidecar binary: parse and validate the configuration (exit 64 when it is
//! bad), install logging and the TLS provider, and run the proxy until SIGTERM.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use palisade_sidecar::config::Config;

fn main() -> ExitCode {
    let cfg = match Config::load() {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    palisade_sidecar::telemetry::init(&cfg.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workers = cfg.workers();
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(palisade_sidecar::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "sidecar failed");
            ExitCode::FAILURE
        }
    }
}
