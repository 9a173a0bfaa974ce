//! Runs `make demo` (`scripts/demo.sh`) non-interactively against a test's control plane, and
//! checks that the story ran. Used by `e2e_demo.rs` (processes) and `e2e_node.rs` (pods).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{ControlPlane, workspace_bin};

/// How the demo ran: its output, and its state directory (logs of its processes).
#[derive(Debug)]
pub struct DemoRun {
    /// What the reader sees.
    pub stdout: String,
    /// Progress lines and errors.
    pub stderr: String,
    /// `PALISADE_DEMO_STATE`: `<process>.log`, the rendered chart, …
    pub state: tempfile::TempDir,
}

/// Runs `scripts/demo.sh` on `cp` with the binaries `cargo test` built, in `mode`
/// (`processes` or `pods`; pods need `node_dir`, the directory of `cp`'s node). Panics with
/// the output and the processes' log tails when it fails.
pub fn run(cp: &ControlPlane, mode: &str, node_dir: Option<&Path>) -> DemoRun {
    let bin_dir = workspace_bin("palisade-operator")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let state = tempfile::tempdir().expect("state dir");
    let mut cmd = Command::new("bash");
    cmd.arg(crate::repo_root().join("scripts/demo.sh"))
        .env("PALISADE_DEMO_KUBECONFIG", cp.kubeconfig())
        .env("PALISADE_DEMO_KUBECTL", cp.kubectl_path())
        .env("PALISADE_DEMO_NONINTERACTIVE", "1")
        .env("PALISADE_DEMO_PREBUILT", "1")
        .env("PALISADE_DEMO_BIN_DIR", &bin_dir)
        .env("PALISADE_DEMO_STATE", state.path())
        .env("PALISADE_DEMO_MODE", mode)
        .env_remove("PALISADE_DEMO_NODE_DIR")
        .stdin(Stdio::null());
    if let Some(dir) = node_dir {
        cmd.env("PALISADE_DEMO_NODE_DIR", dir);
    }
    let out = cmd.output().expect("run scripts/demo.sh");
    let run = DemoRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        state,
    };
    assert!(
        out.status.success(),
        "scripts/demo.sh ({mode}) failed ({}).\n--- stdout\n{}\n--- stderr\n{}\n\
         --- sidecar.log (tail)\n{}\n--- operator.log (tail)\n{}",
        out.status,
        run.stdout,
        run.stderr,
        tail(&run.log("sidecar")),
        tail(&run.log("operator")),
    );
    run
}

impl DemoRun {
    /// `<name>.log` of the state directory (empty when absent).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Every step of the story is in the output: benign 200s, the flag header at the API, a
    /// 403 from an IP list and `kubectl palisade explain` saying why, the flood as an incident and a detectedBy 403, pause/resume and
    /// the ttl expiry.
    pub fn assert_story(&self) {
        let stdout = &self.stdout;
        for want in [
            "HTTP 200",
            "x-palisade-flag",
            "suspected-scraper",
            r#"HTTP 403  {"error":"forbidden"}"#,
            "HTTP 429",
            "palisade.dev/paused=true",
            "Decision:  DENY 403 by deny-bad-ips",
            "demo complete",
        ] {
            assert!(
                stdout.contains(want),
                "no `{want}` in the demo's output:\n{stdout}"
            );
        }
        let incidents = stdout
            .split("get securityincidents\n")
            .nth(1)
            .expect("step 4 lists the incidents");
        assert!(
            incidents.starts_with("NAME ") && incidents.contains(" flooder "),
            "step 4 shows no incident of rule flooder:\n{stdout}"
        );
        assert!(
            stdout.contains(r#"HTTP 403  {"error":"forbidden","reason":"abusive"#),
            "step 4 shows no detectedBy deny:\n{stdout}"
        );
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
