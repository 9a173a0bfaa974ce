//! Palisade's detection, kube-free.
//!
//! The sidecar's window summaries (its report format), the sliding windows the collector
//! merges them into, the detection rules run over those windows, and the clustering of
//! detections into incidents.
