//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager built from pinned Go modules (tests/e2e/controlplane), each on
//! random free ports with its own temp dir and log file.
//!
//! `PALISADE_E2E_KUBECONFIG=/path` makes [`ControlPlane::shared`] use an existing cluster
//! instead of starting one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::node::{self, Node, NodeMode};
use crate::process::{self, Component};
use crate::{Error, pki};

/// Controllers of kube-controller-manager the tests rely on: namespace deletion, garbage
/// collection, Deployment → ReplicaSet → Pod, service accounts and their tokens, and the
/// aggregation of ClusterRoles into `view`/`edit`/`admin` (the roles for people).
const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller,\
serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,\
deployment-controller,replicaset-controller,resourcequota-controller,\
clusterrole-aggregation-controller";
/// Controllers added when the node runs: Service endpoints for kube-proxy, and the node
/// lifecycle (it lifts the `not-ready` taint the kubelet registers with).
const NODE_CONTROLLERS: &str =
    "endpointslice-controller,endpoints-controller,node-lifecycle-controller";

/// A running control plane (or an external cluster) and how to talk to it.
#[derive(Debug)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    logs: Option<PathBuf>,
    components: Vec<Component>,
    node: Result<Node, String>,
    /// How to start etcd again (see [`ControlPlane::restart_etcd`]); `None` for an external
    /// cluster.
    etcd: Option<Etcd>,
}

/// etcd's command line and the process running it now.
#[derive(Debug)]
struct Etcd {
    bin: PathBuf,
    args: Vec<String>,
    logs: PathBuf,
    port: u16,
    state_dir: PathBuf,
    /// Its pid: the first etcd's, or the last restarted one's.
    pid: std::sync::Mutex<u32>,
}

/// Where [`ControlPlane::start`] keeps state, and whether it outlives this process.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Data, certificates and kubeconfig (removed on exit unless `persistent`).
    pub state_dir: PathBuf,
    /// Component logs (kept).
    pub logs: PathBuf,
    /// Leave the processes running when this process exits (`make up`).
    pub persistent: bool,
    /// Whether to start the one-node cluster beside the control plane (see `node.rs`).
    pub node: NodeMode,
}

impl ControlPlane {
    /// The control plane shared by every test of this process, started on first use (or the
    /// cluster named by `PALISADE_E2E_KUBECONFIG`). Panics with the reason and the log paths
    /// if it cannot start: every e2e test needs it.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| {
            crate::install_crypto_provider();
            let cp = match std::env::var_os("PALISADE_E2E_KUBECONFIG") {
                Some(path) => Self::external(PathBuf::from(path)),
                None => Self::start(StartOptions::for_tests()),
            };
            cp.unwrap_or_else(|e| panic!("cannot start the e2e control plane: {e}"))
        })
    }

    /// Like [`ControlPlane::shared`], but with the one-node cluster when
    /// `PALISADE_E2E_NODE` (default `auto`) and the machine allow it; see
    /// [`crate::node_or_skip`]. Only tests that need pods use this one: it takes the
    /// machine-wide node lock.
    pub fn shared_with_node() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| {
            crate::install_crypto_provider();
            let cp = match std::env::var_os("PALISADE_E2E_KUBECONFIG") {
                Some(path) => Self::external(PathBuf::from(path)),
                None => {
                    // Its own dirs: a test process may also start the node-less one.
                    let plain = StartOptions::for_tests();
                    let suffix = |p: &Path| {
                        let name = p.file_name().unwrap_or_default().to_string_lossy();
                        p.with_file_name(format!("{name}-node"))
                    };
                    Self::start(StartOptions {
                        state_dir: suffix(&plain.state_dir),
                        logs: suffix(&plain.logs),
                        persistent: false,
                        node: NodeMode::from_env(),
                    })
                }
            };
            cp.unwrap_or_else(|e| panic!("cannot start the e2e control plane with a node: {e}"))
        })
    }

    /// The node, or why there is none.
    pub fn node(&self) -> Result<&Node, &str> {
        self.node.as_ref().map_err(String::as_str)
    }

    /// Uses an existing cluster; kubectl is the one the builder made, else the one on PATH.
    pub fn external(kubeconfig: PathBuf) -> Result<Self, Error> {
        let kubectl = match crate::builder::bin_dir_if_built() {
            Some(bin) => bin.join("kubectl"),
            None => PathBuf::from("kubectl"),
        };
        Ok(Self {
            kubeconfig: kubeconfig.clone(),
            kubectl,
            logs: None,
            components: vec![],
            etcd: None,
            node: Err(format!(
                "the cluster of PALISADE_E2E_KUBECONFIG={} is used as is (no node started)",
                kubeconfig.display()
            )),
        })
    }

    /// Builds (if needed) and starts etcd, kube-apiserver and kube-controller-manager, and
    /// waits until the API serves and the service-account controller works.
    pub fn start(opts: StartOptions) -> Result<Self, Error> {
        let bin = crate::builder::ensure_built()?;
        let dir = &opts.state_dir;
        for d in [dir, &opts.logs] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        STARTED_LOGS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(opts.logs.clone());
        let pki = pki::write(&dir.join("pki"))?;
        let mut reason = String::new();
        let prepared = match opts.node {
            NodeMode::Off => {
                reason = "no node was asked for (PALISADE_E2E_NODE=off, or a test that \
                          needs pods did not use ControlPlane::shared_with_node)"
                    .into();
                None
            }
            mode => match node::prepare(dir) {
                Ok(p) => Some(p),
                Err(why) if mode == NodeMode::On => {
                    return Err(Error::Node(format!("PALISADE_E2E_NODE=on: {why}")));
                }
                Err(why) => {
                    node::say_once(&why);
                    reason = why;
                    None
                }
            },
        };
        let with_node = prepared.is_some();
        let (etcd_port, peer_port, api_port) = (
            process::free_port()?,
            process::free_port()?,
            process::free_port()?,
        );
        let mut cp = Self {
            kubeconfig: dir.join("admin.kubeconfig"),
            kubectl: bin.join("kubectl"),
            logs: Some(opts.logs.clone()),
            components: vec![],
            node: Err(reason),
            etcd: None,
        };
        let etcd_args = etcd_args(&dir.join("etcd"), etcd_port, peer_port);
        let mut etcd = Component::spawn("etcd", &bin.join("etcd"), &etcd_args, &opts.logs)?;
        etcd.wait_ready(Duration::from_secs(30), || {
            let body = process::http_get(etcd_port, "/health")?;
            body.contains("\"health\":\"true\"")
                .then_some(())
                .ok_or(body)
        })?;
        cp.etcd = Some(Etcd {
            bin: bin.join("etcd"),
            args: etcd_args.clone(),
            logs: opts.logs.clone(),
            port: etcd_port,
            state_dir: dir.clone(),
            pid: std::sync::Mutex::new(etcd.child.id()),
        });
        cp.components.push(etcd);
        let api_args = apiserver_args(&pki, dir, etcd_port, api_port, with_node);
        let mut api = Component::spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &api_args,
            &opts.logs,
        )?;
        write_kubeconfig(&cp.kubeconfig, &pki, api_port)?;
        api.wait_ready(Duration::from_secs(90), || {
            cp.kubectl_ok(&["get", "--raw=/readyz"])
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        cp.components.push(api);
        let kcm_args = kcm_args(&pki, &cp.kubeconfig, with_node);
        let mut kcm = Component::spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &kcm_args,
            &opts.logs,
        )?;
        kcm.wait_ready(Duration::from_secs(90), || {
            cp.kubectl_ok(&["-n", "default", "get", "serviceaccount", "default"])
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        cp.components.push(kcm);
        if let Some(prep) = &prepared {
            let started = node::start(
                prep,
                opts.persistent,
                &cp.kubeconfig,
                &cp.kubectl,
                &pki,
                &opts.logs,
                &mut cp.components,
            );
            cp.node = match started {
                Ok(n) => {
                    eprintln!(
                        "e2e node: {} Ready in {:.1}s",
                        node::NODE_NAME,
                        n.started_in.as_secs_f64()
                    );
                    Ok(n)
                }
                Err(e) if opts.node == NodeMode::On => {
                    // Stop what started; the reaper below would only run at exit.
                    let pids: Vec<u32> = cp.components.iter().map(|c| c.child.id()).collect();
                    process::reap_now(&pids, &node::cleanup_script(prep));
                    return Err(Error::Node(format!("PALISADE_E2E_NODE=on: {e}")));
                }
                Err(e) => {
                    let why = format!("the node did not start: {e}");
                    node::say_once(&why);
                    Err(why)
                }
            };
        }
        let pids: Vec<u32> = cp.components.iter().map(|c| c.child.id()).collect();
        if opts.persistent {
            let pidfile = dir.join("pids");
            let text = pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            std::fs::write(&pidfile, text).map_err(|e| Error::io("write", &pidfile, e))?;
            if let Some(prep) = &prepared {
                // `palisade-cluster down` runs it after stopping the processes.
                let script = dir.join("node-cleanup.sh");
                std::fs::write(&script, node::cleanup_script(prep))
                    .map_err(|e| Error::io("write", &script, e))?;
            }
        } else if let Some(prep) = &prepared {
            process::reap_on_exit_then(&pids, dir, &node::cleanup_script(prep), Some(&prep.lock))?;
        } else {
            process::reap_on_exit(&pids, dir)?;
        }
        Ok(cp)
    }

    /// Kills etcd (SIGKILL), leaves it down for `down`, and starts it again on its data
    /// directory; returns once it answers `/health` again. Only for a control plane of its own
    /// ([`ControlPlane::start`]): every test using the shared one would see the outage.
    pub fn restart_etcd(&self, down: Duration) -> Result<(), Error> {
        let etcd = self.etcd.as_ref().ok_or_else(|| {
            Error::Unsupported("restart_etcd: this cluster's etcd was not started here".into())
        })?;
        let mut pid = etcd
            .pid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        // Until the old process is gone, its port and data directory are taken.
        while process::http_get(etcd.port, "/health").is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down);
        let mut again = Component::spawn("etcd-restarted", &etcd.bin, &etcd.args, &etcd.logs)?;
        again.wait_ready(Duration::from_secs(30), || {
            let body = process::http_get(etcd.port, "/health")?;
            body.contains("\"health\":\"true\"")
                .then_some(())
                .ok_or(body)
        })?;
        *pid = again.child.id();
        // Stopped with the rest when the test process ends.
        process::reap_on_exit(&[*pid], &etcd.state_dir)?;
        std::mem::forget(again);
        Ok(())
    }

    /// The admin (`system:masters`) kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where the component logs are, when this harness started the components.
    pub fn logs(&self) -> Option<&Path> {
        self.logs.as_deref()
    }

    /// The kubectl binary (the one built with the control plane when there is one).
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// A kubectl command already pointed at this cluster.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }

    /// Runs kubectl with `args`; its stdout on success, its stderr as the error.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String, Error> {
        let out = self
            .kubectl()
            .args(args)
            .output()
            .map_err(|e| Error::io("run", &self.kubectl, e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Kubectl {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Merges `status` (a JSON object's text, like `{"status": {...}}`) into the status of
    /// `resource` `name` in `ns`, as the controller that owns it would.
    pub fn patch_status(
        &self,
        ns: &str,
        resource: &str,
        name: &str,
        status: &str,
    ) -> Result<String, Error> {
        self.kubectl_ok(&[
            "-n",
            ns,
            "patch",
            resource,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ])
    }

    /// Runs kubectl with `args`, feeding `stdin` (e.g. `apply -f -` of a manifest).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Result<String, Error> {
        use std::io::Write as _;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("run", &self.kubectl, e))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|e| Error::io("write to", &self.kubectl, e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("run", &self.kubectl, e))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(Error::Kubectl {
                args: args.join(" "),
                stderr: format!("{stderr}{stdout}"),
            })
        }
    }

    /// Server-side applies `yaml` in namespace `ns` as field manager `palisade-e2e`.
    pub fn apply(&self, ns: &str, yaml: &str) -> Result<String, Error> {
        self.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=palisade-e2e",
                "-n",
                ns,
                "-f",
                "-",
            ],
            yaml,
        )
    }

    /// A new client for the calling test's runtime (clients must not be shared across the
    /// per-test tokio runtimes).
    pub async fn client(&self) -> kube::Client {
        crate::client::from_kubeconfig(&self.kubeconfig, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A client that authenticates with a bearer `token` (e.g. a ServiceAccount token)
    /// instead of the admin certificate.
    pub async fn client_with_token(&self, token: &str) -> kube::Client {
        crate::client::from_kubeconfig(&self.kubeconfig, Some(token))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Installs the checked-in CRD manifests (`crds/*.yaml`, what ships) once per process
    /// and waits until they are Established.
    pub fn install_crds(&self) {
        static ONCE: OnceLock<()> = OnceLock::new();
        ONCE.get_or_init(|| {
            let dir = crate::repo_root().join("crds");
            let dir = dir.to_string_lossy();
            self.kubectl_ok(&[
                "apply",
                "--server-side",
                "--field-manager=palisade-e2e",
                "-R",
                "-f",
                &dir,
            ])
            .unwrap_or_else(|e| panic!("installing the CRDs: {e}"));
            self.kubectl_ok(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "-l",
                "app.kubernetes.io/part-of=palisade",
            ])
            .unwrap_or_else(|e| panic!("waiting for the CRDs: {e}"));
        });
    }
}

static STARTED_LOGS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The log directories of the control planes this process started.
pub(crate) fn started_logs() -> Vec<PathBuf> {
    STARTED_LOGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

impl StartOptions {
    /// A temp state dir removed when the test process ends, and logs kept under
    /// `$PALISADE_CACHE/logs/e2e-<time>-<pid>`.
    pub fn for_tests() -> Self {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let logs = crate::builder::cache_dir()
            .join("logs")
            .join(format!("e2e-{stamp}-{}", std::process::id()));
        let state_dir = std::env::temp_dir().join(format!("palisade-e2e-{}", std::process::id()));
        Self {
            state_dir,
            logs,
            persistent: false,
            node: NodeMode::Off,
        }
    }
}

fn etcd_args(data: &Path, client: u16, peer: u16) -> Vec<String> {
    let c = format!("http://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    [
        "--name=default".to_owned(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={c}"),
        format!("--advertise-client-urls={c}"),
        format!("--listen-peer-urls={p}"),
        format!("--initial-advertise-peer-urls={p}"),
        format!("--initial-cluster=default={p}"),
        "--unsafe-no-fsync".to_owned(),
        "--logger=zap".to_owned(),
        "--log-level=warn".to_owned(),
    ]
    .into()
}

fn apiserver_args(pki: &pki::Pki, dir: &Path, etcd: u16, port: u16, node: bool) -> Vec<String> {
    let f = |p: &Path| p.display().to_string();
    // With the node, pods reach the API server through the `kubernetes` Service, whose
    // endpoint is the advertise address (the node's bridge), so it also listens there.
    let (bind, authz) = if node {
        ("0.0.0.0", "Node,RBAC")
    } else {
        ("127.0.0.1", "RBAC")
    };
    let mut args = vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd}"),
        format!("--bind-address={bind}"),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("apiserver").display()),
        format!("--tls-cert-file={}", f(&pki.server_crt)),
        format!("--tls-private-key-file={}", f(&pki.server_key)),
        format!("--client-ca-file={}", f(&pki.ca_crt)),
        format!("--authorization-mode={authz}"),
        "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy".to_owned(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        format!("--service-account-key-file={}", f(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", f(&pki.sa_key)),
        "--api-audiences=https://kubernetes.default.svc.cluster.local,palisade".to_owned(),
        format!("--service-cluster-ip-range={}", node::SERVICE_RANGE),
        "--allow-privileged=true".to_owned(),
        "--profiling=false".to_owned(),
        "--v=1".to_owned(),
    ];
    if node {
        args.extend([
            format!("--advertise-address={}", node::GATEWAY),
            "--kubelet-preferred-address-types=InternalIP".to_owned(),
            format!("--kubelet-client-certificate={}", f(&pki.admin_crt)),
            format!("--kubelet-client-key={}", f(&pki.admin_key)),
        ]);
    }
    args
}

fn kcm_args(pki: &pki::Pki, kubeconfig: &Path, node: bool) -> Vec<String> {
    let kc = kubeconfig.display();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--secure-port=0".to_owned(),
        "--leader-elect=false".to_owned(),
        "--use-service-account-credentials=false".to_owned(),
        if node {
            format!("--controllers={CONTROLLERS},{NODE_CONTROLLERS}")
        } else {
            format!("--controllers={CONTROLLERS}")
        },
        format!(
            "--service-account-private-key-file={}",
            pki.sa_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_crt.display()),
        format!("--service-cluster-ip-range={}", node::SERVICE_RANGE),
        "--v=1".to_owned(),
    ]
}

fn write_kubeconfig(path: &Path, pki: &pki::Pki, port: u16) -> Result<(), Error> {
    let server = format!("https://127.0.0.1:{port}");
    write_kubeconfig_for(path, &pki.ca_crt, &pki.admin_crt, &pki.admin_key, &server)
}

/// Writes a kubeconfig for `server` that authenticates with the client certificate `crt`.
pub(crate) fn write_kubeconfig_for(
    path: &Path,
    ca: &Path,
    crt: &Path,
    key: &Path,
    server: &str,
) -> Result<(), Error> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io("read", p, e));
    use base64::Engine as _;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: palisade-e2e
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {crt}
    client-key-data: {key}
contexts:
- name: palisade-e2e
  context: {{cluster: palisade-e2e, user: admin}}
current-context: palisade-e2e
",
        ca = b64(read(ca)?),
        crt = b64(read(crt)?),
        key = b64(read(key)?),
    );
    std::fs::write(path, text).map_err(|e| Error::io("write", path, e))
}
