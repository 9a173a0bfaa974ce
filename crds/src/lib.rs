//! Palisade's Kubernetes API (group `palisade.dev`, version `v1alpha1`).
//!
//! The Rust types of the four custom resources — [`SecurityAction`], [`DetectionRule`],
//! [`SecurityIncident`] and [`SecurityPosture`] — with their schemas, CEL validation rules and printer columns, the
//! annotation and label keys users set, and small helpers the operator needs (durations,
//! selectors, conditions). The generated CRD manifests are checked in as `crds/*.yaml`;
//! regenerate them with `cargo run -p palisade-crds --bin crdgen`.

#![forbid(unsafe_code)]
// kube's `printcolumn(name = .., type_ = ..)` repeats keys across columns by design.
#![allow(clippy::duplicated_attributes)]

pub mod action;
pub mod common;
pub mod conditions;
pub mod duration;
pub mod generate;
pub mod incident;
pub mod keys;
pub mod matching;
pub mod posture;
pub mod reference;
pub mod regions;
pub mod rule;
pub mod rule_params;
pub mod strings;

pub use action::{SecurityAction, SecurityActionSpec, SecurityActionStatus};
pub use generate::{all_crds, manifests};
pub use incident::{SecurityIncident, SecurityIncidentSpec, SecurityIncidentStatus};
pub use keys::*;
pub use posture::{SecurityPosture, SecurityPostureSpec, SecurityPostureStatus};
pub use rule::{DetectionRule, DetectionRuleSpec, DetectionRuleStatus};

/// The API group of every Palisade resource.
pub const GROUP: &str = "palisade.dev";
/// The API version of every Palisade resource.
pub const VERSION: &str = "v1alpha1";
