//! `identify_headers`: who the sidecar thinks the client is, from headers and a URI the
//! client chose (sidecar/src/identify.rs). Input layout:
//!
//! ```text
//! byte 0       configuration: bits 0-1 trusted hops (0-3), bit 2 developer/app/product
//!              read from JWT claims (sub, azp, scope), bit 3 the private and loopback peers
//!              are trusted proxies ([`TRUSTED`])
//! byte 1       the socket peer, an index into PEERS
//! then lines (\n): the request target (path and query), then `name: value` headers
//! ```
//!
//! A header line that is not a valid header (name or value) is dropped, as hyper refuses such
//! a request before the sidecar sees it; a target that is not a valid URI becomes `/`.
//!
//! Properties: identification is deterministic; from a peer that is not a trusted proxy the
//! client IP is the socket peer and no identity header is read; `X-Forwarded-For` is used only
//! from a trusted proxy and yields a canonical address; a token, an API key or a developer is
//! never made up (each needs the header or query that carries it); a query parameter found is
//! never empty.

use std::net::IpAddr;
use std::sync::OnceLock;

use clap::Parser;
use http::{HeaderName, HeaderValue, Request, Uri};
use palisade_policy::TrustedProxies;
use palisade_sidecar::client_ip::client_ip;
use palisade_sidecar::config::IdentifyConfig;
use palisade_sidecar::identify::{Identifier, Identity, IpSource, query_param};

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

/// The trusted proxies of configuration bit 3: the private and loopback [`PEERS`].
pub const TRUSTED: &str = "127.0.0.0/8,10.0.0.0/8,::1/128";

fn trusted(bits: u8) -> TrustedProxies {
    let list = if bits & 8 != 0 { TRUSTED } else { "" };
    TrustedProxies::parse(list).unwrap_or_default()
}

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Headers that reached the sidecar.
    pub headers: usize,
    /// The client IP came from `X-Forwarded-For`.
    pub from_xff: bool,
    /// A bearer token was read.
    pub token: bool,
    /// An API key was read.
    pub api_key: bool,
    /// A developer was read (header or claim).
    pub developer: bool,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    identify: IdentifyConfig,
}

/// The identifier of configuration `bits` (0-15), built once.
fn identifier(bits: u8) -> &'static Identifier {
    static IDS: [OnceLock<Identifier>; 16] = [const { OnceLock::new() }; 16];
    IDS[usize::from(bits & 15)].get_or_init(|| {
        let hops = (bits & 3).to_string();
        let trusted = if bits & 8 != 0 { TRUSTED } else { "" };
        let mut argv = vec![
            "fuzz",
            "--trusted-hops",
            &hops,
            "--trusted-proxies",
            trusted,
        ];
        if bits & 4 != 0 {
            argv.extend([
                "--developer-claim=sub",
                "--app-claim=azp",
                "--product-claim=scope",
            ]);
        }
        let args = Args::try_parse_from(argv).unwrap_or_else(|e| panic!("fuzz config: {e}"));
        Identifier::new(args.identify)
    })
}

/// The target: identifies the client of the request made from `data`. Panics when a
/// property fails.
pub fn identify_headers(data: &[u8]) -> Outcome {
    let (bits, peer, text) = match data {
        [bits, peer, text @ ..] => (*bits & 15, usize::from(*peer), text),
        _ => (0, 0, &[][..]),
    };
    let peer: IpAddr = PEERS[peer % PEERS.len()]
        .parse()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let parts = request(text).into_parts().0;
    let id = identifier(bits);
    let who = id.identify(&parts, peer);
    check(&who, &parts, peer, bits);
    assert_eq!(
        id.identify(&parts, peer),
        who,
        "identify is not deterministic"
    );
    let trust = trusted(bits);
    for hops in 0..4 {
        let (ip, source) = client_ip(&parts.headers, peer, &trust, hops);
        if !trust.contains(peer) {
            assert_eq!(
                ip,
                peer.to_canonical(),
                "an untrusted peer is not the client"
            );
        }
        if matches!(source, IpSource::Socket | IpSource::XffUntrustedPeer) {
            assert_eq!(ip, peer.to_canonical(), "socket source but not the peer");
        }
    }
    for name in ["apikey", "key", "access_token", ""] {
        if let Some(v) = query_param(parts.uri.query(), name) {
            assert!(!v.is_empty(), "empty query parameter {name:?} found");
        }
    }
    Outcome {
        headers: parts.headers.len(),
        from_xff: who.ip_source == IpSource::Xff,
        token: who.token_hash.is_some(),
        api_key: who.api_key_hash.is_some(),
        developer: who.developer.is_some(),
    }
}

fn check(who: &Identity, parts: &http::request::Parts, peer: IpAddr, bits: u8) {
    let h = &parts.headers;
    let trusted_peer = trusted(bits).contains(peer);
    match who.ip_source {
        IpSource::Socket | IpSource::XffUntrustedPeer => {
            assert_eq!(
                who.ip,
                peer.to_canonical(),
                "socket source but not the peer"
            );
        }
        IpSource::Xff | IpSource::XffInvalid => {
            assert!(trusted_peer, "X-Forwarded-For used from an untrusted peer");
            assert!(h.contains_key("x-forwarded-for"), "XFF source without XFF");
            assert_eq!(who.ip, who.ip.to_canonical(), "XFF address not canonical");
        }
    }
    if who.token_hash.is_some() {
        assert!(
            h.contains_key(http::header::AUTHORIZATION),
            "token from nowhere"
        );
    }
    if who.api_key_hash.is_some() {
        assert!(
            h.contains_key("x-api-key") || parts.uri.query().is_some(),
            "API key from nowhere"
        );
    }
    let claims = bits & 4 != 0 && who.token_hash.is_some();
    for (value, header) in [
        (&who.developer, "x-developer"),
        (&who.app, "x-developer-app"),
        (&who.product, "x-api-product"),
    ] {
        if value.is_some() && !claims {
            assert!(h.contains_key(header), "{header} from nowhere");
            assert!(trusted_peer, "{header} read from an untrusted peer");
        }
    }
}

/// The request the input describes (see the module docs).
fn request(text: &[u8]) -> Request<()> {
    let mut lines = text.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let uri = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
    let mut req = Request::new(());
    *req.uri_mut() = uri;
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
