//! The set and sorted-set part of the vocabulary: how a job's rows become members of its keys.

use super::KeyTemplate;

/// The Redis type a member job's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberKind {
    /// `type = "set"`: SADD/SREM.
    Set,
    /// `type = "zset"`: ZADD/ZREM, scored by a column.
    Zset,
}

impl MemberKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::Set => "set",
            MemberKind::Zset => "zset",
        }
    }
}

/// A job whose key names a set (or sorted set) of the rows that render it, each row one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    pub kind: MemberKind,
    /// The member each row adds (`"{id}"`).
    pub member: KeyTemplate,
    /// A sorted set's score column.
    pub score: Option<String>,
    /// A sorted set that keeps the top N rows (`ORDER BY score DESC LIMIT N`).
    pub top: Option<Top>,
}

/// An exact top N kept in a sorted set: it holds up to `n + buffer` of the best rows, so that rows leaving the top
/// are replaced by the next ones without reading the database; below `n` it is warmed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    pub n: u64,
    pub buffer: u64,
    /// The job's query reading `n + buffer + 1` rows: what a warm run of it reads (one past the cap, so that the rename
    /// sees whether the cut splits rows of one score).
    pub query: String,
}

impl Top {
    /// How many members the sorted set holds at most.
    pub fn cap(&self) -> u64 {
        self.n + self.buffer
    }
}

impl Members {
    /// Its fields as `/jobs` and `cachewarden jobs` show them.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "member": self.member.as_str(),
            "score": self.score,
            "top": self.top.as_ref().map(|top| top.n),
            "buffer": self.top.as_ref().map(|top| top.buffer),
        })
    }
}
