//! The risk level of an incident: a documented, additive score.
//!
//! ```text
//! score = max rule weight          TorList 1; Flooder, StaticContentScraper, RobotAbuser,
//!                                  AdvancedAnomaly 2; BruteGuessor, OAuthAbuser 3
//!       + 1 if ≥ 2 distinct rule types fired
//!       + 1 if the incident's clients sent ≥ 10 % of the namespace's requests in a
//!           short window (5 min) while it was active (peak share)
//!       + 1 if it involves ≥ 50 clients
//!       + 1 if it lasted ≥ 1 h (first to last detection)
//! Low ≤ 2 < Moderate ≤ 4 < Severe
//! ```
//!
//! Rule weights reflect intent: a Tor exit is only an origin; floods and scraping are
//! volume abuse; guessing credentials and farming tokens target accounts. The risk of an
//! open incident only rises (no flapping); see [`crate::incident`].

use std::collections::BTreeSet;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::rule_spec::RuleType;

/// How urgently an incident deserves a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RiskLevel {
    /// Score ≤ 2: investigate last.
    Low,
    /// Score 3–4: some risk.
    Moderate,
    /// Score ≥ 5: investigate first.
    Severe,
}

impl RiskLevel {
    /// The level of a score.
    pub fn of_score(score: u32) -> Self {
        match score {
            0..=2 => Self::Low,
            3..=4 => Self::Moderate,
            _ => Self::Severe,
        }
    }
}

/// The weight of a rule type in the score.
pub fn rule_weight(rule: RuleType) -> u32 {
    match rule {
        RuleType::TorList => 1,
        RuleType::Flooder
        | RuleType::StaticContentScraper
        | RuleType::RobotAbuser
        | RuleType::AdvancedAnomaly
        | RuleType::ApiScraper => 2,
        RuleType::BruteGuessor | RuleType::OAuthAbuser => 3,
    }
}

/// What the score looks at.
#[derive(Debug, Clone, Copy)]
pub struct RiskInputs<'a> {
    /// Rule types that fired.
    pub rules: &'a BTreeSet<RuleType>,
    /// Peak share of the namespace's requests (0..=1).
    pub peak_share: f64,
    /// Clients involved.
    pub clients: usize,
    /// First to last detection.
    pub duration: SignedDuration,
}

/// The score of an incident (see the module docs).
pub fn risk_score(i: RiskInputs<'_>) -> u32 {
    let base = i.rules.iter().map(|r| rule_weight(*r)).max().unwrap_or(0);
    base + u32::from(i.rules.len() >= 2)
        + u32::from(i.peak_share >= 0.10)
        + u32::from(i.clients >= 50)
        + u32::from(i.duration >= SignedDuration::from_hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(rules: &[RuleType], share: f64, clients: usize, mins: i64) -> (u32, RiskLevel) {
        let rules: BTreeSet<_> = rules.iter().copied().collect();
        let s = risk_score(RiskInputs {
            rules: &rules,
            peak_share: share,
            clients,
            duration: SignedDuration::from_mins(mins),
        });
        (s, RiskLevel::of_score(s))
    }

    #[test]
    fn documented_examples() {
        assert_eq!(score(&[RuleType::TorList], 0.0, 1, 0), (1, RiskLevel::Low));
        assert_eq!(
            score(&[RuleType::Flooder], 0.2, 1, 5),
            (3, RiskLevel::Moderate)
        );
        assert_eq!(
            score(&[RuleType::BruteGuessor, RuleType::TorList], 0.0, 60, 90),
            (6, RiskLevel::Severe)
        );
        assert_eq!(
            score(&[RuleType::OAuthAbuser], 0.0, 1, 0),
            (3, RiskLevel::Moderate)
        );
    }
}
