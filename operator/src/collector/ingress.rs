//! "The client IP is the ingress": a namespace whose traffic, over the short window, nearly
//! all resolves to a handful of private or in-cluster addresses (an ingress controller, a
//! load balancer, a mesh proxy on loopback) has sidecars that do not trust the proxy in front
//! of them. IP, region and ASN conditions and IP-keyed detection then see the proxy, not the
//! clients. The collector checks every tick ([`check`], pure) and warns once per episode
//! ([`Flagged`]): a Warning Event on the Namespace and a gauge.

use std::net::IpAddr;

use palisade_detection::key::ClientKey;
use palisade_detection::window::WindowView;

/// Fewest requests in the window before anything is concluded.
pub const MIN_REQUESTS: u64 = 200;
/// At most this many addresses make "a handful".
pub const HANDFUL: usize = 3;
/// Share of the namespace's requests from those addresses that raises the warning (percent).
pub const RAISE_PERCENT: u64 = 90;
/// Share below which a raised warning is cleared (percent): the gap keeps a namespace near
/// the threshold from warning again and again.
pub const CLEAR_PERCENT: u64 = 50;

/// What the check found in a namespace's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The private addresses carrying the traffic, busiest first (at most [`HANDFUL`]).
    pub addresses: Vec<IpAddr>,
    /// Their requests.
    pub requests: u64,
    /// All requests of the namespace in the window.
    pub total: u64,
}

impl Finding {
    /// Their share, in whole percent.
    pub fn percent(&self) -> u64 {
        self.requests * 100 / self.total.max(1)
    }

    /// The Event note: what was seen and what to do.
    pub fn note(&self) -> String {
        let addrs: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        format!(
            "{}% of the last {} requests came from {} private address(es) ({}): the client IP \
             the sidecars see is probably a proxy (ingress controller, load balancer, mesh). \
             IP, region and ASN conditions and IP-keyed detection see that proxy, not your \
             clients. Add its addresses to the trusted proxies (annotation \
             palisade.dev/trusted-proxies on this namespace, or --sidecar-trusted-proxies)",
            self.percent(),
            self.total,
            self.addresses.len(),
            addrs.join(", ")
        )
    }
}

/// Private, loopback, link-local, shared (CGNAT) and unique-local addresses: where in-cluster
/// proxies live, never a client on the internet.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (a == 100 && b & 0xc0 == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
        }
    }
}

/// The busiest private addresses of `view` and their share of its requests; `None` with
/// fewer than [`MIN_REQUESTS`] requests.
pub fn check(view: &WindowView) -> Option<Finding> {
    let total = view.totals.requests;
    if total < MIN_REQUESTS {
        return None;
    }
    let mut private: Vec<(u64, IpAddr)> = view
        .clients
        .iter()
        .filter_map(|(key, w)| match key {
            ClientKey::Ip(ip) if is_private(*ip) => Some((w.totals.requests, *ip)),
            _ => None,
        })
        .collect();
    private.sort_unstable_by(|a, b| b.cmp(a));
    private.truncate(HANDFUL);
    Some(Finding {
        requests: private.iter().map(|(n, _)| n).sum::<u64>().min(total),
        addresses: private.into_iter().map(|(_, ip)| ip).collect(),
        total,
    })
}

/// The namespaces currently warned about.
#[derive(Debug, Default)]
pub struct Flagged {
    episodes: super::episode::Episodes,
    /// The warning of each namespace in an episode (for its posture).
    notes: std::collections::HashMap<String, String>,
}

impl Flagged {
    /// Records this tick's finding for `ns`; returns it when the warning is raised now (it was
    /// not raised, and the share reached [`RAISE_PERCENT`]). A raised warning clears when the
    /// share falls below [`CLEAR_PERCENT`] or the namespace goes quiet.
    pub fn update(&mut self, ns: &str, finding: Option<Finding>) -> Option<Finding> {
        let percent = finding.as_ref().map_or(0, Finding::percent);
        let raise =
            percent >= RAISE_PERCENT && finding.as_ref().is_some_and(|f| !f.addresses.is_empty());
        let raised = self.episodes.update(ns, raise, percent < CLEAR_PERCENT);
        if raised && let Some(f) = &finding {
            self.notes.insert(ns.to_owned(), f.note());
        } else if !self.episodes.contains(ns) {
            self.notes.remove(ns);
        }
        raised.then_some(finding).flatten()
    }

    /// The warning raised for `ns`, while its episode lasts.
    pub fn note(&self, ns: &str) -> Option<&str> {
        self.notes.get(ns).map(String::as_str)
    }

    /// How many namespaces are warned about.
    pub fn len(&self) -> usize {
        self.episodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_detection::stats::ClientWindow;

    fn view(total: u64, clients: &[(&str, u64)]) -> WindowView {
        let mut v = WindowView {
            span: jiff::SignedDuration::from_secs(300),
            ..Default::default()
        };
        v.totals.requests = total;
        for (ip, n) in clients {
            let mut w = ClientWindow::default();
            w.totals.requests = *n;
            v.clients.insert(ClientKey::Ip(ip.parse().expect("ip")), w);
        }
        v
    }

    #[test]
    fn private_means_in_cluster() {
        for ip in [
            "10.1.2.3",
            "172.20.0.1",
            "192.168.0.9",
            "127.0.0.6",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "203.0.113.9",
            "100.128.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "172.32.0.1",
        ] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn a_handful_of_private_addresses_carrying_nearly_everything_is_found() {
        let ingress = view(
            1000,
            &[("10.0.0.5", 700), ("10.0.0.6", 250), ("203.0.113.1", 50)],
        );
        let f = check(&ingress).expect("enough traffic");
        assert_eq!(f.percent(), 95);
        assert_eq!(
            f.addresses,
            [
                "10.0.0.5".parse::<IpAddr>().expect("ip"),
                "10.0.0.6".parse().expect("ip")
            ]
        );
        assert!(f.note().contains("10.0.0.5, 10.0.0.6"), "{}", f.note());
        // Real clients on the internet: nothing private.
        let real = view(1000, &[("203.0.113.1", 600), ("198.51.100.2", 400)]);
        assert_eq!(check(&real).map(|f| f.percent()), Some(0));
        // Many private clients (an internal API): the busiest three carry too little.
        let many: Vec<(String, u64)> = (0..20).map(|i| (format!("10.0.1.{i}"), 50)).collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(a, n)| (a.as_str(), *n)).collect();
        assert_eq!(check(&view(1000, &many)).map(|f| f.percent()), Some(15));
        // Too little traffic to say.
        assert_eq!(check(&view(100, &[("10.0.0.5", 100)])), None);
    }

    #[test]
    fn warns_once_per_episode() {
        let mut flagged = Flagged::default();
        let hot = || check(&view(1000, &[("10.0.0.5", 990)]));
        let warm = || check(&view(1000, &[("10.0.0.5", 700)]));
        let cold = || check(&view(1000, &[("203.0.113.1", 1000)]));
        assert!(flagged.update("a", hot()).is_some(), "raised");
        assert_eq!(flagged.len(), 1);
        assert!(flagged.update("a", hot()).is_none(), "not again");
        assert!(
            flagged.update("a", warm()).is_none(),
            "still raised between the thresholds"
        );
        assert!(flagged.update("a", hot()).is_none());
        assert!(flagged.update("a", cold()).is_none(), "cleared");
        assert_eq!(flagged.len(), 0);
        assert!(flagged.update("a", warm()).is_none(), "70% does not raise");
        assert!(flagged.update("a", hot()).is_some(), "a new episode");
        assert!(flagged.update("b", None).is_none());
    }
}
