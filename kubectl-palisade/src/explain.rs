//! `explain`: which SecurityActions match a request, which one wins and why, evaluated on the
//! very bundle the namespace's sidecars enforce (read from its ConfigMaps, signature checked
//! against the keys a pod trusts when `--pod` is given) with the sidecar's own code: the path
//! normalisation, the client identification (X-Forwarded-For from trusted proxies, API keys,
//! tokens), the detected-client set and the evaluator.
//!
//! What it cannot know is said: whether a client is over a rate limit (the sidecars hold the
//! rates), regions and ASNs (the GeoIP database is mounted into the pods, not here), and
//! workload-scoped actions without `--pod` (they apply to the pods they select).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use clap::Parser as _;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use palisade_crds::SecurityAction;
use palisade_policy::sign::{Domain, KEYS_KEY, MANIFEST_SIG_KEY, Verifier};
use palisade_policy::transport::{
    BUNDLE_KEYS_ENV, DETECTED_CM, DETECTED_KEY, MANIFEST_CM, MANIFEST_KEY, SHARD_KEY,
    SIDECAR_CONTAINER as SIDECAR, shard_cm,
};
use palisade_policy::{ActionId, Decision, Manifest, Verb, Verdict};
use palisade_sidecar::config::Config;
use palisade_sidecar::store::{Signed, Store};
use serde::Serialize;

use crate::status::action_row;
use crate::{Output, Target, Usage};

/// The request to explain.
#[derive(Debug, Clone, clap::Args)]
pub struct RequestArgs {
    /// The address the request comes from (the TCP peer the sidecar sees).
    #[arg(long)]
    pub ip: IpAddr,
    /// The request's path (and query).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The request's method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header, as `Name: value` (repeat for more): API keys, tokens, user agent,
    /// X-Forwarded-For. Values are never printed.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Explain as this pod's sidecar would: its labels (workload-scoped actions), its flags
    /// (trusted proxies, identity headers) and the signing keys it trusts.
    #[arg(long)]
    pub pod: Option<String>,
}

/// What `explain` says about one action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionVerdict {
    /// The action.
    pub name: String,
    /// `Allow`, `Deny`, `Flag`, `RateLimit` (empty when the operator did not compile it).
    pub verb: String,
    /// `Enforce` or `Observe`.
    pub mode: String,
    /// Whether its conditions match the request (absent when it is not in the bundle or does
    /// not apply to the workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<bool>,
    /// What it does to the request, and why.
    pub outcome: String,
}

/// The whole explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The namespace.
    pub namespace: String,
    /// `METHOD path`.
    pub request: String,
    /// The client IP the sidecar identifies, and from where (`socket`, `xff`, …).
    pub client_ip: String,
    /// How the client IP was found.
    pub client_ip_source: String,
    /// The bundle generation evaluated.
    pub generation: u64,
    /// Whether and how its signature was checked.
    pub signature: String,
    /// `deny`, `allow`, `forward`, or `refused`: an error status the sidecar answers before
    /// any action (a malformed path or credential).
    pub decision: String,
    /// The flag actions whose headers a forwarded request gets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flagged_by: Vec<String>,
    /// The action that decided, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The status the client gets from the sidecar (absent when the request goes on to the
    /// app, unless a rate limit answers 429 first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Every action of the namespace, by name.
    pub actions: Vec<ActionVerdict>,
    /// What the explanation could not take into account.
    pub notes: Vec<String>,
}

/// The flags of the pod's sidecar container, as its own parser reads them from the
/// environment the injector wrote; values that name files in the pod (GeoIP, JWKS, tokens)
/// and values from the downward API are left out.
fn sidecar_config(pod: Option<&Pod>, notes: &mut Vec<String>) -> Config {
    let mut args = vec!["palisade-sidecar".to_owned()];
    if let Some(c) = pod.and_then(sidecar_container) {
        let flags = palisade_sidecar::config::env_flags();
        for e in c.env.iter().flatten() {
            let (Some(value), Some((long, takes))) = (&e.value, flags.get(&e.name)) else {
                continue;
            };
            if value.starts_with('/') {
                continue;
            }
            if *takes {
                args.push(format!("--{long}={value}"));
            } else if value == "true" {
                args.push(format!("--{long}"));
            }
        }
    }
    if !args.iter().any(|a| a.starts_with("--upstream-port")) {
        args.push("--upstream-port=8080".to_owned());
    }
    match Config::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            notes.push(format!(
                "the sidecar's flags did not parse ({}); its defaults are used",
                e.to_string().lines().next().unwrap_or_default()
            ));
            Config::try_parse_from(["palisade-sidecar", "--upstream-port=8080"]).unwrap_or_else(
                |_| Config::parse_from(["palisade-sidecar", "--upstream-port=8080"]),
            )
        }
    }
}

fn sidecar_container(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == SIDECAR)
}

fn env_value<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    sidecar_container(pod)?
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .as_deref()
}

fn data<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.data.as_ref()?.get(key).map(String::as_str)
}

/// Reads the namespace's bundle into a sidecar store; the signature's check as text.
async fn load_bundle(
    t: &Target,
    pod: Option<&Pod>,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<(Store, String)> {
    let ns = &t.namespace;
    let cms = Api::<ConfigMap>::namespaced(t.client.clone(), ns);
    let cm = cms
        .get_opt(MANIFEST_CM)
        .await
        .map_err(|e| anyhow::anyhow!("configmap {MANIFEST_CM:?} in namespace {ns:?}: {e}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "namespace {ns:?} has no policy bundle yet (configmap {MANIFEST_CM:?}): does the \
                 operator run, and does its --namespace-selector select the namespace?"
            )
        })?;
    let body = data(&cm, MANIFEST_KEY)
        .ok_or_else(|| anyhow::anyhow!("configmap {MANIFEST_CM:?} has no {MANIFEST_KEY}"))?;
    let signature = match pod.and_then(|p| env_value(p, BUNDLE_KEYS_ENV)) {
        Some(keys) => {
            let mut v = Verifier::parse(keys).map_err(|e| {
                anyhow::anyhow!(
                    "the signing keys of pod {:?}: {e}",
                    pod.map(|p| p.name_any())
                )
            })?;
            let pod = pod.map(|p| p.name_any()).unwrap_or_default();
            match v.check(
                Domain::Manifest,
                body.as_bytes(),
                data(&cm, MANIFEST_SIG_KEY),
                data(&cm, KEYS_KEY),
            ) {
                Ok(()) => format!("verified with the keys pod {pod} trusts"),
                Err(e) => anyhow::bail!(
                    "the bundle in configmap {MANIFEST_CM:?} is not signed by a key pod {pod:?} \
                     trusts ({e}): its sidecar does not enforce it"
                ),
            }
        }
        None => "not checked (give --pod to check it against the keys a pod trusts)".to_owned(),
    };
    let manifest = Manifest::from_json(body)
        .map_err(|e| anyhow::anyhow!("configmap {MANIFEST_CM:?}: {MANIFEST_KEY}: {e}"))?;
    let mut shards: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for s in &manifest.shards {
        if let Some(b) = cm.binary_data.as_ref().and_then(|d| d.get(&s.name)) {
            shards.insert(s.name.clone(), b.0.clone());
            continue;
        }
        let name = shard_cm(MANIFEST_CM, &s.name);
        let shard = cms
            .get(&name)
            .await
            .map_err(|e| anyhow::anyhow!("configmap {name:?} (a bundle shard): {e}"))?;
        if let Some(b) = shard.binary_data.and_then(|mut d| d.remove(SHARD_KEY)) {
            shards.insert(s.name.clone(), b.0);
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(palisade_sidecar::metrics::Metrics::new(&mut registry));
    let store = Store::new(labels, metrics);
    if !store.apply("api", &manifest, |n| shards.get(n).map(Vec::as_slice)) {
        anyhow::bail!(
            "the bundle of generation {} in namespace {ns:?} does not decode (the sidecars keep \
             their last good bundle); see their palisade_sidecar_bundle_load_errors_total",
            manifest.generation
        );
    }
    if let Some(cm) = cms
        .get_opt(DETECTED_CM)
        .await
        .map_err(|e| anyhow::anyhow!("configmap {DETECTED_CM:?} in namespace {ns:?}: {e}"))?
        && let Some(bytes) = cm.binary_data.as_ref().and_then(|d| d.get(DETECTED_KEY))
    {
        store.apply_detected(
            "api",
            Signed {
                body: &bytes.0,
                signature: data(&cm, palisade_policy::sign::DETECTED_SIG_KEY),
                keys: data(&cm, KEYS_KEY),
            },
        );
    }
    Ok((store, signature))
}

/// Builds the request's head; errors name the header.
fn parts(r: &RequestArgs) -> Result<http::request::Parts, Usage> {
    let mut b = http::Request::builder()
        .method(r.method.as_str())
        .uri(r.path.as_str());
    for h in &r.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| Usage(format!("--header {h:?}: write it as 'Name: value'")))?;
        b = b.header(name.trim(), value.trim());
    }
    b.body(())
        .map(|req| req.into_parts().0)
        .map_err(|e| Usage(format!("the request: {e}")))
}

/// What `verdict` means for action `id` (selected, in the bundle).
fn outcome(
    p: &palisade_policy::CompiledPolicy,
    v: &Verdict,
    id: ActionId,
) -> (Option<bool>, String) {
    let name = |id: ActionId| p.action(id).map(|a| a.name.clone()).unwrap_or_default();
    if v.observed.contains(id) {
        return (
            Some(true),
            "matches, in Observe mode: counted as observed, nothing is applied".to_owned(),
        );
    }
    if !v.matched.contains(id) {
        return (Some(false), "does not match".to_owned());
    }
    let verb = p.action(id).map(|a| &a.verb);
    let text = match (v.decision, verb) {
        (Decision::Deny(d), _) if d == id => {
            let status = p.deny_response(id).map_or(403, |r| r.status);
            format!("decides: the sidecar answers {status} (no allow action matched)")
        }
        (Decision::Allow(a), _) if a == id => {
            "decides: the request goes to the app, and no deny, rate limit or flag applies \
             (allow wins over every other verb)"
                .to_owned()
        }
        (Decision::Allow(a), _) => format!(
            "overridden: allow action {} wins (precedence: allow > deny > rateLimit and flag)",
            name(a)
        ),
        (Decision::Deny(d), Some(Verb::Deny { .. })) => format!(
            "matches, but deny action {} answers (the first matching deny by name)",
            name(d)
        ),
        (Decision::Deny(d), _) => format!("not applied: deny action {} answers", name(d)),
        (Decision::Forward, Some(Verb::Flag { .. })) => "adds its headers".to_owned(),
        (Decision::Forward, Some(Verb::RateLimit(_))) => "meters: the request counts against \
             its per-client limit, and is answered 429 if the client is over it (only the \
             sidecars know its rate)"
            .to_owned(),
        (Decision::Forward, _) => "matches".to_owned(),
    };
    (Some(true), text)
}

async fn explain_request(t: &Target, r: &RequestArgs) -> anyhow::Result<Explanation> {
    let ns = &t.namespace;
    let mut notes = Vec::new();
    let pod = match &r.pod {
        Some(name) => Some(
            Api::<Pod>::namespaced(t.client.clone(), ns)
                .get(name)
                .await
                .map_err(|e| anyhow::anyhow!("pod {name:?} in namespace {ns:?}: {e}"))?,
        ),
        None => None,
    };
    if let Some(p) = &pod
        && sidecar_container(p).is_none()
    {
        notes.push(format!(
            "pod {} runs without the Palisade sidecar: nothing enforces these actions on it",
            p.name_any()
        ));
    }
    let labels = pod.as_ref().map(|p| p.labels().clone()).unwrap_or_default();
    let cfg = sidecar_config(pod.as_ref(), &mut notes);
    let mut parts = parts(r)?;
    let (store, signature) = load_bundle(t, pod.as_ref(), labels).await?;
    let loaded = store
        .load()
        .ok_or_else(|| anyhow::anyhow!("no bundle loaded"))?;
    let p = &loaded.policy;
    let identifier = palisade_sidecar::identify::Identifier::new(cfg.identify.clone());
    let paths = palisade_sidecar::target::PathConfig {
        escaped_slashes: cfg.policy.escaped_slashes,
        forward_original: cfg.policy.forward_original_path,
    };
    let mut out = Explanation {
        namespace: ns.clone(),
        request: format!("{} {}", r.method, r.path),
        client_ip: r.ip.to_string(),
        client_ip_source: String::new(),
        generation: loaded.generation,
        signature,
        decision: String::new(),
        decided_by: None,
        flagged_by: Vec::new(),
        status: None,
        actions: Vec::new(),
        notes,
    };
    let actions = Api::<SecurityAction>::namespaced(t.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("listing SecurityActions in namespace {ns:?}: {e}"))?;
    let mut rows: Vec<_> = actions.items.iter().map(action_row).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let match_path = match palisade_sidecar::target::prepare(paths, &mut parts) {
        Ok(m) => m,
        Err(e) => {
            out.decision = "refused".to_owned();
            out.status = Some(palisade_sidecar::rescue::rescue(&e).status().as_u16());
            out.notes.push(format!(
                "the sidecar refuses the path before any action: {e}"
            ));
            return Ok(out);
        }
    };
    let trusted = p.bundle().trusted_proxies.as_ref();
    // One request, as on a new client connection: nothing is remembered from an earlier one.
    let memo = &mut palisade_sidecar::identify::Memo::default();
    let who = identifier.identify_with(&parts, r.ip, trusted, memo);
    out.client_ip = who.ip.to_string();
    out.client_ip_source = who.ip_source.as_str().to_owned();
    if let Some(refused) = who.credentials.refused {
        let e: palisade_sidecar::rescue::ProxyError = refused.into();
        out.decision = "refused".to_owned();
        out.status = Some(palisade_sidecar::rescue::rescue(&e).status().as_u16());
        out.notes.push(format!(
            "the sidecar refuses the request's credentials before any action: {e}"
        ));
        return Ok(out);
    }
    let v =
        palisade_sidecar::enforce::verdict(&store, &loaded, &who, match_path.as_deref(), &parts);
    let by_name: BTreeMap<&str, ActionId> = p
        .bundle()
        .actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| Some((a.name.as_str(), ActionId(u16::try_from(i).ok()?))))
        .collect();
    for row in &rows {
        let (verb, mode) = (row.verb.clone(), row.mode.clone());
        let (matches, outcome) = match by_name.get(row.name.as_str()) {
            None => (
                None,
                match row.state.as_str() {
                    "Pending" => {
                        "not in the bundle yet: the operator has not compiled it".to_owned()
                    }
                    state => format!(
                        "not in the bundle: {state}{}",
                        if row.note.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", row.note)
                        }
                    ),
                },
            ),
            Some(id) if !p.selected().contains(*id) => (
                None,
                match &r.pod {
                    Some(pod) => format!("does not apply to pod {pod} (targets.workloadSelector)"),
                    None => {
                        "applies only to the pods its targets.workloadSelector selects: give --pod"
                            .to_owned()
                    }
                },
            ),
            Some(id) => outcome(p, &v, *id),
        };
        out.actions.push(ActionVerdict {
            name: row.name.clone(),
            verb,
            mode,
            matches,
            outcome,
        });
    }
    let name = |id: ActionId| p.action(id).map(|a| a.name.clone());
    match v.decision {
        Decision::Deny(id) => {
            out.decision = "deny".to_owned();
            out.decided_by = name(id);
            out.status = Some(p.deny_response(id).map_or(403, |r| r.status));
        }
        Decision::Allow(id) => {
            out.decision = "allow".to_owned();
            out.decided_by = name(id);
        }
        Decision::Forward => {
            out.decision = "forward".to_owned();
            out.flagged_by = v.flags.iter().filter_map(name).collect();
        }
    }
    if !v.limits.is_empty() && v.decision == Decision::Forward {
        let limits: Vec<String> = v.limits.iter().filter_map(name).collect();
        out.notes.push(format!(
            "rate limits {} count this request: a client over one is answered 429 instead",
            limits.join(", ")
        ));
    }
    let geo = p
        .bundle()
        .actions
        .iter()
        .any(|a| !a.conditions.region_codes.is_empty() || !a.conditions.asns.is_empty());
    if geo {
        out.notes.push(
            "region and ASN conditions see no region or ASN here (the GeoIP database is mounted in \
             the pods): actions with them do not match in this explanation"
                .to_owned(),
        );
    }
    Ok(out)
}

/// The text `explain` prints for people.
pub fn render(e: &Explanation) -> String {
    let mut out = format!(
        "Request:   {} in namespace {}\nClient IP: {}{}\nBundle:    generation {}, signature {}\n",
        e.request,
        e.namespace,
        e.client_ip,
        if e.client_ip_source.is_empty() {
            String::new()
        } else {
            format!(" (from {})", e.client_ip_source)
        },
        e.generation,
        e.signature
    );
    let mut decided = match (&e.decided_by, e.status) {
        (Some(by), Some(status)) => format!("{} {status} by {by}", e.decision.to_uppercase()),
        (Some(by), None) => format!("{} by {by}", e.decision.to_uppercase()),
        (None, Some(status)) => format!("{} {status}", e.decision.to_uppercase()),
        (None, None) => e.decision.to_uppercase(),
    };
    if !e.flagged_by.is_empty() {
        decided.push_str(&format!(", flagged by {}", e.flagged_by.join(", ")));
    }
    out.push_str(&format!("Decision:  {decided}\n\n"));
    let width = e
        .actions
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    out.push_str(&format!(
        "{:<width$}  {:<9}  {:<7}  {:<7}  WHY\n",
        "ACTION", "VERB", "MODE", "MATCHES"
    ));
    for a in &e.actions {
        let m = match a.matches {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        out.push_str(&format!(
            "{:<width$}  {:<9}  {:<7}  {:<7}  {}\n",
            a.name, a.verb, a.mode, m, a.outcome
        ));
    }
    for n in &e.notes {
        out.push_str(&format!("\nNote: {n}"));
    }
    if !e.notes.is_empty() {
        out.push('\n');
    }
    out
}

/// `explain`.
pub async fn explain(t: &Target, r: &RequestArgs, output: Output) -> anyhow::Result<()> {
    let e = explain_request(t, r).await?;
    let text = match output {
        Output::Table | Output::Wide => render(&e),
        Output::Json => serde_json::to_string_pretty(&e)? + "\n",
        Output::Yaml => serde_yaml::to_string(&e)?,
    };
    use std::io::Write as _;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}
