//! The Palisade operator: compiles SecurityActions and DetectionRules into policy bundles,
//! injects the sidecar into API pods, and runs the detection collector.
//!
//! A library with a thin binary (`main.rs`), so that component tests and tools link the
//! operator's own code instead of compiling its sources again.
#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod blast;
pub mod caches;
pub mod collector;
pub mod context;
pub mod injector;
pub mod kube_requests;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod replay_cli;
pub mod run;
pub mod signing;
pub mod watch_one;
