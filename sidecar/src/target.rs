//! The request path the application will route: normalised once per request before the policy
//! is evaluated (`palisade_policy::path`), forwarded normalised unless
//! `--forward-original-path`. A path the normaliser refuses (bad escape, escaped slash or
//! backslash under `--escaped-slashes reject`) becomes [`ProxyError::Path`]: 400.

use std::borrow::Cow;

use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use palisade_policy::path::{EscapedSlashes, normalize, without_params};

use crate::rescue::ProxyError;

/// How paths are normalised and forwarded.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathConfig {
    /// What `%2F`, `%5C` and `\` do.
    pub escaped_slashes: EscapedSlashes,
    /// Forward the path as the client sent it (conditions still match the normalised path).
    pub forward_original: bool,
}

/// Normalises `parts.uri`'s path in place (unless `forward_original`); returns the match path
/// when it differs from the path left in `parts.uri` (`None`: match `parts.uri.path()`). An
/// already-normal path allocates nothing.
pub fn prepare(cfg: PathConfig, parts: &mut Parts) -> Result<Option<String>, ProxyError> {
    let raw = parts.uri.path();
    let normal = match normalize(raw, cfg.escaped_slashes).map_err(ProxyError::Path)? {
        Cow::Borrowed(_) => None,
        Cow::Owned(n) => Some(n),
    };
    let unparam = match without_params(normal.as_deref().unwrap_or(raw)) {
        Cow::Borrowed(_) => None,
        Cow::Owned(m) => Some(m),
    };
    match normal {
        Some(n) if !cfg.forward_original => {
            parts.uri = with_path(&parts.uri, &n)?;
            Ok(unparam)
        }
        n => Ok(unparam.or(n)),
    }
}

/// `uri` with its path replaced; query, scheme and authority kept as they came.
fn with_path(uri: &Uri, path: &str) -> Result<Uri, ProxyError> {
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).map_err(|_| ProxyError::BadRequest("target"))?);
    Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: PathConfig, target: &str) -> (String, Option<String>) {
        let (mut parts, ()) = http::Request::get(target)
            .body(())
            .expect("request")
            .into_parts();
        let matched = prepare(cfg, &mut parts).expect("accepted");
        (parts.uri.to_string(), matched)
    }

    #[test]
    fn the_normalised_path_is_forwarded_and_the_query_kept() {
        let cfg = PathConfig::default();
        assert_eq!(run(cfg, "/a/b?x=%2F"), ("/a/b?x=%2F".into(), None));
        assert_eq!(
            run(cfg, "//x/../%61dmin?q=/../"),
            ("/admin?q=/../".into(), None)
        );
        assert_eq!(
            run(cfg, "/;x/admin?y"),
            ("/;x/admin?y".into(), Some("/admin".into()))
        );
        assert_eq!(
            run(cfg, "http://h:1//a;p/b"),
            ("http://h:1/a;p/b".into(), Some("/a/b".into()))
        );
        assert_eq!(run(cfg, "*"), ("*".into(), None));
    }

    #[test]
    fn forward_original_still_matches_the_normalised_path() {
        let cfg = PathConfig {
            forward_original: true,
            ..PathConfig::default()
        };
        assert_eq!(
            run(cfg, "//admin?q"),
            ("//admin?q".into(), Some("/admin".into()))
        );
        assert_eq!(
            run(cfg, "/x/..;/admin"),
            ("/x/..;/admin".into(), Some("/admin".into()))
        );
        assert_eq!(run(cfg, "/admin"), ("/admin".into(), None));
    }

    #[test]
    fn refused_paths_are_errors() {
        for target in ["/a%2Fb", "/a%zz", "/a\\b"] {
            let (mut parts, ()) = http::Request::get(target)
                .body(())
                .expect("request")
                .into_parts();
            let err = prepare(PathConfig::default(), &mut parts).expect_err(target);
            assert!(matches!(err, ProxyError::Path(_)), "{target}: {err}");
        }
    }
}
