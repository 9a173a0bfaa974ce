//! Builds real bundles with the policy crate (compile → encode) and writes them in the mounted
//! layout the sidecar reads: `manifest.json` plus one file per shard.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use palisade_policy::{ActionSpec, Conditions, Header, Inputs, Mode, Verb};

/// An enforce-mode action with these conditions.
pub fn action(name: &str, verb: Verb, conditions: Conditions) -> ActionSpec {
    ActionSpec {
        name: name.to_owned(),
        verb,
        mode: Mode::Enforce,
        conditions,
        match_all: false,
        workload_selector: None,
        paused: false,
        expire_time: None,
    }
}

/// A deny whose body is `name` (so tests see which action answered).
pub fn deny(name: &str, conditions: Conditions) -> ActionSpec {
    let verb = Verb::Deny {
        status: 403,
        body: name.to_owned(),
        content_type: "text/x-palisade".into(),
    };
    action(name, verb, conditions)
}

/// A flag adding `x-palisade-flag: <name>`.
pub fn flag(name: &str, conditions: Conditions) -> ActionSpec {
    let headers = vec![Header {
        name: "x-palisade-flag".into(),
        value: name.to_owned(),
    }];
    action(name, Verb::Flag { headers }, conditions)
}

/// An allow.
pub fn allow(name: &str, conditions: Conditions) -> ActionSpec {
    action(name, Verb::Allow, conditions)
}

/// Compiles and encodes; returns (manifest JSON, shards).
pub fn encode(actions: Vec<ActionSpec>, generation: u64) -> (String, Vec<(String, Vec<u8>)>) {
    encode_with_rules(actions, &[], generation)
}

/// Compiles and encodes with these enabled detection rules.
pub fn encode_with_rules(
    actions: Vec<ActionSpec>,
    rules: &[&str],
    generation: u64,
) -> (String, Vec<(String, Vec<u8>)>) {
    let rules = rules
        .iter()
        .map(|r| palisade_policy::RuleSpec {
            name: (*r).to_owned(),
            paused: false,
            mode: Mode::Enforce,
            client_key: palisade_policy::ClientKeyKind::Ip,
        })
        .collect();
    let inputs = Inputs {
        generation,
        actions,
        rules,
        ..Inputs::default()
    };
    encode_inputs(&inputs)
}

/// Compiles and encodes `inputs`; returns (manifest JSON, shards).
pub fn encode_inputs(inputs: &Inputs) -> (String, Vec<(String, Vec<u8>)>) {
    let generation = inputs.generation;
    let out = palisade_policy::compile(inputs, jiff::Timestamp::now());
    let bad: Vec<_> = out
        .statuses
        .iter()
        .filter(|(_, s)| **s != palisade_policy::ActionStatus::Active)
        .collect();
    assert!(bad.is_empty(), "test actions must compile: {bad:?}");
    let mut encoded = palisade_policy::encode(&out.bundle).unwrap();
    encoded.manifest.generation = generation;
    (encoded.manifest.to_json(), encoded.shards)
}

/// Writes a bundle into `dir`: shards first, then the manifest by atomic rename.
pub fn write(dir: &Path, actions: Vec<ActionSpec>, generation: u64) -> String {
    let (manifest, shards) = encode(actions, generation);
    write_raw(dir, &manifest, &shards);
    palisade_policy::Manifest::from_json(&manifest)
        .unwrap()
        .bundle_hash
}

/// Writes the bundle of `inputs` into `dir`; returns its hash.
pub fn write_inputs(dir: &Path, inputs: &Inputs) -> String {
    let (manifest, shards) = encode_inputs(inputs);
    write_raw(dir, &manifest, &shards);
    palisade_policy::Manifest::from_json(&manifest)
        .unwrap()
        .bundle_hash
}

/// Writes the given manifest and shards as they are.
pub fn write_raw(dir: &Path, manifest: &str, shards: &[(String, Vec<u8>)]) {
    for (name, bytes) in shards {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let tmp = dir.join(".manifest.tmp");
    std::fs::write(&tmp, manifest).unwrap();
    std::fs::rename(tmp, dir.join("manifest.json")).unwrap();
}

/// Conditions with one field set through `f`.
pub fn when(f: impl FnOnce(&mut Conditions)) -> Conditions {
    let mut c = Conditions::default();
    f(&mut c);
    c
}

/// `sha256:<hex>` of a secret, as actions store keys and tokens.
pub fn sha(secret: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    )
}

/// Writes the detected-client document: each `(rule, client key)` marked for an hour.
pub fn write_detected(dir: &Path, generation: u64, marks: &[(&str, &str)]) {
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let mut doc = palisade_policy::DetectedClients {
        generation,
        ..Default::default()
    };
    for (rule, key) in marks {
        let client = palisade_policy::DetectedClient {
            key: key.parse().unwrap(),
            expires,
        };
        doc.rules
            .entry((*rule).to_owned())
            .or_default()
            .push(client);
    }
    let tmp = dir.join(".detected.tmp");
    std::fs::write(&tmp, palisade_policy::encode_detected(&doc).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("detected")).unwrap();
}
