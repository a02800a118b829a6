//! Binlog row images → cachewarden values: each binlog value becomes a [`Cell`], the type warm rows decode to, so key
//! placeholders, `project` values, refresh checks and `when_changed` comparisons read a column exactly as a warm job
//! writes it (see `value` for the table).
//!
//! Pure: the listener hands in the table map and the decoded row; nothing here touches a connection. What the binlog
//! leaves out and a warm query sees is put back from the table map's metadata (`binlog_row_metadata=FULL`): ENUM and
//! SET names instead of indexes and bitmasks, the character set of text (latin1 becomes UTF-8, as the server converts
//! it for a utf8mb4 session), BINARY's zero padding, unsignedness.
//! A MySQL `JSON` column arrives in MySQL's binary form and is written as MySQL's own text form, the one a query
//! returns (see [`mysql_json_text`]); MariaDB's JSON is text and maps exactly.

use std::borrow::Cow;
use std::collections::HashMap;

use mysql_async::Value;
use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::{ColumnFlags, ColumnType};

use crate::pure::model::RowImage;
use crate::pure::value::{Cell, ColumnKind, datetime_cell, time_cell};

/// The `binary` character set: bytes, not text.
const BINARY_CHARSET: u16 = 63;
/// Collation ids of MySQL's `latin1` (which is Windows-1252).
const LATIN1_COLLATIONS: [u16; 8] = [5, 8, 15, 31, 47, 48, 49, 94];

/// What the table map tells about each column, decided once per rows event.
pub(crate) struct TableShape {
    columns: Vec<ColumnShape>,
}

struct ColumnShape {
    column_type: Option<ColumnType>,
    /// ENUM and SET member names, in definition order.
    members: Vec<String>,
    /// BINARY(n): the declared length in bytes, which the binlog trims trailing zeros from.
    binary_length: usize,
}

impl TableShape {
    /// Reads the column types and ENUM/SET members from `tme`.
    pub(crate) fn of(tme: &TableMapEvent<'_>) -> Self {
        let mut enums: Vec<Vec<String>> = Vec::new();
        let mut sets: Vec<Vec<String>> = Vec::new();
        for field in tme.iter_optional_meta().flatten() {
            match field {
                OptionalMetadataField::EnumStrValue(values) => {
                    for column in values.iter_values().flatten() {
                        enums.push(column.values().iter().map(|v| v.value().into_owned()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(values) => {
                    for column in values.iter_values().flatten() {
                        sets.push(column.values().iter().map(|v| v.value().into_owned()).collect());
                    }
                }
                _ => {}
            }
        }
        let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
        let columns = (0..tme.columns_count() as usize)
            .map(|i| {
                let column_type = tme.get_column_type(i).ok().flatten();
                let meta = tme.get_column_metadata(i).unwrap_or(&[]);
                let members = match column_type {
                    Some(ColumnType::MYSQL_TYPE_ENUM) => enums.next().unwrap_or_default(),
                    Some(ColumnType::MYSQL_TYPE_SET) => sets.next().unwrap_or_default(),
                    _ => Vec::new(),
                };
                let binary_length = match (column_type, meta) {
                    (Some(ColumnType::MYSQL_TYPE_STRING), [byte0, byte1, ..]) => {
                        let (byte0, byte1) = (usize::from(*byte0), usize::from(*byte1));
                        if byte0 & 0x30 != 0x30 {
                            byte1 | (((byte0 & 0x30) ^ 0x30) << 4)
                        } else {
                            byte1
                        }
                    }
                    _ => 0,
                };
                ColumnShape {
                    column_type,
                    members,
                    binary_length,
                }
            })
            .collect();
        Self { columns }
    }
}

/// One row image as cells, column names alongside.
pub(crate) struct DecodedRow<'r> {
    pub names: Vec<Cow<'r, str>>,
    pub cells: Vec<Cell<'r>>,
}

impl DecodedRow<'_> {
    /// The image as key text per column (`None` for NULL), as key templates and refresh checks read it.
    pub(crate) fn image(&self) -> RowImage {
        self.names
            .iter()
            .zip(&self.cells)
            .map(|(name, cell)| (name.to_string(), cell.key_text()))
            .collect()
    }

    /// Each column as JSON, for projections.
    pub(crate) fn json(&self) -> HashMap<String, Vec<u8>> {
        self.names
            .iter()
            .zip(&self.cells)
            .map(|(name, cell)| {
                let mut out = Vec::new();
                cell.write_json(&mut out);
                (name.to_string(), out)
            })
            .collect()
    }
}

/// Decodes every column of `row` (a row image of a table shaped `shape`).
pub(crate) fn decode_row<'r>(row: &'r BinlogRow, shape: &TableShape) -> DecodedRow<'r> {
    let columns = row.columns_ref();
    let mut names = Vec::with_capacity(columns.len());
    let mut cells = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let Some(value) = row.as_ref(i) else { continue };
        let Some(column_shape) = shape.columns.get(i) else {
            continue;
        };
        names.push(column.name_str());
        let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
        cells.push(cell(value, column_shape, column.character_set(), unsigned));
    }
    DecodedRow { names, cells }
}

/// A JSON document as MySQL prints one: `", "` between members and elements, `": "` after keys, and an object's
/// keys shortest first, then by their bytes (the order MySQL stores them in).
fn mysql_json_text(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value as Json;
    match value {
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                mysql_json_text(item, out);
            }
            out.push(']');
        }
        Json::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort_by(|a, b| (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes())));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Json::String(key.clone()).to_string());
                out.push_str(": ");
                mysql_json_text(&members[key], out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// One binlog value as the cell a warm query would decode for the same column.
fn cell<'v>(value: &'v BinlogValue<'_>, shape: &ColumnShape, charset: u16, unsigned: bool) -> Cell<'v> {
    use ColumnType::*;
    let value = match value {
        BinlogValue::Value(value) => value,
        BinlogValue::Jsonb(json) => {
            let document = json.clone().parse().map(serde_json::Value::from);
            return match document {
                Ok(document) => {
                    let mut text = String::new();
                    mysql_json_text(&document, &mut text);
                    Cell::Json(Cow::Owned(text))
                }
                Err(_) => Cell::Null,
            };
        }
        // Partial JSON updates (MySQL's binlog_row_value_options=PARTIAL_JSON) carry no whole value.
        BinlogValue::JsonDiff(_) => return Cell::Null,
    };
    match (value, shape.column_type) {
        (Value::NULL, _) => Cell::Null,
        (Value::Int(seconds), Some(MYSQL_TYPE_TIMESTAMP)) => timestamp(*seconds, 0),
        (Value::Int(index), Some(MYSQL_TYPE_ENUM)) => {
            let name = usize::try_from(*index)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| shape.members.get(i));
            Cell::Text(Cow::Owned(name.cloned().unwrap_or_default()))
        }
        (Value::Int(n), _) if unsigned => Cell::UInt(*n as u64),
        // mysql_common reads a signed MEDIUMINT without extending its sign (-8388608 arrives as 8388608).
        (Value::Int(n), Some(MYSQL_TYPE_INT24)) => Cell::Int(i64::from((((*n as u32) & 0x00ff_ffff) << 8) as i32 >> 8)),
        (Value::Int(n), _) => Cell::Int(*n),
        (Value::UInt(n), _) => Cell::UInt(*n),
        (Value::Float(x), _) => Cell::Float(*x),
        (Value::Double(x), _) => Cell::Double(*x),
        (Value::Date(y, m, d, h, mi, s, us), column_type) => {
            let kind = match column_type {
                Some(MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE) => ColumnKind::Date,
                _ => ColumnKind::Datetime,
            };
            let parts = [*y, (*m).into(), (*d).into(), (*h).into(), (*mi).into(), (*s).into()];
            datetime_cell(kind, parts, *us)
        }
        (Value::Time(negative, days, h, mi, s, us), _) => {
            time_cell(*negative, u64::from(*days) * 24 + u64::from(*h), *mi, *s, *us)
        }
        (Value::Bytes(bytes), Some(MYSQL_TYPE_TIMESTAMP2)) => {
            let text = String::from_utf8_lossy(bytes);
            let (seconds, micros) = text.split_once('.').unwrap_or((&text, "0"));
            timestamp(seconds.parse().unwrap_or_default(), micros.parse().unwrap_or_default())
        }
        (Value::Bytes(bytes), Some(MYSQL_TYPE_YEAR)) => {
            // The binlog stores YEAR as years since 1900, with 0 for the zero year.
            let year: u64 = std::str::from_utf8(bytes)
                .ok()
                .and_then(|y| y.parse().ok())
                .unwrap_or(0);
            Cell::UInt(if year == 1900 { 0 } else { year })
        }
        (Value::Bytes(bytes), Some(MYSQL_TYPE_BIT)) if bytes.len() <= 8 => {
            Cell::UInt(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        }
        (Value::Bytes(bytes), Some(MYSQL_TYPE_SET)) => {
            let mut names = String::new();
            for (i, member) in shape.members.iter().enumerate() {
                if bytes.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                    if !names.is_empty() {
                        names.push(',');
                    }
                    names.push_str(member);
                }
            }
            Cell::Text(Cow::Owned(names))
        }
        (Value::Bytes(bytes), Some(MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL)) => {
            Cell::Text(String::from_utf8_lossy(bytes))
        }
        (Value::Bytes(bytes), column_type) => text_or_bytes(bytes, column_type, shape, charset),
    }
}

/// Character data in UTF-8 (converted from latin1 where needed), or bytes for the binary character set.
fn text_or_bytes<'v>(bytes: &'v [u8], column_type: Option<ColumnType>, shape: &ColumnShape, charset: u16) -> Cell<'v> {
    if charset == BINARY_CHARSET {
        if column_type == Some(ColumnType::MYSQL_TYPE_STRING) && bytes.len() < shape.binary_length {
            // BINARY(n) is zero-padded to n bytes in the table and in query results; the binlog trims the zeros.
            let mut padded = bytes.to_vec();
            padded.resize(shape.binary_length, 0);
            return Cell::Bytes(Cow::Owned(padded));
        }
        return Cell::Bytes(Cow::Borrowed(bytes));
    }
    if LATIN1_COLLATIONS.contains(&charset) {
        return Cell::Text(Cow::Owned(bytes.iter().map(|&b| windows_1252(b)).collect()));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Cell::Text(Cow::Borrowed(text)),
        Err(_) => Cell::Text(String::from_utf8_lossy(bytes)),
    }
}

/// A latin1 byte as MySQL converts it to Unicode (MySQL's latin1 is Windows-1252; its five unassigned bytes map to
/// the C1 controls of the same number).
fn windows_1252(byte: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D,
        0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
        0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match byte {
        0x80..=0x9f => char::from_u32(u32::from(HIGH[usize::from(byte - 0x80)])).unwrap_or('\u{fffd}'),
        _ => char::from(byte),
    }
}

/// A TIMESTAMP from seconds since the epoch, rendered in UTC like a warm row's (sessions run in UTC).
fn timestamp(seconds: i64, micros: u32) -> Cell<'static> {
    if seconds == 0 && micros == 0 {
        return Cell::Null;
    }
    let Some(at) = chrono::DateTime::from_timestamp(seconds, 0) else {
        return Cell::Null;
    };
    use chrono::{Datelike as _, Timelike as _};
    let parts = [
        at.year() as u16,
        at.month() as u16,
        at.day() as u16,
        at.hour() as u16,
        at.minute() as u16,
        at.second() as u16,
    ];
    datetime_cell(ColumnKind::Timestamp, parts, micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_maps_like_mysql() {
        assert_eq!(windows_1252(b'a'), 'a');
        assert_eq!(windows_1252(0xe9), 'é');
        assert_eq!(windows_1252(0x80), '€');
        assert_eq!(windows_1252(0x81), '\u{81}');
    }

    #[test]
    fn timestamps_render_in_utc() {
        let mut out = Vec::new();
        timestamp(1_795_687_200, 0).write_json(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\"2026-11-26T10:00:00Z\"");
        let mut out = Vec::new();
        timestamp(1_795_687_200, 250_000).write_json(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\"2026-11-26T10:00:00.25Z\"");
        assert_eq!(timestamp(0, 0), Cell::Null);
    }
}
