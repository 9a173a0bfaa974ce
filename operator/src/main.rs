//! The Palisade operator: compiles SecurityActions and DetectionRules into policy bundles,
//! injects the sidecar into API pods, and runs the detection collector.

fn main() {}
