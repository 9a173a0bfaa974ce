//! The bodies of Palisade's fuzz targets, shared by the libFuzzer binaries (`fuzz/libfuzzer`,
//! run by `make fuzz`) and by this crate's corpus test (`make test`), which replays every
//! checked-in seed without libFuzzer or a nightly compiler.
//!
//! Each target takes bytes, drives one parser that hostile input reaches, and panics when a
//! property fails: not only "does not crash" but what must hold of whatever the parser
//! accepts (a decoded bundle encodes and decodes to itself, and so on). Each returns an
//! outcome so that the corpus test can check that the seeds reach the parser's deep end,
//! not only its first refusal.
//!
//! Seed corpora live in `fuzz/corpus/<target>/`; [`seeds`] makes the `seed-*` files from the
//! real encoders (`PALISADE_FUZZ_WRITE_SEEDS=1 cargo test -p palisade-fuzz` rewrites them).

pub mod bundle;
pub mod h1;
pub mod h1_request;
pub mod identify;
pub mod path;
mod seeds;

pub use seeds::seeds;

/// The targets, by the name of their libFuzzer binary and corpus directory.
pub const TARGETS: &[&str] = &[
    "bundle_decode",
    "h1_request",
    "h1_response",
    "identify_headers",
    "path_normalize",
];

/// Runs target `name` on `data`, discarding its outcome; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "bundle_decode" => {
            bundle::bundle_decode(data);
        }
        "h1_request" => {
            h1_request::h1_request(data);
        }
        "h1_response" => {
            h1::h1_response(data);
        }
        "identify_headers" => {
            identify::identify_headers(data);
        }
        "path_normalize" => {
            path::path_normalize(data);
        }
        _ => return false,
    }
    true
}
