//! `kubectl palisade`: the daily loop of a security engineer without editing YAML.
//!
//! - `kubectl palisade pause ACTION... [--for 2h]`, `resume ACTION...`, and `pause --all` /
//!   `resume --all` for the namespace switch: the `palisade.dev/paused` and
//!   `palisade.dev/paused-until` annotations the operator acts on.
//! - `kubectl palisade status [-o wide|json|yaml]`: the namespace's actions with their state,
//!   enforcing pods and request counts, its rules, its posture findings and open incidents.
//! - `kubectl palisade explain --ip IP [--path P] [--method M] [-H 'Name: value'] [--pod POD]`:
//!   which actions match a request and which one wins, on the bundle the sidecars enforce,
//!   with the sidecar's own code.
//! - `kubectl palisade incidents [-w]`, `describe incident NAME` (risk, rules, clients, top
//!   attributes, a traffic sparkline) and `incident apply NAME [--dry-run] [--ttl 24h]`.
//! - `kubectl palisade replay -f action.yaml [--since 30m]`: what an action would have done
//!   to the namespace's last hour of traffic, before it is applied.
//!
//! kubectl runs it as a plugin (`kubectl-palisade` on the `PATH`, or installed with krew from
//! `.krew.yaml`). It talks to the API server with the caller's kubeconfig (`--context`,
//! `-n`, `KUBECONFIG`) and exits 0 on success, 1 when the API refuses or an object is
//! missing, 2 on a usage error.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool: its results go to stdout"
)]

mod explain;
mod incidents;
mod pause;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Palisade from kubectl: pause and resume SecurityActions, and see what a namespace enforces.
#[derive(Debug, Parser)]
#[command(name = "kubectl palisade", version)]
struct Cli {
    /// The namespace (default: the kubeconfig context's namespace).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pause SecurityActions (they stop applying within seconds), or the whole namespace with
    /// --all.
    Pause {
        /// The SecurityActions to pause.
        actions: Vec<String>,
        /// Pause for this long (like 30m or 2h; counted from when the operator sees it) or
        /// until an RFC 3339 time; without it, until `resume`.
        #[arg(long = "for", value_name = "DURATION|TIME")]
        duration: Option<String>,
        /// Pause every SecurityAction of the namespace (the namespace's own annotation).
        #[arg(long)]
        all: bool,
    },
    /// Resume paused SecurityActions, or the namespace with --all.
    Resume {
        /// The SecurityActions to resume.
        actions: Vec<String>,
        /// Resume the namespace paused with `pause --all`.
        #[arg(long)]
        all: bool,
    },
    /// Which SecurityActions match a request, which one wins and why, on the bundle the
    /// namespace's sidecars enforce, evaluated with the sidecar's own code.
    Explain {
        #[command(flatten)]
        request: explain::RequestArgs,
        /// Output format (wide is the table).
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The namespace's SecurityIncidents, newest first; -w prints each change as it happens.
    Incidents {
        /// Watch: print each incident as it is opened or changes, until interrupted.
        #[arg(short, long)]
        watch: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Describe an object: `describe incident NAME`.
    Describe {
        #[command(subcommand)]
        what: Describe,
    },
    /// Act on an incident: `incident apply NAME [--dry-run] [--ttl 24h]`.
    Incident {
        #[command(subcommand)]
        what: IncidentCommand,
    },
    /// What a SecurityAction would have done to the namespace's recent traffic (the replay
    /// sample of the last hour), before it is applied.
    Replay {
        /// The SecurityAction manifest; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: std::path::PathBuf,
        /// Only the last DURATION of the sample (at most 1h, what the sample keeps).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Output format (wide is the table).
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// What the namespace enforces: actions, rules, posture findings, open incidents.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// What `describe` shows.
#[derive(Debug, Subcommand)]
enum Describe {
    /// A SecurityIncident: risk, rules, clients, top attributes, its traffic as a sparkline.
    Incident {
        /// The incident.
        name: String,
    },
}

/// What `incident` does.
#[derive(Debug, Subcommand)]
enum IncidentCommand {
    /// Apply the SecurityAction the incident proposes (it denies the incident's clients).
    Apply {
        /// The incident.
        name: String,
        /// Ask the API server (admission and validation included) without writing; print the
        /// actions as they would be.
        #[arg(long)]
        dry_run: bool,
        /// How long the action lasts, instead of the proposed 24h.
        #[arg(long)]
        ttl: Option<String>,
    },
}

/// How a command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables for people.
    Table,
    /// Tables with more columns.
    Wide,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// A usage error: exit status 2, like clap's own.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The client and namespace the command works with.
struct Target {
    client: kube::Client,
    namespace: String,
    /// Whether `-n` named the namespace (else it is the context's).
    namespace_given: bool,
}

async fn target(cli: &Cli) -> anyhow::Result<Target> {
    let config = match &cli.context {
        Some(context) => {
            let opts = kube::config::KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| anyhow::anyhow!("context {context:?}: {e}"))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no cluster to talk to: {e}; set KUBECONFIG"))?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config)?;
    Ok(Target {
        client,
        namespace,
        namespace_given: cli.namespace.is_some(),
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let t = target(&cli).await?;
    match cli.command {
        Command::Pause {
            actions,
            duration,
            all,
        } => pause::pause(&t, &actions, duration.as_deref(), all).await,
        Command::Resume { actions, all } => pause::resume(&t, &actions, all).await,
        Command::Status { output } => status::status(&t, output).await,
        Command::Explain { request, output } => explain::explain(&t, &request, output).await,
        Command::Incidents { watch, output } => incidents::list(&t, watch, output).await,
        Command::Replay {
            file,
            since,
            output,
        } => replay(&t, &file, since.as_deref(), output).await,
        Command::Describe {
            what: Describe::Incident { name },
        } => incidents::describe(&t, &name).await,
        Command::Incident {
            what: IncidentCommand::Apply { name, dry_run, ttl },
        } => incidents::apply(&t, &name, dry_run, ttl.as_deref()).await,
    }
}

/// `replay`: the operator's replay of an action on the namespace's sample.
async fn replay(
    t: &Target,
    file: &std::path::Path,
    since: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let since = match since {
        None => None,
        Some(s) => {
            let d = palisade_crds::duration::parse_duration(s)
                .map_err(|e| Usage(format!("--since {s:?}: {e}")))?;
            if d > std::time::Duration::from_secs(3600) {
                return Err(Usage(format!(
                    "--since {s}: the replay sample keeps the last hour; give at most 1h"
                ))
                .into());
            }
            Some(jiff::SignedDuration::try_from(d)?)
        }
    };
    let (text, what) = if file.as_os_str() == "-" {
        (
            std::io::read_to_string(std::io::stdin())?,
            "standard input".to_owned(),
        )
    } else {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Usage(format!("-f {}: {e}", file.display())))?;
        (text, file.display().to_string())
    };
    // -n wins, then the manifest's namespace, then the context's.
    let in_manifest = serde_yaml::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["metadata"]["namespace"].as_str().map(str::to_owned));
    let ns = match (t.namespace_given, in_manifest) {
        (false, Some(_)) => None,
        _ => Some(t.namespace.as_str()),
    };
    let json = output == Output::Json || output == Output::Yaml;
    let out =
        palisade_operator::replay_cli::replay(&t.client, &text, &what, ns, since, json).await?;
    let out = match output {
        Output::Yaml => serde_yaml::to_string(&serde_json::from_str::<serde_json::Value>(&out)?)?,
        _ => out + "\n",
    };
    use std::io::Write as _;
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let _already = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "kubectl-palisade",
            "pause",
            "a",
            "b",
            "--for",
            "2h",
            "-n",
            "x",
        ]);
        assert_eq!(cli.namespace.as_deref(), Some("x"));
        assert!(matches!(
            cli.command,
            Command::Pause { ref actions, duration: Some(ref d), all: false } if actions == &["a", "b"] && d == "2h"
        ));
        let cli = Cli::parse_from(["kubectl-palisade", "status", "-o", "json"]);
        assert!(matches!(
            cli.command,
            Command::Status {
                output: Output::Json
            }
        ));
        assert!(Cli::try_parse_from(["kubectl-palisade", "status", "-o", "xml"]).is_err());
    }
}
