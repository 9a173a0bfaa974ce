//! Identity the client claims (issue 17 items 4 and 5): `X-Forwarded-For` and the identity
//! headers are believed only from a trusted proxy (`--trusted-proxies`), so a direct client
//! can neither choose its IP nor name itself a developer an allow action lets through.
//!
//! Every sidecar here sees the test client as 127.0.0.1. "Trusted" sidecars list 127.0.0.0/8
//! in `--trusted-proxies` (the client plays the ingress); "direct" ones do not (the client is
//! an ordinary client), but still set `--trusted-hops 1`, the setting that used to trust
//! everyone.

use http::HeaderValue;
use palisade_policy::{ActionSpec, PathMatch};

use crate::support::bundle::{allow, deny, when, write};
use crate::support::*;

/// A sidecar enforcing `actions`, trusting the loopback client as a proxy or not.
async fn sidecar_with(
    actions: Vec<ActionSpec>,
    trusted: bool,
    extra: &[&str],
) -> (palisade_sidecar::Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let hash = write(dir.path(), actions, 1);
    let path = dir.path().to_str().unwrap().to_owned();
    let mut args = vec!["--bundle-path", &path, "--bundle-poll", "20ms"];
    if !extra.contains(&"--trusted-hops") {
        args.extend(["--trusted-hops", "1"]);
    }
    if trusted {
        args.extend(["--trusted-proxies", "127.0.0.0/8"]);
    }
    args.extend_from_slice(extra);
    let sc = sidecar(echo_app().await, &args).await;
    wait_for_bundle(&sc, &hash).await;
    (sc, dir)
}

fn ip_actions() -> Vec<ActionSpec> {
    vec![
        deny(
            "loopback",
            when(|c| c.ip_ranges = vec!["127.0.0.0/8".into()]),
        ),
        deny(
            "bad-range",
            when(|c| c.ip_ranges = vec!["192.0.2.0/24".into()]),
        ),
    ]
}

/// One GET with an `X-Forwarded-For` given as raw bytes (possibly not ASCII).
async fn get_xff(addr: std::net::SocketAddr, xff: &[u8]) -> (u16, String) {
    let mut c = h1(addr).await;
    let mut req = http::Request::get("/").header("host", "api.example");
    req = req.header("x-forwarded-for", HeaderValue::from_bytes(xff).unwrap());
    let (status, _, body) = send(&mut c, req.body(full("")).unwrap()).await;
    (status, body)
}

#[tokio::test]
async fn a_direct_client_cannot_choose_its_ip() {
    let (sc, _dir) = sidecar_with(ip_actions(), false, &[]).await;
    // Denied by its real address, whatever X-Forwarded-For says.
    assert_eq!(get_xff(sc.proxy_addr, b"198.51.100.1").await.0, 403);
    assert_eq!(get_xff(sc.proxy_addr, b"198.51.100.1").await.1, "loopback");
    let m = metrics(&sc).await;
    assert!(
        m.contains("palisade_sidecar_client_ip_resolutions_total{source=\"xff_untrusted_peer\"} 2"),
        "{m}"
    );
    sc.shutdown().await;
}

#[tokio::test]
async fn a_direct_client_cannot_frame_another_address() {
    let actions = vec![deny(
        "bad-range",
        when(|c| c.ip_ranges = vec!["192.0.2.0/24".into()]),
    )];
    let (direct, _d1) = sidecar_with(actions.clone(), false, &[]).await;
    assert_eq!(get_xff(direct.proxy_addr, b"192.0.2.7").await.0, 200);
    // The same request through a trusted proxy names the client: denied.
    let (trusted, _d2) = sidecar_with(actions, true, &[]).await;
    assert_eq!(get_xff(trusted.proxy_addr, b"192.0.2.7").await.0, 403);
    let m = metrics(&trusted).await;
    assert!(
        m.contains("palisade_sidecar_client_ip_resolutions_total{source=\"xff\"} 1"),
        "{m}"
    );
    direct.shutdown().await;
    trusted.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_is_walked_from_the_right() {
    let (sc, _dir) = sidecar_with(ip_actions(), true, &["--trusted-hops", "0"]).await;
    let a = sc.proxy_addr;
    // Forged entries left of the real client are not read.
    assert_eq!(
        get_xff(a, b"198.51.100.1, 192.0.2.7").await,
        (403, "bad-range".into())
    );
    // Trusted hops (loopback) are skipped to the client.
    assert_eq!(
        get_xff(a, b"192.0.2.7, 127.0.0.9").await,
        (403, "bad-range".into())
    );
    assert_eq!(get_xff(a, b"192.0.2.7, 198.51.100.1").await.0, 200);
    sc.shutdown().await;
}

#[tokio::test]
async fn a_non_ascii_byte_does_not_collapse_the_client_to_the_proxy() {
    // The client's own junk sits left of the address the proxy appended: never read.
    let (sc, _dir) = sidecar_with(
        vec![deny(
            "bad-range",
            when(|c| c.ip_ranges = vec!["192.0.2.0/24".into()]),
        )],
        true,
        &[],
    )
    .await;
    let a = sc.proxy_addr;
    assert_eq!(get_xff(a, b"caf\xc3\xa9, 192.0.2.7").await.0, 403);
    assert_eq!(get_xff(a, b"\xff\xfe\x80, 192.0.2.7").await.0, 403);
    // Junk where a trusted proxy wrote: the last trusted address (the proxy) is the client,
    // counted as xff_invalid, never an address the client chose.
    assert_eq!(get_xff(a, b"192.0.2.7, \xff").await.0, 200);
    let m = metrics(&sc).await;
    assert!(
        m.contains("palisade_sidecar_client_ip_resolutions_total{source=\"xff_invalid\"} 1"),
        "{m}"
    );
    sc.shutdown().await;
}

fn developer_allow_over_admin_deny() -> Vec<ActionSpec> {
    vec![
        allow("alice", when(|c| c.developers = vec!["alice".into()])),
        allow("gold", when(|c| c.api_products = vec!["gold".into()])),
        allow(
            "app",
            when(|c| c.developer_apps = vec!["trusted-app".into()]),
        ),
        deny(
            "admin",
            when(|c| c.paths = vec![PathMatch::Prefix("/admin".into())]),
        ),
    ]
}

#[tokio::test]
async fn an_identity_header_from_a_direct_client_lifts_no_deny() {
    let (sc, _dir) = sidecar_with(developer_allow_over_admin_deny(), false, &[]).await;
    for header in [
        ("x-developer", "alice"),
        ("x-api-product", "gold"),
        ("x-developer-app", "trusted-app"),
    ] {
        let (status, _, body) = get(sc.proxy_addr, "/admin", &[header]).await;
        assert_eq!((status, body.as_str()), (403, "admin"), "{header:?}");
    }
    let m = metrics(&sc).await;
    for kind in ["developer", "product", "app"] {
        let want =
            format!("palisade_sidecar_identity_headers_ignored_total{{header=\"{kind}\"}} 1");
        assert!(m.contains(&want), "no `{want}` in\n{m}");
    }
    sc.shutdown().await;
}

#[tokio::test]
async fn an_identity_header_from_a_trusted_proxy_is_honoured() {
    let (sc, _dir) = sidecar_with(developer_allow_over_admin_deny(), true, &[]).await;
    let (status, _, _) = get(sc.proxy_addr, "/admin", &[("x-developer", "alice")]).await;
    assert_eq!(status, 200);
    assert_eq!(get(sc.proxy_addr, "/admin", &[]).await.0, 403);
    sc.shutdown().await;
}
