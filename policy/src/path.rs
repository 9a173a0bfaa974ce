//! Request-path normalisation: the path the application will route, computed before any path
//! condition is matched (a deny on `/admin` must also stop `//admin`, `/%61dmin`, `/x/../admin`
//! and `/;x/admin`).
//!
//! Two pure functions, in this order:
//!
//! 1. [`normalize`] gives the *normalised path*, the one the sidecar forwards by default:
//!    1. a target that does not start with `/` (`*`, a CONNECT authority) is left as it is;
//!    2. every `%` must start a two-hex-digit escape, or the path is refused
//!       ([`PathError::InvalidPercentEncoding`]);
//!    3. escaped slashes and backslashes (`%2F`, `%5C`, any case) and raw backslashes are
//!       handled per [`EscapedSlashes`]: refused (the default), kept, or turned into `/`;
//!    4. escapes of unreserved characters (RFC 3986 §2.3: `A–Z a–z 0–9 - . _ ~`) are decoded;
//!       every other escape stays, its hex digits upper-cased (`%2c` → `%2C`);
//!    5. empty segments are dropped (`//` → `/`), then dot segments are removed as RFC 3986
//!       §5.2.4 does (`.` vanishes, `..` removes the segment before it, never above the root).
//!       Dropping empty segments first is what nginx and Tomcat do, so `/a//../b` is `/b`;
//!    6. a trailing slash stays (`/admin/` is not `/admin`); a path ending in a dot segment
//!       ends with `/` (`/a/b/..` → `/a/`), as RFC 3986 says.
//! 2. [`without_params`] gives the *match path* from a normalised path: each segment loses its
//!    parameters (`;` and what follows, up to the next `/`), then steps 5 and 6 run again, so
//!    `/;x/admin`, `/admin;jsessionid=1` and `/..;/admin` all match as `/admin` — the path a
//!    Servlet container (Tomcat, Jetty, Spring) routes. The forwarded path keeps them.
//!
//! Nothing else is rewritten: case is kept (path conditions compare case-sensitively unless
//! they set `caseInsensitive`), non-ASCII bytes are kept, the query string is never touched
//! (it is not part of the path). A path that needs no change is returned borrowed: the common
//! request costs one scan and no allocation.
//!
//! Both functions are idempotent: `normalize(normalize(p)) == normalize(p)`.

use std::borrow::Cow;

/// What to do with `%2F`, `%5C` (any hex case) and raw `\` in a path: routers disagree on
/// whether they separate segments, so by default such a path is refused (Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EscapedSlashes {
    /// Refuse the path ([`PathError::EscapedSlash`], [`PathError::Backslash`]): 400.
    #[default]
    Reject,
    /// Keep them as they are, as data inside a segment (escapes upper-cased: `%2f` → `%2F`).
    Keep,
    /// Turn each of them into `/`, a segment separator, then normalise.
    Unescape,
}

impl std::str::FromStr for EscapedSlashes {
    type Err = String;

    /// `reject`, `keep` or `unescape` (the sidecar's `--escaped-slashes`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(Self::Reject),
            "keep" => Ok(Self::Keep),
            "unescape" => Ok(Self::Unescape),
            other => Err(format!("{other:?} is not one of reject, keep, unescape")),
        }
    }
}

/// Why a path is refused. The sidecar answers 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding at byte {at} of the path: '%' must start an escape like %2F")]
    InvalidPercentEncoding {
        /// Offset of the `%` in the path.
        at: usize,
    },
    /// `%2F` or `%5C`, refused by [`EscapedSlashes::Reject`].
    #[error("escaped slash or backslash (%2F or %5C) in the path; routers disagree on it")]
    EscapedSlash,
    /// A raw `\`, refused by [`EscapedSlashes::Reject`].
    #[error("backslash in the path; routers disagree on whether it separates segments")]
    Backslash,
}

impl PathError {
    /// Short fixed name: the metric label and the `palisade-error` header.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidPercentEncoding { .. } => "InvalidPercentEncoding",
            Self::EscapedSlash => "EscapedSlash",
            Self::Backslash => "Backslash",
        }
    }
}

/// The normalised path (see the module documentation for the rules, in order). Borrowed when
/// `path` is already normal.
///
/// ```
/// use palisade_policy::path::{EscapedSlashes, PathError, normalize};
///
/// let n = |p| normalize(p, EscapedSlashes::Reject);
/// assert_eq!(n("//x/../%61dmin/./").unwrap(), "/admin/");
/// assert_eq!(n("/files/a%2cb").unwrap(), "/files/a%2Cb");
/// assert_eq!(n("/a%2Fb"), Err(PathError::EscapedSlash));
/// assert!(matches!(n("/a"), Ok(std::borrow::Cow::Borrowed("/a"))));
/// ```
pub fn normalize(path: &str, escaped: EscapedSlashes) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path, escaped)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, escaped)?;
    Ok(Cow::Owned(resolve(decoded.split('/'))))
}

/// The match path: `normalized` (an output of [`normalize`]) without segment parameters, dot
/// segments resolved again. Borrowed when the path has no `;`.
///
/// ```
/// use palisade_policy::path::without_params;
///
/// assert_eq!(without_params("/;x/admin"), "/admin");
/// assert_eq!(without_params("/..;/admin;jsessionid=1/"), "/admin/");
/// assert_eq!(without_params("/files/a%3Bb"), "/files/a%3Bb");
/// ```
pub fn without_params(normalized: &str) -> Cow<'_, str> {
    if !normalized.starts_with('/') || !normalized.as_bytes().contains(&b';') {
        return Cow::Borrowed(normalized);
    }
    let segments = normalized
        .split('/')
        .map(|s| s.split_once(';').map_or(s, |(head, _)| head));
    Cow::Owned(resolve(segments))
}

/// Whether `path` (starting with `/`) is already normal, or why it is refused. A path without
/// `%` or `\` (two memchr scans) cannot be refused, so only its segments are checked; escapes
/// are looked at only when there are some.
fn is_normal(path: &str, escaped: EscapedSlashes) -> Result<bool, PathError> {
    let b = path.as_bytes();
    let special = b.contains(&b'%') || b.contains(&b'\\');
    let segments = segments_normal(b);
    if !special {
        return Ok(segments);
    }
    Ok(escapes_normal(b, escaped)? && segments)
}

/// No empty segment (but a trailing slash) and no dot segment: no `/` followed by `/`, `.`
/// or `..` that end a segment.
fn segments_normal(b: &[u8]) -> bool {
    (0..b.len()).filter(|&i| b[i] == b'/').all(|i| {
        !matches!(
            (b.get(i + 1), b.get(i + 2), b.get(i + 3)),
            (Some(b'/'), _, _)
                | (Some(b'.'), None | Some(b'/'), _)
                | (Some(b'.'), Some(b'.'), None | Some(b'/'))
        )
    })
}

/// Every escape valid, none of an unreserved character, hex upper-case; escaped slashes and
/// backslashes per `escaped`.
fn escapes_normal(b: &[u8], escaped: EscapedSlashes) -> Result<bool, PathError> {
    let mut normal = true;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (hi, lo) = hex_pair(b, i)?;
                let byte = hi << 4 | lo;
                if byte == b'/' || byte == b'\\' {
                    match escaped {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Unescape => normal = false,
                        EscapedSlashes::Keep => {}
                    }
                }
                if is_unreserved(byte)
                    || b[i + 1].is_ascii_lowercase()
                    || b[i + 2].is_ascii_lowercase()
                {
                    normal = false;
                }
                i += 3;
                continue;
            }
            b'\\' => match escaped {
                EscapedSlashes::Reject => return Err(PathError::Backslash),
                EscapedSlashes::Unescape => normal = false,
                EscapedSlashes::Keep => {}
            },
            _ => {}
        }
        i += 1;
    }
    Ok(normal)
}

/// The two hex digits after the `%` at `i`.
fn hex_pair(b: &[u8], i: usize) -> Result<(u8, u8), PathError> {
    let digit = |j: usize| {
        b.get(j)
            .and_then(|c| (*c as char).to_digit(16))
            .map(|d| d as u8)
    };
    digit(i + 1)
        .zip(digit(i + 2))
        .ok_or(PathError::InvalidPercentEncoding { at: i })
}

/// RFC 3986 §2.3.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Step 3 and 4 on a path [`is_normal`] accepted: unreserved escapes decoded, other escapes
/// upper-cased, escaped slashes and backslashes per `escaped`.
fn decode(path: &str, escaped: EscapedSlashes) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut rest = 0;
    let mut i = 0;
    while i < b.len() {
        let unescape = escaped == EscapedSlashes::Unescape;
        match b[i] {
            b'%' => {
                out.push_str(&path[rest..i]);
                let (hi, lo) = hex_pair(b, i)?;
                let byte = hi << 4 | lo;
                if is_unreserved(byte) {
                    out.push(char::from(byte));
                } else if unescape && (byte == b'/' || byte == b'\\') {
                    out.push('/');
                } else {
                    out.push('%');
                    out.push_str(&path[i + 1..i + 3].to_ascii_uppercase());
                }
                i += 3;
                rest = i;
                continue;
            }
            b'\\' if unescape => {
                out.push_str(&path[rest..i]);
                out.push('/');
                rest = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&path[rest..]);
    Ok(out)
}

/// Step 5 and 6: the segments of an absolute path (the first is the empty one before the
/// leading `/`) joined without empty and dot segments. The result ends with `/` when the last
/// segment is empty (a trailing slash) or a dot segment.
fn resolve<'a>(segments: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    let mut dir = false;
    for s in segments {
        dir = matches!(s, "" | "." | "..");
        match s {
            "" | "." => {}
            ".." => out.truncate(out.rfind('/').unwrap_or(0)),
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if out.is_empty() || dir {
        out.push('/');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    fn n(p: &str) -> Result<Cow<'_, str>, PathError> {
        normalize(p, EscapedSlashes::Reject)
    }

    fn m(p: &str) -> String {
        without_params(&n(p).unwrap()).into_owned()
    }

    #[test]
    fn every_bypass_of_a_deny_on_admin_matches_as_admin() {
        for p in [
            "/admin",
            "//admin",
            "///admin",
            "/%61dmin",
            "/%61%64%6D%69%6E",
            "/%61%64%6d%69%6e",
            "/x/../admin",
            "/x/%2e%2e/admin",
            "/x/%2E./admin",
            "/./admin",
            "/%2e/admin",
            "/../admin",
            "/../../admin",
            "/;x/admin",
            "/admin;jsessionid=0",
            "/..;/admin",
            "/x/..;/admin",
            "/x;y/..;z/admin",
        ] {
            assert_eq!(m(p), "/admin", "{p}");
        }
        for p in [
            "/admin/",
            "//admin//",
            "/admin/.",
            "/admin/x/..",
            "/admin;x/",
        ] {
            assert_eq!(m(p), "/admin/", "{p}");
        }
        assert_eq!(m("/ADMIN"), "/ADMIN", "case is kept: conditions decide");
    }

    #[test]
    fn rfc_3986_remove_dot_segments_examples() {
        // RFC 3986 §5.2.4 and the absolute-path results of §5.4.
        for (input, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
            ("/b/c/g.", "/b/c/g."),
            ("/b/c/.g", "/b/c/.g"),
            ("/b/c/g..", "/b/c/g.."),
            ("/b/c/..g", "/b/c/..g"),
            ("/b/c/./../g", "/b/g"),
            ("/b/c/./g/.", "/b/c/g/"),
            ("/b/c/g/./h", "/b/c/g/h"),
            ("/b/c/g/../h", "/b/c/h"),
            ("/b/c/g;x=1/./y", "/b/c/g;x=1/y"),
            ("/b/c/g;x=1/../y", "/b/c/y"),
            ("/b/c/.", "/b/c/"),
            ("/b/c/..", "/b/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/", "/"),
            ("/a//../b", "/b"),
        ] {
            assert_eq!(n(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn escapes_are_decoded_only_for_unreserved_characters() {
        assert_eq!(n("/files/a%20b").unwrap(), "/files/a%20b");
        assert_eq!(n("/files/a%2cb%3a").unwrap(), "/files/a%2Cb%3A");
        assert_eq!(n("/%7e%2D%5f%2E%41%7A%30").unwrap(), "/~-_.Az0");
        assert_eq!(
            n("/%252e%252e/x").unwrap(),
            "/%252e%252e/x",
            "never decoded twice"
        );
        assert_eq!(n("/a%3Bb").unwrap(), "/a%3Bb");
        assert_eq!(
            m("/a%3Bb"),
            "/a%3Bb",
            "an escaped ; is data, not a parameter"
        );
        assert_eq!(n("/caf%C3%A9/é").unwrap(), "/caf%C3%A9/é");
    }

    #[test]
    fn invalid_escapes_are_refused() {
        for (p, at) in [
            ("/%", 1),
            ("/a%4", 2),
            ("/a%zz", 2),
            ("/ok%20/%g0", 7),
            ("/%%41", 1),
        ] {
            assert_eq!(n(p), Err(PathError::InvalidPercentEncoding { at }), "{p}");
            let keep = normalize(p, EscapedSlashes::Keep);
            assert_eq!(keep, Err(PathError::InvalidPercentEncoding { at }), "{p}");
        }
    }

    #[test]
    fn escaped_slashes_and_backslashes_follow_the_setting() {
        for p in ["/a%2Fb", "/a%2fb", "/%2e%2e%2fadmin", "/a%5Cb", "/a%5cb"] {
            assert_eq!(n(p), Err(PathError::EscapedSlash), "{p}");
        }
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        let keep = |p| normalize(p, EscapedSlashes::Keep).unwrap().into_owned();
        assert_eq!(keep("/a%2fb"), "/a%2Fb");
        assert_eq!(keep("/..%2Fadmin"), "/..%2Fadmin");
        assert_eq!(keep("/a\\..\\b"), "/a\\..\\b");
        let unescape = |p| normalize(p, EscapedSlashes::Unescape).unwrap().into_owned();
        assert_eq!(unescape("/a%2fb"), "/a/b");
        assert_eq!(unescape("/x/..%2Fadmin"), "/admin");
        assert_eq!(unescape("/x%5C..%5cadmin"), "/admin");
        assert_eq!(unescape("\\admin"), "\\admin", "not a path: left alone");
        assert_eq!(unescape("/x\\..\\\\admin\\"), "/admin/");
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/admin",
            "/admin/",
            "/a/b.c/.d/..e/",
            "/files/a%20b",
            "/x;y=1/z",
            "/caf%C3%A9",
            "*",
            "",
        ] {
            assert!(matches!(n(p), Ok(Cow::Borrowed(_))), "{p}");
        }
        assert!(matches!(without_params("/a/b"), Cow::Borrowed(_)));
        let keep = normalize("/a%2Fb\\c", EscapedSlashes::Keep);
        assert!(matches!(keep, Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn normalisation_is_idempotent_over_random_paths() {
        const ALPHABET: &[&str] = &[
            "/", "/", "/", ".", "..", "a", "B", "%", "%2e", "%2E", "%2f", "%5C", "%41", "%7e",
            "%3b", ";", ";x", "\\", "%25", "%g", "~", "é", "%C3", "4", "f", "?",
        ];
        let mut rng = Rng(0x5eed_1dea_9a71_0000);
        let mut seen = [0usize; 2];
        for _ in 0..50_000 {
            let len = 1 + rng.next() % 12;
            let mut p = String::from(if rng.next().is_multiple_of(8) {
                ""
            } else {
                "/"
            });
            for _ in 0..len {
                p.push_str(ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize]);
            }
            for mode in [
                EscapedSlashes::Reject,
                EscapedSlashes::Keep,
                EscapedSlashes::Unescape,
            ] {
                let Ok(once) = normalize(&p, mode) else {
                    seen[0] += 1;
                    continue;
                };
                seen[1] += 1;
                let twice = normalize(&once, mode).unwrap();
                assert!(
                    matches!(twice, Cow::Borrowed(_)),
                    "{p:?} → {once:?} → {twice:?}"
                );
                let matched = without_params(&once);
                assert_eq!(without_params(&matched), matched, "{p:?}");
                assert_eq!(normalize(&matched, mode).unwrap(), matched, "{p:?}");
                if once.starts_with('/') {
                    assert!(!once.contains("//") && !once.contains("/./"), "{once:?}");
                    assert!(!once.contains("/../") && !once.ends_with("/.."), "{once:?}");
                }
            }
        }
        assert!(
            seen[0] > 1000 && seen[1] > 1000,
            "both outcomes drawn: {seen:?}"
        );
    }
}
