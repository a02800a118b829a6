//! How a rendered value is stored: compressed when it is larger than a threshold (gzip or zstd, each recognisable by
//! its own magic bytes, so any reader can tell) or as the plain JSON it is, and how a stored value is read back.
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
}

impl Encoding {
    /// Plain JSON, always.
    pub const PLAIN: Encoding = Encoding {
        compress: Compression::None,
        compress_over: 0,
    };

    /// The bytes to store for the rendered `value`.
    pub fn encode(&self, value: Vec<u8>) -> Vec<u8> {
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

    /// How large a rendered value may grow before it cannot fit `max_stored` bytes even compressed: the bound on
    /// what a whole-result key holds in memory while it is built.
    pub fn rendered_limit(&self, max_stored: usize) -> usize {
        match self.compress {
            Compression::None => max_stored,
            _ => max_stored.saturating_mul(64),
        }
    }
}

/// The value an application reads back from `stored`: decompressed when it starts with a gzip or zstd magic, else
/// as stored.
pub fn decode(stored: &[u8]) -> Result<Cow<'_, [u8]>, String> {
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
