//! Metadata records and the in-memory image they build.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One change to cluster metadata. Records are applied in log order; applying the same
/// sequence always gives the same image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A topic comes into being with its dynamic configs.
    Topic {
        name: String,
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A partition of a topic, with its replicas, leader and in-sync replicas (absent in
    /// logs written before replication: then every replica is in sync). A leader of -1
    /// means none is available.
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isr: Option<Vec<i32>>,
    },
    /// A broker joined (or changed its address): where clients and peers reach it.
    RegisterBroker {
        node_id: i32,
        host: String,
        port: i32,
        #[serde(default)]
        rack: Option<String>,
        /// Every named listener's advertised address: (listener name, host, port).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        endpoints: Vec<(String, String, i32)>,
        /// The broker process's incarnation (new at every start); 0 in records written
        /// before it was kept. A different one at a heartbeat means the broker restarted.
        #[serde(default, skip_serializing_if = "is_zero")]
        incarnation: u64,
    },
    /// A broker stopped heartbeating (`fenced`) or came back. A fenced broker leads
    /// nothing and is listed nowhere.
    FenceBroker { node_id: i32, fenced: bool },
    /// Several records applied as one: all of them or, on a torn write, none.
    Batch { records: Vec<MetadataRecord> },
    /// The cluster's id, written once by the first active controller.
    ClusterId { cluster_id: String },
    /// A partition's replicas are being moved to `target` (from `original`); `None` ends
    /// the move (done or cancelled).
    Reassign {
        topic_id: Uuid,
        partition: i32,
        target: Option<Vec<i32>>,
        #[serde(default)]
        original: Vec<i32>,
    },
    /// A topic and all its partitions are gone.
    RemoveTopic { topic_id: Uuid },
    /// Dynamic broker configs for `resource` ("" for the cluster-wide default, or a node id),
    /// replaced as a whole.
    BrokerConfig {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    /// A topic's dynamic configs, replaced as a whole.
    TopicConfig {
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `next_block_start` have been handed out (in blocks, as Kafka's
    /// AllocateProducerIds does), so a restarted broker never reuses one.
    ProducerIds { next_block_start: i64 },
    /// A user's SCRAM credential for one mechanism, replacing any earlier one. Only the
    /// salted keys are kept (RFC 5802), never the password.
    ScramCredential {
        user: String,
        mechanism: String,
        credential: ScramCredentialMeta,
    },
    /// A user's credential for one mechanism is removed.
    RemoveScramCredential { user: String, mechanism: String },
    /// An access-control entry is added (adding one that exists changes nothing).
    CreateAcl { acl: AclBinding },
    /// An access-control entry is removed.
    RemoveAcl { acl: AclBinding },
    /// A client quota of an entity is set (`value`, a number as text) or removed (`None`),
    /// as Kafka's ClientQuotaRecord.
    ClientQuota {
        entity: QuotaEntity,
        key: String,
        value: Option<String>,
    },
}

/// What a client quota applies to, as Kafka's entity: a user, a client id, or both; in
/// each, `Some(None)` is the `<default>` of that type and `None` means the type is not
/// part of the entity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Option<String>>,
}

impl QuotaEntity {
    /// The key the image keeps it under (JSON object keys are strings).
    fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What the broker keeps of a SCRAM password (RFC 5802 §3), base64-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentialMeta {
    pub salt: String,
    pub stored_key: String,
    pub server_key: String,
    pub iterations: u32,
}

/// One ACL as Kafka's CreateAcls carries it; the codes are Kafka's (resource type 2 topic,
/// 3 group, 4 cluster, 5 transactional id; pattern 3 literal, 4 prefixed; permission 2
/// deny, 3 allow; operations 2 all to 12 idempotent write).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// A move in progress: the replicas it ends with, and those it started from.
    #[serde(default)]
    pub reassignment: Option<(Vec<i32>, Vec<i32>)>,
}

/// A broker as registered with the controllers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
    /// Every named listener's advertised address: (listener name, host, port); empty for
    /// a broker registered before listeners had names (then `host`/`port` serve all).
    #[serde(default)]
    pub endpoints: Vec<(String, String, i32)>,
    /// The incarnation it registered with (see `MetadataRecord::RegisterBroker`).
    #[serde(default)]
    pub incarnation: u64,
}

impl BrokerMeta {
    /// Where to reach this broker on the listener `name`: that listener's address if it
    /// registered one, else its first address.
    pub fn endpoint(&self, name: &str) -> (&str, i32) {
        self.endpoints
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or((self.host.as_str(), self.port), |(_, h, p)| {
                (h.as_str(), *p)
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub topic_id: Uuid,
    pub configs: BTreeMap<String, String>,
    /// Indexed by partition id; partitions are numbered 0..n without gaps.
    pub partitions: Vec<PartitionMeta>,
}

/// The current state of cluster metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    topics: BTreeMap<String, TopicMeta>,
    names_by_id: HashMap<Uuid, String>,
    next_producer_id_block: i64,
    broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    brokers: BTreeMap<i32, BrokerMeta>,
    #[serde(default)]
    cluster_id: Option<String>,
    /// SCRAM credentials by user, then mechanism (string keys: the image is JSON in
    /// snapshots).
    #[serde(default)]
    scram: BTreeMap<String, BTreeMap<String, ScramCredentialMeta>>,
    #[serde(default)]
    acls: std::collections::BTreeSet<AclBinding>,
    /// Client quotas: the entity (JSON, [`QuotaEntity::key`]) and its values by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    quotas: BTreeMap<String, (QuotaEntity, BTreeMap<String, String>)>,
}

impl MetadataImage {
    /// Applies one record. Records that refer to unknown topics are ignored with a log line:
    /// a valid log never has them, and a replayed log must not stop the broker.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Topic {
                name,
                topic_id,
                configs,
            } => {
                if self
                    .topics
                    .get(name)
                    .is_some_and(|t| t.topic_id != *topic_id)
                {
                    // Two creators raced through different controllers: the first wins.
                    tracing::warn!(topic = %name, "second creation of a topic ignored");
                    return;
                }
                self.names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        topic_id: *topic_id,
                        configs: configs.clone(),
                        partitions: Vec::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                leader,
                leader_epoch,
                isr,
            } => {
                let Some(topic) = self
                    .names_by_id
                    .get(topic_id)
                    .and_then(|n| self.topics.get_mut(n))
                else {
                    tracing::warn!(%topic_id, partition, "partition record for an unknown topic ignored");
                    return;
                };
                let mut meta = PartitionMeta {
                    replicas: replicas.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    isr: isr.clone().unwrap_or_else(|| replicas.clone()),
                    reassignment: None,
                };
                let index = *partition as usize;
                if index < topic.partitions.len() {
                    // A leader or ISR change leaves a move in progress as it is.
                    meta.reassignment = topic.partitions[index].reassignment.take();
                    topic.partitions[index] = meta;
                } else if index == topic.partitions.len() {
                    topic.partitions.push(meta);
                } else {
                    tracing::warn!(%topic_id, partition, "partition record out of sequence ignored");
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(name) = self.names_by_id.remove(topic_id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::TopicConfig { topic_id, configs } => {
                match self
                    .names_by_id
                    .get(topic_id)
                    .and_then(|n| self.topics.get_mut(n))
                {
                    Some(topic) => topic.configs = configs.clone(),
                    None => tracing::warn!(%topic_id, "config record for an unknown topic ignored"),
                }
            }
            MetadataRecord::BrokerConfig { resource, configs } => {
                self.broker_configs
                    .insert(resource.clone(), configs.clone());
            }
            MetadataRecord::ProducerIds { next_block_start } => {
                self.next_producer_id_block = self.next_producer_id_block.max(*next_block_start);
            }
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                rack,
                endpoints,
                incarnation,
            } => {
                self.brokers.insert(
                    *node_id,
                    BrokerMeta {
                        node_id: *node_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        fenced: false,
                        endpoints: endpoints.clone(),
                        incarnation: *incarnation,
                    },
                );
            }
            MetadataRecord::FenceBroker { node_id, fenced } => {
                if let Some(b) = self.brokers.get_mut(node_id) {
                    b.fenced = *fenced;
                }
            }
            MetadataRecord::Batch { records } => {
                for r in records {
                    self.apply(r);
                }
            }
            MetadataRecord::ClusterId { cluster_id } => {
                self.cluster_id.get_or_insert_with(|| cluster_id.clone());
            }
            MetadataRecord::ScramCredential {
                user,
                mechanism,
                credential,
            } => {
                self.scram
                    .entry(user.clone())
                    .or_default()
                    .insert(mechanism.clone(), credential.clone());
            }
            MetadataRecord::RemoveScramCredential { user, mechanism } => {
                if let Some(m) = self.scram.get_mut(user) {
                    m.remove(mechanism);
                    if m.is_empty() {
                        self.scram.remove(user);
                    }
                }
            }
            MetadataRecord::CreateAcl { acl } => {
                self.acls.insert(acl.clone());
            }
            MetadataRecord::RemoveAcl { acl } => {
                self.acls.remove(acl);
            }
            MetadataRecord::ClientQuota { entity, key, value } => {
                self.apply_quota(entity, key, value.as_deref())
            }
            MetadataRecord::Reassign {
                topic_id,
                partition,
                target,
                original,
            } => {
                let meta = self
                    .names_by_id
                    .get(topic_id)
                    .and_then(|n| self.topics.get_mut(n))
                    .and_then(|t| t.partitions.get_mut((*partition).max(0) as usize));
                match meta {
                    Some(m) => m.reassignment = target.clone().map(|t| (t, original.clone())),
                    None => {
                        tracing::warn!(%topic_id, partition, "reassignment of an unknown partition ignored")
                    }
                }
            }
        }
    }

    /// A user's SCRAM credential for a mechanism ("SCRAM-SHA-256", "SCRAM-SHA-512").
    fn apply_quota(&mut self, entity: &QuotaEntity, key: &str, value: Option<&str>) {
        let id = entity.key();
        match value {
            Some(v) => {
                self.quotas
                    .entry(id)
                    .or_insert_with(|| (entity.clone(), BTreeMap::new()))
                    .1
                    .insert(key.to_string(), v.to_string());
            }
            None => {
                if let Some((_, values)) = self.quotas.get_mut(&id) {
                    values.remove(key);
                    if values.is_empty() {
                        self.quotas.remove(&id);
                    }
                }
            }
        }
    }

    /// Every entity with client quotas, and its values (numbers as text) by key.
    pub fn client_quotas(&self) -> impl Iterator<Item = (&QuotaEntity, &BTreeMap<String, String>)> {
        self.quotas.values().map(|(e, v)| (e, v))
    }

    pub fn scram_credential(&self, user: &str, mechanism: &str) -> Option<&ScramCredentialMeta> {
        self.scram.get(user)?.get(mechanism)
    }

    /// Every user with SCRAM credentials, with their credentials by mechanism.
    pub fn scram_users(
        &self,
    ) -> impl Iterator<Item = (&String, &BTreeMap<String, ScramCredentialMeta>)> {
        self.scram.iter()
    }

    /// Every ACL, in a stable order.
    pub fn acls(&self) -> impl Iterator<Item = &AclBinding> {
        self.acls.iter()
    }

    /// The cluster's id, once a controller wrote it.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Every registered broker, fenced or not, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values()
    }

    pub fn broker(&self, node_id: i32) -> Option<&BrokerMeta> {
        self.brokers.get(&node_id)
    }

    /// Whether `node_id` is registered and not fenced.
    pub fn broker_alive(&self, node_id: i32) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// Dynamic broker configs of `resource` ("" for the cluster default, or a node id).
    pub fn broker_configs(&self, resource: &str) -> BTreeMap<String, String> {
        self.broker_configs
            .get(resource)
            .cloned()
            .unwrap_or_default()
    }

    /// The first producer id not yet handed out in any block.
    pub fn next_producer_id_block(&self) -> i64 {
        self.next_producer_id_block
    }

    /// Whether the image has partition `partition` of topic `topic`.
    pub fn has_partition(&self, topic: &str, partition: i32) -> bool {
        self.topic(topic)
            .is_some_and(|t| partition >= 0 && (partition as usize) < t.partitions.len())
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.names_by_id.get(id).and_then(|n| self.topics.get(n))
    }
    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_build_topics_and_removal_forgets_them() {
        let id = Uuid::new_v4();
        let mut image = MetadataImage::default();
        image.apply(&MetadataRecord::Topic {
            name: "t".into(),
            topic_id: id,
            configs: BTreeMap::new(),
        });
        for p in 0..3 {
            image.apply(&MetadataRecord::Partition {
                topic_id: id,
                partition: p,
                replicas: vec![0],
                leader: 0,
                leader_epoch: 0,
                isr: None,
            });
        }
        assert_eq!(image.topic("t").map(|t| t.partitions.len()), Some(3));
        assert_eq!(image.topic_by_id(&id).map(|t| t.name.as_str()), Some("t"));
        image.apply(&MetadataRecord::Partition {
            topic_id: id,
            partition: 9,
            replicas: vec![0],
            leader: 0,
            leader_epoch: 0,
            isr: None,
        });
        assert_eq!(image.topic("t").map(|t| t.partitions.len()), Some(3));
        image.apply(&MetadataRecord::RemoveTopic { topic_id: id });
        assert!(image.topic("t").is_none() && image.topic_by_id(&id).is_none());
    }
}
