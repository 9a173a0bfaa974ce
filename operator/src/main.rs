//! The Palisade operator: compiles SecurityActions and DetectionRules into policy bundles,
//! injects the sidecar into API pods, and runs the detection collector.
#![forbid(unsafe_code)]

mod admin;
mod args;
mod blast;
mod collector;
mod context;
mod injector;
mod kube_requests;
mod leader;
mod metrics;
mod policy;
mod replay_cli;
mod run;
mod signing;
mod watch_one;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("replay") {
        return replay_cli::main(&argv[1..]).await;
    }
    let args = args::Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("palisade-operator: {e}");
        return std::process::ExitCode::from(64);
    }
    args.init_tracing();
    let _already = rustls::crypto::ring::default_provider().install_default();
    match run::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
