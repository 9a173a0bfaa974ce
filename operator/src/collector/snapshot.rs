//! The collector's state as one compact document (pure: no I/O): every namespace's windows
//! ([`Windows::snapshot`]), detected-client set and open incidents, and the exit lists the
//! TorList rules downloaded, as gzip-compressed JSON bounded to fit a ConfigMap. When the
//! document is too large, the lightest clients of each slice are left out (totals stay exact),
//! then the sampled attributes, then the downloaded lists, until it fits.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};

use palisade_detection::detected::DetectedSet;
use palisade_detection::incident::{Incident, IncidentState};
use palisade_detection::window::{SNAPSHOT_VERSION, WindowConfig, WindowsSnapshot};
use serde::{Deserialize, Serialize};

/// Version of [`StateDoc`]; a document of another version is ignored.
pub const STATE_VERSION: u32 = 1;

/// Largest compressed document written (the ConfigMap limit is 1 MiB, keys included).
pub const MAX_STATE_BYTES: usize = 768 * 1024;

/// Largest decompressed document read back (a guard against a corrupt or hostile object).
const MAX_INFLATED_BYTES: u64 = 64 * 1024 * 1024;

/// One namespace's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceState {
    /// Its windows.
    pub windows: WindowsSnapshot,
    /// Its detected clients.
    #[serde(default)]
    pub detected: DetectedSet,
    /// Its active incidents.
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// Its ongoing error surge (the SecurityIncident of scope `Namespace` a new leader goes
    /// on with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge: Option<super::surge::Surge>,
    /// The request counts of its SecurityActions (the evidence of `status.matchedRequests`
    /// and its siblings), by action name; left out first when the document is too large.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, super::evidence::Series>,
}

/// The collector's state, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDoc {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// When it was taken.
    pub taken_at: jiff::Timestamp,
    /// Per namespace.
    pub namespaces: BTreeMap<String, NamespaceState>,
    /// The lists TorList rules downloaded from their `url` (absent in documents of operators
    /// that did not keep them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tor_lists: Vec<TorListState>,
}

/// The last good list a TorList rule downloaded from its `url`, so that a new leader goes on
/// detecting with it even when the URL cannot be reached at the failover, and downloads it
/// again only when it is due. (`fromConfigMap` lists are read again from their ConfigMap.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TorListState {
    /// The rule's namespace.
    pub namespace: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's uid (a rule deleted and created again does not get the old list).
    pub uid: String,
    /// Where the list came from, as `status.list.source` shows it (`url …`).
    pub source: String,
    /// When it was downloaded.
    pub fetched: jiff::Timestamp,
    /// When the next download is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<jiff::Timestamp>,
    /// The exit addresses and networks.
    pub entries: Vec<ipnet::IpNet>,
}

/// Why a persisted document was not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not gzip, not JSON of the expected shape, or too large.
    #[error("state is corrupt: {0}")]
    Corrupt(String),
    /// Written by an incompatible operator version or window shape.
    #[error(
        "state has version {found} (this operator reads {expected}) or other window slice lengths"
    )]
    Incompatible {
        /// What the document says.
        found: String,
        /// What this operator reads.
        expected: String,
    },
    /// Even without clients and attributes the document exceeds the limit.
    #[error("state of {0} bytes exceeds {MAX_STATE_BYTES} bytes even without per-client counts")]
    TooLarge(usize),
}

impl SnapshotError {
    /// PascalCase reason (metric label, Event reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Corrupt(_) => "StateCorrupt",
            Self::Incompatible { .. } => "StateIncompatible",
            Self::TooLarge(_) => "StateTooLarge",
        }
    }
}

/// Fewest compressed bytes a client entry takes (measured: about 6). A document whose
/// entries would exceed the limit even at this size is not encoded whole first.
const MIN_ENTRY_BYTES: usize = 3;

/// `doc` compressed, shrunk until it is at most `limit` bytes. Returns the bytes and the
/// number of clients kept per slice (`None`: all of them).
///
/// Shrinking keeps the heaviest clients of each slice. How many is estimated from the bytes
/// per entry of the last try rather than found by halving: a state at the bound (106 slices
/// of 20,000 clients) took ~10 s of CPU to encode whole and then at each halving, every
/// `--collector-snapshot-interval`.
pub fn encode_bounded(
    doc: &StateDoc,
    limit: usize,
) -> Result<(Vec<u8>, Option<usize>), SnapshotError> {
    let max = max_clients_per_slice(doc);
    let mut last = 0;
    if entries(doc, max).saturating_mul(MIN_ENTRY_BYTES) <= limit {
        let bytes = encode(doc);
        if bytes.len() <= limit {
            return Ok((bytes, None));
        }
        last = bytes.len();
    }
    let mut doc = doc.clone();
    // The action counts go first: they only feed statuses, which a new leader refills.
    if doc.namespaces.values().any(|n| !n.actions.is_empty()) {
        for ns in doc.namespaces.values_mut() {
            ns.actions.clear();
        }
        let bytes = encode(&doc);
        if bytes.len() <= limit {
            return Ok((bytes, None));
        }
        last = bytes.len();
    }
    // Then Advanced Anomaly's per-client profiles (the cohort baseline stays): the clients
    // relearn their profiles within a day.
    if doc.namespaces.values().any(|n| {
        n.windows
            .seasonal
            .as_ref()
            .is_some_and(|s| !s.profiles.is_empty())
    }) {
        for ns in doc.namespaces.values_mut() {
            if let Some(s) = &mut ns.windows.seasonal {
                s.profiles.clear();
            }
        }
        let bytes = encode(&doc);
        if bytes.len() <= limit {
            return Ok((bytes, None));
        }
        last = bytes.len();
    }
    // Start from the most that could fit at the smallest plausible entry size.
    let mut keep = largest_keep(&doc, max, |n| n.saturating_mul(MIN_ENTRY_BYTES) <= limit);
    if last > 0 {
        keep = keep.min(max.saturating_sub(1));
    }
    while keep > 0 {
        trim_clients(&mut doc, keep);
        let bytes = encode(&doc);
        if bytes.len() <= limit {
            return Ok((bytes, Some(keep)));
        }
        last = bytes.len();
        // Bytes per entry of this try (fixed parts included, so an overestimate), with a
        // 5 % margin; always at least one client fewer than this try.
        let n = entries(&doc, keep).max(1);
        let target = limit - limit / 20;
        let next = largest_keep(&doc, keep, |m| m.saturating_mul(bytes.len()) / n <= target);
        keep = next.min(keep - 1);
    }
    for ns in doc.namespaces.values_mut() {
        ns.windows
            .long
            .iter_mut()
            .for_each(|s| s.attributes.clear());
    }
    let bytes = encode(&doc);
    if bytes.len() <= limit {
        return Ok((bytes, Some(0)));
    }
    // Downloaded lists go last: the new leader downloads them again (when the URL answers).
    doc.tor_lists.clear();
    let bytes = encode(&doc);
    if bytes.len() <= limit {
        return Ok((bytes, Some(0)));
    }
    Err(SnapshotError::TooLarge(last.max(bytes.len())))
}

/// Reads a document written by [`encode_bounded`], checking its version and window shape.
pub fn decode(bytes: &[u8], cfg: &WindowConfig) -> Result<StateDoc, SnapshotError> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_INFLATED_BYTES)
        .read_to_end(&mut json)
        .map_err(|e| SnapshotError::Corrupt(format!("gzip: {e}")))?;
    let version: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    let found = version.get("version").and_then(serde_json::Value::as_u64);
    if found != Some(u64::from(STATE_VERSION)) {
        return Err(SnapshotError::Incompatible {
            found: found.map_or("none".into(), |v| v.to_string()),
            expected: STATE_VERSION.to_string(),
        });
    }
    let doc: StateDoc =
        serde_json::from_value(version).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    for w in doc.namespaces.values().map(|n| &n.windows) {
        if w.version != SNAPSHOT_VERSION
            || w.short_slice != cfg.short_slice
            || w.long_slice != cfg.long_slice
        {
            return Err(SnapshotError::Incompatible {
                found: format!("windows {} ({}/{})", w.version, w.short_slice, w.long_slice),
                expected: format!(
                    "windows {SNAPSHOT_VERSION} ({}/{})",
                    cfg.short_slice, cfg.long_slice
                ),
            });
        }
    }
    Ok(doc)
}

/// Clients in the short windows of the document (for logs and metrics).
pub fn clients(doc: &StateDoc) -> usize {
    let mut keys = std::collections::BTreeSet::new();
    for ns in doc.namespaces.values() {
        for s in &ns.windows.short {
            keys.extend(s.clients.iter().map(|c| (ns.windows.short_slice, c.key)));
        }
    }
    keys.len()
}

/// Only incidents that can still absorb detections are worth persisting.
pub fn is_open(i: &Incident) -> bool {
    i.state == IncidentState::Active
}

fn encode(doc: &StateDoc) -> Vec<u8> {
    let json = serde_json::to_vec(doc).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&json);
    gz.finish().unwrap_or_default()
}

/// Client entries of the document if each slice kept at most `keep`.
fn entries(doc: &StateDoc, keep: usize) -> usize {
    doc.namespaces
        .values()
        .flat_map(|n| n.windows.short.iter().chain(&n.windows.long))
        .map(|s| s.clients.len().min(keep))
        .sum()
}

/// The largest `keep` in `0..=max` whose entry count `fits`.
fn largest_keep(doc: &StateDoc, max: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(entries(doc, mid)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

fn max_clients_per_slice(doc: &StateDoc) -> usize {
    doc.namespaces
        .values()
        .flat_map(|n| n.windows.short.iter().chain(&n.windows.long))
        .map(|s| s.clients.len())
        .max()
        .unwrap_or(0)
}

/// Keeps the `keep` heaviest clients (by requests) of each slice, and only their attributes.
fn trim_clients(doc: &mut StateDoc, keep: usize) {
    for ns in doc.namespaces.values_mut() {
        let w = &mut ns.windows;
        for s in w.short.iter_mut().chain(w.long.iter_mut()) {
            if s.clients.len() <= keep {
                continue;
            }
            s.clients.sort_by(|a, b| {
                b.counts
                    .requests
                    .cmp(&a.counts.requests)
                    .then(a.key.cmp(&b.key))
            });
            s.clients.truncate(keep);
            let kept: std::collections::BTreeSet<_> = s.clients.iter().map(|c| c.key).collect();
            s.clients.sort_by_key(|c| c.key);
            s.attributes.retain(|a| kept.contains(&a.client));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::IpAddr;

    use palisade_detection::counter::{Counter, CounterConfig};
    use palisade_detection::facts::RequestFacts;
    use palisade_detection::report::SidecarId;
    use palisade_detection::window::WindowSet;

    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// Windows of namespace `shop` with `clients` clients (client i sends i+1 requests).
    fn doc(clients: u32) -> StateDoc {
        let id = SidecarId {
            pod: "api-0".into(),
            workload: "api".into(),
            namespace: "shop".into(),
        };
        let mut counter = Counter::new(id, &CounterConfig::default(), t(0));
        for i in 0..clients {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + i));
            for _ in 0..=i {
                counter.record(&RequestFacts::new(ip, 200));
            }
        }
        let mut set = WindowSet::new(WindowConfig::default());
        set.merge(&counter.take_report(t(1)), t(1));
        let windows = set.get("shop").unwrap().snapshot(t(2));
        StateDoc {
            version: STATE_VERSION,
            taken_at: t(2),
            namespaces: BTreeMap::from([(
                "shop".to_owned(),
                NamespaceState {
                    windows,
                    detected: DetectedSet::default(),
                    incidents: vec![],
                    surge: None,
                    actions: BTreeMap::new(),
                },
            )]),
            tor_lists: vec![],
        }
    }

    fn tor_list(entries: usize) -> TorListState {
        TorListState {
            namespace: "shop".into(),
            rule: "tor".into(),
            uid: "u-1".into(),
            source: "url https://lists.example/exits".into(),
            fetched: t(1),
            next: Some(t(3601)),
            entries: (0..entries)
                .map(|i| {
                    let ip = std::net::Ipv4Addr::from(0xc633_6400u32 + i as u32);
                    ipnet::IpNet::from(IpAddr::from(ip))
                })
                .chain(["2001:db8::/48".parse().unwrap()])
                .collect(),
        }
    }

    #[test]
    fn downloaded_tor_lists_round_trip_and_older_documents_have_none() {
        let mut d = doc(5);
        d.tor_lists = vec![tor_list(3)];
        let (bytes, kept) = encode_bounded(&d, MAX_STATE_BYTES).unwrap();
        assert_eq!(kept, None);
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        assert_eq!(back.tor_lists, d.tor_lists);
        let json = serde_json::to_value(&back).unwrap();
        assert_eq!(json["torLists"][0]["entries"][3], "2001:db8::/48");
        // A document written before the lists were kept.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("torLists");
        let old: StateDoc = serde_json::from_value(old).unwrap();
        assert!(old.tor_lists.is_empty());
    }

    #[test]
    fn a_document_too_large_with_its_lists_drops_the_lists_last() {
        let mut d = doc(2);
        d.tor_lists = vec![tor_list(60_000)];
        let without = {
            let mut w = d.clone();
            w.tor_lists.clear();
            encode(&w).len()
        };
        assert!(encode(&d).len() > 4 * without);
        let (bytes, kept) = encode_bounded(&d, 2 * without).unwrap();
        assert_eq!(kept, Some(0));
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        assert!(back.tor_lists.is_empty(), "the list went last");
        assert_eq!(
            back.namespaces["shop"].windows.short[0].totals,
            d.namespaces["shop"].windows.short[0].totals,
            "the windows' totals stay exact"
        );
        // A list that fits stays, at the cost of per-client counts.
        let (bytes, _) = encode_bounded(&d, encode(&d).len() - 1).unwrap();
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        assert_eq!(back.tor_lists, d.tor_lists);
    }

    #[test]
    fn action_counts_round_trip_and_go_first_when_the_document_is_too_large() {
        let mut d = doc(50);
        let now = t(2).as_second();
        let mut series = crate::collector::evidence::Series::default();
        series.add(now - 30, &[3, 1, 2], now);
        series.add(now - 7200, &[5, 0, 0], now);
        d.namespaces.get_mut("shop").unwrap().actions =
            BTreeMap::from([("deny-blocked".to_owned(), series.clone())]);
        let (bytes, kept) = encode_bounded(&d, MAX_STATE_BYTES).unwrap();
        assert_eq!(kept, None);
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        assert_eq!(back.namespaces["shop"].actions["deny-blocked"], series);
        // Many actions' counts make the document too large: they go, every client stays.
        let many: BTreeMap<String, _> = (0..20_000)
            .map(|i| (format!("action-{i}"), series.clone()))
            .collect();
        let without = encode(&d).len();
        d.namespaces.get_mut("shop").unwrap().actions = many;
        assert!(encode(&d).len() > 2 * without);
        let (bytes, _) = encode_bounded(&d, 2 * without).unwrap();
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        assert!(back.namespaces["shop"].actions.is_empty());
        assert_eq!(clients(&back), 50, "no client trimmed for the counts");
    }

    /// Advanced Anomaly's baseline is saved with the windows; when the document is too large
    /// its per-client profiles go (after the action counts), the cohort and every window client
    /// stay.
    #[test]
    fn the_anomaly_baseline_round_trips_and_its_profiles_go_before_clients() {
        use palisade_detection::seasonal::{Cell, Profile, Seasonal};
        let mut d = doc(50);
        let cell = |a: f32, b: f32| Cell {
            n: 100,
            mean: a,
            var: b,
        };
        let mut s = Seasonal {
            first: Some(t(-86_400)),
            last: Some(t(0)),
            week: vec![cell(1.5, 0.7); 168],
            day: vec![cell(1.25, 0.5); 24],
            ..Seasonal::default()
        };
        for i in 0..1024u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000u32 + i));
            let hours = (0..24)
                .map(|h| cell(i as f32 * 1.37 + h as f32, 3.3 * i as f32 + 0.1))
                .collect();
            s.profiles.insert(
                ipnet::IpNet::from(ip),
                Profile {
                    hours,
                    errors: cell(0.03, 0.001),
                    last_seen: t(0),
                },
            );
        }
        d.namespaces.get_mut("shop").unwrap().windows.seasonal = Some(s.clone());
        let (bytes, kept) = encode_bounded(&d, MAX_STATE_BYTES).unwrap();
        assert_eq!(kept, None);
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        assert_eq!(back.namespaces["shop"].windows.seasonal.as_ref(), Some(&s));
        let without = {
            let mut w = d.clone();
            if let Some(s) = &mut w.namespaces.get_mut("shop").unwrap().windows.seasonal {
                s.profiles.clear();
            }
            encode(&w).len()
        };
        assert!(encode(&d).len() > 2 * without);
        let (bytes, kept) = encode_bounded(&d, 2 * without).unwrap();
        assert_eq!(kept, None, "no window client trimmed");
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        let kept = back.namespaces["shop"].windows.seasonal.as_ref().unwrap();
        assert!(kept.profiles.is_empty());
        assert_eq!(
            (&kept.week, &kept.day),
            (&s.week, &s.day),
            "the cohort stays"
        );
        assert_eq!(clients(&back), 50);
    }

    #[test]
    fn a_document_round_trips() {
        let d = doc(50);
        let (bytes, kept) = encode_bounded(&d, MAX_STATE_BYTES).unwrap();
        assert_eq!(kept, None, "small documents keep every client");
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        assert_eq!(back, d);
        assert_eq!(clients(&back), 50);
    }

    #[test]
    fn a_large_document_keeps_its_heaviest_clients_within_the_limit() {
        let d = doc(3000);
        let full = encode_bounded(&d, usize::MAX).unwrap().0.len();
        let limit = full / 4;
        let (bytes, kept) = encode_bounded(&d, limit).unwrap();
        assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
        let kept = kept.expect("clients were trimmed");
        let back = decode(&bytes, &WindowConfig::default()).unwrap();
        let short = &back.namespaces["shop"].windows.short[0];
        assert_eq!(short.clients.len(), kept);
        assert!(
            short
                .clients
                .iter()
                .all(|c| c.counts.requests > 3000 - kept as u32),
            "the heaviest clients are kept"
        );
        assert_eq!(
            short.totals, d.namespaces["shop"].windows.short[0].totals,
            "totals stay exact"
        );
    }

    /// The number of clients kept is estimated from the size of a try, not halved: it ends
    /// close to the most that fit.
    #[test]
    fn a_trimmed_document_keeps_nearly_as_many_clients_as_fit() {
        let d = doc(3000);
        let mut fits_2100 = d.clone();
        trim_clients(&mut fits_2100, 2100);
        let limit = encode(&fits_2100).len();
        let (bytes, kept) = encode_bounded(&d, limit).unwrap();
        let kept = kept.expect("clients were trimmed");
        assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
        assert!(
            (1900..=2100).contains(&kept),
            "2100 clients per slice fit in {limit} bytes; kept {kept}"
        );
    }

    #[test]
    fn corrupt_and_incompatible_documents_are_refused_with_a_reason() {
        let cfg = WindowConfig::default();
        let e = decode(b"not gzip", &cfg).unwrap_err();
        assert_eq!(e.reason(), "StateCorrupt");
        let mut d = doc(1);
        d.version = 99;
        let e = decode(&encode(&d), &cfg).unwrap_err();
        assert_eq!(e.reason(), "StateIncompatible", "{e}");
        let other = WindowConfig {
            short_slice: jiff::SignedDuration::from_secs(10),
            ..WindowConfig::default()
        };
        let e = decode(&encode(&doc(1)), &other).unwrap_err();
        assert_eq!(e.reason(), "StateIncompatible", "{e}");
    }
}
