//! Finds, or builds, the control-plane binaries with `tests/e2e/controlplane/build.sh`.

use std::path::PathBuf;
use std::process::Command;

use crate::Error;

/// `$PALISADE_CACHE`, default `~/.cache/palisade`: built binaries, logs, `make up` state.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PALISADE_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("palisade")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("controlplane")
        .join("build.sh")
}

/// Runs the builder (a no-op when the binaries are up to date) and returns their directory.
pub fn ensure_built() -> Result<PathBuf, Error> {
    run_builder(&[])
}

/// [`ensure_built`] plus the node's binaries (`build.sh --node`).
pub fn ensure_built_with_node() -> Result<PathBuf, Error> {
    run_builder(&["--node"])
}

fn run_builder(args: &[&str]) -> Result<PathBuf, Error> {
    let script = script();
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .env("PALISADE_CACHE", cache_dir())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::io("run", &script, e))?;
    if !out.status.success() {
        return Err(Error::Build(format!(
            "{} exited with {}",
            script.display(),
            out.status
        )));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(dir))
}

/// The binary directory when a build exists, without building.
pub fn bin_dir_if_built() -> Option<PathBuf> {
    let bins = cache_dir().join("bin");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(bins)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| d.join("kubectl").is_file())
}
