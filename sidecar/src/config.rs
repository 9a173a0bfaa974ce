//! Command-line flags and environment variables of the sidecar, validated before anything
//! binds. A bad value exits with status 64 (EX_USAGE) and a message that says what to fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use palisade_policy::TrustedProxies;
use palisade_policy::cli::parse_duration;

/// Exit status for a configuration error (sysexits.h `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Smallest header buffer hyper accepts; smaller values are a configuration error.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Every flag also reads the environment variable named in `env`.
#[derive(Debug, Clone, Parser)]
#[command(name = "palisade-sidecar", version, about = "Palisade sidecar proxy")]
pub struct Config {
    /// Address the proxy listens on (the port the Service targets).
    #[arg(long, env = "PALISADE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the admin server (/metrics, /live, /ready).
    #[arg(long, env = "PALISADE_ADMIN_LISTEN", default_value = "0.0.0.0:9901")]
    pub admin_listen: SocketAddr,
    /// Port of the application container on loopback.
    #[arg(long, env = "PALISADE_UPSTREAM_PORT")]
    pub upstream_port: u16,
    /// Loopback address of the application (127.0.0.1 or ::1).
    #[arg(long, env = "PALISADE_UPSTREAM_HOST", default_value = "127.0.0.1")]
    pub upstream_host: std::net::IpAddr,

    /// Largest request head (request line + headers) in bytes; larger → 431. At least 8192.
    #[arg(long, env = "PALISADE_MAX_HEADER_BYTES", default_value_t = 16384)]
    pub max_header_bytes: usize,
    /// Most header fields in one request; more → 431.
    #[arg(long, env = "PALISADE_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// Longest request target (path + query) in bytes; longer → 414.
    #[arg(long, env = "PALISADE_MAX_URI_BYTES", default_value_t = 8192)]
    pub max_uri_bytes: usize,
    /// Time a client has to send a complete request head (also bounds the HTTP/1.1
    /// keep-alive wait between requests).
    #[arg(long, env = "PALISADE_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A client connection unused for this long is closed: no bytes either way (HTTP/1.x),
    /// no request or response frames either way (HTTP/2; pings are not use).
    #[arg(long, env = "PALISADE_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Most concurrent streams of one HTTP/2 client connection; also the most upstream
    /// connections one HTTP/2 client connection holds at once.
    #[arg(long, env = "PALISADE_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,
    /// An upgraded (WebSocket) connection with no bytes either way for this long is closed.
    #[arg(long, env = "PALISADE_TUNNEL_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub tunnel_idle_timeout: Duration,
    /// Most connections open at once on the admin port; one more is answered 503.
    #[arg(long, env = "PALISADE_ADMIN_MAX_CONNECTIONS", default_value_t = 32)]
    pub admin_max_connections: usize,
    /// On the admin port: time to send a request head, and the longest a connection may sit
    /// unused.
    #[arg(long, env = "PALISADE_ADMIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub admin_timeout: Duration,
    /// Time to open a connection to the application.
    #[arg(long, env = "PALISADE_UPSTREAM_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Time the application has to send its response head; longer → 504.
    #[arg(long, env = "PALISADE_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Idle keep-alive connections to the application are closed after this long.
    #[arg(long, env = "PALISADE_UPSTREAM_POOL_IDLE", default_value = "90s", value_parser = parse_duration)]
    pub upstream_pool_idle: Duration,
    /// On SIGTERM: stop accepting, finish in-flight requests within this grace period.
    #[arg(long, env = "PALISADE_DRAIN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub drain_grace: Duration,

    #[command(flatten)]
    pub identify: IdentifyConfig,
    #[command(flatten)]
    pub policy: PolicyConfig,
    #[command(flatten)]
    pub detection: DetectionConfig,

    /// Log format: `json` or `plain`. The filter comes from RUST_LOG (default `info`).
    #[arg(long, env = "PALISADE_LOG_FORMAT", default_value = "json", value_parser = ["json", "plain"])]
    pub log_format: String,

    /// Threads that serve requests; 0: one per CPU the process may use (its affinity and
    /// cgroup CPU limit). With one, the sidecar runs a single-threaded runtime (no work
    /// stealing, no per-poll timing), as linkerd2-proxy does on one core.
    #[arg(long, env = "PALISADE_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
}

/// How the client is identified.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentifyConfig {
    /// Proxies the sidecar believes (CIDRs or addresses, comma-separated): only from a peer
    /// inside them are X-Forwarded-For and the identity headers read. Empty (default): no one;
    /// the client is the TCP peer. A namespace's `palisade.dev/trusted-proxies` annotation,
    /// carried in the bundle, replaces this list.
    #[arg(
        long,
        env = "PALISADE_TRUSTED_PROXIES",
        default_value = "",
        value_parser = parse_trusted_proxies
    )]
    pub trusted_proxies: TrustedProxies,
    /// Most X-Forwarded-For entries read from the right (trusted proxies skipped); 0
    /// (default): no bound. Has no effect for a peer outside the trusted proxies.
    #[arg(long, env = "PALISADE_TRUSTED_HOPS", default_value_t = 0)]
    pub trusted_hops: usize,
    /// Header carrying the API key (empty: none).
    #[arg(long, env = "PALISADE_API_KEY_HEADER", default_value = "x-api-key")]
    pub api_key_header: String,
    /// Query parameter carrying the API key (empty: none).
    #[arg(long, env = "PALISADE_API_KEY_QUERY", default_value = "apikey")]
    pub api_key_query: String,
    #[command(flatten)]
    pub credentials: CredentialConfig,
    /// Header carrying the developer (empty: none).
    #[arg(long, env = "PALISADE_DEVELOPER_HEADER", default_value = "x-developer")]
    pub developer_header: String,
    /// Header carrying the developer app (empty: none).
    #[arg(long, env = "PALISADE_APP_HEADER", default_value = "x-developer-app")]
    pub app_header: String,
    /// Header carrying the API product (empty: none).
    #[arg(long, env = "PALISADE_PRODUCT_HEADER", default_value = "x-api-product")]
    pub product_header: String,
    /// JWT claim of the Bearer token naming the developer (read only from a verified token,
    /// see --jwks-path, or with --jwt-unverified).
    #[arg(long, env = "PALISADE_DEVELOPER_CLAIM", default_value = "")]
    pub developer_claim: String,
    /// JWT claim naming the developer app.
    #[arg(long, env = "PALISADE_APP_CLAIM", default_value = "")]
    pub app_claim: String,
    /// JWT claim naming the API product.
    #[arg(long, env = "PALISADE_PRODUCT_CLAIM", default_value = "")]
    pub product_claim: String,
    /// JSON Web Key Set (a file, e.g. mounted from a Secret or ConfigMap) that Bearer tokens
    /// must verify against before their claims are read; re-read every --bundle-poll.
    #[arg(long, env = "PALISADE_JWKS_PATH")]
    pub jwks_path: Option<PathBuf>,
    /// Signature algorithms accepted (comma-separated; RS*, PS*, ES256, ES384, EdDSA; never
    /// none or HS*).
    #[arg(long, env = "PALISADE_JWT_ALGORITHMS", default_value = "RS256,ES256")]
    pub jwt_algorithms: String,
    /// Required `iss` of verified tokens (empty: not checked).
    #[arg(long, env = "PALISADE_JWT_ISSUER", default_value = "")]
    pub jwt_issuer: String,
    /// Required `aud` of verified tokens (empty: not checked, and tokens naming an audience
    /// are accepted).
    #[arg(long, env = "PALISADE_JWT_AUDIENCE", default_value = "")]
    pub jwt_audience: String,
    /// Read JWT claims WITHOUT verifying the signature (only behind a gateway that verifies
    /// tokens): warned about at start and named in metrics and the decision log.
    #[arg(long, env = "PALISADE_JWT_UNVERIFIED")]
    pub jwt_unverified: bool,
    /// MaxMind-format country database (GeoIP2/GeoLite2-Country or City). Absent: region
    /// conditions never match.
    #[arg(long, env = "PALISADE_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    /// MaxMind-format ASN database (GeoLite2-ASN). Absent: ASN conditions never match.
    #[arg(long, env = "PALISADE_ASN_DB")]
    pub asn_db: Option<PathBuf>,
}

/// How access tokens and method overrides are read, and what an ambiguous request gets
/// (docs/sidecar.md, "Keys, tokens and methods").
#[derive(Debug, Clone, clap::Args)]
pub struct CredentialConfig {
    /// Query parameter carrying an OAuth access token (RFC 6750 §2.3) (empty: none).
    #[arg(
        long,
        env = "PALISADE_ACCESS_TOKEN_QUERY",
        default_value = "access_token"
    )]
    pub access_token_query: String,
    /// Headers carrying a method override, comma-separated (empty: none). Each value counts
    /// as a method the request may be routed as, besides its own.
    #[arg(
        long,
        env = "PALISADE_METHOD_OVERRIDE_HEADERS",
        default_value = "x-http-method-override,x-http-method,x-method-override"
    )]
    pub method_override_headers: String,
    /// Query parameter carrying a method override (empty: none).
    #[arg(
        long,
        env = "PALISADE_METHOD_OVERRIDE_QUERY",
        default_value = "_method"
    )]
    pub method_override_query: String,
    /// Answer 400 to a request carrying two different API keys, two different access tokens
    /// (or a token both in `Authorization` and in the query) or two different method
    /// overrides, instead of enforcing the strictest reading of it.
    #[arg(long, env = "PALISADE_REJECT_CONFLICTING_CREDENTIALS")]
    pub reject_conflicting_credentials: bool,
}

/// Where the policy comes from and how it is applied.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyConfig {
    /// Mounted bundle (a file, or the directory of the mounted ConfigMap), watched for changes.
    #[arg(long, env = "PALISADE_BUNDLE_PATH")]
    pub bundle_path: Option<PathBuf>,
    /// Name of the bundle manifest ConfigMap to watch through the Kubernetes API.
    #[arg(long, env = "PALISADE_BUNDLE_CONFIGMAP")]
    pub bundle_configmap: Option<String>,
    /// The operator's bundle-signing public keys (base64 Ed25519, comma-separated; the
    /// injector sets them). When set, a manifest or detected-client document is applied only
    /// if a key of this list, or one endorsed by it in the published chain (`keys.json`),
    /// signed it. Unset: signatures are not checked (a warning at start).
    #[arg(long, env = "PALISADE_BUNDLE_KEYS")]
    pub bundle_keys: Option<String>,
    /// Name of the detected-client ConfigMap (binaryData key `detected`), watched with the bundle.
    #[arg(
        long,
        env = "PALISADE_DETECTED_CONFIGMAP",
        default_value = "palisade-detected"
    )]
    pub detected_configmap: String,
    /// Namespace of the bundle ConfigMaps (the pod's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// How often the mounted bundle is checked for changes.
    #[arg(long, env = "PALISADE_BUNDLE_POLL", default_value = "2s", value_parser = parse_duration)]
    pub bundle_poll: Duration,
    /// Without a bundle yet, answer 503 instead of forwarding (default: fail open).
    #[arg(long, env = "PALISADE_FAIL_CLOSED")]
    pub fail_closed: bool,
    /// Report Ready (`/ready` 200) before a bundle is loaded, as earlier releases did: the
    /// pod then takes traffic that no policy protects. Default: not Ready until a first
    /// valid bundle is in force.
    #[arg(long, env = "PALISADE_READY_WITHOUT_POLICY")]
    pub ready_without_policy: bool,
    /// Start-up grace: after this long without a bundle the sidecar says so (an error in
    /// its log, `palisade_sidecar_policy_missing` 1) until one is loaded.
    #[arg(long, env = "PALISADE_POLICY_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub policy_grace: Duration,
    /// Clients each rate-limit action tracks at once (cells of its table, 8 bytes each,
    /// rounded down to a power of two, at least 1024); all the tables together hold at most
    /// 4,194,304 cells (32 MiB), shared out when there are many rate-limit actions.
    #[arg(long, env = "PALISADE_RATE_LIMIT_CLIENTS", default_value_t = crate::limit::DEFAULT_CELLS)]
    pub rate_limit_clients: usize,
    /// Service-account token the API watch authenticates with (audience: the API server).
    /// The injector projects one into the sidecar, so the watch works with the pod's
    /// `automountServiceAccountToken: false`. The server is
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`. Unset: KUBECONFIG or the
    /// pod's automounted token.
    #[arg(long, env = "PALISADE_API_TOKEN_PATH")]
    pub api_token_path: Option<PathBuf>,
    /// CA bundle (PEM) the API server's certificate is verified with, with --api-token-path.
    #[arg(long, env = "PALISADE_API_CA_PATH")]
    pub api_ca_path: Option<PathBuf>,
    /// Observe mode: evaluate and count, never deny or flag.
    #[arg(long, env = "PALISADE_OBSERVE")]
    pub observe: bool,
    /// Pod labels that workload selectors match: `k=v,k=v`, or the text of a downward-API
    /// labels file (`k="v"` per line). Read from --pod-labels-file when that is set.
    #[arg(long, env = "PALISADE_POD_LABELS", default_value = "")]
    pub pod_labels: String,
    /// Downward-API file with the pod's labels (e.g. /etc/podinfo/labels).
    #[arg(long, env = "PALISADE_POD_LABELS_FILE")]
    pub pod_labels_file: Option<PathBuf>,
    /// Add `palisade-decision` response headers naming the deciding action.
    #[arg(long, env = "PALISADE_DEBUG_HEADERS")]
    pub debug_headers: bool,
    /// `%2F`, `%5C` and `\` in a path: `reject` (400), `keep` (data inside a segment) or
    /// `unescape` (each becomes `/`). See "Path normalisation" in docs/sidecar.md.
    #[arg(long, env = "PALISADE_ESCAPED_SLASHES", default_value = "reject")]
    pub escaped_slashes: palisade_policy::path::EscapedSlashes,
    /// Forward the path as the client sent it instead of the normalised path (path
    /// conditions still match the normalised path).
    #[arg(long, env = "PALISADE_FORWARD_ORIGINAL_PATH")]
    pub forward_original_path: bool,
}

/// Counting for detection and reporting to the operator's collector.
#[derive(Debug, Clone, clap::Args)]
pub struct DetectionConfig {
    /// `host:port` of the operator's detection collector. Absent: nothing is counted or sent.
    #[arg(long, env = "PALISADE_COLLECTOR_ADDR")]
    pub collector_addr: Option<String>,
    /// CA bundle (PEM text) the collector's HTTPS certificate is verified with; reports go
    /// over HTTPS when it is set, over plain HTTP otherwise. The injector sets it.
    #[arg(long, env = "PALISADE_COLLECTOR_CA", hide_env_values = true)]
    pub collector_ca: Option<String>,
    /// The pod's projected service-account token (audience `palisade`), sent with each report.
    #[arg(
        long,
        env = "PALISADE_TOKEN_PATH",
        default_value = "/var/run/secrets/palisade/token"
    )]
    pub token_path: PathBuf,
    /// This pod's name, named in reports.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// The protected workload (Deployment…) this pod belongs to, named in reports and
    /// incidents. Default: the pod name without its two last `-` segments.
    #[arg(long, env = "PALISADE_WORKLOAD", default_value = "")]
    pub workload: String,
    /// How often a window summary is sent.
    #[arg(long, env = "PALISADE_REPORT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub report_interval: Duration,
    /// Window summaries that could not be delivered are kept for a later try, up to this many
    /// bytes of JSON (the oldest are dropped first).
    #[arg(long, env = "PALISADE_REPORT_BACKLOG_BYTES", default_value_t = 8 << 20)]
    pub report_backlog_bytes: usize,
    /// Path of the OAuth token endpoint (calls to it feed the OAuth Abuser rule).
    #[arg(long, env = "PALISADE_TOKEN_ENDPOINT", default_value = "/oauth/token")]
    pub token_endpoint: String,
}

fn parse_trusted_proxies(s: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(s)
}

impl IdentifyConfig {
    /// True when a JWT claim names the developer, app or product.
    pub fn wants_claims(&self) -> bool {
        !(self.developer_claim.is_empty()
            && self.app_claim.is_empty()
            && self.product_claim.is_empty())
    }

    /// The JWT settings (algorithms that do not parse, refused by `Config::validate`, are
    /// left out).
    pub fn jwt(&self) -> crate::jwt::JwtSettings {
        crate::jwt::JwtSettings {
            jwks_path: self.jwks_path.clone(),
            algorithms: crate::jwt::parse_algorithms(&self.jwt_algorithms).unwrap_or_default(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            unverified: self.jwt_unverified,
        }
    }
}

impl DetectionConfig {
    /// The workload name reports carry.
    pub fn workload_name(&self) -> String {
        if !self.workload.is_empty() {
            return self.workload.clone();
        }
        let parts: Vec<&str> = self.pod_name.rsplitn(3, '-').collect();
        match parts.as_slice() {
            [_, _, base] => (*base).to_owned(),
            _ => self.pod_name.clone(),
        }
    }
}

/// Every flag that an environment variable sets: `variable → (long flag, takes a value)`. How
/// the environment the injector writes maps onto the sidecar's flags (the operator's contract
/// test and `kubectl palisade explain --pod` read a pod's sidecar this way).
pub fn env_flags() -> std::collections::BTreeMap<String, (String, bool)> {
    use clap::CommandFactory as _;
    Config::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            Some((
                env,
                (a.get_long()?.to_owned(), a.get_action().takes_values()),
            ))
        })
        .collect()
}

impl Config {
    /// The number of request-serving threads [`Self::worker_threads`] asks for.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }

    /// Parses flags and environment and validates them; on error prints why and returns the
    /// exit code to use.
    pub fn load() -> Result<Self, ExitCode> {
        let cfg = Self::try_parse().map_err(|e| {
            let usage = e.use_stderr();
            let _ = e.print();
            ExitCode::from(if usage { EXIT_USAGE } else { 0 })
        })?;
        cfg.validate().map_err(|msg| {
            eprintln!("palisade-sidecar: invalid configuration: {msg}");
            ExitCode::from(EXIT_USAGE)
        })?;
        Ok(cfg)
    }

    /// Checks what clap cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(format!(
                "--max-header-bytes {} is below the minimum {MIN_HEADER_BYTES}; raise it",
                self.max_header_bytes
            ));
        }
        if self.max_uri_bytes == 0 || self.max_uri_bytes > self.max_header_bytes {
            return Err(format!(
                "--max-uri-bytes {} must be between 1 and --max-header-bytes ({})",
                self.max_uri_bytes, self.max_header_bytes
            ));
        }
        if self.upstream_port == 0 {
            return Err("--upstream-port 0 is not a port; set the application's port".into());
        }
        if let Some(ca) = self
            .detection
            .collector_ca
            .as_deref()
            .filter(|c| !c.is_empty())
        {
            crate::report::tls_config(ca).map_err(|e| {
                format!("--collector-ca (PALISADE_COLLECTOR_CA): {e}; pass the collector's CA bundle as PEM")
            })?;
        }
        if let Some(keys) = self.policy.bundle_keys.as_deref() {
            palisade_policy::sign::Verifier::parse(keys).map_err(|e| {
                format!("--bundle-keys (PALISADE_BUNDLE_KEYS): {e}; pass the operator's public keys as the injector does")
            })?;
        }
        if !self.upstream_host.is_loopback() {
            return Err(format!(
                "--upstream-host {} is not a loopback address; use 127.0.0.1 or ::1",
                self.upstream_host
            ));
        }
        if self.listen.port() != 0 && self.listen.port() == self.admin_listen.port() {
            return Err("--listen and --admin-listen use the same port; pick two".into());
        }
        let nonzero = [
            ("--header-read-timeout", self.header_read_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--tunnel-idle-timeout", self.tunnel_idle_timeout),
            ("--admin-timeout", self.admin_timeout),
            ("--upstream-connect-timeout", self.upstream_connect_timeout),
            ("--upstream-timeout", self.upstream_timeout),
        ];
        if let Some((flag, _)) = nonzero.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{flag} must be greater than 0"));
        }
        if self.max_concurrent_streams == 0 {
            return Err("--max-concurrent-streams must be at least 1".into());
        }
        if self.admin_max_connections == 0 {
            return Err(
                "--admin-max-connections must be at least 1 (probes and scrapes need one)".into(),
            );
        }
        if self.policy.api_token_path.is_some() != self.policy.api_ca_path.is_some() {
            return Err(
                "--api-token-path and --api-ca-path go together; set both (the injector does)"
                    .into(),
            );
        }
        if let Some(file) = &self.policy.pod_labels_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                format!(
                    "--pod-labels-file {}: {e}; mount the downward API labels there",
                    file.display()
                )
            })?;
            crate::store::parse_labels(&text).map_err(|e| format!("--pod-labels-file: {e}"))?;
        }
        crate::store::parse_labels(&self.policy.pod_labels)
            .map_err(|e| format!("--pod-labels: {e}"))?;
        let id = &self.identify;
        for (flag, value) in [
            ("--api-key-header", &id.api_key_header),
            ("--developer-header", &id.developer_header),
            ("--app-header", &id.app_header),
            ("--product-header", &id.product_header),
        ] {
            crate::identify::header_name(flag, value)?;
        }
        crate::credentials::header_names(
            "--method-override-headers",
            &id.credentials.method_override_headers,
        )?;
        crate::jwt::parse_algorithms(&id.jwt_algorithms)
            .map_err(|e| format!("--jwt-algorithms {:?}: {e}", id.jwt_algorithms))?;
        if id.jwt_unverified && id.jwks_path.is_some() {
            return Err(
                "--jwt-unverified and --jwks-path are both set; choose one (verify with the \
                 JWKS, or read claims unverified behind a verifying gateway)"
                    .into(),
            );
        }
        if self.identify.trusted_hops > 16 {
            return Err(format!(
                "--trusted-hops {} is more than 16; count only proxies you operate",
                self.identify.trusted_hops
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["palisade-sidecar", "--upstream-port", "8081"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("parses")
    }

    #[test]
    fn duration_flags_take_the_shared_syntax() {
        let c = parse(&["--header-read-timeout", "250ms", "--report-interval", "2m"]);
        assert_eq!(c.header_read_timeout, Duration::from_millis(250));
        assert_eq!(c.detection.report_interval, Duration::from_secs(120));
        let err = Config::try_parse_from([
            "palisade-sidecar",
            "--upstream-port",
            "8081",
            "--idle-timeout",
            "2 weeks",
        ])
        .expect_err("bad unit");
        assert!(err.to_string().contains("--idle-timeout"), "{err}");
        assert!(err.to_string().contains("use ms, s, m or h"), "{err}");
    }

    #[test]
    fn escaped_slashes_takes_one_of_three_actions() {
        use palisade_policy::path::EscapedSlashes;
        assert_eq!(parse(&[]).policy.escaped_slashes, EscapedSlashes::Reject);
        let c = parse(&["--escaped-slashes", "unescape", "--forward-original-path"]);
        assert_eq!(c.policy.escaped_slashes, EscapedSlashes::Unescape);
        assert!(c.policy.forward_original_path);
        let err = Config::try_parse_from([
            "palisade-sidecar",
            "--upstream-port",
            "8081",
            "--escaped-slashes",
            "allow",
        ])
        .expect_err("not an action");
        assert!(err.to_string().contains("reject, keep, unescape"), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(parse(&[]).validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_values() {
        let too_small = parse(&["--max-header-bytes", "100"]).validate();
        assert!(
            too_small
                .expect_err("rejected")
                .contains("--max-header-bytes")
        );
        let remote = parse(&["--upstream-host", "10.0.0.1"]).validate();
        assert!(remote.expect_err("rejected").contains("loopback"));
        let zero = parse(&["--upstream-timeout", "0s"]).validate();
        assert!(zero.expect_err("rejected").contains("--upstream-timeout"));
        let header = parse(&["--developer-header", "x dev"]).validate();
        assert_eq!(
            header.expect_err("rejected"),
            r#"--developer-header "x dev" is not a valid HTTP header name"#
        );
        assert_eq!(parse(&["--api-key-header", ""]).validate(), Ok(()));
        let hs = parse(&["--jwt-algorithms", "RS256,HS256"]).validate();
        assert!(hs.expect_err("rejected").contains("HMAC"));
        let both = parse(&["--jwt-unverified", "--jwks-path", "/k.json"]).validate();
        assert!(both.expect_err("rejected").contains("choose one"));
        let keys = parse(&["--bundle-keys", "not-a-key"]).validate();
        let keys = keys.expect_err("rejected");
        assert!(
            keys.starts_with("--bundle-keys (PALISADE_BUNDLE_KEYS): a public key is malformed"),
            "{keys}"
        );
        for (flag, value) in [
            ("--max-concurrent-streams", "0"),
            ("--admin-max-connections", "0"),
            ("--tunnel-idle-timeout", "0s"),
            ("--admin-timeout", "0ms"),
        ] {
            let err = parse(&[flag, value]).validate().expect_err("rejected");
            assert!(err.contains(flag), "{flag}: {err}");
        }
        let overrides = parse(&["--method-override-headers", "x-ok, x bad"]).validate();
        assert_eq!(
            overrides.expect_err("rejected"),
            r#"--method-override-headers: "x bad" is not a valid HTTP header name"#
        );
        assert_eq!(parse(&["--method-override-headers", ""]).validate(), Ok(()));
    }
}
