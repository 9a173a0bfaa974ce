//! Starting the control-plane processes with their output in log files, waiting for them,
//! and making sure they are stopped when the test process ends.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// A started component: its process and where its output goes.
#[derive(Debug)]
pub struct Component {
    /// etcd, kube-apiserver, …
    pub name: &'static str,
    /// The running process.
    pub child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Component {
    /// Starts `bin` with `args`, stdout and stderr appended to `<logs>/<name>.log`.
    pub fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[String],
        logs: &Path,
    ) -> Result<Self, Error> {
        Self::spawn_env(name, bin, args, logs, &[], None)
    }

    /// [`Component::spawn`] with extra environment variables, and `stdin` (a lock file the
    /// process then holds for its whole life) instead of /dev/null.
    pub fn spawn_env(
        name: &'static str,
        bin: &Path,
        args: &[String],
        logs: &Path,
        env: &[(&str, &str)],
        stdin: Option<&File>,
    ) -> Result<Self, Error> {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| Error::io("create log", &log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("open log", &log, e))?;
        let stdin = match stdin {
            Some(f) => Stdio::from(f.try_clone().map_err(|e| Error::io("share", &log, e))?),
            None => Stdio::null(),
        };
        let child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::io("start", bin, e))?;
        Ok(Self { name, child, log })
    }

    /// Polls `ready` every 200 ms for up to `patience`; fails early, with the end of the
    /// component's log, if the process exits.
    pub fn wait_ready(
        &mut self,
        patience: Duration,
        mut ready: impl FnMut() -> Result<(), String>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + patience;
        loop {
            let last = match ready() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.not_ready(format!("exited with {status}; {}", tail(&self.log))));
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!("not ready after {patience:?}: {last}")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn not_ready(&self, detail: String) -> Error {
        Error::NotReady {
            component: self.name,
            detail,
            log: self.log.clone(),
        }
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    format!(
        "last lines of {}:\n{}",
        log.display(),
        lines[from..].join("\n")
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
/// out before (the kernel may offer a just-released port again before its user binds it).
pub fn free_port() -> Result<u16, Error> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let addr = Path::new("127.0.0.1:0");
    loop {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind", addr, e))?;
        let port = l
            .local_addr()
            .map_err(|e| Error::io("bind", addr, e))?
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// A plain-HTTP GET on loopback, returning the body (for etcd's `/health`).
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Starts a shell that waits for this process to end, then stops `pids` (TERM, then KILL)
/// and removes `dir`. Statics are never dropped, so this is how a control plane shared by a
/// whole `cargo test` process is cleaned up, even when tests panic.
pub fn reap_on_exit(pids: &[u32], dir: &Path) -> Result<(), Error> {
    reap_on_exit_then(pids, dir, "true", None)
}

/// [`reap_on_exit`] that also runs `cleanup` (shell) after the processes are gone and before
/// `dir` is removed. `lock` (the node lock) is handed to the reaper as its stdin, so the lock
/// stays held until the cleanup is done.
pub fn reap_on_exit_then(
    pids: &[u32],
    dir: &Path,
    cleanup: &str,
    lock: Option<&File>,
) -> Result<(), Error> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let pids = pids.join(" ");
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill {pids} 2>/dev/null; \
         for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 {pids} 2>/dev/null || break; sleep 0.5; done; \
         kill -9 {pids} 2>/dev/null; {cleanup}; rm -rf '{dir}'",
        me = std::process::id(),
        dir = dir.display()
    );
    let stdin = match lock {
        Some(f) => Stdio::from(f.try_clone().map_err(|e| Error::io("share", dir, e))?),
        None => Stdio::null(),
    };
    Command::new("sh")
        .args(["-c", &script])
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io("start reaper", Path::new("sh"), e))?;
    Ok(())
}

/// Stops `pids` now (TERM, then KILL after 5 s) and runs `cleanup` (shell); for a node that
/// failed to start under `PALISADE_E2E_NODE=on`.
pub fn reap_now(pids: &[u32], cleanup: &str) {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let pids = pids.join(" ");
    let script = format!(
        "kill {pids} 2>/dev/null; \
         for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 {pids} 2>/dev/null || break; sleep 0.5; done; \
         kill -9 {pids} 2>/dev/null; {cleanup}"
    );
    let _best_effort = Command::new("sh").args(["-c", &script]).status();
}
