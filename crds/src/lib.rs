//! Palisade's Kubernetes API (group `palisade.dev`, version `v1alpha1`).
//!
//! The Rust types of the three custom resources — `SecurityAction`, `DetectionRule` and
//! `SecurityIncident` — with their schemas, CEL validation rules and printer columns. The
//! generated CRD manifests are checked in under `crds/`.
