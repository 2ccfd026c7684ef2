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
        std::fs::create_dir_all(dir)
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
}
