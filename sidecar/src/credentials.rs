//! The API keys, access tokens and methods a request carries, read the way applications read
//! them, so the sidecar and the application cannot disagree on who asks for what. Where
//! applications disagree among themselves (first or last duplicate, honouring a method override
//! or not), every reading is kept as a *candidate*: `enforce` evaluates each and applies the
//! strictest (a deny of any candidate denies; an allow needs every candidate allowed), or,
//! with `--reject-conflicting-credentials`, the request is refused with 400.
//!
//! - **API key**: every line of the API key header, then every query parameter whose name,
//!   percent-decoded (`+` as space) and compared ASCII case-insensitively, is the configured
//!   name, also with a `[...]` suffix (`apikey[]=k`, as PHP and `qs` read it). Parameters are
//!   split at `&`, and also at `;` (as older Rack and Python did). Values are percent-decoded,
//!   `+` as space, an invalid escape kept as it is (WHATWG URL, Go, Node, Python).
//! - **Access token**: every `Authorization` line whose scheme is `Bearer` in any case,
//!   followed by spaces or tabs; a token containing whitespace also counts by its first word
//!   (`header.split(' ')[1]`); then the RFC 6750 §2.3 query parameter (`access_token`), read
//!   like the API key parameter. Form-body tokens (RFC 6750 §2.2) are not read: the sidecar
//!   does not buffer bodies.
//! - **Method**: the request method in upper case; a HEAD also as GET (frameworks route HEAD to
//!   GET handlers); and each method override: comma-separated values of the override headers
//!   and the override query parameter, upper-cased — whatever the request's own method.
//!
//! The first candidate is *the* key or token (counted for detection, logged as its hash).
//! Values are hashed (sha256) as they are read: no secret is kept or logged in clear.

use std::hash::{BuildHasher as _, RandomState};
use std::sync::LazyLock;

use http::request::Parts;
use http::{HeaderMap, HeaderName, Method};
use sha2::{Digest, Sha256};

/// Most distinct values of one kind a request may carry; more are refused (400).
pub const MAX_CANDIDATES: usize = 4;

/// What kind of credential a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// API key (header or query).
    ApiKey,
    /// Access token (`Authorization: Bearer` or query).
    AccessToken,
    /// Method, with its overrides.
    Method,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ApiKey => "API keys",
            Self::AccessToken => "access tokens",
            Self::Method => "methods (with overrides)",
        })
    }
}

/// Why a request's credentials are refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// More distinct values of one kind than [`MAX_CANDIDATES`].
    #[error("the request carries more than {MAX_CANDIDATES} distinct {0}; send one")]
    TooMany(Kind),
    /// Two different values of one kind under `--reject-conflicting-credentials`.
    #[error("the request carries conflicting {0} and --reject-conflicting-credentials is set")]
    Conflicting(Kind),
}

impl CredentialError {
    /// Short fixed name: the metric label and log reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooMany(_) => "TooManyCredentials",
            Self::Conflicting(_) => "ConflictingCredentials",
        }
    }
}

/// Up to [`MAX_CANDIDATES`] distinct values in order of first appearance, without allocating;
/// remembers whether more were offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distinct<T> {
    items: [Option<T>; MAX_CANDIDATES],
    overflow: bool,
}

impl<T> Default for Distinct<T> {
    fn default() -> Self {
        Self {
            items: Default::default(),
            overflow: false,
        }
    }
}

impl<T: PartialEq> Distinct<T> {
    /// Adds `v` unless it is already there.
    pub fn push(&mut self, v: T) {
        for slot in &mut self.items {
            match slot {
                Some(have) if *have == v => return,
                Some(_) => {}
                None => {
                    *slot = Some(v);
                    return;
                }
            }
        }
        self.overflow = true;
    }

    /// The first value.
    pub fn first(&self) -> Option<&T> {
        self.items[0].as_ref()
    }

    /// The values, first first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().map_while(Option::as_ref)
    }

    /// How many distinct values.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No value at all.
    pub fn is_empty(&self) -> bool {
        self.items[0].is_none()
    }

    /// Whether more than [`MAX_CANDIDATES`] distinct values were offered.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// Every API key, access token and method a request can be read as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// sha256 of each distinct API key.
    pub api_keys: Distinct<[u8; 32]>,
    /// sha256 of each distinct access token.
    pub tokens: Distinct<[u8; 32]>,
    /// Each method the application may route the request as; the first is the request's own.
    pub methods: Distinct<Method>,
    /// Why the request is refused, if it is.
    pub refused: Option<CredentialError>,
}

impl Credentials {
    /// How many readings of the request there are (1 when it is unambiguous).
    pub fn readings(&self) -> usize {
        self.api_keys.len().max(1) * self.tokens.len().max(1) * self.methods.len().max(1)
    }
}

/// The per-process key of the fingerprints [`HashSlot`]s compare: std's keyed hasher
/// (SipHash-1-3 today) under a key drawn at random when the process starts.
static FINGERPRINT: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// The sha256 of the last value hashed through this slot, with a fingerprint of that value.
/// A keep-alive client sends the same API key, token or user agent on every request: one slot
/// per kind and client connection hashes it once (sha256 of a short key was the largest part
/// of identifying a request), and any other value is hashed as it comes. The slot keeps no
/// value in clear, only the fingerprint: 64 bits of a keyed hash whose key no client knows
/// ([`FINGERPRINT`]), so no client can aim at another value's fingerprint, and a chance
/// collision (about 2⁻⁶⁴ per request) could only read a request as its own connection's
/// earlier credential.
#[derive(Debug, Default)]
pub struct HashSlot {
    kept: Option<(u64, [u8; 32])>,
}

impl HashSlot {
    /// sha256 of `value`, from the slot when it holds the same value's hash.
    pub fn digest(&mut self, value: &[u8]) -> [u8; 32] {
        let fingerprint = FINGERPRINT.hash_one(value);
        if let Some((kept, hash)) = self.kept
            && kept == fingerprint
        {
            return hash;
        }
        let hash: [u8; 32] = Sha256::digest(value).into();
        self.kept = Some((fingerprint, hash));
        hash
    }
}

/// The hash slots of one client connection's credentials (see [`HashSlot`]).
#[derive(Debug, Default)]
pub struct Memo {
    /// API keys of the header.
    pub api_key: HashSlot,
    /// Bearer tokens of `Authorization`.
    pub token: HashSlot,
}

/// Where credentials are read from; built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Reader {
    /// API key header.
    pub api_key_header: Option<HeaderName>,
    /// API key query parameter (empty: none).
    pub api_key_query: String,
    /// Access token query parameter (empty: none).
    pub token_query: String,
    /// Method override headers.
    pub override_headers: Vec<HeaderName>,
    /// Method override query parameter (empty: none).
    pub override_query: String,
    /// Refuse a request with two different values of one kind.
    pub reject_conflicting: bool,
}

/// The header names of a comma-separated list flag; the error names the flag and the value.
pub fn header_names(flag: &str, list: &str) -> Result<Vec<HeaderName>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("{flag}: {n:?} is not a valid HTTP header name"))
        })
        .collect()
}

impl Reader {
    /// Reads the credentials of a request head.
    pub fn read(&self, parts: &Parts) -> Credentials {
        self.read_with(parts, &mut Memo::default())
    }

    /// Reads the credentials of a request head; header values are hashed through `memo`, the
    /// slots of the connection the request came on.
    pub fn read_with(&self, parts: &Parts, memo: &mut Memo) -> Credentials {
        let mut c = Credentials::default();
        let h = &parts.headers;
        if let Some(name) = &self.api_key_header {
            for v in h.get_all(name) {
                let v = trim(v.as_bytes());
                if !v.is_empty() {
                    c.api_keys.push(memo.api_key.digest(v));
                }
            }
        }
        let header_token = bearer_tokens(h).fold(false, |_, t| {
            c.tokens.push(memo.token.digest(t));
            true
        });
        c.methods.push(upper(&parts.method));
        if parts.method == Method::HEAD {
            c.methods.push(Method::GET);
        }
        let mut overrides = Distinct::default();
        if !self.override_headers.is_empty() {
            // One pass over the request's few headers instead of a hash lookup per configured
            // name (most requests carry none of them).
            for (name, v) in h {
                if self.override_headers.contains(name) {
                    v.as_bytes()
                        .split(|b| *b == b',')
                        .filter_map(method_token)
                        .for_each(|m| overrides.push(m));
                }
            }
        }
        let mut query_token = false;
        for (name, value) in query_pairs(parts.uri.query().unwrap_or_default()) {
            if value.is_empty() {
                continue;
            }
            if names_param(name, &self.api_key_query) {
                c.api_keys.push(hash_decoded(value));
            }
            if names_param(name, &self.token_query) {
                c.tokens.push(hash_decoded(value));
                query_token = true;
            }
            if names_param(name, &self.override_query) {
                let value: Vec<u8> = Decoded::new(value).collect();
                if let Some(m) = method_token(&value) {
                    overrides.push(m);
                }
            }
        }
        overrides.iter().for_each(|m| c.methods.push(m.clone()));
        c.refused = self.refusal(&c, &overrides, header_token && query_token);
        c
    }

    fn refusal(
        &self,
        c: &Credentials,
        overrides: &Distinct<Method>,
        token_twice: bool,
    ) -> Option<CredentialError> {
        let kinds = [
            (Kind::ApiKey, c.api_keys.overflowed(), c.api_keys.len() > 1),
            (Kind::AccessToken, c.tokens.overflowed(), c.tokens.len() > 1),
            (
                Kind::Method,
                c.methods.overflowed() || overrides.overflowed(),
                overrides.len() > 1,
            ),
        ];
        if let Some((kind, ..)) = kinds.iter().find(|(_, over, _)| *over) {
            return Some(CredentialError::TooMany(*kind));
        }
        if !self.reject_conflicting {
            return None;
        }
        if token_twice {
            // RFC 6750 §2: a client MUST NOT use more than one method to send the token.
            return Some(CredentialError::Conflicting(Kind::AccessToken));
        }
        let conflicting = kinds.iter().find(|(_, _, two)| *two);
        conflicting.map(|(kind, ..)| CredentialError::Conflicting(*kind))
    }
}

/// Every bearer token of the `Authorization` lines, in order: the scheme `Bearer` in any case,
/// then spaces or tabs, then the token (trimmed); a token containing whitespace is also yielded
/// by its first word.
pub fn bearer_tokens(h: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    h.get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| bearer_token(v.as_bytes()))
        .flat_map(|token| {
            let first = token.split(|b| is_space(*b)).next().unwrap_or(token);
            let first = (first.len() < token.len()).then_some(first);
            std::iter::once(token).chain(first)
        })
}

/// The token of one `Authorization` value, if its scheme is `Bearer` (any case).
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let split = value.iter().position(|b| is_space(*b))?;
    let (scheme, token) = value.split_at(split);
    let token = trim(token);
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The first bearer token of the request as text (what JWT claims are read from).
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    bearer_tokens(h)
        .next()
        .and_then(|t| std::str::from_utf8(t).ok())
}

/// The `name=value` pairs of a query, raw: split at `&`, and when the query has a `;`, split
/// at `&` and `;` as well (some of the same pairs twice; callers keep distinct values).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    let amp = query.split('&');
    let semi = query
        .contains(';')
        .then(|| query.split(['&', ';']))
        .into_iter()
        .flatten();
    amp.chain(semi)
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Whether a raw parameter name names `want`: percent-decoded, ASCII case-insensitive,
/// optionally followed by `[...]`. An empty `want` names nothing.
pub fn names_param(raw: &str, want: &str) -> bool {
    if want.is_empty() || raw.len() < want.len() {
        return false;
    }
    let mut name = Decoded::new(raw);
    let same = want
        .bytes()
        .all(|w| name.next().is_some_and(|b| b.eq_ignore_ascii_case(&w)));
    if !same {
        return false;
    }
    match name.next() {
        None => true,
        Some(b'[') => name.last() == Some(b']'),
        Some(_) => false,
    }
}

/// Percent-decodes (`+` as space), an invalid escape kept as it is.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    bytes: &'a [u8],
}

impl<'a> Decoded<'a> {
    /// Decodes `s`.
    pub fn new(s: &'a str) -> Self {
        Self {
            bytes: s.as_bytes(),
        }
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        match b {
            b'+' => Some(b' '),
            b'%' => {
                let hex = |i: usize| rest.get(i).and_then(|c| (*c as char).to_digit(16));
                match (hex(0), hex(1)) {
                    (Some(hi), Some(lo)) => {
                        self.bytes = &rest[2..];
                        u8::try_from(hi * 16 + lo).ok()
                    }
                    _ => Some(b'%'),
                }
            }
            _ => Some(b),
        }
    }
}

/// sha256 of the decoded value, hashed as it decodes (no allocation).
fn hash_decoded(raw: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 64];
    let mut n = 0;
    for b in Decoded::new(raw) {
        buf[n] = b;
        n += 1;
        if n == buf.len() {
            hasher.update(buf);
            n = 0;
        }
    }
    hasher.update(&buf[..n]);
    hasher.finalize().into()
}

/// An override value as a method: trimmed, upper-cased; `None` unless an HTTP token.
fn method_token(raw: &[u8]) -> Option<Method> {
    let raw = trim(raw);
    if raw.is_empty() || raw.len() > 32 {
        return None;
    }
    Method::from_bytes(&raw.to_ascii_uppercase()).ok()
}

/// The method in upper case (the common, already upper-case method is cloned as it is).
fn upper(m: &Method) -> Method {
    let s = m.as_str();
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return m.clone();
    }
    Method::from_bytes(s.to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| m.clone())
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && is_space(*first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && is_space(*last)
    {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(s: &str) -> [u8; 32] {
        Sha256::digest(s.as_bytes()).into()
    }

    fn reader() -> Reader {
        Reader {
            api_key_header: Some(HeaderName::from_static("x-api-key")),
            api_key_query: "apikey".into(),
            token_query: "access_token".into(),
            override_headers: header_names("", "x-http-method-override, x-method-override")
                .expect("names"),
            override_query: "_method".into(),
            reject_conflicting: false,
        }
    }

    #[test]
    fn a_slot_answers_every_value_with_its_own_hash() {
        let mut slot = HashSlot::default();
        let long = "k".repeat(64 * 1024);
        // Repeats, a switch, a prefix and an extension of the kept value, the empty value,
        // a long value.
        for v in [
            "key-a", "key-a", "key-b", "key-a", "key-", "key-aa", "", "key-aa", &long, &long,
            "key-aa",
        ] {
            assert_eq!(slot.digest(v.as_bytes()), sha(v), "{v:?}");
        }
    }

    #[test]
    fn a_connection_switching_credentials_is_read_anew_each_request() {
        let r = reader();
        let mut memo = Memo::default();
        let requests = [
            vec![("x-api-key", "a"), ("authorization", "Bearer t1")],
            vec![("x-api-key", "a"), ("authorization", "Bearer t1")],
            vec![("x-api-key", "b"), ("authorization", "Bearer t2 extra")],
            vec![("x-api-key", "a"), ("x-api-key", "b")],
            vec![],
            vec![("x-api-key", "a")],
        ];
        for headers in requests {
            let p = parts("GET", "/", &headers);
            assert_eq!(r.read_with(&p, &mut memo), r.read(&p), "{headers:?}");
        }
    }

    fn parts(method: &str, target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn keys(c: &Credentials) -> Vec<[u8; 32]> {
        c.api_keys.iter().copied().collect()
    }

    fn methods(c: &Credentials) -> Vec<&str> {
        c.methods.iter().map(Method::as_str).collect()
    }

    #[test]
    fn query_names_and_values_are_read_decoded() {
        let r = reader();
        for target in [
            "/?apikey=k1",
            "/?api%6Bey=k1",
            "/?APIKEY=k1",
            "/?apikey[]=k1",
            "/?apikey%5B0%5D=k1",
            "/?x=1;apikey=k1",
            "/?apikey=%6B1",
            "/?a=%zz&apikey=k%31",
        ] {
            let c = r.read(&parts("GET", target, &[]));
            assert_eq!(keys(&c), [sha("k1")], "{target}");
        }
        let c = r.read(&parts("GET", "/?apikey=a+b%2Bc%zz", &[]));
        assert_eq!(keys(&c), [sha("a b+c%zz")]);
        for target in [
            "/?apikey=",
            "/?apikeys=k",
            "/?xapikey=k",
            "/?apikey[=k",
            "/",
        ] {
            assert!(
                r.read(&parts("GET", target, &[])).api_keys.is_empty(),
                "{target}"
            );
        }
    }

    #[test]
    fn every_distinct_key_is_a_candidate_header_first() {
        let r = reader();
        let c = r.read(&parts(
            "GET",
            "/?apikey=q1&apikey=h1&apikey=q2",
            &[("x-api-key", "h1"), ("x-api-key", " h2 ")],
        ));
        assert_eq!(keys(&c), [sha("h1"), sha("h2"), sha("q1"), sha("q2")]);
        assert_eq!(c.refused, None);
        let same = r.read(&parts("GET", "/?apikey=k", &[("x-api-key", "k")]));
        assert_eq!((keys(&same), same.readings()), (vec![sha("k")], 1));
        let five = r.read(&parts(
            "GET",
            "/?apikey=1&apikey=2&apikey=3&apikey=4&apikey=5",
            &[],
        ));
        assert_eq!(five.refused, Some(CredentialError::TooMany(Kind::ApiKey)));
    }

    #[test]
    fn bearer_in_any_case_with_any_whitespace() {
        for value in [
            "Bearer t1",
            "bearer t1",
            "BEARER   t1",
            "Bearer\tt1",
            "  bEaReR \t t1 \t",
        ] {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, value.parse().expect("value"));
            let got: Vec<&[u8]> = bearer_tokens(&h).collect();
            assert_eq!(got, [b"t1".as_slice()], "{value:?}");
        }
        let mut h = HeaderMap::new();
        for value in ["Basic dXNlcg==", "Bearer", "Bearert1", "Bearer a b"] {
            h.append(http::header::AUTHORIZATION, value.parse().expect("value"));
        }
        let got: Vec<&[u8]> = bearer_tokens(&h).collect();
        assert_eq!(got, [b"a b".as_slice(), b"a"]);
        assert_eq!(bearer(&h), Some("a b"));
    }

    #[test]
    fn tokens_from_the_header_and_rfc_6750_query() {
        let r = reader();
        let c = r.read(&parts(
            "GET",
            "/?access_token=q",
            &[("authorization", "Bearer h")],
        ));
        let tokens: Vec<_> = c.tokens.iter().copied().collect();
        assert_eq!(tokens, [sha("h"), sha("q")]);
        let strict = Reader {
            reject_conflicting: true,
            ..reader()
        };
        let both_same = strict.read(&parts(
            "GET",
            "/?access_token=h",
            &[("authorization", "Bearer h")],
        ));
        assert_eq!(
            both_same.refused,
            Some(CredentialError::Conflicting(Kind::AccessToken))
        );
        let one = strict.read(&parts("GET", "/?access_token=h", &[]));
        assert_eq!(one.refused, None);
    }

    #[test]
    fn methods_upper_case_head_as_get_and_overrides() {
        let r = reader();
        assert_eq!(methods(&r.read(&parts("GET", "/", &[]))), ["GET"]);
        assert_eq!(methods(&r.read(&parts("delete", "/", &[]))), ["DELETE"]);
        assert_eq!(methods(&r.read(&parts("HEAD", "/", &[]))), ["HEAD", "GET"]);
        let o = r.read(&parts(
            "POST",
            "/?_method=put",
            &[
                ("x-http-method-override", "delete, patch"),
                ("x-method-override", "DELETE"),
            ],
        ));
        assert_eq!(methods(&o), ["POST", "DELETE", "PATCH", "PUT"]);
        assert_eq!(o.readings(), 4);
        let junk = r.read(&parts(
            "POST",
            "/?_method=a%20b",
            &[("x-http-method-override", " ")],
        ));
        assert_eq!(methods(&junk), ["POST"]);
        let strict = Reader {
            reject_conflicting: true,
            ..reader()
        };
        let one_override = strict.read(&parts("POST", "/", &[("x-method-override", "DELETE")]));
        assert_eq!(one_override.refused, None);
        let two = strict.read(&parts(
            "POST",
            "/?_method=PUT",
            &[("x-method-override", "DELETE")],
        ));
        assert_eq!(
            two.refused,
            Some(CredentialError::Conflicting(Kind::Method))
        );
        let many = r.read(&parts(
            "HEAD",
            "/?_method=A",
            &[("x-method-override", "B,C,D")],
        ));
        assert_eq!(many.refused, Some(CredentialError::TooMany(Kind::Method)));
    }

    #[test]
    fn off_when_names_are_empty() {
        let r = Reader::default();
        let c = r.read(&parts(
            "POST",
            "/?apikey=k&access_token=t&_method=DELETE",
            &[("x-api-key", "k"), ("x-http-method-override", "DELETE")],
        ));
        assert!(c.api_keys.is_empty() && c.tokens.is_empty());
        assert_eq!(methods(&c), ["POST"]);
    }

    #[test]
    fn decoding_keeps_invalid_escapes() {
        let d = |s: &str| String::from_utf8(Decoded::new(s).collect()).expect("utf8");
        assert_eq!(d("%41%2b+%"), "A+ %");
        assert_eq!(d("%4"), "%4");
        assert_eq!(d("%g1x"), "%g1x");
        assert_eq!(hash_decoded(&"%41".repeat(100)), sha(&"A".repeat(100)));
    }
}
