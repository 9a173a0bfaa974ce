//! The path a path condition is matched against: see `palisade_fuzz::path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_fuzz::path::path_normalize(data);
});
