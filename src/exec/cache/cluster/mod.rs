//! Redis Cluster (ElastiCache with cluster mode enabled): the slot map (key slots: `slot`), commands sent to their
//! slots' masters one pipeline per master (`send`; on Redis 7 one call per master, `merge`), SCAN and INFO on every
//! master, stale-set protection per slot (`guard`) and the HA fence per slot (`fence`).
//!
//! redis-rs' cluster connection routes single-key commands and scripts itself (and follows MOVED); what it cannot
//! do is a pipeline whose keys span slots, which every batch of cachewarden's is. So batches are grouped by the
//! master that owns each key's slot in cachewarden's own copy of the slot map (`CLUSTER SLOTS`), and each group goes
//! to that master as one pipeline; redirects (ASK, TRYAGAIN, MOVED, a failed node) are followed as `send` describes.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::Value;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::operations::{Operations, ReadCommand};
use super::policy::WritePolicy;
use super::scripts::Scripts;
use super::{CacheError, LeaseAttempt, ReadLease, command_failed, op_command};
use crate::pure::model::{KeyOp, ReadStamp};

pub mod fence;
mod guard;
mod merge;
mod send;
pub mod slot;

pub(super) use guard::Gates;
use slot::SLOTS;

/// The masters and which of them owns each slot.
#[derive(Debug)]
struct SlotMap {
    /// Per slot, an index into `masters` (`None` while a slot is not served: the cluster is down for it).
    owner: Vec<Option<u16>>,
    masters: Vec<(String, u16)>,
}

/// A cluster connection and what cachewarden keeps beside it.
pub(super) struct Cluster {
    conn: ClusterConnection,
    slot_map: RwLock<Arc<SlotMap>>,
    /// The scripts; those sent in pipelines as EVALSHA are loaded on every master at start and again after NOSCRIPT.
    scripts: Arc<Scripts>,
    pub(super) gates: Gates,
    /// Every master runs Redis 7 or later: a batch's per-slot write scripts go as one call per master (`merge`).
    many_slots: bool,
}

/// `ops` as plain commands per slot: `SET`/`UNLINK`, or, where scripted values are among them (hashes, documents,
/// sets), one `PLAIN_APPLY` per slot's run of ops (in order, at most `SCRIPT_BATCH` keys each).
pub(super) fn plain_commands(scripts: &super::Scripts, ops: &[KeyOp]) -> Vec<(u16, redis::Cmd)> {
    if !ops.iter().any(crate::exec::cache::is_scripted) {
        return ops
            .iter()
            .map(|op| (slot::key_slot(op.key().as_bytes()), op_command(op)))
            .collect();
    }
    slot::by_slot(ops.iter().map(|op| op.key().as_bytes()))
        .into_iter()
        .map(|(slot, positions)| {
            let mut cmd = evalsha(&scripts.plain_apply);
            cmd.arg(positions.len());
            for &i in &positions {
                cmd.arg(ops[i].key());
            }
            for &i in &positions {
                op_args(&mut cmd, &ops[i]);
            }
            (slot, cmd)
        })
        .collect()
}

/// Adds `op`'s value and ttl in ms to a script call (`""` and `"-"` to unlink it), as the write scripts take them.
pub(super) fn op_args(cmd: &mut redis::Cmd, op: &KeyOp) {
    match op {
        KeyOp::Set { value, ttl, .. } => cmd.arg(value.as_slice()).arg(super::ttl_millis(*ttl)),
        KeyOp::Delete { .. } => cmd.arg("").arg("-"),
    };
}

/// `EVALSHA` of `script` (its keys and arguments follow): a cluster routes it by its first key.
pub(super) fn evalsha(script: &redis::Script) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash());
    cmd
}

impl Cluster {
    /// Reads the slot map, loads the pipelined scripts on every master, and with protection on sets every slot's
    /// version (see `guard`).
    pub(super) async fn new(
        conn: ClusterConnection,
        scripts: Arc<Scripts>,
        protected: bool,
    ) -> Result<Self, CacheError> {
        let mut cluster = Self {
            conn,
            slot_map: RwLock::new(Arc::new(SlotMap {
                owner: vec![None; SLOTS],
                masters: Vec::new(),
            })),
            scripts,
            gates: Gates::default(),
            many_slots: false,
        };
        cluster.refresh().await?;
        cluster.many_slots = cluster.runs_redis_7().await?;
        cluster.load_scripts().await?;
        if protected {
            cluster.prime_slots(&Self::all_slots()).await?;
        }
        Ok(cluster)
    }

    /// Reads the slot map afresh (`CLUSTER SLOTS`, from any node).
    async fn refresh(&self) -> Result<(), CacheError> {
        let reply = self
            .conn
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(command_failed)?;
        let slot_map = parse_slots(&reply).ok_or_else(|| {
            command_failed(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "CLUSTER SLOTS gave an answer cachewarden does not understand",
            )))
        })?;
        *self.slot_map.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(slot_map);
        Ok(())
    }

    fn slot_map(&self) -> Arc<SlotMap> {
        self.slot_map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether every master runs Redis (or Valkey, which reports a Redis version) 7 or later.
    async fn runs_redis_7(&self) -> Result<bool, CacheError> {
        for (host, port) in &self.slot_map().masters {
            let reply = self
                .on_node(host, *port, redis::cmd("INFO").arg("server").clone())
                .await?;
            let text: String =
                redis::FromRedisValue::from_redis_value(reply).map_err(|error| command_failed(error.into()))?;
            let major = text
                .lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .and_then(|version| version.trim().split('.').next()?.parse::<u32>().ok());
            if major.is_none_or(|major| major < 7) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `SCRIPT LOAD` of every pipelined script on every master.
    async fn load_scripts(&self) -> Result<(), CacheError> {
        for (host, port) in &self.slot_map().masters {
            for script in Scripts::pipelined(self.many_slots) {
                self.on_node(host, *port, redis::cmd("SCRIPT").arg("LOAD").arg(script).clone())
                    .await?;
            }
        }
        Ok(())
    }

    /// One script, routed by its keys.
    async fn run<T: redis::FromRedisValue>(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<T, CacheError> {
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(command_failed)
    }

    /// The cluster connection, for commands it routes by their key itself.
    pub(super) fn conn(&self) -> ClusterConnection {
        self.conn.clone()
    }

    /// One command on one node, by address.
    async fn on_node(&self, host: &str, port: u16, cmd: redis::Cmd) -> Result<Value, CacheError> {
        let route = SingleNodeRoutingInfo::ByAddress {
            host: host.to_string(),
            port,
        };
        self.conn
            .clone()
            .route_command(cmd, RoutingInfo::SingleNode(route))
            .await
            .map_err(command_failed)
    }

    /// [`Cluster::send`] for commands that write values: a script's reply is its result, the keys it found holding
    /// another type reported (see `replies`).
    pub(super) async fn send_writes(&self, commands: &[(u16, redis::Cmd)]) -> Result<Vec<Value>, CacheError> {
        let replies = self.send_merged(commands).await?;
        Ok(replies.into_iter().map(super::replies::written).collect())
    }

    /// The masters' addresses, from the slot map read afresh (what node-local subscriptions need).
    pub(super) async fn master_addresses(&self) -> Result<Vec<(String, u16)>, CacheError> {
        self.refresh().await?;
        Ok(self.slot_map().masters.clone())
    }

    /// `INFO section` of every master, its numeric fields summed (`evicted_keys`, `keyspace_hits`, ...).
    async fn info_sum(&self, section: &str) -> Result<String, CacheError> {
        let mut sums: Vec<(String, u64)> = Vec::new();
        for (host, port) in &self.slot_map().masters {
            let reply = self
                .on_node(host, *port, redis::cmd("INFO").arg(section).clone())
                .await?;
            let text: String =
                redis::FromRedisValue::from_redis_value(reply).map_err(|error| command_failed(error.into()))?;
            for line in text.lines() {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let Ok(value) = value.trim().parse::<u64>() else {
                    continue;
                };
                match sums.iter_mut().find(|(known, _)| known == name) {
                    Some((_, sum)) => *sum += value,
                    None => sums.push((name.to_string(), value)),
                }
            }
        }
        Ok(sums.iter().map(|(name, sum)| format!("{name}:{sum}\r\n")).collect())
    }
}

impl Operations for Cluster {
    async fn apply_plain(&self, ops: &[KeyOp]) -> Result<(), CacheError> {
        self.send_writes(&plain_commands(&self.scripts, ops)).await.map(drop)
    }

    async fn unlink<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(&self, keys: &[K]) -> Result<(), CacheError> {
        let commands: Vec<_> = keys
            .iter()
            .map(|key| (slot::key_slot(key.as_ref()), redis::cmd("UNLINK").arg(key).clone()))
            .collect();
        self.send(&commands).await.map(drop)
    }

    async fn invalidate_guarded<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(
        &self,
        keys: &[K],
        policy: &WritePolicy,
    ) -> Result<u64, CacheError> {
        self.invalidate_in_slots(keys, None, policy).await
    }

    async fn supersede_guarded(&self, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError> {
        let keys: Vec<&[u8]> = ops.iter().map(|op| op.key().as_bytes()).collect();
        self.invalidate_in_slots(&keys, Some(ops), policy).await.map(drop)
    }

    async fn set_guarded(&self, read: &ReadStamp, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError> {
        self.guarded_set(read, ops, policy).await
    }

    async fn apply_fenced(&self, ops: &[KeyOp], policy: &WritePolicy) -> Result<(), CacheError> {
        self.fenced_in_slots(ops, policy).await
    }

    async fn begin_read(&self, timeout: Duration) -> Result<ReadLease, CacheError> {
        self.open_lease(timeout).await
    }

    async fn end_read(&self, id: &str) {
        self.close_lease(id).await
    }

    async fn take_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<LeaseAttempt, CacheError> {
        self.take_lease_with_epoch(key, token, ttl).await
    }

    async fn read(&self, keys: &[String], command: &ReadCommand) -> Result<Vec<Value>, CacheError> {
        let commands: Vec<(u16, redis::Cmd)> = keys
            .iter()
            .map(|key| (slot::key_slot(key.as_bytes()), command(key)))
            .collect();
        self.send(&commands).await
    }

    fn nodes(&self) -> usize {
        self.slot_map().masters.len()
    }

    async fn scan_page<K: redis::FromRedisValue>(
        &self,
        node: usize,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<K>), CacheError> {
        let (host, port) = self.slot_map().masters[node].clone();
        let cmd = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .clone();
        let reply = self.on_node(&host, port, cmd).await?;
        redis::FromRedisValue::from_redis_value(reply).map_err(|error| command_failed(error.into()))
    }

    async fn on_node_pipeline(&self, node: usize, pipe: redis::Pipeline) -> Result<Vec<Value>, CacheError> {
        let (host, port) = self.slot_map().masters[node].clone();
        let count = pipe.len();
        self.conn
            .clone()
            .route_pipeline(pipe, 0, count, SingleNodeRoutingInfo::ByAddress { host, port })
            .await
            .map_err(command_failed)
    }

    async fn info(&self, section: &str) -> Result<String, CacheError> {
        self.info_sum(section).await
    }

    fn shape(&self) -> String {
        format!("a Redis Cluster of {} masters", self.nodes())
    }
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`.
fn parse_slots(reply: &Value) -> Option<SlotMap> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut slot_map = SlotMap {
        owner: vec![None; SLOTS],
        masters: Vec::new(),
    };
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let (Value::Int(start), Value::Int(end), Value::Array(master)) =
            (fields.first()?, fields.get(1)?, fields.get(2)?)
        else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        let Value::Int(port) = master.get(1)? else {
            return None;
        };
        let address = (host, u16::try_from(*port).ok()?);
        let index = match slot_map.masters.iter().position(|known| *known == address) {
            Some(index) => index,
            None => {
                slot_map.masters.push(address);
                slot_map.masters.len() - 1
            }
        };
        for slot in *start..=*end {
            *slot_map.owner.get_mut(usize::try_from(slot).ok()?)? = Some(index as u16);
        }
    }
    Some(slot_map)
}
