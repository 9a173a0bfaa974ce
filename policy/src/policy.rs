//! [`CompiledPolicy`]: a bundle prepared for one workload. Built once per bundle load in a
//! sidecar: it keeps only the actions whose workload selector matches the pod's labels and
//! builds one inverted index per condition kind, so that `evaluate` never walks the actions.

use std::collections::BTreeMap;

use crate::actionset::{ActionId, ActionSet};
use crate::bundle::{Bundle, BundleAction, BundleConditions};
use crate::evaluate::{Decision, Verdict};
use crate::index::{KindIndex, PathIndex};
use crate::spec::{DetectedBy, Mode, RateLimit, Verb};

/// A bundle prepared for one workload's requests.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub(crate) bundle: Bundle,
    pub(crate) selected: ActionSet,
    pub(crate) enforce: ActionSet,
    allow: ActionSet,
    deny: ActionSet,
    flag: ActionSet,
    rate_limit: ActionSet,
    pub(crate) ip_unconstrained: ActionSet,
    pub(crate) ip_active: bool,
    pub(crate) ip_classes: Vec<ActionSet>,
    pub(crate) region: KindIndex<[u8; 2]>,
    pub(crate) asn: KindIndex<u32>,
    pub(crate) api_key: KindIndex<[u8; 32]>,
    pub(crate) token: KindIndex<[u8; 32]>,
    pub(crate) product: KindIndex<Box<str>>,
    pub(crate) developer: KindIndex<Box<str>>,
    pub(crate) app: KindIndex<Box<str>>,
    pub(crate) user_agent: KindIndex<Box<str>>,
    pub(crate) ua_patterns: Vec<(ActionId, crate::spec::TextPattern)>,
    pub(crate) method: KindIndex<Box<str>>,
    pub(crate) paths: PathIndex,
    /// The selected actions that constrain none of the kinds above (`detectedBy` aside):
    /// what a request that hits no kind's index matches.
    pub(crate) unconstrained: ActionSet,
    pub(crate) detected_constrained: ActionSet,
    pub(crate) detected_masks: Vec<(ActionId, u64)>,
    /// The selected actions that expire, earliest first (Unix seconds).
    pub(crate) expiring: Vec<(i64, ActionId)>,
}

/// A deny action's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyResponse<'p> {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: &'p str,
    /// `Content-Type`.
    pub content_type: &'p str,
}

type Chosen<'b> = [(ActionId, &'b BundleAction)];

/// Builds one kind's index over the chosen actions.
fn index<K: std::hash::Hash + Eq>(
    chosen: &Chosen<'_>,
    values: impl Fn(&BundleConditions) -> Vec<K>,
) -> KindIndex<K> {
    KindIndex::build(chosen.iter().map(|(id, a)| (*id, values(&a.conditions))))
}

fn strings(v: &[String]) -> Vec<Box<str>> {
    v.iter().map(|s| s.as_str().into()).collect()
}

fn hashes(v: &[String]) -> Vec<[u8; 32]> {
    v.iter()
        .filter_map(|h| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out).ok().map(|()| out)
        })
        .collect()
}

fn set_where(chosen: &Chosen<'_>, f: impl Fn(&BundleAction) -> bool) -> ActionSet {
    chosen
        .iter()
        .filter(|(_, a)| f(a))
        .map(|(id, _)| *id)
        .collect()
}

/// `(action, mask of the rules it waits for)` for every action with a `detectedBy` condition.
fn detected_masks(chosen: &Chosen<'_>, rules: &[String]) -> Vec<(ActionId, u64)> {
    let mask = |names: &[String]| {
        names
            .iter()
            .filter_map(|n| rules.iter().position(|r| r == n))
            .fold(0u64, |m, b| m | 1 << b)
    };
    chosen
        .iter()
        .filter_map(|(id, a)| match &a.conditions.detected_by {
            None => None,
            Some(DetectedBy::Any) => Some((*id, mask(rules))),
            Some(DetectedBy::Rules(names)) => Some((*id, mask(names))),
        })
        .collect()
}

impl CompiledPolicy {
    /// Prepares `bundle` for the workload with these pod labels.
    pub fn new(bundle: Bundle, workload_labels: &BTreeMap<String, String>) -> Self {
        let chosen: Vec<(ActionId, &BundleAction)> = bundle
            .actions
            .iter()
            .take(crate::MAX_ACTIONS)
            .enumerate()
            .map(|(i, a)| (ActionId(i as u16), a))
            .filter(|(_, a)| {
                a.workload_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(workload_labels))
            })
            .collect();
        let selected = set_where(&chosen, |_| true);
        let ip_unconstrained = set_where(&chosen, |a| !a.conditions.ip);
        let ip_classes = bundle
            .ips
            .classes
            .iter()
            .map(|c| c.iter().copied().collect::<ActionSet>().and(&selected))
            .collect();
        let detected_masks = detected_masks(&chosen, &bundle.rules);
        let mut expiring: Vec<(i64, ActionId)> = chosen
            .iter()
            .filter_map(|(id, a)| Some((a.expires_unix_s?, *id)))
            .collect();
        expiring.sort_unstable();
        let mut p = Self {
            expiring,
            selected,
            enforce: set_where(&chosen, |a| a.mode == Mode::Enforce),
            allow: set_where(&chosen, |a| matches!(a.verb, Verb::Allow)),
            deny: set_where(&chosen, |a| matches!(a.verb, Verb::Deny { .. })),
            flag: set_where(&chosen, |a| matches!(a.verb, Verb::Flag { .. })),
            rate_limit: set_where(&chosen, |a| matches!(a.verb, Verb::RateLimit(_))),
            ip_active: ip_unconstrained != selected,
            ip_unconstrained,
            ip_classes,
            region: index(&chosen, |c| {
                c.region_codes
                    .iter()
                    .filter_map(|r| r.as_bytes().try_into().ok())
                    .collect()
            }),
            asn: index(&chosen, |c| c.asns.clone()),
            api_key: index(&chosen, |c| hashes(&c.api_keys)),
            token: index(&chosen, |c| hashes(&c.access_tokens)),
            product: index(&chosen, |c| strings(&c.api_products)),
            developer: index(&chosen, |c| strings(&c.developers)),
            app: index(&chosen, |c| strings(&c.developer_apps)),
            user_agent: {
                let mut idx = index(&chosen, |c| strings(&c.user_agents));
                idx.constrain(set_where(&chosen, |a| {
                    !a.conditions.user_agent_patterns.is_empty()
                }));
                idx
            },
            ua_patterns: chosen
                .iter()
                .flat_map(|(id, a)| {
                    a.conditions
                        .user_agent_patterns
                        .iter()
                        .map(|p| (*id, p.clone()))
                })
                .collect(),
            method: index(&chosen, |c| strings(&c.http_methods)),
            paths: PathIndex::build(
                chosen
                    .iter()
                    .map(|(id, a)| (*id, a.conditions.paths.clone())),
            ),
            unconstrained: ActionSet::EMPTY,
            detected_constrained: detected_masks.iter().map(|(id, _)| *id).collect(),
            detected_masks,
            bundle,
        };
        p.unconstrained = [
            p.method.unconstrained(),
            p.paths.unconstrained(),
            p.region.unconstrained(),
            p.asn.unconstrained(),
            p.api_key.unconstrained(),
            p.token.unconstrained(),
            p.product.unconstrained(),
            p.developer.unconstrained(),
            p.app.unconstrained(),
            p.user_agent.unconstrained(),
        ]
        .into_iter()
        .fold(p.ip_unconstrained, |acc, u| acc.and(u));
        p
    }

    /// The bundle this policy was built from.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The actions that apply to this workload.
    pub fn selected(&self) -> ActionSet {
        self.selected
    }

    /// An action by id.
    pub fn action(&self, id: ActionId) -> Option<&BundleAction> {
        self.bundle.actions.get(id.index())
    }

    /// The response of a deny action (`None` for another verb or an unknown id).
    pub fn deny_response(&self, id: ActionId) -> Option<DenyResponse<'_>> {
        match &self.action(id)?.verb {
            Verb::Deny {
                status,
                body,
                content_type,
            } => Some(DenyResponse {
                status: *status,
                body,
                content_type,
            }),
            _ => None,
        }
    }

    /// The selected actions expired at `now_unix_s` (the sidecar applies none of them).
    pub(crate) fn expired(&self, now_unix_s: i64) -> ActionSet {
        self.expiring
            .iter()
            .take_while(|(at, _)| *at <= now_unix_s)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The headers of the verdict's flag actions, in action order then header order.
    pub fn flag_headers<'p>(
        &'p self,
        verdict: &Verdict,
    ) -> impl Iterator<Item = (&'p str, &'p str)> + 'p {
        let flags = verdict.flags;
        flags
            .iter()
            .filter_map(|id| match &self.bundle.actions.get(id.index())?.verb {
                Verb::Flag { headers } => Some(headers),
                _ => None,
            })
            .flatten()
            .map(|h| (h.name.as_str(), h.value.as_str()))
    }

    /// The limit of a rate-limit action (`None` for another verb or an unknown id).
    pub fn rate_limit(&self, id: ActionId) -> Option<&RateLimit> {
        match &self.action(id)?.verb {
            Verb::RateLimit(limit) => Some(limit),
            _ => None,
        }
    }

    /// The rate-limit actions of this workload.
    pub fn rate_limits(&self) -> ActionSet {
        self.rate_limit
    }

    /// allow > deny > rate limit and flag among `matched`: the decision, the flags to apply
    /// and the rate limits the request must be under to be forwarded.
    pub(crate) fn decide(&self, matched: ActionSet) -> (Decision, ActionSet, ActionSet) {
        if let Some(a) = matched.and(&self.allow).first() {
            (Decision::Allow(a), ActionSet::EMPTY, ActionSet::EMPTY)
        } else if let Some(d) = matched.and(&self.deny).first() {
            (Decision::Deny(d), ActionSet::EMPTY, ActionSet::EMPTY)
        } else {
            (
                Decision::Forward,
                matched.and(&self.flag),
                matched.and(&self.rate_limit),
            )
        }
    }
}
