//! The workload's Kafka client on the simulated network: Metadata, idempotent producers
//! (InitProducerId), Produce with `acks=all`, and reading every partition back.

use super::*;

/// How long the client waits for any answer before it gives the connection up (a
/// connection into a partition is never closed; only this timeout ends it).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one write is retried before the writer gives it up (unacknowledged).
const WRITE_DEADLINE: Duration = Duration::from_secs(120);

/// A small Kafka client on the simulated network: one connection per broker, one request
/// at a time on each, leaders from Metadata.
pub(super) struct Client {
    bootstrap: Vec<String>,
    next_bootstrap: usize,
    conns: HashMap<String, (TcpStream, i32)>,
    /// partition -> the leader's "host:port".
    leaders: HashMap<i32, String>,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// An idempotent producer: its id, epoch, and the next sequence of each partition.
pub(super) struct Producer {
    id: i64,
    epoch: i16,
    next: HashMap<i32, i32>,
}

impl Client {
    pub(super) fn new(bootstrap: Vec<String>) -> Self {
        Client {
            bootstrap,
            next_bootstrap: 0,
            conns: HashMap::new(),
            leaders: HashMap::new(),
        }
    }

    pub(super) async fn call<R: Request>(
        &mut self,
        addr: &str,
        request: &R,
        version: i16,
    ) -> Res<R::Response> {
        self.call_within(addr, request, version, CALL_TIMEOUT).await
    }

    pub(super) async fn call_within<R: Request>(
        &mut self,
        addr: &str,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Res<R::Response> {
        let exchange = async {
            if !self.conns.contains_key(addr) {
                let stream = TcpStream::connect(addr).await?;
                self.conns.insert(addr.to_string(), (stream, 0));
            }
            let (stream, correlation) = self.conns.get_mut(addr).ok_or("no connection")?;
            *correlation += 1;
            let header = RequestHeader::default()
                .with_request_api_key(R::KEY)
                .with_request_api_version(version)
                .with_correlation_id(*correlation)
                .with_client_id(Some(StrBytes::from_static_str("sim")));
            let mut buf = BytesMut::new();
            buf.put_i32(0);
            header.encode(&mut buf, R::header_version(version))?;
            request.encode(&mut buf, version)?;
            let size = (buf.len() - 4) as i32;
            buf[0..4].copy_from_slice(&size.to_be_bytes());
            stream.write_all(&buf).await?;
            let size = stream.read_i32().await?;
            if !(0..=(64 << 20)).contains(&size) {
                return Err(format!("response of {size} bytes").into());
            }
            let mut body = vec![0u8; size as usize];
            stream.read_exact(&mut body).await?;
            let mut body = Bytes::from(body);
            let api = ApiKey::try_from(R::KEY).map_err(|_| "unknown API key")?;
            let h = ResponseHeader::decode(&mut body, api.response_header_version(version))?;
            if h.correlation_id != *correlation {
                return Err("response out of step".into());
            }
            Ok::<_, Box<dyn std::error::Error>>(R::Response::decode(&mut body, version)?)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conns.remove(addr);
                Err(e)
            }
            Err(_) => {
                self.conns.remove(addr);
                Err(format!("{addr}: no answer within {timeout:?}").into())
            }
        }
    }

    pub(super) fn any_broker(&mut self) -> String {
        self.next_bootstrap = (self.next_bootstrap + 1) % self.bootstrap.len();
        format!("{}:{KAFKA_PORT}", self.bootstrap[self.next_bootstrap])
    }

    pub(super) async fn metadata(&mut self) -> Res<MetadataResponse> {
        let mut topic = MetadataRequestTopic::default();
        topic.name = Some(TopicName(StrBytes::from_static_str(TOPIC)));
        let mut request = MetadataRequest::default();
        request.topics = Some(vec![topic]);
        request.allow_auto_topic_creation = false;
        let addr = self.any_broker();
        self.call_within(&addr, &request, 12, Duration::from_secs(3))
            .await
    }

    /// Waits until a broker's Metadata lists every broker.
    pub(super) async fn await_cluster(&mut self, brokers: u32) -> Res<()> {
        for _ in 0..600 {
            if let Ok(m) = self.metadata().await {
                if m.brokers.len() == brokers as usize {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err("the cluster did not form within 120 s".into())
    }

    pub(super) async fn create_topic(&mut self, partitions: i32, rf: i16) -> Res<()> {
        for _ in 0..300 {
            let mut config = CreatableTopicConfig::default();
            config.name = StrBytes::from_static_str("min.insync.replicas");
            config.value = Some(StrBytes::from_static_str("2"));
            let mut t = CreatableTopic::default();
            t.name = TopicName(StrBytes::from_static_str(TOPIC));
            t.num_partitions = partitions;
            t.replication_factor = rf;
            t.configs = vec![config];
            let mut request = CreateTopicsRequest::default();
            request.topics = vec![t];
            request.timeout_ms = 30_000;
            let addr = self.any_broker();
            if let Ok(r) = self.call(&addr, &request, 7).await {
                // 0, or 36 (TOPIC_ALREADY_EXISTS) when an earlier try got through.
                if r.topics
                    .first()
                    .is_some_and(|t| t.error_code == 0 || t.error_code == 36)
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Err("the topic could not be created within 90 s".into())
    }

    pub(super) async fn leader(&mut self, partition: i32) -> Option<String> {
        if let Some(l) = self.leaders.get(&partition) {
            return Some(l.clone());
        }
        let m = self.metadata().await.ok()?;
        let brokers: HashMap<i32, String> = m
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        for t in &m.topics {
            for p in &t.partitions {
                if let Some(addr) = brokers.get(&p.leader_id.0) {
                    self.leaders.insert(p.partition_index, addr.clone());
                }
            }
        }
        self.leaders.get(&partition).cloned()
    }

    /// An idempotent producer's id and epoch (InitProducerId without a transactional id).
    pub(super) async fn init_producer_id(&mut self) -> Result<Producer, String> {
        for _ in 0..600 {
            let addr = self.any_broker();
            let mut request = InitProducerIdRequest::default();
            request.transactional_id = None;
            request.transaction_timeout_ms = 60_000;
            if let Ok(r) = self.call(&addr, &request, 4).await {
                if r.error_code == 0 {
                    return Ok(Producer {
                        id: r.producer_id.0,
                        epoch: r.producer_epoch,
                        next: HashMap::new(),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err("no producer id within 120 s".into())
    }

    /// Writes `value` with acks=all until it is acknowledged; its offset, or `None` when
    /// it is given up (a plain producer after `WRITE_DEADLINE`; an idempotent one only at
    /// `end`, since skipping a sequence would break the ones after). A plain producer's
    /// retries may write it twice; the checker counts only what was acknowledged. `Err`:
    /// an idempotent producer was refused as a correct broker never refuses it.
    pub(super) async fn produce_until_acked(
        &mut self,
        partition: i32,
        value: &str,
        mut producer: Option<&mut Producer>,
        end: tokio::time::Instant,
    ) -> Result<Option<i64>, String> {
        let deadline = match producer {
            Some(_) => end,
            None => tokio::time::Instant::now() + WRITE_DEADLINE,
        };
        let mut batch = gregor_protocol::batch::build_batch(0, 1, &[value.as_bytes().to_vec()]);
        if let Some(p) = producer.as_deref() {
            let sequence = p.next.get(&partition).copied().unwrap_or(0);
            batch[53..57].copy_from_slice(&sequence.to_be_bytes());
            gregor_protocol::batch::set_producer(&mut batch, p.id, p.epoch, false);
        }
        while tokio::time::Instant::now() < deadline {
            let Some(leader) = self.leader(partition).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut data = PartitionProduceData::default();
            data.index = partition;
            data.records = Some(batch.clone().into());
            let mut topic = TopicProduceData::default();
            topic.name = TopicName(StrBytes::from_static_str(TOPIC));
            topic.partition_data = vec![data];
            let mut request = ProduceRequest::default();
            request.acks = -1;
            request.timeout_ms = 10_000;
            request.topic_data = vec![topic];
            if let Ok(r) = self.call(&leader, &request, 9).await {
                let answer = r
                    .responses
                    .first()
                    .and_then(|t| t.partition_responses.first());
                match answer.map(|a| (a.error_code, a.base_offset)) {
                    Some((0, offset)) => {
                        if let Some(p) = producer.as_deref_mut() {
                            *p.next.entry(partition).or_insert(0) += 1;
                        }
                        return Ok(Some(offset));
                    }
                    // OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH:
                    // the broker lost this producer's state or a write it acknowledged.
                    Some((code @ (45 | 59 | 47), _)) if producer.is_some() => {
                        return Err(format!(
                            "partition {partition}: {value} refused with error {code}"
                        ));
                    }
                    _ => {}
                }
            }
            self.leaders.remove(&partition);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(None)
    }

    /// Reads a whole partition from its leader: offset -> value.
    pub(super) async fn read_partition(&mut self, partition: i32) -> Res<BTreeMap<i64, String>> {
        let mut out = BTreeMap::new();
        let mut offset = 0;
        for _ in 0..10_000 {
            let Some(leader) = self.leader(partition).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut p = FetchPartition::default();
            p.partition = partition;
            p.fetch_offset = offset;
            p.partition_max_bytes = 1 << 20;
            let mut topic = FetchTopic::default();
            topic.topic = TopicName(StrBytes::from_static_str(TOPIC));
            topic.partitions = vec![p];
            let mut request = FetchRequest::default();
            request.max_bytes = 1 << 20;
            request.max_wait_ms = 0;
            request.topics = vec![topic];
            let Ok(r) = self.call(&leader, &request, 12).await else {
                self.leaders.remove(&partition);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let Some(data) = r.responses.first().and_then(|t| t.partitions.first()) else {
                return Err("an empty Fetch response".into());
            };
            if data.error_code != 0 {
                self.leaders.remove(&partition);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let records = data.records.clone().unwrap_or_default();
            let mut any = false;
            for (start, header) in gregor_protocol::batch::batches(&records) {
                let end = start + header.total_bytes();
                let Some(batch) = records.get(start..end) else {
                    break;
                };
                for r in gregor_protocol::batch::decode_records(batch)
                    .map_err(|e| format!("partition {partition}: a bad batch: {e:?}"))?
                {
                    if r.offset >= offset {
                        let value = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                        out.insert(r.offset, value.unwrap_or_default());
                        offset = r.offset + 1;
                        any = true;
                    }
                }
            }
            if !any && offset >= data.high_watermark {
                return Ok(out);
            }
        }
        Err(format!("partition {partition}: not read to its end").into())
    }
}
