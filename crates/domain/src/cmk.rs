//! Customer-managed keys (CMK): the storage side's view of a key vault.
//!
//! A storage account under a CMK keeps its account encryption key (AEK) only wrapped by a
//! vault key version (RSA-OAEP-256). The storage side reaches vaults through [`VaultClient`],
//! always *as the account's managed identity*, so the vault's authorization, key state checks
//! and audit apply exactly as to any client. [`LocalVaultClient`] serves the vaults of this
//! server in-process; another implementation speaks HTTPS to a vault on another server.
//!
//! [`Changes`] is the in-process change feed: every write that can affect a CMK (keys, role
//! assignments, principals, resources) bumps it, so cached account keys are revalidated on the
//! next request — revocation is immediate for in-process vaults (DESIGN.md §2).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use coffer_secret::SecretBytes;
use tokio::sync::watch;

use crate::DomainError;
use crate::audit::{AuditIdentity, AuditRecord, AuditSink};
use crate::identity::Caller;
use crate::keyvault::{CryptoInput, CryptoOp, CryptoOutput, KeyVaultService, VaultRef};
use crate::store::MetaStore;

/// The algorithm that wraps an AEK under a customer key.
pub const WRAP_ALG: &str = "RSA-OAEP-256";

/// A counter bumped after every committed write that may change what a CMK permits.
pub struct Changes {
    generation: AtomicU64,
    tx: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        let (tx, _) = watch::channel(0);
        Self {
            generation: AtomicU64::new(0),
            tx,
        }
    }
}

impl Changes {
    pub fn bump(&self) {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.tx.send_replace(g);
    }
    pub fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// The health of an account's customer-managed key, as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmkStatus {
    Healthy,
    KeyDisabled,
    KeyNotFound,
    AccessDenied,
    IdentityNotFound,
    VaultNotFound,
    /// A remote vault did not answer (network, TLS, 5xx).
    VaultUnreachable,
}

impl CmkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CmkStatus::Healthy => "Healthy",
            CmkStatus::KeyDisabled => "KeyDisabled",
            CmkStatus::KeyNotFound => "KeyNotFound",
            CmkStatus::AccessDenied => "AccessDenied",
            CmkStatus::IdentityNotFound => "IdentityNotFound",
            CmkStatus::VaultNotFound => "VaultNotFound",
            CmkStatus::VaultUnreachable => "VaultUnreachable",
        }
    }

    /// Azure Storage's error code for data requests on an account in this state.
    pub fn blob_error_code(self) -> &'static str {
        match self {
            CmkStatus::IdentityNotFound => "KeyVaultAccessTokenCannotBeAcquired",
            CmkStatus::VaultNotFound | CmkStatus::VaultUnreachable => "KeyVaultVaultNotFound",
            CmkStatus::Healthy
            | CmkStatus::KeyDisabled
            | CmkStatus::KeyNotFound
            | CmkStatus::AccessDenied => "KeyVaultEncryptionKeyNotFound",
        }
    }
}

/// Why a vault call made for a CMK failed.
#[derive(Debug, Clone)]
pub struct CmkFailure {
    pub status: CmkStatus,
    pub message: String,
}

impl CmkFailure {
    fn new(status: CmkStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// A key in a vault, by URI: `https://{vault host}/keys/{name}[/{version}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// `https://host[:port]`, lower-case, no trailing slash.
    pub vault_uri: String,
    pub name: String,
    pub version: Option<String>,
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

impl KeyRef {
    /// Normalise a vault URI (`https://host[:port][/]`).
    pub fn parse_vault_uri(uri: &str) -> Result<String, String> {
        let rest = uri
            .trim()
            .strip_prefix("https://")
            .ok_or_else(|| format!("the key vault URI '{}' must start with https://", clip(uri)))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty()
            || rest.contains(['/', '?', '#', '@', ' '])
            || !rest.is_ascii()
            || rest.len() > 253
        {
            return Err(format!(
                "the key vault URI '{}' must be https://{{vault host}}[:port]",
                clip(uri)
            ));
        }
        Ok(format!("https://{}", rest.to_ascii_lowercase()))
    }

    /// From `keyvaulturi` + `keyname` [+ `keyversion`], or from a key URI given as
    /// `keyvaulturi` alone (`https://host/keys/name[/version]`).
    pub fn from_parts(
        vault_uri: &str,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Self, String> {
        let version = version.filter(|v| !v.is_empty());
        let name = name.filter(|n| !n.is_empty());
        if name.is_none()
            && let Some((_, path)) = vault_uri
                .trim()
                .strip_prefix("https://")
                .and_then(|r| r.split_once('/'))
            && !path.trim_end_matches('/').is_empty()
        {
            let mut k = Self::from_key_uri(vault_uri)?;
            if k.version.is_none() {
                k.version = version.map(str::to_ascii_lowercase);
            }
            return Ok(k);
        }
        let name = name.ok_or("keyvaultproperties.keyname is required")?;
        crate::keyvault::validate_key_name(name).map_err(|e| e.to_string())?;
        if let Some(v) = version
            && (v.len() != 32 || !v.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!(
                "keyvaultproperties.keyversion '{}' is not a key version (32 hexadecimal characters)",
                clip(v)
            ));
        }
        Ok(Self {
            vault_uri: Self::parse_vault_uri(vault_uri)?,
            name: name.to_string(),
            version: version.map(str::to_ascii_lowercase),
        })
    }

    /// A key URI: `https://host/keys/name` (versionless) or `https://host/keys/name/version`.
    pub fn from_key_uri(uri: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "'{}' is not a key URI (https://{{vault}}/keys/{{name}}[/{{version}}])",
                clip(uri)
            )
        };
        let rest = uri.trim().strip_prefix("https://").ok_or_else(bad)?;
        let (host, path) = rest.split_once('/').ok_or_else(bad)?;
        let mut parts = path.trim_end_matches('/').split('/');
        if parts.next() != Some("keys") {
            return Err(bad());
        }
        let name = parts.next().ok_or_else(bad)?;
        let version = parts.next();
        if parts.next().is_some() {
            return Err(bad());
        }
        Self::from_parts(&format!("https://{host}"), Some(name), version)
    }

    /// The versioned key identifier.
    pub fn kid(&self, version: &str) -> String {
        format!("{}/keys/{}/{version}", self.vault_uri, self.name)
    }

    pub fn with_version(&self, version: &str) -> Self {
        Self {
            version: Some(version.to_string()),
            ..self.clone()
        }
    }

    /// The URI's authority (`host[:port]`).
    pub fn authority(&self) -> &str {
        self.vault_uri.trim_start_matches("https://")
    }
}

/// What the storage side needs to know of a key version.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub version: String,
    pub kty: String,
    pub key_size: Option<u32>,
    pub key_ops: Vec<String>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    /// Key Vault's `recoveryLevel` (soft delete and purge protection of the vault).
    pub recovery_level: String,
    /// The vault's region, when the client knows it.
    pub location: Option<String>,
}

/// Who calls the vault, and for which request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Object id of the account's managed identity.
    pub principal: &'a str,
    /// The request that caused the call (a blob request's id): the vault's audit record carries
    /// it as its correlation id. Empty when no client request caused it.
    pub correlation: &'a str,
}

/// A vault, as reached by the storage side on behalf of a managed identity.
#[async_trait]
pub trait VaultClient: Send + Sync {
    /// Whether changes to this vault are published on this server's [`Changes`] feed.
    fn publishes_changes(&self, key: &KeyRef) -> bool;
    /// Whether this client is configured for the key's vault (remote vaults answer for the
    /// authorities they were configured with).
    fn serves(&self, _key: &KeyRef) -> bool {
        true
    }
    /// The key version named by `key` (the current one when it has no version).
    async fn get_key(&self, call: &Call<'_>, key: &KeyRef) -> Result<KeyInfo, CmkFailure>;
    /// Wrap `plain` under the versioned key `key` (RSA-OAEP-256).
    async fn wrap(
        &self,
        call: &Call<'_>,
        key: &KeyRef,
        plain: &[u8],
    ) -> Result<Vec<u8>, CmkFailure>;
    /// Unwrap `wrapped` with the versioned key `key`.
    async fn unwrap(
        &self,
        call: &Call<'_>,
        key: &KeyRef,
        wrapped: &[u8],
    ) -> Result<SecretBytes, CmkFailure>;
}

/// The vaults of this server, called in-process through [`KeyVaultService`]: the same
/// authorization, key-state checks and audit records as a request from the network.
pub struct LocalVaultClient {
    kv: Arc<KeyVaultService>,
    store: Arc<dyn MetaStore>,
    audit: Arc<dyn AuditSink>,
    /// `vault.{suffix}[:port]`, as in vault URIs this server hands out.
    vault_dns_suffix: String,
    /// Vaults elsewhere (another Coffer server), if configured.
    remote: Option<Arc<dyn VaultClient>>,
}

impl LocalVaultClient {
    pub fn new(
        kv: Arc<KeyVaultService>,
        store: Arc<dyn MetaStore>,
        audit: Arc<dyn AuditSink>,
        vault_dns_suffix: String,
        remote: Option<Arc<dyn VaultClient>>,
    ) -> Self {
        Self {
            kv,
            store,
            audit,
            vault_dns_suffix: vault_dns_suffix.to_ascii_lowercase(),
            remote,
        }
    }

    /// The local vault name a key URI points at: `{name}.{vault suffix}`, with this server's
    /// port or none.
    ///
    /// The port is not compared: a key URI stays valid when the server moves to another port
    /// (a restart on port 0, a new listener), unless a configured remote vault claims that
    /// exact authority.
    pub fn local_vault(&self, key: &KeyRef) -> Option<String> {
        if self.remote.as_ref().is_some_and(|r| r.serves(key)) {
            return None;
        }
        let suffix_host = self
            .vault_dns_suffix
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(self.vault_dns_suffix.as_str());
        let authority = key.authority();
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority);
        let name = host.strip_suffix(suffix_host)?.strip_suffix('.')?;
        (!name.is_empty() && !name.contains('.')).then(|| name.to_string())
    }

    async fn caller(&self, principal: &str) -> Result<Caller, CmkFailure> {
        let p = self
            .store
            .get_principal(principal)
            .await
            .map_err(|e| CmkFailure::new(CmkStatus::VaultUnreachable, e.to_string()))?
            .ok_or_else(|| {
                CmkFailure::new(
                    CmkStatus::IdentityNotFound,
                    format!("the managed identity {principal} no longer exists"),
                )
            })?;
        Ok(Caller {
            tenant_id: p.tenant_id,
            object_id: p.object_id,
            app_id: p.client_id.unwrap_or_default(),
            kind: p.kind,
            is_admin: false,
        })
    }

    async fn vault(&self, key: &KeyRef) -> Result<VaultRef, CmkFailure> {
        let name = self.local_vault(key).ok_or_else(|| {
            CmkFailure::new(
                CmkStatus::VaultNotFound,
                format!("the key vault {} is not served here", key.vault_uri),
            )
        })?;
        self.kv.vault(&name).await.map_err(|_| {
            CmkFailure::new(
                CmkStatus::VaultNotFound,
                format!("the key vault {} does not exist", key.vault_uri),
            )
        })
    }

    fn failure(e: DomainError, key: &KeyRef) -> CmkFailure {
        let (status, what) = match &e {
            DomainError::Forbidden { .. } => (
                CmkStatus::AccessDenied,
                "the account's identity is not permitted to use the key (it needs the role Key Vault Crypto Service Encryption User, or get, wrapKey and unwrapKey)",
            ),
            DomainError::KeyNotFound(_) => (CmkStatus::KeyNotFound, "the key was not found"),
            DomainError::OperationNotAllowed(m) if m.contains("disabled") => {
                (CmkStatus::KeyDisabled, "the key is disabled")
            }
            DomainError::OperationNotAllowed(_) => (
                CmkStatus::AccessDenied,
                "the key does not permit the operation",
            ),
            DomainError::VaultNotFound(_) => (CmkStatus::VaultNotFound, "the vault was not found"),
            _ => (CmkStatus::VaultUnreachable, "the vault failed"),
        };
        CmkFailure::new(status, format!("{what}: {} ({e})", key.vault_uri))
    }

    /// Write the audit record of an in-process call (fail closed, as the HTTP path).
    async fn audit(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        operation: &str,
        key: &KeyRef,
        correlation: &str,
        ok: Result<(), &CmkFailure>,
    ) -> Result<(), CmkFailure> {
        let request_id = coffer_crypto::random::uuid().unwrap_or_default();
        let rec = AuditRecord {
            time: self.kv.now(),
            resource_id: vault.id.clone(),
            operation_name: operation.into(),
            result_type: if ok.is_ok() { "Success" } else { "Failure" }.into(),
            result_signature: if ok.is_ok() { 200 } else { 403 },
            caller_ip_address: "in-process (storage encryption)".into(),
            identity: AuditIdentity {
                tid: caller.tenant_id.clone(),
                oid: caller.object_id.clone(),
                appid: caller.app_id.clone(),
                ..Default::default()
            },
            correlation_id: if correlation.is_empty() {
                request_id.clone()
            } else {
                correlation.to_string()
            },
            request_id,
            message: match ok {
                Ok(()) => String::new(),
                Err(f) => f.message.clone(),
            },
            properties: serde_json::json!({"id": key.kid(key.version.as_deref().unwrap_or_default()).trim_end_matches('/'), "clientInfo": "coffer storage encryption"}),
            ..Default::default()
        };
        self.audit.record(&rec).await.map_err(|e| {
            CmkFailure::new(
                CmkStatus::VaultUnreachable,
                format!("the vault call could not be audited: {e}"),
            )
        })
    }

    async fn crypto(
        &self,
        call: &Call<'_>,
        key: &KeyRef,
        op: CryptoOp,
        value: Vec<u8>,
    ) -> Result<SecretBytes, CmkFailure> {
        let vault = self.vault(key).await?;
        let caller = self.caller(call.principal).await?;
        let res = self
            .kv
            .crypto(
                &caller,
                &vault,
                &key.name,
                key.version.as_deref(),
                op,
                CryptoInput {
                    alg: WRAP_ALG.into(),
                    value,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Self::failure(e, key));
        let out = match res {
            Ok((_, CryptoOutput::Bytes { value, .. })) => Ok(value),
            Ok(_) => Err(CmkFailure::new(
                CmkStatus::VaultUnreachable,
                "unexpected vault answer",
            )),
            Err(f) => Err(f),
        };
        let name = match op {
            CryptoOp::Wrap => "KeyWrap",
            _ => "KeyUnwrap",
        };
        self.audit(
            &caller,
            &vault,
            name,
            key,
            call.correlation,
            out.as_ref().map(|_| ()),
        )
        .await?;
        out
    }
}

#[async_trait]
impl VaultClient for LocalVaultClient {
    fn publishes_changes(&self, key: &KeyRef) -> bool {
        self.local_vault(key).is_some()
    }

    async fn get_key(&self, call: &Call<'_>, key: &KeyRef) -> Result<KeyInfo, CmkFailure> {
        if self.local_vault(key).is_none() {
            return match &self.remote {
                Some(r) => r.get_key(call, key).await,
                None => Err(self.vault(key).await.err().unwrap_or_else(|| {
                    CmkFailure::new(CmkStatus::VaultNotFound, "vault not found")
                })),
            };
        }
        let vault = self.vault(key).await?;
        let caller = self.caller(call.principal).await?;
        let res = self
            .kv
            .get(&caller, &vault, &key.name, key.version.as_deref())
            .await
            .map_err(|e| Self::failure(e, key));
        self.audit(
            &caller,
            &vault,
            "KeyGet",
            key,
            call.correlation,
            res.as_ref().map(|_| ()),
        )
        .await?;
        let view = res?;
        let v = view.version;
        Ok(KeyInfo {
            version: v.version,
            kty: v.kty,
            key_size: v.key_size,
            key_ops: v.key_ops,
            nbf: v.nbf,
            exp: v.exp,
            recovery_level: vault.recovery_level().to_string(),
            location: Some(vault.location.clone()),
        })
    }

    async fn wrap(
        &self,
        call: &Call<'_>,
        key: &KeyRef,
        plain: &[u8],
    ) -> Result<Vec<u8>, CmkFailure> {
        if self.local_vault(key).is_none()
            && let Some(r) = &self.remote
        {
            return r.wrap(call, key, plain).await;
        }
        let out = self
            .crypto(call, key, CryptoOp::Wrap, plain.to_vec())
            .await?;
        Ok(out.expose().to_vec())
    }

    async fn unwrap(
        &self,
        call: &Call<'_>,
        key: &KeyRef,
        wrapped: &[u8],
    ) -> Result<SecretBytes, CmkFailure> {
        if self.local_vault(key).is_none()
            && let Some(r) = &self.remote
        {
            return r.unwrap(call, key, wrapped).await;
        }
        self.crypto(call, key, CryptoOp::Unwrap, wrapped.to_vec())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references() {
        let v = "0123456789abcdef0123456789abcdef";
        let k = KeyRef::from_parts("https://V1.vault.x:8443/", Some("cmk"), None);
        assert_eq!(
            k.as_ref()
                .map(|k| (k.vault_uri.as_str(), k.version.clone())),
            Ok(("https://v1.vault.x:8443", None))
        );
        let k = KeyRef::from_key_uri(&format!("https://v1.vault.x/keys/cmk/{v}"));
        assert_eq!(
            k.as_ref().map(|k| k.kid(v)),
            Ok(format!("https://v1.vault.x/keys/cmk/{v}"))
        );
        // A key URI passed as the vault URI (the portal's "Enter key URI").
        let k = KeyRef::from_parts("https://v1.vault.x/keys/cmk", None, None);
        assert_eq!(k.map(|k| k.name), Ok("cmk".to_string()));
        for bad in [
            "http://v1.vault.x",
            "https://",
            "https://a b",
            "https://v/keys/",
            "https://v/secrets/x",
            "https://v/keys/a/b/c",
        ] {
            assert!(
                KeyRef::from_parts(bad, None, None).is_err() && KeyRef::from_key_uri(bad).is_err(),
                "{bad}"
            );
        }
        assert!(KeyRef::from_parts("https://v", Some("k"), Some("xyz")).is_err());
    }

    #[test]
    fn change_feed_counts() {
        let c = Changes::default();
        let rx = c.subscribe();
        c.bump();
        c.bump();
        assert_eq!(c.current(), 2);
        assert_eq!(*rx.borrow(), 2);
    }
}
