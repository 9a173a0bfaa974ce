//! The collector's namespaces are divided into `--collector-shards` shards
//! ([`palisade_policy::transport::collector_shard`]); each shard is owned by one replica at a
//! time, through its own Lease, so replicas share the collector's memory and work and the loss
//! of one moves only its shards. Shard 0's Lease is the leader's (`--lease-name`): with one
//! shard, the default, the leader owns every namespace. Shard `i > 0` has the Lease
//! `<lease-name>-shard-<i>` and the state ConfigMap `<collector-state-configmap>-<i>`.
//!
//! With more than one shard, every replica renews a membership Lease
//! (`<lease-name>-member-<identity>`) and, once a second, lists the Leases of its namespace:
//! from the live members, who holds which shard and how many selected namespaces each shard
//! has, it decides, alone and the same way as every other replica ([`plan`]), which free
//! shards to contend for or which shard to hand over, so that replicas hold about as many
//! namespaces each (namespaces go to shards by a hash, so shard counts alone would leave some
//! replicas with far more namespaces than others). A replica that gains a
//! shard advertises its endpoint on the shard's Lease, restores the shard's state and then
//! merges its reports ([`super::persist`]); one that hands a shard over stops merging it,
//! saves its state, forgets it and releases the Lease, so the next owner restores what it
//! saved. A replica that dies loses its shards when their Leases expire.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use palisade_policy::transport::{COLLECTOR_MANAGER, collector_shard};
use serde_json::json;
use tokio::sync::watch;

use super::{Collector, persist};
use crate::args::Args;

/// The largest `--collector-shards` (a shard is a bit of a `u64`).
pub const MAX_SHARDS: u32 = 64;
/// How often a replica of a sharded collector looks at the Leases.
const BALANCE_EVERY: Duration = Duration::from_secs(1);
/// A membership Lease not renewed for this many lease durations is deleted by any replica.
const FORGET_MEMBER_AFTER: u32 = 20;

/// Which shards this replica holds the Lease of and which it owns (holds and has restored).
#[derive(Debug)]
pub struct Ownership {
    count: u32,
    held: AtomicU64,
    owned: AtomicU64,
    /// The size of each shard's last saved state (for the state-bytes gauge).
    saved: Box<[AtomicUsize]>,
}

impl Ownership {
    /// Nothing held of `count` shards.
    pub fn new(count: u32) -> Self {
        let count = count.clamp(1, MAX_SHARDS);
        Self {
            count,
            held: AtomicU64::new(0),
            owned: AtomicU64::new(0),
            saved: (0..count).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// How many shards there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard of `namespace`.
    pub fn of(&self, namespace: &str) -> u32 {
        collector_shard(namespace, self.count)
    }

    /// Whether this replica merges and evaluates `namespace` now.
    pub fn owns(&self, namespace: &str) -> bool {
        self.owns_shard(self.of(namespace))
    }

    /// Whether this replica merges and evaluates the namespaces of `shard` now.
    pub fn owns_shard(&self, shard: u32) -> bool {
        self.owned() & bit(shard) != 0
    }

    /// Whether this replica holds the Lease of `shard` (owned, or being restored).
    pub fn holds(&self, shard: u32) -> bool {
        self.held.load(Ordering::Acquire) & bit(shard) != 0
    }

    /// The owned shards as bits.
    pub fn owned(&self) -> u64 {
        self.owned.load(Ordering::Acquire)
    }

    fn set_held(&self, held: u64) {
        self.held.store(held, Ordering::Release);
    }

    fn own(&self, shard: u32) {
        self.owned.fetch_or(bit(shard), Ordering::AcqRel);
    }

    fn disown(&self, shard: u32) {
        self.owned.fetch_and(!bit(shard), Ordering::AcqRel);
    }

    /// Records the size of `shard`'s saved state; the total of every owned shard's.
    pub fn saved(&self, shard: u32, bytes: usize) -> usize {
        if let Some(s) = self.saved.get(shard as usize) {
            s.store(bytes, Ordering::Relaxed);
        }
        let owned = self.owned();
        (0..self.count)
            .filter(|&i| owned & bit(i) != 0)
            .map(|i| self.saved[i as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// The Lease of `shard`.
    pub fn lease(&self, args: &Args, shard: u32) -> String {
        lease_name(&args.lease_name, shard)
    }

    /// The state ConfigMap of `shard`.
    pub fn state_configmap(&self, args: &Args, shard: u32) -> String {
        match shard {
            0 => args.collector_state_configmap.clone(),
            i => format!("{}-{i}", args.collector_state_configmap),
        }
    }
}

/// The least loaded member of `load` (ties: the least identity) and its load.
fn least<'a>(load: &BTreeMap<&'a str, u64>) -> Option<(&'a str, u64)> {
    load.iter()
        .min_by_key(|(m, l)| (**l, **m))
        .map(|(m, l)| (*m, *l))
}

fn bit(shard: u32) -> u64 {
    1u64.checked_shl(shard).unwrap_or(0)
}

fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..MAX_SHARDS).filter(move |&i| mask & bit(i) != 0)
}

/// The Lease of `shard` when the leader's is `base`.
pub fn lease_name(base: &str, shard: u32) -> String {
    match shard {
        0 => base.to_owned(),
        i => format!("{base}-shard-{i}"),
    }
}

/// The membership Lease of `identity` (a name the API accepts: lower case, `[a-z0-9.-]`).
pub fn member_lease(base: &str, identity: &str) -> String {
    let id: String = identity
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = format!("{base}-member-{id}");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// What the Leases say: the live members and the live holder of each shard.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct View {
    /// Identities with a membership Lease renewed within its duration.
    pub members: BTreeSet<String>,
    /// Each shard's holder whose Lease is not expired, `None` when free.
    pub holders: Vec<Option<String>>,
}

/// What a replica does about its shards this turn.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// A shard to hand over.
    pub release: Option<u32>,
    /// Free shards to contend for.
    pub contend: Vec<u32>,
}

/// The weight of each of `shards` shards when `namespaces` are selected: every namespace
/// counts `shards` times more than the shard itself, so replicas balance namespaces first and
/// empty shards (which a new namespace may land in) after.
pub fn weights<'a>(shards: u32, namespaces: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
    let mut w = vec![1u64; shards as usize];
    for ns in namespaces {
        if let Some(x) = w.get_mut(collector_shard(ns, shards) as usize) {
            *x += u64::from(shards);
        }
    }
    w
}

/// The turn of replica `me` (holding the shards `held`, whatever the listed Leases say yet),
/// with each shard's `weights`. Every replica computes it from the same view, and so the same
/// assignment:
///
/// - While shards are free, each (heaviest first) goes to the least loaded member (ties: the
///   least identity), counting what it was given already; `me` contends for those it gets.
/// - Otherwise the most loaded member hands over one shard that strictly narrows its gap to
///   the least loaded one (its weight below the gap; the one leaving them closest). Each such
///   move lowers the sum of the squared loads, so moves stop: loads settle within one shard's
///   weight of each other.
///
/// Shard 0 goes with leadership and is never handed over or contended for here.
pub fn plan(view: &View, me: &str, held: &BTreeSet<u32>, weights: &[u64]) -> Plan {
    let w = |i: usize| weights.get(i).copied().unwrap_or(1);
    let owner: Vec<Option<&str>> = (0..view.holders.len())
        .map(|i| {
            if u32::try_from(i).is_ok_and(|i| held.contains(&i)) {
                Some(me)
            } else {
                view.holders[i].as_deref().filter(|h| *h != me)
            }
        })
        .collect();
    let mut load: BTreeMap<&str, u64> = view.members.iter().map(|m| (m.as_str(), 0)).collect();
    load.insert(me, 0);
    for (i, o) in owner.iter().enumerate() {
        if let Some(m) = o {
            *load.entry(m).or_default() += w(i);
        }
    }
    let mut free: Vec<usize> = (1..owner.len()).filter(|&i| owner[i].is_none()).collect();
    if !free.is_empty() {
        free.sort_by_key(|&i| (std::cmp::Reverse(w(i)), i));
        let mut contend = Vec::new();
        for i in free {
            let Some((m, _)) = least(&load) else {
                break;
            };
            *load.entry(m).or_default() += w(i);
            if m == me {
                contend.push(u32::try_from(i).unwrap_or(MAX_SHARDS));
            }
        }
        return Plan {
            release: None,
            contend,
        };
    }
    let most = load
        .iter()
        .max_by_key(|(m, l)| (**l, std::cmp::Reverse(**m)))
        .map(|(m, l)| (*m, *l));
    let (Some((busiest, high)), Some((_, low))) = (most, least(&load)) else {
        return Plan::default();
    };
    if busiest != me {
        return Plan::default();
    }
    let gap = high - low;
    let release = held
        .iter()
        .copied()
        .filter(|&i| i != 0 && w(i as usize) < gap)
        .min_by_key(|&i| ((gap).abs_diff(2 * w(i as usize)), std::cmp::Reverse(i)));
    Plan {
        release,
        contend: Vec::new(),
    }
}

/// The view from the Leases of the operator's namespace at `now`.
pub fn view_of(leases: &[Lease], base: &str, shards: u32, now: jiff::Timestamp) -> View {
    let live = |l: &Lease| -> Option<String> {
        let spec = l.spec.as_ref()?;
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
        let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
        let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        let until = renewed
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .ok()?;
        (until > now).then_some(holder)
    };
    let by_name: BTreeMap<String, &Lease> = leases.iter().map(|l| (l.name_any(), l)).collect();
    let holders = (0..shards)
        .map(|i| by_name.get(&lease_name(base, i)).and_then(|l| live(l)))
        .collect();
    let prefix = format!("{base}-member-");
    let members = leases
        .iter()
        .filter(|l| l.name_any().starts_with(&prefix))
        .filter_map(live)
        .collect();
    View { members, holders }
}

/// A contended shard Lease.
struct Holder {
    held: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Holder {
    fn drop(&mut self) {
        // The Lease manager sees its channel closed and releases the Lease.
        self.task.abort();
    }
}

/// Follows the shards this replica holds: restores a shard on gaining it, forgets it on
/// losing it, balances the shards among replicas (more than one shard), saves every owned
/// shard each `--collector-snapshot-interval` and once more on shutdown.
pub async fn run(c: Arc<Collector>) -> anyhow::Result<()> {
    let mut leader = c.ctx.leader.clone();
    let mut snapshot = tokio::time::interval(c.ctx.args.collector_snapshot_interval);
    snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut balance = tokio::time::interval(BALANCE_EVERY);
    balance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let sharded = c.shards.count() > 1;
    let mut holders: BTreeMap<u32, Holder> = BTreeMap::new();
    let mut advertised = 0u64;
    let mut member = Member::default();
    loop {
        let held = holders
            .iter()
            .filter(|(_, h)| *h.held.borrow())
            .fold(u64::from(*leader.borrow_and_update()), |m, (i, _)| {
                m | bit(*i)
            });
        c.shards.set_held(held);
        let owned = c.shards.owned();
        for i in bits(owned & !held) {
            lose(&c, i);
        }
        advertised &= held;
        let gained: Vec<u32> = bits(held & !owned).collect();
        for &i in &gained {
            if persist::advertise(&c, i).await {
                advertised |= bit(i);
            }
        }
        persist::restore(&c, &gained).await;
        for &i in &gained {
            c.shards.own(i);
        }
        c.ctx
            .metrics
            .collector_shards
            .set(i64::from(c.shards.owned().count_ones()));
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return Ok(()) },
            _ = balance.tick(), if sharded => {
                member.renew(&c).await;
                if let Err(e) = turn(&c, &mut holders).await {
                    tracing::warn!(error = %e, "cannot balance the collector shards; retrying");
                }
            },
            _ = snapshot.tick() => {
                for i in bits(c.shards.owned()) {
                    if advertised & bit(i) == 0 && persist::advertise(&c, i).await {
                        advertised |= bit(i);
                    }
                    persist::save_logged(&c, i).await;
                }
            },
            () = c.ctx.shutdown.cancelled() => {
                for i in bits(c.shards.owned()) {
                    let still = if i == 0 { c.ctx.is_leader() } else { c.shards.holds(i) };
                    if still {
                        persist::save_logged(&c, i).await;
                    }
                }
                // Released now, so other replicas need not wait for the Leases to expire.
                holders.clear();
                if sharded {
                    member.leave(&c).await;
                }
                return Ok(());
            }
        }
    }
}

/// Drops what this replica knows of the namespaces of `shard`, which it no longer owns.
fn lose(c: &Collector, shard: u32) {
    c.shards.disown(shard);
    c.state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|ns| c.shards.of(ns) != shard);
    tracing::info!(shard, "collector shard lost; its state dropped");
}

/// One balancing turn: lists the Leases, hands one shard over or contends for free ones.
async fn turn(c: &Collector, holders: &mut BTreeMap<u32, Holder>) -> Result<(), kube::Error> {
    let args = &c.ctx.args;
    let api: Api<Lease> = Api::namespaced(c.ctx.clients.leader.clone(), &args.namespace);
    let leases = api.list(&ListParams::default()).await?.items;
    let now = jiff::Timestamp::now();
    let view = view_of(&leases, &args.lease_name, c.shards.count(), now);
    forget_members(c, &api, &leases, now).await;
    let held: BTreeSet<u32> = (0..c.shards.count())
        .filter(|&i| c.shards.holds(i))
        .collect();
    // Contenders that lost the race to another live replica stop contending.
    holders.retain(|i, h| {
        *h.held.borrow()
            || view
                .holders
                .get(*i as usize)
                .is_none_or(|o| o.as_deref().is_none_or(|o| o == args.identity))
    });
    let weights = weights(
        c.shards.count(),
        c.namespaces
            .state()
            .iter()
            .map(|n| n.name_any())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    let p = plan(&view, &args.identity, &held, &weights);
    if let Some(i) = p.release {
        hand_over(c, i, holders).await;
    }
    for i in p.contend {
        if holders.contains_key(&i) {
            continue;
        }
        let lease = c.shards.lease(args, i);
        match crate::leader::hold(
            c.ctx.clients.leader.clone(),
            &args.namespace,
            &lease,
            &args.identity,
            args.lease_duration,
        )
        .await
        {
            Ok((held, task)) => {
                tracing::debug!(shard = i, %lease, "contending for a collector shard");
                holders.insert(i, Holder { held, task });
            }
            Err(e) => tracing::warn!(shard = i, %lease, error = %e, "cannot contend for the shard"),
        }
    }
    Ok(())
}

/// Gives `shard` to whichever replica takes it: stops merging it, saves its state, forgets it,
/// releases its Lease.
async fn hand_over(c: &Collector, shard: u32, holders: &mut BTreeMap<u32, Holder>) {
    c.shards.disown(shard);
    persist::save_logged(c, shard).await;
    lose(c, shard);
    holders.remove(&shard);
    c.shards
        .set_held(c.shards.held.load(Ordering::Acquire) & !bit(shard));
    tracing::info!(shard, "collector shard handed over");
}

/// Deletes membership Leases nobody renewed for [`FORGET_MEMBER_AFTER`] lease durations
/// (replicas that died without leaving).
async fn forget_members(c: &Collector, api: &Api<Lease>, leases: &[Lease], now: jiff::Timestamp) {
    let prefix = format!("{}-member-", c.ctx.args.lease_name);
    let keep = jiff::SignedDuration::from_secs(
        i64::try_from(c.ctx.args.lease_duration).unwrap_or(i64::MAX / 2)
            * i64::from(FORGET_MEMBER_AFTER),
    );
    for l in leases.iter().filter(|l| l.name_any().starts_with(&prefix)) {
        let renewed = l
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        if renewed.is_some_and(|t| t.checked_add(keep).is_ok_and(|until| until < now)) {
            let name = l.name_any();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(lease = %name, "membership Lease of a gone replica deleted")
                }
                Err(e) => {
                    tracing::debug!(lease = %name, error = %e, "membership Lease not deleted")
                }
            }
        }
    }
}

/// This replica's membership Lease.
#[derive(Debug, Default)]
struct Member {
    renewed: Option<Instant>,
}

impl Member {
    async fn renew(&mut self, c: &Collector) {
        let args = &c.ctx.args;
        let every = Duration::from_secs((args.lease_duration / 3).max(1));
        if self.renewed.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        let name = member_lease(&args.lease_name, &args.identity);
        let api: Api<Lease> = Api::namespaced(c.ctx.clients.leader.clone(), &args.namespace);
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "palisade"}},
            "spec": {"holderIdentity": args.identity,
                "leaseDurationSeconds": args.lease_duration,
                "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
        match api
            .patch(
                &name,
                &PatchParams::apply(COLLECTOR_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
        {
            Ok(_) => self.renewed = Some(Instant::now()),
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "cannot renew the collector membership")
            }
        }
    }

    async fn leave(&self, c: &Collector) {
        let args = &c.ctx.args;
        let name = member_lease(&args.lease_name, &args.identity);
        let api: Api<Lease> = Api::namespaced(c.ctx.clients.leader.clone(), &args.namespace);
        if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
            tracing::debug!(lease = %name, error = %e, "membership Lease not deleted");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view(members: &[&str], holders: &[Option<&str>]) -> View {
        View {
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            holders: holders.iter().map(|h| h.map(str::to_owned)).collect(),
        }
    }

    fn held_by(v: &View, me: &str) -> BTreeSet<u32> {
        (0u32..)
            .zip(&v.holders)
            .filter(|(_, h)| h.as_deref() == Some(me))
            .map(|(i, _)| i)
            .collect()
    }

    /// Runs every member's turn, each acting at once (a release frees the shard, a contender
    /// wins a free shard unless an earlier member of the round took it), until nothing moves.
    fn settle(mut v: View, weights: &[u64]) -> (View, usize) {
        for round in 0..512 {
            let mut moved = false;
            for m in v.members.clone() {
                let p = plan(&v, &m, &held_by(&v, &m), weights);
                if let Some(i) = p.release {
                    v.holders[i as usize] = None;
                    moved = true;
                }
                for i in p.contend {
                    if v.holders[i as usize].is_none() {
                        v.holders[i as usize] = Some(m.clone());
                        moved = true;
                    }
                }
            }
            if !moved {
                return (v, round);
            }
        }
        panic!("no settlement: {v:?}");
    }

    fn counts(v: &View) -> Vec<usize> {
        v.members.iter().map(|m| held_by(v, m).len()).collect()
    }

    fn loads(v: &View, weights: &[u64]) -> Vec<u64> {
        v.members
            .iter()
            .map(|m| held_by(v, m).iter().map(|&i| weights[i as usize]).sum())
            .collect()
    }

    fn even(n: usize) -> Vec<u64> {
        vec![1; n]
    }

    #[test]
    fn one_replica_takes_every_shard_and_a_second_gets_half() {
        let mut holders = vec![None; 16];
        holders[0] = Some("a");
        let (v, _) = settle(view(&["a"], &holders), &even(16));
        assert_eq!(counts(&v), [16]);
        let mut v = v;
        v.members.insert("b".into());
        let (v, _) = settle(v, &even(16));
        assert_eq!(counts(&v), [8, 8]);
        assert_eq!(
            v.holders[0].as_deref(),
            Some("a"),
            "shard 0 stays with the leader"
        );
    }

    #[test]
    fn a_third_replica_takes_shards_even_when_the_others_hold_no_more_than_the_ceiling() {
        // 4 shards on 2 replicas: 2 each; a third comes (⌈4/3⌉ = 2: nobody is over the
        // ceiling), and still one hands a shard over to it.
        let v = view(
            &["a", "b", "c"],
            &[Some("a"), Some("a"), Some("b"), Some("b")],
        );
        let (v, _) = settle(v, &even(4));
        let mut c = counts(&v);
        c.sort_unstable();
        assert_eq!(c, [1, 1, 2], "{v:?}");
    }

    #[test]
    fn the_shards_of_a_dead_replica_are_taken_by_the_survivors() {
        // c died: its Leases expired (free) and its membership too.
        let v = view(
            &["a", "b"],
            &[
                Some("a"),
                None,
                Some("b"),
                None,
                Some("a"),
                None,
                Some("b"),
                None,
                None,
            ],
        );
        let (v, _) = settle(v, &even(9));
        assert!(v.holders.iter().all(Option::is_some), "{v:?}");
        let mut c = counts(&v);
        c.sort_unstable();
        assert_eq!(c, [4, 5]);
    }

    #[test]
    fn every_spread_settles_within_one_shard_of_even() {
        for shards in [1usize, 2, 3, 7, 16, 64] {
            for n in 1..=6usize {
                let members: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
                // Start lopsided: the first replica holds everything.
                let holders = vec![Some(members[0].as_str()); shards];
                let names: Vec<&str> = members.iter().map(String::as_str).collect();
                let (v, rounds) = settle(view(&names, &holders), &even(shards));
                let lo = shards / n;
                let hi = shards.div_ceil(n);
                assert!(
                    counts(&v).iter().all(|&c| (lo..=hi).contains(&c)),
                    "{shards} shards on {n}: {:?}",
                    counts(&v)
                );
                assert!(v.holders.iter().all(Option::is_some), "{v:?}");
                // One hand-over a round: it settles, it does not swing.
                assert!(
                    rounds <= 2 * shards + n,
                    "{shards}/{n} took {rounds} rounds"
                );
            }
        }
    }

    #[test]
    fn replicas_balance_namespaces_not_shards() {
        // 50 namespaces over 16 shards, as the scale run has them: by shard count alone a
        // replica of 4 may hold far more namespaces than another.
        let names: Vec<String> = (0..50).map(|i| format!("scale-{i}")).collect();
        let w = weights(16, names.iter().map(String::as_str));
        for n in [2usize, 3, 4] {
            let members: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
            let holders = vec![Some(members[0].as_str()); 16];
            let ids: Vec<&str> = members.iter().map(String::as_str).collect();
            let (v, _) = settle(view(&ids, &holders), &w);
            let per: Vec<u64> = loads(&v, &w).iter().map(|l| l / 16).collect();
            let max_shard = w.iter().max().copied().unwrap_or(0) / 16;
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(
                hi - lo <= max_shard,
                "{n} replicas: namespaces per replica {per:?}, heaviest shard {max_shard}"
            );
            // Never more than one shard's namespaces above an even share.
            assert!(
                *hi as usize <= 50usize.div_ceil(n) + max_shard as usize,
                "{per:?}"
            );
        }
    }

    #[test]
    fn weights_count_namespaces_per_shard_then_the_shard() {
        let w = weights(4, ["default", "shop", "shop2"]);
        assert_eq!(w.len(), 4);
        assert_eq!(w.iter().sum::<u64>(), 4 + 3 * 4);
        assert_eq!(w[collector_shard("default", 4) as usize] % 4, 1);
    }

    #[test]
    fn shard_zero_is_never_handed_over_or_contended_for() {
        // One shard, two replicas: b leads and holds it; a has none and nothing moves.
        let v = view(&["a", "b"], &[Some("b")]);
        let p = plan(&v, "b", &BTreeSet::from([0]), &[5]);
        assert_eq!(p, Plan::default());
        let v = view(&["a"], &[None, None]);
        let p = plan(&v, "a", &BTreeSet::new(), &[1, 1]);
        assert_eq!(p.contend, [1]);
    }

    #[test]
    fn leases_tell_live_members_and_holders() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let lease = |name: &str, holder: &str, age: i64| {
            let mut l = Lease::default();
            l.metadata.name = Some(name.into());
            l.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    now.checked_sub(jiff::SignedDuration::from_secs(age))
                        .unwrap(),
                )),
                ..Default::default()
            });
            l
        };
        let leases = [
            lease("op", "a", 1),
            lease("op-shard-1", "b", 20),
            lease("op-shard-2", "b", 2),
            lease("op-member-a", "a", 1),
            lease("op-member-b", "b", 16),
            lease("other-shard-3", "z", 1),
        ];
        let v = view_of(&leases, "op", 4, now);
        assert_eq!(
            v.members,
            BTreeSet::from(["a".to_owned()]),
            "b's membership expired"
        );
        assert_eq!(
            v.holders,
            [Some("a".into()), None, Some("b".into()), None],
            "shard 1 expired, shard 3 has no Lease"
        );
    }

    #[test]
    fn names_follow_the_lease_and_state_configmap() {
        assert_eq!(lease_name("palisade-operator", 0), "palisade-operator");
        assert_eq!(
            lease_name("palisade-operator", 3),
            "palisade-operator-shard-3"
        );
        assert_eq!(
            member_lease("palisade-operator", "Palisade_Op-7f9.x"),
            "palisade-operator-member-palisade-op-7f9.x"
        );
        assert!(member_lease("p", &"x".repeat(400)).len() <= 253);
        assert_eq!(bits(0b1011).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(bit(64), 0);
    }
}
