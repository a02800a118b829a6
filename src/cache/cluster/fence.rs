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

use super::guard::{by_slot, evalsha};
use super::slot::{SLOTS, key_slot, slot_tag};
use crate::cache::lease::LeaseAttempt;
use crate::cache::scripts::FENCED;
use crate::cache::{Cache, CacheError, command_failed, ttl_millis};
use crate::model::KeyOp;

/// `cachewarden:{tag}:fence:<lease>`: `slot`'s copy of the epoch of the HA lease at `lease` (each lease its own:
/// two deployments sharing a cluster do not fence each other).
pub fn fence_key(slot: u16, lease: &str) -> String {
    format!("cachewarden:{{{}}}:fence:{lease}", slot_tag(slot))
}

/// `cachewarden:{tag}:epoch:<lease>`: the lease's epoch counter, in the lease key's slot.
fn epoch_key(lease: &str) -> String {
    format!("cachewarden:{{{}}}:epoch:{lease}", slot_tag(key_slot(lease.as_bytes())))
}

impl Cache {
    /// [`Cache::take_lease`] on a cluster: the lease with a new epoch, then every slot claimed with it. If claiming
    /// fails the lease is given back, so that a standby is not kept waiting for a leader that cannot write.
    pub(in crate::cache) async fn cluster_take_lease(
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
            self.release_lease(key, token).await.ok();
            return Err(error);
        }
        Ok(LeaseAttempt::Taken { epoch })
    }

    /// Raises `slots`' copies of the fence of the lease at `lease` to `epoch`.
    async fn claim(&self, lease: &str, epoch: u64, slots: &[u16]) -> Result<(), CacheError> {
        let cluster = self.cluster.as_ref().expect("called on a cluster");
        let commands: Vec<(u16, redis::Cmd)> = slots
            .iter()
            .map(|&slot| {
                let mut cmd = evalsha(&self.scripts.cluster_claim);
                cmd.arg(1).arg(fence_key(slot, lease)).arg(epoch);
                (slot, cmd)
            })
            .collect();
        cluster.send(&commands).await.map(drop)
    }

    /// `slot`'s copy of this instance's fence (without `[ha]` a key of the slot that no script reads).
    pub(in crate::cache) fn slot_fence(&self, slot: u16) -> String {
        fence_key(slot, self.fence.as_ref().map_or("", |fence| fence.key()))
    }

    /// The epoch a value write carries on a cluster: "" without `[ha]` (no check);
    /// [`CacheError::Fenced`] when this instance may not write.
    pub(in crate::cache) fn cluster_epoch(&self) -> Result<String, CacheError> {
        match &self.fence {
            None => Ok(String::new()),
            Some(fence) => fence
                .held()
                .map(|(_, epoch)| epoch.to_string())
                .ok_or(CacheError::Fenced),
        }
    }

    /// Sends `commands` (value-writing scripts, each answering -2 when its slot's fence is not this leader's). Slots
    /// that refused are claimed and sent again if the lease still holds this instance's token; otherwise, or if they
    /// refuse again, [`CacheError::Fenced`]. Returns the replies in the commands' order.
    pub(in crate::cache) async fn send_fenced(
        &self,
        commands: Vec<(u16, redis::Cmd)>,
    ) -> Result<Vec<Value>, CacheError> {
        let cluster = self.cluster.as_ref().expect("called on a cluster");
        let mut replies = cluster.send(&commands).await?;
        let refused: Vec<usize> = (0..replies.len())
            .filter(|&i| matches!(replies[i], Value::Int(FENCED)))
            .collect();
        if refused.is_empty() {
            return Ok(replies);
        }
        let Some(fence) = &self.fence else {
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
        let second = cluster.send(&again).await?;
        for (i, reply) in refused.into_iter().zip(second) {
            if matches!(reply, Value::Int(FENCED)) {
                return Err(CacheError::Fenced);
            }
            replies[i] = reply;
        }
        Ok(replies)
    }

    /// [`Cache::apply`] under the HA fence on a cluster, without stale-set protection: one script per slot (and at
    /// most [`crate::cache::SCRIPT_BATCH`] keys), pipelined per master.
    pub(in crate::cache) async fn cluster_apply_fenced(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        let epoch = self.cluster_epoch()?;
        let commands = by_slot(ops.iter().map(|op| op.key().as_bytes()))
            .into_iter()
            .map(|(slot, positions)| {
                let mut cmd = evalsha(&self.scripts.fenced_apply);
                cmd.arg(1 + positions.len()).arg(self.slot_fence(slot));
                for &i in &positions {
                    cmd.arg(ops[i].key());
                }
                cmd.arg(&epoch);
                for &i in &positions {
                    match &ops[i] {
                        KeyOp::Set { value, ttl, .. } => cmd.arg(value.as_slice()).arg(ttl_millis(*ttl)),
                        KeyOp::Delete { .. } => cmd.arg("").arg("-"),
                    };
                }
                (slot, cmd)
            })
            .collect();
        self.send_fenced(commands).await.map(drop)
    }
}
