//! The metadata log replicated with openraft: the controllers are voters, other brokers
//! learners, and every node applies the same [`MetadataRecord`]s in the same order to its
//! [`MetadataImage`] (design.md §3).
//!
//! Storage is ours and small: the Raft log is a file of CRC-checked JSON frames (metadata
//! changes are rare; every append is fsynced before it is acknowledged), the vote a file
//! replaced atomically, and a snapshot the serialized image. The network is a trait so the
//! transport (TCP between controllers) and the in-process one the tests use share
//! everything else.
//!
//! Architecture invariant: a record is applied to the image only once it is committed by
//! a quorum, and every node applies the committed log in order; metadata records never
//! enter a partition's offset space.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gregor_storage::{Disk, DiskFile};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use crate::image::{MetadataImage, MetadataRecord};

openraft::declare_raft_types!(
    /// The Raft types of the metadata log.
    pub TypeConfig:
        D = MetadataRecord,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;

/// A frame larger than this is treated as corruption on replay.
const FRAME_MAX_BYTES: usize = 16 << 20;

fn io_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(&std::io::Error::other(e.to_string())).into()
}

/// `[length u32][crc32c u32][json]` for one value.
fn frame<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// The frames of `raw` up to the first torn or corrupt one.
fn unframe<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> (Vec<T>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while raw.len() >= pos + 8 {
        let len = u32::from_be_bytes([raw[pos], raw[pos + 1], raw[pos + 2], raw[pos + 3]]) as usize;
        let crc = u32::from_be_bytes([raw[pos + 4], raw[pos + 5], raw[pos + 6], raw[pos + 7]]);
        if len > FRAME_MAX_BYTES || raw.len() < pos + 8 + len {
            break;
        }
        let body = &raw[pos + 8..pos + 8 + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(v) = serde_json::from_slice(body) else {
            break;
        };
        out.push(v);
        pos += 8 + len;
    }
    (out, pos)
}

/// Decodes a Raft log file's bytes as start-up does; returns how many frames were good and
/// where the good prefix ends. For the fuzz target: never panics on any input.
pub fn decode_log_file(raw: &[u8]) -> (usize, usize) {
    let (frames, good) = unframe::<LogFrame>(raw);
    let _ = unframe::<Vote<NodeId>>(raw);
    let _ = unframe::<SavedSnapshot>(raw);
    (frames.len(), good)
}

fn read_all(disk: &dyn Disk, path: &Path) -> std::io::Result<Vec<u8>> {
    let file = disk.open(path, true)?;
    let len = file.len()? as usize;
    let mut raw = vec![0u8; len];
    file.read_exact_at(&mut raw, 0)?;
    Ok(raw)
}

/// What the log file holds besides entries: the purge point, so a restart knows where the
/// log begins.
#[derive(Serialize, Deserialize)]
enum LogFrame {
    Entry(Entry<TypeConfig>),
    Purged(LogId<NodeId>),
}

#[derive(Debug, Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

/// The Raft log and vote of one node, in `<data-dir>/__raft/`.
#[derive(Debug, Clone)]
pub struct LogStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    file: Arc<Mutex<(Arc<dyn DiskFile>, u64)>>,
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    pub fn open(disk: Arc<dyn Disk>, data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("__raft");
        disk.create_dir_all(&dir)?;
        let log_path = dir.join("log");
        let raw = read_all(&*disk, &log_path)?;
        let (frames, good) = unframe::<LogFrame>(&raw);
        let mut inner = LogInner::default();
        for f in frames {
            match f {
                LogFrame::Entry(e) => {
                    // A later entry at an index replaces the suffix from there (a truncation
                    // that was followed by new appends).
                    inner.entries.split_off(&e.log_id.index);
                    inner.entries.insert(e.log_id.index, e);
                }
                LogFrame::Purged(id) => {
                    inner.entries = inner.entries.split_off(&(id.index + 1));
                    inner.last_purged = Some(id);
                }
            }
        }
        let file = disk.open(&log_path, true)?;
        if (good as u64) < file.len()? {
            tracing::warn!(path = %log_path.display(), "raft log had a torn tail; cut it off");
            file.set_len(good as u64)?;
            file.sync_data()?;
        }
        // The vote is replaced atomically, so a file that does not parse is damage, not a
        // torn write: starting without it could let this node vote twice in one term.
        let vote_path = dir.join("vote");
        let vote_raw = read_all(&*disk, &vote_path)?;
        inner.vote = unframe::<Vote<NodeId>>(&vote_raw).0.pop();
        if inner.vote.is_none() && !vote_raw.is_empty() {
            return Err(std::io::Error::other(format!(
                "{} is corrupt; restore this node's data directory from a backup, or remove the node from the controllers and add it back empty",
                vote_path.display()
            )));
        }
        Ok(LogStore {
            disk,
            dir,
            file: Arc::new(Mutex::new((file, good as u64))),
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn write(&self, frames: &[u8]) -> std::io::Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let (file, size) = &mut *f;
        file.write_all_at(frames, *size)?;
        file.sync_data()?;
        *size += frames.len() as u64;
        Ok(())
    }

    /// Rewrites the whole file from memory (after a truncation: rare, and the metadata log
    /// is small).
    fn rewrite(&self, inner: &LogInner) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        if let Some(p) = inner.last_purged {
            bytes.extend(frame(&LogFrame::Purged(p))?);
        }
        for e in inner.entries.values() {
            bytes.extend(frame(&LogFrame::Entry(e.clone()))?);
        }
        let path = self.dir.join("log");
        self.disk.write_file_atomic(&path, &bytes)?;
        let file = self.disk.open(&path, true)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = (file, bytes.len() as u64);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.disk
            .write_file_atomic(&self.dir.join("vote"), &frame(vote).map_err(io_err)?)
            .map_err(io_err)?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for e in &entries {
            bytes.extend(frame(&LogFrame::Entry(e.clone())).map_err(io_err)?);
        }
        // Durable before it is acknowledged.
        let result = self.write(&bytes);
        if result.is_ok() {
            let mut inner = self.lock();
            for e in entries {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        let failed = result
            .as_ref()
            .err()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::new(e.kind(), e.to_string())),
        );
        match failed {
            Some(e) => Err(io_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        inner.entries.split_off(&log_id.index);
        self.rewrite(&inner).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.last_purged = Some(log_id);
        self.write(&frame(&LogFrame::Purged(log_id)).map_err(io_err)?)
            .map_err(io_err)
    }
}

/// What a snapshot holds: the image and where it stands in the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MachineState {
    image: MetadataImage,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
}

/// A snapshot as stored: its meta and the serialized [`MachineState`].
type SavedSnapshot = (SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>);

/// The state machine: the metadata image, shared with the broker that reads it. It is
/// rebuilt on start from the latest snapshot and the log after it.
#[derive(Debug, Clone)]
pub struct StateMachine {
    state: Arc<Mutex<MachineState>>,
    /// Every newly applied image, for the broker to reconcile its partitions with.
    publish: Arc<tokio::sync::watch::Sender<Arc<MetadataImage>>>,
    snapshot: Arc<Mutex<Option<SavedSnapshot>>>,
    snapshot_path: PathBuf,
    disk: Arc<dyn Disk>,
}

impl StateMachine {
    pub fn open(disk: Arc<dyn Disk>, data_dir: &Path) -> std::io::Result<Self> {
        let snapshot_path = data_dir.join("__raft").join("snapshot");
        disk.create_dir_all(&data_dir.join("__raft"))?;
        let raw = read_all(&*disk, &snapshot_path)?;
        let saved = unframe::<(SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>)>(&raw)
            .0
            .pop();
        let state = saved
            .as_ref()
            .and_then(|(_, data)| serde_json::from_slice::<MachineState>(data).ok())
            .unwrap_or_default();
        let (publish, _) = tokio::sync::watch::channel(Arc::new(state.image.clone()));
        Ok(StateMachine {
            publish: Arc::new(publish),
            state: Arc::new(Mutex::new(state)),
            snapshot: Arc::new(Mutex::new(saved)),
            snapshot_path,
            disk,
        })
    }

    /// A copy of the current image.
    pub fn image(&self) -> MetadataImage {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .image
            .clone()
    }

    /// Images as they are applied, the current one first.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<MetadataImage>> {
        self.publish.subscribe()
    }

    /// The index of the last record applied.
    pub fn applied_index(&self) -> Option<u64> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_applied
            .map(|l| l.index)
    }

    fn save(
        &self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        data: &[u8],
    ) -> std::io::Result<()> {
        let bytes = frame(&(meta.clone(), data.to_vec()))?;
        self.disk.write_file_atomic(&self.snapshot_path, &bytes)?;
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), data.to_vec()));
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let data = serde_json::to_vec(&state).map_err(io_err)?;
        let id = state.last_applied.map_or_else(
            || "empty".to_string(),
            |l| format!("{}-{}", l.leader_id, l.index),
        );
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
            snapshot_id: id,
        };
        self.save(&meta, &data).map_err(io_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for e in entries {
            s.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(record) => s.image.apply(&record),
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(e.log_id), m)
                }
            }
            out.push(());
        }
        self.publish.send_replace(Arc::new(s.image.clone()));
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state: MachineState = serde_json::from_slice(&data).map_err(io_err)?;
        self.save(meta, &data).map_err(io_err)?;
        let image = Arc::new(state.image.clone());
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        self.publish.send_replace(image);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use gregor_storage::OsDisk;
    use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::BasicNode;

    use super::*;

    /// Delivers RPCs between in-process nodes; a node missing from the map is unreachable.
    #[derive(Clone, Default)]
    struct Router {
        nodes: Arc<Mutex<BTreeMap<NodeId, Raft>>>,
    }

    struct Conn {
        target: NodeId,
        router: Router,
    }

    impl Conn {
        fn raft(&self) -> Option<Raft> {
            self.router
                .nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&self.target)
                .cloned()
        }
    }

    fn down<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
        RPCError::Unreachable(Unreachable::new(&std::io::Error::other("node down")))
    }

    impl RaftNetworkFactory<TypeConfig> for Router {
        type Network = Conn;
        async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
            Conn {
                target,
                router: self.clone(),
            }
        }
    }

    impl RaftNetwork<TypeConfig> for Conn {
        async fn append_entries(
            &mut self,
            rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>>
        {
            self.raft()
                .ok_or_else(down)?
                .append_entries(rpc)
                .await
                .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }

        async fn install_snapshot(
            &mut self,
            rpc: InstallSnapshotRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<
            InstallSnapshotResponse<NodeId>,
            RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
        > {
            self.raft()
                .ok_or_else(down)?
                .install_snapshot(rpc)
                .await
                .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }

        async fn vote(
            &mut self,
            rpc: VoteRequest<NodeId>,
            _option: RPCOption,
        ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
            self.raft()
                .ok_or_else(down)?
                .vote(rpc)
                .await
                .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
        }
    }

    struct Node {
        raft: Raft,
        machine: StateMachine,
    }

    async fn start(id: NodeId, dir: &Path, router: &Router) -> Node {
        let config = openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 200,
            election_timeout_max: 400,
            ..Default::default()
        };
        let config = Arc::new(config.validate().expect("valid raft config"));
        let disk: Arc<dyn Disk> = Arc::new(OsDisk);
        let log = LogStore::open(disk.clone(), dir).expect("log opens");
        let machine = StateMachine::open(disk, dir).expect("state machine opens");
        let raft = Raft::new(id, config, router.clone(), log, machine.clone())
            .await
            .expect("raft starts");
        router
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, raft.clone());
        Node { raft, machine }
    }

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.to_string(),
            topic_id: uuid::Uuid::new_v4(),
            configs: BTreeMap::new(),
        }
    }

    async fn leader_of(nodes: &BTreeMap<NodeId, Node>) -> NodeId {
        let any = nodes.values().next().expect("a node");
        let m = any
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.current_leader.is_some_and(|l| nodes.contains_key(&l)),
                "a leader among the live nodes",
            )
            .await
            .expect("a leader is elected");
        m.current_leader.expect("checked above")
    }

    async fn all_applied(nodes: &BTreeMap<NodeId, Node>, index: u64) {
        for (id, n) in nodes {
            n.raft
                .wait(Some(Duration::from_secs(10)))
                .applied_index_at_least(Some(index), "applied")
                .await
                .unwrap_or_else(|e| panic!("node {id} did not apply up to {index}: {e}"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_controllers_agree_fail_over_and_a_restarted_one_catches_up() {
        let dirs: Vec<tempfile::TempDir> =
            (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
        let router = Router::default();
        let mut nodes = BTreeMap::new();
        for id in 1..=3u64 {
            nodes.insert(id, start(id, dirs[id as usize - 1].path(), &router).await);
        }
        let members: BTreeSet<NodeId> = nodes.keys().copied().collect();
        nodes[&1]
            .raft
            .initialize(members)
            .await
            .expect("initialize");

        let leader = leader_of(&nodes).await;
        let mut last = 0;
        for i in 0..5 {
            let r = nodes[&leader]
                .raft
                .client_write(topic(&format!("t{i}")))
                .await
                .expect("committed");
            last = r.log_id.index;
        }
        all_applied(&nodes, last).await;
        let image = nodes[&leader].machine.image();
        assert_eq!(image.topics().count(), 5);
        for n in nodes.values() {
            assert_eq!(
                n.machine.image(),
                image,
                "every node applied the same records"
            );
        }

        // The leader dies: the other two elect a new one and keep committing.
        let old = nodes.remove(&leader).expect("leader");
        router
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&leader);
        old.raft.shutdown().await.expect("shut down");
        let next = leader_of(&nodes).await;
        assert_ne!(next, leader);
        let r = nodes[&next]
            .raft
            .client_write(topic("after"))
            .await
            .expect("committed");
        last = r.log_id.index;
        all_applied(&nodes, last).await;

        // The old leader restarts from its files and catches up.
        let back = start(leader, dirs[leader as usize - 1].path(), &router).await;
        nodes.insert(leader, back);
        all_applied(&nodes, last).await;
        let image = nodes[&next].machine.image();
        assert_eq!(image.topics().count(), 6);
        for (id, n) in &nodes {
            assert_eq!(n.machine.image(), image, "node {id} caught up");
        }
        for n in nodes.values() {
            n.raft.shutdown().await.expect("shut down");
        }
    }

    #[test]
    fn a_torn_log_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let disk: Arc<dyn Disk> = Arc::new(OsDisk);
        let log = LogStore::open(disk.clone(), dir.path()).expect("opens");
        let entries: Vec<Entry<TypeConfig>> = (1..=3)
            .map(|i| Entry {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(topic(&format!("t{i}"))),
            })
            .collect();
        let mut bytes = Vec::new();
        for e in &entries {
            bytes.extend(frame(&LogFrame::Entry(e.clone())).expect("frames"));
        }
        log.write(&bytes).expect("writes");
        // Half of a fourth frame: a crash mid-append.
        let torn = frame(&LogFrame::Entry(entries[0].clone())).expect("frames");
        log.write(&torn[..torn.len() / 2]).expect("writes");
        drop(log);
        let mut log = LogStore::open(disk, dir.path()).expect("reopens");
        let got = rt.block_on(log.try_get_log_entries(0..10)).expect("reads");
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let state = rt.block_on(log.get_log_state()).expect("state");
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
    }

    #[test]
    fn the_vote_survives_a_restart_and_a_damaged_vote_file_stops_the_node() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let disk: Arc<dyn Disk> = Arc::new(OsDisk);
        let mut log = LogStore::open(disk.clone(), dir.path()).expect("opens");
        let vote = Vote::new(7, 2);
        rt.block_on(log.save_vote(&vote)).expect("saves");
        drop(log);
        let mut log = LogStore::open(disk.clone(), dir.path()).expect("reopens");
        assert_eq!(rt.block_on(log.read_vote()).expect("reads"), Some(vote));
        drop(log);
        std::fs::write(dir.path().join("__raft").join("vote"), b"garbage").expect("damage");
        let err = LogStore::open(disk, dir.path()).expect_err("refused");
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }
}
