//! The injector flags that configure how injected sidecars identify clients (headers, JWT
//! claims) and the GeoIP volume they read region and ASN databases from; each maps to the
//! sidecar's own `PALISADE_*` environment.

use serde_json::{Map, Value};

/// How injected sidecars identify clients: the sidecar's identification flags, passed to
/// every injected sidecar as its `PALISADE_*` environment (same defaults as the sidecar).
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// Header carrying the API key (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_API_KEY_HEADER",
        default_value = "x-api-key"
    )]
    pub sidecar_api_key_header: String,
    /// Query parameter carrying the API key (empty: none).
    #[arg(long, env = "PALISADE_SIDECAR_API_KEY_QUERY", default_value = "apikey")]
    pub sidecar_api_key_query: String,
    /// Query parameter carrying an OAuth access token, RFC 6750 §2.3 (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_ACCESS_TOKEN_QUERY",
        default_value = "access_token"
    )]
    pub sidecar_access_token_query: String,
    /// Headers carrying a method override, comma-separated (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_METHOD_OVERRIDE_HEADERS",
        default_value = "x-http-method-override,x-http-method,x-method-override"
    )]
    pub sidecar_method_override_headers: String,
    /// Query parameter carrying a method override (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_METHOD_OVERRIDE_QUERY",
        default_value = "_method"
    )]
    pub sidecar_method_override_query: String,
    /// Answer 400 to requests with conflicting API keys, tokens or method overrides instead
    /// of enforcing their strictest reading.
    #[arg(long, env = "PALISADE_SIDECAR_REJECT_CONFLICTING_CREDENTIALS")]
    pub sidecar_reject_conflicting_credentials: bool,
    /// Header naming the developer (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_DEVELOPER_HEADER",
        default_value = "x-developer"
    )]
    pub sidecar_developer_header: String,
    /// Header naming the developer app (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_APP_HEADER",
        default_value = "x-developer-app"
    )]
    pub sidecar_app_header: String,
    /// Header naming the API product (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_PRODUCT_HEADER",
        default_value = "x-api-product"
    )]
    pub sidecar_product_header: String,
    /// Proxies the sidecars believe, as CIDRs separated by commas: only from a peer inside
    /// them are X-Forwarded-For and the identity headers read (empty: no one).
    #[arg(long, env = "PALISADE_SIDECAR_TRUSTED_PROXIES", default_value = "")]
    pub sidecar_trusted_proxies: String,
    /// Injected sidecars read JWT claims WITHOUT verifying the signature (only behind a gateway
    /// that verifies tokens; the sidecars warn about it and name it in their metrics).
    /// Without it, claims configured below are read only from tokens verified against
    /// --sidecar-jwks-volume (refused together with it).
    #[arg(long, env = "PALISADE_SIDECAR_JWT_UNVERIFIED")]
    pub sidecar_jwt_unverified: bool,
    /// JWT claim of the Bearer token naming the developer (empty: none).
    #[arg(long, env = "PALISADE_SIDECAR_DEVELOPER_CLAIM", default_value = "")]
    pub sidecar_developer_claim: String,
    /// JWT claim naming the developer app (empty: none).
    #[arg(long, env = "PALISADE_SIDECAR_APP_CLAIM", default_value = "")]
    pub sidecar_app_claim: String,
    /// JWT claim naming the API product (empty: none).
    #[arg(long, env = "PALISADE_SIDECAR_PRODUCT_CLAIM", default_value = "")]
    pub sidecar_product_claim: String,
}

/// The MaxMind-format databases mounted into injected sidecars for region and ASN conditions.
#[derive(Debug, Clone, clap::Args)]
pub struct GeoIpArgs {
    /// Volume source holding the databases, as JSON, e.g. `{"configMap":{"name":"geoip"}}`,
    /// `{"persistentVolumeClaim":{"claimName":"geoip","readOnly":true}}` or
    /// `{"hostPath":{"path":"/var/lib/geoip","type":"Directory"}}`. Mounted read-only at
    /// /etc/palisade/geoip in every injected sidecar. Empty: no GeoIP volume.
    #[arg(long, env = "PALISADE_SIDECAR_GEOIP_VOLUME", default_value = "")]
    pub sidecar_geoip_volume: String,
    /// Country (or City) database file in that volume (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_GEOIP_COUNTRY_FILE",
        default_value = "GeoLite2-Country.mmdb"
    )]
    pub sidecar_geoip_country_file: String,
    /// ASN database file in that volume (empty: none).
    #[arg(
        long,
        env = "PALISADE_SIDECAR_GEOIP_ASN_FILE",
        default_value = "GeoLite2-ASN.mmdb"
    )]
    pub sidecar_geoip_asn_file: String,
}

/// The GeoIP volume of the injected sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoIp {
    /// The volume source (`{"configMap": {…}}`…), one key.
    pub source: Map<String, Value>,
    /// Country database file in the volume (empty: none).
    pub country_file: String,
    /// ASN database file in the volume (empty: none).
    pub asn_file: String,
}

impl IdentityArgs {
    /// `(flag, sidecar env, value)` of each setting.
    fn settings(&self) -> [(&'static str, &'static str, &str); 12] {
        let reject = match self.sidecar_reject_conflicting_credentials {
            true => "true",
            false => "false",
        };
        [
            (
                "--sidecar-api-key-header",
                "PALISADE_API_KEY_HEADER",
                &self.sidecar_api_key_header,
            ),
            (
                "--sidecar-api-key-query",
                "PALISADE_API_KEY_QUERY",
                &self.sidecar_api_key_query,
            ),
            (
                "--sidecar-access-token-query",
                "PALISADE_ACCESS_TOKEN_QUERY",
                &self.sidecar_access_token_query,
            ),
            (
                "--sidecar-method-override-headers",
                "PALISADE_METHOD_OVERRIDE_HEADERS",
                &self.sidecar_method_override_headers,
            ),
            (
                "--sidecar-method-override-query",
                "PALISADE_METHOD_OVERRIDE_QUERY",
                &self.sidecar_method_override_query,
            ),
            (
                "--sidecar-reject-conflicting-credentials",
                "PALISADE_REJECT_CONFLICTING_CREDENTIALS",
                reject,
            ),
            (
                "--sidecar-developer-header",
                "PALISADE_DEVELOPER_HEADER",
                &self.sidecar_developer_header,
            ),
            (
                "--sidecar-app-header",
                "PALISADE_APP_HEADER",
                &self.sidecar_app_header,
            ),
            (
                "--sidecar-product-header",
                "PALISADE_PRODUCT_HEADER",
                &self.sidecar_product_header,
            ),
            (
                "--sidecar-developer-claim",
                "PALISADE_DEVELOPER_CLAIM",
                &self.sidecar_developer_claim,
            ),
            (
                "--sidecar-app-claim",
                "PALISADE_APP_CLAIM",
                &self.sidecar_app_claim,
            ),
            (
                "--sidecar-product-claim",
                "PALISADE_PRODUCT_CLAIM",
                &self.sidecar_product_claim,
            ),
        ]
    }

    /// The sidecar's environment, every setting explicit (an empty value turns it off).
    pub(super) fn env(&self) -> Vec<(String, String)> {
        // validate() has rejected a list that does not parse before the injector starts.
        let trusted = palisade_policy::TrustedProxies::parse(&self.sidecar_trusted_proxies)
            .unwrap_or_default();
        self.settings()
            .iter()
            .map(|(_, env, v)| ((*env).to_owned(), (*v).to_owned()))
            .chain([("PALISADE_TRUSTED_PROXIES".to_owned(), trusted.to_string())])
            .chain(
                self.sidecar_jwt_unverified
                    .then(|| ("PALISADE_JWT_UNVERIFIED".to_owned(), "true".to_owned())),
            )
            .collect()
    }

    /// Header names must be HTTP tokens (lowercase, as HTTP/2 sends them; a `-headers` flag a
    /// comma-separated list of them); claims and query parameters printable ASCII without
    /// spaces.
    pub(super) fn validate(&self) -> Result<(), String> {
        for (flag, _, v) in self.settings() {
            let list = flag.ends_with("-headers");
            let header = list || flag.ends_with("-header");
            let ok = |c: char| {
                if header {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || "-_.!#$%&'*+^`|~".contains(c)
                        || (list && c == ',')
                } else {
                    c.is_ascii_graphic()
                }
            };
            if v.len() > 256 || !v.chars().all(ok) {
                let what = if header {
                    "a lowercase HTTP header name like x-api-key"
                } else {
                    "at most 256 printable characters without spaces"
                };
                return Err(format!("{flag} `{v}` is not {what} (empty: none)"));
            }
        }
        palisade_policy::TrustedProxies::parse(&self.sidecar_trusted_proxies)
            .map(drop)
            .map_err(|e| format!("--sidecar-trusted-proxies: {e}"))
    }
}

impl GeoIpArgs {
    /// The GeoIP volume, `None` without `--sidecar-geoip-volume`; the error says what to fix.
    pub fn parse(&self) -> Result<Option<GeoIp>, String> {
        let text = self.sidecar_geoip_volume.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let source = volume_source("--sidecar-geoip-volume", text, "geoip")?;
        for (flag, file) in [
            (
                "--sidecar-geoip-country-file",
                &self.sidecar_geoip_country_file,
            ),
            ("--sidecar-geoip-asn-file", &self.sidecar_geoip_asn_file),
        ] {
            file_inside(flag, file)?;
        }
        if self.sidecar_geoip_country_file.is_empty() && self.sidecar_geoip_asn_file.is_empty() {
            return Err(
                "--sidecar-geoip-volume is set but --sidecar-geoip-country-file and \
                        --sidecar-geoip-asn-file are both empty; name a database file"
                    .into(),
            );
        }
        Ok(Some(GeoIp {
            source,
            country_file: self.sidecar_geoip_country_file.clone(),
            asn_file: self.sidecar_geoip_asn_file.clone(),
        }))
    }
}

/// A volume source given as JSON to `flag` (`{"configMap": {…}}`…): one key, an object, no
/// `name` (the injector names the volume); `example` names the ConfigMap of the example.
pub(super) fn volume_source(
    flag: &str,
    text: &str,
    example: &str,
) -> Result<Map<String, Value>, String> {
    let example = format!(r#"{{"configMap":{{"name":"{example}"}}}}"#);
    let Ok(Value::Object(source)) = serde_json::from_str::<Value>(text) else {
        return Err(format!(
            "{flag} `{text}` is not a JSON object; give a volume source like {example}"
        ));
    };
    let keys: Vec<&String> = source.keys().collect();
    if keys.len() != 1 || keys[0] == "name" || !source[keys[0].as_str()].is_object() {
        return Err(format!(
            "{flag} must hold exactly one volume source (found keys {keys:?}), without a \
             name, like {example}"
        ));
    }
    Ok(source)
}

/// A file named by `flag` must stay inside its volume: relative, without `..`.
pub(super) fn file_inside(flag: &str, file: &str) -> Result<(), String> {
    if file.starts_with('/') || file.split('/').any(|p| p == "..") {
        return Err(format!(
            "{flag} `{file}` must be a path inside the volume (relative, without ..)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{InjectConfig, InjectorArgs};

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

    #[test]
    fn identity_defaults_mirror_the_sidecar_and_every_setting_is_passed() {
        let c = config(&[]).expect("defaults");
        let env: Vec<(&str, &str)> = c
            .identity
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [
                ("PALISADE_API_KEY_HEADER", "x-api-key"),
                ("PALISADE_API_KEY_QUERY", "apikey"),
                ("PALISADE_ACCESS_TOKEN_QUERY", "access_token"),
                (
                    "PALISADE_METHOD_OVERRIDE_HEADERS",
                    "x-http-method-override,x-http-method,x-method-override"
                ),
                ("PALISADE_METHOD_OVERRIDE_QUERY", "_method"),
                ("PALISADE_REJECT_CONFLICTING_CREDENTIALS", "false"),
                ("PALISADE_DEVELOPER_HEADER", "x-developer"),
                ("PALISADE_APP_HEADER", "x-developer-app"),
                ("PALISADE_PRODUCT_HEADER", "x-api-product"),
                ("PALISADE_DEVELOPER_CLAIM", ""),
                ("PALISADE_APP_CLAIM", ""),
                ("PALISADE_PRODUCT_CLAIM", ""),
                ("PALISADE_TRUSTED_PROXIES", ""),
                ("PALISADE_JWT_ALGORITHMS", "RS256,ES256"),
                ("PALISADE_JWT_ISSUER", ""),
                ("PALISADE_JWT_AUDIENCE", ""),
            ]
        );
        assert!(c.jwks.is_none());
        let c = config(&["--sidecar-jwt-unverified"]).expect("unverified");
        assert!(
            c.identity
                .contains(&("PALISADE_JWT_UNVERIFIED".into(), "true".into()))
        );
        let c = config(&["--sidecar-trusted-proxies", "10.0.0.0/8, 192.168.1.7"]).expect("cidrs");
        assert!(c.identity.contains(&(
            "PALISADE_TRUSTED_PROXIES".into(),
            "10.0.0.0/8,192.168.1.7/32".into()
        )));
        assert!(!c.debug_headers && c.geoip.is_none());
        let c = config(&[
            "--sidecar-developer-claim",
            "sub",
            "--sidecar-api-key-header",
            "",
            "--sidecar-debug-headers",
            "--sidecar-reject-conflicting-credentials",
        ])
        .expect("claims");
        assert!(
            c.identity
                .contains(&("PALISADE_DEVELOPER_CLAIM".into(), "sub".into()))
        );
        assert!(
            c.identity
                .contains(&("PALISADE_API_KEY_HEADER".into(), String::new()))
        );
        assert!(c.debug_headers);
        assert!(c.identity.contains(&(
            "PALISADE_REJECT_CONFLICTING_CREDENTIALS".into(),
            "true".into()
        )));
    }

    #[test]
    fn identity_rejects_what_is_not_a_header_name() {
        let e = config(&["--sidecar-developer-header", "X Developer"]).expect_err("space");
        assert!(
            e.contains("--sidecar-developer-header `X Developer`"),
            "{e}"
        );
        let e = config(&["--sidecar-app-claim", "a b"]).expect_err("space");
        assert!(e.contains("--sidecar-app-claim"), "{e}");
        let e = config(&["--sidecar-trusted-proxies", "ingress"]).expect_err("not a CIDR");
        assert!(e.contains("--sidecar-trusted-proxies"), "{e}");
        let e = config(&["--sidecar-method-override-headers", "x-a, x-b"]).expect_err("space");
        assert!(e.contains("--sidecar-method-override-headers"), "{e}");
        let e = config(&["--sidecar-api-key-header", "x-a,x-b"]).expect_err("a list");
        assert!(e.contains("--sidecar-api-key-header"), "{e}");
        config(&["--sidecar-method-override-headers", "x-a,x-b"]).expect("a list");
    }

    #[test]
    fn geoip_volume_is_one_volume_source_and_files_stay_inside_it() {
        let cm = r#"{"configMap":{"name":"geoip"}}"#;
        let c = config(&["--sidecar-geoip-volume", cm]).expect("configMap");
        let g = c.geoip.expect("geoip");
        assert_eq!(g.source["configMap"]["name"], "geoip");
        assert_eq!(g.country_file, "GeoLite2-Country.mmdb");
        assert_eq!(g.asn_file, "GeoLite2-ASN.mmdb");
        let named = r#"{"name":"x","configMap":{"name":"g"}}"#;
        let no_files = [
            "--sidecar-geoip-volume",
            cm,
            "--sidecar-geoip-country-file",
            "",
            "--sidecar-geoip-asn-file",
            "",
        ];
        for (args, want) in [
            (
                &["--sidecar-geoip-volume", "geoip"][..],
                "not a JSON object",
            ),
            (
                &["--sidecar-geoip-volume", "{}"],
                "exactly one volume source",
            ),
            (
                &["--sidecar-geoip-volume", named],
                "exactly one volume source",
            ),
            (
                &["--sidecar-geoip-volume", r#"{"configMap":"g"}"#],
                "exactly one",
            ),
            (
                &[
                    "--sidecar-geoip-volume",
                    cm,
                    "--sidecar-geoip-asn-file",
                    "../etc/x",
                ],
                "--sidecar-geoip-asn-file `../etc/x`",
            ),
            (&no_files, "both empty"),
        ] {
            let e = config(args).expect_err("rejected");
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
