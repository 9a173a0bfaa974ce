//! Signed bundles: who wrote a bundle is checked, not assumed.
//!
//! A namespace editor can write ConfigMaps (Kubernetes' `edit` role can), so the manifest
//! ConfigMap alone proves nothing. The operator signs the exact manifest JSON (and each
//! detected-client document) with an Ed25519 key it keeps in a Secret of its own namespace;
//! the manifest names every shard's sha256 and the bundle hash, so the signature covers the
//! whole bundle. Injected sidecars are given the operator's public keys at admission and
//! refuse a manifest whose signature does not verify.
//!
//! Keys rotate. Each new key is endorsed by the one before it, and the operator publishes
//! that chain of public keys beside every signature ([`PublicKey`], `keys.json`). A sidecar
//! trusts the keys it was given and every key a trusted key endorsed, so a pod admitted
//! before a rotation keeps verifying bundles signed by the keys after it. Nothing in the
//! chain can be forged without a trusted private key: an entry that is not endorsed by a key
//! already trusted is ignored.
//!
//! Every signed message starts with a domain string ([`Domain`]), so a signature made for a
//! detected-client document can never pass for a manifest, nor a key endorsement for either.

use std::collections::BTreeMap;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Key (file name) of the manifest's signature beside `manifest.json`.
pub const MANIFEST_SIG_KEY: &str = "manifest.sig";
/// Key (file name) of the published chain of public keys beside `manifest.json`.
pub const KEYS_KEY: &str = "keys.json";
/// Key of the detected-client document's signature beside `detected`.
pub const DETECTED_SIG_KEY: &str = "detected.sig";
/// The most keys the operator keeps (and publishes): with the default 30-day rotation, a pod
/// admitted up to a year ago still follows the chain.
pub const KEEP_KEYS: usize = 12;
/// The most chain entries a verifier reads (bounds the work a forged chain can cause).
pub const MAX_CHAIN: usize = 64;

/// What a signature is for; part of the signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The manifest JSON exactly as stored.
    Manifest,
    /// A detected-client document exactly as stored.
    Detected,
    /// A public key endorsed by its predecessor.
    Key,
}

impl Domain {
    fn prefix(self) -> &'static [u8] {
        match self {
            Self::Manifest => b"palisade bundle manifest v1\n",
            Self::Detected => b"palisade detected clients v1\n",
            Self::Key => b"palisade signing key v1\n",
        }
    }

    fn message(self, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.prefix().len() + body.len());
        m.extend_from_slice(self.prefix());
        m.extend_from_slice(body);
        m
    }
}

/// Why a signature or key material is refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No signature came with the document.
    #[error(
        "it carries no signature ({MANIFEST_SIG_KEY}); only the operator's bundles are applied"
    )]
    Unsigned,
    /// The signing key is neither given to this sidecar nor endorsed by a key it trusts.
    #[error(
        "it is signed by key {key_id}, which is not one of the operator's keys this pod trusts \
         (given at admission or endorsed by one of them)"
    )]
    UnknownKey {
        /// The key the signature names.
        key_id: String,
    },
    /// The signature does not verify.
    #[error("its signature by key {key_id} does not verify: the content was changed after signing")]
    BadSignature {
        /// The key the signature names.
        key_id: String,
    },
    /// A signature, key or key list is not in the expected form.
    #[error("{what} is malformed: {detail}")]
    Malformed {
        /// What was read.
        what: &'static str,
        /// Why it is not usable.
        detail: String,
    },
    /// The key could not be generated or loaded.
    #[error("the signing key cannot be {0}")]
    Key(&'static str),
}

impl SignError {
    /// PascalCase reason for metrics, logs and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unsigned => "BundleUnsigned",
            Self::UnknownKey { .. } => "SigningKeyUnknown",
            Self::BadSignature { .. } => "SignatureInvalid",
            Self::Malformed { .. } => "SignatureMalformed",
            Self::Key(_) => "SigningKeyInvalid",
        }
    }
}

fn malformed(what: &'static str, detail: impl ToString) -> SignError {
    SignError::Malformed {
        what,
        detail: detail.to_string(),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The id of a public key: `k-` and the first 16 hex digits of its sha256.
pub fn key_id(public: &[u8]) -> String {
    let digest = Sha256::digest(public);
    format!("k-{}", hex::encode(&digest[..8]))
}

/// A signature as stored beside the document (`manifest.sig`, `detected.sig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signature {
    /// The id of the signing key.
    pub key_id: String,
    /// The Ed25519 signature, base64.
    pub signature: String,
}

impl Signature {
    /// As stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a stored signature.
    pub fn from_json(s: &str) -> Result<Self, SignError> {
        serde_json::from_str(s).map_err(|e| malformed("the signature", e))
    }
}

/// One entry of the published key chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicKey {
    /// [`key_id`] of `key`.
    pub id: String,
    /// The Ed25519 public key, base64 (32 bytes).
    pub key: String,
    /// The key that endorsed this one (absent for the first key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsed_by: Option<String>,
    /// That key's signature over this one ([`Domain::Key`]), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<String>,
}

/// The chain as stored in `keys.json`.
pub fn chain_to_json(chain: &[PublicKey]) -> String {
    serde_json::to_string(chain).unwrap_or_default()
}

/// One private key as the operator keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StoredKey {
    /// PKCS#8 v2 document, base64.
    pkcs8: String,
    /// When it was made (Unix seconds).
    created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endorsed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endorsement: Option<String>,
}

/// One private key, loaded.
#[derive(Debug)]
struct SigningKey {
    stored: StoredKey,
    pair: Ed25519KeyPair,
    id: String,
}

impl SigningKey {
    fn load(stored: StoredKey) -> Result<Self, SignError> {
        let der = B64
            .decode(&stored.pkcs8)
            .map_err(|e| malformed("a stored signing key", e))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| SignError::Key("loaded"))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Self { stored, pair, id })
    }

    fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }
}

/// The operator's keys, oldest first; the newest signs.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl PartialEq for KeyRing {
    fn eq(&self, other: &Self) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|(a, b)| a.stored == b.stored)
    }
}

fn generate(created: i64) -> Result<SigningKey, SignError> {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| SignError::Key("generated"))?;
    SigningKey::load(StoredKey {
        pkcs8: B64.encode(der.as_ref()),
        created,
        endorsed_by: None,
        endorsement: None,
    })
}

impl KeyRing {
    /// A ring with one new key made at `now_unix_s`.
    pub fn generate(now_unix_s: i64) -> Result<Self, SignError> {
        Ok(Self {
            keys: vec![generate(now_unix_s)?],
        })
    }

    /// This ring with a new signing key endorsed by the current one; the oldest keys beyond
    /// [`KEEP_KEYS`] are dropped.
    pub fn rotated(&self, now_unix_s: i64) -> Result<Self, SignError> {
        let mut fresh = generate(now_unix_s)?;
        let current = self.current();
        let endorsement = current.pair.sign(&Domain::Key.message(fresh.public()));
        fresh.stored.endorsed_by = Some(current.id.clone());
        fresh.stored.endorsement = Some(B64.encode(endorsement.as_ref()));
        let mut keys: Vec<SigningKey> = self
            .keys
            .iter()
            .map(|k| SigningKey::load(k.stored.clone()))
            .collect::<Result<_, _>>()?;
        keys.push(fresh);
        let drop = keys.len().saturating_sub(KEEP_KEYS);
        keys.drain(..drop);
        Ok(Self { keys })
    }

    fn current(&self) -> &SigningKey {
        // Never empty: every constructor makes or requires one key.
        &self.keys[self.keys.len() - 1]
    }

    /// The id of the signing key.
    pub fn current_id(&self) -> &str {
        &self.current().id
    }

    /// When the signing key was made (Unix seconds).
    pub fn current_created(&self) -> i64 {
        self.current().stored.created
    }

    /// Signs `body` for `domain` with the newest key.
    pub fn sign(&self, domain: Domain, body: &[u8]) -> Signature {
        let current = self.current();
        Signature {
            key_id: current.id.clone(),
            signature: B64.encode(current.pair.sign(&domain.message(body)).as_ref()),
        }
    }

    /// The public chain to publish beside signatures, oldest first.
    pub fn chain(&self) -> Vec<PublicKey> {
        self.keys
            .iter()
            .map(|k| PublicKey {
                id: k.id.clone(),
                key: B64.encode(k.public()),
                endorsed_by: k.stored.endorsed_by.clone(),
                endorsement: k.stored.endorsement.clone(),
            })
            .collect()
    }

    /// Every public key, base64, comma-separated: what the injector gives a sidecar.
    pub fn trust_list(&self) -> String {
        self.keys
            .iter()
            .map(|k| B64.encode(k.public()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ring as stored in the operator's Secret (`keys.json`, private keys included).
    pub fn to_json(&self) -> String {
        let stored: Vec<&StoredKey> = self.keys.iter().map(|k| &k.stored).collect();
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads a ring stored by [`KeyRing::to_json`].
    pub fn from_json(s: &str) -> Result<Self, SignError> {
        let stored: Vec<StoredKey> =
            serde_json::from_str(s).map_err(|e| malformed("the signing key Secret", e))?;
        if stored.is_empty() {
            return Err(malformed("the signing key Secret", "it holds no key"));
        }
        Ok(Self {
            keys: stored
                .into_iter()
                .map(SigningKey::load)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// What a sidecar trusts: the keys given at admission and those they endorsed.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    trusted: BTreeMap<String, Vec<u8>>,
}

fn decode_key(b64: &str) -> Result<Vec<u8>, SignError> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|e| malformed("a public key", e))?;
    if bytes.len() != 32 {
        return Err(malformed(
            "a public key",
            format!("{} bytes, an Ed25519 key has 32", bytes.len()),
        ));
    }
    Ok(bytes)
}

impl Verifier {
    /// Parses the trust list the injector gives (base64 public keys, comma-separated).
    pub fn parse(list: &str) -> Result<Self, SignError> {
        let mut trusted = BTreeMap::new();
        for b64 in list.split(',').filter(|s| !s.trim().is_empty()) {
            let key = decode_key(b64)?;
            trusted.insert(key_id(&key), key);
        }
        if trusted.is_empty() {
            return Err(malformed("the trusted key list", "it names no key"));
        }
        Ok(Self { trusted })
    }

    /// The ids of the keys trusted now.
    pub fn trusted_ids(&self) -> impl Iterator<Item = &str> {
        self.trusted.keys().map(String::as_str)
    }

    /// Learns the keys of `chain_json` that a trusted key endorsed (in chain order, so one
    /// published chain carries trust across several rotations). Entries that are not
    /// endorsed by a trusted key are ignored; returns how many keys were learnt.
    pub fn learn(&mut self, chain_json: &str) -> Result<usize, SignError> {
        let chain: Vec<PublicKey> =
            serde_json::from_str(chain_json).map_err(|e| malformed("the key chain", e))?;
        let mut learnt = 0;
        for entry in chain.iter().take(MAX_CHAIN) {
            let Ok(key) = decode_key(&entry.key) else {
                continue;
            };
            let id = key_id(&key);
            if self.trusted.contains_key(&id) {
                continue;
            }
            let (Some(by), Some(endorsement)) = (&entry.endorsed_by, &entry.endorsement) else {
                continue;
            };
            let Some(endorser) = self.trusted.get(by) else {
                continue;
            };
            let Ok(sig) = B64.decode(endorsement) else {
                continue;
            };
            let ok = signature::UnparsedPublicKey::new(&signature::ED25519, endorser)
                .verify(&Domain::Key.message(&key), &sig)
                .is_ok();
            if ok {
                self.trusted.insert(id, key);
                learnt += 1;
            }
        }
        Ok(learnt)
    }

    /// Checks that `signature_json` is a trusted key's signature of `body` for `domain`.
    pub fn verify(
        &self,
        domain: Domain,
        body: &[u8],
        signature_json: Option<&str>,
    ) -> Result<(), SignError> {
        let sig = Signature::from_json(signature_json.ok_or(SignError::Unsigned)?)?;
        let key = self
            .trusted
            .get(&sig.key_id)
            .ok_or_else(|| SignError::UnknownKey {
                key_id: sig.key_id.clone(),
            })?;
        let bytes = B64
            .decode(&sig.signature)
            .map_err(|e| malformed("the signature", e))?;
        signature::UnparsedPublicKey::new(&signature::ED25519, key)
            .verify(&domain.message(body), &bytes)
            .map_err(|_| SignError::BadSignature {
                key_id: sig.key_id.clone(),
            })
    }

    /// [`Verifier::learn`] from the chain published beside the document (if any), then
    /// [`Verifier::verify`].
    pub fn check(
        &mut self,
        domain: Domain,
        body: &[u8],
        signature_json: Option<&str>,
        chain_json: Option<&str>,
    ) -> Result<(), SignError> {
        if let Some(chain) = chain_json {
            // A malformed chain teaches nothing; the signature may still be by a known key.
            let _ = self.learn(chain);
        }
        self.verify(domain, body, signature_json)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MANIFEST: &[u8] = br#"{"formatVersion":3,"bundleHash":"ab","generation":7,"shards":[]}"#;

    fn signed(ring: &KeyRing, body: &[u8]) -> String {
        ring.sign(Domain::Manifest, body).to_json()
    }

    #[test]
    fn a_manifest_signed_by_a_given_key_verifies_and_nothing_else_does() {
        let ring = KeyRing::generate(1).unwrap();
        let v = Verifier::parse(&ring.trust_list()).unwrap();
        let sig = signed(&ring, MANIFEST);
        v.verify(Domain::Manifest, MANIFEST, Some(&sig)).unwrap();

        let tampered = MANIFEST.replace_first(b"7", b"8");
        let e = v
            .verify(Domain::Manifest, &tampered, Some(&sig))
            .unwrap_err();
        assert_eq!(e.reason(), "SignatureInvalid");
        let e = v.verify(Domain::Manifest, MANIFEST, None).unwrap_err();
        assert_eq!(e.reason(), "BundleUnsigned");
        let e = v
            .verify(Domain::Manifest, MANIFEST, Some("{}"))
            .unwrap_err();
        assert_eq!(e.reason(), "SignatureMalformed");

        // A key of someone else (a namespace editor's own ring) is not trusted.
        let other = KeyRing::generate(1).unwrap();
        let e = v
            .verify(Domain::Manifest, MANIFEST, Some(&signed(&other, MANIFEST)))
            .unwrap_err();
        assert_eq!(e.reason(), "SigningKeyUnknown");
        // Naming the trusted key's id over a foreign signature does not help.
        let mut forged = other.sign(Domain::Manifest, MANIFEST);
        forged.key_id = ring.current_id().to_owned();
        let e = v
            .verify(Domain::Manifest, MANIFEST, Some(&forged.to_json()))
            .unwrap_err();
        assert_eq!(e.reason(), "SignatureInvalid");
    }

    #[test]
    fn a_signature_for_one_domain_never_passes_for_another() {
        let ring = KeyRing::generate(1).unwrap();
        let v = Verifier::parse(&ring.trust_list()).unwrap();
        let detected = ring.sign(Domain::Detected, MANIFEST).to_json();
        assert!(
            v.verify(Domain::Detected, MANIFEST, Some(&detected))
                .is_ok()
        );
        let e = v
            .verify(Domain::Manifest, MANIFEST, Some(&detected))
            .unwrap_err();
        assert_eq!(e.reason(), "SignatureInvalid");
    }

    #[test]
    fn rotation_is_followed_through_the_published_chain() {
        let first = KeyRing::generate(1).unwrap();
        // A pod admitted now trusts only the first key.
        let mut pod = Verifier::parse(&first.trust_list()).unwrap();
        let mut ring = first.rotated(2).unwrap();
        ring = ring.rotated(3).unwrap();
        assert_ne!(ring.current_id(), first.current_id());
        let sig = signed(&ring, MANIFEST);
        let e = pod
            .verify(Domain::Manifest, MANIFEST, Some(&sig))
            .unwrap_err();
        assert_eq!(e.reason(), "SigningKeyUnknown");
        let chain = chain_to_json(&ring.chain());
        pod.check(Domain::Manifest, MANIFEST, Some(&sig), Some(&chain))
            .unwrap();
        assert_eq!(pod.trusted_ids().count(), 3);
        // The ring survives its Secret.
        let back = KeyRing::from_json(&ring.to_json()).unwrap();
        assert_eq!(back, ring);
        assert_eq!(back.sign(Domain::Manifest, MANIFEST).to_json(), sig);
    }

    #[test]
    fn a_forged_chain_entry_teaches_nothing() {
        let ring = KeyRing::generate(1).unwrap();
        let mut pod = Verifier::parse(&ring.trust_list()).unwrap();
        let attacker = KeyRing::generate(1).unwrap();
        let mut chain = ring.chain();
        // Unendorsed, endorsed by itself, and endorsed by an untrusted key: all ignored.
        let mut unendorsed = attacker.chain().remove(0);
        chain.push(unendorsed.clone());
        unendorsed.endorsed_by = Some(ring.current_id().to_owned());
        unendorsed.endorsement = Some(attacker.sign(Domain::Key, b"x").signature);
        chain.push(unendorsed);
        let rotated_attacker = attacker.rotated(2).unwrap();
        chain.extend(rotated_attacker.chain());
        let sig = signed(&rotated_attacker, MANIFEST);
        let e = pod
            .check(
                Domain::Manifest,
                MANIFEST,
                Some(&sig),
                Some(&chain_to_json(&chain)),
            )
            .unwrap_err();
        assert_eq!(e.reason(), "SigningKeyUnknown");
        assert_eq!(pod.trusted_ids().count(), 1);
        // A chain that is not JSON is an error of the chain, not a crash.
        assert!(pod.learn("[{").is_err());
        // The endorsement of a key is not a manifest signature either.
        let endorsed = ring.rotated(2).unwrap();
        let entry = &endorsed.chain()[1];
        let as_sig = Signature {
            key_id: ring.current_id().to_owned(),
            signature: entry.endorsement.clone().unwrap(),
        };
        let key = B64.decode(&entry.key).unwrap();
        let e = pod
            .verify(Domain::Manifest, &key, Some(&as_sig.to_json()))
            .unwrap_err();
        assert_eq!(e.reason(), "SignatureInvalid");
    }

    #[test]
    fn the_ring_keeps_a_bounded_chain_and_refuses_bad_material() {
        let mut ring = KeyRing::generate(0).unwrap();
        for t in 1..20 {
            ring = ring.rotated(t).unwrap();
        }
        assert_eq!(ring.chain().len(), KEEP_KEYS);
        assert_eq!(ring.current_created(), 19);
        assert!(ring.chain()[0].endorsed_by.is_some());
        assert_eq!(
            KeyRing::from_json("[]").unwrap_err().reason(),
            "SignatureMalformed"
        );
        let bad = r#"[{"pkcs8":"AAAA","created":1}]"#;
        assert_eq!(
            KeyRing::from_json(bad).unwrap_err().reason(),
            "SigningKeyInvalid"
        );
        assert!(Verifier::parse("").is_err());
        assert!(Verifier::parse("not-base64!").is_err());
        assert!(Verifier::parse("AAAA").is_err(), "3 bytes is not a key");
    }

    trait ReplaceFirst {
        fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }

    impl ReplaceFirst for [u8] {
        fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let at = self.windows(from.len()).position(|w| w == from).unwrap();
            [&self[..at], to, &self[at + from.len()..]].concat()
        }
    }
}
