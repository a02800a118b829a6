//! The HA fence on a Redis Cluster: every slot holds a copy of the leader's epoch, which the value-writing scripts
//! of that slot compare.
//!
//! On one node a script compares the lease key itself with the writer's token. On a cluster a script sees only its
//! own slot, and the lease lives in one. So taking the lease also takes a new epoch, stored beside it and higher
//! than every earlier one, and the new leader raises every slot's copy (`cachewarden:{tag}:fence:<lease key>`,
//! 16,384 small keys) to it before it writes anything: from then on a deposed leader's writes, in flight or late, find a newer
//! epoch in their slot and are refused (-2). A copy is only ever raised, so a deposed leader's late claim changes
//! nothing. A copy that is missing or older (evicted; a slot claimed while its node was away) refuses too; the
//! writer then checks that the lease still holds its token, raises the copies it found so, and sends again.
//!
//! A leader that holds the lease by the lease key's own check is never refused for good by an evicted copy; a
//! deposed one is. The one gap: an instance that confirmed it leads, then paused past its lease while its successor
//! raised every slot, then a copy was evicted in that window: its next write there is accepted once. Keep the
//! copies from eviction with a `volatile-*` policy (they have no TTL), as docs/configuration.md advises.

use std::time::Duration;

use redis::Value;

use super::Cluster;
use super::evalsha;
use super::slot::{SLOTS, by_slot, key_slot, slot_tag};
use crate::exec::cache::fence::LeaseAttempt;
use crate::exec::cache::policy::WritePolicy;
use crate::exec::cache::scripts::FENCED;
use crate::exec::cache::{CacheError, command_failed};
use crate::pure::model::KeyOp;

/// `cachewarden:{tag}:fence:<lease>`: `slot`'s copy of the epoch of the HA lease at `lease` (each lease its own:
/// two deployments sharing a cluster do not fence each other).
pub fn fence_key(slot: u16, lease: &str) -> String {
    format!("cachewarden:{{{}}}:fence:{lease}", slot_tag(slot))
}

/// `cachewarden:{tag}:epoch:<lease>`: the lease's epoch counter, in the lease key's slot.
fn epoch_key(lease: &str) -> String {
    format!("cachewarden:{{{}}}:epoch:{lease}", slot_tag(key_slot(lease.as_bytes())))
}

impl Cluster {
    /// [`Cache::take_lease`](crate::exec::cache::Cache::take_lease) on a cluster: the lease with a new epoch, then every
    /// slot claimed with it. If claiming fails the lease is given back, so that a standby is not kept waiting for a
    /// leader that cannot write.
    pub(super) async fn take_lease_with_epoch(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<LeaseAttempt, CacheError> {
        let (taken, word): (i64, String) = self
            .run(
                self.scripts
                    .cluster_take_lease
                    .key(key)
                    .key(epoch_key(key))
                    .arg(token)
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        if taken == 0 {
            return Ok(LeaseAttempt::HeldBy(word));
        }
        let epoch: u64 = word.parse().unwrap_or_default();
        let slots: Vec<u16> = (0..SLOTS as u16).collect();
        if let Err(error) = self.claim(key, epoch, &slots).await {
            self.run::<i64>(self.scripts.release_lease.key(key).arg(token))
                .await
                .ok();
            return Err(error);
        }
        Ok(LeaseAttempt::Taken { epoch })
    }

    /// Raises `slots`' copies of the fence of the lease at `lease` to `epoch`.
    async fn claim(&self, lease: &str, epoch: u64, slots: &[u16]) -> Result<(), CacheError> {
        let commands: Vec<(u16, redis::Cmd)> = slots
            .iter()
            .map(|&slot| {
                let mut cmd = evalsha(&self.scripts.cluster_claim);
                cmd.arg(1).arg(fence_key(slot, lease)).arg(epoch);
                (slot, cmd)
            })
            .collect();
        self.send(&commands).await.map(drop)
    }

    /// Sends `commands` (value-writing scripts, each answering -2 when its slot's fence is not this leader's). Slots
    /// that refused are claimed and sent again if the lease still holds this instance's token; otherwise, or if they
    /// refuse again, [`CacheError::Fenced`]. Returns the replies in the commands' order.
    pub(super) async fn send_fenced(
        &self,
        commands: Vec<(u16, redis::Cmd)>,
        policy: &WritePolicy,
    ) -> Result<Vec<Value>, CacheError> {
        let mut replies = self.send_writes(&commands).await?;
        let refused: Vec<usize> = (0..replies.len())
            .filter(|&i| matches!(replies[i], Value::Int(FENCED)))
            .collect();
        if refused.is_empty() {
            return Ok(replies);
        }
        let Some(fence) = &policy.fence else {
            return Err(CacheError::Fenced);
        };
        let Some((token, epoch)) = fence.held() else {
            return Err(CacheError::Fenced);
        };
        let mut conn = self.conn.clone();
        let holder: Option<String> = redis::cmd("GET")
            .arg(fence.key())
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        if holder.as_deref() != Some(&*token) {
            return Err(CacheError::Fenced);
        }
        let mut slots: Vec<u16> = refused.iter().map(|&i| commands[i].0).collect();
        slots.sort_unstable();
        slots.dedup();
        tracing::warn!(
            slots = slots.len(),
            "Slots' copies of the HA fence were missing or old (evicted?); claimed again, writing again."
        );
        self.claim(fence.key(), epoch, &slots).await?;
        let again: Vec<(u16, redis::Cmd)> = refused.iter().map(|&i| commands[i].clone()).collect();
        let second = self.send_writes(&again).await?;
        for (i, reply) in refused.into_iter().zip(second) {
            if matches!(reply, Value::Int(FENCED)) {
                return Err(CacheError::Fenced);
            }
            replies[i] = reply;
        }
        Ok(replies)
    }

    /// [`Cache::apply`](crate::exec::cache::Cache::apply) under the HA fence on a cluster, without stale-set protection:
    /// one script per slot (and at most [`crate::exec::cache::SCRIPT_BATCH`] keys), pipelined per master.
    pub(super) async fn fenced_in_slots(&self, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError> {
        let epoch = policy.epoch()?;
        let commands = by_slot(ops.iter().map(|op| op.key().as_bytes()))
            .into_iter()
            .map(|(slot, positions)| {
                let mut cmd = evalsha(&self.scripts.fenced_apply);
                cmd.arg(1 + positions.len()).arg(fence_key(slot, policy.lease_key()));
                for &i in &positions {
                    cmd.arg(ops[i].key());
                }
                cmd.arg(&epoch);
                for &i in &positions {
                    super::op_args(&mut cmd, &ops[i]);
                }
                (slot, cmd)
            })
            .collect();
        self.send_fenced(commands, policy).await.map(drop)
    }
}
