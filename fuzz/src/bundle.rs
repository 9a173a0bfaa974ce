//! `bundle_decode`: what a sidecar does with a bundle someone else wrote. A namespace editor
//! can write the manifest and shard ConfigMaps (issue 18), so every byte of them is hostile
//! input to [`decode`] and to what the sidecar builds from its result.
//!
//! Random bytes would stop at the first sha256 check, so the harness does the bookkeeping an
//! encoder does: the input names the sections, the harness compresses them, hashes them and
//! writes a manifest that agrees with them; the fuzzer then explores the parser behind the
//! integrity checks. Input layout:
//!
//! ```text
//! byte 0       flags: bit 0 = raw (each body is a shard's compressed bytes, used as given)
//! bytes 1..9   the manifest's generation, u64 little-endian
//! then, repeated until the input ends:
//!   kind (u8), length (u16 LE), body (length bytes; a short last body is taken as is)
//! ```
//!
//! Without the raw flag each body becomes the section `"PLSB" version kind body`, compressed.
//!
//! Properties of a bundle that decodes: it encodes again and decodes to itself; each of its
//! ranges looks up to its own class; the sidecar's compiled policy answers consistently
//! (the decision is one of the matched actions and has the verb it claims).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use palisade_policy::{
    Bundle, CompiledPolicy, Decision, Encoded, FORMAT_VERSION, MAX_SECTION_BYTES, MAX_SHARDS,
    Manifest, Request, ShardRef, Verb, decode, encode, evaluate,
};
use sha2::{Digest, Sha256};

/// Raw flag: bodies are compressed shards.
const RAW: u8 = 1;
/// A section's header: magic, format version (u32 LE), kind.
const MAGIC: &[u8; 4] = b"PLSB";
const HEADER: usize = 9;

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded, and every property held.
    Decoded {
        /// Actions in the bundle.
        actions: usize,
        /// IPv4 + IPv6 ranges in the bundle.
        ranges: usize,
    },
    /// Refused by `decode`, with its reason (the sidecar's metric label).
    Rejected(&'static str),
}

/// The target: builds a manifest and shards from `data`, decodes them, and checks the
/// properties of whatever decodes. Panics when a property fails.
pub fn bundle_decode(data: &[u8]) -> Outcome {
    let Some((&flags, rest)) = data.split_first() else {
        return Outcome::Rejected("Empty");
    };
    let (generation, pieces) = match rest.split_first_chunk::<8>() {
        Some((g, pieces)) => (u64::from_le_bytes(*g), pieces),
        None => (0, &[][..]),
    };
    let shards: Vec<Vec<u8>> = pieces_of(pieces)
        .take(MAX_SHARDS + 2)
        .map(|(kind, body)| {
            if flags & RAW != 0 {
                body.to_vec()
            } else {
                deflate(&section(kind, body))
            }
        })
        .collect();
    let (manifest, by_name) = manifest(generation, &shards);
    match decode(&manifest, &by_name) {
        Ok(bundle) => {
            let outcome = Outcome::Decoded {
                actions: bundle.actions.len(),
                ranges: bundle.ips.v4.len() + bundle.ips.v6.len(),
            };
            check_round_trip(&bundle);
            check_ranges(&bundle);
            check_verdicts(bundle);
            outcome
        }
        Err(e) => Outcome::Rejected(e.reason()),
    }
}

/// The fuzz input that makes `encoded` again: its sections, compressed by the harness
/// (`raw == false`) or its shards as they are (`raw == true`). Seeds are made this way.
pub fn input_for(encoded: &Encoded, raw: bool) -> Vec<u8> {
    let mut out = vec![u8::from(raw)];
    out.extend_from_slice(&encoded.manifest.generation.to_le_bytes());
    for (_, bytes) in &encoded.shards {
        let (kind, body) = if raw {
            (0, bytes.clone())
        } else {
            let section = inflate(bytes).unwrap_or_default();
            let kind = section.get(HEADER - 1).copied().unwrap_or(0);
            (kind, section.get(HEADER..).unwrap_or_default().to_vec())
        };
        let len = u16::try_from(body.len()).expect("seed bodies fit a u16 length");
        out.push(kind);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// `(kind, body)` pieces; a truncated last piece keeps what is there.
fn pieces_of(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&kind, rest) = data.split_first()?;
        let (len, rest) = match rest.split_first_chunk::<2>() {
            Some((len, rest)) => (usize::from(u16::from_le_bytes(*len)), rest),
            None => (rest.len(), rest),
        };
        let (body, tail) = rest.split_at(len.min(rest.len()));
        data = tail;
        Some((kind, body))
    })
}

fn section(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(HEADER + body.len());
    s.extend_from_slice(MAGIC);
    s.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    s.push(kind);
    s.extend_from_slice(body);
    s
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = ZlibEncoder::new(Vec::new(), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Inflates at most one byte past the decoder's limit (enough to hash what it will hash).
fn inflate(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    ZlibDecoder::new(bytes)
        .take(MAX_SECTION_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// A manifest that agrees with `shards` (names, sizes, hashes, bundle hash).
fn manifest(generation: u64, shards: &[Vec<u8>]) -> (Manifest, BTreeMap<String, Vec<u8>>) {
    let mut bundle_hash = Sha256::new();
    let mut refs = Vec::with_capacity(shards.len());
    let mut by_name = BTreeMap::new();
    for (i, bytes) in shards.iter().enumerate() {
        bundle_hash.update(inflate(bytes).unwrap_or_default());
        let name = format!("s-{i:04}");
        refs.push(ShardRef {
            name: name.clone(),
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        });
        by_name.insert(name, bytes.clone());
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        bundle_hash: hex::encode(bundle_hash.finalize()),
        generation,
        shards: refs,
    };
    (manifest, by_name)
}

/// What decodes encodes again, and decodes to the same bundle.
fn check_round_trip(bundle: &Bundle) {
    let encoded =
        encode(bundle).unwrap_or_else(|e| panic!("a decoded bundle does not encode again: {e}"));
    let shards: BTreeMap<String, Vec<u8>> = encoded.shards.into_iter().collect();
    let again = decode(&encoded.manifest, &shards)
        .unwrap_or_else(|e| panic!("a re-encoded bundle does not decode: {e}"));
    assert_eq!(&again, bundle, "decode(encode(bundle)) differs from bundle");
}

/// Each range (a sample of at most 64 per family) looks up to its own class.
fn check_ranges(bundle: &Bundle) {
    let ips = &bundle.ips;
    let classes = ips.classes.len();
    for (start, end, class) in ips.v4.iter().take(64) {
        assert!(usize::from(class) < classes, "v4 range class out of table");
        assert_eq!(ips.v4.lookup(start), Some(class), "v4 range start {start}");
        assert_eq!(ips.v4.lookup(end), Some(class), "v4 range end {end}");
    }
    for (start, end, class) in ips.v6.iter().take(64) {
        assert!(usize::from(class) < classes, "v6 range class out of table");
        assert_eq!(ips.v6.lookup(start), Some(class), "v6 range start {start}");
        assert_eq!(ips.v6.lookup(end), Some(class), "v6 range end {end}");
    }
}

/// The sidecar's view of the bundle answers consistently for a few requests.
fn check_verdicts(bundle: Bundle) {
    let mut ips = vec![IpAddr::from([0u8; 4]), IpAddr::from([0u8; 16])];
    ips.extend(
        bundle
            .ips
            .v4
            .iter()
            .take(4)
            .map(|(s, _, _)| IpAddr::from(s.to_be_bytes())),
    );
    ips.extend(
        bundle
            .ips
            .v6
            .iter()
            .take(4)
            .map(|(s, _, _)| IpAddr::from(s.to_be_bytes())),
    );
    let policy = CompiledPolicy::new(bundle, &BTreeMap::new());
    let selected = policy.selected();
    for ip in ips {
        for (method, path) in [("GET", "/"), ("POST", "/admin/x")] {
            let v = evaluate(&policy, &Request::new(ip, method, path));
            assert!(
                !v.matched.intersects(&v.observed),
                "matched and observed overlap"
            );
            assert_eq!(
                v.matched.and_not(&selected),
                Default::default(),
                "unselected match"
            );
            match v.decision {
                Decision::Deny(id) => {
                    assert!(v.matched.contains(id), "deny by an unmatched action");
                    assert!(policy.deny_response(id).is_some(), "deny without response");
                }
                Decision::Allow(id) => {
                    assert!(v.matched.contains(id), "allow by an unmatched action");
                    let verb = policy.action(id).map(|a| &a.verb);
                    assert_eq!(verb, Some(&Verb::Allow), "allow by a non-allow action");
                }
                Decision::Forward => {}
            }
            if !v.flags.is_empty() {
                assert_eq!(v.decision, Decision::Forward, "flags on a decided request");
                assert_eq!(
                    v.flags.and_not(&v.matched),
                    Default::default(),
                    "flag unmatched"
                );
                for id in v.flags.iter() {
                    let verb = policy.action(id).map(|a| &a.verb);
                    assert!(
                        matches!(verb, Some(Verb::Flag { .. })),
                        "flag by a non-flag"
                    );
                }
            }
            let _ = policy.flag_headers(&v).count();
        }
    }
}
