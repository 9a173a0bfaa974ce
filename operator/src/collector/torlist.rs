//! TorList rules: where their exit list comes from, and its status. The leader reads every
//! TorList rule's list: a `fromConfigMap` list from its ConfigMap when the rule appears or
//! its source changes, then whenever the ConfigMap's `resourceVersion` changed (checked with a
//! metadata-only GET every [`CONFIGMAP_CHECK`]); a `url` list by downloading it when the rule
//! appears or its URL changes, then every `refreshInterval`. The evaluation uses the list held here, so the clients it marks reach
//! the sidecars through `palisade-detected`.
//!
//! A failed read — a missing ConfigMap or key, content that is not a list of addresses, a
//! network error or HTTP status other than 200 — keeps the last good list. A download is
//! retried after a minute, doubling up to `refreshInterval`. A downloaded list older than
//! `maxAge` is reported stale but still used: dropping it would silently stop detecting Tor
//! clients, and exit lists change slowly. The leader writes `status.list` (source, entries,
//! updateTime, lastError) and the condition `ListReady` (field manager `palisade-torlist`)
//! only when they change, and a Warning Event when the list starts failing or goes stale.
//! The policy controller turns `ListReady=False` into `Ready=False`.

mod configmap;
mod feed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use ipnet::IpNet;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use palisade_crds::DetectionRule;
use palisade_crds::conditions::{condition, find, set_condition};
use palisade_crds::rule::RuleType;
use palisade_crds::rule_params::TorListParams;
use serde_json::json;

use self::feed::{Failure, Feed, Health, Kind, parse_list};
use super::Collector;
use super::snapshot::TorListState;

/// The condition type the collector writes on TorList rules.
pub const LIST_READY: &str = "ListReady";
const MANAGER: &str = "palisade-torlist";
/// The largest list body accepted.
const MAX_BODY: usize = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// The lists of TorList rules, keyed by (namespace, rule name).
#[derive(Debug, Default)]
pub struct Feeds(Mutex<HashMap<(String, String), Feed>>);

impl Feeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Feed>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lists downloaded from a `url`, for the collector's state document.
    pub fn persisted(&self) -> Vec<TorListState> {
        let mut out: Vec<TorListState> = self
            .lock()
            .iter()
            .filter_map(|((namespace, rule), f)| f.persisted(namespace, rule))
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.rule).cmp(&(&b.namespace, &b.rule)));
        out
    }

    /// Takes the lists of a restored state document (on becoming leader); a list held here
    /// that is newer wins. Returns how many were taken.
    pub fn restore(&self, lists: &[TorListState]) -> usize {
        let mut feeds = self.lock();
        let mut taken = 0;
        for s in lists {
            let key = (s.namespace.clone(), s.rule.clone());
            let held = feeds.get(&key);
            if held.is_some_and(|f| f.uid == s.uid && f.fetched.is_some_and(|t| t >= s.fetched)) {
                continue;
            }
            feeds.insert(key, Feed::restored(s));
            taken += 1;
        }
        taken
    }
}

/// Where a TorList rule's list comes from.
enum Source<'a> {
    Url(&'a str),
    ConfigMap { name: &'a str, key: Option<&'a str> },
}

impl<'a> Source<'a> {
    fn of(tor: &'a TorListParams) -> Option<Self> {
        if let Some(url) = tor.url.as_deref() {
            return Some(Self::Url(url));
        }
        let src = tor.from_config_map.as_ref()?;
        Some(Self::ConfigMap {
            name: src.name.as_ref()?.as_str(),
            key: src.key.as_deref(),
        })
    }

    /// How `status.list.source` shows it.
    fn show(&self, ns: &str) -> String {
        match self {
            Self::Url(url) => format!("url {url}"),
            Self::ConfigMap { name, key } => configmap::source(ns, name, *key),
        }
    }
}

/// The exit list of a TorList rule: the last good list the leader read (see [`run`]). Before
/// the first read of a ConfigMap list, the ConfigMap itself.
pub async fn exits(c: &Collector, ns: &str, r: &DetectionRule) -> Vec<IpNet> {
    let Some(src) = r.spec.tor_list.as_ref().and_then(Source::of) else {
        return vec![];
    };
    let held = {
        let feeds = c.tor.lock();
        feeds
            .get(&(ns.to_owned(), r.name_any()))
            .filter(|f| Some(f.uid.as_str()) == r.metadata.uid.as_deref())
            .map(|f| f.list.as_deref().cloned().unwrap_or_default())
    };
    match (held, src) {
        (Some(list), _) => list,
        (None, Source::Url(_)) => vec![],
        (None, Source::ConfigMap { name, key }) => read_configmap(c, ns, name, key)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
    }
}

/// How often a `fromConfigMap` list's ConfigMap is checked for a new version.
pub const CONFIGMAP_CHECK: Duration = Duration::from_secs(5);

/// Whether the ConfigMap of a `fromConfigMap` list must be read whole now: never read for
/// this source, or its version changed. Checks the version at most every
/// [`CONFIGMAP_CHECK`] (a metadata-only GET); `None`: nothing to do now.
async fn configmap_changed(
    c: &Collector,
    key: &(String, String),
    shown: &str,
    name: &str,
    now: Timestamp,
) -> Result<Option<Option<String>>, kube::Error> {
    let (seen, checked) = {
        let feeds = c.tor.lock();
        let f = feeds.get(key);
        (
            f.and_then(|f| f.configmap_seen.clone()),
            f.and_then(|f| f.configmap_checked),
        )
    };
    let same_source = seen.as_ref().is_some_and(|(s, _)| s == shown);
    let recent = checked.is_some_and(|t| now.duration_since(t).unsigned_abs() < CONFIGMAP_CHECK);
    if same_source && recent {
        return Ok(None);
    }
    let api: Api<ConfigMap> = Api::namespaced(c.ctx.clients.collector.clone(), &key.0);
    let version = api
        .get_metadata_opt(name)
        .await?
        .and_then(|m| m.metadata.resource_version);
    if let Some(f) = c.tor.lock().get_mut(key) {
        f.configmap_checked = Some(now);
    }
    let unchanged = same_source && version.is_some() && seen.map(|(_, v)| v) == version;
    Ok((!unchanged).then_some(version))
}

/// Reads ConfigMap `ns/name`: the list, or why it is not one; `Err` when the API server
/// could not be asked.
async fn read_configmap(
    c: &Collector,
    ns: &str,
    name: &str,
    key: Option<&str>,
) -> Result<Result<Vec<IpNet>, Failure>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(c.ctx.clients.collector.clone(), ns);
    let cm = api.get_opt(name).await?;
    Ok(configmap::read(ns, name, key, cm.as_ref()))
}

/// On the leader, downloads the due lists of the DetectionRules of the selected namespaces
/// and writes the rules' list status, every second, until shutdown.
pub async fn run(c: Arc<Collector>) -> anyhow::Result<()> {
    refresh_loop(&c, &c.rules, &c.namespaces).await
}

async fn refresh_loop(
    c: &Collector,
    rules: &Store<DetectionRule>,
    namespaces: &Store<Namespace>,
) -> anyhow::Result<()> {
    let http = http_client()?;
    // (On the operator's readiness, not the stores': see `Caches::mark_filled`.)
    tokio::select! {
        () = c.ctx.caches.wait_until_ready() => {},
        () = c.ctx.shutdown.cancelled() => return Ok(()),
    }
    let mut owned = 0u64;
    loop {
        let now = c.shards.owned();
        if now & !owned != 0 {
            // Another replica may have written the statuses meanwhile: write them again.
            for f in c.tor.lock().values_mut() {
                f.written = None;
            }
        }
        owned = now;
        if owned != 0 {
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
    // The namespaces of the collector shards this replica owns.
    let selected: std::collections::BTreeSet<String> = namespaces
        .state()
        .iter()
        .map(|n| n.name_any())
        .filter(|ns| c.owns(ns))
        .collect();
    let (rules, others): (Vec<Arc<DetectionRule>>, Vec<_>) = rules
        .state()
        .into_iter()
        .filter(|r| r.namespace().is_some_and(|ns| selected.contains(&ns)))
        .partition(|r| r.spec.type_ == RuleType::TorList && r.spec.tor_list.is_some());
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
                "could not read the TorList rule's list or write its status");
        }
    }
    for r in others.iter().filter(|r| has_list_status(r)) {
        // No longer a TorList rule: give up `status.list` and `ListReady`.
        let api: Api<DetectionRule> = Api::namespaced(
            c.ctx.clients.collector.clone(),
            &r.namespace().unwrap_or_default(),
        );
        let patch =
            json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "DetectionRule", "status": {}});
        let pp = PatchParams::apply(MANAGER).force();
        if let Err(e) = api
            .patch_status(&r.name_any(), &pp, &Patch::Apply(&patch))
            .await
        {
            tracing::warn!(namespace = ?r.namespace(), rule = %r.name_any(), error = %e,
                "could not clear the list status of a rule that is no longer TorList");
        }
    }
}

fn has_list_status(r: &DetectionRule) -> bool {
    r.status
        .as_ref()
        .is_some_and(|s| s.list.is_some() || find(&s.conditions, LIST_READY).is_some())
}

/// Reads the rule's list (a ConfigMap every time, a URL when due) into its feed, then writes
/// its status when it changed.
async fn refresh(c: &Collector, http: &Http, r: &DetectionRule) -> Result<(), kube::Error> {
    let ns = r.namespace().unwrap_or_default();
    let key = (ns.clone(), r.name_any());
    let uid = r.metadata.uid.clone().unwrap_or_default();
    let Some(tor) = r.spec.tor_list.as_ref() else {
        return Ok(());
    };
    let Some(src) = Source::of(tor) else {
        return Ok(());
    };
    let shown = src.show(&ns);
    let now = Timestamp::now();
    let (due, fresh) = {
        let mut feeds = c.tor.lock();
        let feed = feeds.entry(key.clone()).or_default();
        if feed.uid != uid {
            *feed = Feed {
                uid,
                ..Feed::default()
            };
        }
        (
            feed.due(&shown, now),
            feed.list.is_none() && feed.last_error.is_none(),
        )
    };
    let outcome = match src {
        Source::Url(url) if due => {
            let outcome = fetch(http, url)
                .await
                .and_then(|body| parse_list(&body))
                .map_err(|e| Failure::new("FetchFailed", e));
            match &outcome {
                Ok(list) => {
                    tracing::info!(namespace = %ns, rule = %key.1, entries = list.len(), %url, "Tor exit list fetched")
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, rule = %key.1, error = %e.message, "Tor exit list fetch failed")
                }
            }
            Some((Kind::Url, outcome, Some(tor.refresh_interval())))
        }
        Source::Url(_) => None,
        Source::ConfigMap { name, key: cm_key } => {
            match configmap_changed(c, &key, &shown, name, now).await? {
                None => None,
                Some(version) => {
                    let outcome = read_configmap(c, &ns, name, cm_key).await?;
                    if let Some(f) = c.tor.lock().get_mut(&key) {
                        f.configmap_seen = version.map(|v| (shown.clone(), v));
                    }
                    Some((Kind::ConfigMap, outcome, None))
                }
            }
        }
    };
    if let Some((kind, outcome, refresh)) = outcome {
        let mut feeds = c.tor.lock();
        let feed = feeds.entry(key.clone()).or_default();
        feed.record(kind, &shown, outcome, refresh, Timestamp::now());
        if fresh {
            feed.adopt(r.status.as_ref().and_then(|s| s.list.as_ref()));
        }
    }
    write_status(c, r, &key, tor).await
}

/// Writes `status.list` and `ListReady` if they differ from what was last written, and an
/// Event when the list enters a failing or stale state.
async fn write_status(
    c: &Collector,
    r: &DetectionRule,
    key: &(String, String),
    tor: &TorListParams,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let (health, message, status, previous) = {
        let feeds = c.tor.lock();
        let Some(feed) = feeds.get(key) else {
            return Ok(());
        };
        let max_age = (feed.kind == Kind::Url).then(|| tor.max_age());
        let (health, message) = feed.health(max_age, now);
        // What was last written, or what the status shows (the reflector may lag our own
        // writes by a moment; then the condition's transition time would move twice).
        let (mut conditions, previous) = match &feed.written {
            Some((status, reason)) => (
                serde_json::from_value(status["conditions"].clone()).unwrap_or_default(),
                Some(reason.clone()),
            ),
            None => {
                let current = r
                    .status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default();
                let previous = find(&current, LIST_READY).map(|c| c.reason.clone());
                (current, previous)
            }
        };
        conditions.retain(
            |c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition| c.type_ == LIST_READY,
        );
        set_condition(
            &mut conditions,
            condition(
                LIST_READY,
                matches!(health, Health::Ok(_)),
                health.reason(),
                &message,
                r.metadata.generation,
            ),
            now,
        );
        let status = json!({"list": feed.list_status(), "conditions": conditions});
        if feed.written.as_ref().map(|w| &w.0) == Some(&status) {
            return Ok(());
        }
        (health, message, status, previous)
    };
    let api: Api<DetectionRule> = Api::namespaced(c.ctx.clients.collector.clone(), &key.0);
    let patch =
        json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "DetectionRule", "status": status});
    api.patch_status(
        &key.1,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    if let Some(feed) = c.tor.lock().get_mut(key) {
        feed.written = Some((status, health.reason().to_owned()));
    }
    let Some(reason) = health.event_reason() else {
        return Ok(());
    };
    if previous.as_deref() == Some(health.reason()) {
        return Ok(());
    }
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(message.chars().take(1024).collect()),
        action: "ReadList".into(),
        secondary: None,
    };
    if let Err(e) = c.ctx.recorder.publish(&event, &r.object_ref(&())).await {
        tracing::warn!(namespace = %key.0, rule = %key.1, error = %e, "could not publish Event");
    }
    Ok(())
}
