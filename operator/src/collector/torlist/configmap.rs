//! Reading a `torList.fromConfigMap` list out of its ConfigMap (pure): `data` keys as text,
//! `binaryData` keys ending in `.gz` as gzip-compressed text. A missing ConfigMap or key, or
//! content that is not a list of addresses, is a [`Failure`] whose message names the
//! ConfigMap, the key and the first bad line.

use std::io::Read as _;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ConfigMap;

use super::feed::{Failure, parse_lines};

/// The most text one key may decompress to (a 1 MiB ConfigMap of gzip could otherwise expand
/// to a gigabyte).
const MAX_TEXT: u64 = 16 << 20;

/// `status.list.source` of a ConfigMap list.
pub fn source(ns: &str, name: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("configmap {ns}/{name} key {k}"),
        None => format!("configmap {ns}/{name} (every key)"),
    }
}

/// The list in ConfigMap `ns/name` (`None`: it does not exist), from `key` or from every
/// `data` and `.gz` `binaryData` key; sorted, without duplicates.
pub fn read(
    ns: &str,
    name: &str,
    key: Option<&str>,
    cm: Option<&ConfigMap>,
) -> Result<Vec<IpNet>, Failure> {
    let it = format!("ConfigMap {ns}/{name}");
    let Some(cm) = cm else {
        return Err(Failure::new(
            "ConfigMapNotFound",
            format!("{it} not found; create it or fix spec.torList.fromConfigMap.name"),
        ));
    };
    let data = cm.data.clone().unwrap_or_default();
    let binary = cm.binary_data.clone().unwrap_or_default();
    let keys: Vec<String> = match key {
        Some(k) => vec![k.to_owned()],
        None => data
            .keys()
            .chain(binary.keys().filter(|k| k.ends_with(".gz")))
            .cloned()
            .collect(),
    };
    if let Some(k) = key
        && !data.contains_key(k)
        && !binary.contains_key(k)
    {
        let mut all: Vec<&str> = data
            .keys()
            .chain(binary.keys())
            .map(String::as_str)
            .collect();
        all.sort_unstable();
        let has = if all.is_empty() {
            "it has no key".to_owned()
        } else {
            format!("its keys: {}", all.join(", "))
        };
        return Err(Failure::new(
            "KeyNotFound",
            format!(
                "{it} has no key {k:?} ({has}); fix spec.torList.fromConfigMap.key or the ConfigMap"
            ),
        ));
    }
    if keys.is_empty() {
        return Err(Failure::new(
            "KeyNotFound",
            format!(
                "{it} has no data key (nor a binaryData key ending in .gz) to read the list from"
            ),
        ));
    }
    let mut out = Vec::new();
    for k in &keys {
        let text = match data.get(k) {
            Some(text) => text.clone(),
            None => gunzip(k, &binary[k].0).map_err(|e| {
                Failure::new("InvalidList", format!("{it} binaryData key {k}: {e}"))
            })?,
        };
        let list = parse_lines(&text).map_err(|e| {
            Failure::new(
                "InvalidList",
                format!("{it} key {k}: {e}; a Tor exit list has one IP or CIDR a line"),
            )
        })?;
        out.extend(list);
    }
    if out.is_empty() {
        let what = key.map_or("its keys hold".to_owned(), |k| format!("key {k} holds"));
        return Err(Failure::new(
            "InvalidList",
            format!("{it}: {what} no address; a Tor exit list has one IP or CIDR a line"),
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn gunzip(key: &str, bytes: &[u8]) -> Result<String, String> {
    if !key.ends_with(".gz") {
        return Err(
            "only binaryData keys ending in .gz (gzip-compressed text) are read; put the list \
             in data or gzip it"
                .into(),
        );
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_TEXT + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("not gzip-compressed UTF-8 text: {e}"))?;
    if text.len() as u64 > MAX_TEXT {
        return Err(format!("decompresses to more than {MAX_TEXT} bytes"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn cm(v: serde_json::Value) -> ConfigMap {
        serde_json::from_value(v).expect("configmap")
    }

    fn gz(text: &str) -> String {
        use base64::Engine as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).expect("gzip");
        base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"))
    }

    fn err(key: Option<&str>, c: Option<&ConfigMap>) -> Failure {
        read("shop", "tor", key, c).expect_err("a failure")
    }

    #[test]
    fn a_missing_configmap_or_key_is_named() {
        let e = err(Some("list"), None);
        assert_eq!(e.reason, "ConfigMapNotFound");
        assert!(
            e.message.starts_with("ConfigMap shop/tor not found"),
            "{}",
            e.message
        );
        let c =
            cm(serde_json::json!({"metadata": {"name": "tor"}, "data": {"other": "192.0.2.1"}}));
        let e = err(Some("list"), Some(&c));
        assert_eq!(e.reason, "KeyNotFound");
        assert!(
            e.message
                .starts_with(r#"ConfigMap shop/tor has no key "list" (its keys: other)"#),
            "{}",
            e.message
        );
        let empty = cm(serde_json::json!({"metadata": {"name": "tor"}}));
        assert_eq!(err(None, Some(&empty)).reason, "KeyNotFound");
        assert!(
            err(Some("list"), Some(&empty))
                .message
                .contains("it has no key")
        );
    }

    #[test]
    fn bad_content_names_the_key_and_the_first_bad_line() {
        let c = cm(serde_json::json!({"metadata": {"name": "tor"},
            "data": {"a": "192.0.2.1\n", "b": "# ok\n192.0.2.2\nnot-an-ip\n192.0.2.x\n"}}));
        let e = err(None, Some(&c));
        assert_eq!(e.reason, "InvalidList");
        assert!(
            e.message.starts_with(
                r#"ConfigMap shop/tor key b: line 3 ("not-an-ip") is not an IP address or CIDR"#
            ),
            "{}",
            e.message
        );
        let c = cm(serde_json::json!({"metadata": {"name": "tor"}, "data": {"a": "# none\n"}}));
        let e = err(Some("a"), Some(&c));
        assert_eq!(e.reason, "InvalidList");
        assert!(
            e.message.contains("key a holds no address"),
            "{}",
            e.message
        );
    }

    #[test]
    fn data_and_gzip_binary_data_are_read_and_merged() {
        let c = cm(serde_json::json!({"metadata": {"name": "tor"},
            "data": {"a": "192.0.2.1\n192.0.2.2\n"},
            "binaryData": {"b.gz": gz("192.0.2.2\n2001:db8::/64\n"), "raw.bin": gz("x")}}));
        let all = read("shop", "tor", None, Some(&c)).expect("every key");
        assert_eq!(all.len(), 3, "{all:?}");
        let b = read("shop", "tor", Some("b.gz"), Some(&c)).expect("the gzip key");
        assert_eq!(b.len(), 2, "{b:?}");
        let e = err(Some("raw.bin"), Some(&c));
        assert_eq!(e.reason, "InvalidList");
        assert!(
            e.message
                .contains("binaryData key raw.bin: only binaryData keys ending in .gz"),
            "{}",
            e.message
        );
        let bad = cm(serde_json::json!({"metadata": {"name": "tor"},
            "binaryData": {"l.gz": "bm90IGd6aXA="}}));
        let e = err(Some("l.gz"), Some(&bad));
        assert!(e.message.contains("not gzip-compressed"), "{}", e.message);
        assert_eq!(
            source("shop", "tor", Some("l.gz")),
            "configmap shop/tor key l.gz"
        );
    }
}
