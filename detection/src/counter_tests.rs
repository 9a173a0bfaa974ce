#![allow(clippy::unwrap_used)]

use super::*;
use crate::key::KeyHash;

fn id() -> SidecarId {
    SidecarId {
        pod: "api-0".into(),
        workload: "api".into(),
        namespace: "shop".into(),
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::from(0xC633_6400 + n))
}

fn entry<'r>(r: &'r Report, key: &ClientKey) -> &'r ClientCounts {
    &r.clients
        .iter()
        .find(|e| &e.key == key)
        .expect("client in report")
        .counts
}

#[test]
fn counts_upstream_errors_but_not_own_denials() {
    let mut c = Counter::new(id(), &CounterConfig::default(), t(0));
    let mut f = RequestFacts::new(ip(1), 403);
    c.record(&f); // the app's 403: evidence
    f.responder = Responder::Sidecar;
    for _ in 0..5 {
        c.record(&f); // the sidecar's own denials: not evidence
    }
    f.responder = Responder::Upstream;
    f.status = 500;
    c.record(&f);
    let r = c.take_report(t(1));
    let e = entry(&r, &ClientKey::Ip(ip(1)));
    assert_eq!((e.requests, e.errors, e.forbidden, e.denied), (7, 2, 1, 5));
    assert_eq!(
        (r.totals.errors, r.totals.forbidden, r.totals.denied),
        (2, 1, 5)
    );
}

/// A request its client left before the answer counts as a request the app was asked, with
/// the client's token and user agent, and as nothing the app answered.
#[test]
fn counts_a_request_left_unanswered_as_asked_and_never_as_an_answer() {
    let cfg = CounterConfig {
        attr_sample: 1,
        ..Default::default()
    };
    let mut c = Counter::new(id(), &cfg, t(0));
    let mut f = RequestFacts::new(ip(1), 499);
    f.responder = Responder::Client;
    f.bytes = 1_000;
    f.token_endpoint = true;
    f.access_token = Some(KeyHash::of(b"token"));
    f.user_agent = Some(KeyHash::of(b"curl"));
    for _ in 0..3 {
        c.record(&f);
    }
    let r = c.take_report(t(1));
    let e = entry(&r, &ClientKey::Ip(ip(1)));
    assert_eq!((e.requests, e.denied), (3, 0), "asked of the app");
    assert_eq!(
        (e.errors, e.forbidden, e.bytes, e.token_calls),
        (0, 0, 0, 0)
    );
    assert_eq!((e.tokens.estimate(), e.user_agents.distinct()), (1, 1));
    assert_eq!(
        (
            r.totals.requests,
            r.totals.errors,
            r.totals.bytes,
            r.totals.token_calls
        ),
        (3, 0, 0, 0)
    );
    let code = r
        .attributes
        .iter()
        .find(|a| a.dim == AttrDim::ResponseCode)
        .map(|a| (a.value.as_str(), a.count));
    assert_eq!(code, Some(("499", 3)), "the status incidents show");
}

#[test]
fn counts_bytes_tokens_and_user_agents() {
    let cfg = CounterConfig {
        key_kinds: vec![ClientKeyKind::Ip, ClientKeyKind::ApiKey],
        ..Default::default()
    };
    let mut c = Counter::new(id(), &cfg, t(0));
    let key = KeyHash::of(b"k");
    for i in 0..6u8 {
        let mut f = RequestFacts::new(ip(1), 200);
        f.bytes = 100;
        f.token_endpoint = i % 2 == 0;
        f.api_key = Some(key);
        f.user_agent = Some(KeyHash::of(&[i % 2]));
        c.record(&f);
    }
    let r = c.take_report(t(1));
    let e = entry(&r, &ClientKey::Ip(ip(1)));
    assert_eq!((e.requests, e.bytes, e.token_calls), (6, 600, 3));
    assert_eq!(e.user_agents.distinct(), 2);
    assert_eq!(entry(&r, &ClientKey::ApiKey(key)).requests, 6);
    assert_eq!(r.clients.len(), 2);
}

#[test]
fn reports_are_sequenced_and_drain_the_slice() {
    let mut c = Counter::new(id(), &CounterConfig::default(), t(0));
    c.record(&RequestFacts::new(ip(1), 200));
    let r1 = c.take_report(t(1));
    let r2 = c.take_report(t(2));
    assert_eq!((r1.seq, r2.seq), (1, 2));
    assert_eq!(
        (r1.start, r1.end, r2.start, r2.end),
        (t(0), t(1), t(1), t(2))
    );
    assert_eq!(r1.totals.requests, 1);
    assert!(r2.clients.is_empty() && r2.totals.requests == 0);
}

#[test]
fn heavy_hitter_bound_holds_and_keeps_the_flooder() {
    let cfg = CounterConfig {
        max_clients: 128,
        ..Default::default()
    };
    let mut c = Counter::new(id(), &cfg, t(0));
    for i in 0..50_000u32 {
        c.record(&RequestFacts::new(ip(1_000 + i), 200));
        c.record(&RequestFacts::new(ip(1), 200));
        assert!(c.tracked() <= 128);
    }
    let r = c.take_report(t(1));
    assert!(r.clients.len() <= 128);
    assert_eq!(r.totals.requests, 100_000, "totals stay exact");
    assert!(r.evicted > 0);
    let flooder = entry(&r, &ClientKey::Ip(ip(1)));
    assert!(flooder.requests <= 50_000);
    assert!(u64::from(flooder.requests) + u64::from(flooder.overcount) >= 50_000);
    assert!(flooder.requests >= 49_000, "{flooder:?}");
}

#[test]
fn tracked_clients_fit_the_memory_budget() {
    // Map entry + 1 control byte, at hashbrown's worst load factor (7/8): ≤ 128 B.
    let per_client = |entry: usize| (entry + 1) * 8 / 7;
    assert!(per_client(size_of::<(u128, ClientCounts)>()) <= 104);
    assert!(per_client(size_of::<([u64; 2], HashedSlot)>()) <= 128);
}

#[test]
fn ipv6_and_ipv4_clients_round_trip_through_the_map() {
    let mut c = Counter::new(id(), &CounterConfig::default(), t(0));
    let v6: IpAddr = "2001:db8::7".parse().unwrap();
    c.record(&RequestFacts::new(v6, 200));
    c.record(&RequestFacts::new(ip(1), 200));
    let r = c.take_report(t(1));
    assert_eq!(entry(&r, &ClientKey::Ip(v6)).requests, 1);
    assert_eq!(entry(&r, &ClientKey::Ip(ip(1))).requests, 1);
}

#[test]
fn attributes_are_sampled_and_scaled() {
    let cfg = CounterConfig {
        attr_sample: 4,
        ..Default::default()
    };
    let mut c = Counter::new(id(), &cfg, t(0));
    for _ in 0..40 {
        let mut f = RequestFacts::new(ip(1), 404);
        f.attrs.path = Some("/items/1");
        f.attrs.region = Some("NL");
        c.record(&f);
    }
    let r = c.take_report(t(1));
    let count = |dim, value: &str| {
        r.attributes
            .iter()
            .find(|a| a.dim == dim && a.value == value)
            .map(|a| a.count)
    };
    assert_eq!(count(AttrDim::Path, "/items/1"), Some(40));
    assert_eq!(count(AttrDim::Region, "NL"), Some(40));
    assert_eq!(count(AttrDim::Workload, "api"), Some(40));
    assert_eq!(count(AttrDim::ResponseCode, "404"), Some(40));
}

#[test]
fn counts_sequential_requests_per_client_across_reports() {
    let mut c = Counter::new(id(), &CounterConfig::default(), t(0));
    let walk = |n: u64| crate::sequence::PathShape::of(&format!("/items/{n}"), None);
    let mut f = RequestFacts::new(ip(1), 200);
    let mut g = RequestFacts::new(ip(2), 200);
    for n in 1..=5 {
        f.shape = walk(n);
        c.record(&f);
        // Another client in between does not break the first one's walk.
        g.shape = walk(n * 1000);
        c.record(&g);
    }
    let r = c.take_report(t(1));
    assert_eq!(entry(&r, &ClientKey::Ip(ip(1))).sequential, 4);
    assert_eq!(entry(&r, &ClientKey::Ip(ip(2))).sequential, 0);
    f.shape = walk(6);
    c.record(&f);
    let r = c.take_report(t(2));
    assert_eq!(
        entry(&r, &ClientKey::Ip(ip(1))).sequential,
        1,
        "the walk continues in the next slice"
    );
}

#[test]
fn key_kinds_switch_between_slices_and_every_kind_gets_attributes() {
    let cfg = CounterConfig {
        attr_sample: 1,
        ..Default::default()
    };
    let mut c = Counter::new(id(), &cfg, t(0));
    let key = KeyHash::of(b"key-1");
    // One API key from three addresses with two user agents.
    let send = |c: &mut Counter| {
        for (n, ua) in [(1, "curl/8"), (2, "curl/8"), (3, "python-requests/2")] {
            let mut f = RequestFacts::new(ip(n), 401);
            f.api_key = Some(key);
            f.user_agent = Some(KeyHash::of(ua.as_bytes()));
            f.attrs.user_agent = Some(ua);
            f.attrs.path = Some("/login");
            c.record(&f);
        }
    };
    send(&mut c);
    let r = c.take_report(t(1));
    assert_eq!(r.clients.len(), 3, "IP only by default: {:?}", r.clients);
    assert!(r.clients.iter().all(|e| e.key.kind() == ClientKeyKind::Ip));

    c.set_key_kinds(&[ClientKeyKind::ApiKey]);
    assert_eq!(
        c.key_kinds(),
        [ClientKeyKind::Ip, ClientKeyKind::ApiKey],
        "the primary kind stays"
    );
    send(&mut c);
    let r = c.take_report(t(2));
    let api = ClientKey::ApiKey(key);
    assert_eq!(entry(&r, &api).requests, 3);
    assert_eq!(entry(&r, &api).errors, 3);
    let of = |client: &ClientKey, dim| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = r
            .attributes
            .iter()
            .filter(|a| &a.client == client && a.dim == dim)
            .map(|a| (a.value.clone(), a.count))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        of(&api, AttrDim::Ip),
        [
            ("198.51.100.1".to_owned(), 1),
            ("198.51.100.2".to_owned(), 1),
            ("198.51.100.3".to_owned(), 1)
        ]
    );
    assert_eq!(
        of(&api, AttrDim::UserAgent),
        [
            ("curl/8".to_owned(), 2),
            ("python-requests/2".to_owned(), 1)
        ]
    );
    assert_eq!(of(&api, AttrDim::Path), [("/login".to_owned(), 3)]);
    let short = format!("sha256:{}", &key.to_string()["sha256:".len()..][..16]);
    assert_eq!(of(&api, AttrDim::AppKey), [(short.clone(), 3)]);
    // An IP client gets its app keys and user agents, not itself as an address.
    let one = ClientKey::Ip(ip(1));
    assert_eq!(of(&one, AttrDim::AppKey), [(short, 1)]);
    assert!(of(&one, AttrDim::Ip).is_empty());

    c.set_key_kinds(&[]);
    send(&mut c);
    let r = c.take_report(t(3));
    assert!(
        r.clients.iter().all(|e| e.key.kind() == ClientKeyKind::Ip),
        "API keys no longer counted"
    );
}
