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
//! The lease is the fence as on one node, in two parts: in this process a gate that [`Cache::end_read`] closes,
//! after waiting for the lease's writes in flight (a write task still queued after its run ended is refused here);
//! in Redis the lease's deadline, after which invalidations stop recording evidence for it, and before which (by a
//! second, for the nodes' clocks) every guarded write must have run (a process paused past its lease is refused).
//!
//! Cost: a read is one script in the `{cachewarden}` slot; an invalidation one there plus one script per slot of
//! its keys, pipelined per master; a guarded write one script per slot, pipelined per master (there is no
//! optimistic MULTI/EXEC path: one would be needed per slot). Memory: 16,384 slot versions (a few hundred KB), and
//! evidence for each read in flight, as on one node; a lease's evidence expires at its deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use super::fence::fence_key;
use super::slot::{SLOTS, by_slot, key_slot, slot_tag};
use super::{Cluster, evalsha};
use crate::exec::cache::guard::{LEASE_MARGIN, ReadLease};
use crate::exec::cache::policy::WritePolicy;
use crate::exec::cache::{CacheError, ttl_millis};
use crate::pure::model::{KeyOp, ReadStamp};

/// The global version counter on a cluster (its own slot, with the read leases).
pub(super) const CLUSTER_VERSION_KEY: &str = "cachewarden:{cachewarden}:version";
/// The read leases on a cluster: member = lease id, score = deadline in Redis milliseconds.
pub(super) const CLUSTER_READERS_KEY: &str = "cachewarden:{cachewarden}:readers";

/// What the guarded write script answers when the slot's version is missing (it refuses with -1).
const SLOT_VERSION_MISSING: i64 = -3;

/// This process's open read leases on a cluster, by id.
#[derive(Default)]
pub(in crate::exec::cache) struct Gates(Mutex<HashMap<Arc<str>, Arc<Gate>>>);

struct Gate {
    /// The lease's end (Redis milliseconds), which every guarded write carries.
    deadline: i64,
    /// Open until [`Cache::end_read`]: writes hold it shared while they run, so ending waits for them.
    open: tokio::sync::RwLock<bool>,
}

impl Gates {
    fn get(&self, lease: &str) -> Option<Arc<Gate>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(lease)
            .cloned()
    }
}

/// `cachewarden:{tag}:slot`: the newest invalidation applied in `slot`.
fn slot_version_key(slot: u16) -> String {
    format!("cachewarden:{{{}}}:slot", slot_tag(slot))
}

/// `cachewarden:{tag}:lease:<id>`: the lease's evidence in `slot`.
fn evidence_key(slot: u16, lease: &str) -> String {
    format!("cachewarden:{{{}}}:lease:{lease}", slot_tag(slot))
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
        let (read_at, deadline): (u64, i64) = self
            .run(
                self.scripts
                    .cluster_begin_read
                    .key(CLUSTER_VERSION_KEY)
                    .key(CLUSTER_READERS_KEY)
                    .arg(&*id)
                    .arg((timeout + LEASE_MARGIN).as_millis() as u64),
            )
            .await?;
        let gate = Arc::new(Gate {
            deadline,
            open: tokio::sync::RwLock::new(true),
        });
        self.gates
            .0
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
            .0
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
        let (version, leases) = self.tick().await?;
        if leases.is_empty() && !epoch.is_empty() {
            self.fenced_in_slots(values.unwrap_or_default(), policy).await?;
            return Ok(version);
        }
        if leases.is_empty() {
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
            cmd.arg(version).arg(leases.len()).arg(&epoch);
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

    /// The guarded writes of one read (`ops` all carry `read`) on a cluster: one script per slot.
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
        fn key_of(op: &KeyOp) -> &[u8] {
            op.key().as_bytes()
        }
        let mut commands = Vec::new();
        for (slot, positions) in by_slot(ops.iter().map(key_of)) {
            let mut cmd = evalsha(&self.scripts.cluster_guarded_set);
            cmd.arg(3 + positions.len())
                .arg(slot_version_key(slot))
                .arg(evidence_key(slot, &read.lease))
                .arg(fence_key(slot, policy.lease_key()));
            for &i in &positions {
                cmd.arg(key_of(&ops[i]));
            }
            cmd.arg(read.version).arg(gate.deadline).arg(&epoch);
            for &i in &positions {
                if let KeyOp::Set { value, ttl, .. } = &ops[i] {
                    cmd.arg(value.as_slice()).arg(ttl_millis(*ttl));
                }
            }
            commands.push((slot, cmd));
        }
        let slots: Vec<u16> = commands.iter().map(|(slot, _)| *slot).collect();
        let replies = self.send_fenced(commands, policy).await?;
        let missing: Vec<u16> = slots
            .iter()
            .zip(&replies)
            .filter(|(_, reply)| integer(reply) == Some(SLOT_VERSION_MISSING))
            .map(|(slot, _)| *slot)
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                slots = missing.len(),
                "Slot versions of the stale-set protection were missing (evicted?); restored, the read goes again."
            );
            self.prime_slots(&missing).await?;
        }
        if replies.iter().any(|reply| integer(reply).is_some_and(|n| n < 0)) {
            crate::telemetry::metrics::record_guarded_batch("refused");
            return Err(CacheError::LeaseEnded);
        }
        crate::telemetry::metrics::record_guarded_batch("script");
        Ok(())
    }

    /// A new version from the global counter, with the live read leases and the milliseconds each has left.
    async fn tick(&self) -> Result<(u64, Vec<(String, i64)>), CacheError> {
        let tick: Vec<Value> = self
            .run(
                self.scripts
                    .cluster_tick
                    .key(CLUSTER_VERSION_KEY)
                    .key(CLUSTER_READERS_KEY),
            )
            .await?;
        let version = tick.first().and_then(integer).and_then(|n| u64::try_from(n).ok());
        let leases = tick[1..]
            .chunks(2)
            .filter_map(|pair| {
                let id = redis::from_redis_value::<String>(pair.first()?.clone()).ok()?;
                Some((id, integer(pair.get(1)?)?))
            })
            .collect();
        Ok((version.unwrap_or_default(), leases))
    }

    /// Sets each of `slots`' version, where missing, to the current global version (at connect: every slot).
    pub(in crate::exec::cache) async fn prime_slots(&self, slots: &[u16]) -> Result<(), CacheError> {
        // A version nothing was invalidated under, which costs nothing.
        let (version, _) = self.tick().await?;
        let commands: Vec<(u16, redis::Cmd)> = slots
            .iter()
            .map(|&slot| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(slot_version_key(slot)).arg(version).arg("NX");
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
