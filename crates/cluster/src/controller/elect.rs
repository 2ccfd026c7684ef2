//! The controller's decisions as pure functions over an image: elections, ISR changes
//! for fenced and restarted brokers, finishing reassignments, and the record that
//! registers a broker.

use super::*;

/// `records` with every batch flattened.
pub(super) fn all_records(records: &[MetadataRecord]) -> Vec<&MetadataRecord> {
    let mut out = Vec::new();
    for r in records {
        match r {
            MetadataRecord::Batch { records } => out.extend(all_records(records)),
            other => out.push(other),
        }
    }
    out
}

/// Takes `node` (restarted after a crash: its logs may have lost what was not fsynced) out
/// of every ISR that has other members; a partition it led loses its leader, for `elect`
/// to choose one of the others. Where it is the last member it stays: the partition then
/// waits for it, as Kafka does, and may have lost records (docs/reliability.md).
pub fn leave_isrs(image: &MetadataImage, node: i32) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if !p.isr.contains(&node) || p.isr.len() < 2 {
                continue;
            }
            let isr: Vec<i32> = p.isr.iter().copied().filter(|&b| b != node).collect();
            let (leader, leader_epoch) = if p.leader == node {
                (-1, p.leader_epoch + 1)
            } else {
                (p.leader, p.leader_epoch)
            };
            tracing::info!(topic = %topic.name, partition = index, node_id = node, ?isr, "a broker that restarted after a crash leaves the in-sync replicas until it catches up");
            out.push(MetadataRecord::Partition {
                topic_id: topic.topic_id,
                partition: index as i32,
                replicas: p.replicas.clone(),
                leader,
                leader_epoch,
                isr: Some(isr),
            });
        }
    }
    out
}

/// Leadership and ISR changes that `image` calls for: partitions whose leader is gone get
/// one from their live in-sync replicas (in assignment order) with the next leader epoch;
/// fenced brokers leave the ISR of partitions that keep a leader; with `rebalance`, the
/// preferred (first) replica takes back leadership when it is alive and in sync. Brokers
/// in `avoid` (stopping) lead nothing.
pub fn elect(
    image: &MetadataImage,
    unclean_default: bool,
    rebalance: bool,
    avoid: &[i32],
) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    let usable = |b: i32| image.broker_alive(b) && !avoid.contains(&b);
    for topic in image.topics() {
        let unclean = topic
            .configs
            .get("unclean.leader.election.enable")
            .map_or(unclean_default, |v| v == "true");
        for (index, p) in topic.partitions.iter().enumerate() {
            let alive_isr: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|&b| image.broker_alive(b))
                .collect();
            let (leader, isr) = if p.leader < 0 || !usable(p.leader) {
                match p
                    .replicas
                    .iter()
                    .copied()
                    .find(|&r| usable(r) && alive_isr.contains(&r))
                {
                    Some(l) => (l, alive_isr),
                    None => match p
                        .replicas
                        .iter()
                        .copied()
                        .find(|&r| usable(r))
                        .filter(|_| unclean)
                    {
                        Some(l) => {
                            tracing::warn!(topic = %topic.name, partition = index, leader = l, "unclean leader election: records may be lost");
                            (l, vec![l])
                        }
                        None if p.leader >= 0 && image.broker_alive(p.leader) => {
                            // Stopping, but nobody else can take over: it keeps leading.
                            (p.leader, p.isr.clone())
                        }
                        // Nobody to lead: keep the last in-sync replicas, so one of them
                        // can lead when it returns.
                        None => (-1, p.isr.clone()),
                    },
                }
            } else if rebalance
                && p.replicas.first().is_some_and(|&pref| {
                    pref != p.leader && usable(pref) && alive_isr.contains(&pref)
                })
            {
                (p.replicas[0], alive_isr)
            } else if !alive_isr.is_empty() && alive_isr.len() < p.isr.len() {
                (p.leader, alive_isr)
            } else {
                continue;
            };
            let epoch = if leader != p.leader {
                p.leader_epoch + 1
            } else {
                p.leader_epoch
            };
            if leader == p.leader && isr == p.isr {
                continue;
            }
            if leader != p.leader {
                tracing::info!(topic = %topic.name, partition = index, from = p.leader, to = leader, leader_epoch = epoch, "partition leader elected");
            }
            out.push(MetadataRecord::Partition {
                topic_id: topic.topic_id,
                partition: index as i32,
                replicas: p.replicas.clone(),
                leader,
                leader_epoch: epoch,
                isr: Some(isr),
            });
        }
    }
    out
}

/// Moves whose target replicas are all in sync end: the partition keeps only its target
/// replicas (in the target's order, so the first is the preferred leader), and a leader
/// outside the target hands over to the first target replica in sync.
pub fn finish_reassignments(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics() {
        for (index, p) in topic.partitions.iter().enumerate() {
            let Some((target, _)) = &p.reassignment else {
                continue;
            };
            if !target.iter().all(|r| p.isr.contains(r)) {
                continue;
            }
            let isr: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|r| target.contains(r))
                .collect();
            let leader = if target.contains(&p.leader) {
                p.leader
            } else {
                target
                    .iter()
                    .copied()
                    .find(|&r| isr.contains(&r) && image.broker_alive(r))
                    .unwrap_or(-1)
            };
            tracing::info!(topic = %topic.name, partition = index, replicas = ?target, leader, "reassignment complete");
            out.push(MetadataRecord::Partition {
                topic_id: topic.topic_id,
                partition: index as i32,
                replicas: target.clone(),
                leader,
                leader_epoch: if leader != p.leader {
                    p.leader_epoch + 1
                } else {
                    p.leader_epoch
                },
                isr: Some(isr),
            });
            out.push(MetadataRecord::Reassign {
                topic_id: topic.topic_id,
                partition: index as i32,
                target: None,
                original: Vec::new(),
            });
        }
    }
    out
}

/// The record that registers `reg` as it is now (address, listeners, incarnation), unfenced.
pub(super) fn register(reg: &Registration) -> MetadataRecord {
    MetadataRecord::RegisterBroker {
        node_id: reg.node_id,
        host: reg.host.clone(),
        port: reg.port,
        rack: reg.rack.clone(),
        endpoints: reg.endpoints.clone(),
        incarnation: reg.incarnation,
    }
}
