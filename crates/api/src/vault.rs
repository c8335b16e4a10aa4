//! The Key Vault keys data plane on `{vault}.vault.{suffix}`.
//!
//! Authentication follows the SDK's challenge protocol: a request without a valid token gets
//! 401 with `WWW-Authenticate: Bearer authorization="{authority}/{tenant}",
//! resource="https://vault.{suffix}[:port]"`. Requests are parsed into [`KvOp`] (pure,
//! unit-tested), executed by the domain's `KeyVaultService`, audited (allowed or denied) and
//! rendered in Key Vault's JSON shapes; errors use `{"error":{"code","message"}}`.
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use coffer_crypto::b64;
use coffer_crypto::keys::ImportJwk;
use coffer_domain::DomainError;
use coffer_domain::audit::{AuditIdentity, AuditRecord};
use coffer_domain::identity::{AuthError, Caller, Plane};
use coffer_domain::keyvault::{
    CreateParams, CryptoInput, CryptoOp, CryptoOutput, KeyView, UpdateParams, VaultRef,
};
use coffer_domain::model::{LifetimeAction, RotationPolicy};
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::arm::bearer;
use crate::body::{BodyError, read_limited};
use crate::{AppState, peer_ip};

const BODY_LIMIT: usize = 4 * 1024 * 1024;
const MAX_RESULTS: usize = 25;

/// A Key Vault operation, parsed from method and path.
#[derive(Debug, PartialEq, Eq)]
pub enum KvOp {
    Create {
        name: String,
    },
    Import {
        name: String,
    },
    Get {
        name: String,
        version: Option<String>,
    },
    Update {
        name: String,
        version: Option<String>,
    },
    Delete {
        name: String,
    },
    List,
    ListVersions {
        name: String,
    },
    Backup {
        name: String,
    },
    Restore,
    Rotate {
        name: String,
    },
    GetPolicy {
        name: String,
    },
    SetPolicy {
        name: String,
    },
    Crypto {
        name: String,
        version: Option<String>,
        op: CryptoOp,
    },
    ListDeleted,
    GetDeleted {
        name: String,
    },
    Purge {
        name: String,
    },
    Recover {
        name: String,
    },
    Rng,
    /// Coffer extension: the storage accounts whose key is wrapped by this key.
    Dependents {
        name: String,
    },
}

fn opt(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

impl KvOp {
    pub fn parse(method: &Method, path: &str) -> Option<Self> {
        let p = path.strip_prefix('/')?;
        let segs: Vec<&str> = p.split('/').collect();
        let (get, post, put, patch, del) = (
            method == Method::GET,
            method == Method::POST,
            method == Method::PUT,
            method == Method::PATCH,
            method == Method::DELETE,
        );
        let s = |x: &str| x.to_ascii_lowercase();
        Some(match segs.as_slice() {
            [k] | [k, ""] if s(k) == "keys" && get => KvOp::List,
            [k, r] if s(k) == "keys" && s(r) == "restore" && post => KvOp::Restore,
            [r] if s(r) == "rng" && post => KvOp::Rng,
            [k, n] | [k, n, ""] if s(k) == "keys" && !n.is_empty() => {
                let name = n.to_string();
                if get {
                    KvOp::Get {
                        name,
                        version: None,
                    }
                } else if put {
                    KvOp::Import { name }
                } else if patch {
                    KvOp::Update {
                        name,
                        version: None,
                    }
                } else if del {
                    KvOp::Delete { name }
                } else {
                    return None;
                }
            }
            [k, n, a] if s(k) == "keys" && !n.is_empty() => {
                let name = n.to_string();
                match (s(a).as_str(), get, post, put, patch) {
                    ("create", _, true, _, _) => KvOp::Create { name },
                    ("versions", true, ..) => KvOp::ListVersions { name },
                    ("backup", _, true, _, _) => KvOp::Backup { name },
                    ("rotate", _, true, _, _) => KvOp::Rotate { name },
                    ("dependents", true, ..) => KvOp::Dependents { name },
                    ("rotationpolicy", true, ..) => KvOp::GetPolicy { name },
                    ("rotationpolicy", _, _, true, _) => KvOp::SetPolicy { name },
                    (_, true, ..) => KvOp::Get {
                        name,
                        version: opt(a),
                    },
                    (_, _, _, _, true) => KvOp::Update {
                        name,
                        version: opt(a),
                    },
                    _ => return None,
                }
            }
            [k, n, v, o] if s(k) == "keys" && !n.is_empty() && post => {
                let op = match s(o).as_str() {
                    "encrypt" => CryptoOp::Encrypt,
                    "decrypt" => CryptoOp::Decrypt,
                    "wrapkey" => CryptoOp::Wrap,
                    "unwrapkey" => CryptoOp::Unwrap,
                    "sign" => CryptoOp::Sign,
                    "verify" => CryptoOp::Verify,
                    _ => return None,
                };
                KvOp::Crypto {
                    name: n.to_string(),
                    version: opt(v),
                    op,
                }
            }
            [d] | [d, ""] if s(d) == "deletedkeys" && get => KvOp::ListDeleted,
            [d, n] if s(d) == "deletedkeys" && !n.is_empty() && get => KvOp::GetDeleted {
                name: n.to_string(),
            },
            [d, n] if s(d) == "deletedkeys" && !n.is_empty() && del => KvOp::Purge {
                name: n.to_string(),
            },
            [d, n, r] if s(d) == "deletedkeys" && s(r) == "recover" && post => KvOp::Recover {
                name: n.to_string(),
            },
            _ => return None,
        })
    }

    /// Azure's audit operation name.
    pub fn operation_name(&self) -> &'static str {
        match self {
            KvOp::Create { .. } => "KeyCreate",
            KvOp::Import { .. } => "KeyImport",
            KvOp::Get { .. } => "KeyGet",
            KvOp::Update { .. } => "KeyUpdate",
            KvOp::Delete { .. } => "KeyDelete",
            KvOp::List => "KeyList",
            KvOp::ListVersions { .. } => "KeyListVersions",
            KvOp::Backup { .. } => "KeyBackup",
            KvOp::Restore => "KeyRestore",
            KvOp::Rotate { .. } => "KeyRotate",
            KvOp::GetPolicy { .. } => "KeyRotationPolicyGet",
            KvOp::SetPolicy { .. } => "KeyRotationPolicySet",
            KvOp::Crypto { op, .. } => match op {
                CryptoOp::Encrypt => "KeyEncrypt",
                CryptoOp::Decrypt => "KeyDecrypt",
                CryptoOp::Wrap => "KeyWrap",
                CryptoOp::Unwrap => "KeyUnwrap",
                CryptoOp::Sign => "KeySign",
                CryptoOp::Verify => "KeyVerify",
            },
            KvOp::ListDeleted => "KeyListDeleted",
            KvOp::GetDeleted { .. } => "KeyGetDeleted",
            KvOp::Purge { .. } => "KeyPurge",
            KvOp::Recover { .. } => "KeyRecover",
            KvOp::Rng => "VaultGetRandomBytes",
            KvOp::Dependents { .. } => "KeyListDependents",
        }
    }

    /// The data action the operation needs (checked before the body is parsed).
    fn action(&self) -> &'static str {
        use coffer_domain::keyvault::actions as a;
        match self {
            KvOp::Create { .. } => a::CREATE,
            KvOp::Import { .. } => a::IMPORT,
            KvOp::Get { .. }
            | KvOp::List
            | KvOp::ListVersions { .. }
            | KvOp::ListDeleted
            | KvOp::GetDeleted { .. }
            | KvOp::Dependents { .. }
            | KvOp::Rng => a::READ,
            KvOp::Update { .. } => a::UPDATE,
            KvOp::Delete { .. } => a::DELETE,
            KvOp::Backup { .. } => a::BACKUP,
            KvOp::Restore => a::RESTORE,
            KvOp::Rotate { .. } => a::ROTATE,
            KvOp::GetPolicy { .. } => a::POLICY_READ,
            KvOp::SetPolicy { .. } => a::POLICY_WRITE,
            KvOp::Crypto { op, .. } => match op {
                CryptoOp::Encrypt => a::ENCRYPT,
                CryptoOp::Decrypt => a::DECRYPT,
                CryptoOp::Wrap => a::WRAP,
                CryptoOp::Unwrap => a::UNWRAP,
                CryptoOp::Sign => a::SIGN,
                CryptoOp::Verify => a::VERIFY,
            },
            KvOp::Purge { .. } => a::PURGE,
            KvOp::Recover { .. } => a::RECOVER,
        }
    }

    /// Whether the operation changes state (audited as started before it runs).
    fn is_write(&self) -> bool {
        matches!(
            self,
            KvOp::Create { .. }
                | KvOp::Import { .. }
                | KvOp::Update { .. }
                | KvOp::Delete { .. }
                | KvOp::Restore
                | KvOp::Rotate { .. }
                | KvOp::SetPolicy { .. }
                | KvOp::Purge { .. }
                | KvOp::Recover { .. }
        )
    }

    fn key_name(&self) -> Option<&str> {
        match self {
            KvOp::Create { name }
            | KvOp::Import { name }
            | KvOp::Get { name, .. }
            | KvOp::Update { name, .. }
            | KvOp::Delete { name }
            | KvOp::ListVersions { name }
            | KvOp::Backup { name }
            | KvOp::Rotate { name }
            | KvOp::GetPolicy { name }
            | KvOp::SetPolicy { name }
            | KvOp::Crypto { name, .. }
            | KvOp::GetDeleted { name }
            | KvOp::Purge { name }
            | KvOp::Dependents { name }
            | KvOp::Recover { name } => Some(name),
            KvOp::List | KvOp::Restore | KvOp::ListDeleted | KvOp::Rng => None,
        }
    }
}

/// api-version: 7.0 to 7.6 (with `-preview[.N]`), 2016-10-01, and dated versions from
/// 2025-07-01 on.
pub fn api_version_supported(v: &str) -> bool {
    let base = v.split("-preview").next().unwrap_or(v);
    if let Some(minor) = base.strip_prefix("7.") {
        return minor.len() == 1 && minor.as_bytes()[0].is_ascii_digit() && minor <= "6";
    }
    if base == "2016-10-01" {
        return true;
    }
    let b = base.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && base >= "2025-07-01"
}

fn respond(status: StatusCode, body: Option<&Value>, request_id: &str) -> Response {
    let b = Response::builder()
        .status(status)
        .header("x-ms-request-id", request_id)
        .header("x-ms-keyvault-service-version", "1.9.0.0")
        .header(
            "x-ms-keyvault-network-info",
            "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
        );
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

fn kv_error(
    status: StatusCode,
    code: &str,
    message: &str,
    inner: Option<&str>,
    rid: &str,
) -> Response {
    let mut e = json!({"code": code, "message": message});
    if let Some(i) = inner {
        e["innererror"] = json!({"code": i});
    }
    respond(status, Some(&json!({ "error": e })), rid)
}

/// Domain errors on the Key Vault wire (the one place this mapping happens).
fn domain_error(e: &DomainError, rid: &str) -> Response {
    let msg = e.to_string();
    match e {
        DomainError::InvalidName { .. }
        | DomainError::InvalidProperty(_)
        | DomainError::BadInput { .. }
        | DomainError::BodyTooLarge(_)
        | DomainError::CmkInvalid { .. }
        | DomainError::CmkUnavailable { .. }
        | DomainError::Cpk { .. }
        | DomainError::PropertyCannotChange(_)
        | DomainError::ScopeDisabled(_) => {
            kv_error(StatusCode::BAD_REQUEST, "BadParameter", &msg, None, rid)
        }
        DomainError::KeyNotFound(_) => {
            kv_error(StatusCode::NOT_FOUND, "KeyNotFound", &msg, None, rid)
        }
        DomainError::VaultNotFound(_) => {
            kv_error(StatusCode::NOT_FOUND, "VaultNotFound", &msg, None, rid)
        }
        DomainError::OperationNotAllowed(_) => {
            kv_error(StatusCode::FORBIDDEN, "Forbidden", &msg, None, rid)
        }
        DomainError::Forbidden { action, .. } => kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "Caller is not authorized to perform action on resource. Action: '{action}'. Assignment: (not found)."
            ),
            Some("ForbiddenByRbac"),
            rid,
        ),
        DomainError::ConditionNotMet | DomainError::SourceConditionNotMet => kv_error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            &msg,
            None,
            rid,
        ),
        DomainError::Conflict(_)
        | DomainError::RoleAssignmentExists
        | DomainError::VaultNameInUse(_)
        | DomainError::StorageAccountNameTaken(_) => {
            kv_error(StatusCode::CONFLICT, "Conflict", &msg, None, rid)
        }
        DomainError::LocationNotAvailable { .. }
        | DomainError::RoleDefinitionNotFound(_)
        | DomainError::PrincipalNotFound(_) => {
            kv_error(StatusCode::BAD_REQUEST, "BadParameter", &msg, None, rid)
        }
        DomainError::ContainerAlreadyExists => {
            kv_error(StatusCode::CONFLICT, "Conflict", &msg, None, rid)
        }
        DomainError::InvalidRange
        | DomainError::InvalidXml(_)
        | DomainError::InvalidBlockList(_)
        | DomainError::Md5Mismatch
        | DomainError::Crc64Mismatch => {
            kv_error(StatusCode::BAD_REQUEST, "BadParameter", &msg, None, rid)
        }
        DomainError::SubscriptionNotFound(_)
        | DomainError::ContainerNotFound
        | DomainError::BlobNotFound
        | DomainError::ResourceGroupNotFound(_)
        | DomainError::ResourceNotFound { .. } => {
            kv_error(StatusCode::NOT_FOUND, "NotFound", &msg, None, rid)
        }
        DomainError::Internal(detail) => {
            tracing::error!(request_id = rid, detail = %detail, "internal error");
            kv_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                &format!("An internal error occurred. Request id: {rid}"),
                None,
                rid,
            )
        }
    }
}

fn challenge(state: &AppState, e: AuthError, rid: &str) -> Response {
    let message = match e {
        AuthError::Missing => "AKV10000: Request is missing a Bearer or PoP token.".to_string(),
        other => format!("AKV10022: Invalid audience, issuer or token: {other}."),
    };
    let mut r = kv_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        &message,
        None,
        rid,
    );
    let v = format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        state.endpoints.origin,
        state.identity.tenant_id(),
        state.endpoints.vault_resource()
    );
    if let Ok(h) = http::HeaderValue::from_str(&v) {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, h);
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

pub async fn handle(state: Arc<AppState>, vault_host: String, req: Request) -> Response {
    let rid = coffer_crypto::random::uuid().unwrap_or_default();
    let Some(token) = bearer(req.headers()) else {
        return challenge(&state, AuthError::Missing, &rid);
    };
    let caller = match state
        .identity
        .authenticate(token.expose(), Plane::Vault)
        .await
    {
        Ok(c) => c,
        Err(e) => return challenge(&state, e, &rid),
    };
    let ip = peer_ip(&req);
    let query = query_map(req.uri());
    let request_uri: String = req.uri().path().chars().take(512).collect();
    let client_info = crate::user_agent(req.headers());
    match query.get("api-version") {
        None => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The 'api-version' query parameter is required.",
                None,
                &rid,
            );
        }
        Some(v) if !api_version_supported(v) => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                &format!(
                    "The specified version ({}) is not recognized. Consider using the latest supported version (2025-07-01).",
                    v.chars().take(32).collect::<String>()
                ),
                None,
                &rid,
            );
        }
        Some(_) => {}
    }
    let method = req.method().clone();
    let Some(op) = KvOp::parse(&method, req.uri().path()) else {
        return kv_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "The requested operation is not supported by this vault.",
            None,
            &rid,
        );
    };
    let bytes = match read_limited(req.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return kv_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadParameter",
                "The request body is too large.",
                None,
                &rid,
            );
        }
        Err(BodyError::Io) => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The request body could not be read.",
                None,
                &rid,
            );
        }
    };
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    &format!("The request body is not valid JSON: {e}"),
                    None,
                    &rid,
                );
            }
        }
    };
    let start = std::time::Instant::now();
    let vault = state.keyvault.vault(&vault_host).await;
    let mut rec = AuditRecord {
        time: state.clock.now(),
        resource_id: vault
            .as_ref()
            .map(|v| v.id.clone())
            .unwrap_or_else(|_| format!("vault:{vault_host}")),
        operation_name: op.operation_name().into(),
        caller_ip_address: ip,
        identity: AuditIdentity {
            tid: caller.tenant_id.clone(),
            oid: caller.object_id.clone(),
            appid: caller.app_id.clone(),
            ..Default::default()
        },
        request_id: rid.clone(),
        correlation_id: rid.clone(),
        ..Default::default()
    };
    let throttled = match (&state.throttle, &vault) {
        (Some(t), Ok(v)) => {
            let units = throttle_units(&state, v, &op, &body).await;
            t.take(&v.name, units, state.clock.now()).err()
        }
        _ => None,
    };
    // A change is recorded as started before it runs: if the log cannot take it, nothing
    // happens (fail closed).
    if op.is_write() && vault.is_ok() && throttled.is_none() {
        rec.result_type = "Started".into();
        rec.properties = json!({"requestUri": request_uri, "clientInfo": client_info});
        if let Err(e) = state.audit.record(&rec).await {
            tracing::error!(error = %e, "audit write failed");
            return kv_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The operation was not performed because it could not be audited.",
                None,
                &rid,
            );
        }
    }
    let (resp, key_id) = match (&vault, throttled) {
        (Ok(_), Some(wait)) => (throttled_response(wait, &rid), String::new()),
        (Ok(v), None) => execute(&state, &caller, v, &op, &body, &query, &rid).await,
        (Err(e), _) => (domain_error(e, &rid), String::new()),
    };
    let status = resp.status();
    rec.time = state.clock.now();
    rec.result_type = if status.is_success() {
        "Success"
    } else {
        "Failure"
    }
    .into();
    rec.result_signature = status.as_u16();
    rec.duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let id = if key_id.is_empty() {
        op.key_name().unwrap_or("").to_string()
    } else {
        key_id
    };
    rec.message = format!("{} {id} in {} ms", status.as_u16(), rec.duration_ms);
    rec.properties = json!({"id": id, "requestUri": request_uri, "clientInfo": client_info});
    if let Err(e) = state.audit.record(&rec).await {
        tracing::error!(error = %e, "audit write failed");
        return kv_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The operation could not be audited and was failed.",
            None,
            &rid,
        );
    }
    if let Ok(v) = &vault {
        let alg = body.get("alg").and_then(Value::as_str).unwrap_or("");
        state.metrics.vault_op(
            &v.name,
            op.key_name().unwrap_or(""),
            op.operation_name(),
            alg,
            status.is_success(),
        );
    }
    crate::named(resp, op.operation_name())
}

/// The weight of a request for the vault's throttle (see [`crate::throttle`]).
async fn throttle_units(state: &AppState, vault: &VaultRef, op: &KvOp, body: &Value) -> u32 {
    use crate::throttle::Cost;
    let version = match op {
        KvOp::Get { version, .. } | KvOp::Update { version, .. } | KvOp::Crypto { version, .. } => {
            version.as_deref()
        }
        _ => None,
    };
    match (op, op.key_name()) {
        (KvOp::Create { .. }, _) => Cost::Create {
            kty: body.get("kty").and_then(Value::as_str).unwrap_or("RSA"),
        }
        .units(),
        (_, Some(name)) => match state.keyvault.key_kind(vault, name, version).await {
            Some((kty, size)) => Cost::Key { kty: &kty, size }.units(),
            None => Cost::Other.units(),
        },
        (_, None) => Cost::Other.units(),
    }
}

/// 429, as Azure Key Vault throttles: `Retry-After` in seconds and the `Throttled` code.
fn throttled_response(wait: u64, rid: &str) -> Response {
    let mut resp = kv_error(
        StatusCode::TOO_MANY_REQUESTS,
        "Throttled",
        "Request was not processed because too many requests were received. Reason: A generic \
         throttling limit was reached for this vault. Retry after the number of seconds in \
         Retry-After.",
        None,
        rid,
    );
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(wait));
    resp
}

// ---- rendering ---------------------------------------------------------------------------

struct Render<'a> {
    base: String,
    vault: &'a VaultRef,
}

impl Render<'_> {
    fn kid(&self, view: &KeyView, with_version: bool) -> String {
        if with_version {
            format!(
                "{}/keys/{}/{}",
                self.base, view.record.name, view.version.version
            )
        } else {
            format!("{}/keys/{}", self.base, view.record.name)
        }
    }

    fn attributes(&self, view: &KeyView) -> Value {
        let v = &view.version;
        let mut a = json!({
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": self.vault.recovery_level(),
            "recoverableDays": self.vault.retention_days,
            "exportable": false,
        });
        if let Some(n) = v.nbf {
            a["nbf"] = json!(n);
        }
        if let Some(e) = v.exp {
            a["exp"] = json!(e);
        }
        a
    }

    fn bundle(&self, view: &KeyView) -> Value {
        let v = &view.version;
        let mut key = json!({"kid": self.kid(view, true), "kty": v.kty, "key_ops": v.key_ops});
        if let (Some(m), Ok(Value::Object(p))) =
            (key.as_object_mut(), serde_json::to_value(&v.public))
        {
            m.extend(p);
        }
        let mut b = json!({"key": key, "attributes": self.attributes(view), "tags": v.tags});
        self.add_deleted(&mut b, view);
        b
    }

    fn add_deleted(&self, b: &mut Value, view: &KeyView) {
        if let Some(d) = &view.record.deleted {
            b["recoveryId"] = json!(format!("{}/deletedkeys/{}", self.base, view.record.name));
            b["deletedDate"] = json!(d.deleted_date);
            b["scheduledPurgeDate"] = json!(d.scheduled_purge);
        }
    }

    fn item(&self, view: &KeyView, with_version: bool) -> Value {
        let mut b = json!({"kid": self.kid(view, with_version), "attributes": self.attributes(view), "tags": view.version.tags});
        self.add_deleted(&mut b, view);
        b
    }

    fn policy(&self, name: &str, p: Option<&RotationPolicy>) -> Value {
        let id = format!("{}/keys/{name}/rotationpolicy", self.base);
        match p {
            None => json!({
                "id": id,
                "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}],
                "attributes": {}
            }),
            Some(p) => {
                let actions: Vec<Value> = p
                    .lifetime_actions
                    .iter()
                    .map(|a| {
                        let mut trigger = Map::new();
                        if let Some(t) = &a.time_after_create {
                            trigger.insert("timeAfterCreate".into(), json!(t));
                        }
                        if let Some(t) = &a.time_before_expiry {
                            trigger.insert("timeBeforeExpiry".into(), json!(t));
                        }
                        json!({"trigger": trigger, "action": {"type": a.action}})
                    })
                    .collect();
                let mut attrs = json!({"created": p.created, "updated": p.updated});
                if let Some(e) = &p.expiry_time {
                    attrs["expiryTime"] = json!(e);
                }
                json!({"id": id, "lifetimeActions": actions, "attributes": attrs})
            }
        }
    }
}

// ---- request parsing helpers ----------------------------------------------------------------

fn bad(msg: impl Into<String>) -> DomainError {
    DomainError::InvalidProperty(msg.into())
}

fn obj(body: &Value) -> Result<&Map<String, Value>, DomainError> {
    body.as_object()
        .ok_or_else(|| bad("the request body must be a JSON object"))
}

fn get_str<'a>(m: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, DomainError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("'{k}' must be a string"))),
    }
}

fn get_b64(m: &Map<String, Value>, k: &str) -> Result<Option<Vec<u8>>, DomainError> {
    match get_str(m, k)? {
        None => Ok(None),
        Some(s) => b64::url_decode(s)
            .map(Some)
            .ok_or_else(|| bad(format!("'{k}' is not valid base64url"))),
    }
}

fn get_int(m: &Map<String, Value>, k: &str) -> Result<Option<i64>, DomainError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| bad(format!("'{k}' must be a non-negative integer"))),
    }
}

fn get_bool(m: &Map<String, Value>, k: &str) -> Result<Option<bool>, DomainError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("'{k}' must be a boolean"))),
    }
}

fn get_ops(m: &Map<String, Value>) -> Result<Option<Vec<String>>, DomainError> {
    match m.get("key_ops") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("key_ops must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad("key_ops must be an array of strings")),
    }
}

fn get_attrs(m: &Map<String, Value>) -> Result<Map<String, Value>, DomainError> {
    match m.get("attributes") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(a)) => Ok(a.clone()),
        Some(_) => Err(bad("'attributes' must be an object")),
    }
}

fn get_tags(m: &Map<String, Value>) -> Result<Option<Value>, DomainError> {
    match m.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(t @ Value::Object(_)) => Ok(Some(t.clone())),
        Some(_) => Err(bad("'tags' must be an object")),
    }
}

fn crypto_input(body: &Value, op: CryptoOp) -> Result<CryptoInput, DomainError> {
    let m = obj(body)?;
    let alg = get_str(m, "alg")?
        .ok_or_else(|| bad("'alg' is required"))?
        .to_string();
    let value = get_b64(m, "value")?.ok_or_else(|| bad("'value' is required"))?;
    if value.len() > 1024 * 1024 {
        return Err(bad("'value' is too large"));
    }
    let digest = if op == CryptoOp::Verify {
        Some(get_b64(m, "digest")?.ok_or_else(|| bad("'digest' is required"))?)
    } else {
        None
    };
    Ok(CryptoInput {
        alg,
        value,
        iv: get_b64(m, "iv")?,
        aad: get_b64(m, "aad")?,
        tag: get_b64(m, "tag")?,
        digest,
    })
}

fn parse_policy(body: &Value) -> Result<(Vec<LifetimeAction>, Option<String>), DomainError> {
    let m = obj(body)?;
    let mut out = Vec::new();
    match m.get("lifetimeActions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for la in a {
                let la = la
                    .as_object()
                    .ok_or_else(|| bad("lifetimeActions[] must be objects"))?;
                let trigger = la
                    .get("trigger")
                    .and_then(Value::as_object)
                    .ok_or_else(|| bad("lifetimeActions[].trigger is required"))?;
                let kind = la
                    .get("action")
                    .and_then(Value::as_object)
                    .and_then(|a| a.get("type"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("lifetimeActions[].action.type is required"))?;
                let action = match kind.to_ascii_lowercase().as_str() {
                    "rotate" => "Rotate",
                    "notify" => "Notify",
                    _ => {
                        return Err(bad(
                            "lifetimeActions[].action.type must be Rotate or Notify",
                        ));
                    }
                };
                out.push(LifetimeAction {
                    action: action.into(),
                    time_after_create: get_str(trigger, "timeAfterCreate")?.map(str::to_string),
                    time_before_expiry: get_str(trigger, "timeBeforeExpiry")?.map(str::to_string),
                });
            }
        }
        Some(_) => return Err(bad("lifetimeActions must be an array")),
    }
    let expiry = match m.get("attributes") {
        Some(Value::Object(a)) => get_str(a, "expiryTime")?.map(str::to_string),
        None | Some(Value::Null) => None,
        Some(_) => return Err(bad("'attributes' must be an object")),
    };
    Ok((out, expiry))
}

fn paging(query: &HashMap<String, String>) -> Result<(usize, usize), DomainError> {
    let max = match query.get("maxresults") {
        None => MAX_RESULTS,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_RESULTS).contains(n))
            .ok_or_else(|| bad("maxresults must be an integer between 1 and 25"))?,
    };
    let skip = match query.get("$skiptoken") {
        None => 0,
        Some(t) => b64::url_decode(t)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad("invalid $skiptoken"))?,
    };
    Ok((max, skip))
}

fn page(items: Vec<Value>, max: usize, skip: usize, next_base: &str, api: &str) -> Value {
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(max).collect();
    let next = (skip.saturating_add(max) < total).then(|| {
        format!(
            "{next_base}?api-version={api}&$skiptoken={}&maxresults={max}",
            b64::url_encode(skip.saturating_add(max).to_string().as_bytes())
        )
    });
    json!({"value": value, "nextLink": next})
}

async fn execute(
    state: &AppState,
    caller: &Caller,
    vault: &VaultRef,
    op: &KvOp,
    body: &Value,
    query: &HashMap<String, String>,
    rid: &str,
) -> (Response, String) {
    let kv = &state.keyvault;
    let r = Render {
        base: format!(
            "https://{}.{}",
            vault.name,
            state.endpoints.vault_dns_suffix()
        ),
        vault,
    };
    let api = query.get("api-version").cloned().unwrap_or_default();
    let mut key_id = String::new();
    let result: Result<Response, DomainError> = async {
        // Permission first: a caller without the data action learns nothing about the body.
        kv.authorize(caller, vault, op.action(), op.key_name())
            .await?;
        let ok = |v: Value| respond(StatusCode::OK, Some(&v), rid);
        Ok(match op {
            KvOp::Create { name } => {
                let m = obj(body)?;
                let a = get_attrs(m)?;
                let kty = get_str(m, "kty")?
                    .ok_or_else(|| bad("'kty' is required"))?
                    .to_string();
                let p = CreateParams {
                    kty,
                    key_size: get_int(m, "key_size")?.map(|n| n.min(u32::MAX as i64) as u32),
                    crv: get_str(m, "crv")?.map(str::to_string),
                    public_exponent: get_int(m, "public_exponent")?.map(|n| n as u64),
                    key_ops: get_ops(m)?,
                    enabled: get_bool(&a, "enabled")?,
                    nbf: get_int(&a, "nbf")?,
                    exp: get_int(&a, "exp")?,
                    tags: get_tags(m)?,
                };
                let v = kv.create(caller, vault, name, p).await?;
                key_id = r.kid(&v, true);
                ok(r.bundle(&v))
            }
            KvOp::Import { name } => {
                let m = obj(body)?;
                let key = m.get("key").ok_or_else(|| bad("'key' is required"))?;
                if !key.is_object() {
                    return Err(bad("'key' must be a JWK object"));
                }
                let jwk: ImportJwk = serde_json::from_value(key.clone())
                    .map_err(|_| bad("'key' is not a valid JWK"))?;
                let key_ops = match key.get("key_ops") {
                    Some(Value::Array(_)) => get_ops(
                        key.as_object()
                            .ok_or_else(|| bad("'key' must be an object"))?,
                    )?,
                    _ => None,
                };
                let hsm = get_bool(m, "Hsm")?.or(get_bool(m, "hsm")?).unwrap_or(false);
                let a = get_attrs(m)?;
                let v = kv
                    .import(
                        caller,
                        vault,
                        name,
                        &jwk,
                        hsm,
                        key_ops,
                        get_bool(&a, "enabled")?,
                        get_int(&a, "nbf")?,
                        get_int(&a, "exp")?,
                        get_tags(m)?,
                    )
                    .await?;
                key_id = r.kid(&v, true);
                ok(r.bundle(&v))
            }
            KvOp::Get { name, version } => {
                let v = kv.get(caller, vault, name, version.as_deref()).await?;
                key_id = r.kid(&v, true);
                ok(r.bundle(&v))
            }
            KvOp::Update { name, version } => {
                let m = obj(body)?;
                let a = get_attrs(m)?;
                let nullable = |k: &str| -> Result<Option<Option<i64>>, DomainError> {
                    match a.get(k) {
                        None => Ok(None),
                        Some(Value::Null) => Ok(Some(None)),
                        Some(_) => Ok(Some(get_int(&a, k)?)),
                    }
                };
                let p = UpdateParams {
                    key_ops: get_ops(m)?,
                    enabled: get_bool(&a, "enabled")?,
                    nbf: nullable("nbf")?,
                    exp: nullable("exp")?,
                    tags: get_tags(m)?,
                };
                let v = kv
                    .update(caller, vault, name, version.as_deref(), p)
                    .await?;
                key_id = r.kid(&v, true);
                ok(r.bundle(&v))
            }
            KvOp::Delete { name } => {
                let v = kv.delete(caller, vault, name).await?;
                key_id = r.kid(&v, true);
                ok(r.bundle(&v))
            }
            KvOp::List => {
                let (max, skip) = paging(query)?;
                let items = kv
                    .list(caller, vault)
                    .await?
                    .iter()
                    .map(|v| r.item(v, false))
                    .collect();
                ok(page(items, max, skip, &format!("{}/keys", r.base), &api))
            }
            KvOp::ListVersions { name } => {
                let (max, skip) = paging(query)?;
                let items = kv
                    .list_versions(caller, vault, name)
                    .await?
                    .iter()
                    .map(|v| r.item(v, true))
                    .collect();
                ok(page(
                    items,
                    max,
                    skip,
                    &format!("{}/keys/{name}/versions", r.base),
                    &api,
                ))
            }
            KvOp::Backup { name } => {
                let blob = kv.backup(caller, vault, name).await?;
                ok(json!({"value": b64::url_encode(&blob)}))
            }
            KvOp::Restore => {
                let m = obj(body)?;
                let blob = get_b64(m, "value")?.ok_or_else(|| bad("'value' is required"))?;
                let v = kv.restore(caller, vault, &blob).await?;
                key_id = r.kid(&v, true);
                ok(r.bundle(&v))
            }
            KvOp::Dependents { name } => {
                kv.authorize(caller, vault, op.action(), Some(name)).await?;
                let deps = state.mgmt.key_dependents(&r.base, Some(name)).await?;
                ok(json!({"value": deps, "nextLink": null}))
            }
            KvOp::Rotate { name } => {
                let v = kv.rotate(caller, vault, name).await?;
                key_id = r.kid(&v, true);
                ok(r.bundle(&v))
            }
            KvOp::GetPolicy { name } => {
                let p = kv.get_policy(caller, vault, name).await?;
                ok(r.policy(name, p.as_ref()))
            }
            KvOp::SetPolicy { name } => {
                let (actions, expiry) = parse_policy(body)?;
                let p = kv.set_policy(caller, vault, name, actions, expiry).await?;
                ok(r.policy(name, p.as_ref()))
            }
            KvOp::Crypto { name, version, op } => {
                let input = crypto_input(body, *op)?;
                let (view, out) = kv
                    .crypto(caller, vault, name, version.as_deref(), *op, input)
                    .await?;
                key_id = r.kid(&view, true);
                match out {
                    CryptoOutput::Verified(b) => ok(json!({"value": b})),
                    CryptoOutput::Bytes { value, iv, tag } => {
                        let mut v =
                            json!({"kid": key_id, "value": b64::url_encode(value.expose())});
                        if let Some(iv) = iv {
                            v["iv"] = json!(b64::url_encode(&iv));
                        }
                        if let Some(t) = tag {
                            v["tag"] = json!(b64::url_encode(&t));
                        }
                        if let Some(Value::String(aad)) = body.get("aad") {
                            v["aad"] = json!(aad);
                        }
                        ok(v)
                    }
                }
            }
            KvOp::ListDeleted => {
                let (max, skip) = paging(query)?;
                let items = kv
                    .list_deleted(caller, vault)
                    .await?
                    .iter()
                    .map(|v| r.item(v, false))
                    .collect();
                ok(page(
                    items,
                    max,
                    skip,
                    &format!("{}/deletedkeys", r.base),
                    &api,
                ))
            }
            KvOp::GetDeleted { name } => {
                let v = kv.get_deleted(caller, vault, name).await?;
                ok(r.bundle(&v))
            }
            KvOp::Purge { name } => {
                kv.purge(caller, vault, name).await?;
                respond(StatusCode::NO_CONTENT, None, rid)
            }
            KvOp::Recover { name } => {
                let v = kv.recover(caller, vault, name).await?;
                ok(r.bundle(&v))
            }
            KvOp::Rng => {
                let m = obj(body)?;
                let count = get_int(m, "count")?.ok_or_else(|| bad("'count' is required"))?;
                let bytes = kv
                    .random_bytes(caller, vault, count.min(1 << 20) as usize)
                    .await?;
                ok(json!({"value": b64::url_encode(&bytes)}))
            }
        })
    }
    .await;
    (result.unwrap_or_else(|e| domain_error(&e, rid)), key_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_vault_paths() {
        let p = |m: Method, path: &str| KvOp::parse(&m, path);
        assert_eq!(p(Method::GET, "/keys"), Some(KvOp::List));
        assert_eq!(
            p(Method::GET, "/keys/k1/"),
            Some(KvOp::Get {
                name: "k1".into(),
                version: None
            })
        );
        assert_eq!(
            p(Method::GET, "/keys/k1"),
            Some(KvOp::Get {
                name: "k1".into(),
                version: None
            })
        );
        assert_eq!(
            p(Method::GET, "/keys/k1/abc123"),
            Some(KvOp::Get {
                name: "k1".into(),
                version: Some("abc123".into())
            })
        );
        assert_eq!(
            p(Method::PATCH, "/keys/k1/"),
            Some(KvOp::Update {
                name: "k1".into(),
                version: None
            })
        );
        assert_eq!(
            p(Method::POST, "/keys/k1/create"),
            Some(KvOp::Create { name: "k1".into() })
        );
        assert_eq!(
            p(Method::PUT, "/keys/k1"),
            Some(KvOp::Import { name: "k1".into() })
        );
        assert_eq!(p(Method::POST, "/keys/restore"), Some(KvOp::Restore));
        assert_eq!(
            p(Method::POST, "/keys/k1//wrapkey"),
            Some(KvOp::Crypto {
                name: "k1".into(),
                version: None,
                op: CryptoOp::Wrap
            })
        );
        assert_eq!(
            p(Method::POST, "/keys/k1/v1/unwrapKey"),
            Some(KvOp::Crypto {
                name: "k1".into(),
                version: Some("v1".into()),
                op: CryptoOp::Unwrap
            })
        );
        assert_eq!(
            p(Method::PUT, "/keys/k1/rotationpolicy"),
            Some(KvOp::SetPolicy { name: "k1".into() })
        );
        assert_eq!(
            p(Method::DELETE, "/deletedkeys/k1"),
            Some(KvOp::Purge { name: "k1".into() })
        );
        assert_eq!(
            p(Method::POST, "/deletedkeys/k1/recover"),
            Some(KvOp::Recover { name: "k1".into() })
        );
        assert_eq!(p(Method::POST, "/rng"), Some(KvOp::Rng));
        assert_eq!(p(Method::POST, "/keys/k1/v1/explode"), None);
        assert_eq!(p(Method::GET, "/secrets/s1"), None);
        assert_eq!(p(Method::GET, "/keys//"), None);
    }

    #[test]
    fn api_versions() {
        for ok in [
            "7.0",
            "7.4",
            "7.6",
            "7.6-preview.2",
            "2016-10-01",
            "2025-07-01",
            "2026-01-01-preview",
        ] {
            assert!(api_version_supported(ok), "{ok}");
        }
        for bad in ["7.7", "6.0", "2024-01-01", "latest", "", "7.10", "2025-7-1"] {
            assert!(!api_version_supported(bad), "{bad}");
        }
    }

    #[test]
    fn paging_links() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let p = page(items.clone(), 2, 0, "https://v/keys", "7.6");
        assert_eq!(p["value"], json!([0, 1]));
        assert!(
            p["nextLink"]
                .as_str()
                .unwrap_or_default()
                .starts_with("https://v/keys?api-version=7.6&$skiptoken=")
        );
        let last = page(items, 2, 4, "https://v/keys", "7.6");
        assert_eq!(last["value"], json!([4]));
        assert!(last["nextLink"].is_null());
    }
}
