//! `gregor topic create|list|describe|delete|alter-config|add-partitions`, against any
//! Kafka-compatible broker.

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
    ListOffsetsRequest, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::client::{code, Client, Cluster};
use crate::table::table;

const TIMEOUT_MS: i32 = 30_000;
const TOPIC_RESOURCE: i8 = 2;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Splits `K=V` settings given on the command line.
pub fn parse_settings(pairs: &[String], flag: &str) -> Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    format!("{flag} {p}: expected KEY=VALUE, e.g. {flag} retention.ms=86400000")
                })
        })
        .collect()
}

async fn controller(cluster: &mut Cluster) -> Result<&mut Client, String> {
    let id = cluster.controller;
    if id >= 0 && cluster.brokers.contains_key(&id) {
        cluster.broker(id).await
    } else {
        Ok(cluster.any())
    }
}

#[derive(Debug, Serialize)]
pub struct Created {
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// False when the topic existed and `--if-not-exists` was given.
    pub created: bool,
}

pub async fn create(
    cluster: &mut Cluster,
    topic: &str,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    configs: &[(String, String)],
    if_not_exists: bool,
) -> Result<Created, String> {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions.unwrap_or(-1);
    t.replication_factor = replication_factor.unwrap_or(-1);
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string(k.clone());
            c.value = Some(StrBytes::from_string(v.clone()));
            c
        })
        .collect();
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = TIMEOUT_MS;
    // v4+ lets the broker pick the partition count and replication factor (-1).
    let min = if partitions.is_none() || replication_factor.is_none() {
        4
    } else {
        2
    };
    let resp = controller(cluster).await?.call(req, min, 7).await?;
    let r = resp
        .topics
        .into_iter()
        .next()
        .ok_or("CreateTopics returned no topic")?;
    if r.error_code == 36 && if_not_exists {
        let d = describe(cluster, topic).await?;
        return Ok(Created {
            topic: topic.to_string(),
            partitions: d.partitions.len() as i32,
            replication_factor: d.replication_factor,
            created: false,
        });
    }
    if r.error_code != 0 {
        let hint = match r.error_code {
            36 => "; pass --if-not-exists to accept an existing topic",
            37 => "; give --partitions 1 or more",
            38 => "; --replication-factor cannot exceed the number of brokers",
            40 => "; see the settings in `gregor topic describe` or docs/configuration.md",
            _ => "",
        };
        return Err(format!(
            "cannot create topic '{topic}': {}{}{hint}",
            code(r.error_code),
            r.error_message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    Ok(Created {
        topic: topic.to_string(),
        partitions: if r.num_partitions > 0 {
            r.num_partitions
        } else {
            partitions.unwrap_or(-1)
        },
        replication_factor: if r.replication_factor > 0 {
            r.replication_factor
        } else {
            replication_factor.unwrap_or(-1)
        },
        created: true,
    })
}

#[derive(Debug, Serialize)]
pub struct TopicSummary {
    pub topic: String,
    pub partitions: usize,
    pub replication_factor: usize,
    pub internal: bool,
}

pub async fn list(cluster: &mut Cluster, internal: bool) -> Result<Vec<TopicSummary>, String> {
    let md = cluster.metadata(None).await?;
    let mut out: Vec<TopicSummary> = md
        .topics
        .into_iter()
        .filter(|t| internal || !t.is_internal)
        .map(|t| TopicSummary {
            topic: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
            partitions: t.partitions.len(),
            replication_factor: t.partitions.first().map_or(0, |p| p.replica_nodes.len()),
            internal: t.is_internal,
        })
        .collect();
    out.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(out)
}

pub fn print_list(topics: &[TopicSummary]) {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t.topic.clone(),
                t.partitions.to_string(),
                t.replication_factor.to_string(),
            ]
        })
        .collect();
    println!("{}", table(&["TOPIC", "PARTITIONS", "REPLICATION"], &rows));
}

#[derive(Debug, Serialize)]
pub struct PartitionInfo {
    pub partition: i32,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub log_start_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct TopicDescription {
    pub topic: String,
    pub internal: bool,
    pub replication_factor: i16,
    pub partitions: Vec<PartitionInfo>,
    /// Settings that differ from the defaults (the topic's own, or the broker's).
    pub configs: Vec<ConfigEntry>,
}

fn source_name(s: i8) -> &'static str {
    match s {
        1 => "topic",
        2 => "broker",
        3 => "broker-default",
        4 => "broker-file",
        5 => "default",
        _ => "unknown",
    }
}

pub async fn describe(cluster: &mut Cluster, topic: &str) -> Result<TopicDescription, String> {
    let t = cluster.topic(topic, "describe topic").await?;
    let mut partitions: Vec<PartitionInfo> = t
        .partitions
        .iter()
        .map(|p| PartitionInfo {
            partition: p.partition_index,
            leader: p.leader_id.0,
            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            log_start_offset: None,
            log_end_offset: None,
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    // Offsets from each partition's leader.
    let mut leaders: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    for p in &partitions {
        if p.leader >= 0 {
            leaders.entry(p.leader).or_default().push(p.partition);
        }
    }
    for (leader, ps) in leaders {
        for (ts, earliest) in [(-2i64, true), (-1, false)] {
            let offsets = list_offsets(cluster.broker(leader).await?, topic, &ps, ts).await?;
            for (p, o) in offsets {
                if let Some(info) = partitions.iter_mut().find(|i| i.partition == p) {
                    if earliest {
                        info.log_start_offset = Some(o);
                    } else {
                        info.log_end_offset = Some(o);
                    }
                }
            }
        }
    }
    let mut req = DescribeConfigsRequest::default();
    let mut res = DescribeConfigsResource::default();
    res.resource_type = TOPIC_RESOURCE;
    res.resource_name = StrBytes::from_string(topic.to_string());
    res.configuration_keys = None;
    req.resources = vec![res];
    let resp = cluster.any().call(req, 1, 4).await?;
    let mut configs = Vec::new();
    for r in resp.results {
        if r.error_code != 0 {
            return Err(format!(
                "cannot describe the settings of '{topic}': {}",
                code(r.error_code)
            ));
        }
        for c in r.configs {
            if c.config_source != 5 && c.config_source != -1 {
                configs.push(ConfigEntry {
                    name: c.name.to_string(),
                    value: if c.is_sensitive {
                        None
                    } else {
                        c.value.map(|v| v.to_string())
                    },
                    source: source_name(c.config_source).to_string(),
                });
            }
        }
    }
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(TopicDescription {
        topic: topic.to_string(),
        internal: t.is_internal,
        replication_factor: partitions.first().map_or(0, |p| p.replicas.len() as i16),
        partitions,
        configs,
    })
}

/// Offsets of `partitions` of `topic` at `timestamp` (-1 latest, -2 earliest, else the
/// first offset at or after a time in ms), from their leader.
pub async fn list_offsets(
    leader: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<Vec<(i32, i64)>, String> {
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    let mut t = ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions = partitions
        .iter()
        .map(|&p| {
            let mut lp = ListOffsetsPartition::default();
            lp.partition_index = p;
            lp.timestamp = timestamp;
            lp.current_leader_epoch = -1;
            lp
        })
        .collect();
    req.topics = vec![t];
    let resp = leader.call(req, 1, 7).await?;
    let mut out = Vec::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(format!(
                    "cannot list offsets of {topic}-{}: {}",
                    p.partition_index,
                    code(p.error_code)
                ));
            }
            out.push((p.partition_index, p.offset));
        }
    }
    Ok(out)
}

pub fn print_describe(d: &TopicDescription) {
    println!(
        "topic {}{}: {} partition{}, replication factor {}",
        d.topic,
        if d.internal { " (internal)" } else { "" },
        d.partitions.len(),
        if d.partitions.len() == 1 { "" } else { "s" },
        d.replication_factor
    );
    let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let opt = |o: Option<i64>| o.map_or("-".to_string(), |v| v.to_string());
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                if p.leader < 0 {
                    "none".to_string()
                } else {
                    p.leader.to_string()
                },
                list(&p.replicas),
                list(&p.isr),
                opt(p.log_start_offset),
                opt(p.log_end_offset),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "LOG-START",
                "LOG-END"
            ],
            &rows
        )
    );
    if !d.configs.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = d
            .configs
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.value.clone().unwrap_or_else(|| "(sensitive)".into()),
                    c.source.clone(),
                ]
            })
            .collect();
        println!("{}", table(&["SETTING", "VALUE", "SOURCE"], &rows));
    }
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    pub topic: String,
    pub deleted: bool,
}

pub async fn delete(
    cluster: &mut Cluster,
    topics: &[String],
    if_exists: bool,
) -> Result<Vec<Deleted>, String> {
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = topics.iter().map(|t| name(t)).collect();
    req.timeout_ms = TIMEOUT_MS;
    let v = controller(cluster)
        .await?
        .version::<DeleteTopicsRequest>(1, 6)?;
    if v >= 6 {
        req.topics = topics
            .iter()
            .map(|t| {
                let mut s =
                    kafka_protocol::messages::delete_topics_request::DeleteTopicState::default();
                s.name = Some(name(t));
                s
            })
            .collect();
    }
    let resp = controller(cluster).await?.send(req, v).await?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for r in resp.responses {
        let topic = r.name.map(|n| n.0.to_string()).unwrap_or_default();
        if r.error_code == 3 && if_exists {
            out.push(Deleted {
                topic,
                deleted: false,
            });
            continue;
        }
        if r.error_code != 0 {
            let hint = if r.error_code == 3 {
                "; pass --if-exists to accept a missing topic"
            } else {
                ""
            };
            errors.push(format!(
                "cannot delete topic '{topic}': {}{hint}",
                code(r.error_code)
            ));
            continue;
        }
        out.push(Deleted {
            topic,
            deleted: true,
        });
    }
    if !errors.is_empty() {
        let done: Vec<&str> = out
            .iter()
            .filter(|d| d.deleted)
            .map(|d| d.topic.as_str())
            .collect();
        if !done.is_empty() {
            errors.insert(0, format!("deleted {}", done.join(", ")));
        }
        return Err(errors.join("; "));
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct Altered {
    pub topic: String,
    pub set: Vec<(String, String)>,
    pub deleted: Vec<String>,
}

pub async fn alter_config(
    cluster: &mut Cluster,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<Altered, String> {
    if set.is_empty() && delete.is_empty() {
        return Err("nothing to change: give --set KEY=VALUE or --delete KEY".into());
    }
    let mut res = AlterConfigsResource::default();
    res.resource_type = TOPIC_RESOURCE;
    res.resource_name = StrBytes::from_string(topic.to_string());
    for (k, v) in set {
        let mut c = AlterableConfig::default();
        c.name = StrBytes::from_string(k.clone());
        c.config_operation = 0; // SET
        c.value = Some(StrBytes::from_string(v.clone()));
        res.configs.push(c);
    }
    for k in delete {
        let mut c = AlterableConfig::default();
        c.name = StrBytes::from_string(k.clone());
        c.config_operation = 1; // DELETE
        res.configs.push(c);
    }
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res];
    let resp = cluster.any().call(req, 0, 1).await?;
    for r in resp.responses {
        if r.error_code != 0 {
            return Err(format!(
                "cannot change the settings of '{topic}': {}{}",
                code(r.error_code),
                r.error_message
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(Altered {
        topic: topic.to_string(),
        set: set.to_vec(),
        deleted: delete.to_vec(),
    })
}

#[derive(Debug, Serialize)]
pub struct Grown {
    pub topic: String,
    pub partitions: i32,
}

pub async fn add_partitions(
    cluster: &mut Cluster,
    topic: &str,
    total: i32,
) -> Result<Grown, String> {
    let mut t = CreatePartitionsTopic::default();
    t.name = name(topic);
    t.count = total;
    t.assignments = None;
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = TIMEOUT_MS;
    let resp = controller(cluster).await?.call(req, 0, 3).await?;
    for r in resp.results {
        if r.error_code != 0 {
            return Err(format!(
                "cannot grow '{topic}' to {total} partitions: {}{}",
                code(r.error_code),
                r.error_message
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(Grown {
        topic: topic.to_string(),
        partitions: total,
    })
}

#[derive(Serialize)]
pub struct Reassigned {
    pub topic: String,
    pub partition: i32,
    /// `None`: the move was cancelled.
    pub replicas: Option<Vec<i32>>,
    /// Whether the command waited for the move to finish.
    pub complete: bool,
}

/// Starts moving a partition to `target`, or cancels its move (`None`).
pub async fn reassign(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
) -> Result<(), String> {
    let mut p = ReassignablePartition::default();
    p.partition_index = partition;
    p.replicas = target.map(|t| t.into_iter().map(BrokerId).collect());
    let mut t = ReassignableTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut req = AlterPartitionReassignmentsRequest::default();
    req.timeout_ms = TIMEOUT_MS;
    req.allow_replication_factor_change = true;
    req.topics = vec![t];
    let resp = controller(cluster).await?.call(req, 0, 1).await?;
    if resp.error_code != 0 {
        return Err(format!("reassignment refused: {}", code(resp.error_code)));
    }
    for t in resp.responses {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(format!(
                    "cannot move {topic}-{partition}: {}{}",
                    code(p.error_code),
                    p.error_message
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// The moves in progress of `topic`.
pub async fn reassignments(cluster: &mut Cluster, topic: &str) -> Result<Vec<Move>, String> {
    let mut t = ListPartitionReassignmentsTopics::default();
    t.name = name(topic);
    let partitions = cluster
        .topic(topic, "list its moves")
        .await?
        .partitions
        .len() as i32;
    t.partition_indexes = (0..partitions).collect();
    let mut req = ListPartitionReassignmentsRequest::default();
    req.timeout_ms = TIMEOUT_MS;
    req.topics = Some(vec![t]);
    let resp = controller(cluster).await?.call(req, 0, 0).await?;
    if resp.error_code != 0 {
        return Err(format!("cannot list moves: {}", code(resp.error_code)));
    }
    let ids = |v: Vec<BrokerId>| v.into_iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(resp
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.into_iter().map(move |p| Move {
                topic: name.clone(),
                partition: p.partition_index,
                replicas: ids(p.replicas),
                adding: ids(p.adding_replicas),
                removing: ids(p.removing_replicas),
            })
        })
        .collect())
}

pub fn print_reassignments(moves: &[Move]) {
    if moves.is_empty() {
        println!("no moves in progress");
        return;
    }
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| {
            vec![
                m.topic.clone(),
                m.partition.to_string(),
                format!("{:?}", m.replicas),
                format!("{:?}", m.adding),
                format!("{:?}", m.removing),
            ]
        })
        .collect();
    table(
        &["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
        &rows,
    );
}

/// Waits until `topic`-`partition` has no move in progress, printing progress now and then.
pub async fn wait_reassigned(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut last_note = started;
    loop {
        let moves = reassignments(cluster, topic).await?;
        if !moves.iter().any(|m| m.partition == partition) {
            return Ok(());
        }
        if last_note.elapsed() >= std::time::Duration::from_secs(5) {
            last_note = std::time::Instant::now();
            eprintln!(
                "{topic}-{partition}: still copying after {} s (new replicas join once they catch up)",
                started.elapsed().as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
