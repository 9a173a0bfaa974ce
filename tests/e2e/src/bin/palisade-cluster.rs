//! `make up` / `make down` / `make env`: a persistent local control plane for manual use and
//! for the demo. State lives in `$PALISADE_CACHE/up/` (kubeconfig, pids, data, logs).
//!
//! `PALISADE_NODE=auto|on` (default `off`) also starts the one-node cluster (docs/node.md);
//! `palisade-cluster image REF BINARY` then imports an image of BINARY into it (or into the
//! node at `PALISADE_NODE_DIR`); `palisade-cluster node-dir` prints where that node lives.

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
        node: node_mode()?,
    };
    let cp = ControlPlane::start(opts).map_err(|e| e.to_string())?;
    let version = cp.kubectl_ok(&["version"]).map_err(|e| e.to_string())?;
    eprintln!("{version}logs: {}", state_dir().join("logs").display());
    match cp.node() {
        Ok(n) => eprintln!(
            "node {} Ready in {:.1}s (pods: 198.18.0.0/24, Services: 198.19.0.0/24)",
            palisade_e2e::node::NODE_NAME,
            n.started_in.as_secs_f64()
        ),
        Err(why) => eprintln!("no node: {why}"),
    }
    env()
}

/// `PALISADE_NODE`: `make up` starts no node unless asked.
fn node_mode() -> Result<palisade_e2e::NodeMode, String> {
    use palisade_e2e::NodeMode;
    match std::env::var("PALISADE_NODE").as_deref() {
        Err(_) | Ok("" | "off") => Ok(NodeMode::Off),
        Ok("auto") => Ok(NodeMode::Auto),
        Ok("on") => Ok(NodeMode::On),
        Ok(other) => Err(format!("PALISADE_NODE={other}: expected auto, on or off")),
    }
}

/// Imports an image of `binary` into `make up`'s node, or into the node at
/// `PALISADE_NODE_DIR` (a test's node). An image already there under `reference` is kept:
/// give a new tag to a new build (`make demo` tags with the binary's hash).
fn image(reference: &str, binary: &str) -> Result<(), String> {
    let node = match std::env::var_os("PALISADE_NODE_DIR") {
        Some(dir) => palisade_e2e::Node::at(std::path::Path::new(&dir)).ok_or_else(|| {
            format!(
                "PALISADE_NODE_DIR={}: no running node there (no containerd socket)",
                dir.to_string_lossy()
            )
        })?,
        None => {
            if running_pids().is_empty() {
                return Err(
                    "the local control plane is not running; start it with `make up`".into(),
                );
            }
            palisade_e2e::Node::existing(&state_dir())
                .ok_or("`make up` runs no node: start it with PALISADE_NODE=on make up")?
        }
    };
    if node.has_image(reference).map_err(|e| e.to_string())? {
        eprintln!("{reference} is already imported");
        return Ok(());
    }
    node.import_binary(reference, std::path::Path::new(binary))
        .map_err(|e| e.to_string())?;
    eprintln!("imported {reference} (pods: image: {reference}, imagePullPolicy: Never)");
    Ok(())
}

/// Prints the directory of `make up`'s node; fails when it runs none.
fn node_dir() -> Result<(), String> {
    if running_pids().is_empty() {
        return Err("the local control plane is not running; start it with `make up`".into());
    }
    let node = palisade_e2e::Node::existing(&state_dir())
        .ok_or("`make up` runs no node: start it with PALISADE_NODE=on make up")?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", node.dir().display());
    }
    Ok(())
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
    let cleanup = state_dir().join("node-cleanup.sh");
    if cleanup.is_file() {
        let _best_effort = std::process::Command::new("sh").arg(&cleanup).status();
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
        "image" => match (std::env::args().nth(2), std::env::args().nth(3)) {
            (Some(r), Some(b)) => image(&r, &b),
            _ => Err("usage: palisade-cluster image REFERENCE BINARY".into()),
        },
        "node-dir" => node_dir(),
        _ => Err("usage: palisade-cluster up|down|env|node-dir|image REFERENCE BINARY".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-cluster {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
