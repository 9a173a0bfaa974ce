//! The SecurityAction an incident proposes: ready-to-apply YAML that denies the incident's
//! clients, so the step from finding to action is one `kubectl apply`.
//!
//! Conditions are ANDed across kinds, so each kind of client key gets its own action: IPs by
//! `ipRanges`, API keys by `apiKeys`, access tokens by `accessTokens` (the `sha256:` digests the
//! detection crate already holds — never a secret in clear). User agents are only known by
//! their hash and actions match user agents by text, so an incident made only of user-agent
//! clients proposes a deny on `detectedBy` its rules instead (broader: every client those rules
//! detect). Pure: the same incident gives the same text.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use palisade_crds::action::{Deny, SecurityAction, SecurityActionSpec};
use palisade_crds::duration::Duration;
use palisade_crds::matching::MatchConditions;
use palisade_crds::strings::{IpRange, ObjectName, Sha256Digest};
use palisade_detection::incident::Incident;
use palisade_detection::key::ClientKey;

/// How long a proposed action lasts.
pub const PROPOSED_TTL: &str = "24h";
/// The label that ties a proposed action to its incident.
pub const INCIDENT_LABEL: &str = "palisade.dev/incident";
/// Most entries of one condition list (the schema's bound).
const MAX_ENTRIES: usize = 1000;

/// The proposed action(s) of `inc` as YAML; `None` when the incident has no client.
pub fn yaml(inc: &Incident) -> Option<String> {
    let (mut ips, mut keys, mut tokens, mut agents) = (vec![], vec![], vec![], 0usize);
    for c in &inc.clients {
        match c {
            ClientKey::Ip(ip) => ips.push(IpRange(ip.to_string())),
            // An IPv6 prefix is proposed whole: its client rotates addresses inside it.
            ClientKey::IpPrefix(net) => ips.push(IpRange(net.to_string())),
            ClientKey::ApiKey(h) => keys.push(Sha256Digest(h.to_string())),
            ClientKey::AccessToken(h) => tokens.push(Sha256Digest(h.to_string())),
            ClientKey::UserAgent(_) => agents += 1,
        }
    }
    let mut parts: Vec<(&str, MatchConditions)> = Vec::new();
    if !ips.is_empty() {
        let ip_ranges = ips.into_iter().take(MAX_ENTRIES).collect();
        parts.push(("ips", conditions(|c| c.ip_ranges = ip_ranges)));
    }
    if !keys.is_empty() {
        let api_keys = keys.into_iter().take(MAX_ENTRIES).collect();
        parts.push(("api-keys", conditions(|c| c.api_keys = api_keys)));
    }
    if !tokens.is_empty() {
        let access_tokens = tokens.into_iter().take(MAX_ENTRIES).collect();
        parts.push(("tokens", conditions(|c| c.access_tokens = access_tokens)));
    }
    if parts.is_empty() && agents > 0 {
        let rules = inc.rules.iter().map(|r| ObjectName(r.clone())).collect();
        parts.push(("detected", conditions(|c| c.detected_by = rules)));
    }
    if parts.is_empty() {
        return None;
    }
    let mut out = header(inc, agents, parts.len() > 1);
    let single = parts.len() == 1;
    for (suffix, conds) in parts {
        let name = if single {
            inc.id.clone()
        } else {
            format!("{}-{suffix}", inc.id)
        };
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&action(inc, name, conds)).ok()?);
    }
    Some(out)
}

fn conditions(set: impl FnOnce(&mut MatchConditions)) -> MatchConditions {
    let mut c = MatchConditions::default();
    set(&mut c);
    c
}

fn action(inc: &Incident, name: String, conditions: MatchConditions) -> SecurityAction {
    let spec = SecurityActionSpec {
        deny: Some(Deny::default()),
        conditions: Some(conditions),
        ttl: Some(Duration::from_static(PROPOSED_TTL)),
        ..SecurityActionSpec::default()
    };
    let mut a = SecurityAction::new(&name, spec);
    a.metadata = ObjectMeta {
        name: Some(name),
        namespace: Some(inc.namespace.clone()),
        labels: Some(BTreeMap::from([
            (INCIDENT_LABEL.to_owned(), inc.id.clone()),
            (
                "app.kubernetes.io/part-of".to_owned(),
                "palisade".to_owned(),
            ),
        ])),
        ..ObjectMeta::default()
    };
    a
}

fn header(inc: &Incident, agents: usize, several: bool) -> String {
    let listed = inc.clients.len();
    let mut h = format!(
        "# Proposed by Palisade for SecurityIncident {id}: deny its clients for {PROPOSED_TTL}.\n\
         # Review, then apply:\n\
         #   kubectl -n {ns} get securityincident {id} -o jsonpath='{{.status.proposedAction}}' | kubectl apply -f -\n",
        id = inc.id,
        ns = inc.namespace,
    );
    if several {
        h.push_str(
            "# One action per kind of client key (conditions of different kinds are ANDed).\n",
        );
    }
    if agents > 0 && agents < listed {
        h.push_str(&format!(
            "# {agents} user-agent client(s) are left out: actions match user agents by text and \
             the incident only knows their hash.\n"
        ));
    } else if agents > 0 {
        h.push_str(
            "# The clients are user agents, known only by their hash: this denies every client \
             the incident's rules detect (detectedBy) instead.\n",
        );
    }
    if inc.clients_unlisted > 0 || listed > MAX_ENTRIES {
        h.push_str(&format!(
            "# {} more client(s) were detected than are listed here; detectedBy: [{}] covers \
             them all.\n",
            inc.clients_unlisted + listed.saturating_sub(MAX_ENTRIES) as u64,
            inc.rules.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(clients: &[&str]) -> Incident {
        let t = jiff::Timestamp::from_second(1_000_000).expect("ts");
        Incident {
            id: "inc-0123456789abcdef".into(),
            namespace: "shop".into(),
            display_name: String::new(),
            state: palisade_detection::incident::IncidentState::Active,
            risk: palisade_detection::risk::RiskLevel::Low,
            risk_score: 0,
            rules: ["flooder".to_owned()].into(),
            rule_types: [palisade_detection::rule_spec::RuleType::Flooder].into(),
            clients: clients.iter().map(|c| c.parse().expect("key")).collect(),
            clients_unlisted: 0,
            traffic: 0,
            traffic_partial: 0,
            first_detected: t,
            last_detected: t,
            counted_until: t,
            series: vec![],
            attributes: BTreeMap::new(),
            attribute_distinct: BTreeMap::new(),
            attribute_last_seen: BTreeMap::new(),
            rule_clients: BTreeMap::new(),
            rule_requests: BTreeMap::new(),
            peak_share: 0.0,
            merged_from: vec![],
        }
    }

    fn docs(text: &str) -> Vec<SecurityAction> {
        text.split("---\n")
            .filter(|d| {
                d.lines()
                    .any(|l| !l.starts_with('#') && !l.trim().is_empty())
            })
            .map(|d| serde_yaml::from_str(d).expect("a SecurityAction"))
            .collect()
    }

    #[test]
    fn ips_become_one_deny_action_named_after_the_incident() {
        let text = yaml(&incident(&["ip:198.51.100.66", "ip:2001:db8::1"])).expect("yaml");
        let actions = docs(&text);
        assert_eq!(actions.len(), 1, "{text}");
        let a = &actions[0];
        assert_eq!(a.metadata.name.as_deref(), Some("inc-0123456789abcdef"));
        assert_eq!(a.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(a.spec.ttl.as_ref().map(Duration::as_str), Some("24h"));
        assert_eq!(a.spec.deny.as_ref().map(|d| d.status), Some(403));
        let ips: Vec<&str> = a
            .spec
            .conditions
            .as_ref()
            .expect("conditions")
            .ip_ranges
            .iter()
            .map(IpRange::as_str)
            .collect();
        assert_eq!(ips, ["198.51.100.66", "2001:db8::1"]);
        assert!(text.contains("kubectl apply -f -"), "{text}");
    }

    #[test]
    fn each_key_kind_gets_its_own_action_and_secrets_stay_hashed() {
        let key = ClientKey::api_key("s3cret-key").to_string();
        let token = ClientKey::access_token("s3cret-token").to_string();
        let text = yaml(&incident(&["ip:203.0.113.9", &key, &token])).expect("yaml");
        assert!(!text.contains("s3cret"), "{text}");
        let names: Vec<String> = docs(&text)
            .iter()
            .map(|a| a.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "inc-0123456789abcdef-ips",
                "inc-0123456789abcdef-api-keys",
                "inc-0123456789abcdef-tokens"
            ]
        );
        let actions = docs(&text);
        let digest = key.trim_start_matches("apiKey:");
        assert_eq!(
            actions[1].spec.conditions.as_ref().expect("c").api_keys[0].as_str(),
            digest
        );
    }

    #[test]
    fn user_agents_alone_fall_back_to_detected_by() {
        let ua = ClientKey::user_agent("curl/8").to_string();
        let text = yaml(&incident(&[&ua])).expect("yaml");
        let actions = docs(&text);
        let c = actions[0].spec.conditions.as_ref().expect("conditions");
        assert_eq!(
            c.detected_by
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["flooder"]
        );
        assert!(text.contains("detectedBy"), "{text}");
        assert_eq!(yaml(&incident(&[])), None);
    }
}
