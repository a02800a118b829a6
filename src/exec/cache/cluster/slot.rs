//! Redis Cluster key slots: which of the 16384 slots a key hashes to, a hash tag for each slot (so that
//! cachewarden's own per-slot keys land in the slot of the data keys they guard), and keys grouped by slot.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::exec::cache::SCRIPT_BATCH;

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The slot Redis files `key` under: CRC16 (XMODEM) of the key's hash tag (the part between the first `{` and the
/// next `}`, when not empty) or else of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&byte| byte == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&byte| byte == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    (crc16(hashed) as usize % SLOTS) as u16
}

/// A short hash tag that hashes to `slot`: `{tag}` in a key puts the key in that slot.
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| {
        // Counting in hex until every slot has a tag takes about 170,000 CRCs (a few milliseconds), once.
        let mut tags = vec![String::new(); SLOTS];
        let mut missing = SLOTS;
        let mut n = 0u32;
        while missing > 0 {
            let tag = format!("{n:x}");
            let slot = key_slot(tag.as_bytes()) as usize;
            if tags[slot].is_empty() {
                tags[slot] = tag;
                missing -= 1;
            }
            n += 1;
        }
        tags
    })[slot as usize]
}

/// A name for a key to build `key`'s new value under before renaming it over `key`: `key` followed by `suffix`, in
/// `key`'s slot (a RENAME stays within one slot on a cluster), and starting with `key` (an ACL key pattern that
/// allows `key` allows it too).
pub(crate) fn slot_mate(key: &str, suffix: &str) -> String {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').is_some_and(|open| {
        let rest = &bytes[open + 1..];
        rest.iter().position(|&b| b == b'}').is_some_and(|close| close > 0)
    });
    if tagged {
        // The key's own hash tag comes first in the name too.
        return format!("{key}{suffix}");
    }
    let slot = key_slot(bytes);
    if !key.contains('{') {
        return format!("{key}{suffix}{{{}}}", slot_tag(slot));
    }
    // A brace without a tag (`a{b`, `a{}b`): the whole name is hashed, so count until one lands in the slot (about
    // 16,000 CRCs; such keys are rare).
    (0u32..)
        .map(|n| format!("{key}{suffix}-{n:x}"))
        .find(|name| key_slot(name.as_bytes()) == slot)
        .expect("some counter lands in every slot")
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster uses it.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[((crc >> 8) as u8 ^ byte) as usize]
    })
}

const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Positions of `keys` grouped by slot, each group in the keys' order, cut at [`SCRIPT_BATCH`].
pub(super) fn by_slot<'a>(keys: impl Iterator<Item = &'a [u8]>) -> Vec<(u16, Vec<usize>)> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    let mut open: HashMap<u16, usize> = HashMap::new();
    for (i, key) in keys.enumerate() {
        let slot = key_slot(key);
        let group = match open.get(&slot) {
            Some(&group) if groups[group].1.len() < SCRIPT_BATCH => group,
            _ => {
                groups.push((slot, Vec::new()));
                open.insert(slot, groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[group].1.push(i);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // The check value of CRC16/XMODEM, and slots Redis' CLUSTER KEYSLOT gives for these keys.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"user:{42}:profile"), key_slot(b"42"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(key_slot(b"a{}b"), (crc16(b"a{}b") as usize % SLOTS) as u16);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
    }

    #[test]
    fn a_slot_mate_shares_the_slot_and_starts_with_the_key() {
        for key in [
            "category:7:products",
            "top:{shop}:products",
            "odd{key",
            "empty{}tag",
            "x",
        ] {
            let mate = slot_mate(key, ":build");
            assert!(mate.starts_with(&format!("{key}:build")), "{mate}");
            assert_eq!(key_slot(mate.as_bytes()), key_slot(key.as_bytes()), "{key} → {mate}");
        }
        assert_eq!(slot_mate("top:{shop}:products", ":build"), "top:{shop}:products:build");
    }

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for slot in [0u16, 1, 5460, 5461, 12182, 16383] {
            assert_eq!(
                key_slot(format!("cachewarden:{{{}}}:slot", slot_tag(slot)).as_bytes()),
                slot
            );
        }
        assert!((0..SLOTS as u16).all(|slot| key_slot(slot_tag(slot).as_bytes()) == slot));
    }
}
