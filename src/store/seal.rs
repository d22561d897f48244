//! Sealing records at rest: what a seized data dir must not say.
//!
//! The expiry schedule is, by its nature, a list of the posts a member wanted gone: ids,
//! account names, deadlines. Deleting the rows is not enough on its own, because redb is a
//! copy-on-write B-tree: a page that held a row is freed, not wiped, and its old bytes stay
//! in the file until the page is reused. So the rows are never written in clear in the
//! first place:
//! - every identifying key (a status id, an account name) becomes a keyed hash (HMAC-SHA256,
//!   truncated to 128 bits), so the store can still find a row by it without holding it;
//! - every value is sealed with ChaCha20-Poly1305 (ring; a random 96-bit nonce each, the
//!   table and key bound as associated data, so a row moved under another key does not
//!   open).
//!
//! The keys are derived from one 32-byte secret, the expiry key file's (`expiry.key_file`):
//! kept off the data disk, a copy of the data dir alone opens nothing. A [`RecordSeal`] also
//! answers a check value, stored once, so a store opened with the wrong key fails at once
//! instead of looking empty.

use ring::{
    aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey},
    hmac,
    rand::{SecureRandom, SystemRandom},
};

/// Why a sealed record did not open.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SealFailure {
    #[error("a sealed record did not open (wrong key, or damaged)")]
    Open,
    #[error("no OS randomness")]
    Random,
}

/// Keyed hashing and sealing of store records, derived from one secret.
pub struct RecordSeal {
    index: hmac::Key,
    aead: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for RecordSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordSeal([key])")
    }
}

impl RecordSeal {
    /// Derives the index and sealing keys from a 32-byte secret.
    pub fn new(secret: &[u8; 32]) -> RecordSeal {
        let master = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let index = hmac::sign(&master, b"pavise store index v1");
        let seal = hmac::sign(&master, b"pavise store seal v1");
        // An HMAC-SHA256 tag is exactly the 32 bytes ChaCha20-Poly1305 takes.
        let aead = match UnboundKey::new(&CHACHA20_POLY1305, seal.as_ref()) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable_key(),
        };
        RecordSeal { index: hmac::Key::new(hmac::HMAC_SHA256, index.as_ref()), aead, rng: SystemRandom::new() }
    }

    /// The keyed hash of `value` in `domain` (`item`, `account`, ...), as 32 hex digits.
    pub fn key(&self, domain: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.index);
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        hex(&ctx.sign().as_ref()[..16])
    }

    /// Seals `plain` for the row `key` of `table`.
    pub fn seal(&self, table: &str, key: &str, plain: &[u8]) -> Result<Vec<u8>, SealFailure> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealFailure::Random)?;
        let mut data = plain.to_vec();
        let aad = format!("{table}\n{key}");
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut data)
            .map_err(|_| SealFailure::Open)?;
        let mut out = Vec::with_capacity(aead::NONCE_LEN + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Opens what [`RecordSeal::seal`] made for the same table and key.
    pub fn open(&self, table: &str, key: &str, sealed: &[u8]) -> Result<Vec<u8>, SealFailure> {
        if sealed.len() < aead::NONCE_LEN {
            return Err(SealFailure::Open);
        }
        let (nonce, rest) = sealed.split_at(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealFailure::Open)?;
        let mut data = rest.to_vec();
        let aad = format!("{table}\n{key}");
        let plain =
            self.aead.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data).map_err(|_| SealFailure::Open)?;
        Ok(plain.to_vec())
    }

    /// A value that only this key produces: stored once, compared at every open.
    pub fn check_value(&self) -> String {
        self.key("check", "pavise store key check")
    }
}

#[cold]
fn unreachable_key() -> ! {
    // ring accepts any 32-byte key for ChaCha20-Poly1305; an HMAC-SHA256 tag is 32 bytes.
    panic!("ChaCha20-Poly1305 refused a 32-byte key")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_stable_and_keyed_and_values_bound_to_their_row() {
        let a = RecordSeal::new(&[7; 32]);
        let b = RecordSeal::new(&[8; 32]);
        assert_eq!(a.key("item", "109"), a.key("item", "109"));
        assert_ne!(a.key("item", "109"), b.key("item", "109"), "another secret, another key");
        assert_ne!(a.key("item", "109"), a.key("account", "109"), "domains do not collide");
        assert_eq!(a.key("item", "109").len(), 32);
        assert!(!a.key("account", "alice").contains("alice"));

        let sealed = a.seal("expiry_items", "k1", b"{\"account\":\"alice\"}").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"alice"), "sealed values hold nothing in clear");
        assert_eq!(a.open("expiry_items", "k1", &sealed).unwrap(), b"{\"account\":\"alice\"}");
        assert_eq!(a.open("expiry_items", "k2", &sealed), Err(SealFailure::Open), "moved to another row");
        assert_eq!(b.open("expiry_items", "k1", &sealed), Err(SealFailure::Open), "wrong key");
        assert_ne!(a.check_value(), b.check_value());
    }
}
