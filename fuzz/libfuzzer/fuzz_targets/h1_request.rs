//! What the sidecar makes of a client's request head: see `palisade_fuzz::h1_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_fuzz::h1_request::h1_request(data);
});
