//! The transactional ids of one coordinator and their state machine: each operation
//! takes a request and the time and returns a [`TxnOutcome`] (the record to store, the
//! markers to write, the reply); only [`Txns::replay`] changes the state.

use super::*;

/// The markers a transaction's outcome needs, and what follows once they are written.
#[derive(Debug, Clone)]
pub struct MarkerJob {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub partitions: BTreeSet<(String, i32)>,
    /// After the Complete record: a fencing InitProducerId starts the id afresh with
    /// this transaction timeout.
    pub then_reinit: Option<i32>,
}

/// What one operation decided for `id`.
#[must_use]
pub struct TxnOutcome<T> {
    pub id: String,
    /// The id's new state to store (`Some(None)` forgets it), replayed once stored.
    pub record: Option<Option<TxnMeta>>,
    /// Markers to write once the record is stored.
    pub markers: Option<MarkerJob>,
    pub reply: T,
    /// The reply when storing the record or writing the markers fails.
    pub on_error: fn(T, ResponseError) -> T,
}

impl<T> TxnOutcome<T> {
    fn reply(id: &str, reply: T, on_error: fn(T, ResponseError) -> T) -> Self {
        TxnOutcome {
            id: id.to_string(),
            record: None,
            markers: None,
            reply,
            on_error,
        }
    }

    fn store(id: &str, meta: TxnMeta, reply: T, on_error: fn(T, ResponseError) -> T) -> Self {
        TxnOutcome {
            record: Some(Some(meta)),
            ..Self::reply(id, reply, on_error)
        }
    }
}

fn failed<V>(_: Result<V>, e: ResponseError) -> Result<V> {
    Err(e)
}

fn failed_codes(codes: Vec<i16>, e: ResponseError) -> Vec<i16> {
    vec![e.code(); codes.len()]
}

/// Every transactional id of this coordinator: the state machine.
#[derive(Debug)]
pub struct Txns {
    pub(super) txns: HashMap<String, TxnMeta>,
    pub(super) max_timeout_ms: i32,
}

impl Txns {
    pub fn new(max_timeout_ms: i32) -> Self {
        Txns {
            txns: HashMap::new(),
            max_timeout_ms,
        }
    }

    /// Applies one stored record of `__transaction_state` (after its append, and at load).
    pub fn replay(&mut self, id: &str, meta: Option<TxnMeta>) {
        match meta {
            Some(m) => self.txns.insert(id.to_string(), m),
            None => self.txns.remove(id),
        };
    }

    /// Whether InitProducerId for `id` needs a new producer id (none yet, or its epoch is
    /// exhausted): the host allocates it before it takes the coordinator's lock.
    pub fn needs_producer_id(&self, id: &str) -> bool {
        self.txns.get(id).is_none_or(epoch_exhausted)
    }

    /// What InitProducerId refuses before anything else: an empty id, a timeout outside
    /// (0, `transaction.max.timeout.ms`].
    pub fn check_init(&self, id: &str, timeout_ms: i32) -> Result<()> {
        if id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        Ok(())
    }

    /// InitProducerId with a transactional id: the first call takes the new producer id
    /// `fresh`; every later one bumps the epoch, fencing the previous producer, and aborts
    /// the transaction it left open. `expected` (KIP-360) is the caller's id and epoch.
    pub fn init_producer(
        &mut self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh: Option<i64>,
        now: i64,
    ) -> TxnOutcome<Result<(i64, i16)>> {
        let refuse = |e: ResponseError| TxnOutcome::reply(id, Err(e), failed);
        if let Err(e) = self.check_init(id, timeout_ms) {
            return refuse(e);
        }
        let Some(current) = self.txns.get(id).cloned() else {
            // Another InitProducerId may have created the entry meanwhile: the client
            // retries this answer.
            let Some(producer_id) = fresh else {
                return refuse(ResponseError::ConcurrentTransactions);
            };
            let meta = TxnMeta {
                producer_id,
                epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now,
                start_ms: -1,
            };
            return TxnOutcome::store(id, meta, Ok((producer_id, 0)), failed);
        };
        if let Some((pid, epoch)) = expected {
            if pid != current.producer_id || epoch != current.epoch {
                return refuse(ResponseError::ProducerFenced);
            }
        }
        let mut meta = current;
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return refuse(ResponseError::ConcurrentTransactions)
            }
            TxnState::Dead => return refuse(ResponseError::InvalidTxnState),
            TxnState::Ongoing => {
                // Fence the old producer: abort its transaction under a new epoch.
                if let Err(e) = bump(&mut meta, fresh) {
                    return refuse(e);
                }
                tracing::info!(
                    transactional_id = id,
                    producer_id = meta.producer_id,
                    epoch = meta.epoch,
                    "a new producer fences the old one; its open transaction is aborted"
                );
                let answer = (meta.producer_id, meta.epoch);
                let mut out = prepare(id, meta, false, now, Ok(answer), failed);
                if let Some(job) = &mut out.markers {
                    job.then_reinit = Some(timeout_ms);
                }
                return out;
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if let Err(e) = bump(&mut meta, fresh) {
                    return refuse(e);
                }
            }
        }
        reinit(&mut meta, timeout_ms, now);
        let answer = (meta.producer_id, meta.epoch);
        TxnOutcome::store(id, meta, Ok(answer), failed)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's offsets partition): adds
    /// partitions to the producer's transaction, beginning one if none is open. One code
    /// per partition; `exists` says whether a topic-partition exists.
    pub fn add_partitions(
        &mut self,
        id: &str,
        producer: (i64, i16),
        partitions: &[(String, i32)],
        exists: impl Fn(&str, i32) -> bool,
        now: i64,
    ) -> TxnOutcome<Vec<i16>> {
        let refuse = |e: ResponseError| {
            TxnOutcome::reply(id, vec![e.code(); partitions.len()], failed_codes)
        };
        let unknown: Vec<bool> = partitions.iter().map(|(t, p)| !exists(t, *p)).collect();
        if unknown.iter().any(|&u| u) {
            let codes = unknown
                .iter()
                .map(|&u| {
                    if u {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        ResponseError::OperationNotAttempted.code()
                    }
                })
                .collect();
            return TxnOutcome::reply(id, codes, failed_codes);
        }
        let mut meta = match check_producer(self.txns.get(id), producer.0, producer.1) {
            Ok(m) => m.clone(),
            Err(e) => return refuse(e),
        };
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return refuse(ResponseError::ConcurrentTransactions)
            }
            TxnState::Dead => return refuse(ResponseError::InvalidTxnState),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                meta.partitions.clear();
                meta.start_ms = now;
            }
            TxnState::Ongoing => {
                if partitions.iter().all(|p| meta.partitions.contains(p)) {
                    return TxnOutcome::reply(id, vec![0; partitions.len()], failed_codes);
                }
            }
        }
        meta.state = TxnState::Ongoing;
        meta.partitions.extend(partitions.iter().cloned());
        meta.last_update_ms = now;
        TxnOutcome::store(id, meta, vec![0; partitions.len()], failed_codes)
    }

    /// EndTxn: commits or aborts the producer's open transaction. A retry of a completed
    /// EndTxn succeeds; ending a transaction the other way, or one never begun, is
    /// `INVALID_TXN_STATE`.
    pub fn end(
        &mut self,
        id: &str,
        producer: (i64, i16),
        commit: bool,
        now: i64,
    ) -> TxnOutcome<Result<()>> {
        let meta = match check_producer(self.txns.get(id), producer.0, producer.1) {
            Ok(m) => m.clone(),
            Err(e) => return TxnOutcome::reply(id, Err(e), failed),
        };
        let answer = match (meta.state, commit) {
            (TxnState::Ongoing, _) => return prepare(id, meta, commit, now, Ok(()), failed),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            _ => Err(ResponseError::InvalidTxnState),
        };
        TxnOutcome::reply(id, answer, failed)
    }

    /// The transaction's markers are written: its Complete record, and for a fencing
    /// InitProducerId the fresh start after it.
    pub fn markers_written<T>(
        &mut self,
        out: TxnOutcome<T>,
        job: &MarkerJob,
        now: i64,
    ) -> TxnOutcome<T> {
        let Some(mut meta) = self.txns.get(&out.id).cloned() else {
            return TxnOutcome {
                record: None,
                markers: None,
                ..out
            };
        };
        meta.state = if job.commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        meta.partitions.clear();
        meta.start_ms = -1;
        meta.last_update_ms = now;
        if let Some(timeout_ms) = job.then_reinit {
            reinit(&mut meta, timeout_ms, now);
        }
        TxnOutcome {
            record: Some(Some(meta)),
            markers: None,
            ..out
        }
    }

    /// Transactions past their timeout are aborted under a new epoch (so the abandoned
    /// producer is fenced; `fresh` is a producer id for one whose epoch is exhausted),
    /// and outcomes stored but not all marked are finished.
    pub fn tick(&mut self, now: i64, mut fresh: Option<i64>) -> Vec<TxnOutcome<()>> {
        let ignore = |(), _| ();
        let mut out = Vec::new();
        for (id, meta) in &self.txns {
            match meta.state {
                TxnState::Ongoing if timed_out(meta, now) => {
                    tracing::warn!(
                        transactional_id = %id,
                        producer_id = meta.producer_id,
                        age_ms = now.saturating_sub(meta.start_ms),
                        timeout_ms = meta.timeout_ms,
                        "aborting a transaction past transaction.timeout.ms"
                    );
                    let mut m = meta.clone();
                    let id_for_bump = if epoch_exhausted(&m) {
                        fresh.take()
                    } else {
                        None
                    };
                    match bump(&mut m, id_for_bump) {
                        Ok(()) => out.push(prepare(id, m, false, now, (), ignore)),
                        Err(_) => {
                            tracing::warn!(transactional_id = %id, "no producer id to fence an exhausted epoch with; retrying on the next check")
                        }
                    }
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    let commit = meta.state == TxnState::PrepareCommit;
                    let mut o = prepare(id, meta.clone(), commit, now, (), ignore);
                    // Already stored: only the markers and the completion are left.
                    o.record = None;
                    out.push(o);
                }
                _ => {}
            }
        }
        out
    }

    /// Whether a transaction past its timeout has an exhausted epoch (the host then
    /// allocates a producer id before the next `tick`).
    pub fn tick_needs_producer_id(&self, now: i64) -> bool {
        self.txns
            .values()
            .any(|m| timed_out(m, now) && epoch_exhausted(m))
    }

    /// Checks that the producer may add to its transaction.
    pub fn check(&self, id: &str, producer_id: i64, epoch: i16) -> Result<()> {
        check_producer(self.txns.get(id), producer_id, epoch).map(|_| ())
    }

    /// Whether the producer's open transaction holds `partitions` (KIP-890's
    /// verification). One code per partition: 0, or why not.
    pub fn verify(&self, id: &str, producer: (i64, i16), partitions: &[(String, i32)]) -> Vec<i16> {
        let meta = match check_producer(self.txns.get(id), producer.0, producer.1) {
            Ok(m) => m,
            Err(e) => return vec![e.code(); partitions.len()],
        };
        partitions
            .iter()
            .map(|p| {
                if meta.state == TxnState::Ongoing && meta.partitions.contains(p) {
                    0
                } else {
                    ResponseError::InvalidTxnState.code()
                }
            })
            .collect()
    }
}

/// The transaction's outcome decided: the Prepare record, then its markers.
fn prepare<T>(
    id: &str,
    mut meta: TxnMeta,
    commit: bool,
    now: i64,
    reply: T,
    on_error: fn(T, ResponseError) -> T,
) -> TxnOutcome<T> {
    meta.state = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    meta.last_update_ms = now;
    let markers = MarkerJob {
        producer_id: meta.producer_id,
        epoch: meta.epoch,
        commit,
        partitions: meta.partitions.clone(),
        then_reinit: None,
    };
    TxnOutcome {
        markers: Some(markers),
        ..TxnOutcome::store(id, meta, reply, on_error)
    }
}

/// An id starting afresh (Empty) with its new epoch.
fn reinit(meta: &mut TxnMeta, timeout_ms: i32, now: i64) {
    meta.state = TxnState::Empty;
    meta.partitions.clear();
    meta.timeout_ms = timeout_ms;
    meta.start_ms = -1;
    meta.last_update_ms = now;
}

fn check_producer(meta: Option<&TxnMeta>, producer_id: i64, epoch: i16) -> Result<&TxnMeta> {
    let Some(meta) = meta else {
        return Err(ResponseError::InvalidProducerIdMapping);
    };
    if meta.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if meta.epoch != epoch {
        return Err(ResponseError::ProducerFenced);
    }
    Ok(meta)
}

/// The next epoch, or the new producer id `fresh` when the epoch is exhausted (as Kafka
/// does).
fn bump(meta: &mut TxnMeta, fresh: Option<i64>) -> Result<()> {
    if epoch_exhausted(meta) {
        meta.producer_id = fresh.ok_or(ResponseError::CoordinatorNotAvailable)?;
        meta.epoch = 0;
    } else {
        meta.epoch += 1;
    }
    Ok(())
}

/// Whether the epoch can no longer be raised: the id then takes a new producer id.
fn epoch_exhausted(meta: &TxnMeta) -> bool {
    meta.epoch >= i16::MAX - 1
}

/// Whether the transaction is open past its `transaction.timeout.ms` at `now`.
fn timed_out(meta: &TxnMeta, now: i64) -> bool {
    meta.state == TxnState::Ongoing
        && now.saturating_sub(meta.start_ms) > i64::from(meta.timeout_ms)
}
