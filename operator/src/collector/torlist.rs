//! TorList rules: where their exit list comes from. A `fromConfigMap` list is read at every
//! evaluation; a `url` list is downloaded by the leader when the rule appears or its URL
//! changes, then every `refreshInterval`, and kept in memory. The list feeds the rule like a
//! ConfigMap list does: the clients it marks reach the sidecars through `palisade-detected`.
//!
//! A failed download (network error, HTTP status other than 200, or a body that is not a list
//! of addresses) keeps the last good list and is retried after a minute, doubling up to
//! `refreshInterval`. A list older than `maxAge` is reported stale but still used: dropping it
//! would silently stop detecting Tor clients, and exit lists change slowly. The leader writes
//! `status.list` (source, entries, updateTime, lastError) and the condition `ListReady` (field
//! manager `palisade-torlist`), and an Event when the list starts failing or goes stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use ipnet::IpNet;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use palisade_crds::DetectionRule;
use palisade_crds::conditions::{condition, find, set_condition};
use palisade_crds::rule::{ListStatus, RuleType};
use serde_json::json;

use super::Collector;

/// The condition type the collector writes on TorList rules with a `url`.
pub const LIST_READY: &str = "ListReady";
const MANAGER: &str = "palisade-torlist";
/// The largest list body accepted.
const MAX_BODY: usize = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);
/// First retry after a failed download; doubles up to `refreshInterval`.
const RETRY: Duration = Duration::from_secs(60);

/// A rule's downloaded list and how its downloads went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feed {
    /// The URL of the last attempt.
    pub url: String,
    /// The last good list.
    pub list: Option<Arc<Vec<IpNet>>>,
    /// The URL the last good list came from.
    pub list_url: String,
    /// When the last good list was downloaded.
    pub fetched: Option<Timestamp>,
    /// Why the last attempt failed (`None` after a success).
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// When to download again.
    pub next: Option<Timestamp>,
    /// What was last written to the rule's status.
    written: Option<serde_json::Value>,
}

/// Where a feed stands, as the `ListReady` condition says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last download succeeded and the list is younger than `maxAge`.
    Fetched,
    /// The last download failed (the last good list, if any, is still used).
    FetchFailed,
    /// The list is older than `maxAge` (still used).
    Stale,
}

impl Health {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Fetched => "Fetched",
            Self::FetchFailed => "FetchFailed",
            Self::Stale => "Stale",
        }
    }
}

impl Feed {
    /// Whether a download of `url` is due at `now` (never tried, URL changed, or its time).
    pub fn due(&self, url: &str, now: Timestamp) -> bool {
        self.url != url || self.next.is_none_or(|n| n <= now)
    }

    /// Records the outcome of downloading `url` at `now`.
    pub fn record(
        &mut self,
        url: &str,
        outcome: Result<Vec<IpNet>, String>,
        refresh: Duration,
        now: Timestamp,
    ) {
        self.url = url.to_owned();
        match outcome {
            Ok(list) => {
                self.list = Some(Arc::new(list));
                self.list_url = url.to_owned();
                self.fetched = Some(now);
                self.last_error = None;
                self.failures = 0;
                self.next = Some(now + signed(refresh));
            }
            Err(e) => {
                self.last_error = Some(e);
                self.failures = self.failures.saturating_add(1);
                let backoff = RETRY.saturating_mul(1 << self.failures.min(16).saturating_sub(1));
                self.next = Some(now + signed(backoff.min(refresh)));
            }
        }
    }

    /// Health and message at `now` for a list that may be `max_age` old.
    pub fn health(&self, max_age: Duration, now: Timestamp) -> (Health, String) {
        let entries = self.list.as_ref().map_or(0, |l| l.len());
        let since = |t: Timestamp| {
            format!(
                "{} ({entries} entries)",
                t.round(jiff::Unit::Second).unwrap_or(t)
            )
        };
        let stale = self
            .fetched
            .is_some_and(|f| now.duration_since(f) > signed(max_age));
        match (&self.last_error, self.fetched) {
            (Some(e), None) => (
                Health::FetchFailed,
                format!(
                    "{e}; no list yet, so the rule detects nobody; fix torList.url or the server"
                ),
            ),
            (Some(e), Some(f)) if !stale => (
                Health::FetchFailed,
                format!(
                    "{e}; still using the list fetched from {} at {}; retrying",
                    self.list_url,
                    since(f)
                ),
            ),
            (e, Some(f)) if stale => (
                Health::Stale,
                format!(
                    "the list was fetched at {}, longer ago than maxAge {}; still used{}",
                    since(f),
                    fmt_duration(max_age),
                    e.as_ref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ),
            ),
            (_, f) => (
                Health::Fetched,
                format!(
                    "fetched from {} at {}",
                    self.list_url,
                    f.map(since).unwrap_or_default()
                ),
            ),
        }
    }
}

fn signed(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (h, 0, 0) => format!("{h}h"),
        (0, m, 0) => format!("{m}m"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Parses an exit list: one IP or CIDR a line (`#` comments), or Tor's `exit-addresses`
/// format (`ExitAddress <ip> <date> <time>`; its other keywords are skipped). A line that is
/// neither, or a body without any address, is an error naming the line.
pub fn parse_list(body: &str) -> Result<Vec<IpNet>, String> {
    const TOR_KEYWORDS: [&str; 3] = ["ExitNode", "Published", "LastStatus"];
    let mut out = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        let first = line.split_whitespace().next().unwrap_or_default();
        if line.is_empty() || TOR_KEYWORDS.contains(&first) {
            continue;
        }
        let addr = match first {
            "ExitAddress" => line.split_whitespace().nth(1).unwrap_or_default(),
            _ => line,
        };
        let net = palisade_policy::parse_prefix(addr).ok_or_else(|| {
            let shown: String = raw.chars().take(80).collect();
            format!(
                "the body is not an exit list: line {} ({shown:?}) is not an IP address or CIDR",
                i + 1
            )
        })?;
        out.push(net);
    }
    if out.is_empty() {
        return Err("the body holds no address: an exit list has one IP a line".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The downloaded feeds, keyed by (namespace, rule name).
#[derive(Debug, Default)]
pub struct Feeds(Mutex<HashMap<(String, String), Feed>>);

impl Feeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Feed>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The exit list of a TorList rule: its last good download, or its ConfigMap (one address or
/// prefix a line).
pub async fn exits(c: &Collector, ns: &str, r: &DetectionRule) -> Vec<IpNet> {
    let Some(tor) = r.spec.tor_list.as_ref() else {
        return vec![];
    };
    if tor.url.is_some() {
        let feeds = c.tor.lock();
        let feed = feeds.get(&(ns.to_owned(), r.name_any()));
        return feed
            .and_then(|f| f.list.as_deref().cloned())
            .unwrap_or_default();
    }
    let Some(src) = tor.from_config_map.as_ref() else {
        return vec![];
    };
    let Some(name) = &src.name else { return vec![] };
    let api: Api<ConfigMap> = Api::namespaced(c.ctx.client.clone(), ns);
    let Ok(Some(cm)) = api.get_opt(name.as_str()).await else {
        return vec![];
    };
    let data = cm.data.unwrap_or_default();
    let text: String = match &src.key {
        Some(k) => data.get(k).cloned().unwrap_or_default(),
        None => data.into_values().collect::<Vec<_>>().join("\n"),
    };
    text.lines()
        .filter_map(|l| palisade_policy::parse_prefix(l.split('#').next().unwrap_or("").trim()))
        .collect()
}

/// Watches DetectionRules and the selected namespaces; on the leader, downloads the due lists
/// and writes the rules' list status, every second, until shutdown.
pub async fn run(c: Arc<Collector>) -> anyhow::Result<()> {
    let (rules, rw) = reflector::store::<DetectionRule>();
    let (namespaces, nw) = reflector::store::<Namespace>();
    let client = c.ctx.client.clone();
    let selected = watcher::Config::default().labels(&c.ctx.args.namespace_selector);
    let watch_rules = reflector::reflector(
        rw,
        watcher(
            Api::<DetectionRule>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    let watch_ns = reflector::reflector(nw, watcher(Api::<Namespace>::all(client), selected))
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
    tokio::select! {
        () = watch_rules => Ok(()),
        () = watch_ns => Ok(()),
        r = refresh_loop(&c, &rules, &namespaces) => r,
    }
}

async fn refresh_loop(
    c: &Collector,
    rules: &Store<DetectionRule>,
    namespaces: &Store<Namespace>,
) -> anyhow::Result<()> {
    let http = http_client()?;
    tokio::select! {
        r = rules.wait_until_ready() => r?,
        () = c.ctx.shutdown.cancelled() => return Ok(()),
    }
    tokio::select! {
        r = namespaces.wait_until_ready() => r?,
        () = c.ctx.shutdown.cancelled() => return Ok(()),
    }
    loop {
        if c.leading() {
            tick(c, &http, rules, namespaces).await;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {},
            () = c.ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}

type Http = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

fn http_client() -> anyhow::Result<Http> {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            // An image without a CA bundle must not stop the operator: http:// lists still
            // work, and an https:// list reports the certificate error in its rule's status.
            tracing::warn!(
                error = %e,
                "no CA certificates found (mount a bundle at /etc/ssl/certs or set \
                 SSL_CERT_FILE); https torList URLs will fail to verify"
            );
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
    };
    let https = builder.https_or_http().enable_http1().build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// Downloads `url`: the body of a 200 answer, or what went wrong.
async fn fetch(http: &Http, url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("torList.url {url:?}: {e}"))?;
    let req = hyper::Request::get(uri)
        .header(hyper::header::USER_AGENT, "palisade-operator")
        .body(Empty::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let resp = tokio::time::timeout(TIMEOUT, http.request(req))
        .await
        .map_err(|_| format!("GET {url}: no answer within {}s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    if status != hyper::StatusCode::OK {
        return Err(format!("GET {url}: HTTP {status}, expected 200"));
    }
    let body = tokio::time::timeout(TIMEOUT, Limited::new(resp.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| {
            format!(
                "GET {url}: the body did not arrive within {}s",
                TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("GET {url}: reading the body (at most {MAX_BODY} bytes): {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("GET {url}: the body is not UTF-8 text"))
}

async fn tick(
    c: &Collector,
    http: &Http,
    rules: &Store<DetectionRule>,
    namespaces: &Store<Namespace>,
) {
    let selected: std::collections::BTreeSet<String> =
        namespaces.state().iter().map(|n| n.name_any()).collect();
    let rules: Vec<Arc<DetectionRule>> = rules
        .state()
        .into_iter()
        .filter(|r| r.spec.type_ == RuleType::TorList)
        .filter(|r| r.spec.tor_list.as_ref().is_some_and(|t| t.url.is_some()))
        .filter(|r| r.namespace().is_some_and(|ns| selected.contains(&ns)))
        .collect();
    {
        let keep: std::collections::BTreeSet<(String, String)> = rules
            .iter()
            .map(|r| (r.namespace().unwrap_or_default(), r.name_any()))
            .collect();
        c.tor.lock().retain(|k, _| keep.contains(k));
    }
    for r in rules {
        if let Err(e) = refresh(c, http, &r).await {
            tracing::warn!(namespace = ?r.namespace(), rule = %r.name_any(), error = %e,
                "could not write the TorList rule's list status");
        }
    }
}

/// Downloads the rule's list if due, then writes its status when it changed.
async fn refresh(c: &Collector, http: &Http, r: &DetectionRule) -> Result<(), kube::Error> {
    let ns = r.namespace().unwrap_or_default();
    let key = (ns.clone(), r.name_any());
    let Some(tor) = r.spec.tor_list.as_ref() else {
        return Ok(());
    };
    let Some(url) = tor.url.as_deref() else {
        return Ok(());
    };
    let now = Timestamp::now();
    let due = c.tor.lock().get(&key).is_none_or(|f| f.due(url, now));
    if due {
        let outcome = fetch(http, url).await.and_then(|body| parse_list(&body));
        match &outcome {
            Ok(list) => {
                tracing::info!(namespace = %ns, rule = %key.1, entries = list.len(), %url, "Tor exit list fetched")
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, rule = %key.1, error = %e, "Tor exit list fetch failed")
            }
        }
        let mut feeds = c.tor.lock();
        feeds.entry(key.clone()).or_default().record(
            url,
            outcome,
            tor.refresh_interval(),
            Timestamp::now(),
        );
    }
    let now = Timestamp::now();
    let (health, message, status, previous) = {
        let feeds = c.tor.lock();
        let Some(feed) = feeds.get(&key) else {
            return Ok(());
        };
        let (health, message) = feed.health(tor.max_age(), now);
        let current = r
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let previous = find(&current, LIST_READY).map(|c| c.reason.clone());
        let mut conditions: Vec<_> = current
            .into_iter()
            .filter(|c| c.type_ == LIST_READY)
            .collect();
        set_condition(
            &mut conditions,
            condition(
                LIST_READY,
                health == Health::Fetched,
                health.reason(),
                &message,
                r.metadata.generation,
            ),
            now,
        );
        let list = ListStatus {
            source: Some(format!("url {url}")),
            entries: Some(feed.list.as_ref().map_or(0, |l| l.len() as i64)),
            update_time: feed
                .fetched
                .map(|t| Time(t.round(jiff::Unit::Second).unwrap_or(t))),
            last_error: feed.last_error.clone(),
        };
        let status = json!({"list": list, "conditions": conditions});
        if feed.written.as_ref() == Some(&status) {
            return Ok(());
        }
        (health, message, status, previous)
    };
    let api: Api<DetectionRule> = Api::namespaced(c.ctx.client.clone(), &ns);
    let patch =
        json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "DetectionRule", "status": status});
    api.patch_status(
        &key.1,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if let Some(feed) = c.tor.lock().get_mut(&key) {
        feed.written = Some(status);
    }
    if health != Health::Fetched && previous.as_deref() != Some(health.reason()) {
        let reason = match health {
            Health::Stale => "ListStale",
            _ => "ListFetchFailed",
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(message.chars().take(1024).collect()),
            action: "FetchList".into(),
            secondary: None,
        };
        if let Err(e) = c.ctx.recorder.publish(&event, &r.object_ref(&())).await {
            tracing::warn!(namespace = %ns, rule = %key.1, error = %e, "could not publish Event");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    #[test]
    fn plain_and_exit_addresses_lists_parse_and_garbage_names_its_line() {
        let plain = "# exits\n198.51.100.7\n\n2001:db8::1  # v6\n203.0.113.0/24\n198.51.100.7\n";
        let list = parse_list(plain).expect("plain list");
        assert_eq!(list.len(), 3, "{list:?}");
        let tor = "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\nPublished 2026-11-26 07:32:24\n\
                   LastStatus 2026-11-26 09:00:00\nExitAddress 192.0.2.44 2026-11-26 09:06:24\n";
        assert_eq!(
            parse_list(tor).expect("exit-addresses"),
            vec!["192.0.2.44/32".parse::<IpNet>().expect("net")]
        );
        let err = parse_list("<html>\n<body>Not here</body>").expect_err("html");
        assert!(err.contains("line 1") && err.contains("<html>"), "{err}");
        let err = parse_list("# only a comment\n").expect_err("empty");
        assert!(err.contains("no address"), "{err}");
    }

    #[test]
    fn a_failure_keeps_the_last_good_list_and_retries_with_backoff() {
        let refresh = Duration::from_secs(3600);
        let mut f = Feed::default();
        assert!(f.due("http://a/list", t(0)), "never fetched");
        f.record(
            "http://a/list",
            Ok(vec!["192.0.2.1/32".parse().expect("net")]),
            refresh,
            t(0),
        );
        assert!(!f.due("http://a/list", t(3599)));
        assert!(f.due("http://a/list", t(3600)), "refreshInterval");
        assert!(
            f.due("http://b/list", t(10)),
            "a new URL is fetched at once"
        );
        f.record(
            "http://a/list",
            Err("GET http://a/list: HTTP 503".into()),
            refresh,
            t(3600),
        );
        assert_eq!(
            f.list.as_ref().map(|l| l.len()),
            Some(1),
            "last good list kept"
        );
        assert_eq!(f.next, Some(t(3660)), "retry after a minute");
        f.record("http://a/list", Err("again".into()), refresh, t(3660));
        assert_eq!(f.next, Some(t(3780)), "then two");
        let (h, msg) = f.health(Duration::from_secs(48 * 3600), t(3700));
        assert_eq!(h, Health::FetchFailed);
        assert!(
            msg.contains("still using the list fetched from http://a/list"),
            "{msg}"
        );
    }

    #[test]
    fn an_old_list_is_stale_but_still_used_and_a_good_fetch_clears_errors() {
        let refresh = Duration::from_secs(3600);
        let max_age = Duration::from_secs(48 * 3600);
        let mut f = Feed::default();
        let (h, msg) = {
            f.record(
                "http://a/l",
                Err("GET http://a/l: HTTP 404".into()),
                refresh,
                t(0),
            );
            f.health(max_age, t(0))
        };
        assert_eq!(h, Health::FetchFailed);
        assert!(msg.contains("no list yet"), "{msg}");
        f.record(
            "http://a/l",
            Ok(vec!["192.0.2.1/32".parse().expect("net")]),
            refresh,
            t(10),
        );
        assert_eq!(f.health(max_age, t(10)).0, Health::Fetched);
        assert_eq!(f.last_error, None);
        assert_eq!(
            f.health(max_age, t(10 + 48 * 3600)).0,
            Health::Fetched,
            "exactly maxAge"
        );
        let (h, msg) = f.health(max_age, t(11 + 48 * 3600));
        assert_eq!(h, Health::Stale);
        assert!(msg.contains("maxAge 48h; still used"), "{msg}");
    }
}
