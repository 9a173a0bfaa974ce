//! The routes of the demo API, one function per route and one dispatcher.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

/// Response body type of every route.
pub type Body = Full<Bytes>;

/// Size of every `/static/<file>` body.
pub const STATIC_BYTES: usize = 64 * 1024;

/// Longest request body the API reads (login and token forms are tiny).
const MAX_BODY: usize = 16 * 1024;

/// Dispatches a request to its route.
pub async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/") => json_response(StatusCode::OK, &hello()),
        (&Method::GET, "/healthz") => text_response(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/headers") => json_response(StatusCode::OK, &headers(&req)),
        (&Method::POST, "/login") => login(read_body(req).await),
        (&Method::POST, "/oauth/token") => token(read_body(req).await),
        (&Method::GET, p) if p.starts_with("/static/") && p.len() > "/static/".len() => {
            static_file()
        }
        (_, "/" | "/healthz" | "/headers" | "/login" | "/oauth/token") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method not allowed"}),
        ),
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    };
    Ok(resp)
}

fn hello() -> Value {
    json!({
        "service": "palisade-demo-api",
        "message": "hello from the demo API",
        "routes": ["GET /", "GET /headers", "POST /login", "POST /oauth/token",
                   "GET /static/<file>", "GET /healthz"],
    })
}

/// Every header the API received, as a JSON object (repeated headers joined with `, `).
pub fn headers<B>(req: &Request<B>) -> Value {
    let mut out = serde_json::Map::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str())
            .and_modify(|e| {
                if let Value::String(s) = e {
                    s.push_str(", ");
                    s.push_str(&v);
                }
            })
            .or_insert(Value::String(v));
    }
    json!({ "method": req.method().as_str(), "path": req.uri().path(), "headers": out })
}

async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    limited.collect().await.ok().map(|c| c.to_bytes())
}

/// The credentials, from a JSON body (`{"username":..,"password":..}`) or a form body.
pub fn credentials(body: &[u8]) -> (String, String) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        return (field("username"), field("password"));
    }
    let text = String::from_utf8_lossy(body);
    let mut user = String::new();
    let mut pass = String::new();
    for pair in text.trim().split('&') {
        match pair.split_once('=') {
            Some(("username", v)) => v.clone_into(&mut user),
            Some(("password", v)) => v.clone_into(&mut pass),
            _ => {}
        }
    }
    (user, pass)
}

fn login(body: Option<Bytes>) -> Response<Body> {
    let Some(body) = body else {
        return json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": "too large"}),
        );
    };
    match credentials(&body) {
        (u, p) if u == "demo" && p == "demo" => {
            json_response(StatusCode::OK, &json!({"login": "ok", "user": "demo"}))
        }
        _ => json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid username or password"}),
        ),
    }
}

fn token(body: Option<Bytes>) -> Response<Body> {
    if body.is_none() {
        return json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": "too large"}),
        );
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": format!("demo-{secs:x}"),
            "token_type": "Bearer",
            "expires_in": 3600,
        }),
    )
}

fn static_file() -> Response<Body> {
    static CONTENT: [u8; STATIC_BYTES] = [b'.'; STATIC_BYTES];
    text_response(
        StatusCode::OK,
        "application/octet-stream",
        Bytes::from_static(&CONTENT),
    )
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut text = v.to_string();
    text.push('\n');
    text_response(status, "application/json", text)
}

fn text_response(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_json_and_form() {
        let json = br#"{"username":"demo","password":"demo"}"#;
        assert_eq!(credentials(json), ("demo".into(), "demo".into()));
        assert_eq!(
            credentials(b"username=demo&password=nope"),
            ("demo".into(), "nope".into())
        );
        assert_eq!(credentials(b""), (String::new(), String::new()));
    }

    #[test]
    fn login_accepts_only_demo_demo() {
        let ok = login(Some(Bytes::from_static(b"username=demo&password=demo")));
        assert_eq!(ok.status(), StatusCode::OK);
        let bad = login(Some(Bytes::from_static(b"username=demo&password=x")));
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn headers_are_echoed_and_repeats_joined() {
        let req = Request::builder()
            .uri("/headers")
            .header("apisec", "flag")
            .header("x-forwarded-for", "127.0.0.2")
            .header("x-forwarded-for", "127.0.0.3")
            .body(())
            .expect("request");
        let v = headers(&req);
        assert_eq!(v["headers"]["apisec"], "flag");
        assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.2, 127.0.0.3");
    }

    #[test]
    fn static_body_is_64_kib() {
        let resp = static_file();
        let len = hyper::body::Body::size_hint(resp.body()).exact();
        assert_eq!(len, Some(STATIC_BYTES as u64));
    }
}
