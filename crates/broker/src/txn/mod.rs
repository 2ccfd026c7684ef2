//! The transaction coordinator: one state machine per `transactional.id`, kept in the
//! internal compacted topic `__transaction_state` (see `store.rs`). The machine
//! (`state.rs`, [`Txns`]) takes each request with the time and returns a [`TxnOutcome`]:
//! the record to store, the markers to write, the reply; its host, [`TxnCoordinator`],
//! stores and replays the record, writes the markers, and stores the completion.
//!
//! A transaction moves Empty → Ongoing (AddPartitionsToTxn / AddOffsetsToTxn) →
//! PrepareCommit or PrepareAbort (EndTxn, stored before any marker is written) →
//! CompleteCommit or CompleteAbort (stored once every partition has its marker). On a single
//! node the markers are appended in-process; a Prepare state found at start-up, or left by
//! a failed marker write, is finished by [`TxnCoordinator::tick`].
//!
//! Architecture invariant: a transaction's outcome is stored before its first marker, so
//! every partition of a transaction gets the same marker, even across a crash.

mod state;
pub mod store;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kafka_protocol::error::ResponseError;

use crate::error::{AppendError, BrokerError, MarkerError};

pub use state::{MarkerJob, TxnOutcome, Txns};
pub use store::{TxnMeta, TxnState, TXN_TOPIC};

/// What the coordinator needs from the broker.
pub trait TxnHost {
    /// Stores a transactional id's state (`None` forgets it).
    fn persist_txn(
        &self,
        transactional_id: &str,
        meta: Option<&TxnMeta>,
    ) -> Result<(), AppendError>;
    /// Appends a commit or abort marker for the producer to each partition.
    fn write_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: &BTreeSet<(String, i32)>,
    ) -> Result<(), MarkerError>;
    fn new_producer_id(&self) -> Result<i64, BrokerError>;
    /// Whether a topic-partition exists.
    fn partition_exists(&self, topic: &str, partition: i32) -> bool;
}

/// A transaction as DescribeTransactions and `gregor txn` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnView {
    pub transactional_id: String,
    pub meta: TxnMeta,
}

/// The host of the state machine: one operation at a time under its mutex; each record
/// stored through [`TxnHost`] and then replayed, each outcome's markers written once its
/// Prepare record is stored, then its Complete record.
#[derive(Debug)]
pub struct TxnCoordinator {
    txns: Mutex<Txns>,
}

type Result<T, E = ResponseError> = std::result::Result<T, E>;

impl TxnCoordinator {
    pub fn new(max_timeout_ms: i32) -> Self {
        TxnCoordinator {
            txns: Mutex::new(Txns::new(max_timeout_ms)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Txns> {
        self.txns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds state from replayed `__transaction_state` records, in log order.
    pub fn load(&self, records: impl IntoIterator<Item = (String, Option<TxnMeta>)>) {
        let mut txns = self.lock();
        for (id, meta) in records {
            txns.replay(&id, meta);
        }
        let open = txns
            .txns
            .values()
            .filter(|m| m.state == TxnState::Ongoing)
            .count();
        tracing::info!(
            transactional_ids = txns.txns.len(),
            open,
            "transactions loaded"
        );
    }

    /// Carries out what an operation decided: stores its record and replays it, writes
    /// its markers and stores the completion, and answers.
    fn settle<T>(host: &dyn TxnHost, txns: &mut Txns, now: i64, mut out: TxnOutcome<T>) -> T {
        loop {
            if let Some(meta) = out.record.take() {
                if let Err(e) = host.persist_txn(&out.id, meta.as_ref()) {
                    tracing::error!(transactional_id = %out.id, error = %e, "could not store transaction state");
                    let code = match e.code() {
                        ResponseError::NotCoordinator => ResponseError::NotCoordinator,
                        _ => ResponseError::CoordinatorNotAvailable,
                    };
                    return (out.on_error)(out.reply, code);
                }
                txns.replay(&out.id, meta);
            }
            let Some(job) = out.markers.take() else {
                return out.reply;
            };
            if let Err(e) =
                host.write_markers(job.producer_id, job.epoch, job.commit, &job.partitions)
            {
                tracing::warn!(transactional_id = %out.id, error = %e, "writing transaction markers failed; retrying on the next check");
                return (out.on_error)(out.reply, ResponseError::CoordinatorNotAvailable);
            }
            out = txns.markers_written(out, &job, now);
        }
    }

    /// InitProducerId with a transactional id (see [`Txns::init_producer`]).
    pub fn init_producer(
        &self,
        host: &dyn TxnHost,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now: i64,
    ) -> Result<(i64, i16)> {
        // A new producer id may come from the controller, whose answer is applied to this
        // broker's partitions under the image lock; the image applier takes this
        // coordinator's lock when a transaction partition moves. So the id is allocated
        // before the lock is taken, never under it (that order deadlocked both).
        let needs_id = {
            let txns = self.lock();
            txns.check_init(id, timeout_ms)?;
            txns.needs_producer_id(id)
        };
        let fresh = if needs_id {
            Some(host.new_producer_id().map_err(|e| {
                tracing::error!(error = %e, "could not allocate a producer id");
                ResponseError::CoordinatorNotAvailable
            })?)
        } else {
            None
        };
        let mut txns = self.lock();
        let out = txns.init_producer(id, timeout_ms, expected, fresh, now);
        Self::settle(host, &mut txns, now, out)
    }

    /// AddPartitionsToTxn: one code per partition.
    pub fn add_partitions(
        &self,
        host: &dyn TxnHost,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now: i64,
    ) -> Vec<i16> {
        let exists = |t: &str, p: i32| host.partition_exists(t, p);
        let mut txns = self.lock();
        let out = txns.add_partitions(id, (producer_id, epoch), partitions, exists, now);
        Self::settle(host, &mut txns, now, out)
    }

    /// Checks that the producer may add to its transaction (TxnOffsetCommit is sent to the
    /// group coordinator after AddOffsetsToTxn; this is the same producer check).
    pub fn check(&self, id: &str, producer_id: i64, epoch: i16) -> Result<()> {
        self.lock().check(id, producer_id, epoch)
    }

    /// Whether the producer's open transaction holds `partitions` (a partition leader asks
    /// before it appends a transactional batch it has no open transaction for, as Kafka's
    /// KIP-890 verification does). One code per partition: 0, or why not.
    pub fn verify(&self, id: &str, producer: (i64, i16), partitions: &[(String, i32)]) -> Vec<i16> {
        self.lock().verify(id, producer, partitions)
    }

    /// EndTxn (see [`Txns::end`]).
    pub fn end(
        &self,
        host: &dyn TxnHost,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<()> {
        let mut txns = self.lock();
        let out = txns.end(id, (producer_id, epoch), commit, now);
        Self::settle(host, &mut txns, now, out)
    }

    /// Aborts transactions past their timeout (bumping the epoch, so the abandoned
    /// producer is fenced), and finishes transactions left in a Prepare state.
    pub fn tick(&self, host: &dyn TxnHost, now: i64) {
        let fresh = if self.lock().tick_needs_producer_id(now) {
            host.new_producer_id().ok()
        } else {
            None
        };
        let mut txns = self.lock();
        for out in txns.tick(now, fresh) {
            Self::settle(host, &mut txns, now, out);
        }
    }

    /// Forgets the transactional ids `ours` selects (their coordinator moved).
    pub fn unload(&self, ours: &dyn Fn(&str) -> bool) {
        self.lock().txns.retain(|id, _| !ours(id));
    }

    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        self.lock().txns.get(id).cloned()
    }

    /// Every transactional id with its state, optionally filtered (ListTransactions):
    /// by state names, by producer ids, and by a minimum age of the open transaction.
    pub fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
        min_duration_ms: i64,
        now: i64,
    ) -> Vec<TxnView> {
        let txns = self.lock();
        let mut out: Vec<TxnView> = txns
            .txns
            .iter()
            .filter(|(_, m)| states.is_empty() || states.iter().any(|s| s == m.state.name()))
            .filter(|(_, m)| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .filter(|(_, m)| {
                min_duration_ms < 0 || (m.start_ms >= 0 && now - m.start_ms >= min_duration_ms)
            })
            .map(|(id, m)| TxnView {
                transactional_id: id.clone(),
                meta: m.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }
}

/// `PRODUCER_FENCED` exists for clients from a version of each API on (KIP-588); older
/// ones are told `INVALID_PRODUCER_EPOCH`, as Kafka does.
pub fn fenced_code(code: i16, version: i16, since: i16) -> i16 {
    if code == ResponseError::ProducerFenced.code() && version < since {
        ResponseError::InvalidProducerEpoch.code()
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// (producer id, epoch, commit, partitions) of one marker write.
    type Marker = (i64, i16, bool, Vec<(String, i32)>);

    #[derive(Default)]
    struct Host {
        stored: RefCell<Vec<(String, Option<TxnMeta>)>>,
        markers: RefCell<Vec<Marker>>,
        next_id: RefCell<i64>,
        fail_markers: RefCell<bool>,
        /// When set, allocating a producer id checks that this coordinator's lock is free
        /// (allocation may wait for the controller, whose answer the image applier applies
        /// while it may take that lock).
        unlocked: RefCell<Option<std::sync::Arc<TxnCoordinator>>>,
    }

    impl TxnHost for Host {
        fn persist_txn(
            &self,
            id: &str,
            meta: Option<&TxnMeta>,
        ) -> std::result::Result<(), AppendError> {
            self.stored.borrow_mut().push((id.into(), meta.cloned()));
            Ok(())
        }
        fn write_markers(
            &self,
            pid: i64,
            epoch: i16,
            commit: bool,
            partitions: &BTreeSet<(String, i32)>,
        ) -> std::result::Result<(), MarkerError> {
            if *self.fail_markers.borrow() {
                return Err(MarkerError::BrokerUnavailable(2));
            }
            self.markers.borrow_mut().push((
                pid,
                epoch,
                commit,
                partitions.iter().cloned().collect(),
            ));
            Ok(())
        }
        fn new_producer_id(&self) -> std::result::Result<i64, BrokerError> {
            if let Some(c) = self.unlocked.borrow().as_ref() {
                assert!(
                    c.txns.try_lock().is_ok(),
                    "a producer id was allocated under the coordinator's lock"
                );
            }
            *self.next_id.borrow_mut() += 1;
            Ok(*self.next_id.borrow())
        }
        fn partition_exists(&self, topic: &str, _: i32) -> bool {
            topic != "missing"
        }
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[test]
    fn producer_ids_are_allocated_outside_the_coordinators_lock() {
        let c = std::sync::Arc::new(TxnCoordinator::new(60_000));
        let host = Host::default();
        *host.unlocked.borrow_mut() = Some(c.clone());
        let (pid, epoch) = c.init_producer(&host, "t", 10_000, None, 0).expect("init");
        assert_eq!((pid, epoch), (1, 0));
        // An exhausted epoch takes a new producer id, allocated outside the lock too.
        c.txns
            .lock()
            .expect("lock")
            .txns
            .get_mut("t")
            .expect("known")
            .epoch = i16::MAX - 1;
        let (pid2, epoch2) = c.init_producer(&host, "t", 10_000, None, 1).expect("bump");
        assert_eq!((pid2, epoch2), (2, 0));
    }

    #[test]
    fn verify_answers_only_for_a_partition_of_the_producers_open_transaction() {
        let host = Host::default();
        let c = TxnCoordinator::new(60_000);
        let invalid = ResponseError::InvalidTxnState.code();
        assert_eq!(
            c.verify("t", (1, 0), &[tp("a", 0)]),
            vec![ResponseError::InvalidProducerIdMapping.code()],
            "an unknown transactional id"
        );
        let (pid, epoch) = c.init_producer(&host, "t", 10_000, None, 0).expect("init");
        assert_eq!(
            c.verify("t", (pid, epoch), &[tp("a", 0)]),
            vec![invalid],
            "no transaction open"
        );
        c.add_partitions(&host, "t", pid, epoch, &[tp("a", 0)], 1);
        assert_eq!(
            c.verify("t", (pid, epoch), &[tp("a", 0), tp("a", 1)]),
            vec![0, invalid]
        );
        assert_eq!(
            c.verify("t", (pid + 7, epoch), &[tp("a", 0)]),
            vec![ResponseError::InvalidProducerIdMapping.code()],
            "another producer's id"
        );
        assert_eq!(
            c.verify("t", (pid, epoch + 1), &[tp("a", 0)]),
            vec![ResponseError::ProducerFenced.code()]
        );
        c.end(&host, "t", pid, epoch, false, 2).expect("abort");
        assert_eq!(
            c.verify("t", (pid, epoch), &[tp("a", 0)]),
            vec![invalid],
            "ended"
        );
    }

    #[test]
    fn commit_abort_fencing_and_replay() {
        let host = Host::default();
        let c = TxnCoordinator::new(60_000);
        assert_eq!(
            c.init_producer(&host, "t", 90_000, None, 0),
            Err(ResponseError::InvalidTransactionTimeout)
        );
        let (pid, epoch) = c.init_producer(&host, "t", 10_000, None, 0).expect("init");
        assert_eq!((pid, epoch), (1, 0));
        assert_eq!(
            c.end(&host, "t", pid, epoch, true, 1),
            Err(ResponseError::InvalidTxnState),
            "nothing to commit"
        );
        assert_eq!(
            c.add_partitions(&host, "t", pid, epoch, &[tp("a", 0), tp("missing", 0)], 1),
            vec![
                ResponseError::OperationNotAttempted.code(),
                ResponseError::UnknownTopicOrPartition.code()
            ]
        );
        assert_eq!(
            c.add_partitions(&host, "t", pid, epoch, &[tp("a", 0), tp("a", 1)], 1),
            vec![0, 0]
        );
        assert_eq!(c.describe("t").expect("known").state, TxnState::Ongoing);
        c.end(&host, "t", pid, epoch, true, 2).expect("commit");
        c.end(&host, "t", pid, epoch, true, 2)
            .expect("a retry succeeds");
        assert_eq!(
            c.end(&host, "t", pid, epoch, false, 2),
            Err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            host.markers.borrow().last().cloned(),
            Some((pid, 0, true, vec![tp("a", 0), tp("a", 1)]))
        );
        // A second producer with the same id fences the first and aborts its transaction.
        c.add_partitions(&host, "t", pid, epoch, &[tp("b", 0)], 3);
        let (pid2, epoch2) = c.init_producer(&host, "t", 10_000, None, 4).expect("fence");
        assert_eq!((pid2, epoch2), (pid, 1));
        assert_eq!(
            host.markers.borrow().last().cloned(),
            Some((pid, 1, false, vec![tp("b", 0)]))
        );
        assert_eq!(
            c.add_partitions(&host, "t", pid, 0, &[tp("a", 0)], 5),
            vec![ResponseError::ProducerFenced.code()]
        );
        assert_eq!(
            c.init_producer(&host, "t", 10_000, Some((pid, 0)), 5),
            Err(ResponseError::ProducerFenced)
        );
        // Replaying what was stored gives the same state.
        let replayed = TxnCoordinator::new(60_000);
        replayed.load(host.stored.borrow().iter().cloned());
        assert_eq!(replayed.describe("t"), c.describe("t"));
    }

    #[test]
    fn timeouts_abort_with_a_new_epoch_and_prepared_outcomes_are_finished() {
        let host = Host::default();
        let c = TxnCoordinator::new(60_000);
        let (pid, epoch) = c.init_producer(&host, "t", 100, None, 0).expect("init");
        c.add_partitions(&host, "t", pid, epoch, &[tp("a", 0)], 1000);
        c.tick(&host, 1050);
        assert_eq!(c.describe("t").expect("known").state, TxnState::Ongoing);
        assert_eq!(c.list(&[], &[], 40, 1050).len(), 1);
        assert!(c.list(&[], &[], 60, 1050).is_empty());
        c.tick(&host, 1101);
        let m = c.describe("t").expect("known");
        assert_eq!((m.state, m.epoch), (TxnState::CompleteAbort, 1));
        assert_eq!(
            c.end(&host, "t", pid, 0, true, 1102),
            Err(ResponseError::ProducerFenced)
        );
        // A marker failure leaves PrepareCommit; the next tick finishes it.
        c.add_partitions(&host, "t", pid, 1, &[tp("a", 0)], 1200);
        *host.fail_markers.borrow_mut() = true;
        assert!(c.end(&host, "t", pid, 1, true, 1201).is_err());
        assert_eq!(
            c.describe("t").expect("known").state,
            TxnState::PrepareCommit
        );
        *host.fail_markers.borrow_mut() = false;
        c.tick(&host, 1202);
        assert_eq!(
            c.describe("t").expect("known").state,
            TxnState::CompleteCommit
        );
        assert_eq!(
            c.list(&["CompleteCommit".into()], &[pid], -1, 0)
                .first()
                .map(|v| v.transactional_id.as_str()),
            Some("t")
        );
    }

    #[test]
    fn an_outcome_names_its_record_and_markers_and_only_replay_changes_the_state() {
        let mut txns = Txns::new(60_000);
        let init = txns.init_producer("t", 10_000, None, Some(7), 0);
        assert_eq!(init.reply, Ok((7, 0)));
        assert!(!txns.txns.contains_key("t"), "not before replay");
        let meta = init.record.expect("a record").expect("a value");
        txns.replay("t", Some(meta));
        let add = txns.add_partitions("t", (7, 0), &[tp("a", 0)], |_, _| true, 1);
        txns.replay("t", add.record.expect("a record"));
        let end = txns.end("t", (7, 0), true, 2);
        let prepared = end.record.clone().expect("a record").expect("a value");
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        let job = end.markers.clone().expect("markers");
        assert_eq!((job.producer_id, job.epoch, job.commit), (7, 0, true));
        assert_eq!(
            job.partitions.iter().cloned().collect::<Vec<_>>(),
            vec![tp("a", 0)]
        );
        assert_eq!(
            txns.txns.get("t").map(|m| m.state),
            Some(TxnState::Ongoing),
            "the outcome is decided, not applied"
        );
        txns.replay("t", Some(prepared));
        let done = txns.markers_written(end, &job, 3);
        let complete = done.record.expect("a record").expect("a value");
        assert_eq!(complete.state, TxnState::CompleteCommit);
        assert!(complete.partitions.is_empty());
    }
}
