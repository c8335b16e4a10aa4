//! The Azure Resource Manager plane (and Coffer's admin endpoints, which share its auth and
//! error shape). Paths are matched case-insensitively and any `api-version` is accepted.
//! Requests are parsed into [`ArmOp`] by a pure function, authenticated, executed against the
//! management service, and audited (every write and every denial) before the response is sent.
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use coffer_domain::DomainError;
use coffer_domain::audit::{AuditIdentity, AuditRecord};
use coffer_domain::identity::{AuthError, Caller, Plane};
use coffer_domain::mgmt::{IDENTITY_TYPE, Put, STORAGE_TYPE, VAULT_TYPE};
use coffer_secret::SecretString;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::body::{BodyError, read_limited};
use crate::{AppState, peer_ip};

/// ARM's request size limit.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Resource types served under `providers/{namespace}/{type}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vault,
    Identity,
    StorageAccount,
}

impl Kind {
    fn parse(ns: &str, ty: &str) -> Option<Self> {
        let t = format!("{ns}/{ty}").to_ascii_lowercase();
        match t.as_str() {
            "microsoft.keyvault/vaults" => Some(Kind::Vault),
            "microsoft.managedidentity/userassignedidentities" => Some(Kind::Identity),
            "microsoft.storage/storageaccounts" => Some(Kind::StorageAccount),
            _ => None,
        }
    }
    fn type_name(self) -> &'static str {
        match self {
            Kind::Vault => VAULT_TYPE,
            Kind::Identity => IDENTITY_TYPE,
            Kind::StorageAccount => STORAGE_TYPE,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ArmOp {
    ListSubscriptions,
    GetSubscription {
        sub: String,
    },
    PutAlias {
        alias: String,
    },
    GetAlias {
        alias: String,
    },
    ListGroups {
        sub: String,
    },
    PutGroup {
        sub: String,
        rg: String,
    },
    PatchGroup {
        sub: String,
        rg: String,
    },
    GetGroup {
        sub: String,
        rg: String,
    },
    HeadGroup {
        sub: String,
        rg: String,
    },
    DeleteGroup {
        sub: String,
        rg: String,
    },
    ListResources {
        sub: String,
        rg: Option<String>,
    },
    ListTyped {
        sub: String,
        rg: Option<String>,
        kind: Kind,
    },
    PutResource {
        sub: String,
        rg: String,
        kind: Kind,
        name: String,
    },
    PatchResource {
        sub: String,
        rg: String,
        kind: Kind,
        name: String,
    },
    GetResource {
        sub: String,
        rg: String,
        kind: Kind,
        name: String,
    },
    DeleteResource {
        sub: String,
        rg: String,
        kind: Kind,
        name: String,
    },
    ListDeletedVaults {
        sub: String,
    },
    GetDeletedVault {
        sub: String,
        location: String,
        name: String,
    },
    PurgeDeletedVault {
        sub: String,
        location: String,
        name: String,
    },
    CheckVaultName {
        sub: String,
    },
    CheckStorageName {
        sub: String,
    },
    ListStorageKeys {
        sub: String,
        rg: String,
        name: String,
    },
    RegenerateStorageKey {
        sub: String,
        rg: String,
        name: String,
    },
    ListRoleDefinitions {
        scope: String,
    },
    GetRoleDefinition {
        scope: String,
        id: String,
    },
    ListRoleAssignments {
        scope: String,
    },
    PutRoleAssignment {
        scope: String,
        name: String,
    },
    GetRoleAssignment {
        scope: String,
        name: String,
    },
    DeleteRoleAssignment {
        scope: String,
        name: String,
    },
    ListEncryptionScopes {
        sub: String,
        rg: String,
        account: String,
    },
    PutEncryptionScope {
        sub: String,
        rg: String,
        account: String,
        name: String,
        patch: bool,
    },
    GetEncryptionScope {
        sub: String,
        rg: String,
        account: String,
        name: String,
    },
    ListEventSubscriptions {
        scope: String,
    },
    PutEventSubscription {
        scope: String,
        name: String,
    },
    GetEventSubscription {
        scope: String,
        name: String,
    },
    DeleteEventSubscription {
        scope: String,
        name: String,
    },
    /// Coffer extension: `{subscription}/deadLetters`.
    ListDeadLetters {
        scope: String,
        name: String,
    },
    AdminCreateServicePrincipal,
    AdminCreateUser,
    AdminAdvanceClock,
    AdminFaults,
    AdminAudit,
    AdminHealth,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl ArmOp {
    /// Parse method + path (percent-decoded segments) into an operation.
    pub fn parse(method: &Method, path: &str) -> Option<Self> {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = method.clone();
        let (get, put, patch, del, post, head) = (
            m == Method::GET,
            m == Method::PUT,
            m == Method::PATCH,
            m == Method::DELETE,
            m == Method::POST,
            m == Method::HEAD,
        );
        // Microsoft.EventGrid event subscriptions on a resource.
        if let Some(i) = (1..s.len().saturating_sub(1))
            .find(|&i| eq(s[i], "providers") && eq(s[i + 1], "Microsoft.EventGrid"))
        {
            let scope = format!("/{}", s[..i].join("/"));
            return match &s[i + 2..] {
                [t] if eq(t, "eventSubscriptions") && get => {
                    Some(Self::ListEventSubscriptions { scope })
                }
                [t, n] if eq(t, "eventSubscriptions") => {
                    let name = n.to_string();
                    if put {
                        Some(Self::PutEventSubscription { scope, name })
                    } else if get {
                        Some(Self::GetEventSubscription { scope, name })
                    } else if del {
                        Some(Self::DeleteEventSubscription { scope, name })
                    } else {
                        None
                    }
                }
                [t, n, d] if eq(t, "eventSubscriptions") && eq(d, "deadLetters") && get => {
                    Some(Self::ListDeadLetters {
                        scope,
                        name: n.to_string(),
                    })
                }
                _ => None,
            };
        }
        // Microsoft.Authorization at any scope.
        if let Some(i) = (0..s.len().saturating_sub(1))
            .find(|&i| eq(s[i], "providers") && eq(s[i + 1], "Microsoft.Authorization"))
        {
            let scope = if i == 0 {
                "/".to_string()
            } else {
                format!("/{}", s[..i].join("/"))
            };
            let rest = &s[i + 2..];
            return match rest {
                [t] if eq(t, "roleDefinitions") && get => Some(Self::ListRoleDefinitions { scope }),
                [t, id] if eq(t, "roleDefinitions") && get => Some(Self::GetRoleDefinition {
                    scope,
                    id: id.to_string(),
                }),
                [t] if eq(t, "roleAssignments") && get => Some(Self::ListRoleAssignments { scope }),
                [t, n] if eq(t, "roleAssignments") => {
                    let name = n.to_string();
                    if put {
                        Some(Self::PutRoleAssignment { scope, name })
                    } else if get {
                        Some(Self::GetRoleAssignment { scope, name })
                    } else if del {
                        Some(Self::DeleteRoleAssignment { scope, name })
                    } else {
                        None
                    }
                }
                _ => None,
            };
        }
        match s.as_slice() {
            ["coffer", "admin", "servicePrincipals"] if post => {
                Some(Self::AdminCreateServicePrincipal)
            }
            ["coffer", "admin", "users"] if post => Some(Self::AdminCreateUser),
            ["coffer", "admin", "clock"] if post => Some(Self::AdminAdvanceClock),
            ["coffer", "admin", "faults"] if post => Some(Self::AdminFaults),
            ["coffer", "admin", "audit"] if get => Some(Self::AdminAudit),
            ["coffer", "admin", "health"] if get => Some(Self::AdminHealth),
            [p, ns, a, alias]
                if eq(p, "providers") && eq(ns, "Microsoft.Subscription") && eq(a, "aliases") =>
            {
                let alias = alias.to_string();
                if put {
                    Some(Self::PutAlias { alias })
                } else if get {
                    Some(Self::GetAlias { alias })
                } else {
                    None
                }
            }
            [k] if eq(k, "subscriptions") && get => Some(Self::ListSubscriptions),
            [k, sub] if eq(k, "subscriptions") && get => Some(Self::GetSubscription {
                sub: sub.to_string(),
            }),
            [k, sub, g] if eq(k, "subscriptions") && eq(g, "resourceGroups") && get => {
                Some(Self::ListGroups {
                    sub: sub.to_string(),
                })
            }
            [k, sub, r] if eq(k, "subscriptions") && eq(r, "resources") && get => {
                Some(Self::ListResources {
                    sub: sub.to_string(),
                    rg: None,
                })
            }
            [k, sub, g, rg] if eq(k, "subscriptions") && eq(g, "resourceGroups") => {
                let (sub, rg) = (sub.to_string(), rg.to_string());
                if put {
                    Some(Self::PutGroup { sub, rg })
                } else if patch {
                    Some(Self::PatchGroup { sub, rg })
                } else if get {
                    Some(Self::GetGroup { sub, rg })
                } else if head {
                    Some(Self::HeadGroup { sub, rg })
                } else if del {
                    Some(Self::DeleteGroup { sub, rg })
                } else {
                    None
                }
            }
            [k, sub, g, rg, r]
                if eq(k, "subscriptions")
                    && eq(g, "resourceGroups")
                    && eq(r, "resources")
                    && get =>
            {
                Some(Self::ListResources {
                    sub: sub.to_string(),
                    rg: Some(rg.to_string()),
                })
            }
            [k, sub, p, ns, ty] if eq(k, "subscriptions") && eq(p, "providers") && get => {
                if eq(ns, "Microsoft.KeyVault") && eq(ty, "deletedVaults") {
                    return Some(Self::ListDeletedVaults {
                        sub: sub.to_string(),
                    });
                }
                Kind::parse(ns, ty).map(|kind| Self::ListTyped {
                    sub: sub.to_string(),
                    rg: None,
                    kind,
                })
            }
            [k, sub, p, ns, c]
                if eq(k, "subscriptions")
                    && eq(p, "providers")
                    && eq(ns, "Microsoft.KeyVault")
                    && eq(c, "checkNameAvailability")
                    && post =>
            {
                Some(Self::CheckVaultName {
                    sub: sub.to_string(),
                })
            }
            [k, sub, p, ns, c]
                if eq(k, "subscriptions")
                    && eq(p, "providers")
                    && eq(ns, "Microsoft.Storage")
                    && eq(c, "checkNameAvailability")
                    && post =>
            {
                Some(Self::CheckStorageName {
                    sub: sub.to_string(),
                })
            }
            [k, sub, g, rg, p, ns, ty, account, es]
                if eq(k, "subscriptions")
                    && eq(g, "resourceGroups")
                    && eq(p, "providers")
                    && eq(ns, "Microsoft.Storage")
                    && eq(ty, "storageAccounts")
                    && eq(es, "encryptionScopes")
                    && get =>
            {
                Some(Self::ListEncryptionScopes {
                    sub: sub.to_string(),
                    rg: rg.to_string(),
                    account: account.to_string(),
                })
            }
            [k, sub, g, rg, p, ns, ty, account, es, name]
                if eq(k, "subscriptions")
                    && eq(g, "resourceGroups")
                    && eq(p, "providers")
                    && eq(ns, "Microsoft.Storage")
                    && eq(ty, "storageAccounts")
                    && eq(es, "encryptionScopes") =>
            {
                let (sub, rg, account, name) = (
                    sub.to_string(),
                    rg.to_string(),
                    account.to_string(),
                    name.to_string(),
                );
                if put || patch {
                    Some(Self::PutEncryptionScope {
                        sub,
                        rg,
                        account,
                        name,
                        patch,
                    })
                } else if get {
                    Some(Self::GetEncryptionScope {
                        sub,
                        rg,
                        account,
                        name,
                    })
                } else {
                    None
                }
            }
            [k, sub, g, rg, p, ns, ty, name, action]
                if eq(k, "subscriptions")
                    && eq(g, "resourceGroups")
                    && eq(p, "providers")
                    && eq(ns, "Microsoft.Storage")
                    && eq(ty, "storageAccounts")
                    && post =>
            {
                let (sub, rg, name) = (sub.to_string(), rg.to_string(), name.to_string());
                if eq(action, "listKeys") {
                    Some(Self::ListStorageKeys { sub, rg, name })
                } else if eq(action, "regenerateKey") {
                    Some(Self::RegenerateStorageKey { sub, rg, name })
                } else {
                    None
                }
            }
            [k, sub, p, ns, l, loc, d, name]
                if eq(k, "subscriptions")
                    && eq(p, "providers")
                    && eq(ns, "Microsoft.KeyVault")
                    && eq(l, "locations")
                    && eq(d, "deletedVaults")
                    && get =>
            {
                Some(Self::GetDeletedVault {
                    sub: sub.to_string(),
                    location: loc.to_string(),
                    name: name.to_string(),
                })
            }
            [k, sub, p, ns, l, loc, d, name, pu]
                if eq(k, "subscriptions")
                    && eq(p, "providers")
                    && eq(ns, "Microsoft.KeyVault")
                    && eq(l, "locations")
                    && eq(d, "deletedVaults")
                    && eq(pu, "purge")
                    && post =>
            {
                Some(Self::PurgeDeletedVault {
                    sub: sub.to_string(),
                    location: loc.to_string(),
                    name: name.to_string(),
                })
            }
            [k, sub, g, rg, p, ns, ty]
                if eq(k, "subscriptions")
                    && eq(g, "resourceGroups")
                    && eq(p, "providers")
                    && get =>
            {
                Kind::parse(ns, ty).map(|kind| Self::ListTyped {
                    sub: sub.to_string(),
                    rg: Some(rg.to_string()),
                    kind,
                })
            }
            [k, sub, g, rg, p, ns, ty, name]
                if eq(k, "subscriptions") && eq(g, "resourceGroups") && eq(p, "providers") =>
            {
                let kind = Kind::parse(ns, ty)?;
                let (sub, rg, name) = (sub.to_string(), rg.to_string(), name.to_string());
                if put {
                    Some(Self::PutResource {
                        sub,
                        rg,
                        kind,
                        name,
                    })
                } else if patch {
                    Some(Self::PatchResource {
                        sub,
                        rg,
                        kind,
                        name,
                    })
                } else if get {
                    Some(Self::GetResource {
                        sub,
                        rg,
                        kind,
                        name,
                    })
                } else if del {
                    Some(Self::DeleteResource {
                        sub,
                        rg,
                        kind,
                        name,
                    })
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// The Azure operation name recorded in audit.
    fn operation_name(&self) -> String {
        use ArmOp::*;
        match self {
            ListSubscriptions | GetSubscription { .. } => {
                "Microsoft.Resources/subscriptions/read".into()
            }
            PutAlias { .. } => "Microsoft.Subscription/aliases/write".into(),
            GetAlias { .. } => "Microsoft.Subscription/aliases/read".into(),
            ListGroups { .. } | GetGroup { .. } | HeadGroup { .. } => {
                "Microsoft.Resources/subscriptions/resourceGroups/read".into()
            }
            PutGroup { .. } | PatchGroup { .. } => {
                "Microsoft.Resources/subscriptions/resourceGroups/write".into()
            }
            DeleteGroup { .. } => "Microsoft.Resources/subscriptions/resourceGroups/delete".into(),
            ListResources { .. } => "Microsoft.Resources/subscriptions/resources/read".into(),
            ListTyped { kind, .. } | GetResource { kind, .. } => {
                format!("{}/read", kind.type_name())
            }
            PutResource { kind, .. } | PatchResource { kind, .. } => {
                format!("{}/write", kind.type_name())
            }
            DeleteResource { kind, .. } => format!("{}/delete", kind.type_name()),
            ListDeletedVaults { .. } | GetDeletedVault { .. } => {
                "Microsoft.KeyVault/locations/deletedVaults/read".into()
            }
            PurgeDeletedVault { .. } => {
                "Microsoft.KeyVault/locations/deletedVaults/purge/action".into()
            }
            CheckVaultName { .. } => "Microsoft.KeyVault/checkNameAvailability/read".into(),
            CheckStorageName { .. } => "Microsoft.Storage/checknameavailability/read".into(),
            ListStorageKeys { .. } => "Microsoft.Storage/storageAccounts/listkeys/action".into(),
            RegenerateStorageKey { .. } => {
                "Microsoft.Storage/storageAccounts/regeneratekey/action".into()
            }
            ListRoleDefinitions { .. } | GetRoleDefinition { .. } => {
                "Microsoft.Authorization/roleDefinitions/read".into()
            }
            ListRoleAssignments { .. } | GetRoleAssignment { .. } => {
                "Microsoft.Authorization/roleAssignments/read".into()
            }
            PutRoleAssignment { .. } => "Microsoft.Authorization/roleAssignments/write".into(),
            DeleteRoleAssignment { .. } => "Microsoft.Authorization/roleAssignments/delete".into(),
            ListEncryptionScopes { .. } | GetEncryptionScope { .. } => {
                "Microsoft.Storage/storageAccounts/encryptionScopes/read".into()
            }
            PutEncryptionScope { .. } => {
                "Microsoft.Storage/storageAccounts/encryptionScopes/write".into()
            }
            ListEventSubscriptions { .. }
            | GetEventSubscription { .. }
            | ListDeadLetters { .. } => "Microsoft.EventGrid/eventSubscriptions/read".into(),
            PutEventSubscription { .. } => "Microsoft.EventGrid/eventSubscriptions/write".into(),
            DeleteEventSubscription { .. } => {
                "Microsoft.EventGrid/eventSubscriptions/delete".into()
            }
            AdminCreateServicePrincipal => "Coffer/servicePrincipals/write".into(),
            AdminCreateUser => "Coffer/users/write".into(),
            AdminAdvanceClock => "Coffer/clock/action".into(),
            AdminFaults => "Coffer/faults/action".into(),
            AdminAudit => "Coffer/audit/read".into(),
            AdminHealth => "Coffer/health/read".into(),
        }
    }

    fn resource_id(&self) -> String {
        use ArmOp::*;
        match self {
            GetSubscription { sub }
            | ListGroups { sub }
            | ListResources { sub, .. }
            | ListTyped { sub, .. }
            | ListDeletedVaults { sub }
            | CheckVaultName { sub }
            | CheckStorageName { sub } => format!("/subscriptions/{sub}"),
            ListStorageKeys { sub, rg, name } | RegenerateStorageKey { sub, rg, name } => {
                format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{STORAGE_TYPE}/{name}")
            }
            PutGroup { sub, rg }
            | PatchGroup { sub, rg }
            | GetGroup { sub, rg }
            | HeadGroup { sub, rg }
            | DeleteGroup { sub, rg } => format!("/subscriptions/{sub}/resourceGroups/{rg}"),
            PutResource {
                sub,
                rg,
                kind,
                name,
            }
            | PatchResource {
                sub,
                rg,
                kind,
                name,
            }
            | GetResource {
                sub,
                rg,
                kind,
                name,
            }
            | DeleteResource {
                sub,
                rg,
                kind,
                name,
            } => {
                format!(
                    "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}/{name}",
                    kind.type_name()
                )
            }
            GetDeletedVault {
                sub,
                location,
                name,
            }
            | PurgeDeletedVault {
                sub,
                location,
                name,
            } => format!(
                "/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{name}"
            ),
            ListRoleDefinitions { scope }
            | GetRoleDefinition { scope, .. }
            | ListRoleAssignments { scope } => scope.clone(),
            PutRoleAssignment { scope, name }
            | GetRoleAssignment { scope, name }
            | DeleteRoleAssignment { scope, name } => {
                format!(
                    "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
                    scope.trim_end_matches('/')
                )
            }
            ListEncryptionScopes { sub, rg, account } => format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{account}"
            ),
            PutEncryptionScope {
                sub,
                rg,
                account,
                name,
                ..
            }
            | GetEncryptionScope {
                sub,
                rg,
                account,
                name,
            } => format!(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{account}/encryptionScopes/{name}"
            ),
            ListEventSubscriptions { scope } => scope.clone(),
            PutEventSubscription { scope, name }
            | GetEventSubscription { scope, name }
            | DeleteEventSubscription { scope, name }
            | ListDeadLetters { scope, name } => format!(
                "{}/providers/Microsoft.EventGrid/eventSubscriptions/{name}",
                scope.trim_end_matches('/')
            ),
            PutAlias { alias } | GetAlias { alias } => {
                format!("/providers/Microsoft.Subscription/aliases/{alias}")
            }
            ListSubscriptions => "/subscriptions".into(),
            AdminCreateServicePrincipal
            | AdminCreateUser
            | AdminAdvanceClock
            | AdminFaults
            | AdminAudit
            | AdminHealth => "/coffer/admin".into(),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

// ---- responses ------------------------------------------------------------------------------

fn respond(status: StatusCode, body: Option<&Value>, request_id: &str) -> Response {
    let b = Response::builder()
        .status(status)
        .header("x-ms-request-id", request_id)
        .header("x-ms-correlation-request-id", request_id)
        .header("x-ms-ratelimit-remaining-subscription-writes", "1199");
    match body {
        Some(v) => b
            .header(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .unwrap_or_default()
}

/// The ARM error envelope.
pub fn arm_error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    respond(
        status,
        Some(&json!({"error": {"code": code, "message": message}})),
        request_id,
    )
}

/// Map a domain error to ARM (the one place this happens).
fn domain_error(e: &DomainError, request_id: &str) -> Response {
    let (status, code) = match e {
        DomainError::InvalidName { kind, .. } => (
            StatusCode::BAD_REQUEST,
            match *kind {
                "vault" => "VaultNameNotValid",
                "resource group" => "InvalidResourceGroupName",
                "storage account" => "AccountNameInvalid",
                _ => "InvalidResourceName",
            },
        ),
        DomainError::InvalidProperty(_)
        | DomainError::BadInput { .. }
        | DomainError::BodyTooLarge(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
        DomainError::LocationNotAvailable { .. } => (
            StatusCode::BAD_REQUEST,
            "LocationNotAvailableForResourceType",
        ),
        DomainError::SubscriptionNotFound(_) => (StatusCode::NOT_FOUND, "SubscriptionNotFound"),
        DomainError::ResourceGroupNotFound(_) => (StatusCode::NOT_FOUND, "ResourceGroupNotFound"),
        DomainError::ResourceNotFound { .. } => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        DomainError::RoleDefinitionNotFound(_) => {
            (StatusCode::BAD_REQUEST, "RoleDefinitionDoesNotExist")
        }
        DomainError::PrincipalNotFound(_) => (StatusCode::BAD_REQUEST, "PrincipalNotFound"),
        DomainError::RoleAssignmentExists => (StatusCode::CONFLICT, "RoleAssignmentExists"),
        DomainError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
        DomainError::ConditionNotMet | DomainError::SourceConditionNotMet => {
            (StatusCode::PRECONDITION_FAILED, "PreconditionFailed")
        }
        DomainError::VaultNameInUse(_) => (StatusCode::CONFLICT, "VaultAlreadyExists"),
        DomainError::StorageAccountNameTaken(_) => {
            (StatusCode::CONFLICT, "StorageAccountAlreadyTaken")
        }
        DomainError::Forbidden { .. } => (StatusCode::FORBIDDEN, "AuthorizationFailed"),
        DomainError::VaultNotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        DomainError::ContainerNotFound | DomainError::BlobNotFound => {
            (StatusCode::NOT_FOUND, "ResourceNotFound")
        }
        DomainError::ContainerAlreadyExists => (StatusCode::CONFLICT, "Conflict"),
        DomainError::InvalidRange
        | DomainError::InvalidXml(_)
        | DomainError::InvalidBlockList(_)
        | DomainError::Md5Mismatch
        | DomainError::Crc64Mismatch => (StatusCode::BAD_REQUEST, "BadRequest"),
        DomainError::KeyNotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        DomainError::OperationNotAllowed(_) => (StatusCode::CONFLICT, "OperationNotAllowed"),
        DomainError::CmkInvalid { code, .. }
        | DomainError::CmkUnavailable { code, .. }
        | DomainError::Cpk { code, .. } => (StatusCode::BAD_REQUEST, *code),
        DomainError::ScopeDisabled(_) => (StatusCode::BAD_REQUEST, "EncryptionScopeDisabled"),
        DomainError::PropertyCannotChange(_) => {
            (StatusCode::BAD_REQUEST, "AccountPropertyCannotBeUpdated")
        }
        DomainError::Internal(detail) => {
            tracing::error!(request_id, detail = %detail, "internal error");
            return arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                &format!("An internal error occurred. Request id: {request_id}"),
                request_id,
            );
        }
    };
    arm_error(status, code, &e.to_string(), request_id)
}

/// The bearer token from `Authorization`, if well-formed.
pub fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return None;
    }
    Some(SecretString::new(token.trim().to_string()))
}

fn unauthorized(state: &AppState, e: AuthError, request_id: &str) -> Response {
    let code = match e {
        AuthError::Missing => "AuthenticationFailed",
        AuthError::Expired => "ExpiredAuthenticationToken",
        AuthError::WrongAudience => "InvalidAuthenticationTokenAudience",
        AuthError::Malformed
        | AuthError::BadSignature
        | AuthError::NotYetValid
        | AuthError::WrongIssuer
        | AuthError::UnknownPrincipal => "InvalidAuthenticationToken",
    };
    let mut r = arm_error(StatusCode::UNAUTHORIZED, code, &e.to_string(), request_id);
    let challenge = format!(
        "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"{}\"",
        state.endpoints.origin,
        state.identity.tenant_id(),
        e
    );
    if let Ok(v) = http::HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    r
}

fn query_map(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .map(|v| {
            v.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn handle(state: Arc<AppState>, req: Request) -> Response {
    let request_id = coffer_crypto::random::uuid().unwrap_or_default();
    let ip = peer_ip(&req);
    let method = req.method().clone();
    let Some(token) = bearer(req.headers()) else {
        return unauthorized(&state, AuthError::Missing, &request_id);
    };
    let caller = match state
        .identity
        .authenticate(token.expose(), Plane::Management)
        .await
    {
        Ok(c) => c,
        Err(e) => return unauthorized(&state, e, &request_id),
    };
    let query = query_map(req.uri());
    let request_uri: String = req.uri().path().chars().take(512).collect();
    let client_info = crate::user_agent(req.headers());
    let Some(op) = ArmOp::parse(&method, req.uri().path()) else {
        let path: String = req.uri().path().chars().take(200).collect();
        return arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!("No route for '{method} {path}' on this server."),
            &request_id,
        );
    };
    let bytes = match read_limited(req.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return arm_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "The request content exceeds the maximum allowed size of 4 MB.",
                &request_id,
            );
        }
        Err(BodyError::Io) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                "The request body could not be read.",
                &request_id,
            );
        }
    };
    let needs_body = matches!(
        op,
        ArmOp::PutAlias { .. }
            | ArmOp::PutGroup { .. }
            | ArmOp::PatchGroup { .. }
            | ArmOp::PutResource { .. }
            | ArmOp::PatchResource { .. }
            | ArmOp::PutRoleAssignment { .. }
            | ArmOp::PutEventSubscription { .. }
            | ArmOp::PutEncryptionScope { .. }
            | ArmOp::CheckVaultName { .. }
            | ArmOp::CheckStorageName { .. }
            | ArmOp::RegenerateStorageKey { .. }
            | ArmOp::AdminCreateServicePrincipal
            | ArmOp::AdminCreateUser
            | ArmOp::AdminAdvanceClock
            | ArmOp::AdminFaults
    );
    let body: Value = if needs_body {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.is_object() => v,
            Ok(_) => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    "The request content must be a JSON object.",
                    &request_id,
                );
            }
            Err(e) => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    &format!("The request content was invalid and could not be deserialized: {e}"),
                    &request_id,
                );
            }
        }
    } else {
        Value::Null
    };
    let start = std::time::Instant::now();
    // Moving the test clock runs due work, which takes the write lock itself where it writes.
    // Test hooks (clock, faults) are neither locked nor audited: a test turns audit failure
    // off again with them.
    let is_write = method != Method::GET
        && method != Method::HEAD
        && !matches!(op, ArmOp::AdminAdvanceClock | ArmOp::AdminFaults);
    let mut rec = AuditRecord {
        time: state.clock.now(),
        resource_id: op.resource_id(),
        operation_name: op.operation_name(),
        caller_ip_address: ip,
        identity: AuditIdentity {
            tid: caller.tenant_id.clone(),
            oid: caller.object_id.clone(),
            appid: caller.app_id.clone(),
            ..Default::default()
        },
        request_id: request_id.clone(),
        correlation_id: request_id.clone(),
        properties: json!({"requestUri": request_uri, "clientInfo": client_info}),
        ..Default::default()
    };
    // A write is recorded as started before it runs: if the log cannot take it, nothing
    // happens (fail closed).
    if is_write {
        rec.result_type = "Started".into();
        if let Err(e) = state.audit.record(&rec).await {
            tracing::error!(error = %e, "audit write failed");
            return arm_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "AuditUnavailable",
                "The operation was not performed because it could not be audited.",
                &request_id,
            );
        }
    }
    let guard = if is_write {
        Some(state.mgmt.write_guard().await)
    } else {
        None
    };
    let resp = execute(&state, &caller, &op, &body, &query, &request_id).await;
    drop(guard);
    let status = resp.status();
    if is_write || status == StatusCode::FORBIDDEN {
        rec.time = state.clock.now();
        rec.result_type = if status.is_success() {
            "Success"
        } else {
            "Failure"
        }
        .into();
        rec.result_signature = status.as_u16();
        rec.duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        rec.message = format!("{} in {} ms", status.as_u16(), rec.duration_ms);
        if let Err(e) = state.audit.record(&rec).await {
            tracing::error!(error = %e, "audit write failed");
            return arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The operation could not be audited and was failed.",
                &request_id,
            );
        }
    }
    crate::named(resp, rec.operation_name)
}

fn put_response(p: Put, request_id: &str) -> Response {
    let status = if p.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    respond(status, Some(&p.body), request_id)
}

fn list(values: Vec<Value>, request_id: &str) -> Response {
    respond(StatusCode::OK, Some(&json!({"value": values})), request_id)
}

async fn execute(
    state: &AppState,
    caller: &Caller,
    op: &ArmOp,
    body: &Value,
    query: &HashMap<String, String>,
    rid: &str,
) -> Response {
    let m = &state.mgmt;
    let filter = query.get("$filter").map(String::as_str);
    let result: Result<Response, DomainError> = async {
        Ok(match op {
            ArmOp::ListSubscriptions => list(m.list_subscriptions(caller).await?, rid),
            ArmOp::GetSubscription { sub } => respond(
                StatusCode::OK,
                Some(&m.get_subscription(caller, sub).await?),
                rid,
            ),
            ArmOp::PutAlias { alias } => put_response(m.put_alias(caller, alias, body).await?, rid),
            ArmOp::GetAlias { alias } => respond(
                StatusCode::OK,
                Some(&m.get_alias(caller, alias).await?),
                rid,
            ),
            ArmOp::ListGroups { sub } => list(m.list_groups(caller, sub).await?, rid),
            ArmOp::PutGroup { sub, rg } => {
                put_response(m.put_group(caller, sub, rg, body).await?, rid)
            }
            ArmOp::PatchGroup { sub, rg } => respond(
                StatusCode::OK,
                Some(&m.patch_group(caller, sub, rg, body).await?),
                rid,
            ),
            ArmOp::GetGroup { sub, rg } => respond(
                StatusCode::OK,
                Some(&m.get_group(caller, sub, rg).await?),
                rid,
            ),
            ArmOp::HeadGroup { sub, rg } => match m.get_group(caller, sub, rg).await {
                Ok(_) => respond(StatusCode::NO_CONTENT, None, rid),
                Err(DomainError::ResourceGroupNotFound(_)) => {
                    respond(StatusCode::NOT_FOUND, None, rid)
                }
                Err(e) => return Err(e),
            },
            ArmOp::DeleteGroup { sub, rg } => {
                m.delete_group(caller, sub, rg).await?;
                respond(StatusCode::OK, None, rid)
            }
            ArmOp::ListResources { sub, rg } => list(
                m.list_generic(caller, sub, rg.as_deref(), filter).await?,
                rid,
            ),
            ArmOp::ListTyped {
                sub,
                rg,
                kind: Kind::StorageAccount,
            } => list(
                m.list_storage_accounts(caller, sub, rg.as_deref()).await?,
                rid,
            ),
            ArmOp::ListTyped { sub, rg, kind } => list(
                m.list_typed(caller, sub, rg.as_deref(), kind.type_name())
                    .await?,
                rid,
            ),
            ArmOp::PutResource {
                sub,
                rg,
                kind,
                name,
            } => put_response(
                match kind {
                    Kind::Vault => m.put_vault(caller, sub, rg, name, body).await?,
                    Kind::Identity => m.put_identity(caller, sub, rg, name, body).await?,
                    // The Storage RP answers 200 (or 202) to a create, never 201: the SDK refuses 201.
                    Kind::StorageAccount => Put {
                        created: false,
                        ..m.put_storage_account(caller, sub, rg, name, body).await?
                    },
                },
                rid,
            ),
            ArmOp::PatchResource {
                sub,
                rg,
                kind,
                name,
            } => match kind {
                Kind::Vault => respond(
                    StatusCode::OK,
                    Some(&m.patch_vault(caller, sub, rg, name, body).await?),
                    rid,
                ),
                Kind::Identity => {
                    let mut b = body.clone();
                    let current = m
                        .get_resource(caller, sub, rg, kind.type_name(), name)
                        .await?;
                    if b.get("location").is_none() {
                        b["location"] = current["location"].clone();
                    }
                    respond(
                        StatusCode::OK,
                        Some(&m.put_identity(caller, sub, rg, name, &b).await?.body),
                        rid,
                    )
                }
                Kind::StorageAccount => respond(
                    StatusCode::OK,
                    Some(&m.patch_storage_account(caller, sub, rg, name, body).await?),
                    rid,
                ),
            },
            ArmOp::GetResource {
                sub,
                rg,
                kind: Kind::StorageAccount,
                name,
            } => respond(
                StatusCode::OK,
                Some(&m.get_storage_account(caller, sub, rg, name).await?),
                rid,
            ),
            ArmOp::GetResource {
                sub,
                rg,
                kind,
                name,
            } => respond(
                StatusCode::OK,
                Some(
                    &m.get_resource(caller, sub, rg, kind.type_name(), name)
                        .await?,
                ),
                rid,
            ),
            ArmOp::DeleteResource {
                sub,
                rg,
                kind,
                name,
            } => {
                let existed = match kind {
                    Kind::Vault => m.delete_vault(caller, sub, rg, name).await?,
                    Kind::Identity => m.delete_identity(caller, sub, rg, name).await?,
                    Kind::StorageAccount => m.delete_storage_account(caller, sub, rg, name).await?,
                };
                respond(
                    if existed {
                        StatusCode::OK
                    } else {
                        StatusCode::NO_CONTENT
                    },
                    None,
                    rid,
                )
            }
            ArmOp::ListDeletedVaults { sub } => {
                list(m.list_deleted_vaults(caller, sub).await?, rid)
            }
            ArmOp::GetDeletedVault {
                sub,
                location,
                name,
            } => respond(
                StatusCode::OK,
                Some(&m.get_deleted_vault(caller, sub, location, name).await?),
                rid,
            ),
            ArmOp::PurgeDeletedVault {
                sub,
                location,
                name,
            } => {
                m.purge_deleted_vault(caller, sub, location, name).await?;
                respond(StatusCode::OK, None, rid)
            }
            ArmOp::CheckStorageName { sub } => respond(
                StatusCode::OK,
                Some(&m.check_storage_name(caller, sub, body).await?),
                rid,
            ),
            ArmOp::ListStorageKeys { sub, rg, name } => respond(
                StatusCode::OK,
                Some(&m.list_storage_keys(caller, sub, rg, name).await?),
                rid,
            ),
            ArmOp::RegenerateStorageKey { sub, rg, name } => respond(
                StatusCode::OK,
                Some(
                    &m.regenerate_storage_key(caller, sub, rg, name, body)
                        .await?,
                ),
                rid,
            ),
            ArmOp::CheckVaultName { sub } => respond(
                StatusCode::OK,
                Some(&m.check_vault_name(caller, sub, body).await?),
                rid,
            ),
            ArmOp::ListRoleDefinitions { scope } => {
                list(m.list_role_definitions(scope, filter)?, rid)
            }
            ArmOp::GetRoleDefinition { scope, id } => respond(
                StatusCode::OK,
                Some(&m.get_role_definition(scope, id)?),
                rid,
            ),
            ArmOp::ListRoleAssignments { scope } => {
                list(m.list_role_assignments(caller, scope, filter).await?, rid)
            }
            ArmOp::PutRoleAssignment { scope, name } => {
                put_response(m.put_role_assignment(caller, scope, name, body).await?, rid)
            }
            ArmOp::ListEncryptionScopes { sub, rg, account } => list(
                m.list_encryption_scopes(caller, sub, rg, account).await?,
                rid,
            ),
            ArmOp::PutEncryptionScope {
                sub,
                rg,
                account,
                name,
                patch,
            } => {
                let p = m
                    .put_encryption_scope(caller, sub, rg, account, name, body, *patch)
                    .await?;
                // Azure answers 200 to both (the SDK accepts 200 and 201 on create).
                respond(
                    if p.created && !*patch {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    },
                    Some(&p.body),
                    rid,
                )
            }
            ArmOp::GetEncryptionScope {
                sub,
                rg,
                account,
                name,
            } => respond(
                StatusCode::OK,
                Some(
                    &m.get_encryption_scope(caller, sub, rg, account, name)
                        .await?,
                ),
                rid,
            ),
            ArmOp::ListEventSubscriptions { scope } => {
                list(m.list_event_subscriptions(caller, scope).await?, rid)
            }
            ArmOp::PutEventSubscription { scope, name } => put_response(
                m.put_event_subscription(caller, scope, name, body).await?,
                rid,
            ),
            ArmOp::GetEventSubscription { scope, name } => respond(
                StatusCode::OK,
                Some(&m.get_event_subscription(caller, scope, name).await?),
                rid,
            ),
            ArmOp::DeleteEventSubscription { scope, name } => {
                if m.delete_event_subscription(caller, scope, name).await? {
                    respond(StatusCode::OK, None, rid)
                } else {
                    respond(StatusCode::NO_CONTENT, None, rid)
                }
            }
            ArmOp::ListDeadLetters { scope, name } => {
                list(m.event_dead_letters(caller, scope, name).await?, rid)
            }
            ArmOp::GetRoleAssignment { scope, name } => respond(
                StatusCode::OK,
                Some(&m.get_role_assignment(caller, scope, name).await?),
                rid,
            ),
            ArmOp::DeleteRoleAssignment { scope, name } => {
                match m.delete_role_assignment(caller, scope, name).await? {
                    Some(v) => respond(StatusCode::OK, Some(&v), rid),
                    None => respond(StatusCode::NO_CONTENT, None, rid),
                }
            }
            ArmOp::AdminCreateServicePrincipal => admin_create_sp(state, caller, body, rid).await?,
            ArmOp::AdminCreateUser => admin_create_user(state, caller, body, rid).await?,
            ArmOp::AdminFaults => admin_faults(state, caller, body, rid)?,
            ArmOp::AdminHealth => {
                require_admin(caller, "Coffer/health/read")?;
                let accounts = state.mgmt.unhealthy_cmk_accounts().await?;
                respond(
                    StatusCode::OK,
                    Some(&json!({
                        "regions": state.mgmt.regions(),
                        "unhealthyCustomerManagedKeys": accounts,
                    })),
                    rid,
                )
            }
            ArmOp::AdminAudit => admin_audit(state, caller, query, rid).await?,
            ArmOp::AdminAdvanceClock => {
                let r = admin_clock(state, caller, body, rid)?;
                if r.status().is_success() {
                    crate::run_due_work(state).await;
                }
                r
            }
        })
    }
    .await;
    result.unwrap_or_else(|e| domain_error(&e, rid))
}

fn require_admin(caller: &Caller, action: &str) -> Result<(), DomainError> {
    if caller.is_admin {
        Ok(())
    } else {
        Err(DomainError::Forbidden {
            principal: caller.object_id.clone(),
            action: action.into(),
            scope: "/".into(),
        })
    }
}

fn str_field<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, DomainError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DomainError::InvalidProperty(format!(
            "the property '{key}' must be a string"
        ))),
    }
}

async fn admin_create_sp(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    rid: &str,
) -> Result<Response, DomainError> {
    require_admin(caller, "Coffer/servicePrincipals/write")?;
    let name = str_field(body, "displayName")?.ok_or_else(|| {
        DomainError::InvalidProperty("the property 'displayName' is required".into())
    })?;
    let (p, secret) = state.identity.create_service_principal(name, false).await?;
    Ok(respond(
        StatusCode::CREATED,
        Some(&json!({
            "client_id": p.client_id, "client_secret": secret.expose(),
            "object_id": p.object_id, "tenant_id": p.tenant_id, "display_name": p.display_name
        })),
        rid,
    ))
}

async fn admin_create_user(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    rid: &str,
) -> Result<Response, DomainError> {
    require_admin(caller, "Coffer/users/write")?;
    let name = str_field(body, "username")?.ok_or_else(|| {
        DomainError::InvalidProperty("the property 'username' is required".into())
    })?;
    let pw = str_field(body, "password")?.ok_or_else(|| {
        DomainError::InvalidProperty("the property 'password' is required".into())
    })?;
    let p = state
        .identity
        .create_user(name, &SecretString::new(pw.to_string()), false)
        .await?;
    Ok(respond(
        StatusCode::CREATED,
        Some(&json!({"username": p.username, "object_id": p.object_id, "tenant_id": p.tenant_id})),
        rid,
    ))
}

fn admin_faults(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    rid: &str,
) -> Result<Response, DomainError> {
    if !state.clock.is_shiftable() {
        return Ok(arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "Fault injection is only enabled with --test-clock.",
            rid,
        ));
    }
    require_admin(caller, "Coffer/faults/action")?;
    let fail = body
        .get("auditFails")
        .and_then(Value::as_bool)
        .ok_or_else(|| DomainError::InvalidProperty("auditFails (boolean) is required".into()))?;
    state
        .faults
        .audit_fails
        .store(fail, std::sync::atomic::Ordering::Relaxed);
    Ok(respond(
        StatusCode::OK,
        Some(&json!({"auditFails": fail})),
        rid,
    ))
}

/// `GET /coffer/admin/audit`: audit records, oldest first, filtered by `from`/`to` (RFC 3339
/// or Unix seconds), `resourceId` (that resource and everything below it), `operation`,
/// `caller` (object id, application id or sign-in name), `result`, `correlationId`; paged by
/// `afterSeq` and `top` (at most 10000). `format=jsonl` answers JSON Lines (export).
async fn admin_audit(
    state: &AppState,
    caller: &Caller,
    query: &HashMap<String, String>,
    rid: &str,
) -> Result<Response, DomainError> {
    require_admin(caller, "Coffer/audit/read")?;
    let time = |k: &str| -> Result<Option<i64>, DomainError> {
        let Some(v) = query.get(&k.to_ascii_lowercase()) else {
            return Ok(None);
        };
        if let Ok(n) = v.parse::<i64>() {
            return Ok(Some(n));
        }
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
            .map(|t| Some(t.unix_timestamp()))
            .map_err(|_| {
                DomainError::InvalidProperty(format!(
                    "{k} must be an RFC 3339 time or Unix seconds"
                ))
            })
    };
    let text = |k: &str| {
        query
            .get(&k.to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(1024).collect::<String>())
    };
    let top = match query.get("top").or_else(|| query.get("$top")) {
        None => 1000,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                DomainError::InvalidProperty("top must be between 1 and 10000".into())
            })?,
    };
    let after = match query.get("afterseq") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| DomainError::InvalidProperty("afterSeq must be an integer".into()))?,
        ),
    };
    let f = coffer_domain::audit::AuditFilter {
        from: time("from")?,
        to: time("to")?,
        resource: text("resourceId"),
        key: text("key"),
        operation: text("operation"),
        caller: text("caller"),
        result: text("result"),
        correlation: text("correlationId"),
        after,
        limit: top,
    };
    let records = state.audit.query(&f).await?;
    if query
        .get("format")
        .is_some_and(|f| f.eq_ignore_ascii_case("jsonl"))
    {
        let mut out = String::new();
        for r in &records {
            out.push_str(&r.to_string());
            out.push('\n');
        }
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .header("x-ms-request-id", rid)
            .body(axum::body::Body::from(out))
            .unwrap_or_default());
    }
    let next = (records.len() == top)
        .then(|| records.last().and_then(|r| r["seq"].as_i64()))
        .flatten()
        .map(|s| {
            let mut q: Vec<(String, String)> = query
                .iter()
                .filter(|(k, _)| k.as_str() != "afterseq")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            q.push(("afterSeq".into(), s.to_string()));
            q.sort();
            format!(
                "{}/coffer/admin/audit?{}",
                state.endpoints.origin,
                serde_urlencoded::to_string(&q).unwrap_or_default()
            )
        });
    Ok(respond(
        StatusCode::OK,
        Some(&json!({"value": records, "nextLink": next})),
        rid,
    ))
}

fn admin_clock(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    rid: &str,
) -> Result<Response, DomainError> {
    if !state.clock.is_shiftable() {
        return Ok(arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The test clock is not enabled on this server (start it with --test-clock).",
            rid,
        ));
    }
    require_admin(caller, "Coffer/clock/action")?;
    let secs = body
        .get("advanceSeconds")
        .and_then(Value::as_i64)
        .filter(|s| (0..=10 * 365 * 86_400).contains(s))
        .ok_or_else(|| {
            DomainError::InvalidProperty(
                "advanceSeconds must be an integer between 0 and 315360000".into(),
            )
        })?;
    state.clock.advance(secs);
    Ok(respond(
        StatusCode::OK,
        Some(&json!({"now": state.clock.now()})),
        rid,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_case_insensitively() {
        assert_eq!(
            ArmOp::parse(&Method::PUT, "/subscriptions/S/resourcegroups/rg1"),
            Some(ArmOp::PutGroup {
                sub: "S".into(),
                rg: "rg1".into()
            })
        );
        assert_eq!(
            ArmOp::parse(
                &Method::GET,
                "/subscriptions/S/resourceGroups/rg1/providers/microsoft.keyvault/VAULTS/kv"
            ),
            Some(ArmOp::GetResource {
                sub: "S".into(),
                rg: "rg1".into(),
                kind: Kind::Vault,
                name: "kv".into()
            })
        );
        assert_eq!(
            ArmOp::parse(
                &Method::PUT,
                "/subscriptions/S/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/roleAssignments/abc"
            ),
            Some(ArmOp::PutRoleAssignment {
                scope: "/subscriptions/S/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"
                    .into(),
                name: "abc".into()
            })
        );
        assert_eq!(
            ArmOp::parse(
                &Method::GET,
                "/providers/Microsoft.Authorization/roleDefinitions"
            ),
            Some(ArmOp::ListRoleDefinitions { scope: "/".into() })
        );
        assert_eq!(
            ArmOp::parse(
                &Method::POST,
                "/subscriptions/S/providers/Microsoft.KeyVault/locations/eastus/deletedVaults/kv/purge"
            ),
            Some(ArmOp::PurgeDeletedVault {
                sub: "S".into(),
                location: "eastus".into(),
                name: "kv".into()
            })
        );
        assert_eq!(
            ArmOp::parse(&Method::GET, "//subscriptions"),
            Some(ArmOp::ListSubscriptions)
        );
        assert_eq!(
            ArmOp::parse(
                &Method::GET,
                "/subscriptions/S/providers/Microsoft.Foo/bars"
            ),
            None
        );
        assert_eq!(ArmOp::parse(&Method::POST, "/subscriptions"), None);
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_none());
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic abc"),
        );
        assert!(bearer(&h).is_none());
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(
            bearer(&h).map(|t| t.expose().to_string()),
            Some("abc".into())
        );
    }
}
