//! Palisade's policy bundle, kube-free.
//!
//! The wire format the operator writes and every sidecar reads, the pure compiler that turns
//! security actions and detection rules into a bundle, and the evaluator that turns a request
//! into a verdict (allow > deny > flag).

#![forbid(unsafe_code)]

mod actionset;
mod bundle;
mod codec;
mod compile;
mod detected;
mod error;
mod evaluate;
mod index;
mod ipset;
mod lists;
mod policy;
mod selector;
mod spec;
#[cfg(test)]
mod testutil;
mod validate;
mod wire;

pub use actionset::{ActionId, ActionSet, MAX_ACTIONS};
pub use bundle::{Bundle, BundleAction, BundleConditions, FORMAT_VERSION, MAX_RULES};
pub use codec::{
    Encoded, MAX_SECTION_BYTES, MAX_SHARDS, Manifest, SHARD_MAX_BYTES, ShardRef, decode,
    decode_with, encode,
};
pub use compile::{ActionStatus, Output, compile};
pub use detected::{
    ClientKey, DETECTED_FORMAT_VERSION, DetectedClient, DetectedClients, DetectedIndex,
    decode_detected, encode_detected,
};
pub use error::BundleError;
pub use evaluate::{Decision, Request, Verdict, evaluate};
pub use ipset::{Addr, IpSet, IpSetBuilder, RangeError, RangeSet, TooManyClasses};
pub use lists::{LineError, PrefixList, parse_prefix};
pub use policy::{CompiledPolicy, DenyResponse};
pub use selector::{LabelRequirement, LabelSelector, SelectorOperator};
pub use spec::{
    ActionSpec, Conditions, DetectedBy, Header, Inputs, ListRef, Mode, PathMatch, RuleSpec, Verb,
};
