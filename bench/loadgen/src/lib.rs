//! Tools for `make bench` (see `docs/benchmarks.md`):
//!
//! - `loadgen`: an open-loop (wrk2-style, coordinated-omission safe) HTTP/1.1 load generator
//!   with HdrHistogram percentiles, plus a closed-loop saturation mode.
//! - `mkbundle`: generates the 1M-prefix list (and the nginx/HAProxy forms of it), compiles
//!   it with 1000 actions of every condition kind into a bundle directory the sidecar reads
//!   with `--bundle-path`, and times compile, decode and evaluate.
#![forbid(unsafe_code)]

/// The sidecar's test MMDB writer, shared rather than copied.
#[path = "../../../sidecar/tests/support/mmdb.rs"]
pub mod mmdb;

/// Real-time HTTP sending of the detection traffic model (`palisade-loadgen send`, e2e).
pub mod send;
