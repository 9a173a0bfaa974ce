//! Headers a hostile client sends to remove, forge or disguise what the sidecar reads and adds:
//! `Connection` naming a flag header, forged `x-palisade-*` headers, and API keys, tokens and
//! methods written the way applications accept them but the sidecar once did not.

use std::net::SocketAddr;

use palisade_policy::{ActionSpec, PathMatch};

use crate::support::bundle::{allow, deny, flag, sha, when, write};
use crate::support::*;

/// An application answering with every header it received: `{"name": ["v1", "v2"]}`.
async fn headers_app() -> SocketAddr {
    app(|req, _| async move {
        let mut seen = serde_json::Map::new();
        for name in req.headers().keys() {
            let values: Vec<String> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            seen.insert(name.as_str().to_owned(), values.into());
        }
        seen.insert("method".into(), req.method().as_str().into());
        http::Response::new(full(serde_json::Value::Object(seen).to_string()))
    })
    .await
}

struct Env {
    _dir: tempfile::TempDir,
    sc: palisade_sidecar::Sidecar,
}

/// A sidecar enforcing `actions` in front of [`headers_app`].
async fn env(actions: Vec<ActionSpec>, extra: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let hash = write(dir.path(), actions, 1);
    let path = dir.path().to_str().unwrap().to_owned();
    let mut args = vec!["--bundle-path", &path, "--bundle-poll", "20ms"];
    args.extend_from_slice(extra);
    let sc = sidecar(headers_app().await, &args).await;
    wait_for_bundle(&sc, &hash).await;
    Env { _dir: dir, sc }
}

/// What the application saw of one GET: every header's values, by name.
async fn seen(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let (status, _, body) = get(addr, target, headers).await;
    assert_eq!(status, 200, "{target} {headers:?}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn prefix(p: &str) -> palisade_policy::Conditions {
    when(|c| c.paths = vec![PathMatch::Prefix(p.into())])
}

#[tokio::test]
async fn connection_cannot_remove_a_flag_the_sidecar_adds() {
    let e = env(vec![flag("tagged", prefix("/"))], &[]).await;
    let addr = e.sc.proxy_addr;
    for connection in [
        "X-Palisade-Flag",
        "keep-alive, x-palisade-flag",
        "x-forwarded-for, X-PALISADE-FLAG",
    ] {
        let app = seen(addr, "/", &[("connection", connection)]).await;
        assert_eq!(
            app["x-palisade-flag"],
            serde_json::json!(["tagged"]),
            "{connection}"
        );
        // The sidecar's own X-Forwarded-For entry cannot be named away either.
        assert_eq!(
            app["x-forwarded-for"],
            serde_json::json!(["127.0.0.1"]),
            "{connection}"
        );
        assert!(app.get("connection").is_none(), "{app}");
    }
}

/// The API server refuses flag header names the proxy manages (`connection`, `host`, ...);
/// a bundle that carries one anyway (written by hand, or by an older operator) adds only its
/// other headers: the sidecar never forwards a hop-by-hop header, `Host` or `Content-Length`
/// it made up, so a flag cannot frame the request differently for the application.
#[tokio::test]
async fn a_bundle_cannot_make_the_sidecar_add_a_hop_by_hop_header() {
    let managed = [
        ("connection", "x-forwarded-for"),
        ("transfer-encoding", "chunked"),
        ("content-length", "5"),
        ("host", "evil.example"),
        ("upgrade", "websocket"),
        ("te", "trailers"),
        ("keep-alive", "timeout=1"),
        ("x-palisade-flag", "kept"),
    ];
    let headers = managed
        .iter()
        .map(|(name, value)| palisade_policy::Header {
            name: (*name).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    let mut action = flag("managed", prefix("/"));
    action.verb = palisade_policy::Verb::Flag { headers };
    let e = env(vec![action], &[]).await;
    let app = seen(e.sc.proxy_addr, "/", &[]).await;
    assert_eq!(app["x-palisade-flag"], serde_json::json!(["kept"]), "{app}");
    assert!(app.get("connection").is_none(), "{app}");
    assert!(app.get("transfer-encoding").is_none(), "{app}");
    assert!(app.get("upgrade").is_none(), "{app}");
    assert!(app.get("te").is_none(), "{app}");
    assert!(app.get("keep-alive").is_none(), "{app}");
    assert_ne!(app["host"], serde_json::json!(["evil.example"]), "{app}");
    assert_ne!(app["content-length"], serde_json::json!(["5"]), "{app}");
    // The sidecar's own X-Forwarded-For was not named away by the made-up Connection.
    assert_eq!(
        app["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "{app}"
    );
}

#[tokio::test]
async fn a_client_cannot_forge_a_flag_or_any_reserved_header() {
    let actions = vec![
        flag("tagged", prefix("/flagged")),
        ActionSpec {
            verb: palisade_policy::Verb::Flag {
                headers: vec![palisade_policy::Header {
                    name: "x-risk".into(),
                    value: "high".into(),
                }],
            },
            ..flag("risky", prefix("/risky"))
        },
    ];
    let e = env(actions, &[]).await;
    let addr = e.sc.proxy_addr;
    let forged = [
        ("x-palisade-flag", "forged"),
        ("x-palisade-action", "forged"),
        ("palisade-decision", "allow; action=forged"),
        ("x-risk", "forged"),
    ];
    let app = seen(addr, "/other", &forged).await;
    for (name, _) in forged {
        assert!(app.get(name).is_none(), "{name} reached the app: {app}");
    }
    // A matching flag replaces the forged value instead of joining it.
    let app = seen(addr, "/flagged", &forged).await;
    assert_eq!(app["x-palisade-flag"], serde_json::json!(["tagged"]));
    assert!(app.get("x-palisade-action").is_none(), "{app}");
    let app = seen(addr, "/risky", &forged).await;
    assert_eq!(app["x-risk"], serde_json::json!(["high"]));
}

#[tokio::test]
async fn reserved_headers_are_removed_before_any_policy_is_loaded() {
    let sc = sidecar(headers_app().await, &[]).await;
    let app = seen(sc.proxy_addr, "/", &[("x-palisade-flag", "forged")]).await;
    assert!(app.get("x-palisade-flag").is_none(), "{app}");
}

/// Method, target and headers of one request.
type Call<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Sends one request over a fresh connection; returns status and body.
async fn ask(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut c = h1(addr).await;
    let mut req = http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "api.example");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, _, body) = send(&mut c, req.body(full("")).unwrap()).await;
    (status, body)
}

/// Deny actions on one API key, one token, DELETE under /admin and GET of /secret; an allow
/// for a partner key over a deny of /private.
fn credential_actions() -> Vec<ActionSpec> {
    vec![
        deny("key", when(|c| c.api_keys = vec![sha("k-bad")])),
        deny("token", when(|c| c.access_tokens = vec![sha("t-bad")])),
        deny(
            "delete",
            when(|c| {
                c.http_methods = vec!["DELETE".into()];
                c.paths = vec![PathMatch::Prefix("/admin".into())];
            }),
        ),
        deny(
            "get-secret",
            when(|c| {
                c.http_methods = vec!["GET".into()];
                c.paths = vec![PathMatch::Exact("/secret".into())];
            }),
        ),
        allow("partner", when(|c| c.api_keys = vec![sha("k-partner")])),
        deny("private", prefix("/private")),
    ]
}

#[tokio::test]
async fn api_keys_in_every_form_applications_accept_are_denied() {
    let e = env(credential_actions(), &[]).await;
    let addr = e.sc.proxy_addr;
    let cases: [(&str, &[(&str, &str)]); 8] = [
        ("/?api%6Bey=k-bad", &[]),
        ("/?APIKEY=k-bad", &[]),
        ("/?apikey[]=k-bad", &[]),
        ("/?x=1;apikey=k-bad", &[]),
        ("/?apikey=k%2Dbad", &[]),
        ("/?apikey=k-good&apikey=k-bad", &[]),
        ("/?apikey=k-bad", &[("x-api-key", "k-good")]),
        ("/", &[("x-api-key", "k-good"), ("x-api-key", "k-bad")]),
    ];
    for (target, headers) in cases {
        let got = ask(addr, "GET", target, headers).await;
        assert_eq!(got, (403, "key".into()), "{target} {headers:?}");
    }
    let fine = ask(addr, "GET", "/?apikey=k-good", &[("x-api-key", "k-good")]).await;
    assert_eq!(fine.0, 200, "the same key twice is not ambiguous");
}

#[tokio::test]
async fn tokens_in_every_form_applications_accept_are_denied() {
    let e = env(credential_actions(), &[]).await;
    let addr = e.sc.proxy_addr;
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("/", &[("authorization", "Bearer\tt-bad")]),
        ("/", &[("authorization", "bEARER \t t-bad")]),
        ("/?access_token=t-bad", &[]),
        (
            "/?access_token=t-bad",
            &[("authorization", "Bearer t-good")],
        ),
        (
            "/",
            &[
                ("authorization", "Bearer t-good"),
                ("authorization", "Bearer t-bad"),
            ],
        ),
        // What `header.split(' ')[1]` reads.
        ("/", &[("authorization", "Bearer t-bad t-good")]),
    ];
    for (target, headers) in cases {
        let got = ask(addr, "GET", target, headers).await;
        assert_eq!(got, (403, "token".into()), "{target} {headers:?}");
    }
    assert_eq!(
        ask(addr, "GET", "/", &[("authorization", "Bearer t-good")])
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn methods_as_applications_route_them_are_denied() {
    let e = env(credential_actions(), &[]).await;
    let addr = e.sc.proxy_addr;
    let cases: [Call<'_>; 5] = [
        (
            "POST",
            "/admin/users",
            &[("x-http-method-override", "DELETE")],
        ),
        ("POST", "/admin/users", &[("x-method-override", "delete")]),
        ("POST", "/admin/users", &[("x-http-method", "Delete")]),
        ("POST", "/admin/users?_method=delete", &[]),
        ("delete", "/admin/users", &[]),
    ];
    for (method, target, headers) in cases {
        let got = ask(addr, method, target, headers).await;
        assert_eq!(got, (403, "delete".into()), "{method} {target} {headers:?}");
    }
    // A HEAD runs the GET handler: a deny of GET holds for it.
    assert_eq!(ask(addr, "HEAD", "/secret", &[]).await.0, 403);
    assert_eq!(ask(addr, "GET", "/secret", &[]).await.0, 403);
    let app_sees = ask(
        addr,
        "POST",
        "/admin/users",
        &[("x-http-method-override", "PATCH")],
    )
    .await;
    assert_eq!(app_sees.0, 200, "{app_sees:?}");
    assert!(
        app_sees.1.contains(r#""x-http-method-override":["PATCH"]"#),
        "{}",
        app_sees.1
    );
}

#[tokio::test]
async fn an_allow_needs_an_unambiguous_key() {
    let e = env(credential_actions(), &[]).await;
    let addr = e.sc.proxy_addr;
    let partner = [("x-api-key", "k-partner")];
    assert_eq!(ask(addr, "GET", "/private", &partner).await.0, 200);
    let both = ask(addr, "GET", "/private?apikey=k-other", &partner).await;
    assert_eq!(both, (403, "private".into()));
    let two_lines = [("x-api-key", "k-partner"), ("x-api-key", "k-other")];
    assert_eq!(ask(addr, "GET", "/private", &two_lines).await.0, 403);
}

#[tokio::test]
async fn conflicting_credentials_are_refused_when_configured() {
    let e = env(credential_actions(), &["--reject-conflicting-credentials"]).await;
    let addr = e.sc.proxy_addr;
    let refused: [Call<'_>; 4] = [
        ("GET", "/?apikey=a", &[("x-api-key", "b")]),
        ("GET", "/?access_token=t", &[("authorization", "Bearer t")]),
        (
            "GET",
            "/",
            &[("authorization", "Bearer a"), ("authorization", "bearer b")],
        ),
        (
            "POST",
            "/?_method=PUT",
            &[("x-http-method-override", "PATCH")],
        ),
    ];
    for (method, target, headers) in refused {
        let (status, body) = ask(addr, method, target, headers).await;
        assert_eq!(status, 400, "{method} {target} {headers:?}: {body}");
    }
    let fine: [Call<'_>; 3] = [
        ("GET", "/?apikey=a", &[("x-api-key", "a")]),
        ("GET", "/?access_token=t", &[]),
        (
            "POST",
            "/?_method=PUT",
            &[("x-http-method-override", "put")],
        ),
    ];
    for (method, target, headers) in fine {
        assert_eq!(ask(addr, method, target, headers).await.0, 200, "{target}");
    }
    let m = metrics(&e.sc).await;
    assert!(
        m.contains(r#"palisade_sidecar_requests_total{verdict="error"} 4"#),
        "{m}"
    );
}

#[tokio::test]
async fn more_than_four_distinct_keys_are_always_refused() {
    let e = env(credential_actions(), &[]).await;
    let target = "/?apikey=1&apikey=2&apikey=3&apikey=4&apikey=k-bad";
    let (status, _, _) = get(e.sc.proxy_addr, target, &[]).await;
    assert_eq!(status, 400);
}
