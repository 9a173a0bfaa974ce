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

use crate::support::bundle::{allow, deny, when, write, write_raw};
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

// ---- JWT claims: believed only from a token whose signature verifies ----

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key made by the test, and its public JWK.
struct Signer {
    alg: Algorithm,
    kid: &'static str,
    pkcs8: Vec<u8>,
    jwk: serde_json::Value,
}

fn es256(kid: &'static str) -> Signer {
    let rng = ring::rand::SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let public = pair.public_key().as_ref(); // 0x04 || x || y
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
        "alg": "ES256", "x": b64(&public[1..33]), "y": b64(&public[33..])});
    Signer {
        alg: Algorithm::ES256,
        kid,
        pkcs8: pkcs8.as_ref().to_vec(),
        jwk,
    }
}

fn ed25519(kid: &'static str) -> Signer {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
        "x": b64(pair.public_key().as_ref())});
    Signer {
        alg: Algorithm::EdDSA,
        kid,
        pkcs8: pkcs8.as_ref().to_vec(),
        jwk,
    }
}

impl Signer {
    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_owned());
        let key = match self.alg {
            Algorithm::EdDSA => EncodingKey::from_ed_der(&self.pkcs8),
            _ => EncodingKey::from_ec_der(&self.pkcs8),
        };
        encode(&header, claims, &key).unwrap()
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({"sub": sub, "exp": now() + 600})
}

fn write_jwks(path: &std::path::Path, keys: &[&Signer]) {
    let doc = serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    // Written aside and renamed, as the kubelet swaps a mounted Secret.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `/admin` is denied unless the developer is alice.
async fn as_bearer(addr: std::net::SocketAddr, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    get(addr, "/admin", &[("authorization", &auth)]).await.0
}

#[tokio::test]
async fn jwt_claims_count_only_from_a_verified_signature() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let key = es256("k1");
    write_jwks(&jwks, &[&key]);
    let path = jwks.to_str().unwrap().to_owned();
    let extra = ["--developer-claim", "sub", "--jwks-path", &path];
    let (sc, _d) = sidecar_with(developer_allow_over_admin_deny(), false, &extra).await;
    let a = sc.proxy_addr;
    assert_eq!(
        as_bearer(a, &key.sign(&claims("alice"))).await,
        200,
        "verified"
    );

    let mallory = es256("k1"); // another key under the same kid
    let header = |json: &str| b64(json.as_bytes());
    let payload = b64(claims("alice").to_string().as_bytes());
    let real = key.sign(&claims("bob"));
    let real_sig = real.rsplit('.').next().unwrap();
    let hs256 = {
        // The public key's bytes as an HMAC secret: the algorithm-confusion attack.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let secret = key.jwk["x"].as_str().unwrap().as_bytes().to_vec();
        encode(&h, &claims("alice"), &EncodingKey::from_secret(&secret)).unwrap()
    };
    let expired = key.sign(&serde_json::json!({"sub": "alice", "exp": now() - 3600}));
    let early = key.sign(&serde_json::json!({"sub": "alice", "exp": now() + 7200,
        "nbf": now() + 3600}));
    let no_exp = key.sign(&serde_json::json!({"sub": "alice"}));
    let forged = [
        ("another key", mallory.sign(&claims("alice"))),
        (
            "alg none",
            format!("{}.{payload}.", header(r#"{"alg":"none","typ":"JWT"}"#)),
        ),
        (
            "no signature",
            format!("{}.{payload}.", header(r#"{"alg":"ES256","kid":"k1"}"#)),
        ),
        (
            "payload swapped",
            format!(
                "{}.{payload}.{real_sig}",
                header(r#"{"alg":"ES256","kid":"k1"}"#)
            ),
        ),
        ("HS256 with the public key", hs256),
        ("expired", expired),
        ("not yet valid", early),
        ("no exp", no_exp),
        ("unknown kid", {
            let mut s = es256("k2");
            s.pkcs8 = key.pkcs8.clone();
            s.sign(&claims("alice"))
        }),
    ];
    for (what, token) in &forged {
        assert_eq!(as_bearer(a, token).await, 403, "{what}");
    }
    let m = metrics(&sc).await;
    for want in [
        "palisade_sidecar_jwt_mode{mode=\"verified\"} 1",
        "palisade_sidecar_jwt_mode{mode=\"unverified\"} 0",
        "palisade_sidecar_jwks_keys 1",
        "palisade_sidecar_jwt_claims_total{outcome=\"verified\"} 1",
        "palisade_sidecar_jwt_claims_total{outcome=\"signature\"} 3",
        "palisade_sidecar_jwt_claims_total{outcome=\"malformed\"} 1",
        "palisade_sidecar_jwt_claims_total{outcome=\"algorithm\"} 1",
        "palisade_sidecar_jwt_claims_total{outcome=\"expired\"} 1",
        "palisade_sidecar_jwt_claims_total{outcome=\"not_yet_valid\"} 1",
        "palisade_sidecar_jwt_claims_total{outcome=\"claims\"} 1",
        "palisade_sidecar_jwt_claims_total{outcome=\"unknown_key\"} 1",
    ] {
        assert!(m.contains(want), "no `{want}` in\n{m}");
    }
    sc.shutdown().await;
}

#[tokio::test]
async fn a_rotated_jwks_is_picked_up_and_issuer_and_audience_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let old = es256("old");
    write_jwks(&jwks, &[&old]);
    let path = jwks.to_str().unwrap().to_owned();
    let extra = [
        "--developer-claim",
        "sub",
        "--jwks-path",
        &path,
        "--jwt-algorithms",
        "ES256,EdDSA",
        "--jwt-issuer",
        "https://id.example",
        "--jwt-audience",
        "shop-api",
    ];
    let (sc, _d) = sidecar_with(developer_allow_over_admin_deny(), false, &extra).await;
    let a = sc.proxy_addr;
    let good = |sub: &str| {
        serde_json::json!({"sub": sub, "exp": now() + 600,
        "iss": "https://id.example", "aud": ["other", "shop-api"]})
    };
    assert_eq!(as_bearer(a, &old.sign(&good("alice"))).await, 200);
    let mut wrong_iss = good("alice");
    wrong_iss["iss"] = "https://evil.example".into();
    assert_eq!(as_bearer(a, &old.sign(&wrong_iss)).await, 403, "issuer");
    let mut wrong_aud = good("alice");
    wrong_aud["aud"] = "other".into();
    assert_eq!(as_bearer(a, &old.sign(&wrong_aud)).await, 403, "audience");
    let mut no_aud = good("alice");
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(as_bearer(a, &old.sign(&no_aud)).await, 403, "no audience");

    // Rotation: the old key leaves, an Ed25519 key arrives; the sidecar re-reads the file.
    let new = ed25519("new");
    write_jwks(&jwks, &[&new]);
    while as_bearer(a, &new.sign(&good("alice"))).await != 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        as_bearer(a, &old.sign(&good("alice"))).await,
        403,
        "old key gone"
    );
    // A broken file keeps the keys in force, and is counted.
    std::fs::write(&jwks, "{not json").unwrap();
    while !metrics(&sc)
        .await
        .contains("palisade_sidecar_jwks_load_errors_total{reason=\"Format\"}")
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        as_bearer(a, &new.sign(&good("alice"))).await,
        200,
        "last good keys"
    );
    sc.shutdown().await;
}

#[tokio::test]
async fn unverified_claims_need_an_explicit_mode_that_says_so() {
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims("alice").to_string().as_bytes())
    );
    // Claims configured, no JWKS, no --jwt-unverified: never read.
    let (off, _d1) = sidecar_with(
        developer_allow_over_admin_deny(),
        false,
        &["--developer-claim", "sub"],
    )
    .await;
    assert_eq!(as_bearer(off.proxy_addr, &unsigned).await, 403);
    assert!(
        metrics(&off)
            .await
            .contains("palisade_sidecar_jwt_mode{mode=\"off\"} 1")
    );
    // --jwt-unverified: today's gateway-behind behaviour, named in the metrics.
    let extra = ["--developer-claim", "sub", "--jwt-unverified"];
    let (unverified, _d2) = sidecar_with(developer_allow_over_admin_deny(), false, &extra).await;
    assert_eq!(as_bearer(unverified.proxy_addr, &unsigned).await, 200);
    let m = metrics(&unverified).await;
    assert!(
        m.contains("palisade_sidecar_jwt_mode{mode=\"unverified\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("palisade_sidecar_jwt_claims_total{outcome=\"unverified\"} 1"),
        "{m}"
    );
    off.shutdown().await;
    unverified.shutdown().await;
}

// ---- The namespace's trusted proxies, carried in the bundle, replace the flag ----

/// Writes a bundle of `actions` whose namespace trusts `trusted` (None: no annotation).
fn write_with_trust(
    dir: &std::path::Path,
    actions: Vec<ActionSpec>,
    trusted: Option<&str>,
) -> String {
    let inputs = palisade_policy::Inputs {
        generation: 1,
        actions,
        trusted_proxies: trusted.map(|t| palisade_policy::TrustedProxies::parse(t).unwrap()),
        ..Default::default()
    };
    let out = palisade_policy::compile(&inputs, jiff::Timestamp::now());
    let encoded = palisade_policy::encode(&out.bundle).unwrap();
    let manifest = encoded.manifest.to_json();
    write_raw(dir, &manifest, &encoded.shards);
    encoded.manifest.bundle_hash
}

#[tokio::test]
async fn the_namespace_annotation_replaces_the_trusted_proxies_flag() {
    let deny_range = || {
        vec![deny(
            "bad-range",
            when(|c| c.ip_ranges = vec!["192.0.2.0/24".into()]),
        )]
    };
    for (flag, namespace, trusted) in [
        (None, Some("127.0.0.0/8"), true),
        (Some("127.0.0.0/8"), Some(""), false),
        (Some("127.0.0.0/8"), Some("10.0.0.0/8"), false),
        (Some("127.0.0.0/8"), None, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let hash = write_with_trust(dir.path(), deny_range(), namespace);
        let path = dir.path().to_str().unwrap().to_owned();
        let mut args = vec!["--bundle-path", &path, "--bundle-poll", "20ms"];
        if let Some(f) = flag {
            args.extend(["--trusted-proxies", f]);
        }
        let sc = sidecar(echo_app().await, &args).await;
        wait_for_bundle(&sc, &hash).await;
        let want = if trusted { 403 } else { 200 };
        let (status, _) = get_xff(sc.proxy_addr, b"192.0.2.7").await;
        assert_eq!(status, want, "flag {flag:?}, namespace {namespace:?}");
        sc.shutdown().await;
    }
}
