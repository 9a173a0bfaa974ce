//! What the README and docs/ show is what works: every shell command in a `console`/`sh`
//! block and every manifest in a `yaml` block is run against the real control plane.
//!
//! - `kubectl` commands run as written, in a scratch namespace standing in for the docs'
//!   `prod`/`shop`/`demo` (set as the kubeconfig's current namespace, so commands without
//!   `-n` land there too), after the examples are applied there and with an operator running
//!   (leader of the `palisade-operator` Lease the docs query). `delete` commands (uninstall
//!   steps) run with `--dry-run=server`; watches (`-w`) run once without the watch.
//! - Output the docs show under a command is checked where it is deterministic: the column
//!   headers of `kubectl get`, a digest printed by `sha256sum`.
//! - `helm install/upgrade` are checked as `helm template | kubectl apply --dry-run=server`
//!   (a real install and uninstall run in e2e_chart.rs).
//! - Manifests with `namespace: prod` (or `argocd`) are applied in the scratch namespace.
//! - `make <target>` must name a Makefile target; `python3 bench/bench.py <step>` a step.
//! - Complete manifests are applied with server-side dry-run and strict field validation;
//!   fragments (`spec:`, `conditions:`, an incident `status:`) are applied inside the object
//!   they belong to.
//!
//! A command that cannot run here (it needs a running pod, or a Helm release) is listed in
//! [`ELSEWHERE`] with the test that covers it, and that test must contain the named check; an
//! entry that matches no command fails the test, so the list cannot go stale.

use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_e2e::{ControlPlane, OPERATOR_NS, Operator, TempNs, eventually, scope};

/// Commands covered by another test: (substring of the command, why, test file, what that
/// test must contain).
const ELSEWHERE: &[(&str, &str, &str, &str)] = &[
    (
        "palisade incident apply",
        "needs an incident with a proposed action, which only detection writes; \
         e2e_kubectl_plugin.rs applies one with and without --dry-run",
        "tests/e2e/tests/e2e_kubectl_plugin.rs",
        "\"--dry-run\"",
    ),
    (
        "palisade replay",
        "needs the replay sample of sidecar traffic; e2e_evidence.rs sends traffic through a \
         sidecar and replays it with the plugin",
        "tests/e2e/tests/e2e_evidence.rs",
        "\"--since\"",
    ),
    (
        "get posture",
        "shows findings once the leader's posture check ran on pods and Services made for it; \
         e2e_posture.rs reads the table and applies the offered NetworkPolicy this way",
        "tests/e2e/tests/e2e_posture.rs",
        "go-template={{range .status.findings}}{{with .networkPolicy}}{{.}}{{end}}{{end}}",
    ),
    (
        "kubectl logs deploy/web",
        "needs a pod running on a node; the sidecar's decision log line is checked by the \
         sidecar's process tests",
        "sidecar/tests/process.rs",
        "palisade::decision",
    ),
    (
        "get mutatingwebhookconfiguration palisade-injector",
        "exists once the chart is installed; e2e_chart.rs installs it and waits for the \
         operator to set caBundle",
        "tests/e2e/tests/e2e_chart.rs",
        "caBundle",
    ),
    (
        "helm uninstall palisade",
        "needs an installed release; e2e_chart.rs runs helm install then helm uninstall",
        "tests/e2e/tests/e2e_chart.rs",
        "\"uninstall\"",
    ),
    (
        "get configmap palisade-detected",
        "exists once a client is detected; e2e_detection.rs reads it after a flood",
        "tests/e2e/tests/e2e_detection.rs",
        "palisade-detected",
    ),
    (
        "get lease palisade-operator-shard-3",
        "exists once an operator runs with --collector-shards above 3; e2e_shards.rs reads \
         every shard Lease's holder and advertised endpoint",
        "tests/e2e/tests/e2e_shards.rs",
        "{lease}-shard-{shard}",
    ),
    (
        "get configmap palisade-collector-state",
        "written once a leader persists the collector's state; e2e_failover.rs reads its \
         annotations before the failover",
        "tests/e2e/tests/e2e_failover.rs",
        "taken-by",
    ),
];

/// Namespaces the docs use for the user's application.
const APP_NAMESPACES: &[&str] = &["prod", "shop", "demo"];

#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    lang: String,
    body: String,
}

fn doc_files() -> Vec<PathBuf> {
    let root = palisade_e2e::repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn blocks() -> Vec<Block> {
    let root = palisade_e2e::repo_root();
    let mut out = vec![];
    for path in doc_files() {
        let text = std::fs::read_to_string(&path).expect("a doc");
        let file = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let mut open: Option<(usize, String, String)> = None;
        for (i, line) in text.lines().enumerate() {
            let fence = line.trim_start();
            match (&mut open, fence.strip_prefix("```")) {
                (None, Some(lang)) => open = Some((i + 1, lang.trim().to_owned(), String::new())),
                (Some(_), Some(_)) => {
                    let (line, lang, body) = open.take().expect("open block");
                    out.push(Block {
                        file: file.clone(),
                        line,
                        lang,
                        body,
                    });
                }
                (Some((_, _, body)), None) => {
                    body.push_str(line);
                    body.push('\n');
                }
                (None, None) => {}
            }
        }
    }
    out
}

/// A command shown in a doc, with the output lines shown under it.
#[derive(Debug)]
struct Shown {
    at: String,
    cmd: String,
    output: Vec<String>,
}

/// Strips a trailing `# comment` (two spaces or more before the `#`).
fn uncomment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'#' && i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            return line[..i].trim_end();
        }
    }
    line.trim_end()
}

fn commands(b: &Block) -> Vec<Shown> {
    let prompted = b.body.lines().any(|l| l.trim_start().starts_with("$ "));
    let mut out: Vec<Shown> = vec![];
    let mut continuing = false;
    for (i, raw) in b.body.lines().enumerate() {
        let at = format!("{}:{}", b.file, b.line + 1 + i);
        let line = raw.trim_start();
        if continuing {
            let last = out.last_mut().expect("a command to continue");
            last.cmd.push('\n');
            last.cmd.push_str(uncomment(raw));
            continuing = line.ends_with('\\') || (last.cmd.starts_with("for ") && line != "done");
            continue;
        }
        let cmd = if prompted {
            line.strip_prefix("$ ")
        } else {
            Some(line).filter(|l| !l.is_empty() && !l.starts_with('#'))
        };
        match cmd {
            Some(cmd) => {
                let cmd = uncomment(cmd).to_owned();
                continuing = cmd.ends_with('\\') || (cmd.starts_with("for ") && cmd != "done");
                out.push(Shown {
                    at,
                    cmd,
                    output: vec![],
                });
            }
            None if !line.is_empty() => {
                if let Some(last) = out.last_mut() {
                    last.output.push(line.to_owned());
                }
            }
            None => {}
        }
    }
    out
}

struct Env {
    cp: &'static ControlPlane,
    ns: String,
    kubeconfig: PathBuf,
    path: String,
    /// Shell variables the docs set (`API_KEY=...`), exported to the commands after them.
    vars: std::cell::RefCell<Vec<(String, String)>>,
}

impl Env {
    /// The command as it runs here: app namespaces replaced by the scratch one.
    fn localize(&self, cmd: &str) -> String {
        let mut words: Vec<String> = cmd.split(' ').map(str::to_owned).collect();
        for w in &mut words {
            if APP_NAMESPACES.contains(&w.as_str()) {
                w.clone_from(&self.ns);
            }
        }
        words.join(" ")
    }

    fn bash(&self, script: &str) -> std::process::Output {
        Command::new("bash")
            .args(["-c", script])
            .current_dir(palisade_e2e::repo_root())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path)
            .envs(self.vars.borrow().iter().cloned())
            .output()
            .expect("bash")
    }

    fn run_ok(&self, shown: &Shown, script: &str) -> Result<String, String> {
        let out = self.bash(script);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{}: `{}` (run as `{script}`) failed: {}{}",
                shown.at,
                shown.cmd,
                String::from_utf8_lossy(&out.stderr),
                stdout
            ))
        }
    }
}

/// The column names of a `kubectl get` header line (two or more spaces separate columns).
fn columns(header: &str) -> Vec<String> {
    header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn check_command(env: &Env, shown: &Shown, skipped: &mut Vec<String>) -> Result<(), String> {
    let root = palisade_e2e::repo_root();
    let cmd = shown.cmd.as_str();
    if let Some((needle, why, file, must)) = ELSEWHERE.iter().find(|e| cmd.contains(e.0)) {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        if !text.contains(must) {
            return Err(format!(
                "{}: `{needle}` is said to be covered by {file}, which has no `{must}`",
                shown.at
            ));
        }
        skipped.push(format!("{}: `{cmd}`: {why}", shown.at));
        return Ok(());
    }
    let words: Vec<&str> = cmd.split_whitespace().collect();
    // Leading VAR=value assignments (`BENCH_QUICK=1 make bench`).
    let first = words
        .iter()
        .position(|w| !w.contains('=') || w.starts_with('-'))
        .unwrap_or(0);
    if words.iter().all(|w| w.contains('=') && !w.starts_with('-')) {
        for w in &words {
            let (k, v) = w.split_once('=').expect("an assignment");
            env.vars.borrow_mut().push((k.to_owned(), v.to_owned()));
        }
        return Ok(());
    }
    let words = &words[first..];
    match words.first().copied().unwrap_or_default() {
        "make" => {
            let makefile = std::fs::read_to_string(root.join("Makefile")).expect("Makefile");
            for target in &words[1..] {
                if !makefile
                    .lines()
                    .any(|l| l.starts_with(&format!("{target}:")))
                {
                    return Err(format!("{}: no Makefile target `{target}`", shown.at));
                }
            }
            Ok(())
        }
        "python3" if words.get(1) == Some(&"bench/bench.py") => {
            let bench = std::fs::read_to_string(root.join("bench/bench.py")).expect("bench.py");
            let arg = words.get(2).copied().unwrap_or("all");
            for step in arg.split('|') {
                if !bench.contains(&format!("\"{step}\"")) {
                    return Err(format!("{}: bench.py has no step `{step}`", shown.at));
                }
            }
            Ok(())
        }
        "palisade-loadgen" => {
            // `palisade-loadgen <command>`: a command of the CLI (its clap subcommands).
            let src =
                std::fs::read_to_string(root.join("bench/loadgen/src/bin/palisade-loadgen.rs"))
                    .expect("palisade-loadgen.rs");
            let sub = words.get(1).copied().unwrap_or_default();
            let variant: String = sub
                .split('-')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect();
            if sub.is_empty() || !src.contains(&format!("    {variant} {{")) {
                return Err(format!(
                    "{}: palisade-loadgen has no `{sub}` command",
                    shown.at
                ));
            }
            Ok(())
        }
        "cargo" if words.get(1) == Some(&"build") => {
            // `cargo build -p <package>`: the package is one of the workspace's.
            for pkg in words.windows(2).filter(|w| w[0] == "-p").map(|w| w[1]) {
                let manifest = format!("name = \"{pkg}\"");
                let workspace =
                    std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
                let members = workspace
                    .split("members = [")
                    .nth(1)
                    .and_then(|m| m.split(']').next())
                    .unwrap_or_default();
                let found = members.split('"').skip(1).step_by(2).any(|m| {
                    std::fs::read_to_string(root.join(m).join("Cargo.toml"))
                        .is_ok_and(|t| t.contains(&manifest))
                });
                if !found {
                    return Err(format!("{}: no workspace package `{pkg}`", shown.at));
                }
            }
            Ok(())
        }
        w if w.ends_with("/palisade-cluster") => {
            let src = std::fs::read_to_string(root.join("tests/e2e/src/bin/palisade-cluster.rs"))
                .expect("palisade-cluster.rs");
            let sub = words.get(1).copied().unwrap_or_default();
            if !src.contains(&format!("\"{sub}\" =>")) {
                return Err(format!(
                    "{}: palisade-cluster has no `{sub}` command",
                    shown.at
                ));
            }
            Ok(())
        }
        "export" => {
            let value = words[1].split_once('=').map(|x| x.1).unwrap_or_default();
            if words[1].starts_with("KUBECONFIG=")
                && !value.ends_with("palisade/up/admin.kubeconfig")
            {
                return Err(format!(
                    "{}: `make up` writes .../palisade/up/admin.kubeconfig, not {value}",
                    shown.at
                ));
            }
            Ok(())
        }
        "curl" => {
            // The demo's sidecar admin port.
            let demo = std::fs::read_to_string(root.join("scripts/demo.sh")).expect("demo.sh");
            let port = cmd
                .split("127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or_default();
            if !demo.contains(&format!("pick_port SC_ADMIN {port}")) {
                return Err(format!(
                    "{}: the demo's sidecar admin port is not {port}",
                    shown.at
                ));
            }
            Ok(())
        }
        "printf" => {
            let out = env.run_ok(shown, cmd)?;
            let want = shown.output.join("\n");
            if out.trim() != want.trim() {
                return Err(format!(
                    "{}: `{cmd}` prints {out:?}, the doc shows {want:?}",
                    shown.at
                ));
            }
            Ok(())
        }
        "for" => {
            let out = env.run_ok(shown, cmd)?;
            let doc: serde_yaml::Value = serde_yaml::from_str(&out)
                .map_err(|e| format!("{}: the loop's output is not YAML: {e}\n{out}", shown.at))?;
            let map = doc.as_mapping().map(|m| m.len()).unwrap_or_default();
            if map != 3 || out.matches("return hs").count() < 3 {
                return Err(format!(
                    "{}: expected three health.lua entries, got:\n{out}",
                    shown.at
                ));
            }
            Ok(())
        }
        "helm" => {
            // `helm install|upgrade RELEASE CHART ...`: what the release would create, checked
            // by the API server (server-side dry-run). A real install runs in e2e_chart.rs;
            // here the e2e suite's own operator RBAC already holds the release's names.
            let release = words.get(2).copied().unwrap_or_default();
            let chart = words.get(3).copied().unwrap_or_default();
            let ns = words
                .windows(2)
                .find(|w| w[0] == "-n")
                .map_or("default", |w| w[1]);
            let version: serde_json::Value = env
                .cp
                .kubectl_ok(&["version", "-o", "json"])
                .ok()
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default();
            let v = version["serverVersion"]["gitVersion"]
                .as_str()
                .unwrap_or("v1.36.3");
            let script = format!(
                "helm template {release} {chart} -n {ns} --kube-version {v} | kubectl apply \
                 --server-side --force-conflicts --dry-run=server -n {ns} -f -"
            );
            env.run_ok(shown, &script).map(drop)
        }
        w if w == "kubectl" || w.ends_with("/kubectl") => check_kubectl(env, shown),
        other => Err(format!(
            "{}: no rule for commands starting with `{other}` — teach docs_snippets.rs to \
             run it",
            shown.at
        )),
    }
}

fn check_kubectl(env: &Env, shown: &Shown) -> Result<(), String> {
    let mut cmd = env.localize(&shown.cmd);
    if let Some(rest) = cmd.strip_prefix("~/.cache/palisade/bin/v1.36.3/kubectl") {
        let real = env.cp.kubectl_path().display().to_string();
        if !real.ends_with("bin/v1.36.3/kubectl") {
            return Err(format!("{}: kubectl is at {real} now", shown.at));
        }
        cmd = format!("kubectl{rest}");
    }
    cmd = cmd.replace(" -w", "");
    cmd = cmd.replace("securityincident/<name>", "securityincident/flood-7f9c2e");
    if let Some((head, _)) = cmd.split_once(" | ") {
        // The head of a pipeline must succeed on its own; `grep` may then find nothing.
        let out = env.bash(head);
        if !out.status.success() {
            return Err(format!(
                "{}: `{head}` failed:\n{}",
                shown.at,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    if cmd.contains(" rollout restart ") {
        // kubectl refuses two restarts of one Deployment within a second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let destructive = cmd.contains(" delete ");
    if destructive {
        // Uninstall steps: checked by the API server without deleting what other tests use.
        let head_end = cmd.find(" | ").unwrap_or(cmd.len());
        cmd.insert_str(head_end, " --dry-run=server");
    }
    let out = env.bash(&cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // What is deleted may not exist here (the chart's webhook configuration).
    let allowed_missing = destructive && stderr.contains("NotFound");
    // A pipeline ending in grep that finds nothing exits 1; kubectl's own failure shows on
    // stderr.
    let grep_found_nothing = cmd.contains("| grep") && out.status.code() == Some(1);
    if !(out.status.success() || allowed_missing || grep_found_nothing) {
        return Err(format!(
            "{}: `{}` (run as `{cmd}`) failed:\n{stderr}{stdout}",
            shown.at, shown.cmd
        ));
    }
    if let Some(header) = shown.output.first().filter(|h| h.starts_with("NAME ")) {
        let real = stdout.lines().next().unwrap_or_default();
        if columns(header) != columns(real) {
            return Err(format!(
                "{}: `{}` shows columns {:?}; kubectl prints {:?}",
                shown.at,
                shown.cmd,
                columns(header),
                columns(real)
            ));
        }
    }
    Ok(())
}

/// The manifests the docs name, applied so the commands find what they refer to.
fn setup(env: &Env) {
    let cp = env.cp;
    let root = palisade_e2e::repo_root();
    for f in std::fs::read_dir(root.join("examples")).expect("examples/") {
        let p = f.expect("entry").path();
        if p.extension().is_some_and(|x| x == "yaml") {
            cp.kubectl_ok(&[
                "apply",
                "--server-side",
                "-n",
                &env.ns,
                "-f",
                &p.to_string_lossy(),
            ])
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  \
                      replicas: 1\n  selector: {matchLabels: {app: api}}\n  template:\n    \
                      metadata: {labels: {app: api}}\n    spec:\n      containers: [{name: api, \
                      image: example.invalid/api:1}]\n";
    cp.apply(&env.ns, deployment).expect("Deployment api");
    let incident = "apiVersion: palisade.dev/v1alpha1\nkind: SecurityIncident\nmetadata: \
                    {name: flood-7f9c2e}\nspec: {}\n";
    cp.apply(&env.ns, incident)
        .expect("SecurityIncident flood-7f9c2e");
}

/// Applies a YAML block: complete objects with server-side dry-run, fragments inside the
/// object they belong to.
fn check_yaml(env: &Env, b: &Block, skipped: &mut Vec<String>) -> Result<(), String> {
    let at = format!("{}:{}", b.file, b.line);
    let mut body = b.body.clone();
    for ns in APP_NAMESPACES.iter().chain(&["argocd"]) {
        for end in ["\n", "}", ","] {
            body = body.replace(
                &format!("namespace: {ns}{end}"),
                &format!("namespace: {}{end}", env.ns),
            );
        }
    }
    let docs: Vec<&str> = body
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    for doc in docs {
        let value: serde_yaml::Value =
            serde_yaml::from_str(doc).map_err(|e| format!("{at}: not YAML: {e}\n{doc}"))?;
        let kind = value["kind"].as_str().unwrap_or_default();
        let api = value["apiVersion"].as_str().unwrap_or_default();
        let (manifest, subresource) = if !kind.is_empty() {
            if api.starts_with("argoproj.io/") {
                // No Argo CD CRDs in the test cluster; the health checks it installs are
                // tested by argocd_health.rs, the Application's shape by YAML parsing here.
                skipped.push(format!("{at}: {kind}: Argo CD is not installed here"));
                continue;
            }
            (doc.to_owned(), None)
        } else if value.get("spec").is_some() {
            (
                format!(
                    "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: \
                     {{name: docs-fragment}}\n{doc}"
                ),
                None,
            )
        } else if value.get("conditions").is_some() {
            let indented: String = doc.lines().map(|l| format!("  {l}\n")).collect();
            (
                format!(
                    "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: \
                     {{name: docs-fragment}}\nspec:\n  deny: {{status: 403}}\n{indented}"
                ),
                None,
            )
        } else if value.get("status").is_some() {
            (
                format!(
                    "apiVersion: palisade.dev/v1alpha1\nkind: SecurityIncident\nmetadata: \
                     {{name: flood-7f9c2e}}\n{doc}"
                ),
                Some("status"),
            )
        } else {
            return Err(format!(
                "{at}: a YAML fragment this test cannot place; start it with spec:, conditions: \
                 or status:, or show the whole object:\n{doc}"
            ));
        };
        let mut args = vec!["apply", "--server-side", "--validate=strict", "-n", &env.ns];
        match subresource {
            // The status of the incident made by setup(), for real: the field manager is ours.
            Some(sub) => args.extend(["--subresource", sub, "--force-conflicts"]),
            None => args.push("--dry-run=server"),
        }
        args.extend(["-f", "-"]);
        env.cp
            .kubectl_stdin(&args, &manifest)
            .map_err(|e| format!("{at}: the API server rejects it: {e}\n{manifest}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn every_command_and_manifest_in_the_docs_works() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let _ = cp.kubectl_ok(&["create", "namespace", OPERATOR_NS]);
    let ns = TempNs::new(cp, "docs").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::copy(cp.kubeconfig(), &kubeconfig).expect("copy kubeconfig");
    let kc = kubeconfig.to_string_lossy().into_owned();
    cp.kubectl_ok(&[
        "--kubeconfig",
        &kc,
        "config",
        "set-context",
        "--current",
        "--namespace",
        ns.name(),
    ])
    .expect("set the current namespace");
    let bin_dir = |p: &Path| p.parent().expect("bin dir").display().to_string();
    // kubectl and, for `kubectl palisade`, the plugin of this workspace.
    let path = format!(
        "{}:{}:{}",
        bin_dir(cp.kubectl_path()),
        bin_dir(&palisade_e2e::workspace_bin("kubectl-palisade")),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = Env {
        cp,
        ns: ns.name().to_owned(),
        kubeconfig,
        path,
        vars: std::cell::RefCell::default(),
    };
    setup(&env);
    let _operator = Operator::start(cp, "docs", "palisade-operator", &scope(&ns));
    eventually(
        "the docs' operator to lead Lease palisade-operator",
        || async {
            let holder = cp
                .kubectl_ok(&[
                    "-n",
                    OPERATOR_NS,
                    "get",
                    "lease",
                    "palisade-operator",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ])
                .map_err(|e| e.to_string())?;
            (holder == "docs").then_some(()).ok_or(holder)
        },
    )
    .await;

    // `kubectl palisade explain` reads the namespace's bundle.
    eventually("the docs' namespace to have its bundle", || async {
        cp.kubectl_ok(&["-n", ns.name(), "get", "configmap", "palisade-bundle"])
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let mut failures = vec![];
    let mut skipped = vec![];
    let mut ran = 0;
    for b in blocks() {
        match b.lang.as_str() {
            "console" | "sh" => {
                for shown in commands(&b) {
                    ran += 1;
                    if let Err(e) = check_command(&env, &shown, &mut skipped) {
                        failures.push(e);
                    }
                }
            }
            "yaml" => {
                ran += 1;
                if let Err(e) = check_yaml(&env, &b, &mut skipped) {
                    failures.push(e);
                }
            }
            _ => {}
        }
    }
    for (needle, ..) in ELSEWHERE {
        if !skipped.iter().any(|s| s.contains(needle)) {
            failures.push(format!(
                "ELSEWHERE entry `{needle}` matches no command in the docs"
            ));
        }
    }
    eprintln!(
        "docs_snippets: {ran} commands and manifests checked; not run here:\n  {}",
        skipped.join("\n  ")
    );
    assert!(ran >= 40, "expected the docs' commands, found {ran}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn commands_are_read_the_way_a_reader_sees_them() {
    let b = Block {
        file: "x.md".into(),
        line: 1,
        lang: "console".into(),
        body: "$ kubectl get x -n prod   # list\nNAME   AGE\na      1s\n$ for k in a b; do\n    \
               echo $k\n  done\n$ kubectl get y \\\n    -o name\n"
            .into(),
    };
    let shown = commands(&b);
    let cmds: Vec<&str> = shown.iter().map(|s| s.cmd.as_str()).collect();
    assert_eq!(
        cmds,
        [
            "kubectl get x -n prod",
            "for k in a b; do\n    echo $k\n  done",
            "kubectl get y \\\n    -o name"
        ]
    );
    assert_eq!(shown[0].output, ["NAME   AGE", "a      1s"]);
    assert_eq!(
        columns("NAME   FIRST SEEN   AGE"),
        ["NAME", "FIRST SEEN", "AGE"]
    );
}
