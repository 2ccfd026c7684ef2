//! The open-file budget: at most so many of the files opened through [`crate::OsDisk`]
//! hold a descriptor at once, so a broker can host more partitions than its open-file
//! limit (`ulimit -n`) allows descriptors. Kafka keeps every segment of every partition
//! open and asks the operator to raise the limit; Gregor closes the least recently used
//! files instead and opens them again, by path, on their next use.
//!
//! How it stays correct:
//! - One handle per path: opening a path that is open already returns the same handle,
//!   so a file has one descriptor at most, whoever holds it.
//! - An operation takes its own reference to the descriptor for its duration: closing a
//!   file (eviction) only drops the handle's reference, so nothing in flight is cut off,
//!   and the descriptors open may exceed the budget by the operations in flight.
//! - A file that is removed, or renamed over, while a handle to it lives is first opened
//!   and pinned (kept out of the budget), so its holders read it as before: an unlinked
//!   file stays readable through an open descriptor, and a path could no longer reach it.
//! - A rename moves the handles at or under its source to the new path, under the same
//!   lock that opens files again, so a reopen never sees a half-done rename.
//! - A file removed by itself (a segment past retention, or renamed over by the cleaner)
//!   while a handle to it lives is opened and pinned (kept out of the budget) first, so
//!   its readers read it as before. A directory removed whole (a deleted partition) does
//!   not open its closed files: their handles say the file was removed at their next use.
//! - Closing a file does not lose what was written to it: unsynced data stays in the page
//!   cache, and an `fsync` through a new descriptor writes back every dirty page of the
//!   file. Linux reports a write-back error to a descriptor opened after it as well, as
//!   long as nobody saw it first and the file's inode stayed in memory; to make that
//!   rarer, a file written since its last `fsync` gets one more pass of the clock's hand
//!   than a clean one before it is closed.
//! - Running out of descriptors (EMFILE) while opening a closed file again closes more of
//!   the others and tries once more; if it still fails the operation fails before it
//!   wrote anything, and the log refuses that write without going offline.
//!
//! Which file to close is chosen by the clock algorithm: a file used since the hand last
//! passed gets a second chance, and a dirty one a third (each pass of the hand takes one,
//! so a closing costs a few steps of the hand however many files are dirty). Uses of an open file take no global lock.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Files kept open when no budget is set: no eviction.
const UNLIMITED: usize = usize::MAX;

static BUDGET: AtomicUsize = AtomicUsize::new(UNLIMITED);
/// Budgeted files holding a descriptor now.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// Files closed to keep within the budget, and opened again on their next use.
static CLOSED: AtomicU64 = AtomicU64::new(0);
static REOPENED: AtomicU64 = AtomicU64::new(0);
/// Handles alive (open or not), for tidying the registry.
static LIVE: AtomicUsize = AtomicUsize::new(0);

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    by_path: BTreeMap::new(),
    ring: Vec::new(),
    hand: 0,
});

/// Sets how many files may hold a descriptor at once (at least 2). Files over it are
/// closed at their next open, least recently used first.
pub fn set_budget(files: usize) {
    BUDGET.store(files.max(2), Ordering::Relaxed);
    let mut reg = registry();
    reg.evict(None);
}

/// The budget in force (`usize::MAX` when none was set).
pub fn budget() -> usize {
    BUDGET.load(Ordering::Relaxed)
}

/// What the budget has done: files holding a descriptor now, files closed to stay within
/// it, and closed files opened again since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStats {
    pub open: usize,
    pub closed: u64,
    pub reopened: u64,
}

pub fn stats() -> FileStats {
    FileStats {
        open: OPEN.load(Ordering::Relaxed),
        closed: CLOSED.load(Ordering::Relaxed),
        reopened: REOPENED.load(Ordering::Relaxed),
    }
}

struct Registry {
    /// Each live handle by its current path.
    by_path: BTreeMap<PathBuf, Weak<Handle>>,
    /// Budgeted handles that hold a descriptor (and dead ones, swept as the hand passes).
    ring: Vec<Weak<Handle>>,
    hand: usize,
}

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file opened through the budget.
#[derive(Debug)]
pub(crate) struct Handle {
    /// Where to open it again; changed by renames, under the registry's lock.
    path: Mutex<PathBuf>,
    file: Mutex<Option<Arc<File>>>,
    /// Passes of the clock's hand before it closes the file: set on use (1, or 2 while
    /// dirty), taken one a pass.
    chances: AtomicU8,
    /// Kept open outside the budget: the file was removed or replaced while in use.
    pinned: AtomicBool,
    /// Written since its last successful fsync.
    dirty: AtomicBool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        let file = self.file.get_mut().unwrap_or_else(|p| p.into_inner());
        if file.is_some() && !*self.pinned.get_mut() {
            OPEN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens `path` read-write (creating it with `create`) through the budget; a path open
/// already gives its handle.
pub(crate) fn open(path: &Path, create: bool) -> io::Result<Arc<Handle>> {
    let mut reg = registry();
    if let Some(h) = reg.by_path.get(path).and_then(Weak::upgrade) {
        h.touch();
        return Ok(h);
    }
    let file = reg.open_file(path, create)?;
    let handle = Arc::new(Handle {
        path: Mutex::new(path.to_path_buf()),
        file: Mutex::new(Some(Arc::new(file))),
        chances: AtomicU8::new(1),
        pinned: AtomicBool::new(false),
        dirty: AtomicBool::new(false),
    });
    LIVE.fetch_add(1, Ordering::Relaxed);
    OPEN.fetch_add(1, Ordering::Relaxed);
    reg.by_path
        .insert(path.to_path_buf(), Arc::downgrade(&handle));
    reg.ring.push(Arc::downgrade(&handle));
    reg.evict(Some(&handle));
    reg.tidy();
    Ok(handle)
}

/// The process (EMFILE) or the system (ENFILE) has no file descriptor left.
pub fn out_of_files(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
        || e.get_ref().is_some_and(|inner| inner.is::<OutOfFiles>())
}

const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// An open that failed for want of descriptors, with what to do.
#[derive(Debug)]
struct OutOfFiles(String);

impl std::fmt::Display for OutOfFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutOfFiles {}

impl Handle {
    /// The descriptor, opened again if the budget closed it.
    pub(crate) fn file(self: &Arc<Self>) -> io::Result<Arc<File>> {
        if let Some(f) = lock(&self.file).as_ref() {
            self.touch();
            return Ok(f.clone());
        }
        self.reopen()
    }

    #[cold]
    fn reopen(self: &Arc<Self>) -> io::Result<Arc<File>> {
        let mut reg = registry();
        let mut slot = lock(&self.file);
        if let Some(f) = slot.as_ref() {
            return Ok(f.clone());
        }
        if self.pinned.load(Ordering::Relaxed) {
            // It was removed and could not be kept open: its path may name another file now.
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} was removed", lock(&self.path).display()),
            ));
        }
        let path = lock(&self.path).clone();
        let file = Arc::new(reg.open_file(&path, false)?);
        *slot = Some(file.clone());
        drop(slot);
        self.touch();
        OPEN.fetch_add(1, Ordering::Relaxed);
        REOPENED.fetch_add(1, Ordering::Relaxed);
        reg.ring.push(Arc::downgrade(self));
        reg.evict(Some(self));
        Ok(file)
    }

    /// Notes a use: the clock's hand passes it once (twice while dirty) before closing it.
    fn touch(&self) {
        let chances = if self.dirty.load(Ordering::Relaxed) {
            2
        } else {
            1
        };
        self.chances.store(chances, Ordering::Relaxed);
    }

    /// Notes a write: the file is dirty until its next successful fsync.
    pub(crate) fn written(&self) {
        self.dirty.store(true, Ordering::Relaxed);
        self.chances.store(2, Ordering::Relaxed);
    }

    /// Fsyncs the file's data; a success makes it clean (unless written meanwhile).
    pub(crate) fn sync_data(self: &Arc<Self>) -> io::Result<()> {
        let file = self.file()?;
        self.dirty.store(false, Ordering::Relaxed);
        file.sync_data().inspect_err(|_| self.written())?;
        self.touch();
        Ok(())
    }

    /// Keeps the file open for good, outside the budget; a closed one is opened first
    /// when `open_closed`, and otherwise left closed for good (its next use fails).
    fn pin(&self, open_closed: bool) {
        let mut slot = lock(&self.file);
        if self.pinned.swap(true, Ordering::Relaxed) {
            return;
        }
        if slot.is_some() {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if !open_closed {
            return;
        }
        let path = lock(&self.path).clone();
        match crate::disk::open_read_write(&path, false) {
            Ok(f) => *slot = Some(Arc::new(f)),
            // Its holders get this error at their next use.
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not keep a removed file open for its readers")
            }
        }
    }
}

impl Registry {
    /// Opens a file for the budget; out of descriptors, closes a quarter of the budget's
    /// files (in use or not) and tries once more.
    fn open_file(&mut self, path: &Path, create: bool) -> io::Result<File> {
        match crate::disk::open_read_write(path, create) {
            Err(e) if out_of_files(&e) => {
                let target = OPEN.load(Ordering::Relaxed) * 3 / 4;
                self.close_down_to(target, None, true);
                crate::disk::open_read_write(path, create).map_err(|e| {
                    if out_of_files(&e) {
                        io::Error::new(
                            e.kind(),
                            OutOfFiles(format!(
                                "{e} opening {}: raise the open-file limit (ulimit -n) or lower log.open.files.max, and check max.connections",
                                path.display()
                            )),
                        )
                    } else {
                        e
                    }
                })
            }
            other => other,
        }
    }

    /// Closes files, least recently used first, until the budget holds; never `keep`.
    fn evict(&mut self, keep: Option<&Arc<Handle>>) {
        self.close_down_to(BUDGET.load(Ordering::Relaxed), keep, false);
    }

    /// Closes files until `target` hold a descriptor, each once the hand has passed it as
    /// often as its chances say (or, `hard`, at once).
    fn close_down_to(&mut self, target: usize, keep: Option<&Arc<Handle>>, hard: bool) {
        let turn = self.ring.len();
        // Three turns of the clock at most: every file's chances (two at most) are gone
        // by then.
        let mut steps = 3 * turn + 1;
        while OPEN.load(Ordering::Relaxed) > target && !self.ring.is_empty() && steps > 0 {
            steps -= 1;
            if self.hand >= self.ring.len() {
                self.hand = 0;
            }
            let Some(h) = self.ring[self.hand].upgrade() else {
                self.ring.swap_remove(self.hand);
                continue;
            };
            if h.pinned.load(Ordering::Relaxed) {
                self.ring.swap_remove(self.hand);
                continue;
            }
            let chances = h.chances.load(Ordering::Relaxed);
            if keep.is_some_and(|k| Arc::ptr_eq(k, &h)) || (chances > 0 && !hard) {
                h.chances
                    .store(chances.saturating_sub(1), Ordering::Relaxed);
                self.hand += 1;
                continue;
            }
            let mut slot = lock(&h.file);
            if slot.take().is_some() {
                OPEN.fetch_sub(1, Ordering::Relaxed);
                CLOSED.fetch_add(1, Ordering::Relaxed);
            }
            drop(slot);
            self.ring.swap_remove(self.hand);
        }
    }

    /// Drops the entries of handles that are gone, once they outnumber the live ones.
    fn tidy(&mut self) {
        let live = LIVE.load(Ordering::Relaxed);
        if self.by_path.len() > 2 * live + 1024 {
            self.by_path.retain(|_, w| w.strong_count() > 0);
        }
        if self.ring.len() > 2 * OPEN.load(Ordering::Relaxed) + 1024 {
            self.ring.retain(|w| w.strong_count() > 0);
            self.hand = 0;
        }
    }

    /// The entries at `path` or under it (a directory's files), in path order.
    fn under(&self, path: &Path) -> Vec<PathBuf> {
        self.by_path
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Pins and forgets the handles at or under `path`: their files are about to be
    /// removed or replaced. Closed ones are opened first if `open_closed`.
    fn let_go(&mut self, path: &Path, open_closed: bool) {
        for p in self.under(path) {
            if let Some(h) = self.by_path.remove(&p).and_then(|w| w.upgrade()) {
                h.pin(open_closed);
            }
        }
    }
}

/// Runs `remove` (which unlinks `path`, a file, or with `whole_dir` a directory) once
/// the handles to what it removes are pinned, so their holders keep reading (a
/// directory's closed files are not opened for it).
pub(crate) fn removing(
    path: &Path,
    whole_dir: bool,
    remove: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let mut reg = registry();
    reg.let_go(path, !whole_dir);
    remove()
}

/// Runs `rename` (of `from` to `to`) with the registry held, pinning what `to` replaces
/// and moving the handles at or under `from` to their new paths.
pub(crate) fn renaming(
    from: &Path,
    to: &Path,
    rename: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let mut reg = registry();
    if from == to {
        return rename();
    }
    reg.let_go(to, true);
    rename()?;
    for old in reg.under(from) {
        let Some(w) = reg.by_path.remove(&old) else {
            continue;
        };
        let Ok(rest) = old.strip_prefix(from) else {
            continue;
        };
        let new = if rest.as_os_str().is_empty() {
            to.to_path_buf()
        } else {
            to.join(rest)
        };
        if let Some(h) = w.upgrade() {
            *lock(&h.path) = new.clone();
        }
        reg.by_path.insert(new, w);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Each test runs in a process of its own (nextest), so the budget set is its own.
    use crate::disk::{Disk, DiskFile, OsDisk};
    use std::path::Path;
    use std::sync::Arc;

    fn read_all(f: &dyn DiskFile) -> Vec<u8> {
        let mut buf = vec![0u8; f.len().expect("len") as usize];
        f.read_exact_at(&mut buf, 0).expect("read");
        buf
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> Arc<dyn DiskFile> {
        let f = OsDisk.open(&dir.join(name), true).expect("open");
        f.write_all_at(data, 0).expect("write");
        f
    }

    /// Opens `n` more files so the budget closes the older ones.
    fn crowd(dir: &Path, n: usize) -> Vec<Arc<dyn DiskFile>> {
        (0..n)
            .map(|i| write(dir, &format!("crowd-{i}"), b"x"))
            .collect()
    }

    #[test]
    fn many_files_under_a_small_budget_keep_their_contents() {
        super::set_budget(16);
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<_> = (0..200)
            .map(|i| write(dir.path(), &format!("f{i}"), format!("file {i}").as_bytes()))
            .collect();
        assert!(super::stats().open <= 16, "{:?}", super::stats());
        for round in 0..3 {
            for (i, f) in files.iter().enumerate() {
                let more = format!(" round {round}");
                let at = f.len().expect("len");
                f.write_all_at(more.as_bytes(), at).expect("append");
                assert!(read_all(f.as_ref()).ends_with(more.as_bytes()), "file {i}");
            }
        }
        for (i, f) in files.iter().enumerate() {
            f.sync_data().expect("sync");
            let on_disk = std::fs::read(dir.path().join(format!("f{i}"))).expect("read");
            assert_eq!(
                on_disk,
                format!("file {i} round 0 round 1 round 2").into_bytes()
            );
        }
        let s = super::stats();
        assert!(s.open <= 16, "{s:?}");
        assert!(s.closed >= 500 && s.reopened >= 500, "{s:?}");
    }

    #[test]
    fn one_path_has_one_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(dir.path(), "a", b"one");
        let b = OsDisk.open(&dir.path().join("a"), false).expect("open");
        assert!(Arc::ptr_eq(&a.fd().expect("fd"), &b.fd().expect("fd")));
    }

    #[test]
    fn a_removed_file_stays_readable_through_its_handle() {
        super::set_budget(16);
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(dir.path(), "a", b"kept for its readers");
        let _crowd = crowd(dir.path(), 40);
        OsDisk.remove_file(&dir.path().join("a")).expect("remove");
        assert!(!dir.path().join("a").exists());
        assert_eq!(read_all(a.as_ref()), b"kept for its readers");
        // A new file at the same path is another file.
        let again = write(dir.path(), "a", b"new");
        assert_eq!(read_all(again.as_ref()), b"new");
        assert_eq!(read_all(a.as_ref()), b"kept for its readers");
    }

    #[test]
    fn a_file_renamed_over_stays_readable_and_the_moved_one_follows() {
        super::set_budget(16);
        let dir = tempfile::tempdir().expect("tempdir");
        let old = write(dir.path(), "seg.log", b"old");
        let new = write(dir.path(), "seg.swap", b"new");
        let _crowd = crowd(dir.path(), 40);
        OsDisk
            .rename(&dir.path().join("seg.swap"), &dir.path().join("seg.log"))
            .expect("rename");
        let _crowd2 = crowd(dir.path(), 40);
        assert_eq!(read_all(old.as_ref()), b"old");
        assert_eq!(read_all(new.as_ref()), b"new");
        new.write_all_at(b"NEW", 0).expect("write");
        assert_eq!(
            std::fs::read(dir.path().join("seg.log")).expect("read"),
            b"NEW"
        );
        let reopened = OsDisk
            .open(&dir.path().join("seg.log"), false)
            .expect("open");
        assert!(Arc::ptr_eq(
            &new.fd().expect("fd"),
            &reopened.fd().expect("fd")
        ));
    }

    #[test]
    fn files_of_a_renamed_directory_follow_it_and_once_it_is_removed_read_their_own_bytes_or_fail()
    {
        super::set_budget(16);
        let dir = tempfile::tempdir().expect("tempdir");
        let topic = dir.path().join("t-0");
        std::fs::create_dir(&topic).expect("mkdir");
        // A sibling whose name sorts right after the directory's must not move with it.
        let sibling = write(dir.path(), "t-0.x", b"sibling");
        let files: Vec<_> = (0..20)
            .map(|i| write(&topic, &format!("{i}.log"), format!("{i}").as_bytes()))
            .collect();
        let _crowd = crowd(dir.path(), 40);
        let aside = dir.path().join("t-0.deleted");
        OsDisk.rename(&topic, &aside).expect("rename");
        for (i, f) in files.iter().enumerate() {
            assert_eq!(read_all(f.as_ref()), format!("{i}").as_bytes());
        }
        let _crowd2 = crowd(dir.path(), 40);
        // Files still open are kept for their holders; closed ones are not opened just to
        // be removed, and fail from now on (a deleted partition's stragglers).
        let open_before = super::stats().open;
        OsDisk.remove_dir_all(&aside).expect("remove");
        assert!(super::stats().open <= open_before);
        // A file of the same name elsewhere must never be read in their place.
        std::fs::create_dir(&topic).expect("mkdir again");
        let mut failed = 0;
        for (i, f) in files.iter().enumerate() {
            let _other = write(&topic, &format!("{i}.log"), b"another file");
            let mut buf = [0u8; 2];
            match f.read_at(&mut buf, 0) {
                Ok(n) => assert_eq!(&buf[..n], format!("{i}").as_bytes()),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
                    failed += 1;
                }
            }
        }
        assert!(
            failed > 0,
            "every file stayed open: the test proves nothing"
        );
        assert_eq!(read_all(sibling.as_ref()), b"sibling");
    }

    fn write_synced(dir: &Path, name: &str, data: &[u8]) -> Arc<dyn DiskFile> {
        let f = write(dir, name, data);
        f.sync_data().expect("sync");
        f
    }

    #[test]
    fn files_written_since_their_last_fsync_get_one_more_pass_of_the_clock() {
        super::set_budget(16);
        let dir = tempfile::tempdir().expect("tempdir");
        // The oldest eight are dirty, the next eight clean: a plain clock would close the
        // oldest first.
        let dirty: Vec<_> = (0..8)
            .map(|i| write(dir.path(), &format!("dirty{i}"), b"unsynced"))
            .collect();
        let clean: Vec<_> = (0..8)
            .map(|i| write_synced(dir.path(), &format!("clean{i}"), b"synced"))
            .collect();
        let _one_more = write_synced(dir.path(), "one-more", b"synced");
        let before = super::stats();
        assert_eq!((before.open, before.closed), (16, 1));
        assert_eq!(read_all(dirty[0].as_ref()), b"unsynced");
        assert_eq!(
            super::stats().reopened,
            before.reopened,
            "the dirty file was closed"
        );
        assert_eq!(read_all(clean[0].as_ref()), b"synced");
        assert_eq!(
            super::stats().reopened,
            before.reopened + 1,
            "the clean file stayed open"
        );
    }

    #[test]
    fn running_out_of_descriptors_closes_more_files_and_tries_again() {
        use rustix::process::{getrlimit, setrlimit, Resource};
        // No budget to speak of: only the process's limit stops opens.
        super::set_budget(100_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let in_use = std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64;
        let mut limit = getrlimit(Resource::Nofile);
        limit.current = Some(in_use + 40);
        setrlimit(Resource::Nofile, limit).expect("lower the open-file limit");
        let files: Vec<_> = (0..200)
            .map(|i| write_synced(dir.path(), &format!("f{i}"), format!("{i}").as_bytes()))
            .collect();
        for (i, f) in files.iter().enumerate() {
            assert_eq!(read_all(f.as_ref()), format!("{i}").as_bytes());
        }
        // The budget's count never passes what the process can hold beside stdin, stdout
        // and stderr (descriptors the harness held at the start may have closed since).
        let open = super::stats().open as u64;
        assert!(open + 3 <= in_use + 40, "{:?}", super::stats());
        assert!(
            open >= 20,
            "the limit left too few files open: {:?}",
            super::stats()
        );
    }

    #[test]
    fn threads_sharing_files_under_a_small_budget_see_every_write() {
        super::set_budget(16);
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Arc<Vec<_>> = Arc::new(
            (0..64)
                .map(|i| write(dir.path(), &format!("f{i}"), &[0u8; 8 * 4 * 500]))
                .collect(),
        );
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let files = files.clone();
                std::thread::spawn(move || {
                    for n in 0..500u64 {
                        let f = &files[((t * 7919 + n * 31) % 64) as usize];
                        let pos = (t * 500 + n) * 8;
                        f.write_all_at(&(t * 1_000_000 + n).to_le_bytes(), pos)
                            .expect("write");
                        let mut back = [0u8; 8];
                        f.read_exact_at(&mut back, pos).expect("read");
                        assert_eq!(u64::from_le_bytes(back), t * 1_000_000 + n);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        for t in 0..4u64 {
            for n in 0..500u64 {
                let f = &files[((t * 7919 + n * 31) % 64) as usize];
                let mut back = [0u8; 8];
                f.read_exact_at(&mut back, (t * 500 + n) * 8).expect("read");
                assert_eq!(u64::from_le_bytes(back), t * 1_000_000 + n);
            }
        }
        assert!(super::stats().open <= 16 + 4, "{:?}", super::stats());
    }
}
