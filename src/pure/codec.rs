//! How a rendered value is stored: compressed when it is larger than a threshold (gzip or zstd, each recognisable by
//! its own magic bytes, so any reader can tell), as the plain JSON it is, as a hash's fields, or as a JSON document
//! (`JSON.SET`); and how a stored value is read back.
//!
//! Pure: bytes in, bytes out. Compression is skipped when it would not make the value smaller, so a stored value is
//! never larger than its JSON.

use std::borrow::Cow;
use std::io::{Read as _, Write as _};

/// gzip's member header (RFC 1952): `1f 8b`.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// A zstd frame (RFC 8878): `28 b5 2f fd`.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd's default level: most of the ratio at a fraction of the higher levels' cost.
const ZSTD_LEVEL: i32 = 3;
/// A decoded value may be at most this much larger than its stored form; more is refused as corrupt (or hostile).
const MAX_EXPANSION: usize = 1024;

thread_local! {
    /// One zstd context per thread, reused: a context costs more to set up than a small value costs to compress.
    static ZSTD: std::cell::RefCell<std::io::Result<zstd::bulk::Compressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(ZSTD_LEVEL));
}

/// What a value for a Redis hash starts with, never the first bytes of JSON, gzip or zstd: the scripts that write
/// values (`cache::scripts`) replace such a key with a hash of the fields that follow (see [`Encoding::encode`]).
pub(crate) const HASH_TAG: &[u8] = b"\xffcwhash\x00";
/// What a value for a JSON document starts with: the scripts write the JSON after it with `JSON.SET`.
pub(crate) const JSON_TAG: &[u8] = b"\xffcwjson\x00";
/// Starts a binlog projection's update of a hash's fields (see [`hash_update`]).
pub(crate) const HASH_UPDATE_TAG: &[u8] = b"\xffcwhupd\x00";

/// The Redis type a job's keys are written as (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Structure {
    /// The rendered JSON (compressed if asked) as a string.
    #[default]
    String,
    /// One field per column of the row: text as itself, numbers in decimal, JSON columns as JSON text; a NULL column
    /// has no field.
    Hash,
    /// A JSON document (RedisJSON, Valkey JSON): the rendered JSON, written with `JSON.SET`.
    Json,
    /// A set of the members of every row that renders the key (see `members`).
    Set,
    /// A sorted set of those members, scored.
    Zset,
}

impl Structure {
    /// The name `type` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Structure::String => "string",
            Structure::Hash => "hash",
            Structure::Json => "json",
            Structure::Set => "set",
            Structure::Zset => "zset",
        }
    }
}

/// The compression a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// How one job (or projection) stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub compress: Compression,
    /// Values of at most this many bytes are stored plain.
    pub compress_over: usize,
    pub structure: Structure,
}

impl Encoding {
    /// Plain JSON, always. (Tests only.)
    #[cfg(test)]
    pub(crate) const PLAIN: Encoding = Encoding {
        compress: Compression::None,
        compress_over: 0,
        structure: Structure::String,
    };

    /// The bytes to store for the rendered `value`: for a hash, [`HASH_TAG`] and the fields of the JSON object as a
    /// MessagePack array `[field, value, …]` (sorted by field), which the write scripts unpack into `HSET`.
    pub fn encode(&self, value: Vec<u8>) -> Vec<u8> {
        if self.structure == Structure::Hash {
            return hash_fields(&value).map_or(value, |fields| hash_value(&fields));
        }
        if self.structure == Structure::Json {
            return document_value(&value);
        }
        if self.compress == Compression::None || value.len() <= self.compress_over {
            return value;
        }
        let compressed = match self.compress {
            Compression::None => return value,
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::with_capacity(value.len() / 4), flate2::Compression::default());
                encoder.write_all(&value).and_then(|()| encoder.finish())
            }
            Compression::Zstd => ZSTD.with(|compressor| match &mut *compressor.borrow_mut() {
                Ok(compressor) => compressor.compress(&value),
                Err(error) => Err(std::io::Error::new(error.kind(), error.to_string())),
            }),
        };
        match compressed {
            Ok(compressed) if compressed.len() < value.len() => compressed,
            // Incompressible (or, in theory, an allocation failure inside the codec): the plain value is correct.
            _ => value,
        }
    }

    /// How many bytes `encoded` (made by [`Encoding::encode`]) counts against `max_value_bytes`: a document's fields
    /// are carried beside it only for the write scripts to compare, so a document counts its JSON alone.
    pub(crate) fn stored_len(&self, encoded: &[u8]) -> usize {
        let document = JSON_TAG.len() + 6..JSON_TAG.len() + 10;
        match encoded.get(document) {
            Some(&[a, b, c, d]) if self.structure == Structure::Json => u32::from_be_bytes([a, b, c, d]) as usize,
            _ => encoded.len(),
        }
    }

    /// How large a rendered value may grow before it cannot fit `max_stored` bytes even compressed: the bound on
    /// what a whole-result key holds in memory while it is built.
    pub(crate) fn rendered_limit(&self, max_stored: usize) -> usize {
        match self.compress {
            Compression::None => max_stored,
            _ => max_stored.saturating_mul(64),
        }
    }
}

/// The fields a hash holds for a rendered JSON object (sorted by name): strings as themselves, numbers and booleans as
/// written, objects and arrays as JSON text, nulls left out. `None` when `json` is not an object.
pub(crate) fn hash_fields(json: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    object_fields(json).map(|(fields, _)| fields)
}

/// A hash's fields, by name, with their values.
type Fields = Vec<(String, Vec<u8>)>;

/// [`hash_fields`], and the names of the fields whose value is null.
fn object_fields(json: &[u8]) -> Option<(Fields, Vec<String>)> {
    let object: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(json).ok()?;
    let mut fields = Vec::with_capacity(object.len());
    let mut null = Vec::new();
    for (name, raw) in object {
        let text = raw.get();
        let value = match text.as_bytes().first() {
            Some(b'n') => {
                null.push(name);
                continue;
            }
            Some(b'"') => serde_json::from_str::<String>(text).ok()?.into_bytes(),
            _ => text.as_bytes().to_vec(),
        };
        fields.push((name, value));
    }
    Some((fields, null))
}

/// [`HASH_UPDATE_TAG`] and the fields of the JSON object `json` (a binlog projection of some of a row's columns) as a
/// MessagePack array `[n, field, value, … (n pairs), field, …]`: the fields to hold a value, then those whose column
/// is NULL, which the write script removes. Other fields of the hash are left as they are. `None` when `json` is no
/// object.
pub(crate) fn hash_update(json: &[u8]) -> Option<Vec<u8>> {
    let (fields, null) = object_fields(json)?;
    let count = fields.len().to_string().into_bytes();
    let mut parts: Vec<Vec<u8>> = vec![count];
    for (name, value) in fields {
        parts.push(name.into_bytes());
        parts.push(value);
    }
    parts.extend(null.into_iter().map(String::into_bytes));
    Some(packed(HASH_UPDATE_TAG, &parts))
}

/// Two [`hash_update`]s of one key as one: every field either names, the newer's value (or NULL) where both do.
pub(crate) fn merged_hash_updates(older: &[u8], newer: &[u8]) -> Vec<u8> {
    // Each update as (field, value or None for NULL).
    fn fields(update: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let parts = unpacked(HASH_UPDATE_TAG, update).unwrap_or_default();
        let Some((count, rest)) = parts.split_first() else {
            return Vec::new();
        };
        let pairs = std::str::from_utf8(count)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let (set, null) = rest.split_at((pairs * 2).min(rest.len()));
        let set = set.chunks(2).map(|pair| (pair[0].clone(), pair.get(1).cloned()));
        set.chain(null.iter().map(|name| (name.clone(), None))).collect()
    }
    let mut merged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = fields(older).into_iter().collect();
    merged.extend(fields(newer));
    let (set, null): (Vec<_>, Vec<_>) = merged.into_iter().partition(|(_, value)| value.is_some());
    let mut parts: Vec<Vec<u8>> = vec![set.len().to_string().into_bytes()];
    for (name, value) in set {
        parts.push(name);
        parts.push(value.unwrap_or_default());
    }
    parts.extend(null.into_iter().map(|(name, _)| name));
    packed(HASH_UPDATE_TAG, &parts)
}

/// [`JSON_TAG`] and the document `json` as a MessagePack array `[document, field, JSON text, …]`: an object's
/// top-level fields follow the document as their JSON texts, which the write scripts compare one by one with the
/// document already there and write only where they differ (none follow a document that is no object).
pub(crate) fn document_value(json: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![json];
    let object: Option<std::collections::BTreeMap<String, &serde_json::value::RawValue>> =
        serde_json::from_slice(json).ok();
    for (name, raw) in object.iter().flatten() {
        parts.push(name.as_bytes());
        parts.push(raw.get().as_bytes());
    }
    packed(JSON_TAG, &parts)
}

/// [`HASH_TAG`] and `fields` as a MessagePack array of str32 (what the write scripts' `cmsgpack.unpack` reads).
pub(crate) fn hash_value(fields: &[(String, Vec<u8>)]) -> Vec<u8> {
    let parts: Vec<&[u8]> = fields
        .iter()
        .flat_map(|(name, value)| [name.as_bytes(), value.as_slice()])
        .collect();
    packed(HASH_TAG, &parts)
}

/// Tag, then `parts` as a MessagePack array of str32 — what the scripts' `cmsgpack.unpack` reads.
pub(crate) fn packed<P: AsRef<[u8]>>(tag: &[u8], parts: &[P]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + 5 + parts.len() * 16);
    out.extend_from_slice(tag);
    out.push(0xdd);
    out.extend_from_slice(&(parts.len() as u32).to_be_bytes());
    for part in parts.iter().map(AsRef::as_ref) {
        out.push(0xdb);
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The str32 parts of a [`packed`] value after `tag`; `None` when `stored` is not one.
pub(crate) fn unpacked(tag: &[u8], stored: &[u8]) -> Option<Vec<Vec<u8>>> {
    fn word(bytes: &[u8]) -> Option<(usize, &[u8])> {
        let (head, rest) = bytes.split_first_chunk::<4>()?;
        Some((u32::from_be_bytes(*head) as usize, rest))
    }
    let rest = stored.strip_prefix(tag)?.strip_prefix(&[0xdd])?;
    let (count, mut rest) = word(rest)?;
    let mut parts = Vec::with_capacity(count.min(rest.len()));
    for _ in 0..count {
        let (len, after) = word(rest.strip_prefix(&[0xdb])?)?;
        parts.push(after.get(..len)?.to_vec());
        rest = &after[len..];
    }
    rest.is_empty().then_some(parts)
}

/// The fields of a [`hash_value`]; `None` when `stored` is not one.
pub(crate) fn unpack_hash(stored: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let parts = unpacked(HASH_TAG, stored)?;
    let mut fields = Vec::with_capacity(parts.len() / 2);
    let mut parts = parts.into_iter();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        fields.push((String::from_utf8(name).ok()?, value));
    }
    Some(fields)
}

/// `stored` for a person to read: a hash as a JSON object of its fields' text, anything else decoded as
/// [`decode`] does.
pub(crate) fn readable(stored: &[u8]) -> String {
    if let Some(fields) = unpack_hash(stored) {
        let object: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned().into()))
            .collect();
        return serde_json::Value::Object(object).to_string();
    }
    if let Some(document) = unpacked(JSON_TAG, stored).and_then(|parts| parts.into_iter().next()) {
        return String::from_utf8_lossy(&document).into_owned();
    }
    let decoded = decode(stored).unwrap_or(Cow::Borrowed(stored));
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The value an application reads back from `stored`: decompressed when it starts with a gzip or zstd magic, else
/// as stored.
pub(crate) fn decode(stored: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let limit = stored.len().saturating_mul(MAX_EXPANSION);
    if stored.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(stored)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|error| format!("not a valid gzip value: {error}"))?;
        if out.len() > limit {
            return Err("a gzip value that expands beyond any value cachewarden writes".into());
        }
        Ok(Cow::Owned(out))
    } else if stored.starts_with(&ZSTD_MAGIC) {
        zstd::bulk::decompress(stored, limit)
            .map(Cow::Owned)
            .map_err(|error| format!("not a valid zstd value: {error}"))
    } else {
        Ok(Cow::Borrowed(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_update_sets_the_fields_with_a_value_and_removes_the_null_ones() {
        let update = hash_update(br#"{"price":"21.00","note":null,"n":3}"#).unwrap();
        let parts = unpacked(HASH_UPDATE_TAG, &update).unwrap();
        let text: Vec<&str> = parts.iter().map(|part| std::str::from_utf8(part).unwrap()).collect();
        assert_eq!(text, ["2", "n", "3", "price", "21.00", "note"]);
        assert_eq!(hash_update(b"[1]"), None);
        // Two updates of a key merge, the newer winning: note set again, n now NULL, price kept.
        let newer = hash_update(br#"{"note":"hot","n":null}"#).unwrap();
        let merged = unpacked(HASH_UPDATE_TAG, &merged_hash_updates(&update, &newer)).unwrap();
        let text: Vec<&str> = merged.iter().map(|part| std::str::from_utf8(part).unwrap()).collect();
        assert_eq!(text, ["2", "note", "hot", "price", "21.00", "n"]);
    }

    #[test]
    fn a_document_carries_its_top_level_fields_as_json_texts() {
        let json = br#"{"name":"Caf\u00e9","tags":{"a":[1,2]},"gone":null,"n":19.90}"#;
        let parts = unpacked(JSON_TAG, &document_value(json)).unwrap();
        let text: Vec<&str> = parts.iter().map(|part| std::str::from_utf8(part).unwrap()).collect();
        assert_eq!(
            text,
            [
                std::str::from_utf8(json).unwrap(),
                "gone",
                "null",
                "n",
                "19.90",
                "name",
                r#""Caf\u00e9""#,
                "tags",
                r#"{"a":[1,2]}"#
            ]
        );
        // A whole result's array is the document alone.
        let parts = unpacked(JSON_TAG, &document_value(b"[1,2]")).unwrap();
        assert_eq!(parts, [b"[1,2]".to_vec()]);
        let document = Encoding {
            structure: Structure::Json,
            ..Encoding::PLAIN
        };
        assert_eq!(document.stored_len(&document.encode(json.to_vec())), json.len());
        assert_eq!(
            readable(&document.encode(json.to_vec())),
            std::str::from_utf8(json).unwrap()
        );
    }

    #[test]
    fn a_hash_has_a_field_per_column_as_text_without_nulls() {
        let json = br#"{"name":"Caf\u00e9 \"x\"","price":12345678901234567.89,"at":"2026-12-06 10:00:00","tags":{"a":[1,2]},"gone":null,"n":-3}"#;
        let fields = hash_fields(json).unwrap();
        let text: Vec<(&str, &str)> = fields
            .iter()
            .map(|(name, value)| (name.as_str(), std::str::from_utf8(value).unwrap()))
            .collect();
        assert_eq!(
            text,
            [
                ("at", "2026-12-06 10:00:00"),
                ("n", "-3"),
                ("name", "Café \"x\""),
                ("price", "12345678901234567.89"),
                ("tags", r#"{"a":[1,2]}"#),
            ]
        );
        assert_eq!(hash_fields(b"[1, 2]"), None);
        let hash = Encoding {
            structure: Structure::Hash,
            ..Encoding::PLAIN
        };
        let stored = hash.encode(br#"{"a":"x","b":null}"#.to_vec());
        let mut expected = HASH_TAG.to_vec();
        expected.extend_from_slice(&[0xdd, 0, 0, 0, 2, 0xdb, 0, 0, 0, 1, b'a', 0xdb, 0, 0, 0, 1, b'x']);
        assert_eq!(stored, expected);
        assert_eq!(unpack_hash(&stored), Some(vec![("a".to_string(), b"x".to_vec())]));
        assert_eq!(readable(&stored), r#"{"a":"x"}"#);
        assert_eq!(unpack_hash(&stored[..stored.len() - 1]), None);
    }

    fn catalog(bytes: usize) -> Vec<u8> {
        let mut value = b"[".to_vec();
        let mut i = 0;
        while value.len() < bytes {
            value.extend_from_slice(format!("{{\"id\":{i},\"name\":\"product {i}\",\"price\":\"19.90\"}},").as_bytes());
            i += 1;
        }
        value.pop();
        value.push(b']');
        value
    }

    #[test]
    fn values_over_the_threshold_are_compressed_and_decode_to_themselves() {
        let value = catalog(300 * 1024);
        for (compress, magic) in [
            (Compression::Gzip, &GZIP_MAGIC[..]),
            (Compression::Zstd, &ZSTD_MAGIC[..]),
        ] {
            let encoding = Encoding {
                compress,
                compress_over: 1024,
                structure: Structure::String,
            };
            let stored = encoding.encode(value.clone());
            assert!(stored.starts_with(magic), "{compress:?}");
            assert!(stored.len() < value.len() / 5, "{compress:?}: {} bytes", stored.len());
            assert_eq!(decode(&stored).unwrap(), &value[..]);
        }
    }

    #[test]
    fn small_and_incompressible_values_stay_plain() {
        let encoding = Encoding {
            compress: Compression::Zstd,
            compress_over: 1024,
            structure: Structure::String,
        };
        let small = br#"{"id":1,"name":"Kettle"}"#.to_vec();
        assert_eq!(encoding.encode(small.clone()), small);
        // Random bytes as a JSON string: compression cannot win, so the JSON is stored as it is.
        let noise: String = (0..4096).map(|_| fastrand::alphanumeric()).collect();
        let noise = format!("{{\"blob\":\"{noise}\"}}").into_bytes();
        let stored = encoding.encode(noise.clone());
        assert!(stored.len() <= noise.len());
        assert_eq!(decode(&stored).unwrap(), &noise[..]);
        assert_eq!(Encoding::PLAIN.encode(catalog(4096)), catalog(4096));
    }

    #[test]
    fn corrupt_compressed_values_are_errors_not_panics() {
        assert!(decode(&[0x1f, 0x8b, 0, 1, 2]).is_err());
        assert!(decode(&[0x28, 0xb5, 0x2f, 0xfd, 9, 9]).is_err());
        assert_eq!(decode(b"{}").unwrap(), &b"{}"[..]);
    }
}
