//! A minimal MaxMind DB (MMDB v2) writer: IPv4 tree, 24-bit records, maps of strings and
//! unsigned integers. Copied from the sidecar's test support so the benchmark can give the
//! sidecar country and ASN databases. Format: https://maxmind.github.io/MaxMind-DB/

use std::net::Ipv4Addr;

/// A data value.
#[derive(Debug, Clone)]
pub enum Value {
    Str(&'static str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'static str, Value)>),
}

#[derive(Debug, Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// Builds a database of type `db_type` mapping each IPv4 prefix to its value.
pub fn build(db_type: &str, entries: &[(Ipv4Addr, u8, Value)]) -> Vec<u8> {
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    let mut data = Vec::new();
    for (net, len, value) in entries {
        let offset = data.len();
        encode(value, &mut data);
        let bits = u32::from(*net);
        let mut node = 0;
        for depth in 0..*len {
            let side = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *len {
                nodes[node][side] = Rec::Data(offset);
            } else {
                node = match nodes[node][side] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty; 2]);
                        nodes[node][side] = Rec::Node(nodes.len() - 1);
                        nodes.len() - 1
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for pair in &nodes {
        for rec in pair {
            let v = match *rec {
                Rec::Empty => count,
                Rec::Node(n) => n,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let meta = Value::Map(vec![
        ("node_count", Value::U32(count as u32)),
        ("record_size", Value::U16(24)),
        ("ip_version", Value::U16(4)),
        (
            "database_type",
            Value::Str(Box::leak(db_type.to_owned().into_boxed_str())),
        ),
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(1_700_000_000)),
    ]);
    encode_meta(&meta, &mut out);
    out
}

fn encode_meta(v: &Value, out: &mut Vec<u8>) {
    // Metadata needs `languages` (array) and `description` (map) too; empty ones suffice.
    let Value::Map(pairs) = v else { unreachable!() };
    control(7, pairs.len() + 2, out);
    for (k, v) in pairs {
        encode(&Value::Str(k), out);
        encode(v, out);
    }
    encode(&Value::Str("languages"), out);
    out.push(0); // extended type, size 0
    out.push(11 - 7); // array
    encode(&Value::Str("description"), out);
    control(7, 0, out);
}

fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Str(s) => {
            control(2, s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::U16(n) => uint(5, &n.to_be_bytes(), out),
        Value::U32(n) => uint(6, &n.to_be_bytes(), out),
        Value::U64(n) => uint(9, &n.to_be_bytes(), out),
        Value::Map(pairs) => {
            control(7, pairs.len(), out);
            for (k, v) in pairs {
                encode(&Value::Str(k), out);
                encode(v, out);
            }
        }
    }
}

fn uint(kind: u8, bytes: &[u8], out: &mut Vec<u8>) {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(kind, bytes.len() - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
    if kind > 7 {
        // Extended type: type 0 in the control byte, the type minus 7 in the next byte.
        control_byte(0, size, out, Some(kind - 7));
        return;
    }
    control_byte(kind, size, out, None);
}

fn control_byte(kind: u8, size: usize, out: &mut Vec<u8>, ext: Option<u8>) {
    assert!(size < 29 + 256, "test values are small");
    let (head, extra) = if size < 29 {
        (size as u8, None)
    } else {
        (29, Some((size - 29) as u8))
    };
    out.push(kind << 5 | head);
    out.extend(ext);
    out.extend(extra);
}

/// A country database: each prefix → `{country: {iso_code}}`.
pub fn countries(entries: &[(&str, u8, &'static str)]) -> Vec<u8> {
    let e: Vec<_> = entries
        .iter()
        .map(|(net, len, code)| {
            let v = Value::Map(vec![(
                "country",
                Value::Map(vec![("iso_code", Value::Str(code))]),
            )]);
            (net.parse().expect("ipv4"), *len, v)
        })
        .collect();
    build("GeoLite2-Country", &e)
}

/// An ASN database: each prefix → `{autonomous_system_number}`.
pub fn asns(entries: &[(&str, u8, u32)]) -> Vec<u8> {
    let e: Vec<_> = entries
        .iter()
        .map(|(net, len, asn)| {
            let v = Value::Map(vec![("autonomous_system_number", Value::U32(*asn))]);
            (net.parse().expect("ipv4"), *len, v)
        })
        .collect();
    build("GeoLite2-ASN", &e)
}
