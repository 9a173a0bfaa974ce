//! Runs the sidecar binary as a process, wired as the injector wires it in a pod: it reads
//! the bundle through the API as the namespace's `default` ServiceAccount (the operator's
//! Role grants exactly that) with a projected-style token file and CA file (no kubeconfig),
//! and reports to the collector with a `palisade`-audience token. [`Sidecar::from_pod`] runs
//! the sidecar of an injected Pod from its stored spec.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{ControlPlane, process, workspace_bin};

/// A running sidecar process; killed when dropped.
#[derive(Debug)]
pub struct Sidecar {
    pub(crate) child: Child,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Its admin address (`/metrics`, `/live`, `/ready`).
    pub admin: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
}

impl Sidecar {
    /// Starts a sidecar for pod `pod` of namespace `ns` in front of `127.0.0.1:upstream`,
    /// reporting to `collector` when given.
    pub fn start(
        cp: &'static ControlPlane,
        ns: &str,
        pod: &str,
        upstream: u16,
        collector: Option<&str>,
    ) -> Self {
        Self::start_with_ca(cp, ns, pod, upstream, collector, None)
    }

    /// [`Sidecar::start`] reporting over HTTPS, verifying the collector with `ca` (PEM), as
    /// the injector configures it.
    pub fn start_with_ca(
        cp: &'static ControlPlane,
        ns: &str,
        pod: &str,
        upstream: u16,
        collector: Option<&str>,
        ca: Option<&str>,
    ) -> Self {
        Self::launch(cp, ns, pod, (upstream, collector, ca), &[])
    }

    /// [`Sidecar::start`] with extra command-line flags (`--pod-labels app=api`, …).
    pub fn start_with_args(
        cp: &'static ControlPlane,
        ns: &str,
        pod: &str,
        upstream: u16,
        collector: Option<&str>,
        args: &[&str],
    ) -> Self {
        Self::launch(cp, ns, pod, (upstream, collector, None), args)
    }

    fn launch(
        cp: &'static ControlPlane,
        ns: &str,
        pod: &str,
        (upstream, collector, ca): (u16, Option<&str>, Option<&str>),
        args: &[&str],
    ) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "palisade-e2e-sidecar-{}-{ns}-{pod}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("sidecar dir");
        let api_token = cp
            .kubectl_ok(&["-n", ns, "create", "token", "default"])
            .expect("API token");
        let api_token_path = dir.join("api-token");
        std::fs::write(&api_token_path, api_token.trim()).expect("API token file");
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, crate::injected::api_ca(cp)).expect("CA file");
        let (host, port) = crate::injected::api_server(cp);
        let report_token = cp
            .kubectl_ok(&[
                "-n",
                ns,
                "create",
                "token",
                "default",
                "--audience",
                "palisade",
            ])
            .expect("report token");
        let token_path = dir.join("token");
        std::fs::write(&token_path, report_token.trim()).expect("token file");
        let addr: SocketAddr = ([127, 0, 0, 1], process::free_port().expect("port")).into();
        let admin: SocketAddr = ([127, 0, 0, 1], process::free_port().expect("port")).into();
        let logs = cp
            .logs()
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let _ = std::fs::create_dir_all(&logs);
        let log = logs.join(format!("sidecar-{ns}-{pod}.log"));
        let out = std::fs::File::create(&log).expect("sidecar log");
        let err = out.try_clone().expect("sidecar log");
        let mut cmd = Command::new(workspace_bin("palisade-sidecar"));
        cmd.env_remove("KUBECONFIG")
            .env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_PORT", port.to_string())
            .env("PALISADE_API_TOKEN_PATH", &api_token_path)
            .env("PALISADE_API_CA_PATH", &ca_path)
            .env("POD_NAMESPACE", ns)
            .env("POD_NAME", pod)
            .env("RUST_LOG", "info")
            .args([
                "--listen",
                &addr.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .args([
                "--upstream-port",
                &upstream.to_string(),
                "--bundle-configmap",
                "palisade-bundle",
            ])
            .args(["--log-format", "plain", "--debug-headers"])
            .arg("--token-path")
            .arg(&token_path)
            .args(args);
        if let Some(c) = collector {
            cmd.args(["--collector-addr", c]);
        }
        if let Some(ca) = ca {
            cmd.env("PALISADE_COLLECTOR_CA", ca);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start palisade-sidecar");
        Self {
            child,
            addr,
            admin,
            log,
        }
    }
}

impl Sidecar {
    /// The version (`<generation>-<hash prefix>`) of the bundle the sidecar enforces, from
    /// its `palisade_sidecar_bundle_info` metric.
    pub fn bundle_version(&self) -> Option<String> {
        let m = process::http_get(self.admin.port(), "/metrics").ok()?;
        let line = m
            .lines()
            .find(|l| l.starts_with("palisade_sidecar_bundle_info{"))?;
        let v = line.split("version=\"").nth(1)?;
        v.split('"').next().map(str::to_owned)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
