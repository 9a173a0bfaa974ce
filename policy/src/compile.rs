//! `compile(&Inputs, now) -> Output`: a namespace's actions, rules, pause flags and referenced
//! lists become one [`Bundle`], a status per action, and the next instant at which the output
//! changes by itself (an expiry), so the operator requeues then instead of polling.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::actionset::{ActionId, MAX_ACTIONS};
use crate::bundle::{Bundle, BundleAction, MAX_RULES};
use crate::ipset::IpSetBuilder;
use crate::key::ClientKeyKind;
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
    // Every rule counts here, paused and observing ones too: they still run, and their
    // incidents need their clients counted.
    let mut count_keys: Vec<ClientKeyKind> = inputs.rules.iter().map(|r| r.client_key).collect();
    count_keys.push(ClientKeyKind::Ip);
    count_keys.sort();
    count_keys.dedup();
    let ipv6_prefix_len = inputs
        .ipv6_prefix_len
        .unwrap_or(crate::key::DEFAULT_IPV6_PREFIX_LEN)
        .clamp(crate::key::MIN_IPV6_PREFIX_LEN, 128);
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
            trusted_proxies: inputs.trusted_proxies.clone(),
            debug_headers: inputs.debug_headers,
            count_keys,
            ipv6_prefix_len,
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
                trusted_proxies: inputs.trusted_proxies.clone(),
                debug_headers: inputs.debug_headers,
                count_keys,
                ipv6_prefix_len,
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
        // Rounded up: a sidecar's clock in whole seconds never ends the action early.
        expires_unix_s: spec
            .expire_time
            .map(|t| t.as_second() + i64::from(t.subsec_nanosecond() > 0)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::{DetectedBy, Mode, RuleSpec};
    use crate::testutil::{allow, deny, flag, ts, with_ips};

    fn inputs(actions: Vec<ActionSpec>) -> Inputs {
        Inputs {
            actions,
            generation: 3,
            ..Default::default()
        }
    }

    fn invalid_message(out: &Output, name: &str) -> String {
        match &out.statuses[name] {
            ActionStatus::Invalid { message, .. } => message.clone(),
            other => panic!("{name} is {other:?}, not Invalid"),
        }
    }

    fn blocklist() -> ListRef {
        ListRef {
            config_map: "blocklist".into(),
            key: "ips".into(),
        }
    }

    #[test]
    fn expiry_is_exact_to_the_second() {
        let mut a = with_ips(deny("a"), &["10.0.0.1"]);
        a.expire_time = Some(ts("2026-11-26T12:00:00Z"));
        let b = with_ips(deny("b"), &["10.0.0.2"]);
        let inp = inputs(vec![a, b]);

        let before = compile(&inp, ts("2026-11-26T11:59:59Z"));
        assert_eq!(before.statuses["a"], ActionStatus::Active);
        assert_eq!(before.bundle.actions.len(), 2);
        assert_eq!(before.next_expiry, Some(ts("2026-11-26T12:00:00Z")));

        let just_before = compile(&inp, ts("2026-11-26T11:59:59.999Z"));
        assert_eq!(just_before.statuses["a"], ActionStatus::Active);

        for now in ["2026-11-26T12:00:00Z", "2026-11-26T12:00:01Z"] {
            let after = compile(&inp, ts(now));
            assert_eq!(
                after.statuses["a"],
                ActionStatus::Expired {
                    at: ts("2026-11-26T12:00:00Z")
                }
            );
            assert_eq!(after.bundle.actions.len(), 1);
            assert!(after.bundle.action("a").is_none());
            assert_eq!(after.next_expiry, None);
        }
    }

    #[test]
    fn next_expiry_is_the_earliest_future_one_even_if_paused() {
        let mut a = with_ips(deny("a"), &["10.0.0.1"]);
        a.expire_time = Some(ts("2026-11-26T13:00:00Z"));
        let mut b = with_ips(deny("b"), &["10.0.0.2"]);
        b.expire_time = Some(ts("2026-11-26T12:30:00Z"));
        b.paused = true;
        let mut c = with_ips(deny("c"), &["10.0.0.3"]);
        c.expire_time = Some(ts("2026-11-26T12:00:00Z"));
        let out = compile(&inputs(vec![a, b, c]), ts("2026-11-26T12:10:00Z"));
        assert_eq!(out.next_expiry, Some(ts("2026-11-26T12:30:00Z")));
        assert_eq!(out.statuses["c"].reason(), "Expired");
    }

    #[test]
    fn pause_on_action_and_on_namespace() {
        let mut a = with_ips(deny("a"), &["10.0.0.1"]);
        a.paused = true;
        let b = with_ips(deny("b"), &["10.0.0.2"]);
        let mut inp = inputs(vec![a, b]);
        let now = ts("2026-01-01T00:00:00Z");
        let out = compile(&inp, now);
        assert_eq!(
            out.statuses["a"],
            ActionStatus::Paused {
                by_namespace: false
            }
        );
        assert_eq!(out.statuses["a"].reason(), "Paused");
        assert_eq!(out.statuses["b"], ActionStatus::Active);
        assert_eq!(
            out.bundle
                .actions
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert!(
            out.bundle
                .ips
                .actions_for("10.0.0.1".parse().unwrap())
                .is_empty()
        );

        inp.namespace_paused = true;
        let out = compile(&inp, now);
        assert!(out.bundle.actions.is_empty());
        assert!(out.bundle.ips.v4.is_empty());
        assert_eq!(out.statuses["b"].reason(), "NamespacePaused");
        assert_eq!(out.statuses["a"].reason(), "NamespacePaused");
    }

    #[test]
    fn invalid_reference_messages_name_the_field_and_line() {
        let mut a = deny("a");
        a.conditions.ip_lists = vec![blocklist()];
        let mut b = deny("b");
        b.conditions.ip_lists = vec![ListRef {
            config_map: "missing".into(),
            key: "ips".into(),
        }];
        let mut inp = inputs(vec![a, b]);
        let text: String = (1..=11)
            .map(|i| format!("10.0.0.{i}\n"))
            .collect::<String>()
            + "10.0.0.300/8\n";
        inp.lists.insert(blocklist(), text);
        let out = compile(&inp, ts("2026-01-01T00:00:00Z"));
        assert_eq!(
            invalid_message(&out, "a"),
            "ipRangesFrom[0]: ConfigMap blocklist key ips line 12: \"10.0.0.300/8\" is not an \
             IP prefix; fix or remove the line"
        );
        assert_eq!(out.statuses["a"].reason(), "InvalidReference");
        assert_eq!(
            invalid_message(&out, "b"),
            "ipRangesFrom[0]: ConfigMap missing key ips not found; create it or remove the \
             reference"
        );
        assert!(out.bundle.actions.is_empty());
    }

    #[test]
    fn invalid_conditions_say_what_to_fix() {
        let mut cases: Vec<(ActionSpec, &str)> = Vec::new();
        cases.push((
            with_ips(deny("ip"), &["10.0.0.0/8", "banana"]),
            "ipRanges[1]: \"banana\"",
        ));
        let mut a = deny("region");
        a.conditions.region_codes = vec!["US".into(), "USA".into()];
        cases.push((a, "regionCodes[1]: \"USA\""));
        let mut a = deny("key");
        a.conditions.api_keys = vec!["plaintext-key".into()];
        cases.push((
            a,
            "apiKeys[0]: \"plaintext-key\" is not a hash; write sha256:",
        ));
        let mut a = deny("path");
        a.conditions.paths = vec![crate::spec::PathMatch::Prefix("api".into())];
        cases.push((a, "paths[0]: \"api\" does not start with \"/\""));
        let mut a = deny("escape");
        a.conditions.paths = vec![crate::spec::PathMatch::Exact("/a%zz".into())];
        cases.push((
            a,
            "paths[0]: \"/a%zz\" has an invalid percent-encoding at byte 2",
        ));
        let mut a = deny("param");
        a.conditions.paths = vec![crate::spec::PathMatch::PrefixIgnoreCase("/a;x/".into())];
        cases.push((a, "paths[0]: \"/a;x/\" contains ';'"));
        let mut a = deny("rule");
        a.conditions.detected_by = Some(DetectedBy::Rules(vec!["nope".into()]));
        cases.push((a, "detectedBy.rules[0]: DetectionRule \"nope\" not found"));
        cases.push((deny("empty"), "conditions: no condition is set"));
        let mut a = with_ips(deny("both"), &["10.0.0.1"]);
        a.match_all = true;
        cases.push((a, "matchAll: true cannot be combined"));
        let mut a = with_ips(deny("status"), &["10.0.0.1"]);
        a.verb = crate::spec::Verb::Deny {
            status: 700,
            body: String::new(),
            content_type: "text/plain".into(),
        };
        cases.push((a, "deny.status 700 is not an HTTP status code"));
        let mut a = with_ips(flag("hdr", "bad header"), &["10.0.0.1"]);
        a.verb = crate::spec::Verb::Flag {
            headers: vec![crate::spec::Header {
                name: "bad header".into(),
                value: "x".into(),
            }],
        };
        cases.push((a, "flag.headers[0].name \"bad header\""));
        let mut a = with_ips(deny("sel"), &["10.0.0.1"]);
        a.workload_selector = Some(crate::LabelSelector {
            match_expressions: vec![crate::LabelRequirement {
                key: "app".into(),
                operator: crate::SelectorOperator::In,
                values: vec![],
            }],
            ..Default::default()
        });
        cases.push((a, "workloadSelector.matchExpressions[0]"));

        let names: Vec<String> = cases.iter().map(|(a, _)| a.name.clone()).collect();
        let out = compile(
            &inputs(cases.iter().map(|(a, _)| a.clone()).collect()),
            ts("2026-01-01T00:00:00Z"),
        );
        for ((_, expected), name) in cases.iter().zip(names) {
            let msg = invalid_message(&out, &name);
            assert!(
                msg.starts_with(expected),
                "{name}: {msg:?} should start with {expected:?}"
            );
        }
        assert!(out.bundle.actions.is_empty());
    }

    #[test]
    fn path_values_are_stored_as_requests_are_matched() {
        use crate::spec::PathMatch::{Exact, ExactIgnoreCase, Prefix, PrefixIgnoreCase};
        let mut a = deny("paths");
        a.conditions.paths = vec![
            Exact("/admin/".into()),
            Exact("//x/../%61pi/./".into()),
            Prefix("/static//v1/".into()),
            ExactIgnoreCase("/Login/".into()),
            PrefixIgnoreCase("/files/a%2fb%20".into()),
            Exact("/".into()),
        ];
        let out = compile(&inputs(vec![a]), ts("2026-01-01T00:00:00Z"));
        assert_eq!(out.statuses["paths"], ActionStatus::Active);
        assert_eq!(
            out.bundle.actions[0].conditions.paths,
            [
                Exact("/admin".into()),
                Exact("/api".into()),
                Prefix("/static/v1/".into()),
                ExactIgnoreCase("/Login".into()),
                PrefixIgnoreCase("/files/a%2Fb%20".into()),
                Exact("/".into()),
            ]
        );
    }

    #[test]
    fn shared_list_is_compiled_once_for_all_its_actions() {
        let mut actions = Vec::new();
        for name in ["a", "b", "c"] {
            let mut a = deny(name);
            a.conditions.ip_lists = vec![blocklist()];
            actions.push(a);
        }
        actions.push(with_ips(allow("d"), &["10.0.0.0/30"]));
        let mut inp = inputs(actions);
        inp.lists.insert(
            blocklist(),
            "10.0.0.0/24\n10.0.0.0/24\n10.0.5.0/24\n".into(),
        );
        let out = compile(&inp, ts("2026-01-01T00:00:00Z"));
        // 10.0.0.0/30 (a,b,c,d), 10.0.0.4-255 (a,b,c), 10.0.5.0/24 (a,b,c)
        assert_eq!(out.bundle.ips.v4.len(), 3);
        assert_eq!(out.bundle.ips.classes.len(), 2);
        let ids = |ip: &str| out.bundle.ips.actions_for(ip.parse().unwrap()).len();
        assert_eq!(ids("10.0.0.1"), 4);
        assert_eq!(ids("10.0.0.9"), 3);
        assert_eq!(ids("10.0.5.9"), 3);
        assert_eq!(ids("10.0.6.0"), 0);
    }

    #[test]
    fn output_is_deterministic_and_sorted_by_name() {
        let now = ts("2026-01-01T00:00:00Z");
        let a = with_ips(deny("zeta"), &["10.0.0.1"]);
        let b = with_ips(flag("alpha", "x-flag"), &["10.0.0.0/8"]);
        let one = compile(&inputs(vec![a.clone(), b.clone()]), now);
        let two = compile(&inputs(vec![b, a]), now);
        assert_eq!(one, two);
        assert_eq!(one.bundle.actions[0].name, "alpha");
        assert_eq!(one.bundle.generation, 3);
        assert_eq!(
            one.bundle.content_hash().unwrap(),
            two.bundle.content_hash().unwrap()
        );
    }

    #[test]
    fn rule_table_holds_enabled_rules_only() {
        let mut inp = inputs(vec![]);
        inp.rules = vec![
            RuleSpec {
                name: "flooder".into(),
                paused: false,
                mode: Mode::Enforce,
                client_key: ClientKeyKind::Ip,
            },
            RuleSpec {
                name: "brute".into(),
                paused: true,
                mode: Mode::Enforce,
                client_key: ClientKeyKind::Ip,
            },
            RuleSpec {
                name: "scraper".into(),
                paused: false,
                mode: Mode::Observe,
                client_key: ClientKeyKind::Ip,
            },
            RuleSpec {
                name: "abuser".into(),
                paused: false,
                mode: Mode::Enforce,
                client_key: ClientKeyKind::Ip,
            },
        ];
        let mut a = deny("a");
        a.conditions.detected_by = Some(DetectedBy::Rules(vec!["brute".into()]));
        inp.actions.push(a);
        let out = compile(&inp, ts("2026-01-01T00:00:00Z"));
        assert_eq!(out.bundle.rules, ["abuser", "flooder"]);
        // Referencing a paused rule is valid; it just cannot match while paused.
        assert_eq!(out.statuses["a"], ActionStatus::Active);
    }

    #[test]
    fn the_bundle_names_the_key_kinds_of_every_rule_and_always_ip() {
        let rule = |name: &str, client_key, paused| RuleSpec {
            name: name.into(),
            paused,
            mode: Mode::Observe,
            client_key,
        };
        let mut inp = inputs(vec![]);
        let t = ts("2026-01-01T00:00:00Z");
        assert_eq!(
            compile(&inp, t).bundle.count_keys,
            [ClientKeyKind::Ip],
            "no rule"
        );
        inp.rules = vec![
            rule("by-token", ClientKeyKind::AccessToken, false),
            // Paused and observing rules still run: their clients are counted.
            rule("by-key", ClientKeyKind::ApiKey, true),
            rule("by-key-too", ClientKeyKind::ApiKey, false),
        ];
        let bundle = compile(&inp, t).bundle;
        assert_eq!(
            bundle.count_keys,
            [
                ClientKeyKind::Ip,
                ClientKeyKind::ApiKey,
                ClientKeyKind::AccessToken
            ]
        );
        // The manifest carries them and decodes them; an IP-only bundle leaves the field
        // out, so older sidecars still read it.
        let enc = crate::encode(&bundle).unwrap();
        let back = crate::decode(&enc.manifest, &enc.shards.iter().cloned().collect()).unwrap();
        assert_eq!(back.count_keys, bundle.count_keys);
        inp.rules.clear();
        let ip_only = crate::encode(&compile(&inp, t).bundle).unwrap();
        let text = |e: &crate::Encoded| -> String {
            e.shards
                .iter()
                .map(|(_, b)| crate::wire::inflate(b, 1 << 20).unwrap())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect()
        };
        assert!(text(&enc).contains(r#""countKeys":["ip","apiKey","accessToken"]"#));
        assert!(!text(&ip_only).contains("countKeys"), "{}", text(&ip_only));
    }

    /// The namespace's IPv6 prefix length travels in the bundle (left out at /64, so older
    /// sidecars read those bundles), clamped to /32../128.
    #[test]
    fn the_ipv6_prefix_length_travels_in_the_bundle() {
        let t = ts("2026-01-01T00:00:00Z");
        let mut inp = inputs(vec![]);
        inp.rules = vec![RuleSpec {
            name: "by-prefix".into(),
            paused: false,
            mode: Mode::Enforce,
            client_key: ClientKeyKind::IpPrefix,
        }];
        let round_trip = |inp: &Inputs| {
            let b = compile(inp, t).bundle;
            let enc = crate::encode(&b).unwrap();
            crate::decode(&enc.manifest, &enc.shards.iter().cloned().collect()).unwrap()
        };
        let back = round_trip(&inp);
        assert_eq!(back.ipv6_prefix_len, 64);
        assert_eq!(
            back.count_keys,
            [ClientKeyKind::Ip, ClientKeyKind::IpPrefix]
        );
        inp.ipv6_prefix_len = Some(56);
        assert_eq!(round_trip(&inp).ipv6_prefix_len, 56);
        inp.ipv6_prefix_len = Some(8);
        assert_eq!(round_trip(&inp).ipv6_prefix_len, 32);
    }

    #[test]
    fn match_all_and_too_many_actions() {
        let mut actions: Vec<ActionSpec> = (0..MAX_ACTIONS + 2)
            .map(|i| {
                let mut a = flag(&format!("a{i:05}"), "x-f");
                a.match_all = true;
                a
            })
            .collect();
        actions.reverse();
        let out = compile(&inputs(actions), ts("2026-01-01T00:00:00Z"));
        assert_eq!(out.bundle.actions.len(), MAX_ACTIONS);
        assert_eq!(out.statuses["a01024"].reason(), "TooManyActions");
        assert_eq!(out.statuses["a01023"], ActionStatus::Active);
    }
}
