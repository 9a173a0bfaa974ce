//! Every rule type opened end to end, like Flooder (`e2e_flood.rs`) and TorList
//! (`e2e_detection.rs`): an operator, a sidecar process in front of an app that answers as the
//! attack needs (401s to guessed keys, 403s to a robot, large files to a scraper), the rule
//! and a `detectedBy` deny action applied with kubectl. Each test sends the attack through the
//! sidecar until the sidecar denies it by itself, checks that an ordinary client still passes,
//! and reads the SecurityIncident the collector opened.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use palisade_detection::counter::short_digest;
use palisade_detection::key::KeyHash;
use palisade_e2e::http::{app, get};
use palisade_e2e::{ControlPlane, Operator, Sidecar, TempNs, eventually, repo_root, scope};
use serde_json::Value;

/// A namespace with an operator, the manifests applied, and one sidecar reporting to it.
struct Setup {
    ns: TempNs,
    _op: Operator,
    sc: Sidecar,
}

/// The deny action of each test: `status` with `body`, for the clients `rule` detected.
fn deny_detected(rule: &str, status: u16, body: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {{name: deny-detected}}\n\
         spec:\n  deny: {{status: {status}, body: \"{body}\\n\"}}\n  conditions:\n    detectedBy: [{rule}]\n"
    )
}

async fn setup(name: &str, manifests: &str, app_port: u16) -> Setup {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, name).await;
    let op = Operator::start(
        cp,
        &format!("op-{name}"),
        &format!("op-{name}"),
        &scope(&ns),
    );
    cp.apply(ns.name(), manifests)
        .expect("apply the rule and the action");
    let sc = Sidecar::start(cp, ns.name(), "api-0", app_port, Some(&op.collector));
    eventually("the detectedBy action in the sidecar's bundle", || async {
        let (_, b) = palisade_e2e::bundle::read_bundle(&cp.client().await, ns.name()).await?;
        let wanted = b.actions.iter().any(|a| a.name == "deny-detected");
        let version = sc.bundle_version().unwrap_or_default();
        (wanted && version.starts_with(&format!("{}-", b.generation)))
            .then_some(())
            .ok_or(format!("bundle {} / sidecar {version}", b.generation))
    })
    .await;
    Setup { ns, _op: op, sc }
}

/// Sends `request(n)` (source address, path, headers) for n = 0, 1, … until the sidecar
/// answers `denied` with a body containing `marker`; returns how many were sent.
async fn until_denied(
    sc: &Sidecar,
    denied: u16,
    marker: &str,
    request: impl Fn(u32) -> (IpAddr, String, Vec<(String, String)>),
) -> u32 {
    let mut n = 0u32;
    eventually(
        "the attacker to be detected and denied by the sidecar",
        || {
            let first = n;
            n += 40;
            let request = &request;
            async move {
                let mut last = (0, String::new());
                for i in first..first + 40 {
                    let (from, path, headers) = request(i);
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    last = get(from, sc.addr, &path, &headers).await?;
                }
                (last.0 == denied && last.1.contains(marker))
                    .then_some(())
                    .ok_or(format!("after {} requests: {last:?}", first + 40))
            }
        },
    )
    .await;
    n
}

/// The status of the namespace's SecurityIncident about `rule`, once `ready` holds for it.
async fn incident(ns: &str, rule: &str, ready: impl Fn(&Value) -> Result<(), String>) -> Value {
    let cp = ControlPlane::shared();
    eventually(&format!("a SecurityIncident about {rule}"), || async {
        let out = cp
            .kubectl_ok(&["-n", ns, "get", "securityincidents", "-o", "json"])
            .map_err(|e| e.to_string())?;
        let list: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let status = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| &i["status"])
            .find(|s| {
                s["detectionRules"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r == rule))
            })
            .ok_or(format!("no incident about {rule} yet: {out}"))?;
        ready(status).map(|()| status.clone())
    })
    .await
}

/// The values of `status.attributes.<dim>.top`.
fn values(status: &Value, dim: &str) -> Vec<String> {
    status["attributes"][dim]["top"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["value"].as_str().map(str::to_owned))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

const AGENTS: [&str; 2] = ["guess-o-matic/1.0", "python-requests/2.31"];

/// The shipped `examples/rule-brute-guessor.yaml` (clients by API key): a key guessed from
/// three rotating addresses is detected as one client, denied from an address it never used,
/// while another key from the same addresses passes; the incident lists the key, the
/// addresses and the user agents it was used from, and the rule with its requests.
#[tokio::test]
async fn brute_guessing_by_api_key_from_rotating_addresses_is_one_client() {
    let rule = std::fs::read_to_string(repo_root().join("examples/rule-brute-guessor.yaml"))
        .expect("the shipped example");
    let manifests = format!(
        "{rule}---\n{}",
        deny_detected("brute-guessor", 403, "denied: key guessing")
    );
    // The app: 200 for the good key, 401 for any other.
    let port = app(|head| {
        if head.to_ascii_lowercase().contains("x-api-key: k-good") {
            (200, "ok".into())
        } else {
            (401, "bad key".into())
        }
    })
    .await;
    let s = setup("brute-key", &manifests, port).await;
    let cp = ControlPlane::shared();
    eventually("the bundle asking sidecars to count API keys", || async {
        let (_, b) = palisade_e2e::bundle::read_bundle(&cp.client().await, s.ns.name()).await?;
        (b.count_keys
            == [
                palisade_policy::ClientKeyKind::Ip,
                palisade_policy::ClientKeyKind::ApiKey,
            ])
        .then_some(())
        .ok_or(format!("countKeys {:?}", b.count_keys))
    })
    .await;
    let addresses = ["127.0.3.1", "127.0.3.2", "127.0.3.3"];
    let sent = until_denied(&s.sc, 403, "key guessing", |n| {
        let from = ip(addresses[n as usize % 3]);
        let headers = vec![
            ("x-api-key".to_owned(), "k-guess".to_owned()),
            ("user-agent".to_owned(), AGENTS[n as usize % 2].to_owned()),
        ];
        (from, "/v1/login".to_owned(), headers)
    })
    .await;
    assert!(sent >= 100, "minRequests is 100; denied after {sent}");
    // The key, not an address, is what is denied.
    let (status, body) = get(
        ip("127.0.3.9"),
        s.sc.addr,
        "/v1/login",
        &[("x-api-key", "k-guess")],
    )
    .await
    .expect("request");
    assert_eq!((status, body.as_str()), (403, "denied: key guessing\n"));
    for from in addresses {
        let (status, _) = get(ip(from), s.sc.addr, "/v1/login", &[("x-api-key", "k-good")])
            .await
            .expect("request");
        assert_eq!(status, 200, "another key from {from}");
    }
    let key = short_digest(&KeyHash::of(b"k-guess"));
    let status = incident(s.ns.name(), "brute-guessor", |st| {
        let ips = values(st, "ips");
        let agents = values(st, "userAgents");
        (values(st, "appKeys") == [key.clone()] && !ips.is_empty() && !agents.is_empty())
            .then_some(())
            .ok_or(format!("attributes not there yet: {}", st["attributes"]))
    })
    .await;
    assert_eq!(status["clients"], 1, "one key: {status}");
    for a in values(&status, "ips") {
        assert!(addresses.contains(&a.as_str()), "address {a} in {status}");
    }
    for a in values(&status, "userAgents") {
        assert!(AGENTS.contains(&a.as_str()), "user agent {a} in {status}");
    }
    let rules = &status["attributes"]["rules"];
    assert_eq!(rules["top"][0]["value"], "brute-guessor", "{status}");
    assert!(
        rules["top"][0]["requests"].as_i64() >= Some(100),
        "{status}"
    );
    assert!(status["duration"].is_string(), "{status}");
    assert!(
        status["displayName"]
            .as_str()
            .is_some_and(|n| n.contains("apiKey:sha256:")),
        "{status}"
    );
}

/// OAuth Abuser: many sessions from one user agent, started at the token endpoint or shown
/// as distinct access tokens; a client retrying a failing token call starts none.
#[tokio::test]
async fn an_oauth_abuser_starting_many_sessions_is_denied() {
    let manifests = format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: DetectionRule\nmetadata: {{name: oauth-abuser}}\n\
         spec:\n  type: OAuthAbuser\n  detectionTtl: 10m\n---\n{}",
        deny_detected("oauth-abuser", 403, "denied: session abuse")
    );
    let port = app(|head| {
        if head.to_ascii_lowercase().contains("client-secret: wrong") {
            (401, "invalid_client".into())
        } else {
            (200, "{\"access_token\":\"x\"}".into())
        }
    })
    .await;
    let s = setup("oauth", &manifests, port).await;
    // An ordinary client signs in a few times with two browsers.
    for n in 0..5usize {
        let ua = [("user-agent", AGENTS[n % 2])];
        let (status, _) = get(ip("127.0.4.2"), s.sc.addr, "/oauth/token", &ua)
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    let sent = until_denied(&s.sc, 403, "session abuse", |_| {
        let headers = vec![("user-agent".to_owned(), "token-farm/0.1".to_owned())];
        (ip("127.0.4.1"), "/oauth/token".to_owned(), headers)
    })
    .await;
    assert!(sent >= 50, "minSessions is 50; denied after {sent}");
    let (status, _) = get(ip("127.0.4.2"), s.sc.addr, "/oauth/token", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "the ordinary client");
    let status = incident(s.ns.name(), "oauth-abuser", |st| {
        (values(st, "ips") == ["127.0.4.1"])
            .then_some(())
            .ok_or(format!("ips: {}", st["attributes"]))
    })
    .await;
    let requests = status["attributes"]["ips"]["top"][0]["requests"].as_i64();
    assert!(
        requests >= Some(50),
        "exact requests of the address: {status}"
    );
    // Tokens farmed elsewhere, each used here once: distinct tokens are sessions too.
    let sent = until_denied(&s.sc, 403, "session abuse", |n| {
        let headers = vec![
            ("user-agent".to_owned(), "token-farm/0.1".to_owned()),
            ("authorization".to_owned(), format!("Bearer farmed-{n}")),
        ];
        (ip("127.0.4.3"), "/v1/orders".to_owned(), headers)
    })
    .await;
    assert!(sent >= 40, "about 50 distinct tokens; denied after {sent}");
    // 200 failing token calls with a wrong secret: no session, never denied.
    for _ in 0..200 {
        let headers = [("user-agent", "cron/1"), ("client-secret", "wrong")];
        let (status, _) = get(ip("127.0.4.4"), s.sc.addr, "/oauth/token", &headers)
            .await
            .unwrap();
        assert_eq!(status, 401, "the app's answer, never the sidecar's denial");
    }
    // Another abuser, sent after them, detected: the failing calls were reported before its
    // requests, so the rule has judged them, and still let them through.
    until_denied(&s.sc, 403, "session abuse", |_| {
        let headers = vec![("user-agent".to_owned(), "token-farm/0.2".to_owned())];
        (ip("127.0.4.5"), "/oauth/token".to_owned(), headers)
    })
    .await;
    let headers = [("user-agent", "cron/1"), ("client-secret", "wrong")];
    let (status, _) = get(ip("127.0.4.4"), s.sc.addr, "/oauth/token", &headers)
        .await
        .unwrap();
    assert_eq!(status, 401, "failing token calls are no sessions");
}

/// Robot Abuser: many 403s from the app (the sidecar answers 429 here, so the test can tell
/// its own denial from the app's 403s, which are the evidence).
#[tokio::test]
async fn a_robot_collecting_403s_from_the_app_is_denied() {
    let manifests = format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: DetectionRule\nmetadata: {{name: robot-abuser}}\n\
         spec:\n  type: RobotAbuser\n  detectionTtl: 10m\n---\n{}",
        deny_detected("robot-abuser", 429, "denied: robot")
    );
    let port = app(|head| {
        if head.starts_with("GET /admin") {
            (403, "forbidden".into())
        } else {
            (200, "ok".into())
        }
    })
    .await;
    let s = setup("robot", &manifests, port).await;
    let sent = until_denied(&s.sc, 429, "robot", |n| {
        (ip("127.0.5.1"), format!("/admin/{n}"), Vec::new())
    })
    .await;
    assert!(sent >= 100, "minForbidden is 100; denied after {sent}");
    // An ordinary client who hit /admin once is not one.
    let (status, _) = get(ip("127.0.5.2"), s.sc.addr, "/admin/x", &[])
        .await
        .unwrap();
    assert_eq!(status, 403, "the app's own answer");
    let (status, _) = get(ip("127.0.5.2"), s.sc.addr, "/", &[]).await.unwrap();
    assert_eq!(status, 200);
    let status = incident(s.ns.name(), "robot-abuser", |st| {
        (values(st, "responseCodes").first().map(String::as_str) == Some("403"))
            .then_some(())
            .ok_or(format!("response codes: {}", st["attributes"]))
    })
    .await;
    assert_eq!(values(&status, "ips"), ["127.0.5.1"], "{status}");
}

/// Static Content Scraper: most of the response bytes to one client.
#[tokio::test]
async fn a_scraper_taking_most_of_the_bytes_is_denied() {
    let manifests = format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: DetectionRule\nmetadata: {{name: scraper}}\n\
         spec:\n  type: StaticContentScraper\n  detectionTtl: 10m\n  staticContentScraper:\n    \
         {{minSharePercent: 50, minResponseBytes: 1048576, minActiveClients: 1}}\n---\n{}",
        deny_detected("scraper", 403, "denied: scraping")
    );
    let file = "x".repeat(64 * 1024);
    let port = app(move |head| {
        if head.starts_with("GET /static/") {
            (200, file.clone())
        } else {
            (200, "ok".into())
        }
    })
    .await;
    let s = setup("scrape", &manifests, port).await;
    for _ in 0..5 {
        let (status, _) = get(ip("127.0.6.2"), s.sc.addr, "/", &[]).await.unwrap();
        assert_eq!(status, 200);
    }
    let sent = until_denied(&s.sc, 403, "scraping", |n| {
        (ip("127.0.6.1"), format!("/static/img-{n}.png"), Vec::new())
    })
    .await;
    assert!(
        sent >= 16,
        "1 MiB is 16 files of 64 KiB; denied after {sent}"
    );
    let (status, _) = get(ip("127.0.6.2"), s.sc.addr, "/static/logo.png", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "the ordinary client");
    incident(s.ns.name(), "scraper", |st| {
        (values(st, "ips") == ["127.0.6.1"])
            .then_some(())
            .ok_or(format!("ips: {}", st["attributes"]))
    })
    .await;
}

/// Flooder by `clientKey: ipPrefix` in a namespace annotated `palisade.dev/ipv6-prefix-length:
/// "56"`: a client that takes a new IPv6 address for every request, across the /64s of its
/// /56, is one client; it is detected, and then denied at an address of its /56 it never
/// used, while a client of the next /56 passes. The incident names the prefix and the
/// addresses seen inside it. (Clients reach the sidecar through a trusted proxy on loopback,
/// which names them in `X-Forwarded-For`.)
#[tokio::test]
async fn an_ipv6_flooder_rotating_addresses_is_denied_by_its_prefix() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "v6prefix").await;
    cp.kubectl_ok(&[
        "annotate",
        "namespace",
        ns.name(),
        "palisade.dev/ipv6-prefix-length=56",
    ])
    .expect("annotate the namespace");
    let op = Operator::start(cp, "op-v6prefix", "op-v6prefix", &scope(&ns));
    let manifests = format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: DetectionRule\nmetadata: {{name: flooder}}\n\
         spec:\n  type: Flooder\n  clientKey: ipPrefix\n  detectionTtl: 10m\n  flooder: \
         {{minSharePercent: 50, minRequests: 100, minActiveClients: 1}}\n---\n{}",
        deny_detected("flooder", 429, "denied: flood")
    );
    cp.apply(ns.name(), &manifests)
        .expect("apply the rule and the action");
    let port = app(|_| (200, "ok".into())).await;
    let sc = Sidecar::start_with_args(
        cp,
        ns.name(),
        "api-0",
        port,
        Some(&op.collector),
        &["--trusted-proxies", "127.0.0.0/8"],
    );
    eventually("the bundle counting /56 prefixes", || async {
        let (_, b) = palisade_e2e::bundle::read_bundle(&cp.client().await, ns.name()).await?;
        let version = sc.bundle_version().unwrap_or_default();
        (b.count_keys
            .contains(&palisade_policy::ClientKeyKind::IpPrefix)
            && b.ipv6_prefix_len == 56
            && b.actions.iter().any(|a| a.name == "deny-detected")
            && version.starts_with(&format!("{}-", b.generation)))
        .then_some(())
        .ok_or(format!(
            "countKeys {:?} /{} sidecar {version}",
            b.count_keys, b.ipv6_prefix_len
        ))
    })
    .await;
    // Address n: the n-th /64 of 2001:db8:bad:100::/56 (mod 256), host n.
    let rotating = |n: u32| format!("2001:db8:bad:1{:02x}::{:x}", n % 256, n + 1);
    let local = ip("127.0.0.1");
    let sent = until_denied(&sc, 429, "flood", |n| {
        let headers = vec![("x-forwarded-for".to_owned(), rotating(n))];
        (local, "/v1/items".to_owned(), headers)
    })
    .await;
    assert!(sent >= 100, "minRequests is 100; denied after {sent}");
    let send = |xff: &'static str| async move {
        get(local, sc.addr, "/v1/items", &[("x-forwarded-for", xff)])
            .await
            .expect("request")
            .0
    };
    assert_eq!(
        send("2001:db8:bad:1ff:ffff::1").await,
        429,
        "unused address of the /56"
    );
    assert_eq!(send("2001:db8:bad:200::1").await, 200, "the next /56");
    assert_eq!(send("203.0.113.50").await, 200, "an IPv4 client");
    let status = incident(ns.name(), "flooder", |st| {
        (!values(st, "ips").is_empty())
            .then_some(())
            .ok_or(format!("no addresses yet: {}", st["attributes"]))
    })
    .await;
    assert!(
        status["displayName"]
            .as_str()
            .is_some_and(|n| n.contains("prefix:2001:db8:bad:100::/56")),
        "{status}"
    );
    for a in values(&status, "ips") {
        assert!(a.starts_with("2001:db8:bad:1"), "address {a} in {status}");
    }
    drop(op);
}
