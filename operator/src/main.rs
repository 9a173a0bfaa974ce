//! The `palisade-operator` binary: parses its flags and runs the operator (the library of
//! this package), or `palisade-operator replay`.
#![forbid(unsafe_code)]

use clap::Parser;
use palisade_operator::{args, replay_cli, run};

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
