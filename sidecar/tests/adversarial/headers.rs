//! Headers a hostile client sends to remove, forge or disguise what the sidecar reads and adds:
//! `Connection` naming a flag header, forged `x-palisade-*` headers, and API keys, tokens and
//! methods written the way applications accept them but the sidecar once did not.

use std::net::SocketAddr;

use palisade_policy::{ActionSpec, PathMatch};

use crate::support::bundle::{flag, when, write};
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
