//! API Scraper end to end on the real control plane: real requests through a sidecar
//! process, counted as sequential or not by its counter, reported to the operator's
//! collector; an `ApiScraper` DetectionRule with small thresholds marks the client walking
//! `/items/1`, `/items/2`, … and a `detectedBy: [api-scraper]` deny action answers it 403,
//! while a client reading random items and one refreshing the same page keep getting 200.
//! The rule reports `Ready=True` (it is evaluated) and its detected clients, and an incident
//! proposes denying the scraper.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use palisade_crds::{DetectionRule, SecurityIncident};
use palisade_e2e::http::{echo_app, get};
use palisade_e2e::{ControlPlane, Operator, Sidecar, TempNs, eventually, scope};

const RULE: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: api-scraper}
spec:
  type: ApiScraper
  detectionTtl: 10m
  apiScraper: {window: 5m, minRequests: 40, minSequentialPercent: 80}
"#;

const DENY: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-scrapers}
spec:
  deny: {status: 403, body: "detected as an API scraper\n"}
  conditions:
    detectedBy: [api-scraper]
"#;

const SCRAPER: &str = "127.0.0.61";
const RANDOM: &str = "127.0.0.62";
const REFRESH: &str = "127.0.0.63";

async fn status(sc: &Sidecar, from: &str, path: &str) -> Result<u16, String> {
    let ip: IpAddr = from.parse().expect("ip");
    get(ip, sc.addr, path, &[]).await.map(|(s, _)| s)
}

/// `(Ready status, reason, detectedClients)` of the rule.
async fn rule_status(cp: &ControlPlane, ns: &str) -> Result<(String, String, i32), String> {
    let api: Api<DetectionRule> = Api::namespaced(cp.client().await, ns);
    let r = api.get("api-scraper").await.map_err(|e| e.to_string())?;
    let s = r.status.ok_or("no status")?;
    let ready = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .ok_or("no Ready condition")?;
    Ok((
        ready.status.clone(),
        ready.reason.clone(),
        s.detected_clients.unwrap_or(0),
    ))
}

#[tokio::test]
async fn an_enumerating_client_is_detected_and_denied_and_browsers_are_not() {
    let cp = ControlPlane::shared();
    let ns = TempNs::new(cp, "scraper").await;
    let op = Operator::start(cp, "op-scraper", "op-scraper", &scope(&ns));
    cp.apply(ns.name(), RULE)
        .expect("apply the ApiScraper rule");
    cp.apply(ns.name(), DENY)
        .expect("apply the detectedBy action");
    let app = echo_app().await;
    let sc = Sidecar::start(cp, ns.name(), "api-0", app, Some(&op.collector));
    eventually("the ApiScraper rule to be Ready", || async {
        let (ready, reason, _) = rule_status(cp, ns.name()).await?;
        (ready == "True" && reason == "Active")
            .then_some(())
            .ok_or(format!("Ready={ready} ({reason})"))
    })
    .await;
    eventually("the detectedBy action in the bundle", || async {
        let (_, b) = palisade_e2e::bundle::read_bundle(&cp.client().await, ns.name()).await?;
        b.actions
            .iter()
            .any(|a| a.name == "deny-scrapers")
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;

    // Each round: the scraper reads the next item, the browser a random one (steps of
    // 7919 in 100 000 ids: never within 10), the third client the same page again.
    let mut n = 0u64;
    let denied_after = eventually("the scraper to be denied", || {
        n += 1;
        let round = n;
        let sc = &sc;
        async move {
            let random = (round * 7919) % 100_000;
            for (from, path) in [
                (RANDOM, format!("/items/{random}")),
                (REFRESH, "/items/42".to_owned()),
            ] {
                let code = status(sc, from, &path).await?;
                assert_eq!(code, 200, "{from} {path} must not be denied");
            }
            match status(sc, SCRAPER, &format!("/items/{round}")).await? {
                403 => Ok(round),
                200 => Err(format!("{round} items read, still served")),
                code => panic!("scraper got {code}"),
            }
        }
    })
    .await;
    assert!(
        denied_after > 40,
        "denied after {denied_after} requests, before minRequests"
    );
    eventually("the rule to count its detected client", || async {
        let (ready, _, detected) = rule_status(cp, ns.name()).await?;
        (ready == "True" && detected == 1)
            .then_some(())
            .ok_or(format!("Ready={ready}, detectedClients={detected}"))
    })
    .await;
    // The published set names the scraper only.
    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await, ns.name());
    let cm = cms
        .get("palisade-detected")
        .await
        .expect("palisade-detected");
    let bytes = cm
        .binary_data
        .and_then(|mut d| d.remove("detected"))
        .expect("palisade-detected has key detected");
    let doc = palisade_policy::decode_detected(&bytes.0).expect("decodes");
    let listed: Vec<String> = doc
        .rules
        .values()
        .flatten()
        .map(|d| d.key.to_string())
        .collect();
    assert_eq!(listed, vec![format!("ip:{SCRAPER}")], "{:?}", doc.rules);
    assert!(doc.rules.contains_key("api-scraper"), "{:?}", doc.rules);
    // An incident names the rule and proposes denying the scraper.
    let incidents: Api<SecurityIncident> = Api::namespaced(cp.client().await, ns.name());
    let proposed = eventually("an incident with a proposed action", || async {
        let list = incidents
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .filter_map(|i| i.status.as_ref())
            .find(|s| s.detection_rules.iter().any(|r| r == "api-scraper"))
            .and_then(|s| s.proposed_action.clone())
            .ok_or(format!(
                "{} incidents, none of api-scraper with a proposed action",
                list.items.len()
            ))
    })
    .await;
    assert!(proposed.contains(SCRAPER), "{proposed}");
    assert!(
        !proposed.contains(RANDOM) && !proposed.contains(REFRESH),
        "{proposed}"
    );
    for from in [RANDOM, REFRESH] {
        assert_eq!(status(&sc, from, "/items/7").await, Ok(200), "{from}");
    }
}
