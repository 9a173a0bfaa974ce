//! Sequential requests, the evidence of the API Scraper rule: a client walking identifiers
//! (`/items/1`, `/items/2`, … or `?page=1`, `?page=2`, …).
//!
//! A request's [`PathShape`] is its path with every numeric segment (1 to 18 ASCII digits)
//! replaced by a placeholder, hashed, plus its *number*: the value of a numeric `page` or
//! `id` query parameter when there is one, else the last numeric path segment. A request
//! without a number has no shape. A request is *sequential* when the same client's previous
//! request had the same shape and a number at most [`MAX_STEP`] away, but not the same one
//! (`1 ≤ |Δ| ≤ 10`): refreshing a page is not walking.
//!
//! [`PathShape::of`] reads the path once and allocates nothing (the segments are hashed as
//! they are read); [`SeqTable`] keeps the previous shape of each client in a fixed table.

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;

/// Largest step between two identifiers of a sequential walk. Enumerations that skip a
/// few deleted or hidden ids still count; a client browsing a catalogue of `n` ids at
/// random lands this close to its previous id with probability about `20 / n`.
pub const MAX_STEP: u64 = 10;

/// Longest digit run read as a number (fits a `u64`); longer runs are literal segments.
const MAX_DIGITS: usize = 18;

/// Query parameters whose numeric value is the request's number (`offset` is not one:
/// its steps are the page size, not 1).
const NUMBER_PARAMS: [&str; 2] = ["page", "id"];

/// The shape of a request path and its number (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathShape {
    /// Hash of the path with numeric segments replaced (and of the query parameter name
    /// when the number came from the query). Never 0.
    pub shape: u64,
    /// The identifier the client is walking.
    pub number: u64,
}

impl PathShape {
    /// The shape of `path` (without the query) and `query` (after the `?`); `None` when
    /// the request carries no number.
    pub fn of(path: &str, query: Option<&str>) -> Option<Self> {
        let mut h = FixedState::default().build_hasher();
        let mut last = None;
        for seg in path.split('/') {
            match number(seg) {
                Some(n) => {
                    h.write_u8(0);
                    last = Some(n);
                }
                None => h.write(seg.as_bytes()),
            }
            h.write_u8(b'/');
        }
        if let Some((name, n)) = query.and_then(query_number) {
            h.write_u8(b'?');
            h.write(name.as_bytes());
            last = Some(n);
        }
        Some(Self {
            shape: h.finish().max(1),
            number: last?,
        })
    }

    /// Whether `self` continues a walk whose previous step was `prev`.
    pub fn follows(&self, prev: &PathShape) -> bool {
        self.shape == prev.shape && (1..=MAX_STEP).contains(&self.number.abs_diff(prev.number))
    }
}

/// The value of an all-digit segment.
fn number(seg: &str) -> Option<u64> {
    let digits =
        !seg.is_empty() && seg.len() <= MAX_DIGITS && seg.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| seg.parse().ok()).flatten()
}

/// The first `page=` or `id=` parameter with a numeric value.
fn query_number(query: &str) -> Option<(&'static str, u64)> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        let name = NUMBER_PARAMS.into_iter().find(|p| *p == name)?;
        Some((name, number(value)?))
    })
}

/// One client's previous request.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    client: u128,
    /// 0: the previous request had no shape (or the slot is empty).
    shape: u64,
    number: u64,
}

/// Each client's previous [`PathShape`], in a fixed direct-mapped table: no allocation after
/// construction, bounded memory (32 bytes a slot). Two clients that share a slot overwrite
/// each other's state, which can only hide sequential requests, never invent them. The slot
/// hash has a fixed seed, so counts are reproducible: a client that picks addresses sharing a
/// slot only hides its own walk, which interleaving other requests does as well.
#[derive(Debug)]
pub struct SeqTable {
    slots: Box<[Slot]>,
    mask: usize,
    hasher: FixedState,
}

impl SeqTable {
    /// Heap bytes held (fixed at construction).
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * size_of::<Slot>()
    }

    /// A table of at least `slots` slots (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(2).next_power_of_two();
        Self {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
            hasher: FixedState::with_seed(0x5EC0_E4CE),
        }
    }

    /// Records `client`'s request of shape `shape`; whether it was sequential.
    #[inline]
    pub fn step(&mut self, client: u128, shape: Option<PathShape>) -> bool {
        let i = (self.hasher.hash_one(client) as usize) & self.mask;
        let slot = &mut self.slots[i];
        let prev = (slot.client == client && slot.shape != 0).then_some(PathShape {
            shape: slot.shape,
            number: slot.number,
        });
        let (shape, number) = shape.map_or((0, 0), |s| (s.shape, s.number));
        *slot = Slot {
            client,
            shape,
            number,
        };
        match (shape, prev) {
            (0, _) | (_, None) => false,
            (_, Some(prev)) => PathShape { shape, number }.follows(&prev),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn of(target: &str) -> Option<PathShape> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        PathShape::of(path, query)
    }

    #[test]
    fn numeric_segments_are_placeholders_and_the_last_is_the_number() {
        let a = of("/shops/7/items/41").unwrap();
        let b = of("/shops/8/items/42").unwrap();
        assert_eq!((a.shape, a.number, b.number), (b.shape, 41, 42));
        assert!(b.follows(&a));
        assert_ne!(
            of("/shops/7/items/41").unwrap().shape,
            of("/shops/7/users/41").unwrap().shape
        );
        assert_ne!(
            of("/items/41").unwrap().shape,
            of("/items/41/").unwrap().shape
        );
        assert_eq!(of("/items/new"), None, "no number, no shape");
        assert_eq!(of("/"), None);
        assert_eq!(of("/items/4a"), None, "not all digits");
        assert_eq!(
            of("/items/1234567890123456789"),
            None,
            "19 digits: a literal"
        );
    }

    #[test]
    fn page_and_id_query_parameters_are_numbers() {
        let a = of("/items/7?sort=asc&page=3").unwrap();
        let b = of("/items/7?page=4&sort=desc").unwrap();
        assert_eq!((a.number, b.number), (3, 4));
        assert!(b.follows(&a), "other parameters are ignored");
        assert_ne!(a.shape, of("/items/7?id=3").unwrap().shape);
        assert_ne!(a.shape, of("/items/7").unwrap().shape);
        assert_eq!(
            of("/items/7?offset=40").unwrap().number,
            7,
            "offset is not a number"
        );
        assert_eq!(of("/items?page=x"), None);
    }

    #[test]
    fn steps_of_one_to_ten_follow() {
        let base = of("/items/100").unwrap();
        for (n, follows) in [
            (101, true),
            (90, true),
            (110, true),
            (100, false),
            (111, false),
            (89, false),
        ] {
            let next = of(&format!("/items/{n}")).unwrap();
            assert_eq!(next.follows(&base), follows, "{n}");
        }
    }

    #[test]
    fn the_table_compares_with_the_same_clients_previous_request() {
        let mut t = SeqTable::new(64);
        assert!(!t.step(1, of("/items/1")), "first request");
        assert!(!t.step(2, of("/items/2")), "another client");
        assert!(t.step(1, of("/items/2")));
        assert!(t.step(1, of("/items/3")));
        assert!(!t.step(1, of("/about")));
        assert!(
            !t.step(1, of("/items/4")),
            "the previous request had no shape"
        );
        assert!(t.step(1, of("/items/5")));
        assert!(!t.step(1, of("/items/5")), "a refresh");
    }
}
