//! Sets and sorted sets: how a job's rows become members (`type = "set"`/`"zset"`), and the tagged values that carry
//! their writes to the write scripts (`cache::scripts`), which every write path runs — so stale-set protection, the HA
//! fence and Redis Cluster apply to them as to any value.
//!
//! Four kinds of write, each a value that starts with a tag no JSON, gzip or zstd value starts with:
//! - [`chunk_value`]: members added to a key under construction (a warm run builds each set under a temporary key);
//! - [`move_value`]: the finished temporary key renamed over the real one — a reader sees the old set or the new one,
//!   never half of one;
//! - [`DROP_TAG`]: the temporary key removed after its rename (left only where protection refused the rename);
//! - [`member_change`]: one member added, re-scored or removed (a binlog row change), applied only where the key
//!   exists, so a set is never started from one member.
//!
//! Pure: bytes in, bytes out.

use crate::pure::codec::{packed, unpacked};
use crate::pure::model::{MemberKind, Members, Top};

/// A chunk of members for a key under construction: `[safety ms, kind, (score,) member, …]`.
pub(crate) const CHUNK_TAG: &[u8] = b"\xffcwmadd\x00";
/// A finished temporary key to rename over the key: `[its name, a top N's cap or 0]`.
pub(crate) const MOVE_TAG: &[u8] = b"\xffcwmove\x00";
/// One member's change: `[kind, op, member, score, a top N's cap or 0]`.
pub(crate) const MEMBER_TAG: &[u8] = b"\xffcwmemb\x00";
/// A key under construction that is done with: what a refused rename left behind goes.
pub(crate) const DROP_TAG: &[u8] = b"\xffcwdrop\x00";

/// What [`compared_set`] and [`compared_zset`] start with (never written to Redis).
const SET_READ_TAG: &[u8] = b"\xffcwsread\x00";
const ZSET_READ_TAG: &[u8] = b"\xffcwzread\x00";

/// One change of a member, as a binlog row change asks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum MemberOp {
    /// The row is in the job's result: add the member (with its score, for a sorted set).
    Add { score: Option<String> },
    /// The row left the result (deleted, or moved out of the filter or to another key).
    Remove,
}

fn kind_word(kind: MemberKind) -> &'static [u8] {
    match kind {
        MemberKind::Set => b"set",
        MemberKind::Zset => b"zset",
    }
}

/// Members (with their scores, for a sorted set) to add to a key under construction, which lives `safety_ms` after its
/// last chunk at most (a run that died leaves it to expire). Chunks of one key may land in any order: each only adds.
pub(crate) fn chunk_value(kind: MemberKind, safety_ms: u64, items: &[(String, Option<String>)]) -> Vec<u8> {
    let safety = safety_ms.to_string();
    let head: [&[u8]; 2] = [safety.as_bytes(), kind_word(kind)];
    let per_item = if kind == MemberKind::Zset { 2 } else { 1 };
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + items.len() * per_item);
    parts.extend(head);
    for (member, score) in items {
        if kind == MemberKind::Zset {
            parts.push(score.as_deref().unwrap_or("0").as_bytes());
        }
        parts.push(member.as_bytes());
    }
    packed(CHUNK_TAG, &parts)
}

/// The members a [`chunk_value`] adds, each with its score (0 in a set); `None` when `stored` is not one.
pub(crate) fn chunk_members(stored: &[u8]) -> Option<Vec<(String, f64)>> {
    let parts = unpacked(CHUNK_TAG, stored)?;
    let text = |part: &[u8]| String::from_utf8_lossy(part).into_owned();
    let items = parts.get(2..)?;
    Some(match parts.get(1).map(Vec::as_slice) {
        Some(b"zset") => items
            .chunks(2)
            .map(|pair| {
                (
                    text(pair.get(1).map_or(&[][..], Vec::as_slice)),
                    text(&pair[0]).parse().unwrap_or(f64::NAN),
                )
            })
            .collect(),
        _ => items.iter().map(|member| (text(member), 0.0)).collect(),
    })
}

/// Renames the finished temporary key `temp` over the key (and sets the key's TTL). `cap` is a top N's N + buffer (0
/// otherwise): read one row past it, the set is cut back to it, dropping every member of the lowest score when the cut
/// splits that score (see the scripts' `move_built`). A missing `temp` (evicted) leaves the key as it is.
pub(crate) fn move_value(temp: &str, cap: u64) -> Vec<u8> {
    let cap = cap.to_string();
    packed(MOVE_TAG, &[temp.as_bytes(), cap.as_bytes()])
}

/// The temporary key a [`move_value`] renames.
pub(crate) fn moved_from(stored: &[u8]) -> Option<String> {
    let parts = unpacked(MOVE_TAG, stored)?;
    Some(String::from_utf8_lossy(parts.first()?).into_owned())
}

/// One member's change for `members`' keys. A top-N sorted set keeps the top of the rows: see the scripts'
/// `top_member`.
pub(crate) fn member_change(members: &Members, member: &str, op: &MemberOp) -> Vec<u8> {
    let (op, score) = match op {
        MemberOp::Add { score } => ("add", score.as_deref().unwrap_or("0")),
        MemberOp::Remove => ("remove", "0"),
    };
    let cap = members.top.as_ref().map_or(0, Top::cap).to_string();
    let parts: [&[u8]; 5] = [
        kind_word(members.kind),
        op.as_bytes(),
        member.as_bytes(),
        score.as_bytes(),
        cap.as_bytes(),
    ];
    packed(MEMBER_TAG, &parts)
}

/// Whether `value` is one of this module's writes (never compressed, never read back as a value).
pub(crate) fn is_member_write(value: &[u8]) -> bool {
    [CHUNK_TAG, MOVE_TAG, MEMBER_TAG, DROP_TAG]
        .iter()
        .any(|tag| value.starts_with(tag))
}

/// Whether `value` writes a key under construction rather than a key a reader reads.
pub(crate) fn is_build_write(value: &[u8]) -> bool {
    value.starts_with(CHUNK_TAG) || value.starts_with(DROP_TAG)
}

/// A set as the audit compares it, from Redis or from the query: the members sorted, packed. `None` for no member
/// (Redis has no empty set).
pub(crate) fn compared_set(mut members: Vec<String>) -> Option<Vec<u8>> {
    members.sort_unstable();
    members.dedup();
    (!members.is_empty()).then(|| packed(SET_READ_TAG, &members))
}

/// A sorted set as the audit compares it: best first as `ZREVRANGE` reads it (score, then member bytes, both
/// descending), each member followed by its score as Rust prints the number; only the first `top` when given.
pub(crate) fn compared_zset(mut pairs: Vec<(String, f64)>, top: Option<usize>) -> Option<Vec<u8>> {
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.as_bytes().cmp(a.0.as_bytes())));
    pairs.truncate(top.unwrap_or(usize::MAX));
    let scores: Vec<String> = pairs.iter().map(|(_, score)| score.to_string()).collect();
    let parts: Vec<&[u8]> = pairs
        .iter()
        .zip(&scores)
        .flat_map(|((member, _), score)| [member.as_bytes(), score.as_bytes()])
        .collect();
    (!pairs.is_empty()).then(|| packed(ZSET_READ_TAG, &parts))
}

/// The best `n` of a [`compared_zset`] (what a reader of a top N reads).
pub(crate) fn best(compared: &[u8], n: usize) -> Option<Vec<u8>> {
    let parts = unpacked(ZSET_READ_TAG, compared)?;
    let kept = &parts[..parts.len().min(n * 2)];
    (!kept.is_empty()).then(|| packed(ZSET_READ_TAG, kept))
}

/// What a [`compared_set`] or [`compared_zset`] holds, for a person: a JSON array of members, or of `[member, score]`.
pub(crate) fn readable(stored: &[u8]) -> Option<String> {
    let text = |part: &Vec<u8>| String::from_utf8_lossy(part).into_owned();
    if let Some(parts) = unpacked(SET_READ_TAG, stored) {
        return Some(serde_json::Value::from(parts.iter().map(text).collect::<Vec<_>>()).to_string());
    }
    let parts = unpacked(ZSET_READ_TAG, stored)?;
    let pairs: Vec<serde_json::Value> = parts
        .chunks(2)
        .map(|pair| {
            serde_json::json!([
                text(&pair[0]),
                pair.get(1).map(text).and_then(|s| s.parse::<f64>().ok())
            ])
        })
        .collect();
    Some(serde_json::Value::from(pairs).to_string())
}

/// A score as Redis takes it: a finite number, written as the database gave it. `None` for text that is not one.
pub(crate) fn score(text: &str) -> Option<&str> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .map(|_| text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::model::KeyTemplate;

    fn zset(top: Option<Top>) -> Members {
        Members {
            kind: MemberKind::Zset,
            member: KeyTemplate::parse("{id}").unwrap(),
            score: Some("sales".into()),
            top,
        }
    }

    #[test]
    fn chunks_carry_members_and_scores_in_order() {
        let items = vec![
            ("7".to_string(), Some("1.5".to_string())),
            ("8".into(), Some("-2".into())),
        ];
        let stored = chunk_value(MemberKind::Zset, 60_000, &items);
        let parts = unpacked(CHUNK_TAG, &stored).unwrap();
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(parts, [&b"60000"[..], b"zset", b"1.5", b"7", b"-2", b"8"]);
        assert_eq!(
            chunk_members(&stored).unwrap(),
            [("7".to_string(), 1.5), ("8".to_string(), -2.0)]
        );
        let set = chunk_value(MemberKind::Set, 1, &[("a".into(), None)]);
        assert_eq!(chunk_members(&set).unwrap(), [("a".to_string(), 0.0)]);
        assert!(is_member_write(&set));
        assert_eq!(unpacked(CHUNK_TAG, &set[..set.len() - 1]), None);
        assert_eq!(moved_from(&move_value("k:tmp", 15)).as_deref(), Some("k:tmp"));
    }

    #[test]
    fn member_changes_name_the_top_and_its_buffer() {
        let stored = member_change(
            &zset(Some(Top {
                n: 10,
                buffer: 5,
                query: String::new(),
            })),
            "42",
            &MemberOp::Add {
                score: Some("3".into()),
            },
        );
        let parts = unpacked(MEMBER_TAG, &stored).unwrap();
        assert_eq!(parts, [&b"zset"[..], b"add", b"42", b"3", b"15"]);
        let removed = member_change(&zset(None), "42", &MemberOp::Remove);
        assert_eq!(
            unpacked(MEMBER_TAG, &removed).unwrap()[1..],
            [&b"remove"[..], b"42", b"0", b"0"]
        );
    }

    #[test]
    fn sets_compare_sorted_and_sorted_sets_best_first_as_redis_reads_them() {
        let a = compared_set(vec!["b".into(), "a".into(), "b".into()]);
        assert_eq!(a, compared_set(vec!["a".into(), "b".into()]));
        assert_eq!(readable(a.as_ref().unwrap()).unwrap(), r#"["a","b"]"#);
        assert_eq!(compared_set(Vec::new()), None);
        let pairs = vec![
            ("9".to_string(), 5.0),
            ("10".into(), 5.0),
            ("3".into(), 7.5),
            ("4".into(), 1.0),
        ];
        let top = compared_zset(pairs, Some(3)).unwrap();
        // Equal scores: the member's bytes, highest first ("9" > "10").
        assert_eq!(readable(&top).unwrap(), r#"[["3",7.5],["9",5.0],["10",5.0]]"#);
        assert_eq!(
            Some(top.clone()),
            compared_zset(vec![("10".into(), 5.0), ("9".into(), 5.0), ("3".into(), 7.5)], None)
        );
        assert_eq!(readable(&best(&top, 1).unwrap()).unwrap(), r#"[["3",7.5]]"#);
    }

    #[test]
    fn scores_are_finite_numbers() {
        assert_eq!(score("12.50"), Some("12.50"));
        assert_eq!(score("-3e2"), Some("-3e2"));
        assert_eq!(score("abc"), None);
        assert_eq!(score("inf"), None);
        assert_eq!(score("NaN"), None);
    }
}
