//! ACLs with Kafka's semantics (KIP-290 prefixed patterns, StandardAuthorizer's rules):
//! a request is allowed when some ALLOW entry matches and no DENY entry does; super users
//! are allowed everything; a resource without any ACL is refused unless
//! `allow.everyone.if.no.acl.found`.
//!
//! An entry matches when its resource type is the resource's, its pattern is LITERAL with
//! the resource's name (or `*`) or PREFIXED with a prefix of it, its principal is the
//! caller's (or `User:*`), its host is the caller's address (or `*`), and its operation is
//! the one asked or ALL. An ALLOW for READ, WRITE, DELETE or ALTER also allows DESCRIBE,
//! and ALTER_CONFIGS allows DESCRIBE_CONFIGS; a DENY implies nothing beyond itself.

use std::net::IpAddr;

use gregor_cluster::{AclBinding, MetadataImage};

/// Kafka's AclOperation codes.
pub mod op {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
}

/// Kafka's ResourceType codes.
pub mod res {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
}

/// Kafka's PatternType codes.
pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's AclPermissionType codes.
pub mod perm {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The one name of the cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The settings that decide authorization.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    pub enabled: bool,
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
}

/// Who is asking, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `User:alice`, `User:CN=client,O=example`, or `User:ANONYMOUS`.
    pub principal: String,
    pub host: IpAddr,
}

fn resource_matches(acl: &AclBinding, resource_type: i8, name: &str) -> bool {
    acl.resource_type == resource_type
        && match acl.pattern_type {
            pattern::LITERAL => acl.resource_name == name || acl.resource_name == "*",
            pattern::PREFIXED => name.starts_with(&acl.resource_name),
            _ => false,
        }
}

fn caller_matches(acl: &AclBinding, caller: &Caller) -> bool {
    (acl.principal == caller.principal || acl.principal == "User:*")
        && (acl.host == "*" || acl.host.parse::<IpAddr>().ok() == Some(caller.host))
}

fn allow_covers(acl_op: i8, asked: i8) -> bool {
    acl_op == asked
        || acl_op == op::ALL
        || (asked == op::DESCRIBE
            && matches!(acl_op, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (asked == op::DESCRIBE_CONFIGS && acl_op == op::ALTER_CONFIGS)
}

impl Authorizer {
    /// Whether `caller` may do `operation` on the resource.
    pub fn authorize(
        &self,
        image: &MetadataImage,
        caller: &Caller,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.contains(&caller.principal) {
            return true;
        }
        let mut any_acl = false;
        let mut allowed = false;
        for acl in image.acls() {
            if !resource_matches(acl, resource_type, name) {
                continue;
            }
            any_acl = true;
            if !caller_matches(acl, caller) {
                continue;
            }
            match acl.permission {
                perm::DENY if acl.operation == operation || acl.operation == op::ALL => {
                    return false
                }
                perm::ALLOW if allow_covers(acl.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any_acl && self.allow_if_no_acl)
    }

    /// Whether `caller` may do `operation` on some resource of the type (Kafka's
    /// `authorizeByResourceType`, used for idempotent producers): an ALLOW for it matches
    /// and no DENY covers every name (a literal `*` or an empty prefix).
    pub fn authorize_any(
        &self,
        image: &MetadataImage,
        caller: &Caller,
        operation: i8,
        resource_type: i8,
    ) -> bool {
        if !self.enabled || self.super_users.contains(&caller.principal) {
            return true;
        }
        let mut allowed = false;
        for acl in image.acls() {
            if acl.resource_type != resource_type || !caller_matches(acl, caller) {
                continue;
            }
            let everything = (acl.pattern_type == pattern::LITERAL && acl.resource_name == "*")
                || (acl.pattern_type == pattern::PREFIXED && acl.resource_name.is_empty());
            match acl.permission {
                perm::DENY
                    if everything && (acl.operation == operation || acl.operation == op::ALL) =>
                {
                    return false
                }
                perm::ALLOW if allow_covers(acl.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed || self.allow_if_no_acl
    }
}

/// A DescribeAcls or DeleteAcls filter: `None` and the ANY codes match everything.
#[derive(Debug, Clone)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl AclFilter {
    pub fn matches(&self, acl: &AclBinding) -> bool {
        let resource_ok = self.resource_type == res::ANY || self.resource_type == acl.resource_type;
        let name_ok = match (self.pattern_type, &self.resource_name) {
            (pattern::MATCH, Some(name)) => match acl.pattern_type {
                pattern::LITERAL => acl.resource_name == *name || acl.resource_name == "*",
                pattern::PREFIXED => name.starts_with(&acl.resource_name),
                _ => false,
            },
            (pattern::MATCH | pattern::ANY, None) => true,
            (pattern::ANY, Some(name)) => acl.resource_name == *name,
            (p, name) => {
                p == acl.pattern_type && name.as_ref().is_none_or(|n| *n == acl.resource_name)
            }
        };
        resource_ok
            && name_ok
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == op::ANY || self.operation == acl.operation)
            && (self.permission == perm::ANY || self.permission == acl.permission)
    }
}

/// Why an ACL cannot be created, or `None` if it can (CreateAcls' INVALID_REQUEST cases).
pub fn invalid_binding(acl: &AclBinding) -> Option<String> {
    if !matches!(
        acl.resource_type,
        res::TOPIC
            | res::GROUP
            | res::CLUSTER
            | res::TRANSACTIONAL_ID
            | res::DELEGATION_TOKEN
            | res::USER
    ) {
        return Some(format!(
            "resource type {} cannot carry ACLs",
            acl.resource_type
        ));
    }
    if !matches!(acl.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
        return Some("the pattern type must be LITERAL or PREFIXED".into());
    }
    if acl.resource_type == res::CLUSTER && acl.resource_name != CLUSTER_NAME {
        return Some(format!("the cluster resource is named '{CLUSTER_NAME}'"));
    }
    if acl.resource_name.is_empty() && acl.pattern_type == pattern::LITERAL {
        return Some("the resource name is empty".into());
    }
    if !(op::ALL..=op::IDEMPOTENT_WRITE).contains(&acl.operation) {
        return Some(format!(
            "operation {} is not one an ACL can allow or deny",
            acl.operation
        ));
    }
    if !matches!(acl.permission, perm::ALLOW | perm::DENY) {
        return Some("the permission must be ALLOW or DENY".into());
    }
    match acl.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => {
            return Some(format!(
                "principal '{}' is not TYPE:NAME, e.g. User:alice",
                acl.principal
            ))
        }
    }
    if acl.host != "*" && acl.host.parse::<IpAddr>().is_err() {
        return Some(format!("host '{}' is not an IP address or *", acl.host));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_cluster::MetadataRecord;

    fn acl(rt: i8, name: &str, pt: i8, who: &str, operation: i8, permission: i8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: who.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    fn image(acls: &[AclBinding]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for a in acls {
            image.apply(&MetadataRecord::CreateAcl { acl: a.clone() });
        }
        image
    }

    fn alice() -> Caller {
        Caller {
            principal: "User:alice".into(),
            host: IpAddr::from([127, 0, 0, 1]),
        }
    }

    fn on() -> Authorizer {
        Authorizer {
            enabled: true,
            super_users: vec!["User:admin".into()],
            allow_if_no_acl: false,
        }
    }

    #[test]
    fn deny_by_default_allow_by_entry_and_deny_wins() {
        let a = on();
        let empty = image(&[]);
        assert!(!a.authorize(&empty, &alice(), op::READ, res::TOPIC, "t"));
        let admin = Caller {
            principal: "User:admin".into(),
            ..alice()
        };
        assert!(a.authorize(&empty, &admin, op::READ, res::TOPIC, "t"));
        let img = image(&[acl(
            res::TOPIC,
            "logs-",
            pattern::PREFIXED,
            "User:alice",
            op::READ,
            perm::ALLOW,
        )]);
        assert!(a.authorize(&img, &alice(), op::READ, res::TOPIC, "logs-web"));
        assert!(
            a.authorize(&img, &alice(), op::DESCRIBE, res::TOPIC, "logs-web"),
            "READ implies DESCRIBE"
        );
        assert!(!a.authorize(&img, &alice(), op::WRITE, res::TOPIC, "logs-web"));
        assert!(!a.authorize(&img, &alice(), op::READ, res::TOPIC, "metrics"));
        assert!(!a.authorize(&img, &alice(), op::READ, res::GROUP, "logs-web"));
        let img = image(&[
            acl(
                res::TOPIC,
                "*",
                pattern::LITERAL,
                "User:*",
                op::ALL,
                perm::ALLOW,
            ),
            acl(
                res::TOPIC,
                "secret",
                pattern::LITERAL,
                "User:alice",
                op::READ,
                perm::DENY,
            ),
        ]);
        assert!(a.authorize(&img, &alice(), op::READ, res::TOPIC, "public"));
        assert!(
            !a.authorize(&img, &alice(), op::READ, res::TOPIC, "secret"),
            "deny wins"
        );
        assert!(
            a.authorize(&img, &alice(), op::DESCRIBE, res::TOPIC, "secret"),
            "deny READ does not deny DESCRIBE"
        );
    }

    #[test]
    fn hosts_and_no_acl_found() {
        let mut entry = acl(
            res::GROUP,
            "g",
            pattern::LITERAL,
            "User:alice",
            op::READ,
            perm::ALLOW,
        );
        entry.host = "10.0.0.1".into();
        let img = image(&[entry]);
        assert!(!on().authorize(&img, &alice(), op::READ, res::GROUP, "g"));
        let lenient = Authorizer {
            allow_if_no_acl: true,
            ..on()
        };
        assert!(
            !lenient.authorize(&img, &alice(), op::READ, res::GROUP, "g"),
            "g has an ACL"
        );
        assert!(lenient.authorize(&img, &alice(), op::READ, res::GROUP, "other"));
        assert!(
            Authorizer::default().authorize(&img, &alice(), op::READ, res::GROUP, "g"),
            "off"
        );
    }

    #[test]
    fn by_resource_type_and_filters() {
        let a = on();
        let img = image(&[acl(
            res::TOPIC,
            "t",
            pattern::LITERAL,
            "User:alice",
            op::WRITE,
            perm::ALLOW,
        )]);
        assert!(a.authorize_any(&img, &alice(), op::WRITE, res::TOPIC));
        assert!(!a.authorize_any(&img, &alice(), op::WRITE, res::GROUP));
        let f = AclFilter {
            resource_type: res::ANY,
            resource_name: Some("t".into()),
            pattern_type: pattern::MATCH,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: perm::ANY,
        };
        assert_eq!(img.acls().filter(|x| f.matches(x)).count(), 1);
        let f = AclFilter {
            operation: op::READ,
            ..f
        };
        assert_eq!(img.acls().filter(|x| f.matches(x)).count(), 0);
        assert!(invalid_binding(&acl(
            res::CLUSTER,
            "x",
            pattern::LITERAL,
            "User:a",
            op::ALTER,
            perm::ALLOW
        ))
        .is_some());
        assert!(invalid_binding(&acl(
            res::TOPIC,
            "x",
            pattern::MATCH,
            "User:a",
            op::READ,
            perm::ALLOW
        ))
        .is_some());
        assert!(invalid_binding(&acl(
            res::TOPIC,
            "x",
            pattern::LITERAL,
            "alice",
            op::READ,
            perm::ALLOW
        ))
        .is_some());
        assert!(invalid_binding(&acl(
            res::TOPIC,
            "x",
            pattern::LITERAL,
            "User:a",
            op::READ,
            perm::ALLOW
        ))
        .is_none());
    }
}
