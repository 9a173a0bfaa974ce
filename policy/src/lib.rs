//! Palisade's policy bundle, kube-free.
//!
//! The wire format the operator writes and every sidecar reads, the pure compiler that turns
//! security actions and detection rules into a bundle, and the evaluator that turns a request
//! into a verdict (allow > deny > flag). Nothing here imports kube, k8s-openapi or schemars.
//!
//! # Operator side
//!
//! - [`Inputs`] (one namespace: [`ActionSpec`]s, [`RuleSpec`]s, `namespace_paused`, the text of
//!   every referenced list by [`ListRef`], a `generation`) →
//!   [`compile`]`(&Inputs, now: jiff::Timestamp) -> `[`Output`]`{ bundle, statuses, next_expiry }`.
//!   - `statuses: BTreeMap<name, `[`ActionStatus`]`>`: `Active`, `Paused { by_namespace }`,
//!     `Expired { at }` (iff `now >= expire_time`), `Invalid { reason, message }`;
//!     [`ActionStatus::reason`] is the PascalCase condition/Event reason.
//!   - `next_expiry`: requeue at that instant.
//! - [`encode`]`(&Bundle) -> Result<`[`Encoded`]`, `[`BundleError`]`>`: a [`Manifest`] (store
//!   [`Manifest::to_json`] in the manifest ConfigMap) and `shards: Vec<(name, bytes)>`, each
//!   ≤ [`SHARD_MAX_BYTES`] (900 KiB once base64'd in `binaryData`). Shard names derive from
//!   their content: a name already written need not be written again.
//!   [`Bundle::content_hash`] = `manifest.bundle_hash`.
//! - Detected clients travel separately: [`DetectedClients`] →
//!   [`encode_detected`]` -> Vec<u8>` (one small ConfigMap).
//!
//! # Sidecar side
//!
//! - [`decode`]`(&Manifest, &BTreeMap<name, bytes>) -> Result<`[`Bundle`]`, `[`BundleError`]`>`
//!   (or [`decode_with`] and a lookup closure): checks version, sizes, every shard's sha256 and
//!   the bundle hash; never a partial bundle. [`BundleError::reason`] is the metric label.
//! - [`CompiledPolicy::new`]`(bundle, &pod_labels)` once per bundle load (workload selectors are
//!   applied here), then per request [`evaluate`]`(&policy, &`[`Request`]`) -> `[`Verdict`]:
//!   `decision` ([`Decision::Forward`] / `Allow(id)` / `Deny(id)`), `flags`, `matched`,
//!   `observed` ([`ActionSet`]s) and `would_be` (the decision had observed actions been
//!   enforced). `Copy`, no allocation. Then [`CompiledPolicy::deny_response`]`(id)`,
//!   [`CompiledPolicy::flag_headers`]`(&verdict)`, [`CompiledPolicy::action`]`(id).name`.
//! - [`decode_detected`]`(&[u8]) -> DetectedClients`, then
//!   [`DetectedIndex::new`]`(&doc, &policy.bundle().rules)`; pass it in `Request::detected`
//!   with `now_unix_s`.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use palisade_policy::*;
//!
//! let deny = ActionSpec {
//!     name: "block-tor".into(),
//!     verb: Verb::Deny { status: 403, body: "no".into(), content_type: "text/plain".into() },
//!     mode: Mode::Enforce,
//!     conditions: Conditions {
//!         ip_lists: vec![ListRef { config_map: "tor".into(), key: "exits".into() }],
//!         ..Default::default()
//!     },
//!     match_all: false,
//!     workload_selector: None,
//!     paused: false,
//!     expire_time: None,
//! };
//! let inputs = Inputs {
//!     actions: vec![deny],
//!     lists: [(ListRef { config_map: "tor".into(), key: "exits".into() },
//!              "# exits\n192.0.2.0/24\n198.51.100.7\n".to_string())].into(),
//!     ..Default::default()
//! };
//! let now: jiff::Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
//! let out = compile(&inputs, now);
//! assert_eq!(out.statuses["block-tor"], ActionStatus::Active);
//!
//! // Operator: write the manifest and shards. Sidecar: read them back.
//! let encoded = encode(&out.bundle).unwrap();
//! let shards: BTreeMap<String, Vec<u8>> = encoded.shards.into_iter().collect();
//! let bundle = decode(&encoded.manifest, &shards).unwrap();
//!
//! let policy = CompiledPolicy::new(bundle, &BTreeMap::new());
//! let verdict = evaluate(&policy, &Request::new("198.51.100.7".parse().unwrap(), "GET", "/"));
//! let Decision::Deny(id) = verdict.decision else { panic!("denied") };
//! assert_eq!(policy.deny_response(id).unwrap().status, 403);
//! ```

#![forbid(unsafe_code)]

mod actionset;
mod bundle;
pub mod cli;
mod codec;
mod compile;
mod detected;
mod error;
mod evaluate;
#[cfg(test)]
mod evaluate_oracle;
mod fxhash;
mod index;
mod ipset;
pub mod key;
mod lists;
pub mod path;
mod policy;
mod selector;
pub mod sign;
mod spec;
pub mod synthetic;
#[cfg(test)]
mod testutil;
pub mod transport;
mod trusted;
mod validate;
mod wire;

pub use actionset::{ActionId, ActionSet, MAX_ACTIONS};
pub use bundle::{
    Bundle, BundleAction, BundleConditions, DEFAULT_COUNT_KEYS, FORMAT_VERSION,
    GENERATION_AHEAD_MAX_MS, MAX_RULES, generation_from_the_future,
};
pub use codec::{
    Encoded, MAX_SECTION_BYTES, MAX_SHARDS, Manifest, SHARD_MAX_BYTES, ShardRef, decode,
    decode_with, encode,
};
pub use compile::{ActionStatus, Output, compile};
pub use detected::{
    DETECTED_FORMAT_VERSION, DetectedClient, DetectedClients, DetectedIndex, decode_detected,
    encode_detected,
};
pub use error::BundleError;
pub use evaluate::{Decision, Request, Verdict, evaluate};
pub use ipset::{Addr, IpSet, IpSetBuilder, RangeError, RangeSet, TooManyClasses};
pub use key::{ClientKey, ClientKeyKind, KeyError, KeyHash};
pub use lists::{LineError, PrefixList, parse_prefix};
pub use policy::{CompiledPolicy, DenyResponse};
pub use selector::{LabelRequirement, LabelSelector, SelectorOperator};
pub use spec::{
    ActionSpec, Conditions, DetectedBy, Header, Inputs, ListRef, Mode, PathMatch, RateLimit,
    RuleSpec, TextPattern, Verb,
};
pub use trusted::{MAX_TRUSTED_PROXIES, TrustedProxies};
