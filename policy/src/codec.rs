//! The bundle's wire format: canonical binary sections, each zlib-compressed into one shard
//! that fits a ConfigMap's `binaryData`, plus a small JSON [`Manifest`] naming the shards.
//!
//! A section (uncompressed) is `"PLSB"`, the format version (u32 LE), a kind byte and a body:
//! kind 0 is a piece of the JSON metadata (rules, actions, class table, range counts); kind 4
//! and 6 are runs of delta-encoded IPv4 / IPv6 ranges. Sections come in that order. Range runs
//! are cut at content-defined points, so an edit to one list rewrites only the shards around
//! it, and an action edit that leaves IPs alone rewrites only the metadata shard.
//!
//! The bundle hash is the sha256 of all sections (uncompressed) in order. `decode` checks the
//! version, every shard's size and sha256, the bundle hash, and the structure; a bad bundle is
//! an error, never a partial bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::actionset::ActionId;
use crate::bundle::{Bundle, BundleAction, FORMAT_VERSION};
use crate::error::BundleError;
use crate::ipset::{Addr, IpSet, RangeSet};
use crate::wire::{Reader, deflate, get_ranges, inflate, put_ranges};

/// The largest shard (compressed bytes): base64 in `binaryData` makes it 900 KiB, leaving
/// room under the 1 MiB object limit for metadata.
pub const SHARD_MAX_BYTES: usize = 675 * 1024;

/// The most shards a bundle may have (256 × 675 KiB ≈ 169 MiB).
pub const MAX_SHARDS: usize = 256;

/// The largest uncompressed section `decode` accepts (bounds zlib bombs).
pub const MAX_SECTION_BYTES: usize = 1024 * 1024;

const MAGIC: &[u8; 4] = b"PLSB";
const HEADER: usize = 9;
/// Metadata is cut into pieces of this many bytes, so that even incompressible JSON fits
/// [`SHARD_MAX_BYTES`] once compressed.
const META_PIECE: usize = 640 * 1024;
/// Range sections are cut at a content-defined point once they reach this size, and at the
/// latest at [`MAX_SECTION_BYTES`]; a section whose compressed form is still too big for a
/// shard is split in two.
const SECTION_MIN: usize = 512 * 1024;

const KIND_META: u8 = 0;
const KIND_V4: u8 = 4;
const KIND_V6: u8 = 6;

/// Describes an encoded bundle; the operator stores it (as JSON) in the manifest ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the encoder.
    pub format_version: u32,
    /// sha256 (lower-case hex) of the uncompressed sections in order.
    pub bundle_hash: String,
    /// The generation of the inputs the bundle was compiled from.
    pub generation: u64,
    /// The shards, in order.
    pub shards: Vec<ShardRef>,
}

/// One shard as named by the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardRef {
    /// Content-derived name (`s-` + 16 hex digits of its sha256): an unchanged shard keeps its
    /// name, so the operator need not rewrite it. Valid as a ConfigMap key or name suffix.
    pub name: String,
    /// sha256 of the compressed shard bytes, lower-case hex.
    pub sha256: String,
    /// Size of the compressed shard in bytes.
    pub size: u64,
}

/// An encoded bundle: the manifest and the shards' bytes, in manifest order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The manifest.
    pub manifest: Manifest,
    /// `(name, compressed bytes)` per shard.
    pub shards: Vec<(String, Vec<u8>)>,
}

impl Manifest {
    /// The manifest as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a manifest.
    pub fn from_json(s: &str) -> Result<Self, BundleError> {
        serde_json::from_str(s).map_err(BundleError::Json)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetaRef<'a> {
    generation: u64,
    rules: &'a [String],
    actions: &'a [BundleAction],
    classes: &'a [Vec<ActionId>],
    v4_ranges: usize,
    v6_ranges: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted_proxies: Option<&'a crate::TrustedProxies>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    debug_headers: bool,
    /// Left out when it is the default (IP only), so sidecars of an older version still read
    /// bundles of namespaces whose rules all judge by IP.
    #[serde(skip_serializing_if = "is_default_count_keys")]
    count_keys: &'a [crate::ClientKeyKind],
    /// Left out when it is the default (/64).
    #[serde(skip_serializing_if = "is_default_prefix_len")]
    ipv6_prefix_length: u8,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_default_prefix_len(len: &u8) -> bool {
    *len == crate::key::DEFAULT_IPV6_PREFIX_LEN
}

fn is_default_count_keys(keys: &&[crate::ClientKeyKind]) -> bool {
    *keys == crate::DEFAULT_COUNT_KEYS
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Meta {
    generation: u64,
    rules: Vec<String>,
    actions: Vec<BundleAction>,
    classes: Vec<Vec<u16>>,
    v4_ranges: usize,
    v6_ranges: usize,
    /// Absent in bundles without the annotation (and in every bundle of older operators).
    #[serde(default)]
    trusted_proxies: Option<crate::TrustedProxies>,
    /// Absent unless the namespace asks for debug headers.
    #[serde(default)]
    debug_headers: bool,
    /// Absent when only IP clients are counted.
    #[serde(default)]
    count_keys: Option<Vec<crate::ClientKeyKind>>,
    /// Absent when it is /64.
    #[serde(default)]
    ipv6_prefix_length: Option<u8>,
}

impl Serialize for ActionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

/// Encodes a bundle into a manifest and shards.
pub fn encode(bundle: &Bundle) -> Result<Encoded, BundleError> {
    let meta = serde_json::to_vec(&MetaRef {
        generation: bundle.generation,
        rules: &bundle.rules,
        actions: &bundle.actions,
        classes: &bundle.ips.classes,
        v4_ranges: bundle.ips.v4.len(),
        v6_ranges: bundle.ips.v6.len(),
        trusted_proxies: bundle.trusted_proxies.as_ref(),
        debug_headers: bundle.debug_headers,
        count_keys: &bundle.count_keys,
        ipv6_prefix_length: bundle.ipv6_prefix_len,
    })
    .map_err(BundleError::Json)?;
    let mut packed: Vec<Packed> = Vec::new();
    for piece in meta.chunks(META_PIECE) {
        let mut s = header(KIND_META);
        s.extend_from_slice(piece);
        packed.push(pack(s)?);
    }
    range_shards(&bundle.ips.v4, KIND_V4, &mut packed)?;
    range_shards(&bundle.ips.v6, KIND_V6, &mut packed)?;
    if packed.len() > MAX_SHARDS {
        return Err(BundleError::TooLarge {
            shards: packed.len(),
        });
    }
    let mut hasher = Sha256::new();
    let mut shards = Vec::with_capacity(packed.len());
    let mut refs = Vec::with_capacity(packed.len());
    for (section, bytes) in packed {
        hasher.update(&section);
        let sha = hex::encode(Sha256::digest(&bytes));
        let name = format!("s-{}", &sha[..16]);
        refs.push(ShardRef {
            name: name.clone(),
            sha256: sha,
            size: bytes.len() as u64,
        });
        shards.push((name, bytes));
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        bundle_hash: hex::encode(hasher.finalize()),
        generation: bundle.generation,
        shards: refs,
    };
    Ok(Encoded { manifest, shards })
}

/// zlib level per section: JSON metadata compresses well at 6; delta-encoded ranges are
/// near-random, where level 1 is several times faster for about the same size.
fn level(section: &[u8]) -> u32 {
    if section.get(HEADER - 1) == Some(&KIND_META) {
        6
    } else {
        1
    }
}

fn header(kind: u8) -> Vec<u8> {
    let mut s = Vec::with_capacity(64 * 1024);
    s.extend_from_slice(MAGIC);
    s.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    s.push(kind);
    s
}

/// A section (uncompressed) and its shard (compressed).
type Packed = (Vec<u8>, Vec<u8>);

fn pack(section: Vec<u8>) -> Result<Packed, BundleError> {
    let bytes = deflate(&section, level(&section)).map_err(|e| BundleError::Inflate {
        name: "encode".into(),
        source: e,
    })?;
    Ok((section, bytes))
}

/// Packs a family's ranges into shards, cut at content-defined points.
fn range_shards<A: Addr>(
    set: &RangeSet<A>,
    kind: u8,
    out: &mut Vec<Packed>,
) -> Result<(), BundleError> {
    let ranges: Vec<(A, A, u16)> = set.iter().collect();
    // Room for the header, the count varint and one worst-case range (three 19-byte varints).
    let budget = MAX_SECTION_BYTES - HEADER - 19 - 57;
    let mut begin = 0;
    while begin < ranges.len() {
        let (mut end, mut size, mut next) = (begin, 0usize, 0u128);
        while end < ranges.len() {
            let (s, e, c) = ranges[end];
            let (s, e) = (s.to_u128(), e.to_u128());
            size += varint_len(s - next) + varint_len(e - s) + varint_len(u128::from(c));
            next = e.wrapping_add(1);
            end += 1;
            if size >= budget || (size >= SECTION_MIN && cut_here(s)) {
                break;
            }
        }
        pack_ranges(kind, &ranges[begin..end], out)?;
        begin = end;
    }
    Ok(())
}

/// Packs one run of ranges, halving it until each half's shard fits.
fn pack_ranges<A: Addr>(
    kind: u8,
    ranges: &[(A, A, u16)],
    out: &mut Vec<Packed>,
) -> Result<(), BundleError> {
    let mut section = header(kind);
    put_ranges(&mut section, ranges);
    let packed = pack(section)?;
    if packed.1.len() > SHARD_MAX_BYTES && ranges.len() > 1 {
        let (a, b) = ranges.split_at(ranges.len() / 2);
        pack_ranges(kind, a, out)?;
        pack_ranges(kind, b, out)
    } else {
        out.push(packed);
        Ok(())
    }
}

fn varint_len(v: u128) -> usize {
    (128 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

/// A content-defined cut point: about one range in 1024.
fn cut_here(start: u128) -> bool {
    let x = (start as u64 ^ (start >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x >> 54 == 0
}

/// Decodes a bundle from its manifest and shards (by name).
pub fn decode(
    manifest: &Manifest,
    shards: &BTreeMap<String, Vec<u8>>,
) -> Result<Bundle, BundleError> {
    decode_with(manifest, |name| shards.get(name).map(Vec::as_slice))
}

/// Decodes a bundle, fetching each shard's bytes by name through `shard`.
pub fn decode_with<'a>(
    manifest: &Manifest,
    mut shard: impl FnMut(&str) -> Option<&'a [u8]>,
) -> Result<Bundle, BundleError> {
    check_version(manifest.format_version)?;
    if manifest.shards.len() > MAX_SHARDS {
        return Err(BundleError::TooLarge {
            shards: manifest.shards.len(),
        });
    }
    let mut hasher = Sha256::new();
    let mut parts = Parts::default();
    for r in &manifest.shards {
        let bytes = shard(&r.name).ok_or_else(|| BundleError::MissingShard {
            name: r.name.clone(),
        })?;
        if bytes.len() as u64 != r.size || bytes.len() > SHARD_MAX_BYTES {
            return Err(BundleError::ShardSize {
                name: r.name.clone(),
                expected: r.size,
                found: bytes.len() as u64,
            });
        }
        if hex::encode(Sha256::digest(bytes)) != r.sha256 {
            return Err(BundleError::ShardHash {
                name: r.name.clone(),
            });
        }
        let section = inflate(bytes, MAX_SECTION_BYTES).map_err(|e| BundleError::Inflate {
            name: r.name.clone(),
            source: e,
        })?;
        hasher.update(&section);
        parts.add(&section)?;
    }
    if hex::encode(hasher.finalize()) != manifest.bundle_hash {
        return Err(BundleError::BundleHash);
    }
    parts.finish(manifest.generation)
}

fn check_version(found: u32) -> Result<(), BundleError> {
    if found == FORMAT_VERSION {
        Ok(())
    } else {
        Err(BundleError::UnsupportedVersion {
            found,
            supported: FORMAT_VERSION,
        })
    }
}

fn malformed(what: &str) -> BundleError {
    BundleError::Malformed {
        what: what.to_string(),
    }
}

/// The decoded sections, accumulated in order.
#[derive(Default)]
struct Parts {
    meta: Vec<u8>,
    v4: Vec<(u32, u32, u16)>,
    v6: Vec<(u128, u128, u16)>,
    last_kind: u8,
}

impl Parts {
    fn add(&mut self, section: &[u8]) -> Result<(), BundleError> {
        let mut r = Reader::new(section);
        if r.bytes(4) != Some(MAGIC.as_slice()) {
            return Err(malformed("section magic"));
        }
        check_version(r.u32_le().ok_or_else(|| malformed("section header"))?)?;
        let kind = r.u8().ok_or_else(|| malformed("section header"))?;
        if kind < self.last_kind {
            return Err(malformed("section order"));
        }
        self.last_kind = kind;
        let ok = match kind {
            KIND_META => {
                self.meta.extend_from_slice(r.rest());
                Some(())
            }
            KIND_V4 => get_ranges(&mut r, &mut self.v4),
            KIND_V6 => get_ranges(&mut r, &mut self.v6),
            _ => return Err(malformed("section kind")),
        };
        if ok.is_none() || !r.is_empty() {
            return Err(malformed("range section"));
        }
        Ok(())
    }

    fn finish(self, generation: u64) -> Result<Bundle, BundleError> {
        let meta: Meta = serde_json::from_slice(&self.meta).map_err(BundleError::Json)?;
        if meta.generation != generation {
            return Err(malformed("generation differs from the manifest"));
        }
        if meta.v4_ranges != self.v4.len() || meta.v6_ranges != self.v6.len() {
            return Err(malformed("range count"));
        }
        let n_actions = meta.actions.len();
        if n_actions > crate::MAX_ACTIONS
            || meta
                .classes
                .iter()
                .flatten()
                .any(|&a| usize::from(a) >= n_actions)
        {
            return Err(malformed("class table"));
        }
        let n_classes = meta.classes.len();
        if self.v4.iter().any(|r| usize::from(r.2) >= n_classes)
            || self.v6.iter().any(|r| usize::from(r.2) >= n_classes)
        {
            return Err(malformed("range class"));
        }
        let v4 = RangeSet::from_sorted(self.v4).map_err(|_| malformed("IPv4 ranges"))?;
        let v6 = RangeSet::from_sorted(self.v6).map_err(|_| malformed("IPv6 ranges"))?;
        let classes = meta
            .classes
            .into_iter()
            .map(|c| c.into_iter().map(ActionId).collect())
            .collect();
        Ok(Bundle {
            generation: meta.generation,
            rules: meta.rules,
            actions: meta.actions,
            ips: IpSet { v4, v6, classes },
            trusted_proxies: meta.trusted_proxies,
            debug_headers: meta.debug_headers,
            count_keys: meta
                .count_keys
                .unwrap_or_else(|| crate::DEFAULT_COUNT_KEYS.to_vec()),
            ipv6_prefix_len: meta
                .ipv6_prefix_length
                .unwrap_or(crate::key::DEFAULT_IPV6_PREFIX_LEN)
                .clamp(crate::key::MIN_IPV6_PREFIX_LEN, 128),
        })
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
