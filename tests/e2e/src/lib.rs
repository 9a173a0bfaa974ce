//! Palisade's end-to-end test support: a real Kubernetes control plane (etcd,
//! kube-apiserver, kube-controller-manager) started on loopback, shared by the tests of one
//! `cargo test` process, with one throwaway namespace per test.
//!
//! ```no_run
//! # async fn t() {
//! use palisade_e2e::{ControlPlane, TempNs, eventually};
//! let cp = ControlPlane::shared();
//! let ns = TempNs::new(cp, "smoke").await;
//! let client = cp.client().await;
//! # }
//! ```
//!
//! `PALISADE_E2E_KUBECONFIG` points the same tests at an existing cluster;
//! `PALISADE_E2E_PATIENCE` (seconds, default 30) is how long [`eventually`] waits.

mod builder;
pub mod bundle;
mod client;
mod controlplane;
mod error;
pub mod http;
mod namespace;
mod operator;
pub mod pki;
mod process;
mod sidecar;
mod wait;

use std::path::PathBuf;

pub use builder::{bin_dir_if_built, cache_dir, ensure_built};
pub use controlplane::{ControlPlane, StartOptions};
pub use error::Error;
pub use namespace::TempNs;
pub use operator::{
    OPERATOR_NS, Operator, operator_kubeconfig, scope, token_kubeconfig, workspace_bin,
};
pub use sidecar::Sidecar;
pub use wait::{eventually, eventually_within, patience};

/// Installs the workspace's one rustls crypto provider (ring); idempotent.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// The root of the Palisade checkout (where `crds/` and `examples/` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}
