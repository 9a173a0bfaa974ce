//! The injector flags that let injected sidecars verify JWTs: the JWKS volume (a Secret or
//! ConfigMap) mounted read-only into the sidecar, and the algorithms, issuer and audience a
//! token must have; each maps to the sidecar's own `PALISADE_JWKS_PATH`/`PALISADE_JWT_*`.

use serde_json::{Map, Value};

use super::sidecar::{file_inside, volume_source};

/// Signature algorithms the sidecar accepts (its `jwt::ASYMMETRIC`; it refuses `none` and
/// HMAC: a JWKS holds public keys).
const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// How injected sidecars verify Bearer tokens before reading their claims.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// Volume source holding the JSON Web Key Set, as JSON, e.g.
    /// `{"secret":{"secretName":"jwks"}}` or `{"configMap":{"name":"jwks"}}`. Mounted
    /// read-only at /etc/palisade/jwks in every injected sidecar (the sidecar re-reads it, so
    /// a rotated key set reaches running pods). Empty: no JWKS, claims are not read unless
    /// --sidecar-jwt-unverified.
    #[arg(long, env = "PALISADE_SIDECAR_JWKS_VOLUME", default_value = "")]
    pub sidecar_jwks_volume: String,
    /// Key set file in that volume.
    #[arg(long, env = "PALISADE_SIDECAR_JWKS_FILE", default_value = "jwks.json")]
    pub sidecar_jwks_file: String,
    /// Signature algorithms the sidecars accept, comma-separated (RS*, PS*, ES256, ES384,
    /// EdDSA; never none or HS*).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_JWT_ALGORITHMS",
        default_value = "RS256,ES256"
    )]
    pub sidecar_jwt_algorithms: String,
    /// Required `iss` of verified tokens (empty: not checked).
    #[arg(long, env = "PALISADE_SIDECAR_JWT_ISSUER", default_value = "")]
    pub sidecar_jwt_issuer: String,
    /// Required `aud` of verified tokens (empty: not checked).
    #[arg(long, env = "PALISADE_SIDECAR_JWT_AUDIENCE", default_value = "")]
    pub sidecar_jwt_audience: String,
}

/// The JWKS volume of the injected sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    /// The volume source (`{"secret": {…}}`…), one key.
    pub source: Map<String, Value>,
    /// Key set file in the volume.
    pub file: String,
}

impl JwtArgs {
    /// The JWKS volume, `None` without `--sidecar-jwks-volume`; the error says what to fix.
    pub fn parse(&self) -> Result<Option<Jwks>, String> {
        let text = self.sidecar_jwks_volume.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let source = volume_source("--sidecar-jwks-volume", text, "jwks")?;
        if self.sidecar_jwks_file.is_empty() {
            return Err(
                "--sidecar-jwks-volume is set but --sidecar-jwks-file is empty; name \
                        the key set file (e.g. jwks.json)"
                    .into(),
            );
        }
        file_inside("--sidecar-jwks-file", &self.sidecar_jwks_file)?;
        Ok(Some(Jwks {
            source,
            file: self.sidecar_jwks_file.clone(),
        }))
    }

    /// The sidecar's `PALISADE_JWT_*` environment, every setting explicit
    /// (`PALISADE_JWKS_PATH` is set by the patch, which knows where the volume is mounted).
    pub(super) fn env(&self) -> Vec<(String, String)> {
        [
            ("PALISADE_JWT_ALGORITHMS", &self.sidecar_jwt_algorithms),
            ("PALISADE_JWT_ISSUER", &self.sidecar_jwt_issuer),
            ("PALISADE_JWT_AUDIENCE", &self.sidecar_jwt_audience),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }

    /// What the sidecar would refuse at start (and so every injected pod would crash-loop):
    /// unknown or symmetric algorithms, unverified claims together with a key set, and an
    /// issuer or audience that nothing would check.
    pub(super) fn validate(&self, unverified: bool) -> Result<(), String> {
        let jwks = self.parse()?;
        let names: Vec<&str> = self
            .sidecar_jwt_algorithms
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err(
                "--sidecar-jwt-algorithms is empty; list at least one of RS256, ES256, \
                        EdDSA…"
                    .into(),
            );
        }
        if let Some(bad) = names.iter().find(|n| !ALGORITHMS.contains(n)) {
            return Err(format!(
                "--sidecar-jwt-algorithms: {bad:?} is not accepted by the sidecar; use one of {} \
                 (none and HMAC are never allowed)",
                ALGORITHMS.join(", ")
            ));
        }
        for (flag, v) in [
            ("--sidecar-jwt-issuer", &self.sidecar_jwt_issuer),
            ("--sidecar-jwt-audience", &self.sidecar_jwt_audience),
        ] {
            if v.len() > 1024 || v.chars().any(char::is_control) {
                return Err(format!(
                    "{flag} must be at most 1024 characters without control characters"
                ));
            }
            if !v.is_empty() && jwks.is_none() {
                return Err(format!(
                    "{flag} `{v}` is set but no --sidecar-jwks-volume is: only verified tokens \
                     are checked; give the key set volume or leave {flag} empty"
                ));
            }
        }
        if unverified && jwks.is_some() {
            return Err(
                "--sidecar-jwt-unverified and --sidecar-jwks-volume are both set; choose \
                        one (verify with the JWKS, or read claims unverified behind a \
                        verifying gateway): the sidecar refuses both"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{EscapedSlashes, InjectConfig, InjectorArgs};

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        a: InjectorArgs,
    }

    fn config(args: &[&str]) -> Result<InjectConfig, String> {
        let w = Wrap::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        w.a.validate()?;
        Ok(w.a.inject_config())
    }

    const SECRET: &str = r#"{"secret":{"secretName":"jwks"}}"#;

    #[test]
    fn a_jwks_volume_and_its_settings_reach_the_config() {
        let c = config(&[
            "--sidecar-jwks-volume",
            SECRET,
            "--sidecar-jwt-algorithms",
            "ES384, EdDSA",
            "--sidecar-jwt-issuer",
            "https://idp.example",
            "--sidecar-jwt-audience",
            "orders",
            "--sidecar-developer-claim",
            "sub",
        ])
        .expect("valid");
        let j = c.jwks.expect("jwks");
        assert_eq!(j.source["secret"]["secretName"], "jwks");
        assert_eq!(j.file, "jwks.json");
        for (k, v) in [
            ("PALISADE_JWT_ALGORITHMS", "ES384, EdDSA"),
            ("PALISADE_JWT_ISSUER", "https://idp.example"),
            ("PALISADE_JWT_AUDIENCE", "orders"),
            ("PALISADE_DEVELOPER_CLAIM", "sub"),
        ] {
            assert!(c.identity.contains(&(k.into(), v.into())), "{k}");
        }
        assert!(
            !c.identity
                .iter()
                .any(|(k, _)| k == "PALISADE_JWT_UNVERIFIED"),
            "verified mode"
        );
        let cm = r#"{"configMap":{"name":"jwks"}}"#;
        let c = config(&[
            "--sidecar-jwks-volume",
            cm,
            "--sidecar-jwks-file",
            "a/k.json",
        ]);
        assert_eq!(c.expect("configMap").jwks.expect("jwks").file, "a/k.json");
    }

    #[test]
    fn unverified_claims_with_a_jwks_volume_are_refused() {
        let e = config(&["--sidecar-jwks-volume", SECRET, "--sidecar-jwt-unverified"])
            .expect_err("both");
        assert!(
            e.contains("--sidecar-jwt-unverified and --sidecar-jwks-volume"),
            "{e}"
        );
        // Each alone is fine.
        config(&["--sidecar-jwt-unverified"]).expect("unverified alone");
        config(&["--sidecar-jwks-volume", SECRET]).expect("jwks alone");
    }

    #[test]
    fn what_the_sidecar_would_refuse_is_refused_at_start() {
        let named = r#"{"name":"x","secret":{"secretName":"j"}}"#;
        for (args, want) in [
            (
                &["--sidecar-jwks-volume", "jwks"][..],
                "--sidecar-jwks-volume `jwks` is not a JSON object",
            ),
            (
                &["--sidecar-jwks-volume", named],
                "exactly one volume source",
            ),
            (
                &["--sidecar-jwks-volume", SECRET, "--sidecar-jwks-file", ""],
                "--sidecar-jwks-file is empty",
            ),
            (
                &[
                    "--sidecar-jwks-volume",
                    SECRET,
                    "--sidecar-jwks-file",
                    "../../token",
                ],
                "--sidecar-jwks-file `../../token`",
            ),
            (
                &[
                    "--sidecar-jwks-volume",
                    SECRET,
                    "--sidecar-jwt-algorithms",
                    "RS256,HS256",
                ],
                "\"HS256\" is not accepted",
            ),
            (
                &["--sidecar-jwt-algorithms", "none"],
                "\"none\" is not accepted",
            ),
            (&["--sidecar-jwt-algorithms", " , "], "is empty"),
            (
                &["--sidecar-jwt-issuer", "https://idp.example"],
                "no --sidecar-jwks-volume",
            ),
            (
                &[
                    "--sidecar-jwt-audience",
                    "orders",
                    "--sidecar-jwt-unverified",
                ],
                "--sidecar-jwt-audience `orders` is set but no --sidecar-jwks-volume",
            ),
        ] {
            let e = config(args).expect_err("refused");
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn path_flags_take_the_sidecar_values() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.escaped_slashes, EscapedSlashes::Reject);
        assert!(!c.forward_original_path);
        let c = config(&[
            "--sidecar-escaped-slashes",
            "keep",
            "--sidecar-forward-original-path",
        ])
        .expect("keep");
        assert_eq!(c.escaped_slashes, EscapedSlashes::Keep);
        assert!(c.forward_original_path);
        assert_eq!(EscapedSlashes::Unescape.as_str(), "unescape");
        let e = config(&["--sidecar-escaped-slashes", "allow"]).expect_err("not an action");
        assert!(e.contains("reject, keep, unescape"), "{e}");
    }
}
