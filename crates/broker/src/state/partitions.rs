//! The partitions this broker hosts: the map from topic-partition to [`Partition`], and
//! opening, removing and closing their logs on this broker's disk.

use super::*;

/// The partition map, the one service that opens and closes partition logs.
#[derive(Debug)]
pub struct Partitions {
    node_id: i32,
    data_dir: PathBuf,
    pub(super) disk: Arc<dyn Disk>,
    /// Whether this start found the clean-shutdown marker (every log closed and fsynced).
    clean_start: bool,
    map: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
}

impl Partitions {
    pub(super) fn new(
        node_id: i32,
        data_dir: PathBuf,
        disk: Arc<dyn Disk>,
        clean_start: bool,
    ) -> Self {
        Partitions {
            node_id,
            data_dir,
            disk,
            clean_start,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), index))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Opens (recovering it) the log of partition `index` of `topic` with `configs`, and
    /// puts it in the map.
    pub(super) fn open(
        &self,
        topic: &TopicMeta,
        index: i32,
        configs: (LogConfig, ProduceSettings),
    ) -> Result<Arc<Partition>, BrokerError> {
        let (log_config, settings) = configs;
        let log = PartitionLog::open_with(
            self.disk.clone(),
            self.data_dir.join(format!("{}-{index}", topic.name)),
            log_config,
            now_ms(),
            self.clean_start,
        )?;
        if log.damage().is_some() {
            crate::metrics::damaged_batch();
        }
        let hw = log.high_watermark();
        let me = self.node_id;
        let meta = topic.partitions.get(index as usize);
        let partition = Arc::new(Partition {
            node_id: me,
            replica: Mutex::new(ReplicaState {
                leader: meta.map_or(me, |m| m.leader),
                leader_epoch: meta.map_or(0, |m| m.leader_epoch),
                replicas: meta.map_or_else(|| vec![me], |m| m.replicas.clone()),
                isr: meta.map_or_else(|| vec![me], |m| m.isr.clone()),
                followers: meta
                    .map_or_else(HashMap::new, |m| fresh_followers(&m.replicas, me, now_ms())),
                // A replica opened as a follower first checks its log against the leader's.
                needs_truncation: meta.is_some_and(|m| m.leader >= 0 && m.leader != me),
                epoch_start_offset: log.log_end(),
                ..ReplicaState::default()
            }),
            hw_watch: tokio::sync::watch::Sender::new(hw),
            topic: topic.name.clone(),
            topic_id: topic.topic_id,
            index,
            log: Mutex::new(log),
            settings: RwLock::new(settings),
            waiters: Mutex::new(Vec::new()),
            flush_lock: tokio::sync::Mutex::new(()),
            cache_dropped: Default::default(),
            metrics: crate::metrics::PartitionMetrics::new(&topic.name, index),
        });
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.name.clone(), index), partition.clone());
        Ok(partition)
    }

    /// Forgets partitions and moves their directories aside, removing them in the
    /// background.
    pub(super) fn remove(&self, removed: Vec<Arc<Partition>>) {
        {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            for p in &removed {
                if map
                    .get(&(p.topic.clone(), p.index))
                    .is_some_and(|q| Arc::ptr_eq(p, q))
                {
                    map.remove(&(p.topic.clone(), p.index));
                }
            }
        }
        for partition in removed {
            let name = partition.topic.as_str();
            tracing::info!(topic = name, partition = partition.index, "removing this broker's replica: its topic was deleted or it moved to other brokers");
            partition.wake_waiters();
            let dir = partition.log().dir().to_path_buf();
            let aside = self.data_dir.join(format!(
                "{name}-{}.{}-delete",
                partition.index,
                partition.topic_id.simple()
            ));
            if let Err(e) = self.disk.rename(&dir, &aside) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not move a deleted partition aside; remove it by hand");
                continue;
            }
            let disk = self.disk.clone();
            std::thread::spawn(move || {
                if let Err(e) = disk.remove_dir_all(&aside) {
                    tracing::warn!(dir = %aside.display(), error = %e, "could not remove a deleted partition; remove it by hand");
                }
            });
        }
    }

    /// Removes what a removal before a crash left aside.
    pub(super) fn remove_deleted_dirs(&self) {
        let Ok(entries) = self.disk.read_dir(&self.data_dir) else {
            return;
        };
        for path in entries
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with("-delete"))
        {
            if let Err(e) = self.disk.remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove a deleted partition");
            }
        }
    }

    /// Clean close of every log: fsynced, indexes written, recovery points moved up.
    /// Returns whether every log closed.
    pub(super) fn close(&self) -> bool {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let all = self.all();
        let next = AtomicUsize::new(0);
        let all_closed = AtomicBool::new(true);
        let close_next = || loop {
            let Some(partition) = all.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return;
            };
            if let Err(e) = partition.log().close() {
                all_closed.store(false, Ordering::Relaxed);
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "closing the log failed; it will be recovered on the next start");
            }
        };
        // Closing a log is mostly fsyncs, which the disk serves side by side: several
        // threads close logs at once (one at a time, 10,000 partitions took 18.5 s). In
        // the simulator, one, so that a seed replays the same.
        let workers = if turmoil::in_simulation() {
            1
        } else {
            all.len().clamp(1, CLOSE_THREADS)
        };
        std::thread::scope(|s| {
            for _ in 1..workers {
                s.spawn(close_next);
            }
            close_next();
        });
        all_closed.load(Ordering::Relaxed)
    }
}

/// Threads that close logs at a clean stop.
const CLOSE_THREADS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: usize) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            topic_id: Uuid::new_v4(),
            partitions: vec![
                gregor_cluster::PartitionMeta {
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    reassignment: None,
                };
                partitions
            ],
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn a_partition_keeps_only_the_fetches_still_waiting_on_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let map = Partitions::new(
            1,
            dir.path().to_path_buf(),
            Arc::new(gregor_storage::OsDisk),
            false,
        );
        let t = topic("t", 2);
        let config = || {
            let settings = ProduceSettings {
                max_message_bytes: 1 << 20,
                log_append_time: false,
                compacted: false,
                min_insync_replicas: 1,
                cache_window_bytes: 0,
                sync_unreplicated: false,
            };
            (LogConfig::default(), settings)
        };
        let (a, b) = (
            map.open(&t, 0, config()).expect("open"),
            map.open(&t, 1, config()).expect("open"),
        );
        // 1000 fetches over both idle partitions, each naming partition 0 twice, that
        // return without an append: none stays registered.
        for _ in 0..1000 {
            let notify = Arc::new(Notify::new());
            a.add_waiter(&notify);
            a.add_waiter(&notify);
            b.add_waiter(&notify);
        }
        let waiting = Arc::new(Notify::new());
        a.add_waiter(&waiting);
        b.add_waiter(&waiting);
        assert_eq!((a.waiting(), b.waiting()), (1, 1));
        assert_eq!(a.waiters.lock().expect("lock").len(), 1, "pruned on add");
        a.wake_waiters();
        assert_eq!(a.waiting(), 0);
    }
}
