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
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (kubeconfig or in-cluster)")?;
    let what = args.file.display().to_string();
    let json = args.output == "json";
    replay(&client, &text, &what, args.namespace.as_deref(), None, json).await
}

/// What the SecurityAction in `text` (read from `what`) would have done to the replay sample
/// of its namespace (`namespace`, else the manifest's, else `default`), over the last `since`
/// (at most the hour the sample keeps; all of it by default): one line, or JSON.
pub async fn replay(
    client: &kube::Client,
    text: &str,
    what: &str,
    namespace: Option<&str>,
    since: Option<jiff::SignedDuration>,
    json: bool,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let action: SecurityAction =
        serde_yaml::from_str(text).with_context(|| format!("{what} is not a SecurityAction"))?;
    let ns = namespace
        .map(str::to_owned)
        .or_else(|| action.namespace())
        .unwrap_or_else(|| "default".into());
    let mut doc = replay::read(client, &ns).await?;
    let now = jiff::Timestamp::now();
    if let Some(since) = since {
        doc.minutes.retain(|m| now.duration_since(m.start) <= since);
    }
    // The IP lists the action may reference by name or label.
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the ConfigMaps of {ns} (IP lists)"))?
        .items;
    let spec = convert::action(&action, &configmaps, false);
    let lists = convert::list_texts(std::slice::from_ref(&spec), &configmaps);
    let est = replay::estimate(&doc, spec, lists, now)
        .map_err(|e| anyhow::anyhow!("SecurityAction {ns}/{}: {e}", action.name_any()))?;
    Ok(if json {
        serde_json::to_string_pretty(&est)?
    } else {
        format!("{}/{} {est}", ns, action.name_any())
    })
}
