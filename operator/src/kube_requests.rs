//! Counts the requests the operator's Kubernetes client sends, by verb and resource
//! (`palisade_operator_kube_requests_total`), so that what the operator costs the API server
//! is measured from its own side: per apply, per evaluation tick, per relist of a watch.
//! Labels are bounded: the verb is one of Kubernetes' request verbs and the resource is one
//! the operator uses (anything else is `other`), never a name or a namespace.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Label set of one Kubernetes API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeRequestLabels {
    /// The component that sent it: policy, injector, collector, leader, events.
    pub component: &'static str,
    /// get, list, watch, create, update, patch, delete, deletecollection, other.
    pub verb: &'static str,
    /// Plural resource (configmaps, detectionrules, …), or `other`.
    pub resource: &'static str,
}

/// The counter family, shared by the client's middleware and the registry.
pub type KubeRequests = Family<KubeRequestLabels, Counter>;

/// Resources the operator reads or writes; other resources are counted as `other`.
const RESOURCES: &[&str] = &[
    "configmaps",
    "detectionrules",
    "events",
    "leases",
    "mutatingwebhookconfigurations",
    "namespaces",
    "networkpolicies",
    "pods",
    "rolebindings",
    "roles",
    "secrets",
    "securityactions",
    "securityincidents",
    "securitypostures",
    "services",
    "tokenreviews",
];

/// One client per component of the operator, each counting its requests under its own
/// `component` label, so that what one component costs the API server is told apart from
/// what the others cost (the collector's evaluation ticks from the policy controller's
/// reconciles, say).
#[derive(Clone)]
pub struct Clients {
    /// The policy controller's.
    pub policy: kube::Client,
    /// The injector's (webhook certificate, caBundle).
    pub injector: kube::Client,
    /// The detection collector's.
    pub collector: kube::Client,
    /// Leader election's (the Lease).
    pub leader: kube::Client,
    /// The Event recorder's.
    pub events: kube::Client,
}

impl Clients {
    /// Builds the clients from the inferred configuration (in-cluster or `KUBECONFIG`).
    pub async fn infer(counts: &KubeRequests) -> anyhow::Result<Self> {
        let config = kube::Config::infer().await?;
        let client = |component| counting(config.clone(), counts.clone(), component);
        Ok(Self {
            policy: client("policy")?,
            injector: client("injector")?,
            collector: client("collector")?,
            leader: client("leader")?,
            events: client("events")?,
        })
    }
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

/// A client for `config` whose every request is counted into `counts` as `component`'s.
fn counting(
    config: kube::Config,
    counts: KubeRequests,
    component: &'static str,
) -> kube::Result<kube::Client> {
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        counts
            .get_or_create(&labels(component, req.method(), req.uri()))
            .inc();
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// The verb and resource of a request to the Kubernetes API (`/api/v1/...` or
/// `/apis/GROUP/VERSION/...`), as the API server's own `apiserver_request_total` names them.
pub fn labels(
    component: &'static str,
    method: &http::Method,
    uri: &http::Uri,
) -> KubeRequestLabels {
    let mut segments = uri.path().trim_matches('/').split('/');
    let rest: Vec<&str> = match segments.next() {
        Some("api") => segments.skip(1).collect(),
        Some("apis") => segments.skip(2).collect(),
        _ => Vec::new(),
    };
    // `namespaces/NS/RESOURCE[/NAME]` is a namespaced resource; `namespaces[/NAME]` is the
    // Namespace resource itself.
    let (resource, named) = match rest.as_slice() {
        ["namespaces", _, resource, more @ ..] => (*resource, !more.is_empty()),
        [resource, more @ ..] => (*resource, !more.is_empty()),
        [] => ("", false),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    let resource = RESOURCES
        .iter()
        .find(|r| **r == resource)
        .copied()
        .unwrap_or("other");
    KubeRequestLabels {
        component,
        verb,
        resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: &str, uri: &str) -> (&'static str, &'static str) {
        let l = labels(
            "policy",
            &method.parse().expect("method"),
            &uri.parse().expect("uri"),
        );
        (l.verb, l.resource)
    }

    #[test]
    fn verbs_and_resources_as_the_api_server_names_them() {
        let rules = "/apis/palisade.dev/v1alpha1";
        let cases = [
            (
                "GET",
                format!("{rules}/detectionrules?limit=500"),
                ("list", "detectionrules"),
            ),
            (
                "GET",
                format!("{rules}/detectionrules?watch=true&resourceVersion=12"),
                ("watch", "detectionrules"),
            ),
            (
                "GET",
                format!("{rules}/namespaces/a/detectionrules"),
                ("list", "detectionrules"),
            ),
            (
                "GET",
                format!("{rules}/namespaces/a/detectionrules/r"),
                ("get", "detectionrules"),
            ),
            (
                "PATCH",
                format!("{rules}/namespaces/a/detectionrules/r/status?fieldManager=x"),
                ("patch", "detectionrules"),
            ),
            (
                "PATCH",
                "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles/r?fieldManager=x".into(),
                ("patch", "roles"),
            ),
            ("GET", "/api/v1/namespaces".into(), ("list", "namespaces")),
            ("GET", "/api/v1/namespaces/a".into(), ("get", "namespaces")),
            (
                "PATCH",
                "/api/v1/namespaces/a/configmaps/b".into(),
                ("patch", "configmaps"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/a/configmaps/b".into(),
                ("delete", "configmaps"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/a/configmaps".into(),
                ("deletecollection", "configmaps"),
            ),
            (
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews".into(),
                ("create", "tokenreviews"),
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/a/deployments".into(),
                ("list", "other"),
            ),
            ("GET", "/version".into(), ("list", "other")),
            ("OPTIONS", "/api/v1/pods".into(), ("other", "pods")),
        ];
        for (method, uri, want) in cases {
            assert_eq!(of(method, &uri), want, "{method} {uri}");
        }
    }
}
