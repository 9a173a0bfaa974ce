//! The names the operator, the sidecar and `kubectl palisade` agree on, declared once: the
//! ConfigMaps a namespace's policy travels in and their keys, the sidecar's container name, the
//! environment variables of the sidecar that others read, and the operator's field managers.
//! (The signature keys beside them are in [`crate::sign`].) A renamed value changes every side
//! at once; the operator's contract test checks the injector's environment against the
//! sidecar's parser.

/// The manifest ConfigMap of a namespace's bundle (and the injector's volume of it).
pub const MANIFEST_CM: &str = "palisade-bundle";
/// Key of the manifest JSON in [`MANIFEST_CM`]'s `data`.
pub const MANIFEST_KEY: &str = "manifest.json";
/// Key of a shard's bytes in its ConfigMap's `binaryData`.
pub const SHARD_KEY: &str = "shard";
/// The small ConfigMap of the detected-client set.
pub const DETECTED_CM: &str = "palisade-detected";
/// Key of the detected-client document in [`DETECTED_CM`]'s `binaryData`.
pub const DETECTED_KEY: &str = "detected";
/// The injected sidecar container's name.
pub const SIDECAR_CONTAINER: &str = "palisade-sidecar";
/// The sidecar's variable holding the signing keys it trusts (base64, comma-separated).
pub const BUNDLE_KEYS_ENV: &str = "PALISADE_BUNDLE_KEYS";
/// The sidecar's variable holding the app's port.
pub const UPSTREAM_PORT_ENV: &str = "PALISADE_UPSTREAM_PORT";
/// The operator's field manager (bundles, incidents, its own objects).
pub const OPERATOR_MANAGER: &str = "palisade-operator";
/// The collector's field manager (the request counts of actions, the Lease endpoint).
pub const COLLECTOR_MANAGER: &str = "palisade-collector";

/// The ConfigMap of shard `shard` of the bundle whose manifest is in ConfigMap `manifest_cm`.
pub fn shard_cm(manifest_cm: &str, shard: &str) -> String {
    format!("{manifest_cm}-{shard}")
}

/// The collector shard of namespace `namespace` when the collector runs `shards` shards
/// (`--collector-shards`): FNV-1a (64-bit) of the name, modulo `shards`. Stable across
/// processes, versions and architectures, so every replica, and any other component, places a
/// namespace in the same shard. `shards` 0 is read as 1.
pub fn collector_shard(namespace: &str, shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = namespace
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // (A u32 modulus leaves a u32.)
    u32::try_from(h % u64::from(shards.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_has_the_same_collector_shard_everywhere() {
        // Pinned: a change here re-homes every namespace of every running collector.
        assert_eq!(
            collector_shard("", 16),
            (0xcbf2_9ce4_8422_2325u64 % 16) as u32
        );
        let pinned: Vec<u32> = ["default", "shop", "payments", "kube-system"]
            .iter()
            .map(|ns| collector_shard(ns, 16))
            .collect();
        assert_eq!(pinned, PINNED);
        assert_eq!(collector_shard("shop", 1), 0);
        assert_eq!(collector_shard("shop", 0), 0, "0 shards read as 1");
    }

    // (Computed apart, with Python, from the FNV-1a definition.)
    const PINNED: [u32; 4] = [14, 9, 6, 14];

    #[test]
    fn namespaces_spread_over_the_shards() {
        let shards = 16;
        let mut per = vec![0u32; shards as usize];
        for i in 0..1600 {
            per[collector_shard(&format!("team-{i}"), shards) as usize] += 1;
        }
        // 100 expected per shard; a hash that clumps would leave some near 0.
        assert!(per.iter().all(|&n| (60..=140).contains(&n)), "{per:?}");
    }
}
