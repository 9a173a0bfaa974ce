//! Rate limits (`rateLimit` actions): a GCRA per client, in a fixed table per action, with no
//! lock.
//!
//! GCRA (the generic cell rate algorithm, the leaky bucket as a meter): a client has a
//! theoretical arrival time (TAT). A request at `now` passes when `max(TAT, now) − now ≤ τ`
//! (τ = burst × T, T = the interval of the rate) and moves TAT to `max(TAT, now) + T`; it is
//! limited otherwise, and may retry after `max(TAT, now) − τ − now`. A limited request does
//! not move TAT, so a client that keeps sending above the rate still gets the rate through.
//!
//! The table: a power of two of 64-bit cells, each a client's 16-bit tag and its TAT (48 bits
//! of microseconds since the table was made: 8.9 years). A client's key hashes (SipHash-1-3,
//! a random key per table, so clients cannot aim at a cell) to two buckets of [`PROBES`]
//! cells and a tag; it uses one cell of its two buckets: its own (same tag), else one at rest
//! (TAT in the past: its owner would start afresh anyway), else the one nearest to rest, whose
//! owner is evicted. Two choices keep evictions rare until the table is nearly full of
//! clients that are not at rest. Every update is a compare-and-swap, retried when another
//! thread got there first.
//!
//! Bounds, stated in docs/api.md (rate limits): a client is limited exactly while it keeps its
//! cell; it loses it only when every cell of its two buckets holds another client that is not
//! at rest (counted in `palisade_sidecar_rate_limit_evictions_total`), after which its next
//! request starts a fresh budget; two clients share one budget only when their hashes agree
//! in bucket and tag (with 65,536 cells, about 1 in 2^30 per pair). Memory is the table: 8
//! bytes per cell, allocated when the bundle that needs it is loaded.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use palisade_policy::{ActionId, ClientKeyKind, CompiledPolicy, RateLimit};
use prometheus_client::metrics::counter::Counter;

/// Cells a client may use, from its index on.
pub const PROBES: usize = 4;
/// Cells per rate-limit action unless `--rate-limit-clients` says otherwise.
pub const DEFAULT_CELLS: usize = 65_536;
/// The most cells of all the rate-limit actions together (32 MiB); each action's table
/// shrinks (to a power of two, at least [`MIN_CELLS`]) to stay within it.
pub const MAX_TOTAL_CELLS: usize = 1 << 22;
/// The fewest cells of a table.
pub const MIN_CELLS: usize = 1024;

const TAT_BITS: u32 = 48;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;

/// The answer of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Under the limit: the request passes (and was counted).
    Pass,
    /// Above it: the client may send again after this long.
    Limited(Duration),
}

/// One action's table; `S` hashes client keys (a random key per table, except in tests).
#[derive(Debug)]
pub struct Table<S = RandomState> {
    cells: Box<[AtomicU64]>,
    mask: usize,
    hasher: S,
    epoch: Instant,
    /// What one client is, for this table (a table is kept only for the same kind).
    by: ClientKeyKind,
    evictions: Counter,
}

impl Table {
    /// A table of `cells` cells (rounded down to a power of two, at least [`MIN_CELLS`]) that
    /// counts the clients it evicts in `evictions`, hashing with a random key.
    pub fn new(cells: usize, by: ClientKeyKind, evictions: Counter) -> Self {
        Self::with_hasher(cells, by, evictions, RandomState::new())
    }
}

impl<S: BuildHasher> Table<S> {
    /// [`Table::new`] hashing with `hasher`.
    pub fn with_hasher(cells: usize, by: ClientKeyKind, evictions: Counter, hasher: S) -> Self {
        let n = floor_pow2(cells.max(MIN_CELLS));
        Self {
            cells: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            hasher,
            epoch: Instant::now(),
            by,
            evictions,
        }
    }

    /// How many cells the table has.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Always false (a table has at least [`MIN_CELLS`] cells).
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Clients evicted so far (their cells taken by others; see the module notes).
    pub fn evictions(&self) -> u64 {
        self.evictions.get()
    }

    /// Counts one request of the client with key `key` at `now` against `limit`.
    pub fn check(&self, limit: &RateLimit, key: &[u8], now: Instant) -> Check {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        let hash = h.finish();
        let tag = u64::from(((hash >> 48) as u16).max(1)) << TAT_BITS;
        let now_us = u64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(TAT_MASK)
            .min(TAT_MASK);
        // Microseconds, at least 1 (rates above a million per second per client are one
        // per microsecond).
        let t = (limit.interval_ns() / 1000).max(1);
        let tau = t.saturating_mul(u64::from(limit.burst_share()));
        // Two buckets of PROBES cells, from independent bits of the hash.
        let buckets = [
            usize::try_from(hash).unwrap_or(0) & self.mask & !(PROBES - 1),
            usize::try_from(hash >> 24).unwrap_or(0) & self.mask & !(PROBES - 1),
        ];
        loop {
            let (cell, cur) = self.cell_for(tag, buckets, now_us);
            let tat = if cur & !TAT_MASK == tag {
                (cur & TAT_MASK).max(now_us)
            } else {
                now_us
            };
            if tat - now_us > tau {
                return Check::Limited(Duration::from_micros(tat - now_us - tau));
            }
            let next = tag | (tat + t).min(TAT_MASK);
            if cell
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                if cur != 0 && cur & !TAT_MASK != tag && cur & TAT_MASK > now_us {
                    self.evictions.inc();
                }
                return Check::Pass;
            }
        }
    }

    /// The cell the client with `tag` uses in its two buckets, and its current content: its
    /// own, else a cell at rest in the bucket with fewer live cells (two choices: the buckets
    /// fill evenly), else the live cell nearest to rest.
    fn cell_for(&self, tag: u64, buckets: [usize; 2], now_us: u64) -> (&AtomicU64, u64) {
        // Per bucket: a cell at rest, and how many are live.
        let mut free: [Option<(&AtomicU64, u64)>; 2] = [None, None];
        let mut live = [0usize; 2];
        let mut nearest: Option<(&AtomicU64, u64)> = None;
        for (b, start) in buckets.iter().enumerate() {
            for cell in &self.cells[*start..*start + PROBES] {
                let cur = cell.load(Ordering::Acquire);
                if cur & !TAT_MASK == tag {
                    return (cell, cur);
                }
                if cur & TAT_MASK <= now_us {
                    free[b].get_or_insert((cell, cur));
                } else {
                    live[b] += 1;
                    if nearest.is_none_or(|(_, n)| cur & TAT_MASK < n & TAT_MASK) {
                        nearest = Some((cell, cur));
                    }
                }
            }
        }
        let emptier = usize::from(live[1] < live[0]);
        free[emptier]
            .or(free[1 - emptier])
            .or(nearest)
            .unwrap_or((&self.cells[buckets[0]], 0))
    }
}

fn floor_pow2(n: usize) -> usize {
    if n.is_power_of_two() {
        n
    } else {
        n.next_power_of_two() / 2
    }
}

/// The tables of one policy's rate-limit actions, by action id.
#[derive(Debug, Default)]
pub struct Limits {
    tables: Vec<Option<Arc<Table>>>,
    names: Vec<String>,
}

impl Limits {
    /// Tables for the rate-limit actions of `policy`, `cells` cells each (less when there are
    /// many: see [`MAX_TOTAL_CELLS`]). A table of `previous` is kept for an action of the same
    /// name that counts clients the same way, so a new bundle (another pod joined, say) does
    /// not hand every client a fresh budget.
    pub fn build(
        policy: &CompiledPolicy,
        cells: usize,
        previous: Option<&Limits>,
        evictions: &Counter,
    ) -> Self {
        let ids = policy.rate_limits();
        let count = ids.iter().count();
        if count == 0 {
            return Self::default();
        }
        let per = cells.min(MAX_TOTAL_CELLS / count);
        let actions = &policy.bundle().actions;
        let mut tables = vec![None; actions.len()];
        let mut names = vec![String::new(); actions.len()];
        for id in ids.iter() {
            let (Some(action), Some(limit)) = (actions.get(id.index()), policy.rate_limit(id))
            else {
                continue;
            };
            let kept = previous.and_then(|p| p.table_named(&action.name, limit.by));
            let table =
                kept.unwrap_or_else(|| Arc::new(Table::new(per, limit.by, evictions.clone())));
            tables[id.index()] = Some(table);
            names[id.index()] = action.name.clone();
        }
        Self { tables, names }
    }

    fn table_named(&self, name: &str, by: ClientKeyKind) -> Option<Arc<Table>> {
        let i = self.names.iter().position(|n| n == name)?;
        self.tables[i].clone().filter(|t| t.by == by)
    }

    /// The table of action `id`.
    pub fn table(&self, id: ActionId) -> Option<&Table> {
        self.tables.get(id.index())?.as_deref()
    }

    /// Bytes held by the tables.
    pub fn bytes(&self) -> usize {
        self.tables.iter().flatten().map(|t| t.len() * 8).sum()
    }
}

/// The most rate-limited requests held at once by a tarpit; more are answered at once.
pub const MAX_HELD: usize = 1024;

static HELD: AtomicUsize = AtomicUsize::new(0);

/// Holds a limited request for `delay` (its tarpit), unless [`MAX_HELD`] are already held: a
/// client cannot make the sidecar keep more than that many requests waiting. Returns whether
/// it held the request.
pub async fn tarpit(delay: Duration) -> bool {
    struct Held;
    impl Drop for Held {
        fn drop(&mut self) {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let held = Held;
    if HELD.fetch_add(1, Ordering::Relaxed) >= MAX_HELD {
        return false;
    }
    tokio::time::sleep(delay).await;
    drop(held);
    true
}

/// A request's hashed API key and access token, and its user agent.
pub type Secrets<'a> = (Option<&'a [u8; 32]>, Option<&'a [u8; 32]>, Option<&'a [u8]>);

/// The bytes that name a request's client of kind `by`, or `None` when the request has no
/// such key (no API key, say): an IP or a prefix as tag, prefix length and address bytes
/// (written to `buf`), a hashed API key or token as its digest, a user agent as sent.
pub fn client_key<'a>(
    by: ClientKeyKind,
    ip: IpAddr,
    v6_prefix_len: u8,
    (api_key, token, user_agent): Secrets<'a>,
    buf: &'a mut [u8; 18],
) -> Option<&'a [u8]> {
    let (tag, ip, len) = match by {
        ClientKeyKind::Ip => (0u8, ip.to_canonical(), 0u8),
        ClientKeyKind::IpPrefix => match palisade_policy::ClientKey::prefix_of(ip, v6_prefix_len) {
            palisade_policy::ClientKey::IpPrefix(net) => (1, net.network(), net.prefix_len()),
            _ => return None,
        },
        ClientKeyKind::ApiKey => return api_key.map(|k| &k[..]),
        ClientKeyKind::AccessToken => return token.map(|k| &k[..]),
        ClientKeyKind::UserAgent => return user_agent,
    };
    buf[0] = tag;
    buf[1] = len;
    let n = match ip {
        IpAddr::V4(v4) => {
            buf[2..6].copy_from_slice(&v4.octets());
            6
        }
        IpAddr::V6(v6) => {
            buf[2..18].copy_from_slice(&v6.octets());
            18
        }
    };
    Some(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table whose hashing is the same every run (SipHash with fixed keys), so what the
    /// tests assert about collisions holds on every run.
    fn table(cells: usize) -> Table<std::hash::BuildHasherDefault<std::hash::DefaultHasher>> {
        Table::with_hasher(
            cells,
            ClientKeyKind::Ip,
            Counter::default(),
            Default::default(),
        )
    }

    fn limit(requests: u32, burst: u32, pods: u32) -> RateLimit {
        RateLimit {
            requests,
            period_s: 1,
            burst,
            by: ClientKeyKind::Ip,
            tarpit_ms: 0,
            pods,
        }
    }

    /// The passes of one client sending a request every `gap` for `n` requests.
    fn passes<S: BuildHasher>(
        table: &Table<S>,
        l: &RateLimit,
        key: &[u8],
        start: Instant,
        gap: Duration,
        n: u32,
    ) -> u32 {
        (0..n)
            .filter(|i| table.check(l, key, start + gap * *i) == Check::Pass)
            .count() as u32
    }

    #[test]
    fn a_client_gets_exactly_the_rate_and_the_burst() {
        let table = table(1024);
        let l = limit(10, 5, 1);
        let t0 = table.epoch + Duration::from_secs(1);
        // 100 requests at once: the burst and one more pass.
        assert_eq!(passes(&table, &l, b"a", t0, Duration::ZERO, 100), 6);
        // Then, sending at 100 per second for 10 s: 10 per second get through.
        let later = t0 + Duration::from_secs(5);
        let got = passes(&table, &l, b"a", later, Duration::from_millis(10), 1000);
        assert!(
            (100..=106).contains(&got),
            "{got} of 1000 passed in 10 s at 10/s"
        );
    }

    #[test]
    fn a_limited_client_is_told_when_to_retry_and_passes_then() {
        let table = table(1024);
        let l = limit(2, 0, 1);
        let t0 = table.epoch + Duration::from_secs(1);
        assert_eq!(table.check(&l, b"a", t0), Check::Pass);
        let Check::Limited(wait) = table.check(&l, b"a", t0) else {
            panic!("the second request at once is limited");
        };
        assert_eq!(wait, Duration::from_millis(500));
        assert!(matches!(
            table.check(&l, b"a", t0 + wait - Duration::from_micros(1)),
            Check::Limited(_)
        ));
        assert_eq!(table.check(&l, b"a", t0 + wait), Check::Pass);
    }

    /// 500 clients in the default table: each keeps its own budget.
    #[test]
    fn clients_do_not_share_a_budget() {
        let table = table(DEFAULT_CELLS);
        let l = limit(1, 0, 1);
        let t0 = table.epoch + Duration::from_secs(1);
        for i in 0..500u32 {
            let first = table.check(&l, &i.to_le_bytes(), t0);
            assert_eq!(first, Check::Pass, "client {i}");
        }
        for i in 0..500u32 {
            let second = table.check(&l, &i.to_le_bytes(), t0);
            assert!(matches!(second, Check::Limited(_)), "client {i}");
        }
        assert_eq!(table.evictions(), 0);
    }

    #[test]
    fn each_pod_lets_its_share_through() {
        let table = table(1024);
        // 100/s with a burst of 20 over 4 pods: 25/s and a burst of 5 here.
        let l = limit(100, 20, 4);
        let t0 = table.epoch + Duration::from_secs(1);
        assert_eq!(passes(&table, &l, b"a", t0, Duration::ZERO, 100), 6);
        let later = t0 + Duration::from_secs(5);
        let got = passes(&table, &l, b"a", later, Duration::from_millis(1), 10_000);
        assert!(
            (250..=256).contains(&got),
            "{got} passed in 10 s at a 25/s share"
        );
    }

    #[test]
    fn more_live_clients_than_cells_evict_and_are_counted() {
        let table = table(1024);
        let l = limit(1, 0, 1);
        let t0 = table.epoch + Duration::from_secs(1);
        // 5000 clients at once in 1024 cells: every one past the free cells evicts one. (A
        // client that meets another with the same tag in its buckets shares its budget: 16-bit
        // tags in a table this small; a few of 5000 may.)
        let passed = (0..5000u32)
            .filter(|i| table.check(&l, &i.to_le_bytes(), t0) == Check::Pass)
            .count() as u64;
        assert!(passed >= 4980, "{passed}");
        assert!(table.evictions() >= passed - 1024, "{}", table.evictions());
        // Once they are at rest, their cells are taken without eviction (100 new clients: a
        // tenth of the table).
        let before = table.evictions();
        let later = t0 + Duration::from_secs(10);
        for i in 10_000..10_100u32 {
            assert_eq!(table.check(&l, &i.to_le_bytes(), later), Check::Pass);
        }
        assert_eq!(table.evictions(), before);
    }

    #[test]
    fn threads_racing_on_one_client_pass_exactly_the_burst() {
        let table = Arc::new(table(1024));
        let l = limit(1, 49, 1);
        let t0 = table.epoch + Duration::from_secs(1);
        let passed = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if table.check(&l, b"a", t0) == Check::Pass {
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(passed.load(Ordering::Relaxed), 50);
    }

    #[tokio::test]
    async fn no_more_than_max_held_requests_are_held() {
        let held: Vec<_> = (0..MAX_HELD)
            .map(|_| tokio::spawn(tarpit(Duration::from_secs(60))))
            .collect();
        while HELD.load(Ordering::Relaxed) < MAX_HELD {
            tokio::task::yield_now().await;
        }
        let t0 = Instant::now();
        assert!(
            !tarpit(Duration::from_secs(60)).await,
            "one more is not held"
        );
        assert!(t0.elapsed() < Duration::from_secs(60));
        held.iter().for_each(|h| h.abort());
        for h in held {
            let _ = h.await;
        }
        assert_eq!(
            HELD.load(Ordering::Relaxed),
            0,
            "aborted holds are released"
        );
        assert!(tarpit(Duration::from_millis(1)).await);
    }

    #[test]
    fn keys_of_each_kind() {
        let key = |by, ip: &str, len| {
            let mut buf = [0u8; 18];
            let ip: IpAddr = ip.parse().expect("ip");
            client_key(by, ip, len, (None, None, None), &mut buf).map(<[u8]>::to_vec)
        };
        assert_eq!(
            key(ClientKeyKind::Ip, "192.0.2.7", 64),
            Some(vec![0, 0, 192, 0, 2, 7])
        );
        assert_eq!(
            key(ClientKeyKind::Ip, "::ffff:192.0.2.7", 64),
            key(ClientKeyKind::Ip, "192.0.2.7", 64),
            "an IPv4-mapped address is its IPv4 client"
        );
        let p1 = key(ClientKeyKind::IpPrefix, "2001:db8::1", 64);
        assert_eq!(
            p1,
            key(ClientKeyKind::IpPrefix, "2001:db8::ffff:2", 64),
            "one /64"
        );
        assert_ne!(p1, key(ClientKeyKind::IpPrefix, "2001:db8::ffff:2", 128));
        assert_ne!(p1, key(ClientKeyKind::IpPrefix, "2001:db8:0:1::1", 64));
        assert_eq!(
            key(ClientKeyKind::ApiKey, "192.0.2.7", 64),
            None,
            "no API key"
        );
        let digest = [7u8; 32];
        let mut buf = [0u8; 18];
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let got = client_key(
            ClientKeyKind::ApiKey,
            ip,
            64,
            (Some(&digest), None, None),
            &mut buf,
        );
        assert_eq!(got, Some(&digest[..]));
    }
}
