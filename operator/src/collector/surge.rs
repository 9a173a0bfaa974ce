//! An environment-wide error surge: most of a namespace's clients get errors from the app at
//! once (a bad deploy, an expired upstream credential, a dependency down). Brute Guessor and
//! Robot Abuser judge each client against the namespace's own error ratio, so the surge flags
//! no client; instead the collector checks each namespace's short window every tick
//! ([`check`], pure) and reports the surge once per episode ([`Flagged`]): one Warning Event
//! `ErrorSurge` on the Namespace, naming the share of errors, the clients affected and the
//! paths most requested meanwhile, and a counter.

use palisade_detection::key::ClientKeyKind;
use palisade_detection::window::WindowView;

/// Fewest answered requests in the window before anything is concluded.
pub const MIN_ANSWERED: u64 = 200;
/// Fewest clients (by IP) the app answered in the window: a surge is about a population.
pub const MIN_CLIENTS: u64 = 10;
/// Share of the answered requests that were errors at which a surge is reported (percent),
/// when at least half the clients see errors on most of their requests.
pub const RAISE_PERCENT: u64 = 50;
/// Share below which a reported surge is over (percent): the gap keeps a namespace near the
/// threshold from being reported again and again.
pub const CLEAR_PERCENT: u64 = 20;

/// What the check found in a namespace's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Errors (4xx/5xx from the app) in the window.
    pub errors: u64,
    /// Requests the app answered in the window.
    pub answered: u64,
    /// Clients with errors on at least half of their answered requests.
    pub failing: u64,
    /// Clients the app answered.
    pub clients: u64,
}

impl Finding {
    /// The errors' share, in whole percent.
    pub fn percent(&self) -> u64 {
        self.errors * 100 / self.answered.max(1)
    }

    /// Whether this is a surge: the share reached [`RAISE_PERCENT`] and half the clients or
    /// more are failing.
    pub fn is_surge(&self) -> bool {
        self.percent() >= RAISE_PERCENT && self.failing * 2 >= self.clients
    }

    /// The Event note: what was seen, what it means for detection, and where to look.
    pub fn note(&self, paths: &[(String, u64)]) -> String {
        let paths: Vec<String> = paths
            .iter()
            .map(|(p, n)| format!("{p} ({n} sampled requests)"))
            .collect();
        let seen = if paths.is_empty() {
            String::new()
        } else {
            format!("; the paths requested most meanwhile: {}", paths.join(", "))
        };
        format!(
            "error surge: {}% of the last {} answers from the app were errors, and {} of {} \
             clients got errors on most of their requests. The application or something it \
             depends on is failing for everyone; Brute Guessor and Robot Abuser do not flag \
             clients for errors everyone gets{seen}",
            self.percent(),
            self.answered,
            self.failing,
            self.clients
        )
    }
}

/// The namespace's error share and how many of its clients fail, from `view` (the short
/// window); `None` with fewer than [`MIN_ANSWERED`] answers or [`MIN_CLIENTS`] clients.
pub fn check(view: &WindowView) -> Option<Finding> {
    let answered = view.totals.answered();
    if answered < MIN_ANSWERED {
        return None;
    }
    let (mut clients, mut failing) = (0u64, 0u64);
    for (key, w) in &view.clients {
        let a = w.totals.answered();
        if key.kind() != ClientKeyKind::Ip || a == 0 {
            continue;
        }
        clients += 1;
        failing += u64::from(w.totals.errors * 2 >= a);
    }
    if clients < MIN_CLIENTS {
        return None;
    }
    Some(Finding {
        errors: view.totals.errors.min(answered),
        answered,
        failing,
        clients,
    })
}

/// The namespaces in a reported surge.
#[derive(Debug, Default)]
pub struct Flagged(super::episode::Episodes);

impl Flagged {
    /// Records this tick's finding for `ns`; returns it when a surge is reported now (none
    /// was, and [`Finding::is_surge`]). A reported surge ends when the share falls below
    /// [`CLEAR_PERCENT`] or the namespace goes quiet.
    pub fn update(&mut self, ns: &str, finding: Option<Finding>) -> Option<Finding> {
        let percent = finding.as_ref().map_or(0, Finding::percent);
        let raise = finding.as_ref().is_some_and(Finding::is_surge);
        self.0
            .update(ns, raise, percent < CLEAR_PERCENT)
            .then_some(finding)
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_detection::key::ClientKey;
    use palisade_detection::stats::ClientWindow;

    /// A window of `n` clients with `each` answers, `errors` of them errors.
    fn view(n: u32, each: u64, errors: u64) -> WindowView {
        let mut v = WindowView {
            span: jiff::SignedDuration::from_secs(300),
            ..Default::default()
        };
        for i in 0..n {
            let mut w = ClientWindow::default();
            w.totals.requests = each;
            w.totals.errors = errors;
            v.totals.requests += each;
            v.totals.errors += errors;
            let ip = std::net::Ipv4Addr::from(0xc633_6400 + i);
            v.clients.insert(ClientKey::Ip(ip.into()), w);
        }
        v
    }

    #[test]
    fn a_bad_deploy_is_one_surge_reported_once_per_episode() {
        let mut flagged = Flagged::default();
        let surge = check(&view(40, 20, 20)).expect("enough traffic");
        assert!(surge.is_surge());
        assert_eq!(
            (surge.percent(), surge.failing, surge.clients),
            (100, 40, 40)
        );
        assert!(
            flagged.update("shop", Some(surge.clone())).is_some(),
            "reported"
        );
        assert!(
            flagged.update("shop", Some(surge.clone())).is_none(),
            "once"
        );
        // Still 30 % errors: the same episode.
        assert!(flagged.update("shop", check(&view(40, 20, 6))).is_none());
        // Recovered, then failing again: a new episode.
        assert!(flagged.update("shop", check(&view(40, 20, 1))).is_none());
        assert!(flagged.update("shop", Some(surge)).is_some());
        let note = check(&view(40, 20, 20))
            .expect("finding")
            .note(&[("/login".into(), 640)]);
        assert!(
            note.contains("100% of the last 800") && note.contains("/login"),
            "{note}"
        );
    }

    #[test]
    fn a_few_failing_clients_or_a_quiet_namespace_are_no_surge() {
        // One guesser with 100 % errors among 39 healthy clients: 2.5 % of the clients.
        let mut v = view(39, 20, 0);
        let mut guesser = ClientWindow::default();
        guesser.totals.requests = 2_000;
        guesser.totals.errors = 2_000;
        v.totals.requests += 2_000;
        v.totals.errors += 2_000;
        v.clients
            .insert(ClientKey::Ip("203.0.113.9".parse().expect("ip")), guesser);
        let f = check(&v).expect("enough traffic");
        assert!(
            f.percent() >= RAISE_PERCENT,
            "most errors are the guesser's"
        );
        assert!(!f.is_surge(), "but one client is not an environment");
        assert!(check(&view(5, 100, 100)).is_none(), "five clients");
        assert!(check(&view(40, 4, 4)).is_none(), "160 answers");
    }
}
