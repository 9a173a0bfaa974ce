//! Connection slots of a listener: at most `total` connections open at once, of which one
//! peer address holds at most `per_peer`, so that one client holding connections open (a
//! slowloris) cannot take every slot from the others. A slot is given back when dropped. The
//! per-peer table holds only peers with an open connection: at most `total` entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Every slot is taken.
    #[error("every connection slot is taken")]
    Full,
    /// This peer holds its share already.
    #[error("this peer holds its share of the connection slots")]
    PeerFull,
}

impl Refused {
    /// Short fixed name, for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Full => "Full",
            Self::PeerFull => "PeerFull",
        }
    }
}

/// The slots of one listener.
#[derive(Debug, Clone)]
pub struct Slots(Arc<Mutex<Table>>);

#[derive(Debug)]
struct Table {
    total: usize,
    per_peer: usize,
    open: usize,
    by_peer: HashMap<IpAddr, usize>,
}

impl Slots {
    /// `total` slots, at most `per_peer` (at least 1) for one peer address.
    pub fn new(total: usize, per_peer: usize) -> Self {
        Self(Arc::new(Mutex::new(Table {
            total,
            per_peer: per_peer.max(1),
            open: 0,
            by_peer: HashMap::new(),
        })))
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `peer`, or why there is none.
    pub fn take(&self, peer: IpAddr) -> Result<Slot, Refused> {
        let mut t = self.table();
        if t.open >= t.total {
            return Err(Refused::Full);
        }
        let per_peer = t.per_peer;
        let held = t.by_peer.entry(peer).or_default();
        if *held >= per_peer {
            return Err(Refused::PeerFull);
        }
        *held += 1;
        t.open += 1;
        Ok(Slot {
            slots: self.clone(),
            peer,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table().open
    }
}

/// One taken slot; given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Slots,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.table();
        t.open -= 1;
        if let Some(held) = t.by_peer.get_mut(&self.peer) {
            *held -= 1;
            if *held == 0 {
                t.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn one_peer_gets_its_share_and_the_others_the_rest() {
        let slots = Slots::new(4, 2);
        let a: Vec<Slot> = (0..2)
            .map(|_| slots.take(ip("10.0.0.1")).expect("a"))
            .collect();
        assert_eq!(slots.take(ip("10.0.0.1")).err(), Some(Refused::PeerFull));
        let b1 = slots.take(ip("10.0.0.2")).expect("b1");
        let b2 = slots.take(ip("10.0.0.2")).expect("b2");
        assert_eq!(slots.take(ip("10.0.0.3")).err(), Some(Refused::Full));
        drop(b2);
        let c = slots
            .take(ip("10.0.0.3"))
            .expect("a slot given back is taken again");
        assert_eq!(slots.open(), 4);
        drop((a, b1, c));
        assert_eq!(slots.open(), 0);
        assert!(
            slots.table().by_peer.is_empty(),
            "no entry outlives its connections"
        );
    }

    #[test]
    fn a_peer_share_is_at_least_one() {
        let slots = Slots::new(1, 0);
        let only = slots.take(ip("::1")).expect("one");
        assert_eq!(slots.take(ip("::2")).err(), Some(Refused::Full));
        drop(only);
        assert!(slots.take(ip("::2")).is_ok());
    }
}
