//! Tests of the bundle codec: round trips (up to 1M prefixes), corruption, versions.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::compile::compile;
use crate::spec::{Inputs, ListRef, PathMatch};
use crate::testutil::{Rng, deny, flag, random_v4_lines, ts, with_ips};

fn small_bundle() -> Bundle {
    let mut a = with_ips(deny("a"), &["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]);
    a.conditions.user_agents = vec!["bot".into()];
    a.conditions.paths = vec![
        PathMatch::Exact("/admin".into()),
        PathMatch::PrefixIgnoreCase("/Internal/".into()),
    ];
    let b = with_ips(flag("b", "x-b"), &["10.1.0.0/16", "::/0"]);
    let inputs = Inputs {
        actions: vec![a, b],
        generation: 42,
        ..Default::default()
    };
    compile(&inputs, ts("2026-01-01T00:00:00Z")).bundle
}

fn by_name(e: &Encoded) -> BTreeMap<String, Vec<u8>> {
    e.shards.iter().cloned().collect()
}

#[test]
fn small_bundle_round_trips_and_is_canonical() {
    let bundle = small_bundle();
    let enc = encode(&bundle).unwrap();
    assert_eq!(enc.manifest.format_version, FORMAT_VERSION);
    assert_eq!(enc.manifest.generation, 42);
    let back = decode(&enc.manifest, &by_name(&enc)).unwrap();
    assert_eq!(back, bundle);
    assert_eq!(
        encode(&back).unwrap(),
        enc,
        "re-encoding gives the same bytes"
    );
    let manifest = Manifest::from_json(&enc.manifest.to_json()).unwrap();
    assert_eq!(manifest, enc.manifest);
    assert!(enc.manifest.to_json().contains("\"bundleHash\""));
}

#[test]
fn path_conditions_keep_their_wire_form() {
    // Exact and Prefix are written as before case-insensitive paths existed, so bundles of
    // either age decode; the new kinds have names of their own.
    let json = |p: PathMatch| serde_json::to_string(&p).unwrap();
    assert_eq!(json(PathMatch::Exact("/a".into())), r#"{"exact":"/a"}"#);
    assert_eq!(json(PathMatch::Prefix("/a".into())), r#"{"prefix":"/a"}"#);
    assert_eq!(
        json(PathMatch::ExactIgnoreCase("/a".into())),
        r#"{"exactIgnoreCase":"/a"}"#
    );
    assert_eq!(
        json(PathMatch::PrefixIgnoreCase("/a".into())),
        r#"{"prefixIgnoreCase":"/a"}"#
    );
}

#[test]
fn empty_bundle_round_trips() {
    let enc = encode(&Bundle::default()).unwrap();
    assert_eq!(enc.shards.len(), 1);
    assert_eq!(
        decode(&enc.manifest, &by_name(&enc)).unwrap(),
        Bundle::default()
    );
}

#[test]
fn a_million_prefixes_round_trip_exactly_in_shards_that_fit() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let text = random_v4_lines(&mut rng, 1_000_000).join("\n");
    let list = ListRef {
        config_map: "tor".into(),
        key: "list".into(),
    };
    let mut a = deny("big");
    a.conditions.ip_lists = vec![list.clone()];
    let mut b = flag("also-big", "x-b");
    b.conditions.ip_lists = vec![list.clone()];
    let inputs = Inputs {
        actions: vec![a, b, with_ips(deny("small"), &["1.2.3.4"])],
        lists: [(list, text.clone())].into(),
        ..Default::default()
    };
    let bundle = compile(&inputs, ts("2026-01-01T00:00:00Z")).bundle;
    let expected = crate::lists::PrefixList::parse(&text).unwrap();
    assert_eq!(expected.prefixes, 1_000_000);

    let enc = encode(&bundle).unwrap();
    // About 1.9 MB compressed: a handful of ConfigMaps, not dozens.
    assert!(
        (2..=8).contains(&enc.shards.len()),
        "{} shards",
        enc.shards.len()
    );
    for (_, bytes) in &enc.shards {
        assert!(bytes.len() <= SHARD_MAX_BYTES);
        // base64 in binaryData stays under 900 KiB.
        assert!(bytes.len().div_ceil(3) * 4 <= 900 * 1024);
    }
    let back = decode(&enc.manifest, &by_name(&enc)).unwrap();
    assert_eq!(back, bundle);

    // The decoded set is exactly the list (plus the small action's host).
    let shared = back.ips.classes.iter().position(|c| c.len() == 2).unwrap() as u16;
    let mut from_bundle: Vec<(u32, u32)> = Vec::new();
    for (s, e, c) in back.ips.v4.iter() {
        let covered = c == shared || back.ips.classes[usize::from(c)].len() == 3;
        if covered {
            match from_bundle.last_mut() {
                Some(last) if last.1.checked_add(1) == Some(s) => last.1 = e,
                _ => from_bundle.push((s, e)),
            }
        }
    }
    assert_eq!(from_bundle, expected.v4);
}

#[test]
fn corrupted_or_missing_shards_are_rejected() {
    let enc = encode(&small_bundle()).unwrap();
    let name = enc.manifest.shards[0].name.clone();

    let mut shards = by_name(&enc);
    shards.get_mut(&name).unwrap()[3] ^= 0x40;
    assert_eq!(
        decode(&enc.manifest, &shards).unwrap_err().reason(),
        "ShardHashMismatch"
    );

    let mut shards = by_name(&enc);
    shards.remove(&name);
    assert_eq!(
        decode(&enc.manifest, &shards).unwrap_err().reason(),
        "MissingShard"
    );

    let mut shards = by_name(&enc);
    shards.get_mut(&name).unwrap().push(0);
    assert_eq!(
        decode(&enc.manifest, &shards).unwrap_err().reason(),
        "ShardSizeMismatch"
    );

    // A shard that matches a forged manifest but does not inflate.
    let mut manifest = enc.manifest.clone();
    let mut shards = by_name(&enc);
    let bytes = shards.get_mut(&name).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    manifest.shards[0].sha256 = hex::encode(Sha256::digest(&bytes[..]));
    assert_eq!(
        decode(&manifest, &shards).unwrap_err().reason(),
        "CorruptShard"
    );

    let mut manifest = enc.manifest.clone();
    manifest.bundle_hash = "00".repeat(32);
    assert_eq!(
        decode(&manifest, &by_name(&enc)).unwrap_err().reason(),
        "BundleHashMismatch"
    );
}

#[test]
fn forged_content_with_matching_hashes_is_still_checked() {
    // A range naming a class that does not exist, written by a buggy or hostile encoder with
    // correct hashes. (Overlaps cannot be expressed: ranges are gaps from the previous end.)
    let mut meta = header(KIND_META);
    meta.extend_from_slice(
        br#"{"generation":0,"rules":[],"actions":[],"classes":[[]],"v4Ranges":2,"v6Ranges":0}"#,
    );
    let mut ranges = header(KIND_V4);
    crate::wire::put_varint(&mut ranges, 2);
    for v in [10u128, 5, 0, 0, 0, 3] {
        crate::wire::put_varint(&mut ranges, v);
    }
    let good = {
        let mut r = header(KIND_V4);
        put_ranges::<u32>(&mut r, &[(10, 15, 0), (17, 17, 0)]);
        r
    };
    let assemble = |sections: &[&Vec<u8>]| {
        let mut hasher = Sha256::new();
        let mut shards = BTreeMap::new();
        let mut refs = Vec::new();
        for (i, s) in sections.iter().enumerate() {
            hasher.update(s);
            let bytes = deflate(s, 6).unwrap();
            refs.push(ShardRef {
                name: format!("s{i}"),
                sha256: hex::encode(Sha256::digest(&bytes)),
                size: bytes.len() as u64,
            });
            shards.insert(format!("s{i}"), bytes);
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            bundle_hash: hex::encode(hasher.finalize()),
            generation: 0,
            shards: refs,
        };
        decode(&manifest, &shards)
    };
    assert_eq!(
        assemble(&[&meta, &ranges]).unwrap_err().reason(),
        "MalformedBundle"
    );
    assert!(assemble(&[&meta, &good]).is_ok());
    assert_eq!(
        assemble(&[&good, &meta]).unwrap_err().reason(),
        "MalformedBundle"
    );
}

#[test]
fn version_mismatch_is_rejected() {
    let enc = encode(&small_bundle()).unwrap();
    let mut manifest = enc.manifest.clone();
    manifest.format_version = FORMAT_VERSION + 1;
    let err = decode(&manifest, &by_name(&enc)).unwrap_err();
    assert_eq!(err.reason(), "UnsupportedVersion");
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[test]
fn an_action_edit_leaves_range_shards_unchanged() {
    let mut rng = Rng(7);
    let text = random_v4_lines(&mut rng, 600_000).join("\n");
    let list = ListRef {
        config_map: "l".into(),
        key: "k".into(),
    };
    let mut a = deny("a");
    a.conditions.ip_lists = vec![list.clone()];
    let mut inputs = Inputs {
        actions: vec![a],
        lists: [(list, text)].into(),
        ..Default::default()
    };
    let now = ts("2026-01-01T00:00:00Z");
    let one = encode(&compile(&inputs, now).bundle).unwrap();
    inputs.actions[0].verb = crate::spec::Verb::Deny {
        status: 429,
        body: "slow down".into(),
        content_type: "text/plain".into(),
    };
    let two = encode(&compile(&inputs, now).bundle).unwrap();
    assert!(one.shards.len() > 2);
    assert_ne!(one.shards[0].0, two.shards[0].0, "metadata shard changes");
    assert_eq!(
        one.shards[1..],
        two.shards[1..],
        "range shards are untouched"
    );
}

#[test]
fn trusted_proxies_travel_only_when_set() {
    let plain = small_bundle();
    let enc = encode(&plain).unwrap();
    assert_eq!(
        decode(&enc.manifest, &by_name(&enc))
            .unwrap()
            .trusted_proxies,
        None
    );
    let mut with = plain.clone();
    with.trusted_proxies = Some(crate::TrustedProxies::parse("10.0.0.0/8,2001:db8::/32").unwrap());
    let enc2 = encode(&with).unwrap();
    assert_ne!(enc2.manifest.bundle_hash, enc.manifest.bundle_hash);
    let back = decode(&enc2.manifest, &by_name(&enc2)).unwrap();
    assert_eq!(back, with);
    // An empty list (trust no one) is not the same as no list (the sidecar's flag).
    with.trusted_proxies = Some(crate::TrustedProxies::default());
    let enc3 = encode(&with).unwrap();
    let back = decode(&enc3.manifest, &by_name(&enc3)).unwrap();
    assert_eq!(back.trusted_proxies, Some(crate::TrustedProxies::default()));
}
