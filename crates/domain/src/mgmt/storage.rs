//! Storage accounts (`Microsoft.Storage/storageAccounts`): name rules, create with identities,
//! PATCH with merge semantics, account keys (two 512-bit keys, stored only sealed under the
//! root key), and the account encryption key (AEK, 256 bit, sealed under the platform key,
//! i.e. the root key, until customer-managed keys replace that wrap).
use coffer_crypto::{b64, random};
use coffer_secret::SecretBytes;
use serde_json::{Map, Value, json};

use super::scopes::SCOPE_TYPE;
use super::{Body, MgmtService, Put, bad, public, resource_id};
use crate::clock::rfc3339;
use crate::identity::Caller;
use crate::model::Resource;
use crate::rbac::ActionKind;
use crate::{DomainError, Result};

pub const STORAGE_TYPE: &str = "Microsoft.Storage/storageAccounts";

const SKUS: [&str; 8] = [
    "Standard_LRS",
    "Standard_GRS",
    "Standard_RAGRS",
    "Standard_ZRS",
    "Standard_GZRS",
    "Standard_RAGZRS",
    "Premium_LRS",
    "Premium_ZRS",
];
const KINDS: [&str; 5] = [
    "StorageV2",
    "Storage",
    "BlobStorage",
    "BlockBlobStorage",
    "FileStorage",
];

/// Storage account names: 3–24 lowercase letters and digits.
pub fn validate_account_name(name: &str) -> Result<()> {
    if (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(DomainError::InvalidName {
            kind: "storage account",
            name: name.chars().take(64).collect(),
            rule: "3-24 characters of lowercase letters and digits",
        })
    }
}

fn key_aad(account: &str, key_name: &str) -> Vec<u8> {
    format!("storage-account-key:{account}:{key_name}").into_bytes()
}

pub(super) fn aek_aad(account: &str, version: u64) -> Vec<u8> {
    format!("storage-aek:{account}:{version}").into_bytes()
}

/// Normalise `identity.type` (`SystemAssigned, UserAssigned` in any case/spacing).
fn identity_kinds(t: &str) -> Result<(bool, bool)> {
    let mut sys = false;
    let mut user = false;
    for part in t.split(',').map(|p| p.trim().to_ascii_lowercase()) {
        match part.as_str() {
            "systemassigned" => sys = true,
            "userassigned" => user = true,
            "none" | "" => {}
            _ => {
                return Err(bad(
                    "identity.type must be None, SystemAssigned, UserAssigned or 'SystemAssigned,UserAssigned'",
                ));
            }
        }
    }
    Ok((sys, user))
}

impl MgmtService {
    /// The account at `id`, or ResourceNotFound.
    async fn require_account(&self, id: &str, name: &str) -> Result<Resource> {
        self.store
            .get_resource(id)
            .await?
            .ok_or_else(|| DomainError::ResourceNotFound {
                resource_type: STORAGE_TYPE.into(),
                name: name.into(),
            })
    }

    fn blob_endpoint(&self, name: &str) -> String {
        format!("https://{name}.{}/", self.config.blob_dns_suffix)
    }

    /// `POST /subscriptions/{s}/providers/Microsoft.Storage/checkNameAvailability`.
    pub async fn check_storage_name(
        &self,
        caller: &Caller,
        sub: &str,
        body: &Value,
    ) -> Result<Value> {
        self.authorize(
            caller,
            "Microsoft.Storage/checknameavailability/read",
            &format!("/subscriptions/{sub}"),
        )
        .await?;
        let req = Body::obj(body)?;
        let name = req
            .str("name")?
            .ok_or_else(|| bad("the property 'name' is required"))?;
        match req.str("type")? {
            Some(t) if t.eq_ignore_ascii_case(STORAGE_TYPE) => {}
            _ => return Err(bad(format!("the property 'type' must be '{STORAGE_TYPE}'"))),
        }
        if let Err(e) = validate_account_name(name) {
            return Ok(
                json!({"nameAvailable": false, "reason": "AccountNameInvalid", "message": e.to_string()}),
            );
        }
        if self
            .store
            .find_resources_by_name(STORAGE_TYPE, name)
            .await?
            .is_empty()
        {
            Ok(json!({"nameAvailable": true}))
        } else {
            Ok(
                json!({"nameAvailable": false, "reason": "AlreadyExists", "message": format!("The storage account named {name} is already taken.")}),
            )
        }
    }

    fn new_account_keys(&self, account: &str) -> Result<Value> {
        let now = rfc3339(self.clock.now());
        let mut keys = Vec::new();
        for k in ["key1", "key2"] {
            let raw = SecretBytes::new(random::bytes(64)?);
            keys.push(json!({"keyName": k, "sealed": b64::std_encode(&self.root.seal(&key_aad(account, k), raw.expose())?), "creationTime": now}));
        }
        Ok(Value::Array(keys))
    }

    fn new_aek(&self, account: &str) -> Result<Value> {
        let aek = SecretBytes::new(random::bytes(32)?);
        Ok(
            json!({"version": 1, "sealed": b64::std_encode(&self.root.seal(&aek_aad(account, 1), aek.expose())?), "keySource": "Microsoft.Storage"}),
        )
    }

    /// Apply `identity` from a request to `body` (creating or removing principals).
    async fn apply_account_identity(
        &self,
        caller: &Caller,
        body: &mut Value,
        req: Option<Body<'_>>,
        account_id: &str,
        name: &str,
    ) -> Result<()> {
        let Some(req) = req else { return Ok(()) };
        let t = req.str("type")?.unwrap_or("None");
        let (sys, user) = identity_kinds(t)?;
        let current = body.get("identity").cloned().unwrap_or(Value::Null);
        let mut ident = Map::new();
        // System-assigned: keep the existing principal, create one, or remove it.
        let existing_pid = current
            .get("principalId")
            .and_then(Value::as_str)
            .map(str::to_string);
        if sys {
            let pid = match existing_pid {
                Some(p) => p,
                None => {
                    self.identity
                        .create_managed_identity(account_id, name)
                        .await?
                        .object_id
                }
            };
            ident.insert("principalId".into(), json!(pid));
            ident.insert("tenantId".into(), json!(self.identity.tenant_id()));
        } else if let Some(p) = existing_pid {
            self.identity_not_in_use(account_id, body, &p, "the system-assigned identity")
                .await?;
            self.store.delete_principal(&p).await?;
        }
        if user {
            let map = req.object("userAssignedIdentities")?.ok_or_else(|| {
                bad("identity.userAssignedIdentities is required for UserAssigned")
            })?;
            let mut out = Map::new();
            for id in map
                .0
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                // Attaching an identity needs assign rights on it (Azure's rule), checked before
                // the lookup so that neither outcome reveals another tenant's identities.
                let assign = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";
                if !self
                    .rbac
                    .is_allowed(&caller.object_id, assign, ActionKind::Control, &id)
                    .await?
                {
                    return Err(bad(format!(
                        "the user-assigned identity '{}' was not found or you may not assign it (needs {assign})",
                        id.chars().take(300).collect::<String>()
                    )));
                }
                let r = self
                    .store
                    .get_resource(&id)
                    .await?
                    .filter(|r| r.resource_type.eq_ignore_ascii_case(super::IDENTITY_TYPE))
                    .ok_or_else(|| {
                        bad(format!(
                            "the user-assigned identity '{}' was not found",
                            id.chars().take(300).collect::<String>()
                        ))
                    })?;
                out.insert(
                    r.id.clone(),
                    json!({"principalId": r.body["properties"]["principalId"], "clientId": r.body["properties"]["clientId"]}),
                );
            }
            if out.is_empty() {
                return Err(bad(
                    "identity.userAssignedIdentities must name at least one identity",
                ));
            }
            ident.insert("userAssignedIdentities".into(), Value::Object(out));
        }
        // A user-assigned identity that a customer-managed key reaches its vault with cannot
        // be detached (the key would otherwise keep being used as an identity the account no
        // longer has).
        let kept: Vec<String> = ident
            .get("userAssignedIdentities")
            .and_then(Value::as_object)
            .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        if let Some(old) = current
            .get("userAssignedIdentities")
            .and_then(Value::as_object)
        {
            for (id, v) in old {
                if kept.contains(&id.to_ascii_lowercase()) {
                    continue;
                }
                if let Some(p) = v.get("principalId").and_then(Value::as_str) {
                    self.identity_not_in_use(
                        account_id,
                        body,
                        p,
                        &format!("the user-assigned identity '{id}'"),
                    )
                    .await?;
                }
            }
        }
        let type_name = match (sys, user) {
            (true, true) => "SystemAssigned,UserAssigned",
            (true, false) => "SystemAssigned",
            (false, true) => "UserAssigned",
            (false, false) => "None",
        };
        ident.insert("type".into(), json!(type_name));
        body["identity"] = Value::Object(ident);
        Ok(())
    }

    /// The encryption scopes of the account `account_id`.
    async fn account_scopes(&self, account_id: &str) -> Result<Vec<Resource>> {
        let prefix = format!("{}/encryptionscopes/", account_id.to_ascii_lowercase());
        let sub = account_id.split('/').nth(2).unwrap_or_default();
        Ok(self
            .store
            .list_resources(sub, None, Some(SCOPE_TYPE))
            .await?
            .into_iter()
            .filter(|s| s.id.to_ascii_lowercase().starts_with(&prefix))
            .collect())
    }

    /// Refuse to take `principal` from the account while its customer-managed key or one of
    /// its encryption scopes reaches the vault as that identity.
    async fn identity_not_in_use(
        &self,
        account_id: &str,
        account: &Value,
        principal: &str,
        what: &str,
    ) -> Result<()> {
        let uses = |b: &Value| {
            b["_aek"]["keySource"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("Microsoft.Keyvault"))
                && b["_aek"]["principal"]
                    .as_str()
                    .is_some_and(|p| p.eq_ignore_ascii_case(principal))
        };
        let mut holder = uses(account).then(|| "the account's customer-managed key".to_string());
        if holder.is_none() {
            holder = self
                .account_scopes(account_id)
                .await?
                .into_iter()
                .find(|s| uses(&s.body))
                .map(|s| format!("the encryption scope '{}'", s.name));
        }
        match holder {
            None => Ok(()),
            Some(h) => Err(bad(format!(
                "{what} cannot be removed from the storage account: {h} uses it to reach its key vault. Give that a key through another identity (or switch it to Microsoft-managed keys) first."
            ))),
        }
    }

    /// Merge request properties into an account body (create and PATCH).
    fn apply_account_properties(
        &self,
        body: &mut Value,
        props: Option<Body<'_>>,
        new: bool,
    ) -> Result<()> {
        let p = body["properties"]
            .as_object_mut()
            .ok_or_else(|| DomainError::Internal("account body".into()))?;
        let Some(req) = props else { return Ok(()) };
        if let Some(tier) = req.str("accessTier")? {
            if !["Hot", "Cool", "Cold", "Premium"].contains(&tier) {
                return Err(bad("accessTier must be Hot, Cool, Cold or Premium"));
            }
            p.insert("accessTier".into(), json!(tier));
        }
        for k in [
            "supportsHttpsTrafficOnly",
            "allowBlobPublicAccess",
            "allowSharedKeyAccess",
            "isHnsEnabled",
        ] {
            if let Some(b) = req.bool(k)? {
                if k == "supportsHttpsTrafficOnly" && !b {
                    return Err(bad(
                        "Coffer serves HTTPS only: supportsHttpsTrafficOnly cannot be false",
                    ));
                }
                if k == "isHnsEnabled" && b {
                    return Err(bad(
                        "hierarchical namespace (isHnsEnabled) is not supported",
                    ));
                }
                p.insert(k.into(), json!(b));
            }
        }
        if let Some(v) = req.str("minimumTlsVersion")? {
            if !["TLS1_0", "TLS1_1", "TLS1_2", "TLS1_3"].contains(&v) {
                return Err(bad(
                    "minimumTlsVersion must be TLS1_0, TLS1_1, TLS1_2 or TLS1_3",
                ));
            }
            p.insert("minimumTlsVersion".into(), json!(v));
        }
        if let Some(acl) = req.object("networkAcls")? {
            if acl
                .str("defaultAction")?
                .is_some_and(|a| !a.eq_ignore_ascii_case("Allow"))
            {
                return Err(bad(
                    "network rules are not enforced by this server: networkAcls.defaultAction must be Allow",
                ));
            }
            p.insert("networkAcls".into(), acl.0.clone());
        }
        if req
            .str("publicNetworkAccess")?
            .is_some_and(|v| !v.eq_ignore_ascii_case("Enabled"))
        {
            return Err(bad(
                "network rules are not enforced by this server: publicNetworkAccess must be Enabled",
            ));
        }
        if let Some(enc) = req.object("encryption")? {
            // keySource and keyvaultproperties: see `apply_encryption` (asynchronous checks).
            if let Some(infra) = enc.bool("requireInfrastructureEncryption")? {
                let cur = p["encryption"]["requireInfrastructureEncryption"]
                    .as_bool()
                    .unwrap_or(false);
                if !new && infra != cur {
                    return Err(DomainError::PropertyCannotChange(
                        "requireInfrastructureEncryption",
                    ));
                }
                p["encryption"]["requireInfrastructureEncryption"] = json!(infra);
            }
        }
        Ok(())
    }

    pub async fn put_storage_account(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put> {
        let id = resource_id(sub, rg, STORAGE_TYPE, name);
        self.authorize(caller, "Microsoft.Storage/storageAccounts/write", &id)
            .await?;
        validate_account_name(name)?;
        let req = Body::obj(body)?;
        self.require_group(sub, rg).await?;
        if let Some(existing) = self.store.get_resource(&id).await? {
            // PUT on an existing account updates it (location must not change).
            if let Some(l) = req.str("location")?
                && !l
                    .replace(' ', "")
                    .eq_ignore_ascii_case(existing.location.as_deref().unwrap_or_default())
            {
                return Err(bad("the location of a storage account cannot change"));
            }
            let b = self
                .patch_account_body(caller, existing, &req, name)
                .await?;
            return Ok(Put {
                body: b,
                created: false,
            });
        }
        if !self
            .store
            .find_resources_by_name(STORAGE_TYPE, name)
            .await?
            .is_empty()
        {
            return Err(DomainError::StorageAccountNameTaken(name.to_string()));
        }
        let location = req
            .str("location")?
            .ok_or_else(|| bad("the property 'location' is required"))?;
        let location = self.check_location(location, STORAGE_TYPE)?;
        let sku = req
            .object("sku")?
            .ok_or_else(|| bad("the property 'sku' is required"))?
            .str("name")?
            .ok_or_else(|| bad("sku.name is required"))?
            .to_string();
        let sku = SKUS
            .iter()
            .find(|s| s.eq_ignore_ascii_case(&sku))
            .ok_or_else(|| bad(format!("sku.name must be one of {}", SKUS.join(", "))))?;
        let kind = req.str("kind")?.unwrap_or("StorageV2");
        let kind = KINDS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(kind))
            .ok_or_else(|| bad(format!("kind must be one of {}", KINDS.join(", "))))?;
        let now = rfc3339(self.clock.now());
        let mut b = json!({
            "id": id, "name": name, "type": STORAGE_TYPE, "location": location,
            "sku": {"name": sku, "tier": if sku.starts_with("Premium") { "Premium" } else { "Standard" }},
            "kind": kind,
            "tags": req.tags()?.unwrap_or_else(|| json!({})),
            "properties": {
                "provisioningState": "Succeeded",
                "creationTime": now,
                "primaryLocation": location,
                "statusOfPrimary": "available",
                "accessTier": "Hot",
                "supportsHttpsTrafficOnly": true,
                "minimumTlsVersion": "TLS1_2",
                "allowBlobPublicAccess": false,
                "allowSharedKeyAccess": true,
                "keyCreationTime": {"key1": now, "key2": now},
                "networkAcls": {"bypass": "AzureServices", "virtualNetworkRules": [], "ipRules": [], "defaultAction": "Allow"},
                "encryption": {
                    "keySource": "Microsoft.Storage",
                    "services": {
                        "blob": {"enabled": true, "keyType": "Account", "lastEnabledTime": now},
                        "file": {"enabled": true, "keyType": "Account", "lastEnabledTime": now}
                    },
                    "requireInfrastructureEncryption": false
                }
            }
        });
        self.apply_account_properties(&mut b, req.object("properties")?, true)?;
        self.apply_account_identity(caller, &mut b, req.object("identity")?, &id, name)
            .await?;
        b["_keys"] = self.new_account_keys(name)?;
        b["_aek"] = self.new_aek(name)?;
        self.apply_encryption(&mut b, encryption_of(&req)?, true, &location)
            .await?;
        self.store
            .put_resource(&Resource {
                id: id.clone(),
                resource_type: STORAGE_TYPE.into(),
                subscription_id: sub.into(),
                resource_group: Some(rg.into()),
                name: name.into(),
                location: Some(location),
                body: b.clone(),
            })
            .await?;
        Ok(Put {
            body: self.render_account(b),
            created: true,
        })
    }

    fn render_account(&self, mut b: Value) -> Value {
        let name = b["name"].as_str().unwrap_or_default().to_string();
        self.cmk_render(&mut b);
        let mut b = public(b);
        b["properties"]["primaryEndpoints"] = json!({"blob": self.blob_endpoint(&name)});
        b
    }

    async fn patch_account_body(
        &self,
        caller: &Caller,
        existing: Resource,
        req: &Body<'_>,
        name: &str,
    ) -> Result<Value> {
        let mut b = existing.body.clone();
        if let Some(sku) = req.object("sku")?
            && let Some(n) = sku.str("name")?
        {
            let n = SKUS
                .iter()
                .find(|s| s.eq_ignore_ascii_case(n))
                .ok_or_else(|| bad(format!("sku.name must be one of {}", SKUS.join(", "))))?;
            b["sku"] = json!({"name": n, "tier": if n.starts_with("Premium") { "Premium" } else { "Standard" }});
        }
        if let Some(t) = req.tags()? {
            b["tags"] = t;
        }
        if let Some(k) = req.str("kind")? {
            let k = KINDS
                .iter()
                .find(|x| x.eq_ignore_ascii_case(k))
                .ok_or_else(|| bad(format!("kind must be one of {}", KINDS.join(", "))))?;
            b["kind"] = json!(k);
        }
        self.apply_account_properties(&mut b, req.object("properties")?, false)?;
        self.apply_account_identity(caller, &mut b, req.object("identity")?, &existing.id, name)
            .await?;
        let location = existing.location.clone().unwrap_or_default();
        self.apply_encryption(&mut b, encryption_of(req)?, false, &location)
            .await?;
        let mut r = existing;
        r.body = b.clone();
        self.store.put_resource(&r).await?;
        Ok(self.render_account(b))
    }

    pub async fn patch_storage_account(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value> {
        let id = resource_id(sub, rg, STORAGE_TYPE, name);
        self.authorize(caller, "Microsoft.Storage/storageAccounts/write", &id)
            .await?;
        let req = Body::obj(body)?;
        let existing = self.require_account(&id, name).await?;
        self.patch_account_body(caller, existing, &req, name).await
    }

    pub async fn get_storage_account(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<Value> {
        let id = resource_id(sub, rg, STORAGE_TYPE, name);
        self.authorize(caller, "Microsoft.Storage/storageAccounts/read", &id)
            .await?;
        let r = self.require_account(&id, name).await?;
        // A CMK account's view includes the key version in use and its health: refresh them
        // (no vault call while the cached account key is valid).
        self.cmk_observe(&r).await;
        let r = self.require_account(&id, name).await?;
        Ok(self.render_account(r.body))
    }

    pub async fn list_storage_accounts(
        &self,
        caller: &Caller,
        sub: &str,
        rg: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for r in self
            .store
            .list_resources(sub, rg, Some(STORAGE_TYPE))
            .await?
        {
            if self
                .rbac
                .is_allowed(
                    &caller.object_id,
                    "Microsoft.Storage/storageAccounts/read",
                    ActionKind::Control,
                    &r.id,
                )
                .await?
            {
                out.push(self.render_account(r.body));
            }
        }
        Ok(out)
    }

    pub(super) async fn remove_storage_account(&self, r: Resource) -> Result<()> {
        if let Some(pid) = r.body["identity"]["principalId"].as_str() {
            self.store.delete_principal(pid).await?;
        }
        // The sealed AEK goes with the resource: the account's data is crypto-shredded. Its
        // blob index goes too, so a later account with the same name starts empty (the
        // orphaned objects are unreadable garbage for the collector).
        self.store.delete_account_data(&r.name).await?;
        // Its encryption scopes (and their keys) go too: a later account with the same name
        // must not find them.
        for s in self.account_scopes(&r.id).await? {
            self.store.delete_resource(&s.id).await?;
        }
        self.store.delete_resource(&r.id).await?;
        self.cmk_drop_account(&r.name);
        Ok(())
    }

    pub async fn delete_storage_account(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<bool> {
        let id = resource_id(sub, rg, STORAGE_TYPE, name);
        self.authorize(caller, "Microsoft.Storage/storageAccounts/delete", &id)
            .await?;
        match self.store.get_resource(&id).await? {
            Some(r) => {
                self.remove_storage_account(r).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn keys_view(&self, name: &str, body: &Value) -> Result<Value> {
        let mut keys = Vec::new();
        for k in body["_keys"].as_array().cloned().unwrap_or_default() {
            let key_name = k["keyName"].as_str().unwrap_or_default();
            let sealed = b64::std_decode(k["sealed"].as_str().unwrap_or_default())
                .ok_or_else(|| DomainError::Internal("account key encoding".into()))?;
            let raw = self.root.open(&key_aad(name, key_name), &sealed)?;
            keys.push(json!({
                "keyName": key_name, "value": b64::std_encode(raw.expose()),
                "permissions": "FULL", "creationTime": k["creationTime"]
            }));
        }
        Ok(json!({"keys": keys}))
    }

    /// `POST .../listKeys`: the two account keys (the only API that returns them).
    pub async fn list_storage_keys(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<Value> {
        let id = resource_id(sub, rg, STORAGE_TYPE, name);
        self.authorize(
            caller,
            "Microsoft.Storage/storageAccounts/listkeys/action",
            &id,
        )
        .await?;
        let r = self.require_account(&id, name).await?;
        self.keys_view(name, &r.body)
    }

    /// `POST .../regenerateKey {"keyName": "key1"|"key2"}`.
    pub async fn regenerate_storage_key(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value> {
        let id = resource_id(sub, rg, STORAGE_TYPE, name);
        self.authorize(
            caller,
            "Microsoft.Storage/storageAccounts/regeneratekey/action",
            &id,
        )
        .await?;
        let req = Body::obj(body)?;
        let which = req
            .str("keyName")?
            .ok_or_else(|| bad("keyName is required"))?
            .to_ascii_lowercase();
        if which != "key1" && which != "key2" {
            return Err(bad("keyName must be key1 or key2"));
        }
        let mut r = self.require_account(&id, name).await?;
        let now = rfc3339(self.clock.now());
        let raw = SecretBytes::new(random::bytes(64)?);
        let sealed = b64::std_encode(&self.root.seal(&key_aad(name, &which), raw.expose())?);
        if let Some(keys) = r.body["_keys"].as_array_mut() {
            for k in keys.iter_mut() {
                if k["keyName"] == json!(which) {
                    k["sealed"] = json!(sealed);
                    k["creationTime"] = json!(now);
                }
            }
        }
        r.body["properties"]["keyCreationTime"][&which] = json!(now);
        self.store.put_resource(&r).await?;
        self.keys_view(name, &r.body)
    }

    /// The account keys in clear, for Shared Key verification on the blob plane.
    pub async fn account_keys(&self, name: &str) -> Result<Vec<SecretBytes>> {
        let r = self.account_by_name(name).await?;
        let mut out = Vec::new();
        for k in r.body["_keys"].as_array().cloned().unwrap_or_default() {
            let sealed = b64::std_decode(k["sealed"].as_str().unwrap_or_default())
                .ok_or_else(|| DomainError::Internal("account key encoding".into()))?;
            out.push(self.root.open(
                &key_aad(name, k["keyName"].as_str().unwrap_or_default()),
                &sealed,
            )?);
        }
        Ok(out)
    }
}

impl MgmtService {
    /// The account with this (globally unique) name, or ResourceNotFound.
    pub(super) async fn account_by_name(&self, name: &str) -> Result<Resource> {
        self.store
            .find_resources_by_name(STORAGE_TYPE, name)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| DomainError::ResourceNotFound {
                resource_type: STORAGE_TYPE.into(),
                name: name.into(),
            })
    }

    /// The stored Blob service properties sections of an account.
    pub async fn blob_service_properties(&self, name: &str) -> Result<Map<String, Value>> {
        let r = self.account_by_name(name).await?;
        Ok(r.body["_blobService"]
            .as_object()
            .cloned()
            .unwrap_or_default())
    }

    /// The infrastructure key: the independent platform key of the outer layer of
    /// double-encrypted objects (infrastructure encryption), derived from the root key for
    /// this purpose only, and its id for object headers.
    pub fn infrastructure_key(&self) -> Result<(SecretBytes, &'static str)> {
        let key = match self.infra_key.get() {
            Some(k) => k,
            None => {
                let k = self.root.derive("infrastructure-encryption-v1")?;
                self.infra_key.get_or_init(|| k)
            }
        };
        Ok((key.duplicate(), INFRA_KEY_ID))
    }

    /// The keyed hash under which blob records remember a customer-provided key (HMAC-SHA256
    /// with a key derived from the root key): it checks a later request's key, and reveals
    /// nothing of the key to someone who reads the metadata store.
    pub fn cpk_tag(&self, key: &[u8]) -> Result<String> {
        let hmac_key = match self.cpk_hash_key.get() {
            Some(k) => k,
            None => {
                let k = self.root.derive("cpk-key-hash")?;
                self.cpk_hash_key.get_or_init(|| {
                    aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, k.expose())
                })
            }
        };
        Ok(hex::encode(aws_lc_rs::hmac::sign(hmac_key, key).as_ref()))
    }

    /// Merge Blob service properties sections into an account.
    pub async fn set_blob_service_properties(
        &self,
        name: &str,
        sections: Vec<(String, String)>,
    ) -> Result<()> {
        let _w = self.write_guard().await;
        let mut r = self.account_by_name(name).await?;
        if !r.body["_blobService"].is_object() {
            r.body["_blobService"] = json!({});
        }
        for (k, v) in sections {
            r.body["_blobService"][k] = json!(v);
        }
        self.store.put_resource(&r).await?;
        Ok(())
    }
}

/// `properties.encryption` of a create or update request.
fn encryption_of<'a>(req: &Body<'a>) -> Result<Option<Body<'a>>> {
    match req.object("properties")? {
        Some(p) => p.object("encryption"),
        None => Ok(None),
    }
}

/// The id of the infrastructure key in object headers.
pub const INFRA_KEY_ID: &str = "platform/infrastructure/1";

/// What the blob plane needs of an account: its ARM id (RBAC scope), region, and unsealed AEK.
pub struct BlobAccount {
    pub name: String,
    /// `allowSharedKeyAccess`: when false, only bearer tokens are accepted.
    pub allow_shared_key: bool,
    pub id: String,
    pub region: String,
    pub aek_id: String,
    /// The account key, or why it cannot be used now (a revoked customer-managed key): the
    /// blob plane authorizes the request before it reveals that (see `aek`).
    key: std::result::Result<SecretBytes, (&'static str, String)>,
    /// Set when the request carries a customer-provided key: `aek` is then that key and this
    /// is its keyed hash (what blob records keep to check later requests).
    pub cpk: Option<String>,
    /// Set when the request writes in an encryption scope: its key wraps the DEKs of what is
    /// written (metadata stays under the account key).
    pub scope: Option<ScopeKey>,
    /// `requireInfrastructureEncryption`: what the request writes is encrypted twice (object
    /// format v2), the second layer under the infrastructure key.
    pub infra: bool,
    /// The request's correlation id, for the vault calls its encryption scope's key may need.
    pub correlation: String,
}

/// An encryption scope's key, for writing in it.
pub struct ScopeKey {
    pub name: String,
    pub key: SecretBytes,
    pub aek_id: String,
    /// The scope's `requireInfrastructureEncryption`.
    pub infra: bool,
}

impl BlobAccount {
    /// The key that wraps DEKs and seals metadata, or the CMK failure (403 on the wire).
    pub fn aek(&self) -> Result<&SecretBytes> {
        self.key
            .as_ref()
            .map_err(|(code, message)| DomainError::CmkUnavailable {
                code,
                message: message.clone(),
            })
    }

    /// Why the account's key cannot be used now, if it cannot.
    pub fn key_unavailable(&self) -> Option<DomainError> {
        self.aek().err()
    }

    /// This account as seen by a request that writes in an encryption scope.
    pub fn with_scope(&self, scope: ScopeKey) -> BlobAccount {
        let key = self.key_copy();
        self.view(self.aek_id.clone(), key, self.cpk.clone(), Some(scope))
    }

    /// This account with its own key, whatever this view carries (a customer-provided key, a
    /// scope): how the source of a copy is read when the request has no key for it.
    pub fn as_stored(&self) -> BlobAccount {
        let key = self.key_copy();
        self.view(self.aek_id.clone(), key, None, None)
    }

    fn key_copy(&self) -> std::result::Result<SecretBytes, (&'static str, String)> {
        match &self.key {
            Ok(k) => Ok(k.duplicate()),
            Err(e) => Err(e.clone()),
        }
    }

    fn view(
        &self,
        aek_id: String,
        key: std::result::Result<SecretBytes, (&'static str, String)>,
        cpk: Option<String>,
        scope: Option<ScopeKey>,
    ) -> BlobAccount {
        BlobAccount {
            name: self.name.clone(),
            allow_shared_key: self.allow_shared_key,
            id: self.id.clone(),
            region: self.region.clone(),
            aek_id,
            key,
            cpk,
            scope,
            infra: self.infra,
            correlation: self.correlation.clone(),
        }
    }

    pub fn scope_name(&self) -> Option<String> {
        self.scope.as_ref().map(|s| s.name.clone())
    }

    /// This account as seen by a request that provides its own key (CPK): the key replaces the
    /// account key for everything the request writes or reads (DEKs and metadata).
    pub fn with_customer_key(&self, key: SecretBytes, tag: String) -> BlobAccount {
        self.view("cpk".into(), Ok(key), Some(tag), None)
    }
}

impl MgmtService {
    /// The account behind a blob host or path, with its AEK: unsealed (platform key) or
    /// unwrapped by the account's customer-managed key (cached; see `cmk.rs`).
    pub async fn blob_account(&self, name: &str, correlation: &str) -> Result<BlobAccount> {
        let r = self.account_by_name(name).await?;
        let version = r.body["_aek"]["version"].as_u64().unwrap_or(1);
        // A CMK that cannot be used is reported after the request is authorized.
        let key = match self.holder_aek(&r, correlation).await {
            Ok(k) => Ok(k),
            Err(DomainError::CmkUnavailable { code, message }) => Err((code, message)),
            Err(e) => return Err(e),
        };
        Ok(BlobAccount {
            allow_shared_key: r.body["properties"]["allowSharedKeyAccess"].as_bool() != Some(false),
            name: r.name.clone(),
            id: r.id.clone(),
            region: r.location.clone().unwrap_or_default(),
            aek_id: format!("{}/aek/{version}", r.name),
            key,
            cpk: None,
            scope: None,
            infra: r.body["properties"]["encryption"]["requireInfrastructureEncryption"].as_bool()
                == Some(true),
            correlation: correlation.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_identity_types() {
        assert!(validate_account_name("acc1").is_ok());
        for bad in ["ab", "Acc1", "acc-1", "a".repeat(25).as_str()] {
            assert!(validate_account_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            identity_kinds("SystemAssigned, UserAssigned").ok(),
            Some((true, true))
        );
        assert_eq!(identity_kinds("systemassigned").ok(), Some((true, false)));
        assert_eq!(identity_kinds("None").ok(), Some((false, false)));
        assert!(identity_kinds("Everything").is_err());
    }
}
