//! What the sidecar tells the counter about one finished request.
//!
//! Everything is borrowed or precomputed: secrets arrive already hashed (the policy
//! evaluator hashes API keys and tokens once per request anyway), so recording allocates
//! nothing on the common path.

use std::net::IpAddr;

use crate::key::KeyHash;
use crate::sequence::PathShape;

/// Who produced the response the client received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Responder {
    /// The app behind the sidecar (its errors and 403s are evidence).
    #[default]
    Upstream,
    /// The sidecar itself (a deny action, or an error of its own). Such responses are never
    /// counted as the app's errors or 403s, or a ban would feed itself.
    Sidecar,
    /// Nobody: the client left before the app answered (nginx's 499), and the sidecar
    /// stopped the app's work on it. A request the app was asked, so it counts wherever
    /// requests do (Flooder), with the client's user agent and token; but with no answer it
    /// is no error, 403, byte or token grant, evidence for no ratio rule either way.
    Client,
}

impl Responder {
    /// Whether the app answered, so that the status and bytes are its own.
    pub fn is_upstream(self) -> bool {
        self == Self::Upstream
    }
}

/// The attributes an incident shows about a request (all optional, borrowed).
#[derive(Debug, Clone, Copy, Default)]
pub struct Attributes<'a> {
    /// API product.
    pub product: Option<&'a str>,
    /// Developer app.
    pub app: Option<&'a str>,
    /// Developer.
    pub developer: Option<&'a str>,
    /// Country / region code.
    pub region: Option<&'a str>,
    /// Request path (without the query string).
    pub path: Option<&'a str>,
    /// The `User-Agent` header, as text.
    pub user_agent: Option<&'a str>,
}

/// One finished request, as the counter needs it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Resolved client IP.
    pub ip: IpAddr,
    /// SHA-256 of the API key, if the request carried one.
    pub api_key: Option<KeyHash>,
    /// SHA-256 of the access token, if the request carried one.
    pub access_token: Option<KeyHash>,
    /// SHA-256 of the `User-Agent` header, if present.
    pub user_agent: Option<KeyHash>,
    /// Response status code sent to the client.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// Whether the request went to the OAuth token endpoint (starts a session).
    pub token_endpoint: bool,
    /// Who produced the response.
    pub responder: Responder,
    /// The request's path shape and number, if it has one (see [`crate::sequence`]).
    pub shape: Option<PathShape>,
    /// Attributes for incidents.
    pub attrs: Attributes<'a>,
}

impl<'a> RequestFacts<'a> {
    /// Facts with only an IP and a status; everything else empty (handy in tests).
    pub fn new(ip: IpAddr, status: u16) -> Self {
        Self {
            ip,
            api_key: None,
            access_token: None,
            user_agent: None,
            status,
            bytes: 0,
            token_endpoint: false,
            responder: Responder::Upstream,
            shape: None,
            attrs: Attributes::default(),
        }
    }
}
