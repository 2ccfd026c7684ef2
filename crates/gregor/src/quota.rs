//! `gregor quota`: client quotas (set, remove, list) over Kafka's AlterClientQuotas and
//! DescribeClientQuotas, so it works against any Kafka-compatible broker. An entity is a
//! user, a client id, or both; `--default-user` and `--default-client-id` name the
//! `<default>` entities, whose quota applies to each user or client without its own.

use clap::Args;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::client::{code, Client};

/// Which quota entity a command is about.
#[derive(Args, Debug, Clone)]
pub struct EntityArgs {
    /// A user (its principal's name without `User:`; `ANONYMOUS` for unauthenticated
    /// clients).
    #[arg(long, conflicts_with = "default_user")]
    pub user: Option<String>,
    /// The default user: each user without a quota of their own gets this one.
    #[arg(long)]
    pub default_user: bool,
    /// A client id (the client's `client.id`).
    #[arg(long, conflicts_with = "default_client_id")]
    pub client_id: Option<String>,
    /// The default client id: each client id without a quota of its own gets this one.
    #[arg(long)]
    pub default_client_id: bool,
}

impl EntityArgs {
    /// (entity type, name; `None` for the default), in Kafka's terms.
    fn parts(&self) -> Vec<(&'static str, Option<String>)> {
        let mut parts = Vec::new();
        if self.user.is_some() || self.default_user {
            parts.push(("user", self.user.clone()));
        }
        if self.client_id.is_some() || self.default_client_id {
            parts.push(("client-id", self.client_id.clone()));
        }
        parts
    }

    fn required(&self) -> Result<Vec<(&'static str, Option<String>)>, String> {
        let parts = self.parts();
        if parts.is_empty() {
            return Err("name an entity: --user, --default-user, --client-id or --default-client-id (a user and a client id together are one entity)".into());
        }
        Ok(parts)
    }
}

fn entity_data(parts: &[(&'static str, Option<String>)]) -> Vec<EntityData> {
    parts
        .iter()
        .map(|(kind, name)| {
            let mut e = EntityData::default();
            e.entity_type = StrBytes::from_static_str(kind);
            e.entity_name = name.clone().map(StrBytes::from_string);
            e
        })
        .collect()
}

/// `KEY=VALUE` with a number.
fn parse_setting(text: &str) -> Result<(String, f64), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| {
        format!("'{text}' is not KEY=VALUE (for example producer_byte_rate=1048576)")
    })?;
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{key}: '{value}' is not a number"))?;
    Ok((key.trim().to_string(), value))
}

/// Sets quotas (`KEY=VALUE`) or removes them (`KEY`) for one entity.
pub async fn alter(
    client: &mut Client,
    entity: &EntityArgs,
    set: &[String],
    remove: &[String],
) -> Result<(), String> {
    let parts = entity.required()?;
    let mut ops = Vec::new();
    for s in set {
        let (key, value) = parse_setting(s)?;
        let mut op = OpData::default();
        op.key = StrBytes::from_string(key);
        op.value = value;
        ops.push(op);
    }
    for key in remove {
        let mut op = OpData::default();
        op.key = StrBytes::from_string(key.clone());
        op.remove = true;
        ops.push(op);
    }
    let mut entry = EntryData::default();
    entry.entity = entity_data(&parts);
    entry.ops = ops;
    let mut req = AlterClientQuotasRequest::default();
    req.entries = vec![entry];
    let r = client.call(req, 0, 1).await?;
    for e in r.entries {
        if e.error_code != 0 {
            return Err(format!(
                "{}: {} {}",
                describe(&parts),
                code(e.error_code),
                e.error_message.map(|m| m.to_string()).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// One entity's quotas, for display.
#[derive(Debug, Serialize)]
pub struct QuotaRow {
    pub user: Option<String>,
    pub client_id: Option<String>,
    pub quotas: Vec<(String, f64)>,
}

/// The quotas of the entities matching the flags given (all, with none).
pub async fn list(client: &mut Client, entity: &EntityArgs) -> Result<Vec<QuotaRow>, String> {
    let mut req = DescribeClientQuotasRequest::default();
    req.components = entity
        .parts()
        .into_iter()
        .map(|(kind, name)| {
            let mut c = ComponentData::default();
            c.entity_type = StrBytes::from_static_str(kind);
            match name {
                Some(n) => {
                    c.match_type = 0;
                    c._match = Some(StrBytes::from_string(n));
                }
                None => c.match_type = 1,
            }
            c
        })
        .collect();
    let r = client.call(req, 0, 1).await?;
    if r.error_code != 0 {
        return Err(format!(
            "listing quotas: {} {}",
            code(r.error_code),
            r.error_message.map(|m| m.to_string()).unwrap_or_default()
        ));
    }
    let show = |name: &Option<StrBytes>| {
        name.as_ref()
            .map_or("<default>".to_string(), |n| n.to_string())
    };
    let mut rows: Vec<QuotaRow> = r
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| QuotaRow {
            user: e
                .entity
                .iter()
                .find(|p| p.entity_type.as_str() == "user")
                .map(|p| show(&p.entity_name)),
            client_id: e
                .entity
                .iter()
                .find(|p| p.entity_type.as_str() == "client-id")
                .map(|p| show(&p.entity_name)),
            quotas: e
                .values
                .into_iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect(),
        })
        .collect();
    rows.sort_by(|a, b| (&a.user, &a.client_id).cmp(&(&b.user, &b.client_id)));
    Ok(rows)
}

pub fn print(rows: &[QuotaRow]) {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.user.clone().unwrap_or_default(),
                r.client_id.clone().unwrap_or_default(),
                r.quotas
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    println!(
        "{}",
        crate::table::table(&["USER", "CLIENT ID", "QUOTAS"], &table)
    );
}

fn describe(parts: &[(&'static str, Option<String>)]) -> String {
    parts
        .iter()
        .map(|(kind, name)| format!("{kind}={}", name.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(", ")
}
