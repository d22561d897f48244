//! Sealing authors' bearer tokens: the scheduler needs the token it saw at creation to
//! delete a post days later, and a seized data dir must not hand those tokens over.
//!
//! A 32-byte master key lives in its own file (created 0600 on first run, read only after
//! that), `expiry.key_file`: kept off the data disk (pavise refuses to start with it inside
//! the data dir unless told it is a test), so a seized data dir alone opens nothing. Keys
//! are derived from it: one seals tokens with ChaCha20-Poly1305 (ring; a random 96-bit
//! nonce each, the credential id and account bound as associated data), the other makes
//! the credential id, an HMAC of the token, so the same token is stored once and
//! recognised again without being kept in clear; a third unlocks the store's epoch keys
//! ([`Sealer::store_key`]). A sealed token only ever reaches the store inside a row sealed
//! under the current epoch, so once its row is purged and the epoch has moved on, not even
//! this key file opens it again. [`Token`] never prints its value.

use std::{io::Write as _, path::Path};

use ring::{
    aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey},
    hmac,
    rand::{SecureRandom, SystemRandom},
};

use crate::store::SealedCredential;

/// The bearer token type lives with the one reader of tokens the crate has.
pub use crate::auth::Token;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("a sealed credential did not open (wrong key file, or damaged)")]
    Open,
    #[error("no OS randomness")]
    Random,
}

/// Seals and opens tokens under the key file's key; derives the store's key
/// ([`Sealer::store_key`]) and keyed digests from the same key.
pub struct Sealer {
    aead: LessSafeKey,
    id_key: hmac::Key,
    digest_key: hmac::Key,
    store_secret: [u8; 32],
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([key])")
    }
}

impl Sealer {
    /// Reads the key file, or creates it (32 random bytes, mode 0600) on first run.
    pub fn load_or_create(path: &Path) -> Result<Sealer, SealError> {
        let err = |message: String| SealError::KeyFile { path: path.display().to_string(), message };
        let rng = SystemRandom::new();
        let master: [u8; 32] = match std::fs::read(path) {
            Ok(bytes) => bytes.try_into().map_err(|_| err("must hold exactly 32 bytes".into()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rng.fill(&mut key).map_err(|_| SealError::Random)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut file = opts.open(path).map_err(|e| err(e.to_string()))?;
                file.write_all(&key).and_then(|()| file.sync_all()).map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "created the expiry key file");
                key
            }
            Err(e) => return Err(err(e.to_string())),
        };
        Sealer::from_master(&master, rng).ok_or_else(|| err("unusable key".into()))
    }

    fn from_master(master: &[u8; 32], rng: SystemRandom) -> Option<Sealer> {
        let derive = |label: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, master), label);
        let seal_key = derive(b"pavise expiry seal v1");
        let id_key = derive(b"pavise expiry credential id v1");
        let digest_key = derive(b"pavise expiry digest v1");
        let store_secret: [u8; 32] = derive(b"pavise store v1").as_ref().try_into().ok()?;
        // CHACHA20_POLY1305 takes exactly the 32 bytes an HMAC-SHA256 tag has.
        let aead = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, seal_key.as_ref()).ok()?);
        Some(Sealer {
            aead,
            id_key: hmac::Key::new(hmac::HMAC_SHA256, id_key.as_ref()),
            digest_key: hmac::Key::new(hmac::HMAC_SHA256, digest_key.as_ref()),
            store_secret,
            rng,
        })
    }

    /// What the store needs from the key file: the key that seals its epoch keys (see
    /// [`crate::store::seal`]). The store's records are never sealed under the key file's
    /// own secret.
    pub fn store_key(&self) -> crate::store::StoreKey {
        crate::store::StoreKey::new(&self.store_secret)
    }

    /// [`Sealer::store_key`], by its older name.
    pub fn record_seal(&self) -> crate::store::StoreKey {
        self.store_key()
    }

    /// A keyed digest of `parts` (to recognise a text later without keeping it).
    pub fn digest(&self, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(&self.digest_key);
        for p in parts {
            ctx.update(p.as_bytes());
            ctx.update(&[0]);
        }
        ctx.sign().as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The stable, non-reversible id of a token.
    pub fn credential_id(&self, token: &Token) -> String {
        let tag = hmac::sign(&self.id_key, token.expose().as_bytes());
        tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn seal(&self, account: &str, token: &Token) -> Result<SealedCredential, SealError> {
        let id = self.credential_id(token);
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut data = token.expose().as_bytes().to_vec();
        let aad = format!("{id}\n{account}");
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(SealedCredential { id, account: account.to_owned(), sealed })
    }

    pub fn open(&self, cred: &SealedCredential) -> Result<Token, SealError> {
        if cred.sealed.len() < aead::NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, rest) = cred.sealed.split_at(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = rest.to_vec();
        let aad = format!("{}\n{}", cred.id, cred.account);
        let plain =
            self.aead.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data).map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map(Token::new).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seal_open_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/expiry.key");
        let s = Sealer::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let t = Token::new("secret-token-value");
        let sealed = s.seal("alice", &t).unwrap();
        assert!(!sealed.sealed.windows(6).any(|w| w == b"secret"), "the token is not stored in clear");
        assert!(!format!("{t:?} {sealed:?}").contains("secret"));
        assert_eq!(s.open(&sealed).unwrap(), t);
        assert_eq!(sealed.id, s.credential_id(&t));
        assert_ne!(s.credential_id(&Token::new("other")), sealed.id);

        // The same key file opens it again after a restart; tampering is caught.
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), t);
        let mut moved = sealed.clone();
        moved.account = "mallory".into();
        assert!(again.open(&moved).is_err());
        let other = Sealer::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(other.open(&sealed).is_err());
    }
}
