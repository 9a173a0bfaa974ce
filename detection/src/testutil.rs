//! Helpers shared by the unit tests: a virtual clock and report builders.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use jiff::Timestamp;

use crate::key::ClientKey;
use crate::report::{ClientEntry, REPORT_VERSION, Report, SidecarId};
use crate::stats::{ClientCounts, Totals};

/// Virtual time: `s` seconds after a fixed origin (aligned to 24 h, 15 min and 30 s).
pub fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_057_600 + s).unwrap()
}

/// A TEST-NET-2 address.
pub fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC633_6400 + n))
}

/// The IP key of [`ip`].
pub fn ipk(n: u32) -> ClientKey {
    ClientKey::Ip(ip(n))
}

/// Counts with `requests` requests and nothing else.
pub fn reqs(requests: u32) -> ClientCounts {
    ClientCounts {
        requests,
        ..Default::default()
    }
}

/// A report of `pod` in namespace `shop` covering `[start, start + 1 s)`; totals are the
/// sum of the clients.
pub fn report(pod: &str, seq: u64, start: i64, clients: &[(ClientKey, ClientCounts)]) -> Report {
    let mut totals = Totals::default();
    for (_, c) in clients {
        totals.add_client(c);
    }
    Report {
        version: REPORT_VERSION,
        sidecar: SidecarId {
            pod: pod.into(),
            workload: "api".into(),
            namespace: "shop".into(),
        },
        seq,
        start: t(start),
        end: t(start + 1),
        totals,
        clients: clients
            .iter()
            .map(|(key, counts)| ClientEntry {
                key: *key,
                counts: *counts,
            })
            .collect(),
        attributes: vec![],
        evicted: 0,
        actions: Vec::new(),
        generation: None,
        samples: Vec::new(),
    }
}
