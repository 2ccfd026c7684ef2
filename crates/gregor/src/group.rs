//! `gregor group list|describe`: consumer groups, their members and their lag, from any
//! Kafka-compatible broker.

use std::collections::BTreeMap;

use bytes::Buf;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    ListOffsetsRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;

use crate::client::Client;

/// One row of `describe`: a partition the group has an offset for or is assigned.
#[derive(Debug, Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Committed offset, or null when none is committed.
    pub committed_offset: Option<i64>,
    pub log_end_offset: i64,
    /// log end minus committed (the whole log end when nothing is committed).
    pub lag: i64,
    pub member_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol: String,
    pub members: usize,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Serialize)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    pub members: usize,
    pub lag: i64,
}

fn code(c: i16) -> String {
    kafka_protocol::error::ResponseError::try_from_code(c)
        .map_or_else(|| format!("error code {c}"), |e| format!("{e:?} ({c})"))
}

pub async fn describe(client: &mut Client, group: &str) -> Result<GroupDescription, String> {
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(StrBytes::from_string(group.to_string()))];
    let described = client.send(req, 5).await?;
    let g = described
        .groups
        .into_iter()
        .next()
        .ok_or("DescribeGroups returned no group")?;
    if g.error_code != 0 {
        return Err(format!(
            "cannot describe group {group}: {}",
            code(g.error_code)
        ));
    }
    // Who owns which partition.
    let mut owners: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
    for m in &g.members {
        let mut buf = m.member_assignment.clone();
        if buf.len() < 2 {
            continue;
        }
        let version = buf.get_i16();
        if let Ok(a) = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)) {
            for tp in a.assigned_partitions {
                for p in tp.partitions {
                    owners.insert(
                        (tp.topic.0.to_string(), p),
                        (
                            m.member_id.to_string(),
                            m.client_id.to_string(),
                            m.client_host.to_string(),
                        ),
                    );
                }
            }
        }
    }
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = GroupId(StrBytes::from_string(group.to_string()));
    fetch.topics = None;
    let fetched = client.send(fetch, 6).await?;
    if fetched.error_code != 0 {
        return Err(format!(
            "cannot fetch offsets of {group}: {}",
            code(fetched.error_code)
        ));
    }
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in fetched.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                committed.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    let mut keys: Vec<(String, i32)> = committed.keys().chain(owners.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let ends = log_ends(client, &keys).await?;
    let partitions = keys
        .into_iter()
        .map(|k| {
            let end = ends.get(&k).copied().unwrap_or(-1);
            let c = committed.get(&k).copied();
            let owner = owners.get(&k);
            PartitionLag {
                lag: (end - c.unwrap_or(0)).max(0),
                committed_offset: c,
                log_end_offset: end,
                member_id: owner.map(|o| o.0.clone()),
                client_id: owner.map(|o| o.1.clone()),
                host: owner.map(|o| o.2.clone()),
                topic: k.0,
                partition: k.1,
            }
        })
        .collect();
    Ok(GroupDescription {
        group: group.to_string(),
        state: g.group_state.to_string(),
        protocol: g.protocol_data.to_string(),
        members: g.members.len(),
        partitions,
    })
}

async fn log_ends(
    client: &mut Client,
    keys: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), i64>, String> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in keys {
        by_topic.entry(t).or_default().push(*p);
    }
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut topic = ListOffsetsTopic::default();
            topic.name = TopicName(StrBytes::from_string(t.to_string()));
            topic.partitions = ps
                .into_iter()
                .map(|p| {
                    let mut lp = ListOffsetsPartition::default();
                    lp.partition_index = p;
                    lp.timestamp = -1;
                    lp
                })
                .collect();
            topic
        })
        .collect();
    if req.topics.is_empty() {
        return Ok(BTreeMap::new());
    }
    let resp = client.send(req, 6).await?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code == 0 {
                out.insert((t.name.0.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(out)
}

pub async fn list(client: &mut Client) -> Result<Vec<GroupSummary>, String> {
    let listed = client.send(ListGroupsRequest::default(), 4).await?;
    if listed.error_code != 0 {
        return Err(format!("cannot list groups: {}", code(listed.error_code)));
    }
    let mut out = Vec::new();
    for g in listed.groups {
        let d = describe(client, &g.group_id.0).await?;
        out.push(GroupSummary {
            group: d.group,
            state: d.state,
            members: d.members,
            lag: d.partitions.iter().map(|p| p.lag).sum(),
        });
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(out)
}

/// Left-aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

pub fn print_describe(d: &GroupDescription) {
    println!(
        "group {} ({}, protocol {}, {} member{})",
        d.group,
        d.state,
        if d.protocol.is_empty() {
            "-"
        } else {
            &d.protocol
        },
        d.members,
        if d.members == 1 { "" } else { "s" }
    );
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.committed_offset.map_or_else(dash, |o| o.to_string()),
                p.log_end_offset.to_string(),
                p.lag.to_string(),
                p.member_id.clone().unwrap_or_else(dash),
                p.client_id.clone().unwrap_or_else(dash),
                p.host.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "LOG-END",
                "LAG",
                "MEMBER-ID",
                "CLIENT-ID",
                "HOST"
            ],
            &rows
        )
    );
}

pub fn print_list(groups: &[GroupSummary]) {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.state.clone(),
                g.members.to_string(),
                g.lag.to_string(),
            ]
        })
        .collect();
    println!("{}", table(&["GROUP", "STATE", "MEMBERS", "LAG"], &rows));
}
