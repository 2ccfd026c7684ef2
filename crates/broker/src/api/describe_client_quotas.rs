//! DescribeClientQuotas: the client quotas whose entities match a filter (KIP-546). Each
//! component names an entity type (`user`, `client-id`) and matches one name, the
//! `<default>`, or any; `strict` keeps only entities with no other type. The caller needs
//! DESCRIBE_CONFIGS on the cluster, checked in `authorize`.

use gregor_cluster::QuotaEntity;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{ApiKey, DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::{str_bytes, RequestContext};

/// Kafka's match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

/// One component of the filter: the entity type, and the name it matches (`Some(None)`
/// the default) or any name (`None`).
type Component = (String, Option<Option<String>>);

pub fn handle(
    ctx: &RequestContext,
    r: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let filter = match parse_filter(&r.components) {
        Ok(f) => f,
        Err(message) => {
            return build!(DescribeClientQuotasResponse {
                error_code: ResponseError::InvalidRequest.code(),
                error_message: Some(str_bytes(&message))
            })
        }
    };
    let image = ctx.image();
    let entries = image
        .client_quotas()
        .filter(|(entity, _)| matches(entity, &filter, r.strict))
        .map(|(entity, values)| {
            build!(EntryData {
                entity: entity_data(entity),
                values: values
                    .iter()
                    .filter_map(|(k, v)| {
                        Some(build!(ValueData {
                            key: str_bytes(k),
                            value: v.parse().ok()?
                        }))
                    })
                    .collect()
            })
        })
        .collect();
    build!(DescribeClientQuotasResponse {
        entries: Some(entries)
    })
}

fn parse_filter(components: &[ComponentData]) -> Result<Vec<Component>, String> {
    let mut out: Vec<Component> = Vec::new();
    for c in components {
        let kind = c.entity_type.to_string();
        if kind != "user" && kind != "client-id" {
            return Err(format!(
                "unknown or unsupported quota entity type '{kind}'; Gregor has user and client-id"
            ));
        }
        if out.iter().any(|(k, _)| *k == kind) {
            return Err(format!("entity type '{kind}' appears twice in the filter"));
        }
        let name = match c.match_type {
            MATCH_EXACT => match &c._match {
                Some(m) => Some(Some(m.to_string())),
                None => return Err(format!("an exact match for '{kind}' needs a name")),
            },
            MATCH_DEFAULT => Some(None),
            MATCH_ANY => None,
            other => return Err(format!("unknown match type {other}")),
        };
        out.push((kind, name));
    }
    Ok(out)
}

fn part<'a>(entity: &'a QuotaEntity, kind: &str) -> &'a Option<Option<String>> {
    if kind == "user" {
        &entity.user
    } else {
        &entity.client_id
    }
}

fn matches(entity: &QuotaEntity, filter: &[Component], strict: bool) -> bool {
    let each = filter
        .iter()
        .all(|(kind, want)| match (part(entity, kind), want) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(name), Some(wanted)) => name == wanted,
        });
    let types = usize::from(entity.user.is_some()) + usize::from(entity.client_id.is_some());
    each && (!strict || types == filter.len())
}

fn entity_data(entity: &QuotaEntity) -> Vec<EntityData> {
    [("user", &entity.user), ("client-id", &entity.client_id)]
        .into_iter()
        .filter_map(|(kind, name)| {
            name.as_ref().map(|name| {
                build!(EntityData {
                    entity_type: str_bytes(kind),
                    entity_name: name.as_deref().map(str_bytes)
                })
            })
        })
        .collect()
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = DescribeClientQuotasRequest;
        type Response = DescribeClientQuotasResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DescribeClientQuotas,
            min: 0,
            max: 1,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::DESCRIBE_CONFIGS);

        async fn handle(
            ctx: &RequestContext,
            request: DescribeClientQuotasRequest,
        ) -> Option<DescribeClientQuotasResponse> {
            Some(handle(ctx, request))
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &DescribeClientQuotasRequest,
            error: ResponseError,
        ) -> DescribeClientQuotasResponse {
            build!(DescribeClientQuotasResponse {
                error_code: error.code(),
                error_message: crate::api::authorize::message_of(error)
            })
        }
    }
}
