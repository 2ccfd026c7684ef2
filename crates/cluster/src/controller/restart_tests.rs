//! The active controller after a restart: three controllers in this process, each on its
//! own runtime so that one can be stopped whole (tasks and listener) and started again on
//! the same directory and port, as a broker process is.

use std::sync::Arc;

use gregor_storage::{Disk, OsDisk};
use tokio::runtime::Runtime;

use super::*;
use crate::image::MetadataRecord as R;

struct Node {
    id: i32,
    dir: tempfile::TempDir,
    addr: String,
    runtime: Option<Runtime>,
    node: Option<Arc<ClusterNode>>,
}

fn settings() -> ControllerSettings {
    ControllerSettings {
        session_timeout_ms: 60_000,
        heartbeat_interval_ms: 1_000,
        auto_leader_rebalance: false,
        leader_imbalance_check_ms: 300_000,
        unclean_leader_election: false,
    }
}

impl Node {
    fn start(&mut self, voters: &BTreeMap<NodeId, String>) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let disk: Arc<dyn Disk> = Arc::new(OsDisk);
        let node = runtime.block_on(async {
            let listener = TcpListener::bind(&self.addr).await.expect("bind");
            ClusterNode::start(
                disk,
                self.dir.path(),
                self.id,
                listener,
                voters.clone(),
                settings(),
                Arc::new(raft_net::PlainTcp),
            )
            .await
            .expect("start")
        });
        self.node = Some(node);
        self.runtime = Some(runtime);
    }

    /// Stops everything the node runs, as a process exit would.
    fn stop(&mut self) {
        let node = self.node.take().expect("running");
        let runtime = self.runtime.take().expect("running");
        runtime.block_on(node.shutdown());
        drop(node);
        runtime.shutdown_timeout(Duration::from_secs(5));
    }

    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.as_ref().expect("running").block_on(f)
    }

    fn node(&self) -> &Arc<ClusterNode> {
        self.node.as_ref().expect("running")
    }
}

fn topic(name: &str) -> R {
    R::Topic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
        configs: BTreeMap::new(),
    }
}

fn wait_for_leader(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if n.node.as_ref().is_some_and(|c| c.is_leader()) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no controller was elected");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_controller_restarted_as_leader_decides_from_every_entry_committed_before() {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            Node {
                id,
                dir: tempfile::tempdir().expect("tempdir"),
                addr: format!("127.0.0.1:{port}"),
                runtime: None,
                node: None,
            }
        })
        .collect();
    let voters: BTreeMap<NodeId, String> = nodes
        .iter()
        .map(|n| (n.id as NodeId, n.addr.clone()))
        .collect();
    for n in nodes.iter_mut() {
        n.start(&voters);
    }
    // Topics created one entry each, committed and applied by a quorum.
    let names: Vec<String> = (0..300).map(|i| format!("topic-{i}")).collect();
    let mut leader = wait_for_leader(&nodes);
    for name in &names {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let l = &nodes[leader];
            match l.run(l.node().handle(ControlRequest::Write(vec![topic(name)]))) {
                Ok(_) | Err(ControlError::TopicExists(_)) => break,
                // Elected, but not yet confirmed by a quorum, or not the leader any more.
                Err(e) => assert!(Instant::now() < deadline, "{name} not created: {e:?}"),
            }
            std::thread::sleep(Duration::from_millis(20));
            leader = wait_for_leader(&nodes);
        }
    }
    // The leader stops and starts again at once: openraft restores it as the leader of
    // the same term, its state machine rebuilt from the start of the log.
    nodes[leader].stop();
    nodes[leader].start(&voters);
    // Every name is taken: a controller deciding from an image that lacks some of them
    // would create a second topic of the same name. The newest first, asked at once.
    let l = &nodes[leader];
    let mut created_again = Vec::new();
    for name in names.iter().rev() {
        match l.run(l.node().handle(ControlRequest::Write(vec![topic(name)]))) {
            Err(ControlError::TopicExists(_)) => {}
            Ok(_) => created_again.push(name.clone()),
            Err(e) => panic!("{name}: {e:?}"),
        }
    }
    assert!(
        created_again.is_empty(),
        "created again after the restart: {created_again:?}"
    );
    assert_eq!(wait_for_leader(&nodes), leader, "another node was elected");
    for n in nodes.iter_mut() {
        n.stop();
    }
}
