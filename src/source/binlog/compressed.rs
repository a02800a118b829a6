//! Compressed binlog events made plain: MariaDB's compressed row and query events (`log_bin_compress = ON`) become
//! the ordinary events they compress, and MySQL's transaction payloads (`binlog_transaction_compression = ON`) are
//! checked for having been unpacked.
//!
//! Pure: an event in, an event out. mysql_async unpacks a MySQL `Transaction_payload` itself and hands its events on
//! after it (an undecodable payload it drops without a word, which [`Payload`] notices); MariaDB's compressed events
//! it passes through as unknown types, rebuilt here.
//!
//! MariaDB's form (`sql/log_event.cc`, `binlog_buf_compress`): only the part after the fixed fields is compressed —
//! the row data after the column bitmaps, the statement text after the database name — as one byte `0x80 | n`, the
//! uncompressed length in `n` big-endian bytes, then a zlib stream.

use std::io::Read as _;

use mysql_async::binlog::events::Event;

/// MariaDB's compressed event types and the plain type each stands for.
const QUERY_COMPRESSED: u8 = 165;
const QUERY: u8 = 2;
/// `WRITE_ROWS_COMPRESSED_EVENT_V1`…`DELETE_ROWS_COMPRESSED_EVENT_V1`, then the same for rows events v2.
const ROWS_COMPRESSED: [(u8, u8); 6] = [(166, 23), (167, 24), (168, 25), (169, 30), (170, 31), (171, 32)];
/// Update events carry two column bitmaps (before and after image).
const UPDATE_TYPES: [u8; 2] = [31, 24];
/// Rows events v2 carry extra data after their flags.
const ROWS_V2: [u8; 3] = [30, 31, 32];
/// `MySQL`'s `Transaction_payload` event.
pub(super) const TRANSACTION_PAYLOAD: u8 = 40;
const HEADER_LEN: usize = 19;
/// A query event's fixed part: thread id, exec time, database name length, error code, status variables length.
const QUERY_POST_HEADER: usize = 13;
/// A rows event's table id (6 bytes, as every server since 5.1 writes it) and flags.
const ROWS_POST_HEADER: usize = 8;
/// The most an event may unpack to: a server's largest `max_allowed_packet`.
const MAX_UNCOMPRESSED: usize = 1 << 30;

/// Whether `event_type` is one of MariaDB's compressed events.
pub(super) fn is_compressed(event_type: u8) -> bool {
    event_type == QUERY_COMPRESSED || ROWS_COMPRESSED.iter().any(|(compressed, _)| *compressed == event_type)
}

/// `event` (one of MariaDB's compressed events) as the plain event it compresses, or why it cannot be read.
pub(super) fn uncompress(event: &Event) -> Result<Event, String> {
    let header = event.header();
    let compressed_type = header.event_type_raw();
    let data = event.data();
    let (plain_type, fixed) = if compressed_type == QUERY_COMPRESSED {
        (QUERY, query_fixed_len(data)?)
    } else {
        let plain = ROWS_COMPRESSED
            .iter()
            .find(|(compressed, _)| *compressed == compressed_type)
            .map(|(_, plain)| *plain)
            .ok_or_else(|| format!("event type {compressed_type} is not a compressed event"))?;
        (plain, rows_fixed_len(plain, data)?)
    };
    let body = unpack(&data[fixed..])?;
    let checksum = if event.checksum().is_some() { 4 } else { 0 };
    let size = HEADER_LEN + fixed + body.len() + checksum;
    let size = u32::try_from(size).map_err(|_| format!("an event of {size} bytes once unpacked"))?;
    let mut bytes = Vec::with_capacity(size as usize);
    bytes.extend_from_slice(&header.timestamp().to_le_bytes());
    bytes.push(plain_type);
    bytes.extend_from_slice(&header.server_id().to_le_bytes());
    bytes.extend_from_slice(&size.to_le_bytes());
    bytes.extend_from_slice(&header.log_pos().to_le_bytes());
    bytes.extend_from_slice(&header.flags_raw().to_le_bytes());
    bytes.extend_from_slice(&data[..fixed]);
    bytes.extend_from_slice(&body);
    // The checksum is not verified when read back (the server's was, over the compressed form): its place is kept.
    bytes.resize(size as usize, 0);
    Event::read(event.fde(), &bytes[..]).map_err(|e| format!("the unpacked event does not read: {e}"))
}

/// Bytes of a query event's data before its statement text: the fixed part, the status variables, the database name
/// and its NUL.
fn query_fixed_len(data: &[u8]) -> Result<usize, String> {
    if data.len() < QUERY_POST_HEADER {
        return Err("a compressed query event shorter than its fixed part".into());
    }
    let database = usize::from(data[8]);
    let status = usize::from(u16::from_le_bytes([data[11], data[12]]));
    let fixed = QUERY_POST_HEADER + status + database + 1;
    match fixed <= data.len() {
        true => Ok(fixed),
        false => Err("a compressed query event shorter than its status variables and database name".into()),
    }
}

/// Bytes of a rows event's data before its row images: table id, flags, (v2) extra data, the column count and the
/// column bitmaps (two for an update).
fn rows_fixed_len(plain_type: u8, data: &[u8]) -> Result<usize, String> {
    let short = || "a compressed rows event shorter than its column bitmaps".to_string();
    let mut at = ROWS_POST_HEADER;
    if ROWS_V2.contains(&plain_type) {
        // The extra data's length counts its own two bytes.
        let extra = data.get(at..at + 2).ok_or_else(short)?;
        at += usize::from(u16::from_le_bytes([extra[0], extra[1]])).max(2);
    }
    let (columns, width) = length_encoded(data.get(at..).ok_or_else(short)?).ok_or_else(short)?;
    at += width;
    let bitmaps = if UPDATE_TYPES.contains(&plain_type) { 2 } else { 1 };
    let columns = usize::try_from(columns).map_err(|_| short())?;
    at += bitmaps * columns.div_ceil(8);
    match at <= data.len() {
        true => Ok(at),
        false => Err(short()),
    }
}

/// A length-encoded integer at the start of `bytes`, and how many bytes it took.
fn length_encoded(bytes: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        let part = bytes.get(1..1 + n)?;
        Some(part.iter().rev().fold(0, |value, byte| (value << 8) | u64::from(*byte)))
    };
    match *bytes.first()? {
        first @ 0..=250 => Some((u64::from(first), 1)),
        252 => Some((le(2)?, 3)),
        253 => Some((le(3)?, 4)),
        254 => Some((le(8)?, 9)),
        _ => None,
    }
}

/// MariaDB's compressed form: `0x80 | n`, the length in `n` big-endian bytes, a zlib stream of exactly that length.
fn unpack(packed: &[u8]) -> Result<Vec<u8>, String> {
    let first = *packed.first().ok_or("an empty compressed body")?;
    let width = usize::from(first & 0x07);
    if first & 0xe0 != 0x80 || !(1..=4).contains(&width) || packed.len() < 1 + width {
        return Err(format!("a compressed body that starts with {first:#04x}, not a length"));
    }
    let length = packed[1..=width]
        .iter()
        .fold(0usize, |value, byte| (value << 8) | usize::from(*byte));
    if length > MAX_UNCOMPRESSED {
        return Err(format!("a compressed body that claims {length} bytes"));
    }
    let mut body = Vec::with_capacity(length);
    flate2::read::ZlibDecoder::new(&packed[1 + width..])
        .take(length as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("a compressed body that does not unpack: {e}"))?;
    match body.len() == length {
        true => Ok(body),
        false => Err(format!(
            "a compressed body of {} bytes, not the {length} it claims",
            body.len()
        )),
    }
}

/// Watches MySQL's transaction payloads: after a `Transaction_payload` event, the events it held come next and end
/// with the transaction. Its inner events carry no position of their own (0, or the payload's end); the
/// transaction ends where the payload does.
#[derive(Debug, Default)]
pub(super) struct Payload {
    /// The end of the payload being read, until its transaction ends.
    end: Option<u64>,
}

impl Payload {
    /// A `Transaction_payload` event ending at `log_pos` was read. `Err` when the one before it never ended: its
    /// events were not unpacked (mysql_async drops a payload it cannot decompress).
    pub(super) fn opened(&mut self, log_pos: u64) -> Result<(), String> {
        self.not_open()?;
        self.end = Some(log_pos);
        Ok(())
    }

    /// `Err` when a payload is open but another transaction begins (a GTID event): its events never came.
    pub(super) fn not_open(&self) -> Result<(), String> {
        match self.end {
            Some(end) => Err(format!(
                "the compressed transaction ending at {end} was not unpacked (a payload mysql_async could not \
                 decompress)"
            )),
            None => Ok(()),
        }
    }

    /// Where an event that says `log_pos` ends: inside a payload, the payload's end.
    pub(super) fn position(&self, log_pos: u64) -> u64 {
        self.end.unwrap_or(log_pos)
    }

    /// The transaction ended: the payload, if any, is done.
    pub(super) fn ended(&mut self) {
        self.end = None;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn pack(body: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(body).unwrap();
        let zlib = encoder.finish().unwrap();
        let mut packed = vec![0x82, (body.len() >> 8) as u8, body.len() as u8];
        packed.extend(zlib);
        packed
    }

    #[test]
    fn a_packed_body_unpacks_to_exactly_its_length() {
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(unpack(&pack(&body)).unwrap(), body);
        let mut lying = pack(&body);
        lying[2] = lying[2].wrapping_add(1);
        assert!(
            unpack(&lying).unwrap_err().contains("not the"),
            "a wrong length is refused"
        );
        assert!(unpack(&[0x12, 0, 0]).is_err(), "no length header");
        assert!(unpack(&[0x84, 0x7f, 0xff, 0xff, 0xff]).is_err(), "over the bound");
        assert!(unpack(&[0x81, 3, 1, 2, 3]).is_err(), "not zlib");
    }

    #[test]
    fn the_fixed_part_of_rows_events_ends_after_the_bitmaps() {
        // Table id, flags, 9 columns (two bitmap bytes each).
        let mut data = vec![1, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0x01, 0xff, 0x01];
        assert_eq!(rows_fixed_len(23, &data).unwrap(), 11);
        assert_eq!(rows_fixed_len(24, &data).unwrap(), 13, "an update has two bitmaps");
        data.truncate(10);
        assert!(rows_fixed_len(24, &data).is_err());
        // v2: two bytes of extra data (its length counts itself, 4).
        let v2 = [1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 7, 7, 3, 0x07];
        assert_eq!(rows_fixed_len(30, &v2).unwrap(), 14);
    }

    #[test]
    fn the_fixed_part_of_a_query_event_ends_after_the_database_name() {
        // thread 4, time 4, database length 4, error 2, status 3 bytes, status, "shop", NUL, text.
        let mut data = vec![0; 8];
        data.push(4);
        data.extend([0, 0, 3, 0]);
        data.extend([1, 2, 3]);
        data.extend(b"shop\0");
        data.extend(b"packed");
        assert_eq!(query_fixed_len(&data).unwrap(), 13 + 3 + 5);
        assert!(query_fixed_len(&data[..15]).is_err());
    }

    #[test]
    fn a_payload_that_never_ended_is_noticed_at_the_next_transaction() {
        let mut payload = Payload::default();
        assert_eq!(payload.position(120), 120);
        payload.opened(500).unwrap();
        assert_eq!(payload.position(0), 500, "inner events end where the payload does");
        payload.ended();
        payload.not_open().unwrap();
        payload.opened(900).unwrap();
        assert!(payload.opened(1200).unwrap_err().contains("ending at 900"));
        assert!(payload.not_open().is_err());
    }
}
