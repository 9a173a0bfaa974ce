//! Palisade's policy bundle, kube-free.
//!
//! The wire format the operator writes and every sidecar reads, the pure compiler that turns
//! security actions and detection rules into a bundle, and the evaluator that turns a request
//! into a verdict (allow > deny > flag).
