//! MySQL column values as cachewarden sees them: the mapping from a column's type and its binary-protocol bytes to a
//! [`Cell`], and from a cell to JSON or to key text.
//!
//! Pure: `database` hands in raw bytes as the server sent them; this module never touches a connection. Decoding the
//! wire format ourselves (rather than through chrono or rust_decimal) keeps DECIMAL exact, accepts zero dates and
//! TIME values beyond 24 hours, and costs no allocation for most cells.
//!
//! | MySQL type                                  | JSON                                                     |
//! |---------------------------------------------|----------------------------------------------------------|
//! | TINYINT…BIGINT, signed or UNSIGNED, BOOLEAN | number (BIGINT UNSIGNED up to 18446744073709551615)      |
//! | FLOAT, DOUBLE                               | number (shortest text that reads back as the same value) |
//! | DECIMAL                                     | string, exact: `"19.90"`                                 |
//! | DATE                                        | `"2026-11-26"`                                           |
//! | DATETIME                                    | `"2026-11-26T08:30:00"` (`.ffffff` when non-zero)         |
//! | TIMESTAMP                                   | `"2026-11-26T08:30:00Z"` (sessions run in UTC)           |
//! | zero date / datetime (`0000-00-00`)         | null                                                     |
//! | TIME                                        | `"-838:59:59"`, `"27:00:00"`, `"08:30:00.5"`             |
//! | YEAR                                        | number                                                   |
//! | CHAR, VARCHAR, TEXT, ENUM, SET              | string (SET as MySQL writes it: `"a,b"`)                 |
//! | JSON (MySQL), or a text column in `json_columns` | embedded JSON                                       |
//! | BINARY, VARBINARY, BLOB                     | base64 string (standard alphabet, padded)                |
//! | BIT(n)                                      | number                                                   |
//! | NULL                                        | null                                                     |
//! | GEOMETRY and anything else                  | refused: the job fails naming the column                 |

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine as _;

/// How a column's values are decoded and rendered. Decided once per column from its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    /// Signed integer of any width (binary protocol: little-endian, 1/2/4/8 bytes).
    Int,
    /// Unsigned integer of any width.
    UInt,
    /// FLOAT (4 bytes).
    Float,
    /// DOUBLE (8 bytes).
    Double,
    /// DECIMAL: ASCII digits, kept exact as a JSON string.
    Decimal,
    /// DATE.
    Date,
    /// DATETIME (no time zone).
    Datetime,
    /// TIMESTAMP (rendered as UTC).
    Timestamp,
    /// TIME (signed, may exceed 24 hours).
    Time,
    /// YEAR (2 bytes).
    Year,
    /// BIT(n): big-endian bytes.
    Bit,
    /// Character data.
    Text,
    /// A JSON document (MySQL JSON, or text declared in `json_columns`).
    Json,
    /// Bytes with the binary collation.
    Binary,
}

impl ColumnKind {
    /// Whether the column holds numbers (a sorted set's score must).
    pub(crate) fn is_number(self) -> bool {
        matches!(
            self,
            ColumnKind::Int
                | ColumnKind::UInt
                | ColumnKind::Float
                | ColumnKind::Double
                | ColumnKind::Decimal
                | ColumnKind::Year
        )
    }
}

impl ColumnKind {
    /// The kind for a column with sqlx's type `name`; `is_text` tells character data from binary data (BLOB and
    /// TEXT share a wire type), `declared_json` marks text the job lists in `json_columns`.
    pub(crate) fn from_type(name: &str, is_text: bool, declared_json: bool) -> Result<Self, String> {
        let kind = match name {
            "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => ColumnKind::Int,
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED" | "BIGINT UNSIGNED" => {
                ColumnKind::UInt
            }
            "FLOAT" => ColumnKind::Float,
            "DOUBLE" => ColumnKind::Double,
            "DECIMAL" => ColumnKind::Decimal,
            "DATE" => ColumnKind::Date,
            "DATETIME" => ColumnKind::Datetime,
            "TIMESTAMP" => ColumnKind::Timestamp,
            "TIME" => ColumnKind::Time,
            "YEAR" => ColumnKind::Year,
            "BIT" => ColumnKind::Bit,
            "JSON" => ColumnKind::Json,
            "NULL" => ColumnKind::Text,
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" | "BINARY"
            | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                if is_text {
                    ColumnKind::Text
                } else {
                    ColumnKind::Binary
                }
            }
            other => {
                return Err(format!("has type {other}, which cachewarden cannot map to JSON"));
            }
        };
        match (kind, declared_json) {
            (ColumnKind::Text | ColumnKind::Json, true) => Ok(ColumnKind::Json),
            (_, true) => Err(format!("is listed in json_columns but has type {name}, not text")),
            (kind, false) => Ok(kind),
        }
    }
}

/// One decoded value, borrowing from the row where it can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// Rendered as a JSON string; as itself in keys.
    Text(Cow<'a, str>),
    /// An embedded JSON document (already checked to parse).
    Json(Cow<'a, str>),
    /// Rendered as base64.
    Bytes(Cow<'a, [u8]>),
}

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("{len} bytes is not a valid {kind:?} value")]
    BadLength { kind: ColumnKind, len: usize },
    #[error("holds invalid JSON: {0}")]
    BadJson(String),
    #[error("holds text that is not UTF-8")]
    BadUtf8,
}

/// Decodes one non-NULL value from its binary-protocol bytes (`None` is SQL NULL).
pub(crate) fn decode(kind: ColumnKind, bytes: Option<&[u8]>) -> Result<Cell<'_>, DecodeError> {
    let Some(bytes) = bytes else {
        return Ok(Cell::Null);
    };
    let bad = || DecodeError::BadLength { kind, len: bytes.len() };
    Ok(match kind {
        ColumnKind::Int => Cell::Int(match *bytes {
            [a] => i64::from(a as i8),
            [a, b] => i64::from(i16::from_le_bytes([a, b])),
            [a, b, c, d] => i64::from(i32::from_le_bytes([a, b, c, d])),
            _ => i64::from_le_bytes(bytes.try_into().map_err(|_| bad())?),
        }),
        ColumnKind::UInt | ColumnKind::Year => Cell::UInt(match *bytes {
            [a] => u64::from(a),
            [a, b] => u64::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
            _ => u64::from_le_bytes(bytes.try_into().map_err(|_| bad())?),
        }),
        ColumnKind::Float => Cell::Float(f32::from_le_bytes(bytes.try_into().map_err(|_| bad())?)),
        ColumnKind::Double => Cell::Double(f64::from_le_bytes(bytes.try_into().map_err(|_| bad())?)),
        ColumnKind::Bit => {
            if bytes.len() > 8 {
                return Err(bad());
            }
            Cell::UInt(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        }
        ColumnKind::Decimal | ColumnKind::Text => Cell::Text(Cow::Borrowed(utf8(bytes)?)),
        ColumnKind::Json => {
            let text = utf8(bytes)?;
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| DecodeError::BadJson(e.to_string()))?;
            Cell::Json(Cow::Borrowed(text))
        }
        ColumnKind::Binary => Cell::Bytes(Cow::Borrowed(bytes)),
        ColumnKind::Date | ColumnKind::Datetime | ColumnKind::Timestamp => {
            decode_datetime(kind, bytes).ok_or_else(bad)?
        }
        ColumnKind::Time => decode_time(bytes).ok_or_else(bad)?,
    })
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8)
}

/// Binary DATE/DATETIME/TIMESTAMP: a length byte (0, 4, 7 or 11), then year (u16 LE), month, day, hour, minute,
/// second, microseconds (u32 LE).
fn decode_datetime(kind: ColumnKind, bytes: &[u8]) -> Option<Cell<'static>> {
    let (&len, body) = bytes.split_first()?;
    if body.len() != usize::from(len) {
        return None;
    }
    let (year, month, day) = match body {
        [] => (0, 0, 0),
        [y0, y1, m, d, ..] => (u16::from_le_bytes([*y0, *y1]), *m, *d),
        _ => return None,
    };
    let (hour, minute, second) = match body {
        [_, _, _, _, h, mi, s, ..] => (*h, *mi, *s),
        _ => (0, 0, 0),
    };
    let micros = match body {
        [_, _, _, _, _, _, _, a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => 0,
    };
    Some(datetime_cell(
        kind,
        [
            year,
            month.into(),
            day.into(),
            hour.into(),
            minute.into(),
            second.into(),
        ],
        micros,
    ))
}

/// A DATE, DATETIME or TIMESTAMP (`kind`) from its parts `[year, month, day, hour, minute, second]` and
/// microseconds: ISO-8601 text, `Z` for TIMESTAMP (sessions run in UTC), null for a zero date. The one formatting of
/// dates, for warm rows and binlog row images alike.
pub(crate) fn datetime_cell(kind: ColumnKind, parts: [u16; 6], micros: u32) -> Cell<'static> {
    let [year, month, day, hour, minute, second] = parts;
    // Zero dates have no ISO-8601 form.
    if year == 0 && month == 0 && day == 0 && hour == 0 && minute == 0 && second == 0 && micros == 0 {
        return Cell::Null;
    }
    let mut text = String::with_capacity(28);
    push_padded(&mut text, year.into(), 4);
    text.push('-');
    push_padded(&mut text, month.into(), 2);
    text.push('-');
    push_padded(&mut text, day.into(), 2);
    if kind != ColumnKind::Date {
        text.push('T');
        push_clock(&mut text, hour.into(), minute as u8, second as u8, micros);
        if kind == ColumnKind::Timestamp {
            text.push('Z');
        }
    }
    Cell::Text(Cow::Owned(text))
}

/// Binary TIME: a length byte (0, 8 or 12), then is-negative, days (u32 LE), hour, minute, second, microseconds.
fn decode_time(bytes: &[u8]) -> Option<Cell<'static>> {
    let (&len, body) = bytes.split_first()?;
    if body.len() != usize::from(len) {
        return None;
    }
    let (negative, hours, minute, second, micros) = match body {
        [] => (false, 0, 0, 0, 0),
        [neg, d0, d1, d2, d3, h, mi, s, rest @ ..] => {
            let micros = match rest {
                [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
                [] => 0,
                _ => return None,
            };
            let days = u32::from_le_bytes([*d0, *d1, *d2, *d3]);
            (*neg == 1, u64::from(days) * 24 + u64::from(*h), *mi, *s, micros)
        }
        _ => return None,
    };
    Some(time_cell(negative, hours, minute, second, micros))
}

/// A TIME from its parts (hours may exceed 24): `"-838:59:59"`, `"08:30:00.5"`. The one formatting of TIME values.
pub(crate) fn time_cell(negative: bool, hours: u64, minute: u8, second: u8, micros: u32) -> Cell<'static> {
    let mut text = String::with_capacity(16);
    if negative {
        text.push('-');
    }
    push_clock(&mut text, hours, minute, second, micros);
    Cell::Text(Cow::Owned(text))
}

/// Appends `hh:mm:ss`, then `.ffffff` without trailing zeros unless the seconds are whole.
fn push_clock(text: &mut String, hours: u64, minute: u8, second: u8, micros: u32) {
    push_padded(text, hours, 2);
    text.push(':');
    push_padded(text, minute.into(), 2);
    text.push(':');
    push_padded(text, second.into(), 2);
    if micros != 0 {
        text.push('.');
        push_padded(text, micros.into(), 6);
        text.truncate(text.trim_end_matches('0').len());
    }
}

/// Appends `n` in decimal, zero-padded to at least `width` digits. (`format!` costs about ten times as much, and
/// a warm job may format a date per row.)
fn push_padded(text: &mut String, n: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n);
    text.extend(std::iter::repeat_n('0', width.saturating_sub(digits.len())));
    text.push_str(digits);
}

impl Cell<'_> {
    /// Appends this value as JSON.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Cell::Null => out.extend_from_slice(b"null"),
            Cell::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Cell::UInt(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Cell::Float(x) => push_display(out, x),
            Cell::Double(x) => push_display(out, x),
            Cell::Text(text) => write_json_string(out, text),
            Cell::Json(doc) => out.extend_from_slice(doc.as_bytes()),
            Cell::Bytes(bytes) => {
                out.push(b'"');
                let start = out.len();
                let encoded_len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
                out.resize(start + encoded_len, 0);
                let written = base64::engine::general_purpose::STANDARD
                    .encode_slice(bytes, &mut out[start..])
                    .expect("the buffer was sized by encoded_len");
                out.truncate(start + written);
                out.push(b'"');
            }
        }
    }

    /// This value as key text (see [`Cell::write_key`]); `None` for NULL. Binlog images and refresh checks compare
    /// values in this form.
    pub(crate) fn key_text(&self) -> Option<String> {
        let mut text = String::new();
        self.write_key(&mut text).map(|()| text)
    }

    /// Appends this value as key text: strings as they are, numbers in decimal, bytes in base64. `None` for NULL,
    /// which cannot name a key.
    pub(crate) fn write_key(&self, out: &mut String) -> Option<()> {
        match self {
            Cell::Null => return None,
            Cell::Int(n) => out.push_str(itoa::Buffer::new().format(*n)),
            Cell::UInt(n) => out.push_str(itoa::Buffer::new().format(*n)),
            Cell::Float(x) => {
                let _ = write!(out, "{x}");
            }
            Cell::Double(x) => {
                let _ = write!(out, "{x}");
            }
            Cell::Text(text) => out.push_str(text),
            Cell::Json(doc) => out.push_str(doc),
            Cell::Bytes(bytes) => base64::engine::general_purpose::STANDARD.encode_string(bytes, out),
        }
        Some(())
    }
}

fn push_display(out: &mut Vec<u8>, value: &dyn std::fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "{value}");
}

/// Appends `text` as a JSON string literal.
///
/// Escapes exactly what serde_json escapes (`"`, `\\` and control characters), so the output is byte for byte the
/// same, but skips eight bytes at a time while none needs escaping: text columns are most of a warm job's bytes.
pub(crate) fn write_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (mut start, mut at) = (0, 0);
    while at < bytes.len() {
        if let Some(word) = bytes.get(at..at + 8)
            && !needs_escape(u64::from_le_bytes(word.try_into().expect("eight bytes")))
        {
            at += 8;
            continue;
        }
        let byte = bytes[at];
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => {
                at += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..at]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
        } else {
            out.extend_from_slice(short);
        }
        at += 1;
        start = at;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any of the eight bytes in `word` is a control character, `"` or `\\` (exact, no false positives).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let has_below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    has_below_space || has_zero(word ^ (ONES * u64::from(b'"'))) || has_zero(word ^ (ONES * u64::from(b'\\')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(kind: ColumnKind, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        decode(kind, Some(bytes)).unwrap().write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_exactly_as_serde_json_does() {
        let pieces = [
            "a",
            "plain text ",
            "\"",
            "\\",
            "\n",
            "\r",
            "\t",
            "\u{8}",
            "\u{c}",
            "\u{0}",
            "\u{1f}",
            "\u{7f}",
            "é",
            "€",
            "😀",
            "/",
            " ",
            "12345678",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5_000 {
            let text: String = (0..rng.usize(0..24))
                .map(|_| pieces[rng.usize(..pieces.len())])
                .collect();
            let mut ours = Vec::new();
            write_json_string(&mut ours, &text);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&text).unwrap(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn integers_of_every_width() {
        assert_eq!(json(ColumnKind::Int, &[0xff]), "-1");
        assert_eq!(json(ColumnKind::Int, &(-300i16).to_le_bytes()), "-300");
        assert_eq!(json(ColumnKind::Int, &(-70000i32).to_le_bytes()), "-70000");
        assert_eq!(json(ColumnKind::Int, &i64::MIN.to_le_bytes()), "-9223372036854775808");
        assert_eq!(json(ColumnKind::UInt, &[0xff]), "255");
        assert_eq!(json(ColumnKind::UInt, &u64::MAX.to_le_bytes()), "18446744073709551615");
        assert_eq!(json(ColumnKind::Year, &2026u16.to_le_bytes()), "2026");
    }

    #[test]
    fn floats_print_their_shortest_form() {
        assert_eq!(json(ColumnKind::Float, &0.1f32.to_le_bytes()), "0.1");
        assert_eq!(json(ColumnKind::Double, &2.5f64.to_le_bytes()), "2.5");
        assert_eq!(json(ColumnKind::Double, &3f64.to_le_bytes()), "3");
    }

    #[test]
    fn decimals_stay_exact_strings() {
        assert_eq!(
            json(ColumnKind::Decimal, b"12345678901234567890.123456789"),
            "\"12345678901234567890.123456789\""
        );
    }

    #[test]
    fn dates_and_times_are_iso_8601() {
        let date = [4, 0xea, 0x07, 11, 26];
        assert_eq!(json(ColumnKind::Date, &date), "\"2026-11-26\"");
        let datetime = [7, 0xea, 0x07, 11, 26, 8, 30, 5];
        assert_eq!(json(ColumnKind::Datetime, &datetime), "\"2026-11-26T08:30:05\"");
        assert_eq!(json(ColumnKind::Timestamp, &datetime), "\"2026-11-26T08:30:05Z\"");
        let mut precise = vec![11, 0xea, 0x07, 11, 26, 8, 30, 5];
        precise.extend_from_slice(&250_000u32.to_le_bytes());
        assert_eq!(json(ColumnKind::Datetime, &precise), "\"2026-11-26T08:30:05.25\"");
        assert_eq!(
            json(ColumnKind::Datetime, &[4, 0xea, 0x07, 1, 2]),
            "\"2026-01-02T00:00:00\""
        );
        assert_eq!(json(ColumnKind::Date, &[0]), "null");
    }

    #[test]
    fn time_can_be_negative_and_longer_than_a_day() {
        let mut t = vec![8, 1];
        t.extend_from_slice(&34u32.to_le_bytes());
        t.extend_from_slice(&[22, 59, 59]);
        assert_eq!(json(ColumnKind::Time, &t), "\"-838:59:59\"");
        assert_eq!(json(ColumnKind::Time, &[0]), "\"00:00:00\"");
    }

    #[test]
    fn text_is_escaped_and_bytes_are_base64() {
        assert_eq!(json(ColumnKind::Text, "a \"q\"\n".as_bytes()), r#""a \"q\"\n""#);
        assert_eq!(json(ColumnKind::Binary, &[0, 1, 2, 255]), "\"AAEC/w==\"");
        assert_eq!(json(ColumnKind::Bit, &[0x01, 0x02]), "258");
    }

    #[test]
    fn json_is_embedded_and_checked() {
        assert_eq!(json(ColumnKind::Json, br#"{"a": [1, 2]}"#), r#"{"a": [1, 2]}"#);
        assert!(matches!(
            decode(ColumnKind::Json, Some(b"{nope")),
            Err(DecodeError::BadJson(_))
        ));
    }

    #[test]
    fn kinds_follow_the_type_and_collation() {
        assert_eq!(ColumnKind::from_type("BLOB", false, false), Ok(ColumnKind::Binary));
        assert_eq!(ColumnKind::from_type("BLOB", true, false), Ok(ColumnKind::Text));
        assert_eq!(ColumnKind::from_type("LONGTEXT", true, true), Ok(ColumnKind::Json));
        assert_eq!(
            ColumnKind::from_type("BIGINT UNSIGNED", false, false),
            Ok(ColumnKind::UInt)
        );
        assert!(ColumnKind::from_type("GEOMETRY", false, false).is_err());
        assert!(ColumnKind::from_type("INT", false, true).is_err());
    }

    #[test]
    fn key_text_is_plain() {
        let mut key = String::new();
        Cell::Text(Cow::Borrowed("abc")).write_key(&mut key).unwrap();
        Cell::Int(-5).write_key(&mut key).unwrap();
        assert_eq!(key, "abc-5");
        assert!(Cell::Null.write_key(&mut key).is_none());
    }
}
