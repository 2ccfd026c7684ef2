//! Three controllers over loopback TCP: agreement and failover, and the Raft port closing garbage and non-voters.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use gregor_storage::{Disk, OsDisk};

use super::*;
use crate::image::MetadataRecord;
use crate::raft::{LogStore, StateMachine};

struct Controller {
    raft: Raft,
    machine: StateMachine,
    server: tokio::task::JoinHandle<()>,
}

async fn start(id: NodeId, dir: &Path, listener: TcpListener) -> Controller {
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    };
    let disk: Arc<dyn Disk> = Arc::new(OsDisk);
    let log = LogStore::open(disk.clone(), dir).expect("log opens");
    let machine = StateMachine::open(disk, dir).expect("state machine opens");
    let raft = Raft::new(
        id,
        Arc::new(config.validate().expect("valid")),
        TcpNetwork::default(),
        log,
        machine.clone(),
    )
    .await
    .expect("raft starts");
    let server = tokio::spawn(serve(listener, raft.clone(), None, Arc::new(PlainTcp)));
    Controller {
        raft,
        machine,
        server,
    }
}

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.to_string(),
        topic_id: uuid::Uuid::new_v4(),
        configs: BTreeMap::new(),
    }
}

/// Commits `record` through whichever node leads (an election may still be settling:
/// a node that just lost its leadership answers ForwardToLeader, and the write is tried
/// again); returns that leader and the record's index.
async fn commit(nodes: &BTreeMap<u64, Controller>, record: MetadataRecord) -> (u64, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        for (&id, n) in nodes {
            if n.raft.metrics().borrow().current_leader != Some(id) {
                continue;
            }
            if let Ok(r) = n.raft.client_write(record.clone()).await {
                return (id, r.log_id.index);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader committed {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_over_loopback_tcp_agree_and_fail_over() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        members.insert(id, node(l.local_addr().expect("addr")));
        listeners.push(l);
    }
    let mut nodes = BTreeMap::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        nodes.insert(id, start(id, dirs[i].path(), l).await);
    }
    // Every voter initializes with the same members, as `ClusterNode::start` does: a
    // node refuses Raft requests from a sender it does not know as a voter.
    for n in nodes.values() {
        n.raft
            .initialize(members.clone())
            .await
            .expect("initialize");
    }
    let wait = |n: &Controller| n.raft.wait(Some(Duration::from_secs(15)));
    let mut last = 0;
    let mut leader = 0;
    for i in 0..3 {
        (leader, last) = commit(&nodes, topic(&format!("t{i}"))).await;
    }
    for n in nodes.values() {
        wait(n)
            .applied_index_at_least(Some(last), "applied")
            .await
            .expect("applied");
        assert_eq!(n.machine.image().topics().count(), 3);
    }

    // The leader's process goes away: listener and Raft both.
    let old = nodes.remove(&leader).expect("leader");
    old.server.abort();
    old.raft.shutdown().await.expect("shut down");
    let any = nodes.values().next().expect("a survivor");
    wait(any)
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != leader),
            "a new leader",
        )
        .await
        .expect("failover");
    (_, last) = commit(&nodes, topic("after")).await;
    for n in nodes.values() {
        wait(n)
            .applied_index_at_least(Some(last), "applied")
            .await
            .expect("applied");
        assert_eq!(n.machine.image().topics().count(), 4);
    }
    for n in nodes.values() {
        n.server.abort();
        n.raft.shutdown().await.expect("shut down");
    }
}

#[tokio::test]
async fn garbage_and_non_voters_on_the_raft_port_close_that_connection_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let c = start(1, dir.path(), l).await;
    c.raft
        .initialize(BTreeMap::from([(1, node(addr))]))
        .await
        .expect("initialize");
    for garbage in [&b"\xff\xff\xff\xff"[..], &b"\x00\x00\x00\x05nope!"[..]] {
        let mut s = TcpStream::connect(&addr.to_string())
            .await
            .expect("connect");
        s.write_all(garbage).await.expect("write");
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed");
    }
    // Still serving: a well-formed vote request from a voter gets an answer; one from
    // node 2, which is not a voter, is refused.
    let mut conn = TcpNetwork::default().new_client(1, &node(addr)).await;
    let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
    let r = conn
        .vote(vote, RPCOption::new(Duration::from_secs(5)))
        .await;
    assert!(r.is_ok(), "{:?}", r.err());
    let mut stranger = TcpNetwork::default().new_client(1, &node(addr)).await;
    let vote = VoteRequest::new(openraft::Vote::new(2, 2), None);
    let r = stranger
        .vote(vote, RPCOption::new(Duration::from_secs(5)))
        .await;
    assert!(r.is_err(), "a vote from a non-voter was answered: {r:?}");
    c.server.abort();
    c.raft.shutdown().await.expect("shut down");
}
