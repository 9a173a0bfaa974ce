//! The per-type parameters of a DetectionRule, with the defaults of the product this follows
//! (5-minute windows for the volume rules, 24 hours for the error and session rules).

use kube::{KubeSchema, core::Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{common::IpListSource, duration::Duration, duration::duration_bounds};

fn dur(s: &'static str) -> Duration {
    Duration::from_static(s)
}

fn window_5m() -> Duration {
    dur("5m")
}
fn window_24h() -> Duration {
    dur("24h")
}
fn window_1h() -> Duration {
    dur("1h")
}

/// The collector keeps 24 hours of traffic: windows up to 5 minutes are counted in 30 s
/// slices, longer ones in 15 min slices (rounded up to whole slices).
fn window_bounds() -> Rule {
    duration_bounds("window", "1m", "24h")
}

macro_rules! default_fns {
    ($($name:ident: $ty:ty = $value:expr;)*) => {
        $(fn $name() -> $ty { $value })*
    };
}

default_fns! {
    flooder_share: i32 = 5;
    flooder_requests: i64 = 300;
    flooder_clients: i32 = 20;
    flooder_total: i64 = 1000;
    scraper_clients: i32 = 10;
    scraper_share: i32 = 10;
    scraper_bytes: i64 = 50 * 1024 * 1024;
    brute_errors: i32 = 50;
    brute_requests: i64 = 100;
    robot_forbidden: i64 = 100;
    robot_share: i32 = 20;
    oauth_sessions: i32 = 50;
    oauth_agents: i32 = 2;
    scraper_requests: i64 = 500;
    scraper_sequential: i32 = 80;
}

/// Flooder: a client that sends a high share of all the namespace's traffic in a short window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlooderParams {
    /// The sliding window, `1m` to `24h` (up to `5m` in 30 s steps, beyond in 15 min steps,
    /// rounded up). Default `5m`.
    #[serde(default = "window_5m")]
    #[x_kube(validation = window_bounds())]
    pub window: Duration,
    /// Minimum share of all requests in the window, in percent (1–100). Default 5.
    #[serde(default = "flooder_share")]
    #[schemars(range(min = 1, max = 100))]
    pub min_share_percent: i32,
    /// Minimum requests from the client in the window. Default 300.
    #[serde(default = "flooder_requests")]
    #[schemars(range(min = 1))]
    pub min_requests: i64,
    /// Minimum distinct active clients in the window before the rule reports anyone (a share
    /// of a tiny population means nothing). Default 20.
    #[serde(default = "flooder_clients")]
    #[schemars(range(min = 1))]
    pub min_active_clients: i32,
    /// Minimum requests of the whole namespace in the window before the rule reports anyone.
    /// Default 1000.
    #[serde(default = "flooder_total")]
    #[schemars(range(min = 1))]
    pub min_total_requests: i64,
}

/// Static Content Scraper: a client that takes a high share of the response bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticContentScraperParams {
    /// The sliding window, `1m` to `24h`. Default `5m`.
    #[serde(default = "window_5m")]
    #[x_kube(validation = window_bounds())]
    pub window: Duration,
    /// Minimum share of all response payload bytes in the window, in percent. Default 10.
    #[serde(default = "scraper_share")]
    #[schemars(range(min = 1, max = 100))]
    pub min_share_percent: i32,
    /// Minimum response payload bytes to the client in the window. Default 52428800 (50 MiB).
    #[serde(default = "scraper_bytes")]
    #[schemars(range(min = 1))]
    pub min_response_bytes: i64,
    /// Minimum distinct active clients in the window before the rule reports anyone.
    /// Default 10.
    #[serde(default = "scraper_clients")]
    #[schemars(range(min = 1))]
    pub min_active_clients: i32,
}

/// Brute Guessor: a client with a high proportion of error responses (credential or key
/// guessing). The proxy's own denials are not counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BruteGuessorParams {
    /// The sliding window, `1m` to `24h` (beyond `5m` counted in 15 min slices). Default
    /// `24h`.
    #[serde(default = "window_24h")]
    #[x_kube(validation = window_bounds())]
    pub window: Duration,
    /// Minimum share of the client's responses that are errors (4xx and 5xx), in percent.
    /// Default 50.
    #[serde(default = "brute_errors")]
    #[schemars(range(min = 1, max = 100))]
    pub min_error_percent: i32,
    /// Minimum requests from the client in the window. Default 100.
    #[serde(default = "brute_requests")]
    #[schemars(range(min = 1))]
    pub min_requests: i64,
}

/// Robot Abuser: a client that keeps getting 403 rejections from the workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RobotAbuserParams {
    /// The sliding window, `1m` to `24h` (beyond `5m` counted in 15 min slices). Default
    /// `24h`.
    #[serde(default = "window_24h")]
    #[x_kube(validation = window_bounds())]
    pub window: Duration,
    /// Minimum 403 responses to the client in the window (the proxy's own denials are not
    /// counted). Default 100.
    #[serde(default = "robot_forbidden")]
    #[schemars(range(min = 1))]
    pub min_forbidden: i64,
    /// Minimum share of the client's responses that are 403, in percent. Default 20.
    #[serde(default = "robot_share")]
    #[schemars(range(min = 1, max = 100))]
    pub min_forbidden_percent: i32,
}

/// OAuth Abuser: many OAuth sessions from few user agents. A session is a call to the OAuth
/// token endpoint (the sidecar's `--token-endpoint` path), which is where a session starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthAbuserParams {
    /// The sliding window, `1m` to `24h` (beyond `5m` counted in 15 min slices). Default
    /// `24h`.
    #[serde(default = "window_24h")]
    #[x_kube(validation = window_bounds())]
    pub window: Duration,
    /// Minimum OAuth sessions of the client in the window: its successful token-endpoint
    /// calls or the distinct access tokens it presented, whichever is larger. Default 50.
    #[serde(default = "oauth_sessions")]
    #[schemars(range(min = 2, max = 10000))]
    pub min_sessions: i32,
    /// Maximum distinct user agents among those sessions (many sessions from one or two user
    /// agents is what marks abuse). Default 2.
    #[serde(default = "oauth_agents")]
    #[schemars(range(min = 1, max = 100))]
    pub max_user_agents: i32,
}

/// TorList: clients whose IP is a Tor exit node. Set exactly one of `fromConfigMap` and `url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.fromConfigMap) != has(self.url)").message(
    "torList: set exactly one of fromConfigMap (a list you maintain) and url (a list the \
     operator downloads)"
))]
#[x_kube(validation = Rule::new("has(self.url) || !(has(self.refreshInterval) || has(self.maxAge))").message(
    "torList.refreshInterval and maxAge apply to url lists only (the operator reads a \
     fromConfigMap list at every evaluation and cannot tell its age); remove them"
))]
#[x_kube(validation = Rule::new("!has(self.fromConfigMap) || has(self.fromConfigMap.name)").message(
    "torList.fromConfigMap needs name (a selector is not supported for Tor lists); name the \
     ConfigMap"
))]
#[serde(rename_all = "camelCase")]
pub struct TorListParams {
    /// The ConfigMap of this namespace holding the exit list (`name`, and `key`: absent, every
    /// `data` key and every `binaryData` key ending in `.gz`), one IP or CIDR a line, read by
    /// the operator when the rule appears and within 5 seconds of each change of the
    /// ConfigMap. A missing ConfigMap or key, or a line that is not an address, sets
    /// `ListReady` and `Ready` False; the last good list stays in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_config_map: Option<IpListSource>,
    /// An HTTP(S) URL the operator downloads the list from, like
    /// `https://check.torproject.org/torbulkexitlist` (one IP a line; the `exit-addresses`
    /// format is also understood).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(
        "isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''"
    ).message("torList.url must be an absolute http or https URL, like https://check.torproject.org/torbulkexitlist"))]
    pub url: Option<String>,
    /// How often the operator downloads `url` again (`url` only). Default `1h`. A failed
    /// download is retried after a minute, doubling up to this interval; the last good list
    /// stays in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration_bounds("refreshInterval", "5m", "168h"))]
    pub refresh_interval: Option<Duration>,
    /// A downloaded list older than this is reported stale (condition `ListReady` False,
    /// reason `Stale`, and a `ListStale` Event) but still used: dropping it would silently
    /// stop detecting Tor clients (`url` only). Default `48h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration_bounds("maxAge", "1h", "720h"))]
    pub max_age: Option<Duration>,
}

/// How sensitive a learned model is: `High` reports more, with more false positives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Sensitivity {
    /// Fewer, surer detections.
    Low,
    /// The default.
    #[default]
    Medium,
    /// More detections, more false positives.
    High,
}

/// Advanced Anomaly: learns what each busy client of the namespace usually sends per hour of
/// the day, and what clients without history usually send per hour of the week, and flags a
/// client whose requests in the 5-minute window stand far above that (and at least twice
/// what was expected), naming what is anomalous. Volume is judged; its errors, and a path or
/// region that sets it apart, are reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedAnomalyParams {
    /// `Low` (a z-score of at least 8), `Medium` (6, the default) or `High` (4: more
    /// detections, more false positives).
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// How long the baseline learns before the rule flags anyone, `1h` to `2016h` (12
    /// weeks). Default `336h` (two weeks, what Apigee recommends as the least history).
    /// While it learns, every client's traffic is learned; afterwards a period that scores
    /// as an outlier is not, so an attack does not become normal. The baseline survives a
    /// failover with the collector's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = duration_bounds("minHistory", "1h", "2016h"))]
    pub min_history: Option<Duration>,
}

/// API Scraper: clients walking identifiers (`/items/1`, `/items/2`, … or `?page=1`,
/// `?page=2`, …), the signature of systematic extraction. A request is *sequential* when,
/// for the same client and proxy pod, its path has the same shape as the client's previous
/// request (the same segments, every all-digit segment of up to 18 digits counting as a
/// placeholder; plus the parameter name when a numeric `page` or `id` query parameter gives
/// the number) and its number — that parameter's value, else the last all-digit segment —
/// is 1 to 10 away from the previous one. Refreshing the same page is not sequential; other
/// query parameters are ignored. The rule marks a client with at least `minRequests`
/// requests in `window` of which at least `minSequentialPercent` % are sequential.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiScraperParams {
    /// The sliding window, `1m` to `24h` (beyond `5m` counted in 15 min slices). Default
    /// `1h`.
    #[serde(default = "window_1h")]
    #[x_kube(validation = window_bounds())]
    pub window: Duration,
    /// Minimum requests from the client in the window (scaled by `sensitivity`). Default 500.
    #[serde(default = "scraper_requests")]
    #[schemars(range(min = 1))]
    pub min_requests: i64,
    /// Share of the client's requests in the window that are sequential (walking
    /// identifiers: `/items/1`, `/items/2`, ...), in percent (scaled by `sensitivity`).
    /// Default 80.
    #[serde(default = "scraper_sequential")]
    #[schemars(range(min = 1, max = 100))]
    pub min_sequential_percent: i32,
    /// Scales both thresholds with Advanced Anomaly's factors: `Low` needs 4/3 of
    /// `minRequests` and allows 3/4 of the non-sequential share (`100 −
    /// minSequentialPercent`: 80 becomes 85); `Medium` (default) takes them as they are;
    /// `High` needs 2/3 of the requests and allows 3/2 of the non-sequential share (80 becomes
    /// 70).
    #[serde(default)]
    pub sensitivity: Sensitivity,
}

macro_rules! defaults_from_serde {
    ($($ty:ty),*) => {
        $(impl Default for $ty {
            fn default() -> Self {
                serde_json::from_value(serde_json::json!({}))
                    .unwrap_or_else(|e| panic!("{} has defaults for every field: {e}", stringify!($ty)))
            }
        })*
    };
}

defaults_from_serde!(
    FlooderParams,
    StaticContentScraperParams,
    BruteGuessorParams,
    RobotAbuserParams,
    OAuthAbuserParams,
    ApiScraperParams
);

impl TorListParams {
    /// `refreshInterval`, or its default of one hour.
    pub fn refresh_interval(&self) -> std::time::Duration {
        opt_or(&self.refresh_interval, 3600)
    }

    /// `maxAge`, or its default of 48 hours.
    pub fn max_age(&self) -> std::time::Duration {
        opt_or(&self.max_age, 48 * 3600)
    }
}

impl AdvancedAnomalyParams {
    /// `minHistory`, or its default of two weeks.
    pub fn min_history(&self) -> std::time::Duration {
        opt_or(&self.min_history, 14 * 24 * 3600)
    }
}

fn opt_or(d: &Option<Duration>, default_secs: u64) -> std::time::Duration {
    let default = std::time::Duration::from_secs(default_secs);
    d.as_ref().map_or(default, |d| d.to_std_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let f = FlooderParams::default();
        assert_eq!(
            (f.window.as_str(), f.min_share_percent, f.min_requests),
            ("5m", 5, 300)
        );
        let b = BruteGuessorParams::default();
        assert_eq!(
            (b.window.as_str(), b.min_error_percent, b.min_requests),
            ("24h", 50, 100)
        );
        assert_eq!(
            StaticContentScraperParams::default().min_response_bytes,
            52_428_800
        );
        assert_eq!(RobotAbuserParams::default().min_forbidden, 100);
        assert_eq!(OAuthAbuserParams::default().max_user_agents, 2);
        assert_eq!(ApiScraperParams::default().window.as_str(), "1h");
        let tor = TorListParams {
            from_config_map: None,
            url: None,
            refresh_interval: None,
            max_age: Some(Duration::from_static("72h")),
        };
        assert_eq!(tor.refresh_interval().as_secs(), 3600);
        assert_eq!(tor.max_age().as_secs(), 72 * 3600);
        assert_eq!(
            AdvancedAnomalyParams::default().min_history().as_secs(),
            1_209_600
        );
    }
}
