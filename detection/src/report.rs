//! The window summary a sidecar sends to the collector (JSON, versioned).
//!
//! One report covers one time slice `[start, end)` of one sidecar. It names its sender
//! (pod, workload, namespace) and carries a per-sidecar sequence number, so the collector can
//! drop duplicates (`seq` + `start` + `end`, which also tells a restarted sidecar apart) and
//! notice gaps; a lost report only makes the windows undercount, it never breaks them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::key::ClientKey;
use crate::stats::{AttrDim, ClientCounts, Totals};

/// The report format version this crate writes and reads.
pub const REPORT_VERSION: u32 = 1;

/// Largest report accepted by [`Report::from_json`] (bytes).
pub const MAX_REPORT_BYTES: usize = 4 << 20;

/// Who sent a report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarId {
    /// Pod name.
    pub pod: String,
    /// The protected workload (Deployment, StatefulSet…) the pod belongs to.
    pub workload: String,
    /// Namespace (the environment).
    pub namespace: String,
}

/// One client's counts in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientEntry {
    /// The client.
    pub key: ClientKey,
    /// What it did in the slice.
    #[serde(flatten)]
    pub counts: ClientCounts,
}

/// A sampled attribute count of one client (for incident attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttrEntry {
    /// The client (of the counter's primary key kind).
    pub client: ClientKey,
    /// Which attribute.
    pub dim: AttrDim,
    /// Its value (bounded length).
    pub value: String,
    /// Estimated requests with this value.
    pub count: u64,
}

/// Most clients one report may carry: a sidecar tracks at most 3584 clients of each of the
/// four key kinds per slice.
pub const MAX_REPORT_CLIENTS: usize = 16_384;
/// Most sampled attribute counts one report may carry (a sidecar keeps 1024 per slice).
pub const MAX_REPORT_ATTRIBUTES: usize = 4096;
/// Longest pod, workload or namespace name a report may carry (a Kubernetes name).
pub const MAX_SIDECAR_NAME: usize = 253;

/// Most actions one report may name (a bundle holds at most 1024).
pub const MAX_REPORT_ACTIONS: usize = 1024;
/// Longest action name a report may carry (a Kubernetes object name).
pub const MAX_ACTION_NAME: usize = 253;

/// What one SecurityAction did in the slice, as counted by the sidecar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionCount {
    /// The SecurityAction's name (in the report's namespace).
    pub name: String,
    /// Requests whose conditions the action matched while it was enforced (whether or not
    /// another action decided them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub matched: u64,
    /// Requests it would have matched in `Observe` mode (the action's, or the sidecar's).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub observed: u64,
    /// Requests this action decided: the deny that answered, the allow that won, a flag whose
    /// headers were added.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decided: u64,
}

impl ActionCount {
    /// Adds another count of the same action.
    pub fn add(&mut self, other: &Self) {
        self.matched = self.matched.saturating_add(other.matched);
        self.observed = self.observed.saturating_add(other.observed);
        self.decided = self.decided.saturating_add(other.decided);
    }

    /// Whether every count is zero.
    pub fn is_empty(&self) -> bool {
        self.matched == 0 && self.observed == 0 && self.decided == 0
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Most request samples one report may carry.
pub const MAX_REPORT_SAMPLES: usize = 256;
/// Longest path or user agent a sample keeps (longer ones are cut on a character boundary).
pub const MAX_SAMPLE_TEXT: usize = 256;

/// One sampled request, as a candidate SecurityAction would see it (the replay sample: see
/// the operator's `collector::replay`). API keys and tokens are SHA-256 hashes (hex), as
/// action conditions name them; the path has no query string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSample {
    /// The client address (as the sidecar resolved it).
    pub ip: std::net::IpAddr,
    /// The method (upper case).
    pub method: String,
    /// The path the policy matched (normalised), at most [`MAX_SAMPLE_TEXT`] bytes.
    pub path: String,
    /// The response status (the application's, or the sidecar's own deny).
    pub status: u16,
    /// The `User-Agent`, at most [`MAX_SAMPLE_TEXT`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Two-letter region code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Autonomous system number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// sha256 of the API key, lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// sha256 of the access token, lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Developer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer: Option<String>,
    /// Developer app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// API product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

impl RequestSample {
    /// Whether every text field is within its bound.
    pub fn is_bounded(&self) -> bool {
        let short = |s: &Option<String>| s.as_ref().is_none_or(|s| s.len() <= MAX_ACTION_NAME);
        self.method.len() <= 32
            && self.path.len() <= MAX_SAMPLE_TEXT
            && self
                .user_agent
                .as_ref()
                .is_none_or(|s| s.len() <= MAX_SAMPLE_TEXT)
            && [&self.region, &self.api_key, &self.token]
                .iter()
                .all(|s| s.as_ref().is_none_or(|s| s.len() <= 64))
            && [&self.developer, &self.app, &self.product]
                .into_iter()
                .all(short)
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn bounded_text(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A sidecar's summary of one time slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Format version ([`REPORT_VERSION`]).
    pub version: u32,
    /// The sender.
    pub sidecar: SidecarId,
    /// Per-sidecar sequence number, +1 per report, from 1 after each sidecar start.
    pub seq: u64,
    /// Slice start (inclusive).
    pub start: Timestamp,
    /// Slice end (exclusive).
    pub end: Timestamp,
    /// Exact namespace totals of the slice (every request, tracked client or not).
    pub totals: Totals,
    /// Per-client counts of the tracked clients.
    pub clients: Vec<ClientEntry>,
    /// Per-client sampled attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttrEntry>,
    /// Clients evicted by the heavy-hitter bound in this slice (0 when counting was exact).
    #[serde(default)]
    pub evicted: u64,
    /// What each action did in the slice (only actions with a non-zero count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionCount>,
    /// The generation of the policy bundle the sidecar enforced at the end of the slice;
    /// `None` while it holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// A uniform sample of the slice's requests (at most [`MAX_REPORT_SAMPLES`]); each stands
    /// for `totals.requests / samples.len()` requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<RequestSample>,
}

/// A report could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The body is not a valid report.
    #[error("report is not valid JSON for format version {REPORT_VERSION}: {source}")]
    Json {
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The report has a version this collector does not read.
    #[error(
        "report version {found} is not supported; this collector reads version {REPORT_VERSION}"
    )]
    Version {
        /// The version found.
        found: u32,
    },
    /// The report is larger than [`MAX_REPORT_BYTES`].
    #[error("report of {size} bytes exceeds the {MAX_REPORT_BYTES}-byte limit; lower maxClients")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Too many action counts, or an action name longer than a Kubernetes name.
    #[error(
        "report names {count} actions or a name longer than {MAX_ACTION_NAME} bytes; at most \
         {MAX_REPORT_ACTIONS} actions with Kubernetes object names"
    )]
    Actions {
        /// How many actions it names.
        count: usize,
    },
    /// Too many request samples, or a sample with a field beyond its bound.
    #[error(
        "report carries {count} request samples or a sample field beyond its bound; at most \
         {MAX_REPORT_SAMPLES} samples, paths and user agents of at most {MAX_SAMPLE_TEXT} bytes"
    )]
    Samples {
        /// How many samples it carries.
        count: usize,
    },
    /// Too many clients or attributes, an attribute value longer than
    /// [`crate::stats::MAX_ATTR_LEN`], or a sender name longer than a Kubernetes name.
    #[error(
        "report carries {clients} clients and {attributes} attributes, or a field beyond its \
         bound; at most {MAX_REPORT_CLIENTS} clients, {MAX_REPORT_ATTRIBUTES} attributes of at \
         most {} bytes, and pod, workload and namespace names of at most {MAX_SIDECAR_NAME} bytes",
        crate::stats::MAX_ATTR_LEN
    )]
    Bounds {
        /// Clients carried.
        clients: usize,
        /// Attributes carried.
        attributes: usize,
    },
    /// `end` is not after `start`.
    #[error("report window ends ({end}) before it starts ({start})")]
    Window {
        /// Slice start.
        start: Timestamp,
        /// Slice end.
        end: Timestamp,
    },
}

impl ReportError {
    /// Short fixed name of the error, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Json { .. } => "ReportInvalid",
            Self::Version { .. } => "ReportVersionUnsupported",
            Self::TooLarge { .. } => "ReportTooLarge",
            Self::Window { .. } => "ReportWindowInvalid",
            Self::Actions { .. } => "ReportActionsInvalid",
            Self::Samples { .. } => "ReportSamplesInvalid",
            Self::Bounds { .. } => "ReportBoundsExceeded",
        }
    }
}

impl Report {
    /// The largest report the collector accepts, for the benchmarks and quota tests of what
    /// a hostile sender can make it do: [`MAX_REPORT_CLIENTS`] IPv4 clients from 10.0.0.0/8
    /// (`salt` picks which, so that reports with other salts bring new ones),
    /// [`MAX_REPORT_ATTRIBUTES`] path values of [`crate::stats::MAX_ATTR_LEN`] bytes, of pod
    /// `pod` of workload `hostile` in `namespace`, covering the second before `now`.
    pub fn maximal(namespace: &str, pod: &str, salt: u32, now: Timestamp) -> Self {
        let counts = ClientCounts {
            requests: 1,
            ..ClientCounts::default()
        };
        let per = u32::try_from(MAX_REPORT_CLIENTS).unwrap_or(u32::MAX);
        let clients: Vec<ClientEntry> = (0..per)
            .map(|i| {
                let n = (salt.wrapping_mul(per).wrapping_add(i)) & 0x00ff_ffff;
                ClientEntry {
                    key: ClientKey::Ip(std::net::Ipv4Addr::from(0x0a00_0000 | n).into()),
                    counts,
                }
            })
            .collect();
        let mut totals = Totals::default();
        for c in &clients {
            totals.add_client(&c.counts);
        }
        let attributes = clients
            .iter()
            .take(MAX_REPORT_ATTRIBUTES)
            .enumerate()
            .map(|(i, c)| {
                let mut value = format!("/{salt}/{i}/");
                let pad = crate::stats::MAX_ATTR_LEN.saturating_sub(value.len());
                value.extend(std::iter::repeat_n('x', pad));
                AttrEntry {
                    client: c.key,
                    dim: AttrDim::Path,
                    value,
                    count: 1,
                }
            })
            .collect();
        Self {
            version: REPORT_VERSION,
            sidecar: SidecarId {
                pod: pod.into(),
                workload: "hostile".into(),
                namespace: namespace.into(),
            },
            seq: 1,
            start: now - jiff::SignedDuration::from_secs(1),
            end: now,
            totals,
            clients,
            attributes,
            evicted: 0,
            actions: Vec::new(),
            generation: None,
            samples: Vec::new(),
        }
    }

    /// Encodes the report as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report always serialises")
    }

    /// Decodes and checks a report (size, version, window).
    pub fn from_json(body: &[u8]) -> Result<Self, ReportError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge { size: body.len() });
        }
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head =
            serde_json::from_slice(body).map_err(|source| ReportError::Json { source })?;
        if head.version != REPORT_VERSION {
            return Err(ReportError::Version {
                found: head.version,
            });
        }
        let report: Report =
            serde_json::from_slice(body).map_err(|source| ReportError::Json { source })?;
        if report.end <= report.start {
            return Err(ReportError::Window {
                start: report.start,
                end: report.end,
            });
        }
        let id = &report.sidecar;
        let names_ok = [&id.pod, &id.workload, &id.namespace]
            .iter()
            .all(|n| n.len() <= MAX_SIDECAR_NAME);
        let attrs_ok = report
            .attributes
            .iter()
            .all(|a| a.value.len() <= crate::stats::MAX_ATTR_LEN);
        if report.clients.len() > MAX_REPORT_CLIENTS
            || report.attributes.len() > MAX_REPORT_ATTRIBUTES
            || !attrs_ok
            || !names_ok
        {
            return Err(ReportError::Bounds {
                clients: report.clients.len(),
                attributes: report.attributes.len(),
            });
        }
        let long_name = report
            .actions
            .iter()
            .any(|a| a.name.is_empty() || a.name.len() > MAX_ACTION_NAME);
        if report.actions.len() > MAX_REPORT_ACTIONS || long_name {
            return Err(ReportError::Actions {
                count: report.actions.len(),
            });
        }
        if report.samples.len() > MAX_REPORT_SAMPLES
            || !report.samples.iter().all(RequestSample::is_bounded)
        {
            return Err(ReportError::Samples {
                count: report.samples.len(),
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Report {
        let mut counts = ClientCounts {
            requests: 3,
            errors: 1,
            bytes: 900,
            ..Default::default()
        };
        counts.user_agents.insert(42);
        Report {
            version: REPORT_VERSION,
            sidecar: SidecarId {
                pod: "api-0".into(),
                workload: "api".into(),
                namespace: "shop".into(),
            },
            seq: 7,
            start: "2026-11-26T12:00:00Z".parse().unwrap(),
            end: "2026-11-26T12:00:01Z".parse().unwrap(),
            totals: Totals {
                requests: 3,
                errors: 1,
                bytes: 900,
                ..Default::default()
            },
            clients: vec![ClientEntry {
                key: "ip:203.0.113.7".parse().unwrap(),
                counts,
            }],
            attributes: vec![AttrEntry {
                client: "ip:203.0.113.7".parse().unwrap(),
                dim: AttrDim::Path,
                value: "/login".into(),
                count: 3,
            }],
            evicted: 0,
            actions: Vec::new(),
            generation: None,
            samples: Vec::new(),
        }
    }

    #[test]
    fn json_round_trips() {
        let r = sample();
        let json = r.to_json();
        assert_eq!(Report::from_json(&json).unwrap(), r);
        let text = String::from_utf8(json).unwrap();
        assert!(text.contains(r#""key":"ip:203.0.113.7""#), "{text}");
    }

    #[test]
    fn reports_without_sequential_counts_still_parse() {
        // A client entry as sidecars wrote it before API Scraper (no `sequential`).
        let old = r#"{"version":1,"sidecar":{"pod":"api-0","workload":"api","namespace":"shop"},
            "seq":7,"start":"2026-11-26T12:00:00Z","end":"2026-11-26T12:00:01Z",
            "totals":{"requests":3,"errors":1,"forbidden":0,"denied":0,"tokenCalls":0,"bytes":900},
            "clients":[{"key":"ip:203.0.113.7","requests":3,"errors":1,"forbidden":0,"denied":0,
            "tokenCalls":0,"bytes":900,"userAgents":{"slots":[42,0,0,0]}}]}"#;
        let r = Report::from_json(old.as_bytes()).unwrap();
        assert_eq!(r.clients[0].counts.sequential, 0);
        assert_eq!(r.clients[0].counts, sample().clients[0].counts);
        let mut new = sample();
        assert!(
            !String::from_utf8(new.to_json())
                .unwrap()
                .contains("sequential")
        );
        new.clients[0].counts.sequential = 2;
        let text = String::from_utf8(new.to_json()).unwrap();
        assert!(text.contains(r#""sequential":2"#), "{text}");
        assert_eq!(Report::from_json(text.as_bytes()).unwrap(), new);
    }

    /// A hostile sender's report: more clients or attributes than any sidecar sends, a value
    /// longer than the counter keeps, a made-up pod name of 1 KiB: each refused by reason;
    /// at the bounds, accepted.
    #[test]
    fn clients_attributes_and_names_are_bounded() {
        let refused = |r: &Report| Report::from_json(&r.to_json()).unwrap_err().reason();
        let mut r = sample();
        let entry = r.clients[0].clone();
        r.clients = (0..MAX_REPORT_CLIENTS as u32)
            .map(|i| ClientEntry {
                key: format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)
                    .parse()
                    .unwrap(),
                counts: entry.counts,
            })
            .collect();
        let attr = r.attributes[0].clone();
        r.attributes = vec![attr.clone(); MAX_REPORT_ATTRIBUTES];
        r.attributes[0].value = "a".repeat(crate::stats::MAX_ATTR_LEN);
        r.sidecar.pod = "p".repeat(MAX_SIDECAR_NAME);
        assert!(Report::from_json(&r.to_json()).is_ok(), "at the bounds");
        let mut more = r.clone();
        more.clients.push(entry);
        assert_eq!(refused(&more), "ReportBoundsExceeded");
        let mut more = r.clone();
        more.attributes.push(attr);
        assert_eq!(refused(&more), "ReportBoundsExceeded");
        let mut long = r.clone();
        long.attributes[1].value = "a".repeat(crate::stats::MAX_ATTR_LEN + 1);
        assert_eq!(refused(&long), "ReportBoundsExceeded");
        let mut name = r;
        name.sidecar.pod = "p".repeat(1024);
        assert_eq!(refused(&name), "ReportBoundsExceeded");
    }

    /// `Report::maximal` is at every bound and within them all: the benchmarks and quota
    /// tests built on it measure the most a sender can make the collector do.
    #[test]
    fn the_maximal_report_is_at_every_bound() {
        let now: Timestamp = "2026-12-05T00:00:00Z".parse().unwrap();
        let r = Report::maximal("shop", "fake-0", 3, now);
        let back = Report::from_json(&r.to_json()).expect("within the bounds");
        assert_eq!(back.clients.len(), MAX_REPORT_CLIENTS);
        assert_eq!(back.attributes.len(), MAX_REPORT_ATTRIBUTES);
        assert!(
            back.attributes
                .iter()
                .all(|a| a.value.len() == crate::stats::MAX_ATTR_LEN)
        );
        let distinct: std::collections::HashSet<_> = back.clients.iter().map(|c| c.key).collect();
        assert_eq!(distinct.len(), MAX_REPORT_CLIENTS, "every client new");
        let other = Report::maximal("shop", "fake-1", 4, now);
        assert!(
            !distinct.contains(&other.clients[0].key),
            "another salt, other clients"
        );
    }

    fn sample_of(path: &str) -> RequestSample {
        RequestSample {
            ip: "192.0.2.1".parse().unwrap(),
            method: "GET".into(),
            path: path.into(),
            status: 200,
            user_agent: None,
            region: None,
            asn: None,
            api_key: None,
            token: None,
            developer: None,
            app: None,
            product: None,
        }
    }

    #[test]
    fn samples_are_bounded_in_number_and_size() {
        let mut r = sample();
        r.samples = vec![sample_of("/login"); MAX_REPORT_SAMPLES];
        let back = Report::from_json(&r.to_json()).unwrap();
        assert_eq!(back.samples.len(), MAX_REPORT_SAMPLES);
        r.samples.push(sample_of("/one-too-many"));
        let e = Report::from_json(&r.to_json()).unwrap_err();
        assert_eq!(e.reason(), "ReportSamplesInvalid");
        r.samples = vec![sample_of(&format!("/{}", "a".repeat(MAX_SAMPLE_TEXT)))];
        let e = Report::from_json(&r.to_json()).unwrap_err();
        assert_eq!(
            e.reason(),
            "ReportSamplesInvalid",
            "a path beyond the bound"
        );
        let mut long_key = sample_of("/");
        long_key.api_key = Some("f".repeat(65));
        r.samples = vec![long_key];
        assert!(Report::from_json(&r.to_json()).is_err());
        // The sidecar cuts text on a character boundary, within the bound.
        let cut = bounded_text(&"é".repeat(200), MAX_SAMPLE_TEXT);
        assert!(cut.len() <= MAX_SAMPLE_TEXT && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn other_versions_are_refused() {
        let mut r = sample();
        r.version = 2;
        let err = Report::from_json(&r.to_json()).unwrap_err();
        assert_eq!(err.reason(), "ReportVersionUnsupported");
    }

    #[test]
    fn inverted_windows_are_refused() {
        let mut r = sample();
        std::mem::swap(&mut r.start, &mut r.end);
        assert_eq!(
            Report::from_json(&r.to_json()).unwrap_err().reason(),
            "ReportWindowInvalid"
        );
        assert_eq!(
            Report::from_json(b"{").unwrap_err().reason(),
            "ReportInvalid"
        );
    }
}
