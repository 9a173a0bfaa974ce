//! Admission of DetectionRules by the real API server: each rule type is accepted with its
//! defaults, and each invalid manifest is rejected with a message that names the field and
//! says what to do.

mod admit;

use admit::{Case, accepts, rejects};
use palisade_e2e::{ControlPlane, TempNs};

const KIND: &str = "DetectionRule";

#[tokio::test]
async fn every_rule_type_is_accepted_and_defaulted() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "admit-rule-ok").await;
    let flooder = accepts(
        cp,
        ns.name(),
        KIND,
        "flooder",
        "{type: Flooder, flooder: {}}",
    )
    .await;
    let spec = &flooder["spec"];
    assert_eq!(spec["flooder"]["window"], "5m", "{spec}");
    assert_eq!(spec["flooder"]["minSharePercent"], 5, "{spec}");
    assert_eq!(spec["flooder"]["minRequests"], 300, "{spec}");
    assert_eq!(spec["detectionTtl"], "1h", "{spec}");
    assert_eq!(spec["clientKey"], "ip", "{spec}");
    assert_eq!(spec["mode"], "Enforce", "{spec}");
    let brute = accepts(
        cp,
        ns.name(),
        KIND,
        "brute",
        "{type: BruteGuessor, bruteGuessor: {}}",
    )
    .await;
    assert_eq!(brute["spec"]["bruteGuessor"]["window"], "24h");
    assert_eq!(brute["spec"]["bruteGuessor"]["minErrorPercent"], 50);
    let others = [
        "{type: StaticContentScraper, staticContentScraper: {minSharePercent: 20}}",
        "{type: RobotAbuser, mode: Observe, clientKey: apiKey}",
        "{type: OAuthAbuser, oauthAbuser: {minSessions: 100, maxUserAgents: 1}}",
        "{type: TorList, torList: {url: 'https://check.torproject.org/torbulkexitlist', refreshInterval: 30m}}",
        "{type: TorList, torList: {fromConfigMap: {name: tor-exits}}, clientKey: ip}",
        "{type: AdvancedAnomaly, advancedAnomaly: {sensitivity: High}}",
        "{type: AdvancedAnomaly, advancedAnomaly: {minHistory: 336h}}",
        "{type: AdvancedAnomaly, advancedAnomaly: {minHistory: 1h}}",
        "{type: ApiScraper, exclude: [203.0.113.10, '2001:db8::/48']}",
        "{type: Flooder, flooder: {window: 1m, minTotalRequests: 50}}",
        "{type: StaticContentScraper, staticContentScraper: {window: 24h, minActiveClients: 3}}",
    ];
    for (i, spec) in others.iter().enumerate() {
        accepts(cp, ns.name(), KIND, &format!("ok-{i}"), spec).await;
    }
}

#[tokio::test]
async fn invalid_rules_are_rejected_with_what_to_fix() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "admit-rule").await;
    let cases = [
        Case::new(
            "unknown rule type",
            "{type: Hammer}",
            &[
                "spec.type",
                "supported values",
                "\"Flooder\"",
                "\"ApiScraper\"",
            ],
        ),
        Case::new(
            "no type",
            "{mode: Enforce}",
            &["spec.type", "Required value"],
        ),
        Case::new(
            "parameters of another type",
            "{type: Flooder, bruteGuessor: {minRequests: 5}}",
            &[
                "spec",
                "bruteGuessor applies only to type BruteGuessor",
                "remove it",
            ],
        ),
        Case::new(
            "TorList without a source",
            "{type: TorList}",
            &["spec", "type TorList needs torList", "fromConfigMap", "url"],
        ),
        Case::new(
            "TorList with two sources",
            "{type: TorList, torList: {url: 'https://x.example/l', fromConfigMap: {name: tor}}}",
            &["spec.torList", "exactly one of fromConfigMap", "url"],
        ),
        Case::new(
            "TorList url that is not http",
            "{type: TorList, torList: {url: 'ftp://x.example/list'}}",
            &["spec.torList.url", "absolute http or https URL"],
        ),
        Case::new(
            "TorList refreshed too often",
            "{type: TorList, torList: {url: 'https://x.example/l', refreshInterval: 10s}}",
            &["spec.torList.refreshInterval", "between 5m and 168h"],
        ),
        Case::new(
            "maxAge on a ConfigMap list",
            "{type: TorList, torList: {fromConfigMap: {name: tor}, maxAge: 48h}}",
            &["spec.torList", "apply to url lists only", "remove them"],
        ),
        Case::new(
            "Tor list ConfigMap by selector",
            "{type: TorList, torList: {fromConfigMap: {selector: {matchLabels: {a: b}}}}}",
            &["spec.torList", "fromConfigMap needs name"],
        ),
        Case::new(
            "clientKey for an IP-only type",
            "{type: TorList, torList: {url: 'https://x.example/l'}, clientKey: apiKey}",
            &["spec", "detect IP addresses", "clientKey: ip"],
        ),
        Case::new(
            "unknown client key",
            "{type: Flooder, clientKey: cookie}",
            &["spec.clientKey", "supported values", "\"apiKey\""],
        ),
        Case::new(
            "share over 100 percent",
            "{type: Flooder, flooder: {minSharePercent: 150}}",
            &["spec.flooder.minSharePercent", "less than or equal to 100"],
        ),
        Case::new(
            "window too short",
            "{type: Flooder, flooder: {window: 10s}}",
            &["spec.flooder.window", "window must be between 1m and 24h"],
        ),
        Case::new(
            "window beyond the 24 h the collector keeps",
            "{type: RobotAbuser, robotAbuser: {window: 48h}}",
            &[
                "spec.robotAbuser.window",
                "window must be between 1m and 24h",
            ],
        ),
        Case::new(
            "targets (not supported on rules)",
            "{type: Flooder, targets: {workloadSelector: {matchLabels: {app: shop}}}}",
            &[
                "spec",
                "targets is not supported on DetectionRules",
                "remove targets",
            ],
        ),
        Case::new(
            "minHistory out of bounds",
            "{type: AdvancedAnomaly, advancedAnomaly: {minHistory: 30m}}",
            &[
                "spec.advancedAnomaly.minHistory",
                "minHistory must be between 1h and 2016h",
            ],
        ),
        Case::new(
            "window not a duration",
            "{type: BruteGuessor, bruteGuessor: {window: 1 day}}",
            &[
                "spec.bruteGuessor.window",
                "whole hours, minutes and seconds",
            ],
        ),
        Case::new(
            "detectionTtl too long",
            "{type: Flooder, detectionTtl: 2000h}",
            &["spec.detectionTtl", "between 1m and 720h"],
        ),
        Case::new(
            "exclude entry that is not an IP",
            "{type: Flooder, exclude: [load-balancer]}",
            &["spec.exclude[0]", "IPv4 or IPv6 address or CIDR"],
        ),
        Case::new(
            "unknown sensitivity",
            "{type: AdvancedAnomaly, advancedAnomaly: {sensitivity: Extreme}}",
            &[
                "spec.advancedAnomaly.sensitivity",
                "supported values",
                "\"High\"",
            ],
        ),
        Case::new(
            "unknown field (strict validation)",
            "{type: Flooder, flooder: {threshold: 5}}",
            &["spec.flooder.threshold", "field not declared in schema"],
        ),
    ];
    rejects(cp, ns.name(), KIND, &cases).await;
}
