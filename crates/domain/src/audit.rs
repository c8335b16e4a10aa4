//! Audit records, shaped like Azure's AuditEvent. Written through [`AuditSink`] before the
//! response is sent. Records never carry secrets (tokens, client secrets, key material).
use async_trait::async_trait;
use serde::Serialize;

use crate::Result;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub time: i64,
    pub resource_id: String,
    pub operation_name: String,
    /// "Success" or "Failure".
    pub result_type: String,
    /// The HTTP status the caller saw.
    pub result_signature: u16,
    pub caller_ip_address: String,
    pub identity: AuditIdentity,
    pub request_id: String,
    pub correlation_id: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditIdentity {
    pub tid: String,
    pub oid: String,
    pub appid: String,
}

#[async_trait]
pub trait AuditSink: Send + Sync {
    async fn record(&self, rec: &AuditRecord) -> Result<()>;
}
