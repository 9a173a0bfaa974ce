//! Validated strings shared by the resources: IP ranges, SHA-256 digests, region codes, HTTP
//! header names and object names.
//!
//! Each is a transparent newtype whose schema carries its bound (`maxLength`) and its CEL rules,
//! so every field that uses it is validated the same way, with the same message.

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The DNS-1123 subdomain pattern of Kubernetes object names.
pub const OBJECT_NAME_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The pattern of `apiKeys` and `accessTokens` entries.
pub const SHA256_PATTERN: &str = "^sha256:[0-9a-f]{64}$";

/// The pattern of an HTTP header name (an RFC 9110 token).
pub const HEADER_NAME_PATTERN: &str = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";

/// Headers the proxy manages itself (the hop-by-hop ones it removes, `Host`,
/// `Content-Length`); a flag action may not set them. The sidecar never adds any of them
/// (`palisade_sidecar::forward::may_be_added`, whose tests hold the two lists equal).
pub const RESERVED_HEADERS: [&str; 10] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, rules = $rules:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The value as written in the manifest.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                string_schema($max, $rules)
            }
        }
    };
}

fn string_schema(max_length: usize, rules: Value) -> Schema {
    let mut schema = json!({ "type": "string", "maxLength": max_length });
    schema["x-kubernetes-validations"] = rules;
    Schema::try_from(schema).unwrap_or_default()
}

fn rule(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

fn rule_expr(rule: &str, message_expression: &str, message: &str) -> Value {
    json!({ "rule": rule, "messageExpression": message_expression, "message": message })
}

validated_string!(
    /// An IPv4 or IPv6 address (`203.0.113.7`, `2001:db8::1`) or CIDR (`198.51.100.0/24`,
    /// `2001:db8::/32`). A CIDR must not have host bits set.
    IpRange,
    max = 64,
    rules = json!([
        rule(
            "isIP(self) || isCIDR(self)",
            "must be an IPv4 or IPv6 address or CIDR, like 203.0.113.7, 198.51.100.0/24 or \
             2001:db8::/32",
        ),
        rule(
            "!isCIDR(self) || cidr(self).masked() == cidr(self)",
            "the CIDR has host bits set: write its network address (198.51.100.0/24, not \
             198.51.100.7/24)",
        ),
    ])
);

validated_string!(
    /// A SHA-256 digest written `sha256:<64 lowercase hex digits>`: how API keys and access
    /// tokens appear in manifests, so that secrets never do. Compute it with
    /// `printf %s "$KEY" | sha256sum`.
    Sha256Digest,
    max = 71,
    rules = json!([rule(
        &format!("self.matches('{SHA256_PATTERN}')"),
        "must be a SHA-256 digest written sha256:<64 lowercase hex digits>, never the key or \
         token itself; compute it with: printf %s \"$KEY\" | sha256sum",
    )])
);

validated_string!(
    /// An ISO 3166-1 alpha-2 region code: two uppercase letters, like `US`, `DE` or `GB`.
    RegionCode,
    max = 8,
    rules = json!([
        rule(
            "self.matches('^[A-Z]{2}$')",
            "must be an ISO 3166-1 alpha-2 region code: two uppercase letters, like US, DE or GB",
        ),
        rule_expr(
            &format!("!self.matches('^[A-Z]{{2}}$') || self in {}", crate::regions::cel_list()),
            "self + ' is not an ISO 3166-1 alpha-2 region code; check the spelling (the United \
             Kingdom is GB)'",
            "is not an ISO 3166-1 alpha-2 region code; check the spelling (the United Kingdom is \
             GB)",
        ),
    ])
);

validated_string!(
    /// An HTTP header name, like `X-Palisade-Flag`.
    HeaderName,
    max = 128,
    rules = json!([
        rule(
            &format!("self.matches(\"{HEADER_NAME_PATTERN}\")"),
            "must be an HTTP header name: letters, digits and !#$%&'*+-.^_`|~ only (no spaces or \
             colons), like X-Palisade-Flag",
        ),
        rule_expr(
            &format!(
                "!(self.lowerAscii() in [{}])",
                RESERVED_HEADERS.map(|h| format!("'{h}'")).join(", ")
            ),
            "self + ' is managed by the proxy and cannot be set by a flag; choose another name, \
             like X-Palisade-Flag'",
            "this header is managed by the proxy and cannot be set by a flag; choose another \
             name, like X-Palisade-Flag",
        ),
    ])
);

validated_string!(
    /// The name of a Kubernetes object in the same namespace (a DNS-1123 subdomain: lowercase
    /// letters, digits, `-` and `.`).
    ObjectName,
    max = 253,
    rules = json!([rule(
        &format!("self.matches('{OBJECT_NAME_PATTERN}')"),
        "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and \
         ending with a letter or digit",
    )])
);
