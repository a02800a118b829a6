//! A set's or sorted set's warm run: each row's member gathered by key, written in chunks to a key of its own per set
//! (`cache::build_key`: same slot, same prefix), and every finished one renamed over its key at the end, so a reader
//! sees the old set or the new one and never half of one. Memory stays bounded: members wait in Rust only until a
//! few thousand are gathered; only each key's name is kept for the whole run. The build keys carry the run's own id,
//! so chunks only add and may land in any order; the renames wait for every chunk.
//!
//! The renames carry the run's read stamp like any warm value, so stale-set protection refuses the rename of a key
//! that a change reached after the read (the key keeps the set the change was applied to).

use std::collections::HashMap;

use super::Sink;
use crate::exec::cache::{CacheError, build_key};
use crate::pure::members::{DROP_TAG, chunk_value, move_value};
use crate::pure::model::{MemberKind, WarmJob};

/// A key being built outlives its run's timeout by this much before it expires.
const SAFETY_MARGIN: std::time::Duration = std::time::Duration::from_secs(300);

/// Members waiting in Rust, over all keys, before they are written out.
const WAITING_MEMBERS: usize = 10_000;
/// Bytes of members waiting, over all keys.
const WAITING_BYTES: usize = 1024 * 1024;
/// One key's members per chunk at most (one script call each).
const CHUNK_MEMBERS: usize = 4_000;

/// One set being built.
struct Building {
    build: String,
    waiting: Vec<(String, Option<String>)>,
}

/// The sets of one run, by key, in the order their keys first came.
pub(super) struct Sets {
    kind: MemberKind,
    /// How long a key being built lives after its last chunk: past the run's own timeout.
    safety_ms: u64,
    /// A top N's N + buffer (0 otherwise), for the rename.
    cap: u64,
    /// This run's part of the build keys' names: no other run (a dead one's leftovers, another instance's) adds to
    /// them, so chunks need no order among themselves.
    run: String,
    order: Vec<String>,
    keys: HashMap<String, Building>,
    waiting: usize,
    waiting_bytes: usize,
}

impl Sets {
    pub(super) fn new(job: &WarmJob) -> Option<Self> {
        let members = job.members.as_deref()?;
        Some(Self {
            kind: members.kind,
            safety_ms: (job.timeout + SAFETY_MARGIN).as_millis() as u64,
            cap: members.top.as_ref().map_or(0, |top| top.cap()),
            run: format!("{:016x}", fastrand::u64(..)),
            order: Vec::new(),
            keys: HashMap::new(),
            waiting: 0,
            waiting_bytes: 0,
        })
    }

    /// Adds a row's member (and score) to `key`'s set, writing chunks out when enough wait.
    pub(super) async fn add(
        &mut self,
        key: &str,
        member: String,
        score: Option<String>,
        sink: &mut impl Sink,
    ) -> Result<(), CacheError> {
        self.waiting += 1;
        self.waiting_bytes += member.len() + score.as_ref().map_or(0, String::len) + 16;
        if !self.keys.contains_key(key) {
            self.order.push(key.to_string());
            let building = Building {
                build: build_key(key, &self.run),
                waiting: Vec::new(),
            };
            self.keys.insert(key.to_string(), building);
        }
        let building = self.keys.get_mut(key).expect("inserted above");
        building.waiting.push((member, score));
        if building.waiting.len() >= CHUNK_MEMBERS {
            let (build, members, value) = Self::chunk(self.kind, self.safety_ms, building);
            self.waiting -= members;
            sink.push(build, value).await?;
        }
        if self.waiting >= WAITING_MEMBERS || self.waiting_bytes >= WAITING_BYTES {
            self.write_waiting(sink).await?;
        }
        Ok(())
    }

    /// Every key's waiting members as one chunk each.
    async fn write_waiting(&mut self, sink: &mut impl Sink) -> Result<(), CacheError> {
        for key in &self.order {
            let building = self.keys.get_mut(key).expect("every key in the order is built");
            if !building.waiting.is_empty() {
                let (build, _, value) = Self::chunk(self.kind, self.safety_ms, building);
                sink.push(build, value).await?;
            }
        }
        self.waiting = 0;
        self.waiting_bytes = 0;
        Ok(())
    }

    /// The key being built, how many members and the write of `building`'s waiting members.
    fn chunk(kind: MemberKind, safety_ms: u64, building: &mut Building) -> (String, usize, Vec<u8>) {
        let items = std::mem::take(&mut building.waiting);
        let value = chunk_value(kind, safety_ms, &items);
        (building.build.clone(), items.len(), value)
    }

    /// Writes what waits, waits for every chunk to land, then renames each built set over its key.
    pub(super) async fn finish(mut self, sink: &mut impl Sink) -> Result<(), CacheError> {
        self.write_waiting(sink).await?;
        // On a cluster the batches in flight go out in parallel: every chunk must land before its rename.
        sink.settle().await?;
        for key in &self.order {
            let building = &self.keys[key];
            sink.push(key.clone(), move_value(&building.build, self.cap)).await?;
        }
        // A rename protection refused left its built set behind: it goes (a done rename left nothing).
        sink.settle().await?;
        for key in std::mem::take(&mut self.order) {
            let building = self.keys.remove(&key).expect("every key in the order is built");
            sink.push(building.build, DROP_TAG.to_vec()).await?;
        }
        Ok(())
    }
}
