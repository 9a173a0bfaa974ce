//! The detected-client set of a namespace: which rules marked which client, until when.
//!
//! The collector folds each run's [`Detections`] in (a rule firing again pushes the expiry
//! out), drops lapsed entries at `now`, and publishes the set so `detectedBy` conditions take
//! effect in every sidecar. [`DetectedSet::next_expiry`] says when to look again instead of
//! polling. Serialises as a list sorted by client key, so an unchanged set is byte-identical.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::key::ClientKey;
use crate::rules::Detections;

/// One detected client and its rules with their expiries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectedClient {
    /// The client.
    pub key: ClientKey,
    /// Rule name → when that rule's detection lapses.
    pub rules: BTreeMap<String, Timestamp>,
}

/// The detected clients of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<DetectedClient>", into = "Vec<DetectedClient>")]
pub struct DetectedSet {
    clients: BTreeMap<ClientKey, BTreeMap<String, Timestamp>>,
}

impl DetectedSet {
    /// Adds or extends detections (the later expiry wins). Returns whether the set changed.
    pub fn update(&mut self, detections: &Detections) -> bool {
        let mut changed = false;
        for d in &detections.items {
            let rules = self.clients.entry(d.key).or_default();
            match rules.get_mut(&d.rule) {
                Some(expiry) if *expiry >= d.expires_at => {}
                Some(expiry) => {
                    *expiry = d.expires_at;
                    changed = true;
                }
                None => {
                    rules.insert(d.rule.clone(), d.expires_at);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Drops detections that lapsed at or before `now`. Returns whether the set changed.
    pub fn expire(&mut self, now: Timestamp) -> bool {
        let before = self.len();
        for rules in self.clients.values_mut() {
            rules.retain(|_, expires| *expires > now);
        }
        self.clients.retain(|_, rules| !rules.is_empty());
        self.len() != before
    }

    /// Rules that currently mark `key`.
    pub fn rules_of(&self, key: &ClientKey) -> impl Iterator<Item = &str> {
        self.clients
            .get(key)
            .into_iter()
            .flat_map(|r| r.keys().map(String::as_str))
    }

    /// Whether `rule` marks `key`.
    pub fn contains(&self, key: &ClientKey, rule: &str) -> bool {
        self.clients.get(key).is_some_and(|r| r.contains_key(rule))
    }

    /// The earliest expiry, when the set will next change on its own.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.clients
            .values()
            .flat_map(|r| r.values())
            .min()
            .copied()
    }

    /// Each detected client with its rules and their expiries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ClientKey, &BTreeMap<String, Timestamp>)> {
        self.clients.iter()
    }

    /// Number of (client, rule) detections.
    pub fn len(&self) -> usize {
        self.clients.values().map(BTreeMap::len).sum()
    }

    /// Whether no client is detected.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

impl From<Vec<DetectedClient>> for DetectedSet {
    fn from(list: Vec<DetectedClient>) -> Self {
        let mut set = Self::default();
        for c in list {
            set.clients.entry(c.key).or_default().extend(c.rules);
        }
        set
    }
}

impl From<DetectedSet> for Vec<DetectedClient> {
    fn from(set: DetectedSet) -> Self {
        set.clients
            .into_iter()
            .map(|(key, rules)| DetectedClient { key, rules })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::rule_spec::RuleType;
    use crate::rules::{Detection, Evidence};
    use crate::testutil::{ipk, t};

    fn det(rule: &str, n: u32, at: i64, ttl: i64) -> Detection {
        Detection {
            rule: rule.into(),
            rule_type: RuleType::Flooder,
            key: ipk(n),
            detected_at: t(at),
            expires_at: t(at + ttl),
            evidence: Evidence {
                value: 1.0,
                threshold: 1.0,
                requests: 1,
                total_requests: 1,
                window: SignedDuration::ZERO,
                detail: None,
            },
        }
    }

    #[test]
    fn detections_last_until_their_expiry_and_refresh_extends_them() {
        let mut set = DetectedSet::default();
        assert!(set.update(&Detections {
            items: vec![det("Flooder", 1, 0, 60)]
        }));
        assert!(set.contains(&ipk(1), "Flooder"));
        assert_eq!(set.next_expiry(), Some(t(60)));
        assert!(!set.expire(t(59)));
        // The rule fires again at 30 s: expiry moves to 90 s.
        assert!(set.update(&Detections {
            items: vec![det("Flooder", 1, 30, 60)]
        }));
        assert!(!set.expire(t(60)));
        assert!(set.expire(t(90)));
        assert!(set.is_empty());
    }

    #[test]
    fn several_rules_per_client_and_stable_serialisation() {
        let mut set = DetectedSet::default();
        set.update(&Detections {
            items: vec![
                det("Tor", 2, 0, 600),
                det("Flooder", 2, 0, 60),
                det("Flooder", 1, 0, 60),
            ],
        });
        assert_eq!(
            set.rules_of(&ipk(2)).collect::<Vec<_>>(),
            vec!["Flooder", "Tor"]
        );
        set.expire(t(60));
        assert_eq!(set.rules_of(&ipk(2)).collect::<Vec<_>>(), vec!["Tor"]);
        let json = serde_json::to_string(&set).unwrap();
        assert!(
            json.starts_with(r#"[{"key":"ip:198.51.100.2","rules":{"Tor":"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<DetectedSet>(&json).unwrap(), set);
    }
}
