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
//! Tests that need running pods use [`ControlPlane::shared_with_node`] and
//! [`node_or_skip`]: see `node.rs` and docs/node.md (`PALISADE_E2E_NODE=auto|on|off`).
//!
//! `PALISADE_E2E_KUBECONFIG` points the same tests at an existing cluster;
//! `PALISADE_E2E_PATIENCE` (seconds, default 30) is how long [`eventually`] waits.

mod builder;
pub mod bundle;
mod client;
pub mod collector;
mod controlplane;
pub mod demo;
mod error;
pub mod flood;
pub mod http;
pub mod image;
pub mod injected;
pub mod leadership;
mod namespace;
pub mod node;
mod operator;
pub mod outage;
pub mod pki;
pub mod process;
mod sidecar;
mod wait;
pub mod webhook;

use std::path::PathBuf;

pub use builder::{bin_dir_if_built, cache_dir, ensure_built};
pub use controlplane::{ControlPlane, StartOptions};
pub use error::Error;
pub use namespace::{TempNs, namespace_events};
pub use node::{Node, NodeMode};
pub use operator::{
    CHART_RELEASE, OPERATOR_NS, Operator, chart_rbac, kubectl_palisade, operator_kubeconfig, scope,
    token_kubeconfig, workspace_bin,
};
pub use sidecar::Sidecar;
pub use wait::{eventually, eventually_within, patience};

/// A SecurityAction `deny-one` that denies 192.0.2.1 with 403: a namespace's one action, for
/// tests about everything around it.
pub const DENY_ONE: &str = r#"apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-one}
spec:
  deny: {status: 403}
  conditions:
    ipRanges: [192.0.2.1/32]
"#;

/// The node of `cp`, or `None` after printing `SKIPPED <test>: <why there is no node>`:
/// tests that need pods return early with it, so a machine without a node skips them
/// visibly instead of passing them.
pub fn node_or_skip<'a>(cp: &'a ControlPlane, test: &str) -> Option<&'a Node> {
    match cp.node() {
        Ok(node) => Some(node),
        Err(why) => {
            eprintln!("SKIPPED {test}: no e2e node: {why}");
            None
        }
    }
}

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
