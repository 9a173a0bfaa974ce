#![allow(clippy::unwrap_used)]

use super::*;
use crate::key::ClientKeyKind;
use crate::report::AttrEntry;
use crate::stats::ClientCounts;
use crate::testutil::{ipk, report, reqs, t};

fn windows() -> Windows {
    Windows::new(&WindowConfig::default())
}

#[test]
fn short_window_slides_on_the_virtual_clock() {
    let mut w = windows();
    assert_eq!(
        w.merge(&report("a", 1, 0, &[(ipk(1), reqs(10))]), t(1)),
        MergeOutcome::Accepted
    );
    assert_eq!(
        w.merge(&report("a", 2, 200, &[(ipk(1), reqs(5))]), t(201)),
        MergeOutcome::Accepted
    );
    let at = |s| {
        w.short(t(s))
            .clients
            .get(&ipk(1))
            .map(|c| c.totals.requests)
    };
    assert_eq!(at(201), Some(15));
    assert_eq!(at(299), Some(15), "slice 0 is still in the 5 min window");
    assert_eq!(at(300), Some(5), "slice 0 left the window after 5 min");
    assert_eq!(at(479), Some(5), "slice [180 s, 210 s) is in until 480 s");
    assert_eq!(at(480), None, "everything left the window");
    assert_eq!(w.short(t(480)).totals.requests, 0);
    // The 24 h window still holds both.
    assert_eq!(w.long(t(530)).totals.requests, 15);
    assert_eq!(w.long(t(86_399)).totals.requests, 15);
    assert_eq!(w.long(t(86_400)).totals.requests, 0);
}

#[test]
fn slots_are_reused_without_leaking_old_counts() {
    let mut w = windows();
    w.merge(&report("a", 1, 0, &[(ipk(1), reqs(10))]), t(1));
    // 10 slices later the same ring slot holds a new slice.
    w.merge(&report("a", 2, 300, &[(ipk(2), reqs(3))]), t(301));
    let v = w.short(t(301));
    assert_eq!(v.totals.requests, 3);
    assert!(!v.clients.contains_key(&ipk(1)));
}

#[test]
fn duplicates_are_ignored() {
    let mut w = windows();
    let r = report("a", 1, 0, &[(ipk(1), reqs(10))]);
    assert_eq!(w.merge(&r, t(1)), MergeOutcome::Accepted);
    assert_eq!(w.merge(&r, t(2)), MergeOutcome::Duplicate);
    assert_eq!(w.short(t(2)).totals.requests, 10);
    // Another pod with the same seq is not a duplicate.
    assert_eq!(
        w.merge(&report("b", 1, 0, &[(ipk(1), reqs(1))]), t(2)),
        MergeOutcome::Accepted
    );
    // A restarted sidecar (seq back to 1, new start) is not a duplicate either.
    assert_eq!(
        w.merge(&report("a", 1, 5, &[(ipk(1), reqs(1))]), t(6)),
        MergeOutcome::Accepted
    );
    assert_eq!(w.short(t(6)).clients[&ipk(1)].totals.requests, 12);
    assert_eq!(w.stats().duplicates, 1);
}

#[test]
fn late_reports_merge_and_lost_ones_leave_a_counted_gap() {
    let mut w = windows();
    w.merge(&report("a", 1, 0, &[(ipk(1), reqs(1))]), t(1));
    // seq 2 is lost; seq 4 arrives before seq 3.
    w.merge(&report("a", 4, 3, &[(ipk(1), reqs(1))]), t(4));
    assert_eq!(
        w.merge(&report("a", 3, 2, &[(ipk(1), reqs(1))]), t(60)),
        MergeOutcome::Accepted
    );
    assert_eq!(w.short(t(60)).clients[&ipk(1)].totals.requests, 3);
    assert_eq!(w.stats().lost, 2, "seq 2 and 3 looked lost when 4 arrived");
    // Windows keep working after the loss.
    w.merge(&report("a", 5, 61, &[(ipk(1), reqs(1))]), t(62));
    assert_eq!(w.short(t(62)).clients[&ipk(1)].totals.requests, 4);
}

#[test]
fn too_old_and_too_new_reports_are_refused() {
    let mut w = windows();
    let old = report("a", 1, 0, &[(ipk(1), reqs(1))]);
    assert_eq!(w.merge(&old, t(90_000)), MergeOutcome::TooOld);
    let future = report("a", 2, 1_000, &[(ipk(1), reqs(1))]);
    assert_eq!(w.merge(&future, t(0)), MergeOutcome::TooNew);
    // A report older than 5 min but inside 24 h only feeds the long window.
    let late = report("a", 3, 0, &[(ipk(1), reqs(7))]);
    assert_eq!(w.merge(&late, t(3_600)), MergeOutcome::Accepted);
    assert_eq!(w.short(t(3_600)).totals.requests, 0);
    assert_eq!(w.long(t(3_600)).totals.requests, 7);
}

#[test]
fn per_slice_clients_are_bounded() {
    let cfg = WindowConfig {
        max_clients: 16,
        ..Default::default()
    };
    let mut w = Windows::new(&cfg);
    let many: Vec<_> = (0..200)
        .map(|i| (ipk(100 + i), reqs(1)))
        .chain([(ipk(1), reqs(500))])
        .collect();
    w.merge(&report("a", 1, 0, &many), t(1));
    let v = w.short(t(1));
    assert!(v.clients.len() <= 16);
    assert_eq!(v.totals.requests, 700);
    assert_eq!(v.clients[&ipk(1)].totals.requests, 500);
}

#[test]
fn attributes_sum_over_the_incident_clients() {
    let mut w = windows();
    let mut r = report("a", 1, 0, &[(ipk(1), reqs(10)), (ipk(2), reqs(10))]);
    for (client, value, count) in [
        (1, "/login", 8),
        (1, "/", 2),
        (2, "/login", 5),
        (3, "/x", 9),
    ] {
        r.attributes.push(AttrEntry {
            client: ipk(client),
            dim: AttrDim::Path,
            value: value.into(),
            count,
        });
    }
    // An API key used from ip 2 and ip 3 (sampled), in the same incident as ip 1 and 2.
    let key = ClientKey::api_key("k");
    for (ip, count) in [("198.51.100.2", 4), ("198.51.100.3", 6)] {
        r.attributes.push(AttrEntry {
            client: key,
            dim: AttrDim::Ip,
            value: ip.into(),
            count,
        });
    }
    w.merge(&r, t(1));
    let attrs = w.attributes(&[ipk(1), ipk(2), key], t(1), 5);
    assert_eq!(
        attrs.top[&AttrDim::Path],
        vec![("/login".to_string(), 13), ("/".to_string(), 2)]
    );
    assert_eq!(
        attrs.top[&AttrDim::Ip],
        vec![
            ("198.51.100.1".to_string(), 10),
            ("198.51.100.2".to_string(), 10),
            ("198.51.100.3".to_string(), 6)
        ],
        "IP clients exactly; an address also sampled for the key counts once"
    );
    assert_eq!(attrs.requests[&ipk(1)], 10);
    assert_eq!(attrs.last_seen[&AttrDim::Ip], vec![t(1); 3]);
    let top1 = w.attributes(&[ipk(1), ipk(2), key], t(1), 1);
    assert_eq!(top1.top[&AttrDim::Ip].len(), 1);
    assert_eq!(
        (top1.distinct[&AttrDim::Ip], top1.distinct[&AttrDim::Path]),
        (3, 2),
        "distinct counts every value, not only the top ones"
    );
}

#[test]
fn requests_between_gives_per_slice_counts() {
    let mut w = windows();
    w.merge(&report("a", 1, 0, &[(ipk(1), reqs(4))]), t(1));
    w.merge(
        &report("a", 2, 31, &[(ipk(1), reqs(6)), (ipk(2), reqs(1))]),
        t(32),
    );
    let series = w.requests_between(&[ipk(1)], t(0), t(60));
    assert_eq!(series, vec![(t(0), 4), (t(30), 6)]);
    assert_eq!(w.requests_between(&[ipk(1)], t(0), t(30)), vec![(t(0), 4)]);
}

#[test]
fn window_set_routes_by_namespace() {
    let mut set = WindowSet::new(WindowConfig::default());
    let mut r = report("a", 1, 0, &[(ipk(1), reqs(1))]);
    set.merge(&r, t(1));
    r.sidecar.namespace = "other".into();
    set.merge(&r, t(1));
    assert_eq!(set.namespaces().count(), 2);
    assert_eq!(set.get("shop").unwrap().short(t(1)).totals.requests, 1);
}

/// A seeded xorshift generator: each call draws a number in `0..m`.
fn draws(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |m| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    }
}

/// Views reuse the sum of their closed slices; whatever arrives (in order, late into a
/// closed slice, a little ahead of the clock, into a slot being recycled), every view equals
/// the one merged afresh from the slices.
#[test]
fn kept_closed_sums_always_equal_a_fresh_merge() {
    let mut w = windows();
    let mut next = draws(0x2545_F491_4F6C_DD1D);
    let mut now = 0i64;
    for seq in 1..=3000u64 {
        now += 1 + next(40) as i64;
        // Mostly current reports; some late by up to 2 h, some up to 20 s ahead.
        let start = match next(10) {
            0 => now - next(7200) as i64,
            1 => now + next(20) as i64,
            _ => now,
        };
        let clients: Vec<_> = (0..1 + next(4))
            .map(|_| (ipk(next(30) as u32), reqs(1 + next(5) as u32)))
            .collect();
        w.merge(&report("a", seq, start.max(0), &clients), t(now));
        if seq % 7 == 0 {
            for (ring, n) in [(&w.short, 10), (&w.short, 3), (&w.long, 96), (&w.long, 4)] {
                assert_eq!(
                    ring.view_last(n, t(now), None, &w.keys),
                    ring.view_uncached(n, t(now), None, &w.keys),
                    "report {seq}, view of {n} slices at {now}"
                );
            }
        }
    }
    assert!(
        w.long(t(now)).totals.requests > 0,
        "the long view holds traffic"
    );
}

/// A report a little ahead of the clock opens the next slice in the slot of the oldest one
/// while a kept sum still counts that oldest slice: the sum is dropped, as the slice is.
#[test]
fn a_recycled_slot_drops_the_kept_sum_that_counted_it() {
    let mut w = windows();
    w.merge(&report("a", 1, 5, &[(ipk(1), reqs(10))]), t(6));
    w.merge(&report("a", 2, 200, &[(ipk(2), reqs(3))]), t(201));
    let before = w.short(t(295));
    assert_eq!(before.totals.requests, 13, "slice 0 is still in the window");
    // Starts at 305 s (slice 10, which takes slice 0's slot), received at 295 s.
    w.merge(&report("a", 3, 305, &[(ipk(3), reqs(1))]), t(295));
    let baseline = w.long.failing_median(t(295), &w.keys);
    assert_eq!(
        w.short(t(295)),
        w.short.view_uncached(10, t(295), baseline, &w.keys)
    );
    assert_eq!(w.short(t(295)).totals.requests, 3, "slice 0 was recycled");
}

/// Closed slices are frozen into sorted arrays (and thawed by a late report): every read
/// — views of any length, incident series, attributes, snapshots — gives what windows that
/// never freeze give, whatever the order reports arrive in.
#[test]
fn frozen_slices_read_as_the_unfrozen_ones() {
    let cfg = WindowConfig::default();
    let (mut frozen, mut plain) = (Windows::new(&cfg), Windows::unfrozen(&cfg));
    let mut next = draws(0x9E37_79B9_7F4A_7C15);
    let mut now = 0i64;
    for seq in 1..=2500u64 {
        now += 1 + next(60) as i64;
        let start = match next(8) {
            0 => now - next(5 * 3600) as i64,
            1 => now + next(20) as i64,
            _ => now,
        };
        let clients: Vec<_> = (0..1 + next(6))
            .map(|_| (ipk(next(40) as u32), reqs(1 + next(5) as u32)))
            .collect();
        let mut r = report("a", seq, start.max(0), &clients);
        if next(3) == 0 {
            r.attributes.push(AttrEntry {
                client: clients[0].0,
                dim: AttrDim::Path,
                value: format!("/p{}", next(5)),
                count: 1 + next(3),
            });
        }
        assert_eq!(
            frozen.merge(&r, t(now)),
            plain.merge(&r, t(now)),
            "report {seq}"
        );
        if seq % 11 == 0 {
            let at = t(now);
            assert_eq!(
                frozen.short(at),
                plain.short(at),
                "short view, report {seq}"
            );
            assert_eq!(frozen.long(at), plain.long(at), "long view, report {seq}");
            let hour = SignedDuration::from_hours(1);
            assert_eq!(frozen.view(hour, at), plain.view(hour, at));
            let some = [ipk(1), ipk(2), ipk(3)];
            assert_eq!(
                frozen.requests_between(&some, t(now - 300), at),
                plain.requests_between(&some, t(now - 300), at)
            );
            assert_eq!(
                frozen.attributes(&some, at, 3),
                plain.attributes(&some, at, 3)
            );
        }
    }
    assert!(
        frozen
            .long
            .slots
            .iter()
            .flatten()
            .any(|s| s.clients.is_frozen()),
        "closed slices were frozen"
    );
    assert!(
        frozen.memory().slices < plain.memory().slices,
        "frozen slices take less memory: {:?} vs {:?}",
        frozen.memory(),
        plain.memory()
    );
    assert_eq!(frozen.snapshot(t(now)), plain.snapshot(t(now)));
    let restored = Windows::restore(&cfg, &frozen.snapshot(t(now)));
    assert_eq!(restored.long(t(now)), plain.long(t(now)));
    assert!(
        restored
            .long
            .slots
            .iter()
            .flatten()
            .any(|s| s.clients.is_frozen())
    );
}

/// A hostile sender naming a new pod in every report cannot grow a namespace's per-pod state
/// beyond `max_pods`: the pod silent for longest is forgotten (its counts stay), and the
/// pods still remembered keep their duplicate detection.
#[test]
fn made_up_pod_names_are_bounded() {
    let cfg = WindowConfig {
        max_pods: 3,
        ..WindowConfig::default()
    };
    let mut w = Windows::new(&cfg);
    for i in 0..10 {
        let r = report(&format!("fake-{i}"), 1, i, &[(ipk(1), reqs(1))]);
        assert_eq!(w.merge(&r, t(i + 1)), MergeOutcome::Accepted);
    }
    assert_eq!(w.seen.len(), 3);
    assert_eq!(w.last_seq.len(), 3);
    assert_eq!(w.stats().pods_forgotten, 7);
    assert!(w.seen.contains_key("fake-9") && !w.seen.contains_key("fake-0"));
    let again = report("fake-9", 1, 9, &[(ipk(1), reqs(1))]);
    assert_eq!(w.merge(&again, t(11)), MergeOutcome::Duplicate);
    assert_eq!(
        w.short(t(11)).totals.requests,
        10,
        "every report counted once"
    );
}

/// Over its memory budget, the set drops the oldest slices of the namespace holding the
/// most, long ones first, and never a namespace's current slice: a small namespace keeps
/// all it has and the big one still sees its newest traffic.
#[test]
fn a_memory_budget_takes_the_oldest_slices_of_the_biggest_namespace_first() {
    let mut set = WindowSet::new(WindowConfig::default());
    let many: Vec<(ClientKey, ClientCounts)> = (0..2000).map(|i| (ipk(i), reqs(1))).collect();
    // "shop": three long slices (15 min apart) of 2000 clients; "small": one client.
    for (seq, start) in [(1, 0), (2, 900), (3, 1800)] {
        set.merge(&report("a", seq, start, &many), t(start + 1));
    }
    let mut small = report("a", 1, 1800, &[(ipk(1), reqs(5))]);
    small.sidecar.namespace = "small".into();
    set.merge(&small, t(1801));
    let small_bytes = set.get("small").unwrap().heap_bytes();
    let before = set.heap_bytes();
    assert_eq!(set.shrink_to(before), 0, "within budget: nothing dropped");
    let dropped = set.shrink_to(before * 2 / 3);
    assert!(
        (1..=3).contains(&dropped),
        "over budget: long slices dropped ({dropped})"
    );
    assert!(set.heap_bytes() <= before * 2 / 3);
    assert_eq!(set.get("small").unwrap().heap_bytes(), small_bytes);
    let shop = set.get("shop").unwrap();
    assert_eq!(
        shop.long(t(1801)).totals.requests,
        2000 * (3 - dropped as u64),
        "the oldest long slices went first"
    );
    if dropped < 3 {
        // What is left is the newest: the last 15 minutes still hold their 2000 requests.
        let last = shop.view(SignedDuration::from_mins(15), t(1801));
        assert_eq!(last.totals.requests, 2000);
    }
    assert_eq!(
        shop.short(t(1801)).totals.requests,
        2000,
        "the current slice stays"
    );
    // A budget of nothing leaves each namespace its current slice.
    set.shrink_to(0);
    assert_eq!(
        set.get("shop").unwrap().short(t(1801)).totals.requests,
        2000
    );
    assert_eq!(set.get("small").unwrap().short(t(1801)).totals.requests, 5);
}

/// Over its budget because of the view sums an evaluation kept, the set drops those caches
/// and keeps every slice: the history detection needs is not traded for what the next view
/// would sum again.
#[test]
fn a_memory_budget_drops_kept_view_sums_before_any_slice() {
    let mut set = WindowSet::new(WindowConfig::default());
    let many: Vec<(ClientKey, ClientCounts)> = (0..2000).map(|i| (ipk(i), reqs(1))).collect();
    for (seq, start) in [(1, 0), (2, 30), (3, 60), (4, 900), (5, 1800)] {
        set.merge(&report("a", seq, start, &many), t(start + 1));
    }
    let now = t(1801);
    let shop = set.get("shop").unwrap();
    let (long, short) = (shop.long(now), shop.short(now));
    let kept = shop.memory().views;
    assert!(kept > 0, "views keep the sums of closed slices");
    let before = set.heap_bytes();
    // A budget the kept sums alone are over.
    assert_eq!(set.shrink_to(before - kept / 2), 0, "no slice dropped");
    let shop = set.get("shop").unwrap();
    assert_eq!(shop.memory().views, 0, "the kept sums went");
    assert!(set.heap_bytes() <= before - kept / 2);
    assert_eq!(shop.long(now), long, "the long view is whole");
    assert_eq!(shop.short(now), short, "the short view is whole");
}

/// Clients of every kind, as a busy namespace has them.
fn mixed_clients(n: u32) -> Vec<(ClientKey, ClientCounts)> {
    (0..n)
        .map(|i| {
            let key = match i % 4 {
                0 => ipk(i),
                1 => ClientKey::api_key(&format!("key-{i}")),
                2 => ClientKey::user_agent(&format!("agent/{i}")),
                _ => ClientKey::prefix_of(format!("2001:db8:{i:x}::1").parse().unwrap(), 64),
            };
            (key, reqs(i + 1))
        })
        .collect()
}

/// A closed slice holds a client in 72 bytes (a 16-byte id and its counts) whatever its
/// kind, and a client's full key is held once per namespace, not once per slice: what
/// `WindowMemory` reports is what the tables hold.
#[test]
fn a_closed_slice_holds_a_client_in_72_bytes_and_its_key_once() {
    assert_eq!(size_of::<(ClientId, ClientCounts)>(), 72);
    let mut w = windows();
    let clients = mixed_clients(4000);
    // 8 long slices of the same clients, then one more slice that closes them all.
    for s in 0..9 {
        let r = report("a", s + 1, s as i64 * 900, &clients);
        assert_eq!(w.merge(&r, t(s as i64 * 900 + 1)), MergeOutcome::Accepted);
    }
    let now = t(8 * 900 + 1);
    let frozen: usize = w
        .long
        .slots
        .iter()
        .flatten()
        .filter(|s| s.clients.is_frozen())
        .map(|s| s.clients.heap_bytes())
        .sum();
    assert_eq!(frozen, 8 * 4000 * 72, "8 closed slices of 4000 clients");
    assert_eq!(w.keys.len(), 3000, "the non-IP keys, once each");
    let keys = w.memory().keys;
    assert!(
        keys > 0 && keys <= 3000 * 2 * 57 + 16,
        "{keys} B for 3000 keys"
    );
    // And every client reads back as itself, with its counts summed over the slices.
    let long = w.long(now);
    for (key, counts) in &clients {
        assert_eq!(
            long.clients[key].totals.requests,
            9 * u64::from(counts.requests),
            "{key}"
        );
    }
}

/// A hostile sidecar names keys aimed at other clients' addresses with the public counter
/// words (a /128 prefix whose word is a global address, a user-agent digest whose word is a
/// unique-local one): each stays a client of its own, and the addresses keep their counts,
/// before and after, in every view and in a snapshot.
#[test]
fn a_key_named_to_aim_at_an_address_cannot_take_its_counts() {
    use crate::client_id::{PREFIX_TAG, ip_word, word_of};
    use crate::key::KeyHash;
    use std::net::{IpAddr, Ipv6Addr};

    let global: IpAddr = "2001:db8::40".parse().unwrap();
    let local: IpAddr = "fd00::40".parse().unwrap();
    let prefix =
        ipnet::Ipv6Net::new(Ipv6Addr::from_bits(ip_word(global) ^ PREFIX_TAG ^ 128), 128).unwrap();
    let prefix = ClientKey::IpPrefix(ipnet::IpNet::V6(prefix));
    let mut digest = [0u8; 32];
    digest[..16].copy_from_slice(&(ip_word(local) << 2).to_le_bytes());
    let agent = ClientKey::UserAgent(KeyHash(digest));
    let (global, local) = (ClientKey::Ip(global), ClientKey::Ip(local));
    assert_eq!(
        word_of(&prefix),
        word_of(&global),
        "aimed with the public word"
    );
    assert_eq!(
        word_of(&agent),
        word_of(&local),
        "aimed with the public word"
    );

    let mut w = windows();
    let victims = [(global, reqs(50)), (local, reqs(50))];
    w.merge(&report("a", 1, 0, &victims), t(1));
    w.merge(
        &report("evil", 1, 1, &[(prefix, reqs(7)), (agent, reqs(7))]),
        t(2),
    );
    w.merge(&report("a", 2, 2, &victims), t(3));
    let restored = Windows::restore(&WindowConfig::default(), &w.snapshot(t(3)));
    for w in [&w, &restored] {
        for v in [w.short(t(3)), w.long(t(3))] {
            assert_eq!(v.clients[&global].totals.requests, 100);
            assert_eq!(v.clients[&local].totals.requests, 100);
            assert_eq!(v.clients[&prefix].totals.requests, 7);
            assert_eq!(v.clients[&agent].totals.requests, 7);
            assert_eq!(v.totals.requests, 214);
        }
        assert_eq!(
            w.requests_between(&[global], t(0), t(30)),
            vec![(t(0), 100)]
        );
    }
}

/// Keys of clients whose slices left both rings are swept out as new clients arrive: the
/// table does not grow with every client ever seen.
#[test]
fn keys_of_clients_gone_from_every_slice_are_swept_out() {
    let mut w = windows();
    let slack = KeyTable::SWEEP_SLACK as u32;
    // A new set of API-key clients every long slice for 3 days: 24 h of them are live.
    let per_slice = slack / 8;
    let mut most = 0;
    for s in 0..3 * 96u32 {
        let clients: Vec<_> = (0..per_slice)
            .map(|i| (ClientKey::api_key(&format!("{s}-{i}")), reqs(1)))
            .collect();
        let at = i64::from(s) * 900;
        w.merge(&report("a", u64::from(s) + 1, at, &clients), t(at + 1));
        most = most.max(w.keys.len());
    }
    let live = 96 * per_slice as usize;
    assert!(
        most <= 2 * live + slack as usize,
        "held {most} keys for {live} live ones"
    );
    // Every live client still reads back as itself.
    let now = t(i64::from(3 * 96 - 1) * 900 + 1);
    let long = w.long(now);
    assert_eq!(long.clients.len(), live);
    assert!(
        long.clients
            .keys()
            .all(|k| k.kind() == ClientKeyKind::ApiKey)
    );
}

/// A snapshot of clients of every kind restores them as themselves (the snapshot carries
/// full keys, not ids).
#[test]
fn a_snapshot_of_every_kind_of_client_restores_each_as_itself() {
    let mut w = windows();
    let clients = mixed_clients(40);
    let mut r = report("a", 1, 0, &clients);
    for (key, _) in &clients {
        r.attributes.push(AttrEntry {
            client: *key,
            dim: AttrDim::Path,
            value: "/x".into(),
            count: 2,
        });
    }
    w.merge(&r, t(1));
    let snap = w.snapshot(t(1));
    assert!(snap.long[0].clients.iter().any(|c| c.key == clients[1].0));
    let restored = Windows::restore(&WindowConfig::default(), &snap);
    assert_eq!(restored.long(t(1)), w.long(t(1)));
    assert_eq!(restored.keys.len(), 30);
    let keys: Vec<ClientKey> = clients.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        restored.attributes(&keys, t(1), 5),
        w.attributes(&keys, t(1), 5)
    );
    assert_eq!(restored.snapshot(t(1)), snap);
}

/// A hostile sidecar sends new keys that evict each other from a full slice, in a namespace
/// whose slices hold many address clients: sweeping the key table reads every entry, yet
/// the sweeps read at most 16 entries per key added (plus one sweep).
#[test]
fn sweeping_keys_costs_at_most_16_reads_per_key_added() {
    let cfg = WindowConfig {
        max_clients: 2000,
        ..Default::default()
    };
    let mut w = Windows::new(&cfg);
    let ips: Vec<_> = (0..2000).map(|i| (ipk(i), reqs(5))).collect();
    for s in 0..90u32 {
        let at = i64::from(s) * 900;
        w.merge(&report("a", u64::from(s) + 1, at, &ips), t(at + 1));
    }
    let held = w.held_ids();
    assert!(held >= 90 * 2000, "{held}");
    let (start, sweeps_before) = (90 * 900, w.keys.sweeps());
    let mut added = 0;
    for r in 0..50u32 {
        let keys: Vec<_> = (0..2000)
            .map(|i| (ClientKey::api_key(&format!("{r}-{i}")), reqs(1)))
            .collect();
        added += keys.len();
        let at = start + i64::from(r);
        w.merge(&report("evil", u64::from(r) + 1, at, &keys), t(at + 1));
    }
    let sweeps = (w.keys.sweeps() - sweeps_before) as usize;
    assert!(sweeps >= 1, "the dead keys were swept");
    assert!(
        sweeps <= 1 + 16 * added / held,
        "{sweeps} sweeps of {held}+ entries for {added} keys added"
    );
    // What the table holds stays bounded: the live keys (at most the current slices'
    // 2000 each), twice, plus the larger slack.
    let bound = 2 * 2 * 2000 + (held + 4 * 2000) / 16 + KeyTable::SWEEP_SLACK;
    assert!(w.keys.len() <= bound, "{} keys held", w.keys.len());
}
