//! Window state and incidents survive a restart, failover or shard hand-over. The owner of a
//! collector shard ([`super::shards`]) writes the state of its namespaces
//! ([`super::snapshot`]) into the shard's ConfigMap in its own namespace
//! (`--collector-state-configmap`, `<that>-<i>` for shard `i > 0`; binaryData `state`) every
//! `--collector-snapshot-interval`, when it hands the shard over and on graceful shutdown
//! while it still holds it. A replica that gains a shard advertises its endpoint, restores that
//! state (a corrupt or incompatible one is ignored with a warning and an Event) and reloads the
//! shard's open SecurityIncidents from the API, so detections continue the same incidents, and
//! TorList rules keep the lists downloaded from their `url` (used even if the URL is down,
//! downloaded again when due); only then does it accept the shard's reports and evaluate it.

use std::collections::HashMap;
use std::sync::PoisonError;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use palisade_crds::SecurityIncident;
use palisade_crds::incident::RiskLevel as CrdRisk;
use palisade_detection::incident::{Incident, IncidentState};
use palisade_detection::risk::RiskLevel;
use palisade_detection::window::{WindowConfig, Windows};
use serde_json::json;

use super::snapshot::{self, MAX_STATE_BYTES, NamespaceState, STATE_VERSION, StateDoc};
use super::{Collector, State};

const MANAGER: &str = palisade_policy::transport::OPERATOR_MANAGER;
const KEY: &str = "state";

/// Advertises this replica's collector endpoint on the Lease of `shard`; whether it did.
pub(super) async fn advertise(c: &Collector, shard: u32) -> bool {
    match super::forward::advertise(c, shard).await {
        Ok(()) => true,
        Err(e) => {
            let lease = c.shards.lease(&c.ctx.args, shard);
            tracing::warn!(%lease, error = %e, "cannot advertise the collector endpoint; retrying");
            false
        }
    }
}

/// Saves the state of `shard`, logging a failure.
pub(super) async fn save_logged(c: &Collector, shard: u32) {
    if let Err(e) = save(c, shard).await {
        c.count_state("save", "WriteFailed");
        let cm = c.shards.state_configmap(&c.ctx.args, shard);
        tracing::warn!(configmap = %cm, error = %e, "cannot save the collector state");
    }
}

/// The state of the namespaces for which `keep` is true as a document (their windows,
/// detected sets and open incidents; the downloaded TorList lists are added by the caller).
fn document(state: &State, now: jiff::Timestamp, keep: impl Fn(&str) -> bool) -> StateDoc {
    let namespaces = state
        .windows
        .namespaces()
        .filter(|(ns, _)| keep(ns))
        .map(|(ns, w)| {
            let incidents = state.incidents.get(ns).map(Vec::as_slice).unwrap_or(&[]);
            let s = NamespaceState {
                // Sorted in `save`, off the lock.
                windows: w.snapshot_unsorted(now),
                detected: state.detected.get(ns).cloned().unwrap_or_default(),
                incidents: incidents
                    .iter()
                    .filter(|i| snapshot::is_open(i))
                    .cloned()
                    .collect(),
                surge: state.surges.get(ns).cloned(),
                actions: state.evidence.series_of(ns),
            };
            (ns.to_owned(), s)
        })
        .collect();
    StateDoc {
        version: STATE_VERSION,
        taken_at: now,
        namespaces,
        tor_lists: vec![],
    }
}

/// Writes the state ConfigMap of `shard`.
async fn save(c: &Collector, shard: u32) -> Result<(), kube::Error> {
    let mine = |ns: &str| c.shards.of(ns) == shard;
    // The lock is held for a plain copy only; sorting and encoding happen off it.
    let mut doc = {
        let state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
        document(&state, jiff::Timestamp::now(), mine)
    };
    doc.tor_lists = c.tor.persisted();
    doc.tor_lists.retain(|l| mine(&l.namespace));
    let encoded = tokio::task::spawn_blocking(move || {
        doc.namespaces.values_mut().for_each(|n| n.windows.sort());
        snapshot::encode_bounded(&doc, MAX_STATE_BYTES).map(|(b, kept)| (b, kept, doc))
    })
    .await;
    let (bytes, kept, doc) = match encoded {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            c.count_state("save", e.reason());
            tracing::warn!(error = %e, "collector state not saved");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(error = %e, "collector state not encoded");
            return Ok(());
        }
    };
    if let Some(kept) = kept {
        tracing::warn!(
            clients_per_slice = kept,
            "collector state trimmed to its heaviest clients to fit the ConfigMap"
        );
    }
    use base64::Engine as _;
    let args = &c.ctx.args;
    let name = &c.shards.state_configmap(args, shard);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/managed-by": MANAGER, "app.kubernetes.io/part-of": "palisade"},
            "annotations": {"palisade.dev/state-version": STATE_VERSION.to_string(),
                "palisade.dev/taken-at": doc.taken_at.to_string(),
                "palisade.dev/taken-by": args.identity}},
        "binaryData": {KEY: base64::engine::general_purpose::STANDARD.encode(&bytes)}});
    let api: Api<ConfigMap> = Api::namespaced(c.ctx.clients.collector.clone(), &args.namespace);
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await?;
    let total = c.shards.saved(shard, bytes.len());
    c.ctx.metrics.collector_state_bytes.set(total as i64);
    c.count_state("save", "Saved");
    tracing::debug!(configmap = %name, bytes = bytes.len(), "collector state saved");
    Ok(())
}

/// Adds the persisted state of each of `shards` and their open incidents from the API to the
/// state (which holds nothing of their namespaces: they were dropped when lost). The open
/// incidents are listed once for all of them.
pub(super) async fn restore(c: &Collector, shards: &[u32]) {
    if shards.is_empty() {
        return;
    }
    let cfg = c
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .windows
        .config()
        .clone();
    let all_open = match open_incidents(&c.ctx.clients.collector).await {
        Ok(open) => Some(open),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list SecurityIncidents; using the persisted ones");
            None
        }
    };
    for &shard in shards {
        let mine = |ns: &str| c.shards.of(ns) == shard;
        let mut doc = load(c, shard, &cfg).await;
        // A document written under another shard count may hold namespaces of other shards.
        if let Some(d) = doc.as_mut() {
            d.namespaces.retain(|ns, _| mine(ns));
            d.tor_lists.retain(|l| mine(&l.namespace));
        }
        let open: Option<Vec<SecurityIncident>> = all_open.as_ref().map(|all| {
            all.iter()
                .filter(|i| i.namespace().is_some_and(|ns| mine(&ns)))
                .cloned()
                .collect()
        });
        let tor_lists = doc.as_ref().map_or(0, |d| c.tor.restore(&d.tor_lists));
        let clients = doc.as_ref().map_or(0, snapshot::clients);
        let incidents = {
            let mut state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
            rebuild_into(&mut state, &cfg, doc.as_ref(), open.as_deref())
        };
        c.ctx.metrics.collector_restored_clients.set(clients as i64);
        tracing::info!(
            shard,
            clients,
            incidents,
            tor_lists,
            from = ?doc.as_ref().map(|d| d.taken_at),
            "collector state restored"
        );
    }
}

/// The state from a document and the open incidents listed from the API (`None`: the list
/// failed, keep the document's). An incident the API has but the document lacks is rebuilt
/// from its status; one the document has but the API does not (deleted, archived) is dropped.
#[cfg(test)]
fn rebuild(cfg: &WindowConfig, doc: Option<&StateDoc>, open: Option<&[SecurityIncident]>) -> State {
    let mut state = State::new();
    state.windows = palisade_detection::window::WindowSet::new(cfg.clone());
    rebuild_into(&mut state, cfg, doc, open);
    state
}

/// [`rebuild`] into `state`, for the namespaces of `doc` and `open`; how many incidents it
/// added.
fn rebuild_into(
    state: &mut State,
    cfg: &WindowConfig,
    doc: Option<&StateDoc>,
    open: Option<&[SecurityIncident]>,
) -> usize {
    for (ns, s) in doc.iter().flat_map(|d| &d.namespaces) {
        state
            .windows
            .insert(ns.clone(), Windows::restore(cfg, &s.windows));
        state.detected.insert(ns.clone(), s.detected.clone());
        state.evidence.restore(ns, &s.actions);
        // An ongoing surge goes on under its name, unless its incident was archived or
        // deleted meanwhile (then a surge still on opens a new one).
        if let Some(surge) = &s.surge {
            let listed = open.is_none_or(|open| open.iter().any(|si| si.name_any() == surge.id));
            if listed {
                state.surges.restore(ns, surge.clone());
            }
        }
    }
    let persisted: HashMap<&str, &Incident> = doc
        .iter()
        .flat_map(|d| d.namespaces.values())
        .flat_map(|s| &s.incidents)
        .map(|i| (i.id.as_str(), i))
        .collect();
    let incidents: Vec<Incident> = match open {
        Some(open) => open
            .iter()
            .filter_map(|si| match persisted.get(si.name_any().as_str()) {
                Some(i) => Some((*i).clone()),
                None => from_status(si),
            })
            .collect(),
        None => persisted.into_values().cloned().collect(),
    };
    let added = incidents.len();
    let mut touched = std::collections::BTreeSet::new();
    for i in incidents {
        touched.insert(i.namespace.clone());
        state
            .incidents
            .entry(i.namespace.clone())
            .or_default()
            .push(i);
    }
    for ns in touched {
        if let Some(list) = state.incidents.get_mut(&ns) {
            list.sort_by(|a, b| {
                a.first_detected
                    .cmp(&b.first_detected)
                    .then(a.id.cmp(&b.id))
            });
        }
    }
    added
}

/// Reads and decodes the state ConfigMap; `None` when absent or unusable (then a warning, a
/// metric and an Event on the ConfigMap say why).
async fn load(c: &Collector, shard: u32, cfg: &WindowConfig) -> Option<StateDoc> {
    let args = &c.ctx.args;
    let name = &c.shards.state_configmap(args, shard);
    let api: Api<ConfigMap> = Api::namespaced(c.ctx.clients.collector.clone(), &args.namespace);
    let cm = match api.get_opt(name).await {
        Ok(Some(cm)) => cm,
        Ok(None) => {
            c.count_state("restore", "NoState");
            tracing::info!(configmap = %name, "no persisted collector state; starting empty");
            return None;
        }
        Err(e) => {
            c.count_state("restore", "ReadFailed");
            tracing::warn!(configmap = %name, error = %e, "cannot read the collector state; starting empty");
            return None;
        }
    };
    let bytes = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    match snapshot::decode(bytes, cfg) {
        Ok(doc) => {
            c.count_state("restore", "Restored");
            Some(doc)
        }
        Err(e) => {
            c.count_state("restore", e.reason());
            tracing::warn!(configmap = %name, error = %e, "persisted collector state ignored; starting empty");
            let event = Event {
                type_: EventType::Warning,
                reason: e.reason().into(),
                note: Some(format!(
                    "{e}; the collector starts with empty windows (they refill from reports)"
                )),
                action: "Restore".into(),
                secondary: None,
            };
            if let Err(err) = c.ctx.recorder.publish(&event, &cm.object_ref(&())).await {
                tracing::warn!(configmap = %name, error = %err, "could not publish Event");
            }
            None
        }
    }
}

/// The operator's SecurityIncidents that are not archived.
async fn open_incidents(client: &kube::Client) -> Result<Vec<SecurityIncident>, kube::Error> {
    let api: Api<SecurityIncident> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let list = api.list(&lp).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|i| !palisade_crds::keys::is_archived(&i.metadata))
        .collect())
}

/// An incident rebuilt from its object's status (when the persisted state lacks it): id,
/// rules, listed clients, traffic, risk and times; its series restarts.
fn from_status(si: &SecurityIncident) -> Option<Incident> {
    let s = si.status.as_ref()?;
    // An error surge's incident is about the namespace, not clients: it goes on only from
    // the persisted state.
    if s.scope == Some(palisade_crds::incident::IncidentScope::Namespace) {
        return None;
    }
    let first = s.first_detected_time.as_ref()?.0;
    let last = s.last_detected_time.as_ref()?.0;
    let clients: std::collections::BTreeSet<_> = s
        .attributes
        .as_ref()
        .and_then(|a| a.ips.as_ref())
        .map(|ips| {
            ips.top
                .iter()
                // `203.0.113.7` (or `ip:203.0.113.7`, as older operators wrote them). Only IP
                // clients can be rebuilt from the status; an incident about API keys or
                // tokens is rebuilt from the persisted state.
                .filter_map(|v| {
                    v.value.parse().ok().or_else(|| {
                        let ip = v.value.parse().ok()?;
                        Some(palisade_detection::key::ClientKey::Ip(ip))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let total = u64::try_from(s.clients.unwrap_or(0)).unwrap_or(0);
    Some(Incident {
        id: si.name_any(),
        namespace: si.namespace()?,
        display_name: s.display_name.clone().unwrap_or_default(),
        state: IncidentState::Active,
        risk: match s.risk_level {
            Some(CrdRisk::Severe) => RiskLevel::Severe,
            Some(CrdRisk::Moderate) => RiskLevel::Moderate,
            _ => RiskLevel::Low,
        },
        risk_score: 0,
        rules: s.detection_rules.iter().cloned().collect(),
        rule_types: Default::default(),
        clients_unlisted: total.saturating_sub(clients.len() as u64),
        clients,
        traffic: u64::try_from(s.requests.unwrap_or(0)).unwrap_or(0),
        traffic_partial: 0,
        first_detected: first,
        last_detected: last,
        counted_until: jiff::Timestamp::now(),
        series: Vec::new(),
        attributes: Default::default(),
        attribute_distinct: Default::default(),
        attribute_last_seen: Default::default(),
        rule_clients: Default::default(),
        rule_requests: Default::default(),
        peak_share: 0.0,
        merged_from: Vec::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use palisade_crds::incident::{
        IncidentAttributes, SecurityIncidentSpec, SecurityIncidentStatus, TopValues, ValueCount,
    };

    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn object(name: &str, clients: &[&str]) -> SecurityIncident {
        let mut si = SecurityIncident::new(name, SecurityIncidentSpec::default());
        si.metadata.namespace = Some("shop".into());
        si.status = Some(SecurityIncidentStatus {
            first_detected_time: Some(Time(t(0))),
            last_detected_time: Some(Time(t(60))),
            detection_rules: vec!["flooder".into()],
            risk_level: Some(CrdRisk::Moderate),
            clients: Some(clients.len() as i64 + 2),
            requests: Some(500),
            attributes: Some(IncidentAttributes {
                ips: Some(TopValues {
                    distinct: clients.len() as i64 + 2,
                    top: clients
                        .iter()
                        .map(|c| ValueCount {
                            value: (*c).into(),
                            requests: 0,
                            last_detected_time: None,
                        })
                        .collect(),
                }),
                ..IncidentAttributes::default()
            }),
            ..SecurityIncidentStatus::default()
        });
        si
    }

    #[test]
    fn an_incident_rebuilt_from_its_status_keeps_its_name_clients_and_risk() {
        // As written now (the address) and as older operators wrote it (the key).
        let o = object(
            "inc-0123456789abcdef",
            &["198.51.100.66", "ip:198.51.100.67"],
        );
        let i = from_status(&o).unwrap();
        assert_eq!(i.id, "inc-0123456789abcdef");
        assert_eq!(i.namespace, "shop");
        assert_eq!(
            i.clients
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["ip:198.51.100.66", "ip:198.51.100.67"]
        );
        assert_eq!(i.clients_unlisted, 2);
        assert_eq!(i.risk, RiskLevel::Moderate);
        assert_eq!(
            (i.traffic, i.first_detected, i.last_detected),
            (500, t(0), t(60))
        );
        assert!(i.rules.contains("flooder"));
    }

    #[test]
    fn the_api_decides_which_incidents_are_open_and_the_document_supplies_their_detail() {
        let cfg = WindowConfig::default();
        let mut persisted = from_status(&object("inc-a", &["ip:192.0.2.1"])).unwrap();
        persisted.series = vec![(t(0), 7)];
        let gone = from_status(&object("inc-gone", &["ip:192.0.2.2"])).unwrap();
        let doc = StateDoc {
            version: STATE_VERSION,
            taken_at: t(100),
            namespaces: [(
                "shop".to_owned(),
                NamespaceState {
                    windows: Windows::new(&cfg).snapshot(t(100)),
                    detected: Default::default(),
                    incidents: vec![persisted.clone(), gone],
                    surge: None,
                    actions: Default::default(),
                },
            )]
            .into(),
            tor_lists: vec![],
        };
        let open = [object("inc-a", &[]), object("inc-b", &["ip:192.0.2.3"])];
        let state = rebuild(&cfg, Some(&doc), Some(&open));
        let shop = &state.incidents["shop"];
        let ids: Vec<&str> = shop.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["inc-a", "inc-b"], "inc-gone is no longer open");
        assert_eq!(shop[0], persisted, "the persisted copy is exact");
        assert!(state.windows.get("shop").is_some(), "windows restored");

        let state = rebuild(&cfg, Some(&doc), None);
        assert_eq!(
            state.incidents["shop"].len(),
            2,
            "the list failed: keep the document's"
        );
    }
}
