//! `make up` / `make down` / `make env`: a persistent local control plane for manual use and
//! for the demo. State lives in `$PALISADE_CACHE/up/` (kubeconfig, pids, data, logs).

use std::path::PathBuf;
use std::process::ExitCode;

use palisade_e2e::{ControlPlane, StartOptions, cache_dir};

fn state_dir() -> PathBuf {
    cache_dir().join("up")
}

fn kubeconfig() -> PathBuf {
    state_dir().join("admin.kubeconfig")
}

fn running_pids() -> Vec<u32> {
    let text = std::fs::read_to_string(state_dir().join("pids")).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| alive(*p))
        .collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn up() -> Result<(), String> {
    if !running_pids().is_empty() {
        eprintln!("the local control plane is already running");
        return env();
    }
    let _stale = std::fs::remove_dir_all(state_dir());
    palisade_e2e::install_crypto_provider();
    let opts = StartOptions {
        state_dir: state_dir(),
        logs: state_dir().join("logs"),
        persistent: true,
        node: palisade_e2e::NodeMode::Off,
    };
    let cp = ControlPlane::start(opts).map_err(|e| e.to_string())?;
    let version = cp.kubectl_ok(&["version"]).map_err(|e| e.to_string())?;
    eprintln!("{version}logs: {}", state_dir().join("logs").display());
    env()
}

fn down() -> Result<(), String> {
    let pids = running_pids();
    for pid in pids.iter().rev() {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    for _ in 0..50 {
        if pids.iter().all(|p| !alive(*p)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for pid in pids.iter().filter(|p| alive(**p)) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let _gone = std::fs::remove_dir_all(state_dir());
    eprintln!("stopped the local control plane ({} processes)", pids.len());
    Ok(())
}

fn env() -> Result<(), String> {
    if running_pids().is_empty() {
        return Err("the local control plane is not running; start it with `make up`".into());
    }
    #[allow(clippy::print_stdout)]
    {
        println!("export KUBECONFIG={}", kubeconfig().display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let result = match cmd.as_str() {
        "up" => up(),
        "down" => down(),
        "env" => env(),
        _ => Err("usage: palisade-cluster up|down|env".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-cluster {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
