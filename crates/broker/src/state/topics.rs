//! Changes to the cluster metadata this broker makes: topics, partitions, configs,
//! reassignments, ACL and credential records, producer-id blocks; through the active
//! controller in a cluster, in the local metadata log on a single node.

use super::*;

/// Where `gregor user create --data-dir` leaves records for the broker's next start: one
/// JSON metadata record per line.
pub fn bootstrap_records_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("bootstrap-records.jsonl")
}

/// One line of the bootstrap records: a user's SCRAM credential.
pub fn bootstrap_record_line(
    user: &str,
    mechanism: &str,
    credential: gregor_cluster::ScramCredentialMeta,
) -> Result<String, String> {
    serde_json::to_string(&MetadataRecord::ScramCredential {
        user: user.to_string(),
        mechanism: mechanism.to_string(),
        credential,
    })
    .map_err(|e| e.to_string())
}

/// Producer ids reserved per metadata record.
pub(super) const PRODUCER_ID_BLOCK: i64 = 1000;

/// Runs `fut` from synchronous code: at once when it need not wait (a single node's
/// metadata is local), else on this worker of the multi-threaded runtime, blocked until
/// it is done. Only asynchronous callers may run on a single-threaded runtime (the
/// simulator's) when `fut` waits for the metadata quorum.
pub(super) fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, BrokerError> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
        return Ok(v);
    }
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| BrokerError::NoController(e.to_string()))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(BrokerError::NoController(
            "a metadata change that waits for the quorum was made from synchronous code on a single-threaded runtime".into(),
        ));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(fut)))
}

impl Broker {
    /// Appends the records that `build` makes from the current image, durably, under the
    /// metadata lock (so two creators of one topic cannot both succeed), and publishes the
    /// new image.
    pub(super) async fn commit_metadata(
        &self,
        build: impl FnOnce(&MetadataImage) -> Result<Vec<MetadataRecord>, BrokerError>,
    ) -> Result<Arc<MetadataImage>, BrokerError> {
        if let Some(node) = self.metadata.cluster() {
            // Through the active controller; `write` returns once the records are applied
            // here, and the image is then reconciled with the partitions at once.
            let records = build(&self.image())?;
            let node = node.clone();
            node.write(records).await.map_err(|e| match e {
                gregor_cluster::ControlError::TopicExists(_) => BrokerError::TopicExists,
                e => BrokerError::NoController(e.to_string()),
            })?;
            let image = node.image();
            self.reconcile(image.clone());
            return Ok(image);
        }
        self.metadata.append_local(build)
    }

    /// Commits metadata records as they are (ACLs, SCRAM credentials).
    pub async fn commit_records(&self, records: Vec<MetadataRecord>) -> Result<(), BrokerError> {
        self.commit_metadata(|_| Ok(records)).await.map(|_| ())
    }

    /// Commits the records `gregor user create --data-dir` left for the next start (the
    /// first users, created offline as Kafka's `kafka-storage format --add-scram` does),
    /// then removes their file.
    pub async fn apply_bootstrap_records(&self) -> Result<(), BrokerError> {
        let path = bootstrap_records_path(&self.config.data_dir);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut records = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let record: MetadataRecord = serde_json::from_str(line).map_err(|e| {
                BrokerError::Config(format!(
                    "{} line {}: {e}; remove the line or the file and create the user again",
                    path.display(),
                    n + 1
                ))
            })?;
            records.push(record);
        }
        let count = records.len();
        self.commit_records(records).await?;
        std::fs::remove_file(&path)
            .map_err(|e| BrokerError::Storage(StorageError::io("remove", &path, e)))?;
        tracing::info!(
            records = count,
            "bootstrap records (users created offline) committed"
        );
        Ok(())
    }

    /// Creates a topic with `partitions` partitions and the given (validated) overrides.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, BrokerError> {
        let rf = self.config.settings().default_replication_factor as i32;
        let assignment = self.assign_replicas(name, partitions, rf, 0)?;
        self.create_topic_assigned(name, assignment, configs).await
    }

    /// [`Self::create_topic`] from synchronous code on the multi-threaded runtime.
    pub fn create_topic_blocking(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, BrokerError> {
        block_on(self.create_topic(name, partitions, configs))?
    }

    /// Creates a topic whose partition `i` has the replicas `assignment[i]` (the first
    /// one leads).
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignment: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, BrokerError> {
        let topic_id = Uuid::new_v4();
        let image = self
            .commit_metadata(|image| {
                if image.topic(name).is_some() {
                    return Err(BrokerError::TopicExists);
                }
                Ok(topic_records(name, topic_id, assignment, configs))
            })
            .await?;
        self.created(&image, name)
    }

    /// After a topic's creation was committed: its replicas here opened.
    fn created(&self, image: &MetadataImage, name: &str) -> Result<TopicMeta, BrokerError> {
        let topic = image
            .topic(name)
            .cloned()
            .ok_or(BrokerError::UnknownTopic)?;
        self.open_local_replicas(&topic)?;
        tracing::info!(topic = name, partitions = topic.partitions.len(), topic_id = %topic.topic_id, "created topic");
        Ok(topic)
    }

    /// Creates several topics in one metadata commit (one CreateTopics request's), each
    /// as [`Self::create_topic_assigned`]; a topic that exists by then is refused alone.
    /// One commit per topic made creating 10,000 topics take 26 s: each commit copies the
    /// whole image.
    ///
    /// `None`: the commit failed (no controller; or another creator took one of the
    /// topics in between, and a cluster's controller refused the whole write); the caller
    /// then creates each alone, so that each gets its own answer.
    pub async fn create_topics_assigned(
        &self,
        topics: Vec<NewTopic>,
    ) -> Option<Vec<Result<TopicMeta, BrokerError>>> {
        let names: Vec<String> = topics.iter().map(|(n, _, _)| n.clone()).collect();
        let now = self.image();
        if names.iter().all(|n| now.topic(n).is_some()) {
            return Some(
                names
                    .iter()
                    .map(|_| Err(BrokerError::TopicExists))
                    .collect(),
            );
        }
        let existing = std::sync::Mutex::new(Vec::new());
        let committed = self
            .commit_metadata(|image| {
                let mut records = Vec::new();
                for (name, assignment, configs) in topics {
                    if image.topic(&name).is_some() {
                        existing
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(name);
                        continue;
                    }
                    records.extend(topic_records(&name, Uuid::new_v4(), assignment, configs));
                }
                Ok(records)
            })
            .await;
        let existing = existing.into_inner().unwrap_or_else(|p| p.into_inner());
        // A failed commit (no controller, a race) is left to the topics one by one,
        // which answer each with its own error.
        let image = committed.ok()?;
        let results = names
            .iter()
            .map(|name| {
                if existing.contains(name) {
                    return Err(BrokerError::TopicExists);
                }
                self.created(&image, name)
            })
            .collect();
        Some(results)
    }

    /// Starts moving a partition's replicas to `target`, or (`None`) cancels a move.
    pub async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
        allow_rf_change: bool,
    ) -> Result<(), (ResponseError, String)> {
        let image = self.image();
        let meta = image.topic(topic).ok_or((
            ResponseError::UnknownTopicOrPartition,
            format!("no topic '{topic}'"),
        ))?;
        let topic_id = meta.topic_id;
        let p = meta.partitions.get(partition.max(0) as usize).ok_or((
            ResponseError::UnknownTopicOrPartition,
            format!("'{topic}' has no partition {partition}"),
        ))?;
        let record = |replicas: Vec<i32>, leader: i32, epoch: i32, isr: Vec<i32>| {
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                leader,
                leader_epoch: epoch,
                isr: Some(isr),
            }
        };
        let records = match target {
            None => cancel_reassignment(topic, partition, topic_id, p)?,
            Some(target) => {
                let live: Vec<i32> = self.live_brokers().iter().map(|b| b.node_id).collect();
                let mut unique = target.clone();
                unique.sort_unstable();
                unique.dedup();
                if target.is_empty() || unique.len() != target.len() {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("replicas {target:?} must be distinct and not empty"),
                    ));
                }
                if let Some(b) = target.iter().find(|b| !live.contains(b)) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("broker {b} is not a live broker (live: {live:?})"),
                    ));
                }
                let original = p
                    .reassignment
                    .as_ref()
                    .map_or_else(|| p.replicas.clone(), |(_, o)| o.clone());
                if !allow_rf_change && target.len() != original.len() {
                    return Err((
                        ResponseError::InvalidReplicationFactor,
                        format!(
                            "the move changes the replication factor from {} to {}",
                            original.len(),
                            target.len()
                        ),
                    ));
                }
                if target == p.replicas && p.reassignment.is_none() {
                    return Ok(());
                }
                if self.metadata.cluster().is_none() {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        "a single node has nowhere to move replicas".into(),
                    ));
                }
                // During the move the partition has the target replicas and every original
                // one, so a leader outside the target keeps leading until the end.
                let mut union = target.clone();
                union.extend(original.iter().copied().filter(|r| !target.contains(r)));
                vec![
                    record(union, p.leader, p.leader_epoch, p.isr.clone()),
                    MetadataRecord::Reassign {
                        topic_id,
                        partition,
                        target: Some(target.clone()),
                        original,
                    },
                ]
            }
        };
        self.commit_metadata(|_| Ok(records))
            .await
            .map(|_| ())
            .map_err(|e| (ResponseError::NotController, e.to_string()))?;
        tracing::info!(topic, partition, "reassignment changed");
        Ok(())
    }

    /// The topic, created with the broker's defaults if it does not exist and
    /// `auto.create.topics.enable` allows. `Ok(None)`: unknown and not created.
    pub fn get_or_auto_create(
        &self,
        name: &str,
        allowed_by_client: bool,
    ) -> Result<Option<TopicMeta>, BrokerError> {
        if let Some(topic) = self.image().topic(name) {
            return Ok(Some(topic.clone()));
        }
        if !allowed_by_client
            || !self.config.settings().auto_create_topics_enable
            || validate_topic_name(name).is_err()
        {
            return Ok(None);
        }
        // The coordinators' topics are created as their coordinators create them (their
        // partition counts, compacted), as Kafka's AutoTopicCreationManager does.
        match name {
            OFFSETS_TOPIC => return self.ensure_offsets_topic().map(Some),
            TXN_TOPIC => return self.ensure_txn_topic().map(Some),
            _ => {}
        }
        let partitions = self.config.settings().num_partitions as i32;
        match self.create_topic_blocking(name, partitions, BTreeMap::new()) {
            Ok(topic) => Ok(Some(topic)),
            Err(BrokerError::TopicExists) => Ok(self.image().topic(name).cloned()),
            Err(e) => Err(e),
        }
    }

    /// Replaces a topic's dynamic configs (already validated) durably, and applies them to
    /// its open partitions at once.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let topic_id = self
            .image()
            .topic(name)
            .ok_or(BrokerError::UnknownTopic)?
            .topic_id;
        let image = self
            .commit_metadata(|image| {
                image
                    .topic_by_id(&topic_id)
                    .ok_or(BrokerError::UnknownTopic)?;
                Ok(vec![MetadataRecord::TopicConfig { topic_id, configs }])
            })
            .await?;
        let topic = image.topic(name).ok_or(BrokerError::UnknownTopic)?;
        self.reconfigure(topic);
        tracing::info!(topic = name, configs = ?topic.configs, "topic configs changed");
        Ok(())
    }

    /// Replaces the runtime-changed broker settings of `resource` ("" for the cluster
    /// default, or this node's id), durably, and applies them to every partition at once.
    pub async fn set_broker_configs(
        &self,
        resource: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let image = self
            .commit_metadata(|_| {
                Ok(vec![MetadataRecord::BrokerConfig {
                    resource: resource.to_string(),
                    configs,
                }])
            })
            .await?;
        load_dynamic_configs(&self.config, &image);
        for topic in image.topics() {
            self.reconfigure(topic);
        }
        tracing::info!(resource, "dynamic broker configs changed");
        Ok(())
    }

    /// Applies a topic's effective configs to its open partitions.
    pub(super) fn reconfigure(&self, topic: &TopicMeta) {
        let (log_config, settings) = self.log_config(&topic.configs);
        for index in 0..topic.partitions.len() as i32 {
            if let Some(p) = self.partitions.get(&topic.name, index) {
                p.log().set_config(log_config.clone());
                *p.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
            }
        }
    }

    /// Hands out a producer id never given before, reserving a new block durably when the
    /// current one runs out.
    pub async fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        loop {
            if let Some(id) = self.producer_ids.next() {
                return Ok(id);
            }
            // The lock is not held while the block is reserved: two callers may each reserve
            // one, and the one that finds the current block still in use leaves its own
            // unused. Blocks never overlap, so no id is handed out twice.
            let image = self
                .commit_metadata(|image| {
                    Ok(vec![MetadataRecord::ProducerIds {
                        next_block_start: image.next_producer_id_block() + PRODUCER_ID_BLOCK,
                    }])
                })
                .await?;
            let end = image.next_producer_id_block();
            self.producer_ids.refill(end - PRODUCER_ID_BLOCK, end);
        }
    }

    /// Adds partitions to a topic so it has `count` in all.
    pub async fn add_partitions(&self, name: &str, count: i32) -> Result<(), BrokerError> {
        let image = self.image();
        let topic = image.topic(name).ok_or(BrokerError::UnknownTopic)?;
        let topic_id = topic.topic_id;
        let current = topic.partitions.len() as i32;
        let rf = topic
            .partitions
            .first()
            .map_or(1, |p| p.replicas.len() as i32);
        let assignment = self.assign_replicas(name, count - current, rf, current)?;
        let image = self
            .commit_metadata(|image| {
                let now = image
                    .topic_by_id(&topic_id)
                    .ok_or(BrokerError::UnknownTopic)?
                    .partitions
                    .len() as i32;
                if now != current {
                    return Err(BrokerError::Metadata(format!(
                        "partitions of '{name}' changed meanwhile; retry"
                    )));
                }
                Ok(assignment
                    .into_iter()
                    .zip(current..count)
                    .map(|(replicas, p)| MetadataRecord::Partition {
                        topic_id,
                        partition: p,
                        leader: replicas[0],
                        isr: Some(replicas.clone()),
                        replicas,
                        leader_epoch: 0,
                    })
                    .collect())
            })
            .await?;
        let topic = image.topic(name).ok_or(BrokerError::UnknownTopic)?;
        self.open_local_replicas(topic)?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Deletes a topic: metadata first (so it is gone even if the files linger), then its
    /// partition directories are renamed aside and removed in the background.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let image = self.image();
        let topic = image.topic(name).ok_or(BrokerError::UnknownTopic)?;
        let topic_id = topic.topic_id;
        self.commit_metadata(|image| {
            image
                .topic_by_id(&topic_id)
                .ok_or(BrokerError::UnknownTopic)?;
            Ok(vec![MetadataRecord::RemoveTopic { topic_id }])
        })
        .await?;
        let removed: Vec<Arc<Partition>> = self
            .partitions
            .all()
            .into_iter()
            .filter(|p| p.topic_id == topic_id)
            .collect();
        self.partitions.remove(removed);
        tracing::info!(topic = name, topic_id = %topic.topic_id, "deleted topic");
        Ok(())
    }
}

/// The records that cancel the reassignment of `topic`-`partition` (`p`): back to its
/// original replicas, its leader kept if it is one of them.
fn cancel_reassignment(
    topic: &str,
    partition: i32,
    topic_id: Uuid,
    p: &PartitionMeta,
) -> Result<Vec<MetadataRecord>, (ResponseError, String)> {
    let Some((_, original)) = p.reassignment.clone() else {
        return Err((
            ResponseError::NoReassignmentInProgress,
            format!("no reassignment of {topic}-{partition} is in progress"),
        ));
    };
    let mut isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| original.contains(r))
        .collect();
    if isr.is_empty() {
        isr = original.clone();
    }
    let leader = if original.contains(&p.leader) {
        p.leader
    } else {
        isr[0]
    };
    Ok(vec![
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: original,
            leader,
            leader_epoch: p.leader_epoch + i32::from(leader != p.leader),
            isr: Some(isr),
        },
        MetadataRecord::Reassign {
            topic_id,
            partition,
            target: None,
            original: Vec::new(),
        },
    ])
}

/// A topic to create: its name, each partition's replicas (the first leads), its config
/// overrides.
pub type NewTopic = (String, Vec<Vec<i32>>, BTreeMap<String, String>);

/// The records that create a topic: the topic, then each partition led by its first
/// replica.
fn topic_records(
    name: &str,
    topic_id: Uuid,
    assignment: Vec<Vec<i32>>,
    configs: BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::Topic {
        name: name.to_string(),
        topic_id,
        configs,
    }];
    records.extend(assignment.into_iter().enumerate().map(|(p, replicas)| {
        MetadataRecord::Partition {
            topic_id,
            partition: p as i32,
            leader: replicas[0],
            isr: Some(replicas.clone()),
            replicas,
            leader_epoch: 0,
        }
    }));
    records
}
