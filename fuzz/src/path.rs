//! `path_normalize`: the path a deny on `/admin` is matched against, from a path the client
//! chose (`palisade_policy::path`). Input layout:
//!
//! ```text
//! byte 0   what to do with escaped slashes: 0 reject, 1 keep, 2 unescape (modulo 3)
//! rest     the path (invalid UTF-8 replaced, as no request target can carry it)
//! ```
//!
//! Properties: normalising is idempotent and a normal path comes back borrowed (the one-scan
//! fast path agrees with the full one); a normalised path has no empty or dot segments, no
//! escape of an unreserved character, only upper-case escapes, and under `reject` no
//! backslash or escaped slash; a path `reject` accepts normalises the same in every mode;
//! the match path (`without_params`) is idempotent, has no `;`, and is itself normal; a
//! refusal for a bad escape points at a `%`.

use std::borrow::Cow;

use palisade_policy::path::{EscapedSlashes, PathError, normalize, without_params};

const MODES: [EscapedSlashes; 3] = [
    EscapedSlashes::Reject,
    EscapedSlashes::Keep,
    EscapedSlashes::Unescape,
];

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Normalised; `changed` when the result differs from the input.
    Normalized {
        /// The normalised path differs from the input.
        changed: bool,
        /// The match path differs from the normalised one (it had parameters).
        params: bool,
    },
    /// Refused, with the reason (the sidecar answers 400).
    Refused(&'static str),
}

/// The target: normalises the path in `data`, checks every property. Panics when one fails.
pub fn path_normalize(data: &[u8]) -> Outcome {
    let (mode, path) = match data.split_first() {
        Some((m, rest)) => (MODES[usize::from(*m) % 3], String::from_utf8_lossy(rest)),
        None => (EscapedSlashes::Reject, Cow::Borrowed("")),
    };
    let normal = match normalize(&path, mode) {
        Ok(n) => n,
        Err(e) => {
            check_refusal(&path, mode, e);
            return Outcome::Refused(e.reason());
        }
    };
    check_normal(&path, &normal, mode);
    if mode == EscapedSlashes::Reject {
        for other in [EscapedSlashes::Keep, EscapedSlashes::Unescape] {
            let again = normalize(&path, other);
            assert_eq!(
                again.as_deref(),
                Ok(&*normal),
                "{other:?} differs on {path:?}"
            );
        }
    }
    let matched = without_params(&normal);
    check_match_path(&normal, &matched, mode);
    Outcome::Normalized {
        changed: *normal != *path,
        params: *matched != *normal,
    }
}

fn check_refusal(path: &str, mode: EscapedSlashes, e: PathError) {
    match e {
        PathError::InvalidPercentEncoding { at } => {
            assert_eq!(path.as_bytes().get(at), Some(&b'%'), "bad escape at {at}");
        }
        PathError::EscapedSlash | PathError::Backslash => {
            assert_eq!(mode, EscapedSlashes::Reject, "{e:?} refused in {mode:?}");
        }
    }
}

fn check_normal(path: &str, normal: &str, mode: EscapedSlashes) {
    let again = normalize(normal, mode);
    assert!(
        matches!(again, Ok(Cow::Borrowed(p)) if p == normal),
        "normalize is not idempotent (or not borrowed) on {normal:?} from {path:?}: {again:?}"
    );
    if !path.starts_with('/') {
        assert_eq!(normal, path, "a target without a leading / was changed");
        return;
    }
    assert!(normal.starts_with('/'), "{normal:?} lost its leading /");
    check_segments(normal);
    check_escapes(normal);
    if mode == EscapedSlashes::Reject {
        assert!(!normal.contains('\\'), "backslash kept in {normal:?}");
        let upper = normal.to_ascii_uppercase();
        assert!(
            !upper.contains("%2F") && !upper.contains("%5C"),
            "escaped slash kept in {normal:?}"
        );
    }
}

/// No empty segment (`//`) and no dot segment, anywhere (the last segment may be empty: a
/// trailing slash is kept).
fn check_segments(p: &str) {
    let segments: Vec<&str> = p[1..].split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(!s.is_empty() || last, "empty segment in {p:?}");
        assert!(*s != "." && *s != "..", "dot segment in {p:?}");
    }
}

/// Every `%` starts an upper-case escape of a reserved or non-ASCII byte.
fn check_escapes(p: &str) {
    let b = p.as_bytes();
    for (i, _) in p.match_indices('%') {
        let hex = b.get(i + 1..i + 3).unwrap_or_default();
        assert!(
            hex.len() == 2
                && hex
                    .iter()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
            "escape at {i} of {p:?} is not two upper-case hex digits"
        );
        let byte = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("00"), 16).unwrap_or(0);
        let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
        assert!(!unreserved, "escaped unreserved character at {i} of {p:?}");
    }
}

fn check_match_path(normal: &str, matched: &str, mode: EscapedSlashes) {
    assert_eq!(
        without_params(matched),
        matched,
        "without_params not idempotent"
    );
    if !normal.starts_with('/') {
        return;
    }
    assert!(!matched.contains(';'), "parameters left in {matched:?}");
    check_segments(matched);
    let again = normalize(matched, mode);
    assert!(
        matches!(again, Ok(ref p) if p == matched),
        "the match path {matched:?} of {normal:?} is not normal: {again:?}"
    );
}
