//! Produce's check of transactional batches before they are appended (Kafka's KIP-890
//! verification): the transaction's coordinator confirms that the producer's open
//! transaction holds each partition.

use std::collections::HashMap;

use gregor_protocol::batch;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProduceRequest, ProducerId,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::api::RequestContext;
use crate::state::TopicPartition;

/// Partitions refused before anything is appended, with the error code and message.
pub type Refused = HashMap<(String, i32), (i16, String)>;

/// Checks the transactional batches of `request` as Kafka does before they are appended:
/// the request names a transactional id (the authorizer has checked WRITE on it) and one
/// producer; a partition this broker leads is asked about at the transaction's
/// coordinator (KIP-890's verification) unless a confirmed verification guard for the
/// same transactional id, producer and epoch covers it there and its transaction is still
/// open. So no client can open a transaction the coordinator will never end, or add to
/// another producer's, and hold the partition's last stable offset; the guard (see
/// `producer.rs`) is checked again under the log's lock at the append.
pub async fn verify_transactional(ctx: &RequestContext, request: &ProduceRequest) -> Refused {
    let mut refused = Refused::new();
    let (producers, transactional) = transactional_batches(request);
    if transactional.is_empty() {
        return refused;
    }
    let refuse_all = |refused: &mut Refused, code: ResponseError, why: &str| {
        for key in &transactional {
            refused.insert(key.clone(), (code.code(), why.to_string()));
        }
    };
    let Some(id) = request.transactional_id.as_ref().map(|t| t.0.to_string()) else {
        refuse_all(
            &mut refused,
            ResponseError::TransactionalIdAuthorizationFailed,
            "a transactional batch needs the producer's transactional.id in the request",
        );
        return refused;
    };
    let &[(producer_id, epoch)] = producers.as_slice() else {
        refuse_all(
            &mut refused,
            ResponseError::InvalidRecord,
            "a transactional produce request carries the batches of one producer id and epoch",
        );
        return refused;
    };
    let mut ask: Vec<(String, i32)> = Vec::new();
    for key in &transactional {
        // A partition this broker does not lead is refused at the append.
        let Some(partition) = ctx.partitions().get(&key.0, key.1) else {
            continue;
        };
        if !partition.leadership().leads {
            continue;
        }
        let mut log = partition.log();
        let open = log.has_open_transaction(producer_id, epoch);
        if open && log.producers().verified(producer_id, &id, epoch) {
            continue;
        }
        log.producers_mut()
            .begin_verification(producer_id, &id, epoch);
        ask.push(key.clone());
    }
    if ask.is_empty() {
        return refused;
    }
    let codes = ask_coordinator(ctx, &id, producer_id, epoch, &ask).await;
    for (key, (code, why)) in ask.into_iter().zip(codes) {
        let (code, why) = if code != 0 {
            if let Some(p) = ctx.partitions().get(&key.0, key.1) {
                p.log()
                    .producers_mut()
                    .abandon_verification(producer_id, &id, epoch);
            }
            (code, why)
        } else {
            let confirmed = ctx.partitions().get(&key.0, key.1).is_some_and(|p| {
                p.log()
                    .producers_mut()
                    .confirm_verification(producer_id, &id, epoch)
            });
            if confirmed {
                continue;
            }
            (
                ResponseError::NotEnoughReplicas.code(),
                "the transaction ended while the batch was being verified; retry".to_string(),
            )
        };
        tracing::debug!(transactional_id = %id, producer_id, epoch, topic = %key.0, partition = key.1, code, "transactional batch refused: {why}");
        refused.insert(key, (code, why));
    }
    refused
}

/// The producers (id, epoch) of a request's transactional batches, and the partitions
/// that hold such batches, each once.
fn transactional_batches(request: &ProduceRequest) -> (Vec<(i64, i16)>, Vec<TopicPartition>) {
    let mut producers: Vec<(i64, i16)> = Vec::new();
    let mut partitions: Vec<TopicPartition> = Vec::new();
    for topic in &request.topic_data {
        for data in &topic.partition_data {
            let Some(records) = &data.records else {
                continue;
            };
            let key = (topic.name.0.to_string(), data.index);
            let mut at = 0usize;
            while at < records.len() {
                // A batch that does not parse is refused by `validate` later.
                let Ok(h) = batch::BatchHeader::parse(&records[at..]) else {
                    break;
                };
                at += h.total_bytes().max(1);
                if !h.is_transactional() || h.is_control() {
                    continue;
                }
                let p = (h.producer_id, h.producer_epoch);
                if !producers.contains(&p) {
                    producers.push(p);
                }
                if !partitions.contains(&key) {
                    partitions.push(key.clone());
                }
            }
        }
    }
    (producers, partitions)
}

/// Produce's answer for a verification's code, with why: a fenced producer gets
/// INVALID_PRODUCER_EPOCH, as Kafka maps its verification's PRODUCER_FENCED (clients
/// treat it as the fencing it is).
fn explain(code: i16) -> (i16, String) {
    let code = if code == ResponseError::ProducerFenced.code() {
        ResponseError::InvalidProducerEpoch.code()
    } else {
        code
    };
    let why = if code == ResponseError::InvalidTxnState.code() {
        "the partition is not in an open transaction of this producer (AddPartitionsToTxn first)"
    } else if code == ResponseError::InvalidProducerIdMapping.code() {
        "the transactional id does not belong to this producer id"
    } else if code == ResponseError::InvalidProducerEpoch.code() {
        "a newer producer with this transactional id fenced this one"
    } else {
        "the transaction's coordinator could not confirm the transaction; retry"
    };
    (code, why.to_string())
}

/// AddPartitionsToTxn v4 with `verify_only`: the question to another broker's coordinator.
fn verify_request(
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> AddPartitionsToTxnRequest {
    let mut by_topic: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in partitions {
        match by_topic.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partitions.push(*p),
            None => by_topic.push(build!(AddPartitionsToTxnTopic {
                name: crate::wire::topic_name(t),
                partitions: vec![*p]
            })),
        }
    }
    build!(AddPartitionsToTxnRequest {
        transactions: vec![build!(AddPartitionsToTxnTransaction {
            transactional_id: TransactionalId(StrBytes::from_string(id.to_string())),
            producer_id: ProducerId(producer_id),
            producer_epoch: epoch,
            verify_only: true,
            topics: by_topic
        })]
    })
}

/// Asks the coordinator of `id` whether the producer's open transaction holds
/// `partitions`: this broker's own coordinator directly, another broker's with
/// AddPartitionsToTxn version 4 (`verify_only`).
async fn ask_coordinator(
    ctx: &RequestContext,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Vec<(i16, String)> {
    let unavailable = |e: String| {
        // Retriable for every client, as Kafka maps a coordinator it cannot reach.
        vec![(ResponseError::NotEnoughReplicas.code(), e); partitions.len()]
    };
    // `not_txn_coordinator` is `None` on a single broker too: its coordinator is local.
    if ctx.broker.not_txn_coordinator(id).is_none() {
        return ctx
            .txns()
            .verify(id, (producer_id, epoch), partitions)
            .into_iter()
            .map(|c| {
                if c == 0 {
                    (0, String::new())
                } else {
                    explain(c)
                }
            })
            .collect();
    }
    let peer = match ctx.broker.coordinator(id, true) {
        Ok(p) => p,
        Err((_, e)) => return unavailable(format!("the transaction's coordinator: {e}")),
    };
    let request = verify_request(id, producer_id, epoch, partitions);
    let me = ctx.config().node_id;
    // One idle connection per coordinator is kept for the next verification (a
    // connection per call would cost a TLS handshake each); a failed one is dropped. A
    // pooled connection the coordinator closed meanwhile (connections.max.idle.ms) fails
    // its first call: the question is asked once more on a new connection.
    let ask = |conn: Option<crate::peer::Conn>| async {
        let mut conn = match conn {
            Some(c) => c,
            None => {
                crate::peer::Conn::connect(
                    ctx.config(),
                    ctx.security(),
                    &peer,
                    format!("gregor-verify-{me}"),
                )
                .await?
            }
        };
        let answer = conn
            .call::<_, AddPartitionsToTxnResponse>(
                ApiKey::AddPartitionsToTxn,
                4,
                &request,
                std::time::Duration::from_secs(3),
            )
            .await?;
        ctx.broker.verify_conns.put(peer.node_id, &peer, conn);
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match ctx.broker.verify_conns.take(peer.node_id, &peer) {
        Some(pooled) => match ask(Some(pooled)).await {
            Ok(answer) => Ok(answer),
            Err(_) => ask(None).await,
        },
        None => ask(None).await,
    };
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            return unavailable(format!(
                "asking the transaction's coordinator (broker {}) failed: {e}",
                peer.node_id
            ))
        }
    };
    let mut codes: HashMap<(String, i32), i16> = HashMap::new();
    for t in response.results_by_transaction {
        for topic in t.topic_results {
            for p in topic.results_by_partition {
                codes.insert(
                    (topic.name.0.to_string(), p.partition_index),
                    p.partition_error_code,
                );
            }
        }
    }
    partitions
        .iter()
        .map(|key| match codes.get(key) {
            Some(0) => (0, String::new()),
            Some(&c)
                if c == ResponseError::NotCoordinator.code()
                    || c == ResponseError::CoordinatorNotAvailable.code()
                    || c == ResponseError::CoordinatorLoadInProgress.code() =>
            {
                explain(ResponseError::NotEnoughReplicas.code())
            }
            Some(&c) => explain(c),
            None => explain(ResponseError::NotEnoughReplicas.code()),
        })
        .collect()
}
