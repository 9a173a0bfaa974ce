//! A TorList rule's list as the leader holds it (pure, no I/O): the last good list, where it
//! came from, how the last attempt went, and the `ListReady` condition that follows.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use jiff::Timestamp;
use palisade_crds::rule::ListStatus;

use crate::collector::snapshot::TorListState;

/// First retry after a failed download; doubles up to `refreshInterval`.
const RETRY: Duration = Duration::from_secs(60);

/// Where a rule's list comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// `torList.url`: downloaded every `refreshInterval`.
    #[default]
    Url,
    /// `torList.fromConfigMap`: read every second.
    ConfigMap,
}

/// Why the last attempt gave no list: the condition reason and a message naming the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `FetchFailed`, `ConfigMapNotFound`, `KeyNotFound` or `InvalidList`.
    pub reason: &'static str,
    /// What went wrong, naming the URL or the ConfigMap and key (and the first bad line).
    pub message: String,
}

impl Failure {
    /// A failure with this reason and message.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A rule's list and how reading it went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feed {
    /// The uid of the rule this feed belongs to (a recreated rule starts afresh).
    pub uid: String,
    /// The kind of the source of the last attempt.
    pub kind: Kind,
    /// The source of the last attempt, as `status.list.source` shows it.
    pub source: String,
    /// The last good list.
    pub list: Option<Arc<Vec<IpNet>>>,
    /// The source the last good list came from.
    pub list_source: String,
    /// `url`: when the last good list was downloaded. `fromConfigMap`: since when the list
    /// has its current content (the first read that saw it).
    pub fetched: Option<Timestamp>,
    /// Why the last attempt failed (`None` after a success).
    pub last_error: Option<Failure>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// When to download again (`url` only).
    pub next: Option<Timestamp>,
    /// What was last written to the rule's status, and its `ListReady` reason.
    pub written: Option<(serde_json::Value, String)>,
    /// `fromConfigMap`: the source and `resourceVersion` of the ConfigMap last read whole,
    /// and when its version was last checked.
    pub configmap_seen: Option<(String, String)>,
    /// When the ConfigMap's version was last checked.
    pub configmap_checked: Option<Timestamp>,
}

/// Where a feed stands, as the `ListReady` condition says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last attempt succeeded (and a downloaded list is younger than `maxAge`).
    Ok(Kind),
    /// The last attempt failed, for this reason (the last good list, if any, is still used).
    Failed(&'static str),
    /// A downloaded list is older than `maxAge` (still used).
    Stale,
}

impl Health {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Ok(Kind::Url) => "Fetched",
            Self::Ok(Kind::ConfigMap) => "Read",
            Self::Failed(reason) => reason,
            Self::Stale => "Stale",
        }
    }

    /// The reason of the Warning Event when the list enters this state (`None`: no Event).
    pub fn event_reason(self) -> Option<&'static str> {
        match self {
            Self::Ok(_) => None,
            Self::Stale => Some("ListStale"),
            Self::Failed("FetchFailed") => Some("ListFetchFailed"),
            Self::Failed(reason) => Some(reason),
        }
    }
}

impl Feed {
    /// The feed of a list restored from the collector's state: downloaded at `fetched`, due
    /// again at `next`; nothing written to the rule's status yet.
    pub fn restored(s: &TorListState) -> Self {
        Self {
            uid: s.uid.clone(),
            kind: Kind::Url,
            source: s.source.clone(),
            list: Some(Arc::new(s.entries.clone())),
            list_source: s.source.clone(),
            fetched: Some(s.fetched),
            next: s.next,
            ..Self::default()
        }
    }

    /// What the collector's state keeps of this feed: a list downloaded from a `url` (also
    /// when the rule now names another URL that has not answered yet: it is still in use).
    pub fn persisted(&self, namespace: &str, rule: &str) -> Option<TorListState> {
        if self.kind != Kind::Url {
            return None;
        }
        Some(TorListState {
            namespace: namespace.to_owned(),
            rule: rule.to_owned(),
            uid: self.uid.clone(),
            source: self.list_source.clone(),
            fetched: self.fetched?,
            next: self.next,
            entries: self.list.as_deref()?.clone(),
        })
    }

    /// Whether a download of `source` is due at `now` (never tried, source changed, or its
    /// time).
    pub fn due(&self, source: &str, now: Timestamp) -> bool {
        self.source != source || self.next.is_none_or(|n| n <= now)
    }

    /// Records the outcome of reading `source` at `now`. `refresh` is the download interval
    /// of a `url` list (`None` for a ConfigMap, read every second): a failure is retried
    /// after a minute, doubling up to it. A ConfigMap list read again with the same content
    /// keeps its time.
    pub fn record(
        &mut self,
        kind: Kind,
        source: &str,
        outcome: Result<Vec<IpNet>, Failure>,
        refresh: Option<Duration>,
        now: Timestamp,
    ) {
        self.kind = kind;
        self.source = source.to_owned();
        match outcome {
            Ok(list) => {
                let unchanged = kind == Kind::ConfigMap
                    && self.list_source == source
                    && self.list.as_deref() == Some(&list);
                if !unchanged {
                    self.list = Some(Arc::new(list));
                    self.list_source = source.to_owned();
                    self.fetched = Some(now);
                }
                self.last_error = None;
                self.failures = 0;
                self.next = refresh.map(|r| now + signed(r));
            }
            Err(e) => {
                self.last_error = Some(e);
                self.failures = self.failures.saturating_add(1);
                self.next = refresh.map(|r| {
                    let backoff =
                        RETRY.saturating_mul(1 << self.failures.min(16).saturating_sub(1));
                    now + signed(backoff.min(r))
                });
            }
        }
    }

    /// After the first read of a new leader: if the rule's status already shows a good list
    /// from the same ConfigMap with as many entries, keep its `updateTime` rather than claim
    /// the content changed when the leader did.
    pub fn adopt(&mut self, shown: Option<&ListStatus>) {
        let Some(shown) = shown else { return };
        let entries = self.list.as_ref().map(|l| l.len() as i64);
        if self.kind == Kind::ConfigMap
            && self.last_error.is_none()
            && shown.last_error.is_none()
            && shown.source.as_deref() == Some(self.list_source.as_str())
            && shown.entries == entries
            && let Some(t) = &shown.update_time
        {
            self.fetched = Some(t.0);
        }
    }

    /// Health and message at `now` for a list that may be `max_age` old (`url` only).
    pub fn health(&self, max_age: Option<Duration>, now: Timestamp) -> (Health, String) {
        let entries = self.list.as_ref().map_or(0, |l| l.len());
        let since = |t: Timestamp| {
            format!(
                "{} ({entries} entries)",
                t.round(jiff::Unit::Second).unwrap_or(t)
            )
        };
        let stale = match (self.fetched, max_age) {
            (Some(f), Some(max)) => now.duration_since(f) > signed(max),
            _ => false,
        };
        // A ConfigMap failure already says what to fix.
        let (got, fix) = match self.kind {
            Kind::Url => ("fetched", "; fix torList.url or the server"),
            Kind::ConfigMap => ("read", ""),
        };
        match (&self.last_error, self.fetched) {
            (Some(e), None) => (
                Health::Failed(e.reason),
                format!(
                    "{}; no list yet, so the rule detects nobody{fix}",
                    e.message
                ),
            ),
            (Some(e), Some(f)) if !stale => (
                Health::Failed(e.reason),
                format!(
                    "{}; still using the list {got} from {} at {}{}",
                    e.message,
                    self.list_source,
                    since(f),
                    if self.kind == Kind::Url {
                        "; retrying"
                    } else {
                        ""
                    }
                ),
            ),
            (e, Some(f)) if stale => (
                Health::Stale,
                format!(
                    "the list was fetched at {}, longer ago than maxAge {}; still used{}",
                    since(f),
                    fmt_duration(max_age.unwrap_or_default()),
                    e.as_ref()
                        .map(|e| format!("; last error: {}", e.message))
                        .unwrap_or_default()
                ),
            ),
            (_, f) => (
                Health::Ok(self.kind),
                match self.kind {
                    Kind::Url => format!(
                        "fetched from {} at {}",
                        self.list_source,
                        f.map(since).unwrap_or_default()
                    ),
                    Kind::ConfigMap => format!(
                        "read from {}; content unchanged since {}",
                        self.list_source,
                        f.map(since).unwrap_or_default()
                    ),
                },
            ),
        }
    }

    /// `status.list` for this feed.
    pub fn list_status(&self) -> ListStatus {
        ListStatus {
            source: Some(self.source.clone()),
            entries: Some(self.list.as_ref().map_or(0, |l| l.len() as i64)),
            update_time: self.fetched.map(|t| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    t.round(jiff::Unit::Second).unwrap_or(t),
                )
            }),
            last_error: self.last_error.as_ref().map(|e| e.message.clone()),
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

/// Parses the lines of an exit list: one IP or CIDR a line (`#` comments), or Tor's
/// `exit-addresses` format (`ExitAddress <ip> <date> <time>`; its other keywords are
/// skipped). The first line that is neither is an error naming it:
/// `line 3 ("192.0.2.x") is not an IP address or CIDR`.
pub fn parse_lines(body: &str) -> Result<Vec<IpNet>, String> {
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
            format!("line {} ({shown:?}) is not an IP address or CIDR", i + 1)
        })?;
        out.push(net);
    }
    Ok(out)
}

/// Parses a downloaded exit list (see [`parse_lines`]); a bad line, or a body without any
/// address, is an error naming the line.
pub fn parse_list(body: &str) -> Result<Vec<IpNet>, String> {
    let mut out = parse_lines(body).map_err(|e| format!("the body is not an exit list: {e}"))?;
    if out.is_empty() {
        return Err("the body holds no address: an exit list has one IP a line".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    const URL: &str = "url http://a/list";

    #[test]
    fn plain_and_exit_addresses_lists_parse_and_garbage_names_its_line() {
        let plain = "# exits\n198.51.100.7\n\n2001:db8::1  # v6\n203.0.113.0/24\n198.51.100.7\n";
        let list = parse_list(plain).expect("plain list");
        assert_eq!(list.len(), 3, "{list:?}");
        let tor = "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\nPublished 2026-11-26 07:32:24\n\
                   LastStatus 2026-11-26 09:00:00\nExitAddress 192.0.2.44 2026-11-26 09:06:24\n";
        assert_eq!(
            parse_list(tor).expect("exit-addresses"),
            vec![net("192.0.2.44/32")]
        );
        let err = parse_list("<html>\n<body>Not here</body>").expect_err("html");
        assert!(err.contains("line 1") && err.contains("<html>"), "{err}");
        let err = parse_list("# only a comment\n").expect_err("empty");
        assert!(err.contains("no address"), "{err}");
        let err = parse_lines("192.0.2.1\n192.0.2.x\n").expect_err("typo");
        assert_eq!(err, r#"line 2 ("192.0.2.x") is not an IP address or CIDR"#);
    }

    #[test]
    fn a_downloaded_list_is_persisted_and_a_restored_one_is_used_until_due() {
        let refresh = Some(Duration::from_secs(3600));
        let mut f = Feed {
            uid: "u-1".into(),
            ..Feed::default()
        };
        assert_eq!(f.persisted("shop", "tor"), None, "nothing downloaded yet");
        f.record(Kind::Url, URL, Ok(vec![net("192.0.2.1/32")]), refresh, t(0));
        let s = f.persisted("shop", "tor").expect("persisted");
        assert_eq!(
            (s.source.as_str(), s.fetched, s.next, s.entries.len()),
            (URL, t(0), Some(t(3600)), 1)
        );
        let mut r = Feed::restored(&s);
        assert_eq!(
            (r.uid.as_str(), r.kind, r.list.clone()),
            ("u-1", Kind::Url, f.list.clone())
        );
        assert!(!r.due(URL, t(10)), "not downloaded again before it is due");
        assert!(r.due(URL, t(3600)));
        // The URL is down at the failover: the restored list is still used, and said so.
        let e = Failure::new("FetchFailed", "GET http://a/list: HTTP 503");
        r.record(Kind::Url, URL, Err(e), refresh, t(3600));
        assert_eq!(r.list.as_ref().map(|l| l.len()), Some(1));
        let (h, msg) = r.health(None, t(3601));
        assert_eq!(h, Health::Failed("FetchFailed"));
        assert!(
            msg.contains("still using the list fetched from url http://a/list at"),
            "{msg}"
        );

        let mut cm = Feed::default();
        cm.record(
            Kind::ConfigMap,
            "configmap x",
            Ok(vec![net("192.0.2.1/32")]),
            None,
            t(0),
        );
        assert_eq!(
            cm.persisted("shop", "tor"),
            None,
            "a ConfigMap is read again"
        );
    }

    #[test]
    fn a_failure_keeps_the_last_good_list_and_retries_with_backoff() {
        let refresh = Some(Duration::from_secs(3600));
        let mut f = Feed::default();
        assert!(f.due(URL, t(0)), "never fetched");
        f.record(Kind::Url, URL, Ok(vec![net("192.0.2.1/32")]), refresh, t(0));
        assert!(!f.due(URL, t(3599)));
        assert!(f.due(URL, t(3600)), "refreshInterval");
        assert!(
            f.due("url http://b/list", t(10)),
            "a new URL is fetched at once"
        );
        let e = Failure::new("FetchFailed", "GET http://a/list: HTTP 503");
        f.record(Kind::Url, URL, Err(e), refresh, t(3600));
        assert_eq!(
            f.list.as_ref().map(|l| l.len()),
            Some(1),
            "last good list kept"
        );
        assert_eq!(f.next, Some(t(3660)), "retry after a minute");
        let e = Failure::new("FetchFailed", "again");
        f.record(Kind::Url, URL, Err(e), refresh, t(3660));
        assert_eq!(f.next, Some(t(3780)), "then two");
        let (h, msg) = f.health(Some(Duration::from_secs(48 * 3600)), t(3700));
        assert_eq!(h, Health::Failed("FetchFailed"));
        assert_eq!(h.event_reason(), Some("ListFetchFailed"));
        assert!(
            msg.contains("still using the list fetched from url http://a/list"),
            "{msg}"
        );
    }

    #[test]
    fn an_old_list_is_stale_but_still_used_and_a_good_fetch_clears_errors() {
        let refresh = Some(Duration::from_secs(3600));
        let max_age = Some(Duration::from_secs(48 * 3600));
        let mut f = Feed::default();
        let e = Failure::new("FetchFailed", "GET http://a/l: HTTP 404");
        f.record(Kind::Url, URL, Err(e), refresh, t(0));
        let (h, msg) = f.health(max_age, t(0));
        assert_eq!(h, Health::Failed("FetchFailed"));
        assert!(msg.contains("no list yet"), "{msg}");
        f.record(
            Kind::Url,
            URL,
            Ok(vec![net("192.0.2.1/32")]),
            refresh,
            t(10),
        );
        assert_eq!(f.health(max_age, t(10)).0, Health::Ok(Kind::Url));
        assert_eq!(f.last_error, None);
        assert_eq!(
            f.health(max_age, t(10 + 48 * 3600)).0,
            Health::Ok(Kind::Url),
            "exactly maxAge"
        );
        let (h, msg) = f.health(max_age, t(11 + 48 * 3600));
        assert_eq!(h, Health::Stale);
        assert!(msg.contains("maxAge 48h; still used"), "{msg}");
    }

    #[test]
    fn a_configmap_list_keeps_its_time_until_its_content_changes_and_never_goes_stale() {
        let src = "configmap shop/tor key list";
        let mut f = Feed::default();
        f.record(
            Kind::ConfigMap,
            src,
            Ok(vec![net("192.0.2.1/32")]),
            None,
            t(10),
        );
        f.record(
            Kind::ConfigMap,
            src,
            Ok(vec![net("192.0.2.1/32")]),
            None,
            t(20),
        );
        assert_eq!(f.fetched, Some(t(10)), "same content: time kept");
        let (h, msg) = f.health(None, t(10 + 1000 * 3600));
        assert_eq!((h, h.reason()), (Health::Ok(Kind::ConfigMap), "Read"));
        assert_eq!(
            msg,
            "read from configmap shop/tor key list; content unchanged since \
             1970-01-01T00:00:10Z (1 entries)"
        );
        let status = f.list_status();
        let two = vec![net("192.0.2.1/32"), net("192.0.2.2/32")];
        f.record(Kind::ConfigMap, src, Ok(two), None, t(30));
        assert_eq!(f.fetched, Some(t(30)), "new content: new time");
        assert_ne!(f.list_status(), status);
        assert_eq!(f.next, None, "a ConfigMap has no download schedule");
    }

    #[test]
    fn a_broken_configmap_keeps_the_last_good_list_and_says_so() {
        let src = "configmap shop/tor key list";
        let mut f = Feed::default();
        let gone = Failure::new("ConfigMapNotFound", "ConfigMap shop/tor not found");
        f.record(Kind::ConfigMap, src, Err(gone.clone()), None, t(0));
        let (h, msg) = f.health(None, t(0));
        assert_eq!(
            (h.reason(), h.event_reason()),
            ("ConfigMapNotFound", Some("ConfigMapNotFound"))
        );
        assert!(
            msg.contains("no list yet, so the rule detects nobody"),
            "{msg}"
        );
        assert_eq!(f.list_status().entries, Some(0));
        assert_eq!(f.list_status().update_time, None);
        f.record(
            Kind::ConfigMap,
            src,
            Ok(vec![net("192.0.2.1/32")]),
            None,
            t(5),
        );
        let bad = Failure::new(
            "InvalidList",
            "ConfigMap shop/tor key list: line 2 (\"x\") is …",
        );
        f.record(Kind::ConfigMap, src, Err(bad), None, t(9));
        let (h, msg) = f.health(None, t(9));
        assert_eq!(h, Health::Failed("InvalidList"));
        assert!(
            msg.ends_with("still using the list read from configmap shop/tor key list at 1970-01-01T00:00:05Z (1 entries)"),
            "{msg}"
        );
        let st = f.list_status();
        assert_eq!(st.entries, Some(1), "the last good list stays in use");
        assert!(st.last_error.is_some_and(|e| e.contains("line 2")));
    }

    #[test]
    fn a_new_leader_keeps_the_shown_update_time_of_the_same_list() {
        let src = "configmap shop/tor key list";
        let mut f = Feed::default();
        f.record(
            Kind::ConfigMap,
            src,
            Ok(vec![net("192.0.2.1/32")]),
            None,
            t(100),
        );
        let shown = ListStatus {
            source: Some(src.into()),
            entries: Some(1),
            update_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(7))),
            last_error: None,
        };
        let mut other = shown.clone();
        other.entries = Some(2);
        let mut g = f.clone();
        g.adopt(Some(&other));
        assert_eq!(
            g.fetched,
            Some(t(100)),
            "another list: the leader's own time"
        );
        f.adopt(Some(&shown));
        assert_eq!(f.fetched, Some(t(7)));
    }
}
