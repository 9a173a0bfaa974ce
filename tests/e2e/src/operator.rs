//! Runs the operator binary as a process against the control plane, authenticated as the
//! Helm chart's ServiceAccount with exactly the RBAC the chart grants (`helm template`, then
//! applied) — never as cluster admin — so a missing permission in the chart fails the tests.
//! (`config/rbac/*.yaml` holds the same rules; e2e_chart.rs asserts they are equal.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::ControlPlane;

/// The namespace the e2e operator runs in.
pub const OPERATOR_NS: &str = "palisade-system";

/// A workspace binary (`palisade-operator`, `palisade-sidecar`, …) built next to the test
/// executable. `cargo test --workspace --all-targets` (what `make test` runs) builds them.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let here = exe.parent().expect("the executable's directory");
    // Test executables live in <build-dir>/<profile>/deps, binaries in <target-dir>/<profile>.
    // The two differ when `build.build-dir` is set (several checkouts sharing one build dir);
    // then CARGO_TARGET_DIR in the environment says where this checkout's binaries are.
    let dir = if here.ends_with("deps") {
        here.parent().unwrap_or(here)
    } else {
        here
    };
    let dir = match (std::env::var_os("CARGO_TARGET_DIR"), dir.file_name()) {
        (Some(target), Some(profile)) => crate::repo_root().join(target).join(profile),
        _ => dir.to_path_buf(),
    };
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p {name}` (make test builds every binary)",
        bin.display()
    );
    bin
}

/// The release name the e2e suite renders the chart as: its objects are named
/// `palisade-operator`, `palisade-injector`…, as in config/.
pub const CHART_RELEASE: &str = "palisade";

/// A kubeconfig that authenticates as the chart's operator ServiceAccount, with the chart's
/// RBAC applied; made once per test process.
pub fn operator_kubeconfig(cp: &'static ControlPlane) -> &'static Path {
    static KC: OnceLock<PathBuf> = OnceLock::new();
    KC.get_or_init(|| {
        cp.install_crds();
        let _exists = cp.kubectl_ok(&["create", "namespace", OPERATOR_NS]);
        let (rbac, sa) = chart_rbac(cp);
        cp.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=palisade-e2e",
                "-f",
                "-",
            ],
            &rbac,
        )
        .unwrap_or_else(|e| panic!("applying the chart's RBAC:\n{rbac}\n{e}"));
        let token = cp
            .kubectl_ok(&["-n", OPERATOR_NS, "create", "token", &sa, "--duration=24h"])
            .unwrap_or_else(|e| panic!("token for ServiceAccount {OPERATOR_NS}/{sa}: {e}"));
        let path = std::env::temp_dir().join(format!(
            "palisade-e2e-operator-{}.kubeconfig",
            std::process::id()
        ));
        token_kubeconfig(cp.kubeconfig(), token.trim(), &path);
        path
    })
}

/// The kinds of the chart that make up the operator's identity and permissions.
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// `helm template` of the chart (release [`CHART_RELEASE`] in [`OPERATOR_NS`], default values)
/// reduced to its ServiceAccount and RBAC objects, as YAML, and the ServiceAccount's name.
pub fn chart_rbac(cp: &ControlPlane) -> (String, String) {
    let helm = crate::ensure_built()
        .unwrap_or_else(|e| panic!("building helm: {e}"))
        .join("helm");
    let chart = crate::repo_root().join("charts/palisade");
    let version = cp
        .kubectl_ok(&["version", "-o", "json"])
        .unwrap_or_else(|e| panic!("kubectl version: {e}"));
    let version: serde_json::Value = serde_json::from_str(&version).expect("version JSON");
    let version = version["serverVersion"]["gitVersion"]
        .as_str()
        .expect("serverVersion.gitVersion");
    let out = Command::new(&helm)
        .args(["template", CHART_RELEASE])
        .arg(&chart)
        .args(["-n", OPERATOR_NS, "--kube-version", version])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    assert!(
        out.status.success(),
        "helm template {}: {}",
        chart.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut docs = vec![];
    let mut sa = None;
    let mut found = std::collections::BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        use serde::Deserialize as _;
        let doc = serde_yaml::Value::deserialize(doc).expect("a rendered YAML document");
        let kind = doc["kind"].as_str().unwrap_or_default();
        if !RBAC_KINDS.contains(&kind) {
            continue;
        }
        found.insert(kind.to_owned());
        if kind == "ServiceAccount" {
            sa = doc["metadata"]["name"].as_str().map(str::to_owned);
        }
        docs.push(serde_yaml::to_string(&doc).expect("YAML"));
    }
    let sa = sa.expect("the chart renders the operator's ServiceAccount");
    for kind in RBAC_KINDS {
        assert!(
            found.contains(kind),
            "the chart renders no {kind}; the operator's permissions are missing"
        );
    }
    (docs.join("---\n"), sa)
}

/// Copies `admin` replacing its user with a bearer `token`.
pub fn token_kubeconfig(admin: &Path, token: &str, out: &Path) {
    let text = std::fs::read_to_string(admin).expect("admin kubeconfig");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    doc["users"] = serde_yaml::from_str(&format!("- name: admin\n  user:\n    token: {token}\n"))
        .expect("users YAML");
    std::fs::write(out, serde_yaml::to_string(&doc).expect("YAML")).expect("write kubeconfig");
}

/// `kubectl palisade <args>` as a user runs it: kubectl (with the cluster's kubeconfig in
/// `KUBECONFIG`) finds the plugin `kubectl-palisade` of this workspace on the `PATH`.
pub fn kubectl_palisade(cp: &ControlPlane, args: &[&str]) -> std::process::Output {
    let bin = workspace_bin("kubectl-palisade");
    let dir = bin.parent().expect("the binaries' directory");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(cp.kubectl_path())
        .env("KUBECONFIG", cp.kubeconfig())
        .env("PATH", path)
        .arg("palisade")
        .args(args)
        .output()
        .expect("run kubectl palisade")
}

/// Operator flags that limit it to one test namespace: operators of concurrent tests each
/// lead their own Lease, and must not write each other's namespaces.
pub fn scope(ns: &crate::TempNs) -> [String; 2] {
    [
        "--namespace-selector".to_owned(),
        format!("kubernetes.io/metadata.name={}", ns.name()),
    ]
}

/// A running operator process; killed when dropped.
#[derive(Debug)]
pub struct Operator {
    child: Child,
    /// Its admin address (`/metrics`, `/live`, `/ready`).
    pub admin: std::net::SocketAddr,
    /// Where its log goes.
    pub log: PathBuf,
    /// Its webhook address (HTTPS).
    pub webhook: String,
    /// Its collector address (sidecar reports).
    pub collector: String,
}

impl Operator {
    /// The CPU time the process has used (user + system, from /proc), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces): state is field 3, utime 14.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        Some((ticks(11)? + ticks(12)?) / 100.0)
    }

    /// The process's resident memory (`VmRSS` of /proc), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Starts an operator named `identity`, electing its leader on Lease `lease` (operators
    /// of concurrent tests use different Leases), with extra `args`.
    pub fn start<A: AsRef<std::ffi::OsStr>>(
        cp: &'static ControlPlane,
        identity: &str,
        lease: &str,
        args: &[A],
    ) -> Self {
        Self::start_as(cp, operator_kubeconfig(cp), identity, lease, args)
    }

    /// [`Operator::start`] with the identity of `kubeconfig` instead of the chart's
    /// ServiceAccount (a test that gives the operator other permissions).
    pub fn start_as<A: AsRef<std::ffi::OsStr>>(
        cp: &'static ControlPlane,
        kubeconfig: &Path,
        identity: &str,
        lease: &str,
        args: &[A],
    ) -> Self {
        let port = crate::process::free_port().expect("a free port");
        let admin: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let webhook = format!(
            "127.0.0.1:{}",
            crate::process::free_port().expect("a free port")
        );
        let collector = format!(
            "127.0.0.1:{}",
            crate::process::free_port().expect("a free port")
        );
        let logs = cp
            .logs()
            .map(Path::to_owned)
            .unwrap_or_else(std::env::temp_dir);
        let _ = std::fs::create_dir_all(&logs);
        let log = logs.join(format!("operator-{identity}.log"));
        let out = std::fs::File::create(&log).expect("operator log");
        let err = out.try_clone().expect("operator log");
        let child = Command::new(workspace_bin("palisade-operator"))
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,palisade_operator=debug")
            // Plain HTTP unless a test passes `--collector-plain-http=false` (flags win).
            .env("PALISADE_COLLECTOR_PLAIN_HTTP", "true")
            .args([
                "--namespace",
                OPERATOR_NS,
                "--identity",
                identity,
                "--lease-name",
                lease,
                "--lease-duration",
                "3",
            ])
            .args(["--log-format", "plain", "--admin-addr", &admin.to_string()])
            .args(["--webhook-addr", &webhook, "--collector-listen", &collector])
            .args(["--detection-interval", "1s"])
            // Operators of concurrent tests persist their collector state apart.
            .args(["--collector-state-configmap", &format!("{lease}-state")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start palisade-operator");
        Self {
            child,
            admin,
            log,
            webhook,
            collector,
        }
    }

    /// Stops the process (SIGKILL: a crash, as far as the others can tell).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process gracefully (SIGTERM, as a rollout does) and waits until it exits.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }

    /// The body of its `/metrics`.
    pub fn metrics(&self) -> Result<String, String> {
        let resp = crate::process::http_get(self.admin.port(), "/metrics")?;
        Ok(resp)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
