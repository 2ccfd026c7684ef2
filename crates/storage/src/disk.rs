//! The one door to the file system.
//!
//! Fault model (what [`FaultyDisk`] can inject, and what the log must survive):
//! - a write that fails outright, or that lands only its first N bytes and then fails
//!   (a torn write, as after a crash in the middle of `write`);
//! - an `fsync` that fails (the data may or may not be on the platter);
//! - a full disk: writes fail with `StorageFull` until space is given back;
//! - a crash of the machine ([`FaultyDisk::crash`], with `Faults::track_unsynced`): every
//!   file loses what was written to it since its last `fsync` (the bytes overwritten come
//!   back, the length returns to what it was), as the page cache is lost at a power cut.
//!   Directory changes (creating, renaming, removing files) are kept: only file contents
//!   are modelled as volatile.
//!
//! Reads are assumed to return what was written, except after a torn write, where the tail
//! is garbage; start-up recovery finds that by length and CRC-32C and truncates it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open file: positional reads and writes only, so many readers share one handle.
#[allow(clippy::len_without_is_empty)] // a file is not a collection
pub trait DiskFile: Send + Sync + Debug {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// The open file, for sending a range straight from the page cache to a socket
    /// (`sendfile`); held, it stays open for as long. `None` where there is no OS file
    /// (fault injection) or it could not be opened again.
    fn fd(&self) -> Option<Arc<File>> {
        None
    }

    /// Reads exactly `buf.len()` bytes at `pos`, failing with `UnexpectedEof` past the end.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read")),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Directory-level operations and file opening.
pub trait Disk: Send + Sync + Debug {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Entries of a directory, sorted by name.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;

    /// Opens a file to be read or written whole and closed at once (small files: indexes,
    /// snapshots, checkpoints; a segment the scrubber reads with its own access advice).
    /// The OS disk gives it a descriptor of its own, outside the open-file budget.
    fn open_transient(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        self.open(path, create)
    }

    /// Replaces `path` with `data` crash-safely: write a temporary file, fsync it, rename it
    /// over the old one, fsync the directory. A crash leaves the old or the new file.
    fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let file = self.open_transient(&tmp, true)?;
        file.set_len(0)?;
        file.write_all_at(data, 0)?;
        file.sync_data()?;
        drop(file);
        self.rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    /// Reads a whole (small) file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open_transient(path, false)?;
        let len = usize::try_from(file.len()?).map_err(|_| io::Error::other("file too large"))?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// The real file system. Files it opens count against the open-file budget (see
/// [`crate::handles`]): they may be closed while idle and opened again on their next use.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsDisk;

/// A file with its own descriptor.
#[derive(Debug)]
struct OsFile(Arc<File>);

impl DiskFile for OsFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    fn fd(&self) -> Option<Arc<File>> {
        Some(self.0.clone())
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// A file under the open-file budget: each operation takes the descriptor (opening the
/// file again if the budget closed it) and holds it until done.
#[derive(Debug)]
struct BudgetFile(Arc<crate::handles::Handle>);

impl DiskFile for BudgetFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.file()?.read_at(buf, pos)
    }
    fn fd(&self) -> Option<Arc<File>> {
        self.0.file().ok()
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let file = self.0.file()?;
        self.0.written();
        file.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.file()?.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let file = self.0.file()?;
        self.0.written();
        file.set_len(len)
    }
}

/// Opens a file for positional reads and writes, never truncating it. A file it creates is
/// readable by the broker's user alone (0600): the data directory holds every record and,
/// in the metadata log, every user's salted SCRAM keys.
pub(crate) fn open_read_write(path: &Path, create: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Creates `path` and its missing parents for the broker's user alone (0700).
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

impl Disk for OsDisk {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(BudgetFile(crate::handles::open(path, create)?)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        create_private_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)? {
            out.push(entry?.path());
        }
        out.sort();
        Ok(out)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        crate::handles::removing(path, false, || std::fs::remove_file(path))
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        crate::handles::removing(path, true, || std::fs::remove_dir_all(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        crate::handles::renaming(from, to, || std::fs::rename(from, to))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn open_transient(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(OsFile(Arc::new(open_read_write(path, create)?))))
    }
}

/// Faults to inject; see the fault model at the top of this file.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Every write fails.
    pub fail_writes: bool,
    /// The next write lands only this many bytes, then fails.
    pub torn_write_bytes: Option<usize>,
    /// Every fsync fails.
    pub fail_syncs: bool,
    /// Bytes that may still be written before the disk is full; `None` means unlimited.
    pub space_left: Option<u64>,
    /// Remember what each write since a file's last fsync overwrote, so that
    /// [`FaultyDisk::crash`] can take it back.
    pub track_unsynced: bool,
}

/// What a crash takes back in one file: its length at its last fsync, and the bytes each
/// later write or truncation replaced, in order.
#[derive(Debug, Default)]
struct Unsynced {
    synced_len: u64,
    undo: Vec<(u64, Vec<u8>)>,
}

type UnsyncedFiles = Arc<Mutex<HashMap<PathBuf, Unsynced>>>;

/// An [`OsDisk`] whose writes and syncs fail on demand, and which can crash.
#[derive(Debug, Default, Clone)]
pub struct FaultyDisk {
    faults: Arc<Mutex<Faults>>,
    unsynced: UnsyncedFiles,
}

impl FaultyDisk {
    pub fn new() -> Self {
        Self::default()
    }
    /// Changes the faults in force.
    pub fn set(&self, f: impl FnOnce(&mut Faults)) {
        let mut guard = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
    }

    /// The machine crashes: every file loses what was written since its last fsync (needs
    /// `track_unsynced` from before those writes). Call it once nothing uses the disk any
    /// more (the process that wrote is gone). Returns the number of files that lost bytes.
    pub fn crash(&self) -> io::Result<usize> {
        let files = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|p| p.into_inner()));
        let mut changed = 0;
        for (path, u) in files {
            let file = match open_read_write(&path, false) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for (pos, old) in u.undo.iter().rev() {
                file.write_all_at(old, *pos)?;
            }
            file.set_len(u.synced_len)?;
            changed += 1;
        }
        Ok(changed)
    }

    fn tracking(&self) -> bool {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .track_unsynced
    }

    /// Moves what a crash would take back from `from` (a file or a directory) to `to`.
    fn rename_unsynced(&self, from: &Path, to: &Path) {
        let mut files = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
        let moved: Vec<PathBuf> = files
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for old in moved {
            if let (Some(u), Ok(rest)) = (files.remove(&old), old.strip_prefix(from)) {
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                files.insert(new, u);
            }
        }
    }

    fn forget_unsynced(&self, under: &Path) {
        self.unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p, _| !p.starts_with(under));
    }
}

/// Fails when syncs are set to fail.
fn check_sync(faults: &Mutex<Faults>) -> io::Result<()> {
    if faults.lock().unwrap_or_else(|p| p.into_inner()).fail_syncs {
        return Err(io::Error::other("injected fsync failure"));
    }
    Ok(())
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn DiskFile>,
    faults: Arc<Mutex<Faults>>,
    path: PathBuf,
    unsynced: UnsyncedFiles,
}

impl FaultyFile {
    /// Notes the bytes in `pos..end` (and the length) before they change, for a crash.
    fn remember(&self, pos: u64, end: u64) -> io::Result<()> {
        if !self
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .track_unsynced
        {
            return Ok(());
        }
        let len = self.inner.len()?;
        let mut files = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
        let u = files.entry(self.path.clone()).or_insert_with(|| Unsynced {
            synced_len: len,
            undo: Vec::new(),
        });
        let end = end.min(len);
        if pos < end {
            let mut old = vec![0u8; (end - pos) as usize];
            self.inner.read_exact_at(&mut old, pos)?;
            u.undo.push((pos, old));
        }
        Ok(())
    }
}

impl DiskFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if f.fail_writes {
            return Err(io::Error::other("injected write failure"));
        }
        if let Some(n) = f.torn_write_bytes.take() {
            self.inner.write_all_at(&buf[..n.min(buf.len())], pos)?;
            return Err(io::Error::other("injected torn write"));
        }
        if let Some(left) = f.space_left.as_mut() {
            if (buf.len() as u64) > *left {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "injected full disk",
                ));
            }
            *left -= buf.len() as u64;
        }
        drop(f);
        self.remember(pos, pos + buf.len() as u64)?;
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        check_sync(&self.faults)?;
        self.inner.sync_data()?;
        self.unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.path);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.remember(len, u64::MAX)?;
        self.inner.set_len(len)
    }
}

impl FaultyDisk {
    fn wrap(&self, inner: Arc<dyn DiskFile>, path: &Path) -> Arc<dyn DiskFile> {
        Arc::new(FaultyFile {
            inner,
            faults: self.faults.clone(),
            path: path.to_path_buf(),
            unsynced: self.unsynced.clone(),
        })
    }
}

impl Disk for FaultyDisk {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(self.wrap(OsDisk.open(path, create)?, path))
    }
    fn open_transient(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(self.wrap(OsDisk.open_transient(path, create)?, path))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        OsDisk.create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        OsDisk.read_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsDisk.remove_file(path)?;
        self.forget_unsynced(path);
        Ok(())
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        OsDisk.remove_dir_all(path)?;
        self.forget_unsynced(path);
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsDisk.rename(from, to)?;
        if self.tracking() {
            self.forget_unsynced(to);
            self.rename_unsynced(from, to);
        }
        Ok(())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        check_sync(&self.faults)?;
        OsDisk.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        OsDisk.exists(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tracking_disk() -> FaultyDisk {
        let disk = FaultyDisk::new();
        disk.set(|f| f.track_unsynced = true);
        disk
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_takes_back_the_rest() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let disk = tracking_disk();
        let f = disk.open(&path, true).expect("open");
        f.write_all_at(b"durable", 0).expect("write");
        f.sync_data().expect("sync");
        f.write_all_at(b"DUR", 0).expect("overwrite");
        f.write_all_at(b" and lost", 7).expect("append");
        drop(f);
        assert_eq!(disk.crash().expect("crash"), 1);
        assert_eq!(std::fs::read(&path).expect("read"), b"durable");
        assert_eq!(
            disk.crash().expect("crash again"),
            0,
            "nothing left to take back"
        );
    }

    #[test]
    fn renamed_files_carry_their_unsynced_writes_and_removed_ones_drop_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let disk = tracking_disk();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        let f = disk.open(&a, true).expect("open");
        f.write_all_at(b"never synced", 0).expect("write");
        drop(f);
        disk.rename(&a, &b).expect("rename");
        let g = disk.open(&c, true).expect("open");
        g.write_all_at(b"gone", 0).expect("write");
        drop(g);
        disk.remove_file(&c).expect("remove");
        assert_eq!(disk.crash().expect("crash"), 1);
        assert_eq!(
            std::fs::read(&b).expect("read").len(),
            0,
            "the rename kept, the bytes lost"
        );
        assert!(!c.exists());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        SetLen(u64),
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..64, proptest::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(p, b)| Op::Write(p, b)),
            (0u64..80).prop_map(Op::SetLen),
            Just(Op::Sync),
        ]
    }

    proptest! {
        /// Whatever the writes, truncations and fsyncs, a crash leaves each file exactly as
        /// it was at its last fsync (a model: the bytes as of the last sync).
        #[test]
        fn a_crash_returns_a_file_to_its_last_fsync(ops in proptest::collection::vec(op(), 0..40)) {
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join("f");
            let disk = tracking_disk();
            let f = disk.open(&path, true).expect("open");
            let mut now: Vec<u8> = Vec::new();
            let mut synced: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(pos, bytes) => {
                        f.write_all_at(&bytes, pos).expect("write");
                        let end = pos as usize + bytes.len();
                        if now.len() < end {
                            now.resize(end, 0);
                        }
                        now[pos as usize..end].copy_from_slice(&bytes);
                    }
                    Op::SetLen(len) => {
                        f.set_len(len).expect("set_len");
                        now.resize(len as usize, 0);
                    }
                    Op::Sync => {
                        f.sync_data().expect("sync");
                        synced = now.clone();
                    }
                }
            }
            prop_assert_eq!(std::fs::read(&path).expect("read"), now);
            drop(f);
            disk.crash().expect("crash");
            prop_assert_eq!(std::fs::read(&path).expect("read"), synced);
        }
    }
}
