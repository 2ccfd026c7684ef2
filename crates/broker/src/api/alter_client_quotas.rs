//! AlterClientQuotas: sets or removes client quotas (KIP-546) as metadata records, so that
//! every broker of a cluster applies them. An entity is a user, a client id, or both
//! (a missing name is the `<default>`); the keys are `producer_byte_rate`,
//! `consumer_byte_rate` and `request_percentage`. An entry with a bad entity or key is
//! refused with INVALID_REQUEST and changes nothing; the others are committed together.
//! The caller needs ALTER_CONFIGS on the cluster, checked in `authorize`.

use gregor_cluster::{MetadataRecord, QuotaEntity};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData};
use kafka_protocol::messages::alter_client_quotas_response::{
    EntityData as EntityOut, EntryData as EntryOut,
};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse, ApiKey};

use super::{str_bytes, RequestContext};

pub async fn handle(
    ctx: &RequestContext,
    r: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let outcomes: Vec<Result<Vec<MetadataRecord>, String>> =
        r.entries.iter().map(records_of).collect();
    let records: Vec<MetadataRecord> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let commit = if r.validate_only || records.is_empty() {
        Ok(())
    } else {
        ctx.broker.commit_records(records).await
    };
    let entries = r
        .entries
        .iter()
        .zip(outcomes)
        .map(|(entry, outcome)| {
            let (error_code, error_message) = match (&outcome, &commit) {
                (Err(m), _) => (ResponseError::InvalidRequest.code(), Some(str_bytes(m))),
                (Ok(_), Err(e)) => (
                    crate::error::error_code(e),
                    Some(str_bytes(&e.to_string())),
                ),
                (Ok(_), Ok(())) => {
                    if !r.validate_only {
                        tracing::info!(principal = %ctx.caller.principal, entity = ?entry.entity.iter().map(|e| (e.entity_type.to_string(), e.entity_name.as_ref().map(|n| n.to_string()))).collect::<Vec<_>>(), "client quotas changed");
                    }
                    (0, None)
                }
            };
            build!(EntryOut {
                error_code,
                error_message,
                entity: echo(&entry.entity)
            })
        })
        .collect();
    build!(AlterClientQuotasResponse { entries })
}

/// An entry's entity, as its answer names it.
fn echo(entity: &[EntityData]) -> Vec<EntityOut> {
    entity
        .iter()
        .map(|e| {
            build!(EntityOut {
                entity_type: e.entity_type.clone(),
                entity_name: e.entity_name.clone()
            })
        })
        .collect()
}

/// The records that carry out one entry, or why it is refused.
fn records_of(entry: &EntryData) -> Result<Vec<MetadataRecord>, String> {
    let entity = entity_of(&entry.entity)?;
    let mut keys = Vec::new();
    let mut records = Vec::new();
    for op in &entry.ops {
        let key = op.key.to_string();
        if keys.contains(&key) {
            return Err(format!("quota '{key}' appears twice in one entry"));
        }
        keys.push(key.clone());
        let value = if op.remove {
            // Only the key is checked.
            crate::quota::check_value(&key, 1.0)?;
            None
        } else {
            crate::quota::check_value(&key, op.value)?;
            Some(op.value.to_string())
        };
        records.push(MetadataRecord::ClientQuota {
            entity: entity.clone(),
            key,
            value,
        });
    }
    Ok(records)
}

fn entity_of(parts: &[EntityData]) -> Result<QuotaEntity, String> {
    let mut entity = QuotaEntity {
        user: None,
        client_id: None,
    };
    for p in parts {
        let name = p.entity_name.as_ref().map(|n| n.to_string());
        let slot = match p.entity_type.as_str() {
            "user" => &mut entity.user,
            "client-id" => &mut entity.client_id,
            other => {
                return Err(format!(
                "unknown or unsupported quota entity type '{other}'; Gregor has user and client-id"
            ))
            }
        };
        if slot.is_some() {
            return Err(format!(
                "entity type '{}' appears twice in one entity",
                p.entity_type.as_str()
            ));
        }
        *slot = Some(name);
    }
    if entity.user.is_none() && entity.client_id.is_none() {
        return Err("the entity is empty: give a user, a client-id, or both".into());
    }
    Ok(entity)
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = AlterClientQuotasRequest;
        type Response = AlterClientQuotasResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::AlterClientQuotas,
            min: 0,
            max: 1,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::ALTER_CONFIGS);

        async fn handle(
            ctx: &RequestContext,
            request: AlterClientQuotasRequest,
        ) -> Option<AlterClientQuotasResponse> {
            Some(handle(ctx, request).await)
        }

        fn error_response(
            _ctx: &RequestContext,
            request: &AlterClientQuotasRequest,
            error: ResponseError,
        ) -> AlterClientQuotasResponse {
            build!(AlterClientQuotasResponse {
                entries: request
                    .entries
                    .iter()
                    .map(|entry| build!(EntryOut {
                        error_code: error.code(),
                        error_message: crate::api::authorize::message_of(error),
                        entity: echo(&entry.entity)
                    }))
                    .collect()
            })
        }
    }
}
