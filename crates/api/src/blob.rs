//! The Blob data plane: path-style `/{account}/{container}/{blob}` and host-style
//! `{account}.blob.{suffix}/{container}/{blob}`. Authentication: Shared Key or a bearer token
//! for `https://storage.azure.com` (RBAC data actions). Errors are XML
//! `<Error><Code/><Message/></Error>` with an `x-ms-error-code` header.
//!
//! This slice serves containers (create, properties, delete, list) and block blobs written in
//! one request (Put Blob, Get Blob with ranges, Get Properties, Delete, List Blobs flat and
//! hierarchical). Staged blocks, SAS, conditional requests, copies and metadata updates come
//! next (see the blob issue).
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use coffer_domain::DomainError;
use coffer_domain::blob::{
    BlobAuth, BlockListKind, ByteSource, Checksums, ContentHeaders, ListItem, MAX_BLOCKS,
    WriteCondition,
};
use coffer_domain::identity::Plane;
use coffer_domain::mgmt::BlobAccount;
use coffer_domain::model::{BlobRecord, ContainerRecord};
use coffer_domain::rbac::ActionKind;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;

use crate::AppState;
use crate::arm::bearer;
use crate::sharedkey;

const SERVICE_VERSION: &str = "2026-10-06";
const MAX_RESULTS: usize = 5000;

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Whether `c` may appear in an XML 1.0 document (a CR would be read back as a LF).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A blob name or prefix as a listing's `<Name>`: escaped, or, if it holds characters XML
/// cannot carry, percent-encoded (UTF-8) with `Encoded="true"`, as Azure does.
fn xml_name(s: &str) -> String {
    if s.chars().all(xml_char) {
        format!("<Name>{}</Name>", xml_escape(s))
    } else {
        format!("<Name Encoded=\"true\">{}</Name>", percent_encode(s))
    }
}

/// Text echoed from a request (a prefix, a delimiter): characters XML cannot carry become
/// U+FFFD.
fn xml_echo(s: &str) -> String {
    xml_escape(&s.replace(|c: char| !xml_char(c), "\u{FFFD}"))
}

/// Percent-encode every byte but ASCII letters, digits and `-._~/`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base(status: StatusCode, rid: &str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header("x-ms-request-id", rid)
        .header("x-ms-version", SERVICE_VERSION)
        .header(http::header::DATE, httpdate(now()))
}

pub fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    let rid = coffer_crypto::random::uuid().unwrap_or_default();
    error_with(status, code, message, &rid)
}

fn error_with(status: StatusCode, code: &str, message: &str, rid: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{}\nRequestId:{rid}\nTime:{}</Message></Error>",
        xml_escape(message),
        coffer_domain::clock::rfc3339(now())
    );
    base(status, rid)
        .header(http::header::CONTENT_TYPE, "application/xml")
        .header("x-ms-error-code", code)
        .body(Body::from(body))
        .unwrap_or_default()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 1123 date, as HTTP and Azure use.
pub fn httpdate(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// Domain errors on the Blob wire (the one place this mapping happens).
fn domain_error(e: &DomainError, rid: &str) -> Response {
    let msg = e.to_string();
    let (status, code) = match e {
        DomainError::ContainerNotFound => (StatusCode::NOT_FOUND, "ContainerNotFound"),
        DomainError::ContainerAlreadyExists => (StatusCode::CONFLICT, "ContainerAlreadyExists"),
        DomainError::BlobNotFound => (StatusCode::NOT_FOUND, "BlobNotFound"),
        DomainError::InvalidRange => (StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange"),
        DomainError::InvalidBlockList(_) => (StatusCode::BAD_REQUEST, "InvalidBlockList"),
        DomainError::InvalidXml(_) => (StatusCode::BAD_REQUEST, "InvalidXmlDocument"),
        DomainError::Md5Mismatch => (StatusCode::BAD_REQUEST, "Md5Mismatch"),
        DomainError::BadInput { code, .. } => (StatusCode::BAD_REQUEST, *code),
        DomainError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestBodyTooLarge"),
        DomainError::Crc64Mismatch => (StatusCode::BAD_REQUEST, "Crc64Mismatch"),
        DomainError::Forbidden { .. } => (StatusCode::FORBIDDEN, "AuthorizationPermissionMismatch"),
        DomainError::InvalidName {
            kind: "container", ..
        } => (StatusCode::BAD_REQUEST, "InvalidResourceName"),
        DomainError::InvalidName { .. } | DomainError::InvalidProperty(_) => {
            (StatusCode::BAD_REQUEST, "InvalidInput")
        }
        DomainError::Conflict(_) => (StatusCode::CONFLICT, "BlobAlreadyExists"),
        DomainError::ConditionNotMet => (StatusCode::PRECONDITION_FAILED, "ConditionNotMet"),
        DomainError::SourceConditionNotMet => {
            (StatusCode::PRECONDITION_FAILED, "SourceConditionNotMet")
        }
        DomainError::ResourceNotFound { .. }
        | DomainError::VaultNotFound(_)
        | DomainError::KeyNotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        DomainError::SubscriptionNotFound(_) | DomainError::ResourceGroupNotFound(_) => {
            (StatusCode::NOT_FOUND, "ResourceNotFound")
        }
        DomainError::OperationNotAllowed(_) => (StatusCode::FORBIDDEN, "AuthorizationFailure"),
        DomainError::CmkUnavailable { code, .. } => (StatusCode::FORBIDDEN, *code),
        DomainError::Cpk { code, .. } => (StatusCode::CONFLICT, *code),
        DomainError::ScopeDisabled(_) => (StatusCode::FORBIDDEN, "EncryptionScopeDisabled"),
        DomainError::CmkInvalid { .. } | DomainError::PropertyCannotChange(_) => {
            (StatusCode::BAD_REQUEST, "InvalidInput")
        }
        DomainError::LocationNotAvailable { .. }
        | DomainError::RoleDefinitionNotFound(_)
        | DomainError::PrincipalNotFound(_)
        | DomainError::RoleAssignmentExists
        | DomainError::VaultNameInUse(_)
        | DomainError::StorageAccountNameTaken(_) => (StatusCode::BAD_REQUEST, "InvalidInput"),
        DomainError::Internal(detail) => {
            tracing::error!(request_id = rid, detail = %detail, "internal error");
            return error_with(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "The server encountered an internal error.",
                rid,
            );
        }
    };
    error_with(status, code, &msg, rid)
}

/// The sections of Set Blob Service Properties, in the order Azure writes them, with the
/// value a fresh account reports.
const SERVICE_PROPERTIES: [(&str, &str); 7] = [
    (
        "Logging",
        "<Logging><Version>1.0</Version><Delete>false</Delete><Read>false</Read><Write>false</Write><RetentionPolicy><Enabled>false</Enabled></RetentionPolicy></Logging>",
    ),
    (
        "HourMetrics",
        "<HourMetrics><Version>1.0</Version><Enabled>false</Enabled><RetentionPolicy><Enabled>false</Enabled></RetentionPolicy></HourMetrics>",
    ),
    (
        "MinuteMetrics",
        "<MinuteMetrics><Version>1.0</Version><Enabled>false</Enabled><RetentionPolicy><Enabled>false</Enabled></RetentionPolicy></MinuteMetrics>",
    ),
    ("Cors", "<Cors />"),
    ("DefaultServiceVersion", ""),
    (
        "DeleteRetentionPolicy",
        "<DeleteRetentionPolicy><Enabled>false</Enabled></DeleteRetentionPolicy>",
    ),
    (
        "StaticWebsite",
        "<StaticWebsite><Enabled>false</Enabled></StaticWebsite>",
    ),
];

/// Split a Set Blob Service Properties document into its top-level sections (name, XML),
/// checking it is well formed and names only known sections. Sections are stored as sent
/// (they are not enforced by this server) and merged: a section not sent is left unchanged.
pub fn parse_service_properties(xml: &[u8]) -> Result<Vec<(String, String)>, DomainError> {
    use quick_xml::events::Event;
    let bad = |m: &str| DomainError::InvalidXml(m.to_string());
    let known = |name: &str| {
        if SERVICE_PROPERTIES.iter().any(|(n, _)| *n == name) {
            Ok(())
        } else {
            Err(bad("unknown element in StorageServiceProperties"))
        }
    };
    let slice = |from: u64, to: u64| {
        let (from, to) = (usize::try_from(from).ok(), usize::try_from(to).ok());
        from.zip(to)
            .and_then(|(f, t)| xml.get(f..t))
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .ok_or_else(|| bad("the document is not valid UTF-8"))
    };
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut depth = 0usize;
    let mut open: Option<(String, u64)> = None;
    let mut root_done = false;
    loop {
        let before = reader.buffer_position();
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|_| bad("the document is not well-formed XML"))?;
        let after = reader.buffer_position();
        match ev {
            Event::Start(e) => {
                let name = e.name().into_inner().to_string();
                match depth {
                    0 if !root_done && name == "StorageServiceProperties" => {}
                    0 => return Err(bad("the root element must be StorageServiceProperties")),
                    1 => {
                        known(&name)?;
                        open = Some((name, before));
                    }
                    _ => {}
                }
                depth += 1;
            }
            Event::Empty(e) => {
                let name = e.name().into_inner().to_string();
                match depth {
                    0 if !root_done && name == "StorageServiceProperties" => root_done = true,
                    0 => return Err(bad("the root element must be StorageServiceProperties")),
                    1 => {
                        known(&name)?;
                        out.push((name, slice(before, after)?));
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| bad("unbalanced elements"))?;
                if depth == 1
                    && let Some((name, start)) = open.take()
                {
                    out.push((name, slice(start, after)?));
                }
                if depth == 0 {
                    root_done = true;
                }
            }
            Event::Text(t) => {
                if depth <= 1 && !t.into_inner().chars().all(char::is_whitespace) {
                    return Err(bad("text outside a section"));
                }
            }
            Event::CData(_) if depth >= 2 => {}
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            _ => return Err(bad("unsupported XML content")),
        }
        buf.clear();
    }
    if !root_done || depth != 0 {
        return Err(bad("the document ends early"));
    }
    for (i, (n, _)) in out.iter().enumerate() {
        if out.iter().skip(i + 1).any(|(m, _)| m == n) {
            return Err(bad("a section appears twice"));
        }
    }
    Ok(out)
}

/// The service properties document: stored sections, defaults for the others.
fn render_service_properties(stored: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut x =
        String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><StorageServiceProperties>");
    for (name, default) in SERVICE_PROPERTIES {
        x.push_str(stored.get(name).and_then(|v| v.as_str()).unwrap_or(default));
    }
    x.push_str("</StorageServiceProperties>");
    x
}

/// The largest range `x-ms-range-get-content-md5` may cover (Azure's limit).
const RANGE_MD5_MAX: u64 = 4 * 1024 * 1024;

/// A Blob operation.
#[derive(Debug, PartialEq, Eq)]
pub enum BlobOp {
    ListContainers,
    GetServiceProperties,
    SetServiceProperties,
    CreateContainer {
        container: String,
    },
    GetContainer {
        container: String,
    },
    DeleteContainer {
        container: String,
    },
    ListBlobs {
        container: String,
    },
    PutBlob {
        container: String,
        blob: String,
    },
    GetBlob {
        container: String,
        blob: String,
    },
    HeadBlob {
        container: String,
        blob: String,
    },
    DeleteBlob {
        container: String,
        blob: String,
    },
    PutBlock {
        container: String,
        blob: String,
        block_id: String,
    },
    SetBlobMetadata {
        container: String,
        blob: String,
    },
    GetBlobMetadata {
        container: String,
        blob: String,
    },
    SetBlobProperties {
        container: String,
        blob: String,
    },
    SetContainerMetadata {
        container: String,
    },
    PutBlockList {
        container: String,
        blob: String,
    },
    GetBlockList {
        container: String,
        blob: String,
    },
}

impl BlobOp {
    /// Azure Storage's operation name (as in its request logs).
    pub fn operation_name(&self) -> &'static str {
        match self {
            BlobOp::ListContainers => "ListContainers",
            BlobOp::GetServiceProperties => "GetBlobServiceProperties",
            BlobOp::SetServiceProperties => "SetBlobServiceProperties",
            BlobOp::CreateContainer { .. } => "CreateContainer",
            BlobOp::GetContainer { .. } => "GetContainerProperties",
            BlobOp::DeleteContainer { .. } => "DeleteContainer",
            BlobOp::ListBlobs { .. } => "ListBlobs",
            BlobOp::PutBlob { .. } => "PutBlob",
            BlobOp::GetBlob { .. } => "GetBlob",
            BlobOp::HeadBlob { .. } => "GetBlobProperties",
            BlobOp::DeleteBlob { .. } => "DeleteBlob",
            BlobOp::PutBlock { .. } => "PutBlock",
            BlobOp::SetBlobMetadata { .. } => "SetBlobMetadata",
            BlobOp::GetBlobMetadata { .. } => "GetBlobMetadata",
            BlobOp::SetBlobProperties { .. } => "SetBlobProperties",
            BlobOp::SetContainerMetadata { .. } => "SetContainerMetadata",
            BlobOp::PutBlockList { .. } => "PutBlockList",
            BlobOp::GetBlockList { .. } => "GetBlockList",
        }
    }

    /// `segments`: decoded path segments after the account.
    pub fn parse(
        method: &Method,
        container: Option<&str>,
        blob: Option<&str>,
        q: &HashMap<String, String>,
    ) -> Option<Self> {
        let restype = q.get("restype").map(String::as_str);
        let comp = q.get("comp").map(String::as_str);
        match (container, blob) {
            (None, None) if method == Method::GET && comp == Some("list") => {
                Some(Self::ListContainers)
            }
            (None, None) if restype == Some("service") && comp == Some("properties") => {
                match method.as_str() {
                    "GET" => Some(Self::GetServiceProperties),
                    "PUT" => Some(Self::SetServiceProperties),
                    _ => None,
                }
            }
            (Some(c), None) if restype == Some("container") => {
                let container = c.to_string();
                match (method.as_str(), comp) {
                    ("PUT", None) => Some(Self::CreateContainer { container }),
                    ("GET" | "HEAD", None) => Some(Self::GetContainer { container }),
                    ("DELETE", None) => Some(Self::DeleteContainer { container }),
                    ("PUT", Some("metadata")) => Some(Self::SetContainerMetadata { container }),
                    ("GET" | "HEAD", Some("metadata")) => Some(Self::GetContainer { container }),
                    ("GET", Some("list")) => Some(Self::ListBlobs { container }),
                    _ => None,
                }
            }
            (Some(c), Some(b)) if comp == Some("block") && method == Method::PUT => {
                Some(Self::PutBlock {
                    container: c.to_string(),
                    blob: b.to_string(),
                    block_id: q.get("blockid")?.clone(),
                })
            }
            (Some(c), Some(b)) if comp == Some("metadata") => {
                let (container, blob) = (c.to_string(), b.to_string());
                match method.as_str() {
                    "PUT" => Some(Self::SetBlobMetadata { container, blob }),
                    "GET" | "HEAD" => Some(Self::GetBlobMetadata { container, blob }),
                    _ => None,
                }
            }
            (Some(c), Some(b)) if comp == Some("properties") && method == Method::PUT => {
                Some(Self::SetBlobProperties {
                    container: c.to_string(),
                    blob: b.to_string(),
                })
            }
            (Some(c), Some(b)) if comp == Some("blocklist") => {
                let (container, blob) = (c.to_string(), b.to_string());
                match method.as_str() {
                    "PUT" => Some(Self::PutBlockList { container, blob }),
                    "GET" => Some(Self::GetBlockList { container, blob }),
                    _ => None,
                }
            }
            (Some(c), Some(b)) if comp.is_none() => {
                let (container, blob) = (c.to_string(), b.to_string());
                match method.as_str() {
                    "PUT" => Some(Self::PutBlob { container, blob }),
                    "GET" => Some(Self::GetBlob { container, blob }),
                    "HEAD" => Some(Self::HeadBlob { container, blob }),
                    "DELETE" => Some(Self::DeleteBlob { container, blob }),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

struct BodySource(Body);

#[async_trait]
impl ByteSource for BodySource {
    async fn next_chunk(&mut self) -> coffer_domain::Result<Option<bytes::Bytes>> {
        loop {
            match self.0.frame().await {
                None => return Ok(None),
                Some(Err(_)) => {
                    return Err(DomainError::InvalidProperty(
                        "the request body could not be read".into(),
                    ));
                }
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        if d.is_empty() {
                            continue;
                        }
                        return Ok(Some(d));
                    }
                }
            }
        }
    }
}

fn hv<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// Metadata (`x-ms-meta-{name}`) as Azure takes it: names are C# identifiers, each given once;
/// values ASCII; names and values together at most [`METADATA_MAX`] bytes.
fn metadata_from(h: &HeaderMap) -> Result<Vec<(String, String)>, DomainError> {
    let invalid = |message: String| DomainError::BadInput {
        code: "InvalidMetadata",
        message,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut total = 0usize;
    for (k, v) in h {
        if let Some(name) = k.as_str().strip_prefix("x-ms-meta-") {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(invalid(format!("The metadata name '{name}' is invalid.")));
            }
            // Header names arrive lower-cased, so `Key` and `key` meet here as one name.
            if out.iter().any(|(n, _)| n == name) {
                return Err(invalid(format!(
                    "The metadata name '{name}' is given more than once."
                )));
            }
            let value = v
                .to_str()
                .map_err(|_| invalid(format!("The value of metadata '{name}' is not ASCII.")))?;
            total += name.len() + value.len();
            if total > METADATA_MAX {
                return Err(DomainError::BadInput {
                    code: "MetadataTooLarge",
                    message: format!(
                        "The size of the metadata exceeds the maximum of {METADATA_MAX} bytes."
                    ),
                });
            }
            out.push((name.to_string(), value.to_string()));
        }
    }
    Ok(out)
}

/// Azure's limit on a blob's or container's metadata (names and values).
const METADATA_MAX: usize = 8 * 1024;

/// Parse `bytes=a-b` / `bytes=a-` against `size`: Ok(None) = whole blob.
fn parse_range(h: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, DomainError> {
    let Some(r) = hv(h, "x-ms-range").or_else(|| hv(h, "range")) else {
        return Ok(None);
    };
    let spec = r.strip_prefix("bytes=").ok_or(DomainError::InvalidRange)?;
    let (a, b) = spec.split_once('-').ok_or(DomainError::InvalidRange)?;
    let start: u64 = a.trim().parse().map_err(|_| DomainError::InvalidRange)?;
    let end_incl: Option<u64> = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse().map_err(|_| DomainError::InvalidRange)?)
    };
    if start >= size || end_incl.is_some_and(|e| e < start) {
        return Err(DomainError::InvalidRange);
    }
    let end = end_incl
        .map(|e| e.saturating_add(1).min(size))
        .unwrap_or(size);
    Ok(Some((start, end)))
}

fn blob_headers(
    mut b: http::response::Builder,
    rec: &BlobRecord,
    meta: &[(String, String)],
) -> http::response::Builder {
    if let Some(s) = &rec.scope {
        b = b.header("x-ms-encryption-scope", s);
    }
    b = b
        .header(http::header::ETAG, &rec.etag)
        .header(http::header::LAST_MODIFIED, httpdate(rec.last_modified))
        .header("x-ms-creation-time", httpdate(rec.created))
        .header("x-ms-blob-type", "BlockBlob")
        .header("x-ms-server-encrypted", "true")
        .header("x-ms-lease-status", "unlocked")
        .header("x-ms-lease-state", "available")
        .header("x-ms-access-tier", "Hot")
        .header("x-ms-access-tier-inferred", "true")
        .header(http::header::ACCEPT_RANGES, "bytes");
    let pairs = [
        (http::header::CONTENT_TYPE.as_str(), &rec.content_type),
        ("content-encoding", &rec.content_encoding),
        ("content-language", &rec.content_language),
        ("content-disposition", &rec.content_disposition),
        ("cache-control", &rec.cache_control),
    ];
    for (k, v) in pairs {
        if let Some(v) = v {
            b = b.header(k, v);
        }
    }
    if let Some(c) = &rec.copy {
        b = b
            .header("x-ms-copy-id", &c.id)
            .header("x-ms-copy-source", &c.source)
            .header("x-ms-copy-status", "success")
            .header("x-ms-copy-progress", format!("{}/{}", c.size, c.size))
            .header("x-ms-copy-completion-time", httpdate(c.completed));
    }
    for (k, v) in meta {
        b = b.header(format!("x-ms-meta-{k}"), v);
    }
    b
}

enum Auth {
    SharedKey { account: String, signature: String },
    Bearer(String),
    None,
}

fn auth_of(h: &HeaderMap) -> Auth {
    let Some(v) = hv(h, "authorization") else {
        return Auth::None;
    };
    if let Some(rest) = v.strip_prefix("SharedKey ")
        && let Some((a, s)) = rest.trim().split_once(':')
    {
        return Auth::SharedKey {
            account: a.to_string(),
            signature: s.to_string(),
        };
    }
    match bearer(h) {
        Some(t) => Auth::Bearer(t.expose().to_string()),
        None => Auth::None,
    }
}

/// What a request turned out to be, for its audit record.
#[derive(Default)]
struct Seen {
    operation: &'static str,
    account_id: String,
    identity: coffer_domain::audit::AuditIdentity,
}

/// Every Blob request is audited: queued for the log's next group commit before the response
/// is sent (the request does not wait for the fsync; a log that cannot take records fails it).
pub async fn handle(state: Arc<AppState>, req: Request) -> Response {
    let rid = coffer_crypto::random::uuid().unwrap_or_default();
    let start = std::time::Instant::now();
    let ip = crate::peer_ip(&req);
    let client_info = crate::user_agent(req.headers());
    let request_uri: String = req.uri().path().chars().take(512).collect();
    let mut seen = Seen::default();
    // Echoed as Azure does: the client's request id, and the version the request asked for.
    let client_rid = req
        .headers()
        .get("x-ms-client-request-id")
        .filter(|v| v.len() <= 1024)
        .cloned();
    let version = req
        .headers()
        .get("x-ms-version")
        .filter(|v| {
            let v = v.as_bytes();
            v.len() == 10
                && v.iter().enumerate().all(|(i, c)| {
                    if i == 4 || i == 7 {
                        *c == b'-'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        })
        .cloned();
    // A client that asked `Expect: 100-continue` has not sent its body yet: draining it would
    // ask for the very bytes the refusal spares it.
    let continues = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (req, unread) = if continues {
        (req, None)
    } else {
        let (parts, body) = req.into_parts();
        let (unread, body) = crate::body::Retained::wrap(body);
        (Request::from_parts(parts, body), Some(unread))
    };
    let mut resp = serve(&state, req, &rid, &mut seen).await;
    if let Some(v) = client_rid {
        resp.headers_mut().insert("x-ms-client-request-id", v);
    }
    if let Some(v) = version {
        resp.headers_mut().insert("x-ms-version", v);
    }
    if let Some(unread) = unread {
        unread.drain().await;
    }
    let status = resp.status();
    let rec = coffer_domain::audit::AuditRecord {
        time: state.clock.now(),
        resource_id: seen.account_id,
        operation_name: if seen.operation.is_empty() {
            "BlobRequest"
        } else {
            seen.operation
        }
        .into(),
        result_type: if status.is_success() || status == StatusCode::NOT_MODIFIED {
            "Success"
        } else {
            "Failure"
        }
        .into(),
        result_signature: status.as_u16(),
        caller_ip_address: ip,
        identity: seen.identity,
        request_id: rid.clone(),
        correlation_id: rid.clone(),
        duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        properties: serde_json::json!({"requestUri": request_uri, "clientInfo": client_info}),
        ..Default::default()
    };
    if let Err(e) = state.audit.record_queued(&rec).await {
        tracing::error!(error = %e, "audit write failed");
        return error_with(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServerBusy",
            "The request could not be audited.",
            &rid,
        );
    }
    crate::named(resp, rec.operation_name)
}

async fn serve(state: &Arc<AppState>, req: Request, rid: &str, seen: &mut Seen) -> Response {
    let rid = rid.to_string();
    let state = state.clone();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let raw_path = req.uri().path().to_string();
    // Host-style: the whole path is `/{container}/{blob...}`; path-style: `/{account}/...`.
    let trimmed = raw_path.trim_start_matches('/');
    let (account, host_style, rest) = match state.endpoints.account_of_host(&host) {
        Some(a) => (a.to_string(), true, trimmed),
        None => {
            let (a, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            if a.is_empty() {
                return error_with(
                    StatusCode::BAD_REQUEST,
                    "InvalidUri",
                    "The request URI does not name a storage account.",
                    &rid,
                );
            }
            (a.to_string(), false, rest)
        }
    };
    let raw_segments: Vec<&str> = rest.splitn(2, '/').collect();
    let container = raw_segments
        .first()
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s));
    let blob = raw_segments
        .get(1)
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s));
    let (container, blob) = match (container, blob) {
        (Some(None), _) | (_, Some(None)) => {
            return error_with(
                StatusCode::BAD_REQUEST,
                "InvalidUri",
                "The request URI is not valid UTF-8.",
                &rid,
            );
        }
        (c, b) => (c.flatten(), b.flatten()),
    };
    let pairs = query_pairs(req.uri());
    let q: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let method = req.method().clone();
    seen.account_id = format!("storage:{account}");
    let Some(op) = BlobOp::parse(&method, container.as_deref(), blob.as_deref(), &q) else {
        return error_with(
            StatusCode::BAD_REQUEST,
            "UnsupportedHttpVerb",
            "This operation is not supported on this resource.",
            &rid,
        );
    };
    seen.operation = op.operation_name();

    // Authenticate.
    let auth = match auth_of(req.headers()) {
        Auth::SharedKey {
            account: a,
            signature,
        } => {
            if let Some(msg) = shared_key_precheck(
                req.headers(),
                host_style,
                &account,
                container.as_deref(),
                &pairs,
            ) {
                return error_with(StatusCode::FORBIDDEN, "AuthenticationFailed", msg, &rid);
            }
            if a != account {
                return error_with(
                    StatusCode::FORBIDDEN,
                    "AuthenticationFailed",
                    "The account in the Authorization header does not match the request.",
                    &rid,
                );
            }
            let keys = match state.blob.account_keys(&account).await {
                Ok(k) => k,
                Err(e) => return domain_error(&e, &rid),
            };
            let sts = sharedkey::string_to_sign(
                method.as_str(),
                req.headers(),
                &account,
                &raw_path,
                &pairs,
            );
            if !sharedkey::verify(&keys, &sts, &signature) {
                return error_with(
                    StatusCode::FORBIDDEN,
                    "AuthenticationFailed",
                    "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
                    &rid,
                );
            }
            seen.identity.upn = "account key".into();
            BlobAuth::SharedKey
        }
        Auth::Bearer(token) => match state.identity.authenticate(&token, Plane::Storage).await {
            Ok(c) => {
                seen.identity.tid = c.tenant_id.clone();
                seen.identity.oid = c.object_id.clone();
                seen.identity.appid = c.app_id.clone();
                BlobAuth::Token(c)
            }
            Err(e) => {
                return unauthorized(
                    &state,
                    &format!("Server failed to authenticate the request: {e}."),
                    &rid,
                );
            }
        },
        Auth::None if crate::sas::present(&q) => {
            let keys = match state.blob.account_keys(&account).await {
                Ok(k) => k,
                Err(e) => return domain_error(&e, &rid),
            };
            let peer = req.extensions().get::<crate::PeerAddr>().map(|p| p.0.ip());
            match crate::sas::verify(
                &q,
                &account,
                container.as_deref(),
                blob.as_deref(),
                &keys,
                now(),
                peer,
            ) {
                Ok(grant) if grant.allows(&op) => {
                    seen.identity.upn = "SAS".into();
                    BlobAuth::SharedKey
                }
                Ok(_) => {
                    return error_with(
                        StatusCode::FORBIDDEN,
                        "AuthorizationPermissionMismatch",
                        "This request is not authorized to perform this operation using this permission.",
                        &rid,
                    );
                }
                Err(msg) => {
                    return error_with(StatusCode::FORBIDDEN, "AuthenticationFailed", msg, &rid);
                }
            }
        }
        Auth::None => {
            return unauthorized(
                &state,
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
                &rid,
            );
        }
    };
    let acct = match state.blob.account(&account, &rid).await {
        Ok(a) => a,
        Err(e) => return domain_error(&e, &rid),
    };
    seen.account_id = acct.id.clone();
    if matches!(auth, BlobAuth::SharedKey) && !acct.allow_shared_key {
        return error_with(
            StatusCode::FORBIDDEN,
            "KeyBasedAuthenticationNotPermitted",
            "Key based authentication is not permitted on this storage account.",
            &rid,
        );
    }
    // A customer-managed key that cannot be used now fails every request, but only after the
    // request is authorized: an unauthorized caller learns nothing of the key's state.
    if let Some(unavailable) = acct.key_unavailable() {
        let (action, kind, container) = op_requirement(&op);
        if let Err(denied) = state
            .blob
            .authorize_action(&auth, &acct, action, kind, container)
            .await
        {
            return domain_error(&denied, &rid);
        }
        return domain_error(&unavailable, &rid);
    }
    // The source of a copy is read as the account, or with the source's customer-provided key.
    let copy_src = match source_customer_key(req.headers()) {
        Ok(None) => None,
        Ok(Some((key, _))) => match state.mgmt.cpk_tag(key.expose()) {
            Ok(tag) => Some(acct.with_customer_key(key, tag)),
            Err(e) => return domain_error(&e, &rid),
        },
        Err(e) => return domain_error(&e, &rid),
    };
    let copy_src = match copy_src {
        Some(v) => Some(v),
        None if hv(req.headers(), "x-ms-copy-source").is_some() => Some(acct.as_stored()),
        None => None,
    };
    // A customer-provided key replaces the account key for this request.
    let (acct, cpk_sha) = match customer_key(req.headers(), &op) {
        Ok(None) => (acct, None),
        Ok(Some((key, sha))) => match state.mgmt.cpk_tag(key.expose()) {
            Ok(tag) => (acct.with_customer_key(key, tag), Some(sha)),
            Err(e) => return domain_error(&e, &rid),
        },
        Err(e) => return domain_error(&e, &rid),
    };
    // Writes go into an encryption scope: the request's, else the container's default.
    let writes_data = matches!(
        op,
        BlobOp::PutBlob { .. } | BlobOp::PutBlock { .. } | BlobOp::PutBlockList { .. }
    );
    let requested_scope = hv(req.headers(), "x-ms-encryption-scope").map(str::to_string);
    let acct = match (&op, writes_data) {
        (BlobOp::PutBlob { container, .. }, true)
        | (BlobOp::PutBlock { container, .. }, true)
        | (BlobOp::PutBlockList { container, .. }, true) => {
            if acct.cpk.is_some() && requested_scope.is_some() {
                return domain_error(
                    &DomainError::InvalidProperty(
                        "a request cannot carry both a customer-provided key and an encryption scope"
                            .into(),
                    ),
                    &rid,
                );
            }
            match state
                .blob
                .write_scope(&acct, container, requested_scope.as_deref())
                .await
            {
                Ok(Some(s)) if acct.cpk.is_none() => acct.with_scope(s),
                Ok(_) => acct,
                Err(e) => return domain_error(&e, &rid),
            }
        }
        _ => acct,
    };
    let written_scope = acct.scope_name();
    let (parts, body) = req.into_parts();
    let mut resp = execute(
        &state,
        &auth,
        &acct,
        copy_src.as_ref(),
        op,
        &parts.headers,
        &q,
        body,
        &rid,
    )
    .await
    .unwrap_or_else(|e| domain_error(&e, &rid));
    if let Some(sha) = cpk_sha
        && resp.status().is_success()
        && let Ok(v) = http::HeaderValue::from_str(&sha)
    {
        resp.headers_mut().insert("x-ms-encryption-key-sha256", v);
    }
    if let Some(s) = written_scope
        && resp.status().is_success()
        && let Ok(v) = http::HeaderValue::from_str(&s)
    {
        resp.headers_mut().insert("x-ms-encryption-scope", v);
    }
    resp
}

/// The action (and its scope) an operation is authorized by: the same as the domain checks.
fn op_requirement(op: &BlobOp) -> (&'static str, ActionKind, Option<&str>) {
    use coffer_domain::blob::actions as a;
    match op {
        BlobOp::ListContainers | BlobOp::GetServiceProperties | BlobOp::SetServiceProperties => {
            (a::CONTAINER_READ, ActionKind::Control, None)
        }
        BlobOp::CreateContainer { container } | BlobOp::SetContainerMetadata { container } => {
            (a::CONTAINER_WRITE, ActionKind::Control, Some(container))
        }
        BlobOp::DeleteContainer { container } => {
            (a::CONTAINER_DELETE, ActionKind::Control, Some(container))
        }
        BlobOp::GetContainer { container } => {
            (a::CONTAINER_READ, ActionKind::Control, Some(container))
        }
        BlobOp::ListBlobs { container }
        | BlobOp::GetBlob { container, .. }
        | BlobOp::HeadBlob { container, .. }
        | BlobOp::GetBlobMetadata { container, .. }
        | BlobOp::GetBlockList { container, .. } => {
            (a::BLOB_READ, ActionKind::Data, Some(container))
        }
        BlobOp::PutBlob { container, .. }
        | BlobOp::PutBlock { container, .. }
        | BlobOp::PutBlockList { container, .. }
        | BlobOp::SetBlobMetadata { container, .. }
        | BlobOp::SetBlobProperties { container, .. } => {
            (a::BLOB_WRITE, ActionKind::Data, Some(container))
        }
        BlobOp::DeleteBlob { container, .. } => (a::BLOB_DELETE, ActionKind::Data, Some(container)),
    }
}

/// The customer-provided key of a request (`x-ms-encryption-key`, `-sha256`, `-algorithm`),
/// validated, for the operations that take one; None when the request has none.
fn customer_key(
    h: &HeaderMap,
    op: &BlobOp,
) -> Result<Option<(coffer_secret::SecretBytes, String)>, DomainError> {
    let Some((key, sha, alg)) = key_headers(h, "x-ms-encryption") else {
        return Ok(None);
    };
    let bad = |m: &str| DomainError::InvalidProperty(m.to_string());
    let write = matches!(
        op,
        BlobOp::PutBlob { .. }
            | BlobOp::PutBlock { .. }
            | BlobOp::PutBlockList { .. }
            | BlobOp::SetBlobMetadata { .. }
    );
    let read = matches!(
        op,
        BlobOp::GetBlob { .. } | BlobOp::HeadBlob { .. } | BlobOp::GetBlobMetadata { .. }
    );
    if !write && !read {
        return Err(bad(
            "customer-provided keys are accepted on Put Blob (and Put Blob From URL), Put Block, Put Block List, Get Blob, Get Blob Properties and Get/Set Blob Metadata",
        ));
    }
    parse_customer_key(key, sha, alg, read, "x-ms-encryption")
}

/// The key of the source of Put Blob From URL / Copy Blob (`x-ms-source-encryption-key`,
/// `-sha256`, `-algorithm`), validated; None when the request has none.
fn source_customer_key(
    h: &HeaderMap,
) -> Result<Option<(coffer_secret::SecretBytes, String)>, DomainError> {
    let Some((key, sha, alg)) = key_headers(h, "x-ms-source-encryption") else {
        return Ok(None);
    };
    if hv(h, "x-ms-copy-source").is_none() {
        return Err(DomainError::InvalidProperty(
            "x-ms-source-encryption-key is accepted with x-ms-copy-source only".into(),
        ));
    }
    // The source is read: the algorithm header is optional.
    parse_customer_key(key, sha, alg, true, "x-ms-source-encryption")
}

/// `{prefix}-key`, `{prefix}-key-sha256` and `{prefix}-algorithm`, or None when none is sent.
type KeyHeaders<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);
fn key_headers<'a>(h: &'a HeaderMap, prefix: &str) -> Option<KeyHeaders<'a>> {
    let key = hv(h, &format!("{prefix}-key"));
    let sha = hv(h, &format!("{prefix}-key-sha256"));
    let alg = hv(h, &format!("{prefix}-algorithm"));
    (key.is_some() || sha.is_some() || alg.is_some()).then_some((key, sha, alg))
}

/// Validate a customer-provided key's headers (`{prefix}-key`, `-key-sha256`, `-algorithm`):
/// base64 of 256 bits, its SHA-256, AES256 (required on writes).
fn parse_customer_key(
    key: Option<&str>,
    sha: Option<&str>,
    alg: Option<&str>,
    read: bool,
    prefix: &str,
) -> Result<Option<(coffer_secret::SecretBytes, String)>, DomainError> {
    let bad = |m: String| DomainError::InvalidProperty(m);
    let (Some(key), Some(sha)) = (key, sha) else {
        return Err(bad(format!(
            "{prefix}-key and {prefix}-key-sha256 must be sent together"
        )));
    };
    match alg {
        Some("AES256") => {}
        None if read => {}
        None => {
            return Err(bad(format!(
                "{prefix}-algorithm: AES256 is required on writes"
            )));
        }
        Some(_) => return Err(bad(format!("{prefix}-algorithm must be AES256"))),
    }
    let raw = coffer_crypto::b64::std_decode(key)
        .filter(|k| k.len() == 32)
        .map(coffer_secret::SecretBytes::new)
        .ok_or_else(|| bad(format!("{prefix}-key must be the base64 of a 256-bit key")))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw.expose());
    let want = coffer_crypto::b64::std_decode(sha)
        .ok_or_else(|| bad(format!("{prefix}-key-sha256 must be base64")))?;
    if !coffer_secret::ct_eq(digest.as_ref(), &want) {
        return Err(bad(format!(
            "{prefix}-key-sha256 is not the SHA-256 of {prefix}-key"
        )));
    }
    Ok(Some((raw, sha.to_string())))
}

/// Checks that make a Shared Key signature bind one request only: a fresh date (replay
/// window of 15 minutes, as Azure), no repeated query parameters (their canonical form would
/// be ambiguous), and no host-style path that could pass for a path-style one.
fn shared_key_precheck(
    h: &HeaderMap,
    host_style: bool,
    account: &str,
    container: Option<&str>,
    pairs: &[(String, String)],
) -> Option<&'static str> {
    let Some(date) = hv(h, "x-ms-date").or_else(|| hv(h, "date")) else {
        return Some("Shared Key requests need an x-ms-date (or Date) header.");
    };
    let when = time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc2822)
        .ok()
        .map(|t| t.unix_timestamp());
    match when {
        Some(t) if (t - now()).abs() <= 15 * 60 => {}
        Some(_) => {
            return Some(
                "The request date (x-ms-date) is more than 15 minutes from the server time.",
            );
        }
        None => return Some("The x-ms-date header is not a valid RFC 1123 date."),
    }
    let mut keys: Vec<String> = pairs.iter().map(|(k, _)| k.to_ascii_lowercase()).collect();
    keys.sort();
    if keys.windows(2).any(|w| w[0] == w[1])
        || pairs.iter().any(|(_, v)| v.chars().any(char::is_control))
    {
        return Some(
            "Repeated query parameters or control characters are not accepted with Shared Key.",
        );
    }
    if host_style && container == Some(account) {
        return Some(
            "With Shared Key, a host-style container may not be named after its account; use a path-style URL.",
        );
    }
    None
}

fn unauthorized(state: &AppState, message: &str, rid: &str) -> Response {
    let mut r = error_with(
        StatusCode::UNAUTHORIZED,
        "NoAuthenticationInformation",
        message,
        rid,
    );
    let v = format!(
        "Bearer authorization_uri={}/{}/oauth2/authorize resource_id=https://storage.azure.com",
        state.endpoints.origin,
        state.identity.tenant_id()
    );
    if let Ok(h) = http::HeaderValue::from_str(&v) {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, h);
    }
    r
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    state: &AppState,
    auth: &BlobAuth,
    acct: &BlobAccount,
    copy_src: Option<&BlobAccount>,
    op: BlobOp,
    h: &HeaderMap,
    q: &HashMap<String, String>,
    body: Body,
    rid: &str,
) -> Result<Response, DomainError> {
    let svc = &state.blob;
    let ok = |b: http::response::Builder| b.body(Body::empty()).unwrap_or_default();
    Ok(match op {
        BlobOp::CreateContainer { container } => {
            let deny = match hv(h, "x-ms-deny-encryption-scope-override") {
                None => false,
                Some(v) if v.eq_ignore_ascii_case("true") => true,
                Some(v) if v.eq_ignore_ascii_case("false") => false,
                Some(_) => {
                    return Err(DomainError::InvalidProperty(
                        "x-ms-deny-encryption-scope-override must be true or false".into(),
                    ));
                }
            };
            let c = svc
                .create_container(
                    auth,
                    acct,
                    &container,
                    &metadata_from(h)?,
                    hv(h, "x-ms-default-encryption-scope"),
                    deny,
                )
                .await?;
            ok(base(StatusCode::CREATED, rid)
                .header(http::header::ETAG, &c.etag)
                .header(http::header::LAST_MODIFIED, httpdate(c.last_modified)))
        }
        BlobOp::GetContainer { container } => {
            let c = svc.get_container(auth, acct, &container).await?;
            let mut b = base(StatusCode::OK, rid)
                .header(http::header::ETAG, &c.etag)
                .header(http::header::LAST_MODIFIED, httpdate(c.last_modified))
                .header("x-ms-lease-status", "unlocked")
                .header("x-ms-lease-state", "available")
                .header("x-ms-has-immutability-policy", "false")
                .header("x-ms-has-legal-hold", "false")
                .header(
                    "x-ms-default-encryption-scope",
                    c.default_scope
                        .as_deref()
                        .unwrap_or("$account-encryption-key"),
                )
                .header(
                    "x-ms-deny-encryption-scope-override",
                    if c.deny_scope_override {
                        "true"
                    } else {
                        "false"
                    },
                );
            for (k, v) in coffer_domain::blob::BlobService::open_metadata(
                acct,
                &container,
                "",
                c.metadata.as_deref(),
            )? {
                b = b.header(format!("x-ms-meta-{k}"), v);
            }
            ok(b)
        }
        BlobOp::DeleteContainer { container } => {
            let cond = container_condition(h);
            svc.delete_container(auth, acct, &container, cond.as_ref().map(|c| c as _))
                .await?;
            ok(base(StatusCode::ACCEPTED, rid))
        }
        BlobOp::GetServiceProperties => {
            let stored = svc.service_properties(auth, acct).await?;
            let xml = render_service_properties(&stored);
            base(StatusCode::OK, rid)
                .header(http::header::CONTENT_TYPE, "application/xml")
                .header(http::header::CONTENT_LENGTH, xml.len())
                .body(Body::from(xml))
                .unwrap_or_default()
        }
        BlobOp::SetServiceProperties => {
            let xml = match crate::body::read_limited(body, 64 * 1024).await {
                Ok(b) => b,
                Err(_) => {
                    return Err(DomainError::InvalidXml(
                        "the service properties document is larger than 64 KiB".into(),
                    ));
                }
            };
            let parts = parse_service_properties(&xml)?;
            svc.set_service_properties(auth, acct, parts).await?;
            ok(base(StatusCode::ACCEPTED, rid))
        }
        BlobOp::ListContainers => {
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            let marker = q.get("marker").cloned().unwrap_or_default();
            let max = max_results(q)?;
            let include_meta = q
                .get("include")
                .is_some_and(|i| i.split(',').any(|x| x == "metadata"));
            let all = svc.list_containers(auth, acct).await?;
            let mut items: Vec<_> = all
                .into_iter()
                .filter(|c| c.name.starts_with(&prefix) && c.name.as_str() > marker.as_str())
                .collect();
            let next = if items.len() > max {
                items.get(max - 1).map(|c| c.name.clone())
            } else {
                None
            };
            items.truncate(max);
            let mut x = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"https://{}.{}/\"><Prefix>{}</Prefix>",
                acct.name,
                state.endpoints.blob_dns_suffix(),
                xml_escape(&prefix)
            );
            if !marker.is_empty() {
                x.push_str(&format!("<Marker>{}</Marker>", xml_escape(&marker)));
            }
            x.push_str(&format!("<MaxResults>{max}</MaxResults><Containers>"));
            for c in &items {
                x.push_str(&format!(
                    "<Container><Name>{}</Name><Properties><Last-Modified>{}</Last-Modified><Etag>{}</Etag><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState><DefaultEncryptionScope>{}</DefaultEncryptionScope><DenyEncryptionScopeOverride>{}</DenyEncryptionScopeOverride><HasImmutabilityPolicy>false</HasImmutabilityPolicy><HasLegalHold>false</HasLegalHold></Properties>",
                    xml_escape(&c.name),
                    httpdate(c.last_modified),
                    xml_escape(&c.etag),
                    xml_escape(c.default_scope.as_deref().unwrap_or("$account-encryption-key")),
                    c.deny_scope_override
                ));
                if include_meta {
                    x.push_str("<Metadata>");
                    for (k, v) in coffer_domain::blob::BlobService::open_metadata(
                        acct,
                        &c.name,
                        "",
                        c.metadata.as_deref(),
                    )? {
                        x.push_str(&format!("<{k}>{}</{k}>", xml_escape(&v)));
                    }
                    x.push_str("</Metadata>");
                }
                x.push_str("</Container>");
            }
            x.push_str(&format!(
                "</Containers><NextMarker>{}</NextMarker></EnumerationResults>",
                xml_escape(next.as_deref().unwrap_or(""))
            ));
            base(StatusCode::OK, rid)
                .header(http::header::CONTENT_TYPE, "application/xml")
                .body(Body::from(x))
                .unwrap_or_default()
        }
        BlobOp::ListBlobs { container } => {
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            // Blob markers go out percent-encoded (a name may hold characters XML cannot).
            let marker = q
                .get("marker")
                .map(|m| percent_decode(m).unwrap_or_else(|| m.clone()))
                .unwrap_or_default();
            let delimiter = q.get("delimiter").cloned();
            let max = max_results(q)?;
            let include_meta = q
                .get("include")
                .is_some_and(|i| i.split(',').any(|x| x == "metadata"));
            let include_copy = q
                .get("include")
                .is_some_and(|i| i.split(',').any(|x| x == "copy"));
            let (items, next) = svc
                .list_blobs(
                    auth,
                    acct,
                    &container,
                    &prefix,
                    delimiter.as_deref(),
                    &marker,
                    max,
                )
                .await?;
            let mut x = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"https://{}.{}/\" ContainerName=\"{}\"><Prefix>{}</Prefix>",
                acct.name,
                state.endpoints.blob_dns_suffix(),
                xml_escape(&container),
                xml_echo(&prefix)
            );
            if !marker.is_empty() {
                x.push_str(&format!("<Marker>{}</Marker>", percent_encode(&marker)));
            }
            x.push_str(&format!("<MaxResults>{max}</MaxResults>"));
            if let Some(d) = &delimiter {
                x.push_str(&format!("<Delimiter>{}</Delimiter>", xml_echo(d)));
            }
            x.push_str("<Blobs>");
            for it in &items {
                match it {
                    ListItem::Prefix(p) => {
                        x.push_str(&format!("<BlobPrefix>{}</BlobPrefix>", xml_name(p)))
                    }
                    ListItem::Blob(b) => {
                        x.push_str(&format!(
                            "<Blob>{}<Properties><Creation-Time>{}</Creation-Time><Last-Modified>{}</Last-Modified><Etag>{}</Etag><Content-Length>{}</Content-Length><Content-Type>{}</Content-Type><Content-Encoding>{}</Content-Encoding><Content-Language>{}</Content-Language><Content-MD5>{}</Content-MD5><Cache-Control>{}</Cache-Control><Content-Disposition>{}</Content-Disposition><BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState><ServerEncrypted>true</ServerEncrypted>",
                            xml_name(&b.name),
                            httpdate(b.created),
                            httpdate(b.last_modified),
                            xml_escape(&b.etag),
                            b.size,
                            xml_escape(b.content_type.as_deref().unwrap_or("")),
                            xml_escape(b.content_encoding.as_deref().unwrap_or("")),
                            xml_escape(b.content_language.as_deref().unwrap_or("")),
                            xml_escape(b.content_md5.as_deref().unwrap_or("")),
                            xml_escape(b.cache_control.as_deref().unwrap_or("")),
                            xml_escape(b.content_disposition.as_deref().unwrap_or("")),
                        ));
                        if let Some(c) = b.copy.as_ref().filter(|_| include_copy) {
                            x.push_str(&format!(
                                "<CopyId>{}</CopyId><CopySource>{}</CopySource><CopyStatus>success</CopyStatus><CopyProgress>{}/{}</CopyProgress><CopyCompletionTime>{}</CopyCompletionTime>",
                                xml_escape(&c.id),
                                xml_escape(&c.source),
                                c.size,
                                c.size,
                                httpdate(c.completed)
                            ));
                        }
                        x.push_str("</Properties>");
                        // A CPK blob's metadata is sealed under the customer's key: not
                        // listed (as Azure).
                        if include_meta && b.cpk.is_none() {
                            x.push_str("<Metadata>");
                            for (k, v) in coffer_domain::blob::BlobService::open_metadata(
                                acct,
                                &b.container,
                                &b.name,
                                b.metadata.as_deref(),
                            )? {
                                x.push_str(&format!("<{k}>{}</{k}>", xml_escape(&v)));
                            }
                            x.push_str("</Metadata>");
                        }
                        x.push_str("</Blob>");
                    }
                }
            }
            x.push_str(&format!(
                "</Blobs><NextMarker>{}</NextMarker></EnumerationResults>",
                percent_encode(next.as_deref().unwrap_or(""))
            ));
            base(StatusCode::OK, rid)
                .header(http::header::CONTENT_TYPE, "application/xml")
                .body(Body::from(x))
                .unwrap_or_default()
        }
        BlobOp::PutBlob { container, blob } if hv(h, "x-ms-copy-source").is_some() => {
            let source = hv(h, "x-ms-copy-source").unwrap_or_default();
            let (src_container, src_blob) = copy_source(state, &acct.name, source)?;
            let meta = metadata_from(h)?;
            // The destination's conditions as Put Blob's (If-None-Match: * over an existing
            // blob is 409 BlobAlreadyExists, as Azure), the source's against the version read.
            let cond = write_condition(h, hv(h, "if-none-match") == Some("*"), true);
            let src_h = source_conditions(h);
            let src_cond = write_condition(&src_h, false, true).map(|c| {
                move |current: Option<&BlobRecord>| {
                    c(current).map_err(|_| DomainError::SourceConditionNotMet)
                }
            });
            let rec = svc
                .copy_blob(
                    auth,
                    copy_src.unwrap_or(acct),
                    acct,
                    (&src_container, &src_blob),
                    (&container, &blob),
                    source,
                    (!meta.is_empty()).then_some(meta.as_slice()),
                    cond.as_ref().map(|c| c as _),
                    src_cond.as_ref().map(|c| c as _),
                )
                .await?;
            if hv(h, "x-ms-blob-type").is_some() {
                // Put Blob From URL: a synchronous write, answered as Put Blob.
                return Ok(ok(base(StatusCode::CREATED, rid)
                    .header(http::header::ETAG, &rec.etag)
                    .header(http::header::LAST_MODIFIED, httpdate(rec.last_modified))
                    .header("x-ms-request-server-encrypted", "true")));
            }
            ok(base(StatusCode::ACCEPTED, rid)
                .header(http::header::ETAG, &rec.etag)
                .header(http::header::LAST_MODIFIED, httpdate(rec.last_modified))
                .header(
                    "x-ms-copy-id",
                    rec.copy.as_ref().map(|c| c.id.as_str()).unwrap_or_default(),
                )
                .header("x-ms-copy-status", "success"))
        }
        BlobOp::PutBlob { container, blob } => {
            match hv(h, "x-ms-blob-type") {
                Some("BlockBlob") => {}
                Some(_) => {
                    return Err(DomainError::InvalidProperty(
                        "only block blobs are supported (x-ms-blob-type: BlockBlob)".into(),
                    ));
                }
                None => {
                    return Err(DomainError::InvalidProperty(
                        "the x-ms-blob-type header is required".into(),
                    ));
                }
            }
            let Some(len) = hv(h, "content-length").and_then(|v| v.parse::<u64>().ok()) else {
                return Ok(error_with(
                    StatusCode::LENGTH_REQUIRED,
                    "MissingContentLengthHeader",
                    "Content-Length is required.",
                    rid,
                ));
            };
            let headers = content_headers(h, true);
            let meta = metadata_from(h)?;
            let if_none_match_any = hv(h, "if-none-match") == Some("*");
            let cond = write_condition(h, if_none_match_any, true);
            let cond = cond.as_ref().map(|c| c as WriteCondition<'_>);
            let sums = checksums(h)?;
            let mut src = BodySource(body);
            let rec = match svc
                .put_blob(
                    auth, acct, &container, &blob, len, &mut src, headers, &meta, cond, sums,
                )
                .await
            {
                Err(DomainError::Conflict(_)) => {
                    return Ok(error_with(
                        StatusCode::CONFLICT,
                        "BlobAlreadyExists",
                        "The specified blob already exists.",
                        rid,
                    ));
                }
                other => other?,
            };
            let mut b = base(StatusCode::CREATED, rid)
                .header(http::header::ETAG, &rec.etag)
                .header(http::header::LAST_MODIFIED, httpdate(rec.last_modified))
                .header("x-ms-request-server-encrypted", "true");
            if let Some(m) = &rec.content_md5 {
                b = b.header("content-md5", m);
            }
            if let Some(c) = hv(h, "x-ms-content-crc64") {
                b = b.header("x-ms-content-crc64", c);
            }
            ok(b)
        }
        BlobOp::HeadBlob { container, blob } => {
            let rec = svc.get_blob_record(auth, acct, &container, &blob).await?;
            if let Some(f) = check_conditions(h, Some(&rec), true) {
                return Ok(condition_response(f, Some(&rec), rid));
            }
            let meta = coffer_domain::blob::BlobService::open_metadata(
                acct,
                &container,
                &blob,
                rec.metadata.as_deref(),
            )?;
            let mut b = blob_headers(base(StatusCode::OK, rid), &rec, &meta)
                .header(http::header::CONTENT_LENGTH, rec.size);
            if let Some(m) = &rec.content_md5 {
                b = b.header("content-md5", m);
            }
            b.body(Body::empty()).unwrap_or_default()
        }
        BlobOp::GetBlob { container, blob } => {
            let rec = svc.get_blob_record(auth, acct, &container, &blob).await?;
            if let Some(f) = check_conditions(h, Some(&rec), true) {
                return Ok(condition_response(f, Some(&rec), rid));
            }
            let meta = coffer_domain::blob::BlobService::open_metadata(
                acct,
                &container,
                &blob,
                rec.metadata.as_deref(),
            )?;
            let range = match parse_range(h, rec.size) {
                Ok(r) => r,
                Err(_) => {
                    let mut r = error_with(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "InvalidRange",
                        "The range specified is invalid for the current size of the resource.",
                        rid,
                    );
                    if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{}", rec.size)) {
                        r.headers_mut().insert(http::header::CONTENT_RANGE, v);
                    }
                    return Ok(r);
                }
            };
            let (start, end, status) = match range {
                Some((s, e)) => (s, e, StatusCode::PARTIAL_CONTENT),
                None => (0, rec.size, StatusCode::OK),
            };
            if hv(h, "x-ms-range-get-content-md5").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                // The MD5 of a range goes in a header, so the range (at most 4 MiB, Azure's
                // limit) is read and checked before the answer starts.
                if status != StatusCode::PARTIAL_CONTENT {
                    return Err(DomainError::InvalidProperty(
                        "x-ms-range-get-content-md5 needs a Range or x-ms-range header".into(),
                    ));
                }
                if end - start > RANGE_MD5_MAX {
                    return Ok(error_with(
                        StatusCode::BAD_REQUEST,
                        "OutOfRangeInput",
                        "x-ms-range-get-content-md5 is allowed for ranges of at most 4 MiB.",
                        rid,
                    ));
                }
                let mut reader = svc.read(acct, &rec, start, end).await?;
                let mut data = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
                let mut md5 = coffer_crypto::checksum::Md5::new();
                while let Some(c) = reader.next_chunk().await? {
                    md5.update(&c);
                    data.extend_from_slice(&c);
                }
                let mut b = blob_headers(base(status, rid), &rec, &meta)
                    .header(http::header::CONTENT_LENGTH, end - start)
                    .header("content-md5", coffer_crypto::b64::std_encode(&md5.finish()))
                    .header(
                        http::header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{}", end - 1, rec.size),
                    );
                if let Some(m) = &rec.content_md5 {
                    b = b.header("x-ms-blob-content-md5", m);
                }
                return Ok(b.body(Body::from(data)).unwrap_or_default());
            }
            let mut reader = svc.read(acct, &rec, start, end).await?;
            // Verify the first segment before answering, so a tampered blob fails with an
            // error status instead of a truncated 200.
            let first = reader.next_chunk().await?;
            let stream = futures_util::stream::unfold(
                (Some(first), reader),
                |(pending, mut reader)| async move {
                    if let Some(chunk) = pending {
                        return chunk.map(|c| (Ok::<_, std::io::Error>(c), (None, reader)));
                    }
                    match reader.next_chunk().await {
                        Ok(Some(c)) => Some((Ok(c), (None, reader))),
                        Ok(None) => None,
                        Err(e) => {
                            tracing::error!(error = %e, "blob read failed mid-stream");
                            Some((
                                Err(std::io::Error::other("blob integrity failure")),
                                (None, reader),
                            ))
                        }
                    }
                },
            );
            let mut b = blob_headers(base(status, rid), &rec, &meta)
                .header(http::header::CONTENT_LENGTH, end - start);
            if status == StatusCode::PARTIAL_CONTENT {
                if let Some(m) = &rec.content_md5 {
                    b = b.header("x-ms-blob-content-md5", m);
                }
                b = b.header(
                    http::header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{}", end - 1, rec.size),
                );
            } else if let Some(md5) = &rec.content_md5 {
                b = b.header("content-md5", md5);
            }
            b.body(Body::from_stream(stream)).unwrap_or_default()
        }
        BlobOp::PutBlock {
            container,
            blob,
            block_id,
        } => {
            let Some(len) = hv(h, "content-length").and_then(|v| v.parse::<u64>().ok()) else {
                return Ok(error_with(
                    StatusCode::LENGTH_REQUIRED,
                    "MissingContentLengthHeader",
                    "Content-Length is required.",
                    rid,
                ));
            };
            let sums = checksums(h)?;
            let mut src = BodySource(body);
            svc.put_block(
                auth, acct, &container, &blob, &block_id, len, &mut src, sums,
            )
            .await?;
            let mut b =
                base(StatusCode::CREATED, rid).header("x-ms-request-server-encrypted", "true");
            if let Some(m) = hv(h, "content-md5") {
                b = b.header("content-md5", m);
            }
            if let Some(c) = hv(h, "x-ms-content-crc64") {
                b = b.header("x-ms-content-crc64", c);
            }
            ok(b)
        }
        BlobOp::PutBlockList { container, blob } => {
            let xml = match crate::body::read_limited(body, 8 * 1024 * 1024).await {
                Ok(b) => b,
                Err(_) => {
                    return Err(DomainError::InvalidXml(
                        "the block list is too large".into(),
                    ));
                }
            };
            // Content-MD5 / x-ms-content-crc64 of a block list are the request body's.
            let sums = checksums(h)?;
            if let Some(want) = sums.md5 {
                let mut md5 = coffer_crypto::checksum::Md5::new();
                md5.update(&xml);
                if md5.finish() != want {
                    return Err(DomainError::Md5Mismatch);
                }
            }
            if let Some(want) = sums.crc64 {
                let mut crc = coffer_crypto::checksum::Crc64::new();
                crc.update(&xml);
                if crc.finish() != want {
                    return Err(DomainError::Crc64Mismatch);
                }
            }
            let list = parse_block_list(&xml)?;
            let cond = write_condition(h, false, true);
            let cond = cond.as_ref().map(|c| c as WriteCondition<'_>);
            let meta = metadata_from(h)?;
            let rec = svc
                .put_block_list(
                    auth,
                    acct,
                    &container,
                    &blob,
                    &list,
                    content_headers(h, false),
                    &meta,
                    cond,
                )
                .await?;
            ok(base(StatusCode::CREATED, rid)
                .header(http::header::ETAG, &rec.etag)
                .header(http::header::LAST_MODIFIED, httpdate(rec.last_modified))
                .header("x-ms-request-server-encrypted", "true"))
        }
        BlobOp::GetBlockList { container, blob } => {
            let which = q
                .get("blocklisttype")
                .map(String::as_str)
                .unwrap_or("committed")
                .to_ascii_lowercase();
            if !matches!(which.as_str(), "committed" | "uncommitted" | "all") {
                return Err(DomainError::BadInput {
                    code: "InvalidQueryParameterValue",
                    message: "blocklisttype must be committed, uncommitted or all.".into(),
                });
            }
            let (current, committed, uncommitted) =
                svc.get_block_list(auth, acct, &container, &blob).await?;
            let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
            let section = |x: &mut String, tag: &str, blocks: &[(String, u64)]| {
                x.push_str(&format!("<{tag}>"));
                for (id, size) in blocks {
                    x.push_str(&format!(
                        "<Block><Name>{}</Name><Size>{size}</Size></Block>",
                        xml_escape(id)
                    ));
                }
                x.push_str(&format!("</{tag}>"));
            };
            if which == "committed" || which == "all" {
                section(&mut x, "CommittedBlocks", &committed);
            }
            if which == "uncommitted" || which == "all" {
                section(&mut x, "UncommittedBlocks", &uncommitted);
            }
            x.push_str("</BlockList>");
            let mut b =
                base(StatusCode::OK, rid).header(http::header::CONTENT_TYPE, "application/xml");
            if let Some(c) = current {
                b = b
                    .header(http::header::ETAG, &c.etag)
                    .header(http::header::LAST_MODIFIED, httpdate(c.last_modified))
                    .header("x-ms-blob-content-length", c.size);
            }
            b.body(Body::from(x)).unwrap_or_default()
        }
        BlobOp::SetBlobMetadata { container, blob } => {
            let cond = write_condition(h, false, true);
            let cond = cond.as_ref().map(|c| c as WriteCondition<'_>);
            let rec = svc
                .set_blob_metadata(auth, acct, &container, &blob, &metadata_from(h)?, cond)
                .await?;
            ok(base(StatusCode::OK, rid)
                .header(http::header::ETAG, &rec.etag)
                .header(http::header::LAST_MODIFIED, httpdate(rec.last_modified))
                .header("x-ms-request-server-encrypted", "true"))
        }
        BlobOp::GetBlobMetadata { container, blob } => {
            let rec = svc.get_blob_record(auth, acct, &container, &blob).await?;
            let mut b = base(StatusCode::OK, rid)
                .header(http::header::ETAG, &rec.etag)
                .header(http::header::LAST_MODIFIED, httpdate(rec.last_modified));
            for (k, v) in coffer_domain::blob::BlobService::open_metadata(
                acct,
                &container,
                &blob,
                rec.metadata.as_deref(),
            )? {
                b = b.header(format!("x-ms-meta-{k}"), v);
            }
            ok(b)
        }
        BlobOp::SetBlobProperties { container, blob } => {
            let cond = write_condition(h, false, true);
            let cond = cond.as_ref().map(|c| c as WriteCondition<'_>);
            let rec = svc
                .set_blob_properties(
                    auth,
                    acct,
                    &container,
                    &blob,
                    content_headers(h, false),
                    cond,
                )
                .await?;
            ok(base(StatusCode::OK, rid)
                .header(http::header::ETAG, &rec.etag)
                .header(http::header::LAST_MODIFIED, httpdate(rec.last_modified)))
        }
        BlobOp::SetContainerMetadata { container } => {
            let cond = container_condition(h);
            let c = svc
                .set_container_metadata(
                    auth,
                    acct,
                    &container,
                    &metadata_from(h)?,
                    cond.as_ref().map(|c| c as _),
                )
                .await?;
            ok(base(StatusCode::OK, rid)
                .header(http::header::ETAG, &c.etag)
                .header(http::header::LAST_MODIFIED, httpdate(c.last_modified)))
        }
        BlobOp::DeleteBlob { container, blob } => {
            let cond = write_condition(h, false, true);
            let cond = cond.as_ref().map(|c| c as WriteCondition<'_>);
            svc.delete_blob(auth, acct, &container, &blob, cond).await?;
            ok(base(StatusCode::ACCEPTED, rid).header("x-ms-delete-type-permanent", "true"))
        }
    })
}

/// Content headers of a write: `x-ms-blob-*` (and, for Put Blob, the request's own).
fn content_headers(h: &HeaderMap, request_fallback: bool) -> ContentHeaders {
    let pick = |blob: &str, plain: &str| {
        hv(h, blob)
            .or_else(|| {
                if request_fallback && !plain.is_empty() {
                    hv(h, plain)
                } else {
                    None
                }
            })
            .map(String::from)
    };
    ContentHeaders {
        content_type: pick("x-ms-blob-content-type", "content-type"),
        content_encoding: pick("x-ms-blob-content-encoding", "content-encoding"),
        content_language: pick("x-ms-blob-content-language", "content-language"),
        content_disposition: pick("x-ms-blob-content-disposition", ""),
        cache_control: pick("x-ms-blob-cache-control", ""),
        content_md5: pick("x-ms-blob-content-md5", ""),
    }
}

/// Parse a Put Block List body: `<BlockList><Latest|Committed|Uncommitted>id</…>…</BlockList>`.
pub fn parse_block_list(xml: &[u8]) -> Result<Vec<(BlockListKind, String)>, DomainError> {
    use quick_xml::events::Event;
    let bad = |m: &str| DomainError::InvalidXml(m.to_string());
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<BlockListKind> = None;
    let mut seen_root = false;
    let mut has_id = false;
    let no_id = || DomainError::InvalidBlockList("a block entry without a block id".into());
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                depth += 1;
                let name = e.name();
                match (depth, name.into_inner()) {
                    (1, "BlockList") if !seen_root => seen_root = true,
                    (2, "Latest") => current = Some(BlockListKind::Latest),
                    (2, "Committed") => current = Some(BlockListKind::Committed),
                    (2, "Uncommitted") => current = Some(BlockListKind::Uncommitted),
                    _ => return Err(bad("unexpected element in the block list")),
                }
                has_id = false;
            }
            Ok(Event::Text(t)) => {
                let kind = current.ok_or_else(|| bad("text outside a block entry"))?;
                if has_id {
                    return Err(bad("unsupported XML content"));
                }
                has_id = true;
                let id = t.into_inner().into_owned();
                if out.len() >= MAX_BLOCKS {
                    return Err(DomainError::InvalidBlockList(format!(
                        "more than {MAX_BLOCKS} blocks"
                    )));
                }
                out.push((kind, id));
            }
            Ok(Event::End(_)) => {
                if current.is_some() && !has_id {
                    return Err(no_id());
                }
                depth = depth.saturating_sub(1);
                current = None;
            }
            // `<BlockList />`: an empty blob (the SDK commits one for an empty upload of
            // unknown length).
            Ok(Event::Empty(e))
                if depth == 0 && !seen_root && e.name().into_inner() == "BlockList" =>
            {
                seen_root = true;
            }
            Ok(Event::Empty(e))
                if depth == 1
                    && matches!(
                        e.name().into_inner(),
                        "Latest" | "Committed" | "Uncommitted"
                    ) =>
            {
                return Err(no_id());
            }
            Ok(Event::Empty(_)) => return Err(bad("unexpected element in the block list")),
            Ok(Event::Eof) => break,
            Ok(Event::Decl(_) | Event::Comment(_) | Event::PI(_)) => {}
            Ok(_) => return Err(bad("unsupported XML content")),
            Err(_) => return Err(bad("the XML is not well formed")),
        }
        buf.clear();
    }
    if !seen_root || depth != 0 {
        return Err(bad("the body is not a BlockList document"));
    }
    Ok(out)
}

/// `(container, blob)` of a copy source URL in the same account (path- or host-style).
fn copy_source(
    state: &AppState,
    account: &str,
    url: &str,
) -> Result<(String, String), DomainError> {
    let bad = || {
        DomainError::InvalidProperty("x-ms-copy-source must be a blob URL of this account".into())
    };
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = uri.path().trim_start_matches('/');
    let rest = match state.endpoints.account_of_host(host) {
        Some(a) if a == account => path,
        Some(_) => return Err(bad()),
        None => {
            let (a, rest) = path.split_once('/').ok_or_else(bad)?;
            if a != account {
                return Err(DomainError::InvalidProperty(
                    "copies between accounts are not supported yet".into(),
                ));
            }
            rest
        }
    };
    let (c, b) = rest.split_once('/').ok_or_else(bad)?;
    match (percent_decode(c), percent_decode(b)) {
        (Some(c), Some(b)) if !c.is_empty() && !b.is_empty() => Ok((c, b)),
        _ => Err(bad()),
    }
}

/// The `Content-MD5` and `x-ms-content-crc64` a client sent with an upload (validated while
/// the body streams).
fn checksums(h: &HeaderMap) -> Result<Checksums, DomainError> {
    fn decode<const N: usize>(h: &HeaderMap, name: &str) -> Result<Option<[u8; N]>, DomainError> {
        match hv(h, name) {
            None => Ok(None),
            Some(v) => coffer_crypto::b64::std_decode(v)
                .and_then(|b| <[u8; N]>::try_from(b).ok())
                .map(Some)
                .ok_or_else(|| {
                    DomainError::InvalidProperty(format!("{name} must be the base64 of {N} bytes"))
                }),
        }
    }
    if hv(h, "x-ms-structured-body").is_some() {
        return Err(DomainError::InvalidProperty(
            "structured message bodies (x-ms-structured-body) are not supported: send x-ms-content-crc64 or Content-MD5 with a plain body".into(),
        ));
    }
    Ok(Checksums {
        md5: decode::<16>(h, "content-md5")?,
        crc64: decode::<8>(h, "x-ms-content-crc64")?,
    })
}

/// Why a conditional request does not proceed.
#[derive(Debug, PartialEq, Eq)]
enum CondFailure {
    /// 304 (reads only).
    NotModified,
    /// 412 ConditionNotMet.
    Precondition,
}

fn etag_matches(list: &str, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    list.split(',')
        .map(str::trim)
        .any(|e| e == "*" || e.trim_matches('"') == bare)
}

fn http_time(v: &str) -> Option<i64> {
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Azure's conditional headers against the current blob (`None` = the blob does not exist).
fn check_conditions(
    h: &HeaderMap,
    current: Option<&BlobRecord>,
    read: bool,
) -> Option<CondFailure> {
    check_version(h, current.map(|c| (c.etag.as_str(), c.last_modified)), read)
}

/// A container operation's conditional headers (Delete Container, Set Container Metadata):
/// 412 ConditionNotMet when they do not hold for the container.
fn container_condition(
    h: &HeaderMap,
) -> Option<impl Fn(&ContainerRecord) -> coffer_domain::Result<()> + Send + Sync + '_> {
    let any = has_write_conditions(h) || hv(h, "if-none-match").is_some();
    any.then_some(move |c: &ContainerRecord| {
        match check_version(h, Some((c.etag.as_str(), c.last_modified)), false) {
            Some(_) => Err(DomainError::ConditionNotMet),
            None => Ok(()),
        }
    })
}

/// Conditional headers against a version (`etag`, last modified; `None` = absent).
fn check_version(h: &HeaderMap, current: Option<(&str, i64)>, read: bool) -> Option<CondFailure> {
    let fail_changed = if read {
        CondFailure::NotModified
    } else {
        CondFailure::Precondition
    };
    if let Some(m) = hv(h, "if-match") {
        match current {
            Some((etag, _)) if etag_matches(m, etag) => {}
            _ => return Some(CondFailure::Precondition),
        }
    }
    if let (Some(m), Some((etag, _))) = (hv(h, "if-none-match"), current)
        && etag_matches(m, etag)
    {
        return Some(fail_changed);
    }
    if let (Some(d), Some((_, modified))) =
        (hv(h, "if-modified-since").and_then(http_time), current)
        && modified <= d
    {
        return Some(fail_changed);
    }
    if let (Some(d), Some((_, modified))) =
        (hv(h, "if-unmodified-since").and_then(http_time), current)
        && modified > d
    {
        return Some(CondFailure::Precondition);
    }
    None
}

fn condition_response(f: CondFailure, rec: Option<&BlobRecord>, rid: &str) -> Response {
    match f {
        CondFailure::NotModified => {
            let mut b = base(StatusCode::NOT_MODIFIED, rid);
            if let Some(r) = rec {
                b = b
                    .header(http::header::ETAG, &r.etag)
                    .header(http::header::LAST_MODIFIED, httpdate(r.last_modified));
            }
            b.body(Body::empty()).unwrap_or_default()
        }
        CondFailure::Precondition => error_with(
            StatusCode::PRECONDITION_FAILED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
            rid,
        ),
    }
}

/// A write's conditional headers as the domain evaluates them, against the version the write
/// would replace and again at its commit: Azure's 412 ConditionNotMet, or for Put Blob with
/// `If-None-Match: *` (`exists_conflicts`) 409 BlobAlreadyExists when the blob exists. None
/// when the request carries none (`star`: whether `If-None-Match: *` counts as one).
fn write_condition(
    h: &HeaderMap,
    exists_conflicts: bool,
    star: bool,
) -> Option<impl Fn(Option<&BlobRecord>) -> coffer_domain::Result<()> + Send + Sync + '_> {
    let any = has_write_conditions(h) || (star && hv(h, "if-none-match") == Some("*"));
    any.then_some(move |current: Option<&BlobRecord>| {
        if exists_conflicts && current.is_some() {
            return Err(DomainError::Conflict(
                "The specified blob already exists.".into(),
            ));
        }
        match check_conditions(h, current, false) {
            Some(_) => Err(DomainError::ConditionNotMet),
            None => Ok(()),
        }
    })
}

/// A copy's source conditions (`x-ms-source-if-*`) under the names [`check_conditions`] reads.
fn source_conditions(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (src, dst) in [
        ("x-ms-source-if-match", http::header::IF_MATCH),
        ("x-ms-source-if-none-match", http::header::IF_NONE_MATCH),
        (
            "x-ms-source-if-modified-since",
            http::header::IF_MODIFIED_SINCE,
        ),
        (
            "x-ms-source-if-unmodified-since",
            http::header::IF_UNMODIFIED_SINCE,
        ),
    ] {
        if let Some(v) = h.get(src) {
            out.insert(dst, v.clone());
        }
    }
    out
}

/// Conditional headers a write carries (other than Put Blob's `If-None-Match: *`).
fn has_write_conditions(h: &HeaderMap) -> bool {
    hv(h, "if-match").is_some()
        || hv(h, "if-none-match").is_some_and(|v| v != "*")
        || hv(h, "if-modified-since").is_some()
        || hv(h, "if-unmodified-since").is_some()
}

fn max_results(q: &HashMap<String, String>) -> Result<usize, DomainError> {
    match q.get("maxresults") {
        None => Ok(MAX_RESULTS),
        // Above 5000 means 5000 (as Azure); zero, negative or not a number is refused.
        Some(v) => match v.parse::<u128>() {
            Ok(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(MAX_RESULTS).min(MAX_RESULTS)),
            _ => Err(DomainError::InvalidProperty(
                "maxresults must be a positive integer".into(),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_properties_documents() {
        let doc = b"<?xml version=\"1.0\"?><StorageServiceProperties><Cors/><DeleteRetentionPolicy><Enabled>true</Enabled><Days>7</Days></DeleteRetentionPolicy></StorageServiceProperties>";
        let parts = parse_service_properties(doc).unwrap_or_default();
        assert_eq!(
            parts,
            vec![
                ("Cors".to_string(), "<Cors/>".to_string()),
                (
                    "DeleteRetentionPolicy".to_string(),
                    "<DeleteRetentionPolicy><Enabled>true</Enabled><Days>7</Days></DeleteRetentionPolicy>".to_string()
                ),
            ]
        );
        let mut stored = serde_json::Map::new();
        for (k, v) in parts {
            stored.insert(k, serde_json::Value::String(v));
        }
        let out = render_service_properties(&stored);
        assert!(out.contains("<Days>7</Days>") && out.contains("<Logging>"));
        assert!(parse_service_properties(out.as_bytes()).is_ok());
        for bad in [
            &b"<StorageServiceProperties><Cors>"[..],
            b"<Other/>",
            b"<StorageServiceProperties><X/></StorageServiceProperties>",
            b"<StorageServiceProperties>text</StorageServiceProperties>",
            b"<StorageServiceProperties><Cors/><Cors/></StorageServiceProperties>",
            b"<StorageServiceProperties/><StorageServiceProperties/>",
            b"",
        ] {
            assert!(parse_service_properties(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(xml_escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }

    #[test]
    fn ops() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(
            BlobOp::parse(
                &Method::PUT,
                Some("c"),
                None,
                &q(&[("restype", "container")])
            ),
            Some(BlobOp::CreateContainer {
                container: "c".into()
            })
        );
        assert_eq!(
            BlobOp::parse(
                &Method::GET,
                Some("c"),
                None,
                &q(&[("restype", "container"), ("comp", "list")])
            ),
            Some(BlobOp::ListBlobs {
                container: "c".into()
            })
        );
        assert_eq!(
            BlobOp::parse(&Method::GET, None, None, &q(&[("comp", "list")])),
            Some(BlobOp::ListContainers)
        );
        assert_eq!(
            BlobOp::parse(&Method::GET, Some("c"), Some("a/b c"), &q(&[])),
            Some(BlobOp::GetBlob {
                container: "c".into(),
                blob: "a/b c".into()
            })
        );
        assert_eq!(
            BlobOp::parse(&Method::POST, Some("c"), Some("b"), &q(&[])),
            None
        );
    }

    #[test]
    fn conditions() {
        let rec = BlobRecord {
            account: "a".into(),
            container: "c".into(),
            name: "b".into(),
            region: "eastus".into(),
            parts: vec![],
            size: 0,
            etag: "\"0xABC\"".into(),
            created: 1_000,
            last_modified: 1_000_000,
            ..Default::default()
        };
        let h = |pairs: &[(&'static str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap_or_else(|_| unreachable!()));
            }
            m
        };
        assert_eq!(
            check_conditions(&h(&[("if-match", "\"0xABC\"")]), Some(&rec), true),
            None
        );
        assert_eq!(
            check_conditions(&h(&[("if-match", "\"0xDEF\"")]), Some(&rec), true),
            Some(CondFailure::Precondition)
        );
        assert_eq!(
            check_conditions(&h(&[("if-match", "*")]), None, false),
            Some(CondFailure::Precondition)
        );
        assert_eq!(
            check_conditions(&h(&[("if-none-match", "\"0xABC\"")]), Some(&rec), true),
            Some(CondFailure::NotModified)
        );
        assert_eq!(
            check_conditions(&h(&[("if-none-match", "\"0xABC\"")]), Some(&rec), false),
            Some(CondFailure::Precondition)
        );
        let later = httpdate(2_000_000);
        let earlier = httpdate(10);
        assert_eq!(
            check_conditions(&h(&[("if-modified-since", &later)]), Some(&rec), true),
            Some(CondFailure::NotModified)
        );
        assert_eq!(
            check_conditions(&h(&[("if-modified-since", &earlier)]), Some(&rec), true),
            None
        );
        assert_eq!(
            check_conditions(&h(&[("if-unmodified-since", &earlier)]), Some(&rec), false),
            Some(CondFailure::Precondition)
        );
        assert_eq!(
            check_conditions(&h(&[("if-unmodified-since", &later)]), Some(&rec), false),
            None
        );
    }

    #[test]
    fn block_lists() {
        let ok = parse_block_list(
            b"<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Latest>AAA=</Latest><Committed>QkJC</Committed><Uncommitted>Q0ND</Uncommitted></BlockList>",
        );
        assert_eq!(
            ok.ok(),
            Some(vec![
                (BlockListKind::Latest, "AAA=".to_string()),
                (BlockListKind::Committed, "QkJC".to_string()),
                (BlockListKind::Uncommitted, "Q0ND".to_string()),
            ])
        );
        // An empty list (an empty blob); entries need an id.
        assert_eq!(parse_block_list(b"<BlockList />").ok(), Some(vec![]));
        assert_eq!(
            parse_block_list(b"<BlockList></BlockList>").ok(),
            Some(vec![])
        );
        for no_id in [
            &b"<BlockList><Latest></Latest></BlockList>"[..],
            b"<BlockList><Latest/></BlockList>",
            b"<BlockList><Committed>  </Committed></BlockList>",
        ] {
            assert!(matches!(
                parse_block_list(no_id),
                Err(DomainError::InvalidBlockList(_))
            ));
        }
        for bad in [
            &b"<BlockList><Latest>a</Latest>"[..],
            b"<BlockList/><BlockList/>",
            b"<BlockList><Other/></BlockList>",
            b"<Other/>",
            b"not xml",
            b"<BlockList><Evil>a</Evil></BlockList>",
            b"<BlockList><Latest><X>a</X></Latest></BlockList>",
            b"",
        ] {
            assert!(
                parse_block_list(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_range(&h, 10).ok(), Some(None));
        h.insert(
            "x-ms-range",
            "bytes=2-4".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(parse_range(&h, 10).ok(), Some(Some((2, 5))));
        h.insert(
            "x-ms-range",
            "bytes=5-".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(parse_range(&h, 10).ok(), Some(Some((5, 10))));
        h.insert(
            "x-ms-range",
            "bytes=8-100".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(parse_range(&h, 10).ok(), Some(Some((8, 10))));
        h.insert(
            "x-ms-range",
            "bytes=10-".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(parse_range(&h, 10).is_err());
        h.insert(
            "x-ms-range",
            "bytes=4-2".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(parse_range(&h, 10).is_err());
        assert!(percent_decode("a%2").is_none());
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(httpdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
