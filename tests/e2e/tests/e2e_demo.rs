//! `make demo` cannot rot: runs `scripts/demo.sh` non-interactively against this process's
//! control plane (PALISADE_DEMO_KUBECONFIG) with the binaries `cargo test` built, and checks
//! that the story ran: benign 200s, the flag header at the API, a 403 from an IP list, the
//! flood detected as an incident (or the documented skip while the sidecar cannot report yet),
//! pause/resume and the ttl expiry.

use std::process::Command;

use palisade_e2e::{ControlPlane, workspace_bin};

#[test]
fn make_demo_runs_every_step_and_exits_0() {
    let cp = ControlPlane::shared();
    let bins: Vec<_> = ["palisade-operator", "palisade-sidecar", "palisade-demo-api"]
        .into_iter()
        .map(workspace_bin)
        .collect();
    let state = tempfile::tempdir().expect("state dir");
    let script = palisade_e2e::repo_root().join("scripts/demo.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("PALISADE_DEMO_KUBECONFIG", cp.kubeconfig())
        .env("PALISADE_DEMO_KUBECTL", cp.kubectl_path())
        .env("PALISADE_DEMO_NONINTERACTIVE", "1")
        .env("PALISADE_DEMO_PREBUILT", "1")
        .env("PALISADE_DEMO_BIN_DIR", bins[0].parent().expect("bin dir"))
        .env("PALISADE_DEMO_STATE", state.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs = |name: &str| {
        std::fs::read_to_string(state.path().join(format!("{name}.log"))).unwrap_or_default()
    };
    assert!(
        out.status.success(),
        "scripts/demo.sh failed ({}).\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n\
         --- sidecar.log (tail)\n{}\n--- operator.log (tail)\n{}",
        out.status,
        tail(&logs("sidecar")),
        tail(&logs("operator")),
    );
    for want in [
        "HTTP 200",
        "x-palisade-flag",
        "suspected-scraper",
        "HTTP 403",
        "HTTP 429",
        "palisade.dev/paused=true",
        "demo complete",
    ] {
        assert!(
            stdout.contains(want),
            "no `{want}` in the demo's output:\n{stdout}"
        );
    }
    let detected = stdout.contains("get securityincidents") && stdout.contains("RISK");
    let help = Command::new(&bins[1])
        .arg("--help")
        .output()
        .expect("sidecar --help");
    if String::from_utf8_lossy(&help.stdout).contains("--collector-addr") {
        assert!(
            detected && stdout.contains(r#"HTTP 403  {"error":"forbidden","reason":"abusive"#),
            "the sidecar reports to the collector, yet step 4 shows no incident and no \
             detectedBy deny:\n{stdout}"
        );
    } else {
        assert!(
            stdout.contains("skipped: this palisade-sidecar does not report traffic"),
            "step 4 shows no documented skip:\n{stdout}"
        );
    }
    for line in stdout.lines().filter(|l| l.contains("/metrics")) {
        let url = line.split_whitespace().last().unwrap_or_default();
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "the demo left a process listening on {addr} ({line})"
        );
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// README snippets come from examples/ (which the e2e suite applies), so what the README shows
/// is what is tested: every YAML document in a README code block is in one examples/ file.
#[test]
fn readme_yaml_snippets_are_copied_from_examples() {
    let root = palisade_e2e::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let examples: Vec<String> = std::fs::read_dir(root.join("examples"))
        .expect("examples/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| std::fs::read_to_string(p).expect("example"))
        .collect();
    let mut checked = 0;
    for block in readme.split("```yaml\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        for doc in block
            .split("---\n")
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            assert!(
                examples.iter().any(|e| e.contains(doc)),
                "this README snippet is not in any examples/*.yaml; copy it from there:\n{doc}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the README's recipes, found {checked} YAML snippets"
    );
}

/// The README's performance table is not written by hand: every row is a goal row of a
/// bench/results/*.md file, so it changes when `make bench` is rerun and the README is not.
#[test]
fn readme_performance_rows_are_copied_from_bench_results() {
    let root = palisade_e2e::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("## Performance\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Performance section in README.md");
    let results: String = std::fs::read_dir(root.join("bench/results"))
        .expect("bench/results/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| std::fs::read_to_string(p).expect("a result file"))
        .collect();
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| goal |"))
        .collect();
    assert!(rows.len() >= 5, "expected the goal rows, found {rows:?}");
    for row in rows {
        assert!(
            results.lines().any(|l| l == row),
            "README row not in any bench/results/*.md (rerun make bench, copy the row):\n{row}"
        );
    }
}
