//! The field reference of `docs/api.md`, generated from the CRD schemas so it cannot drift
//! from the types: every field with its type, bounds, default, documentation and the
//! validation messages the API server answers with.

use std::fmt::Write;

use serde_json::Value;

use crate::all_crds;

/// The hand-written part of `docs/api.md` (overview, semantics, examples).
const INTRO: &str = include_str!("api_intro.md");

/// The whole of `docs/api.md`.
pub fn api_markdown() -> String {
    let mut out = String::from(INTRO);
    out.push_str("\n## Field reference\n\n");
    out.push_str(&format!(
        "Generated from the CRD schemas by `{}`; every message is what the API server \
         answers when the rule fails.\n",
        crate::generate::REGENERATE
    ));
    for crd in all_crds() {
        let kind = &crd.spec.names.kind;
        let names = &crd.spec.names;
        let _ = write!(
            out,
            "\n### {kind}\n\n`kubectl get {}` (short names: {}; category `palisade`).\n\n",
            names.plural,
            names.short_names.clone().unwrap_or_default().join(", ")
        );
        let version = &crd.spec.versions[0];
        if let Some(cols) = &version.additional_printer_columns {
            let cols: Vec<String> = cols
                .iter()
                .map(|c| format!("{} (`{}`)", c.name, c.json_path))
                .collect();
            let _ = writeln!(out, "Columns: {}.\n", cols.join(", "));
        }
        let schema = serde_json::to_value(&version.schema).unwrap_or_default();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        for rule in spec["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(m) = rule["message"].as_str() {
                let _ = writeln!(
                    out,
                    "- Rule on `spec`: `{}` — rejected with “{m}”",
                    rule["rule"].as_str().unwrap_or_default()
                );
            }
        }
        out.push_str("\n| field | type | description |\n| --- | --- | --- |\n");
        for part in ["spec", "status"] {
            let node = &schema["openAPIV3Schema"]["properties"][part];
            fields(node, part, &mut out);
        }
    }
    out
}

fn fields(node: &Value, path: &str, out: &mut String) {
    let Some(props) = node["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = node["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in props {
        let p = format!("{path}.{name}");
        let mut desc = prop["description"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', " ");
        if required.contains(&name.as_str()) {
            desc.insert_str(0, "**Required.** ");
        }
        for rules in [
            &prop["x-kubernetes-validations"],
            &prop["items"]["x-kubernetes-validations"],
        ] {
            for rule in rules.as_array().into_iter().flatten() {
                if let Some(m) = rule["message"].as_str() {
                    let _ = write!(desc, " <br>Rejected with: “{}”", m.replace('`', "\\`"));
                }
            }
        }
        let _ = writeln!(
            out,
            "| `{p}` | {} | {} |",
            type_of(prop),
            desc.replace('|', "\\|")
        );
        fields(prop, &p, out);
        if prop["items"]["properties"].is_object() {
            fields(&prop["items"], &format!("{p}[]"), out);
        }
    }
}

fn type_of(prop: &Value) -> String {
    let mut t = match prop["type"].as_str().unwrap_or("object") {
        "array" => format!("[]{}", prop["items"]["type"].as_str().unwrap_or("object")),
        "string" if prop["format"] == "date-time" => "time (RFC 3339)".to_string(),
        "object" if prop["additionalProperties"].is_object() => "map[string]string".to_string(),
        other => other.to_string(),
    };
    if let Some(values) = prop["enum"].as_array().or(prop["items"]["enum"].as_array()) {
        let v: Vec<String> = values
            .iter()
            .filter_map(Value::as_str)
            .map(|s| format!("`{s}`"))
            .collect();
        let _ = write!(t, ": {}", v.join(", "));
    }
    let bounds = [
        ("minItems", "min"),
        ("maxItems", "max"),
        ("maxLength", "max length"),
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("maxProperties", "max entries"),
    ];
    for (key, label) in bounds {
        if let Some(v) = prop.get(key) {
            let _ = write!(t, "; {label} {v}");
        }
    }
    if let Some(v) = prop["items"].get("maxLength") {
        let _ = write!(t, "; items max length {v}");
    }
    if let Some(d) = prop.get("default") {
        let _ = write!(t, "; default `{d}`");
    }
    t
}
