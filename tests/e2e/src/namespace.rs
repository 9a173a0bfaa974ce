//! Throwaway namespaces: each test works in its own, deleted when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

use crate::ControlPlane;

/// A namespace created for one test and deleted (without waiting) when dropped.
#[derive(Debug)]
pub struct TempNs {
    name: String,
    cp: &'static ControlPlane,
}

impl TempNs {
    /// Creates `<prefix>-<pid>-<n>`, labelled `palisade.dev/e2e=true`.
    pub async fn new(cp: &'static ControlPlane, prefix: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "palisade.dev/e2e": "true" } }
        }))
        .expect("a valid Namespace");
        Api::<Namespace>::all(cp.client().await)
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self { name, cp }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        if std::env::var_os("PALISADE_E2E_KEEP_NAMESPACES").is_some() {
            return;
        }
        let _best_effort = self
            .cp
            .kubectl()
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// The notes of the Events with `reason` about the Namespace `ns` itself (the operator's
/// namespace-wide warnings: `ForeignBundle`, `ClientIpIsProxy`, …).
pub async fn namespace_events(client: &kube::Client, ns: &str, reason: &str) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let events = Api::<Event>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .expect("list Events");
    events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Namespace") && r.name.as_deref() == Some(ns)
            })
        })
        .map(|e| e.note.unwrap_or_default())
        .collect()
}
