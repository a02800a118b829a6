//! What cachewarden reads back from Redis, never writing: values (the audit, its own state such as the checkpoint),
//! key scans of every master, `INFO`, the ACL checks and `PING`.

use super::operations::Operations;
use super::topology::on_topology;
use super::{Cache, CacheError, SCAN_COUNT, command_failed, read_command};
use crate::pure::codec::Structure;
use crate::pure::model::MemberKind;

/// A reply of [`super::read_command`] as the value stored: `None` for no key (an empty hash or set is none either); a
/// hash's fields sorted and packed as `codec::Encoding::encode` packs them, so a stored hash compares with what a row
/// encodes to; a set's or sorted set's members as `members` compares them.
fn stored(reply: redis::Value, structure: Structure) -> Result<Option<Vec<u8>>, CacheError> {
    let convert = |error: redis::ParsingError| command_failed(error.into());
    match structure {
        Structure::String => redis::FromRedisValue::from_redis_value(reply).map_err(convert),
        Structure::Hash => {
            let mut fields: Vec<(String, Vec<u8>)> = redis::FromRedisValue::from_redis_value(reply).map_err(convert)?;
            if fields.is_empty() {
                return Ok(None);
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Some(crate::pure::codec::hash_value(&fields)))
        }
        // A document as JSON.GET prints it (compared as JSON, see `audit::same_value`).
        Structure::Json => redis::FromRedisValue::from_redis_value(reply).map_err(convert),
        Structure::Set => {
            let members: Vec<String> = redis::FromRedisValue::from_redis_value(reply).map_err(convert)?;
            Ok(crate::pure::members::compared_set(members))
        }
        Structure::Zset => {
            let pairs: Vec<(String, f64)> = redis::FromRedisValue::from_redis_value(reply).map_err(convert)?;
            Ok(crate::pure::members::compared_zset(pairs, None))
        }
    }
}

impl Cache {
    /// `GET key` as text (for cachewarden's own state, such as the binlog checkpoint).
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let mut conn = self.conn();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// Which of `commands` the server knows (`COMMAND INFO`: a module's commands are known only where it is loaded).
    pub(crate) async fn knows_commands(&self, commands: &[&str]) -> Result<Vec<bool>, CacheError> {
        let mut conn = self.conn();
        let infos: Vec<redis::Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg(commands)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(infos.iter().map(|info| !matches!(info, redis::Value::Nil)).collect())
    }

    /// How many members each of the `kind` sets at `keys` holds (`SCARD`, `ZCARD`; 0 where there is no key), in one
    /// pipeline (per master on a cluster).
    pub(crate) async fn sizes(&self, keys: &[String], kind: MemberKind) -> Result<Vec<u64>, CacheError> {
        let command = match kind {
            MemberKind::Set => "SCARD",
            MemberKind::Zset => "ZCARD",
        };
        let size = |key: &str| redis::cmd(command).arg(key).clone();
        let replies = on_topology!(&self.topology, t => t.read(keys, &size).await)?;
        replies
            .into_iter()
            .map(|reply| redis::from_redis_value(reply).map_err(|error| command_failed(error.into())))
            .collect()
    }

    /// The values of `keys` as stored (`None` where a key does not exist), in one pipeline (per master on a cluster):
    /// a string's bytes, or a hash's fields in the form the hash was written from (see [`stored`]).
    pub(crate) async fn get_many(
        &self,
        keys: &[String],
        structure: Structure,
    ) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let read = move |key: &str| read_command(key, structure);
        let replies = on_topology!(&self.topology, t => t.read(keys, &read).await)?;
        replies.into_iter().map(|reply| stored(reply, structure)).collect()
    }

    /// The keys matching `pattern` (one full SCAN of every master), at most `limit`; whether the limit cut it short.
    pub(crate) async fn keys_matching(&self, pattern: &str, limit: usize) -> Result<(Vec<String>, bool), CacheError> {
        let mut found = Vec::new();
        let complete = self
            .scan_each(pattern, |key| {
                if found.len() >= limit {
                    return false;
                }
                found.push(key);
                true
            })
            .await?;
        Ok((found, !complete))
    }

    /// Hands every key matching `pattern` (one full SCAN of every master) to `take` until it answers `false`;
    /// whether the SCAN went to its end.
    async fn scan_each(&self, pattern: &str, mut take: impl FnMut(String) -> bool) -> Result<bool, CacheError> {
        for node in 0..self.nodes() {
            if !self.scan_node(node, pattern, &mut take).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`Cache::scan_each`] on the `node`th node only.
    pub(super) async fn scan_node(
        &self,
        node: usize,
        pattern: &str,
        mut take: impl FnMut(String) -> bool,
    ) -> Result<bool, CacheError> {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self.scan_page(node, cursor, pattern).await?;
            for key in keys {
                if !take(key) {
                    return Ok(false);
                }
            }
            if next == 0 {
                return Ok(true);
            }
            cursor = next;
        }
    }

    /// One `SCAN cursor MATCH pattern COUNT …` call: the next cursor and the keys of this page.
    pub(super) async fn scan_page<K: redis::FromRedisValue>(
        &self,
        node: usize,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<K>), CacheError> {
        on_topology!(&self.topology, t => t.scan_page(node, cursor, pattern, SCAN_COUNT).await)
    }

    /// Up to `count` keys matching `pattern`, sampled uniformly from one full SCAN (reservoir sampling), so memory
    /// stays `count` keys whatever the keyspace.
    pub(crate) async fn sample_keys(&self, pattern: &str, count: usize) -> Result<Vec<String>, CacheError> {
        let mut seen = 0usize;
        // Sized as it fills: `count` is a cap, and a job may have far fewer keys.
        let mut sample = Vec::with_capacity(count.min(1024));
        self.scan_each(pattern, |key| {
            seen += 1;
            if sample.len() < count {
                sample.push(key);
            } else {
                let slot = fastrand::usize(..seen);
                if slot < count {
                    sample[slot] = key;
                }
            }
            true
        })
        .await?;
        Ok(sample)
    }

    /// A key's value and remaining TTL in milliseconds (`None` when the key does not exist).
    pub(crate) async fn get_with_ttl(
        &self,
        key: &str,
        structure: Structure,
    ) -> Result<Option<(Vec<u8>, i64)>, CacheError> {
        let mut conn = self.conn();
        let (value, ttl): (redis::Value, i64) = redis::pipe()
            .add_command(read_command(key, structure))
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(command_failed)?;
        Ok(stored(value, structure)?.map(|value| (value, ttl)))
    }

    /// The `INFO stats` section, as Redis writes it (on a cluster, its numbers summed over the masters).
    pub(crate) async fn info_stats(&self) -> Result<String, CacheError> {
        on_topology!(&self.topology, t => t.info("stats").await)
    }

    /// Keys Redis has evicted since it started (`INFO stats` `evicted_keys`); `None` when it cannot say.
    pub async fn evicted_keys(&self) -> Option<u64> {
        info_field(&self.info_stats().await.ok()?, "evicted_keys")
    }

    /// The connected user's name (`ACL WHOAMI`).
    pub(crate) async fn acl_whoami(&self) -> Result<String, CacheError> {
        let mut conn = self.conn();
        redis::cmd("ACL")
            .arg("WHOAMI")
            .query_async(&mut conn)
            .await
            .map_err(command_failed)
    }

    /// Whether `user` may run each of `commands` (`ACL DRYRUN`, pipelined): `None` when allowed, else the server's
    /// reason, in order.
    pub(crate) async fn acl_dryrun(
        &self,
        user: &str,
        commands: &[&[String]],
    ) -> Result<Vec<Option<String>>, CacheError> {
        let mut pipe = redis::Pipeline::with_capacity(commands.len());
        for command in commands {
            pipe.cmd("ACL").arg("DRYRUN").arg(user).arg(*command);
        }
        let mut conn = self.conn();
        let answers: Vec<String> = pipe.query_async(&mut conn).await.map_err(command_failed)?;
        Ok(answers
            .into_iter()
            .map(|answer| (answer != "OK").then_some(answer))
            .collect())
    }
}

/// A numeric field of a Redis `INFO` reply (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}
