//! Synthetic policies and requests: the workload of `make bench` (the `mkbundle` tool) and
//! of this crate's criterion benches, defined once so both measure the same thing.
//!
//! - [`v4_prefixes`]: a uniform random IPv4 list, 70 % /32, 20 % /24, 10 % /16–/23, never in
//!   0/8, 127/8 or 224/3 (loopback clients always miss it).
//! - [`inputs`]: that list denied by action 0, plus actions that cycle through every
//!   condition kind; none matches the proxy benchmark's own request (127.0.0.1, region BR,
//!   ASN 64999, UA `palisade-bench/1`, GET /index.html, key `bench-key`), so every such request
//!   is evaluated against all of them and forwarded.
//! - [`RequestMix`]: requests that walk every condition kind (mostly misses).

use std::net::{IpAddr, Ipv4Addr};

use sha2::{Digest, Sha256};

use crate::{
    ActionSpec, Conditions, DetectedBy, Header, Inputs, ListRef, Mode, PathMatch, Request,
    RuleSpec, Verb,
};

/// xorshift64*: deterministic, fast, good enough for workloads.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `n` IPv4 prefixes (see the module docs), as `a.b.c.d/len`, the same for the same `seed`.
pub fn v4_prefixes(n: usize, seed: u64) -> impl Iterator<Item = String> {
    let mut rng = Rng(seed);
    std::iter::from_fn(move || {
        loop {
            let r = rng.next_u64();
            let len: u8 = match r % 10 {
                0..=6 => 32,
                7 | 8 => 24,
                _ => 16 + ((r >> 8) % 8) as u8,
            };
            let raw = (r >> 32) as u32;
            let first = raw >> 24;
            if first == 0 || first == 127 || first >= 224 {
                continue;
            }
            let mask = if len == 32 {
                u32::MAX
            } else {
                !(u32::MAX >> len)
            };
            return Some(format!("{}/{len}", Ipv4Addr::from(raw & mask)));
        }
    })
    .take(n)
}

/// The list the benchmarks deny (ConfigMap `threats`, key `v4`).
pub fn list_ref() -> ListRef {
    ListRef {
        config_map: "threats".into(),
        key: "v4".into(),
    }
}

/// Action `i`: deny, flag or allow by `i % 3`; every tenth one in Observe mode.
pub fn action(i: usize, conditions: Conditions) -> ActionSpec {
    let verb = match i % 3 {
        0 => Verb::Deny {
            status: 403,
            body: "no".into(),
            content_type: "text/plain".into(),
        },
        1 => Verb::Flag {
            headers: vec![Header {
                name: "x-flag".into(),
                value: i.to_string(),
            }],
        },
        _ => Verb::Allow,
    };
    ActionSpec {
        name: format!("action-{i:04}"),
        verb,
        mode: if i % 10 == 9 {
            Mode::Observe
        } else {
            Mode::Enforce
        },
        conditions,
        match_all: false,
        workload_selector: None,
        paused: false,
        expire_time: None,
    }
}

/// `sha256:<hex>` of `key-<i>`, the API keys and tokens the actions name.
fn key_digest(i: usize) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("key-{i}").as_bytes()))
    )
}

/// `list_text` (one prefix per line) denied by action 0, and `n - 1` more actions that cycle
/// through every condition kind: inline ranges, region, ASN, user agent, method + path, API
/// key, access token, developer, developer app, API product, region AND range, detectedBy.
pub fn inputs(list_text: String, n: usize) -> Inputs {
    let mut rng = Rng(42);
    let big = list_ref();
    let mut actions = vec![action(
        0,
        Conditions {
            ip_lists: vec![big.clone()],
            ..Default::default()
        },
    )];
    let mut range = |len: u8| {
        let ip = loop {
            let x = rng.next_u64() as u32;
            if x >> 24 != 127 {
                break x;
            }
        };
        let mask = !(u32::MAX >> len);
        format!("{}/{len}", Ipv4Addr::from(ip & mask))
    };
    for i in 1..n {
        let mut c = Conditions::default();
        match i % 12 {
            0 => c.ip_ranges = vec![range(24)],
            1 => c.region_codes = vec![["DE", "FR", "US", "CN", "RU"][i % 5].into()],
            2 => c.asns = vec![64_500 + (i as u32 % 100)],
            3 => c.user_agents = vec![format!("bot-{i}")],
            4 => {
                c.http_methods = vec!["POST".into()];
                c.paths = vec![PathMatch::Prefix(format!("/api/{}", i % 50))];
            }
            5 => c.api_keys = vec![key_digest(i)],
            6 => c.access_tokens = vec![key_digest(i + 1_000_000)],
            7 => c.developers = vec![format!("dev-{i}@example.com")],
            8 => c.developer_apps = vec![format!("app-{}", i % 40)],
            9 => c.api_products = vec![format!("product-{}", i % 20)],
            10 => {
                c.region_codes = vec!["US".into()];
                c.ip_ranges = vec![range(16)];
            }
            _ => c.detected_by = Some(DetectedBy::Any),
        }
        actions.push(action(i, c));
    }
    Inputs {
        actions,
        rules: vec![RuleSpec {
            name: "flooder".into(),
            paused: false,
            mode: Mode::Enforce,
            client_key: crate::ClientKeyKind::Ip,
        }],
        lists: [(big, list_text)].into(),
        generation: 1,
        ..Default::default()
    }
}

/// 4096 requests that walk every condition kind of [`inputs`]: random IPv4 (mostly misses),
/// regions, ASNs, user agents, apps, methods, paths and API keys, some of which match.
#[derive(Debug)]
pub struct RequestMix {
    reqs: Vec<(u32, usize)>,
    uas: Vec<String>,
    apps: Vec<String>,
    paths: Vec<String>,
    keys: Vec<[u8; 32]>,
}

impl Default for RequestMix {
    fn default() -> Self {
        let mut rng = Rng(7);
        Self {
            reqs: (0..4096)
                .map(|_| (rng.next_u64() as u32, rng.next_u64() as usize))
                .collect(),
            uas: (0..64).map(|i| format!("bot-{}", i * 12 + 3)).collect(),
            apps: (0..64).map(|i| format!("app-{i}")).collect(),
            paths: (0..64).map(|i| format!("/api/{i}/items")).collect(),
            keys: (0..64)
                .map(|i| Sha256::digest(format!("key-{}", i * 12 + 5).as_bytes()).into())
                .collect(),
        }
    }
}

impl RequestMix {
    /// Request `i` (cycling through the 4096).
    pub fn request(&self, i: usize) -> Request<'_> {
        let (ip, r) = self.reqs[i & 4095];
        Request {
            region: Some([*b"DE", *b"US", *b"BR", *b"FR"][r % 4]),
            asn: Some(64_500 + (r % 200) as u32),
            user_agent: Some(self.uas[r % 64].as_str()),
            app: Some(self.apps[(r >> 8) % 64].as_str()),
            api_key_hash: Some(&self.keys[(r >> 14) % 64]),
            now_unix_s: 1_800_000_000,
            ..Request::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                if r % 2 == 0 { "GET" } else { "POST" },
                self.paths[(r >> 4) % 64].as_str(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decision, compile, evaluate};

    #[test]
    fn the_workload_is_what_the_benchmarks_say() {
        let prefixes: Vec<String> = v4_prefixes(10_000, 0x1234_5678).collect();
        assert_eq!(prefixes.len(), 10_000);
        assert_eq!(
            prefixes,
            v4_prefixes(10_000, 0x1234_5678).collect::<Vec<_>>()
        );
        let slash32 = prefixes.iter().filter(|p| p.ends_with("/32")).count();
        assert!((6_500..7_500).contains(&slash32), "{slash32} /32s");
        assert!(prefixes.iter().all(|p| !p.starts_with("127.")));

        let now = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        let out = compile(&inputs(prefixes.join("\n"), 1000), now);
        assert_eq!(out.bundle.actions.len(), 1000);
        let policy = crate::CompiledPolicy::new(out.bundle, &Default::default());

        // The proxy benchmark's own request is evaluated against everything and forwarded.
        let key: [u8; 32] = Sha256::digest(b"bench-key").into();
        let own = Request {
            region: Some(*b"BR"),
            asn: Some(64_999),
            user_agent: Some("palisade-bench/1"),
            api_key_hash: Some(&key),
            ..Request::new(IpAddr::V4(Ipv4Addr::LOCALHOST), "GET", "/index.html")
        };
        assert!(matches!(
            evaluate(&policy, &own).decision,
            Decision::Forward
        ));

        // The mix hits some actions: denies, flags and forwards all occur.
        let mix = RequestMix::default();
        let (mut deny, mut allow, mut flag, mut forward) = (0, 0, 0, 0);
        for i in 0..4096 {
            let v = evaluate(&policy, &mix.request(i));
            match v.decision {
                Decision::Deny(_) => deny += 1,
                Decision::Allow(_) => allow += 1,
                Decision::Forward if v.flags.is_empty() => forward += 1,
                Decision::Forward => flag += 1,
            }
        }
        assert!(
            deny > 0 && allow > 0 && flag > 0 && forward > 0,
            "deny {deny}, allow {allow}, flag {flag}, forward {forward}"
        );
    }
}
