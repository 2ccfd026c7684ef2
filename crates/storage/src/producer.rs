//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence
//! numbers and offsets of its last five batches (Kafka keeps five in flight). A retried
//! batch is recognised and answered with its original offsets instead of being appended
//! again; a gap is refused.
//!
//! The state is snapshotted beside the segments (`producer-snapshot`, with the log offset
//! it covers) at every roll and clean close, and rebuilt on open by replaying batch headers
//! from the snapshot's offset (or the log start when the snapshot is missing or stale).
//!
//! Transactions live here too: each producer's open transaction (the offset of its first
//! batch), which holds back the last stable offset, and the index of aborted transactions
//! that `read_committed` fetches hand to clients so they drop aborted records.

use std::collections::{BTreeSet, HashMap, VecDeque};

use gregor_protocol::batch::BatchHeader;

/// Leads every snapshot; older snapshots without it are rebuilt from the log.
const SNAPSHOT_MAGIC: &[u8] = b"GPS2";

/// Batches remembered per producer.
pub const BATCHES_KEPT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    pub last_timestamp_ms: i64,
    /// The first offset of the producer's open transaction in this partition.
    pub txn_first_offset: Option<i64>,
}

/// An aborted transaction: its producer, its first offset and the offset of its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// Batches written by the broker on a producer's behalf carry no sequence number.
pub const NO_SEQUENCE: i32 = -1;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id}: epoch {got} is older than the current {current}")]
    InvalidEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("producer {0} is unknown here (its state expired or never existed) and its sequence does not start at 0")]
    UnknownProducer(i64),
    #[error("an idempotent produce request carries one batch per partition")]
    MultipleBatches,
    #[error("producer {0} has a transaction open here: only its commit or abort marker ends it")]
    TransactionOpen(i64),
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Append,
    /// Already in the log: answer with these offsets.
    Duplicate(BatchMeta),
}

/// The last sequence of a batch (sequences wrap from i32::MAX to 0, as in Kafka).
fn last_seq(h: &BatchHeader) -> i32 {
    ((i64::from(h.base_sequence) + i64::from(h.records_count) - 1) % (i64::from(i32::MAX) + 1))
        as i32
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStates {
    map: HashMap<i64, ProducerEntry>,
    /// Open transactions as (first offset, producer id); the smallest bounds the LSO.
    ongoing: BTreeSet<(i64, i64)>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
    /// Produce's verification guards (Kafka's KIP-890): per producer id, the transactional
    /// id and epoch whose open transaction the coordinator is being asked about (`false`)
    /// or has confirmed holds this partition (`true`). A client's transactional batch is
    /// appended only under a confirmed guard for its producer, and any marker for the
    /// producer removes the guard, so a transaction the coordinator ended while it was
    /// being asked about is never opened again. Kept in memory only.
    guards: HashMap<i64, (String, i16, bool)>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Checks a batch (before offsets are assigned) against the producer's state.
    pub fn check(&self, h: &BatchHeader) -> Result<Check, SequenceError> {
        if h.producer_id < 0 {
            return Ok(Check::Append);
        }
        let Some(entry) = self.map.get(&h.producer_id) else {
            return if h.base_sequence == 0 || h.base_sequence == NO_SEQUENCE {
                Ok(Check::Append)
            } else {
                Err(SequenceError::UnknownProducer(h.producer_id))
            };
        };
        if entry.txn_first_offset.is_some()
            && (!h.is_transactional() || h.producer_epoch > entry.epoch)
        {
            // Only the coordinator's marker ends a transaction (or moves the epoch on).
            return Err(SequenceError::TransactionOpen(h.producer_id));
        }
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id: h.producer_id,
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if h.base_sequence == NO_SEQUENCE {
            return Ok(Check::Append);
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(Check::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_seq(h);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(Check::Duplicate(*dup));
        }
        let expected = entry.batches.back().map_or(0, |b| {
            if b.last_seq == i32::MAX {
                0
            } else {
                b.last_seq + 1
            }
        });
        if h.base_sequence != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            });
        }
        Ok(Check::Append)
    }

    /// Records an appended batch (with its final offsets).
    pub fn record(&mut self, h: &BatchHeader, timestamp_ms: i64) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self.map.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(timestamp_ms);
        if h.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(h.base_offset);
            self.ongoing.insert((h.base_offset, h.producer_id));
        }
        if h.base_sequence == NO_SEQUENCE {
            return;
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }

    /// Checks a transaction marker's epoch: a marker from an older epoch than the
    /// producer's is refused.
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), SequenceError> {
        match self.map.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(SequenceError::InvalidEpoch {
                producer_id,
                current: e.epoch,
                got: epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Records a transaction marker written at `offset`: the producer's open transaction
    /// (if any) ends, and an abort is added to the aborted index.
    pub fn record_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        offset: i64,
        timestamp_ms: i64,
    ) {
        self.guards.remove(&producer_id);
        let entry = self.map.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(timestamp_ms);
        if let Some(first) = entry.txn_first_offset.take() {
            self.ongoing.remove(&(first, producer_id));
            if !commit {
                self.aborted.push(AbortedTxn {
                    producer_id,
                    first_offset: first,
                    last_offset: offset,
                });
            }
        }
    }

    /// The first offset of the oldest open transaction.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.iter().next().map(|&(offset, _)| offset)
    }

    /// Starts verifying the producer's batch for transactional id `id` at `epoch`.
    pub fn begin_verification(&mut self, producer_id: i64, id: &str, epoch: i16) {
        self.guards
            .insert(producer_id, (id.to_string(), epoch, false));
    }

    /// The coordinator confirmed: true if no marker for the producer came meanwhile (the
    /// guard is still the one begun), which is then confirmed.
    pub fn confirm_verification(&mut self, producer_id: i64, id: &str, epoch: i16) -> bool {
        match self.guards.get_mut(&producer_id) {
            Some((g, e, confirmed)) if g == id && *e == epoch => {
                *confirmed = true;
                true
            }
            _ => false,
        }
    }

    /// The coordinator refused (or the request went away): the guard begun for `id` at
    /// `epoch` is dropped if it is still unconfirmed, so refused producer ids leave
    /// nothing behind.
    pub fn abandon_verification(&mut self, producer_id: i64, id: &str, epoch: i16) {
        if self
            .guards
            .get(&producer_id)
            .is_some_and(|(g, e, confirmed)| !confirmed && g == id && *e == epoch)
        {
            self.guards.remove(&producer_id);
        }
    }

    /// How many verification guards are held.
    #[cfg(test)]
    fn guards(&self) -> usize {
        self.guards.len()
    }

    /// Whether a confirmed guard covers the producer's batch for `id` at `epoch`.
    pub fn verified(&self, producer_id: i64, id: &str, epoch: i16) -> bool {
        self.guards
            .get(&producer_id)
            .is_some_and(|(g, e, confirmed)| *confirmed && g == id && *e == epoch)
    }

    /// Whether `producer_id` has a transaction open in this partition at `epoch`.
    pub fn has_open_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.ongoing.iter().any(|&(_, id)| id == producer_id)
            && self.map.get(&producer_id).is_some_and(|e| e.epoch == epoch)
    }

    /// Open transactions as (producer id, epoch, first offset, last activity in ms).
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64, i64)> {
        self.ongoing
            .iter()
            .filter_map(|&(first, id)| {
                self.map
                    .get(&id)
                    .map(|e| (id, e.epoch, first, e.last_timestamp_ms))
            })
            .collect()
    }

    /// Aborted transactions that overlap `[from, to)`: those whose marker is at or after
    /// `from` and that started before `to`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions whose marker lies below the log start.
    pub fn truncate_aborted(&mut self, log_start: i64) {
        let below = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..below);
    }

    /// Forgets producers idle for longer than `max_idle_ms` (`producer.id.expiration.ms`).
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.map.len();
        // A producer with an open transaction is kept: it still holds back the LSO, and the
        // transaction coordinator will end it (at the latest on its timeout).
        self.map.retain(|_, e| {
            e.txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp_ms) <= max_idle_ms
        });
        // Unconfirmed guards of producers with nothing here: verifications whose request
        // went away (one still in flight then fails to confirm, a retriable answer).
        let map = &self.map;
        self.guards
            .retain(|id, (_, _, confirmed)| *confirmed || map.contains_key(id));
        before - self.map.len()
    }

    /// The snapshot file's bytes: the offset it covers, then every producer.
    pub fn encode(&self, offset: i64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.map.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.map.keys().collect();
        ids.sort();
        for id in ids {
            let e = &self.map[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp_ms.to_be_bytes());
            out.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.to_be_bytes());
            out.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; `None` when it is damaged (the state is then rebuilt from the log).
    pub fn decode(raw: &[u8]) -> Option<(i64, Self)> {
        let (body, crc) = raw.split_at(raw.len().checked_sub(4)?);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut pos = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = body.get(pos..pos + n)?;
            pos += n;
            Some(s)
        };
        if take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
            return None;
        }
        let offset = i64::from_be_bytes(take(8)?.try_into().ok()?);
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut map = HashMap::new();
        let mut ongoing = BTreeSet::new();
        for _ in 0..count {
            let id = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let last_timestamp_ms = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let txn_first_offset =
                Some(i64::from_be_bytes(take(8)?.try_into().ok()?)).filter(|&o| o >= 0);
            if let Some(first) = txn_first_offset {
                ongoing.insert((first, id));
            }
            let n = take(1)?[0] as usize;
            let mut batches = VecDeque::new();
            for _ in 0..n.min(BATCHES_KEPT) {
                batches.push_back(BatchMeta {
                    first_seq: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    last_seq: i32::from_be_bytes(take(4)?.try_into().ok()?),
                    first_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                    last_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                });
            }
            map.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp_ms,
                    txn_first_offset,
                },
            );
        }
        let aborted_count = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut aborted = Vec::new();
        for _ in 0..aborted_count {
            aborted.push(AbortedTxn {
                producer_id: i64::from_be_bytes(take(8)?.try_into().ok()?),
                first_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
                last_offset: i64::from_be_bytes(take(8)?.try_into().ok()?),
            });
        }
        Some((
            offset,
            ProducerStates {
                map,
                ongoing,
                aborted,
                guards: HashMap::new(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn refused_and_abandoned_verifications_leave_no_guard() {
        let mut s = ProducerStates::default();
        for producer_id in 0..1000 {
            s.begin_verification(producer_id, "tx", 0);
            s.abandon_verification(producer_id, "tx", 0);
        }
        assert_eq!(s.guards(), 0);
        s.begin_verification(5, "tx", 0);
        s.abandon_verification(5, "tx", 1);
        assert_eq!(s.guards(), 1, "another epoch's refusal leaves the guard");
        s.begin_verification(6, "tx", 0);
        assert!(s.confirm_verification(6, "tx", 0));
        s.abandon_verification(6, "tx", 0);
        assert!(s.verified(6, "tx", 0), "a confirmed guard stays");
        s.expire(0, 1);
        assert_eq!(
            s.guards(),
            1,
            "expiry drops the unconfirmed guard of an unknown producer"
        );
        assert!(s.verified(6, "tx", 0));
    }

    #[test]
    fn an_open_transaction_ends_only_by_a_marker_and_guards_fall_with_it() {
        let mut s = ProducerStates::default();
        let mut txn = header(7, 2, 0, 1, 10);
        txn.attributes = 0x10;
        s.begin_verification(7, "tx", 2);
        assert!(
            !s.verified(7, "tx", 2),
            "not until the coordinator confirms"
        );
        assert!(s.confirm_verification(7, "tx", 2));
        assert!(s.verified(7, "tx", 2));
        assert!(!s.verified(7, "other", 2) && !s.verified(7, "tx", 3));
        s.record(&txn, 1);
        assert!(s.has_open_transaction(7, 2));
        // Neither a plain batch nor a later epoch may touch the open transaction.
        assert_eq!(
            s.check(&header(7, 2, 1, 1, 0)),
            Err(SequenceError::TransactionOpen(7))
        );
        let mut later = header(7, 30_000, 0, 1, 0);
        later.attributes = 0x10;
        assert_eq!(s.check(&later), Err(SequenceError::TransactionOpen(7)));
        let mut next = header(7, 2, 1, 1, 11);
        next.attributes = 0x10;
        assert_eq!(s.check(&next), Ok(Check::Append));
        // A verification begun before a marker is not confirmed after it.
        s.begin_verification(7, "tx", 2);
        s.record_marker(7, 2, false, 12, 2);
        assert!(!s.confirm_verification(7, "tx", 2));
        assert!(!s.verified(7, "tx", 2) && !s.has_open_transaction(7, 2));
        assert_eq!(s.check(&header(7, 2, 1, 1, 0)), Ok(Check::Append));
    }

    #[test]
    fn duplicates_gaps_epochs_and_unknown_producers() {
        let mut s = ProducerStates::default();
        assert_eq!(
            s.check(&header(7, 0, 3, 1, 0)),
            Err(SequenceError::UnknownProducer(7))
        );
        assert_eq!(s.check(&header(7, 0, 0, 2, 0)), Ok(Check::Append));
        s.record(&header(7, 0, 0, 2, 10), 1);
        let dup = s.check(&header(7, 0, 0, 2, 0)).expect("checked");
        assert_eq!(
            dup,
            Check::Duplicate(BatchMeta {
                first_seq: 0,
                last_seq: 1,
                first_offset: 10,
                last_offset: 11
            })
        );
        assert!(matches!(
            s.check(&header(7, 0, 5, 1, 0)),
            Err(SequenceError::OutOfOrder {
                expected: 2,
                got: 5,
                ..
            })
        ));
        assert_eq!(s.check(&header(7, 0, 2, 1, 0)), Ok(Check::Append));
        assert!(matches!(
            s.check(&header(7, 1, 4, 1, 0)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        s.record(&header(7, 1, 0, 1, 12), 2);
        assert!(matches!(
            s.check(&header(7, 0, 2, 1, 0)),
            Err(SequenceError::InvalidEpoch {
                current: 1,
                got: 0,
                ..
            })
        ));
        // Only the last five batches are remembered.
        for i in 1..=6 {
            s.record(&header(7, 1, i, 1, 12 + i64::from(i)), 3);
        }
        assert!(
            matches!(
                s.check(&header(7, 1, 1, 1, 0)),
                Err(SequenceError::OutOfOrder { .. })
            ),
            "too old to recognise"
        );
        assert!(matches!(
            s.check(&header(7, 1, 6, 1, 0)),
            Ok(Check::Duplicate(_))
        ));
        // Snapshots round-trip; damage is detected.
        let raw = s.encode(42);
        assert_eq!(ProducerStates::decode(&raw), Some((42, s.clone())));
        let mut bad = raw.clone();
        bad[10] ^= 1;
        assert_eq!(ProducerStates::decode(&bad), None);
        assert_eq!(s.expire(1_000_000, 1000), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn open_transactions_bound_the_lso_and_broker_batches_skip_sequences() {
        let mut s = ProducerStates::default();
        let mut t = header(3, 0, NO_SEQUENCE, 2, 10);
        t.attributes = 0x10;
        assert_eq!(s.check(&t), Ok(Check::Append), "no sequence to check");
        s.record(&t, 1);
        assert_eq!(s.first_unstable_offset(), Some(10));
        assert!(s.map[&3].batches.is_empty());
        s.record_marker(3, 0, false, 12, 2);
        assert_eq!(s.first_unstable_offset(), None);
        assert_eq!(s.aborted_between(0, 13).len(), 1);
        assert_eq!(s.expire(1_000_000, 1), 1);
        s.record(&t, 1);
        assert_eq!(
            s.expire(1_000_000, 1),
            0,
            "an open transaction keeps its producer"
        );
        let raw = s.encode(13);
        assert_eq!(ProducerStates::decode(&raw), Some((13, s.clone())));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 1, 0), 0);
        s.map
            .get_mut(&1)
            .expect("entry")
            .batches
            .back_mut()
            .expect("batch")
            .last_seq = i32::MAX - 1;
        assert_eq!(s.check(&header(1, 0, i32::MAX, 2, 0)), Ok(Check::Append));
        s.record(&header(1, 0, i32::MAX, 2, 5), 0);
        assert_eq!(
            s.check(&header(1, 0, 1, 1, 0)),
            Ok(Check::Append),
            "after MAX and 0 comes 1"
        );
    }
}
