//! `rateLimit` actions end to end inside one process: real bundles written to a directory,
//! real sidecars (two sharing one limit), a real app and real clients.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use palisade_policy::{ClientKeyKind, Conditions, Mode, RateLimit, Verb};
use support::bundle::{self, allow, deny, flag, when, write};
use support::*;

fn limit(
    name: &str,
    requests: u32,
    by: ClientKeyKind,
    conditions: Conditions,
) -> palisade_policy::ActionSpec {
    let verb = Verb::RateLimit(RateLimit {
        requests,
        // Per minute: a test of a few requests never sees budget come back.
        period_s: 60,
        burst: 0,
        by,
        tarpit_ms: 0,
        pods: 1,
    });
    bundle::action(name, verb, conditions)
}

fn with(
    mut a: palisade_policy::ActionSpec,
    f: impl FnOnce(&mut RateLimit),
) -> palisade_policy::ActionSpec {
    if let Verb::RateLimit(l) = &mut a.verb {
        f(l);
    }
    a
}

fn all() -> Conditions {
    when(|c| c.ip_ranges = vec!["0.0.0.0/0".into(), "::/0".into()])
}

async fn start(dir: &std::path::Path, hash: &str) -> palisade_sidecar::Sidecar {
    let sc = file_sidecar(dir, &["--debug-headers"]).await;
    wait_for_bundle(&sc, hash).await;
    sc
}

async fn status(
    sc: &palisade_sidecar::Sidecar,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap) {
    let (s, h, _) = get(sc.proxy_addr, "/search", headers).await;
    (s, h)
}

#[tokio::test]
async fn a_client_above_the_rate_gets_429_with_retry_after_and_other_clients_pass() {
    let dir = tempfile::tempdir().unwrap();
    let hash = write(
        dir.path(),
        vec![limit("a-by-ip", 2, ClientKeyKind::Ip, all())],
        1,
    );
    let sc = start(dir.path(), &hash).await;
    let a = [("x-forwarded-for", "192.0.2.1")];
    assert_eq!(status(&sc, &a).await.0, 200);
    // 2 per minute, no burst: the next request of this client is 30 s away.
    let (s, h) = status(&sc, &a).await;
    assert_eq!(s, 429);
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(h["palisade-decision"], "ratelimit; action=a-by-ip");
    // Limited requests do not use up budget, and stay limited.
    for _ in 0..5 {
        assert_eq!(status(&sc, &a).await.0, 429);
    }
    // Another client has its own budget.
    assert_eq!(
        status(&sc, &[("x-forwarded-for", "192.0.2.2")]).await.0,
        200
    );
    let m = metrics(&sc).await;
    assert!(
        m.contains("palisade_sidecar_requests_total{verdict=\"ratelimit\"} 6"),
        "{m}"
    );
    assert!(
        m.contains("palisade_sidecar_rate_limit_table_bytes 524288"),
        "{m}"
    );
}

#[tokio::test]
async fn allow_and_deny_win_over_a_rate_limit_and_flags_ride_along() {
    let dir = tempfile::tempdir().unwrap();
    let actions = vec![
        allow(
            "a-allow-partner",
            when(|c| c.user_agents = vec!["partner".into()]),
        ),
        deny("b-deny-bad", when(|c| c.user_agents = vec!["bad".into()])),
        limit("c-limit", 1, ClientKeyKind::Ip, all()),
        flag("d-flag", all()),
    ];
    let hash = write(dir.path(), actions, 1);
    let sc = start(dir.path(), &hash).await;
    let ip = ("x-forwarded-for", "192.0.2.9");
    let (s, _, body) = get(sc.proxy_addr, "/", &[ip]).await;
    assert_eq!(s, 200);
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["flag"], "d-flag",
        "a request under the limit is flagged"
    );
    assert_eq!(status(&sc, &[ip]).await.0, 429);
    assert_eq!(
        status(&sc, &[ip, ("user-agent", "partner")]).await.0,
        200,
        "allow wins"
    );
    assert_eq!(
        status(&sc, &[ip, ("user-agent", "bad")]).await.0,
        403,
        "deny wins"
    );
}

#[tokio::test]
async fn by_api_key_by_prefix_and_requests_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let actions = vec![
        limit(
            "a-by-key",
            1,
            ClientKeyKind::ApiKey,
            when(|c| c.user_agents = vec!["k".into()]),
        ),
        limit(
            "b-by-prefix",
            1,
            ClientKeyKind::IpPrefix,
            when(|c| c.user_agents = vec!["p".into()]),
        ),
    ];
    let hash = write(dir.path(), actions, 1);
    let sc = start(dir.path(), &hash).await;
    let ua = |u| ("user-agent", u);
    // One key from two addresses is one client; another key is another.
    let k1 = ("x-api-key", "key-1");
    assert_eq!(
        status(&sc, &[ua("k"), k1, ("x-forwarded-for", "192.0.2.1")])
            .await
            .0,
        200
    );
    assert_eq!(
        status(&sc, &[ua("k"), k1, ("x-forwarded-for", "192.0.2.2")])
            .await
            .0,
        429
    );
    assert_eq!(status(&sc, &[ua("k"), ("x-api-key", "key-2")]).await.0, 200);
    // Without an API key the action does not count the request.
    for _ in 0..3 {
        assert_eq!(status(&sc, &[ua("k")]).await.0, 200);
    }
    // Two addresses of one IPv6 /64 are one client; the next /64 is another.
    let from = |ip| ("x-forwarded-for", ip);
    assert_eq!(status(&sc, &[ua("p"), from("2001:db8::1")]).await.0, 200);
    assert_eq!(
        status(&sc, &[ua("p"), from("2001:db8::beef:2")]).await.0,
        429
    );
    assert_eq!(
        status(&sc, &[ua("p"), from("2001:db8:0:1::1")]).await.0,
        200
    );
}

/// Two sidecars (two pods of one workload) share a limit of 4 per minute: each lets 2 of one
/// client through, so the workload lets 4 through whichever pod a request reaches.
#[tokio::test]
async fn two_pods_enforce_their_shares_of_one_limit() {
    let dir = tempfile::tempdir().unwrap();
    let shared = with(limit("a-shared", 4, ClientKeyKind::Ip, all()), |l| {
        l.pods = 2
    });
    let hash = write(dir.path(), vec![shared], 1);
    let (one, two) = (
        start(dir.path(), &hash).await,
        start(dir.path(), &hash).await,
    );
    let c = [("x-forwarded-for", "192.0.2.7")];
    let mut passed = 0;
    for i in 0..20 {
        let sc = if i % 2 == 0 { &one } else { &two };
        if status(sc, &c).await.0 == 200 {
            passed += 1;
        }
    }
    // Each pod: 2 per minute, no burst → one at once, the next 30 s later.
    assert_eq!(passed, 2, "one per pod at once");
    // A client pinned to one pod gets that pod's share only.
    let pinned = [("x-forwarded-for", "192.0.2.8")];
    let mut pinned_passed = 0;
    for _ in 0..10 {
        if status(&one, &pinned).await.0 == 200 {
            pinned_passed += 1;
        }
    }
    assert_eq!(pinned_passed, 1);
}

/// A new bundle (another pod joined: the share changed) keeps every client's state: a limited
/// client is still limited, not handed a fresh budget.
#[tokio::test]
async fn a_new_bundle_keeps_the_clients_state() {
    let dir = tempfile::tempdir().unwrap();
    let hash = write(
        dir.path(),
        vec![limit("a-limit", 1, ClientKeyKind::Ip, all())],
        1,
    );
    let sc = start(dir.path(), &hash).await;
    let c = [("x-forwarded-for", "192.0.2.3")];
    assert_eq!(status(&sc, &c).await.0, 200);
    assert_eq!(status(&sc, &c).await.0, 429);
    let next = with(limit("a-limit", 2, ClientKeyKind::Ip, all()), |l| {
        l.pods = 2
    });
    let hash = write(dir.path(), vec![next], 2);
    wait_for_bundle(&sc, &hash).await;
    assert_eq!(status(&sc, &c).await.0, 429);
    assert_eq!(
        status(&sc, &[("x-forwarded-for", "192.0.2.4")]).await.0,
        200
    );
}

#[tokio::test]
async fn a_tarpit_holds_the_429_and_observe_mode_limits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let held = with(
        limit(
            "a-held",
            1,
            ClientKeyKind::Ip,
            when(|c| c.user_agents = vec!["t".into()]),
        ),
        |l| {
            l.tarpit_ms = 700;
        },
    );
    let mut observed = limit(
        "b-observed",
        1,
        ClientKeyKind::Ip,
        when(|c| c.user_agents = vec!["o".into()]),
    );
    observed.mode = Mode::Observe;
    let hash = write(dir.path(), vec![held, observed], 1);
    let sc = start(dir.path(), &hash).await;
    let c = [("x-forwarded-for", "192.0.2.5"), ("user-agent", "t")];
    assert_eq!(status(&sc, &c).await.0, 200);
    let t0 = Instant::now();
    assert_eq!(status(&sc, &c).await.0, 429);
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "held {:?}",
        t0.elapsed()
    );
    let o = [("x-forwarded-for", "192.0.2.6"), ("user-agent", "o")];
    for _ in 0..5 {
        assert_eq!(status(&sc, &o).await.0, 200);
    }
}

/// A client cannot dodge a per-IP limit by naming other addresses in `X-Forwarded-For` when
/// its peer is not a trusted proxy (the sidecar trusts no proxy here), nor by changing its
/// user agent; a limit by user agent counts every client of one user agent together.
#[tokio::test]
async fn a_client_cannot_name_itself_out_of_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let on = |p: &str| when(|c| c.paths = vec![palisade_policy::PathMatch::Prefix(p.into())]);
    let actions = vec![
        limit("a-by-ip", 1, ClientKeyKind::Ip, on("/ip")),
        limit("b-by-agent", 1, ClientKeyKind::UserAgent, on("/ua")),
    ];
    let hash = write(dir.path(), actions, 1);
    let path = dir.path().to_str().unwrap().to_owned();
    let args = ["--bundle-path", &path, "--bundle-poll", "20ms"];
    let sc = sidecar(echo_app().await, &args).await;
    wait_for_bundle(&sc, &hash).await;
    let addr = sc.proxy_addr;
    assert_eq!(get(addr, "/ip", &[]).await.0, 200);
    for i in 0..5 {
        let (xff, ua) = (format!("198.51.100.{i}"), format!("agent-{i}"));
        let forged = [
            ("x-forwarded-for", xff.as_str()),
            ("user-agent", ua.as_str()),
        ];
        assert_eq!(get(addr, "/ip", &forged).await.0, 429, "forged address {i}");
    }
    assert_eq!(get(addr, "/ua", &[("user-agent", "crawler")]).await.0, 200);
    let other = [("user-agent", "crawler"), ("x-forwarded-for", "192.0.2.1")];
    assert_eq!(
        get(addr, "/ua", &other).await.0,
        429,
        "one user agent, one budget"
    );
    assert_eq!(get(addr, "/ua", &[("user-agent", "browser")]).await.0, 200);
}
