//! Client identification against real MaxMind-format databases built by the test.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::IpAddr;

use clap::Parser;
use palisade_sidecar::config::Config;
use palisade_sidecar::identify::{Identifier, IpSource};
use support::mmdb;

fn identifier(extra: &[&str]) -> Identifier {
    let mut args = vec!["palisade-sidecar", "--upstream-port", "1"];
    args.extend_from_slice(extra);
    Identifier::new(Config::try_parse_from(args).unwrap().identify)
}

fn parts(target: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::get(target);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn region_and_asn_from_test_databases() {
    let dir = tempfile::tempdir().unwrap();
    let geo = dir.path().join("country.mmdb");
    let asn = dir.path().join("asn.mmdb");
    std::fs::write(
        &geo,
        mmdb::countries(&[("192.0.2.0", 24, "NL"), ("198.51.100.0", 24, "fr")]),
    )
    .unwrap();
    std::fs::write(
        &asn,
        mmdb::asns(&[("192.0.2.0", 25, 64500), ("203.0.113.0", 24, 64511)]),
    )
    .unwrap();
    let id = identifier(&[
        "--geoip-db",
        geo.to_str().unwrap(),
        "--asn-db",
        asn.to_str().unwrap(),
    ]);
    let p = parts("/", &[]);
    let at = |ip: &str| id.identify(&p, ip.parse::<IpAddr>().unwrap());
    assert_eq!(
        (at("192.0.2.10").region, at("192.0.2.10").asn),
        (Some(*b"NL"), Some(64500))
    );
    assert_eq!(
        (at("192.0.2.200").region, at("192.0.2.200").asn),
        (Some(*b"NL"), None)
    );
    assert_eq!(at("198.51.100.1").region, Some(*b"FR"));
    assert_eq!(
        (at("203.0.113.5").region, at("203.0.113.5").asn),
        (None, Some(64511))
    );
    assert_eq!((at("10.1.1.1").region, at("10.1.1.1").asn), (None, None));
    assert_eq!(at("2001:db8::1").region, None);
}

#[test]
fn absent_database_never_matches() {
    let id = identifier(&["--geoip-db", "/nonexistent/country.mmdb"]);
    let who = id.identify(&parts("/", &[]), "192.0.2.1".parse().unwrap());
    assert_eq!((who.region, who.asn), (None, None));
}

#[test]
fn keys_tokens_and_claims() {
    let id = identifier(&[
        "--trusted-proxies",
        "10.0.0.0/8",
        "--developer-claim",
        "sub",
        "--product-claim",
        "prd",
        // An unsigned test token: read as a verifying gateway would have passed it on.
        "--jwt-unverified",
    ]);
    let payload = base64url(r#"{"sub":"dev-7","prd":"gold"}"#);
    let auth = format!("Bearer h.{payload}.s");
    let p = parts(
        "/x?apikey=query-key",
        &[
            ("authorization", &auth),
            ("x-forwarded-for", "203.0.113.4"),
            ("x-developer-app", "app-1"),
        ],
    );
    let who = id.identify(&p, "10.0.0.1".parse().unwrap());
    assert_eq!(
        (who.ip.to_string(), who.ip_source),
        ("203.0.113.4".to_owned(), IpSource::Xff)
    );
    assert_eq!(who.api_key_hash, Some(sha("query-key")));
    assert_eq!(who.token_hash, Some(sha(&format!("h.{payload}.s"))));
    assert_eq!(who.developer.as_deref(), Some("dev-7"));
    assert_eq!(who.product.as_deref(), Some("gold"));
    assert_eq!(who.app.as_deref(), Some("app-1"));
    let header_wins = parts(
        "/x?apikey=query-key",
        &[("x-api-key", "header-key"), ("x-developer", "dev-h")],
    );
    let who = id.identify(&header_wins, "10.0.0.1".parse().unwrap());
    assert_eq!(who.api_key_hash, Some(sha("header-key")));
    assert_eq!(who.developer.as_deref(), Some("dev-h"));
    assert_eq!(who.ip_source, IpSource::Socket);
    // From a peer that is not a trusted proxy: its X-Forwarded-For and identity headers are
    // ignored (and counted), the claim is used instead of the header.
    let forged = parts(
        "/x",
        &[
            ("authorization", &auth),
            ("x-forwarded-for", "203.0.113.4"),
            ("x-developer", "dev-h"),
            ("x-developer-app", "app-1"),
        ],
    );
    let who = id.identify(&forged, "192.0.2.1".parse().unwrap());
    assert_eq!(
        (who.ip.to_string(), who.ip_source),
        ("192.0.2.1".to_owned(), IpSource::XffUntrustedPeer)
    );
    assert_eq!(who.developer.as_deref(), Some("dev-7"));
    assert_eq!(who.app, None);
    let ignored: Vec<_> = who.ignored_headers.kinds().collect();
    assert_eq!(ignored, ["developer", "app"]);
}

fn sha(s: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).into()
}

fn base64url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
