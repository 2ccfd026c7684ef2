//! Reading a partition's log: by offset (as file regions) and by timestamp.

use super::*;

impl PartitionLog {
    /// Plans a read of whole batches starting with the one holding `offset`, up to
    /// `max_bytes`, but always at least one whole batch when `min_one_batch` (KIP-74).
    /// Reads stay within one segment; the next fetch continues in the next.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one_batch: bool) -> Result<ReadPlan> {
        self.read_below(offset, max_bytes, min_one_batch, i64::MAX)
    }

    /// As [`read`](Self::read), but only batches that start below `end` (the last stable
    /// offset for `read_committed`).
    pub fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        end: i64,
    ) -> Result<ReadPlan> {
        self.check_online()?;
        let log_end = self.log_end();
        if offset < self.log_start || offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start,
                log_end,
            });
        }
        for segment in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .map(|(_, s)| s)
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
        {
            let Some((position, _)) = segment.position_of(offset)? else {
                continue;
            };
            let mut len = 0usize;
            let mut records = 0u64;
            segment.walk_headers(position, |_, h| {
                let total = h.total_bytes();
                if h.base_offset >= end {
                    false
                } else if len + total <= max_bytes || (len == 0 && min_one_batch) {
                    len += total;
                    records += h.records_count.max(0) as u64;
                    true
                } else {
                    false
                }
            })?;
            return Ok(ReadPlan {
                region: (len > 0).then(|| FileRegion {
                    file: segment.file(),
                    path: segment.path().to_path_buf(),
                    position,
                    len,
                }),
                records,
            });
        }
        Ok(ReadPlan::empty())
    }

    /// The first record whose timestamp is at or after `timestamp`: (offset, timestamp).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        for segment in self
            .segments
            .values()
            .filter(|s| s.max_timestamp >= timestamp)
        {
            let start = segment.position_for_timestamp(timestamp)?;
            let mut found: Option<(u64, BatchHeader)> = None;
            segment.walk_headers(start, |pos, h| {
                if h.max_timestamp >= timestamp {
                    found = Some((pos, *h));
                    false
                } else {
                    true
                }
            })?;
            if let Some((pos, h)) = found {
                let bytes = segment.read_bytes(pos, h.total_bytes())?;
                let records =
                    batch::record_timestamps(&bytes).map_err(|e| StorageError::Corrupt {
                        path: segment.path().to_path_buf(),
                        reason: e.to_string(),
                    })?;
                if let Some(&hit) = records.iter().find(|(_, ts)| *ts >= timestamp) {
                    return Ok(Some(hit));
                }
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (the first such, by offset): (offset, timestamp).
    pub fn max_timestamp_record(&self) -> Result<Option<(i64, i64)>> {
        let Some(segment) = self
            .segments
            .values()
            .filter(|s| s.max_timestamp >= 0)
            .fold(None::<&Segment>, |best, s| match best {
                Some(b) if b.max_timestamp >= s.max_timestamp => Some(b),
                _ => Some(s),
            })
        else {
            return Ok(None);
        };
        let Some((pos, h)) = segment.position_of(segment.max_timestamp_batch_offset)? else {
            return Ok(None);
        };
        let bytes = segment.read_bytes(pos, h.total_bytes())?;
        let records = batch::record_timestamps(&bytes).map_err(|e| StorageError::Corrupt {
            path: segment.path().to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(records
            .into_iter()
            .find(|(_, ts)| *ts == segment.max_timestamp))
    }
}
