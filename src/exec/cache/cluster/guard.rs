//! Stale-set protection on a Redis Cluster: the single-node design (`cache::guard`) cut along slots.
//!
//! A Lua script or MULTI/EXEC may touch one slot only, so nothing can read a global counter and a data key at once.
//! The design keeps one global step and moves everything that must be atomic with a data key into that key's slot:
//!
//! - the global version counter and the read leases live in one slot (`{cachewarden}`). A read registers its lease
//!   there and takes the current version (`read_at`) and the lease's deadline;
//! - an invalidation first takes a new version there and the list of live leases (one round trip), then, per slot
//!   of its keys, runs a script in that slot that raises the slot's version (`cachewarden:{tag}:slot`, the newest
//!   invalidation applied in the slot), records the version for each key in the slot's evidence hash of every listed
//!   lease (`cachewarden:{tag}:lease:<id>`), and unlinks or sets the keys. With no lease listed it only unlinks or
//!   sets them: a read that starts later has a version at least this one, so it needs neither evidence nor a
//!   raised slot version;
//! - a write of read data runs, per slot, a script that writes freely if the slot's version is no newer than the
//!   read (nothing in the slot was invalidated since), and otherwise only if the lease's evidence hash in the slot is
//!   complete, skipping each key it names with a newer version.
//!
//! Why it holds: an invalidation newer than a read took its version after the read's lease was registered, so it
//! listed the lease and recorded itself in the slot's evidence before (atomically with) unlinking the key; a write
//! either runs before that script (and is unlinked by it) or after (and sees the evidence). An older invalidation
//! the read has already seen. Evidence is created by the first invalidation that reaches the slot for the lease,
//! with the slot's version from before it: a hash that was evicted and recreated later carries a newer one, and is
//! not trusted ("refuse", never "nothing happened"); a missing slot version refuses too, and is restored at the
//! current version (a read in flight is then refused once and reads again). A counter lost with the slot holding it
//! restarts at Redis' clock in microseconds, above anything it can have counted.
//!
//! A lost lease set is the one loss a slot cannot see: invalidations would stop listing the reads in flight, record no
//! evidence for them, and (with no lease left to list) not even raise the slots' versions, so their writes would land
//! stale. So the set keeps a sentinel member `~`, and the script that finds it missing (a read's or an invalidation's,
//! atomically with its version) makes it again with a *phantom* lease `lost:<v>`, `v` a new version, newer than every
//! lost read. For as long as a lost read can live (an hour, or this process's longest lease if longer) every
//! invalidation lists the phantom and raises the *floor* of its slots to `v` (`version/floor` in the slot's version
//! key); a guarded write whose read is older than its slot's floor is refused there. So a lost read is refused
//! wherever anything changed after the loss, and writes where nothing did. Cost: while a phantom lives,
//! invalidations run their slot scripts even with no read in flight (a fresh or flushed cluster starts with one).
//!
//! The lease is the fence as on one node, in two parts: in this process a gate that [`Cache::end_read`] closes,
//! after waiting for the lease's writes in flight (a write task still queued after its run ended is refused here);
//! in Redis the lease's deadline, after which invalidations stop recording evidence for it, and before which (by a
//! second, for the nodes' clocks) every guarded write must have run (a process paused past its lease is refused).
//!
//! Cost: a read is one script in the `{cachewarden}` slot; an invalidation one there plus one script per slot of
//! its keys, pipelined per master; a guarded write, on Redis 7, one script call per master for all its slots (else
//! one per slot, pipelined per master), which in Redis costs a GET of the slot's version per slot and the SET per key
//! (there is no optimistic MULTI/EXEC path: a transaction may touch one slot only). Memory: 16,384 slot versions (a
//! few hundred KB), and evidence for each read in flight, as on one node; a lease's evidence expires at its deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use super::fence::fence_key;
use super::merge::per_slot;
use super::slot::{SLOTS, by_slot, key_slot, slot_tag};
use super::{Cluster, evalsha};
use crate::exec::cache::guard::{LEASE_MARGIN, ReadLease};
use crate::exec::cache::policy::WritePolicy;
use crate::exec::cache::replies::written;
use crate::exec::cache::scripts::FENCED;
use crate::exec::cache::{CacheError, ttl_millis};
use crate::pure::model::{KeyOp, ReadStamp};

/// The global version counter on a cluster (its own slot, with the read leases).
pub(super) const CLUSTER_VERSION_KEY: &str = "cachewarden:{cachewarden}:version";
/// The read leases on a cluster: member = lease id, score = deadline in Redis milliseconds.
pub(super) const CLUSTER_READERS_KEY: &str = "cachewarden:{cachewarden}:readers";

/// What the guarded write script answers when the slot's version is missing (it refuses with -1).
const SLOT_VERSION_MISSING: i64 = -3;

/// The shortest a phantom lease lives (see `scripts::CLUSTER_TICK`): longer than any read lease this process opens.
const PHANTOM_MIN: Duration = Duration::from_secs(3600);

/// How a phantom lease's id starts: `lost:<version>` (see `scripts::CLUSTER_TICK`).
const PHANTOM_PREFIX: &str = "lost:";

/// An invalidation's first step: its version, the live read leases with the milliseconds each has left, and the floor
/// a live phantom lease asks the slots it touches to take (0: none).
struct Tick {
    version: u64,
    leases: Vec<(String, i64)>,
    floor: u64,
}

/// This process's open read leases on a cluster, by id, and the longest lifetime it has given one.
#[derive(Default)]
pub(in crate::exec::cache) struct Gates {
    open: Mutex<HashMap<Arc<str>, Arc<Gate>>>,
    longest_ms: AtomicU64,
}

struct Gate {
    /// The lease's end (Redis milliseconds), which every guarded write carries.
    deadline: i64,
    /// Open until [`Cache::end_read`]: writes hold it shared while they run, so ending waits for them.
    open: tokio::sync::RwLock<bool>,
}

impl Gates {
    fn get(&self, lease: &str) -> Option<Arc<Gate>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(lease)
            .cloned()
    }

    /// How long a phantom lease made from here lives (ms): it must outlive every lease that was lost, so at least an
    /// hour and at least the longest lease this process opened. (Another instance's lease longer than both is a
    /// limit: docs/configuration.md.)
    fn phantom_ms(&self) -> u64 {
        self.longest_ms
            .load(Ordering::Relaxed)
            .max(PHANTOM_MIN.as_millis() as u64)
    }
}

/// `cachewarden:{tag}:slot`: the newest invalidation applied in `slot` (and its floor: `scripts::CLUSTER_INVALIDATE`).
fn slot_version_key(slot: u16) -> String {
    format!("cachewarden:{{{}}}:slot", slot_tag(slot))
}

/// `cachewarden:{tag}:lease:<id>`: the lease's evidence in `slot`.
fn evidence_key(slot: u16, lease: &str) -> String {
    format!("cachewarden:{{{}}}:lease:{lease}", slot_tag(slot))
}

/// What every call of a guarded write carries once, before its slots (see `scripts::GUARDED_WRITES`).
struct Head<'a> {
    read: &'a ReadStamp,
    /// The lease's end (Redis milliseconds).
    deadline: i64,
    /// The HA epoch ('' without HA) and the HA lease's name.
    epoch: &'a str,
    lease_key: &'a str,
}

impl Head<'_> {
    fn add(&self, cmd: &mut redis::Cmd) {
        (cmd.arg(self.read.version).arg(self.deadline).arg(self.epoch))
            .arg(&*self.read.lease)
            .arg(self.lease_key);
    }

    /// One slot's call: the slot's version key and its data keys declared, so that the cluster routes it and answers
    /// a redirect for a slot on the move.
    fn one_slot(&self, one: &redis::Script, ops: &[KeyOp], (slot, positions): &(u16, Vec<usize>)) -> redis::Cmd {
        let mut cmd = evalsha(one);
        cmd.arg(1 + positions.len()).arg(slot_version_key(*slot));
        for &i in positions {
            cmd.arg(ops[i].key());
        }
        self.add(&mut cmd);
        add_slot(&mut cmd, *slot, ops, positions);
        cmd
    }

    /// One call for several slots of one master, no key declared (declared keys must share one slot).
    fn many_slots<'g>(
        &self,
        many: &redis::Script,
        ops: &[KeyOp],
        groups: impl Iterator<Item = &'g (u16, Vec<usize>)> + Clone,
    ) -> redis::Cmd {
        // Sized up front: a call carries every value of its share of the batch.
        let (mut parts, mut bytes) = (8, 128);
        for (_, positions) in groups.clone() {
            parts += 2 + 3 * positions.len();
            bytes += 40
                + positions
                    .iter()
                    .map(|&i| ops[i].key().len() + value_of(&ops[i]).len() + 24)
                    .sum::<usize>();
        }
        let mut cmd = redis::Cmd::with_capacity(parts, bytes);
        cmd.arg("EVALSHA").arg(many.get_hash()).arg(0);
        self.add(&mut cmd);
        for (slot, positions) in groups {
            add_slot(&mut cmd, *slot, ops, positions);
        }
        cmd
    }
}

/// A slot's part of a guarded write: its version key, its number of keys, then key, value and ttl in ms per key.
fn add_slot(cmd: &mut redis::Cmd, slot: u16, ops: &[KeyOp], positions: &[usize]) {
    cmd.arg(slot_version_key(slot)).arg(positions.len());
    for &i in positions {
        if let KeyOp::Set { key, value, ttl, .. } = &ops[i] {
            cmd.arg(key.as_str()).arg(value.as_slice()).arg(ttl_millis(*ttl));
        }
    }
}

fn value_of(op: &KeyOp) -> &[u8] {
    match op {
        KeyOp::Set { value, .. } => value,
        KeyOp::Delete { .. } => &[],
    }
}

/// A lease id and the milliseconds it has left, from a tick's reply.
fn lease_of(pair: &[Value]) -> Option<(String, i64)> {
    let id = redis::from_redis_value::<String>(pair.first()?.clone()).ok()?;
    Some((id, integer(pair.get(1)?)?))
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

impl Cluster {
    /// [`Cache::begin_read`](crate::exec::cache::Cache::begin_read) on a cluster.
    pub(super) async fn open_lease(&self, timeout: Duration) -> Result<ReadLease, CacheError> {
        let id: Arc<str> = format!("{}-{:016x}", std::process::id(), fastrand::u64(..)).into();
        let lifetime = (timeout + LEASE_MARGIN).as_millis() as u64;
        self.gates.longest_ms.fetch_max(lifetime, Ordering::Relaxed);
        let (read_at, deadline): (u64, i64) = self
            .run(
                self.scripts
                    .cluster_begin_read
                    .key(CLUSTER_VERSION_KEY)
                    .key(CLUSTER_READERS_KEY)
                    .arg(&*id)
                    .arg(lifetime)
                    .arg(self.gates.phantom_ms()),
            )
            .await?;
        let gate = Arc::new(Gate {
            deadline,
            open: tokio::sync::RwLock::new(true),
        });
        self.gates
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.clone(), gate);
        Ok(ReadLease::new(id, read_at))
    }

    /// [`Cache::end_read`](crate::exec::cache::Cache::end_read) on a cluster: close the gate once the lease's writes in
    /// flight have landed, then drop the lease (its evidence hashes expire by themselves).
    pub(super) async fn close_lease(&self, id: &str) {
        let gate = self
            .gates
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
        if let Some(gate) = gate {
            *gate.open.write().await = false;
        }
        let mut conn = self.conn.clone();
        let removed = redis::cmd("ZREM")
            .arg(CLUSTER_READERS_KEY)
            .arg(id)
            .query_async::<()>(&mut conn)
            .await;
        if let Err(error) = removed {
            crate::telemetry::metrics::redis_error();
            tracing::warn!(lease = id, %error, "Cannot end a read lease; it will expire by itself.");
        }
    }

    /// [`Cache::invalidate`](crate::exec::cache::Cache::invalidate) (no values) and
    /// [`Cache::supersede`](crate::exec::cache::Cache::supersede) (values) on a cluster with protection: take a version and
    /// the live leases, then one script per slot. Returns the version.
    pub(super) async fn invalidate_in_slots<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        values: Option<&[KeyOp]>,
        policy: &WritePolicy,
    ) -> Result<u64, CacheError> {
        let sets = values.is_some_and(|ops| ops.iter().any(|op| matches!(op, KeyOp::Set { .. })));
        // Values only from the HA leader; deletes from anyone.
        let epoch = if sets { policy.epoch()? } else { String::new() };
        let Tick { version, leases, floor } = self.tick().await?;
        if leases.is_empty() && floor == 0 && !epoch.is_empty() {
            self.fenced_in_slots(values.unwrap_or_default(), policy).await?;
            return Ok(version);
        }
        if leases.is_empty() && floor == 0 {
            // No read in flight: no evidence to record, and a read that starts from here on has a version at least
            // this one, so the slots' versions need not move either. Plain commands, one pipeline per master.
            let commands: Vec<(u16, redis::Cmd)> = match values {
                Some(ops) => super::plain_commands(&self.scripts, ops),
                None => keys
                    .iter()
                    .map(|key| (key_slot(key.as_ref()), redis::cmd("UNLINK").arg(key.as_ref()).clone()))
                    .collect(),
            };
            self.send_writes(&commands).await?;
            return Ok(version);
        }
        let mut commands = Vec::new();
        for (slot, positions) in by_slot(keys.iter().map(AsRef::as_ref)) {
            let mut cmd = evalsha(&self.scripts.cluster_invalidate);
            cmd.arg(2 + leases.len() + positions.len())
                .arg(slot_version_key(slot))
                .arg(fence_key(slot, policy.lease_key()));
            for (id, _) in &leases {
                cmd.arg(evidence_key(slot, id));
            }
            for &i in &positions {
                cmd.arg(keys[i].as_ref());
            }
            cmd.arg(version).arg(leases.len()).arg(&epoch).arg(floor);
            for (_, left) in &leases {
                cmd.arg(*left);
            }
            for &i in &positions {
                match values.map(|ops| &ops[i]) {
                    Some(op) => super::op_args(&mut cmd, op),
                    None => {
                        cmd.arg("").arg("-");
                    }
                }
            }
            commands.push((slot, cmd));
        }
        self.send_fenced(commands, policy).await?;
        Ok(version)
    }

    /// The guarded writes of one read (`ops` all carry `read`) on a cluster: on Redis 7 one call per master for all
    /// its slots, else (and for what such a call could not do: a slot on the move, a fence to claim again) one call per
    /// slot, through [`Cluster::send_fenced`]. See `scripts::GUARDED_WRITES`.
    pub(super) async fn guarded_set(
        &self,
        read: &ReadStamp,
        ops: &[KeyOp],
        policy: &WritePolicy,
    ) -> Result<(), CacheError> {
        let epoch = policy.epoch()?;
        let Some(gate) = self.gates.get(&read.lease) else {
            crate::telemetry::metrics::record_guarded_batch("refused");
            return Err(CacheError::LeaseEnded);
        };
        let open = gate.open.read().await;
        if !*open {
            crate::telemetry::metrics::record_guarded_batch("refused");
            return Err(CacheError::LeaseEnded);
        }
        // A batch of plain strings (a warm run's JSON) is written without the type dispatch per key.
        let scripts = match ops.iter().any(crate::exec::cache::is_scripted) {
            true => &self.scripts.cluster_guarded,
            false => &self.scripts.cluster_guarded_strings,
        };
        let head = Head {
            read,
            deadline: gate.deadline,
            epoch: &epoch,
            lease_key: policy.lease_key(),
        };
        let groups = by_slot(ops.iter().map(|op| op.key().as_bytes()));
        let mut replies = match self.many_slots {
            true => self.guarded_per_master(&head, ops, &groups, &scripts.many).await,
            false => vec![None; groups.len()],
        };
        let left: Vec<usize> = (0..groups.len())
            .filter(|&g| matches!(replies[g], None | Some(Value::Int(FENCED))))
            .collect();
        if !left.is_empty() {
            let commands: Vec<(u16, redis::Cmd)> = (left.iter())
                .map(|&g| (groups[g].0, head.one_slot(&scripts.one, ops, &groups[g])))
                .collect();
            for (g, reply) in left.into_iter().zip(self.send_fenced(commands, policy).await?) {
                replies[g] = Some(reply);
            }
        }
        let replied = |g: usize| replies[g].as_ref().and_then(integer);
        let missing: Vec<u16> = (0..groups.len())
            .filter(|&g| replied(g) == Some(SLOT_VERSION_MISSING))
            .map(|g| groups[g].0)
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                slots = missing.len(),
                "Slot versions of the stale-set protection were missing (evicted?); restored, the read goes again."
            );
            self.prime_slots(&missing).await?;
        }
        if (0..groups.len()).any(|g| replied(g).is_some_and(|n| n < 0)) {
            crate::telemetry::metrics::record_guarded_batch("refused");
            return Err(CacheError::LeaseEnded);
        }
        crate::telemetry::metrics::record_guarded_batch("script");
        Ok(())
    }

    /// The guarded writes of `groups` (slots and their ops' positions) as one call of `many` per master; per group its
    /// reply, `None` where the master's call failed. A key of a slot the master no longer serves stops its call with
    /// an error before or between groups: each group's write is idempotent, and the caller sends them again per slot,
    /// following the cluster's redirects (see `merge`).
    async fn guarded_per_master(
        &self,
        head: &Head<'_>,
        ops: &[KeyOp],
        groups: &[(u16, Vec<usize>)],
        many: &redis::Script,
    ) -> Vec<Option<Value>> {
        let slot_map = self.slot_map();
        let mut by_master: HashMap<u16, Vec<usize>> = HashMap::new();
        for (g, (slot, _)) in groups.iter().enumerate() {
            if let Some(owner) = slot_map.owner[*slot as usize] {
                by_master.entry(owner).or_default().push(g);
            }
        }
        let members: Vec<Vec<usize>> = by_master.into_values().collect();
        let calls: Vec<(u16, redis::Cmd)> = (members.iter())
            .map(|own| {
                (
                    groups[own[0]].0,
                    head.many_slots(many, ops, own.iter().map(|&g| &groups[g])),
                )
            })
            .collect();
        let mut replies = vec![None; groups.len()];
        let all: Vec<usize> = (0..calls.len()).collect();
        for (indices, sent) in self.round(&calls, &all, &HashMap::new()).await {
            let Ok(values) = sent else { continue };
            for (c, value) in indices.into_iter().zip(values) {
                for (&g, part) in members[c]
                    .iter()
                    .zip(per_slot(value, members[c].len()).unwrap_or_default())
                {
                    replies[g] = Some(written(part));
                }
            }
        }
        replies
    }

    /// A new version from the global counter, with the live read leases and the milliseconds each has left, and the
    /// floor a live phantom lease asks for (see `scripts::CLUSTER_TICK`).
    async fn tick(&self) -> Result<Tick, CacheError> {
        let tick: Vec<Value> = self
            .run(
                self.scripts
                    .cluster_tick
                    .key(CLUSTER_VERSION_KEY)
                    .key(CLUSTER_READERS_KEY)
                    .arg(self.gates.phantom_ms()),
            )
            .await?;
        let version = tick
            .first()
            .and_then(integer)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or_default();
        let (mut leases, mut floor) = (Vec::new(), 0);
        for pair in tick[1..].chunks(2) {
            let Some((id, left)) = lease_of(pair) else { continue };
            match id.strip_prefix(PHANTOM_PREFIX) {
                // Always a whole number; else the tick's own version, newer than every lost read too.
                Some(lost_at) => floor = floor.max(lost_at.parse().unwrap_or(version)),
                None => leases.push((id, left)),
            }
        }
        Ok(Tick { version, leases, floor })
    }

    /// Sets each of `slots`' version, where missing, to the current global version (at connect: every slot), with the
    /// floor of a live phantom lease.
    pub(in crate::exec::cache) async fn prime_slots(&self, slots: &[u16]) -> Result<(), CacheError> {
        // A version nothing was invalidated under, which costs nothing.
        let Tick { version, floor, .. } = self.tick().await?;
        // As the scripts' `slot_value` writes it.
        let value = match floor {
            0 => version.to_string(),
            floor => format!("{version}/{floor}"),
        };
        let commands: Vec<(u16, redis::Cmd)> = slots
            .iter()
            .map(|&slot| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(slot_version_key(slot)).arg(&value).arg("NX");
                (slot, cmd)
            })
            .collect();
        self.send(&commands).await.map(drop)
    }

    /// Every slot, for [`Cluster::prime_slots`] at connect.
    pub(in crate::exec::cache) fn all_slots() -> Vec<u16> {
        (0..SLOTS as u16).collect()
    }
}
