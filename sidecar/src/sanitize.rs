//! What a client may not send on to the application: runs on every request head before the
//! sidecar reads or adds anything. Its hop-by-hop headers (RFC 9110 §7.6.1: the fixed list and
//! every header its `Connection` names) are removed first, so the sidecar identifies the client
//! from exactly the headers the application will see, and no header the sidecar adds afterwards
//! (flag headers, `X-Forwarded-*`) can be named by the client's `Connection` and dropped. Then
//! every header in the sidecar's reserved namespace (`x-palisade-*`, `palisade-*`) is removed,
//! so a client cannot hand the application a flag the sidecar did not set. (Flag headers with
//! other names are removed by `enforce`, which knows the bundle's flag names.)

use http::Request;
use http::header::{self, HeaderMap, HeaderName};

use crate::forward;

/// Name prefixes reserved for headers the sidecar sets; never forwarded from a client.
pub const RESERVED_PREFIXES: [&str; 2] = ["x-palisade-", "palisade-"];

/// Removes the client's hop-by-hop headers. A WebSocket upgrade request keeps (only)
/// `Connection: upgrade` and its `Upgrade`, which the forwarder needs to open the tunnel.
pub fn strip_client_hop_by_hop<B>(req: &mut Request<B>) {
    let upgrade = forward::upgrade_protocol(req);
    forward::strip_hop_by_hop(req.headers_mut());
    if let Some(proto) = upgrade {
        let headers = req.headers_mut();
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        headers.insert(header::UPGRADE, proto);
    }
}

/// Whether `name` is in the sidecar's reserved namespace (names are lower case in a
/// `HeaderMap`).
pub fn is_reserved(name: &HeaderName) -> bool {
    RESERVED_PREFIXES
        .iter()
        .any(|p| name.as_str().starts_with(p))
}

/// Removes every header in the reserved namespace. One pass over the names finds them, so a
/// request without any (the common one) costs no allocation.
pub fn strip_reserved(headers: &mut HeaderMap) {
    if !headers.keys().any(is_reserved) {
        return;
    }
    let found: Vec<HeaderName> = headers.keys().filter(|n| is_reserved(n)).cloned().collect();
    for name in found {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/");
        for (k, v) in pairs {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    fn names(req: &Request<()>) -> Vec<&str> {
        req.headers().keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn connection_named_headers_go_before_anything_is_added() {
        let mut req = request(&[
            ("connection", "X-Palisade-Flag, x-api-key"),
            ("x-api-key", "k"),
            ("host", "api"),
        ]);
        strip_client_hop_by_hop(&mut req);
        assert_eq!(names(&req), ["host"]);
    }

    #[test]
    fn an_upgrade_keeps_only_what_the_tunnel_needs() {
        let mut req = request(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
        ]);
        strip_client_hop_by_hop(&mut req);
        assert_eq!(names(&req), ["connection", "upgrade"]);
        assert_eq!(req.headers()["connection"], "upgrade");
        assert_eq!(req.headers()["upgrade"], "websocket");
    }

    #[test]
    fn reserved_names_are_removed_and_others_kept() {
        let mut h = HeaderMap::new();
        for name in [
            "x-palisade-flag",
            "X-Palisade-Action",
            "palisade-decision",
            "x-palis",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_static("fake"),
            );
        }
        h.append(
            "x-palisade-flag",
            http::HeaderValue::from_static("second line"),
        );
        strip_reserved(&mut h);
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["x-palis"]
        );
        let mut clean = HeaderMap::new();
        clean.insert("x-api-key", http::HeaderValue::from_static("k"));
        let before = clean.clone();
        strip_reserved(&mut clean);
        assert_eq!(clean, before);
    }
}
