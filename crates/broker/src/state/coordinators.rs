//! The group and transaction coordinators' side of the broker: their internal topics,
//! loading them, where each key's coordinator is, and writing their records and markers.

use super::*;
use crate::error::{AppendError, MarkerError};
use crate::group::{Now, Replayed};

impl Broker {
    /// Calls `f` with every batch of every partition of an internal topic, in log order.
    pub(super) fn replay_internal(
        &self,
        topic: &str,
        mut f: impl FnMut(i32, &BatchHeader, &[u8]),
    ) -> Result<(), BrokerError> {
        let Some(meta) = self.image().topic(topic).cloned() else {
            return Ok(());
        };
        for index in 0..meta.partitions.len() as i32 {
            let Some(partition) = self.partitions.get(topic, index) else {
                continue;
            };
            replay_partition(&partition, |header, batch| f(index, header, batch))?;
        }
        Ok(())
    }

    /// Replays every `__transaction_state` partition into the transaction coordinator.
    pub(super) fn load_txns(&self) -> Result<(), BrokerError> {
        let mut records = Vec::new();
        self.replay_internal(TXN_TOPIC, |index, header, batch| {
            records.extend(decode_internal(
                TXN_TOPIC,
                index,
                header,
                batch,
                txn_store::decode,
            ));
        })?;
        self.txns.load(records);
        Ok(())
    }

    /// Replays every `__consumer_offsets` partition into the group coordinator.
    pub(super) fn load_groups(&self) -> Result<(), BrokerError> {
        let Some(meta) = self.image().topic(OFFSETS_TOPIC).cloned() else {
            return Ok(());
        };
        let partitions = meta.partitions.len() as i32;
        for index in 0..partitions {
            if let Some(partition) = self.partitions.get(OFFSETS_TOPIC, index) {
                self.load_offsets_partition(&partition, partitions)?;
            }
        }
        tracing::info!(groups = self.groups.list().len(), "consumer groups loaded");
        Ok(())
    }

    /// Replays one `__consumer_offsets` partition into the group coordinator: its records,
    /// transactional ones pending until their marker, in log order.
    fn load_offsets_partition(
        &self,
        partition: &Partition,
        partitions: i32,
    ) -> Result<usize, StorageError> {
        let index = partition.index;
        let mut replayed = Vec::new();
        replay_partition(partition, |header, batch| {
            if header.is_control() {
                if let Some(commit) = gregor_protocol::batch::marker_kind(batch) {
                    replayed.push(Replayed::Marker {
                        producer_id: header.producer_id,
                        commit,
                    });
                }
                return;
            }
            let producer = header.is_transactional().then_some(header.producer_id);
            replayed.extend(
                decode_internal(OFFSETS_TOPIC, index, header, batch, group_store::decode)
                    .into_iter()
                    .map(|r| Replayed::Record(producer, r)),
            );
        })?;
        let count = replayed.len();
        let ours = |g: &str| group_store::partition_for(g, partitions) == index;
        self.groups.load(Now::current(), &ours, replayed);
        Ok(count)
    }

    /// Creates `__consumer_offsets` (compacted, `offsets.topic.num.partitions`) if missing.
    pub fn ensure_offsets_topic(&self) -> Result<TopicMeta, BrokerError> {
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            self.config.settings().offsets_topic_num_partitions,
            "offsets.topic.segment.bytes",
            self.config.settings().offsets_topic_replication_factor,
        )
    }

    /// Creates `__transaction_state` (compacted, `transaction.state.log.num.partitions`)
    /// if missing.
    pub fn ensure_txn_topic(&self) -> Result<TopicMeta, BrokerError> {
        self.ensure_internal_topic(
            TXN_TOPIC,
            self.config.settings().transaction_state_log_num_partitions,
            "transaction.state.log.segment.bytes",
            self.config
                .settings()
                .transaction_state_log_replication_factor,
        )
    }

    pub(super) fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i64,
        segment_key: &str,
        replication_factor: i64,
    ) -> Result<TopicMeta, BrokerError> {
        if let Some(t) = self.image().topic(name) {
            return Ok(t.clone());
        }
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.get(segment_key).to_string(),
            ),
        ]);
        // Kafka refuses to create them with fewer live brokers than the replication factor;
        // Gregor takes as many as there are, so a single node and a small cluster work.
        let rf = (replication_factor as i32)
            .min(self.live_brokers().len() as i32)
            .max(1);
        let partitions = partitions as i32;
        let created = self
            .assign_replicas(name, partitions, rf, 0)
            .and_then(|a| block_on(self.create_topic_assigned(name, a, configs))?);
        match created {
            Ok(t) => Ok(t),
            Err(BrokerError::TopicExists) => {
                // Another broker created it a moment ago: it is in the image once the
                // metadata log is applied here.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                loop {
                    let image = self
                        .metadata
                        .cluster()
                        .map_or_else(|| self.image(), |n| n.image());
                    if let Some(t) = image.topic(name) {
                        return Ok(t.clone());
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(BrokerError::UnknownTopic);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl GroupLog for Broker {
    fn append(
        &self,
        group: &str,
        producer: Option<(i64, i16)>,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), AppendError> {
        let partition = self
            .offsets_partition(group)
            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
        append_internal(self, &partition, &records, producer)
    }
}

impl Broker {
    /// The broker that coordinates `key` (a group, or with `txn` a transactional id): the
    /// leader of the internal-topic partition that holds it.
    pub fn coordinator(
        &self,
        key: &str,
        txn: bool,
    ) -> Result<gregor_cluster::BrokerMeta, (ResponseError, String)> {
        let topic = if txn {
            self.ensure_txn_topic()
        } else {
            self.ensure_offsets_topic()
        }
        .map_err(|e| (ResponseError::CoordinatorNotAvailable, e.to_string()))?;
        let index = group_store::partition_for(key, topic.partitions.len() as i32);
        let leader = topic.partitions[index as usize].leader;
        self.live_brokers()
            .into_iter()
            .find(|b| b.node_id == leader)
            .ok_or_else(|| {
                (
                    ResponseError::CoordinatorNotAvailable,
                    format!("{}-{index} has no live leader", topic.name),
                )
            })
    }

    /// Why this broker may not serve `group` now (its partition of `__consumer_offsets` is
    /// led elsewhere), or `None` when it is the group's coordinator.
    pub fn not_coordinator(&self, group: &str) -> Option<ResponseError> {
        self.metadata.cluster()?;
        // A self-fenced broker may have lost the group's partition already: the client
        // looks the coordinator up again (Kafka answers a failed append with this too).
        if self.self_fenced().is_some() {
            return Some(ResponseError::NotCoordinator);
        }
        match self.offsets_partition(group) {
            Ok(p)
                if self
                    .loading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&(false, p.index)) =>
            {
                Some(ResponseError::CoordinatorLoadInProgress)
            }
            Ok(p) if p.leadership().leads => None,
            Ok(_) | Err(BrokerError::UnknownTopic) => Some(ResponseError::NotCoordinator),
            Err(_) => Some(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Why this broker may not coordinate transactional id `id` now, or `None` if it does.
    pub fn not_txn_coordinator(&self, id: &str) -> Option<ResponseError> {
        self.metadata.cluster()?;
        if self.self_fenced().is_some() {
            return Some(ResponseError::NotCoordinator);
        }
        let Some(topic) = self.image().topic(TXN_TOPIC).cloned() else {
            // Created by FindCoordinator first; until then nobody coordinates.
            return Some(ResponseError::NotCoordinator);
        };
        let index = group_store::partition_for(id, topic.partitions.len() as i32);
        match self.partitions.get(TXN_TOPIC, index) {
            _ if self
                .loading
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&(true, index)) =>
            {
                Some(ResponseError::CoordinatorLoadInProgress)
            }
            Some(p) if p.leadership().leads => None,
            _ => Some(ResponseError::NotCoordinator),
        }
    }

    /// Loads the transactions of `__transaction_state` partition `index` (this broker
    /// just became its leader), or forgets them (it stopped leading it).
    /// Returns false when the partition could not be read (its transactions stay unloaded).
    pub(super) fn txns_moved(&self, index: i32, partitions: i32, leads: bool) -> bool {
        let ours = |id: &str| group_store::partition_for(id, partitions) == index;
        self.txns.unload(&ours);
        if !leads {
            return true;
        }
        let Some(partition) = self.partitions.get(TXN_TOPIC, index) else {
            return true;
        };
        let mut records = Vec::new();
        if let Err(e) = replay_partition(&partition, |header, batch| {
            if !header.is_control() {
                records.extend(decode_internal(
                    TXN_TOPIC,
                    index,
                    header,
                    batch,
                    txn_store::decode,
                ));
            }
        }) {
            tracing::error!(partition = index, error = %e, "could not read the transaction partition to load it; its transactional ids are answered COORDINATOR_LOAD_IN_PROGRESS until its leadership moves or the broker restarts");
            return false;
        }
        let count = records.len();
        self.txns.load(records);
        tracing::info!(
            partition = index,
            records = count,
            "loaded the transactions of a partition this broker now leads"
        );
        // What the previous coordinator left half done (stored outcomes whose markers may
        // not all be written) is finished by the periodic transaction check.
        true
    }

    /// Writes a transaction marker to a partition this broker leads (WriteTxnMarkers from
    /// another broker's coordinator, or this one's).
    pub fn write_marker_here(
        &self,
        topic: &str,
        index: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<(), ResponseError> {
        let Some(partition) = self.partitions.get(topic, index) else {
            return Err(ResponseError::UnknownTopicOrPartition);
        };
        if !partition.leadership().leads {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let sync_all = partition.syncs_every_append();
        {
            let mut log = partition.log();
            match log.append_marker(producer_id, epoch, commit, coordinator_epoch, now_ms()) {
                Ok(info) => {
                    if info.flush_due || sync_all {
                        log.flush().map_err(|_| ResponseError::KafkaStorageError)?;
                    }
                }
                Err(e @ StorageError::Sequence(_)) => {
                    // A newer epoch of this producer already wrote here: nothing of this
                    // transaction can be open any more.
                    tracing::warn!(topic, partition = index, producer_id, error = %e, "marker from an older epoch skipped");
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(topic, partition = index, error = %e, "writing a transaction marker failed");
                    return Err(ResponseError::KafkaStorageError);
                }
            }
        }
        if topic == OFFSETS_TOPIC {
            self.complete_group_txn(index, producer_id, commit);
        }
        partition.wake_waiters();
        partition.update_high_watermark();
        Ok(())
    }

    /// The internal-topic partition that holds a group, or with `txn` a transactional
    /// id, if this broker has it.
    pub fn coordinator_partition(&self, key: &str, txn: bool) -> Option<Arc<Partition>> {
        let name = if txn { TXN_TOPIC } else { OFFSETS_TOPIC };
        let topic = self.image().topic(name)?.partitions.len() as i32;
        self.partitions
            .get(name, group_store::partition_for(key, topic))
    }

    /// Sends markers for the partitions led by other brokers, one WriteTxnMarkers request
    /// per leader.
    pub(super) fn write_remote_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        remote: BTreeMap<i32, Vec<(String, i32)>>,
    ) -> Result<(), MarkerError> {
        use kafka_protocol::messages::write_txn_markers_request::{
            WritableTxnMarker, WritableTxnMarkerTopic,
        };
        use kafka_protocol::messages::{
            ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
        };
        let image = self.image();
        let handle = tokio::runtime::Handle::try_current().map_err(|e| MarkerError::Send {
            broker: -1,
            reason: e.to_string(),
        })?;
        for (leader, partitions) in remote {
            let broker = image
                .broker(leader)
                .filter(|b| !b.fenced)
                .ok_or(MarkerError::BrokerUnavailable(leader))?;
            let peer = broker.clone();
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (t, p) in partitions {
                by_topic.entry(t).or_default().push(p);
            }
            let marker = WritableTxnMarker::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch)
                .with_transaction_result(commit)
                .with_coordinator_epoch(0)
                .with_topics(
                    by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            WritableTxnMarkerTopic::default()
                                .with_name(crate::wire::topic_name(&t))
                                .with_partition_indexes(ps)
                        })
                        .collect(),
                );
            let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
            let me = self.config.node_id;
            let response: WriteTxnMarkersResponse = tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let mut conn = crate::peer::Conn::connect(
                        &self.config,
                        &self.security,
                        &peer,
                        format!("gregor-txn-{me}"),
                    )
                    .await?;
                    conn.call(
                        kafka_protocol::messages::ApiKey::WriteTxnMarkers,
                        1,
                        &request,
                        std::time::Duration::from_secs(3),
                    )
                    .await
                })
            })
            .map_err(|e| MarkerError::Send {
                broker: leader,
                reason: format!("at {}:{}: {e}", peer.host, peer.port),
            })?;
            for m in response.markers {
                for t in m.topics {
                    for p in t.partitions {
                        if p.error_code != 0 {
                            return Err(MarkerError::Refused {
                                broker: leader,
                                topic: t.name.0.to_string(),
                                partition: p.partition_index,
                                code: ResponseError::try_from_code(p.error_code),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Loads the groups of `__consumer_offsets` partition `index` (this broker just became
    /// its leader), or forgets them (it stopped leading it).
    /// Returns false when the partition could not be read (its groups stay unloaded).
    pub(super) fn groups_moved(&self, index: i32, partitions: i32, leads: bool) -> bool {
        let ours = |g: &str| group_store::partition_for(g, partitions) == index;
        self.groups.unload(&ours);
        if !leads {
            tracing::info!(
                partition = index,
                "groups of this offsets partition moved to another coordinator"
            );
            return true;
        }
        let Some(partition) = self.partitions.get(OFFSETS_TOPIC, index) else {
            return true;
        };
        let replayed = self.load_offsets_partition(&partition, partitions);
        let count = match replayed {
            Ok(count) => count,
            Err(e) => {
                tracing::error!(partition = index, error = %e, "could not read the offsets partition to load its groups; they are answered COORDINATOR_LOAD_IN_PROGRESS until its leadership moves or the broker restarts");
                return false;
            }
        };
        tracing::info!(
            partition = index,
            records = count,
            "loaded the groups of an offsets partition this broker now leads"
        );
        true
    }

    /// A marker reached `__consumer_offsets` partition `index`: the producer's offsets
    /// pending in that partition's groups become committed, or are dropped.
    fn complete_group_txn(&self, index: i32, producer_id: i64, commit: bool) {
        let Some(meta) = self.image().topic(OFFSETS_TOPIC).cloned() else {
            return;
        };
        let partitions = meta.partitions.len() as i32;
        let ours = |g: &str| group_store::partition_for(g, partitions) == index;
        self.groups.complete_txn(producer_id, commit, &ours);
    }

    /// The `__consumer_offsets` partition that holds a group (created with the topic).
    pub(super) fn offsets_partition(&self, group: &str) -> Result<Arc<Partition>, BrokerError> {
        let topic = self.ensure_offsets_topic()?;
        let index = group_store::partition_for(group, topic.partitions.len() as i32);
        self.partitions
            .get(OFFSETS_TOPIC, index)
            .ok_or(BrokerError::UnknownTopic)
    }
}

/// Decodes the records of one batch of an internal topic with `decode`, skipping (with a
/// warning) what it does not recognise.
pub(super) fn decode_internal<T>(
    topic: &str,
    index: i32,
    header: &BatchHeader,
    batch: &[u8],
    decode: impl Fn(&[u8], Option<&[u8]>) -> Option<T>,
) -> Vec<T> {
    let decoded = match gregor_protocol::batch::decode_records(batch) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(topic, partition = index, offset = header.base_offset, error = %e, "skipping an undecodable batch of an internal topic");
            return Vec::new();
        }
    };
    decoded
        .into_iter()
        .filter_map(|r| {
            let found = r.key.as_deref().and_then(|k| decode(k, r.value.as_deref()));
            if found.is_none() {
                tracing::warn!(
                    topic,
                    partition = index,
                    offset = r.offset,
                    "skipping an internal record Gregor does not know"
                );
            }
            found
        })
        .collect()
}

/// Appends the broker's own (key, value) records to an internal partition as one batch,
/// transactional for `producer` when given, fsynced when the flush policy says so.
pub(super) fn append_internal(
    broker: &Broker,
    partition: &Partition,
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    producer: Option<(i64, i16)>,
) -> Result<(), AppendError> {
    let refs: Vec<gregor_protocol::batch::KeyValue> = records
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    let now = now_ms();
    let mut batch = gregor_protocol::batch::build_record_batch(now, &refs, false);
    if let Some((id, epoch)) = producer {
        gregor_protocol::batch::set_producer(&mut batch, id, epoch, true);
    }
    let header =
        gregor_protocol::batch::check_batch(&batch).map_err(|e| StorageError::Corrupt {
            path: PathBuf::from(format!("{}-{}", partition.topic, partition.index)),
            reason: e.to_string(),
        })?;
    let crate::state::Leadership {
        leads,
        leader_epoch,
        ..
    } = partition.leadership();
    if !leads {
        return Err(AppendError::NotCoordinator(format!(
            "this broker no longer leads {}-{}; the coordinator moved",
            partition.topic, partition.index
        )));
    }
    if let Some(reason) = broker.self_fenced() {
        return Err(AppendError::NotCoordinator(reason));
    }
    let sync_all = partition.syncs_every_append();
    {
        let mut log = partition.log();
        let info = log
            .append(&mut batch, &[(0, header)], leader_epoch, None, now)
            .map_err(|e| match e {
                StorageError::Sequence(_) => AppendError::ProducerFenced(e),
                StorageError::StaleEpoch { .. } => AppendError::NotCoordinator(e.to_string()),
                e => AppendError::Storage(e),
            })?;
        if info.flush_due || sync_all {
            log.flush()?;
        }
    }
    // The request handler waits for the in-sync replicas once it answered
    // (`coordinator_check::settle`), with no coordinator lock held.
    partition.wake_waiters();
    partition.update_high_watermark();
    Ok(())
}

/// Calls `f` with every batch of one partition, in log order.
pub(super) fn replay_partition(
    partition: &Partition,
    mut f: impl FnMut(&BatchHeader, &[u8]),
) -> Result<(), StorageError> {
    let log = partition.log();
    let mut offset = log.log_start();
    while offset < log.log_end() {
        let bytes = log.read(offset, 8 << 20, true)?.read()?;
        if bytes.is_empty() {
            break;
        }
        for (at, header) in gregor_protocol::batch::batches(&bytes) {
            offset = header.last_offset() + 1;
            f(&header, &bytes[at..at + header.total_bytes()]);
        }
    }
    Ok(())
}

impl TxnHost for Broker {
    fn persist_txn(
        &self,
        transactional_id: &str,
        meta: Option<&TxnMeta>,
    ) -> Result<(), AppendError> {
        let topic = self
            .ensure_txn_topic()
            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
        let index = group_store::partition_for(transactional_id, topic.partitions.len() as i32);
        let partition = self
            .partitions
            .get(TXN_TOPIC, index)
            .ok_or_else(|| AppendError::Unavailable(format!("{TXN_TOPIC}-{index} is not open")))?;
        let record = (txn_store::key(transactional_id), meta.map(txn_store::value));
        append_internal(self, &partition, &[record], None)
    }

    fn write_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: &std::collections::BTreeSet<(String, i32)>,
    ) -> Result<(), MarkerError> {
        let now = now_ms();
        if self.metadata.cluster().is_some() {
            // In a cluster each marker goes to the partition's leader, wherever it is.
            let image = self.image();
            let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            for (topic, index) in partitions {
                let Some(meta) = image
                    .topic(topic)
                    .and_then(|t| t.partitions.get(*index as usize))
                else {
                    tracing::warn!(topic = %topic, partition = index, producer_id, "no marker for a partition that no longer exists");
                    continue;
                };
                if meta.leader == self.config.node_id {
                    self.write_marker_here(topic, *index, producer_id, epoch, commit, 0)
                        .map_err(|code| MarkerError::Refused {
                            broker: self.config.node_id,
                            topic: topic.clone(),
                            partition: *index,
                            code: Some(code),
                        })?;
                } else if meta.leader < 0 {
                    return Err(MarkerError::NoLeader {
                        topic: topic.clone(),
                        partition: *index,
                    });
                } else {
                    remote
                        .entry(meta.leader)
                        .or_default()
                        .push((topic.clone(), *index));
                }
            }
            return self.write_remote_markers(producer_id, epoch, commit, remote);
        }
        for (topic, index) in partitions {
            let Some(partition) = self.partitions.get(topic, *index) else {
                tracing::warn!(topic = %topic, partition = index, producer_id, "no marker for a partition that no longer exists");
                continue;
            };
            let sync_all = partition.syncs_every_append();
            {
                let mut log = partition.log();
                match log.append_marker(producer_id, epoch, commit, 0, now) {
                    Ok(info) => {
                        if info.flush_due || sync_all {
                            log.flush().map_err(|error| MarkerError::Storage {
                                topic: topic.clone(),
                                partition: *index,
                                error,
                            })?;
                        }
                    }
                    Err(e @ StorageError::Sequence(_)) => {
                        // A newer epoch of this producer already wrote here: nothing of
                        // this transaction can be open any more.
                        tracing::warn!(topic = %topic, partition = index, producer_id, error = %e, "marker from an older epoch skipped");
                    }
                    Err(error) => {
                        return Err(MarkerError::Storage {
                            topic: topic.clone(),
                            partition: *index,
                            error,
                        })
                    }
                }
            }
            if topic == OFFSETS_TOPIC {
                self.complete_group_txn(*index, producer_id, commit);
            }
            partition.wake_waiters();
        }
        Ok(())
    }

    fn new_producer_id(&self) -> Result<i64, BrokerError> {
        block_on(self.allocate_producer_id()).and_then(|r| r)
    }

    fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        if self.metadata.cluster().is_some() {
            return self.image().has_partition(topic, partition);
        }
        self.partitions.get(topic, partition).is_some()
    }
}
