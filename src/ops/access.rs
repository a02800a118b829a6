//! What the Redis user must be allowed to do under a configuration (every command on every kind of key it will
//! touch), and the check of that against the server's ACL with `ACL DRYRUN`, at start-up and in `check --connect`.
//!
//! The check needs the user to run `ACL WHOAMI` and `ACL DRYRUN` (Redis ≥ 7). Where it may not (or the server has no
//! ACL DRYRUN, as on older Redis), nothing is checked up front and the daemon still treats a refusal at run time as
//! definite (ERROR, not ready, retried without skipping anything).

use crate::config::{ChannelSettings, CheckpointStore, Config};
use crate::exec::cache::{Cache, CacheError, READERS_KEY, VERSION_KEY, fence_slots, read_lease_keys, script_head};
use crate::pure::model::{KeyPart, KeyTemplate};

/// One command cachewarden will run, with sample arguments of the kind it will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Need {
    /// Why: the job, rule, channel or checkpoint it serves, with the template or pattern of its keys.
    pub purpose: String,
    /// The command and its arguments, as `ACL DRYRUN` takes them.
    pub command: Vec<String>,
}

/// A command the server's ACL refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub need: Need,
    /// The server's reason, naming the command, key or channel (`This user has no permissions to …`).
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (`{}`): {}",
            self.need.purpose,
            self.need.command.join(" "),
            self.reason
        )
    }
}

/// The outcome of [`check`].
#[derive(Debug)]
pub(crate) enum Checked {
    /// Every need was asked of the ACL; these were refused (none: all allowed).
    Refused(Vec<Refusal>),
    /// The user may not ask the ACL about itself (or the server cannot); nothing was checked.
    Unchecked(String),
}

/// A key a template can produce (placeholders and glob characters filled in), for asking about its pattern.
fn sample_key(template: &KeyTemplate) -> String {
    template
        .parts()
        .iter()
        .map(|part| match part {
            KeyPart::Literal(text) => sample_of_glob(text),
            KeyPart::Column(_) => "1".to_string(),
        })
        .collect()
}

/// A key matching the glob `pattern`.
fn sample_of_glob(pattern: &str) -> String {
    pattern.replace(['*', '?'], "x")
}

fn need(purpose: &str, command: &[&str]) -> Need {
    Need {
        purpose: purpose.to_string(),
        command: command.iter().map(|part| part.to_string()).collect(),
    }
}

/// Writing and deleting `key` the way the cache does: plain or, with stale-set protection, through its scripts,
/// declaring the keys [`script_head`] lists with every fence slot the configuration gives (and recording into the read
/// leases' evidence); under `[ha]` without protection, through the fenced script (the lease key, then the key).
fn key_writes(purpose: &str, key: &str, protected: bool, ha_key: Option<&str>, needs: &mut Vec<Need>) {
    needs.push(need(purpose, &["SET", key, "v", "PX", "1000"]));
    needs.push(need(purpose, &["UNLINK", key]));
    needs.push(need(purpose, &["GET", key]));
    let sha = "0".repeat(40);
    if protected {
        for fence in fence_slots(ha_key) {
            let [fence, version, readers] = script_head(fence);
            needs.push(need(purpose, &["EVALSHA", &sha, "4", fence, version, readers, key]));
            needs.push(need(purpose, &["EVAL", "return 1", "4", fence, version, readers, key]));
        }
    } else if let Some(lease) = ha_key {
        needs.push(need(purpose, &["EVALSHA", &sha, "2", lease, key]));
    }
}

/// Everything the Redis user must be allowed under `config`, each command once per kind of key. (Long on purpose:
/// a list, one block per part of the configuration, read top to bottom.)
pub(crate) fn redis_needs(config: &Config) -> Vec<Need> {
    let protected = config.redis.stale_set_protection;
    let fence = config.ha.as_ref().map(|ha| ha.key.as_str());
    let mut needs = vec![
        need("the health check", &["PING"]),
        need("the health check", &["INFO", "stats"]),
    ];
    if let Some(stream) = &config.daemon.dead_letter {
        let purpose = "[daemon] dead_letter";
        needs.push(need(purpose, &["XADD", stream, "MAXLEN", "~", "1", "*", "source", "x"]));
    }
    if config.redis.cluster {
        // The slot map, read at start and after every redirect.
        needs.push(need("cluster mode", &["CLUSTER", "SLOTS"]));
    }
    if protected {
        protection_needs(&mut needs);
    }
    if let Some(ha) = &config.ha {
        ha_needs("the [ha] lease", &ha.key, &mut needs);
        if config.shares_sources() {
            sharing_needs(&ha.key, &config.binlogs, &mut needs);
        }
    }
    key_needs(config, protected, fence, &mut needs);
    pieces_needs(config, &mut needs);
    let key = crate::ops::versions::KEY;
    for command in [
        vec!["HGETALL", key],
        vec!["HSET", key, "i", "v"],
        vec!["HDEL", key, "i"],
        vec!["TIME"],
    ] {
        needs.push(need("the register of versions sharing this Redis", &command));
    }
    if config.misses.is_some() {
        // `CONFIG GET`/`SET notify-keyspace-events` is tried too, but not needed: refused, it is said what to set.
        let channel = format!("__keyevent@{}__:keymiss", crate::exec::cache::db_of(&config.redis));
        needs.push(need("[misses]", &["SUBSCRIBE", &channel]));
    }
    if config.channel.enabled {
        channel_needs(&config.channel, protected, fence, &mut needs);
    }
    for binlog in &config.binlogs {
        if let CheckpointStore::Redis(key) = &binlog.checkpoint {
            let purpose = format!("[{}] checkpoint_key \"{key}\"", binlog.label);
            needs.push(need(&purpose, &["GET", key]));
            needs.push(need(&purpose, &["SET", key, "v"]));
        }
    }
    needs
}

/// Stale-set protection's commands: its scripts, the version counter, the read leases and their evidence.
fn protection_needs(needs: &mut Vec<Need>) {
    let purpose = "stale-set protection";
    needs.push(need(purpose, &["SCRIPT", "LOAD", "return 1"]));
    needs.push(need(purpose, &["TIME"]));
    needs.push(need(purpose, &["INCR", VERSION_KEY]));
    needs.push(need(purpose, &["GET", VERSION_KEY]));
    needs.push(need(purpose, &["WATCH", VERSION_KEY]));
    needs.push(need(purpose, &["UNWATCH"]));
    needs.push(need(purpose, &["MULTI"]));
    needs.push(need(purpose, &["EXEC"]));
    for command in [
        vec!["ZADD", READERS_KEY, "1", "m"],
        vec!["ZREM", READERS_KEY, "m"],
        vec!["ZSCORE", READERS_KEY, "m"],
        vec!["ZRANGE", READERS_KEY, "-1", "-1", "WITHSCORES"],
        vec!["ZREMRANGEBYSCORE", READERS_KEY, "0", "1"],
        vec!["ZRANGEBYSCORE", READERS_KEY, "0", "+inf"],
    ] {
        needs.push(need(purpose, &command));
    }
    let [version, readers, evidence] = read_lease_keys("m");
    let sha = "0".repeat(40);
    needs.push(need(purpose, &["EVALSHA", &sha, "3", &version, &readers, &evidence]));
    for command in [
        vec!["HSET", &evidence, "k", "1"],
        vec!["HGET", &evidence, "k"],
        vec!["HEXISTS", &evidence, ""],
        vec!["EXISTS", &evidence],
        vec!["PEXPIRE", &evidence, "1000"],
        vec!["UNLINK", &evidence],
    ] {
        needs.push(need(purpose, &command));
    }
}

/// Work sharing's commands: a lease per source (its writes carry it as their fence), and the instances alive.
fn sharing_needs(ha_key: &str, binlogs: &[crate::config::BinlogSettings], needs: &mut Vec<Need>) {
    for binlog in binlogs {
        let key = crate::ops::share::lease_key(ha_key, &binlog.name);
        ha_needs(&format!("the lease of binlog source \"{}\"", binlog.name), &key, needs);
    }
    let (purpose, members, sha) = (
        "the instances sharing the binlog sources",
        crate::ops::share::members_key(ha_key),
        "0".repeat(40),
    );
    needs.push(need(purpose, &["EVALSHA", &sha, "1", &members]));
    needs.push(need(purpose, &["ZADD", &members, "1", "i"]));
    needs.push(need(purpose, &["ZREMRANGEBYSCORE", &members, "0", "1"]));
    needs.push(need(purpose, &["ZCARD", &members]));
    needs.push(need(purpose, &["PEXPIRE", &members, "1000"]));
    needs.push(need(purpose, &["ZREM", &members, "i"]));
}

/// A lease's commands (the `[ha]` lease's, a binlog source's under work sharing) on its key `key`.
fn ha_needs(purpose: &str, key: &str, needs: &mut Vec<Need>) {
    needs.push(need(purpose, &["SET", key, "t", "NX", "PX", "1000"]));
    needs.push(need(purpose, &["GET", key]));
    needs.push(need(purpose, &["PEXPIRE", key, "1000"]));
    needs.push(need(purpose, &["DEL", key]));
    needs.push(need(purpose, &["EVAL", "return 1", "1", key]));
    needs.push(need(purpose, &["WATCH", key]));
}

/// A partitioned job's board (see `exec::warm::pieces`): its scripts and the commands they run on it.
fn pieces_needs(config: &Config, needs: &mut Vec<Need>) {
    for job in config.jobs.iter().filter(|job| job.partitions.is_some()) {
        let purpose = format!("the pieces of partitioned warm job \"{}\"", job.name);
        let board = crate::exec::warm::board_key(config.pieces_prefix(), &job.name);
        let sha = "0".repeat(40);
        needs.push(need(&purpose, &["EVALSHA", &sha, "1", &board]));
        needs.push(need(&purpose, &["TIME"]));
        for command in [
            vec!["HGET", &board, "f"],
            vec!["HSET", &board, "f", "v"],
            vec!["HEXISTS", &board, "f"],
            vec!["HDEL", &board, "f"],
            vec!["HINCRBY", &board, "f", "1"],
            vec!["HGETALL", &board],
            vec!["DEL", &board],
            vec!["PEXPIRE", &board, "1000"],
        ] {
            needs.push(need(&purpose, &command));
        }
    }
}

/// What writing each job's and each rule's keys needs.
fn key_needs(config: &Config, protected: bool, fence: Option<&str>, needs: &mut Vec<Need>) {
    for job in &config.jobs {
        let purpose = format!("warm job \"{}\" (keys {})", job.name, job.key);
        let key = sample_key(&job.key);
        key_writes(&purpose, &key, protected, fence, needs);
        if job.encoding.structure == crate::pure::codec::Structure::Hash {
            // Inside the write scripts (unprotected and unfenced: the plain batch script).
            needs.push(need(&purpose, &["HSET", &key, "f", "v"]));
            needs.push(need(&purpose, &["HGETALL", &key]));
            // A projection's field update reads the fields it may change.
            needs.push(need(&purpose, &["HMGET", &key, "f"]));
            needs.push(need(&purpose, &["HDEL", &key, "f"]));
            needs.push(need(&purpose, &["TYPE", &key]));
            needs.push(need(&purpose, &["PERSIST", &key]));
            needs.push(need(&purpose, &["PEXPIRE", &key, "1000"]));
            if !protected && fence.is_none() {
                needs.push(need(&purpose, &["EVAL", "return 1", "1", &key]));
            }
        }
        if let Some(members) = &job.members {
            // Inside the write scripts: the build key's chunks, its rename over the key, one member's change.
            let build = crate::exec::cache::build_key(&key, "0");
            let add = match members.kind {
                crate::pure::model::MemberKind::Set => vec!["SADD", &build, "m"],
                crate::pure::model::MemberKind::Zset => vec!["ZADD", &build, "1", "m"],
            };
            needs.push(need(&purpose, &add));
            needs.push(need(&purpose, &["PEXPIRE", &build, "1000"]));
            needs.push(need(&purpose, &["RENAME", &build, &key]));
            needs.push(need(&purpose, &["PERSIST", &key]));
            needs.push(need(&purpose, &["TYPE", &key]));
            let (add, remove) = match members.kind {
                crate::pure::model::MemberKind::Set => (vec!["SADD", &key, "m"], vec!["SREM", &key, "m"]),
                crate::pure::model::MemberKind::Zset => (vec!["ZADD", &key, "1", "m"], vec!["ZREM", &key, "m"]),
            };
            needs.push(need(&purpose, &add));
            needs.push(need(&purpose, &remove));
            // After member changes, whether a key came out short (missing, or a top N below N).
            let size = match members.kind {
                crate::pure::model::MemberKind::Set => "SCARD",
                crate::pure::model::MemberKind::Zset => "ZCARD",
            };
            needs.push(need(&purpose, &[size, &key]));
            if members.top.is_some() {
                for command in [
                    &["ZRANK", &key, "m"][..],
                    &["ZREMRANGEBYRANK", &key, "0", "-1"],
                    &["ZRANGE", &key, "0", "0", "WITHSCORES"],
                    &["ZREMRANGEBYSCORE", &key, "0", "0"],
                ] {
                    needs.push(need(&purpose, command));
                }
            }
            if !protected && fence.is_none() {
                needs.push(need(&purpose, &["EVAL", "return 1", "1", &key]));
            }
        }
        needs.push(need(&purpose, &["PTTL", &key]));
        needs.push(need(&purpose, &["SCAN", "0", "MATCH", &key]));
    }
    for rule in &config.rules {
        let table = format!("{}.{}", rule.database, rule.table);
        for template in rule.delete.iter().chain(&rule.refresh) {
            let purpose = format!("[[on_change]] {table} (keys {template})");
            key_writes(&purpose, &sample_key(template), protected, fence, needs);
            if template.as_str().contains('*') {
                needs.push(need(&purpose, &["SCAN", "0", "MATCH", template.as_str()]));
            }
        }
        if let Some(projection) = &rule.project {
            let purpose = format!("[[on_change]] {table} (projected keys {})", projection.key);
            key_writes(&purpose, &sample_key(&projection.key), protected, fence, needs);
        }
    }
}

/// The commands of the server's modules the jobs need (`type = "json"`: RedisJSON or Valkey JSON's `JSON.SET`,
/// `JSON.GET` and `JSON.DEL`), asked with `COMMAND INFO`: a message per job whose commands the server does not have, and what to ask
/// the ACL about those it has (asked apart from [`redis_needs`]: `ACL DRYRUN` of a command the server does not know is an
/// error, which would leave the whole ACL unchecked).
pub(crate) async fn module_needs(cache: &Cache, config: &Config) -> Result<(Vec<String>, Vec<Need>), CacheError> {
    let documents: Vec<&crate::pure::model::WarmJob> = config
        .jobs
        .iter()
        .filter(|job| job.encoding.structure == crate::pure::codec::Structure::Json)
        .collect();
    if documents.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let commands = ["JSON.SET", "JSON.GET", "JSON.DEL"];
    let known = cache.knows_commands(&commands).await?;
    let missing: Vec<&str> = commands
        .iter()
        .zip(&known)
        .filter(|(_, known)| !**known)
        .map(|(c, _)| *c)
        .collect();
    let mut problems = Vec::new();
    let mut needs = Vec::new();
    for job in documents {
        let purpose = format!("warm job \"{}\" (keys {})", job.name, job.key);
        if !missing.is_empty() {
            problems.push(format!(
                "{purpose}: type = \"json\" needs {}, which this Redis does not have: load the RedisJSON module \
                 (Redis Stack, or `loadmodule …/rejson.so`), use Valkey with valkey-json, or ElastiCache (JSON is built \
                 in from Redis OSS 6.2); or write the job as type = \"string\"",
                match missing.split_last() {
                    Some((last, [])) => last.to_string(),
                    Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                    None => String::new(),
                }
            ));
            continue;
        }
        let key = sample_key(&job.key);
        needs.push(need(&purpose, &["JSON.SET", &key, "$", "{}"]));
        needs.push(need(&purpose, &["JSON.GET", &key]));
        needs.push(need(&purpose, &["JSON.DEL", &key, "$.field"]));
        needs.push(need(&purpose, &["TYPE", &key]));
        needs.push(need(&purpose, &["PERSIST", &key]));
    }
    Ok((problems, needs))
}

/// The channel's commands: the keys its messages may touch, and its subscription or stream.
fn channel_needs(channel: &ChannelSettings, protected: bool, fence: Option<&str>, needs: &mut Vec<Need>) {
    for pattern in &channel.allow {
        let purpose = format!("[channel] allow \"{pattern}\"");
        key_writes(&purpose, &sample_of_glob(pattern), protected, fence, needs);
        needs.push(need(&purpose, &["SCAN", "0", "MATCH", pattern]));
    }
    match &channel.stream {
        Some(stream) => {
            let purpose = format!("[channel] stream \"{}\"", stream.name);
            let (name, group, consumer) = (&*stream.name, &*stream.group, &*stream.consumer);
            for command in [
                vec!["XGROUP", "CREATE", name, group, "0", "MKSTREAM"],
                vec!["XREADGROUP", "GROUP", group, consumer, "STREAMS", name, ">"],
                vec!["XACK", name, group, "0-1"],
                vec!["XAUTOCLAIM", name, group, consumer, "0", "0-0"],
            ] {
                needs.push(need(&purpose, &command));
            }
        }
        None => needs.push(need(
            &format!("[channel] name \"{}\"", channel.name),
            &["SUBSCRIBE", &channel.name],
        )),
    }
}

/// `ACL DRYRUN`s sent in one pipeline.
const DRYRUN_PIPELINE: usize = 1_000;

/// Asks the server's ACL about every need, as the connected user.
pub(crate) async fn check(cache: &Cache, needs: &[Need]) -> Result<Checked, CacheError> {
    let user = match cache.acl_whoami().await {
        Ok(user) => user,
        Err(error) if error.is_server_reply() => return Ok(Checked::Unchecked(format!("ACL WHOAMI: {error}"))),
        Err(error) => return Err(error),
    };
    // Each distinct command asked once, a pipeline at a time; every need reported by its command's answer. Linear in
    // what must be checked.
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&[String]> = needs
        .iter()
        .map(|need| &need.command[..])
        .filter(|command| seen.insert(*command))
        .collect();
    let mut answers: std::collections::HashMap<&[String], String> = std::collections::HashMap::new();
    for chunk in distinct.chunks(DRYRUN_PIPELINE) {
        let replies = match cache.acl_dryrun(&user, chunk).await {
            Ok(replies) => replies,
            Err(error) if error.is_server_reply() => return Ok(Checked::Unchecked(format!("ACL DRYRUN: {error}"))),
            Err(error) => return Err(error),
        };
        for (command, reply) in chunk.iter().zip(replies) {
            if let Some(reason) = reply {
                answers.insert(command, reason);
            }
        }
    }
    let mut refused = Vec::new();
    let mut reported = std::collections::HashSet::new();
    for need in needs {
        // The same key refused for several commands of one purpose is reported once.
        if let Some(reason) = answers.get(&need.command[..])
            && reported.insert((reason.as_str(), need.purpose.as_str()))
        {
            refused.push(Refusal {
                need: need.clone(),
                reason: reason.clone(),
            });
        }
    }
    Ok(Checked::Refused(refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_keys_fill_placeholders_and_globs() {
        let template = KeyTemplate::parse("catalog:{category}:page:*").unwrap();
        assert_eq!(sample_key(&template), "catalog:1:page:x");
        assert_eq!(sample_of_glob("user:?:*"), "user:x:x");
    }
}
