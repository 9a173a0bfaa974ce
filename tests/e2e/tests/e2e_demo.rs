//! `make demo` cannot rot: runs `scripts/demo.sh` non-interactively against this process's
//! control plane (PALISADE_DEMO_KUBECONFIG) with the binaries `cargo test` built, its
//! processes wired like an injected pod, and checks that the story ran: benign 200s, the flag
//! header at the API, a 403 from an IP list, the flood detected as an incident and denied,
//! pause/resume and the ttl expiry. The same demo on real pods: `e2e_node.rs`.

use palisade_e2e::ControlPlane;

#[test]
fn make_demo_runs_every_step_and_exits_0() {
    let cp = ControlPlane::shared();
    let run = palisade_e2e::demo::run(cp, "processes", None);
    run.assert_story();
    for line in run.stdout.lines().filter(|l| l.contains("/metrics")) {
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
