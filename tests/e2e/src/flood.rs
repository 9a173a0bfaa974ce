//! Detection end to end with the traffic model: an operator, two sidecar processes of one
//! namespace in front of one app, a Flooder `DetectionRule` and a `detectedBy` deny action;
//! the model's traffic is sent through both sidecars in real time (`palisade_bench::send`).
//! Used by `tests/e2e_flood.rs` and the `detect-mitigate` bench.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use palisade_bench::send::Outcome;

use crate::http::{echo_app, get};
use crate::{ControlPlane, Operator, Sidecar, TempNs, eventually, scope};

/// A `flooder` rule that fires within seconds in a test: one client with half of at least
/// 100 requests (the defaults want 5 % of 1000 from 20 clients).
pub const QUICK_FLOODER: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: DetectionRule
metadata: {name: flooder}
spec:
  type: Flooder
  detectionTtl: 10m
  flooder: {minSharePercent: 50, minRequests: 100, minActiveClients: 1}
"#;

/// The deny action every flood setup applies: 403 for clients the `flooder` rule detected.
pub const DENY_FLOODERS: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: SecurityAction
metadata: {name: deny-flooders}
spec:
  deny: {status: 403, body: "detected as a flooder\n"}
  conditions:
    detectedBy: [flooder]
"#;

/// A namespace with an operator, two sidecars (pods `api-0`, `api-1`) and an app.
#[derive(Debug)]
pub struct FloodSetup {
    /// The namespace.
    pub ns: TempNs,
    /// The operator (its collector receives both sidecars' reports).
    pub op: Operator,
    /// The two sidecars.
    pub sidecars: Vec<Sidecar>,
}

/// Starts everything: applies `rule` (a DetectionRule named `flooder`) and
/// [`DENY_FLOODERS`], starts the app and two sidecars reporting every second, and waits
/// until the action is in the bundle and both sidecars forward.
pub async fn setup(cp: &'static ControlPlane, name: &str, rule: &str) -> FloodSetup {
    let ns = TempNs::new(cp, name).await;
    let op = Operator::start(
        cp,
        &format!("op-{name}"),
        &format!("op-{name}"),
        &scope(&ns),
    );
    cp.apply(ns.name(), rule).expect("apply the DetectionRule");
    cp.apply(ns.name(), DENY_FLOODERS)
        .expect("apply the detectedBy action");
    let app = echo_app().await;
    let sidecars: Vec<Sidecar> = ["api-0", "api-1"]
        .iter()
        .map(|pod| Sidecar::start(cp, ns.name(), pod, app, Some(&op.collector)))
        .collect();
    eventually("the detectedBy action in the bundle", || async {
        let (_, b) = crate::bundle::read_bundle(&cp.client().await, ns.name()).await?;
        b.actions
            .iter()
            .any(|a| a.name == "deny-flooders")
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    for sc in &sidecars {
        eventually("the sidecar to forward", || async {
            let (s, _) = get("127.0.0.9".parse().expect("ip"), sc.addr, "/", &[]).await?;
            (s == 200).then_some(()).ok_or(format!("status {s}"))
        })
        .await;
    }
    FloodSetup { ns, op, sidecars }
}

/// What the sent traffic got back, per client and sidecar.
#[derive(Debug, Default)]
pub struct Tally {
    /// First request sent per client.
    pub first_sent: HashMap<IpAddr, Instant>,
    /// First 403 per (client, sidecar index).
    pub first_403: HashMap<(IpAddr, usize), Instant>,
    /// Every outcome, in arrival order.
    pub outcomes: Vec<Outcome>,
}

impl Tally {
    /// Records one outcome.
    pub fn add(&mut self, o: Outcome) {
        let first = self.first_sent.entry(o.ip).or_insert(o.sent);
        *first = (*first).min(o.sent);
        if o.status == 403 {
            let f = self.first_403.entry((o.ip, o.target)).or_insert(o.sent);
            *f = (*f).min(o.sent);
        }
        self.outcomes.push(o);
    }

    /// When `ip` had been answered 403 by every one of `sidecars` (the latest first 403).
    pub fn blocked_everywhere(&self, ip: IpAddr, sidecars: usize) -> Option<Instant> {
        (0..sidecars)
            .map(|i| self.first_403.get(&(ip, i)).copied())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }
}
