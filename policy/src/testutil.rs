//! Test helpers: action builders and a seeded PRNG.

use jiff::Timestamp;

use crate::spec::{ActionSpec, Conditions, Header, Mode, Verb};

/// xorshift64*: deterministic, no dependency.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `n` random IPv4 prefixes, 70 % /32, 20 % /24, 10 % /16–/23, as text lines.
pub(crate) fn random_v4_lines(rng: &mut Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = rng.next();
            let len = match r % 10 {
                0..=6 => 32,
                7 | 8 => 24,
                _ => 16 + (r >> 8) % 8,
            };
            let ip = std::net::Ipv4Addr::from((r >> 32) as u32);
            format!("{ip}/{len}")
        })
        .collect()
}

pub(crate) fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

pub(crate) fn deny(name: &str) -> ActionSpec {
    ActionSpec {
        name: name.into(),
        verb: Verb::Deny {
            status: 403,
            body: "denied".into(),
            content_type: "text/plain".into(),
        },
        mode: Mode::Enforce,
        conditions: Conditions::default(),
        match_all: false,
        workload_selector: None,
        paused: false,
        expire_time: None,
    }
}

pub(crate) fn allow(name: &str) -> ActionSpec {
    ActionSpec {
        verb: Verb::Allow,
        ..deny(name)
    }
}

pub(crate) fn flag(name: &str, header: &str) -> ActionSpec {
    ActionSpec {
        verb: Verb::Flag {
            headers: vec![Header {
                name: header.into(),
                value: name.into(),
            }],
        },
        ..deny(name)
    }
}

pub(crate) fn rate_limit(name: &str, requests: u32) -> ActionSpec {
    ActionSpec {
        verb: Verb::RateLimit(crate::spec::RateLimit {
            requests,
            period_s: 1,
            burst: 0,
            by: crate::ClientKeyKind::Ip,
            tarpit_ms: 0,
            pods: 1,
        }),
        ..deny(name)
    }
}

pub(crate) fn with_ips(mut a: ActionSpec, ips: &[&str]) -> ActionSpec {
    a.conditions.ip_ranges = ips.iter().map(|s| s.to_string()).collect();
    a
}
