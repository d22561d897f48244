//! Sealing records at rest, and making their deletion real: what a seized data dir must not
//! say, even together with the key file.
//!
//! The expiry schedule is, by its nature, a list of the posts a member wanted gone: ids,
//! account names, deadlines, the author's token. Two things stand between that list and a
//! forensic read of the store file:
//! - **Nothing in clear.** Every identifying key (a status id, an account name) is a keyed
//!   hash (HMAC-SHA256, truncated to 128 bits), so the store finds a row without holding
//!   what it is about; every value is sealed with ChaCha20-Poly1305 (ring; a random 96-bit
//!   nonce each, the table and row key bound as associated data, so a row moved under
//!   another key does not open). [`RecordSeal`] does both.
//! - **Epochs, so a purge is final.** redb is a copy-on-write B-tree: a deleted row's page is
//!   freed, not wiped, and every older version of a row stays in the file until its page is
//!   reused. Sealing alone would let anyone holding the key open those freed pages. So the
//!   records are sealed under an *epoch key* that the store replaces on a schedule
//!   ([`EpochFile`], a ratchet): each new epoch key is derived one-way from the previous one
//!   and fresh randomness (HMAC-SHA256), every live record is re-sealed under it into a
//!   fresh store file (the old file, freed pages and all, is unlinked), and the old epoch
//!   key is overwritten in place and fsynced. A record purged in a past epoch was sealed
//!   under a key that no longer exists anywhere: the current key file and the current
//!   epoch file together cannot open it.
//!
//! The epoch keys live in a small file beside the store (`pavise.epoch`, two fixed slots,
//! rewritten in place), each slot sealed under a key derived from the expiry key file's
//! secret ([`StoreKey`]). So the data dir alone opens nothing (the key file is kept
//! elsewhere, `expiry.key_file`), and the data dir plus the key file open only the current
//! epoch: the live schedule, and what was purged since the last rotation (at most
//! `expiry.forget_within` ago).
//!
//! # For other features' tables
//! Any table that holds something a seizure must not read uses the same mechanism through
//! the embedded store's codec (see `embedded.rs`, section "Sealed tables"): row keys via
//! `Codec::row_key(domain, plain)`, values via `Codec::put`/`Codec::get`, and one entry in
//! the rotation's copy (a row's value must carry what its key was hashed from, so the
//! rotation can hash it again under the next epoch). Nothing sealed here is ever sealed
//! under the key file's secret directly. A row that is never purged and whose key names
//! someone (a sender the shield has seen) may instead be keyed by the [`StableIndex`], so
//! its value need not say what its key was hashed from.

use std::{
    io,
    path::{Path, PathBuf},
};

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

fn aead_key(bytes: &[u8]) -> LessSafeKey {
    match UnboundKey::new(&CHACHA20_POLY1305, bytes) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable_key(),
    }
}

/// Keyed hashing and sealing of store records, under one epoch's key.
pub struct RecordSeal {
    index: hmac::Key,
    aead: LessSafeKey,
    rng: SystemRandom,
    /// The epoch whose key this is; `None` for a store sealed before epochs (converted on
    /// its first open).
    epoch: Option<u64>,
}

impl std::fmt::Debug for RecordSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSeal").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl RecordSeal {
    /// The keys of a store sealed before epochs existed (derived straight from the key
    /// file's secret): only ever used to read such a store once, to convert it.
    pub fn new(secret: &[u8; 32]) -> RecordSeal {
        Self::derive(secret, b"pavise store index v1", b"pavise store seal v1", None)
    }

    /// The keys of one epoch.
    pub fn for_epoch(epoch: u64, key: &[u8; 32]) -> RecordSeal {
        Self::derive(key, b"pavise store epoch index v2", b"pavise store epoch seal v2", Some(epoch))
    }

    fn derive(secret: &[u8; 32], index_label: &[u8], seal_label: &[u8], epoch: Option<u64>) -> RecordSeal {
        let master = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let index = hmac::sign(&master, index_label);
        let seal = hmac::sign(&master, seal_label);
        // An HMAC-SHA256 tag is exactly the 32 bytes ChaCha20-Poly1305 takes.
        RecordSeal {
            index: hmac::Key::new(hmac::HMAC_SHA256, index.as_ref()),
            aead: aead_key(seal.as_ref()),
            rng: SystemRandom::new(),
            epoch,
        }
    }

    pub fn epoch(&self) -> Option<u64> {
        self.epoch
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

/// What the expiry key file gives the store: the key that seals the epoch keys in
/// `pavise.epoch` (it never seals a record itself), and the direct key of a store sealed
/// before epochs, to convert one.
pub struct StoreKey {
    wrap: LessSafeKey,
    legacy: [u8; 32],
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([key])")
    }
}

impl StoreKey {
    /// From the store secret the key file derives (`Sealer::store_key`).
    pub fn new(secret: &[u8; 32]) -> StoreKey {
        let wrap = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), b"pavise store epoch wrap v2");
        StoreKey { wrap: aead_key(wrap.as_ref()), legacy: *secret }
    }

    /// The record keys of a store sealed before epochs.
    pub fn legacy_seal(&self) -> RecordSeal {
        RecordSeal::new(&self.legacy)
    }

    /// A secret for one other purpose (`label` names it), one-way from the key file's
    /// store secret: what nodes sharing the key file share (the PostgreSQL store's epoch
    /// wrap, the cluster's keyed hashes) without any of them being the secret itself.
    pub fn derive_secret(&self, label: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.legacy), label);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// Keyed hashes that stay the same from one epoch to the next (derived from the key
/// file's secret, never from an epoch key), for rows whose key must not be listable but
/// whose plain key the store does not keep anywhere: the shield's first-seen senders and
/// follows. A rotation re-seals such a row's value under the new epoch and keeps its key,
/// so the value need not carry the actor's URL. A seizure of the data dir and the key file
/// can then test whether a given actor is there (by hashing a guess), but not list them.
pub struct StableIndex {
    key: hmac::Key,
}

impl std::fmt::Debug for StableIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StableIndex([key])")
    }
}

impl StableIndex {
    /// The keyed hash of `value` in `domain`, as 32 hex digits.
    pub fn key(&self, domain: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(domain.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        hex(&ctx.sign().as_ref()[..16])
    }
}

impl StoreKey {
    /// The store's [`StableIndex`].
    pub fn stable_index(&self) -> StableIndex {
        let master = hmac::Key::new(hmac::HMAC_SHA256, &self.legacy);
        let derived = hmac::sign(&master, b"pavise store stable index v1");
        StableIndex { key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()) }
    }
}

/// A fresh random epoch key.
pub fn fresh_epoch_key() -> Result<[u8; 32], SealFailure> {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).map_err(|_| SealFailure::Random)?;
    Ok(key)
}

/// The next epoch's key: one-way from the current one (HMAC-SHA256), with fresh randomness
/// mixed in, so neither the past (from the new key) nor the future (from an old copy of
/// the epoch file) can be computed.
pub fn next_epoch_key(current: &[u8; 32], next_epoch: u64) -> Result<[u8; 32], SealFailure> {
    let fresh = fresh_epoch_key()?;
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, current));
    ctx.update(b"pavise epoch ratchet v1");
    ctx.update(&next_epoch.to_le_bytes());
    ctx.update(&fresh);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    Ok(out)
}

/// The store's epoch keys: a 256-byte file of two fixed slots, each one epoch's key sealed
/// under the [`StoreKey`]. A rotation writes the new key into the slot not in use, rewrites
/// the store, then overwrites the old slot with the new key: at every moment one slot opens
/// the epoch the store is in, and once a rotation is done the old key is gone from the file
/// (overwritten in place, fsynced).
pub struct EpochFile {
    path: PathBuf,
    file: std::fs::File,
}

/// The name inside the data dir.
pub const EPOCH_FILE: &str = "pavise.epoch";
const SLOT: usize = 128;
const MAGIC: &[u8; 8] = b"PVEPOCH1";

impl std::fmt::Debug for EpochFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl EpochFile {
    /// Opens the file, or creates it (`0600`, both slots empty).
    pub fn open_or_create(path: &Path) -> io::Result<EpochFile> {
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path)?;
        if file.metadata()?.len() < (2 * SLOT) as u64 {
            file.set_len((2 * SLOT) as u64)?;
            file.sync_all()?;
        }
        Ok(EpochFile { path: path.to_owned(), file })
    }

    /// The epoch keys the slots hold (slot index, epoch, key); a torn or empty slot is left
    /// out.
    pub fn read(&self, key: &StoreKey) -> io::Result<Vec<(usize, u64, [u8; 32])>> {
        let mut out = Vec::new();
        for slot in 0..2 {
            let mut buf = [0u8; SLOT];
            read_at(&self.file, &mut buf, (slot * SLOT) as u64)?;
            if &buf[..8] != MAGIC {
                continue;
            }
            let epoch = u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default());
            let Ok(nonce) = Nonce::try_assume_unique_for_key(&buf[16..28]) else { continue };
            let mut data = buf[28..28 + 32 + 16].to_vec();
            let aad = slot_aad(epoch);
            if let Ok(plain) = key.wrap.open_in_place(nonce, Aad::from(&aad[..]), &mut data)
                && let Ok(k) = <[u8; 32]>::try_from(&plain[..])
            {
                out.push((slot, epoch, k));
            }
        }
        Ok(out)
    }

    /// Writes one slot in place and fsyncs it.
    pub fn write(&self, key: &StoreKey, slot: usize, epoch: u64, secret: &[u8; 32]) -> io::Result<()> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| io::Error::other("no OS randomness"))?;
        let mut data = secret.to_vec();
        key.wrap
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&slot_aad(epoch)[..]), &mut data)
            .map_err(|_| io::Error::other("sealing an epoch key"))?;
        let mut buf = [0u8; SLOT];
        buf[..8].copy_from_slice(MAGIC);
        buf[8..16].copy_from_slice(&epoch.to_le_bytes());
        buf[16..28].copy_from_slice(&nonce);
        buf[28..28 + data.len()].copy_from_slice(&data);
        write_at(&self.file, &buf, (slot.min(1) * SLOT) as u64)?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn slot_aad(epoch: u64) -> Vec<u8> {
    let mut aad = b"pavise epoch key\n".to_vec();
    aad.extend_from_slice(&epoch.to_le_bytes());
    aad
}

#[cfg(unix)]
fn read_at(file: &std::fs::File, buf: &mut [u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(unix)]
fn write_at(file: &std::fs::File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, at)
}

#[cfg(not(unix))]
fn read_at(file: &std::fs::File, buf: &mut [u8], at: u64) -> io::Result<()> {
    use std::io::{Read as _, Seek as _};
    let mut f = file.try_clone()?;
    f.seek(io::SeekFrom::Start(at))?;
    f.read_exact(buf)
}

#[cfg(not(unix))]
fn write_at(file: &std::fs::File, buf: &[u8], at: u64) -> io::Result<()> {
    use std::io::{Seek as _, Write as _};
    let mut f = file.try_clone()?;
    f.seek(io::SeekFrom::Start(at))?;
    f.write_all(buf)
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
        let a = RecordSeal::for_epoch(3, &[7; 32]);
        let b = RecordSeal::for_epoch(3, &[8; 32]);
        assert_eq!(a.key("item", "109"), a.key("item", "109"));
        assert_ne!(a.key("item", "109"), b.key("item", "109"), "another secret, another key");
        assert_ne!(a.key("item", "109"), a.key("account", "109"), "domains do not collide");
        assert_eq!(a.key("item", "109").len(), 32);
        assert!(!a.key("account", "alice").contains("alice"));
        assert_ne!(RecordSeal::new(&[7; 32]).key("item", "1"), a.key("item", "1"), "v1 and epochs differ");

        let sealed = a.seal("expiry_items", "k1", b"{\"account\":\"alice\"}").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"alice"), "sealed values hold nothing in clear");
        assert_eq!(a.open("expiry_items", "k1", &sealed).unwrap(), b"{\"account\":\"alice\"}");
        assert_eq!(a.open("expiry_items", "k2", &sealed), Err(SealFailure::Open), "moved to another row");
        assert_eq!(b.open("expiry_items", "k1", &sealed), Err(SealFailure::Open), "wrong key");
        assert_ne!(a.check_value(), b.check_value());
    }

    #[test]
    fn the_ratchet_moves_one_way_and_the_epoch_file_keeps_one_good_slot() {
        let k0 = fresh_epoch_key().unwrap();
        let k1 = next_epoch_key(&k0, 1).unwrap();
        assert_ne!(k0, k1);
        assert_ne!(next_epoch_key(&k0, 1).unwrap(), k1, "fresh randomness in every step");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EPOCH_FILE);
        let key = StoreKey::new(&[9; 32]);
        let f = EpochFile::open_or_create(&path).unwrap();
        assert!(f.read(&key).unwrap().is_empty());
        f.write(&key, 0, 0, &k0).unwrap();
        f.write(&key, 1, 1, &k1).unwrap();
        assert_eq!(f.read(&key).unwrap(), vec![(0, 0, k0), (1, 1, k1)]);
        // The old key overwritten in place: it is nowhere in the file any more.
        f.write(&key, 0, 1, &k1).unwrap();
        assert_eq!(f.read(&key).unwrap(), vec![(0, 1, k1), (1, 1, k1)]);
        assert!(StoreKey::new(&[1; 32]).read_all(&f).is_empty(), "another key file opens nothing");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 256);
        assert!(!bytes.windows(32).any(|w| w == k1 || w == k0), "keys are sealed in the file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // A torn slot is skipped, the other still opens.
        let mut torn = bytes.clone();
        torn[40] ^= 0xff;
        std::fs::write(&path, &torn).unwrap();
        let f = EpochFile::open_or_create(&path).unwrap();
        assert_eq!(f.read(&key).unwrap(), vec![(1, 1, k1)]);
    }

    impl StoreKey {
        fn read_all(&self, f: &EpochFile) -> Vec<(usize, u64, [u8; 32])> {
            f.read(self).unwrap()
        }
    }
}
