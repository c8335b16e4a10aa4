//! The records the domain keeps. Times are Unix seconds.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrincipalKind {
    ServicePrincipal,
    User,
    ManagedIdentity,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ServicePrincipal => "ServicePrincipal",
            PrincipalKind::User => "User",
            PrincipalKind::ManagedIdentity => "ManagedIdentity",
        }
    }
}

/// A directory object. Credentials are stored only as verifiers (keyed hash / Argon2id).
#[derive(Clone, Serialize, Deserialize)]
pub struct Principal {
    pub object_id: String,
    pub tenant_id: String,
    pub kind: PrincipalKind,
    pub display_name: String,
    /// Application (client) id: service principals and managed identities.
    pub client_id: Option<String>,
    /// Keyed hash of the client secret (service principals).
    pub secret_verifier: Option<String>,
    /// Sign-in name (users).
    pub username: Option<String>,
    /// Argon2id PHC string (users).
    pub password_verifier: Option<String>,
    /// Tenant administrator: may create principals and subscriptions.
    pub is_admin: bool,
    /// The ARM resource this identity belongs to (managed identities).
    pub resource_id: Option<String>,
    pub created: i64,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("object_id", &self.object_id)
            .field("kind", &self.kind)
            .field("display_name", &self.display_name)
            .field("client_id", &self.client_id)
            .field("is_admin", &self.is_admin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub subscription_id: String,
    pub tenant_id: String,
    pub display_name: String,
    pub created: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceGroup {
    pub subscription_id: String,
    pub name: String,
    pub location: String,
    pub tags: serde_json::Value,
    pub created: i64,
}

impl ResourceGroup {
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription_id, self.name
        )
    }
}

/// A generic ARM resource: the full wire representation is kept as JSON in `body`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    /// Resource type, e.g. `Microsoft.KeyVault/vaults`.
    pub resource_type: String,
    pub subscription_id: String,
    pub resource_group: Option<String>,
    pub name: String,
    pub location: Option<String>,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleAssignment {
    /// The assignment's GUID (its ARM `name`).
    pub name: String,
    /// The scope as given at creation (`/subscriptions/...`).
    pub scope: String,
    pub principal_id: String,
    pub principal_type: String,
    /// Role definition GUID.
    pub role_definition_id: String,
    pub created: i64,
    pub created_by: String,
}

impl RoleAssignment {
    pub fn id(&self) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{}",
            self.scope.trim_end_matches('/'),
            self.name
        )
    }
}

/// One version of a vault key. The private material is stored only sealed under the root key
/// (associated data `vault-key:{vault}/{name}/{version}`, lower-cased).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyVersion {
    /// Vault name, lower-case.
    pub vault: String,
    /// Key name as first created.
    pub name: String,
    pub version: String,
    /// `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct` or `oct-HSM`.
    pub kty: String,
    pub key_size: Option<u32>,
    pub crv: Option<String>,
    pub key_ops: Vec<String>,
    pub public: coffer_crypto::keys::PublicJwk,
    /// base64 of the sealed material.
    pub sealed: String,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
    pub tags: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedKeyInfo {
    pub deleted_date: i64,
    pub scheduled_purge: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LifetimeAction {
    /// `Rotate` or `Notify`.
    pub action: String,
    pub time_after_create: Option<String>,
    pub time_before_expiry: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationPolicy {
    pub lifetime_actions: Vec<LifetimeAction>,
    pub expiry_time: Option<String>,
    pub created: i64,
    pub updated: i64,
}

/// A key name in a vault: its deletion state and rotation policy (versions are separate).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub vault: String,
    pub name: String,
    pub deleted: Option<DeletedKeyInfo>,
    pub policy: Option<RotationPolicy>,
    pub created: i64,
}

/// A blob container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub account: String,
    pub name: String,
    pub etag: String,
    pub last_modified: i64,
    /// User metadata, sealed under the account's AEK (base64), or None.
    pub metadata: Option<String>,
    pub public_access: Option<String>,
    /// Encryption scope of blobs written without one (`x-ms-default-encryption-scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_scope: Option<String>,
    /// Whether writes may name another scope than the default.
    #[serde(default)]
    pub deny_scope_override: bool,
}

/// One encrypted object holding a contiguous run of a blob's bytes (a Put Blob body, or a
/// block staged with Put Block).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    /// The object (random hex id; never derived from the blob's name).
    pub object_id: String,
    pub size: u64,
    /// The block id (base64, as the client sent it) for blocks; None for a Put Blob body.
    pub block_id: Option<String>,
    /// The object format it was written in (1: one layer; 2: with infrastructure
    /// encryption's second layer). A reader refuses an object of another format, so a
    /// double-encrypted part cannot be swapped for a single-layer one. None: written before
    /// the format was recorded (any format is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<u8>,
}

/// A committed blob: its bytes are the concatenation of its parts, each an encrypted object
/// (format v1) in the byte store of its region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BlobRecord {
    pub account: String,
    pub container: String,
    pub name: String,
    pub region: String,
    pub parts: Vec<Part>,
    pub size: u64,
    pub etag: String,
    pub created: i64,
    pub last_modified: i64,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub content_md5: Option<String>,
    /// User metadata, sealed under the account's AEK (base64), or None.
    pub metadata: Option<String>,
    /// A keyed hash of the customer-provided key the blob is encrypted with (CPK), or None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpk: Option<String>,
    /// The encryption scope whose key wraps the blob's DEKs, or None (the account's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The Copy Blob that wrote this version, until Set Blob Properties changes it (Put Blob
    /// and Put Block List write versions without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyInfo>,
}

/// A completed (synchronous) Copy Blob, as Get Blob Properties reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopyInfo {
    pub id: String,
    /// The source blob's URL, without its query (a SAS is not kept).
    pub source: String,
    /// When it completed (Unix seconds).
    pub completed: i64,
    /// Bytes copied.
    pub size: u64,
}

/// A block staged with Put Block and not yet committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedBlock {
    pub account: String,
    pub container: String,
    pub blob: String,
    pub region: String,
    pub part: Part,
    pub created: i64,
    /// Keyed hash of the customer-provided key the block was encrypted with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpk: Option<String>,
    /// The encryption scope the block was written in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}
