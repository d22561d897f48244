//! The admin token: a file of 32 random bytes in hex, created 0600 on first run, and
//! compared in constant time.

use std::{io::Write as _, path::Path};

use ring::rand::SecureRandom;

/// Reads the admin token, or makes one (32 random bytes, hex, mode 0600) on first run.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the token file is empty")),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut raw).map_err(|_| std::io::Error::other("no OS randomness"))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    tracing::info!(path = %path.display(), "created the admin token file");
    Ok(token)
}

/// Whether `a` equals `b`, in time that does not depend on where they differ.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
