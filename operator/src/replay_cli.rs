//! `palisade-operator replay`: what a SecurityAction would have done to the last hour's
//! traffic of its namespace, before it is applied. Reads the namespace's replay sample
//! (ConfigMap `palisade-replay`, see `collector::replay`) and the IP-list ConfigMaps the
//! action references with the caller's own credentials (kubeconfig or in-cluster), and
//! evaluates the action with the sidecar's evaluator.
//!
//! ```text
//! palisade-operator replay -n prod -f deny-new-range.yaml
//! deny-new-range would have matched ~1240 of 58210 requests (2.1 %) from at least 37 clients …
//! ```

use std::path::PathBuf;

use clap::Parser;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use palisade_crds::SecurityAction;

use crate::collector::replay;
use crate::policy::convert;

/// Evaluates a SecurityAction against its namespace's replay sample (the last hour).
#[derive(Debug, Parser)]
#[command(name = "palisade-operator replay")]
pub struct ReplayArgs {
    /// The SecurityAction manifest (YAML or JSON); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Namespace (default: the manifest's, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output: `text` or `json`.
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
}

/// Runs the command; returns the process exit code.
pub async fn main(args: &[String]) -> std::process::ExitCode {
    let _already = rustls::crypto::ring::default_provider().install_default();
    let args = match ReplayArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(64);
        }
    };
    match run(&args).await {
        Ok(out) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout().lock(), "{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("palisade-operator replay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &ReplayArgs) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let action: SecurityAction = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a SecurityAction", args.file.display()))?;
    let ns = args
        .namespace
        .clone()
        .or_else(|| action.namespace())
        .unwrap_or_else(|| "default".into());
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (kubeconfig or in-cluster)")?;
    let doc = replay::read(&client, &ns).await?;
    // The IP lists the action may reference by name or label.
    let configmaps = Api::<ConfigMap>::namespaced(client, &ns)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the ConfigMaps of {ns} (IP lists)"))?
        .items;
    let spec = convert::action(&action, &configmaps, false);
    let lists = convert::list_texts(std::slice::from_ref(&spec), &configmaps);
    let est = replay::estimate(&doc, spec, lists, jiff::Timestamp::now())
        .map_err(|e| anyhow::anyhow!("SecurityAction {ns}/{}: {e}", action.name_any()))?;
    Ok(match args.output.as_str() {
        "json" => serde_json::to_string_pretty(&est)?,
        _ => format!("{}/{} {est}", ns, action.name_any()),
    })
}
