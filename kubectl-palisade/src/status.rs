//! `status`: what a namespace enforces and what is wrong with it, from the objects' status
//! (the operator's and the collector's), in one screen.

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use palisade_crds::keys::PAUSED_ANNOTATION;
use palisade_crds::posture::{POSTURE_NAME, SecurityPosture, SecurityPostureStatus};
use palisade_crds::{DetectionRule, SecurityAction, SecurityIncident};
use serde::Serialize;
use serde_json::Value;

use crate::{Output, Target};

/// One action, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRow {
    /// Its name.
    pub name: String,
    /// `Allow`, `Deny`, `Flag`, `RateLimit`.
    pub verb: String,
    /// `Enforce` or `Observe`.
    pub mode: String,
    /// `Active`, `Paused`, `Expired`, `Invalid`, `Unenforced`, or `Pending` before the operator
    /// wrote a status.
    pub state: String,
    /// `N/M` pods enforcing its current version.
    pub enforcing_pods: String,
    /// Requests it matched / decided / observed, over 5 minutes, an hour, a day.
    pub matched: [i64; 3],
    /// See `matched`.
    pub decided: [i64; 3],
    /// See `matched`.
    pub observed: [i64; 3],
    /// The bundle generation that first carried this version.
    pub bundle_generation: Option<i64>,
    /// Why it is not plainly active (the Ready condition's message, or the pause's end).
    pub note: String,
}

/// One rule, as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRow {
    /// Its name.
    pub name: String,
    /// Flooder, BruteGuessor, …
    pub rule_type: String,
    /// `Enforce` or `Observe`.
    pub mode: String,
    /// Clients it marks now.
    pub detected_clients: i64,
    /// When it last ran.
    pub last_evaluation: String,
    /// The Ready condition's message when it is not Ready.
    pub note: String,
}

/// Everything `status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The namespace.
    pub namespace: String,
    /// Whether `palisade.dev/paused` holds back every action of the namespace.
    pub paused: bool,
    /// Its SecurityActions, by name.
    pub actions: Vec<ActionRow>,
    /// Its DetectionRules, by name.
    pub rules: Vec<RuleRow>,
    /// Its SecurityPosture (absent until the operator checked the namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posture: Option<SecurityPostureStatus>,
    /// SecurityIncidents not archived.
    pub active_incidents: usize,
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

fn counts(v: &Value) -> [i64; 3] {
    ["last5m", "last1h", "last24h"].map(|k| v[k].as_i64().unwrap_or_default())
}

/// The message of the object's `Ready` condition when it is not `True`.
fn not_ready(status: &Value) -> String {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready" && c["status"] != "True")
        .map(|c| format!("{}: {}", text(&c["reason"]), text(&c["message"])))
        .unwrap_or_default()
}

/// The row of one action.
pub fn action_row(a: &SecurityAction) -> ActionRow {
    let v = serde_json::to_value(a).unwrap_or_default();
    let s = &v["status"];
    let state = match s["state"].as_str() {
        Some(state) => state.to_owned(),
        None => "Pending".to_owned(),
    };
    let note = match (state.as_str(), s["pausedUntil"].as_str()) {
        ("Paused", Some(until)) => format!("paused until {until}"),
        ("Active", _) => String::new(),
        _ => not_ready(s),
    };
    ActionRow {
        name: a.name_any(),
        verb: text(&s["verb"]),
        mode: text(&v["spec"]["mode"]),
        state,
        enforcing_pods: s["enforcingPods"].as_str().unwrap_or("-").to_owned(),
        matched: counts(&s["matchedRequests"]),
        decided: counts(&s["decidedRequests"]),
        observed: counts(&s["observedRequests"]),
        bundle_generation: s["bundleGeneration"].as_i64(),
        note,
    }
}

/// The row of one rule.
pub fn rule_row(r: &DetectionRule) -> RuleRow {
    let v = serde_json::to_value(r).unwrap_or_default();
    let s = &v["status"];
    RuleRow {
        name: r.name_any(),
        rule_type: text(&v["spec"]["type"]),
        mode: text(&v["spec"]["mode"]),
        detected_clients: s["detectedClients"].as_i64().unwrap_or_default(),
        last_evaluation: s["lastEvaluationTime"].as_str().unwrap_or("-").to_owned(),
        note: not_ready(s),
    }
}

async fn gather(t: &Target) -> anyhow::Result<Status> {
    let ns = &t.namespace;
    let lp = ListParams::default();
    let client = &t.client;
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .map_err(|e| anyhow::anyhow!("namespace {ns:?}: {e}"))?;
    let list_err = |what: &'static str| {
        move |e: kube::Error| anyhow::anyhow!("listing {what} in namespace {ns:?}: {e}")
    };
    let mut actions: Vec<ActionRow> = Api::<SecurityAction>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(list_err("SecurityActions"))?
        .items
        .iter()
        .map(action_row)
        .collect();
    actions.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rules: Vec<RuleRow> = Api::<DetectionRule>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(list_err("DetectionRules"))?
        .items
        .iter()
        .map(rule_row)
        .collect();
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    let posture = Api::<SecurityPosture>::namespaced(client.clone(), ns)
        .get_opt(POSTURE_NAME)
        .await
        .map_err(|e| anyhow::anyhow!("securityposture {POSTURE_NAME:?} in namespace {ns:?}: {e}"))?
        .and_then(|p| p.status);
    let active_incidents = Api::<SecurityIncident>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map_err(list_err("SecurityIncidents"))?
        .items
        .iter()
        .filter(|i| !palisade_crds::keys::is_archived(&i.metadata))
        .count();
    Ok(Status {
        namespace: ns.clone(),
        paused: palisade_crds::keys::is_true(
            namespace.metadata.annotations.as_ref(),
            PAUSED_ANNOTATION,
        ),
        actions,
        rules,
        posture,
        active_incidents,
    })
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().cloned().map(line));
    out.join("\n") + "\n"
}

/// The text `status` prints for people.
pub fn render(s: &Status, wide: bool) -> String {
    let mut out = format!("Namespace: {}", s.namespace);
    if s.paused {
        out.push_str("  (PAUSED: no action applies; kubectl palisade resume --all)");
    }
    out.push_str("\n\n");
    if s.actions.is_empty() {
        out.push_str("No SecurityActions.\n");
    } else {
        let mut header = vec![
            "ACTION",
            "VERB",
            "MODE",
            "STATE",
            "PODS",
            "MATCHED/1H",
            "DECIDED/1H",
        ];
        if wide {
            header.extend(["MATCHED/5M", "MATCHED/24H", "OBSERVED/1H", "GENERATION"]);
        }
        header.push("NOTE");
        let rows: Vec<Vec<String>> = s
            .actions
            .iter()
            .map(|a| {
                let mut r = vec![
                    a.name.clone(),
                    a.verb.clone(),
                    a.mode.clone(),
                    a.state.clone(),
                    a.enforcing_pods.clone(),
                    a.matched[1].to_string(),
                    a.decided[1].to_string(),
                ];
                if wide {
                    r.extend([
                        a.matched[0].to_string(),
                        a.matched[2].to_string(),
                        a.observed[1].to_string(),
                        a.bundle_generation
                            .map_or("-".to_owned(), |g| g.to_string()),
                    ]);
                }
                r.push(a.note.clone());
                r
            })
            .collect();
        out.push_str(&table(&header, &rows));
    }
    out.push('\n');
    if s.rules.is_empty() {
        out.push_str("No DetectionRules: nothing detects new abusers.\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .rules
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.rule_type.clone(),
                    r.mode.clone(),
                    r.detected_clients.to_string(),
                    r.last_evaluation.clone(),
                    r.note.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "RULE",
                "TYPE",
                "MODE",
                "DETECTED",
                "LAST EVALUATION",
                "NOTE",
            ],
            &rows,
        ));
    }
    out.push('\n');
    match &s.posture {
        None => out.push_str("Posture: not checked yet.\n"),
        Some(p) => {
            out.push_str(&format!(
                "Posture: score {} ({} Services protected): {}\n",
                p.score.unwrap_or_default(),
                p.protected_services.as_deref().unwrap_or("0/0"),
                p.summary.as_deref().unwrap_or_default()
            ));
            if let Some(n) = p.sidecar_count {
                let shown = if wide {
                    p.sidecars.len()
                } else {
                    p.sidecars.len().min(10)
                };
                out.push_str(&format!(
                    "Sidecars: {n} (namespace bundle generation {})\n",
                    p.bundle_generation
                        .map_or("-".to_owned(), |g| g.to_string())
                ));
                let rows: Vec<Vec<String>> = p.sidecars[..shown]
                    .iter()
                    .map(|s| {
                        let behind = match (s.generation, p.bundle_generation) {
                            (None, _) => "no report in 3 minutes".to_owned(),
                            (Some(g), Some(want)) if g < want => "behind".to_owned(),
                            _ => String::new(),
                        };
                        vec![
                            format!("  {}", s.pod),
                            s.generation.map_or("-".to_owned(), |g| g.to_string()),
                            s.last_report_time
                                .as_ref()
                                .map_or("-".to_owned(), |t| t.0.to_string()),
                            behind,
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    out.push_str(&table(
                        &["  POD", "GENERATION", "LAST REPORT", "NOTE"],
                        &rows,
                    ));
                }
                if shown < p.sidecars.len() {
                    out.push_str(&format!(
                        "  … {} more (-o wide)\n",
                        p.sidecars.len() - shown
                    ));
                }
            }
            for f in &p.findings {
                let sev = serde_json::to_value(f.severity).unwrap_or_default();
                let kind = serde_json::to_value(f.kind).unwrap_or_default();
                out.push_str(&format!(
                    "  {:<6}  {}  {}: {}\n          fix: {}\n",
                    text(&sev),
                    f.object,
                    text(&kind),
                    f.message,
                    f.remedy
                ));
            }
        }
    }
    out.push_str(&format!(
        "\nIncidents: {} active (kubectl get incidents -n {})\n",
        s.active_incidents, s.namespace
    ));
    out
}

/// `status`.
pub async fn status(t: &Target, output: Output) -> anyhow::Result<()> {
    let s = gather(t).await?;
    let text = match output {
        Output::Table => render(&s, false),
        Output::Wide => render(&s, true),
        Output::Json => serde_json::to_string_pretty(&s)? + "\n",
        Output::Yaml => serde_yaml::to_string(&s)?,
    };
    use std::io::Write as _;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn action(v: Value) -> SecurityAction {
        serde_json::from_value(v).expect("action")
    }

    #[test]
    fn an_action_row_says_why_it_is_not_active() {
        let a = action(json!({
            "apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityAction",
            "metadata": {"name": "deny-bad"},
            "spec": {"deny": {"status": 403}, "conditions": {"ipRanges": ["192.0.2.0/24"]}},
            "status": {"verb": "Deny", "state": "Invalid", "enforcingPods": "1/2",
                "matchedRequests": {"last5m": 1, "last1h": 7, "last24h": 9},
                "conditions": [{"type": "Ready", "status": "False", "reason": "MissingConfigMap",
                    "message": "configmap bad-ips not found", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }));
        let r = action_row(&a);
        assert_eq!(
            (r.verb.as_str(), r.mode.as_str(), r.state.as_str()),
            ("Deny", "Enforce", "Invalid")
        );
        assert_eq!((r.enforcing_pods.as_str(), r.matched), ("1/2", [1, 7, 9]));
        assert_eq!(r.note, "MissingConfigMap: configmap bad-ips not found");
        let fresh = action(
            json!({"apiVersion": "palisade.dev/v1alpha1", "kind": "SecurityAction",
            "metadata": {"name": "new"}, "spec": {"deny": {"status": 403}}}),
        );
        let r = action_row(&fresh);
        assert_eq!(
            (r.state.as_str(), r.enforcing_pods.as_str()),
            ("Pending", "-")
        );
    }

    #[test]
    fn the_table_lines_up_and_wide_adds_columns() {
        let s = Status {
            namespace: "shop".into(),
            paused: true,
            actions: vec![ActionRow {
                name: "a-long-name".into(),
                verb: "Deny".into(),
                mode: "Enforce".into(),
                state: "Paused".into(),
                enforcing_pods: "2/2".into(),
                note: "paused until 2030-01-01T00:00:00Z".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = render(&s, false);
        assert!(out.contains("(PAUSED"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let header = lines
            .iter()
            .find(|l| l.starts_with("ACTION"))
            .expect("header");
        let row = lines
            .iter()
            .find(|l| l.starts_with("a-long-name"))
            .expect("row");
        assert_eq!(header.find("VERB"), row.find("Deny"), "{out}");
        assert!(out.contains("No DetectionRules"), "{out}");
        assert!(out.contains("Posture: not checked yet."), "{out}");
        assert!(render(&s, true).contains("GENERATION"));
        assert!(!out.contains("GENERATION"));
    }
}
