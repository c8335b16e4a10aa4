//! Storage accounts and encryption scopes under customer-managed keys: enabling (with the
//! storage resource provider's checks), switching back, the in-memory AEK cache, pick-up of new
//! key versions, and the health every one reports.
//!
//! An account body and a scope body (each a *holder*, see [`Holder`]) keep their AEK in `_aek`
//! either sealed under the root key (`keySource: Microsoft.Storage`) or *only* wrapped by a
//! customer key version (`keySource: Microsoft.Keyvault`, fields `wrapped`, `kid`,
//! `principal`). The unwrapped AEK lives in memory only, for at most the cache TTL, and is
//! revalidated after any change that may affect it when the vault is in-process (see
//! [`crate::cmk::Changes`]). Holders differ only in where the key is configured and reported
//! (`properties.encryption.keyvaultproperties` of an account, `properties.keyVaultProperties`
//! of a scope) and in the associated data of the platform seal.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_crypto::b64;
use coffer_secret::SecretBytes;
use serde_json::{Map, Value, json};

use super::scopes::{SCOPE_TYPE, scope_aad};
use super::storage::{STORAGE_TYPE, aek_aad};
use super::{Body, MgmtService};
use crate::clock::rfc3339;
use crate::cmk::{Call, Changes, CmkFailure, CmkStatus, KeyInfo, KeyRef, VaultClient};
use crate::model::Resource;
use crate::{DomainError, Result};

/// Settings of the customer-managed key machinery.
#[derive(Debug, Clone)]
pub struct CmkConfig {
    /// Allow a key vault in another region than the account (the product's default policy
    /// refuses it, as the same-region rule of Azure's portal).
    pub allow_cross_region: bool,
    /// How long an unwrapped AEK is used without asking the vault again.
    pub cache_ttl: Duration,
    /// How often accounts whose vault is on another server are checked for new key versions.
    pub poll_interval: Duration,
}

impl Default for CmkConfig {
    fn default() -> Self {
        Self {
            allow_cross_region: false,
            cache_ttl: Duration::from_secs(60),
            poll_interval: Duration::from_secs(60),
        }
    }
}

struct CachedAek {
    aek: SecretBytes,
    /// The wrapped form it came from (a re-wrap or another account of the same name misses).
    wrapped: String,
    generation: u64,
    /// When it was unwrapped (server clock, so tests can move past the TTL).
    at: i64,
}

/// CMK counters since start, and each observed holder's status (by account name, or
/// `{account}/{scope}` for an encryption scope).
pub struct CmkStats {
    pub hits: u64,
    pub misses: u64,
    pub vault_calls: u64,
    pub status: Vec<(String, &'static str)>,
}

/// The CMK health of an account or encryption scope, as last observed.
#[derive(Debug, Clone)]
pub struct CmkHealth {
    pub status: CmkStatus,
    pub message: String,
    pub key_version: String,
    pub last_unwrap: Option<i64>,
    pub checked: i64,
}

pub(super) struct CmkState {
    vaults: Arc<dyn VaultClient>,
    changes: Arc<Changes>,
    config: CmkConfig,
    cache: Mutex<HashMap<String, CachedAek>>,
    health: Mutex<HashMap<String, CmkHealth>>,
    /// Vault calls made for each account (the data path makes none while the cache is valid).
    calls: Mutex<HashMap<String, u64>>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
    vault_calls: std::sync::atomic::AtomicU64,
    /// One refresh at a time per holder: a cold cache under load makes one vault call, not
    /// one per request; a slow vault delays only the holders whose key it keeps.
    fills: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl CmkState {
    pub(super) fn new(
        vaults: Arc<dyn VaultClient>,
        changes: Arc<Changes>,
        config: CmkConfig,
    ) -> Self {
        Self {
            vaults,
            changes,
            config,
            cache: Mutex::new(HashMap::new()),
            health: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            hits: Default::default(),
            misses: Default::default(),
            vault_calls: Default::default(),
            fills: Mutex::new(HashMap::new()),
        }
    }
}

/// The CMK fields of an account or scope body.
struct CmkRecord {
    /// The key as configured (no version: follows new versions).
    configured: KeyRef,
    /// The versioned key that wraps the AEK now.
    current: KeyRef,
    principal: String,
    wrapped_b64: String,
    version: u64,
}

fn is_cmk(body: &Value) -> bool {
    body["_aek"]["keySource"]
        .as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("Microsoft.Keyvault"))
}

fn invalid(code: &'static str, message: impl Into<String>) -> DomainError {
    DomainError::CmkInvalid {
        code,
        message: message.into(),
    }
}

/// What an AEK belongs to: a storage account, or one of its encryption scopes.
pub(super) struct Holder {
    /// The key of the cache, health and call counters: the account name, or
    /// `{account}/{scope}` (account names have no `/`).
    key: String,
    account: String,
    account_id: String,
    scope: Option<String>,
}

impl Holder {
    pub(super) fn of(body: &Value) -> Holder {
        let id = body["id"].as_str().unwrap_or_default();
        let name = body["name"].as_str().unwrap_or_default().to_string();
        let is_scope = body["type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case(SCOPE_TYPE));
        if !is_scope {
            return Holder {
                key: name.clone(),
                account: name,
                account_id: id.to_string(),
                scope: None,
            };
        }
        let cut = id
            .to_ascii_lowercase()
            .find("/encryptionscopes/")
            .unwrap_or(id.len());
        let account_id = id.get(..cut).unwrap_or_default().to_string();
        let account = account_id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        Holder {
            key: format!("{account}/{name}"),
            account,
            account_id,
            scope: Some(name),
        }
    }

    /// Where the key is configured and its current version reported.
    fn kvp(&self, body: &Value) -> Value {
        match self.scope {
            None => body["properties"]["encryption"]["keyvaultproperties"].clone(),
            Some(_) => body["properties"]["keyVaultProperties"].clone(),
        }
    }

    fn kvp_mut<'a>(&self, body: &'a mut Value) -> &'a mut Value {
        match self.scope {
            None => &mut body["properties"]["encryption"]["keyvaultproperties"],
            Some(_) => &mut body["properties"]["keyVaultProperties"],
        }
    }

    /// The key as configured (an account: vault URI, name, optional version; a scope: a key URI).
    fn configured(&self, body: &Value) -> std::result::Result<KeyRef, String> {
        let kvp = self.kvp(body);
        match self.scope {
            None => KeyRef::from_parts(
                kvp["keyvaulturi"].as_str().unwrap_or_default(),
                kvp["keyname"].as_str(),
                kvp["keyversion"].as_str(),
            ),
            Some(_) => KeyRef::from_key_uri(kvp["keyUri"].as_str().unwrap_or_default()),
        }
    }

    /// The associated data of the AEK sealed under the root key (platform key).
    fn seal_aad(&self, version: u64) -> Vec<u8> {
        match &self.scope {
            None => aek_aad(&self.account, version),
            Some(s) => scope_aad(&self.account, s, version),
        }
    }

    fn describe(&self) -> String {
        match &self.scope {
            None => "this storage account".into(),
            Some(s) => format!("the encryption scope '{s}'"),
        }
    }

    /// The event and view fields naming the holder.
    fn ids(&self) -> Value {
        let mut v = json!({"storageAccountId": self.account_id});
        if let Some(s) = &self.scope {
            v["encryptionScope"] = json!(s);
        }
        v
    }

    fn with_ids(&self, mut v: Value) -> Value {
        if let (Some(m), Value::Object(ids)) = (v.as_object_mut(), self.ids()) {
            m.extend(ids);
        }
        v
    }
}

fn unavailable(h: &Holder, f: &CmkFailure) -> DomainError {
    DomainError::CmkUnavailable {
        code: f.status.blob_error_code(),
        message: format!(
            "The customer-managed key of {} cannot be used ({}): {}",
            h.describe(),
            f.status.as_str(),
            f.message
        ),
    }
}

fn record(body: &Value) -> Result<CmkRecord> {
    let a = &body["_aek"];
    let corrupt = || DomainError::Internal("customer-managed key record".into());
    let configured = Holder::of(body).configured(body).map_err(|_| corrupt())?;
    let current =
        KeyRef::from_key_uri(a["kid"].as_str().unwrap_or_default()).map_err(|_| corrupt())?;
    Ok(CmkRecord {
        configured,
        current,
        principal: a["principal"].as_str().ok_or_else(corrupt)?.to_string(),
        wrapped_b64: a["wrapped"].as_str().ok_or_else(corrupt)?.to_string(),
        version: a["version"].as_u64().unwrap_or(1),
    })
}

/// The ARM validation error for a failed vault call while enabling a CMK.
fn enable_error(f: CmkFailure, principal: &str) -> DomainError {
    match f.status {
        CmkStatus::VaultNotFound => invalid(
            "KeyVaultVaultNotFound",
            format!(
                "The key vault was not found: {}. Check keyvaulturi.",
                f.message
            ),
        ),
        CmkStatus::KeyNotFound => invalid(
            "KeyVaultKeyNotFound",
            format!(
                "The key was not found: {}. Check keyname and keyversion.",
                f.message
            ),
        ),
        CmkStatus::KeyDisabled => invalid(
            "KeyVaultKeyDisabled",
            format!("The key is disabled: {}. Enable it first.", f.message),
        ),
        CmkStatus::AccessDenied => invalid(
            "KeyVaultAccessDenied",
            format!(
                "The storage account's identity {principal} may not use the key: {}. Grant it the role 'Key Vault Crypto Service Encryption User' on the key or the vault (get, wrapKey and unwrapKey).",
                f.message
            ),
        ),
        CmkStatus::IdentityNotFound => invalid(
            "KeyVaultAuthenticationFailure",
            format!(
                "The storage account's identity cannot sign in: {}.",
                f.message
            ),
        ),
        CmkStatus::VaultUnreachable | CmkStatus::Healthy => invalid(
            "KeyVaultUnreachable",
            format!("The key vault could not be reached: {}.", f.message),
        ),
    }
}

/// The storage RP's checks of a key version's attributes.
fn check_key(info: &KeyInfo, now: i64) -> Result<()> {
    if info.recovery_level.contains("Purgeable") || !info.recovery_level.contains("Recoverable") {
        return Err(invalid(
            "KeyVaultPolicyError",
            "The key vault must have soft delete and purge protection enabled (enablePurgeProtection: true) to hold a customer-managed key.",
        ));
    }
    let rsa = info.kty == "RSA" || info.kty == "RSA-HSM";
    if !rsa || !matches!(info.key_size, Some(2048 | 3072 | 4096)) {
        return Err(invalid(
            "KeyVaultKeyTypeNotSupported",
            format!(
                "The key must be RSA or RSA-HSM of 2048, 3072 or 4096 bits; this one is {}{}.",
                info.kty,
                info.key_size.map(|s| format!(" {s}")).unwrap_or_default()
            ),
        ));
    }
    for op in ["wrapKey", "unwrapKey"] {
        if !info.key_ops.iter().any(|o| o == op) {
            return Err(invalid(
                "KeyVaultKeyOperationsNotPermitted",
                format!("The key's key_ops must include wrapKey and unwrapKey (missing {op})."),
            ));
        }
    }
    if info.exp.is_some_and(|e| now >= e) {
        return Err(invalid(
            "KeyVaultKeyExpired",
            format!(
                "The key version {} has expired; use another version or set a later expiry.",
                info.version
            ),
        ));
    }
    if info.nbf.is_some_and(|n| now < n) {
        return Err(invalid(
            "KeyVaultKeyNotYetValid",
            format!(
                "The key version {} is not valid yet (nbf is in the future).",
                info.version
            ),
        ));
    }
    Ok(())
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// An account or scope body being changed by a management write, as a resource (its id, name
/// and body are what the key functions read).
fn in_flight(body: &Value) -> Resource {
    Resource {
        id: body["id"].as_str().unwrap_or_default().to_string(),
        resource_type: body["type"].as_str().unwrap_or(STORAGE_TYPE).into(),
        subscription_id: String::new(),
        resource_group: None,
        name: body["name"].as_str().unwrap_or_default().to_string(),
        location: None,
        body: body.clone(),
    }
}

/// The principal a holder of the account `account` (its body) reaches the vault as: the
/// user-assigned identity `uai`, which must be assigned to the account, else the account's
/// system-assigned identity.
pub(super) fn cmk_principal(account: &Value, uai: Option<&str>) -> Result<String> {
    match uai {
        Some(id) => account["identity"]["userAssignedIdentities"]
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(id)))
            .and_then(|(_, v)| v["principalId"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                invalid(
                    "KeyVaultAuthenticationFailure",
                    format!(
                        "The user-assigned identity '{}' named in encryption.identity is not assigned to the storage account; add it to identity.userAssignedIdentities.",
                        id.chars().take(300).collect::<String>()
                    ),
                )
            }),
        None => account["identity"]["principalId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                invalid(
                    "KeyVaultAuthenticationFailure",
                    "The storage account has no managed identity to reach the key vault with: give it a system-assigned identity (identity.type SystemAssigned) or name a user-assigned one in encryption.identity.userAssignedIdentity.",
                )
            }),
    }
}

fn norm_region(r: &str) -> String {
    r.replace(' ', "").to_ascii_lowercase()
}

impl MgmtService {
    fn cmk_health_put(
        &self,
        h: &Holder,
        resource_id: &str,
        status: CmkStatus,
        message: String,
        key_version: &str,
        unwrapped: bool,
    ) {
        let now = self.clock.now();
        if let Ok(mut map) = self.cmk.health.lock() {
            let before = map.get(&h.key).map(|x| x.status);
            let changed = match before {
                Some(b) => b != status,
                None => status != CmkStatus::Healthy,
            };
            if changed && let Some(ev) = self.events.get() {
                ev.emit(crate::events::Event {
                    event_type: crate::events::CMK_STATUS_CHANGED,
                    source: resource_id.to_string(),
                    subject: h.key.clone(),
                    data: h.with_ids(json!({
                        "oldStatus": before.map(CmkStatus::as_str),
                        "newStatus": status.as_str(),
                        "keyVersion": key_version,
                        "message": message,
                    })),
                });
            }
            let prev = map.get(&h.key).and_then(|x| x.last_unwrap);
            map.insert(
                h.key.clone(),
                CmkHealth {
                    status,
                    message,
                    key_version: key_version.to_string(),
                    last_unwrap: if unwrapped { Some(now) } else { prev },
                    checked: now,
                },
            );
        }
    }

    fn cmk_count(&self, key: &str) {
        self.cmk
            .vault_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut c) = self.cmk.calls.lock() {
            *c.entry(key.to_string()).or_insert(0) += 1;
        }
    }

    fn cmk_forget(&self, key: &str) {
        if let Ok(mut c) = self.cmk.cache.lock() {
            c.remove(key);
        }
    }

    /// Forget everything held in memory for an account and its encryption scopes.
    pub(super) fn cmk_drop_account(&self, account: &str) {
        let prefix = format!("{account}/");
        let mine = |k: &String| k == account || k.starts_with(&prefix);
        if let Ok(mut c) = self.cmk.cache.lock() {
            c.retain(|k, _| !mine(k));
        }
        if let Ok(mut c) = self.cmk.calls.lock() {
            c.retain(|k, _| !mine(k));
        }
        if let Ok(mut h) = self.cmk.health.lock() {
            h.retain(|k, _| !mine(k));
        }
    }

    /// Forget what is held in memory for one holder (an account or a scope body).
    fn cmk_drop(&self, body: &Value) {
        let key = Holder::of(body).key;
        self.cmk_forget(&key);
        if let Ok(mut c) = self.cmk.calls.lock() {
            c.remove(&key);
        }
        if let Ok(mut h) = self.cmk.health.lock() {
            h.remove(&key);
        }
    }

    /// The cached AEK of `r` if it is still valid.
    fn cmk_cached(&self, r: &Resource, rec: &CmkRecord) -> Option<SecretBytes> {
        let generation = self.cmk.changes.current();
        let event_driven = self.cmk.vaults.publishes_changes(&rec.current);
        let key = Holder::of(&r.body).key;
        let c = self.cmk.cache.lock().ok()?;
        let e = c.get(&key)?;
        let fresh = e.wrapped == rec.wrapped_b64
            && self.clock.now() - e.at < secs(self.cmk.config.cache_ttl)
            && (!event_driven || e.generation == generation);
        fresh.then(|| SecretBytes::new(e.aek.expose().to_vec()))
    }

    /// The refresh lock of the holder `body`.
    fn cmk_fill_lock(&self, body: &Value) -> Arc<tokio::sync::Mutex<()>> {
        let key = Holder::of(body).key.to_ascii_lowercase();
        let mut m = self
            .cmk
            .fills
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(key).or_default().clone()
    }

    /// The unwrapped AEK of a CMK holder: from the cache, or from the vault (picking up a new
    /// key version on the way when the holder follows the versionless key).
    async fn cmk_aek(&self, r: &Resource, corr: &str) -> Result<SecretBytes> {
        use std::sync::atomic::Ordering::Relaxed;
        let rec = record(&r.body)?;
        if let Some(aek) = self.cmk_cached(r, &rec) {
            self.cmk.hits.fetch_add(1, Relaxed);
            return Ok(aek);
        }
        self.cmk.misses.fetch_add(1, Relaxed);
        let fill = self.cmk_fill_lock(&r.body);
        let _fill = fill.lock().await;
        // Another request may have refreshed (or rotated) while this one waited.
        let r =
            self.store
                .get_resource(&r.id)
                .await?
                .ok_or_else(|| DomainError::ResourceNotFound {
                    resource_type: r.resource_type.clone(),
                    name: r.name.clone(),
                })?;
        if !is_cmk(&r.body) {
            return self.platform_aek(&r);
        }
        let rec = record(&r.body)?;
        if let Some(aek) = self.cmk_cached(&r, &rec) {
            return Ok(aek);
        }
        self.cmk_refresh(&r, rec, corr).await
    }

    fn cmk_fail(&self, r: &Resource, f: CmkFailure, version: &str) -> DomainError {
        let h = Holder::of(&r.body);
        tracing::warn!(holder = %h.key, status = f.status.as_str(), message = %f.message, "customer-managed key unavailable");
        self.cmk_forget(&h.key);
        self.cmk_health_put(&h, &r.id, f.status, f.message.clone(), version, false);
        unavailable(&h, &f)
    }

    /// Ask the vault for the holder's key (the current version when the holder follows
    /// new versions, whose pick-up happens here: unwrap with the old version, wrap with the
    /// new, store). Pinned holders are only asked when `check_pinned`. Returns the record as
    /// it now stands.
    async fn cmk_pickup(
        &self,
        r: &Resource,
        mut rec: CmkRecord,
        corr: &str,
        check_pinned: bool,
    ) -> Result<CmkRecord> {
        if rec.configured.version.is_some() && !check_pinned {
            return Ok(rec);
        }
        let key = Holder::of(&r.body).key;
        let vaults = self.cmk.vaults.clone();
        let call = Call {
            principal: &rec.principal.clone(),
            correlation: corr,
        };
        let current_version = rec.current.version.clone().unwrap_or_default();
        self.cmk_count(&key);
        let info = vaults
            .get_key(&call, &rec.configured)
            .await
            .map_err(|f| self.cmk_fail(r, f, &current_version))?;
        if rec.configured.version.is_none()
            && info.version != current_version
            && check_key(&info, self.clock.now()).is_ok()
        {
            let wrapped = b64::std_decode(&rec.wrapped_b64)
                .ok_or_else(|| DomainError::Internal("wrapped AEK encoding".into()))?;
            self.cmk_count(&key);
            self.cmk_count(&key);
            let plain = vaults
                .unwrap(&call, &rec.current, &wrapped)
                .await
                .map_err(|f| self.cmk_fail(r, f, &current_version))?;
            let next = rec.configured.with_version(&info.version);
            let rewrapped = vaults
                .wrap(&call, &next, plain.expose())
                .await
                .map_err(|f| self.cmk_fail(r, f, &current_version))?;
            drop(plain);
            if self
                .cmk_persist_rotation(r, &rec, &next, &rewrapped, &info)
                .await?
            {
                tracing::info!(holder = %key, kid = %next.kid(&info.version), "picked up a new customer-managed key version");
                rec.current = next;
                rec.wrapped_b64 = b64::std_encode(&rewrapped);
            }
        }
        Ok(rec)
    }

    /// The data path's refresh: pick-up, then unwrap (as the account's identity, for the
    /// request `corr`) and cache the AEK.
    async fn cmk_refresh(&self, r: &Resource, rec: CmkRecord, corr: &str) -> Result<SecretBytes> {
        let rec = self.cmk_pickup(r, rec, corr, false).await?;
        let h = Holder::of(&r.body);
        // Read after any pick-up (its own write bumps the feed) and before the unwrap that
        // proves access: a change after this point invalidates the entry.
        let generation = self.cmk.changes.current();
        let version = rec.current.version.clone().unwrap_or_default();
        let wrapped = b64::std_decode(&rec.wrapped_b64)
            .ok_or_else(|| DomainError::Internal("wrapped AEK encoding".into()))?;
        self.cmk_count(&h.key);
        let aek = self
            .cmk
            .vaults
            .unwrap(
                &Call {
                    principal: &rec.principal,
                    correlation: corr,
                },
                &rec.current,
                &wrapped,
            )
            .await
            .map_err(|f| self.cmk_fail(r, f, &version))?;
        if aek.expose().len() != 32 {
            return Err(DomainError::Internal("unwrapped AEK length".into()));
        }
        if let Ok(mut c) = self.cmk.cache.lock() {
            c.insert(
                h.key.clone(),
                CachedAek {
                    aek: SecretBytes::new(aek.expose().to_vec()),
                    wrapped: rec.wrapped_b64.clone(),
                    generation,
                    at: self.clock.now(),
                },
            );
        }
        self.cmk_health_put(&h, &r.id, CmkStatus::Healthy, String::new(), &version, true);
        Ok(aek)
    }

    /// Store a re-wrapped AEK, unless the holder changed meanwhile. Returns whether it did.
    async fn cmk_persist_rotation(
        &self,
        r: &Resource,
        rec: &CmkRecord,
        next: &KeyRef,
        rewrapped: &[u8],
        info: &KeyInfo,
    ) -> Result<bool> {
        let _w = self.write_guard().await;
        let Some(mut cur) = self.store.get_resource(&r.id).await? else {
            return Ok(false);
        };
        if cur.body["_aek"]["wrapped"].as_str() != Some(rec.wrapped_b64.as_str()) {
            return Ok(false);
        }
        let h = Holder::of(&cur.body);
        let version = info.version.as_str();
        cur.body["_aek"]["wrapped"] = json!(b64::std_encode(rewrapped));
        cur.body["_aek"]["kid"] = json!(next.kid(version));
        let kvp = h.kvp_mut(&mut cur.body);
        kvp["currentVersionedKeyIdentifier"] = json!(next.kid(version));
        kvp["lastKeyRotationTimestamp"] = json!(rfc3339(self.clock.now()));
        if h.scope.is_none() {
            // Accounts report the expiry too (scopes have no such property).
            kvp["currentVersionedKeyExpirationTimestamp"] =
                info.exp.map(|e| json!(rfc3339(e))).unwrap_or(Value::Null);
        }
        self.store.put_resource(&cur).await?;
        if let Some(ev) = self.events.get() {
            ev.emit(crate::events::Event {
                event_type: crate::events::CMK_VERSION_CHANGED,
                source: cur.id.clone(),
                subject: h.key.clone(),
                data: h.with_ids(json!({
                    "previousKeyIdentifier": rec.current.kid(rec.current.version.as_deref().unwrap_or_default()),
                    "currentVersionedKeyIdentifier": next.kid(version),
                })),
            });
        }
        Ok(true)
    }

    /// The AEK of a holder under the platform key (sealed by the root key).
    pub(super) fn platform_aek(&self, r: &Resource) -> Result<SecretBytes> {
        let version = r.body["_aek"]["version"].as_u64().unwrap_or(1);
        let sealed = b64::std_decode(r.body["_aek"]["sealed"].as_str().unwrap_or_default())
            .ok_or_else(|| DomainError::Internal("AEK encoding".into()))?;
        Ok(self
            .root
            .open(&Holder::of(&r.body).seal_aad(version), &sealed)?)
    }

    /// The AEK of any account or encryption scope (platform key or CMK).
    pub(super) async fn holder_aek(&self, r: &Resource, corr: &str) -> Result<SecretBytes> {
        if is_cmk(&r.body) {
            self.cmk_aek(r, corr).await
        } else {
            self.platform_aek(r)
        }
    }

    /// Bring a holder's CMK state up to date (health, new versions) without failing and
    /// without unwrapping: nothing is cached for a holder no request uses. No vault call
    /// while the cached AEK is valid.
    pub(super) async fn cmk_observe(&self, r: &Resource) {
        if !is_cmk(&r.body) {
            return;
        }
        let Ok(rec) = record(&r.body) else { return };
        if self.cmk_cached(r, &rec).is_some() {
            return;
        }
        let fill = self.cmk_fill_lock(&r.body);
        let _fill = fill.lock().await;
        let Ok(Some(r)) = self.store.get_resource(&r.id).await else {
            return;
        };
        if !is_cmk(&r.body) {
            return;
        }
        let Ok(rec) = record(&r.body) else { return };
        if self.cmk_cached(&r, &rec).is_some() {
            return;
        }
        if let Ok(rec) = self.cmk_pickup(&r, rec, "", true).await {
            let version = rec.current.version.clone().unwrap_or_default();
            self.cmk_health_put(
                &Holder::of(&r.body),
                &r.id,
                CmkStatus::Healthy,
                String::new(),
                &version,
                false,
            );
        }
    }

    /// Apply `properties.encryption` of a create or update request to `body` (whose identity is
    /// already applied). Every check happens before anything is written.
    pub(super) async fn apply_encryption(
        &self,
        body: &mut Value,
        enc: Option<Body<'_>>,
        new: bool,
        location: &str,
    ) -> Result<()> {
        let Some(enc) = enc else { return Ok(()) };
        let kvp = match enc.object("keyvaultproperties")? {
            Some(k) => Some(k),
            None => enc.object("keyVaultProperties")?,
        };
        let source = enc.str("keySource")?;
        let wants_cmk = match source {
            Some(s) if s.eq_ignore_ascii_case("Microsoft.Keyvault") => true,
            Some(s) if s.eq_ignore_ascii_case("Microsoft.Storage") => false,
            Some(_) => {
                return Err(super::bad(
                    "encryption.keySource must be Microsoft.Storage or Microsoft.Keyvault",
                ));
            }
            None => is_cmk(body) && kvp.is_some(),
        };
        if !wants_cmk {
            if source.is_some() && is_cmk(body) {
                self.switch_to_platform(body).await?;
            }
            return Ok(());
        }
        let Some(kvp) = kvp else {
            if is_cmk(body) {
                return Ok(()); // keySource restated, nothing to change
            }
            return Err(invalid(
                "InvalidValuesForRequestParameters",
                "encryption.keyvaultproperties (keyvaulturi, keyname, optional keyversion) is required with keySource Microsoft.Keyvault",
            ));
        };
        let vault_uri = kvp
            .str("keyvaulturi")?
            .or(kvp.str("keyVaultUri")?)
            .ok_or_else(|| {
                invalid(
                    "InvalidValuesForRequestParameters",
                    "encryption.keyvaultproperties.keyvaulturi is required",
                )
            })?;
        let key = KeyRef::from_parts(
            vault_uri,
            kvp.str("keyname")?.or(kvp.str("keyName")?),
            kvp.str("keyversion")?.or(kvp.str("keyVersion")?),
        )
        .map_err(|m| invalid("InvalidValuesForRequestParameters", m))?;

        // The identity the account uses to reach the vault.
        let uai = match enc.object("identity")? {
            Some(i) => {
                if i.str("federatedIdentityClientId")?
                    .is_some_and(|s| !s.is_empty())
                {
                    return Err(invalid(
                        "InvalidValuesForRequestParameters",
                        "cross-tenant customer-managed keys (federatedIdentityClientId) are not supported",
                    ));
                }
                i.str("userAssignedIdentity")?
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            }
            None if is_cmk(body) => {
                body["properties"]["encryption"]["identity"]["userAssignedIdentity"]
                    .as_str()
                    .map(str::to_string)
            }
            None => None,
        };
        if uai.is_none() && new {
            return Err(invalid(
                "KeyVaultAuthenticationFailure",
                "A new storage account can start with a customer-managed key only through a user-assigned identity (encryption.identity.userAssignedIdentity) that already has access to the key: a system-assigned identity does not exist before the account does.",
            ));
        }
        let principal = cmk_principal(body, uai.as_deref())?;
        let prev_kvp = body["properties"]["encryption"]["keyvaultproperties"].clone();
        let (info, kid) = self
            .cmk_enable(body, &key, &principal, location, new)
            .await?;

        let mut kv = Map::new();
        kv.insert("keyvaulturi".into(), json!(vault_uri.trim()));
        kv.insert("keyname".into(), json!(key.name));
        kv.insert(
            "keyversion".into(),
            json!(key.version.clone().unwrap_or_default()),
        );
        self.report_key(&mut kv, &prev_kvp, &kid);
        if let Some(e) = info.exp {
            kv.insert(
                "currentVersionedKeyExpirationTimestamp".into(),
                json!(rfc3339(e)),
            );
        }
        let e = &mut body["properties"]["encryption"];
        e["keySource"] = json!("Microsoft.Keyvault");
        e["keyvaultproperties"] = Value::Object(kv);
        match uai {
            Some(id) => e["identity"] = json!({"userAssignedIdentity": id}),
            None => {
                if let Some(m) = e.as_object_mut() {
                    m.remove("identity");
                }
            }
        }
        Ok(())
    }

    /// `currentVersionedKeyIdentifier` and `lastKeyRotationTimestamp` of a holder whose key
    /// was (re)configured: the timestamp moves when the versioned key changes.
    pub(super) fn report_key(&self, kv: &mut Map<String, Value>, prev: &Value, kid: &str) {
        kv.insert("currentVersionedKeyIdentifier".into(), json!(kid));
        if prev["currentVersionedKeyIdentifier"]
            .as_str()
            .is_some_and(|k| k != kid)
        {
            kv.insert(
                "lastKeyRotationTimestamp".into(),
                json!(rfc3339(self.clock.now())),
            );
        } else if let Some(t) = prev["lastKeyRotationTimestamp"].as_str() {
            kv.insert("lastKeyRotationTimestamp".into(), json!(t));
        }
    }

    /// Put the AEK of `body` (an account or a scope being written; its current protection is
    /// in `_aek`) under `key`, reached as `principal`: the storage resource provider's checks
    /// (key state and type, vault policy, region against the account's `location`), then a
    /// wrap and an unwrap as proof of both permissions. Rewrites `_aek` only (the caller stores
    /// the body and reports the key where the holder does); returns the key version's
    /// attributes and its versioned id.
    pub(super) async fn cmk_enable(
        &self,
        body: &mut Value,
        key: &KeyRef,
        principal: &str,
        location: &str,
        new: bool,
    ) -> Result<(KeyInfo, String)> {
        let h = Holder::of(body);
        for _ in 0..3 {
            self.cmk_count(&h.key); // get, wrap, unwrap
        }
        let vaults = self.cmk.vaults.clone();
        let call = Call {
            principal,
            correlation: "",
        };
        let info = vaults
            .get_key(&call, key)
            .await
            .map_err(|f| enable_error(f, principal))?;
        check_key(&info, self.clock.now())?;
        if let Some(vault_region) = &info.location
            && !self.cmk.config.allow_cross_region
            && norm_region(vault_region) != norm_region(location)
        {
            return Err(invalid(
                "KeyVaultRegionMismatch",
                format!(
                    "The key vault is in region '{vault_region}' but the storage account is in '{location}'. Use a key vault in '{location}' (a deployment policy of this server; an operator can allow cross-region keys with --cmk-allow-cross-region)."
                ),
            ));
        }

        // The AEK, unwrapped with the current protection, then wrapped by the new key version
        // and unwrapped again: proof that the identity holds wrapKey and unwrapKey.
        let r = in_flight(body);
        let current = if !new && is_cmk(body) {
            self.cmk_unwrap_current(&r).await.map_err(|e| match e {
                DomainError::CmkUnavailable { code, message } => DomainError::CmkUnavailable {
                    code,
                    message: format!("The current key cannot be used, so the encryption key cannot be re-wrapped under another: {message}"),
                },
                e => e,
            })?
        } else {
            self.platform_aek(&r)?
        };
        let versioned = key.with_version(&info.version);
        let wrapped = vaults
            .wrap(&call, &versioned, current.expose())
            .await
            .map_err(|f| enable_error(f, principal))?;
        let back = vaults
            .unwrap(&call, &versioned, &wrapped)
            .await
            .map_err(|f| enable_error(f, principal))?;
        if back.expose() != current.expose() {
            return Err(DomainError::Internal(
                "the key vault returned a different key on unwrap".into(),
            ));
        }
        let version = body["_aek"]["version"].as_u64().unwrap_or(1);
        let kid = versioned.kid(&info.version);
        body["_aek"] = json!({
            "version": version,
            "keySource": "Microsoft.Keyvault",
            "wrapped": b64::std_encode(&wrapped),
            "kid": kid,
            "principal": principal,
        });
        // The new wrap is in effect once the caller stores the body; cache it then.
        self.cmk_forget(&h.key);
        self.cmk_health_put(
            &h,
            &r.id,
            CmkStatus::Healthy,
            String::new(),
            &info.version,
            true,
        );
        Ok((info, kid))
    }

    /// The AEK of a CMK holder as it stands (cache or one unwrap), without picking up new
    /// versions: for management writes, which hold the write lock that a pick-up needs.
    async fn cmk_unwrap_current(&self, r: &Resource) -> Result<SecretBytes> {
        let rec = record(&r.body)?;
        if let Some(aek) = self.cmk_cached(r, &rec) {
            return Ok(aek);
        }
        let h = Holder::of(&r.body);
        let wrapped = b64::std_decode(&rec.wrapped_b64)
            .ok_or_else(|| DomainError::Internal("wrapped AEK encoding".into()))?;
        self.cmk_count(&h.key);
        self.cmk
            .vaults
            .unwrap(
                &Call {
                    principal: &rec.principal,
                    correlation: "",
                },
                &rec.current,
                &wrapped,
            )
            .await
            .map_err(|f| unavailable(&h, &f))
    }

    /// Re-wrap a CMK account's AEK under the platform key (keySource back to Microsoft.Storage).
    async fn switch_to_platform(&self, body: &mut Value) -> Result<()> {
        self.cmk_to_platform(body).await?;
        let e = &mut body["properties"]["encryption"];
        e["keySource"] = json!("Microsoft.Storage");
        if let Some(m) = e.as_object_mut() {
            m.remove("keyvaultproperties");
            m.remove("identity");
        }
        Ok(())
    }

    /// Seal a CMK holder's AEK under the platform key again (`_aek` only; the caller updates
    /// where the holder reports its key source).
    pub(super) async fn cmk_to_platform(&self, body: &mut Value) -> Result<()> {
        let r = in_flight(body);
        let aek = self.cmk_unwrap_current(&r).await.map_err(|e| match e {
            DomainError::CmkUnavailable { code, message } => DomainError::CmkUnavailable {
                code,
                message: format!(
                    "Switching back to Microsoft-managed keys needs the current key: {message}"
                ),
            },
            e => e,
        })?;
        let version = record(body)?.version;
        let aad = Holder::of(body).seal_aad(version);
        body["_aek"] = json!({
            "version": version,
            "sealed": b64::std_encode(&self.root.seal(&aad, aek.expose())?),
            "keySource": "Microsoft.Storage",
        });
        self.cmk_drop(body);
        Ok(())
    }

    /// The health view of an account or scope body for responses (a Coffer extension: Azure
    /// reports none): `properties.encryption.cmkHealth` of an account, `properties.cmkHealth`
    /// of a scope.
    pub(super) fn cmk_render(&self, b: &mut Value) {
        if !is_cmk(b) {
            return;
        }
        let holder = Holder::of(b);
        let h = self
            .cmk
            .health
            .lock()
            .ok()
            .and_then(|h| h.get(&holder.key).cloned());
        let calls = self
            .cmk
            .calls
            .lock()
            .ok()
            .and_then(|c| c.get(&holder.key).copied())
            .unwrap_or(0);
        let current = b["_aek"]["kid"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let view = match h {
            Some(h) => json!({
                "status": h.status.as_str(),
                "keyVersionInUse": current,
                "lastSuccessfulUnwrapTime": h.last_unwrap.map(rfc3339),
                "lastCheckTime": rfc3339(h.checked),
                "message": h.message,
                "vaultCalls": calls,
            }),
            None => json!({"status": "Unknown", "keyVersionInUse": current, "vaultCalls": calls}),
        };
        match holder.scope {
            None => b["properties"]["encryption"]["cmkHealth"] = view,
            Some(_) => b["properties"]["cmkHealth"] = view,
        }
    }

    /// Whether the metadata store answers (readiness).
    pub async fn store_ready(&self) -> Result<()> {
        self.store.list_subscriptions().await.map(|_| ())
    }

    /// Storage accounts and encryption scopes whose customer-managed key is not healthy, as
    /// last observed (a management-plane view for operators; a scope carries
    /// `encryptionScope`).
    pub async fn unhealthy_cmk_accounts(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for r in self.cmk_holders().await? {
            let holder = Holder::of(&r.body);
            let h = self
                .cmk
                .health
                .lock()
                .ok()
                .and_then(|h| h.get(&holder.key).cloned());
            if let Some(h) = h.filter(|h| h.status != CmkStatus::Healthy) {
                out.push(holder.with_ids(json!({
                    "status": h.status.as_str(),
                    "message": h.message,
                    "keyVersionInUse": h.key_version,
                    "lastSuccessfulUnwrapTime": h.last_unwrap.map(rfc3339),
                    "lastCheckTime": rfc3339(h.checked),
                })));
            }
        }
        Ok(out)
    }

    /// Counters and statuses for metrics.
    pub fn cmk_stats(&self) -> CmkStats {
        use std::sync::atomic::Ordering::Relaxed;
        let status = self
            .cmk
            .health
            .lock()
            .map(|h| {
                h.iter()
                    .map(|(a, x)| (a.clone(), x.status.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        CmkStats {
            hits: self.cmk.hits.load(Relaxed),
            misses: self.cmk.misses.load(Relaxed),
            vault_calls: self.cmk.vault_calls.load(Relaxed),
            status,
        }
    }

    /// Accounts and encryption scopes under a customer-managed key (every subscription).
    async fn cmk_holders(&self) -> Result<Vec<Resource>> {
        let mut out = Vec::new();
        for s in self.store.list_subscriptions().await? {
            for t in [STORAGE_TYPE, SCOPE_TYPE] {
                for r in self
                    .store
                    .list_resources(&s.subscription_id, None, Some(t))
                    .await?
                {
                    if is_cmk(&r.body) {
                        out.push(r);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Refresh every CMK holder whose last check is older than the poll interval (holders
    /// with a remote vault pick up new key versions this way). Returns how many were checked.
    pub async fn cmk_poll_due(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut n = 0;
        for r in self.cmk_holders().await? {
            let key = Holder::of(&r.body).key;
            let due = self
                .cmk
                .health
                .lock()
                .ok()
                .and_then(|h| {
                    h.get(&key)
                        .map(|x| now - x.checked >= secs(self.cmk.config.poll_interval))
                })
                .unwrap_or(true);
            if due {
                self.cmk_forget(&key);
                self.cmk_observe(&r).await;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Follow the change feed: after any change, bring every CMK holder with an in-process
    /// vault up to date (new key versions within moments, health without waiting for a request).
    pub fn spawn_cmk_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let mut rx = self.cmk.changes.subscribe();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(m) = me.upgrade() else { break };
                match m.cmk_holders().await {
                    Ok(holders) => {
                        for r in holders {
                            m.cmk_observe(&r).await;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "customer-managed key refresh failed"),
                }
            }
        })
    }

    /// Storage accounts and encryption scopes whose AEK is wrapped by a key of the vault at
    /// `vault_uri` (optionally one key): account id (and scope name), key version in use,
    /// whether it follows new versions, health.
    pub async fn key_dependents(&self, vault_uri: &str, key: Option<&str>) -> Result<Vec<Value>> {
        let vault_uri = KeyRef::parse_vault_uri(vault_uri).map_err(super::bad)?;
        let mut out = Vec::new();
        for r in self.cmk_holders().await? {
            let Ok(rec) = record(&r.body) else { continue };
            // Hosts compared without ports (a key URI outlives a port change).
            let host = |u: &str| {
                let a = u.trim_start_matches("https://");
                a.rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_else(|| a.to_string())
            };
            let same_vault = host(&rec.current.vault_uri) == host(&vault_uri);
            if !same_vault || key.is_some_and(|k| !k.eq_ignore_ascii_case(&rec.current.name)) {
                continue;
            }
            let holder = Holder::of(&r.body);
            let status = self
                .cmk
                .health
                .lock()
                .ok()
                .and_then(|h| h.get(&holder.key).map(|x| x.status.as_str()))
                .unwrap_or("Unknown");
            out.push(holder.with_ids(json!({
                "keyName": rec.current.name,
                "keyVersion": rec.current.version,
                "followsNewVersions": rec.configured.version.is_none(),
                "status": status,
            })));
        }
        Ok(out)
    }
}
