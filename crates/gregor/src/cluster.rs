//! `gregor cluster status`: brokers, the controller, and the partitions that need an
//! operator (no leader, or fewer in-sync replicas than replicas).

use serde::Serialize;

use crate::client::Cluster;
use crate::table::table;

#[derive(Debug, Serialize)]
pub struct BrokerRow {
    pub id: i32,
    pub address: String,
    pub controller: bool,
}

#[derive(Debug, Serialize)]
pub struct PartitionProblem {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster_id: Option<String>,
    pub controller: i32,
    pub brokers: Vec<BrokerRow>,
    pub topics: usize,
    pub partitions: usize,
    pub offline_partitions: Vec<PartitionProblem>,
    pub under_replicated_partitions: Vec<PartitionProblem>,
}

impl Status {
    /// Healthy: every partition has a leader and all its replicas in sync.
    pub fn healthy(&self) -> bool {
        self.offline_partitions.is_empty() && self.under_replicated_partitions.is_empty()
    }
}

pub async fn status(cluster: &mut Cluster) -> Result<Status, String> {
    let md = cluster.metadata(None).await?;
    let mut status = Status {
        cluster_id: cluster.cluster_id.clone(),
        controller: cluster.controller,
        brokers: cluster
            .brokers
            .iter()
            .map(|(id, a)| BrokerRow {
                id: *id,
                address: a.clone(),
                controller: *id == cluster.controller,
            })
            .collect(),
        topics: md.topics.len(),
        partitions: 0,
        offline_partitions: Vec::new(),
        under_replicated_partitions: Vec::new(),
    };
    for t in md.topics {
        let name = t.name.map(|n| n.0.to_string()).unwrap_or_default();
        for p in t.partitions {
            status.partitions += 1;
            let row = || PartitionProblem {
                topic: name.clone(),
                partition: p.partition_index,
                leader: p.leader_id.0,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            };
            if p.leader_id.0 < 0 {
                status.offline_partitions.push(row());
            } else if p.isr_nodes.len() < p.replica_nodes.len() {
                status.under_replicated_partitions.push(row());
            }
        }
    }
    let key = |p: &PartitionProblem| (p.topic.clone(), p.partition);
    status.offline_partitions.sort_by_key(key);
    status.under_replicated_partitions.sort_by_key(key);
    Ok(status)
}

pub fn print(s: &Status) {
    println!(
        "cluster {}: {} broker{}, controller {}, {} topic{}, {} partition{}",
        s.cluster_id.as_deref().unwrap_or("-"),
        s.brokers.len(),
        if s.brokers.len() == 1 { "" } else { "s" },
        if s.controller < 0 {
            "none".to_string()
        } else {
            s.controller.to_string()
        },
        s.topics,
        if s.topics == 1 { "" } else { "s" },
        s.partitions,
        if s.partitions == 1 { "" } else { "s" },
    );
    let rows: Vec<Vec<String>> = s
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.address.clone(),
                if b.controller {
                    "yes".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    println!("{}", table(&["BROKER", "ADDRESS", "CONTROLLER"], &rows));
    let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    for (title, rows) in [
        ("partitions without a leader", &s.offline_partitions),
        (
            "under-replicated partitions",
            &s.under_replicated_partitions,
        ),
    ] {
        println!("\n{title}: {}", rows.len());
        if !rows.is_empty() {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|p| {
                    vec![
                        p.topic.clone(),
                        p.partition.to_string(),
                        if p.leader < 0 {
                            "none".into()
                        } else {
                            p.leader.to_string()
                        },
                        list(&p.replicas),
                        list(&p.isr),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"], &rows)
            );
        }
    }
}
