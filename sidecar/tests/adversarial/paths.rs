//! Path spellings (issue 17 item 3): a path condition matches the path the application will
//! route, whatever spelling the client sends. Requests are written as raw bytes, so no client
//! library tidies the target on the way.

use palisade_policy::{ActionSpec, PathMatch};

use crate::support::bundle::{deny, when, write};
use crate::support::{echo_app, metrics, sidecar, wait_for_bundle};

/// A sidecar (`extra` flags) in front of the echo app enforcing `actions`.
async fn env(
    actions: Vec<ActionSpec>,
    extra: &[&str],
) -> (tempfile::TempDir, palisade_sidecar::Sidecar) {
    let dir = tempfile::tempdir().unwrap();
    let hash = write(dir.path(), actions, 1);
    let path = dir.path().to_str().unwrap().to_owned();
    let mut args = vec!["--bundle-path", &path, "--bundle-poll", "20ms"];
    args.extend_from_slice(extra);
    let sc = sidecar(echo_app().await, &args).await;
    wait_for_bundle(&sc, &hash).await;
    (dir, sc)
}

fn deny_path(name: &str, p: PathMatch) -> ActionSpec {
    deny(name, when(|c| c.paths = vec![p]))
}

/// Sends `GET <target>` as raw bytes; returns the status, the `palisade-error` header and the
/// body (the deny action's name, or the echo app's JSON).
async fn get_raw(addr: std::net::SocketAddr, target: &str) -> (u16, String, String) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n");
    let text = crate::support::raw(addr, req.as_bytes()).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let error = head
        .lines()
        .find_map(|l| l.strip_prefix("palisade-error: "))
        .unwrap_or_default()
        .to_owned();
    (status, error, body.to_owned())
}

/// The request target the app received (from the echo app's JSON).
fn app_target(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    v["target"].as_str().unwrap().to_owned()
}

/// Every spelling of `/admin` a client might try, for an app that routes it as `/admin`.
const ADMIN_SPELLINGS: [&str; 17] = [
    "/admin",
    "//admin",
    "///admin//",
    "/%61dmin",
    "/%61%64%6d%69%6e",
    "/x/../admin",
    "/x/%2e%2e/admin",
    "/%2E/admin",
    "/./admin",
    "/../admin",
    "/;x/admin",
    "/admin;jsessionid=1",
    "/..;/admin",
    "/x/..;/admin",
    "/admin/",
    "/admin/.",
    "/admin?x=1",
];

#[tokio::test]
async fn a_deny_on_admin_stops_every_spelling_of_admin() {
    for (name, cond) in [
        ("exact", PathMatch::Exact("/admin".into())),
        ("prefix", PathMatch::Prefix("/admin".into())),
    ] {
        let (_dir, sc) = env(vec![deny_path(name, cond)], &[]).await;
        for target in ADMIN_SPELLINGS {
            let (status, _, body) = get_raw(sc.proxy_addr, target).await;
            assert_eq!((status, body.as_str()), (403, name), "{name}: {target}");
        }
        for target in ["/public", "/x/admin", "/%2561dmin"] {
            let (status, _, body) = get_raw(sc.proxy_addr, target).await;
            assert_eq!(status, 200, "{name}: {target} is not /admin: {body}");
        }
    }
}

#[tokio::test]
async fn a_prefix_deny_stops_spellings_below_it() {
    let (_dir, sc) = env(
        vec![deny_path(
            "internal",
            PathMatch::Prefix("/internal/".into()),
        )],
        &[],
    )
    .await;
    for target in [
        "/internal/x",
        "//internal//x",
        "/internal",
        "/public/../internal/x",
        "/%69nternal/x",
        "/internal;a/x",
        "/..;/internal/x",
    ] {
        let (status, _, body) = get_raw(sc.proxy_addr, target).await;
        if target == "/internal" {
            assert_eq!(
                status, 200,
                "a prefix /internal/ does not cover /internal: {body}"
            );
        } else {
            assert_eq!((status, body.as_str()), (403, "internal"), "{target}");
        }
    }
}

#[tokio::test]
async fn case_is_the_apps_choice_unless_the_condition_ignores_it() {
    let (_dir, sc) = env(
        vec![deny_path("admin", PathMatch::Exact("/admin".into()))],
        &[],
    )
    .await;
    for target in ["/ADMIN", "/Admin/", "/%41dmin"] {
        let (status, _, body) = get_raw(sc.proxy_addr, target).await;
        assert_eq!(status, 200, "case-sensitive by default: {target}: {body}");
    }
    let any_case = deny_path("admin", PathMatch::ExactIgnoreCase("/admin".into()));
    let (_dir, sc) = env(vec![any_case], &[]).await;
    for target in ["/ADMIN", "/Admin/", "/%41dmin", "//aDmIn;x", "/admin"] {
        let (status, _, body) = get_raw(sc.proxy_addr, target).await;
        assert_eq!((status, body.as_str()), (403, "admin"), "{target}");
    }
}

#[tokio::test]
async fn escaped_slashes_backslashes_and_bad_escapes_get_400() {
    let (_dir, sc) = env(
        vec![deny_path("admin", PathMatch::Exact("/admin".into()))],
        &[],
    )
    .await;
    for (target, reason) in [
        ("/x%2F..%2Fadmin", "EscapedSlash"),
        ("/x%2f..%2fadmin", "EscapedSlash"),
        ("/files/a%2Fb", "EscapedSlash"),
        ("/x%5C..%5Cadmin", "EscapedSlash"),
        ("/x\\..\\admin", "Backslash"),
        ("/admin%zz", "InvalidPercentEncoding"),
        ("/admin%4", "InvalidPercentEncoding"),
    ] {
        let (status, error, body) = get_raw(sc.proxy_addr, target).await;
        assert_eq!((status, error.as_str()), (400, reason), "{target}: {body}");
    }
    let m = metrics(&sc).await;
    for want in [
        "palisade_sidecar_rejected_paths_total{reason=\"EscapedSlash\"} 4",
        "palisade_sidecar_rejected_paths_total{reason=\"Backslash\"} 1",
        "palisade_sidecar_rejected_paths_total{reason=\"InvalidPercentEncoding\"} 2",
    ] {
        assert!(m.contains(want), "no `{want}` in\n{m}");
    }
}

#[tokio::test]
async fn escaped_slashes_can_be_unescaped_or_kept() {
    let admin = || vec![deny_path("admin", PathMatch::Exact("/admin".into()))];
    let (_dir, sc) = env(admin(), &["--escaped-slashes", "unescape"]).await;
    for target in ["/x%2F..%2Fadmin", "/x\\..\\admin", "/x%5c..%5Cadmin"] {
        let (status, _, body) = get_raw(sc.proxy_addr, target).await;
        assert_eq!((status, body.as_str()), (403, "admin"), "{target}");
    }
    let (status, _, body) = get_raw(sc.proxy_addr, "/files/a%2fb\\c").await;
    assert_eq!((status, app_target(&body)), (200, "/files/a/b/c".into()));

    let (_dir, sc) = env(admin(), &["--escaped-slashes", "keep"]).await;
    let (status, _, body) = get_raw(sc.proxy_addr, "/x%2F..%2Fadmin").await;
    assert_eq!((status, app_target(&body)), (200, "/x%2F..%2Fadmin".into()));
    let (status, _, body) = get_raw(sc.proxy_addr, "/files/a%2fb").await;
    assert_eq!((status, app_target(&body)), (200, "/files/a%2Fb".into()));
}

#[tokio::test]
async fn the_app_receives_the_normalised_path_and_the_query_untouched() {
    let (_dir, sc) = env(
        vec![deny_path("admin", PathMatch::Exact("/admin".into()))],
        &[],
    )
    .await;
    for (sent, received) in [
        (
            "//x/../%61pi/./v1;p=1/?q=%2F&r=/../",
            "/api/v1;p=1/?q=%2F&r=/../",
        ),
        ("/%7euser//docs/%2e/", "/~user/docs/"),
        ("/files/a%2cb", "/files/a%2Cb"),
        // Already normal: passed byte for byte.
        ("/files/a%20b", "/files/a%20b"),
        ("/q?x=%2F", "/q?x=%2F"),
        ("/q?x=%2f&y=..%5C", "/q?x=%2f&y=..%5C"),
        ("/files/%C3%A9t%C3%A9", "/files/%C3%A9t%C3%A9"),
        ("/a%3Bb/c%25d", "/a%3Bb/c%25d"),
        ("/a;b=1/c", "/a;b=1/c"),
    ] {
        let (status, _, body) = get_raw(sc.proxy_addr, sent).await;
        assert_eq!(
            (status, app_target(&body)),
            (200, received.into()),
            "{sent}"
        );
    }
}

#[tokio::test]
async fn forward_original_path_keeps_the_target_but_still_matches_the_normal_one() {
    let admin = vec![deny_path("admin", PathMatch::Exact("/admin".into()))];
    let (_dir, sc) = env(admin, &["--forward-original-path"]).await;
    for target in ["//x/../admin", "/;x/admin", "/%61dmin/"] {
        let (status, _, body) = get_raw(sc.proxy_addr, target).await;
        assert_eq!((status, body.as_str()), (403, "admin"), "{target}");
    }
    let (status, _, body) = get_raw(sc.proxy_addr, "//x/../%61pi/").await;
    assert_eq!((status, app_target(&body)), (200, "//x/../%61pi/".into()));
    let (status, error, _) = get_raw(sc.proxy_addr, "/a%2Fb").await;
    assert_eq!(
        (status, error.as_str()),
        (400, "EscapedSlash"),
        "still refused"
    );
}
