#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use super::*;

fn cfg(seed: u64, hours: i64, scenarios: Vec<Scenario>) -> SimConfig {
    SimConfig {
        seed,
        duration: SignedDuration::from_hours(hours),
        scenarios,
        attacks_per_kind: 1,
        ..Default::default()
    }
}

fn all(mut t: Traffic) -> Vec<SimRequest> {
    let mut out = Vec::new();
    while let Some(b) = t.next_second() {
        out.extend(b);
    }
    out
}

#[test]
fn same_seed_same_traffic_other_seed_other_traffic() {
    let first = |seed| {
        let mut t = Traffic::new(cfg(seed, 1, Scenario::ALL.to_vec()));
        (0..300)
            .flat_map(|_| t.next_second().unwrap())
            .collect::<Vec<_>>()
    };
    let a = first(7);
    assert!(a.len() > 1000, "{}", a.len());
    assert_eq!(a, first(7));
    assert_ne!(a, first(8));
    let ta = Traffic::new(cfg(7, 6, Scenario::ALL.to_vec()));
    let tb = Traffic::new(cfg(7, 6, Scenario::ALL.to_vec()));
    let starts = |t: &Traffic| {
        t.truth()
            .attacks
            .iter()
            .map(|a| a.start)
            .collect::<Vec<_>>()
    };
    assert_eq!(starts(&ta), starts(&tb));
}

#[test]
fn benign_traffic_has_the_documented_shape() {
    // 02:00–04:00 and 13:00–15:00 of the same day.
    let mut night = cfg(3, 2, vec![]);
    night.start += SignedDuration::from_hours(2);
    let mut day = cfg(3, 2, vec![]);
    day.start += SignedDuration::from_hours(13);
    let n = all(Traffic::new(night)).len() as f64;
    let t = Traffic::new(day);
    let nat: Vec<IpAddr> = t.truth().nat.clone();
    let reqs = all(t);
    let d = reqs.len() as f64;
    assert!(d / n > 3.0, "diurnal peak/trough {d}/{n}");
    let mut per_ip: HashMap<IpAddr, u64> = HashMap::new();
    for r in &reqs {
        *per_ip.entry(r.ip).or_default() += 1;
    }
    let top = *per_ip.values().max().unwrap() as f64 / d;
    let top_nat = nat
        .iter()
        .map(|ip| per_ip.get(ip).copied().unwrap_or(0))
        .max()
        .unwrap() as f64
        / d;
    let median_ip = {
        let mut v: Vec<u64> = per_ip.values().copied().collect();
        v.sort();
        v[v.len() / 2] as f64 / d
    };
    // Zipf: a heavy head, but no benign client near Flooder's 5 %; NATs carry many users.
    assert!(top < 0.05 && top > 0.01, "top client share {top}");
    assert!(
        top_nat > 100.0 * median_ip,
        "NAT {top_nat} vs median {median_ip}"
    );
    let errors = reqs.iter().filter(|r| r.status >= 400).count() as f64 / d;
    assert!((0.01..0.05).contains(&errors), "error rate {errors}");
    let tokens = reqs.iter().filter(|r| r.token_endpoint).count();
    assert!(tokens > 500, "logins {tokens}");
    assert!(reqs.iter().all(|r| r.attack.is_none()));
}

#[test]
fn attacks_happen_from_their_ips_between_start_and_end() {
    let t = Traffic::new(cfg(5, 12, Scenario::ALL.to_vec()));
    let truth = t.truth().clone();
    assert_eq!(truth.attacks.len(), Scenario::ALL.len());
    assert!(truth.tor_exits.len() > 50);
    let origin = t.config().start;
    let reqs = all(t);
    for a in &truth.attacks {
        let mine: Vec<_> = reqs.iter().filter(|r| r.attack == Some(a.id)).collect();
        assert!(mine.len() > 20, "{:?}: {} requests", a.scenario, mine.len());
        for r in &mine {
            let at = origin + SignedDuration::from_nanos(r.offset_ns);
            assert!(at >= a.start && at < a.end, "{:?} at {at}", a.scenario);
            assert!(
                a.ips.contains(&r.ip) || a.prefix.is_some_and(|n| n.contains(&r.ip)),
                "{:?} from {}",
                a.scenario,
                r.ip
            );
        }
        if a.scenario == Scenario::RotatingFlooder {
            let addrs: std::collections::HashSet<IpAddr> = mine.iter().map(|r| r.ip).collect();
            assert_eq!(addrs.len(), mine.len(), "a new address per request");
        }
        if a.scenario == Scenario::KeyGuessor {
            let addrs: std::collections::HashSet<IpAddr> = mine.iter().map(|r| r.ip).collect();
            assert!(addrs.len() > 20, "{} addresses", addrs.len());
            assert!(mine.iter().all(|r| r.api_key == a.key));
        }
        assert!(!truth.benign.iter().any(|ip| a.ips.contains(ip)));
    }
}
