//! Who the sidecar thinks the client is: see `palisade_fuzz::identify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_fuzz::identify::identify_headers(data);
});
