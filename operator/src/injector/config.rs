//! The injector's flags (flattened into the operator's `Args`) and the [`InjectConfig`] the
//! pure patch function reads: sidecar image, resources, ports, trusted hops, fail mode,
//! client identification (headers, JWT claims), JWT verification (the JWKS volume), path
//! handling, the GeoIP volume, debug headers, and where the webhook and its certificate live.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use palisade_policy::cli::parse_duration;

pub use self::jwt::{Jwks, JwtArgs};
pub use self::path::{EscapedSlashes, PathArgs};
pub use self::sidecar::{GeoIp, GeoIpArgs, IdentityArgs};

mod jwt;
mod path;
mod sidecar;

/// Name of the injected container.
pub const SIDECAR_NAME: &str = palisade_policy::transport::SIDECAR_CONTAINER;
/// Annotation recording the injected sidecar version (also the idempotency marker).
pub const INJECTED_ANNOTATION: &str = "palisade.dev/injected";
/// Label the injector puts on every pod it injects (value `"true"`): the policy controller
/// watches exactly these pods to tell whether a `targets.workloadSelector` selects any.
pub const INJECTED_LABEL: &str = "palisade.dev/injected";
/// The opt-in / opt-out label, on the pod or its namespace.
pub const INJECT_LABEL: &str = "palisade.dev/inject";
/// Audience of the projected service-account token the sidecar presents to the collector.
pub const TOKEN_AUDIENCE: &str = "palisade";
/// Where the sidecar's own projected volume is mounted: its tokens, the cluster CA and the
/// pod's labels. It does not depend on the pod's `automountServiceAccountToken`.
pub const TOKEN_DIR: &str = "/var/run/secrets/palisade.dev/serviceaccount";
/// In [`TOKEN_DIR`]: the `palisade`-audience token the sidecar presents to the collector.
pub const REPORT_TOKEN_FILE: &str = "token";
/// In [`TOKEN_DIR`]: the API server-audience token the sidecar watches its bundle with.
pub const API_TOKEN_FILE: &str = "api-token";
/// In [`TOKEN_DIR`]: the cluster CA, from the `kube-root-ca.crt` ConfigMap.
pub const API_CA_FILE: &str = "ca.crt";
/// In [`TOKEN_DIR`]: the pod's labels (downward API, `key="value"` per line), which
/// `targets.workloadSelector` matches.
pub const LABELS_FILE: &str = "labels";
/// Lifetime of the projected tokens (the kubelet renews them at 80%).
pub const TOKEN_SECONDS: u32 = 3600;
/// Where the bundle ConfigMap is mounted (fallback when the API is away).
pub const BUNDLE_DIR: &str = "/etc/palisade/bundle";
/// Where the GeoIP volume is mounted, read-only.
pub const GEOIP_DIR: &str = "/etc/palisade/geoip";
/// Where the JWKS volume is mounted, read-only.
pub const JWKS_DIR: &str = "/etc/palisade/jwks";

/// Flags of the injector (`--inject-*`, `--webhook-*`, `--sidecar-*`).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectorArgs {
    /// Address the mutating webhook listens on (HTTPS).
    #[arg(long, env = "PALISADE_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Service in front of the webhook; the serving cert has `<service>.<namespace>.svc`.
    #[arg(
        long,
        env = "PALISADE_WEBHOOK_SERVICE",
        default_value = "palisade-webhook"
    )]
    pub webhook_service: String,
    /// MutatingWebhookConfiguration whose `caBundle` the operator keeps up to date.
    #[arg(
        long,
        env = "PALISADE_WEBHOOK_CONFIG",
        default_value = "palisade-injector"
    )]
    pub webhook_config: String,
    /// Names of the webhooks in that configuration that point at this operator.
    #[arg(
        long,
        env = "PALISADE_WEBHOOK_NAMES",
        value_delimiter = ',',
        default_value = "namespace.inject.palisade.dev,pod.inject.palisade.dev,required.inject.palisade.dev"
    )]
    pub webhook_names: Vec<String>,
    /// Secret (in the operator namespace) holding the webhook CA and serving certificate.
    #[arg(
        long,
        env = "PALISADE_WEBHOOK_SECRET",
        default_value = "palisade-webhook-cert"
    )]
    pub webhook_secret: String,
    /// `managed`: the operator generates and renews the certificate and patches `caBundle`.
    /// `secret`: it only reads `tls.crt`/`tls.key` from the Secret (e.g. cert-manager's).
    #[arg(long, env = "PALISADE_WEBHOOK_CERT", value_enum, default_value_t = CertSource::Managed)]
    pub webhook_cert: CertSource,
    /// Lifetime of a generated serving certificate (the CA lives 10 times longer).
    #[arg(long, env = "PALISADE_WEBHOOK_CERT_VALIDITY", default_value = "8760h", value_parser = parse_duration)]
    pub webhook_cert_validity: Duration,
    /// Renew a certificate when it has less than this left.
    #[arg(long, env = "PALISADE_WEBHOOK_CERT_RENEW_BEFORE", default_value = "2160h", value_parser = parse_duration)]
    pub webhook_cert_renew_before: Duration,
    /// How often every replica re-reads the Secret (the leader also renews then).
    #[arg(long, env = "PALISADE_WEBHOOK_CERT_CHECK", default_value = "30s", value_parser = parse_duration)]
    pub webhook_cert_check: Duration,

    /// Sidecar image injected into opted-in pods.
    #[arg(
        long,
        env = "PALISADE_SIDECAR_IMAGE",
        default_value = concat!("ghcr.io/palisade-dev/palisade-sidecar:", env!("CARGO_PKG_VERSION"))
    )]
    pub sidecar_image: String,
    /// `imagePullPolicy` of the injected sidecar container.
    #[arg(
        long,
        env = "PALISADE_SIDECAR_IMAGE_PULL_POLICY",
        value_enum,
        default_value_t = PullPolicy::IfNotPresent
    )]
    pub sidecar_image_pull_policy: PullPolicy,
    /// CPU request of the sidecar.
    #[arg(long, env = "PALISADE_SIDECAR_CPU_REQUEST", default_value = "50m")]
    pub sidecar_cpu_request: String,
    /// Memory request of the sidecar.
    #[arg(long, env = "PALISADE_SIDECAR_MEMORY_REQUEST", default_value = "64Mi")]
    pub sidecar_memory_request: String,
    /// Memory limit of the sidecar (empty: none).
    #[arg(long, env = "PALISADE_SIDECAR_MEMORY_LIMIT", default_value = "256Mi")]
    pub sidecar_memory_limit: String,
    /// CPU limit of the sidecar (empty: none).
    #[arg(long, env = "PALISADE_SIDECAR_CPU_LIMIT", default_value = "")]
    pub sidecar_cpu_limit: String,
    /// Port the sidecar proxy listens on; it takes the name of the app's port.
    #[arg(long, env = "PALISADE_SIDECAR_PROXY_PORT", default_value_t = 15080)]
    pub sidecar_proxy_port: u16,
    /// Port of the sidecar's admin server (/live, /ready, /metrics).
    #[arg(long, env = "PALISADE_SIDECAR_ADMIN_PORT", default_value_t = 15081)]
    pub sidecar_admin_port: u16,
    /// Names of container ports the sidecar may take over, in order of preference.
    #[arg(
        long,
        env = "PALISADE_TAKEOVER_PORTS",
        value_delimiter = ',',
        default_value = "http"
    )]
    pub takeover_ports: Vec<String>,
    /// Most X-Forwarded-For entries the sidecars read from the right (0: no bound); only
    /// from a peer inside --sidecar-trusted-proxies.
    #[arg(long, env = "PALISADE_SIDECAR_TRUSTED_HOPS", default_value_t = 0)]
    pub sidecar_trusted_hops: usize,
    /// Sidecars answer 503 until they have a policy bundle (default: forward, fail open).
    #[arg(long, env = "PALISADE_SIDECAR_FAIL_CLOSED")]
    pub sidecar_fail_closed: bool,
    /// Sidecars report Ready before they hold a policy bundle (the earlier behaviour):
    /// such a pod takes traffic that no policy protects. Default: not Ready until a bundle
    /// is loaded.
    #[arg(long, env = "PALISADE_SIDECAR_READY_WITHOUT_POLICY")]
    pub sidecar_ready_without_policy: bool,
    /// Start-up grace of the sidecars: after this long without a policy bundle a sidecar logs
    /// an error and sets `palisade_sidecar_policy_missing`, and the policy controller records
    /// a `PolicyNotLoaded` Event on a pod whose sidecar is still not Ready.
    #[arg(long, env = "PALISADE_SIDECAR_POLICY_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub sidecar_policy_grace: Duration,
    /// Name of the bundle manifest ConfigMap in each protected namespace.
    #[arg(
        long,
        env = "PALISADE_BUNDLE_CONFIGMAP",
        default_value = "palisade-bundle"
    )]
    pub bundle_configmap: String,
    /// Address of the detection collector the sidecars report to (empty: not set).
    #[arg(long, env = "PALISADE_COLLECTOR_ADDR", default_value = "")]
    pub collector_addr: String,
    /// Sidecars add `palisade-decision` response headers naming the deciding action.
    #[arg(long, env = "PALISADE_SIDECAR_DEBUG_HEADERS")]
    pub sidecar_debug_headers: bool,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub geoip: GeoIpArgs,
}

/// Where the webhook's serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertSource {
    /// Generated, renewed and published in `caBundle` by the operator.
    Managed,
    /// Read from the Secret, written by someone else (cert-manager…).
    Secret,
}

/// A container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "PascalCase")]
pub enum PullPolicy {
    /// Pull on every container start.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull (the image is preloaded on the nodes).
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// What [`super::patch::mutate`] needs: everything about the sidecar to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    /// Container image.
    pub image: String,
    /// Its `imagePullPolicy`.
    pub image_pull_policy: PullPolicy,
    /// Recorded in the `palisade.dev/injected` annotation.
    pub version: String,
    /// `resources.requests` (cpu, memory), empty values left out.
    pub requests: Vec<(String, String)>,
    /// `resources.limits`, empty values left out.
    pub limits: Vec<(String, String)>,
    /// Proxy port.
    pub proxy_port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// Port names that may be taken over, in order of preference.
    pub takeover_ports: Vec<String>,
    /// X-Forwarded-For hops.
    pub trusted_hops: usize,
    /// Fail closed without a bundle.
    pub fail_closed: bool,
    /// Ready before a bundle is loaded.
    pub ready_without_policy: bool,
    /// Start-up grace without a bundle.
    pub policy_grace: Duration,
    /// Bundle ConfigMap name.
    pub bundle_configmap: String,
    /// Collector address (empty: none).
    pub collector_addr: String,
    /// CA bundle (PEM) the sidecar verifies the collector's HTTPS with; `None`: plain HTTP.
    pub collector_ca: Option<String>,
    /// The operator's bundle-signing public keys (`PALISADE_BUNDLE_KEYS`), current at
    /// admission.
    pub bundle_keys: Option<String>,
    /// `palisade-decision` response headers.
    pub debug_headers: bool,
    /// Client identification and JWT verification settings, as the sidecar's environment:
    /// `(PALISADE_…, value)`.
    pub identity: Vec<(String, String)>,
    /// The JWKS volume, if any (`PALISADE_JWKS_PATH` points into it).
    pub jwks: Option<Jwks>,
    /// What the sidecar does with escaped slashes in a path.
    pub escaped_slashes: EscapedSlashes,
    /// Forward the path as sent instead of the normalised one.
    pub forward_original_path: bool,
    /// The GeoIP volume, if any.
    pub geoip: Option<GeoIp>,
}

impl InjectorArgs {
    /// The patch function's view of the flags.
    pub fn inject_config(&self) -> InjectConfig {
        let pairs = |cpu: &str, mem: &str| {
            [("cpu", cpu), ("memory", mem)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        InjectConfig {
            image: self.sidecar_image.clone(),
            image_pull_policy: self.sidecar_image_pull_policy,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            requests: pairs(&self.sidecar_cpu_request, &self.sidecar_memory_request),
            limits: pairs(&self.sidecar_cpu_limit, &self.sidecar_memory_limit),
            proxy_port: self.sidecar_proxy_port,
            admin_port: self.sidecar_admin_port,
            takeover_ports: self.takeover_ports.clone(),
            trusted_hops: self.sidecar_trusted_hops,
            fail_closed: self.sidecar_fail_closed,
            ready_without_policy: self.sidecar_ready_without_policy,
            policy_grace: self.sidecar_policy_grace,
            bundle_configmap: self.bundle_configmap.clone(),
            collector_addr: self.collector_addr.clone(),
            collector_ca: None,
            bundle_keys: None,
            debug_headers: self.sidecar_debug_headers,
            identity: self
                .identity
                .env()
                .into_iter()
                .chain(self.jwt.env())
                .collect(),
            // validate() has rejected a bad source before the injector starts.
            jwks: self.jwt.parse().ok().flatten(),
            escaped_slashes: self.paths.sidecar_escaped_slashes,
            forward_original_path: self.paths.sidecar_forward_original_path,
            // validate() has rejected a bad source before the injector starts.
            geoip: self.geoip.parse().ok().flatten(),
        }
    }

    /// Checks what clap cannot; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.sidecar_proxy_port == self.sidecar_admin_port || self.sidecar_proxy_port == 0 {
            return Err(format!(
                "--sidecar-proxy-port {} and --sidecar-admin-port {} must be two different \
                 non-zero ports",
                self.sidecar_proxy_port, self.sidecar_admin_port
            ));
        }
        if self.takeover_ports.iter().all(|p| p.trim().is_empty()) {
            return Err("--takeover-ports is empty; name at least one port (e.g. http)".into());
        }
        if self.webhook_cert_renew_before >= self.webhook_cert_validity {
            return Err(format!(
                "--webhook-cert-renew-before {:?} must be shorter than --webhook-cert-validity {:?}",
                self.webhook_cert_renew_before, self.webhook_cert_validity
            ));
        }
        if self.webhook_cert_check.is_zero() {
            return Err("--webhook-cert-check must be greater than 0".into());
        }
        if self.sidecar_trusted_hops > 16 {
            return Err(format!(
                "--sidecar-trusted-hops {} is more than 16 (the sidecar refuses it); count only \
                 proxies you operate",
                self.sidecar_trusted_hops
            ));
        }
        self.identity.validate()?;
        self.jwt.validate(self.identity.sidecar_jwt_unverified)?;
        self.geoip.parse().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        a: InjectorArgs,
    }

    #[test]
    fn defaults_are_valid_and_map_to_the_config() {
        let w = Wrap::try_parse_from(["x"]).expect("parses");
        assert_eq!(w.a.validate(), Ok(()));
        let c = w.a.inject_config();
        assert_eq!(c.takeover_ports, vec!["http".to_owned()]);
        assert_eq!(c.limits, vec![("memory".to_owned(), "256Mi".to_owned())]);
        assert_eq!(c.requests.len(), 2);
    }

    #[test]
    fn rejects_clashing_ports_and_bad_renewal() {
        let w = Wrap::try_parse_from(["x", "--sidecar-admin-port", "15080"]).expect("parses");
        assert!(
            w.a.validate()
                .expect_err("clash")
                .contains("--sidecar-proxy-port")
        );
        let w = Wrap::try_parse_from(["x", "--webhook-cert-renew-before", "9000h"]).expect("p");
        assert!(w.a.validate().expect_err("renew").contains("renew-before"));
        let w = Wrap::try_parse_from(["x", "--sidecar-trusted-hops", "17"]).expect("parses");
        assert!(
            w.a.validate()
                .expect_err("hops")
                .contains("--sidecar-trusted-hops 17")
        );
    }
}
