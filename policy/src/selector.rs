//! Workload selectors: the Kubernetes label-selector model (`matchLabels`,
//! `matchExpressions`) and its matching, without depending on k8s-openapi.
//!
//! The sidecar evaluates selectors once, when it loads a bundle, against its own pod's labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A label selector. An empty selector selects every workload, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must all be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// How the label's value relates to `values`.
    pub operator: SelectorOperator,
    /// The values for `In` / `NotIn`; must be empty for `Exists` / `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a [`LabelRequirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether a workload with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Checks the selector's shape; the error names the field and says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let needs_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if r.key.is_empty() {
                return Err(format!(
                    "matchExpressions[{i}].key is empty; set a label key"
                ));
            }
            if needs_values && r.values.is_empty() {
                return Err(format!(
                    "matchExpressions[{i}]: operator {:?} needs at least one value; add values",
                    r.operator
                ));
            }
            if !needs_values && !r.values.is_empty() {
                return Err(format!(
                    "matchExpressions[{i}]: operator {:?} takes no values; remove them",
                    r.operator
                ));
            }
        }
        Ok(())
    }
}

impl LabelRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
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

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelRequirement {
        LabelRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "api")]),
            match_expressions: vec![
                req("tier", SelectorOperator::In, &["front", "edge"]),
                req("canary", SelectorOperator::DoesNotExist, &[]),
            ],
        };
        assert!(sel.matches(&labels(&[("app", "api"), ("tier", "edge")])));
        assert!(!sel.matches(&labels(&[("app", "api"), ("tier", "back")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!sel.matches(&labels(&[
            ("app", "api"),
            ("tier", "edge"),
            ("canary", "1")
        ])));
    }

    #[test]
    fn not_in_and_exists() {
        let not_in = LabelSelector {
            match_expressions: vec![req("env", SelectorOperator::NotIn, &["dev"])],
            ..Default::default()
        };
        assert!(not_in.matches(&labels(&[])));
        assert!(not_in.matches(&labels(&[("env", "prod")])));
        assert!(!not_in.matches(&labels(&[("env", "dev")])));
        let exists = LabelSelector {
            match_expressions: vec![req("env", SelectorOperator::Exists, &[])],
            ..Default::default()
        };
        assert!(exists.matches(&labels(&[("env", "")])));
        assert!(!exists.matches(&labels(&[])));
    }

    #[test]
    fn validate_names_the_expression() {
        let bad = LabelSelector {
            match_expressions: vec![
                req("a", SelectorOperator::Exists, &[]),
                req("b", SelectorOperator::In, &[]),
            ],
            ..Default::default()
        };
        let err = bad.validate().expect_err("In without values");
        assert!(err.starts_with("matchExpressions[1]"), "{err}");
        let bad = LabelSelector {
            match_expressions: vec![req("a", SelectorOperator::Exists, &["x"])],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
