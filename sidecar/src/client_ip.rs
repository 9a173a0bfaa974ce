//! The client IP of a request: the TCP peer, or — only when the peer is a trusted proxy — the
//! first untrusted address of `X-Forwarded-For` read from the right (nginx `real_ip_recursive`
//! with `set_real_ip_from`). A direct client cannot choose its address: its `X-Forwarded-For`
//! is never read. Pure; the caller counts the [`IpSource`].

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use palisade_policy::TrustedProxies;

/// The header proxies append the address they received from to.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Where the client IP came from (the `source` label of `client_ip_resolutions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    /// The TCP peer: untrusted, or trusted and no `X-Forwarded-For` was sent.
    Socket,
    /// The peer is not a trusted proxy and sent `X-Forwarded-For`: ignored, the peer is the
    /// client.
    XffUntrustedPeer,
    /// `X-Forwarded-For`, walked from the right through trusted proxies.
    Xff,
    /// `X-Forwarded-For` from a trusted peer held an entry that is not an address (or not
    /// ASCII) before an untrusted one: the last trusted address is the client.
    XffInvalid,
}

impl IpSource {
    /// Every value, in label order.
    pub const ALL: [Self; 4] = [
        Self::Socket,
        Self::XffUntrustedPeer,
        Self::Xff,
        Self::XffInvalid,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::XffUntrustedPeer => "xff_untrusted_peer",
            Self::Xff => "xff",
            Self::XffInvalid => "xff_invalid",
        }
    }
}

/// The client IP of a request from `peer`.
///
/// - `peer` outside `trusted`: the peer (its `X-Forwarded-For` is ignored).
/// - `peer` trusted: `X-Forwarded-For` entries (every header line, each line's comma-separated
///   entries) are read right to left; trusted addresses are skipped; the first untrusted one
///   is the client. When every entry read is trusted, the last one read is the client.
/// - `max_hops > 0` bounds the entries read: after `max_hops` trusted entries the last is the
///   client, whatever lies further left.
/// - An entry that is not an address (`1.2.3.4`, `[v6]`, `[v6]:port`, `1.2.3.4:port`, `v6`;
///   bytes outside ASCII included) stops the walk: the last trusted address (the peer, or the
///   last entry read) is the client. Nothing left of it is believed.
pub fn client_ip(
    headers: &HeaderMap,
    peer: IpAddr,
    trusted: &TrustedProxies,
    max_hops: usize,
) -> (IpAddr, IpSource) {
    let peer = peer.to_canonical();
    let mut values = headers.get_all(X_FORWARDED_FOR).iter();
    if !trusted.contains(peer) {
        let source = match values.next() {
            Some(_) => IpSource::XffUntrustedPeer,
            None => IpSource::Socket,
        };
        return (peer, source);
    }
    let entries = values
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|b| *b == b','));
    let (mut client, mut source) = (peer, IpSource::Socket);
    for (read, entry) in entries.enumerate() {
        if max_hops > 0 && read == max_hops {
            break;
        }
        let Some(ip) = parse_entry(entry) else {
            return (client, IpSource::XffInvalid);
        };
        (client, source) = (ip, IpSource::Xff);
        if !trusted.contains(ip) {
            break;
        }
    }
    (client, source)
}

/// Logs, once at start-up, whom the sidecar believes; warns when `--trusted-hops` is set
/// without trusted proxies (it used to trust every client; now it has no effect).
pub fn log_trust(trusted: &TrustedProxies, max_hops: usize) {
    if trusted.is_empty() {
        if max_hops > 0 {
            tracing::warn!(
                trusted_hops = max_hops,
                "--trusted-hops is set but --trusted-proxies is empty: X-Forwarded-For and \
                 identity headers are ignored unless the namespace's bundle names trusted proxies"
            );
        }
        return;
    }
    tracing::info!(trusted_proxies = %trusted, trusted_hops = max_hops, "trusted proxies");
}

/// One `X-Forwarded-For` entry as an address; `None` when it is not one.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry.trim_ascii()).ok()?;
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        port_ok.then_some(inside)?.parse().ok()?
    } else if let Some((addr, port)) = s.split_once(':').filter(|(a, _)| a.contains('.')) {
        // `a.b.c.d:port` (some load balancers add the port); an IPv6 address has no dot
        // before its first colon.
        port.bytes()
            .all(|b| b.is_ascii_digit())
            .then_some(addr)?
            .parse::<std::net::Ipv4Addr>()
            .ok()?
            .into()
    } else {
        s.parse().ok()?
    };
    Some(IpAddr::to_canonical(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn xff(lines: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                "x-forwarded-for",
                HeaderValue::from_bytes(l).expect("value"),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(s: &str) -> TrustedProxies {
        TrustedProxies::parse(s).expect("cidrs")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let h = xff(&[b"203.0.113.9"]);
        let none = TrustedProxies::default();
        assert_eq!(
            client_ip(&h, ip("198.51.100.1"), &none, 1),
            (ip("198.51.100.1"), IpSource::XffUntrustedPeer)
        );
        let t = trusted("10.0.0.0/8");
        assert_eq!(
            client_ip(&h, ip("198.51.100.1"), &t, 0),
            (ip("198.51.100.1"), IpSource::XffUntrustedPeer)
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), ip("198.51.100.1"), &t, 0),
            (ip("198.51.100.1"), IpSource::Socket)
        );
    }

    #[test]
    fn walks_right_to_left_through_trusted_hops() {
        let t = trusted("10.0.0.0/8, 192.168.0.0/16");
        let peer = ip("10.0.0.1");
        // A forged entry on the left, the real client, then a trusted load balancer.
        let h = xff(&[b"1.1.1.1, 203.0.113.9, 192.168.3.3"]);
        assert_eq!(
            client_ip(&h, peer, &t, 0),
            (ip("203.0.113.9"), IpSource::Xff)
        );
        // Bounded: one entry read, trusted, so it is the client.
        assert_eq!(
            client_ip(&h, peer, &t, 1),
            (ip("192.168.3.3"), IpSource::Xff)
        );
        // Several header lines are one list, in order.
        let lines = xff(&[b"1.1.1.1, 203.0.113.9", b"192.168.3.3"]);
        assert_eq!(client_ip(&lines, peer, &t, 0).0, ip("203.0.113.9"));
        // Every entry trusted: the leftmost read.
        let all = xff(&[b"10.9.9.9, 192.168.3.3"]);
        assert_eq!(
            client_ip(&all, peer, &t, 0),
            (ip("10.9.9.9"), IpSource::Xff)
        );
        // A trusted peer without the header.
        assert_eq!(
            client_ip(&HeaderMap::new(), peer, &t, 0),
            (peer, IpSource::Socket)
        );
    }

    #[test]
    fn junk_stops_at_the_last_trusted_address_never_a_forged_one() {
        let t = trusted("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        for junk in [
            &b"203.0.113.9, not-an-ip"[..],
            b"203.0.113.9, caf\xc3\xa9",
            b"203.0.113.9, \xff",
            b"203.0.113.9,",
            b"203.0.113.9, 1.2.3.4:x",
            b"203.0.113.9, [2001:db8::1",
        ] {
            assert_eq!(
                client_ip(&xff(&[junk]), peer, &t, 0),
                (peer, IpSource::XffInvalid),
                "{}",
                String::from_utf8_lossy(junk)
            );
        }
        // Junk behind (left of) the client is never read: the client's own bytes cannot
        // collapse it to the peer.
        let h = xff(&[b"\xff\xfe, 203.0.113.9"]);
        assert_eq!(
            client_ip(&h, peer, &t, 0),
            (ip("203.0.113.9"), IpSource::Xff)
        );
        // Junk after a trusted hop: that hop is the client.
        let h = xff(&[b"203.0.113.9, junk, 10.1.1.1"]);
        assert_eq!(
            client_ip(&h, peer, &t, 0),
            (ip("10.1.1.1"), IpSource::XffInvalid)
        );
    }

    #[test]
    fn entry_forms() {
        let t = trusted("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        for (entry, want) in [
            (&b" 203.0.113.9 "[..], "203.0.113.9"),
            (b"203.0.113.9:443", "203.0.113.9"),
            (b"[2001:db8::1]:443", "2001:db8::1"),
            (b"[2001:db8::1]", "2001:db8::1"),
            (b"2001:db8::1", "2001:db8::1"),
            (b"::ffff:203.0.113.9", "203.0.113.9"),
        ] {
            assert_eq!(client_ip(&xff(&[entry]), peer, &t, 0).0, ip(want));
        }
        // The peer as an IPv4-mapped IPv6 socket address is trusted as IPv4.
        let h = xff(&[b"203.0.113.9"]);
        assert_eq!(
            client_ip(&h, ip("::ffff:10.0.0.1"), &t, 0).0,
            ip("203.0.113.9")
        );
    }
}
