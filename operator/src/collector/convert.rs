//! DetectionRule specs → the detection crate's rule model.

use kube::ResourceExt;
use palisade_crds::DetectionRule;
use palisade_crds::rule::{ClientKey, RuleType};
use palisade_crds::rule_params::Sensitivity;
use palisade_detection::key::ClientKeyKind;
use palisade_detection::rule_spec::{
    AnomalyParams, ApiScraperParams, BruteGuessorParams, FlooderParams, OAuthAbuserParams,
    RobotAbuserParams, RuleKind, RuleSpec, ScraperParams, TorListParams,
};

/// The rule as the detection crate runs it; `tor_exits` supplies TorList's list (read from
/// its ConfigMap or download).
pub fn rule(r: &DetectionRule, tor_exits: Vec<ipnet::IpNet>) -> RuleSpec {
    let s = &r.spec;
    let pct = |p: i32| f64::from(p) / 100.0;
    let u = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut window = None;
    let kind = match s.type_ {
        RuleType::Flooder => {
            let p = s.flooder.clone().unwrap_or_default();
            window = Some(p.window.clone());
            RuleKind::Flooder(FlooderParams {
                min_share: pct(p.min_share_percent),
                min_requests: u(p.min_requests),
                min_total_requests: u(p.min_total_requests),
                min_clients: u64::try_from(p.min_active_clients).unwrap_or(0),
            })
        }
        RuleType::StaticContentScraper => {
            let p = s.static_content_scraper.clone().unwrap_or_default();
            window = Some(p.window.clone());
            RuleKind::StaticContentScraper(ScraperParams {
                min_share: pct(p.min_share_percent),
                min_bytes: u(p.min_response_bytes),
                min_clients: u64::try_from(p.min_active_clients).unwrap_or(0),
            })
        }
        RuleType::BruteGuessor => {
            let p = s.brute_guessor.clone().unwrap_or_default();
            window = Some(p.window.clone());
            RuleKind::BruteGuessor(BruteGuessorParams {
                min_error_ratio: pct(p.min_error_percent),
                min_requests: u(p.min_requests),
            })
        }
        RuleType::RobotAbuser => {
            let p = s.robot_abuser.clone().unwrap_or_default();
            window = Some(p.window.clone());
            RuleKind::RobotAbuser(RobotAbuserParams {
                min_forbidden: u(p.min_forbidden),
                min_forbidden_ratio: pct(p.min_forbidden_percent),
            })
        }
        RuleType::OAuthAbuser => {
            let p = s.oauth_abuser.clone().unwrap_or_default();
            window = Some(p.window.clone());
            RuleKind::OAuthAbuser(OAuthAbuserParams {
                min_sessions: u64::try_from(p.min_sessions).unwrap_or(0),
                max_user_agents: u32::try_from(p.max_user_agents).unwrap_or(0),
            })
        }
        RuleType::TorList => RuleKind::TorList(TorListParams { exits: tor_exits }),
        RuleType::AdvancedAnomaly => {
            let p = s.advanced_anomaly.clone().unwrap_or_default();
            RuleKind::AdvancedAnomaly(AnomalyParams {
                min_z: match p.sensitivity {
                    Sensitivity::Low => 8.0,
                    Sensitivity::Medium => 6.0,
                    Sensitivity::High => 4.0,
                },
                min_history: jiff::SignedDuration::try_from(p.min_history())
                    .unwrap_or(AnomalyParams::default().min_history),
                ..AnomalyParams::default()
            })
        }
        RuleType::ApiScraper => {
            let p = s.api_scraper.clone().unwrap_or_default();
            window = Some(p.window.clone());
            RuleKind::ApiScraper(api_scraper(
                u(p.min_requests),
                p.min_sequential_percent,
                p.sensitivity,
            ))
        }
    };
    let mut spec = RuleSpec::new(r.name_any(), kind);
    spec.client_key = match s.client_key {
        ClientKey::Ip => ClientKeyKind::Ip,
        ClientKey::ApiKey => ClientKeyKind::ApiKey,
        ClientKey::AccessToken => ClientKeyKind::AccessToken,
        ClientKey::UserAgent => ClientKeyKind::UserAgent,
        ClientKey::IpPrefix => ClientKeyKind::IpPrefix,
    };
    if let Ok(ttl) = s.detection_ttl.to_std()
        && let Ok(ttl) = jiff::SignedDuration::try_from(ttl)
    {
        spec.detection_ttl = ttl;
    }
    spec.window = window
        .and_then(|w| w.to_std().ok())
        .and_then(|w| jiff::SignedDuration::try_from(w).ok());
    spec.exclude = s
        .exclude
        .iter()
        .filter_map(|r| palisade_policy::parse_prefix(r.as_str()))
        .collect();
    spec
}

/// API Scraper's thresholds scaled by `sensitivity` with Advanced Anomaly's factors (its
/// z thresholds 8 / 6 / 4 are 4/3, 1 and 2/3 of the default): `Low` needs 4/3 of
/// `minRequests` and allows 3/4 of the non-sequential share `100 − minSequentialPercent`;
/// `High` needs 2/3 of the requests and allows 3/2 of the non-sequential share.
fn api_scraper(min_requests: u64, min_percent: i32, sensitivity: Sensitivity) -> ApiScraperParams {
    let (num, den) = match sensitivity {
        Sensitivity::Low => (4, 3),
        Sensitivity::Medium => (1, 1),
        Sensitivity::High => (2, 3),
    };
    let other = (100.0 - f64::from(min_percent.clamp(0, 100))) / 100.0;
    ApiScraperParams {
        min_requests: (min_requests * num).div_ceil(den).max(1),
        min_sequential_share: (1.0 - other * den as f64 / num as f64).clamp(0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_of(spec: serde_json::Value) -> RuleSpec {
        let r: DetectionRule = serde_json::from_value(serde_json::json!({
            "apiVersion": "palisade.dev/v1alpha1", "kind": "DetectionRule",
            "metadata": {"name": "r", "namespace": "shop"}, "spec": spec}))
        .expect("rule");
        rule(&r, vec![])
    }

    /// One table of defaults: a DetectionRule that sets nothing (with or without its
    /// parameter object) runs exactly as the detection crate's default rule of its type,
    /// the one `make eval-detection` measures.
    #[test]
    fn a_rule_that_sets_nothing_runs_with_the_detection_models_defaults() {
        let effective = |r: &RuleSpec| {
            r.window.unwrap_or(if r.rule.short_by_default() {
                jiff::SignedDuration::from_mins(5)
            } else {
                jiff::SignedDuration::from_hours(24)
            })
        };
        let cases = [
            (
                "Flooder",
                "flooder",
                RuleKind::Flooder(FlooderParams::default()),
            ),
            (
                "StaticContentScraper",
                "staticContentScraper",
                RuleKind::StaticContentScraper(ScraperParams::default()),
            ),
            (
                "BruteGuessor",
                "bruteGuessor",
                RuleKind::BruteGuessor(BruteGuessorParams::default()),
            ),
            (
                "RobotAbuser",
                "robotAbuser",
                RuleKind::RobotAbuser(RobotAbuserParams::default()),
            ),
            (
                "OAuthAbuser",
                "oauthAbuser",
                RuleKind::OAuthAbuser(OAuthAbuserParams::default()),
            ),
            (
                "AdvancedAnomaly",
                "advancedAnomaly",
                RuleKind::AdvancedAnomaly(AnomalyParams::default()),
            ),
            (
                "ApiScraper",
                "apiScraper",
                RuleKind::ApiScraper(ApiScraperParams::default()),
            ),
        ];
        for (type_, field, kind) in cases {
            let model = RuleSpec::new("r", kind);
            for spec in [
                serde_json::json!({"type": type_}),
                serde_json::json!({"type": type_, field: {}}),
            ] {
                let r = rule_of(spec.clone());
                assert_eq!(r.rule, model.rule, "{spec}");
                assert_eq!(
                    (r.client_key, r.detection_ttl, effective(&r)),
                    (model.client_key, model.detection_ttl, effective(&model)),
                    "{spec}"
                );
            }
        }
    }

    #[test]
    fn every_parameter_reaches_the_rule_model() {
        let f = rule_of(
            serde_json::json!({"type": "Flooder", "flooder": {"window": "1m",
            "minTotalRequests": 50, "minActiveClients": 3, "minRequests": 7, "minSharePercent": 40}}),
        );
        assert_eq!(f.window, Some(jiff::SignedDuration::from_mins(1)));
        let RuleKind::Flooder(p) = &f.rule else {
            panic!("{f:?}")
        };
        assert_eq!(
            (p.min_total_requests, p.min_clients, p.min_requests),
            (50, 3, 7)
        );
        assert!((p.min_share - 0.4).abs() < 1e-9);
        let s = rule_of(serde_json::json!({"type": "StaticContentScraper",
            "staticContentScraper": {"minActiveClients": 4, "window": "2m"}}));
        let RuleKind::StaticContentScraper(p) = &s.rule else {
            panic!("{s:?}")
        };
        assert_eq!(
            (p.min_clients, s.window),
            (4, Some(jiff::SignedDuration::from_mins(2)))
        );
        let b =
            rule_of(serde_json::json!({"type": "BruteGuessor", "bruteGuessor": {"window": "6h"}}));
        assert_eq!(b.window, Some(jiff::SignedDuration::from_hours(6)));
        let a = rule_of(serde_json::json!({"type": "AdvancedAnomaly",
            "advancedAnomaly": {"sensitivity": "High"}}));
        let RuleKind::AdvancedAnomaly(p) = &a.rule else {
            panic!("{a:?}")
        };
        assert!(
            (p.min_z - 4.0).abs() < 1e-9,
            "High sensitivity lowers the z threshold"
        );
        let d = rule_of(serde_json::json!({"type": "AdvancedAnomaly"}));
        let RuleKind::AdvancedAnomaly(p) = &d.rule else {
            panic!("{d:?}")
        };
        assert!((p.min_z - 6.0).abs() < 1e-9);
        assert_eq!(p.min_history, jiff::SignedDuration::from_hours(336));
        let h = rule_of(serde_json::json!({"type": "AdvancedAnomaly",
            "advancedAnomaly": {"minHistory": "36h"}}));
        let RuleKind::AdvancedAnomaly(p) = &h.rule else {
            panic!("{h:?}")
        };
        assert_eq!(p.min_history, jiff::SignedDuration::from_hours(36));
    }

    #[test]
    fn api_scraper_sensitivity_scales_both_thresholds() {
        let scraper = |spec: serde_json::Value| {
            let r = rule_of(serde_json::json!({"type": "ApiScraper", "apiScraper": spec}));
            let RuleKind::ApiScraper(p) = &r.rule else {
                panic!("{r:?}")
            };
            (
                r.window,
                p.min_requests,
                (p.min_sequential_share * 1000.0).round(),
            )
        };
        let hour = Some(jiff::SignedDuration::from_hours(1));
        assert_eq!(scraper(serde_json::json!({})), (hour, 500, 800.0));
        assert_eq!(
            scraper(serde_json::json!({"sensitivity": "Low"})),
            (hour, 667, 850.0)
        );
        assert_eq!(
            scraper(serde_json::json!({"sensitivity": "High", "window": "10m",
                "minRequests": 30, "minSequentialPercent": 90})),
            (Some(jiff::SignedDuration::from_mins(10)), 20, 850.0)
        );
        assert_eq!(
            scraper(serde_json::json!({"sensitivity": "High", "minSequentialPercent": 10})),
            (hour, 334, 0.0),
            "the share never goes below 0"
        );
    }
}
