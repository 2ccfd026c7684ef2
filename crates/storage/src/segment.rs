//! One segment: `<base-offset:020>.log` holding whole record batches back to back, with a
//! sparse offset index (`.index`: relative offset u32, file position u32) and a time index
//! (`.timeindex`: max timestamp so far i64, relative offset u32) beside it.
//!
//! The indexes live in memory and are written to their files when the segment is closed or
//! rolled; a missing or inconsistent index file is rebuilt from the log on open.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gregor_protocol::batch::{self, BatchHeader, HEADER_BYTES};

use crate::disk::{Disk, DiskFile};
use crate::error::{Result, StorageError};

/// Offsets in a segment stay below `base_offset + MAX_RELATIVE_OFFSET`.
pub const MAX_RELATIVE_OFFSET: i64 = u32::MAX as i64;

/// How much of a segment start-up reads at a time while scanning.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEntry {
    relative_offset: u32,
    position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeEntry {
    timestamp: i64,
    relative_offset: u32,
}

pub fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}
fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}
fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

/// What opening a segment found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Why the bytes at `tail_at` or the damage are invalid.
    pub reason: Option<String>,
    /// Invalid bytes with valid batches after them: damage, never cut.
    pub damage: Option<Damage>,
    /// Invalid bytes from this position to the end, with nothing valid after them. Not cut
    /// yet: the log decides whether this is a torn write (the last segment, above the
    /// recovery point) or damage.
    pub tail_at: Option<u64>,
}

/// Invalid bytes inside a segment, followed by valid batches. Unlike a torn tail this is
/// not an unfinished write: acknowledged records may follow, so nothing is truncated and
/// no offset is reused; the log goes offline until repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    /// Where the invalid bytes start; everything before is whole, valid batches.
    pub position: u64,
    /// The offset the damaged batch holds (the valid prefix ends below it).
    pub first_offset: i64,
    /// The next valid batch: its position and base offset (the damaged range is
    /// `first_offset..resume_offset`).
    pub resume_position: u64,
    pub resume_offset: i64,
    pub reason: String,
    /// Every invalid byte is zero: pages that never reached the disk before a power loss
    /// (writeback has no order), not altered data.
    pub hole: bool,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: bytes {}..{} are damaged ({}); offsets {}..{} are unreadable, valid batches follow",
            self.path.display(),
            self.position,
            self.resume_position,
            self.reason,
            self.first_offset,
            self.resume_offset
        )
    }
}

/// What [`verify_batches`] found: `Ok((position, next offset))` where it stopped, or
/// `Err((position, offset expected there, why))` at the first invalid batch.
pub type Verified = std::result::Result<(u64, i64), (u64, i64, String)>;

/// Checks the batches of `file` from `from` (a batch boundary) towards `to` (the end
/// of its whole batches): length, magic, offsets and CRC-32C, reading `chunk_bytes` at a
/// time and stopping at the first batch boundary past `from + budget`. `expected_offset`
/// is where the batch at `from` starts at the earliest. `Ok((position, next offset))`
/// where it stopped, or `Err((position, offset expected there, why))` at the first
/// invalid batch.
pub fn verify_batches(
    file: &dyn DiskFile,
    from: u64,
    to: u64,
    expected_offset: i64,
    budget: u64,
    chunk_bytes: usize,
) -> std::io::Result<Verified> {
    walk_batches(
        file,
        from,
        to,
        expected_offset,
        budget,
        chunk_bytes,
        true,
        &mut |_, _| None,
    )
}

/// The one walk over a segment's batches, for recovery (`Segment::scan`), the scrubber
/// and `gregor data verify`: as [`verify_batches`], with the CRC checked only when
/// `check_crc`, and `on_batch` called with each good batch's position and header (it may
/// refuse the batch with a reason).
#[allow(clippy::too_many_arguments)]
fn walk_batches(
    file: &dyn DiskFile,
    from: u64,
    to: u64,
    mut expected_offset: i64,
    budget: u64,
    chunk_bytes: usize,
    check_crc: bool,
    on_batch: &mut dyn FnMut(u64, &BatchHeader) -> Option<String>,
) -> std::io::Result<Verified> {
    let mut pos = from;
    let mut chunk = Vec::new();
    while pos < to && pos - from < budget.max(1) {
        let want = ((to - pos) as usize).min(chunk_bytes.max(HEADER_BYTES));
        chunk.resize(want, 0);
        file.read_exact_at(&mut chunk, pos)?;
        let mut at = 0usize;
        while at < chunk.len() && pos + (at as u64) - from < budget.max(1) {
            let rest = &chunk[at..];
            let here = pos + at as u64;
            let header = match BatchHeader::parse(rest) {
                Ok(h) => h,
                // The header straddles the chunk: read on from here.
                Err(batch::BatchError::Truncated { .. }) if here + HEADER_BYTES as u64 <= to => {
                    break
                }
                Err(e) => return Ok(Err((here, expected_offset, e.to_string()))),
            };
            let total = header.total_bytes();
            if here + total as u64 > to {
                return Ok(Err((
                    here,
                    expected_offset,
                    format!("batch of {total} bytes runs past the end at {to}"),
                )));
            }
            if rest.len() < total {
                if at == 0 {
                    // A batch larger than the chunk: read it whole.
                    chunk.resize(total, 0);
                    file.read_exact_at(&mut chunk, pos)?;
                    continue;
                }
                break;
            }
            // Offsets only grow (compaction may leave gaps, never reorder), and every
            // batch holds at least one offset.
            if !header.offsets_sane() || header.base_offset < expected_offset {
                return Ok(Err((
                    here,
                    expected_offset,
                    format!(
                        "batch at offset {} does not follow {expected_offset}",
                        header.base_offset
                    ),
                )));
            }
            if check_crc {
                if let Err(e) = batch::verify_crc(&header, &rest[..total]) {
                    return Ok(Err((here, expected_offset, e.to_string())));
                }
            }
            if let Some(reason) = on_batch(here, &header) {
                return Ok(Err((here, expected_offset, reason)));
            }
            expected_offset = header.last_offset() + 1;
            at += total;
        }
        pos += at as u64;
    }
    Ok(Ok((pos, expected_offset)))
}

/// The first position in `from..file_len` where a whole batch starts whose header is sane,
/// whose base offset is at least `min_offset`, which `fits` accepts, and whose CRC is
/// correct; read only once a bad batch was found, to tell damage from a torn tail.
pub fn find_valid_batch(
    file: &dyn DiskFile,
    from: u64,
    file_len: u64,
    min_offset: i64,
    fits: &dyn Fn(&BatchHeader) -> bool,
) -> std::io::Result<Option<(u64, BatchHeader)>> {
    let mut chunk = Vec::new();
    let mut base = from;
    while base + HEADER_BYTES as u64 <= file_len {
        let want = ((file_len - base) as usize).min(SCAN_CHUNK_BYTES);
        chunk.resize(want, 0);
        file.read_exact_at(&mut chunk, base)?;
        let last_start = chunk.len().saturating_sub(HEADER_BYTES);
        for i in 0..=last_start {
            if chunk[i + 16] as i8 != batch::MAGIC_V2 {
                continue;
            }
            let Ok(header) = BatchHeader::parse(&chunk[i..]) else {
                continue;
            };
            let at = base + i as u64;
            let total = header.total_bytes() as u64;
            if !header.offsets_sane()
                || header.base_offset < min_offset
                || !fits(&header)
                || at + total > file_len
            {
                continue;
            }
            let mut whole = vec![0u8; total as usize];
            if file.read_exact_at(&mut whole, at).is_err() {
                continue;
            }
            if batch::verify_crc(&header, &whole).is_ok() {
                return Ok(Some((at, header)));
            }
        }
        if want < SCAN_CHUNK_BYTES {
            break;
        }
        base += (last_start + 1) as u64;
    }
    Ok(None)
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    /// Offset after the segment's last record (`base_offset` when empty).
    pub next_offset: i64,
    /// Bytes of whole batches in the file.
    pub size: u64,
    /// Largest batch max-timestamp in the segment, and the base offset of that batch.
    pub max_timestamp: i64,
    pub max_timestamp_batch_offset: i64,
    /// When the segment was created or opened, for `segment.ms`.
    pub opened_ms: i64,
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    index: Vec<IndexEntry>,
    time_index: Vec<TimeEntry>,
    bytes_since_index: u64,
    index_interval_bytes: u64,
    /// What the index files hold, so a close writes them only when they changed.
    indexes_on_disk: OnDisk,
}

/// What a small file (or pair of files) holds, as last read or written, by a 64-bit hash
/// of its contents: a write of the same contents is skipped. Not known until noted.
#[derive(Debug, Default)]
pub(crate) struct OnDisk(AtomicU64);

impl OnDisk {
    /// 0 stands for "not known".
    fn hash(parts: &[&[u8]]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in parts {
            p.hash(&mut h);
        }
        h.finish().max(1)
    }

    /// Notes that the file holds `parts`.
    pub(crate) fn holds(&self, parts: &[&[u8]]) {
        self.0.store(Self::hash(parts), Ordering::Relaxed);
    }

    pub(crate) fn forget(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Runs `write` unless the file holds `parts` already, and notes them once written.
    pub(crate) fn write_unless_held(
        &self,
        parts: &[&[u8]],
        write: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let hash = Self::hash(parts);
        if self.0.load(Ordering::Relaxed) == hash {
            return Ok(());
        }
        self.forget();
        write()?;
        self.0.store(hash, Ordering::Relaxed);
        Ok(())
    }
}

impl Segment {
    /// Creates a new, empty segment.
    pub fn create(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<Self> {
        let path = log_path(dir, base_offset);
        let file = disk
            .open(&path, true)
            .map_err(|e| StorageError::io("create", &path, e))?;
        file.set_len(0)
            .map_err(|e| StorageError::io("truncate", &path, e))?;
        // Index files left at this base by an earlier segment would be stale: with none,
        // an empty segment's indexes are empty, as they are in memory.
        for p in [
            index_path(dir, base_offset),
            time_index_path(dir, base_offset),
        ] {
            match disk.remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::io("remove", &p, e))
                }
                _ => {}
            }
        }
        let segment = Segment::empty(file, path, base_offset, index_interval_bytes, now_ms);
        segment.indexes_on_disk.holds(&[&[], &[]]);
        Ok(segment)
    }

    fn empty(
        file: Arc<dyn DiskFile>,
        path: PathBuf,
        base_offset: i64,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Self {
        Segment {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: -1,
            max_timestamp_batch_offset: -1,
            opened_ms: now_ms,
            file,
            path,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            index_interval_bytes: index_interval_bytes.max(1),
            indexes_on_disk: OnDisk::default(),
        }
    }

    /// Opens an existing segment. With `verify` every batch is checked (length, magic,
    /// CRC-32C) and the file is truncated after the last good batch; without it the
    /// indexes are loaded from their files when they agree with the log, and rebuilt from
    /// the batch headers when they do not.
    pub fn open(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        verify: bool,
        now_ms: i64,
    ) -> Result<(Self, Recovery)> {
        let path = log_path(dir, base_offset);
        let file = disk
            .open(&path, false)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let file_len = file.len().map_err(|e| StorageError::io("stat", &path, e))?;
        let mut seg = Segment::empty(file, path, base_offset, index_interval_bytes, now_ms);
        if !verify && seg.load_indexes(disk, dir, file_len).is_some() {
            return Ok((seg, Recovery::default()));
        }
        let recovery = seg.scan(file_len, verify)?;
        Ok((seg, recovery))
    }

    /// Loads the index files and finds the segment's end from the last indexed batch.
    /// Returns `None` (and leaves the segment empty) when they are missing or inconsistent.
    fn load_indexes(&mut self, disk: &dyn Disk, dir: &Path, file_len: u64) -> Option<()> {
        let raw = disk.read_file(&index_path(dir, self.base_offset)).ok()?;
        let raw_time = disk
            .read_file(&time_index_path(dir, self.base_offset))
            .ok()?;
        if raw.len() % 8 != 0 || raw_time.len() % 12 != 0 || (raw.is_empty() && file_len > 0) {
            return None;
        }
        let index: Vec<IndexEntry> = raw
            .chunks_exact(8)
            .map(|c| IndexEntry {
                relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let time_index: Vec<TimeEntry> = raw_time
            .chunks_exact(12)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                relative_offset: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
            })
            .collect();
        let ordered = index
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
            && time_index.windows(2).all(|w| {
                w[0].timestamp <= w[1].timestamp && w[0].relative_offset <= w[1].relative_offset
            });
        if !ordered
            || index.first().is_some_and(|e| e.position != 0)
            || index
                .last()
                .is_some_and(|e| u64::from(e.position) >= file_len)
        {
            return None;
        }
        // Walk the headers after the last index entry to find the end.
        let mut pos = index.last().map_or(0, |e| u64::from(e.position));
        let mut next_offset = self.base_offset;
        let mut header_buf = [0u8; HEADER_BYTES];
        while pos < file_len {
            self.file.read_exact_at(&mut header_buf, pos).ok()?;
            let header = BatchHeader::parse(&header_buf).ok()?;
            let end = pos + header.total_bytes() as u64;
            if end > file_len
                || !header.offsets_sane()
                || header.last_offset() < next_offset
                || !self.fits(&header)
            {
                return None;
            }
            next_offset = header.last_offset() + 1;
            pos = end;
        }
        self.indexes_on_disk.holds(&[&raw, &raw_time]);
        self.index = index;
        self.time_index = time_index;
        self.next_offset = next_offset;
        self.size = file_len;
        if let Some(last) = self.time_index.last() {
            self.max_timestamp = last.timestamp;
            self.max_timestamp_batch_offset = self.base_offset + i64::from(last.relative_offset);
        }
        Some(())
    }

    /// Rebuilds the indexes by reading every batch; truncates a torn or corrupt tail.
    fn scan(&mut self, file_len: u64, verify: bool) -> Result<Recovery> {
        let file = self.file.clone();
        let base_offset = self.base_offset;
        let walked = walk_batches(
            file.as_ref(),
            0,
            file_len,
            base_offset,
            u64::MAX,
            SCAN_CHUNK_BYTES,
            verify,
            &mut |at, header| {
                if !self.fits(header) {
                    return Some(format!(
                        "batch at offset {} does not fit the segment at {base_offset}",
                        header.base_offset
                    ));
                }
                self.note_batch(header, at);
                None
            },
        )
        .map_err(|e| StorageError::io("read", &self.path, e))?;
        let (pos, bad) = match walked {
            Ok((end, _)) => (end, None),
            Err((at, _, reason)) => (at, Some(reason)),
        };
        let mut recovery = Recovery::default();
        if pos < file_len {
            let min_offset = self.next_offset;
            if let Some((resume, header)) = self.find_valid_batch(pos + 1, file_len, min_offset)? {
                // Valid batches follow the bad bytes: damage, not a torn write. Nothing is
                // cut; the rest of the segment is walked so the log's end (and so every
                // offset ever given out) stays where it was.
                let first_offset = self.next_offset;
                let mut end_offset = header.last_offset() + 1;
                let mut at = resume + header.total_bytes() as u64;
                let mut header_buf = [0u8; HEADER_BYTES];
                while at + HEADER_BYTES as u64 <= file_len {
                    if self.file.read_exact_at(&mut header_buf, at).is_err() {
                        break;
                    }
                    match BatchHeader::parse(&header_buf) {
                        Ok(h)
                            if h.offsets_sane()
                                && h.base_offset >= end_offset
                                && self.fits(&h)
                                && at + h.total_bytes() as u64 <= file_len =>
                        {
                            end_offset = h.last_offset() + 1;
                            at += h.total_bytes() as u64;
                        }
                        _ => break,
                    }
                }
                let hole = self.all_zero(pos, resume)?;
                recovery.damage = Some(Damage {
                    path: self.path.clone(),
                    position: pos,
                    first_offset,
                    resume_position: resume,
                    resume_offset: header.base_offset,
                    reason: bad.unwrap_or_else(|| "invalid bytes".into()),
                    hole,
                });
                self.size = pos;
                self.next_offset = end_offset.max(self.next_offset);
                return Ok(recovery);
            }
            recovery.tail_at = Some(pos);
            recovery.reason = bad.or_else(|| Some("incomplete tail".to_string()));
        }
        self.size = pos;
        Ok(recovery)
    }

    /// Whether every byte of `from..to` is zero.
    fn all_zero(&self, from: u64, to: u64) -> Result<bool> {
        let mut buf = vec![0u8; SCAN_CHUNK_BYTES.min((to - from) as usize)];
        let mut at = from;
        while at < to {
            let n = buf.len().min((to - at) as usize);
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| StorageError::io("read", &self.path, e))?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// [`find_valid_batch`] in this segment's file, for batches that fit the segment.
    pub fn find_valid_batch(
        &self,
        from: u64,
        file_len: u64,
        min_offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>> {
        find_valid_batch(self.file.as_ref(), from, file_len, min_offset, &|h| {
            self.fits(h)
        })
        .map_err(|e| StorageError::io("read", &self.path, e))
    }

    /// Cuts the segment at `position` (a batch boundary before damage, when a replica
    /// repairs it from its leader) and rebuilds the in-memory indexes. Returns the new
    /// next offset.
    pub fn cut_at(&mut self, position: u64) -> Result<i64> {
        self.file
            .set_len(position)
            .map_err(|e| StorageError::io("truncate", &self.path, e))?;
        let mut kept = Vec::new();
        self.size = position;
        self.walk_headers(0, |at, h| {
            kept.push((at, *h));
            true
        })?;
        self.next_offset = self.base_offset;
        self.size = 0;
        self.max_timestamp = -1;
        self.max_timestamp_batch_offset = -1;
        self.index.clear();
        self.time_index.clear();
        self.bytes_since_index = 0;
        for (at, h) in kept {
            self.note_batch(&h, at);
        }
        self.size = position;
        Ok(self.next_offset)
    }

    /// Whether a batch's offsets fit the segment's relative-offset range (indexes store
    /// offsets relative to the base as u32; the log rolls before an append would overflow).
    pub fn fits(&self, header: &BatchHeader) -> bool {
        header.base_offset >= self.base_offset
            && header.last_offset() - self.base_offset < MAX_RELATIVE_OFFSET
    }

    /// Records a batch just written (or found) at `position` in the indexes.
    fn note_batch(&mut self, header: &BatchHeader, position: u64) {
        let relative = (header.base_offset - self.base_offset) as u32;
        if self.index.is_empty() || self.bytes_since_index >= self.index_interval_bytes {
            self.index.push(IndexEntry {
                relative_offset: relative,
                position: position as u32,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_bytes() as u64;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_batch_offset = header.base_offset;
            self.time_index.push(TimeEntry {
                timestamp: header.max_timestamp,
                relative_offset: relative,
            });
        }
        self.next_offset = header.last_offset() + 1;
        self.size = position + header.total_bytes() as u64;
    }

    /// Appends batches that already carry their final offsets. On a failed write the file
    /// is cut back to its previous size, so no partial batch stays behind.
    pub fn append(&mut self, bytes: &[u8], headers: &[(usize, BatchHeader)]) -> Result<()> {
        let start = self.size;
        if let Err(e) = self.file.write_all_at(bytes, start) {
            let _ = self.file.set_len(start);
            return Err(StorageError::io("append to", &self.path, e));
        }
        for (at, header) in headers {
            self.note_batch(header, start + *at as u64);
        }
        debug_assert_eq!(self.size, start + bytes.len() as u64);
        Ok(())
    }

    /// Cuts the segment before the batch holding `offset` (a replica truncating to its
    /// leader's log): the file is shortened and the in-memory indexes rebuilt from the
    /// headers that remain. Returns the new next offset.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64> {
        match self.position_of(offset)? {
            Some((pos, _)) => self.cut_at(pos),
            None => Ok(self.next_offset),
        }
    }

    /// Position of the batch holding `offset`, or `None` if the segment ends before it.
    pub fn position_of(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let relative = (offset.max(self.base_offset) - self.base_offset) as u32;
        let slot = self
            .index
            .partition_point(|e| e.relative_offset <= relative);
        let pos = if slot == 0 {
            0
        } else {
            u64::from(self.index[slot - 1].position)
        };
        let mut found = None;
        self.walk_headers(pos, |at, header| {
            if header.last_offset() >= offset {
                found = Some((at, *header));
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Position from which a scan for the first record with a timestamp at or after
    /// `timestamp` may start.
    pub fn position_for_timestamp(&self, timestamp: i64) -> Result<u64> {
        let slot = self.time_index.partition_point(|e| e.timestamp < timestamp);
        let start_offset = if slot == 0 {
            self.base_offset
        } else {
            self.base_offset + i64::from(self.time_index[slot - 1].relative_offset)
        };
        Ok(self
            .position_of(start_offset)?
            .map_or(self.size, |(pos, _)| pos))
    }

    /// Reads the headers of the batches from `pos` on, calling `f` with each until it
    /// returns `false`.
    pub fn walk_headers(
        &self,
        mut pos: u64,
        mut f: impl FnMut(u64, &BatchHeader) -> bool,
    ) -> Result<()> {
        let mut header_buf = [0u8; HEADER_BYTES];
        while pos < self.size {
            self.file
                .read_exact_at(&mut header_buf, pos)
                .map_err(|e| StorageError::io("read", &self.path, e))?;
            let header = BatchHeader::parse(&header_buf).map_err(|e| StorageError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
            if !f(pos, &header) {
                break;
            }
            pos += header.total_bytes() as u64;
        }
        Ok(())
    }

    pub fn read_bytes(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, pos)
            .map_err(|e| StorageError::io("read", &self.path, e))?;
        Ok(buf)
    }

    pub fn file(&self) -> Arc<dyn DiskFile> {
        self.file.clone()
    }
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fsync", &self.path, e))
    }

    /// Writes both index files (crash-safely: a torn index is rebuilt on open anyway),
    /// unless they hold these indexes already.
    pub fn write_indexes(&self, disk: &dyn Disk, dir: &Path) -> Result<()> {
        let mut raw = Vec::with_capacity(self.index.len() * 8);
        for e in &self.index {
            raw.extend_from_slice(&e.relative_offset.to_be_bytes());
            raw.extend_from_slice(&e.position.to_be_bytes());
        }
        let mut raw_time = Vec::with_capacity(self.time_index.len() * 12);
        for e in &self.time_index {
            raw_time.extend_from_slice(&e.timestamp.to_be_bytes());
            raw_time.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        self.indexes_on_disk
            .write_unless_held(&[&raw, &raw_time], || {
                let ip = index_path(dir, self.base_offset);
                disk.write_file_atomic(&ip, &raw)
                    .map_err(|e| StorageError::io("write", &ip, e))?;
                let tp = time_index_path(dir, self.base_offset);
                disk.write_file_atomic(&tp, &raw_time)
                    .map_err(|e| StorageError::io("write", &tp, e))
            })
    }

    /// Deletes the segment's files.
    pub fn delete_files(&self, disk: &dyn Disk, dir: &Path) {
        for p in [
            log_path(dir, self.base_offset),
            index_path(dir, self.base_offset),
            time_index_path(dir, self.base_offset),
        ] {
            if let Err(e) = disk.remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "could not delete segment file");
                }
            }
        }
    }
}
