//! `evaluate(&CompiledPolicy, &Request) -> Verdict`: the per-request decision.
//!
//! [`CompiledPolicy::new`] runs once per bundle load in a sidecar: it keeps only the actions
//! whose workload selector matches the pod's labels and builds one inverted index per
//! condition kind. A request is then one lookup per constrained kind, each giving a bitset of
//! actions, ANDed together (AND across kinds, OR within a kind). Nothing allocates.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::actionset::{ActionId, ActionSet};
use crate::bundle::{Bundle, BundleAction};
use crate::detected::{DetectedIndex, canonical_ip};
use crate::index::{KindIndex, PathIndex};
use crate::spec::{DetectedBy, Mode, Verb};

/// A bundle prepared for one workload's requests.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    bundle: Bundle,
    selected: ActionSet,
    enforce: ActionSet,
    allow: ActionSet,
    deny: ActionSet,
    flag: ActionSet,
    ip_unconstrained: ActionSet,
    ip_active: bool,
    ip_classes: Vec<ActionSet>,
    region: KindIndex<[u8; 2]>,
    asn: KindIndex<u32>,
    api_key: KindIndex<[u8; 32]>,
    token: KindIndex<[u8; 32]>,
    product: KindIndex<Box<str>>,
    developer: KindIndex<Box<str>>,
    app: KindIndex<Box<str>>,
    user_agent: KindIndex<Box<str>>,
    method: KindIndex<Box<str>>,
    paths: PathIndex,
    detected_constrained: ActionSet,
    detected_masks: Vec<(ActionId, u64)>,
}

/// What the sidecar knows about a request, borrowed from it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Client IP (socket, or `X-Forwarded-For` through trusted hops).
    pub ip: IpAddr,
    /// Region (ISO 3166-1 alpha-2, upper case) from the GeoIP database.
    pub region: Option<[u8; 2]>,
    /// Autonomous system number from the ASN database.
    pub asn: Option<u32>,
    /// sha256 of the API key.
    pub api_key_hash: Option<&'a [u8; 32]>,
    /// sha256 of the bearer access token.
    pub token_hash: Option<&'a [u8; 32]>,
    /// Developer.
    pub developer: Option<&'a str>,
    /// Developer app.
    pub app: Option<&'a str>,
    /// API product.
    pub product: Option<&'a str>,
    /// `User-Agent` header.
    pub user_agent: Option<&'a str>,
    /// HTTP method, as sent (methods are case-sensitive; conditions are upper case).
    pub method: &'a str,
    /// Request path, without the query string.
    pub path: &'a str,
    /// Detected clients, indexed against this policy's rules; `None` = nobody is detected.
    pub detected: Option<&'a DetectedIndex>,
    /// Now, in Unix seconds (detections expire).
    pub now_unix_s: i64,
}

impl<'a> Request<'a> {
    /// A request with only the IP, method and path known.
    pub fn new(ip: IpAddr, method: &'a str, path: &'a str) -> Self {
        Self {
            ip,
            region: None,
            asn: None,
            api_key_hash: None,
            token_hash: None,
            developer: None,
            app: None,
            product: None,
            user_agent: None,
            method,
            path,
            detected: None,
            now_unix_s: 0,
        }
    }
}

/// What to do with the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No allow or deny action matched: forward (with the headers of `Verdict::flags`).
    Forward,
    /// An allow action matched (the first by name): forward, skipping deny and flag actions.
    Allow(ActionId),
    /// A deny action matched and no allow did (the first by name): answer with its response.
    Deny(ActionId),
}

/// The outcome of [`evaluate`]. `Copy`, no allocation; ids index the policy's bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// Enforced flag actions whose headers to add (empty unless the decision is `Forward`).
    pub flags: ActionSet,
    /// Every enforce-mode action that matched (for counting).
    pub matched: ActionSet,
    /// Every observe-mode action that matched (for counting; nothing is applied).
    pub observed: ActionSet,
    /// What the decision would have been had the observed actions been enforced.
    pub would_be: Decision,
}

impl Verdict {
    /// The verdict when nothing matched.
    pub const NONE: Self = Self {
        decision: Decision::Forward,
        flags: ActionSet::EMPTY,
        matched: ActionSet::EMPTY,
        observed: ActionSet::EMPTY,
        would_be: Decision::Forward,
    };
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

impl CompiledPolicy {
    /// Prepares `bundle` for the workload with these pod labels.
    pub fn new(bundle: Bundle, workload_labels: &BTreeMap<String, String>) -> Self {
        let mut selected = ActionSet::EMPTY;
        let (mut enforce, mut allow, mut deny, mut flag) = Default::default();
        for (i, a) in bundle.actions.iter().enumerate().take(crate::MAX_ACTIONS) {
            let id = ActionId(i as u16);
            if !a
                .workload_selector
                .as_ref()
                .is_none_or(|s| s.matches(workload_labels))
            {
                continue;
            }
            selected.insert(id);
            if a.mode == Mode::Enforce {
                ActionSet::insert(&mut enforce, id);
            }
            let verb_set: &mut ActionSet = match a.verb {
                Verb::Allow => &mut allow,
                Verb::Deny { .. } => &mut deny,
                Verb::Flag { .. } => &mut flag,
            };
            verb_set.insert(id);
        }
        let ids = || {
            bundle
                .actions
                .iter()
                .enumerate()
                .map(|(i, a)| (ActionId(i as u16), a))
        };
        let sel = move |(id, _): &(ActionId, &BundleAction)| selected.contains(*id);
        let strs = |f: fn(&BundleAction) -> &Vec<String>| {
            KindIndex::build(
                ids()
                    .filter(sel)
                    .map(|(id, a)| (id, f(a).iter().map(|s| s.as_str().into()).collect())),
            )
        };
        let hashes = |f: fn(&BundleAction) -> &Vec<String>| {
            KindIndex::build(
                ids()
                    .filter(sel)
                    .map(|(id, a)| (id, f(a).iter().filter_map(|h| decode_hash(h)).collect())),
            )
        };
        let ip_unconstrained: ActionSet = ids()
            .filter(sel)
            .filter(|(_, a)| !a.conditions.ip)
            .map(|(id, _)| id)
            .collect();
        let ip_classes = bundle
            .ips
            .classes
            .iter()
            .map(|c| c.iter().copied().collect::<ActionSet>().and(&selected))
            .collect();
        let rule_mask = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| bundle.rules.iter().position(|r| r == n))
                .fold(0u64, |m, b| m | 1 << b)
        };
        let all_rules = rule_mask(&bundle.rules);
        let detected_masks: Vec<(ActionId, u64)> = ids()
            .filter(sel)
            .filter_map(|(id, a)| match &a.conditions.detected_by {
                None => None,
                Some(DetectedBy::Any) => Some((id, all_rules)),
                Some(DetectedBy::Rules(names)) => Some((id, rule_mask(names))),
            })
            .collect();
        Self {
            selected,
            enforce,
            allow,
            deny,
            flag,
            ip_active: ip_unconstrained != selected,
            ip_unconstrained,
            ip_classes,
            region: KindIndex::build(ids().filter(sel).map(|(id, a)| {
                (
                    id,
                    a.conditions
                        .region_codes
                        .iter()
                        .filter_map(|r| r.as_bytes().try_into().ok())
                        .collect(),
                )
            })),
            asn: KindIndex::build(
                ids()
                    .filter(sel)
                    .map(|(id, a)| (id, a.conditions.asns.clone())),
            ),
            api_key: hashes(|a| &a.conditions.api_keys),
            token: hashes(|a| &a.conditions.access_tokens),
            product: strs(|a| &a.conditions.api_products),
            developer: strs(|a| &a.conditions.developers),
            app: strs(|a| &a.conditions.developer_apps),
            user_agent: strs(|a| &a.conditions.user_agents),
            method: strs(|a| &a.conditions.http_methods),
            paths: PathIndex::build(
                ids()
                    .filter(sel)
                    .map(|(id, a)| (id, a.conditions.paths.clone())),
            ),
            detected_constrained: detected_masks.iter().map(|(id, _)| *id).collect(),
            detected_masks,
            bundle,
        }
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

    /// The headers of the verdict's flag actions, in action order then header order.
    pub fn flag_headers<'p>(
        &'p self,
        verdict: &Verdict,
    ) -> impl Iterator<Item = (&'p str, &'p str)> + 'p {
        let flags = verdict.flags;
        (0..self.bundle.actions.len().min(crate::MAX_ACTIONS))
            .map(|i| ActionId(i as u16))
            .filter(move |id| flags.contains(*id))
            .filter_map(|id| match &self.bundle.actions[id.index()].verb {
                Verb::Flag { headers } => Some(headers),
                _ => None,
            })
            .flatten()
            .map(|h| (h.name.as_str(), h.value.as_str()))
    }

    fn decide(&self, matched: ActionSet) -> (Decision, ActionSet) {
        if let Some(a) = matched.and(&self.allow).first() {
            (Decision::Allow(a), ActionSet::EMPTY)
        } else if let Some(d) = matched.and(&self.deny).first() {
            (Decision::Deny(d), ActionSet::EMPTY)
        } else {
            (Decision::Forward, matched.and(&self.flag))
        }
    }
}

fn decode_hash(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out).ok().map(|()| out)
}

/// Evaluates a request: allow > deny > flag among enforce-mode matches; observe-mode matches
/// are only recorded.
pub fn evaluate(p: &CompiledPolicy, req: &Request<'_>) -> Verdict {
    let mut m = p.selected;
    macro_rules! and {
        ($active:expr, $set:expr) => {
            if $active {
                m = m.and(&$set);
                if m.is_empty() {
                    return Verdict::NONE;
                }
            }
        };
    }
    and!(p.ip_active, {
        let class = p.bundle.ips.lookup(req.ip);
        class
            .and_then(|c| p.ip_classes.get(usize::from(c)))
            .map_or(p.ip_unconstrained, |s| s.or(&p.ip_unconstrained))
    });
    and!(p.method.active, p.method.matches(Some(req.method)));
    and!(p.paths.active, p.paths.matches(req.path));
    and!(p.region.active, p.region.matches(req.region.as_ref()));
    and!(p.asn.active, p.asn.matches(req.asn.as_ref()));
    and!(p.api_key.active, p.api_key.matches(req.api_key_hash));
    and!(p.token.active, p.token.matches(req.token_hash));
    and!(p.product.active, p.product.matches(req.product));
    and!(p.developer.active, p.developer.matches(req.developer));
    and!(p.app.active, p.app.matches(req.app));
    and!(p.user_agent.active, p.user_agent.matches(req.user_agent));
    if m.intersects(&p.detected_constrained) {
        let rules = req.detected.map_or(0, |d| {
            d.rules_for(
                canonical_ip(req.ip),
                req.api_key_hash,
                req.token_hash,
                req.now_unix_s,
            )
        });
        let mut ok = ActionSet::EMPTY;
        for &(id, want) in &p.detected_masks {
            if rules & want != 0 {
                ok.insert(id);
            }
        }
        m = m.and_not(&p.detected_constrained).or(&m.and(&ok));
    }
    let matched = m.and(&p.enforce);
    let observed = m.and_not(&p.enforce);
    let (decision, flags) = p.decide(matched);
    let would_be = if observed.is_empty() {
        decision
    } else {
        p.decide(m).0
    };
    Verdict {
        decision,
        flags,
        matched,
        observed,
        would_be,
    }
}
