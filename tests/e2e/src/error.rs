//! Why the control plane could not be built, started or reached.

use std::path::{Path, PathBuf};

/// An error of the e2e harness; each variant says what failed and where to look.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the harness was doing.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The control-plane builder (tests/e2e/controlplane/build.sh) failed.
    #[error("building the control plane failed: {0}")]
    Build(String),
    /// A component did not start or did not become ready in time.
    #[error("{component} did not become ready: {detail}; its log is {log}")]
    NotReady {
        /// etcd, kube-apiserver or kube-controller-manager.
        component: &'static str,
        /// What was last seen.
        detail: String,
        /// Where its output is.
        log: PathBuf,
    },
    /// Generating the test PKI failed.
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    /// A kubectl command failed.
    #[error("kubectl {args} failed: {stderr}")]
    Kubectl {
        /// The arguments given.
        args: String,
        /// What kubectl printed.
        stderr: String,
    },
    /// Building or importing a container image for the e2e node failed.
    #[error("image: {0}")]
    Image(String),
    /// The e2e node (kubelet, containerd, kube-proxy) could not be prepared or started.
    #[error("node: {0}")]
    Node(String),
    /// The cluster cannot do what the test asked (e.g. restart etcd of an external cluster).
    #[error("not possible on this cluster: {0}")]
    Unsupported(String),
    /// Building a Kubernetes client from the kubeconfig failed.
    #[error("client from {path}: {detail}")]
    Client {
        /// The kubeconfig.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}
