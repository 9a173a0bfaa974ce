//! What the sidecar makes of an application's response head and chunked body: see
//! `palisade_fuzz::h1`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_fuzz::h1::h1_response(data);
});
