//! Files written whole or not at all: a power cut while `edgechat init` (or `serve` on first
//! start, or `keys rotate`) writes a key or certificate must never leave a half-written file
//! that later looks valid, or a truncated one that stops the next start with a puzzling error.
//!
//! [`create`] writes a temporary file beside the target (named [`TEMP_PREFIX`]...), fsyncs it,
//! renames it into place and fsyncs the directory, so after a crash the target either exists
//! complete or does not exist; [`remove_stale_temps`] deletes the temporary files a crash left.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Temporary files start with this; nothing else in a data directory does.
pub const TEMP_PREFIX: &str = ".edgechat-tmp-";

/// Who may read a created file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Owner only (0600): private keys.
    Private,
    /// The umask decides: certificates, config.
    Public,
}

/// Creates `path` with `bytes`, atomically: afterwards it exists complete, or (after a crash
/// or an error) not at all. Fails with `AlreadyExists` if `path` exists: nothing is ever
/// overwritten.
pub fn create(path: &Path, bytes: &[u8], mode: Mode) -> io::Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
    }
    replace(path, bytes, mode)
}

/// Writes `path` with `bytes` atomically, replacing it if it exists: readers see the old
/// file or the new one, whole (a terminal client's profile, rewritten on every token
/// rotation while other processes read it).
pub fn replace(path: &Path, bytes: &[u8], mode: Mode) -> io::Result<()> {
    let temp = temp_path(path);
    let written = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        if mode == Mode::Private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        publish(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// A temporary name beside `path` (same directory, so a rename is atomic), which
/// [`remove_stale_temps`] deletes if it is left behind.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent(path).join(format!("{TEMP_PREFIX}{name}-{:016x}", rand::random::<u64>()))
}

/// Renames a complete, synced temporary file into place and makes the rename durable.
pub fn publish(temp: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(temp, path)?;
    sync_dir(parent(path))
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Makes a directory's entries (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Deletes the temporary files an interrupted [`create`] left in `dir`; returns how many.
/// A missing directory has none.
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_never_overwrites_and_cleans_up_temps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        create(&path, b"secret", Mode::Private).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let e = create(&path, b"other", Mode::Private).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        // What a crash between write and rename leaves behind.
        std::fs::write(dir.path().join(format!("{TEMP_PREFIX}ca.pem-1")), b"half").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 1);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["ca.key"]);
        assert_eq!(remove_stale_temps(&dir.path().join("missing")).unwrap(), 0);
    }
}
