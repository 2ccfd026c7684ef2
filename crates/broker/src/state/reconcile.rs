//! The cluster's metadata images applied to this broker: its partitions opened, their
//! roles set, removed ones moved aside; and its standing with the controller.

use super::*;

impl Broker {
    /// Why this broker takes no writes now, if it does not: in a cluster, its last
    /// heartbeat the controller confirmed is older than `broker.session.timeout.ms`, so
    /// its leaderships may have moved (self-fencing). `None` on a single node.
    pub fn self_fenced(&self) -> Option<String> {
        let age = self.metadata.cluster()?.lease_expired()?;
        Some(if age == std::time::Duration::MAX {
            "this broker has not yet heard from the active controller; refresh metadata and retry"
                .into()
        } else {
            format!(
                "this broker's last heartbeat to the active controller was {} ms ago, past broker.session.timeout.ms: it may no longer lead; refresh metadata and retry",
                age.as_millis()
            )
        })
    }

    /// Whether this broker is part of a cluster.
    pub fn clustered(&self) -> Option<&Arc<ClusterNode>> {
        self.metadata.cluster()
    }

    /// Opens the partitions of `topic` this broker holds a replica of and has not opened.
    pub(super) fn open_local_replicas(&self, topic: &TopicMeta) -> Result<(), BrokerError> {
        let now = now_ms();
        for (index, meta) in topic.partitions.iter().enumerate() {
            if !meta.replicas.contains(&self.config.node_id) {
                continue;
            }
            let (partition, led_before) = match self.partitions.get(&topic.name, index as i32) {
                Some(p) if p.topic_id == topic.topic_id => {
                    let led = p.leadership().leads;
                    (p, Some(led))
                }
                _ => (self.open_partition(topic, index as i32)?, None),
            };
            // Leading a coordinator partition starts with loading its state: until that is
            // done its requests must not find the groups (or transactions) missing, so
            // the partition is marked before its leadership shows.
            let internal = match topic.name.as_str() {
                OFFSETS_TOPIC => Some(false),
                TXN_TOPIC => Some(true),
                _ => None,
            };
            let key = internal.map(|txn| (txn, index as i32));
            let may_load = self.metadata.cluster().is_some()
                && meta.leader == self.config.node_id
                && led_before != Some(true);
            if let (Some(key), true) = (key, may_load) {
                self.loading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
            }
            partition.set_role(meta, now);
            let leads = partition.leadership().leads;
            let moved = self.metadata.cluster().is_some()
                && led_before != Some(leads)
                && (leads || led_before == Some(true));
            let mut loaded = true;
            if moved && topic.name == OFFSETS_TOPIC {
                loaded = self.groups_moved(index as i32, topic.partitions.len() as i32, leads);
            }
            if moved && topic.name == TXN_TOPIC {
                loaded = self.txns_moved(index as i32, topic.partitions.len() as i32, leads);
            }
            // A partition that could not be read stays marked: its coordinator answers
            // "loading" rather than from state it does not have.
            if let (Some(key), true) = (key, loaded && (may_load || moved)) {
                self.loading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        }
        Ok(())
    }

    /// Joins a cluster: metadata from now on comes from `node`'s replicated log. Its
    /// images are applied by the caller once the node has caught up with that log
    /// ([`ClusterNode::caught_up`]).
    pub fn attach_cluster(&self, node: Arc<ClusterNode>) {
        self.metadata.attach(node);
    }

    /// Brings the partitions in line with `image`: opens the replicas assigned here,
    /// applies leaders, epochs and ISRs, applies changed topic configs, and removes the
    /// partitions of deleted topics.
    pub fn reconcile(&self, image: Arc<MetadataImage>) {
        let mut last = self
            .reconcile_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &image)) {
            return;
        }
        self.metadata.publish(image.clone());
        load_dynamic_configs(&self.config, &image);
        for topic in image.topics() {
            let configs_changed = last
                .as_ref()
                .and_then(|l| l.topic_by_id(&topic.topic_id))
                .is_some_and(|old| old.configs != topic.configs);
            if let Err(e) = self.open_local_replicas(topic) {
                tracing::error!(topic = %topic.name, error = %e, "could not open a partition assigned to this broker");
            }
            if configs_changed {
                self.reconfigure(topic);
            }
        }
        // Partitions of deleted topics, and replicas moved away from this broker.
        let me = self.config.node_id;
        let gone: Vec<Arc<Partition>> = self
            .partitions
            .all()
            .into_iter()
            .filter(|p| {
                image.topic_by_id(&p.topic_id).is_none_or(|t| {
                    t.partitions
                        .get(p.index as usize)
                        .is_none_or(|m| !m.replicas.contains(&me))
                })
            })
            .collect();
        if !gone.is_empty() {
            self.partitions.remove(gone);
        }
        *last = Some(image);
    }

    /// The node clients are told is the controller: the active one when it is a live
    /// broker, else this one (every broker forwards metadata changes to it anyway).
    pub fn controller_id(&self) -> i32 {
        self.metadata
            .cluster()
            .and_then(|n| n.leader())
            .map(|l| l as i32)
            .filter(|&l| self.image().broker_alive(l))
            .unwrap_or(self.config.node_id)
    }

    /// This cluster's id: the one in the replicated metadata in a cluster (never this
    /// data directory's own, which a broker of a cluster only has before it joins).
    pub fn cluster_id(&self) -> String {
        if let Some(id) = self.image().cluster_id() {
            return id.to_string();
        }
        self.clustered()
            .and_then(|n| n.image().cluster_id().map(str::to_string))
            .unwrap_or_else(|| self.cluster_id.clone())
    }
}
