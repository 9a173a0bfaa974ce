//! Admission of SecurityActions by the real API server: the valid shapes are accepted, and
//! each invalid manifest is rejected with a message that names the field and says what to do.
//! The rules under test are the schemas and CEL rules of the installed `crds/*.yaml`.

mod admit;

use admit::{Case, accepts, rejects};
use palisade_e2e::{ControlPlane, TempNs};

const KIND: &str = "SecurityAction";
const KEY: &str = "sha256:acb40b58f040c7f49d9d3bbb9521e99c0ad28feb243722eda1200e7911ce64c9";

#[tokio::test]
async fn valid_actions_are_accepted_with_defaults() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "admit-action-ok").await;
    let specs = [
        "{deny: {}, conditions: {ipRanges: [203.0.113.7, 198.51.100.0/24, '2001:db8::/32']}}",
        "{allow: {}, conditions: {apiKeys: [KEY], accessTokens: [KEY]}}",
        "{flag: {headers: [{name: X-Palisade-Flag, value: suspected}]}, matchAll: true, mode: Observe}",
        "{deny: {status: 429, body: slow down, contentType: text/plain}, conditions: {regionCodes: [GB, US], asns: [64496]}, ttl: 1h30m}",
        "{deny: {}, conditions: {detectedBy: [any]}, expireTime: '2030-01-01T00:00:00Z'}",
        "{rateLimit: {requests: 100, burst: 20, by: apiKey, tarpit: 2s}, conditions: {paths: [{value: /search, type: Prefix}]}}",
        "{rateLimit: {requests: 1000000, per: Minute, by: ipPrefix}, matchAll: true, mode: Observe}",
        "{deny: {}, conditions: {ipRangesFrom: [{name: blocklist}, {selector: {matchLabels: {list: tor}}, key: list.txt.gz}]}}",
        "{flag: {}, conditions: {paths: [{value: /login}, {value: /admin/, type: Prefix, caseInsensitive: true}], httpMethods: [POST], userAgents: [{value: curl/, type: Prefix}]}, targets: {workloadSelector: {matchExpressions: [{key: app, operator: In, values: [shop]}]}}}",
    ];
    for (i, spec) in specs.iter().enumerate() {
        let stored = accepts(
            cp,
            ns.name(),
            KIND,
            &format!("ok-{i}"),
            &spec.replace("KEY", KEY),
        )
        .await;
        assert!(
            stored["spec"]["mode"].as_str().is_some(),
            "mode is defaulted: {stored}"
        );
        if let Some(deny) = stored["spec"].get("deny") {
            assert!(
                deny["status"]
                    .as_i64()
                    .is_some_and(|s| (400..600).contains(&s)),
                "{stored}"
            );
        }
    }
    let stored = accepts(
        cp,
        ns.name(),
        KIND,
        "defaulted",
        "{deny: {}, matchAll: true}",
    )
    .await;
    assert_eq!(
        stored["spec"]["deny"]["status"], 403,
        "deny.status defaults to 403"
    );
    assert_eq!(
        stored["spec"]["mode"], "Enforce",
        "mode defaults to Enforce"
    );
}

#[tokio::test]
async fn invalid_actions_are_rejected_with_what_to_fix() {
    let cp = ControlPlane::shared();
    cp.install_crds();
    let ns = TempNs::new(cp, "admit-action").await;
    let cases = [
        Case::new(
            "two verbs",
            "{allow: {}, deny: {}, matchAll: true}",
            &[
                "spec",
                "only one of allow, deny, flag and rateLimit",
                "separate SecurityAction",
            ],
        ),
        Case::new(
            "rate limit and deny",
            "{rateLimit: {requests: 10}, deny: {}, matchAll: true}",
            &["spec", "only one of allow, deny, flag and rateLimit"],
        ),
        Case::new(
            "rate limit of no requests",
            "{rateLimit: {requests: 0}, matchAll: true}",
            &["spec.rateLimit.requests", "greater than or equal to 1"],
        ),
        Case::new(
            "rate limit per hour",
            "{rateLimit: {requests: 10, per: Hour}, matchAll: true}",
            &["spec.rateLimit.per", "Second", "Minute"],
        ),
        Case::new(
            "rate limit by a header",
            "{rateLimit: {requests: 10, by: header}, matchAll: true}",
            &["spec.rateLimit.by", "apiKey"],
        ),
        Case::new(
            "tarpit too long",
            "{rateLimit: {requests: 10, tarpit: 1m}, matchAll: true}",
            &["spec.rateLimit.tarpit", "between 1s and 10s"],
        ),
        Case::new(
            "no verb",
            "{matchAll: true}",
            &["spec", "set one verb", "allow: {}"],
        ),
        Case::new(
            "bad CIDR",
            "{deny: {}, conditions: {ipRanges: [10.0.0.300/8]}}",
            &[
                "spec.conditions.ipRanges[0]",
                "IPv4 or IPv6 address or CIDR",
            ],
        ),
        Case::new(
            "CIDR with host bits",
            "{deny: {}, conditions: {ipRanges: [198.51.100.7/24]}}",
            &[
                "spec.conditions.ipRanges[0]",
                "host bits set",
                "network address",
            ],
        ),
        Case::new(
            "bad IPv6",
            "{deny: {}, conditions: {ipRanges: ['2001:db8:::1']}}",
            &[
                "spec.conditions.ipRanges[0]",
                "IPv4 or IPv6 address or CIDR",
            ],
        ),
        Case::new(
            "ttl and expireTime",
            "{deny: {}, matchAll: true, ttl: 1h, expireTime: '2030-01-01T00:00:00Z'}",
            &["spec", "either ttl", "or expireTime", "not both"],
        ),
        Case::new(
            "ttl with days",
            "{deny: {}, matchAll: true, ttl: 7d}",
            &["spec.ttl", "whole hours, minutes and seconds", "168h"],
        ),
        Case::new(
            "zero ttl",
            "{deny: {}, matchAll: true, ttl: 0s}",
            &["spec.ttl", "ttl must be between 1s and"],
        ),
        Case::new(
            "status 200",
            "{deny: {status: 200}, matchAll: true}",
            &["spec.deny.status", "between 400 and 599", "403"],
        ),
        Case::new(
            "bad content type",
            "{deny: {contentType: json}, matchAll: true}",
            &["spec.deny.contentType", "media type", "application/json"],
        ),
        Case::new(
            "plain-text API key",
            "{allow: {}, conditions: {apiKeys: [my-secret-key]}}",
            &[
                "spec.conditions.apiKeys[0]",
                "sha256:<64 lowercase hex digits>",
                "sha256sum",
            ],
        ),
        Case::new(
            "upper-case access token digest",
            "{allow: {}, conditions: {accessTokens: ['sha256:ACB40B58F040C7F49D9D3BBB9521E99C0AD28FEB243722EDA1200E7911CE64C9']}}",
            &[
                "spec.conditions.accessTokens[0]",
                "lowercase hex",
                "sha256sum",
            ],
        ),
        Case::new(
            "too many headers",
            &format!(
                "{{flag: {{headers: [{}]}}, matchAll: true}}",
                (0..17)
                    .map(|i| format!("{{name: X-H{i}, value: v}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &["spec.flag.headers", "must have at most 16 items"],
        ),
        Case::new(
            "bad header name",
            "{flag: {headers: [{name: 'X Flag:', value: v}]}, matchAll: true}",
            &[
                "spec.flag.headers[0].name",
                "HTTP header name",
                "X-Palisade-Flag",
            ],
        ),
        Case::new(
            "reserved header",
            "{flag: {headers: [{name: Content-Length, value: '0'}]}, matchAll: true}",
            &[
                "spec.flag.headers[0].name",
                "managed by the proxy",
                "choose another name",
            ],
        ),
        Case::new(
            "reserved header the proxy strips on every hop",
            "{flag: {headers: [{name: Proxy-Authorization, value: x}]}, matchAll: true}",
            &[
                "spec.flag.headers[0].name",
                "managed by the proxy",
                "choose another name",
            ],
        ),
        Case::new(
            "duplicate header, other case",
            "{flag: {headers: [{name: X-A, value: a}, {name: x-a, value: b}]}, matchAll: true}",
            &[
                "spec.flag.headers",
                "unique (case-insensitive)",
                "merge the duplicates",
            ],
        ),
        Case::new(
            "header value with a line break",
            "{flag: {headers: [{name: X-A, value: \"a\\r\\nSet-Cookie: x\"}]}, matchAll: true}",
            &["spec.flag.headers[0].value", "printable ASCII"],
        ),
        Case::new(
            "region code that is not ISO",
            "{deny: {}, conditions: {regionCodes: [UK]}}",
            &[
                "spec.conditions.regionCodes[0]",
                "UK is not an ISO 3166-1 alpha-2",
                "GB",
            ],
        ),
        Case::new(
            "region code in lower case",
            "{deny: {}, conditions: {regionCodes: [usa]}}",
            &[
                "spec.conditions.regionCodes[0]",
                "two uppercase letters",
                "US",
            ],
        ),
        Case::new(
            "empty conditions without matchAll",
            "{deny: {}, conditions: {}}",
            &["spec.conditions", "conditions is empty", "matchAll: true"],
        ),
        Case::new(
            "no conditions and no matchAll",
            "{deny: {}}",
            &["spec", "conditions is required", "matchAll: true"],
        ),
        Case::new(
            "matchAll with conditions",
            "{deny: {}, matchAll: true, conditions: {ipRanges: [192.0.2.1]}}",
            &["spec", "cannot be combined with conditions", "remove one"],
        ),
        Case::new(
            "detectedBy any with other rules",
            "{deny: {}, conditions: {detectedBy: [any, flooder]}}",
            &["spec.conditions.detectedBy", "list it alone"],
        ),
        Case::new(
            "detectedBy a bad name",
            "{deny: {}, conditions: {detectedBy: [Flooder_Rule]}}",
            &[
                "spec.conditions.detectedBy[0]",
                "Kubernetes object name",
                "lowercase",
            ],
        ),
        Case::new(
            "path without slash",
            "{deny: {}, conditions: {paths: [{value: login}]}}",
            &["spec.conditions.paths[0].value", "start with '/'"],
        ),
        Case::new(
            "path with a segment parameter",
            "{deny: {}, conditions: {paths: [{value: '/a;jsessionid=1'}]}}",
            &["spec.conditions.paths[0].value", "must not contain ';'"],
        ),
        Case::new(
            "unknown HTTP method",
            "{deny: {}, conditions: {httpMethods: [FETCH]}}",
            &[
                "spec.conditions.httpMethods[0]",
                "supported values",
                "\"GET\"",
            ],
        ),
        Case::new(
            "IP list reference with name and selector",
            "{deny: {}, conditions: {ipRangesFrom: [{name: a, selector: {matchLabels: {a: b}}}]}}",
            &[
                "spec.conditions.ipRangesFrom[0]",
                "exactly one of name",
                "selector",
            ],
        ),
        Case::new(
            "selector In without values",
            "{deny: {}, matchAll: true, targets: {workloadSelector: {matchExpressions: [{key: app, operator: In}]}}}",
            &[
                "spec.targets.workloadSelector.matchExpressions[0]",
                "values must be non-empty",
            ],
        ),
        Case::new(
            "unknown mode",
            "{deny: {}, matchAll: true, mode: DryRun}",
            &["spec.mode", "supported values", "\"Observe\""],
        ),
        Case::new(
            "expireTime not RFC 3339",
            "{deny: {}, matchAll: true, expireTime: tomorrow}",
            &["spec.expireTime", "date-time"],
        ),
    ];
    rejects(cp, ns.name(), KIND, &cases).await;
}
