//! A sample of the keyspace, per node: how many keys it holds (`DBSIZE`), some of them (every key of a node that holds
//! no more than the sample, else keys drawn at random with `RANDOMKEY`), and the memory of those the caller asks for
//! (`MEMORY USAGE`). Reads only; a few pipelines per node whatever the keyspace's size.

use redis::Value;

use super::operations::Operations;
use super::topology::on_topology;
use super::{Cache, CacheError};

/// One node's share of a sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeSample {
    /// The keys the node holds (`DBSIZE`).
    pub keys: u64,
    /// How many keys were drawn (each stands for `keys / drawn` of the node's keys).
    pub drawn: usize,
    /// The drawn keys the caller measures, with their memory in bytes (`None`: gone, or the ACL refused).
    pub measured: Vec<(String, Option<u64>)>,
}

impl Cache {
    /// Per node: its key count and up to `per_node` keys, those for which `measure` says yes with their memory.
    pub(crate) async fn sample_keyspace(
        &self,
        per_node: usize,
        measure: impl Fn(&str) -> bool,
    ) -> Result<Vec<NodeSample>, CacheError> {
        let mut samples = Vec::new();
        for node in 0..self.nodes() {
            let mut size = redis::pipe();
            size.cmd("DBSIZE");
            let keys = match self.on_node(node, size).await?.first() {
                Some(Value::Int(keys)) => u64::try_from(*keys).unwrap_or(0),
                _ => 0,
            };
            let drawn = if keys <= per_node as u64 {
                self.every_key(node).await?
            } else {
                let mut draw = redis::pipe();
                for _ in 0..per_node {
                    draw.cmd("RANDOMKEY");
                }
                self.on_node(node, draw).await?.into_iter().filter_map(key_of).collect()
            };
            let wanted: Vec<String> = drawn.iter().filter(|key| measure(key)).cloned().collect();
            let mut usage = redis::pipe();
            usage.ignore_errors();
            for key in &wanted {
                usage.cmd("MEMORY").arg("USAGE").arg(key);
            }
            let sizes = if wanted.is_empty() {
                Vec::new()
            } else {
                self.on_node(node, usage).await?
            };
            let measured = wanted
                .into_iter()
                .zip(sizes.into_iter().map(|size| match size {
                    Value::Int(bytes) => u64::try_from(bytes).ok(),
                    _ => None,
                }))
                .collect();
            samples.push(NodeSample {
                keys,
                drawn: drawn.len(),
                measured,
            });
        }
        Ok(samples)
    }

    /// The memory `key` takes (`MEMORY USAGE`); `None` when there is no such key.
    pub(crate) async fn memory_usage(&self, key: &str) -> Result<Option<u64>, CacheError> {
        let mut conn = self.conn();
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(super::command_failed)
    }

    async fn on_node(&self, node: usize, pipe: redis::Pipeline) -> Result<Vec<Value>, CacheError> {
        on_topology!(&self.topology, t => t.on_node_pipeline(node, pipe).await)
    }

    /// Every key of the `node`th node (one SCAN; only for a node known to hold few).
    async fn every_key(&self, node: usize) -> Result<Vec<String>, CacheError> {
        let mut keys = Vec::new();
        self.scan_node(node, "*", |key| {
            keys.push(key);
            true
        })
        .await?;
        Ok(keys)
    }
}

/// A `RANDOMKEY` reply's key (none from an empty node).
fn key_of(reply: Value) -> Option<String> {
    match reply {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}
