//! `gregor txn list|describe|abort`: transactions, their partitions and age, from any
//! Kafka-compatible broker; a hanging one can be aborted.

use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::{
    DescribeTransactionsRequest, InitProducerIdRequest, ListTransactionsRequest, ProducerId,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::client::{code, Client};
use crate::table::table;

#[derive(Debug, Serialize)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// How long the open transaction has run, or null when none is open.
    pub age_ms: Option<i64>,
    /// Whether the open transaction has outlived its timeout (it hangs).
    pub overdue: bool,
    /// "topic-partition" of every partition in the open transaction.
    pub partitions: Vec<String>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn describe_many(
    client: &mut Client,
    ids: Vec<String>,
) -> Result<Vec<TxnDescription>, String> {
    let mut req = DescribeTransactionsRequest::default();
    req.transactional_ids = ids
        .into_iter()
        .map(|id| TransactionalId(StrBytes::from_string(id)))
        .collect();
    let described = client.send(req, 0).await?;
    let now = now_ms();
    let mut out = Vec::new();
    for t in described.transaction_states {
        if t.error_code != 0 {
            return Err(format!(
                "cannot describe transactional id {}: {}",
                t.transactional_id.0,
                code(t.error_code)
            ));
        }
        let age_ms = (t.transaction_start_time_ms >= 0)
            .then(|| now.saturating_sub(t.transaction_start_time_ms));
        out.push(TxnDescription {
            transactional_id: t.transactional_id.0.to_string(),
            state: t.transaction_state.to_string(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            timeout_ms: t.transaction_timeout_ms,
            age_ms,
            overdue: age_ms.is_some_and(|a| a > i64::from(t.transaction_timeout_ms)),
            partitions: t
                .topics
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", tp.topic.0))
                })
                .collect(),
        });
    }
    Ok(out)
}

pub async fn list(client: &mut Client) -> Result<Vec<TxnDescription>, String> {
    let listed = client.send(ListTransactionsRequest::default(), 0).await?;
    if listed.error_code != 0 {
        return Err(format!(
            "cannot list transactions: {}",
            code(listed.error_code)
        ));
    }
    let ids: Vec<String> = listed
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.0.to_string())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    describe_many(client, ids).await
}

pub async fn describe(client: &mut Client, id: &str) -> Result<TxnDescription, String> {
    describe_many(client, vec![id.to_string()])
        .await?
        .pop()
        .ok_or_else(|| "DescribeTransactions returned nothing".to_string())
}

#[derive(Debug, Serialize)]
pub struct Aborted {
    pub transactional_id: String,
    pub producer_id: i64,
    pub old_epoch: i16,
    pub new_epoch: i16,
    pub partitions: Vec<String>,
}

/// Aborts the open transaction of `id` the way a new producer with the same
/// `transactional.id` would: InitProducerId bumps the epoch, which aborts the transaction
/// and fences the producer that held it (Kafka's `kafka-transactions.sh force-terminate`).
pub async fn abort(client: &mut Client, id: &str) -> Result<Aborted, String> {
    let before = describe(client, id).await?;
    if before.state != "Ongoing" {
        return Err(format!(
            "transactional id {id} has no open transaction (state {}); nothing to abort",
            before.state
        ));
    }
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = Some(TransactionalId(StrBytes::from_string(id.to_string())));
    req.transaction_timeout_ms = before.timeout_ms;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let r = client.send(req, 4).await?;
    if r.error_code != 0 {
        return Err(format!(
            "cannot abort the transaction of {id}: {}; retry in a moment",
            code(r.error_code)
        ));
    }
    Ok(Aborted {
        transactional_id: id.to_string(),
        producer_id: r.producer_id.0,
        old_epoch: before.producer_epoch,
        new_epoch: r.producer_epoch,
        partitions: before.partitions,
    })
}

fn age(d: &TxnDescription) -> String {
    d.age_ms.map_or_else(
        || "-".to_string(),
        |a| {
            format!(
                "{:.1}s{}",
                a as f64 / 1000.0,
                if d.overdue { " OVERDUE" } else { "" }
            )
        },
    )
}

pub fn print_list(txns: &[TxnDescription]) {
    let rows: Vec<Vec<String>> = txns
        .iter()
        .map(|t| {
            vec![
                t.transactional_id.clone(),
                t.state.clone(),
                t.producer_id.to_string(),
                t.producer_epoch.to_string(),
                age(t),
                format!("{}s", t.timeout_ms / 1000),
                t.partitions.len().to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &[
                "TRANSACTIONAL-ID",
                "STATE",
                "PRODUCER-ID",
                "EPOCH",
                "AGE",
                "TIMEOUT",
                "PARTITIONS"
            ],
            &rows
        )
    );
}

pub fn print_describe(t: &TxnDescription) {
    println!(
        "transactional id {} ({}, producer {} epoch {}, timeout {} ms, age {})",
        t.transactional_id,
        t.state,
        t.producer_id,
        t.producer_epoch,
        t.timeout_ms,
        age(t)
    );
    for p in &t.partitions {
        println!("  {p}");
    }
}

pub fn print_aborted(a: &Aborted) {
    println!(
        "aborted the open transaction of {} on {} partition(s); producer {} is now at epoch {} (was {}), so the producer that held it is fenced",
        a.transactional_id,
        a.partitions.len(),
        a.producer_id,
        a.new_epoch,
        a.old_epoch
    );
}
