//! The one place where CRD specs become the policy compiler's model (`palisade_policy::spec`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use palisade_crds::action::SecurityAction;
use palisade_crds::common::{IpListSource, Mode as CrdMode, WorkloadSelector};
use palisade_crds::keys::is_paused;
use palisade_crds::matching::{MatchConditions, PathMatchType, TextMatchType};
use palisade_crds::rule::{ClientKey as CrdClientKey, DetectionRule};
use palisade_policy::{
    ActionSpec, ClientKeyKind, Conditions, DetectedBy, Header, ListRef, Mode, PathMatch, RateLimit,
    RuleSpec, TextPattern, Verb,
};
use palisade_policy::{LabelRequirement, LabelSelector, SelectorOperator};

/// The key used in a [`ListRef`] when an `ipRangesFrom` entry names no key: every key of the
/// ConfigMap is read.
pub const ALL_KEYS: &str = "*";

/// Converts a SecurityAction. `lists_by_selector` resolves `ipRangesFrom[].selector` to the
/// names of the matching ConfigMaps of the namespace.
/// Converts a SecurityAction; `paused` is whether its own annotations pause it now
/// ([`super::pause`]).
pub fn action(a: &SecurityAction, configmaps: &[ConfigMap], paused: bool) -> ActionSpec {
    let spec = &a.spec;
    let verb = if let Some(d) = &spec.deny {
        Verb::Deny {
            status: u16::try_from(d.status).unwrap_or(403),
            body: d.body.clone().unwrap_or_default(),
            content_type: d
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=utf-8".into()),
        }
    } else if let Some(r) = &spec.rate_limit {
        // One pod until the caller counts the Ready pods that share it.
        Verb::RateLimit(rate_limit(r, 1))
    } else if let Some(f) = &spec.flag {
        let headers = f.headers.iter().map(|h| Header {
            name: h.name.to_string(),
            value: h.value.clone(),
        });
        Verb::Flag {
            headers: headers.collect(),
        }
    } else {
        Verb::Allow
    };
    let created = a
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_default();
    ActionSpec {
        name: a.name_any(),
        verb,
        mode: mode(spec.mode),
        conditions: spec
            .conditions
            .as_ref()
            .map(|c| conditions(c, configmaps))
            .unwrap_or_default(),
        match_all: spec.match_all.unwrap_or(false),
        workload_selector: spec
            .targets
            .as_ref()
            .and_then(|t| t.workload_selector.as_ref())
            .map(selector),
        paused,
        expire_time: spec.expires_at(created),
    }
}

/// Converts a DetectionRule, as far as the policy needs it.
pub fn rule(r: &DetectionRule) -> RuleSpec {
    RuleSpec {
        name: r.name_any(),
        paused: is_paused(&r.metadata),
        mode: mode(r.spec.mode),
        client_key: key_kind(r.spec.effective_client_key()),
    }
}

fn key_kind(k: CrdClientKey) -> ClientKeyKind {
    match k {
        CrdClientKey::Ip => ClientKeyKind::Ip,
        CrdClientKey::ApiKey => ClientKeyKind::ApiKey,
        CrdClientKey::AccessToken => ClientKeyKind::AccessToken,
        CrdClientKey::UserAgent => ClientKeyKind::UserAgent,
        CrdClientKey::IpPrefix => ClientKeyKind::IpPrefix,
    }
}

/// The policy's rate limit of `spec.rateLimit`, shared by `pods` Ready pods (at least 1).
pub fn rate_limit(r: &palisade_crds::action::RateLimit, pods: usize) -> RateLimit {
    let tarpit = r.tarpit.as_ref().and_then(|d| d.to_std().ok());
    RateLimit {
        requests: u32::try_from(r.requests).unwrap_or(1).max(1),
        period_s: r.per.seconds(),
        burst: u32::try_from(r.burst.unwrap_or(0)).unwrap_or(0),
        by: key_kind(r.by),
        tarpit_ms: tarpit.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        pods: u32::try_from(pods).unwrap_or(u32::MAX).max(1),
    }
}

fn mode(m: CrdMode) -> Mode {
    match m {
        CrdMode::Enforce => Mode::Enforce,
        CrdMode::Observe => Mode::Observe,
    }
}

fn conditions(c: &MatchConditions, configmaps: &[ConfigMap]) -> Conditions {
    let strings = |v: &[String]| v.to_vec();
    Conditions {
        ip_ranges: c.ip_ranges.iter().map(ToString::to_string).collect(),
        ip_lists: c
            .ip_ranges_from
            .iter()
            .flat_map(|s| list_refs(s, configmaps))
            .collect(),
        region_codes: c
            .region_codes
            .iter()
            .map(|r| r.to_string().to_ascii_uppercase())
            .collect(),
        asns: c
            .asns
            .iter()
            .filter_map(|a| u32::try_from(*a).ok())
            .collect(),
        api_keys: c.api_keys.iter().map(ToString::to_string).collect(),
        access_tokens: c.access_tokens.iter().map(ToString::to_string).collect(),
        api_products: strings(&c.api_products),
        developers: strings(&c.developers),
        developer_apps: strings(&c.developer_apps),
        user_agents: c
            .user_agents
            .iter()
            .filter(|u| u.type_ == TextMatchType::Exact)
            .map(|u| u.value.clone())
            .collect(),
        user_agent_patterns: c
            .user_agents
            .iter()
            .filter_map(|u| match u.type_ {
                TextMatchType::Exact => None,
                TextMatchType::Prefix => Some(TextPattern::Prefix(u.value.clone())),
                TextMatchType::Contains => Some(TextPattern::Contains(u.value.clone())),
            })
            .collect(),
        http_methods: c
            .http_methods
            .iter()
            .map(|m| format!("{m:?}").to_ascii_uppercase())
            .collect(),
        paths: c
            .paths
            .iter()
            .map(|p| {
                let v = p.value.clone();
                match (p.type_, p.case_insensitive.unwrap_or(false)) {
                    (PathMatchType::Exact, false) => PathMatch::Exact(v),
                    (PathMatchType::Prefix, false) => PathMatch::Prefix(v),
                    (PathMatchType::Exact, true) => PathMatch::ExactIgnoreCase(v),
                    (PathMatchType::Prefix, true) => PathMatch::PrefixIgnoreCase(v),
                }
            })
            .collect(),
        detected_by: detected_by(
            &c.detected_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        ),
    }
}

fn detected_by(names: &[String]) -> Option<DetectedBy> {
    match names {
        [] => None,
        [any] if any == "any" => Some(DetectedBy::Any),
        _ => Some(DetectedBy::Rules(names.to_vec())),
    }
}

fn list_refs(s: &IpListSource, configmaps: &[ConfigMap]) -> Vec<ListRef> {
    let key = s.key.clone().unwrap_or_else(|| ALL_KEYS.to_owned());
    if let Some(name) = &s.name {
        return vec![ListRef {
            config_map: name.to_string(),
            key,
        }];
    }
    let Some(sel) = &s.selector else {
        return vec![];
    };
    let mut names: Vec<String> = configmaps
        .iter()
        .filter(|cm| sel.matches(cm.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|config_map| ListRef {
            config_map,
            key: key.clone(),
        })
        .collect()
}

/// The text of every list the actions reference and the namespace has; a missing ConfigMap
/// or key is left out, and the compiler reports it as an invalid reference. `data` keys are
/// read as text; `binaryData` keys ending in `.gz` as gzip-compressed text (how a list of a
/// million prefixes fits the 1 MiB object limit).
pub fn list_texts(actions: &[ActionSpec], configmaps: &[ConfigMap]) -> BTreeMap<ListRef, String> {
    let by_name: BTreeMap<String, &ConfigMap> =
        configmaps.iter().map(|c| (c.name_any(), c)).collect();
    let mut out = BTreeMap::new();
    for r in actions.iter().flat_map(|a| &a.conditions.ip_lists) {
        let Some(cm) = by_name.get(&r.config_map) else {
            continue;
        };
        let texts = cm_texts(cm);
        let text = if r.key == ALL_KEYS {
            Some(texts.into_values().collect::<Vec<_>>().join("\n"))
        } else {
            texts.get(&r.key).cloned()
        };
        if let Some(text) = text {
            out.insert(r.clone(), text);
        }
    }
    out
}

/// Every readable key of a ConfigMap as text: `data` as is, `binaryData` keys ending in
/// `.gz` decompressed (a key that does not decompress is left out, so the reference is
/// reported as invalid rather than read as garbage).
fn cm_texts(cm: &ConfigMap) -> BTreeMap<String, String> {
    let mut texts: BTreeMap<String, String> = cm.data.clone().unwrap_or_default();
    for (key, bytes) in cm.binary_data.iter().flatten() {
        if !key.ends_with(".gz") {
            continue;
        }
        let mut text = String::new();
        let mut gz = flate2::read::GzDecoder::new(bytes.0.as_slice());
        if std::io::Read::read_to_string(&mut gz, &mut text).is_ok() {
            texts.insert(key.clone(), text);
        }
    }
    texts
}

fn selector(s: &WorkloadSelector) -> LabelSelector {
    let ls = s.to_label_selector();
    LabelSelector {
        match_labels: ls.match_labels.unwrap_or_default(),
        match_expressions: ls
            .match_expressions
            .unwrap_or_default()
            .into_iter()
            .map(|r| LabelRequirement {
                operator: match r.operator.as_str() {
                    "In" => SelectorOperator::In,
                    "NotIn" => SelectorOperator::NotIn,
                    "Exists" => SelectorOperator::Exists,
                    _ => SelectorOperator::DoesNotExist,
                },
                key: r.key,
                values: r.values.unwrap_or_default(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_binary_data_is_read_as_text() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"203.0.113.0/24\n").expect("gzip");
        let bytes = gz.finish().expect("gzip");
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "big"},
            "data": {"plain": "198.51.100.0/24"},
            "binaryData": {"list.gz": base64_of(&bytes), "raw.bin": base64_of(b"x")}
        }))
        .expect("configmap");
        let texts = cm_texts(&cm);
        assert_eq!(
            texts.get("list.gz").map(String::as_str),
            Some("203.0.113.0/24\n")
        );
        assert_eq!(
            texts.get("plain").map(String::as_str),
            Some("198.51.100.0/24")
        );
        assert!(
            !texts.contains_key("raw.bin"),
            "only .gz binary keys are lists"
        );
    }

    #[test]
    fn a_rate_limit_converts_with_its_defaults_and_its_pods() {
        let r: palisade_crds::action::RateLimit =
            serde_json::from_value(serde_json::json!({"requests": 30})).expect("rate limit");
        let l = rate_limit(&r, 0);
        assert_eq!(
            (l.requests, l.period_s, l.burst, l.by, l.tarpit_ms, l.pods),
            (30, 1, 0, ClientKeyKind::Ip, 0, 1),
            "per second, no burst, by IP, no tarpit; no Ready pod counts as one"
        );
        let r: palisade_crds::action::RateLimit = serde_json::from_value(serde_json::json!({
            "requests": 600, "per": "Minute", "burst": 50, "by": "accessToken", "tarpit": "3s"
        }))
        .expect("rate limit");
        let l = rate_limit(&r, 3);
        assert_eq!(
            (l.requests, l.period_s, l.burst, l.by, l.tarpit_ms, l.pods),
            (600, 60, 50, ClientKeyKind::AccessToken, 3000, 3)
        );
    }

    #[test]
    fn path_conditions_carry_their_case_option() {
        let c: MatchConditions = serde_json::from_value(serde_json::json!({"paths": [
            {"value": "/a"},
            {"value": "/b/", "type": "Prefix"},
            {"value": "/c", "caseInsensitive": true},
            {"value": "/d/", "type": "Prefix", "caseInsensitive": true},
            {"value": "/e", "caseInsensitive": false},
        ]}))
        .expect("conditions");
        assert_eq!(
            conditions(&c, &[]).paths,
            [
                PathMatch::Exact("/a".into()),
                PathMatch::Prefix("/b/".into()),
                PathMatch::ExactIgnoreCase("/c".into()),
                PathMatch::PrefixIgnoreCase("/d/".into()),
                PathMatch::Exact("/e".into()),
            ]
        );
    }

    fn base64_of(b: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b)
    }
}
