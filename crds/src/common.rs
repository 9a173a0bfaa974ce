//! Types that SecurityAction and DetectionRule share: the enforcement mode, the workloads an
//! object targets, and references to ConfigMaps holding IP lists.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::strings::ObjectName;

/// Whether an object changes traffic or only reports what it would have done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Act: an action allows, denies or flags matching requests; a rule publishes the clients it
    /// detects so that `detectedBy` conditions see them.
    #[default]
    Enforce,
    /// Dry run: an action counts the requests it would have allowed, denied or flagged and lets
    /// them through unchanged; a rule reports detections (status, incidents, Events) without
    /// publishing them to actions.
    Observe,
}

/// Which protected workloads of the namespace an object applies to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    /// Label selector on the pods of the protected workloads (the pods that carry the
    /// sidecar). Absent: every protected workload of the namespace. An empty selector (`{}`)
    /// also selects every protected workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// A label selector (the shape of Kubernetes' `LabelSelector`, with bounded sizes): of pods in
/// `workloadSelector`, of ConfigMaps in `ipRangesFrom`. The requirements are ANDed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a selected object (a pod, or a ConfigMap for `ipRangesFrom`) must carry, each
    /// with exactly this value. Example: `app: checkout`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 32,
        "additionalProperties" = { "type": "string", "maxLength": 63 },
    ))]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements on the labels of the selected objects (pods, or ConfigMaps for
    /// `ipRangesFrom`), like `{key: tier, operator: In, values: [api]}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One set-based label requirement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)"
).message(
    "values must be non-empty for operator In and NotIn and absent for Exists and DoesNotExist"
))]
pub struct SelectorRequirement {
    /// The label key, like `app` or `app.kubernetes.io/name`.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// How the label relates to `values`.
    pub operator: SelectorOperator,
    /// The label values for `In` and `NotIn`; must be absent for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Vec<String>,
}

/// The operator of a [`SelectorRequirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl WorkloadSelector {
    /// Whether a pod with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => !value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// The same selector as Kubernetes' `LabelSelector`, for list and watch calls.
    pub fn to_label_selector(&self) -> LabelSelector {
        let some_if = |non_empty: bool| non_empty.then_some(());
        LabelSelector {
            match_labels: some_if(!self.match_labels.is_empty())
                .map(|()| self.match_labels.clone()),
            match_expressions: some_if(!self.match_expressions.is_empty()).map(|()| {
                self.match_expressions
                    .iter()
                    .map(|r| LabelSelectorRequirement {
                        key: r.key.clone(),
                        operator: format!("{:?}", r.operator),
                        values: some_if(!r.values.is_empty()).map(|()| r.values.clone()),
                    })
                    .collect()
            }),
        }
    }
}

impl Targets {
    /// Whether a protected pod with these labels is targeted.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.workload_selector
            .as_ref()
            .is_none_or(|s| s.matches(labels))
    }
}

/// ConfigMaps in the same namespace that hold an IP list: one IP or CIDR per line; blank lines
/// and everything after `#` are ignored. Every key of `data` is read (or only `key`), and keys
/// of `binaryData` ending in `.gz` are read as gzip-compressed text, so a list of a million
/// prefixes fits in a handful of ConfigMaps. Set exactly one of `name` and `selector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.name) != has(self.selector)").message(
    "set exactly one of name (one ConfigMap) and selector (every ConfigMap with these labels)"
))]
#[serde(rename_all = "camelCase")]
pub struct IpListSource {
    /// The name of one ConfigMap holding the list. Example: `blocklist`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ObjectName>,
    /// Selects every ConfigMap of the namespace with these labels: split a big list over
    /// several ConfigMaps (each at most 1 MiB) that share a label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Read only this key of each ConfigMap (in `data`, or in `binaryData` if it ends in
    /// `.gz`). Absent: every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message(
        "key must be a ConfigMap key: letters, digits, '-', '_' and '.'"
    ))]
    #[schemars(length(max = 253))]
    pub key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_matches_like_kubernetes() {
        let sel = WorkloadSelector {
            match_labels: labels(&[("app", "shop")]),
            match_expressions: vec![
                SelectorRequirement {
                    key: "tier".into(),
                    operator: SelectorOperator::In,
                    values: vec!["api".into(), "web".into()],
                },
                SelectorRequirement {
                    key: "canary".into(),
                    operator: SelectorOperator::DoesNotExist,
                    values: vec![],
                },
            ],
        };
        assert!(sel.matches(&labels(&[("app", "shop"), ("tier", "api")])));
        assert!(!sel.matches(&labels(&[("app", "shop"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[
            ("app", "shop"),
            ("tier", "api"),
            ("canary", "1")
        ])));
        assert!(!sel.matches(&labels(&[("tier", "api")])));
        assert!(Targets::default().matches(&labels(&[])));
        let ls = sel.to_label_selector();
        assert_eq!(ls.match_expressions.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            ls.match_expressions
                .as_ref()
                .map(|e| e[0].operator.as_str()),
            Some("In")
        );
    }
}
