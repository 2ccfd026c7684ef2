//! The group coordinator's unit tests: joins, protocols, static members, commits, expiry
//! and replay.

use super::*;

/// (group, key, value) of one appended record.
type Appended = (String, Vec<u8>, Option<Vec<u8>>);

/// Records appends instead of writing them; can be told to fail.
#[derive(Default)]
struct MemLog {
    appended: Mutex<Vec<Appended>>,
    fail: std::sync::atomic::AtomicBool,
}

impl GroupLog for MemLog {
    fn append(
        &self,
        group: &str,
        producer: Option<(i64, i16)>,
        records: Vec<Record>,
    ) -> Result<(), AppendError> {
        use gregor_storage::StorageError;
        if let Some((producer_id, epoch)) = producer.filter(|(_, epoch)| *epoch < 0) {
            return Err(AppendError::Storage(StorageError::Sequence(
                gregor_storage::producer::SequenceError::InvalidEpoch {
                    producer_id,
                    current: 0,
                    got: epoch,
                },
            )));
        }
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AppendError::Storage(StorageError::io(
                "append",
                std::path::Path::new("__consumer_offsets-0"),
                std::io::Error::other("injected"),
            )));
        }
        let mut a = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        a.extend(records.into_iter().map(|(k, v)| (group.to_string(), k, v)));
        Ok(())
    }
}

#[test]
fn transactional_offsets_count_only_once_committed() {
    let log = MemLog::default();
    let t0 = Now::current();
    let c = coordinator(0, 60_000);
    let by = Caller {
        group_id: "g",
        generation: -1,
        member_id: "",
        instance_id: None,
    };
    let offset = |o: i64| CommittedOffset {
        offset: o,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    let codes = c.txn_commit(
        &log,
        t0,
        by,
        (5, 0),
        &[("t".into(), 0, offset(10))],
        |_, _| true,
    );
    assert_eq!(codes, vec![0]);
    assert!(c.has_pending_txn_offset("g", "t", 0));
    assert_eq!(
        c.fetch_offsets("g", None).len(),
        0,
        "invisible until committed"
    );
    c.complete_txn(5, true, &|_| true);
    assert!(!c.has_pending_txn_offset("g", "t", 0));
    assert_eq!(
        c.fetch_offsets("g", None)[0].2.as_ref().map(|o| o.offset),
        Some(10)
    );
    c.txn_commit(
        &log,
        t0,
        by,
        (6, 0),
        &[("t".into(), 0, offset(20))],
        |_, _| true,
    );
    c.complete_txn(6, false, &|_| true);
    assert_eq!(
        c.fetch_offsets("g", None)[0].2.as_ref().map(|o| o.offset),
        Some(10),
        "an aborted commit leaves the old offset"
    );
    let refused = c.txn_commit(
        &log,
        t0,
        by,
        (7, -1),
        &[("t".into(), 0, offset(30))],
        |_, _| true,
    );
    assert_eq!(refused, vec![ResponseError::InvalidProducerEpoch.code()]);
    assert!(!c.has_pending_txn_offset("g", "t", 0));
}

fn coordinator(initial_delay_ms: i32, retention_ms: i64) -> GroupCoordinator {
    GroupCoordinator::new(coordinator_settings(initial_delay_ms, retention_ms))
}

fn coordinator_settings(initial_delay_ms: i32, retention_ms: i64) -> GroupSettings {
    GroupSettings {
        min_session_timeout_ms: 10,
        max_session_timeout_ms: 100_000,
        initial_rebalance_delay_ms: initial_delay_ms,
        offsets_retention_ms: retention_ms,
        offset_metadata_max_bytes: 16,
    }
}

fn join(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        instance_id: instance.map(String::from),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(p.to_string())))
            .collect(),
        requires_known_member_id: true,
    }
}

fn now(reply: Reply<JoinResult>) -> JoinResult {
    match reply {
        Reply::Now(r) => r,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

async fn later<T>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(_) => panic!("expected a parked answer"),
        Reply::Later(rx) => rx.await.expect("answered"),
    }
}

#[tokio::test]
async fn first_join_needs_a_member_id_then_completes_with_a_leader() {
    let log = MemLog::default();
    let t0 = Now::current();
    let c = coordinator(0, 1000);
    let first = now(c.join(&log, t0, join("", None, &["range"])));
    assert_eq!(first.error, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    let mut too_long = join("", None, &["range"]);
    too_long.group_id = "g".repeat(store::STRING_MAX_BYTES + 1);
    assert_eq!(
        now(c.join(&log, t0, too_long)).error,
        ResponseError::InvalidGroupId.code()
    );
    let unknown = now(c.join(&log, t0, join("made-up", None, &["range"])));
    assert_eq!(unknown.error, ResponseError::UnknownMemberId.code());
    let reply = c.join(&log, t0, join(&first.member_id, None, &["range"]));
    c.tick(&log, t0); // the initial delay (0 ms) has passed
    let joined = later(reply).await;
    assert_eq!((joined.error, joined.generation), (0, 1));
    assert_eq!(joined.leader, first.member_id);
    assert_eq!(joined.members.len(), 1, "the leader gets the member list");
    let synced = later(c.sync(
        &log,
        t0,
        Caller {
            group_id: "g",
            generation: 1,
            member_id: &first.member_id,
            instance_id: None,
        },
        vec![(first.member_id.clone(), Bytes::from_static(b"a"))],
    ))
    .await;
    assert_eq!((synced.error, &synced.assignment[..]), (0, &b"a"[..]));
    assert_eq!(c.describe("g").map(|g| g.state), Some(GroupState::Stable));
    assert_eq!(
        c.heartbeat(
            t0,
            Caller {
                group_id: "g",
                generation: 1,
                member_id: &first.member_id,
                instance_id: None
            }
        ),
        0
    );
    assert_eq!(
        c.heartbeat(
            t0,
            Caller {
                group_id: "g",
                generation: 0,
                member_id: &first.member_id,
                instance_id: None
            }
        ),
        ResponseError::IllegalGeneration.code()
    );
    assert!(
        log.appended
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, k, v)| *k == store::group_key("g") && v.is_some()),
        "group metadata was stored"
    );
}

#[tokio::test]
async fn protocols_are_voted_and_inconsistent_ones_refused() {
    let log = MemLog::default();
    let t0 = Now::current();
    let c = coordinator(0, 1000);
    let mut a = join("", None, &["roundrobin", "range"]);
    a.requires_known_member_id = false;
    let ra = c.join(&log, t0, a);
    c.tick(&log, t0);
    let first = later(ra).await;
    assert_eq!(first.protocol.as_deref(), Some("roundrobin"));
    let bad = now(c.join(&log, t0, join("", None, &["sticky"])));
    assert_eq!(bad.error, ResponseError::InconsistentGroupProtocol.code());
    // Two more members prefer range: it wins the vote 2 to 1.
    let mut joins = Vec::new();
    for _ in 0..2 {
        let mut b = join("", None, &["range", "roundrobin"]);
        b.requires_known_member_id = false;
        joins.push(c.join(&log, t0, b));
    }
    joins.push(c.join(
        &log,
        t0,
        join(&first.member_id, None, &["roundrobin", "range"]),
    ));
    for reply in joins {
        let r = later(reply).await;
        assert_eq!(
            (r.error, r.generation, r.protocol.as_deref()),
            (0, 2, Some("range"))
        );
    }
}

#[tokio::test]
async fn static_member_with_a_new_id_fences_the_old_one() {
    let log = MemLog::default();
    let t0 = Now::current();
    let c = coordinator(0, 1000);
    let r = c.join(&log, t0, join("", Some("i1"), &["range"]));
    c.tick(&log, t0);
    let old = later(r).await;
    later(c.sync(
        &log,
        t0,
        Caller {
            group_id: "g",
            generation: old.generation,
            member_id: &old.member_id,
            instance_id: Some("i1"),
        },
        vec![(old.member_id.clone(), Bytes::from_static(b"x"))],
    ))
    .await;
    let again = now(c.join(&log, t0, join("", Some("i1"), &["range"])));
    assert_eq!(
        (again.error, again.generation),
        (0, old.generation),
        "no rebalance for a returning static member"
    );
    assert_ne!(again.member_id, old.member_id);
    assert_eq!(
        c.heartbeat(
            t0,
            Caller {
                group_id: "g",
                generation: old.generation,
                member_id: &old.member_id,
                instance_id: Some("i1")
            }
        ),
        ResponseError::FencedInstanceId.code()
    );
    assert_eq!(
        c.heartbeat(
            t0,
            Caller {
                group_id: "g",
                generation: old.generation,
                member_id: &again.member_id,
                instance_id: Some("i1")
            }
        ),
        0
    );
}

#[test]
fn commits_are_validated_and_stored_only_after_the_log_append() {
    let log = MemLog::default();
    let t0 = Now::current();
    let c = coordinator(0, 1000);
    let off = |o| CommittedOffset {
        offset: o,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: t0.wall_ms,
    };
    let by = Caller {
        group_id: "g",
        generation: -1,
        member_id: "",
        instance_id: None,
    };
    let codes = c.commit(
        &log,
        t0,
        by,
        &[("t".into(), 0, off(5)), ("nope".into(), 0, off(1))],
        |t, _| t == "t",
    );
    assert_eq!(
        codes,
        vec![0, ResponseError::UnknownTopicOrPartition.code()]
    );
    // A group id longer than its key's int16 length could only be stored cut short.
    let too_long = "g".repeat(store::STRING_MAX_BYTES + 1);
    let by_too_long = Caller {
        group_id: &too_long,
        ..by
    };
    assert_eq!(
        c.commit(&log, t0, by_too_long, &[("t".into(), 0, off(5))], |_, _| {
            true
        }),
        vec![ResponseError::InvalidGroupId.code()]
    );
    let mut long = off(6);
    long.metadata = "x".repeat(17);
    assert_eq!(
        c.commit(&log, t0, by, &[("t".into(), 0, long)], |_, _| true),
        vec![ResponseError::OffsetMetadataTooLarge.code()]
    );
    log.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        c.commit(&log, t0, by, &[("t".into(), 0, off(9))], |_, _| true),
        vec![ResponseError::KafkaStorageError.code()]
    );
    let fetched = c.fetch_offsets("g", Some(&[("t".into(), 0)]));
    assert_eq!(
        fetched[0].2.as_ref().map(|o| o.offset),
        Some(5),
        "a commit that was not stored must not be visible"
    );
    let member = Caller {
        group_id: "g",
        generation: 3,
        member_id: "ghost",
        instance_id: None,
    };
    assert_eq!(
        c.commit(&log, t0, member, &[("t".into(), 0, off(1))], |_, _| true),
        vec![ResponseError::UnknownMemberId.code()]
    );
}

#[test]
fn offsets_of_an_empty_group_expire_after_retention() {
    let log = MemLog::default();
    let t0 = Now::current();
    let c = coordinator(0, 20);
    let by = Caller {
        group_id: "g",
        generation: -1,
        member_id: "",
        instance_id: None,
    };
    let o = CommittedOffset {
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: t0.wall_ms,
    };
    assert_eq!(
        c.commit(&log, t0, by, &[("t".into(), 0, o)], |_, _| true),
        vec![0]
    );
    c.tick(&log, t0);
    assert_eq!(c.fetch_offsets("g", None).len(), 1, "not yet expired");
    c.tick(&log, t0.plus_ms(40));
    assert!(c.fetch_offsets("g", None).is_empty());
    assert!(
        log.appended
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, k, v)| *k == store::offset_key("g", "t", 0) && v.is_none()),
        "a tombstone was written"
    );
}

#[test]
fn replay_restores_offsets_and_members_and_applies_tombstones() {
    let c = coordinator(0, 1000);
    let o = |n| {
        Some(CommittedOffset {
            offset: n,
            leader_epoch: 0,
            metadata: "m".into(),
            commit_timestamp_ms: 1,
        })
    };
    let records = vec![
        GroupRecord::Offset {
            group: "a".into(),
            topic: "t".into(),
            partition: 0,
            value: o(3),
        },
        GroupRecord::Offset {
            group: "a".into(),
            topic: "t".into(),
            partition: 1,
            value: o(4),
        },
        GroupRecord::Offset {
            group: "a".into(),
            topic: "t".into(),
            partition: 1,
            value: None,
        },
        GroupRecord::Offset {
            group: "gone".into(),
            topic: "t".into(),
            partition: 0,
            value: o(9),
        },
        GroupRecord::Group {
            group: "gone".into(),
            value: None,
        },
    ];
    let replayed = records.into_iter().map(|r| Replayed::Record(None, r));
    c.load(Now::current(), &|_| true, replayed);
    let a = c.fetch_offsets("a", None);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].2.as_ref().map(|o| o.offset), Some(3));
    assert!(c.fetch_offsets("gone", None).is_empty());
}

fn offset_at(offset: i64, at: Now) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: at.wall_ms,
    }
}

const STANDALONE: Caller<'static> = Caller {
    group_id: "g",
    generation: -1,
    member_id: "",
    instance_id: None,
};

#[test]
fn an_operation_returns_records_and_only_their_replay_changes_the_offsets() {
    let t0 = Now::current();
    let mut groups = Groups::new(coordinator_settings(0, 1000));
    let outcome = groups.commit(
        t0,
        STANDALONE,
        None,
        &[("t".into(), 0, offset_at(7, t0))],
        |_, _| true,
    );
    assert_eq!(outcome.reply, vec![0]);
    assert_eq!(outcome.group, "g");
    assert_eq!(
        outcome.records,
        vec![GroupRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(offset_at(7, t0)),
        }]
    );
    assert!(
        groups.fetch_offsets("g", None).is_empty(),
        "nothing takes effect before the host appends and replays"
    );
    for record in outcome.records {
        groups.replay(t0, None, record);
    }
    assert_eq!(
        groups.fetch_offsets("g", None)[0]
            .2
            .as_ref()
            .map(|o| o.offset),
        Some(7)
    );
}

#[tokio::test]
async fn sessions_expire_by_the_time_given_not_the_clock() {
    let log = MemLog::default();
    let t0 = Now::current();
    let c = coordinator(0, 1000);
    let mut request = join("", None, &["range"]);
    request.requires_known_member_id = false;
    request.session_timeout_ms = 30_000;
    let reply = c.join(&log, t0, request);
    c.tick(&log, t0);
    let joined = later(reply).await;
    later(c.sync(
        &log,
        t0,
        Caller {
            group_id: "g",
            generation: joined.generation,
            member_id: &joined.member_id,
            instance_id: None,
        },
        vec![],
    ))
    .await;
    c.tick(&log, t0.plus_ms(29_000));
    assert_eq!(c.describe("g").map(|g| g.members.len()), Some(1));
    c.tick(&log, t0.plus_ms(31_000));
    assert_eq!(
        c.describe("g").map(|g| g.members.len()),
        None,
        "expired 30 s after its last heartbeat, and the empty group dropped"
    );
    let appended = log.appended.lock().expect("lock");
    assert_eq!(
        appended.last(),
        Some(&("g".to_string(), store::group_key("g"), None)),
        "the group's last snapshot is a tombstone"
    );
}

#[test]
fn offsets_of_an_open_transaction_survive_a_load_and_count_from_its_marker() {
    let c = coordinator(0, 1000);
    let t0 = Now::current();
    let record = |group: &str, offset| GroupRecord::Offset {
        group: group.into(),
        topic: "t".into(),
        partition: 0,
        value: Some(offset_at(offset, t0)),
    };
    // The partition as a new coordinator reads it: a committed offset, then offsets of
    // producer 9's transaction with no marker yet.
    let ours = |g: &str| g != "elsewhere";
    c.load(
        t0,
        &ours,
        [
            Replayed::Record(None, record("g", 1)),
            Replayed::Record(Some(9), record("g", 5)),
        ],
    );
    assert!(c.has_pending_txn_offset("g", "t", 0));
    c.load(
        t0,
        &|g| g == "elsewhere",
        [Replayed::Record(Some(9), record("elsewhere", 3))],
    );
    // The marker reaches this partition only.
    c.complete_txn(9, true, &ours);
    assert_eq!(
        c.fetch_offsets("g", None)[0].2.as_ref().map(|o| o.offset),
        Some(5)
    );
    assert!(
        c.has_pending_txn_offset("elsewhere", "t", 0),
        "a marker completes the groups of its own partition"
    );
}

#[test]
fn a_tick_keeps_a_group_whose_only_offsets_wait_on_a_transaction() {
    let log = MemLog::default();
    let t0 = Now::current();
    let c = coordinator(0, 1000);
    let codes = c.txn_commit(
        &log,
        t0,
        STANDALONE,
        (4, 0),
        &[("t".into(), 0, offset_at(11, t0))],
        |_, _| true,
    );
    assert_eq!(codes, vec![0]);
    c.tick(&log, t0.plus_ms(5_000));
    c.complete_txn(4, true, &|_| true);
    assert_eq!(
        c.fetch_offsets("g", None)[0].2.as_ref().map(|o| o.offset),
        Some(11)
    );
}

/// Keeps what a coordinator appends as the log would read back at load.
#[derive(Default)]
struct ReplayLog {
    read_back: Mutex<Vec<Replayed>>,
}

impl GroupLog for ReplayLog {
    fn append(
        &self,
        _group: &str,
        producer: Option<(i64, i16)>,
        records: Vec<Record>,
    ) -> Result<(), AppendError> {
        let mut read_back = self.read_back.lock().unwrap_or_else(|p| p.into_inner());
        for (key, value) in records {
            let record = store::decode(&key, value.as_deref()).expect("a record the store reads");
            read_back.push(Replayed::Record(producer.map(|(id, _)| id), record));
        }
        Ok(())
    }
}

/// One step of a client workload against the offsets of groups "a" and "b".
#[derive(Debug, Clone)]
enum Step {
    Commit {
        group: bool,
        partition: i32,
        offset: i64,
    },
    TxnCommit {
        group: bool,
        producer: i64,
        partition: i32,
        offset: i64,
    },
    Marker {
        producer: i64,
        commit: bool,
    },
    DeleteOffset {
        group: bool,
        partition: i32,
    },
    DeleteGroup {
        group: bool,
    },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (any::<bool>(), 0..3i32, 0..1000i64).prop_map(|(group, partition, offset)| Step::Commit {
            group,
            partition,
            offset
        }),
        (any::<bool>(), 1..3i64, 0..3i32, 0..1000i64).prop_map(
            |(group, producer, partition, offset)| Step::TxnCommit {
                group,
                producer,
                partition,
                offset
            }
        ),
        (1..3i64, any::<bool>()).prop_map(|(producer, commit)| Step::Marker { producer, commit }),
        (any::<bool>(), 0..3i32)
            .prop_map(|(group, partition)| Step::DeleteOffset { group, partition }),
        any::<bool>().prop_map(|group| Step::DeleteGroup { group }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// What a coordinator serves after any sequence of commits, transactional commits,
    /// markers and deletions is what a coordinator that loads its log serves: replay after
    /// the append and replay at load are the same function of the same records.
    #[test]
    fn loading_the_log_gives_back_the_state_clients_saw(steps in proptest::collection::vec(step(), 0..40)) {
        let log = ReplayLog::default();
        let t0 = Now::current();
        let live = coordinator(0, 0);
        let name = |g: bool| if g { "a" } else { "b" };
        let offset = |o: i64| CommittedOffset { offset: o, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: t0.wall_ms };
        for s in &steps {
            match s.clone() {
                Step::Commit { group, partition, offset: o } => {
                    let by = Caller { group_id: name(group), ..STANDALONE };
                    let _ = live.commit(&log, t0, by, &[("t".into(), partition, offset(o))], |_, _| true);
                }
                Step::TxnCommit { group, producer, partition, offset: o } => {
                    let by = Caller { group_id: name(group), ..STANDALONE };
                    let _ = live.txn_commit(&log, t0, by, (producer, 0), &[("t".into(), partition, offset(o))], |_, _| true);
                }
                Step::Marker { producer, commit } => {
                    live.complete_txn(producer, commit, &|_| true);
                    log.read_back.lock().expect("lock").push(Replayed::Marker { producer_id: producer, commit });
                }
                Step::DeleteOffset { group, partition } => {
                    let _ = live.delete_offsets(&log, t0, name(group), &[("t".into(), partition)], |_, _| false);
                }
                Step::DeleteGroup { group } => {
                    let _ = live.delete(&log, t0, name(group));
                }
            }
        }
        let loaded = coordinator(0, 0);
        let read_back = std::mem::take(&mut *log.read_back.lock().expect("lock"));
        loaded.load(t0, &|_| true, read_back);
        for g in ["a", "b"] {
            let mut want = live.fetch_offsets(g, None);
            let mut got = loaded.fetch_offsets(g, None);
            want.sort_by_key(|(t, p, _)| (t.clone(), *p));
            got.sort_by_key(|(t, p, _)| (t.clone(), *p));
            proptest::prop_assert_eq!(&got, &want, "group {}", g);
            for p in 0..3 {
                proptest::prop_assert_eq!(
                    loaded.has_pending_txn_offset(g, "t", p),
                    live.has_pending_txn_offset(g, "t", p),
                    "pending offsets of {} partition {}", g, p
                );
            }
        }
    }
}

/// A log that, at each append, notes whether a member's SyncGroup answer had come.
struct WatchingLog {
    follower: Mutex<Option<oneshot::Receiver<SyncResult>>>,
    answered_before_append: std::sync::atomic::AtomicBool,
    appended: std::sync::atomic::AtomicBool,
}

impl GroupLog for WatchingLog {
    fn append(&self, _: &str, _: Option<(i64, i16)>, _: Vec<Record>) -> Result<(), AppendError> {
        if let Some(rx) = self.follower.lock().expect("lock").as_mut() {
            if rx.try_recv().is_ok() {
                self.answered_before_append
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.appended
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn sync_answers_the_other_members_only_after_the_snapshot_is_appended() {
    let log = WatchingLog {
        follower: Mutex::new(None),
        answered_before_append: Default::default(),
        appended: Default::default(),
    };
    let t0 = Now::current();
    let c = coordinator(0, 1000);
    let mut a = join("", None, &["range"]);
    a.requires_known_member_id = false;
    let mut b = join("", None, &["range"]);
    b.requires_known_member_id = false;
    let (ra, rb) = (c.join(&log, t0, a), c.join(&log, t0, b));
    c.tick(&log, t0);
    let (ja, jb) = (later(ra).await, later(rb).await);
    let (leader, follower) = if ja.leader == ja.member_id {
        (ja, jb)
    } else {
        (jb, ja)
    };
    fn by(m: &JoinResult) -> Caller<'_> {
        Caller {
            group_id: "g",
            generation: m.generation,
            member_id: &m.member_id,
            instance_id: None,
        }
    }
    let Reply::Later(rx) = c.sync(&log, t0, by(&follower), vec![]) else {
        panic!("the follower waits for the leader");
    };
    *log.follower.lock().expect("lock") = Some(rx);
    let assignments = vec![(follower.member_id.clone(), Bytes::from_static(b"f"))];
    let _leader_reply = c.sync(&log, t0, by(&leader), assignments);
    assert!(
        log.appended.load(std::sync::atomic::Ordering::SeqCst),
        "the snapshot was appended"
    );
    assert!(
        !log.answered_before_append
            .load(std::sync::atomic::Ordering::SeqCst),
        "a member was told the group is stable before its snapshot was written"
    );
    let rx = log.follower.lock().expect("lock").take().expect("receiver");
    assert_eq!(&rx.await.expect("answered").assignment[..], b"f");
}
