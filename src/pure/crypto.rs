//! Encrypted columns: a column's JSON value sealed with AES-256-GCM (ring) under a random 96-bit nonce, with the
//! column's name as associated data, and stored in its place as the envelope
//! `{"enc":"v1","kid":"k1","n":"<base64 nonce>","c":"<base64 ciphertext and tag>"}`.
//!
//! A [`Keyring`] holds every key that may still be read (rotation) and the one new values are written with. The key
//! file lists `KID:BASE64` lines (32 random bytes each); `#` starts a comment.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

/// The envelope's version tag.
const VERSION: &str = "v1";

/// Keys by id; one writes.
pub struct Keyring {
    keys: Vec<(String, LessSafeKey, [u8; 32])>,
    /// Index of the key new values are sealed with.
    write: usize,
    random: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, ..)| id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("keys", &ids)
            .field("write", &self.keys[self.write].0)
            .finish()
    }
}

impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.write == other.write
            && self.keys.len() == other.keys.len()
            && self.keys.iter().zip(&other.keys).all(|(a, b)| a.0 == b.0 && a.2 == b.2)
    }
}

impl Keyring {
    /// Parses a key file's text. `write` names the key to write with; by default the first one listed.
    pub fn parse(text: &str, write: Option<&str>) -> Result<Self, String> {
        let mut keys: Vec<(String, LessSafeKey, [u8; 32])> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("line {}", number + 1);
            let (id, material) = line
                .split_once(':')
                .ok_or_else(|| format!("{at}: expected KID:BASE64 (e.g. k1:<32 random bytes in base64>)"))?;
            let id = id.trim();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(format!("{at}: a key id is letters, digits, `-`, `_` or `.`"));
            }
            if keys.iter().any(|(other, ..)| other == id) {
                return Err(format!("{at}: key id {id} is listed twice"));
            }
            let bytes = BASE64
                .decode(material.trim())
                .map_err(|_| format!("{at}: key {id} is not valid base64"))?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|bytes: Vec<u8>| format!("{at}: key {id} is {} bytes; AES-256 needs 32", bytes.len()))?;
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| format!("{at}: key {id} is unusable"))?;
            keys.push((id.to_string(), LessSafeKey::new(key), bytes));
        }
        if keys.is_empty() {
            return Err("holds no key".into());
        }
        let write = match write {
            None => 0,
            Some(name) => keys
                .iter()
                .position(|(id, ..)| id == name)
                .ok_or_else(|| format!("has no key {name} to write with"))?,
        };
        Ok(Self {
            keys,
            write,
            random: SystemRandom::new(),
        })
    }

    /// The id new values are sealed with. (Tests only.)
    #[cfg(test)]
    pub(crate) fn write_id(&self) -> &str {
        &self.keys[self.write].0
    }

    /// Appends the envelope of `plaintext` (a column's JSON value) sealed for `column` to `out`.
    pub(crate) fn seal(&self, column: &str, plaintext: &[u8], out: &mut Vec<u8>) {
        let (id, key, _) = &self.keys[self.write];
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .expect("the operating system's random source is available (ring reads getrandom)");
        let mut sealed = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(column.as_bytes()),
            &mut sealed,
        )
        .expect("AES-GCM seals any input shorter than 64 GiB");
        out.extend_from_slice(b"{\"enc\":\"");
        out.extend_from_slice(VERSION.as_bytes());
        out.extend_from_slice(b"\",\"kid\":\"");
        // Key ids are checked to need no JSON escaping.
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\",\"n\":\"");
        out.extend_from_slice(BASE64.encode(nonce).as_bytes());
        out.extend_from_slice(b"\",\"c\":\"");
        out.extend_from_slice(BASE64.encode(&sealed).as_bytes());
        out.extend_from_slice(b"\"}");
    }

    /// The plaintext (a column's JSON value) of an envelope sealed for `column`.
    pub fn open(&self, column: &str, envelope: &serde_json::Value) -> Result<Vec<u8>, String> {
        let field = |name: &str| {
            envelope[name]
                .as_str()
                .ok_or_else(|| format!("column `{column}`: not an encrypted envelope (no \"{name}\")"))
        };
        if field("enc")? != VERSION {
            return Err(format!("column `{column}`: unknown envelope version"));
        }
        let id = field("kid")?;
        let (_, key, _) =
            self.keys.iter().find(|(other, ..)| other == id).ok_or_else(|| {
                format!("column `{column}`: sealed with key {id}, which the key file no longer lists")
            })?;
        let nonce: [u8; NONCE_LEN] = BASE64
            .decode(field("n")?)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| format!("column `{column}`: bad nonce"))?;
        let mut sealed = BASE64
            .decode(field("c")?)
            .map_err(|_| format!("column `{column}`: bad ciphertext"))?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(column.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| format!("column `{column}`: does not decrypt with key {id}"))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn sealed(ring: &Keyring, column: &str, plain: &str) -> serde_json::Value {
        let mut out = Vec::new();
        ring.seal(column, plain.as_bytes(), &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_to_itself_and_only_for_its_column() {
        let ring = Keyring::parse(K1, None).unwrap();
        let envelope = sealed(&ring, "email", "\"alice@example.com\"");
        assert_eq!(envelope["enc"], "v1");
        assert_eq!(envelope["kid"], "k1");
        assert_eq!(ring.open("email", &envelope).unwrap(), b"\"alice@example.com\"");
        assert!(
            ring.open("token", &envelope).is_err(),
            "moved to another column, it must not open"
        );
        // A fresh nonce every time: equal plaintexts do not give equal envelopes.
        assert_ne!(envelope, sealed(&ring, "email", "\"alice@example.com\""));
    }

    #[test]
    fn a_rotated_keyring_writes_with_the_new_key_and_still_reads_the_old() {
        let old = Keyring::parse(K1, None).unwrap();
        let envelope = sealed(&old, "token", "\"t0k3n\"");
        let rotated = Keyring::parse(&format!("# newest first\n{K2}\n{K1}\n"), None).unwrap();
        assert_eq!(rotated.write_id(), "k2");
        assert_eq!(rotated.open("token", &envelope).unwrap(), b"\"t0k3n\"");
        assert_eq!(sealed(&rotated, "token", "1")["kid"], "k2");
        let retired = Keyring::parse(K2, None).unwrap();
        assert!(
            retired
                .open("token", &envelope)
                .unwrap_err()
                .contains("no longer lists")
        );
        assert_eq!(
            Keyring::parse(&format!("{K1}\n{K2}"), Some("k2")).unwrap().write_id(),
            "k2"
        );
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        assert!(Keyring::parse("", None).unwrap_err().contains("no key"));
        assert!(Keyring::parse("k1 abc", None).unwrap_err().contains("KID:BASE64"));
        assert!(
            Keyring::parse("k1:AAAA", None)
                .unwrap_err()
                .contains("3 bytes; AES-256 needs 32")
        );
        assert!(
            Keyring::parse(&format!("{K1}\n{K1}"), None)
                .unwrap_err()
                .contains("twice")
        );
        assert!(Keyring::parse(K1, Some("k9")).unwrap_err().contains("no key k9"));
        assert!(Keyring::parse("k\"1:AAAA", None).unwrap_err().contains("key id"));
    }
}
