//! `compile(&Inputs, now) -> Output`: a namespace's actions, rules, pause flags and referenced
//! lists become one [`Bundle`], a status per action, and the next instant at which the output
//! changes by itself (an expiry), so the operator requeues then instead of polling.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::actionset::{ActionId, MAX_ACTIONS};
use crate::bundle::{Bundle, BundleAction, MAX_RULES};
use crate::ipset::IpSetBuilder;
use crate::lists::PrefixList;
use crate::spec::{ActionSpec, Inputs, ListRef};
use crate::validate::{Checked, ListCache, check};

/// What `compile` produces.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The bundle: active actions only.
    pub bundle: Bundle,
    /// Every action's status, by name.
    pub statuses: BTreeMap<String, ActionStatus>,
    /// The earliest expiry still in the future: compile again at that instant.
    pub next_expiry: Option<Timestamp>,
}

/// The state of one action after compilation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionStatus {
    /// In the bundle, enforced (or observed) by the selected workloads.
    Active,
    /// Not in the bundle: paused by its own annotation, or by its namespace's.
    Paused {
        /// The namespace is paused (otherwise the action itself is).
        by_namespace: bool,
    },
    /// Not in the bundle: `now >= expire_time`.
    Expired {
        /// When it expired.
        at: Timestamp,
    },
    /// Not in the bundle: the spec or a reference is wrong.
    Invalid {
        /// PascalCase reason (Event reason, condition reason, metric label).
        reason: &'static str,
        /// What is wrong and what to do, naming the field.
        message: String,
    },
}

impl ActionStatus {
    /// A short PascalCase reason, fit for conditions, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Paused {
                by_namespace: false,
            } => "Paused",
            Self::Paused { by_namespace: true } => "NamespacePaused",
            Self::Expired { .. } => "Expired",
            Self::Invalid { reason, .. } => reason,
        }
    }
}

/// Compiles a namespace's inputs at instant `now`. Pure: same inputs, same output.
///
/// Status precedence: Expired, then Invalid, then Paused, then Active. Duplicate action names
/// (impossible in Kubernetes) keep the first occurrence.
pub fn compile(inputs: &Inputs, now: Timestamp) -> Output {
    let mut actions: Vec<&ActionSpec> = inputs.actions.iter().collect();
    actions.sort_by(|a, b| a.name.cmp(&b.name));
    actions.dedup_by(|a, b| a.name == b.name);

    let mut lists = ListCache::new(&inputs.lists);
    let mut statuses = BTreeMap::new();
    let mut active: Vec<(&ActionSpec, Checked)> = Vec::new();
    let mut next_expiry: Option<Timestamp> = None;
    for action in actions {
        if let Some(at) = action.expire_time {
            if now >= at {
                statuses.insert(action.name.clone(), ActionStatus::Expired { at });
                continue;
            }
            next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
        }
        let status = match check(action, &inputs.rules, &mut lists) {
            Err(e) => ActionStatus::Invalid {
                reason: e.reason,
                message: e.message,
            },
            Ok(_) if inputs.namespace_paused => ActionStatus::Paused { by_namespace: true },
            Ok(_) if action.paused => ActionStatus::Paused {
                by_namespace: false,
            },
            Ok(_) if active.len() >= MAX_ACTIONS => too_many_actions(),
            Ok(checked) => {
                active.push((action, checked));
                ActionStatus::Active
            }
        };
        statuses.insert(action.name.clone(), status);
    }
    let bundle = assemble(inputs, &active, &lists, &mut statuses);
    Output {
        bundle,
        statuses,
        next_expiry,
    }
}

fn too_many_actions() -> ActionStatus {
    ActionStatus::Invalid {
        reason: "TooManyActions",
        message: format!(
            "the namespace has more than {MAX_ACTIONS} active actions; this one (by name order) \
             is left out; delete or pause actions"
        ),
    }
}

/// Builds the bundle from the active actions. If their IP conditions combine into more
/// classes than the format holds, the IP actions are made Invalid and left out.
fn assemble(
    inputs: &Inputs,
    active: &[(&ActionSpec, Checked)],
    lists: &ListCache<'_>,
    statuses: &mut BTreeMap<String, ActionStatus>,
) -> Bundle {
    let mut rules: Vec<String> = inputs
        .rules
        .iter()
        .filter(|r| r.enabled())
        .map(|r| r.name.clone())
        .collect();
    rules.sort();
    rules.dedup();
    rules.truncate(MAX_RULES);
    let mut ips = IpSetBuilder::new();
    let mut owners: BTreeMap<&ListRef, Vec<ActionId>> = BTreeMap::new();
    for (i, (_, checked)) in active.iter().enumerate() {
        // `active` holds at most MAX_ACTIONS entries, so the index fits u16.
        let id = ActionId(i as u16);
        ips.add(&checked.inline, vec![id]);
        for r in &checked.lists {
            owners.entry(r).or_default().push(id);
        }
    }
    let empty = PrefixList::default();
    for (r, ids) in owners {
        ips.add(lists.get(r).unwrap_or(&empty), ids);
    }
    let actions = active
        .iter()
        .map(|(spec, checked)| bundle_action(spec, checked))
        .collect();
    match ips.build() {
        Ok(ips) => Bundle {
            generation: inputs.generation,
            rules,
            actions,
            ips,
        },
        Err(_) => {
            let (with_ip, rest): (Vec<_>, Vec<_>) =
                active.iter().partition(|(_, c)| c.conditions.ip);
            for (spec, _) in with_ip {
                statuses.insert(
                    spec.name.clone(),
                    ActionStatus::Invalid {
                        reason: "TooManyIpCombinations",
                        message: "the namespace's IP conditions overlap in more than 65535 \
                                  distinct combinations; merge overlapping actions"
                            .into(),
                    },
                );
            }
            let actions = rest
                .iter()
                .map(|(spec, checked)| bundle_action(spec, checked))
                .collect();
            Bundle {
                generation: inputs.generation,
                rules,
                actions,
                ips: Default::default(),
            }
        }
    }
}

fn bundle_action(spec: &ActionSpec, checked: &Checked) -> BundleAction {
    BundleAction {
        name: spec.name.clone(),
        verb: spec.verb.clone(),
        mode: spec.mode,
        workload_selector: spec.workload_selector.clone(),
        conditions: checked.conditions.clone(),
    }
}
