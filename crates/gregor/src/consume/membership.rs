//! `gregor consume --group`: this tool as a member of a consumer group (the classic
//! protocol): join and sync with the range assignment, heartbeats, leaving.

use super::*;

/// This member's state in a group it joined.
pub(super) struct Membership {
    pub(super) group: String,
    pub(super) member_id: String,
    pub(super) generation: i32,
    pub(super) coordinator: i32,
    pub(super) last_heartbeat: Instant,
}

pub(super) const SESSION_TIMEOUT_MS: i32 = 10_000;
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

pub(super) async fn coordinator_id(cluster: &mut Cluster, group: &str) -> Result<i32, String> {
    let address = cluster.coordinator(group, 0).await?.address().to_string();
    cluster
        .brokers
        .iter()
        .find(|(_, a)| **a == address)
        .map(|(id, _)| *id)
        .ok_or_else(|| format!("the coordinator of '{group}' at {address} is not in the metadata"))
}

pub(super) fn versioned<T: Encodable>(value: &T, version: i16) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    value
        .encode(&mut buf, version)
        .map_err(|e| format!("cannot encode group metadata: {e}"))?;
    Ok(buf.freeze())
}

/// Joins `group` subscribed to `topic`; returns the membership and the partitions assigned.
pub(super) async fn join(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    member_id: String,
) -> Result<(Membership, Vec<i32>), String> {
    let coordinator = coordinator_id(cluster, group).await?;
    let mut sub = ConsumerProtocolSubscription::default();
    sub.topics = vec![StrBytes::from_string(topic.to_string())];
    let metadata = versioned(&sub, 0)?;
    let mut member_id = member_id;
    for _attempt in 0..10 {
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.session_timeout_ms = SESSION_TIMEOUT_MS;
        req.rebalance_timeout_ms = 30_000;
        req.member_id = StrBytes::from_string(member_id.clone());
        req.protocol_type = StrBytes::from_static_str("consumer");
        let mut p = JoinGroupRequestProtocol::default();
        p.name = StrBytes::from_static_str("range");
        p.metadata = metadata.clone();
        req.protocols = vec![p];
        let resp = cluster.broker(coordinator).await?.call(req, 1, 7).await?;
        match resp.error_code {
            0 => {}
            79 => {
                // MEMBER_ID_REQUIRED: join again with the id the coordinator gave.
                member_id = resp.member_id.to_string();
                continue;
            }
            25 => {
                member_id.clear();
                continue;
            }
            27 => continue,
            e => return Err(format!("cannot join group '{group}': {}", code(e))),
        }
        member_id = resp.member_id.to_string();
        let generation = resp.generation_id;
        let mut assignments = Vec::new();
        if resp.leader == resp.member_id {
            assignments = assign(cluster, &resp.members).await?;
        }
        let mut sync = SyncGroupRequest::default();
        sync.group_id = GroupId(StrBytes::from_string(group.to_string()));
        sync.generation_id = generation;
        sync.member_id = StrBytes::from_string(member_id.clone());
        sync.protocol_type = Some(StrBytes::from_static_str("consumer"));
        sync.protocol_name = Some(StrBytes::from_static_str("range"));
        sync.assignments = assignments;
        let synced = cluster.broker(coordinator).await?.call(sync, 1, 5).await?;
        if synced.error_code == 27 {
            continue;
        }
        if synced.error_code != 0 {
            return Err(format!(
                "cannot join group '{group}': SyncGroup: {}",
                code(synced.error_code)
            ));
        }
        let mut mine = Vec::new();
        let mut buf = synced.assignment.clone();
        if buf.len() >= 2 {
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            let _ = bytes::Buf::get_i16(&mut buf);
            let a = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
                .map_err(|e| format!("group '{group}': bad assignment from the leader: {e}"))?;
            for tp in a.assigned_partitions {
                if tp.topic.0.as_str() == topic {
                    mine.extend(tp.partitions);
                }
            }
        }
        mine.sort_unstable();
        return Ok((
            Membership {
                group: group.to_string(),
                member_id,
                generation,
                coordinator,
                last_heartbeat: Instant::now(),
            },
            mine,
        ));
    }
    Err(format!(
        "cannot join group '{group}': it kept rebalancing; try again"
    ))
}

/// The range assignor: each subscribed topic's partitions split in contiguous ranges over
/// the members subscribed to it, in member id order.
pub(super) async fn assign(
    cluster: &mut Cluster,
    members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
) -> Result<Vec<SyncGroupRequestAssignment>, String> {
    let mut subscribers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in members {
        let mut buf = m.metadata.clone();
        if buf.len() < 2 {
            continue;
        }
        let version = bytes::Buf::get_i16(&mut buf);
        if let Ok(s) = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
            for t in s.topics {
                subscribers
                    .entry(t.to_string())
                    .or_default()
                    .push(m.member_id.to_string());
            }
        }
    }
    let topics: Vec<String> = subscribers.keys().cloned().collect();
    let md = cluster.metadata(Some(&topics)).await?;
    let mut plan: BTreeMap<String, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for t in md.topics {
        let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
        let Some(subs) = subscribers.get_mut(&name) else {
            continue;
        };
        subs.sort();
        let mut parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        parts.sort_unstable();
        let (n, m) = (parts.len(), subs.len());
        let mut at = 0;
        for (i, member) in subs.iter().enumerate() {
            let take = n / m + usize::from(i < n % m);
            plan.entry(member.clone())
                .or_default()
                .insert(name.clone(), parts[at..at + take].to_vec());
            at += take;
        }
    }
    let mut out = Vec::new();
    for m in members {
        let mut a = ConsumerProtocolAssignment::default();
        for (topic, parts) in plan.remove(m.member_id.as_str()).unwrap_or_default() {
            let mut tp = AssignedTopic::default();
            tp.topic = TopicName(StrBytes::from_string(topic));
            tp.partitions = parts;
            a.assigned_partitions.push(tp);
        }
        let mut s = SyncGroupRequestAssignment::default();
        s.member_id = m.member_id.clone();
        s.assignment = versioned(&a, 0)?;
        out.push(s);
    }
    Ok(out)
}

/// Heartbeats when due; returns false when the group is rebalancing (join again).
pub(super) async fn heartbeat(cluster: &mut Cluster, m: &mut Membership) -> Result<bool, String> {
    if m.last_heartbeat.elapsed() < HEARTBEAT_EVERY {
        return Ok(true);
    }
    m.last_heartbeat = Instant::now();
    let mut req = HeartbeatRequest::default();
    req.group_id = GroupId(StrBytes::from_string(m.group.clone()));
    req.generation_id = m.generation;
    req.member_id = StrBytes::from_string(m.member_id.clone());
    let resp = cluster.broker(m.coordinator).await?.call(req, 0, 4).await?;
    match resp.error_code {
        0 => Ok(true),
        27 | 22 | 25 => Ok(false),
        e => Err(format!(
            "heartbeat to group '{}' failed: {}",
            m.group,
            code(e)
        )),
    }
}

pub(super) async fn leave(cluster: &mut Cluster, m: &Membership) -> Result<(), String> {
    let mut req = LeaveGroupRequest::default();
    req.group_id = GroupId(StrBytes::from_string(m.group.clone()));
    let v = cluster
        .broker(m.coordinator)
        .await?
        .version::<LeaveGroupRequest>(0, 4)?;
    if v >= 3 {
        let mut id = kafka_protocol::messages::leave_group_request::MemberIdentity::default();
        id.member_id = StrBytes::from_string(m.member_id.clone());
        req.members = vec![id];
    } else {
        req.member_id = StrBytes::from_string(m.member_id.clone());
    }
    cluster.broker(m.coordinator).await?.send(req, v).await?;
    Ok(())
}
