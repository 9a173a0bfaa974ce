//! `identify_headers`: who the sidecar thinks the client is, from headers and a URI the
//! client chose (sidecar/src/identify.rs, sidecar/src/client_ip.rs). Input layout:
//!
//! ```text
//! byte 0       configuration: bits 0-1 the trusted proxies (TRUSTED), bit 2 developer/app/
//!              product also read from JWT claims (sub, azp, scope; --jwt-unverified), bits 3-4 --trusted-hops,
//!              bit 5 --reject-conflicting-credentials
//! byte 1       the socket peer, an index into PEERS
//! then lines (\n): `[METHOD ]target` (path and query; GET by default), then `name: value`
//! headers
//! ```
//!
//! A header line that is not a valid header (name or value) is dropped, as hyper refuses such
//! a request before the sidecar sees it; a target that is not a valid URI becomes `/`.
//!
//! Properties: identification is deterministic and the client IP canonical; from a peer that
//! is not a trusted proxy the client is the peer and identity headers are ignored (and
//! reported as ignored); what the client adds to the left of `X-Forwarded-For` never changes
//! an address found at an untrusted hop or an invalid entry; a token, an API key or a
//! developer is never made up (each needs the header, query or claim that carries it); the
//! credential readings are bounded, start with the request's own method (and GET for HEAD),
//! name the first key and token as *the* ones, refuse what they say they refuse, and a value
//! repeated in a second header line is the same candidate.

use std::net::IpAddr;
use std::sync::OnceLock;

use clap::Parser;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use palisade_policy::TrustedProxies;
use palisade_sidecar::client_ip::client_ip;
use palisade_sidecar::config::IdentifyConfig;
use palisade_sidecar::credentials::{CredentialError, MAX_CANDIDATES};
use palisade_sidecar::identify::{Identifier, Identity, IpSource};

/// Socket peers the input picks from: loopback, private, public, both families, and an
/// IPv4-mapped IPv6 address.
pub const PEERS: [&str; 6] = [
    "127.0.0.1",
    "10.1.2.3",
    "198.51.100.7",
    "::1",
    "2001:db8::5",
    "::ffff:10.1.2.3",
];

/// `--trusted-proxies` the input picks from: no one, a private range, several ranges of both
/// families, everyone.
pub const TRUSTED: [&str; 4] = [
    "",
    "10.0.0.0/8",
    "127.0.0.0/8,10.0.0.0/8,2001:db8::/32",
    "0.0.0.0/0,::/0",
];

/// What a client prepends to `X-Forwarded-For` to choose its address.
const FORGED: &str = "not-an-address, 203.0.113.66, 10.9.9.9";

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Headers that reached the sidecar.
    pub headers: usize,
    /// Where the client IP came from.
    pub ip_source: IpSource,
    /// A bearer token was read.
    pub token: bool,
    /// An API key was read.
    pub api_key: bool,
    /// A developer was read (header or claim).
    pub developer: bool,
    /// An identity header was ignored (the peer is not a trusted proxy).
    pub ignored: bool,
    /// The readings of the request (1 when it is unambiguous).
    pub readings: usize,
    /// Refused for its credentials (400), with the reason.
    pub refused: Option<&'static str>,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    identify: IdentifyConfig,
}

/// The configuration of `bits` (0-63), parsed with the sidecar's own flags.
fn config(bits: u8) -> IdentifyConfig {
    let trusted = format!("--trusted-proxies={}", TRUSTED[usize::from(bits & 3)]);
    let hops = format!("--trusted-hops={}", (bits >> 3) & 3);
    let mut argv = vec!["fuzz".to_string(), trusted, hops];
    if bits & 32 != 0 {
        argv.push("--reject-conflicting-credentials".into());
    }
    if bits & 4 != 0 {
        argv.extend(
            [
                "--developer-claim=sub",
                "--app-claim=azp",
                "--product-claim=scope",
                "--jwt-unverified",
            ]
            .map(String::from),
        );
    }
    let args = Args::try_parse_from(argv).unwrap_or_else(|e| panic!("fuzz config: {e}"));
    args.identify
}

/// The identifier of configuration `bits`, built once.
fn identifier(bits: u8) -> &'static Identifier {
    static IDS: [OnceLock<Identifier>; 64] = [const { OnceLock::new() }; 64];
    IDS[usize::from(bits & 63)].get_or_init(|| Identifier::new(config(bits)))
}

/// The target: identifies the client of the request made from `data`. Panics when a
/// property fails.
pub fn identify_headers(data: &[u8]) -> Outcome {
    let (bits, peer, text) = match data {
        [bits, peer, text @ ..] => (*bits & 63, usize::from(*peer), text),
        _ => (0, 0, &[][..]),
    };
    let peer: IpAddr = PEERS[peer % PEERS.len()]
        .parse()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let parts = request(text).into_parts().0;
    let id = identifier(bits);
    let who = id.identify(&parts, peer);
    assert_eq!(
        id.identify(&parts, peer),
        who,
        "identify is not deterministic"
    );
    let cfg = config(bits);
    check_ip(&parts.headers, peer, &cfg.trusted_proxies, cfg.trusted_hops);
    check_identity(
        &who,
        &parts,
        cfg.trusted_proxies.contains(peer),
        bits & 4 != 0,
    );
    check_credentials(&who, &parts, bits & 32 != 0);
    check_duplicate_key(id, &parts, peer, &who);
    Outcome {
        headers: parts.headers.len(),
        ip_source: who.ip_source,
        token: who.token_hash.is_some(),
        api_key: who.api_key_hash.is_some(),
        developer: who.developer.is_some(),
        ignored: who.ignored_headers.kinds().next().is_some(),
        readings: who.credentials.readings(),
        refused: who.credentials.refused.map(|e| e.reason()),
    }
}

/// The client IP's properties, and that a forged left part of X-Forwarded-For changes
/// nothing the walk already decided.
fn check_ip(h: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies, hops: usize) {
    let (ip, source) = client_ip(h, peer, trusted, hops);
    assert_eq!(ip, ip.to_canonical(), "client IP {ip} not canonical");
    let has_xff = h.contains_key("x-forwarded-for");
    if !trusted.contains(peer) {
        assert_eq!(ip, peer.to_canonical(), "an untrusted peer chose its IP");
        let want = if has_xff {
            IpSource::XffUntrustedPeer
        } else {
            IpSource::Socket
        };
        assert_eq!(source, want, "source from an untrusted peer");
    }
    if source == IpSource::Socket {
        assert_eq!(ip, peer.to_canonical(), "socket source but not the peer");
    }
    if matches!(source, IpSource::Xff | IpSource::XffInvalid) {
        assert!(
            has_xff && trusted.contains(peer),
            "{source:?} without a trusted XFF"
        );
    }
    let decided = !trusted.contains(peer)
        || source == IpSource::XffInvalid
        || (source == IpSource::Xff && !trusted.contains(ip));
    if decided {
        let mut forged = HeaderMap::new();
        forged.append("x-forwarded-for", HeaderValue::from_static(FORGED));
        for (name, value) in h {
            forged.append(name, value.clone());
        }
        let (again, _) = client_ip(&forged, peer, trusted, hops);
        assert_eq!(
            again, ip,
            "a client-chosen left part of X-Forwarded-For moved the client"
        );
    }
}

fn check_identity(who: &Identity, parts: &Parts, trusted_peer: bool, claims_on: bool) {
    let h = &parts.headers;
    if who.token_hash.is_some() {
        // Authorization, or the RFC 6750 access_token query parameter.
        assert!(
            h.contains_key(http::header::AUTHORIZATION) || parts.uri.query().is_some(),
            "token from nowhere"
        );
    }
    if who.api_key_hash.is_some() {
        assert!(
            h.contains_key("x-api-key") || parts.uri.query().is_some(),
            "API key from nowhere"
        );
    }
    let claims = claims_on && who.token_hash.is_some();
    let ignored = who.ignored_headers;
    for (value, header, was_ignored) in [
        (&who.developer, "x-developer", ignored.developer),
        (&who.app, "x-developer-app", ignored.app),
        (&who.product, "x-api-product", ignored.product),
    ] {
        let sent = h
            .get(header)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty());
        if trusted_peer {
            assert!(!was_ignored, "{header} ignored from a trusted proxy");
        } else {
            assert_eq!(
                was_ignored, sent,
                "{header} sent by an untrusted peer, not reported"
            );
        }
        if value.is_some() && !claims {
            assert!(
                trusted_peer && sent,
                "{header} believed from an untrusted peer"
            );
        }
    }
}

/// What the credential readings promise (sidecar/src/credentials.rs).
fn check_credentials(who: &Identity, parts: &Parts, reject_conflicting: bool) {
    let c = &who.credentials;
    assert_eq!(
        who.api_key_hash.as_ref(),
        c.api_keys.first(),
        "the API key is not the first"
    );
    assert_eq!(
        who.token_hash.as_ref(),
        c.tokens.first(),
        "the token is not the first"
    );
    let own = parts.method.as_str().to_ascii_uppercase();
    assert_eq!(
        c.methods.first().map(Method::as_str),
        Some(own.as_str()),
        "own method first"
    );
    if parts.method == Method::HEAD {
        assert!(
            c.methods.iter().any(|m| *m == Method::GET),
            "HEAD not also read as GET"
        );
    }
    for m in c.methods.iter() {
        assert!(
            !m.as_str().bytes().any(|b| b.is_ascii_lowercase()),
            "method {m} not upper"
        );
    }
    for (len, over) in [
        (c.api_keys.len(), c.api_keys.overflowed()),
        (c.tokens.len(), c.tokens.overflowed()),
        (c.methods.len(), c.methods.overflowed()),
    ] {
        assert!(len <= MAX_CANDIDATES, "{len} candidates kept");
        if over {
            assert!(
                matches!(c.refused, Some(CredentialError::TooMany(_))),
                "too many candidates but not refused: {:?}",
                c.refused
            );
        }
    }
    match c.refused {
        Some(CredentialError::Conflicting(_)) => {
            assert!(reject_conflicting, "conflict refused without the flag");
        }
        None if reject_conflicting => {
            assert!(c.api_keys.len() <= 1, "two API keys let through");
            assert!(c.tokens.len() <= 1, "two tokens let through");
        }
        _ => {}
    }
}

/// The first API key header value sent again on a second line is the same candidate.
fn check_duplicate_key(id: &Identifier, parts: &Parts, peer: IpAddr, who: &Identity) {
    let Some(first) = parts.headers.get("x-api-key").cloned() else {
        return;
    };
    let mut again = Request::new(());
    *again.method_mut() = parts.method.clone();
    *again.uri_mut() = parts.uri.clone();
    *again.headers_mut() = parts.headers.clone();
    again.headers_mut().append("x-api-key", first);
    let twice = id.identify(&again.into_parts().0, peer);
    assert_eq!(
        twice.credentials.api_keys, who.credentials.api_keys,
        "a repeated key counted twice"
    );
}

/// The request the input describes (see the module docs).
fn request(text: &[u8]) -> Request<()> {
    let mut lines = text.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(space) => (
            Method::from_bytes(&first[..space]).unwrap_or(Method::GET),
            &first[space + 1..],
        ),
        None => (Method::GET, first),
    };
    let uri = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
    let mut req = Request::new(());
    *req.uri_mut() = uri;
    *req.method_mut() = method;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            req.headers_mut().append(name, value);
        }
    }
    req
}
