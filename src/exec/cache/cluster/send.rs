//! A batch of commands to the nodes that hold their keys: one pipeline per master that owns the commands' slots, and
//! per node importing a slot being migrated; redirects followed.
//!
//! - **ASK** (a slot being migrated, its key already moved): the slot's commands go at once to the node the ASK names,
//!   each after `ASKING`, for the rest of the batch (the slot map still names the old owner until the migration
//!   ends, so reading it again would only bring the same ASK back).
//! - **TRYAGAIN** (a command of several keys in a slot being migrated, some moved and some not): sent again after a
//!   short pause, until the migration has moved them all.
//! - **MOVED, CLUSTERDOWN, READONLY**, or a node that failed (a resharding that ended, a `CLUSTER FAILOVER`, a replica
//!   promoted): sent again once the slot map has been read afresh, after a pause that grows.
//! - **NOSCRIPT** (a promoted replica: `SCRIPT LOAD` is not replicated): the scripts are loaded and the batch goes
//!   again.
//!
//! Every write is idempotent, and commands for one key stay in order because they share a slot. redis-rs answers a
//! pipeline that met a redirect as a whole (the first such error), so every command of that pipeline goes again.

use std::collections::HashMap;
use std::time::Duration;

use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{ServerErrorKind, Value};

use super::Cluster;
use crate::exec::cache::{CacheError, command_failed};

/// How often a batch is sent again after redirects or a failed node before the error goes to the caller (whose own
/// retry loop takes over); with the pauses below, about six seconds: enough for a failover to settle.
const REDIRECT_ATTEMPTS: u32 = 12;

/// How many slots being migrated one batch follows to the nodes their ASKs name, at most.
const ASKED_SLOTS: usize = 64;

/// What a failed command (or pipeline) asks of the sender.
enum Failure {
    /// Its slot is being migrated to this node: ask it there.
    Ask { slot: u16, node: String },
    /// Some of its keys have been migrated and some not yet: again after a short pause.
    TryAgain,
    /// The cluster changed shape or a node failed: again after reading the slot map.
    Moved,
    /// The node lacks the scripts: load them and send again.
    NoScript,
    /// A definite error, for the caller.
    Fatal,
}

fn failure(error: &redis::RedisError) -> Failure {
    match error.kind() {
        redis::ErrorKind::Server(ServerErrorKind::Ask) => match error.redirect_node() {
            Some((node, slot)) => Failure::Ask {
                slot,
                node: node.to_string(),
            },
            None => Failure::Moved,
        },
        redis::ErrorKind::Server(ServerErrorKind::TryAgain) => Failure::TryAgain,
        redis::ErrorKind::Server(ServerErrorKind::NoScript) => Failure::NoScript,
        redis::ErrorKind::Server(
            ServerErrorKind::Moved
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        )
        | redis::ErrorKind::ClusterConnectionNotFound => Failure::Moved,
        _ if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout() =>
        {
            Failure::Moved
        }
        _ => Failure::Fatal,
    }
}

/// Where one pipeline of a round goes.
#[derive(PartialEq, Eq, Hash)]
enum Target {
    /// The master that owns the slots (`None` while a slot is not served).
    Owner(Option<u16>),
    /// A node importing a slot being migrated, named by an ASK.
    Asked(String),
}

impl Cluster {
    /// Sends each command (with the slot of its keys) to the master that owns the slot: one pipeline per master,
    /// all at once; see the module docs for redirects. Returns the replies in the commands' order; a command that
    /// failed for good (a refusal, a wrong type) fails the whole call, as a single node's pipeline does.
    pub(super) async fn send(&self, commands: &[(u16, redis::Cmd)]) -> Result<Vec<Value>, CacheError> {
        let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
        let mut pending: Vec<usize> = (0..commands.len()).collect();
        // Slots being migrated, and the node each one's ASK named.
        let mut asked: HashMap<u16, String> = HashMap::new();
        let mut attempt = 0;
        while !pending.is_empty() {
            let mut retry = Vec::new();
            let mut last_error = None;
            let (mut moved, mut pause, mut noscript) = (false, false, false);
            let mut note = |error: redis::RedisError, asked: &mut HashMap<u16, String>| -> Result<(), CacheError> {
                match failure(&error) {
                    Failure::Ask { slot, node } if asked.len() < ASKED_SLOTS => {
                        asked.insert(slot, node);
                    }
                    Failure::Ask { .. } | Failure::Moved => moved = true,
                    Failure::TryAgain => pause = true,
                    Failure::NoScript => noscript = true,
                    Failure::Fatal => return Err(command_failed(error)),
                }
                last_error = Some(error);
                Ok(())
            };
            for (indices, sent) in self.round(commands, &pending, &asked).await {
                match sent {
                    Ok(values) => {
                        for (i, value) in indices.into_iter().zip(values) {
                            match value {
                                Value::ServerError(error) => {
                                    note(error.into(), &mut asked)?;
                                    retry.push(i);
                                }
                                value => replies[i] = Some(value),
                            }
                        }
                    }
                    Err(error) => {
                        note(error, &mut asked)?;
                        retry.extend(indices);
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            attempt += 1;
            let last_error = last_error.expect("a command to retry has its error");
            if attempt >= REDIRECT_ATTEMPTS {
                return Err(command_failed(last_error));
            }
            if moved || noscript {
                tracing::warn!(
                    commands = retry.len(),
                    attempt,
                    error = %last_error,
                    "The cluster moved slots or lost a node under a batch; reading the slot map again."
                );
                tokio::time::sleep(Duration::from_millis(100) * attempt.min(10)).await;
                // A failed refresh (the node asked is the one that failed) is tried again on the next round.
                if let Err(error) = self.refresh().await {
                    tracing::debug!(%error, "Cannot read the slot map yet.");
                } else if noscript {
                    self.load_scripts().await?;
                }
                asked.clear();
            } else if pause {
                tokio::time::sleep(Duration::from_millis(10) * attempt).await;
            }
            retry.sort_unstable();
            pending = retry;
        }
        Ok(replies.into_iter().map(|reply| reply.unwrap_or(Value::Nil)).collect())
    }

    /// One round of [`Cluster::send`]: the `pending` of `commands`, one pipeline per master by the slot map as it is
    /// (and per node importing a slot in `asked`, each command after `ASKING`), all at once; per pipeline, the
    /// commands' indices and what came back.
    pub(super) async fn round(
        &self,
        commands: &[(u16, redis::Cmd)],
        pending: &[usize],
        asked: &HashMap<u16, String>,
    ) -> Vec<(Vec<usize>, redis::RedisResult<Vec<Value>>)> {
        let slot_map = self.slot_map();
        let mut groups: HashMap<Target, Vec<usize>> = HashMap::new();
        for &i in pending {
            let slot = commands[i].0;
            let target = match asked.get(&slot) {
                Some(node) => Target::Asked(node.clone()),
                None => Target::Owner(slot_map.owner[slot as usize]),
            };
            groups.entry(target).or_default().push(i);
        }
        let sends = groups.into_iter().map(|(target, indices)| {
            let asking = matches!(target, Target::Asked(_));
            let mut pipe = redis::Pipeline::with_capacity(indices.len() * if asking { 2 } else { 1 });
            for &i in &indices {
                if asking {
                    pipe.add_command(redis::cmd("ASKING"));
                }
                pipe.add_command(commands[i].1.clone());
            }
            let route = match target {
                Target::Owner(_) => {
                    SingleNodeRoutingInfo::SpecificNode(Route::new(commands[indices[0]].0, SlotAddr::Master))
                }
                Target::Asked(node) => {
                    let (host, port) = node.rsplit_once(':').unwrap_or((node.as_str(), "0"));
                    SingleNodeRoutingInfo::ByAddress {
                        host: host.to_string(),
                        port: port.parse().unwrap_or_default(),
                    }
                }
            };
            let mut conn = self.conn.clone();
            async move {
                let count = pipe.len();
                let sent = conn.route_pipeline(pipe, 0, count, route).await;
                // After ASKING, every other reply is the command's.
                let sent = sent.map(|values| match asking {
                    true => values.into_iter().skip(1).step_by(2).collect(),
                    false => values,
                });
                (indices, sent)
            }
        });
        futures_util::future::join_all(sends).await
    }
}
