//! Replays every checked-in corpus file through its target (`make test`'s short run of the
//! fuzz corpus), and checks that the seeds still reach the decoders' deep end: a format
//! change that makes every seed a first-check refusal would leave the fuzzer exploring
//! nothing.
//!
//! `PALISADE_FUZZ_WRITE_SEEDS=1` rewrites the `seed-*` files from the real encoders first.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;

use palisade_fuzz::bundle::{Outcome, bundle_decode};
use palisade_fuzz::identify::identify_headers;
use palisade_fuzz::{TARGETS, run, seeds};
use palisade_sidecar::identify::IpSource;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// The files of a target's corpus, sorted, with their bytes.
fn files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus(target);
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Rewrites the `seed-*` files when asked, once per test process.
fn write_seeds_if_asked() {
    static ONCE: Once = Once::new();
    if std::env::var_os("PALISADE_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    ONCE.call_once(|| {
        for (target, name, bytes) in seeds() {
            let dir = corpus(target);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(name), bytes).unwrap();
        }
    });
}

#[test]
fn every_corpus_file_holds_its_target_properties() {
    write_seeds_if_asked();
    for target in TARGETS {
        let files = files(target);
        assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
        for (name, bytes) in files {
            // Shown with the failure: which file broke the property.
            eprintln!("{target}/{name}");
            assert!(run(target, &bytes), "unknown target {target}");
        }
    }
}

#[test]
fn bundle_seeds_decode_and_exercise_both_modes() {
    write_seeds_if_asked();
    let seeds: Vec<_> = files("bundle_decode")
        .into_iter()
        .filter(|(name, _)| name.starts_with("seed-"))
        .collect();
    assert!(seeds.len() >= 6, "the bundle seeds are missing");
    for (name, bytes) in seeds {
        let outcome = bundle_decode(&bytes);
        assert!(
            matches!(outcome, Outcome::Decoded { .. }),
            "seed {name} no longer decodes ({outcome:?}); rewrite the seeds with \
             PALISADE_FUZZ_WRITE_SEEDS=1 cargo test -p palisade-fuzz"
        );
    }
}

#[test]
fn identify_seeds_reach_every_source_of_identity() {
    write_seeds_if_asked();
    let outcomes: Vec<_> = files("identify_headers")
        .into_iter()
        .map(|(_, bytes)| identify_headers(&bytes))
        .collect();
    for source in IpSource::ALL {
        let seen = outcomes.iter().any(|o| o.ip_source == source);
        assert!(seen, "no seed resolves its client IP by {source:?}");
    }
    assert!(
        outcomes.iter().any(|o| o.ignored),
        "no seed has an ignored header"
    );
    assert!(outcomes.iter().any(|o| o.token), "no seed has a token");
    assert!(outcomes.iter().any(|o| o.api_key), "no seed has an API key");
    assert!(
        outcomes.iter().any(|o| o.developer),
        "no seed has a developer"
    );
}

#[test]
fn path_seeds_are_normalised_refused_and_stripped_of_parameters() {
    use palisade_fuzz::path::{Outcome, path_normalize};
    write_seeds_if_asked();
    let outcomes: Vec<_> = files("path_normalize")
        .into_iter()
        .map(|(_, bytes)| path_normalize(&bytes))
        .collect();
    let has = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().any(f);
    assert!(has(&|o| matches!(
        o,
        Outcome::Normalized { changed: true, .. }
    )));
    assert!(has(&|o| matches!(
        o,
        Outcome::Normalized { changed: false, .. }
    )));
    assert!(has(&|o| matches!(
        o,
        Outcome::Normalized { params: true, .. }
    )));
    assert!(has(&|o| *o == Outcome::Refused("EscapedSlash")));
    assert!(has(&|o| *o == Outcome::Refused("Backslash")));
    assert!(has(&|o| *o == Outcome::Refused("InvalidPercentEncoding")));
}

#[test]
fn h1_request_seeds_reach_every_framing_and_refusal() {
    use palisade_fuzz::h1_request::{Outcome, h1_request};
    use palisade_sidecar::h1_server::BodyFraming;
    write_seeds_if_asked();
    let outcomes: Vec<_> = files("h1_request")
        .into_iter()
        .map(|(_, bytes)| h1_request(&bytes))
        .collect();
    let has = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().any(f);
    for framing in [
        BodyFraming::Empty,
        BodyFraming::Length(5),
        BodyFraming::Chunked,
    ] {
        assert!(
            has(&|o| *o == Outcome::Head(framing)),
            "no seed is framed {framing:?}"
        );
    }
    for (status, reason) in [
        (400, "Transfer-Encoding"),
        (400, "Content-Length"),
        (400, "method or field name"),
        (431, "larger"),
        (431, "more fields"),
    ] {
        assert!(
            has(&|o| matches!(o, Outcome::Refused(s, r) if *s == status && r.contains(reason))),
            "no seed is refused {status} for {reason}: {outcomes:?}"
        );
    }
}

#[test]
fn h1_seeds_reach_every_framing_refusal_and_the_body_decoder() {
    use palisade_fuzz::h1::{Outcome, h1_response};
    use palisade_sidecar::h1::Framing;
    write_seeds_if_asked();
    let outcomes: Vec<_> = files("h1_response")
        .into_iter()
        .map(|(_, bytes)| h1_response(&bytes))
        .collect();
    let has = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().any(f);
    for framing in [Framing::Empty, Framing::Length(5), Framing::Close] {
        assert!(
            has(&|o| *o == Outcome::Head(framing)),
            "no seed is framed {framing:?}"
        );
    }
    for refusal in [
        "Head",
        "HeadTooLarge",
        "BadField",
        "ConflictingLength",
        "UnsupportedCoding",
        "UnrequestedUpgrade",
    ] {
        assert!(
            has(&|o| *o == Outcome::Refused(refusal)),
            "no seed is refused {refusal}"
        );
    }
    assert!(has(&|o| *o == Outcome::Partial), "no seed is incomplete");
    for after_head in [true, false] {
        assert!(
            has(&|o| matches!(
                o,
                Outcome::Body { after_head: a, ended: true, trailers: true, refused: None }
                    if *a == after_head
            )),
            "no seed decodes a whole chunked body with trailers (after a head: {after_head})"
        );
        assert!(
            has(&|o| matches!(
                o,
                Outcome::Body { after_head: a, refused: Some(_), .. } if *a == after_head
            )),
            "no seed has a broken chunked body (after a head: {after_head})"
        );
    }
}
