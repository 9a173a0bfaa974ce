//! Command-line flags and environment of the operator, validated before anything binds.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// The Palisade operator.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Args {
    /// Namespace the operator runs in (its Lease, webhook Secret and Services live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "palisade-system")]
    pub namespace: String,
    /// This replica's identity in leader election (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value_t = default_identity())]
    pub identity: String,
    /// Address of the admin server: /metrics, /live, /ready.
    #[arg(long, env = "PALISADE_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "PALISADE_LEASE_NAME", default_value = "palisade-operator")]
    pub lease_name: String,
    /// Seconds a leader holds the Lease without renewing it before another replica may take it.
    #[arg(long, env = "PALISADE_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration: u64,
    /// Address the detection collector listens on (sidecar reports, `POST /v1/reports`).
    #[arg(
        long,
        env = "PALISADE_COLLECTOR_LISTEN",
        default_value = "0.0.0.0:9444"
    )]
    pub collector_listen: SocketAddr,
    /// Endpoint (`host:port`) the leader advertises on its Lease so other replicas forward
    /// reports to it. Default: `$POD_IP:<port of --collector-listen>`, else the listen address
    /// when it is a specific one.
    #[arg(long, env = "PALISADE_COLLECTOR_ADVERTISE_ADDR")]
    pub collector_advertise_addr: Option<String>,
    /// Serve the collector over plain HTTP instead of HTTPS (local tests only: reports carry
    /// service-account tokens).
    #[arg(long, env = "PALISADE_COLLECTOR_PLAIN_HTTP", action = clap::ArgAction::Set, default_value_t = false)]
    pub collector_plain_http: bool,
    /// Name of the collector's Service in the operator's namespace: a SAN of the collector's
    /// certificate, and the name replicas verify when they forward reports to the leader.
    #[arg(
        long,
        env = "PALISADE_COLLECTOR_SERVICE",
        default_value = "palisade-collector"
    )]
    pub collector_service: String,
    /// ConfigMap in the operator's namespace where the leader persists the collector's
    /// windows, detected clients and open incidents.
    #[arg(
        long,
        env = "PALISADE_COLLECTOR_STATE_CONFIGMAP",
        default_value = "palisade-collector-state"
    )]
    pub collector_state_configmap: String,
    /// How many shards the collector's namespaces are divided into (1 to 64). Each shard has
    /// its own Lease (shard 0 the leader's `--lease-name`, shard i `<lease-name>-shard-<i>`)
    /// and state ConfigMap (shard 0 `--collector-state-configmap`, shard i `<that>-<i>`), so
    /// replicas share the collector's memory and work. Set it once: changing it re-homes
    /// namespaces, whose windows then refill from reports (incidents keep their names).
    #[arg(long, env = "PALISADE_COLLECTOR_SHARDS", default_value_t = 1)]
    pub collector_shards: u32,
    /// How often the leader persists the collector's state (also on graceful shutdown).
    #[arg(long, env = "PALISADE_COLLECTOR_SNAPSHOT_INTERVAL", default_value = "30s", value_parser = parse_interval)]
    pub collector_snapshot_interval: std::time::Duration,
    /// How often the collector writes each SecurityAction's request counts and enforcing
    /// pods into its status (only the actions whose values changed; at most 100 per update).
    #[arg(long, env = "PALISADE_EVIDENCE_INTERVAL", default_value = "15s", value_parser = parse_interval)]
    pub evidence_interval: std::time::Duration,
    /// How often the leader checks each namespace's posture (what is not protected) and
    /// updates its SecurityPosture.
    #[arg(long, env = "PALISADE_POSTURE_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    pub posture_interval: std::time::Duration,
    /// How long sidecars have to apply a new bundle before a posture check counts those still
    /// reporting an older generation as stale.
    #[arg(long, env = "PALISADE_POSTURE_STALE_AFTER", default_value = "60s", value_parser = parse_interval)]
    pub posture_stale_after: std::time::Duration,
    /// How often the leader rewrites a namespace's replay sample (ConfigMap `palisade-replay`,
    /// the last hour of sampled requests) while it has traffic.
    #[arg(long, env = "PALISADE_REPLAY_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    pub replay_interval: std::time::Duration,
    /// Secret in the operator's namespace holding the Ed25519 keys bundles are signed with
    /// (created by the leader; every replica reads it).
    #[arg(
        long,
        env = "PALISADE_BUNDLE_SIGNING_SECRET",
        default_value = "palisade-bundle-signing"
    )]
    pub bundle_signing_secret: String,
    /// How often the leader makes a new bundle-signing key (endorsed by the previous one, so
    /// running sidecars follow). Default 720h (30 days).
    #[arg(long, env = "PALISADE_BUNDLE_KEY_ROTATION", default_value = "720h", value_parser = parse_interval)]
    pub bundle_key_rotation: std::time::Duration,
    /// Heap the leader's detection windows of all namespaces may hold, in MiB. Over it, the
    /// oldest slices of the namespace holding the most are dropped: long (24 h) slices
    /// first, then short ones, never a namespace's current slice. Leave room under the
    /// container's memory limit for incidents, evidence and the replay sample.
    #[arg(
        long,
        env = "PALISADE_COLLECTOR_WINDOW_BUDGET_MIB",
        default_value_t = 256
    )]
    pub collector_window_budget_mib: usize,
    /// How often the collector runs the detection rules over the merged windows.
    #[arg(long, env = "PALISADE_DETECTION_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub detection_interval: std::time::Duration,
    /// How long a SecurityIncident is kept after its last detection (`status.lastDetectedTime`)
    /// before the leader deletes it, archived ones too. Default 336h (14 days).
    #[arg(long, env = "PALISADE_INCIDENT_RETENTION", default_value = "336h", value_parser = parse_interval)]
    pub incident_retention: std::time::Duration,
    /// Only namespaces whose labels match this selector get bundles (default: every
    /// namespace). E.g. `palisade.dev/protected=true`, or `kubernetes.io/metadata.name=shop`.
    #[arg(long, env = "PALISADE_NAMESPACE_SELECTOR", default_value = "")]
    pub namespace_selector: String,
    /// Log format.
    #[arg(long, env = "PALISADE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// The injector's flags (webhook, certificate, injected sidecar).
    #[command(flatten)]
    pub injector: crate::injector::config::InjectorArgs,
    #[command(flatten)]
    pub blast_radius: crate::blast::BlastArgs,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One JSON object a line (for log pipelines).
    Json,
    /// Human-readable lines.
    Plain,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    palisade_crds::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

impl Args {
    /// Checks what clap cannot; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < 3 {
            return Err(format!(
                "--lease-duration {} is too short; use at least 3 seconds",
                self.lease_duration
            ));
        }
        for (flag, d) in [
            ("--detection-interval", self.detection_interval),
            ("--evidence-interval", self.evidence_interval),
            ("--replay-interval", self.replay_interval),
            ("--posture-interval", self.posture_interval),
            ("--bundle-key-rotation", self.bundle_key_rotation),
            (
                "--collector-snapshot-interval",
                self.collector_snapshot_interval,
            ),
        ] {
            if d.is_zero() {
                return Err(format!("{flag} is zero; use a duration like 1s"));
            }
        }
        if self.collector_window_budget_mib == 0 {
            return Err(
                "--collector-window-budget-mib is 0; give the detection windows some memory, \
                 e.g. 256"
                    .into(),
            );
        }
        if !(1..=64).contains(&self.collector_shards) {
            return Err(format!(
                "--collector-shards is {}; use 1 to 64 (e.g. 16 for up to 16 replicas)",
                self.collector_shards
            ));
        }
        self.injector.validate()?;
        self.blast_radius.validate()?;
        if self.namespace.is_empty() {
            return Err(
                "--namespace is empty; set it (or POD_NAMESPACE) to the operator's namespace"
                    .into(),
            );
        }
        Ok(())
    }

    /// Installs the tracing subscriber (filter from `RUST_LOG`, default `info`).
    pub fn init_tracing(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Json => builder.json().init(),
            // Colours only on a terminal: not in `kubectl logs` or a log file.
            LogFormat::Plain => builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn every_flag_is_declared_once_and_the_defaults_validate() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["palisade-operator"]).expect("defaults parse");
        assert_eq!(args.validate(), Ok(()));
        let zero = Args::try_parse_from(["palisade-operator", "--evidence-interval", "0s"])
            .expect("parses");
        let err = zero.validate().expect_err("zero refused");
        assert!(err.contains("--evidence-interval"), "{err}");
        for bad in ["0", "65"] {
            let args = Args::try_parse_from(["palisade-operator", "--collector-shards", bad])
                .expect("parses");
            let err = args.validate().expect_err("out of range refused");
            assert!(
                err.contains("--collector-shards is") && err.contains("1 to 64"),
                "{err}"
            );
        }
    }
}
