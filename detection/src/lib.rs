//! Palisade's detection, kube-free: what the sidecar counts, the report it sends, the
//! collector's sliding windows, the detection rules, the detected-client set and the
//! clustering of detections into incidents. Pure logic: time is always a parameter
//! (`now: jiff::Timestamp`), nothing here reads the clock, does I/O or spawns.
//!
//! # Public API
//!
//! Sidecar side (on the request path):
//! - [`key`] — [`ClientKey`] (`ip:…`, `apiKey:sha256:…`, `token:sha256:…`, `ua:sha256:…`),
//!   [`ClientKeyKind`], [`KeyHash`]. Secrets are held only as SHA-256 digests.
//! - [`facts`] — [`RequestFacts`] of one finished request, with [`Responder`]: whether the
//!   response came from the app or from the sidecar itself (its own denials are never
//!   counted as the app's errors or 403s).
//! - [`sequence`] — [`PathShape::of`] (a request path's shape and number, hashed without
//!   allocating) and [`SeqTable`] (each client's previous shape): sequential requests.
//! - [`counter`] — [`Counter::record`] (one map update per tracked key kind, bounded by a
//!   heavy-hitter sketch) and [`Counter::take_report`], configured by [`CounterConfig`].
//! - [`report`] — [`Report`] (JSON, [`REPORT_VERSION`]): sidecar identity, sequence number,
//!   slice `[start, end)`, exact totals, per-client counts, sampled attributes.
//!   [`Report::from_json`] checks size, version and window ([`ReportError`]).
//!
//! Collector side (pure functions of the merged windows):
//! - [`window`] — [`WindowSet`] / [`Windows`]: per-namespace 5 min and 24 h slice rings;
//!   [`Windows::merge`] tolerates duplicate, late and lost reports ([`MergeOutcome`]);
//!   [`Windows::snapshot`] / [`Windows::restore`] carry window state across a restart.
//! - [`rule_spec`] — [`RuleSpec`] (name, [`RuleKind`] with parameters and documented
//!   defaults, client key kind, detection TTL, excluded ranges).
//! - [`rules`] — [`run_rules`]`(&windows, &rules, now) -> `[`Detections`]: Flooder, Static
//!   Content Scraper, Brute Guessor, Robot Abuser, OAuth Abuser, TorList, Advanced Anomaly
//!   (a robust z-score, see [`anomaly`]), API Scraper (share of sequential requests). Each [`Detection`] carries rule, client, expiry and
//!   [`Evidence`].
//! - [`detected`] — [`DetectedSet`]: the detected clients with per-rule expiry, for the
//!   sidecars' `detectedBy` conditions.
//! - [`incident`] — [`cluster`] detections into [`Incident`]s (stable ids, state, traffic,
//!   per-minute series, top attributes), emitting [`IncidentEvent`]s; [`risk`] documents the
//!   score behind [`RiskLevel`].
//!
//! Building blocks: [`topk`] (Space-Saving map with batched eviction), [`stats`] (the
//! counts shared by reports and windows), [`client_id`] (a client key in 16 bytes, as the
//! windows' slices hold it, with the table of full keys).
//!
//! [`ClientKey`]: key::ClientKey
//! [`ClientKeyKind`]: key::ClientKeyKind
//! [`KeyHash`]: key::KeyHash
//! [`RequestFacts`]: facts::RequestFacts
//! [`Responder`]: facts::Responder
//! [`PathShape::of`]: sequence::PathShape::of
//! [`SeqTable`]: sequence::SeqTable
//! [`Counter::record`]: counter::Counter::record
//! [`Counter::take_report`]: counter::Counter::take_report
//! [`CounterConfig`]: counter::CounterConfig
//! [`Report`]: report::Report
//! [`REPORT_VERSION`]: report::REPORT_VERSION
//! [`Report::from_json`]: report::Report::from_json
//! [`ReportError`]: report::ReportError
//! [`WindowSet`]: window::WindowSet
//! [`Windows`]: window::Windows
//! [`Windows::merge`]: window::Windows::merge
//! [`MergeOutcome`]: window::MergeOutcome
//! [`Windows::snapshot`]: window::Windows::snapshot
//! [`Windows::restore`]: window::Windows::restore
//! [`RuleSpec`]: rule_spec::RuleSpec
//! [`RuleKind`]: rule_spec::RuleKind
//! [`run_rules`]: rules::run_rules
//! [`Detections`]: rules::Detections
//! [`Detection`]: rules::Detection
//! [`Evidence`]: rules::Evidence
//! [`DetectedSet`]: detected::DetectedSet
//! [`cluster`]: incident::cluster
//! [`Incident`]: incident::Incident
//! [`IncidentEvent`]: incident::IncidentEvent
//! [`RiskLevel`]: risk::RiskLevel

#![forbid(unsafe_code)]

pub mod anomaly;
pub mod client_id;
pub mod counter;
pub mod detected;
pub mod facts;
pub mod incident;
/// Client keys are the policy crate's: one vocabulary for what the sidecar counts, the
/// rules judge and `detectedBy` matches.
pub use palisade_policy::key;
pub mod report;
pub mod risk;
pub mod rule_spec;
pub mod rules;
pub mod seasonal;
pub mod sequence;
pub mod sim;
pub mod stats;
pub mod topk;
pub mod window;

#[cfg(test)]
mod testutil;
