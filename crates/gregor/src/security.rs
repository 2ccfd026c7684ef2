//! `gregor user` (SCRAM credentials) and `gregor acl` (access-control entries), over
//! Kafka's DescribeUserScramCredentials / AlterUserScramCredentials and CreateAcls /
//! DescribeAcls / DeleteAcls, so they work against any Kafka-compatible broker; and
//! `gregor user create --data-dir` for the first users, before the broker's first start.

use std::path::Path;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use gregor_broker::security::acl::{op, pattern, perm, res, CLUSTER_NAME};
use gregor_broker::security::scram::{self, Mechanism};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest,
    DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use crate::client::{code, Client};

/// The message for an error code the broker returned for `what`.
fn failed(what: &str, error_code: i16, message: Option<StrBytes>) -> String {
    format!(
        "{what}: {} {}",
        code(error_code),
        message.map(|m| m.to_string()).unwrap_or_default()
    )
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScramMechanism {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl ScramMechanism {
    pub fn mechanism(self) -> Mechanism {
        match self {
            Self::ScramSha256 => Mechanism::Sha256,
            Self::ScramSha512 => Mechanism::Sha512,
        }
    }
}

/// Reads the first line of a password file (a file, so passwords stay out of `ps` and
/// shell history).
pub fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
    let pw = text.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        return Err(format!(
            "--password-file {}: the first line is empty",
            path.display()
        ));
    }
    Ok(pw)
}

/// Creates a user offline: the credential goes to the data directory's bootstrap records,
/// which the broker commits at its next start.
pub fn create_offline(
    data_dir: &Path,
    user: &str,
    mechanism: Mechanism,
    password: &str,
    iterations: u32,
) -> Result<(), String> {
    // A running broker owns the directory: the user must then be created online.
    let lock = gregor_storage::DataDirLock::acquire(data_dir).map_err(|e| {
        format!("{e}; to add a user to a running cluster use `gregor user create` with --bootstrap")
    })?;
    lock.make_private()?;
    let credential = scram::credential_from_password(mechanism, password, iterations)?;
    let record = gregor_broker::state::bootstrap_record_line(user, mechanism.name(), credential)?;
    let path = gregor_broker::state::bootstrap_records_path(data_dir);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    writeln!(f, "{record}")
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Creates or replaces a user's credential on a running cluster.
pub async fn create_online(
    client: &mut Client,
    user: &str,
    mechanism: Mechanism,
    password: &str,
    iterations: u32,
) -> Result<(), String> {
    let salt = scram::random_bytes(32)?;
    let salted = scram::salted_password(mechanism, password.as_bytes(), &salt, iterations);
    let mut u = ScramCredentialUpsertion::default();
    u.name = StrBytes::from_string(user.to_string());
    u.mechanism = mechanism.code();
    u.iterations = iterations as i32;
    u.salt = Bytes::from(salt);
    u.salted_password = Bytes::from(salted);
    let mut req = AlterUserScramCredentialsRequest::default();
    req.upsertions = vec![u];
    alter_credentials(client, req).await
}

pub async fn delete_user(
    client: &mut Client,
    user: &str,
    mechanisms: &[Mechanism],
) -> Result<(), String> {
    let mut req = AlterUserScramCredentialsRequest::default();
    req.deletions = mechanisms
        .iter()
        .map(|m| {
            let mut d = ScramCredentialDeletion::default();
            d.name = StrBytes::from_string(user.to_string());
            d.mechanism = m.code();
            d
        })
        .collect();
    alter_credentials(client, req).await
}

/// Sends AlterUserScramCredentials; the first user refused is the error.
async fn alter_credentials(
    client: &mut Client,
    req: AlterUserScramCredentialsRequest,
) -> Result<(), String> {
    let r = client.call(req, 0, 0).await?;
    for res in r.results {
        if res.error_code != 0 {
            return Err(failed(
                &format!("user {}", res.user),
                res.error_code,
                res.error_message,
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct UserInfo {
    pub user: String,
    /// (mechanism, iterations)
    pub credentials: Vec<(String, i32)>,
}

pub async fn list_users(client: &mut Client) -> Result<Vec<UserInfo>, String> {
    let r = client
        .call(DescribeUserScramCredentialsRequest::default(), 0, 0)
        .await?;
    if r.error_code != 0 {
        return Err(failed("listing users", r.error_code, r.error_message));
    }
    Ok(r.results
        .into_iter()
        .map(|u| UserInfo {
            user: u.user.to_string(),
            credentials: u
                .credential_infos
                .iter()
                .map(|c| {
                    let m = Mechanism::from_code(c.mechanism).map_or("?", |m| m.name());
                    (m.to_string(), c.iterations)
                })
                .collect(),
        })
        .collect())
}

pub fn print_users(users: &[UserInfo]) {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.user.clone(),
                u.credentials
                    .iter()
                    .map(|(m, i)| format!("{m} ({i} iterations)"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    println!("{}", crate::table::table(&["USER", "CREDENTIALS"], &rows));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    fn code(self) -> i8 {
        match self {
            Self::All => op::ALL,
            Self::Read => op::READ,
            Self::Write => op::WRITE,
            Self::Create => op::CREATE,
            Self::Delete => op::DELETE,
            Self::Alter => op::ALTER,
            Self::Describe => op::DESCRIBE,
            Self::ClusterAction => op::CLUSTER_ACTION,
            Self::DescribeConfigs => op::DESCRIBE_CONFIGS,
            Self::AlterConfigs => op::ALTER_CONFIGS,
            Self::IdempotentWrite => op::IDEMPOTENT_WRITE,
        }
    }
}

fn op_name(c: i8) -> &'static str {
    match c {
        op::ALL => "ALL",
        op::READ => "READ",
        op::WRITE => "WRITE",
        op::CREATE => "CREATE",
        op::DELETE => "DELETE",
        op::ALTER => "ALTER",
        op::DESCRIBE => "DESCRIBE",
        op::CLUSTER_ACTION => "CLUSTER_ACTION",
        op::DESCRIBE_CONFIGS => "DESCRIBE_CONFIGS",
        op::ALTER_CONFIGS => "ALTER_CONFIGS",
        op::IDEMPOTENT_WRITE => "IDEMPOTENT_WRITE",
        _ => "?",
    }
}

fn resource_name(c: i8) -> &'static str {
    match c {
        res::TOPIC => "TOPIC",
        res::GROUP => "GROUP",
        res::CLUSTER => "CLUSTER",
        res::TRANSACTIONAL_ID => "TRANSACTIONAL_ID",
        res::DELEGATION_TOKEN => "DELEGATION_TOKEN",
        res::USER => "USER",
        _ => "?",
    }
}

/// Which resource an ACL command is about, and how.
#[derive(Args, Debug, Clone)]
pub struct AclSpec {
    /// The principal, e.g. User:alice or User:CN=client,O=example (User:* for everyone).
    #[arg(long)]
    pub principal: Option<String>,
    /// An operation (repeatable).
    #[arg(long = "operation", value_enum)]
    pub operations: Vec<Operation>,
    /// A topic ("*" for every topic).
    #[arg(long, group = "resource")]
    pub topic: Option<String>,
    /// A consumer group.
    #[arg(long, group = "resource")]
    pub group: Option<String>,
    /// A transactional id.
    #[arg(long, group = "resource")]
    pub transactional_id: Option<String>,
    /// The cluster itself (for CREATE topics, ALTER ACLs, CLUSTER_ACTION, ...).
    #[arg(long, group = "resource")]
    pub cluster: bool,
    /// The name is a prefix (PREFIXED pattern) instead of a literal name.
    #[arg(long)]
    pub prefixed: bool,
    /// Deny instead of allow (a deny wins over any allow).
    #[arg(long)]
    pub deny: bool,
    /// The client address the entry applies to (default: any, "*").
    #[arg(long)]
    pub host: Option<String>,
}

impl AclSpec {
    fn resource(&self) -> Option<(i8, String)> {
        if let Some(t) = &self.topic {
            Some((res::TOPIC, t.clone()))
        } else if let Some(g) = &self.group {
            Some((res::GROUP, g.clone()))
        } else if let Some(t) = &self.transactional_id {
            Some((res::TRANSACTIONAL_ID, t.clone()))
        } else if self.cluster {
            Some((res::CLUSTER, CLUSTER_NAME.to_string()))
        } else {
            None
        }
    }
    fn pattern(&self) -> i8 {
        if self.prefixed {
            pattern::PREFIXED
        } else {
            pattern::LITERAL
        }
    }
    fn permission(&self) -> i8 {
        if self.deny {
            perm::DENY
        } else {
            perm::ALLOW
        }
    }
}

pub async fn add_acls(client: &mut Client, spec: &AclSpec) -> Result<usize, String> {
    let (rt, name) = spec
        .resource()
        .ok_or("name a resource: --topic, --group, --transactional-id or --cluster")?;
    let principal = spec
        .principal
        .clone()
        .ok_or("name a --principal, e.g. User:alice")?;
    if spec.operations.is_empty() {
        return Err("name at least one --operation, e.g. --operation read".into());
    }
    let mut req = CreateAclsRequest::default();
    req.creations = spec
        .operations
        .iter()
        .map(|o| {
            let mut c = AclCreation::default();
            c.resource_type = rt;
            c.resource_name = StrBytes::from_string(name.clone());
            c.resource_pattern_type = spec.pattern();
            c.principal = StrBytes::from_string(principal.clone());
            c.host = StrBytes::from_string(spec.host.clone().unwrap_or_else(|| "*".into()));
            c.operation = o.code();
            c.permission_type = spec.permission();
            c
        })
        .collect();
    let n = req.creations.len();
    let r = client.call(req, 1, 3).await?;
    for x in r.results {
        if x.error_code != 0 {
            return Err(failed("the broker refused", x.error_code, x.error_message));
        }
    }
    Ok(n)
}

#[derive(Debug, Serialize)]
pub struct AclRow {
    pub resource_type: String,
    pub name: String,
    pub pattern: String,
    pub principal: String,
    pub host: String,
    pub operation: String,
    pub permission: String,
}

fn filter_parts(spec: &AclSpec) -> (i8, Option<String>, i8) {
    match spec.resource() {
        Some((rt, name)) => (
            rt,
            Some(name),
            if spec.prefixed {
                pattern::PREFIXED
            } else {
                pattern::LITERAL
            },
        ),
        None => (res::ANY, None, pattern::ANY),
    }
}

pub async fn list_acls(client: &mut Client, spec: &AclSpec) -> Result<Vec<AclRow>, String> {
    let (rt, name, pt) = filter_parts(spec);
    let mut req = DescribeAclsRequest::default();
    req.resource_type_filter = rt;
    req.resource_name_filter = name.map(StrBytes::from_string);
    req.pattern_type_filter = pt;
    req.principal_filter = spec.principal.clone().map(StrBytes::from_string);
    req.host_filter = spec.host.clone().map(StrBytes::from_string);
    req.operation = spec.operations.first().map_or(op::ANY, |o| o.code());
    req.permission_type = perm::ANY;
    let r = client.call(req, 1, 3).await?;
    if r.error_code != 0 {
        return Err(failed("the broker refused", r.error_code, r.error_message));
    }
    let mut rows = Vec::new();
    for resource in r.resources {
        for a in resource.acls {
            rows.push(AclRow {
                resource_type: resource_name(resource.resource_type).into(),
                name: resource.resource_name.to_string(),
                pattern: if resource.pattern_type == pattern::PREFIXED {
                    "PREFIXED".into()
                } else {
                    "LITERAL".into()
                },
                principal: a.principal.to_string(),
                host: a.host.to_string(),
                operation: op_name(a.operation).into(),
                permission: if a.permission_type == perm::DENY {
                    "DENY".into()
                } else {
                    "ALLOW".into()
                },
            });
        }
    }
    Ok(rows)
}

pub fn print_acls(rows: &[AclRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.resource_type.clone(),
                r.name.clone(),
                r.pattern.clone(),
                r.principal.clone(),
                r.host.clone(),
                r.operation.clone(),
                r.permission.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        crate::table::table(
            &[
                "RESOURCE",
                "NAME",
                "PATTERN",
                "PRINCIPAL",
                "HOST",
                "OPERATION",
                "PERMISSION"
            ],
            &rows
        )
    );
}

pub async fn remove_acls(client: &mut Client, spec: &AclSpec) -> Result<usize, String> {
    let (rt, name, pt) = filter_parts(spec);
    if rt == res::ANY && spec.principal.is_none() {
        return Err(
            "name a resource or a --principal; removing every ACL at once is refused".into(),
        );
    }
    let ops: Vec<i8> = if spec.operations.is_empty() {
        vec![op::ANY]
    } else {
        spec.operations.iter().map(|o| o.code()).collect()
    };
    let mut req = DeleteAclsRequest::default();
    req.filters = ops
        .into_iter()
        .map(|o| {
            let mut f = DeleteAclsFilter::default();
            f.resource_type_filter = rt;
            f.resource_name_filter = name.clone().map(StrBytes::from_string);
            f.pattern_type_filter = pt;
            f.principal_filter = spec.principal.clone().map(StrBytes::from_string);
            f.host_filter = spec.host.clone().map(StrBytes::from_string);
            f.operation = o;
            f.permission_type = if spec.deny { perm::DENY } else { perm::ANY };
            f
        })
        .collect();
    let r = client.call(req, 1, 3).await?;
    let mut removed = 0;
    for f in r.filter_results {
        if f.error_code != 0 {
            return Err(failed("the broker refused", f.error_code, f.error_message));
        }
        removed += f.matching_acls.len();
    }
    Ok(removed)
}
