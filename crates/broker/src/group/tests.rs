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
    fn append(&self, group: &str, records: Vec<Record>) -> Result<(), String> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("injected".into());
        }
        let mut a = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        a.extend(records.into_iter().map(|(k, v)| (group.to_string(), k, v)));
        Ok(())
    }
    fn append_txn(
        &self,
        group: &str,
        _producer_id: i64,
        epoch: i16,
        records: Vec<Record>,
    ) -> Result<(), (ResponseError, String)> {
        if epoch < 0 {
            return Err((ResponseError::InvalidProducerEpoch, "stale epoch".into()));
        }
        self.append(group, records)
            .map_err(|e| (ResponseError::KafkaStorageError, e))
    }
}

#[test]
fn transactional_offsets_count_only_once_committed() {
    let log = MemLog::default();
    let c = coordinator(0, 60_000);
    let by = Committer {
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
    let codes = c.txn_commit(&log, by, (5, 0), &[("t".into(), 0, offset(10))], |_, _| {
        true
    });
    assert_eq!(codes, vec![0]);
    assert!(c.has_pending_txn_offset("g", "t", 0));
    assert_eq!(
        c.fetch_offsets("g", None).len(),
        0,
        "invisible until committed"
    );
    c.complete_txn(5, true);
    assert!(!c.has_pending_txn_offset("g", "t", 0));
    assert_eq!(
        c.fetch_offsets("g", None)[0].2.as_ref().map(|o| o.offset),
        Some(10)
    );
    c.txn_commit(&log, by, (6, 0), &[("t".into(), 0, offset(20))], |_, _| {
        true
    });
    c.complete_txn(6, false);
    assert_eq!(
        c.fetch_offsets("g", None)[0].2.as_ref().map(|o| o.offset),
        Some(10),
        "an aborted commit leaves the old offset"
    );
    let refused = c.txn_commit(&log, by, (7, -1), &[("t".into(), 0, offset(30))], |_, _| {
        true
    });
    assert_eq!(refused, vec![ResponseError::InvalidProducerEpoch.code()]);
    assert!(!c.has_pending_txn_offset("g", "t", 0));
}

fn coordinator(initial_delay_ms: i32, retention_ms: i64) -> GroupCoordinator {
    GroupCoordinator::new(GroupSettings {
        min_session_timeout_ms: 10,
        max_session_timeout_ms: 100_000,
        initial_rebalance_delay_ms: initial_delay_ms,
        offsets_retention_ms: retention_ms,
        offset_metadata_max_bytes: 16,
    })
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
    let c = coordinator(0, 1000);
    let first = now(c.join(&log, join("", None, &["range"])));
    assert_eq!(first.error, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    let mut too_long = join("", None, &["range"]);
    too_long.group_id = "g".repeat(store::STRING_MAX_BYTES + 1);
    assert_eq!(
        now(c.join(&log, too_long)).error,
        ResponseError::InvalidGroupId.code()
    );
    let unknown = now(c.join(&log, join("made-up", None, &["range"])));
    assert_eq!(unknown.error, ResponseError::UnknownMemberId.code());
    let reply = c.join(&log, join(&first.member_id, None, &["range"]));
    c.tick(&log); // the initial delay (0 ms) has passed
    let joined = later(reply).await;
    assert_eq!((joined.error, joined.generation), (0, 1));
    assert_eq!(joined.leader, first.member_id);
    assert_eq!(joined.members.len(), 1, "the leader gets the member list");
    let synced = later(c.sync(
        &log,
        "g",
        1,
        &first.member_id,
        None,
        vec![(first.member_id.clone(), Bytes::from_static(b"a"))],
    ))
    .await;
    assert_eq!((synced.error, &synced.assignment[..]), (0, &b"a"[..]));
    assert_eq!(c.describe("g").map(|g| g.state), Some(GroupState::Stable));
    assert_eq!(c.heartbeat("g", 1, &first.member_id, None), 0);
    assert_eq!(
        c.heartbeat("g", 0, &first.member_id, None),
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
    let c = coordinator(0, 1000);
    let mut a = join("", None, &["roundrobin", "range"]);
    a.requires_known_member_id = false;
    let ra = c.join(&log, a);
    c.tick(&log);
    let first = later(ra).await;
    assert_eq!(first.protocol.as_deref(), Some("roundrobin"));
    let bad = now(c.join(&log, join("", None, &["sticky"])));
    assert_eq!(bad.error, ResponseError::InconsistentGroupProtocol.code());
    // Two more members prefer range: it wins the vote 2 to 1.
    let mut joins = Vec::new();
    for _ in 0..2 {
        let mut b = join("", None, &["range", "roundrobin"]);
        b.requires_known_member_id = false;
        joins.push(c.join(&log, b));
    }
    joins.push(c.join(&log, join(&first.member_id, None, &["roundrobin", "range"])));
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
    let c = coordinator(0, 1000);
    let r = c.join(&log, join("", Some("i1"), &["range"]));
    c.tick(&log);
    let old = later(r).await;
    later(c.sync(
        &log,
        "g",
        old.generation,
        &old.member_id,
        Some("i1"),
        vec![(old.member_id.clone(), Bytes::from_static(b"x"))],
    ))
    .await;
    let again = now(c.join(&log, join("", Some("i1"), &["range"])));
    assert_eq!(
        (again.error, again.generation),
        (0, old.generation),
        "no rebalance for a returning static member"
    );
    assert_ne!(again.member_id, old.member_id);
    assert_eq!(
        c.heartbeat("g", old.generation, &old.member_id, Some("i1")),
        ResponseError::FencedInstanceId.code()
    );
    assert_eq!(
        c.heartbeat("g", old.generation, &again.member_id, Some("i1")),
        0
    );
}

#[test]
fn commits_are_validated_and_stored_only_after_the_log_append() {
    let log = MemLog::default();
    let c = coordinator(0, 1000);
    let off = |o| CommittedOffset {
        offset: o,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: gregor_cluster::net::now_ms(),
    };
    let by = Committer {
        group_id: "g",
        generation: -1,
        member_id: "",
        instance_id: None,
    };
    let codes = c.commit(
        &log,
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
    let by_too_long = Committer {
        group_id: &too_long,
        ..by
    };
    assert_eq!(
        c.commit(&log, by_too_long, &[("t".into(), 0, off(5))], |_, _| true),
        vec![ResponseError::InvalidGroupId.code()]
    );
    let mut long = off(6);
    long.metadata = "x".repeat(17);
    assert_eq!(
        c.commit(&log, by, &[("t".into(), 0, long)], |_, _| true),
        vec![ResponseError::OffsetMetadataTooLarge.code()]
    );
    log.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        c.commit(&log, by, &[("t".into(), 0, off(9))], |_, _| true),
        vec![ResponseError::KafkaStorageError.code()]
    );
    let fetched = c.fetch_offsets("g", Some(&[("t".into(), 0)]));
    assert_eq!(
        fetched[0].2.as_ref().map(|o| o.offset),
        Some(5),
        "a commit that was not stored must not be visible"
    );
    let member = Committer {
        group_id: "g",
        generation: 3,
        member_id: "ghost",
        instance_id: None,
    };
    assert_eq!(
        c.commit(&log, member, &[("t".into(), 0, off(1))], |_, _| true),
        vec![ResponseError::UnknownMemberId.code()]
    );
}

#[test]
fn offsets_of_an_empty_group_expire_after_retention() {
    let log = MemLog::default();
    let c = coordinator(0, 20);
    let by = Committer {
        group_id: "g",
        generation: -1,
        member_id: "",
        instance_id: None,
    };
    let o = CommittedOffset {
        offset: 1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: gregor_cluster::net::now_ms(),
    };
    assert_eq!(
        c.commit(&log, by, &[("t".into(), 0, o)], |_, _| true),
        vec![0]
    );
    c.tick(&log);
    assert_eq!(c.fetch_offsets("g", None).len(), 1, "not yet expired");
    std::thread::sleep(Duration::from_millis(40));
    c.tick(&log);
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
    c.load(vec![
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
    ]);
    let a = c.fetch_offsets("a", None);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].2.as_ref().map(|o| o.offset), Some(3));
    assert!(c.fetch_offsets("gone", None).is_empty());
}
