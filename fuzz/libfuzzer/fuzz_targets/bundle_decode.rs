//! A bundle someone else wrote, as the sidecar decodes it: see `palisade_fuzz::bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    palisade_fuzz::bundle::bundle_decode(data);
});
