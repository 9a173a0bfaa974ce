//! Parsing IP prefixes: one inline entry, or a whole referenced list (one prefix a line, `#`
//! comments, blank lines; a bare address is a /32 or /128), into normalised ranges.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Prefixes normalised into sorted, disjoint, non-adjacent inclusive ranges per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixList {
    /// IPv4 ranges `[start, end]`.
    pub v4: Vec<(u32, u32)>,
    /// IPv6 ranges `[start, end]`.
    pub v6: Vec<(u128, u128)>,
    /// How many prefixes were read (before merging).
    pub prefixes: usize,
}

/// A line of a referenced list that is not a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// The offending text, trimmed.
    pub text: String,
}

/// Parses `a.b.c.d/n`, an IPv6 prefix, or a bare address (host bits are cleared).
pub fn parse_prefix(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = IpNet::from_str(s) {
        return Some(net.trunc());
    }
    IpAddr::from_str(s).ok().map(IpNet::from)
}

impl PrefixList {
    /// Parses a referenced list.
    pub fn parse(text: &str) -> Result<Self, LineError> {
        let mut builder = Builder::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let net = parse_prefix(line).ok_or_else(|| LineError {
                line: i + 1,
                text: line.to_string(),
            })?;
            builder.push(net);
        }
        Ok(builder.finish())
    }

    /// Builds a list from parsed prefixes.
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut builder = Builder::default();
        nets.into_iter().for_each(|n| builder.push(n));
        builder.finish()
    }

    /// Whether the list holds no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[derive(Default)]
struct Builder {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    prefixes: usize,
}

impl Builder {
    fn push(&mut self, net: IpNet) {
        self.prefixes += 1;
        match net {
            IpNet::V4(n) => self.v4.push((n.network().into(), n.broadcast().into())),
            IpNet::V6(n) => self.v6.push((n.network().into(), n.broadcast().into())),
        }
    }

    fn finish(self) -> PrefixList {
        PrefixList {
            v4: merge(self.v4),
            v6: merge(self.v6),
            prefixes: self.prefixes,
        }
    }
}

/// Sorts ranges and merges the overlapping and adjacent ones.
pub(crate) fn merge<A: Copy + Ord + crate::ipset::Addr>(mut ranges: Vec<(A, A)>) -> Vec<(A, A)> {
    ranges.sort_unstable();
    let mut out: Vec<(A, A)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if last.1.succ().is_none_or(|next| s <= next) => {
                last.1 = last.1.max(e);
            }
            _ => out.push((s, e)),
        }
    }
    out.shrink_to_fit();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_with_comments_blanks_and_bare_addresses() {
        let text = "# Tor exits\n\n10.0.0.0/8\n  192.168.1.7  # a host\n2001:db8::/32\n::1\n";
        let list = PrefixList::parse(text).expect("valid list");
        assert_eq!(list.prefixes, 4);
        assert_eq!(
            list.v4,
            vec![(0x0a00_0000, 0x0aff_ffff), (0xc0a8_0107, 0xc0a8_0107)]
        );
        assert_eq!(list.v6.len(), 2);
        assert_eq!(list.v6[0], (1, 1));
    }

    #[test]
    fn reports_the_bad_line() {
        let err = PrefixList::parse("10.0.0.0/8\n\n10.0.0.300/8\n").expect_err("bad line");
        assert_eq!(
            err,
            LineError {
                line: 3,
                text: "10.0.0.300/8".into()
            }
        );
    }

    #[test]
    fn duplicates_overlaps_and_neighbours_merge() {
        let list = PrefixList::parse(
            "10.0.0.0/24\n10.0.0.0/24\n10.0.0.128/25\n10.0.1.0/24\n10.0.3.0/24\n0.0.0.0/0\n",
        )
        .expect("valid");
        assert_eq!(list.v4, vec![(0, u32::MAX)]);
        let list =
            PrefixList::parse("10.0.0.0/24\n10.0.0.5\n10.0.1.0/24\n10.0.3.0/24\n").expect("valid");
        assert_eq!(
            list.v4,
            vec![(0x0a00_0000, 0x0a00_01ff), (0x0a00_0300, 0x0a00_03ff)]
        );
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(parse_prefix("10.1.2.3/8"), parse_prefix("10.0.0.0/8"));
        assert!(parse_prefix("nonsense").is_none());
        assert!(parse_prefix("10.0.0.0/33").is_none());
    }
}
