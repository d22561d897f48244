//! The data dir is pavise's alone: `0700`, and every file in it `0600`.
//!
//! The store, the key files, the admin token and the media spool all live there. Some are
//! created by libraries with the process umask (redb's file, directories), so rather than
//! trust each creator, the relay tightens the whole tree once everything is open at start
//! ([`harden`]), and [`create_private_dir`] makes the directories it creates itself private
//! from the first moment.

use std::{io, path::Path};

/// Creates `dir` (and missing parents) and makes it `0700`.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Makes `dir` and every directory below it `0700` and every file `0600`. Symlinks are not
/// followed (a link out of the data dir is not pavise's to change). Returns how many entries
/// were tightened.
pub fn harden(dir: &Path) -> io::Result<usize> {
    let mut changed = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        changed += usize::from(tighten(&d, 0o700)?);
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                changed += usize::from(tighten(&entry.path(), 0o600)?);
            }
        }
    }
    Ok(changed)
}

#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    if current == mode {
        return Ok(false);
    }
    set_mode(path, mode)?;
    Ok(true)
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _mode: u32) -> io::Result<bool> {
    Ok(false)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn every_file_0600_every_dir_0700() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        create_private_dir(&data).unwrap();
        std::fs::create_dir_all(data.join("media-tmp/x")).unwrap();
        std::fs::write(data.join("pavise.redb"), b"x").unwrap();
        std::fs::write(data.join("media-tmp/x/spool"), b"x").unwrap();
        std::fs::set_permissions(data.join("pavise.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(data.join("media-tmp"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(harden(&data).unwrap() >= 3);
        let mode = |p: &str| std::fs::metadata(data.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("pavise.redb"), 0o600);
        assert_eq!(mode("media-tmp"), 0o700);
        assert_eq!(mode("media-tmp/x"), 0o700);
        assert_eq!(mode("media-tmp/x/spool"), 0o600);
        assert_eq!(harden(&data).unwrap(), 0, "idempotent");
    }
}
