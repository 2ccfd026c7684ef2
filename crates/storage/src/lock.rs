//! One process per data directory: an exclusive `flock` on `<data-dir>/.lock`, taken before
//! anything else in the directory is opened and held for the life of the process (the
//! kernel drops it when the process ends, however it ends, so a crash leaves no stale
//! lock). Two brokers on one directory would append at the same offsets and each would
//! destroy the other's acknowledged records.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The file whose lock guards a data directory.
pub const LOCK_FILE: &str = ".lock";

/// Holds a data directory's lock until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, String> {
        crate::disk::create_private_dir_all(dir)
            .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("another process (pid {holder})")
                };
                return Err(format!(
                    "{who} holds the data directory {}: stop it first, or give this one its own --data-dir",
                    dir.display()
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
        }
        // For the message above, in the next process: which pid holds it. Advice only.
        let _ = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes group and other permissions away from the data directory, its metadata-log
    /// directory and every file in that, and the credentials written offline (a directory
    /// made by an older version, or by hand): they hold every user's salted SCRAM keys.
    /// Returns how many modes changed.
    pub fn make_private(&self) -> Result<usize, String> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut changed = 0;
        let mut tighten = |path: &Path, mode: u32| -> Result<(), String> {
            use std::os::unix::fs::PermissionsExt;
            let meta = match std::fs::symlink_metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            };
            if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 == 0 {
                return Ok(());
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
                format!(
                    "cannot make {} private ({mode:o}): {e}; run the broker as the directory's owner",
                    path.display()
                )
            })?;
            changed += 1;
            Ok(())
        };
        tighten(dir, 0o700)?;
        tighten(&dir.join("bootstrap-records.jsonl"), 0o600)?;
        let metadata = dir.join("__cluster_metadata");
        tighten(&metadata, 0o700)?;
        let mut stack = vec![metadata];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    tighten(&path, 0o700)?;
                    stack.push(path);
                } else {
                    tighten(&path, 0o600)?;
                }
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        let second = DataDirLock::acquire(dir.path()).expect_err("second lock refused");
        assert!(second.contains("holds the data directory"), "{second}");
        assert!(second.contains(&std::process::id().to_string()), "{second}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("lock after the first was dropped");
    }

    #[test]
    fn make_private_takes_group_and_other_access_from_credential_files() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        let meta = dir.join("__cluster_metadata").join("__raft");
        std::fs::create_dir_all(&meta).expect("dirs");
        std::fs::write(meta.join("log"), b"keys").expect("write");
        std::fs::write(dir.join("bootstrap-records.jsonl"), b"keys").expect("write");
        let open = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        open(&dir, 0o755);
        open(&meta, 0o755);
        open(&meta.join("log"), 0o644);
        open(&dir.join("bootstrap-records.jsonl"), 0o644);
        let lock = DataDirLock::acquire(&dir).expect("lock");
        assert_eq!(lock.make_private().expect("tightened"), 5);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("__cluster_metadata")), 0o700);
        assert_eq!(mode(&meta), 0o700);
        assert_eq!(mode(&meta.join("log")), 0o600);
        assert_eq!(mode(&dir.join("bootstrap-records.jsonl")), 0o600);
        assert_eq!(
            lock.make_private().expect("again"),
            0,
            "nothing left to change"
        );
        // What the broker creates is private from the start.
        let fresh = root.path().join("fresh");
        let disk = crate::OsDisk;
        crate::Disk::create_dir_all(&disk, &fresh.join("t-0")).expect("create");
        crate::Disk::open(&disk, &fresh.join("t-0").join("x.log"), true).expect("open");
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("t-0")), 0o700);
        assert_eq!(mode(&fresh.join("t-0").join("x.log")), 0o600);
    }
}
