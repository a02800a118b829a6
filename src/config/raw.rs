//! A serde mirror of `jobs.toml`: every field optional and loosely typed, so that validation can see the whole file
//! and report every problem at once. Nothing here is checked beyond TOML types; `validate` turns it into `Config`.

use serde::Deserialize;
use serde::de::{Error as _, Visitor};

/// `[mysql]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawMysql {
    pub url: Option<String>,
    pub pool_size: Option<IntOrString>,
    pub connect_timeout: Option<String>,
    pub ssl_mode: Option<String>,
    pub ssl_ca: Option<String>,
}

/// `[redis]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRedis {
    pub url: Option<String>,
    pub connect_timeout: Option<String>,
    pub ca_file: Option<String>,
    pub stale_set_protection: Option<BoolOrString>,
    pub cluster: Option<BoolOrString>,
    pub urls: Option<Vec<String>>,
}

/// `[defaults]`: values every `[[warm]]` job inherits unless it sets its own.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDefaults {
    pub ttl: Option<String>,
    pub jitter: Option<String>,
    pub max_value_bytes: Option<IntOrString>,
    pub timeout: Option<String>,
    pub compress: Option<String>,
    pub compress_over: Option<IntOrString>,
}

/// `[crypto]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCrypto {
    pub key_file: Option<String>,
    pub write_key: Option<String>,
}

/// `[daemon]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDaemon {
    pub max_concurrent_jobs: Option<IntOrString>,
    pub shutdown_grace: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub audit_period: Option<String>,
    /// The older name of `audit_period`.
    pub audit_interval: Option<String>,
    /// No longer used (the continuous audit checks every key); accepted so that older files still load.
    pub audit_sample: Option<IntOrString>,
    pub audit_repair: Option<BoolOrString>,
    pub audit_slice: Option<IntOrString>,
    pub dead_letter: Option<String>,
    pub dead_letter_length: Option<IntOrString>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAdmin {
    pub enabled: Option<BoolOrString>,
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

/// `[misses]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawMisses {
    pub enabled: Option<BoolOrString>,
    pub max_fills_per_second: Option<IntOrString>,
    pub negative_ttl: Option<String>,
}

/// `[ha]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawHa {
    pub enabled: Option<BoolOrString>,
    pub lease_ttl: Option<String>,
    pub key: Option<String>,
    pub instance: Option<String>,
}

/// One `[[warm]]` table.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawWarmJob {
    pub name: Option<String>,
    pub schedule: Option<String>,
    pub query: Option<String>,
    pub key: Option<String>,
    pub ttl: Option<String>,
    pub jitter: Option<String>,
    pub run_on_start: Option<bool>,
    pub enabled: Option<bool>,
    pub timeout: Option<String>,
    pub shape: Option<String>,
    /// The Redis type each key is written as (`type = "hash"`).
    #[serde(rename = "type")]
    pub structure: Option<String>,
    pub json_columns: Option<Vec<String>>,
    pub allow_sensitive: Option<Vec<String>>,
    pub max_value_bytes: Option<IntOrString>,
    pub refresh_query: Option<String>,
    pub compress: Option<String>,
    pub compress_over: Option<IntOrString>,
    pub encrypt_columns: Option<Vec<String>>,
    pub derive_rules: Option<bool>,
    /// The `[[binlog]]` source its tables' changes arrive from.
    pub source: Option<String>,
    pub fill_on_miss: Option<bool>,
    /// A set's or sorted set's member template.
    pub member: Option<String>,
    /// A sorted set's score column.
    pub score: Option<String>,
    /// A top N sorted set's members beyond N.
    pub buffer: Option<u64>,
    /// Pieces a run is split into, by ranges of `partition_by`.
    pub partitions: Option<u32>,
    pub partition_by: Option<String>,
}

/// `[channel]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawChannel {
    pub enabled: Option<BoolOrString>,
    pub name: Option<String>,
    pub stream: Option<String>,
    pub group: Option<String>,
    pub consumer: Option<String>,
    pub claim_idle: Option<String>,
    pub allow: Option<OneOrList>,
    pub on_gap: Option<String>,
    pub max_keys_per_message: Option<IntOrString>,
    pub max_keys_per_pattern: Option<IntOrString>,
    pub max_message_bytes: Option<IntOrString>,
}

/// `[binlog]`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawBinlog {
    pub name: Option<String>,
    pub enabled: Option<BoolOrString>,
    pub server_id: Option<IntOrString>,
    pub url: Option<String>,
    pub start: Option<String>,
    pub checkpoint: Option<String>,
    pub checkpoint_key: Option<String>,
    pub checkpoint_file: Option<String>,
    pub heartbeat: Option<String>,
    pub on_gap: Option<String>,
    pub derive_rules: Option<BoolOrString>,
    pub derive_debounce: Option<String>,
    pub max_fanout: Option<IntOrString>,
    pub refresh_wait: Option<String>,
    pub refresh_fallback: Option<String>,
    pub read_url: Option<String>,
}

/// One `[[on_change]]` rule.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawOnChange {
    pub table: Option<String>,
    pub source: Option<String>,
    pub delete: Option<Vec<String>>,
    pub refresh: Option<Vec<String>>,
    pub warm: Option<Vec<String>>,
    pub debounce: Option<String>,
    pub when_changed: Option<Vec<String>>,
    pub project: Option<RawProjection>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub lookup: Option<RawLookup>,
    pub events: Option<Vec<String>>,
}

/// `lookup = { job = "...", table = "...", on = { column = "column" }, key = "...", refresh = true }` in an
/// `[[on_change]]` rule.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLookup {
    pub job: Option<String>,
    pub table: Option<String>,
    pub on: Option<std::collections::BTreeMap<String, String>>,
    pub key: Option<String>,
    pub refresh: Option<bool>,
}

/// `project = { key = "...", columns = [...], ttl = "..." }` in an `[[on_change]]` rule.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawProjection {
    pub key: Option<String>,
    pub columns: Option<Vec<String>>,
    pub ttl: Option<String>,
}

/// A number that may also arrive as a string, because environment overrides are always strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(i64),
    String(String),
}

/// A boolean that may also arrive as a string, because environment overrides are always strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum BoolOrString {
    Bool(bool),
    String(String),
}

/// A list that may be written as its one element: `allow = "*"` is `allow = ["*"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrList {
    One(String),
    List(Vec<String>),
}

impl OneOrList {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrList::One(one) => vec![one],
            OneOrList::List(list) => list,
        }
    }
}

/// The field names serde's derive declares for `T` (what it hands `deserialize_struct`): each raw struct's list of
/// valid fields, stated once by the struct itself, for unknown-field messages.
pub(super) fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the field names a struct asks for, then stops.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(Self::Error::custom("only field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(Self::Error::custom("only field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_structs_fields_are_read_from_its_derive() {
        assert_eq!(
            super::fields_of::<super::RawMysql>(),
            ["url", "pool_size", "connect_timeout", "ssl_mode", "ssl_ca"]
        );
        assert!(super::fields_of::<super::RawDaemon>().contains(&"audit_interval"));
    }
}
