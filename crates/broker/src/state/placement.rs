//! Where replicas go: across racks first, then spread over the live brokers.

use super::*;

/// Broker ids ordered so that consecutive ones are on different racks where possible
/// (Kafka's rack-alternated list): the first of each rack, then the second of each, ...
pub fn rack_alternating(brokers: &[gregor_cluster::BrokerMeta]) -> Vec<i32> {
    let mut by_rack: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack
            .entry(b.rack.clone().unwrap_or_default())
            .or_default()
            .push(b.node_id);
    }
    let mut order = Vec::with_capacity(brokers.len());
    for i in 0..brokers.len() {
        for ids in by_rack.values() {
            if let Some(&id) = ids.get(i) {
                order.push(id);
            }
        }
    }
    order
}

impl Broker {
    /// The brokers that can take replicas now: this one alone on a single node, every
    /// registered and unfenced broker in a cluster.
    pub fn live_brokers(&self) -> Vec<gregor_cluster::BrokerMeta> {
        if self.metadata.cluster().is_none() {
            return vec![gregor_cluster::BrokerMeta {
                node_id: self.config.node_id,
                host: self.config.advertised_host.clone(),
                port: i32::from(self.config.advertised_port),
                rack: None,
                fenced: false,
                endpoints: self.config.endpoints(),
                incarnation: 0,
            }];
        }
        self.image()
            .brokers()
            .filter(|b| !b.fenced)
            .cloned()
            .collect()
    }

    /// Replicas for partitions `first..first+count` of a topic over the live brokers,
    /// `rf` each (-1: `default.replication.factor`); see [`place`].
    pub fn assign_replicas(
        &self,
        name: &str,
        count: i32,
        rf: i32,
        first: i32,
    ) -> Result<Vec<Vec<i32>>, BrokerError> {
        let rf = if rf == -1 {
            self.config.settings().default_replication_factor as i32
        } else {
            rf
        };
        place(&self.live_brokers(), name, count, rf, first)
    }
}

/// Replicas for partitions `first..first+count` of topic `name` on `live`, `rf` each,
/// spread as Kafka does: brokers ordered so that racks alternate, each partition's
/// replicas consecutive in that order from a start that moves by one per partition, so
/// leaders (the first replica) spread evenly. A pure function of its arguments.
pub fn place(
    live: &[gregor_cluster::BrokerMeta],
    name: &str,
    count: i32,
    rf: i32,
    first: i32,
) -> Result<Vec<Vec<i32>>, BrokerError> {
    if rf < 1 || rf as usize > live.len() {
        return Err(BrokerError::InvalidReplicationFactor(format!(
            "replication factor {rf} is not between 1 and the {} live broker(s)",
            live.len()
        )));
    }
    let mut live = live.to_vec();
    live.sort_by_key(|b| b.node_id);
    let order = rack_alternating(&live);
    let n = order.len();
    let start = name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % n;
    Ok((first..first + count)
        .map(|p| {
            (0..rf as usize)
                .map(|j| order[(start + p as usize + j) % n])
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_replicas_sit_on_different_racks() {
        let broker = |id: i32, rack: &str| gregor_cluster::BrokerMeta {
            node_id: id,
            host: "h".into(),
            port: 1,
            rack: Some(rack.into()),
            fenced: false,
            endpoints: Vec::new(),
            incarnation: 0,
        };
        let brokers = [
            broker(1, "a"),
            broker(2, "a"),
            broker(3, "b"),
            broker(4, "b"),
            broker(5, "c"),
        ];
        let order = rack_alternating(&brokers);
        assert_eq!(order.len(), 5);
        let rack_of = |id: i32| {
            brokers
                .iter()
                .find(|b| b.node_id == id)
                .and_then(|b| b.rack.clone())
        };
        // Any three consecutive replicas (with wrap-around) start with three racks while
        // three racks remain.
        for start in 0..3 {
            let racks: std::collections::BTreeSet<_> =
                (0..3).map(|j| rack_of(order[(start + j) % 5])).collect();
            assert_eq!(racks.len(), 3, "replicas from {start} in {order:?}");
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn leaders_spread_evenly_and_replicas_are_distinct() {
        let broker = |id: i32| gregor_cluster::BrokerMeta {
            node_id: id,
            host: "h".into(),
            port: 1,
            rack: None,
            fenced: false,
            endpoints: Vec::new(),
            incarnation: 0,
        };
        let live: Vec<_> = [3, 1, 2].into_iter().map(broker).collect();
        let placed = place(&live, "t", 6, 2, 0).expect("placed");
        let mut leaders = std::collections::BTreeMap::new();
        for replicas in &placed {
            assert_eq!(replicas.len(), 2);
            assert_ne!(replicas[0], replicas[1]);
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        // Partitions added later continue the same rotation.
        assert_eq!(
            place(&live, "t", 2, 2, 4).expect("placed"),
            placed[4..].to_vec()
        );
        assert!(
            place(&live, "t", 1, 4, 0).is_err(),
            "more replicas than brokers"
        );
    }
}
