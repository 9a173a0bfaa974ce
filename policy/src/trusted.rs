//! The proxies a sidecar believes: CIDRs whose `X-Forwarded-For` entries and identity headers
//! are taken as written (nginx's `set_real_ip_from`). One type for the sidecar's
//! `--trusted-proxies` flag and the namespace's `palisade.dev/trusted-proxies` annotation, which
//! the operator compiles into the bundle; both are parsed by [`TrustedProxies::parse`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::lists::parse_prefix;

/// Most CIDRs in one list (the lookup is a linear scan; a handful is the normal case).
pub const MAX_TRUSTED_PROXIES: usize = 64;

/// A list of trusted proxy CIDRs; empty trusts no one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (or bare addresses) separated by commas and/or whitespace. Host bits are
    /// cleared. The error names the entry that is not a prefix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let nets = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| parse_prefix(s).ok_or_else(|| format!("{s:?} is not a CIDR or an address")))
            .collect::<Result<Vec<_>, _>>()?;
        if nets.len() > MAX_TRUSTED_PROXIES {
            return Err(format!(
                "{} CIDRs is more than {MAX_TRUSTED_PROXIES}; list your proxies' ranges only",
                nets.len()
            ));
        }
        Ok(Self(nets))
    }

    /// True when `ip` (IPv4-mapped IPv6 taken as IPv4) is inside one of the CIDRs.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// True when no one is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CIDRs, in the order given.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn parses_lists_and_matches_members_only() {
        let t = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7\n2001:db8::/32 ").expect("parses");
        assert_eq!(t.to_string(), "10.0.0.0/8,192.168.1.7/32,2001:db8::/32");
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped is IPv4");
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("2001:db8::9")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
    }

    #[test]
    fn rejects_what_is_not_a_prefix() {
        let e = TrustedProxies::parse("10.0.0.0/8,ingress").expect_err("rejected");
        assert!(e.contains("\"ingress\""), "{e}");
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        let many = (0..65)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect::<Vec<_>>();
        assert!(TrustedProxies::parse(&many.join(",")).is_err());
    }
}
