//! The optional one-node cluster: containerd (+ runc, the CNI bridge), kubelet, kube-proxy
//! and kube-scheduler beside the control plane, so that Deployments really run Pods.
//!
//! `PALISADE_E2E_NODE=auto|on|off` (default `auto`): `auto` starts the node when this machine
//! allows it (root, cgroups, `ip`/`iptables`, the node binaries built by
//! `build.sh --node`) and otherwise says why once; `on` fails with that reason; `off` never
//! starts it. Only [`crate::ControlPlane::shared_with_node`] asks for a node: every other
//! test runs on the node-less control plane, unchanged.
//!
//! The node is machine-global (a bridge, iptables rules, cgroups), so one node runs at a
//! time: a lock file serializes test processes, and the reaper cleans up (containers,
//! mounts, cgroups, the bridge, kube-proxy's rules) after the test process ends.
//! Addresses are in the benchmarking range 198.18.0.0/15 only; pods get no default route.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Error;
use crate::image::{self, ImageSpec};
use crate::pki::Pki;
use crate::process::{self, Component};

/// The node's name (kubelet `--hostname-override`).
pub const NODE_NAME: &str = "palisade-node";
/// The Linux bridge of the pod network, created by the harness (the CNI bridge reuses it).
pub const BRIDGE: &str = "palisade0";
/// The bridge's address: the node IP, the pods' gateway, the API server's advertise address.
pub const GATEWAY: &str = "198.18.0.1";
/// Pod addresses (CNI host-local on the bridge).
pub const POD_SUBNET: &str = "198.18.0.0/24";
/// The last address host-local gives a pod: 198.18.0.200–254 stay free for client addresses
/// that tests and `make demo` add to the bridge (`ip addr add 198.18.0.209/32 dev palisade0`,
/// then `curl --interface 198.18.0.209 http://<ClusterIP>/`), so one host can act as many
/// clients without masquerading.
pub const POD_RANGE_END: &str = "198.18.0.199";
/// Service ClusterIPs (the API server's `--service-cluster-ip-range`, with or without node).
pub const SERVICE_RANGE: &str = "198.19.0.0/24";
/// The `kubernetes` Service's ClusterIP (first address of [`SERVICE_RANGE`]).
pub const KUBERNETES_SERVICE_IP: &str = "198.19.0.1";
/// The pod sandbox image (tests/e2e/node/pause.c), imported when the node starts.
pub const PAUSE_IMAGE: &str = "palisade.local/pause:e2e";
/// Cgroup (in every v1 hierarchy, or the v2 tree) under which the kubelet puts the pods.
const CGROUP_ROOT: &str = "palisade-e2e";
const LOCK: &str = "/tmp/palisade-e2e-node.lock";

/// Whether to start the node (`PALISADE_E2E_NODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    /// Start it when the machine allows; otherwise run without and say why.
    Auto,
    /// Start it or fail.
    On,
    /// Never start it.
    Off,
}

impl NodeMode {
    /// `PALISADE_E2E_NODE` (`auto` when unset). Panics on another value.
    pub fn from_env() -> Self {
        match std::env::var("PALISADE_E2E_NODE").as_deref() {
            Err(_) | Ok("" | "auto") => Self::Auto,
            Ok("on") => Self::On,
            Ok("off") => Self::Off,
            Ok(other) => panic!("PALISADE_E2E_NODE={other}: expected auto, on or off"),
        }
    }
}

/// A running node: what tests need to put images on it.
#[derive(Debug)]
pub struct Node {
    dir: PathBuf,
    ctr: PathBuf,
    socket: PathBuf,
    /// How long the node took to register and become Ready (after the control plane).
    pub started_in: Duration,
}

/// What [`prepare`] set up before the API server starts (it must advertise the bridge IP).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) lock: File,
    bin: PathBuf,
    dir: PathBuf,
}

/// Checks the machine, builds the node binaries, takes the node lock and brings up the
/// bridge. `Err` is the reason the node cannot run here, for the user.
pub(crate) fn prepare(state_dir: &Path) -> Result<Prepared, String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Err(format!(
            "the node needs root (containers, a bridge, iptables); this process runs as uid {uid}"
        ));
    }
    let v1 = ["cpu", "memory", "pids", "cpuset"]
        .iter()
        .all(|c| Path::new("/sys/fs/cgroup").join(c).join("tasks").exists());
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !v1 && !v2 {
        return Err(
            "no usable cgroups: neither /sys/fs/cgroup/{cpu,memory,pids,cpuset} (v1) \
                    nor /sys/fs/cgroup/cgroup.controllers (v2)"
                .into(),
        );
    }
    for (cmd, arg) in [("ip", "-V"), ("iptables", "--version")] {
        let found = Command::new(cmd).arg(arg).output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Err(format!(
                "`{cmd}` is missing (Debian: apt-get install iproute2 iptables)"
            ));
        }
    }
    let bin = crate::builder::ensure_built_with_node().map_err(|e| {
        format!(
            "the node binaries could not be built (tests/e2e/controlplane/build.sh --node): {e}"
        )
    })?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .map_err(|e| format!("open {LOCK}: {e}"))?;
    // Another test process's node is gone within a minute or two; `make up`'s may stay.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut said = false;
    while lock.try_lock().is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "another node holds {LOCK} (`PALISADE_NODE=on make up`'s, or another test \
                 process's) since 5 minutes; `make down` stops make up's"
            ));
        }
        if !said {
            eprintln!("e2e node: waiting for the node of another process to stop ({LOCK})");
            said = true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let dir = state_dir.join("node");
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    // A node of a process that was killed before its reaper ran leaves these behind.
    let _stale = sh(&format!(
        "ip link del {BRIDGE} 2>/dev/null; {bin}/kube-proxy --cleanup >/dev/null 2>&1; \
         {KUBELET_CHAINS} true",
        bin = bin.display()
    ));
    let cgroup_dirs = if v1 {
        "for h in /sys/fs/cgroup/*/; do [ -e \"$h/tasks\" ] || continue; \
         mkdir -p \"$h/CG\"; done; \
         cat /sys/fs/cgroup/cpuset/cpuset.cpus >/sys/fs/cgroup/cpuset/CG/cpuset.cpus; \
         cat /sys/fs/cgroup/cpuset/cpuset.mems >/sys/fs/cgroup/cpuset/CG/cpuset.mems"
    } else {
        "mkdir -p /sys/fs/cgroup/CG"
    }
    .replace("CG", CGROUP_ROOT);
    sh(&format!(
        "set -e; ip link add {BRIDGE} type bridge; ip addr add {GATEWAY}/24 dev {BRIDGE}; \
         ip link set {BRIDGE} up; ip route add {SERVICE_RANGE} dev {BRIDGE} src {GATEWAY}; \
         echo 1 >/proc/sys/net/ipv4/ip_forward; \
         echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables; {cgroup_dirs}"
    ))
    .map_err(|e| format!("setting up the pod network bridge {BRIDGE} and cgroups: {e}"))?;
    Ok(Prepared { lock, bin, dir })
}

/// Removes the chains the kubelet adds (KUBE-FIREWALL drops non-loopback packets to
/// 127.0.0.0/8; the canaries and the hint are empty).
const KUBELET_CHAINS: &str = "for ipt in iptables ip6tables; do \
    $ipt -D INPUT -j KUBE-FIREWALL; $ipt -D OUTPUT -j KUBE-FIREWALL; \
    $ipt -F KUBE-FIREWALL; $ipt -X KUBE-FIREWALL; \
    for t in mangle nat filter; do $ipt -t $t -X KUBE-KUBELET-CANARY; done; \
    $ipt -t mangle -X KUBE-IPTABLES-HINT; done 2>/dev/null;";

/// The shell commands the reaper runs after the node's processes were stopped: kill what
/// runs in the pods' cgroups and the runc shims of this containerd, unmount what lives in
/// the node's dir, remove the cgroups, kube-proxy's rules and the bridge.
pub(crate) fn cleanup_script(prep: &Prepared) -> String {
    let dir = prep.dir.display();
    let bin = prep.bin.display();
    format!(
        "for f in $(find /sys/fs/cgroup/*/{CGROUP_ROOT} /sys/fs/cgroup/{CGROUP_ROOT} \
           -name cgroup.procs 2>/dev/null); do for p in $(cat $f); do kill -9 $p; done; done; \
         for p in /proc/[0-9]*; do \
           [ \"$(readlink $p/exe)\" = '{bin}/containerd-shim-runc-v2' ] && \
           tr '\\0' ' ' <$p/cmdline | grep -q '{dir}/' && kill -9 ${{p#/proc/}}; done; \
         sleep 0.5; \
         grep -o ' {dir}/[^ ]*' /proc/mounts | sort -r | while read m; do umount -l $m; done; \
         for h in /sys/fs/cgroup/*/{CGROUP_ROOT} /sys/fs/cgroup/{CGROUP_ROOT}; do \
           [ -d $h ] && find $h -depth -type d -exec rmdir {{}} \\; ; done; \
         '{bin}/kube-proxy' --cleanup >/dev/null 2>&1; {KUBELET_CHAINS} \
         ip link del {BRIDGE} 2>/dev/null; true"
    )
}

/// Starts containerd, imports the pause image, then kube-scheduler, kubelet and kube-proxy,
/// and waits for the node to be Ready. Started components are pushed to `components` as
/// they start, so they are reaped even when a later step fails.
pub(crate) fn start(
    prep: &Prepared,
    persistent: bool,
    kubeconfig: &Path,
    kubectl: &Path,
    pki: &Pki,
    logs: &Path,
    components: &mut Vec<Component>,
) -> Result<Node, Error> {
    let t0 = Instant::now();
    let (bin, dir) = (&prep.bin, &prep.dir);
    let io = |what, p: &Path| {
        let p = p.to_owned();
        move |e| Error::io(what, &p, e)
    };
    for d in [
        "containerd",
        "net.d",
        "manifests",
        "kubelet",
        "pod-logs",
        "images",
    ] {
        fs::create_dir_all(dir.join(d)).map_err(io("create", &dir.join(d)))?;
    }
    let socket = dir.join("containerd/containerd.sock");
    let ctd_config = dir.join("containerd.toml");
    write(&ctd_config, &containerd_config(bin, dir, &socket))?;
    write(&dir.join("net.d/10-palisade.conflist"), &cni_config(dir))?;
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ctd = Component::spawn_env(
        "containerd",
        &bin.join("containerd"),
        &["--config".into(), ctd_config.display().to_string()],
        logs,
        &[("PATH", &path)],
        // A persistent node (`make up`) outlives this process: containerd holds the lock.
        persistent.then_some(&prep.lock),
    )?;
    let ctr = bin.join("ctr");
    let node = Node {
        dir: dir.clone(),
        ctr: ctr.clone(),
        socket: socket.clone(),
        started_in: Duration::ZERO,
    };
    let ready = ctd.wait_ready(Duration::from_secs(30), || {
        node.ctr(&["version"]).map(drop).map_err(|e| e.to_string())
    });
    components.push(ctd);
    ready?;
    node.import(&ImageSpec {
        reference: PAUSE_IMAGE.into(),
        files: vec![(bin.join("pause"), "/pause".into(), 0o755)],
        entrypoint: vec!["/pause".into()],
    })?;

    let node_kubeconfig = dir.join("kubelet.kubeconfig");
    crate::controlplane::write_kubeconfig_for(
        &node_kubeconfig,
        &pki.ca_crt,
        &pki.node_crt,
        &pki.node_key,
        &kubeconfig_server(kubeconfig)?,
    )?;
    let kc = kubeconfig.display().to_string();
    let sched_port = process::free_port()?;
    let sched = Component::spawn(
        "kube-scheduler",
        &bin.join("kube-scheduler"),
        &[
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={sched_port}"),
            "--v=1".into(),
        ],
        logs,
    )?;
    components.push(sched);

    let kubelet_config = dir.join("kubelet.yaml");
    write(
        &kubelet_config,
        &kubelet_config_yaml(
            dir,
            &socket,
            pki,
            process::free_port()?,
            process::free_port()?,
        ),
    )?;
    let mut kubelet = Component::spawn_env(
        "kubelet",
        &bin.join("kubelet"),
        &[
            format!("--config={}", kubelet_config.display()),
            format!("--kubeconfig={}", node_kubeconfig.display()),
            format!("--root-dir={}", dir.join("kubelet").display()),
            format!("--cert-dir={}", dir.join("kubelet/pki").display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={GATEWAY}"),
            "--v=1".into(),
        ],
        logs,
        &[("PATH", &path)],
        None,
    )?;
    let proxy_config = dir.join("kube-proxy.yaml");
    write(
        &proxy_config,
        &kube_proxy_config(kubeconfig, process::free_port()?, process::free_port()?),
    )?;
    let proxy = Component::spawn_env(
        "kube-proxy",
        &bin.join("kube-proxy"),
        &[
            format!("--config={}", proxy_config.display()),
            "--v=1".into(),
        ],
        logs,
        &[("PATH", &path)],
        None,
    )?;
    let ready = kubelet.wait_ready(Duration::from_secs(120), || {
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} \
                 {.status.conditions[?(@.type==\"Ready\")].message} taints={.spec.taints}",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.starts_with("True") && text.ends_with("taints=") {
            Ok(())
        } else {
            Err(format!(
                "node {NODE_NAME} not Ready: {text}{}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    });
    components.push(kubelet);
    components.push(proxy);
    ready?;
    Ok(Node {
        started_in: t0.elapsed(),
        ..node
    })
}

impl Node {
    /// The node a persistent control plane (`make up`, state in `state_dir`) runs, if any.
    pub fn existing(state_dir: &Path) -> Option<Self> {
        Self::at(&state_dir.join("node"))
    }

    /// The running node whose directory is `dir` (see [`Node::dir`]), if its containerd
    /// socket is there.
    pub fn at(dir: &Path) -> Option<Self> {
        let dir = dir.to_path_buf();
        let socket = dir.join("containerd/containerd.sock");
        let bin = crate::builder::bin_dir_if_built()?;
        socket.exists().then(|| Self {
            dir,
            ctr: bin.join("ctr"),
            socket,
            started_in: Duration::ZERO,
        })
    }

    /// The node's directory (containerd state and socket, kubelet dirs, image archives):
    /// `palisade-cluster image` imports into the node at `PALISADE_NODE_DIR=<dir>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether containerd already holds the image `reference`.
    pub fn has_image(&self, reference: &str) -> Result<bool, Error> {
        let listed = self.ctr(&["images", "ls", "-q"])?;
        Ok(listed.lines().any(|l| l == reference))
    }

    /// Runs `ctr -n k8s.io` against this node's containerd.
    pub fn ctr(&self, args: &[&str]) -> Result<String, Error> {
        let out = Command::new(&self.ctr)
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .map_err(|e| Error::io("run", &self.ctr, e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Image(format!(
                "ctr {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Builds `spec` as an OCI archive and imports it into the node's containerd (`k8s.io`
    /// namespace, overlayfs), so pods can use it with `imagePullPolicy: Never`.
    pub fn import(&self, spec: &ImageSpec) -> Result<(), Error> {
        let file = spec.reference.replace(['/', ':'], "_");
        let archive = self.dir.join("images").join(format!("{file}.tar"));
        image::write_oci_archive(spec, &archive)?;
        let path = archive.display().to_string();
        self.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "overlayfs",
            "--platform",
            "linux/amd64",
            &path,
        ])?;
        let _space = fs::remove_file(&archive);
        if self.has_image(&spec.reference)? {
            Ok(())
        } else {
            Err(Error::Image(format!(
                "{} is not in containerd after the import; images there: {}",
                spec.reference,
                self.ctr(&["images", "ls", "-q"])?
            )))
        }
    }

    /// Imports an image of the binary `bin` (plus its shared libraries) as `reference`.
    pub fn import_binary(&self, reference: &str, bin: &Path) -> Result<(), Error> {
        self.import(&ImageSpec::for_binary(reference, bin)?)
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|e| Error::io("write", path, e))
}

fn sh(script: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The `server:` of the admin kubeconfig (the node talks to the same API server).
fn kubeconfig_server(kubeconfig: &Path) -> Result<String, Error> {
    let text = fs::read_to_string(kubeconfig).map_err(|e| Error::io("read", kubeconfig, e))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .map(str::to_owned)
        .ok_or_else(|| Error::Node(format!("no server: in {}", kubeconfig.display())))
}

fn containerd_config(bin: &Path, dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{socket}"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE (e.g. in a Firecracker VM's root) a process cannot lower its
  # oom_score_adj: the pause container's -998 fails with "Permission denied". This keeps
  # every container's score at or above containerd's own.
  restrict_oom_score_adj = {restrict}
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni}"]
    conf_dir = "{d}/net.d"
"#,
        socket = socket.display(),
        restrict = !can_lower_oom_score(),
        runc = bin.join("runc").display(),
        cni = bin.join("cni").display(),
    )
}

/// Whether this process may lower its oom_score_adj (needs CAP_SYS_RESOURCE).
fn can_lower_oom_score() -> bool {
    sh("echo -1 >/proc/self/oom_score_adj").is_ok()
}

/// The bridge on [`BRIDGE`] with host-local addresses in [`POD_SUBNET`]; pods get a route
/// to the Services only (no default route, no masquerade: nothing leaves the machine).
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "palisade-e2e",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY, "rangeEnd": POD_RANGE_END}]],
                    "routes": [{"dst": SERVICE_RANGE, "gw": GATEWAY}],
                    "dataDir": dir.join("cni-ipam").display().to_string(),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

fn kubelet_config_yaml(dir: &Path, socket: &Path, pki: &Pki, port: u16, healthz: u16) -> String {
    let d = dir.display();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {GATEWAY}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
staticPodPath: {d}/manifests
podLogsDir: {d}/pod-logs
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
maxPods: 40
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
enforceNodeAllocatable: [pods]
registerNode: true
",
        ca = pki.ca_crt.display(),
        socket = socket.display(),
    )
}

fn kube_proxy_config(kubeconfig: &Path, healthz: u16, metrics: u16) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kc}}}
mode: iptables
clusterCIDR: {POD_SUBNET}
hostnameOverride: {NODE_NAME}
bindAddress: {GATEWAY}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
nodePortAddresses: [{GATEWAY}/32]
conntrack: {{maxPerCore: 0, min: 0}}
iptables: {{localhostNodePorts: false}}
",
        kc = kubeconfig.display(),
    )
}

/// Prints why there is no node, once per process.
pub(crate) fn say_once(reason: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("e2e node: not started: {reason}"));
}
