//! The Key Vault keys service: key lifecycle (create, import, versions, attributes, soft
//! delete, recover, purge, backup, restore, rotate, rotation policy) and the cryptographic
//! operations, each authorized with Key Vault's data actions at the key's scope
//! (`{vault id}/keys/{name}`), so roles assigned on the vault or on one key both apply.
//!
//! Custody: private material is generated or validated in `coffer_crypto::keys`, sealed under
//! the root key with `vault-key:{vault}/{name}/{version}` as associated data, unsealed only for
//! the duration of one operation (zeroized on drop), and never returned.
use std::sync::Arc;

use coffer_crypto::aead::SealingKey;
use coffer_crypto::keys::{self, Curve, ImportJwk, KeyError, LoadedKey, Material, NewKey};
use coffer_crypto::{b64, random};
use coffer_secret::SecretBytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::identity::Caller;
use crate::mgmt::VAULT_TYPE;
use crate::model::{DeletedKeyInfo, KeyRecord, KeyVersion, LifetimeAction, RotationPolicy};
use crate::rbac::{ActionKind, Rbac};
use crate::store::MetaStore;
use crate::{DomainError, Result};

const BACKUP_AAD: &[u8] = b"coffer:key-backup:v1";
const BACKUP_MAGIC: &[u8] = b"CKB1";
const DAY: i64 = 86_400;

/// The Key Vault data actions.
pub mod actions {
    pub const READ: &str = "Microsoft.KeyVault/vaults/keys/read";
    pub const CREATE: &str = "Microsoft.KeyVault/vaults/keys/create/action";
    pub const IMPORT: &str = "Microsoft.KeyVault/vaults/keys/import/action";
    pub const UPDATE: &str = "Microsoft.KeyVault/vaults/keys/update/action";
    pub const DELETE: &str = "Microsoft.KeyVault/vaults/keys/delete";
    pub const RECOVER: &str = "Microsoft.KeyVault/vaults/keys/recover/action";
    pub const PURGE: &str = "Microsoft.KeyVault/vaults/keys/purge/action";
    pub const BACKUP: &str = "Microsoft.KeyVault/vaults/keys/backup/action";
    pub const RESTORE: &str = "Microsoft.KeyVault/vaults/keys/restore/action";
    pub const ROTATE: &str = "Microsoft.KeyVault/vaults/keys/rotate/action";
    pub const ENCRYPT: &str = "Microsoft.KeyVault/vaults/keys/encrypt/action";
    pub const DECRYPT: &str = "Microsoft.KeyVault/vaults/keys/decrypt/action";
    pub const WRAP: &str = "Microsoft.KeyVault/vaults/keys/wrap/action";
    pub const UNWRAP: &str = "Microsoft.KeyVault/vaults/keys/unwrap/action";
    pub const SIGN: &str = "Microsoft.KeyVault/vaults/keys/sign/action";
    pub const VERIFY: &str = "Microsoft.KeyVault/vaults/keys/verify/action";
    pub const POLICY_READ: &str = "Microsoft.KeyVault/vaults/keyrotationpolicies/read";
    pub const POLICY_WRITE: &str = "Microsoft.KeyVault/vaults/keyrotationpolicies/write";
}

/// A live vault, as the data plane sees it.
#[derive(Debug, Clone)]
pub struct VaultRef {
    /// Lower-case name (its host label).
    pub name: String,
    pub subscription: String,
    pub location: String,
    /// ARM resource id (the RBAC scope).
    pub id: String,
    pub purge_protection: bool,
    pub retention_days: i64,
}

impl VaultRef {
    fn key_scope(&self, key: &str) -> String {
        format!("{}/keys/{key}", self.id)
    }

    /// Azure's `recoveryLevel` for keys of this vault.
    pub fn recovery_level(&self) -> &'static str {
        match (self.purge_protection, self.retention_days < 90) {
            (true, false) => "Recoverable",
            (false, false) => "Recoverable+Purgeable",
            (true, true) => "CustomizedRecoverable",
            (false, true) => "CustomizedRecoverable+Purgeable",
        }
    }
}

/// A cryptographic operation on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoOp {
    Encrypt,
    Decrypt,
    Wrap,
    Unwrap,
    Sign,
    Verify,
}

impl CryptoOp {
    pub fn key_op(self) -> &'static str {
        match self {
            CryptoOp::Encrypt => "encrypt",
            CryptoOp::Decrypt => "decrypt",
            CryptoOp::Wrap => "wrapKey",
            CryptoOp::Unwrap => "unwrapKey",
            CryptoOp::Sign => "sign",
            CryptoOp::Verify => "verify",
        }
    }
    fn action(self) -> &'static str {
        match self {
            CryptoOp::Encrypt => actions::ENCRYPT,
            CryptoOp::Decrypt => actions::DECRYPT,
            CryptoOp::Wrap => actions::WRAP,
            CryptoOp::Unwrap => actions::UNWRAP,
            CryptoOp::Sign => actions::SIGN,
            CryptoOp::Verify => actions::VERIFY,
        }
    }
    /// Operations that create protected output: refused outside the key's validity window.
    fn needs_validity(self) -> bool {
        matches!(self, CryptoOp::Encrypt | CryptoOp::Wrap | CryptoOp::Sign)
    }
}

/// Input of a cryptographic operation (already base64url-decoded).
#[derive(Default)]
pub struct CryptoInput {
    pub alg: String,
    pub value: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    pub aad: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
    /// Verify: the digest (value is then the signature).
    pub digest: Option<Vec<u8>>,
}

/// Output of a cryptographic operation.
pub enum CryptoOutput {
    Bytes {
        value: SecretBytes,
        iv: Option<Vec<u8>>,
        tag: Option<Vec<u8>>,
    },
    Verified(bool),
}

/// A key version with its key's record (the view every response is built from).
pub struct KeyView {
    pub record: KeyRecord,
    pub version: KeyVersion,
}

/// Parameters of a create request.
pub struct CreateParams {
    pub kty: String,
    pub key_size: Option<u32>,
    pub crv: Option<String>,
    pub public_exponent: Option<u64>,
    pub key_ops: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub tags: Option<Value>,
}

/// Parameters of an update request.
#[derive(Default)]
pub struct UpdateParams {
    pub key_ops: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub nbf: Option<Option<i64>>,
    pub exp: Option<Option<i64>>,
    pub tags: Option<Value>,
}

pub const KEY_OPS: [&str; 7] = [
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
];

fn bad(msg: impl Into<String>) -> DomainError {
    DomainError::InvalidProperty(msg.into())
}

fn key_error(e: KeyError) -> DomainError {
    match e {
        KeyError::Invalid(m) => DomainError::InvalidProperty(m),
        KeyError::UnsupportedAlgorithm(a) => DomainError::InvalidProperty(format!(
            "the algorithm '{}' is not supported for this key",
            a.chars().take(32).collect::<String>()
        )),
        KeyError::OperationFailed => DomainError::InvalidProperty(
            "the operation failed: the input is not valid for this key".into(),
        ),
        KeyError::Internal => DomainError::Internal("key operation".into()),
    }
}

/// Key names: 1–127 letters, digits and dashes.
pub fn validate_key_name(name: &str) -> Result<()> {
    if (1..=127).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    {
        Ok(())
    } else {
        Err(DomainError::InvalidName {
            kind: "key",
            name: name.chars().take(128).collect(),
            rule: "1-127 characters of letters, digits and dashes",
        })
    }
}

/// Base key type of a `kty` (`RSA-HSM` → `RSA`), or None when unknown.
pub fn base_kty(kty: &str) -> Option<&'static str> {
    match kty {
        "RSA" | "RSA-HSM" => Some("RSA"),
        "EC" | "EC-HSM" => Some("EC"),
        "oct" | "oct-HSM" => Some("oct"),
        _ => None,
    }
}

fn default_ops(base: &str) -> Vec<String> {
    let ops: &[&str] = match base {
        "RSA" => &[
            "encrypt",
            "decrypt",
            "sign",
            "verify",
            "wrapKey",
            "unwrapKey",
        ],
        "EC" => &["sign", "verify"],
        _ => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
    };
    ops.iter().map(|s| s.to_string()).collect()
}

fn validate_ops(ops: &[String]) -> Result<()> {
    if ops.len() > 16 {
        return Err(bad("key_ops has too many entries"));
    }
    for o in ops {
        if !KEY_OPS.contains(&o.as_str()) {
            return Err(bad(format!(
                "'{}' is not a key operation (one of encrypt, decrypt, sign, verify, wrapKey, unwrapKey, import)",
                o.chars().take(32).collect::<String>()
            )));
        }
    }
    Ok(())
}

pub fn validate_tags(tags: &Value) -> Result<()> {
    let Some(m) = tags.as_object() else {
        return Err(bad("tags must be an object of strings"));
    };
    if m.len() > 15 {
        return Err(bad("a key may have at most 15 tags"));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > 512 || v.as_str().is_none_or(|s| s.len() > 256) {
            return Err(bad(
                "tag names must be 1-512 characters and values strings of at most 256 characters",
            ));
        }
    }
    Ok(())
}

/// ISO 8601 durations as Key Vault uses them (`P90D`, `P1Y2M`, `P2W`, `PT12H`): seconds.
/// Years count 365 days and months 30 days.
pub fn parse_duration(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    if rest.is_empty() || s.len() > 40 {
        return None;
    }
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut total: i64 = 0;
    let mut scan = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut num = String::new();
        let mut last_unit = None;
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let idx = units.iter().position(|(u, _)| u.eq_ignore_ascii_case(&c))?;
            if last_unit.is_some_and(|l| idx <= l) || num.is_empty() {
                return None;
            }
            last_unit = Some(idx);
            let n: i64 = num.parse().ok()?;
            total = total.checked_add(n.checked_mul(units[idx].1)?)?;
            num.clear();
        }
        num.is_empty().then_some(())
    };
    scan(
        date,
        &[
            ('Y', 365 * DAY),
            ('M', 30 * DAY),
            ('W', 7 * DAY),
            ('D', DAY),
        ],
    )?;
    if let Some(t) = time {
        scan(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    // Nothing in a rotation policy needs more than a century.
    (total <= 100 * 365 * DAY).then_some(total)
}

#[derive(Serialize, Deserialize)]
struct BackupVersion {
    version: KeyVersion,
    material: String,
}

#[derive(Serialize, Deserialize)]
struct Backup {
    /// Source vault's subscription and region: restore stays in the same subscription and
    /// geography, as in Azure.
    subscription: String,
    location: String,
    name: String,
    policy: Option<RotationPolicy>,
    created: i64,
    versions: Vec<BackupVersion>,
}

/// How long a loaded (unsealed, parsed) key stays in memory after its last use.
pub const KEY_HANDLE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
const KEY_HANDLE_MAX: usize = 1024;

/// Loaded keys, so that the steady state does not unseal and re-parse a key (and redo
/// aws-lc's per-key precomputation) on every operation. Entries expire [`KEY_HANDLE_TTL`]
/// after their last use and are evicted at once when their key is purged; dropping the last
/// reference releases and cleanses the material. The cache never decides anything: every
/// operation checks the key's current metadata (enabled, dates, key_ops) first.
#[derive(Default)]
struct KeyHandles(
    std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Arc<LoadedKey>)>>,
);

impl KeyHandles {
    fn get(&self, id: &str) -> Option<Arc<LoadedKey>> {
        let mut m = self.0.lock().ok()?;
        match m.get_mut(id) {
            Some((t, k)) if t.elapsed() < KEY_HANDLE_TTL => {
                *t = std::time::Instant::now();
                Some(k.clone())
            }
            Some(_) => {
                m.remove(id);
                None
            }
            None => None,
        }
    }
    fn put(&self, id: String, k: Arc<LoadedKey>) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= KEY_HANDLE_MAX {
                m.retain(|_, (t, _)| t.elapsed() < KEY_HANDLE_TTL);
                if m.len() >= KEY_HANDLE_MAX {
                    m.clear();
                }
            }
            m.insert(id, (std::time::Instant::now(), k));
        }
    }
    /// Forget every version of one key (`prefix` = `vault-key:{vault}/{name}/`).
    fn evict_prefix(&self, prefix: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|k, _| !k.starts_with(prefix));
        }
    }
}

pub struct KeyVaultService {
    store: Arc<dyn MetaStore>,
    rbac: Arc<Rbac>,
    clock: Arc<Clock>,
    root: Arc<SealingKey>,
    backup_key: SealingKey,
    handles: KeyHandles,
    events: std::sync::OnceLock<Arc<crate::events::EventService>>,
}

impl KeyVaultService {
    pub fn new(
        store: Arc<dyn MetaStore>,
        rbac: Arc<Rbac>,
        clock: Arc<Clock>,
        root: Arc<SealingKey>,
    ) -> Result<Self> {
        let backup_key = SealingKey::from_bytes(root.derive("key-backup")?)?;
        Ok(Self {
            store,
            rbac,
            clock,
            root,
            backup_key,
            handles: KeyHandles::default(),
            events: std::sync::OnceLock::new(),
        })
    }

    /// Publish key events (KeyNewVersionCreated) from now on.
    pub fn set_events(&self, events: Arc<crate::events::EventService>) {
        let _ = self.events.set(events);
    }

    /// The current version of every live key that has an expiry date:
    /// (vault, key, version, exp, vault resource id).
    pub async fn current_versions_with_expiry(
        &self,
    ) -> Result<Vec<(String, String, String, i64, String)>> {
        let mut out = Vec::new();
        for r in self.store.list_key_records(None).await? {
            if r.deleted.is_some() {
                continue;
            }
            let Some(v) = self.store.list_key_versions(&r.vault, &r.name).await?.pop() else {
                continue;
            };
            let (Some(exp), true) = (v.exp, v.enabled) else {
                continue;
            };
            let Ok(vault) = self.vault(&r.vault).await else {
                continue;
            };
            out.push((vault.name, v.name, v.version, exp, vault.id));
        }
        Ok(out)
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The live vault with this host name, if any.
    pub async fn vault(&self, name: &str) -> Result<VaultRef> {
        let r = self
            .store
            .find_resources_by_name(VAULT_TYPE, name)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| DomainError::VaultNotFound(name.chars().take(64).collect()))?;
        let p = &r.body["properties"];
        Ok(VaultRef {
            name: r.name.to_ascii_lowercase(),
            subscription: r.subscription_id.to_ascii_lowercase(),
            location: r.location.clone().unwrap_or_default(),
            id: r.id.clone(),
            purge_protection: p["enablePurgeProtection"].as_bool() == Some(true),
            retention_days: p["softDeleteRetentionInDays"].as_i64().unwrap_or(90),
        })
    }

    /// Authorize `action` at the key's scope (or the vault's). Public so that protocol layers
    /// can check permission before they parse a request body (403 before 400).
    pub async fn authorize(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        action: &str,
        key: Option<&str>,
    ) -> Result<()> {
        let scope = match key {
            Some(k) => vault.key_scope(k),
            None => vault.id.clone(),
        };
        self.rbac
            .authorize(&caller.object_id, action, ActionKind::Data, &scope)
            .await
    }

    fn aad(vault: &str, name: &str, version: &str) -> Vec<u8> {
        format!(
            "vault-key:{}/{}/{}",
            vault.to_ascii_lowercase(),
            name.to_ascii_lowercase(),
            version
        )
        .into_bytes()
    }

    fn seal(&self, vault: &str, name: &str, version: &str, m: &Material) -> Result<String> {
        Ok(b64::std_encode(
            &self
                .root
                .seal(&Self::aad(vault, name, version), m.expose())?,
        ))
    }

    fn unseal(&self, v: &KeyVersion) -> Result<Material> {
        let sealed = b64::std_decode(&v.sealed)
            .ok_or_else(|| DomainError::Internal("sealed key encoding".into()))?;
        let m = self
            .root
            .open(&Self::aad(&v.vault, &v.name, &v.version), &sealed)
            .map_err(|_| DomainError::Internal("a key version could not be unsealed".into()))?;
        Ok(Material::from_bytes(m))
    }

    fn not_found(name: &str, version: Option<&str>) -> DomainError {
        let name: String = name.chars().take(127).collect();
        match version.filter(|v| !v.is_empty()) {
            Some(v) => DomainError::KeyNotFound(format!(
                "A key with (name/id) {name}/{} was not found in this key vault.",
                v.chars().take(64).collect::<String>()
            )),
            None => DomainError::KeyNotFound(format!(
                "A key with (name/id) {name} was not found in this key vault."
            )),
        }
    }

    /// The live (not deleted) record of a key.
    async fn live_record(&self, vault: &VaultRef, name: &str) -> Result<KeyRecord> {
        match self.store.get_key_record(&vault.name, name).await? {
            Some(r) if r.deleted.is_none() => Ok(r),
            _ => Err(Self::not_found(name, None)),
        }
    }

    /// The type and size of a live key's version (the given one or the current one), for
    /// throttling weights; None when there is none. Not authorized: it reveals nothing to the
    /// caller, whose request is then authorized as usual.
    pub async fn key_kind(
        &self,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
    ) -> Option<(String, Option<u32>)> {
        let view = self.version_of(vault, name, version).await.ok()?;
        Some((view.version.kty, view.version.key_size))
    }

    /// A version of a live key: the given one, or the current one.
    async fn version_of(
        &self,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyView> {
        let record = self.live_record(vault, name).await?;
        let v = match version.filter(|v| !v.is_empty()) {
            Some(ver) => self.store.get_key_version(&vault.name, name, ver).await?,
            None => self.store.list_key_versions(&vault.name, name).await?.pop(),
        };
        let version = v.ok_or_else(|| Self::not_found(name, version))?;
        Ok(KeyView { record, version })
    }

    fn disabled_error(op: &str) -> DomainError {
        DomainError::OperationNotAllowed(format!(
            "Operation {op} is not allowed on a disabled key."
        ))
    }

    async fn generate(kty: &str, key_size: Option<u32>, crv: Option<&str>) -> Result<NewKey> {
        let base = base_kty(kty)
            .ok_or_else(|| bad("kty must be RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM"))?;
        let crv = crv.map(str::to_string);
        let kty = base.to_string();
        tokio::task::spawn_blocking(move || match kty.as_str() {
            "RSA" => keys::generate_rsa(key_size.unwrap_or(2048)),
            "EC" => {
                let c = Curve::parse(crv.as_deref().unwrap_or("P-256")).ok_or_else(|| {
                    KeyError::Invalid("crv must be P-256, P-256K, P-384 or P-521".into())
                })?;
                keys::generate_ec(c)
            }
            _ => keys::generate_oct(key_size.unwrap_or(256)),
        })
        .await
        .map_err(|_| DomainError::Internal("key generation task".into()))?
        .map_err(key_error)
    }

    fn new_version_id() -> Result<String> {
        Ok(hex_lower(&random::array::<16>()?))
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_new_version(
        &self,
        vault: &VaultRef,
        name: &str,
        kty: &str,
        nk: NewKey,
        key_ops: Vec<String>,
        enabled: bool,
        nbf: Option<i64>,
        exp: Option<i64>,
        tags: Value,
    ) -> Result<KeyView> {
        let now = self.clock.now();
        let version = Self::new_version_id()?;
        let record = match self.store.get_key_record(&vault.name, name).await? {
            Some(r) if r.deleted.is_some() => {
                return Err(DomainError::Conflict(format!(
                    "Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."
                )));
            }
            Some(r) => r,
            None => KeyRecord {
                vault: vault.name.clone(),
                name: name.to_string(),
                deleted: None,
                policy: None,
                created: now,
            },
        };
        let v = KeyVersion {
            vault: vault.name.clone(),
            name: record.name.clone(),
            version: version.clone(),
            kty: kty.to_string(),
            key_size: nk.size,
            crv: nk.curve.map(|c| c.name().to_string()),
            key_ops,
            public: nk.public,
            sealed: self.seal(&vault.name, &record.name, &version, &nk.material)?,
            enabled,
            nbf,
            exp,
            created: now,
            updated: now,
            tags,
        };
        self.store.put_key(&record, Some(&v)).await?;
        if let Some(ev) = self.events.get() {
            ev.emit(crate::events::Event {
                event_type: crate::events::KEY_NEW_VERSION,
                source: vault.id.clone(),
                subject: record.name.clone(),
                data: serde_json::json!({
                    "Id": format!("{}/keys/{}/{}", ev.vault_uri(&vault.name), record.name, v.version),
                    "VaultName": vault.name, "ObjectType": "Key", "ObjectName": record.name,
                    "Version": v.version, "NBF": v.nbf, "EXP": v.exp,
                }),
            });
        }
        Ok(KeyView { record, version: v })
    }

    pub async fn create(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
        p: CreateParams,
    ) -> Result<KeyView> {
        self.authorize(caller, vault, actions::CREATE, Some(name))
            .await?;
        validate_key_name(name)?;
        let base = base_kty(&p.kty)
            .ok_or_else(|| bad("kty must be RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM"))?;
        match base {
            "RSA" => {
                if let Some(e) = p.public_exponent
                    && e != 65537
                {
                    return Err(bad("public_exponent must be 65537"));
                }
                if p.crv.is_some() {
                    return Err(bad("crv is only valid for EC keys"));
                }
            }
            "EC" if p.key_size.is_some() => {
                return Err(bad("key_size is not valid for EC keys: use crv"));
            }
            _ => {}
        }
        let ops = p.key_ops.unwrap_or_else(|| default_ops(base));
        validate_ops(&ops)?;
        validate_times(p.nbf, p.exp)?;
        if let Some(t) = &p.tags {
            validate_tags(t)?;
        }
        let nk = Self::generate(&p.kty, p.key_size, p.crv.as_deref()).await?;
        self.store_new_version(
            vault,
            name,
            &p.kty,
            nk,
            ops,
            p.enabled.unwrap_or(true),
            p.nbf,
            p.exp,
            p.tags.unwrap_or_else(|| json!({})),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn import(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
        jwk: &ImportJwk,
        hsm: bool,
        key_ops: Option<Vec<String>>,
        enabled: Option<bool>,
        nbf: Option<i64>,
        exp: Option<i64>,
        tags: Option<Value>,
    ) -> Result<KeyView> {
        self.authorize(caller, vault, actions::IMPORT, Some(name))
            .await?;
        validate_key_name(name)?;
        let kty = jwk
            .kty
            .as_deref()
            .ok_or_else(|| bad("key.kty is required"))?;
        let base = base_kty(kty)
            .ok_or_else(|| bad("key.kty must be RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM"))?;
        let ops = key_ops.unwrap_or_else(|| default_ops(base));
        validate_ops(&ops)?;
        validate_times(nbf, exp)?;
        if let Some(t) = &tags {
            validate_tags(t)?;
        }
        let nk = keys::import(base, jwk).map_err(key_error)?;
        let stored_kty = if hsm && !kty.ends_with("-HSM") {
            format!("{kty}-HSM")
        } else {
            kty.to_string()
        };
        self.store_new_version(
            vault,
            name,
            &stored_kty,
            nk,
            ops,
            enabled.unwrap_or(true),
            nbf,
            exp,
            tags.unwrap_or_else(|| json!({})),
        )
        .await
    }

    pub async fn get(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyView> {
        self.authorize(caller, vault, actions::READ, Some(name))
            .await?;
        let view = self.version_of(vault, name, version).await?;
        if !view.version.enabled {
            return Err(Self::disabled_error("get"));
        }
        Ok(view)
    }

    pub async fn update(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
        p: UpdateParams,
    ) -> Result<KeyView> {
        self.authorize(caller, vault, actions::UPDATE, Some(name))
            .await?;
        let mut view = self.version_of(vault, name, version).await?;
        validate_times(p.nbf.flatten(), p.exp.flatten())?;
        if let Some(ops) = p.key_ops {
            validate_ops(&ops)?;
            view.version.key_ops = ops;
        }
        if let Some(e) = p.enabled {
            view.version.enabled = e;
        }
        if let Some(n) = p.nbf {
            view.version.nbf = n;
        }
        if let Some(x) = p.exp {
            view.version.exp = x;
        }
        if let Some(t) = p.tags {
            validate_tags(&t)?;
            view.version.tags = t;
        }
        view.version.updated = self.clock.now();
        self.store
            .put_key(&view.record, Some(&view.version))
            .await?;
        Ok(view)
    }

    /// Current versions of the vault's live keys, ordered by name.
    pub async fn list(&self, caller: &Caller, vault: &VaultRef) -> Result<Vec<KeyView>> {
        self.authorize(caller, vault, actions::READ, None).await?;
        let mut out = Vec::new();
        for r in self.store.list_key_records(Some(&vault.name)).await? {
            if r.deleted.is_some() {
                continue;
            }
            if let Some(v) = self
                .store
                .list_key_versions(&vault.name, &r.name)
                .await?
                .pop()
            {
                out.push(KeyView {
                    record: r,
                    version: v,
                });
            }
        }
        Ok(out)
    }

    pub async fn list_versions(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
    ) -> Result<Vec<KeyView>> {
        self.authorize(caller, vault, actions::READ, Some(name))
            .await?;
        let record = self.live_record(vault, name).await?;
        Ok(self
            .store
            .list_key_versions(&vault.name, name)
            .await?
            .into_iter()
            .map(|v| KeyView {
                record: record.clone(),
                version: v,
            })
            .collect())
    }

    pub async fn delete(&self, caller: &Caller, vault: &VaultRef, name: &str) -> Result<KeyView> {
        self.authorize(caller, vault, actions::DELETE, Some(name))
            .await?;
        let mut view = self.version_of(vault, name, None).await?;
        let now = self.clock.now();
        view.record.deleted = Some(DeletedKeyInfo {
            deleted_date: now,
            scheduled_purge: now + vault.retention_days * DAY,
        });
        self.store.put_key(&view.record, None).await?;
        Ok(view)
    }

    async fn deleted_view(&self, vault: &VaultRef, name: &str) -> Result<KeyView> {
        let record = match self.store.get_key_record(&vault.name, name).await? {
            Some(r) if r.deleted.is_some() => r,
            _ => {
                return Err(DomainError::KeyNotFound(format!(
                    "Deleted Key not found: {}",
                    name.chars().take(127).collect::<String>()
                )));
            }
        };
        let version = self
            .store
            .list_key_versions(&vault.name, name)
            .await?
            .pop()
            .ok_or_else(|| Self::not_found(name, None))?;
        Ok(KeyView { record, version })
    }

    pub async fn get_deleted(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
    ) -> Result<KeyView> {
        self.authorize(caller, vault, actions::READ, Some(name))
            .await?;
        self.deleted_view(vault, name).await
    }

    pub async fn list_deleted(&self, caller: &Caller, vault: &VaultRef) -> Result<Vec<KeyView>> {
        self.authorize(caller, vault, actions::READ, None).await?;
        let mut out = Vec::new();
        for r in self.store.list_key_records(Some(&vault.name)).await? {
            if r.deleted.is_none() {
                continue;
            }
            if let Some(v) = self
                .store
                .list_key_versions(&vault.name, &r.name)
                .await?
                .pop()
            {
                out.push(KeyView {
                    record: r,
                    version: v,
                });
            }
        }
        Ok(out)
    }

    pub async fn recover(&self, caller: &Caller, vault: &VaultRef, name: &str) -> Result<KeyView> {
        self.authorize(caller, vault, actions::RECOVER, Some(name))
            .await?;
        let mut view = self.deleted_view(vault, name).await?;
        view.record.deleted = None;
        self.store.put_key(&view.record, None).await?;
        Ok(view)
    }

    pub async fn purge(&self, caller: &Caller, vault: &VaultRef, name: &str) -> Result<()> {
        self.authorize(caller, vault, actions::PURGE, Some(name))
            .await?;
        let view = self.deleted_view(vault, name).await?;
        let due = view
            .record
            .deleted
            .as_ref()
            .map(|d| d.scheduled_purge)
            .unwrap_or(0);
        if vault.purge_protection && self.clock.now() < due {
            return Err(DomainError::OperationNotAllowed(format!(
                "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key {name} will be purged automatically on its scheduled purge date."
            )));
        }
        self.store.purge_key(&vault.name, name).await?;
        self.forget(&vault.name, name);
        Ok(())
    }

    fn forget(&self, vault: &str, name: &str) {
        let prefix = format!(
            "vault-key:{}/{}/",
            vault.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        );
        self.handles.evict_prefix(&prefix);
    }

    /// A server-encrypted, authenticated backup of every version of a key.
    pub async fn backup(&self, caller: &Caller, vault: &VaultRef, name: &str) -> Result<Vec<u8>> {
        self.authorize(caller, vault, actions::BACKUP, Some(name))
            .await?;
        let record = self.live_record(vault, name).await?;
        let mut versions = Vec::new();
        for v in self.store.list_key_versions(&vault.name, name).await? {
            let m = self.unseal(&v)?;
            versions.push(BackupVersion {
                material: b64::std_encode(m.expose()),
                version: v,
            });
        }
        let doc = Backup {
            subscription: vault.subscription.clone(),
            location: vault.location.clone(),
            name: record.name.clone(),
            policy: record.policy.clone(),
            created: record.created,
            versions,
        };
        let plain = SecretBytes::new(
            serde_json::to_vec(&doc).map_err(|e| DomainError::Internal(e.to_string()))?,
        );
        let mut out = BACKUP_MAGIC.to_vec();
        out.extend_from_slice(&self.backup_key.seal(BACKUP_AAD, plain.expose())?);
        Ok(out)
    }

    pub async fn restore(&self, caller: &Caller, vault: &VaultRef, blob: &[u8]) -> Result<KeyView> {
        self.authorize(caller, vault, actions::RESTORE, None)
            .await?;
        let parsed = blob
            .strip_prefix(BACKUP_MAGIC)
            .and_then(|b| self.backup_key.open(BACKUP_AAD, b).ok())
            .ok_or_else(|| bad("the backup blob is invalid or was made by another deployment"))?;
        let doc: Backup = serde_json::from_slice(parsed.expose())
            .map_err(|_| bad("the backup blob is invalid"))?;
        if !doc.subscription.eq_ignore_ascii_case(&vault.subscription) {
            return Err(bad(
                "a key backup can only be restored into a vault of the same subscription",
            ));
        }
        if geography(&doc.location) != geography(&vault.location) {
            return Err(bad(format!(
                "a key backup can only be restored into a vault of the same geography ({} is not in the geography of {})",
                vault.location, doc.location
            )));
        }
        if self
            .store
            .get_key_record(&vault.name, &doc.name)
            .await?
            .is_some()
        {
            return Err(DomainError::Conflict(format!(
                "Key {} already exists in this vault (possibly in a deleted state); restore needs a free name.",
                doc.name
            )));
        }
        let record = KeyRecord {
            vault: vault.name.clone(),
            name: doc.name.clone(),
            deleted: None,
            policy: doc.policy,
            created: doc.created,
        };
        let mut last = None;
        for bv in doc.versions {
            let material = Material::from_bytes(SecretBytes::new(
                b64::std_decode(&bv.material).ok_or_else(|| bad("the backup blob is invalid"))?,
            ));
            let mut v = bv.version;
            v.vault = vault.name.clone();
            v.name = record.name.clone();
            v.sealed = self.seal(&vault.name, &record.name, &v.version, &material)?;
            self.store.put_key(&record, Some(&v)).await?;
            last = Some(v);
        }
        let version = last.ok_or_else(|| bad("the backup blob holds no key version"))?;
        Ok(KeyView { record, version })
    }

    /// A new version with the same type and size as the current one (policy expiry applied).
    async fn rotate_now(&self, vault: &VaultRef, name: &str) -> Result<KeyView> {
        let cur = self.version_of(vault, name, None).await?;
        let v = &cur.version;
        let nk = Self::generate(&v.kty, v.key_size, v.crv.as_deref()).await?;
        let now = self.clock.now();
        let exp = cur
            .record
            .policy
            .as_ref()
            .and_then(|p| p.expiry_time.as_deref())
            .and_then(parse_duration)
            .map(|d| now.saturating_add(d));
        self.store_new_version(
            vault,
            name,
            &v.kty,
            nk,
            v.key_ops.clone(),
            true,
            None,
            exp,
            v.tags.clone(),
        )
        .await
    }

    pub async fn rotate(&self, caller: &Caller, vault: &VaultRef, name: &str) -> Result<KeyView> {
        self.authorize(caller, vault, actions::ROTATE, Some(name))
            .await?;
        self.rotate_now(vault, name).await
    }

    pub async fn get_policy(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
    ) -> Result<Option<RotationPolicy>> {
        self.authorize(caller, vault, actions::POLICY_READ, Some(name))
            .await?;
        Ok(self.live_record(vault, name).await?.policy)
    }

    pub async fn set_policy(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
        actions_: Vec<LifetimeAction>,
        expiry_time: Option<String>,
    ) -> Result<Option<RotationPolicy>> {
        self.authorize(caller, vault, actions::POLICY_WRITE, Some(name))
            .await?;
        let mut record = self.live_record(vault, name).await?;
        validate_policy(&actions_, expiry_time.as_deref())?;
        // No lifetime actions resets the policy to the default.
        if actions_.is_empty() && expiry_time.is_none() {
            record.policy = None;
            self.store.put_key(&record, None).await?;
            return Ok(None);
        }
        let now = self.clock.now();
        let policy = RotationPolicy {
            lifetime_actions: actions_,
            expiry_time,
            created: record.policy.as_ref().map(|p| p.created).unwrap_or(now),
            updated: now,
        };
        record.policy = Some(policy.clone());
        self.store.put_key(&record, None).await?;
        Ok(Some(policy))
    }

    /// A cryptographic operation, with Key Vault's state checks.
    pub async fn crypto(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
        op: CryptoOp,
        input: CryptoInput,
    ) -> Result<(KeyView, CryptoOutput)> {
        self.authorize(caller, vault, op.action(), Some(name))
            .await?;
        let view = self.version_of(vault, name, version).await?;
        let v = &view.version;
        if !v.enabled {
            return Err(Self::disabled_error(op.key_op()));
        }
        if !v.key_ops.iter().any(|o| o == op.key_op()) {
            return Err(DomainError::OperationNotAllowed(format!(
                "Operation {} is not permitted on this key.",
                op.key_op()
            )));
        }
        let now = self.clock.now();
        if op.needs_validity() {
            if v.nbf.is_some_and(|n| now < n) {
                return Err(DomainError::OperationNotAllowed(format!(
                    "Operation {} is not allowed on a key that is not yet valid.",
                    op.key_op()
                )));
            }
            if v.exp.is_some_and(|e| now >= e) {
                return Err(DomainError::OperationNotAllowed(format!(
                    "Operation {} is not allowed on an expired key.",
                    op.key_op()
                )));
            }
        }
        let handle_id =
            String::from_utf8_lossy(&Self::aad(&v.vault, &v.name, &v.version)).into_owned();
        let key = match self.handles.get(&handle_id) {
            Some(k) => k,
            None => {
                let material = self.unseal(v)?;
                let k = Arc::new(LoadedKey::load(&material).map_err(key_error)?);
                self.handles.put(handle_id, k.clone());
                k
            }
        };
        let CryptoInput {
            alg,
            value,
            iv,
            aad,
            tag,
            digest,
        } = input;
        let out = match op {
            CryptoOp::Encrypt => {
                let s = key
                    .encrypt(&alg, &value, iv.as_deref(), aad.as_deref())
                    .map_err(key_error)?;
                CryptoOutput::Bytes {
                    value: SecretBytes::new(s.value),
                    iv: s.iv,
                    tag: s.tag,
                }
            }
            CryptoOp::Decrypt => CryptoOutput::Bytes {
                value: key
                    .decrypt(&alg, &value, iv.as_deref(), aad.as_deref(), tag.as_deref())
                    .map_err(key_error)?,
                iv: None,
                tag: None,
            },
            CryptoOp::Wrap => CryptoOutput::Bytes {
                value: SecretBytes::new(key.wrap(&alg, &value).map_err(key_error)?),
                iv: None,
                tag: None,
            },
            CryptoOp::Unwrap => CryptoOutput::Bytes {
                value: key.unwrap(&alg, &value).map_err(key_error)?,
                iv: None,
                tag: None,
            },
            CryptoOp::Sign => CryptoOutput::Bytes {
                value: SecretBytes::new(key.sign(&alg, &value).map_err(key_error)?),
                iv: None,
                tag: None,
            },
            CryptoOp::Verify => {
                let d = digest.ok_or_else(|| bad("'digest' is required"))?;
                CryptoOutput::Verified(key.verify(&alg, &d, &value).map_err(key_error)?)
            }
        };
        Ok((view, out))
    }

    /// Every enabled key version with an expiry date: (vault, key, version, exp), for metrics.
    pub async fn expiring_versions(&self) -> Result<Vec<(String, String, String, i64)>> {
        let mut out = Vec::new();
        for r in self.store.list_key_records(None).await? {
            if r.deleted.is_some() {
                continue;
            }
            for v in self.store.list_key_versions(&r.vault, &r.name).await? {
                if let (true, Some(exp)) = (v.enabled, v.exp) {
                    out.push((v.vault, v.name, v.version, exp));
                }
            }
        }
        Ok(out)
    }

    /// Random bytes (`POST /rng`).
    pub async fn random_bytes(
        &self,
        caller: &Caller,
        vault: &VaultRef,
        count: usize,
    ) -> Result<Vec<u8>> {
        self.authorize(caller, vault, actions::READ, None).await?;
        if !(1..=128).contains(&count) {
            return Err(bad("count must be between 1 and 128"));
        }
        Ok(random::bytes(count)?)
    }

    /// Background work that is due: purge soft-deleted keys past their date, rotate keys
    /// whose rotation policy says so. Returns (purged, rotated).
    pub async fn run_due(&self) -> Result<(usize, usize)> {
        let now = self.clock.now();
        let (mut purged, mut rotated) = (0, 0);
        for r in self.store.list_key_records(None).await? {
            if let Some(d) = &r.deleted {
                if d.scheduled_purge <= now {
                    self.store.purge_key(&r.vault, &r.name).await?;
                    self.forget(&r.vault, &r.name);
                    purged += 1;
                }
                continue;
            }
            let Some(policy) = &r.policy else { continue };
            let Some(current) = self.store.list_key_versions(&r.vault, &r.name).await?.pop() else {
                continue;
            };
            if rotation_due(policy, &current, now) {
                let Ok(vault) = self.vault(&r.vault).await else {
                    continue;
                };
                match self.rotate_now(&vault, &r.name).await {
                    Ok(_) => rotated += 1,
                    Err(e) => {
                        tracing::error!(vault = %r.vault, key = %r.name, error = %e, "scheduled rotation failed")
                    }
                }
            }
        }
        Ok((purged, rotated))
    }
}

/// Whether the policy's Rotate action is due for the current version.
pub fn rotation_due(policy: &RotationPolicy, current: &KeyVersion, now: i64) -> bool {
    policy
        .lifetime_actions
        .iter()
        .filter(|a| a.action.eq_ignore_ascii_case("rotate"))
        .any(|a| {
            if let Some(d) = a.time_after_create.as_deref().and_then(parse_duration) {
                return now >= current.created + d;
            }
            if let (Some(d), Some(exp)) = (
                a.time_before_expiry.as_deref().and_then(parse_duration),
                current.exp,
            ) {
                return now >= exp - d;
            }
            false
        })
}

/// Azure's bounds: expiryTime at least 28 days; Rotate at least 7 days after creation and at
/// least 7 days before expiry; one trigger per action; at most one Rotate and one Notify;
/// timeBeforeExpiry needs an expiryTime it is shorter than.
pub fn validate_policy(actions: &[LifetimeAction], expiry: Option<&str>) -> Result<()> {
    let exp = match expiry {
        Some(e) => {
            let d = parse_duration(e)
                .ok_or_else(|| bad(format!("expiryTime '{e}' is not an ISO 8601 duration")))?;
            if d < 28 * DAY {
                return Err(bad("expiryTime must be at least 28 days (P28D)"));
            }
            Some(d)
        }
        None => None,
    };
    if actions.len() > 2 {
        return Err(bad(
            "a rotation policy has at most one Rotate and one Notify action",
        ));
    }
    let mut seen = Vec::new();
    for a in actions {
        let kind = a.action.to_ascii_lowercase();
        if kind != "rotate" && kind != "notify" {
            return Err(bad(
                "lifetimeActions[].action.type must be Rotate or Notify",
            ));
        }
        if seen.contains(&kind) {
            return Err(bad(
                "a rotation policy has at most one Rotate and one Notify action",
            ));
        }
        seen.push(kind.clone());
        match (&a.time_after_create, &a.time_before_expiry) {
            (Some(t), None) => {
                let d = parse_duration(t).ok_or_else(|| {
                    bad(format!("timeAfterCreate '{t}' is not an ISO 8601 duration"))
                })?;
                if kind == "notify" {
                    return Err(bad("Notify is triggered by timeBeforeExpiry only"));
                }
                if d < 7 * DAY {
                    return Err(bad("timeAfterCreate must be at least 7 days (P7D)"));
                }
                if exp.is_some_and(|e| d > e - 7 * DAY) {
                    return Err(bad(
                        "timeAfterCreate must be at least 7 days shorter than expiryTime",
                    ));
                }
            }
            (None, Some(t)) => {
                let d = parse_duration(t).ok_or_else(|| {
                    bad(format!(
                        "timeBeforeExpiry '{t}' is not an ISO 8601 duration"
                    ))
                })?;
                if d < 7 * DAY {
                    return Err(bad("timeBeforeExpiry must be at least 7 days (P7D)"));
                }
                match exp {
                    None => return Err(bad("timeBeforeExpiry needs attributes.expiryTime")),
                    Some(e) if kind == "rotate" && d > e - 7 * DAY => {
                        return Err(bad(
                            "a Rotate timeBeforeExpiry must leave at least 7 days after creation (at most expiryTime - P7D)",
                        ));
                    }
                    Some(e) if d >= e => {
                        return Err(bad("timeBeforeExpiry must be shorter than expiryTime"));
                    }
                    _ => {}
                }
            }
            _ => {
                return Err(bad(
                    "each lifetime action needs exactly one of timeAfterCreate and timeBeforeExpiry",
                ));
            }
        }
    }
    Ok(())
}

/// The latest time Key Vault clients can represent (9999-12-31T23:59:59Z).
pub const MAX_TIME: i64 = 253_402_300_799;

fn validate_times(nbf: Option<i64>, exp: Option<i64>) -> Result<()> {
    for (k, v) in [("nbf", nbf), ("exp", exp)] {
        if v.is_some_and(|t| !(0..=MAX_TIME).contains(&t)) {
            return Err(bad(format!(
                "attributes.{k} must be a Unix time between 0 and {MAX_TIME}"
            )));
        }
    }
    Ok(())
}

/// The geography of a region (restores stay within one). Regions not listed are their own.
pub fn geography(region: &str) -> String {
    let r = region.to_ascii_lowercase();
    let g = match r.as_str() {
        "eastus" | "eastus2" | "westus" | "westus2" | "westus3" | "centralus"
        | "northcentralus" | "southcentralus" | "westcentralus" => "unitedstates",
        "northeurope" | "westeurope" => "europe",
        "uksouth" | "ukwest" => "unitedkingdom",
        "francecentral" | "francesouth" => "france",
        "germanywestcentral" | "germanynorth" => "germany",
        "japaneast" | "japanwest" => "japan",
        "australiaeast" | "australiasoutheast" | "australiacentral" => "australia",
        "canadacentral" | "canadaeast" => "canada",
        _ => return r,
    };
    g.to_string()
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("P90D"), Some(90 * DAY));
        assert_eq!(parse_duration("P1Y"), Some(365 * DAY));
        assert_eq!(parse_duration("P1M"), Some(30 * DAY));
        assert_eq!(parse_duration("P2W"), Some(14 * DAY));
        assert_eq!(parse_duration("P1DT12H"), Some(DAY + 12 * 3600));
        assert_eq!(parse_duration("PT1M"), Some(60));
        for bad in [
            "",
            "P",
            "90D",
            "PD",
            "P1X",
            "P1D2Y",
            "PT",
            "P-1D",
            "P99999999999999999999D",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    fn act(kind: &str, tac: Option<&str>, tbe: Option<&str>) -> LifetimeAction {
        LifetimeAction {
            action: kind.into(),
            time_after_create: tac.map(String::from),
            time_before_expiry: tbe.map(String::from),
        }
    }

    #[test]
    fn policy_bounds() {
        assert!(validate_policy(&[act("Rotate", Some("P30D"), None)], Some("P90D")).is_ok());
        assert!(
            validate_policy(
                &[
                    act("rotate", Some("P30D"), None),
                    act("notify", None, Some("P30D"))
                ],
                Some("P90D")
            )
            .is_ok()
        );
        assert!(validate_policy(&[act("Rotate", Some("P1D"), None)], None).is_err());
        assert!(validate_policy(&[act("Rotate", Some("P30D"), None)], Some("P10D")).is_err());
        assert!(validate_policy(&[act("Rotate", None, Some("P30D"))], None).is_err());
        assert!(
            validate_policy(&[act("Rotate", Some("P30D"), Some("P30D"))], Some("P90D")).is_err()
        );
        assert!(
            validate_policy(
                &[
                    act("Rotate", Some("P30D"), None),
                    act("Rotate", Some("P40D"), None)
                ],
                None
            )
            .is_err()
        );
        assert!(validate_policy(&[act("Explode", Some("P30D"), None)], None).is_err());
    }

    #[test]
    fn names() {
        assert!(validate_key_name("cmk-1").is_ok());
        assert!(validate_key_name("").is_err());
        assert!(validate_key_name("a_b").is_err());
        assert!(validate_key_name(&"a".repeat(128)).is_err());
    }
}
