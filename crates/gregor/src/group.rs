//! `gregor group list|describe`: consumer groups, their members and their lag, from any
//! Kafka-compatible broker.

use std::collections::BTreeMap;

use bytes::Buf;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde::Serialize;

use crate::client::{code, Client, Cluster};
use crate::table::table;

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

async fn describe_group(
    cluster: &mut Cluster,
    group: &str,
) -> Result<kafka_protocol::messages::describe_groups_response::DescribedGroup, String> {
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(StrBytes::from_string(group.to_string()))];
    let described = cluster.coordinator(group, 0).await?.call(req, 0, 5).await?;
    described
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| "DescribeGroups returned no group".to_string())
}

pub async fn describe(cluster: &mut Cluster, group: &str) -> Result<GroupDescription, String> {
    let g = describe_group(cluster, group).await?;
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
    let committed = all_committed(cluster, group).await?;
    let mut keys: Vec<(String, i32)> = committed.keys().chain(owners.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let ends = log_ends(cluster, &keys).await?;
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

/// Log end offsets of `keys`, each from its partition's leader.
async fn log_ends(
    cluster: &mut Cluster,
    keys: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), i64>, String> {
    let topics: Vec<String> = keys
        .iter()
        .map(|k| k.0.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut leader_of: BTreeMap<(String, i32), i32> = BTreeMap::new();
    if !topics.is_empty() {
        for t in cluster.metadata(Some(&topics)).await?.topics {
            let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
            for p in t.partitions {
                leader_of.insert((name.clone(), p.partition_index), p.leader_id.0);
            }
        }
    }
    let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    for k in keys {
        if let Some(&l) = leader_of.get(k) {
            if l >= 0 {
                by_leader.entry(l).or_default().push(k.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (leader, keys) in by_leader {
        out.extend(log_ends_from(cluster.broker(leader).await?, &keys).await?);
    }
    Ok(out)
}

async fn log_ends_from(
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
    let resp = client.call(req, 1, 7).await?;
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

pub async fn list(cluster: &mut Cluster) -> Result<Vec<GroupSummary>, String> {
    // Every broker lists the groups it coordinates.
    let mut ids = std::collections::BTreeSet::new();
    let brokers: Vec<i32> = cluster.brokers.keys().copied().collect();
    for b in brokers {
        let listed = cluster
            .broker(b)
            .await?
            .call(ListGroupsRequest::default(), 0, 4)
            .await?;
        if listed.error_code != 0 {
            return Err(format!(
                "cannot list groups on broker {b}: {}",
                code(listed.error_code)
            ));
        }
        ids.extend(listed.groups.into_iter().map(|g| g.group_id.0.to_string()));
    }
    let mut out = Vec::new();
    for g in ids {
        let d = describe(cluster, &g).await?;
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

/// Every offset `group` has committed, by topic and partition.
pub async fn all_committed(
    cluster: &mut Cluster,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, String> {
    fetch_committed(cluster, group, None).await
}

/// The offsets `group` has committed for these `partitions` of `topic`.
pub async fn committed(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, String> {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_indexes = partitions.to_vec();
    Ok(fetch_committed(cluster, group, Some(vec![t]))
        .await?
        .into_iter()
        .filter(|((t, _), _)| t == topic)
        .map(|((_, p), o)| (p, o))
        .collect())
}

/// OffsetFetch for `topics` (all with `None`).
async fn fetch_committed(
    cluster: &mut Cluster,
    group: &str,
    topics: Option<Vec<OffsetFetchRequestTopic>>,
) -> Result<BTreeMap<(String, i32), i64>, String> {
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = GroupId(StrBytes::from_string(group.to_string()));
    fetch.topics = topics;
    let fetched = cluster
        .coordinator(group, 0)
        .await?
        .call(fetch, 2, 7)
        .await?;
    if fetched.error_code != 0 {
        return Err(format!(
            "cannot fetch the offsets of group '{group}': {}",
            code(fetched.error_code)
        ));
    }
    let mut out = BTreeMap::new();
    for t in fetched.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group`: as a member (generation and member id) or, with
/// generation -1, as an admin for a group with no members.
pub async fn commit(
    cluster: &mut Cluster,
    group: &str,
    generation: i32,
    member: &str,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<(), String> {
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        by_topic.entry(t).or_default().push((*p, *o));
    }
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(StrBytes::from_string(group.to_string()));
    req.generation_id_or_member_epoch = generation;
    req.member_id = StrBytes::from_string(member.to_string());
    req.retention_time_ms = -1;
    req.topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            let mut topic = OffsetCommitRequestTopic::default();
            topic.name = TopicName(StrBytes::from_string(t.to_string()));
            topic.partitions = ps
                .into_iter()
                .map(|(p, o)| {
                    let mut cp = OffsetCommitRequestPartition::default();
                    cp.partition_index = p;
                    cp.committed_offset = o;
                    cp.committed_leader_epoch = -1;
                    cp
                })
                .collect();
            topic
        })
        .collect();
    let resp = cluster.coordinator(group, 0).await?.call(req, 2, 8).await?;
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                let hint = if p.error_code == 25 || p.error_code == 22 {
                    "; the group has active members: stop them first"
                } else {
                    ""
                };
                return Err(format!(
                    "cannot commit the offset of {}-{} for group '{group}': {}{hint}",
                    t.name.0,
                    p.partition_index,
                    code(p.error_code)
                ));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct GroupDeleted {
    pub group: String,
}

pub async fn delete(cluster: &mut Cluster, groups: &[String]) -> Result<Vec<GroupDeleted>, String> {
    let mut out = Vec::new();
    for g in groups {
        let mut req = DeleteGroupsRequest::default();
        req.groups_names = vec![GroupId(StrBytes::from_string(g.clone()))];
        let resp = cluster.coordinator(g, 0).await?.call(req, 0, 2).await?;
        for r in resp.results {
            if r.error_code != 0 {
                let hint = match r.error_code {
                    68 => "; it has active members: stop them first",
                    69 => "; `gregor group list` shows the groups there are",
                    _ => "",
                };
                return Err(format!(
                    "cannot delete group '{g}': {}{hint}",
                    code(r.error_code)
                ));
            }
        }
        out.push(GroupDeleted { group: g.clone() });
    }
    Ok(out)
}

/// Where `reset-offsets` moves a group's offsets.
#[derive(Debug, Clone, Copy)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    /// The first offset at or after a time (ms since the epoch).
    Datetime(i64),
    ShiftBy(i64),
}

#[derive(Debug, Serialize)]
pub struct ResetRow {
    pub topic: String,
    pub partition: i32,
    pub current_offset: Option<i64>,
    pub new_offset: i64,
}

#[derive(Debug, Serialize)]
pub struct ResetPlan {
    pub group: String,
    pub dry_run: bool,
    pub partitions: Vec<ResetRow>,
}

/// Plans (and unless `dry_run`, commits) new offsets for `group` on `topic`.
pub async fn reset_offsets(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    partitions: &[i32],
    to: ResetTo,
    dry_run: bool,
) -> Result<ResetPlan, String> {
    let t = cluster.topic(topic, "reset offsets on").await?;
    let mut leaders: BTreeMap<i32, i32> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    if !partitions.is_empty() {
        for p in partitions {
            if !leaders.contains_key(p) {
                return Err(format!(
                    "--partition {p}: '{topic}' has partitions 0 to {}",
                    leaders.len() as i32 - 1
                ));
            }
        }
        leaders.retain(|p, _| partitions.contains(p));
    }
    if !dry_run {
        ensure_inactive(cluster, group).await?;
    }
    let wanted: Vec<i32> = leaders.keys().copied().collect();
    let current = committed(cluster, group, topic, &wanted).await?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (p, l) in &leaders {
        by_leader.entry(*l).or_default().push(*p);
    }
    let mut rows = Vec::new();
    for (leader, ps) in by_leader {
        if leader < 0 {
            return Err(format!(
                "partitions {ps:?} of '{topic}' have no leader; `gregor cluster status` shows why"
            ));
        }
        let client = cluster.broker(leader).await?;
        let starts: BTreeMap<i32, i64> = crate::topic::list_offsets(client, topic, &ps, -2)
            .await?
            .into_iter()
            .collect();
        let ends: BTreeMap<i32, i64> = crate::topic::list_offsets(client, topic, &ps, -1)
            .await?
            .into_iter()
            .collect();
        let at_time: BTreeMap<i32, i64> = match to {
            ResetTo::Datetime(ms) => crate::topic::list_offsets(client, topic, &ps, ms)
                .await?
                .into_iter()
                .collect(),
            _ => BTreeMap::new(),
        };
        for p in ps {
            let (lo, hi) = (
                starts.get(&p).copied().unwrap_or(0),
                ends.get(&p).copied().unwrap_or(0),
            );
            let cur = current.get(&p).copied();
            let target = match to {
                ResetTo::Earliest => lo,
                ResetTo::Latest => hi,
                ResetTo::Offset(o) => o,
                // No record at or after the time: the end, as Kafka's tool does.
                ResetTo::Datetime(_) => at_time.get(&p).copied().filter(|o| *o >= 0).unwrap_or(hi),
                ResetTo::ShiftBy(n) => cur.unwrap_or(lo).saturating_add(n),
            };
            rows.push(ResetRow {
                topic: topic.to_string(),
                partition: p,
                current_offset: cur,
                new_offset: target.clamp(lo, hi),
            });
        }
    }
    rows.sort_by_key(|r| r.partition);
    if !dry_run {
        let offsets: BTreeMap<(String, i32), i64> = rows
            .iter()
            .map(|r| ((r.topic.clone(), r.partition), r.new_offset))
            .collect();
        commit(cluster, group, -1, "", &offsets).await?;
    }
    Ok(ResetPlan {
        group: group.to_string(),
        dry_run,
        partitions: rows,
    })
}

/// Offsets are reset only while the group has no active member, as Kafka's tool requires.
async fn ensure_inactive(cluster: &mut Cluster, group: &str) -> Result<(), String> {
    let g = describe_group(cluster, group).await?;
    if g.error_code == 0 && !g.members.is_empty() {
        return Err(format!(
            "group '{group}' has {} active member{} (state {}); offsets can only be reset while it has none: stop its consumers first, or use --dry-run to see the plan",
            g.members.len(),
            if g.members.len() == 1 { "" } else { "s" },
            g.group_state
        ));
    }
    Ok(())
}

pub fn print_reset(plan: &ResetPlan) {
    let rows: Vec<Vec<String>> = plan
        .partitions
        .iter()
        .map(|r| {
            vec![
                r.topic.clone(),
                r.partition.to_string(),
                r.current_offset.map_or("-".to_string(), |o| o.to_string()),
                r.new_offset.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows)
    );
    if plan.dry_run {
        println!("dry run: nothing changed; run again without --dry-run to apply");
    } else {
        println!(
            "group {}: {} offset{} reset",
            plan.group,
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        );
    }
}

/// Parses an ISO 8601 time (`2026-11-24T10:00:00Z`, `2026-11-24T10:00:00.500+08:00`,
/// `2026-11-24T10:00:00` as UTC, or `2026-11-24`) into ms since the epoch.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("--to-datetime {s}: expected an ISO 8601 time such as 2026-11-24T10:00:00Z or 2026-11-24T18:00:00+08:00")
    };
    let (date, rest) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 {
        return Err(bad());
    }
    let (y, m, day): (i64, i64, i64) = (
        d[0].parse().map_err(|_| bad())?,
        d[1].parse().map_err(|_| bad())?,
        d[2].parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    // The zone: Z, +HH:MM, -HH:MM or none (UTC).
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let z = &z[1..];
        let (hh, mm) = z.split_once(':').unwrap_or((z, "0"));
        let hh: i64 = hh.parse().map_err(|_| bad())?;
        let mm: i64 = mm.parse().map_err(|_| bad())?;
        (t, sign * (hh * 60 + mm))
    } else {
        (rest, 0)
    };
    let t: Vec<&str> = time.split(':').collect();
    if t.len() < 2 || t.len() > 3 {
        return Err(bad());
    }
    let hh: i64 = t[0].parse().map_err(|_| bad())?;
    let mi: i64 = t[1].parse().map_err(|_| bad())?;
    let sec: f64 = t.get(2).map_or(Ok(0.0), |x| x.parse()).map_err(|_| bad())?;
    if hh > 23 || mi > 59 || !(0.0..61.0).contains(&sec) {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3_600 + mi * 60 - offset_min * 60;
    Ok(secs * 1000 + (sec * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_datetime;

    #[test]
    fn iso_times_parse_to_epoch_milliseconds() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime("1970-01-02"), Ok(86_400_000));
        // 2026-11-24T10:00:00Z is 1_795_514_400 s since the epoch (date -u -d ... +%s).
        assert_eq!(
            parse_datetime("2026-11-24T10:00:00Z"),
            Ok(1_795_514_400_000)
        );
        assert_eq!(
            parse_datetime("2026-11-24T18:00:00+08:00"),
            Ok(1_795_514_400_000)
        );
        assert_eq!(
            parse_datetime("2026-11-24T10:00:00.250"),
            Ok(1_795_514_400_250)
        );
        assert_eq!(
            parse_datetime("2000-02-29T00:00:00-01:30"),
            Ok(951_787_800_000)
        );
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2026-13-01T00:00:00Z").is_err());
    }
}
