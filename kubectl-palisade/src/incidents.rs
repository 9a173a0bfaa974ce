//! `incidents [-w]`, `describe incident NAME` and `incident apply NAME`: the SecurityIncidents
//! the operator opens, read in the terminal (risk, rules, clients, top attributes, a traffic
//! sparkline), and the step from finding to action: the incident's proposed SecurityAction
//! applied by server-side apply (`--dry-run` asks the API server without writing; `--ttl`
//! replaces the proposed 24 hours).

use std::io::Write as _;

use futures::StreamExt as _;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use palisade_crds::incident::{IncidentScope, TopValues, TrafficSeries};
use palisade_crds::{SecurityAction, SecurityIncident};
use serde::{Deserialize as _, Serialize};
use serde_json::Value;

use crate::{Output, Target, Usage};

/// One incident, as the list shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentRow {
    /// Its name.
    pub name: String,
    /// `Severe`, `Moderate`, `Low`.
    pub risk: String,
    /// `Active` or `Archived`.
    pub state: String,
    /// Its rules, comma-separated.
    pub rules: String,
    /// Distinct clients.
    pub clients: i64,
    /// Its requests.
    pub requests: i64,
    /// First and last detection (RFC 3339).
    pub first_seen: String,
    /// See `first_seen`.
    pub last_seen: String,
    /// Like `1h25m`.
    pub duration: String,
    /// The generated summary.
    pub display_name: String,
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

/// The row of one incident.
pub fn row(i: &SecurityIncident) -> IncidentRow {
    let v = serde_json::to_value(i).unwrap_or_default();
    let s = &v["status"];
    IncidentRow {
        name: i.name_any(),
        risk: text(&s["riskLevel"]),
        state: s["state"].as_str().unwrap_or("Active").to_owned(),
        rules: text(&s["rulesSummary"]),
        clients: s["clients"].as_i64().unwrap_or_default(),
        requests: s["requests"].as_i64().unwrap_or_default(),
        first_seen: text(&s["firstDetectedTime"]),
        last_seen: text(&s["lastDetectedTime"]),
        duration: text(&s["duration"]),
        display_name: text(&s["displayName"]),
    }
}

const HEADER: [&str; 7] = [
    "NAME",
    "RISK",
    "STATE",
    "RULES",
    "CLIENTS",
    "REQUESTS",
    "LAST SEEN",
];

fn cells(r: &IncidentRow, wide: bool) -> Vec<String> {
    let mut c = vec![
        r.name.clone(),
        r.risk.clone(),
        r.state.clone(),
        r.rules.clone(),
        r.clients.to_string(),
        r.requests.to_string(),
        r.last_seen.clone(),
    ];
    if wide {
        c.extend([
            r.first_seen.clone(),
            r.duration.clone(),
            r.display_name.clone(),
        ]);
    }
    c
}

fn header(wide: bool) -> Vec<String> {
    let mut h: Vec<String> = HEADER.iter().map(|s| (*s).to_owned()).collect();
    if wide {
        h.extend(["FIRST SEEN", "DURATION", "SUMMARY"].map(str::to_owned));
    }
    h
}

/// Fixed-width columns (a watch cannot know the widths of rows to come).
fn fixed(cells: &[String]) -> String {
    const WIDTHS: [usize; 9] = [28, 9, 9, 28, 8, 9, 21, 21, 9];
    let mut out = String::new();
    for (i, c) in cells.iter().enumerate() {
        match WIDTHS.get(i) {
            Some(w) if i + 1 < cells.len() => out.push_str(&format!("{c:<w$} ")),
            _ => out.push_str(c),
        }
    }
    out.trim_end().to_owned()
}

/// `incidents [-w]`.
pub async fn list(t: &Target, watch: bool, output: Output) -> anyhow::Result<()> {
    let ns = &t.namespace;
    let api = Api::<SecurityIncident>::namespaced(t.client.clone(), ns);
    let wide = output == Output::Wide;
    let mut out = std::io::stdout();
    if !watch {
        let mut rows: Vec<IncidentRow> = api
            .list(&ListParams::default())
            .await
            .map_err(|e| anyhow::anyhow!("listing SecurityIncidents in namespace {ns:?}: {e}"))?
            .items
            .iter()
            .map(row)
            .collect();
        rows.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.name.cmp(&b.name)));
        let text = match output {
            Output::Json => serde_json::to_string_pretty(&rows)? + "\n",
            Output::Yaml => serde_yaml::to_string(&rows)?,
            Output::Table | Output::Wide if rows.is_empty() => {
                format!("No SecurityIncidents in namespace {ns}.\n")
            }
            Output::Table | Output::Wide => {
                let mut lines = vec![fixed(&header(wide))];
                lines.extend(rows.iter().map(|r| fixed(&cells(r, wide))));
                lines.join("\n") + "\n"
            }
        };
        out.write_all(text.as_bytes())?;
        return Ok(());
    }
    // A watch prints each incident as it is opened or changes, one line (or one JSON document)
    // per change, until interrupted.
    if matches!(output, Output::Table | Output::Wide) {
        writeln!(out, "{}", fixed(&header(wide)))?;
    }
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let i = event
            .map_err(|e| anyhow::anyhow!("watching SecurityIncidents in namespace {ns:?}: {e}"))?;
        let r = row(&i);
        let line = match output {
            Output::Json => serde_json::to_string(&r)?,
            Output::Yaml => format!("---\n{}", serde_yaml::to_string(&r)?),
            Output::Table | Output::Wide => fixed(&cells(&r, wide)),
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}

/// Requests per minute as a unicode sparkline, scaled to the largest minute.
pub fn sparkline(values: &[i64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|&v| {
            if v <= 0 {
                ' '
            } else {
                let i = usize::try_from((v * 7).div_euclid(max)).unwrap_or(7).min(7);
                BARS[i]
            }
        })
        .collect()
}

fn top(label: &str, t: Option<&TopValues>) -> Option<String> {
    let t = t?;
    let values: Vec<String> = t
        .top
        .iter()
        .take(5)
        .map(|v| format!("{} ({})", v.value, v.requests))
        .collect();
    Some(format!(
        "  {label:<15} {:>5} distinct: {}",
        t.distinct,
        values.join(", ")
    ))
}

fn traffic(t: Option<&TrafficSeries>) -> String {
    let Some(t) = t.filter(|t| !t.requests.is_empty()) else {
        return "Traffic:     no series yet\n".to_owned();
    };
    let n = t.requests.len();
    let last: &[i64] = &t.requests[n.saturating_sub(60)..];
    let peak = last.iter().copied().max().unwrap_or_default();
    format!(
        "Traffic:     requests per minute, the last {} minutes (peak {peak}/min)\n             {}\n",
        last.len(),
        sparkline(last)
    )
}

/// The text of `describe incident`.
pub fn describe_text(i: &SecurityIncident) -> String {
    let r = row(i);
    let s = i.status.clone().unwrap_or_default();
    let mut out = format!(
        "Name:        {}\nNamespace:   {}\nSummary:     {}\nRisk:        {}\nState:       {}\n\
         Rules:       {}\nClients:     {}\nRequests:    {}\nFirst seen:  {}\nLast seen:   {}\n\
         Duration:    {}\n",
        r.name,
        i.namespace().unwrap_or_default(),
        r.display_name,
        r.risk,
        r.state,
        r.rules,
        r.clients,
        r.requests,
        r.first_seen,
        r.last_seen,
        r.duration
    );
    out.push_str(&traffic(s.traffic.as_ref()));
    if let Some(a) = &s.attributes {
        out.push_str("Top attributes:\n");
        for line in [
            top("IPs", a.ips.as_ref()),
            top("user agents", a.user_agents.as_ref()),
            top("app keys", a.app_keys.as_ref()),
            top("countries", a.countries.as_ref()),
            top("response codes", a.response_codes.as_ref()),
            top("paths", a.paths.as_ref()),
            top("workloads", a.workloads.as_ref()),
            top("rules", a.rules.as_ref()),
            top("developers", a.developers.as_ref()),
            top("developer apps", a.developer_apps.as_ref()),
            top("API products", a.api_products.as_ref()),
        ]
        .into_iter()
        .flatten()
        {
            out.push_str(&line);
            out.push('\n');
        }
    }
    match &s.proposed_action {
        Some(_) => out.push_str(&format!(
            "Proposed:    a SecurityAction denying its clients; review it with `kubectl palisade \
             incident apply {} --dry-run`, apply it without --dry-run\n",
            r.name
        )),
        None if s.scope == Some(IncidentScope::Namespace) => out.push_str(
            "Proposed:    no action (an error surge of the whole namespace: look at the app and \
             what it depends on; nobody is to be denied)\n",
        ),
        None => out.push_str("Proposed:    no action (no client to deny)\n"),
    }
    out
}

async fn get(t: &Target, name: &str) -> anyhow::Result<SecurityIncident> {
    let ns = &t.namespace;
    Api::<SecurityIncident>::namespaced(t.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| anyhow::anyhow!("securityincident {name:?} in namespace {ns:?}: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("securityincident {name:?} not found in namespace {ns:?}"))
}

/// `describe incident`.
pub async fn describe(t: &Target, name: &str) -> anyhow::Result<()> {
    let i = get(t, name).await?;
    std::io::stdout().write_all(describe_text(&i).as_bytes())?;
    Ok(())
}

/// The proposed actions of `yaml`, with `ttl` instead of the proposed one when given.
pub fn proposed(yaml: &str, ttl: Option<&str>) -> Result<Vec<Value>, Usage> {
    if let Some(ttl) = ttl {
        palisade_crds::duration::parse_duration(ttl)
            .map_err(|e| Usage(format!("--ttl {ttl:?}: {e}")))?;
    }
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let mut v = Value::deserialize(doc)
            .map_err(|e| Usage(format!("the proposed action does not parse: {e}")))?;
        if v.is_null() {
            continue;
        }
        if let Some(ttl) = ttl {
            v["spec"]["ttl"] = Value::String(ttl.to_owned());
        }
        docs.push(v);
    }
    Ok(docs)
}

/// `incident apply`.
pub async fn apply(t: &Target, name: &str, dry_run: bool, ttl: Option<&str>) -> anyhow::Result<()> {
    let ns = &t.namespace;
    let i = get(t, name).await?;
    let surge = i
        .status
        .as_ref()
        .is_some_and(|s| s.scope == Some(IncidentScope::Namespace));
    let yaml = i.status.and_then(|s| s.proposed_action).ok_or_else(|| {
        if surge {
            anyhow::anyhow!(
                "securityincident {name:?} is an error surge of the whole namespace: it proposes \
                 no action (nobody is to be denied for errors everyone gets)"
            )
        } else {
            anyhow::anyhow!(
                "securityincident {name:?} proposes no action (it lists no client to deny)"
            )
        }
    })?;
    let docs = proposed(&yaml, ttl)?;
    let api = Api::<SecurityAction>::namespaced(t.client.clone(), ns);
    let mut pp = PatchParams::apply(crate::pause::MANAGER);
    pp.dry_run = dry_run;
    let mut out = std::io::stdout();
    for doc in docs {
        let action = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let applied = api
            .patch(&action, &pp, &Patch::Apply(&doc))
            .await
            .map_err(|e| anyhow::anyhow!("securityaction {action:?} (proposed by {name}): {e}"))?;
        if dry_run {
            let mut shown = serde_json::to_value(&applied)?;
            if let Some(m) = shown["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            writeln!(
                out,
                "---\n# server dry run: nothing written\n{}",
                serde_yaml::to_string(&shown)?.trim_end()
            )?;
        } else {
            writeln!(
                out,
                "securityaction.palisade.dev/{action} applied (proposed by securityincident {name})"
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_scales_to_the_busiest_minute() {
        assert_eq!(sparkline(&[0, 1, 4, 8]), " ▁▄█");
        assert_eq!(sparkline(&[5, 5]), "██");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[0, 0]), "  ");
    }

    #[test]
    fn the_proposed_documents_take_the_ttl_asked_for() {
        let yaml = "# header\n---\napiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {name: a-ips}\nspec: {deny: {}, ttl: 24h}\n---\napiVersion: palisade.dev/v1alpha1\nkind: SecurityAction\nmetadata: {name: a-keys}\nspec: {deny: {}, ttl: 24h}\n";
        let docs = proposed(yaml, Some("2h")).expect("ok");
        assert_eq!(docs.len(), 2);
        assert!(docs.iter().all(|d| d["spec"]["ttl"] == "2h"));
        assert_eq!(proposed(yaml, None).expect("ok")[1]["spec"]["ttl"], "24h");
        let e = proposed(yaml, Some("soon")).expect_err("not a duration");
        assert!(e.0.starts_with("--ttl \"soon\""), "{e}");
    }
}
