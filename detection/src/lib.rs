//! Palisade's detection, kube-free.
//!
//! The sidecar's window summaries (its report format), the sliding windows the collector
//! merges them into, the detection rules run over those windows, and the clustering of
//! detections into incidents.

#![forbid(unsafe_code)]

pub mod anomaly;
pub mod counter;
pub mod detected;
pub mod facts;
pub mod incident;
pub mod key;
pub mod report;
pub mod risk;
pub mod rule_spec;
pub mod rules;
pub mod stats;
pub mod topk;
pub mod window;

#[cfg(test)]
mod testutil;
