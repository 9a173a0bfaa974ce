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
