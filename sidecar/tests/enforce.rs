//! Enforcement end to end inside one process: real bundles written to a directory, the
//! sidecar's file source picking them up, a real app and real clients.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade_policy::{Mode, PathMatch};
use support::bundle::{self, allow, deny, flag, sha, when, write, write_raw};
use support::*;

struct Env {
    dir: tempfile::TempDir,
    sc: palisade_sidecar::Sidecar,
}

async fn env(actions: Vec<palisade_policy::ActionSpec>, extra: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let hash = write(dir.path(), actions, 1);
    let geo = dir.path().join("geo.mmdb-db");
    let asn = dir.path().join("asn.mmdb-db");
    std::fs::write(&geo, mmdb::countries(&[("198.51.100.0", 24, "NL")])).unwrap();
    std::fs::write(&asn, mmdb::asns(&[("203.0.113.0", 24, 64500)])).unwrap();
    let (g, a) = (geo.to_str().unwrap(), asn.to_str().unwrap());
    let dbs = ["--geoip-db", g, "--asn-db", a];
    let sc = file_sidecar(dir.path(), &[&dbs[..], extra].concat()).await;
    wait_for_bundle(&sc, &hash).await;
    Env { dir, sc }
}

fn from(ip: &'static str) -> (&'static str, &'static str) {
    ("x-forwarded-for", ip)
}

#[tokio::test]
async fn every_condition_kind() {
    let actions = vec![
        deny("ip", when(|c| c.ip_ranges = vec!["192.0.2.0/24".into()])),
        deny("region", when(|c| c.region_codes = vec!["NL".into()])),
        deny("asn", when(|c| c.asns = vec![64500])),
        deny("api-key", when(|c| c.api_keys = vec![sha("k-bad")])),
        deny("token", when(|c| c.access_tokens = vec![sha("t-bad")])),
        deny("product", when(|c| c.api_products = vec!["free".into()])),
        deny("developer", when(|c| c.developers = vec!["mallory".into()])),
        deny("app", when(|c| c.developer_apps = vec!["scraper".into()])),
        deny("ua", when(|c| c.user_agents = vec!["BadBot/1.0".into()])),
        deny(
            "method-path",
            when(|c| {
                c.http_methods = vec!["DELETE".into()];
                c.paths = vec![PathMatch::Prefix("/admin".into())];
            }),
        ),
    ];
    let e = env(actions, &[]).await;
    let addr = e.sc.proxy_addr;
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("/", vec![from("192.0.2.77")], "ip"),
        ("/", vec![from("198.51.100.3")], "region"),
        ("/", vec![from("203.0.113.9")], "asn"),
        ("/", vec![("x-api-key", "k-bad")], "api-key"),
        ("/?apikey=k-bad", vec![], "api-key"),
        ("/", vec![("authorization", "Bearer t-bad")], "token"),
        ("/", vec![("x-api-product", "free")], "product"),
        ("/", vec![("x-developer", "mallory")], "developer"),
        ("/", vec![("x-developer-app", "scraper")], "app"),
        ("/", vec![("user-agent", "BadBot/1.0")], "ua"),
    ];
    for (target, headers, action) in cases {
        let (status, h, body) = get(addr, target, &headers).await;
        assert_eq!(
            (status, body.as_str()),
            (403, action),
            "{target} {headers:?}"
        );
        assert_eq!(h["content-type"], "text/x-palisade");
    }
    let ok: Vec<Vec<(&str, &str)>> = vec![
        vec![from("192.0.3.1")],
        vec![("x-api-key", "k-good")],
        vec![("authorization", "Bearer t-good")],
        vec![
            ("x-api-product", "gold"),
            ("x-developer", "alice"),
            ("user-agent", "curl/8"),
        ],
    ];
    for headers in ok {
        assert_eq!(get(addr, "/", &headers).await.0, 200, "{headers:?}");
    }
    // Method AND path: both must match.
    let mut c = h1(addr).await;
    let mk = |m: &str, p: &str| {
        http::Request::builder()
            .method(m)
            .uri(p)
            .header("host", "a")
            .body(full(""))
            .unwrap()
    };
    assert_eq!(send(&mut c, mk("DELETE", "/admin/x")).await.0, 403);
    assert_eq!(send(&mut c, mk("GET", "/admin/x")).await.0, 200);
    assert_eq!(send(&mut c, mk("DELETE", "/public")).await.0, 200);
    let m = metrics(&e.sc).await;
    assert!(
        m.contains("palisade_sidecar_requests_total{verdict=\"deny\"} 11"),
        "{m}"
    );
}

/// A keep-alive connection keeps what its requests repeat (credential hashes, the region and
/// ASN of its address): a client switching key, token or address on the same connection —
/// back and forth, to a prefix or an extension of the previous value, to two keys at once —
/// still gets each request's own verdict.
#[tokio::test]
async fn a_client_switching_identity_on_one_connection_gets_each_requests_verdict() {
    let actions = vec![
        deny("region", when(|c| c.region_codes = vec!["NL".into()])),
        deny("asn", when(|c| c.asns = vec![64500])),
        deny("api-key", when(|c| c.api_keys = vec![sha("k-bad")])),
        deny("token", when(|c| c.access_tokens = vec![sha("t-bad")])),
    ];
    let e = env(actions, &[]).await;
    let mut c = h1(e.sc.proxy_addr).await;
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![("x-api-key", "k-good")], 200, ""),
        (vec![("x-api-key", "k-good")], 200, ""),
        (vec![("x-api-key", "k-bad")], 403, "api-key"),
        (vec![("x-api-key", "k-good")], 200, ""),
        (vec![("x-api-key", "k-ba")], 200, ""),
        (vec![("x-api-key", "k-badd")], 200, ""),
        (vec![("x-api-key", "k-bad")], 403, "api-key"),
        (vec![("x-api-key", "k-bax")], 200, ""),
        (vec![("x-api-key", "k-bad")], 403, "api-key"),
        (
            vec![("x-api-key", "k-good"), ("x-api-key", "k-bad")],
            403,
            "api-key",
        ),
        (vec![("authorization", "Bearer t-good")], 200, ""),
        (vec![("authorization", "Bearer t-bad")], 403, "token"),
        (vec![("authorization", "Bearer t-bax")], 200, ""),
        (vec![("authorization", "Bearer t-bad")], 403, "token"),
        (vec![from("198.51.100.3")], 403, "region"),
        (vec![from("198.51.101.3")], 200, ""),
        (vec![from("203.0.113.9")], 403, "asn"),
        (vec![from("198.51.100.3")], 403, "region"),
        (vec![], 200, ""),
    ];
    for (headers, status, body) in cases {
        let mut req = http::Request::get("/").header("host", "api.example");
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let (got, _, text) = send(&mut c, req.body(full("")).unwrap()).await;
        assert_eq!(got, status, "{headers:?}");
        if status == 403 {
            assert_eq!(text, body, "{headers:?}");
        }
    }
    e.sc.shutdown().await;
}

#[tokio::test]
async fn precedence_allow_over_deny_over_flag_and_flags_seen_by_the_app() {
    let net = || when(|c| c.ip_ranges = vec!["192.0.2.0/24".into()]);
    let actions = vec![
        allow(
            "a-allow-partner",
            when(|c| c.api_keys = vec![sha("partner")]),
        ),
        deny("b-deny-net", net()),
        flag("c-flag-net", net()),
        flag("d-flag-ua", when(|c| c.user_agents = vec!["sus".into()])),
        flag(
            "e-flag-ua-too",
            when(|c| c.user_agents = vec!["sus".into()]),
        ),
    ];
    let e = env(actions, &["--debug-headers"]).await;
    let addr = e.sc.proxy_addr;
    // allow beats deny and flag
    let (s, h, body) = get(
        addr,
        "/",
        &[
            from("192.0.2.1"),
            ("x-api-key", "partner"),
            ("user-agent", "sus"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["palisade-decision"], "allow; action=a-allow-partner");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["flag"], "");
    // deny beats flag
    let (s, h, _) = get(addr, "/", &[from("192.0.2.1"), ("user-agent", "sus")]).await;
    assert_eq!(
        (s, &h["palisade-decision"]),
        (
            403,
            &"deny; action=b-deny-net"
                .parse::<http::HeaderValue>()
                .unwrap()
        )
    );
    // a client cannot forge a flag header
    let (_, _, body) = get(
        addr,
        "/",
        &[from("10.0.0.1"), ("x-palisade-flag", "forged")],
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["flag"], "");
    // several flags all add their headers
    let (s, h, body) = get(addr, "/", &[from("10.0.0.1"), ("user-agent", "sus")]).await;
    assert_eq!(s, 200);
    assert_eq!(
        h["palisade-decision"],
        "flag; action=d-flag-ua,e-flag-ua-too"
    );
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["flag"], "d-flag-ua", "first value; both present:");
    let headers: Vec<String> = serde_json::from_value(seen["headers"].clone()).unwrap();
    assert_eq!(
        headers.iter().filter(|h| *h == "x-palisade-flag").count(),
        1,
        "one name, two values"
    );
}

/// The sidecar applies an action's expiry itself, from the bundle it holds: the operator (or
/// the API server) may be down when the time comes. Every answer that ended before the
/// expiry is the deny, every request sent after it is forwarded, and no other bundle came.
#[tokio::test]
async fn an_action_stops_applying_at_its_expiry_without_a_new_bundle() {
    let mut soon = deny("soon", when(|c| c.user_agents = vec!["bot".into()]));
    let end = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(6);
    soon.expire_time = Some(end);
    let e = env(vec![soon], &[]).await;
    let version = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("palisade_sidecar_bundle_info{"))
            .map(str::to_owned)
    };
    let before = version(&metrics(&e.sc).await);
    let (mut denied, mut forwarded) = (0, 0);
    loop {
        let sent = jiff::Timestamp::now();
        let (s, _, _) = get(e.sc.proxy_addr, "/", &[("user-agent", "bot")]).await;
        let answered = jiff::Timestamp::now();
        if answered < end {
            assert_eq!(s, 403, "before the expiry ({end}), at {answered}");
            denied += 1;
        } else if sent > end + jiff::SignedDuration::from_secs(1) {
            assert_eq!(s, 200, "after the expiry ({end}), sent at {sent}");
            forwarded += 1;
            if forwarded == 3 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(denied > 0, "no request was answered before the expiry");
    assert_eq!(
        version(&metrics(&e.sc).await),
        before,
        "the same bundle all along"
    );
}

#[tokio::test]
async fn observe_mode_counts_only() {
    let mut observed = deny("observe-deny", when(|c| c.user_agents = vec!["bot".into()]));
    observed.mode = Mode::Observe;
    let e = env(vec![observed], &[]).await;
    let (s, _, _) = get(e.sc.proxy_addr, "/", &[("user-agent", "bot")]).await;
    assert_eq!(s, 200);
    let m = metrics(&e.sc).await;
    assert!(
        m.contains("palisade_sidecar_observed_total{verdict=\"deny\"} 1"),
        "{m}"
    );

    let e = env(
        vec![deny("global", when(|c| c.user_agents = vec!["bot".into()]))],
        &["--observe"],
    )
    .await;
    let (s, _, _) = get(e.sc.proxy_addr, "/", &[("user-agent", "bot")]).await;
    assert_eq!(s, 200);
    let m = metrics(&e.sc).await;
    assert!(
        m.contains("palisade_sidecar_observed_total{verdict=\"deny\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("palisade_sidecar_requests_total{verdict=\"observed\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn bad_bundle_never_replaces_the_last_good_one() {
    let e = env(
        vec![deny("ua", when(|c| c.user_agents = vec!["bot".into()]))],
        &[],
    )
    .await;
    let good = e.sc.store().load().unwrap().hash.clone();
    // A newer bundle whose shard is corrupt: sizes match, content does not.
    let (manifest, mut shards) = bundle::encode(vec![], 2);
    for (_, bytes) in &mut shards {
        for b in bytes.iter_mut() {
            *b ^= 0x5a;
        }
    }
    write_raw(e.dir.path(), &manifest, &shards);
    let m = loop {
        let m = metrics(&e.sc).await;
        if m.contains("palisade_sidecar_bundle_load_errors_total") {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(m.contains("reason=\"ShardHashMismatch\"} 1"), "{m}");
    assert_eq!(e.sc.store().load().unwrap().hash, good);
    assert_eq!(
        get(e.sc.proxy_addr, "/", &[("user-agent", "bot")]).await.0,
        403
    );
    // Garbage manifest: counted, still enforcing.
    write_raw(e.dir.path(), "{not json", &[]);
    loop {
        if metrics(&e.sc)
            .await
            .contains("reason=\"ManifestInvalid\"} 1")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        get(e.sc.proxy_addr, "/", &[("user-agent", "bot")]).await.0,
        403
    );
}

/// A bundle whose generation is far ahead of the clock (`u64::MAX`: written by someone who can
/// edit the ConfigMap, not by the operator) is refused, so it can neither replace the policy
/// nor freeze it: the operator's next bundle still applies.
#[tokio::test]
async fn a_bundle_from_the_future_is_refused_and_does_not_freeze_the_policy() {
    let e = env(
        vec![deny("ua", when(|c| c.user_agents = vec!["bot".into()]))],
        &[],
    )
    .await;
    let (manifest, shards) = bundle::encode(vec![], u64::MAX);
    write_raw(e.dir.path(), &manifest, &shards);
    loop {
        let m = metrics(&e.sc).await;
        if m.contains("reason=\"GenerationAhead\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        get(e.sc.proxy_addr, "/", &[("user-agent", "bot")]).await.0,
        403,
        "the last good bundle stays"
    );
    let next = write(e.dir.path(), vec![], 2);
    wait_for_bundle(&e.sc, &next).await;
    assert_eq!(
        get(e.sc.proxy_addr, "/", &[("user-agent", "bot")]).await.0,
        200,
        "the operator's next bundle applies"
    );
}

/// Without a bundle the sidecar forwards (fail open) but is not Ready, so the pod takes no
/// Service traffic that no policy protects; it is Ready once a bundle is in force. The
/// start-up grace passing without one shows in `palisade_sidecar_policy_missing`.
/// `--ready-without-policy` keeps the earlier behaviour; `--fail-closed` is never Ready
/// without a bundle.
#[tokio::test]
async fn no_bundle_is_not_ready_forwards_by_default_and_fails_closed_by_flag() {
    let app = echo_app().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let args = [
        "--bundle-path",
        path,
        "--bundle-poll",
        "20ms",
        "--policy-grace",
        "0s",
    ];
    let open = sidecar(app, &args).await;
    assert_eq!(get(open.proxy_addr, "/", &[]).await.0, 200);
    assert_eq!(get(open.admin_addr, "/ready", &[]).await.0, 503);
    while !metrics(&open)
        .await
        .contains("palisade_sidecar_policy_missing 1")
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let hash = write(dir.path(), vec![], 1);
    wait_for_bundle(&open, &hash).await;
    assert_eq!(get(open.admin_addr, "/ready", &[]).await.0, 200);
    let m = metrics(&open).await;
    assert!(m.contains("palisade_sidecar_policy_missing 0"), "{m}");

    let legacy = sidecar(app, &["--ready-without-policy"]).await;
    assert_eq!(get(legacy.admin_addr, "/ready", &[]).await.0, 200);
    assert_eq!(get(legacy.proxy_addr, "/", &[]).await.0, 200);

    for flags in [
        &["--fail-closed"][..],
        &["--fail-closed", "--ready-without-policy"],
    ] {
        let closed = sidecar(app, flags).await;
        let (s, h, _) = get(closed.proxy_addr, "/", &[]).await;
        assert_eq!(
            (s, &h["palisade-error"]),
            (503, &"NoPolicy".parse::<http::HeaderValue>().unwrap())
        );
        assert_eq!(
            get(closed.admin_addr, "/ready", &[]).await.0,
            503,
            "{flags:?}"
        );
    }
}

/// Clients hammer the sidecar while the bundle flips between "deny bots" and "allow all";
/// every request gets 200 or 403, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_swap_under_load_fails_no_request() {
    let deny_bots = || vec![deny("ua", when(|c| c.user_agents = vec!["bot".into()]))];
    let e = env(deny_bots(), &[]).await;
    let addr = e.sc.proxy_addr;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, denied) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, denied) = (stop.clone(), ok.clone(), denied.clone());
        clients.push(tokio::spawn(async move {
            let mut c = h1(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get("/")
                    .header("host", "a")
                    .header("user-agent", "bot")
                    .body(full(""))
                    .unwrap();
                let (status, _, _) = send(&mut c, req).await;
                match status {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    403 => denied.fetch_add(1, Ordering::Relaxed),
                    other => panic!("request failed during swap: {other}"),
                };
            }
        }));
    }
    for generation in 2..12 {
        let actions = if generation % 2 == 0 {
            vec![]
        } else {
            deny_bots()
        };
        let hash = write(e.dir.path(), actions, generation);
        wait_for_bundle(&e.sc, &hash).await;
        let before = ok.load(Ordering::Relaxed) + denied.load(Ordering::Relaxed);
        while ok.load(Ordering::Relaxed) + denied.load(Ordering::Relaxed) < before + 20 {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 0 && denied.load(Ordering::Relaxed) > 0);
    let m = metrics(&e.sc).await;
    assert!(m.contains("palisade_sidecar_bundle_swaps_total 11"), "{m}");
    assert!(
        m.contains("palisade_sidecar_requests_total{verdict=\"error\"} 0"),
        "{m}"
    );
}

/// A sidecar whose bundle denies every client the rule `flooder` detected, and the
/// detected-client document marking `mark` (its directory with it).
async fn detected_sidecar(mark: &str) -> (tempfile::TempDir, palisade_sidecar::Sidecar) {
    let dir = tempfile::tempdir().unwrap();
    let action = deny(
        "ban-flooders",
        when(|c| c.detected_by = Some(palisade_policy::DetectedBy::Any)),
    );
    let (manifest, shards) = bundle::encode_with_rules(vec![action], &["flooder"], 1);
    write_raw(dir.path(), &manifest, &shards);
    bundle::write_detected(dir.path(), 1, &[("flooder", mark)]);
    let sc = file_sidecar(dir.path(), &[]).await;
    let hash = palisade_policy::Manifest::from_json(&manifest)
        .unwrap()
        .bundle_hash;
    wait_for_bundle(&sc, &hash).await;
    (dir, sc)
}

#[tokio::test]
async fn detected_clients_trigger_detected_by_actions() {
    let (dir, sc) = detected_sidecar("ip:192.0.2.5").await;
    let flooder = [from("192.0.2.5")];
    while get(sc.proxy_addr, "/", &flooder).await.0 != 403 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(get(sc.proxy_addr, "/", &[from("192.0.2.6")]).await.0, 200);
    // The mark is lifted: the client gets through again.
    bundle::write_detected(dir.path(), 2, &[]);
    while get(sc.proxy_addr, "/", &flooder).await.0 != 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A corrupt document is counted and ignored.
    std::fs::write(dir.path().join("detected"), b"garbage").unwrap();
    loop {
        let m = metrics(&sc).await;
        if m.contains("palisade_sidecar_bundle_load_errors_total") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(get(sc.proxy_addr, "/", &flooder).await.0, 200);
}

#[tokio::test]
async fn workload_selector_uses_the_pod_labels() {
    let mut web_only = deny("web-only", when(|c| c.user_agents = vec!["bot".into()]));
    web_only.workload_selector = Some(palisade_policy::LabelSelector {
        match_labels: [("app".to_owned(), "web".to_owned())].into(),
        ..Default::default()
    });
    let labels = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(labels.path(), "app=\"web\"\ntier=\"front\"\n").unwrap();
    let file = labels.path().to_str().unwrap().to_owned();
    let web = env(vec![web_only.clone()], &["--pod-labels-file", &file]).await;
    assert_eq!(
        get(web.sc.proxy_addr, "/", &[("user-agent", "bot")])
            .await
            .0,
        403
    );
    let api = env(vec![web_only], &["--pod-labels", "app=api"]).await;
    assert_eq!(
        get(api.sc.proxy_addr, "/", &[("user-agent", "bot")])
            .await
            .0,
        200
    );
}

fn count_of(counts: &[palisade_detection::report::ActionCount], name: &str) -> (u64, u64, u64) {
    counts
        .iter()
        .find(|c| c.name == name)
        .map_or((0, 0, 0), |c| (c.matched, c.observed, c.decided))
}

#[tokio::test]
async fn each_action_counts_exactly_what_it_matched_observed_and_decided() {
    let partner = when(|c| c.user_agents = vec!["partner".into()]);
    let blocked = |c: &mut palisade_policy::Conditions| {
        c.paths = vec![PathMatch::Prefix("/blocked".into())];
    };
    let mut observe = deny(
        "d-observe-admin",
        when(|c| c.paths = vec![PathMatch::Prefix("/admin".into())]),
    );
    observe.mode = Mode::Observe;
    let actions = vec![
        allow("a-allow-partner", partner),
        deny("b-deny-blocked", when(blocked)),
        flag(
            "c-flag-beta",
            when(|c| c.paths = vec![PathMatch::Prefix("/beta".into())]),
        ),
        observe,
    ];
    let e = env(actions, &[]).await;
    let addr = e.sc.proxy_addr;
    // Whatever ran before (the bundle wait) is not part of the count.
    let _ = e.sc.store().take_action_counts();
    for _ in 0..3 {
        assert_eq!(get(addr, "/blocked", &[]).await.0, 403);
    }
    for _ in 0..2 {
        let (s, _, _) = get(addr, "/blocked", &[("user-agent", "partner")]).await;
        assert_eq!(s, 200, "the allow wins");
    }
    for _ in 0..4 {
        assert_eq!(get(addr, "/beta", &[]).await.0, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(addr, "/admin", &[]).await.0, 200, "observed only");
    }
    assert_eq!(get(addr, "/other", &[]).await.0, 200);
    let (counts, generation) = e.sc.store().take_action_counts();
    assert_eq!(generation, Some(1));
    assert_eq!(count_of(&counts, "a-allow-partner"), (2, 0, 2));
    // Matched 5 times, decided only the 3 the allow did not win.
    assert_eq!(count_of(&counts, "b-deny-blocked"), (5, 0, 3));
    assert_eq!(count_of(&counts, "c-flag-beta"), (4, 0, 4));
    assert_eq!(count_of(&counts, "d-observe-admin"), (0, 5, 0));
    assert_eq!(counts.len(), 4, "{counts:?}");
    // Each take starts from zero.
    assert!(e.sc.store().take_action_counts().0.is_empty());

    // A new bundle (same names, other order of ids): counts of the old bundle made after the
    // last take are not lost, and the new one counts by name.
    let hash = write(
        e.dir.path(),
        vec![
            deny("b-deny-blocked", when(blocked)),
            deny("0-first", when(|c| c.user_agents = vec!["x".into()])),
        ],
        2,
    );
    assert_eq!(get(addr, "/blocked", &[]).await.0, 403);
    wait_for_bundle(&e.sc, &hash).await;
    assert_eq!(get(addr, "/blocked", &[]).await.0, 403);
    let (counts, generation) = e.sc.store().take_action_counts();
    assert_eq!(generation, Some(2));
    assert_eq!(count_of(&counts, "b-deny-blocked"), (2, 0, 2));
}

#[tokio::test]
async fn global_observe_counts_every_match_as_observed() {
    let e = env(
        vec![deny(
            "deny-bot",
            when(|c| c.user_agents = vec!["bot".into()]),
        )],
        &["--observe"],
    )
    .await;
    let _ = e.sc.store().take_action_counts();
    let (s, _, _) = get(e.sc.proxy_addr, "/", &[("user-agent", "bot")]).await;
    assert_eq!(s, 200);
    let (counts, _) = e.sc.store().take_action_counts();
    assert_eq!(count_of(&counts, "deny-bot"), (0, 1, 0));
}

#[tokio::test]
async fn a_namespace_turns_the_decision_header_on_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    let inputs = |debug_headers: bool, generation: u64| palisade_policy::Inputs {
        generation,
        actions: vec![deny(
            "deny-bot",
            when(|c| c.user_agents = vec!["bot".into()]),
        )],
        debug_headers,
        ..palisade_policy::Inputs::default()
    };
    let hash = bundle::write_inputs(dir.path(), &inputs(false, 1));
    let sc = sidecar(
        echo_app().await,
        &["--bundle-path", &path, "--bundle-poll", "20ms"],
    )
    .await;
    wait_for_bundle(&sc, &hash).await;
    let (s, h, _) = get(sc.proxy_addr, "/", &[("user-agent", "bot")]).await;
    assert_eq!(s, 403);
    assert!(
        h.get("palisade-decision").is_none(),
        "off by default: {h:?}"
    );
    let hash = bundle::write_inputs(dir.path(), &inputs(true, 2));
    wait_for_bundle(&sc, &hash).await;
    let (s, h, _) = get(sc.proxy_addr, "/", &[("user-agent", "bot")]).await;
    assert_eq!(s, 403);
    assert_eq!(h["palisade-decision"], "deny; action=deny-bot");
    let (_, h, _) = get(sc.proxy_addr, "/", &[]).await;
    assert!(
        h.get("palisade-decision").is_none(),
        "nothing decided: {h:?}"
    );
}

/// Writes `manifest` and its shards with the signature of `ring` (and its key chain) beside
/// them, signature first, as the mounted ConfigMap swaps all its files at once.
fn write_signed(
    dir: &std::path::Path,
    ring: &palisade_policy::sign::KeyRing,
    manifest: &str,
    shards: &[(String, Vec<u8>)],
) {
    use palisade_policy::sign::{self, Domain};
    let sig = ring.sign(Domain::Manifest, manifest.as_bytes()).to_json();
    std::fs::write(dir.join(sign::MANIFEST_SIG_KEY), sig).unwrap();
    std::fs::write(dir.join(sign::KEYS_KEY), sign::chain_to_json(&ring.chain())).unwrap();
    write_raw(dir, manifest, shards);
}

async fn rejected(sc: &palisade_sidecar::Sidecar, reason: &str, n: u32) {
    let want = format!("palisade_sidecar_bundle_load_errors_total{{reason=\"{reason}\"}} {n}");
    let deadline = std::time::Instant::now() + patience();
    loop {
        let m = metrics(sc).await;
        if m.contains(&want) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no {want} in\n{m}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// With the operator's keys (`--bundle-keys`, as the injector sets them) the sidecar applies
/// only bundles the operator signed: an unsigned bundle, one signed by another key, one whose
/// manifest was edited after signing, and one that names the operator's key over a foreign
/// signature are each refused and counted by reason, and the signed policy stays in force.
/// After a key rotation the new key is learnt from the chain the operator publishes, so the
/// pod, given only the first key, keeps following the operator.
#[tokio::test]
async fn only_bundles_the_operator_signed_are_applied() {
    use palisade_policy::sign::{self, Domain, KeyRing};
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::generate(1).unwrap();
    let bot = || vec![deny("ua", when(|c| c.user_agents = vec!["bot".into()]))];
    let (manifest, shards) = bundle::encode(bot(), 1);
    write_signed(dir.path(), &ring, &manifest, &shards);
    let keys = ring.trust_list();
    let sc = file_sidecar(dir.path(), &["--bundle-keys", &keys]).await;
    let good = palisade_policy::Manifest::from_json(&manifest)
        .unwrap()
        .bundle_hash;
    wait_for_bundle(&sc, &good).await;
    let m = metrics(&sc).await;
    assert!(
        m.contains("palisade_sidecar_bundle_signatures_checked 1"),
        "{m}"
    );
    let bot_status = || async { get(sc.proxy_addr, "/", &[("user-agent", "bot")]).await.0 };
    assert_eq!(bot_status().await, 403);

    // A namespace editor's bundle without the deny, in four disguises.
    let (forged, forged_shards) = bundle::encode(vec![], 2);
    std::fs::remove_file(dir.path().join(sign::MANIFEST_SIG_KEY)).unwrap();
    write_raw(dir.path(), &forged, &forged_shards);
    rejected(&sc, "BundleUnsigned", 1).await;
    let attacker = KeyRing::generate(1).unwrap();
    let (forged, forged_shards) = bundle::encode(vec![], 3);
    write_signed(dir.path(), &attacker, &forged, &forged_shards);
    rejected(&sc, "SigningKeyUnknown", 1).await;
    let signed_then_edited = manifest.replace("\"generation\":1", "\"generation\":4");
    assert_ne!(signed_then_edited, manifest);
    std::fs::write(
        dir.path().join(sign::MANIFEST_SIG_KEY),
        ring.sign(Domain::Manifest, manifest.as_bytes()).to_json(),
    )
    .unwrap();
    write_raw(dir.path(), &signed_then_edited, &shards);
    rejected(&sc, "SignatureInvalid", 1).await;
    let (forged, forged_shards) = bundle::encode(vec![], 5);
    let mut named = attacker.sign(Domain::Manifest, forged.as_bytes());
    named.key_id = ring.current_id().to_owned();
    std::fs::write(dir.path().join(sign::MANIFEST_SIG_KEY), named.to_json()).unwrap();
    write_raw(dir.path(), &forged, &forged_shards);
    rejected(&sc, "SignatureInvalid", 2).await;
    assert_eq!(sc.store().load().unwrap().hash, good);
    assert_eq!(bot_status().await, 403, "the signed policy stays in force");

    // Two rotations later the pod still follows: the chain carries the trust.
    let rotated = ring.rotated(2).unwrap().rotated(3).unwrap();
    let (next, next_shards) = bundle::encode(vec![], 6);
    write_signed(dir.path(), &rotated, &next, &next_shards);
    let next_hash = palisade_policy::Manifest::from_json(&next)
        .unwrap()
        .bundle_hash;
    wait_for_bundle(&sc, &next_hash).await;
    assert_eq!(bot_status().await, 200);
}

/// Detected clients are signed like bundles: a forged document that would deny a client
/// (or lift a mark) is refused and counted; the operator's signed one applies.
#[tokio::test]
async fn detected_client_documents_must_be_signed_too() {
    use palisade_policy::sign::{self, Domain, KeyRing};
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::generate(1).unwrap();
    let action = deny(
        "ban-flooders",
        when(|c| c.detected_by = Some(palisade_policy::DetectedBy::Any)),
    );
    let (manifest, shards) = bundle::encode_with_rules(vec![action], &["flooder"], 1);
    write_signed(dir.path(), &ring, &manifest, &shards);
    let keys = ring.trust_list();
    let sc = file_sidecar(dir.path(), &["--bundle-keys", &keys]).await;
    let hash = palisade_policy::Manifest::from_json(&manifest)
        .unwrap()
        .bundle_hash;
    wait_for_bundle(&sc, &hash).await;
    // Forged: marks an innocent client, no signature.
    bundle::write_detected(dir.path(), 1, &[("flooder", "ip:192.0.2.7")]);
    rejected(&sc, "BundleUnsigned", 1).await;
    assert_eq!(get(sc.proxy_addr, "/", &[from("192.0.2.7")]).await.0, 200);
    // The operator's document: signature written first, then the document.
    let sig_for = |doc: &[u8]| ring.sign(Domain::Detected, doc).to_json();
    let mut doc = palisade_policy::DetectedClients {
        generation: 2,
        ..Default::default()
    };
    doc.rules
        .entry("flooder".into())
        .or_default()
        .push(palisade_policy::DetectedClient {
            key: "ip:192.0.2.5".parse().unwrap(),
            expires: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        });
    let bytes = palisade_policy::encode_detected(&doc).unwrap();
    std::fs::write(dir.path().join(sign::DETECTED_SIG_KEY), sig_for(&bytes)).unwrap();
    std::fs::write(dir.path().join("detected"), &bytes).unwrap();
    while get(sc.proxy_addr, "/", &[from("192.0.2.5")]).await.0 != 403 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A manifest signature does not pass for a detected document.
    doc.generation = 3;
    doc.rules.clear();
    let lifted = palisade_policy::encode_detected(&doc).unwrap();
    let as_manifest = ring.sign(Domain::Manifest, &lifted).to_json();
    std::fs::write(dir.path().join(sign::DETECTED_SIG_KEY), as_manifest).unwrap();
    std::fs::write(dir.path().join("detected"), &lifted).unwrap();
    rejected(&sc, "SignatureInvalid", 1).await;
    assert_eq!(get(sc.proxy_addr, "/", &[from("192.0.2.5")]).await.0, 403);
}

/// A `detectedBy` deny of a client detected by its IPv6 prefix covers every address of the
/// prefix (the client rotates its privacy addresses there) and nothing outside it.
#[tokio::test]
async fn a_detected_ipv6_prefix_is_denied_at_every_address_inside_it() {
    let (_dir, sc) = detected_sidecar("prefix:2001:db8:1:2::/64").await;
    while get(sc.proxy_addr, "/", &[from("2001:db8:1:2::1")]).await.0 != 403 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for inside in [
        "2001:db8:1:2:dead:beef:1:2",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
    ] {
        assert_eq!(
            get(sc.proxy_addr, "/", &[from(inside)]).await.0,
            403,
            "{inside}"
        );
    }
    for outside in ["2001:db8:1:3::1", "2001:db8:1:1:ffff::1", "198.51.100.7"] {
        assert_eq!(
            get(sc.proxy_addr, "/", &[from(outside)]).await.0,
            200,
            "{outside}"
        );
    }
}

/// The kubelet swaps a mounted ConfigMap's files at once, but the sidecar reads the manifest
/// and its signature one after the other: a read between two swaps pairs a new manifest with
/// the old signature and is refused. When the signature catches up (the manifest unchanged)
/// the bundle is tried again and applied.
#[tokio::test]
async fn a_manifest_read_before_its_signature_is_applied_once_the_signature_arrives() {
    use palisade_policy::sign::{self, Domain, KeyRing};
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::generate(1).unwrap();
    let (first, first_shards) = bundle::encode(vec![], 1);
    write_signed(dir.path(), &ring, &first, &first_shards);
    let keys = ring.trust_list();
    let sc = file_sidecar(dir.path(), &["--bundle-keys", &keys]).await;
    let first_hash = palisade_policy::Manifest::from_json(&first)
        .unwrap()
        .bundle_hash;
    wait_for_bundle(&sc, &first_hash).await;
    // The new manifest, still beside the first one's signature.
    let bot = vec![deny("ua", when(|c| c.user_agents = vec!["bot".into()]))];
    let (next, next_shards) = bundle::encode(bot, 2);
    write_raw(dir.path(), &next, &next_shards);
    rejected(&sc, "SignatureInvalid", 1).await;
    // Its signature arrives.
    let sig = ring.sign(Domain::Manifest, next.as_bytes()).to_json();
    std::fs::write(dir.path().join(sign::MANIFEST_SIG_KEY), sig).unwrap();
    let next_hash = palisade_policy::Manifest::from_json(&next)
        .unwrap()
        .bundle_hash;
    tokio::time::timeout(patience(), wait_for_bundle(&sc, &next_hash))
        .await
        .expect("the manifest tried again once its signature arrived");
    assert_eq!(
        get(sc.proxy_addr, "/", &[("user-agent", "bot")]).await.0,
        403
    );
}
