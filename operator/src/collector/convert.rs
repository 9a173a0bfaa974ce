//! DetectionRule specs → the detection crate's rule model.

use kube::ResourceExt;
use palisade_crds::DetectionRule;
use palisade_crds::rule::{ClientKey, RuleType};
use palisade_detection::key::ClientKeyKind;
use palisade_detection::rule_spec::{
    AnomalyParams, BruteGuessorParams, FlooderParams, OAuthAbuserParams, RobotAbuserParams,
    RuleKind, RuleSpec, ScraperParams, TorListParams,
};

/// The rule as the detection crate runs it; `None` for types it does not evaluate
/// (ApiScraper), and `tor_exits` supplies TorList's list (read from its ConfigMap).
pub fn rule(r: &DetectionRule, tor_exits: Vec<ipnet::IpNet>) -> Option<RuleSpec> {
    let s = &r.spec;
    let pct = |p: i32| f64::from(p) / 100.0;
    let u = |n: i64| u64::try_from(n).unwrap_or(0);
    let kind = match s.type_ {
        RuleType::Flooder => {
            let p = s.flooder.clone().unwrap_or_default();
            let d = FlooderParams::default();
            RuleKind::Flooder(FlooderParams {
                min_share: pct(p.min_share_percent),
                min_requests: u(p.min_requests),
                min_clients: u64::try_from(p.min_active_clients).unwrap_or(0),
                ..d
            })
        }
        RuleType::StaticContentScraper => {
            let p = s.static_content_scraper.clone().unwrap_or_default();
            RuleKind::StaticContentScraper(ScraperParams {
                min_share: pct(p.min_share_percent),
                min_bytes: u(p.min_response_bytes),
                ..ScraperParams::default()
            })
        }
        RuleType::BruteGuessor => {
            let p = s.brute_guessor.clone().unwrap_or_default();
            RuleKind::BruteGuessor(BruteGuessorParams {
                min_error_ratio: pct(p.min_error_percent),
                min_requests: u(p.min_requests),
            })
        }
        RuleType::RobotAbuser => {
            let p = s.robot_abuser.clone().unwrap_or_default();
            RuleKind::RobotAbuser(RobotAbuserParams {
                min_forbidden: u(p.min_forbidden),
                min_forbidden_ratio: pct(p.min_forbidden_percent),
            })
        }
        RuleType::OAuthAbuser => {
            let p = s.oauth_abuser.clone().unwrap_or_default();
            RuleKind::OAuthAbuser(OAuthAbuserParams {
                min_sessions: u64::try_from(p.min_sessions).unwrap_or(0),
                max_user_agents: u32::try_from(p.max_user_agents).unwrap_or(0),
            })
        }
        RuleType::TorList => RuleKind::TorList(TorListParams { exits: tor_exits }),
        RuleType::AdvancedAnomaly => RuleKind::AdvancedAnomaly(AnomalyParams::default()),
        RuleType::ApiScraper => return None,
    };
    let mut spec = RuleSpec::new(r.name_any(), kind);
    spec.client_key = match s.client_key {
        ClientKey::Ip => ClientKeyKind::Ip,
        ClientKey::ApiKey => ClientKeyKind::ApiKey,
        ClientKey::AccessToken => ClientKeyKind::AccessToken,
        ClientKey::UserAgent => ClientKeyKind::UserAgent,
    };
    if let Ok(ttl) = s.detection_ttl.to_std()
        && let Ok(ttl) = jiff::SignedDuration::try_from(ttl)
    {
        spec.detection_ttl = ttl;
    }
    spec.exclude = s
        .exclude
        .iter()
        .filter_map(|r| palisade_policy::parse_prefix(r.as_str()))
        .collect();
    Some(spec)
}
